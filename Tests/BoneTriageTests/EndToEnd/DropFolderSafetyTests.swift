import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `bonetriage serve` against what a drop folder shared with other people and scripts can hold besides
/// complete files: FIFOs, symbolic links (to files and to folders outside), paths longer than PATH_MAX,
/// and the folders a MURA-style study leaves behind (issue 11, defects 4, 5, 8 and 12).
@Suite("daemon end to end: drop folder safety", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs the built bonetriage and DCMTK's img2dcm (Debian package dcmtk; `make test` installs it)"))
struct DropFolderSafetyTests {
    /// The `.reason` files in the quarantine, by name.
    static func reasons(_ daemon: DaemonHarness) -> [String: String] {
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: daemon.quarantine)) ?? []).filter { $0.hasSuffix(".reason") }
        return Dictionary(uniqueKeysWithValues: names.map { ($0, (try? String(contentsOfFile: daemon.quarantine + "/" + $0, encoding: .utf8)) ?? "") })
    }

    /// What `lstat` says an entry is (without following a link), or nil when it is not there.
    static func type(_ path: String) -> mode_t? {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : nil
    }

    @Test("a FIFO in the drop folder, at start and while running, and a socket are quarantined unopened; later files are ingested; SIGTERM stops the daemon")
    func fifo() throws {
        let daemon = try DaemonHarness()
        let files = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: daemon.dropFolder + "/study", withIntermediateDirectories: true)
        // Present at start: opening it for reading would wait for a writer that never comes.
        #expect(mkfifo(daemon.dropFolder + "/study/at-start.dcm", 0o644) == 0)
        try daemon.start()
        defer { _ = try? daemon.stop() }

        #expect(mkfifo(daemon.dropFolder + "/while-running.dcm", 0o644) == 0)
        let socket = try UnixSocket(boundAt: daemon.dropFolder + "/socket.dcm")
        defer { socket.close() }
        let study = "1.2.826.0.1.3680043.10.11.4"
        try RadiographFactory.make(at: files.path("after.dcm"), study: study)
        try FileManager.default.moveItem(atPath: files.path("after.dcm"), toPath: daemon.dropFolder + "/after.dcm")

        let triaged = try daemon.waitForTriage([study], timeout: 60)
        #expect(triaged[study]?["state"] as? String == "triaged")
        try daemon.waitFor("both FIFOs and the socket quarantined", timeout: 30) {
            Self.reasons(daemon).values.filter { $0.contains("FIFO") || $0.contains("socket") }.count == 3
        }
        let reasons = Self.reasons(daemon)
        #expect(reasons.values.contains { $0.contains("study/at-start.dcm") && $0.contains("not a regular file") }, "\(reasons)")
        #expect(reasons.values.contains { $0.contains("while-running.dcm") && $0.contains("not a regular file") }, "\(reasons)")
        #expect(reasons.values.contains { $0.contains("socket.dcm") && $0.contains("a socket") }, "\(reasons)")
        let kept = try FileManager.default.contentsOfDirectory(atPath: daemon.quarantine).filter { !$0.hasSuffix(".reason") }
        #expect(kept.filter { Self.type(daemon.quarantine + "/" + $0) == S_IFIFO }.count == 2, "the FIFOs themselves are moved: \(kept)")
        #expect(Self.type(daemon.dropFolder + "/while-running.dcm") == nil)
        #expect(daemon.log.contains("dropped file quarantined"))

        // Stops on SIGTERM (the harness waits for the exit), with no drop thread stuck in open().
        #expect(try daemon.stop() == 0)
    }

    @Test("symbolic links to a file and to a folder outside are quarantined as links; their targets are neither read, triaged nor moved")
    func symbolicLinks() throws {
        let daemon = try DaemonHarness()
        let outside = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: daemon.dropFolder, withIntermediateDirectories: true)
        let linkedStudy = "1.2.826.0.1.3680043.10.11.5", folderStudy = "1.2.826.0.1.3680043.10.11.6", good = "1.2.826.0.1.3680043.10.11.7"
        try RadiographFactory.make(at: outside.path("secret.dcm"), study: linkedStudy)
        try FileManager.default.createDirectory(atPath: outside.path("elsewhere"), withIntermediateDirectories: true)
        try RadiographFactory.make(at: outside.path("elsewhere/inside.dcm"), study: folderStudy)
        let secret = try Data(contentsOf: URL(fileURLWithPath: outside.path("secret.dcm")))
        // One link of each kind present at start, one of each made while the daemon runs.
        #expect(symlink(outside.path("secret.dcm"), daemon.dropFolder + "/link-at-start.dcm") == 0)
        #expect(symlink(outside.path("elsewhere"), daemon.dropFolder + "/folder-at-start") == 0)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        #expect(symlink(outside.path("secret.dcm"), daemon.dropFolder + "/link-while-running.dcm") == 0)
        #expect(symlink(outside.path("elsewhere"), daemon.dropFolder + "/folder-while-running") == 0)
        // Written into the linked folder through the link after the daemon saw it: must not be watched.
        try RadiographFactory.make(at: outside.path("elsewhere/later.dcm"), study: folderStudy, seed: 3)
        try RadiographFactory.make(at: outside.path("good.dcm"), study: good)
        try FileManager.default.moveItem(atPath: outside.path("good.dcm"), toPath: daemon.dropFolder + "/good.dcm")

        _ = try daemon.waitForTriage([good], timeout: 60)
        try daemon.waitFor("four links quarantined", timeout: 30) {
            Self.reasons(daemon).values.filter { $0.contains("symbolic link") }.count == 4
        }
        let uids = try daemon.studies().compactMap { $0["study_instance_uid"] as? String }
        #expect(!uids.contains(linkedStudy), "a linked file was triaged: \(uids)")
        #expect(!uids.contains(folderStudy), "a file in a linked folder was triaged: \(uids)")
        // The targets are where they were, unchanged.
        #expect(try Data(contentsOf: URL(fileURLWithPath: outside.path("secret.dcm"))) == secret)
        #expect(FileManager.default.fileExists(atPath: outside.path("elsewhere/inside.dcm")))
        #expect(FileManager.default.fileExists(atPath: outside.path("elsewhere/later.dcm")))
        // The quarantine holds the links themselves, with the target named in the reason.
        let kept = try FileManager.default.contentsOfDirectory(atPath: daemon.quarantine).filter { !$0.hasSuffix(".reason") }
        #expect(kept.filter { Self.type(daemon.quarantine + "/" + $0) == S_IFLNK }.count == 4, "\(kept)")
        #expect(Self.reasons(daemon).values.contains { $0.contains("link-at-start.dcm") && $0.contains(outside.path("secret.dcm")) })
        for name in ["link-at-start.dcm", "folder-at-start", "link-while-running.dcm", "folder-while-running"] {
            #expect(Self.type(daemon.dropFolder + "/" + name) == nil, "\(name) is still in the drop folder")
        }
    }

    @Test("a file deeper than PATH_MAX, at start and while running, is quarantined with its reason and logged")
    func deeperThanPathMax() throws {
        let daemon = try DaemonHarness()
        try FileManager.default.createDirectory(atPath: daemon.dropFolder, withIntermediateDirectories: true)
        defer {
            DeepTree.remove(below: daemon.dropFolder, top: "deep-a")
            DeepTree.remove(below: daemon.dropFolder, top: "deep-b")
        }
        let junk = Data("not an image, but deep".utf8)
        let first = try DeepTree.make(below: daemon.dropFolder, top: "deep-a", levels: 18, file: "first.dcm", contents: junk)
        #expect(first.utf8.count > Int(PATH_MAX))
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let second = try DeepTree.make(below: daemon.dropFolder, top: "deep-b", levels: 18, file: "second.dcm", contents: junk)
        #expect(second.utf8.count > Int(PATH_MAX))

        try daemon.waitFor("both deep files quarantined", timeout: 30) {
            Self.reasons(daemon).values.filter { $0.contains("PATH_MAX") }.count == 2
        }
        #expect(FileManager.default.fileExists(atPath: daemon.quarantine) && Self.reasons(daemon).keys.contains { $0.hasSuffix("first.dcm.reason") })
        #expect(Self.reasons(daemon).keys.contains { $0.hasSuffix("second.dcm.reason") })
        #expect(daemon.log.contains("PATH_MAX"), "logged: \(daemon.log)")
    }

    @Test("the folders of a recorded MURA-style study are removed with their inotify watches; a folder made again is watched again")
    func emptiedFoldersRemoved() throws {
        let daemon = try DaemonHarness()
        try daemon.writeConfig()
        var text = try String(contentsOfFile: daemon.configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "[drop_folder]\n", with: "[drop_folder]\nremove_empty_folders_after_seconds = 1\n")
        try text.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        try daemon.start(keepConfig: true)
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let pid = try #require(daemon.process?.processIdentifier)
        #expect(DaemonHarness.inotifyWatches(pid: pid) == 1, "only the drop folder is watched at first")

        for round in 0..<2 {
            // Three studies of two patients, moved in whole as `mv` does; the second round makes XR_HUMERUS again.
            let staged = files.path("round\(round)")
            let studies = [("patient0\(round)1", "study1_positive"), ("patient0\(round)1", "study2_negative"), ("patient0\(round)2", "study1_positive")]
            for (n, (patient, study)) in studies.enumerated() {
                let folder = staged + "/XR_HUMERUS/\(patient)/\(study)"
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
                // Images differ (a PNG's SOP Instance UID is its content's hash), so each study is its own.
                try PNGReader.write(testPattern(width: 60 + 10 * round + n, height: 50), to: folder + "/image1.png")
                try PNGReader.write(testPattern(width: 90 + 10 * round + n, height: 40), to: folder + "/image2.png")
            }
            try FileManager.default.moveItem(atPath: staged + "/XR_HUMERUS", toPath: daemon.dropFolder + "/XR_HUMERUS")
            try daemon.waitFor("3 studies recorded in round \(round)", timeout: 60) {
                try daemon.studies().filter { $0["source"] as? String == "drop_folder" }.count == 3 * (round + 1)
            }
            try daemon.waitFor("the drop folder emptied of folders in round \(round)", timeout: 60) {
                (try FileManager.default.contentsOfDirectory(atPath: daemon.dropFolder)).isEmpty
            }
            #expect(DaemonHarness.inotifyWatches(pid: pid) == 1, "the removed folders' watches are gone (round \(round))")
        }
        #expect(FileManager.default.fileExists(atPath: daemon.dropFolder), "the drop folder itself stays")
    }

    /// Whether this machine lets a process make a user namespace (where an inotify limit can be lowered
    /// for that namespace alone).
    static let userNamespaces: Bool = {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") else { return false }
        return (try? DaemonHarness.run("/usr/bin/unshare", ["-Ur", "sh", "-c", "echo 3 > /proc/sys/user/max_inotify_watches"]))?.status == 0
    }()

    @Test("a full inotify watch table (ENOSPC) is logged with what to raise, and the folders it left unwatched are rescanned and their files taken in",
          .enabled(if: userNamespaces, "skipped: needs user namespaces (unshare -Ur) to lower the watch limit for the daemon alone"))
    func fullWatchTable() throws {
        let daemon = try DaemonHarness()
        try daemon.writeConfig()
        var text = try String(contentsOfFile: daemon.configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "[drop_folder]\n", with: "[drop_folder]\nretry_seconds = 1\nremove_empty_folders_after_seconds = 3600\n")
        try text.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        // Seven folders; the daemon may hold three watches (user.max_inotify_watches in its own user
        // namespace, so no other process on the machine is limited).
        for folder in ["p1/s1", "p2/s1", "p3/s1"] {
            try FileManager.default.createDirectory(atPath: daemon.dropFolder + "/" + folder, withIntermediateDirectories: true)
        }
        let executable = try #require(Executable.url?.path)
        let logPath = daemon.dir.path("limited.log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/unshare")
        process.arguments = ["-Ur", "sh", "-c", "echo 3 > /proc/sys/user/max_inotify_watches && exec \"$0\" serve --config \"$1\"", executable, daemon.configPath]
        process.standardOutput = log
        process.standardError = log
        try process.run()
        defer {
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        func logText() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        try daemon.waitFor("listening", timeout: 30) { logText().contains("listening") || !process.isRunning }
        #expect(logText().contains("watch table is full") && logText().contains("fs.inotify.max_user_watches"), "\(logText())")

        // Into the last folders walked, which the full table left unwatched.
        let files = try TemporaryDirectory()
        try PNGReader.write(testPattern(width: 33, height: 44), to: files.path("image1.png"))
        try FileManager.default.moveItem(atPath: files.path("image1.png"), toPath: daemon.dropFolder + "/p3/s1/image1.png")
        try daemon.waitFor("the file in an unwatched folder taken in", timeout: 30) {
            try daemon.studies().contains { $0["description"] as? String == "p3/s1" }
        }
        #expect(!FileManager.default.fileExists(atPath: daemon.dropFolder + "/p3/s1/image1.png"))
        kill(process.processIdentifier, SIGTERM)
        try daemon.waitFor("exit", timeout: 30) { !process.isRunning }
        #expect(process.terminationStatus == 0)
    }
}

