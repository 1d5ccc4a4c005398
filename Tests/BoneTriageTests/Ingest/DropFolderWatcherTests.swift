import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Serialized: one test lowers the kernel's event-queue limit while it makes its watcher.
@Suite("Drop folder watcher (inotify)", .serialized)
struct DropFolderWatcherTests {
    /// Collects reported files until `expected` are all in, or a few seconds pass.
    func collect(_ watcher: DropFolderWatcher, until expected: Set<String>) -> [String] {
        var got: [String] = []
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline && !expected.isSubset(of: Set(got)) { got += watcher.nextFiles(timeout: 0.2) }
        return got
    }

    @Test("complete files are reported once; a file still open for writing is not; new sub-folders are followed")
    func events() throws {
        let dir = try TemporaryDirectory()
        let root = dir.path("drop")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        try Data("before".utf8).write(to: URL(fileURLWithPath: "\(root)/early.png"))
        let watcher = try DropFolderWatcher(root: root)
        #expect(watcher.existingFiles() == ["\(root)/early.png"])

        // Written in place: reported at close, not while open.
        let fd = open("\(root)/slow.dcm", O_WRONLY | O_CREAT, 0o644)
        #expect(fd >= 0)
        _ = "half".withCString { write(fd, $0, 4) }
        #expect(!watcher.nextFiles(timeout: 0.3).contains("\(root)/slow.dcm"), "a file still open must not be reported")
        _ = "rest".withCString { write(fd, $0, 4) }
        close(fd)
        // Moved in whole from elsewhere (the safe way to drop a file).
        try Data("moved".utf8).write(to: URL(fileURLWithPath: dir.path("outside.dcm")))
        try FileManager.default.moveItem(atPath: dir.path("outside.dcm"), toPath: "\(root)/moved.dcm")
        // A new study folder with files, and a hidden partial download that is ignored.
        try FileManager.default.createDirectory(atPath: "\(root)/patient1/study1_positive", withIntermediateDirectories: true)
        try Data("img".utf8).write(to: URL(fileURLWithPath: "\(root)/patient1/study1_positive/image1.png"))
        try Data("tmp".utf8).write(to: URL(fileURLWithPath: "\(root)/.incoming.part"))

        let expected: Set<String> = ["\(root)/slow.dcm", "\(root)/moved.dcm", "\(root)/patient1/study1_positive/image1.png"]
        let got = collect(watcher, until: expected)
        #expect(expected.isSubset(of: Set(got)), "\(got)")
        #expect(!got.contains { $0.hasSuffix(".part") })
        #expect(Set(watcher.nextFiles(timeout: 0.3)).isDisjoint(with: expected), "nothing is reported twice")

        // A file added later to the new sub-folder is seen through its own watch.
        try Data("img2".utf8).write(to: URL(fileURLWithPath: "\(root)/patient1/study1_positive/image2.png"))
        #expect(collect(watcher, until: ["\(root)/patient1/study1_positive/image2.png"]).contains("\(root)/patient1/study1_positive/image2.png"))
    }

