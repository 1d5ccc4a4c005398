import BoneTriage
import Foundation
import Testing

@Suite("Drop folder watcher (inotify)")
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

    @Test("a missing drop folder is a clear error")
    func missing() {
        #expect(throws: DropFolderWatcher.WatchError.self) { try DropFolderWatcher(root: "/nonexistent/drop") }
    }
}