extension DaemonHarness {
    /// How many inotify watches a process holds: the `inotify wd:` lines of its inotify descriptors' fdinfo.
    static func inotifyWatches(pid: pid_t) -> Int? {
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
        var total = 0
        for fd in fds where (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)")) == "anon_inode:inotify" {
            let info = (try? String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8)) ?? ""
            total += info.split(separator: "\n").filter { $0.hasPrefix("inotify wd:") }.count
        }
        return total
    }
}

/// Folder chains too long to name in one path (more than PATH_MAX bytes), made and removed one
/// component at a time relative to a folder descriptor, as only such calls can.
enum DeepTree {
    static let component = String(repeating: "d", count: 240)

    /// `levels` nested folders of 240 characters under `below/top`, and a file in the deepest; returns its full path.
    static func make(below: String, top: String, levels: Int, file: String, contents: Data) throws -> String {
        try FileManager.default.createDirectory(atPath: below + "/" + top, withIntermediateDirectories: true)
        var fd = open(below + "/" + top, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.ENOENT) }
        var path = below + "/" + top
        for _ in 0..<levels {
            guard mkdirat(fd, component, 0o755) == 0 else { close(fd); throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            let next = openat(fd, component, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            close(fd)
            guard next >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
            fd = next
            path += "/" + component
        }
        defer { close(fd) }
        // Written to a hidden name and renamed, as a drop should be.
        let output = openat(fd, "." + file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        _ = contents.withUnsafeBytes { write(output, $0.baseAddress, $0.count) }
        close(output)
        guard renameat(fd, "." + file, fd, file) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return path + "/" + file
    }

    /// Removes what is left of such a chain (FileManager cannot), leaf first.
    static func remove(below: String, top: String) {
        let fd = open(below, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        removeContents(of: fd, name: top)
        unlinkat(fd, top, AT_REMOVEDIR)
    }

    private static func removeContents(of parent: Int32, name: String) {
        let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        guard let dir = fdopendir(dup(fd)) else { return }
        var names: [String] = []
        while let entry = readdir(dir) {
            let entryName = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if entryName != "." && entryName != ".." { names.append(entryName) }
        }
        closedir(dir)
        for entryName in names where unlinkat(fd, entryName, 0) != 0 {
            removeContents(of: fd, name: entryName)
            unlinkat(fd, entryName, AT_REMOVEDIR)
        }
    }
}

/// A listening-less Unix socket bound at a path (what a program's socket file in the drop folder is).
struct UnixSocket {
    let fd: Int32

    init(boundAt path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw POSIXError(.ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in bytes.enumerated() { raw[i] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    }

    func close() { _ = Glibc.close(fd) }
}