    @Test("links, FIFOs and sockets are reported (at start and when made) for the intake to quarantine; a linked folder is neither walked nor watched")
    func specialEntries() throws {
        let dir = try TemporaryDirectory()
        let root = dir.path("drop")
        try FileManager.default.createDirectory(atPath: root + "/study", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir.path("outside"), withIntermediateDirectories: true)
        try Data("secret".utf8).write(to: URL(fileURLWithPath: dir.path("outside/secret.dcm")))
        #expect(mkfifo(root + "/study/pipe.dcm", 0o644) == 0)
        #expect(symlink(dir.path("outside/secret.dcm"), root + "/link.dcm") == 0)
        #expect(symlink(dir.path("outside"), root + "/linked-folder") == 0)
        let watcher = try DropFolderWatcher(root: root)
        #expect(Set(watcher.existingFiles()) == ["\(root)/study/pipe.dcm", "\(root)/link.dcm", "\(root)/linked-folder"])
        #expect(watcher.watchCount == 2, "the root and study/, not the linked folder")

        // Made while watching: no close-after-write comes for these, so their creation is reported.
        #expect(mkfifo(root + "/pipe2.dcm", 0o644) == 0)
        #expect(symlink(dir.path("outside"), root + "/study/linked2") == 0)
        let socket = try UnixSocket(boundAt: root + "/socket.dcm")
        defer { socket.close() }
        let expected: Set<String> = ["\(root)/pipe2.dcm", "\(root)/study/linked2", "\(root)/socket.dcm"]
        let got = collect(watcher, until: expected)
        #expect(expected.isSubset(of: Set(got)), "\(got)")
        // Written into the linked folder's target: not seen through the link.
        try Data("later".utf8).write(to: URL(fileURLWithPath: dir.path("outside/later.dcm")))
        #expect(!watcher.nextFiles(timeout: 0.5).contains { $0.contains("later.dcm") })
        #expect(watcher.watchCount == 2)
    }

    @Test("a file in folders nested beyond PATH_MAX is reported, at start and when it arrives")
    func deeperThanPathMax() throws {
        let dir = try TemporaryDirectory()
        let root = dir.path("drop")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { DeepTree.remove(below: root, top: "a"); DeepTree.remove(below: root, top: "b") }
        let early = try DeepTree.make(below: root, top: "a", levels: 18, file: "early.dcm", contents: Data("x".utf8))
        #expect(early.utf8.count > Int(PATH_MAX))
        let watcher = try DropFolderWatcher(root: root)
        #expect(watcher.existingFiles() == [early])
        #expect(watcher.watchCount == 20, "the root, a/ and 18 levels below it")
        let late = try DeepTree.make(below: root, top: "b", levels: 18, file: "late.dcm", contents: Data("y".utf8))
        #expect(collect(watcher, until: [late]).contains(late))
    }

    @Test("emptied folders are removed with their watches once unchanged long enough; one made again is watched again")
    func emptiedFolders() throws {
        let dir = try TemporaryDirectory()
        let root = dir.path("drop")
        try FileManager.default.createDirectory(atPath: root + "/XR_HUMERUS/patient1/study1", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: root + "/XR_HUMERUS/patient2", withIntermediateDirectories: true)
        try Data("img".utf8).write(to: URL(fileURLWithPath: root + "/XR_HUMERUS/patient2/image1.png"))
        let watcher = try DropFolderWatcher(root: root, removeEmptyFoldersAfter: 3600)
        #expect(watcher.watchCount == 5)
        #expect(watcher.removeEmptyFolders().isEmpty, "just changed: a writer may still be filling them")
        // An hour later: study1 and then patient1 (emptied by that) go; patient2 holds a file, so it
        // and XR_HUMERUS stay; the root always stays.
        let removed = watcher.removeEmptyFolders(now: Date().addingTimeInterval(7200))
        #expect(removed == ["\(root)/XR_HUMERUS/patient1/study1", "\(root)/XR_HUMERUS/patient1"])
        #expect(watcher.watchCount == 3)
        unlink(root + "/XR_HUMERUS/patient2/image1.png")
        #expect(watcher.removeEmptyFolders(now: Date().addingTimeInterval(7200)).count == 2)
        #expect(watcher.watchCount == 1)
        #expect(FileManager.default.fileExists(atPath: root))
        _ = watcher.nextFiles(timeout: 0.2)  // the IN_IGNORED of the removed folders

        // The same folders made again are watched again, and what lands in them is reported.
        try FileManager.default.createDirectory(atPath: root + "/XR_HUMERUS/patient1/study1", withIntermediateDirectories: true)
        try Data("img".utf8).write(to: URL(fileURLWithPath: root + "/XR_HUMERUS/patient1/study1/image1.png"))
        #expect(collect(watcher, until: ["\(root)/XR_HUMERUS/patient1/study1/image1.png"]).contains("\(root)/XR_HUMERUS/patient1/study1/image1.png"))
        #expect(watcher.watchCount == 4)
    }

    /// One inotify event as read(2) returns it: wd, mask, cookie, name length, no name.
    static func event(wd: Int32, mask: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: wd.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: mask.littleEndian) { bytes += $0 }
        bytes += [UInt8](repeating: 0, count: 8)
        return bytes
    }

    @Test("an event-queue overflow (IN_Q_OVERFLOW) makes a rescan: what the lost events announced is reported, a file still changing is not yet")
    func overflowRescan() throws {
        let dir = try TemporaryDirectory()
        let root = dir.path("drop")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let watcher = try DropFolderWatcher(root: root)
        // Arrived while the (lost) events were dropped: a file and a whole new folder with a file.
        try Data("a".utf8).write(to: URL(fileURLWithPath: root + "/a.dcm"))
        try FileManager.default.createDirectory(atPath: root + "/new/study", withIntermediateDirectories: true)
        try Data("b".utf8).write(to: URL(fileURLWithPath: root + "/new/study/b.png"))
        var old = [timeval(tv_sec: time(nil) - 60, tv_usec: 0), timeval(tv_sec: time(nil) - 60, tv_usec: 0)]
        #expect(utimes(root + "/a.dcm", &old) == 0)
        #expect(utimes(root + "/new/study/b.png", &old) == 0)
        try Data("c".utf8).write(to: URL(fileURLWithPath: root + "/still-changing.dcm"))

        let reported = watcher.handle(events: Self.event(wd: -1, mask: UInt32(IN_Q_OVERFLOW)))
        #expect(Set(reported) == ["\(root)/a.dcm", "\(root)/new/study/b.png"], "\(reported)")
        #expect(watcher.overflowCount == 1 && watcher.rescanCount == 1)
        #expect(watcher.watchCount == 3, "the folders made while events were lost are watched")
        // The file that was still changing is looked at again once it has settled.
        #expect(collect(watcher, until: ["\(root)/still-changing.dcm"]).contains("\(root)/still-changing.dcm"))
    }

    @Test("a real overflow of a tiny kernel event queue (as root: fs.inotify.max_queued_events lowered for this watcher only, then restored)",
          .enabled(if: getuid() == 0 && access("/proc/sys/fs/inotify/max_queued_events", W_OK) == 0, "skipped: needs root to lower fs.inotify.max_queued_events"))
    func kernelOverflow() throws {
        let dir = try TemporaryDirectory()
        let root = dir.path("drop")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let setting = "/proc/sys/fs/inotify/max_queued_events"
        let saved = try String(contentsOfFile: setting, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        // The limit is taken when an inotify instance is made: lowered only around this watcher's creation.
        let watcher: DropFolderWatcher
        do {
            try "16\n".write(toFile: setting, atomically: false, encoding: .utf8)
            defer { try? (saved + "\n").write(toFile: setting, atomically: false, encoding: .utf8) }
            watcher = try DropFolderWatcher(root: root)
        }
        #expect(try String(contentsOfFile: setting, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) == saved)
        let names = (0..<40).map { "\(root)/image\($0).dcm" }
        for name in names { try Data(name.utf8).write(to: URL(fileURLWithPath: name)) }
        var got: [String] = []
        let deadline = Date().addingTimeInterval(15)
        while Date() < deadline && !Set(names).isSubset(of: Set(got)) { got += watcher.nextFiles(timeout: 0.2) }
        #expect(watcher.overflowCount >= 1, "80 events into a queue of 16")
        #expect(Set(names).isSubset(of: Set(got)), "every file is reported despite the lost events: \(Set(names).subtracting(got).sorted())")
    }

    @Test("a missing drop folder is a clear error")
    func missing() {
        #expect(throws: DropFolderWatcher.WatchError.self) { try DropFolderWatcher(root: "/nonexistent/drop") }
    }
}
