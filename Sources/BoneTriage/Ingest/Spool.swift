import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Errors of the spool and the quarantine: always with the folder and what to do.
public enum SpoolError: Error, CustomStringConvertible, Equatable {
    case cannotPrepare(path: String, reason: String)
    case cannotStore(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotPrepare(path, reason):
            return "cannot use the folder \(path): \(reason); create it and give the service's user write access (see [storage] in the config)"
        case let .cannotStore(path, reason):
            return "cannot store \(path): \(reason)"
        }
    }
}

/// Where received files live until triage and after: `<root>/<Study Instance UID>/<SOP Instance UID>.<ext>`,
/// with files being received in `<root>/.incoming`. A file enters the spool only fsync'd and by a hard
/// link under its final name, so a name is never half-written, and a second copy of the same SOP instance
/// finds the first one there and is dropped.
public struct Spool: Sendable {
    public let root: String
    public var incoming: String { root + "/.incoming" }

    public enum Placement: Equatable, Sendable {
        case stored(path: String)
        /// The same SOP instance was already in the spool; the new copy was discarded.
        case alreadyPresent(path: String)

        public var path: String {
            switch self { case let .stored(p), let .alreadyPresent(p): return p }
        }
    }

    public init(root: String) {
        self.root = (root as NSString).standardizingPath
    }

    /// Creates the folders and clears files left half-received by a previous run (never acknowledged,
    /// so their senders still hold them). Returns how many were cleared.
    @discardableResult
    public func prepare() throws -> Int {
        try FileSystem.makeFolder(root)
        try FileSystem.makeFolder(incoming)
        var cleared = 0
        for name in (try? FileManager.default.contentsOfDirectory(atPath: incoming)) ?? [] where unlink(incoming + "/" + name) == 0 {
            cleared += 1
        }
        return cleared
    }

    /// A fresh name in `.incoming` for a file about to be written.
    public func temporaryPath(tag: String) -> String {
        incoming + "/\(tag)-\(getpid())-\(UUID().uuidString).part"
    }

    /// Moves an fsync'd temporary file to its final name.
    public func place(temporary: String, study: String, instance: String, fileExtension: String) throws -> Placement {
        let folder = root + "/" + Self.component(study)
        try FileSystem.makeFolder(folder)
        let final = folder + "/" + Self.component(instance) + "." + fileExtension
        if link(temporary, final) != 0 {
            let error = errno
            if error == EEXIST {
                unlink(temporary)
                return .alreadyPresent(path: final)
            }
            throw SpoolError.cannotStore(path: final, reason: String(cString: strerror(error)))
        }
        unlink(temporary)
        try FileSystem.syncFolder(folder)
        return .stored(path: final)
    }

    /// A UID as a file name; anything that is not a plain UID is replaced by its hash.
    static func component(_ uid: String) -> String {
        let plain = !uid.isEmpty && uid.count <= 64 && !uid.hasPrefix(".") && uid.allSatisfy { $0 == "." || ("0"..."9").contains($0) }
        return plain ? uid : "h" + String(SHA256Digest.hex(Data(uid.utf8)).prefix(32))
    }
}

/// Unreadable files, each with a `.reason` file beside it saying what was wrong and when.
public struct Quarantine: Sendable {
    public let root: String

    public init(root: String) {
        self.root = (root as NSString).standardizingPath
    }

    public func prepare() throws { try FileSystem.makeFolder(root) }

    /// Moves (or, across file systems, copies) a file into the quarantine and writes its reason.
    /// Returns the quarantined path.
    @discardableResult
    public func admit(_ path: String, originalName: String? = nil, reason: String) throws -> String {
        let target = freshTarget(for: originalName ?? path)
        try FileSystem.moveDurably(path, to: target)
        try writeReason(file: originalName ?? path, reason: reason, to: target)
        return target
    }

    /// Moves the entry `name` of the open folder `folder` into the quarantine as it is: a link stays a
    /// link (what it points to is not touched), a FIFO or socket is never opened. Relative to the folder's
    /// descriptor, so an entry whose full path is longer than PATH_MAX moves too. Across file systems a
    /// regular file is copied, then removed; any other entry is removed and described in its `.reason`.
    @discardableResult
    public func admit(entry name: String, in folder: Int32, originalName: String, reason: String) throws -> String {
        let target = freshTarget(for: name)
        var note = ""
        if renameat(folder, name, AT_FDCWD, target) == 0 {
            var st = stat()
            if lstat(target, &st) == 0, st.st_mode & S_IFMT == S_IFREG { try? FileSystem.syncFile(target) }
            try? FileSystem.syncFolder(root)
        } else {
            let code = errno
            guard code == EXDEV else { throw SpoolError.cannotStore(path: target, reason: String(cString: strerror(code))) }
            var st = stat()
            guard fstatat(folder, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else {
                throw SpoolError.cannotStore(path: target, reason: String(cString: strerror(errno)))
            }
            if st.st_mode & S_IFMT == S_IFREG {
                let input = openat(folder, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
                guard input >= 0 else { throw SpoolError.cannotStore(path: target, reason: String(cString: strerror(errno))) }
                defer { close(input) }
                try FileSystem.copyContents(of: input, to: target)
            } else {
                note = "\nnot kept: it is not a regular file and the quarantine is on another file system, so it was removed from the drop folder"
            }
            unlinkat(folder, name, 0)
        }
        try writeReason(file: originalName, reason: reason + note, to: target)
        return target
    }

    private func freshTarget(for original: String) -> String {
        let name = (original as NSString).lastPathComponent
        let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: .gmt, formatOptions: [.withYear, .withMonth, .withDay, .withTime])
        var target = root + "/\(stamp)-\(name)"
        var n = 1
        var st = stat()
        // lstat: a quarantined link to nowhere still takes its name.
        while lstat(target, &st) == 0 || lstat(target + ".reason", &st) == 0 {
            n += 1
            target = root + "/\(stamp)-\(n)-\(name)"
        }
        return target
    }

    private func writeReason(file: String, reason: String, to target: String) throws {
        let text = "file: \(file)\nquarantined: \(ISO8601DateFormatter().string(from: Date()))\nreason: \(reason)\n"
        try FileSystem.writeDurably(Data(text.utf8), to: target + ".reason")
    }
}

/// The few POSIX file operations the ingest needs, each with fsync where durability matters.
public enum FileSystem {
    public static func makeFolder(_ path: String) throws {
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) {
            guard isFolder.boolValue else { throw SpoolError.cannotPrepare(path: path, reason: "it is a file, not a folder") }
            guard access(path, W_OK | X_OK) == 0 else { throw SpoolError.cannotPrepare(path: path, reason: "it is not writable by this user") }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        } catch {
            throw SpoolError.cannotPrepare(path: path, reason: (error as NSError).localizedDescription)
        }
        try? syncFolder((path as NSString).deletingLastPathComponent)
    }

    /// Never blocks on a FIFO nor follows a link (then it fails, and nothing is synced).
    public static func syncFile(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)
        guard fd >= 0 else { throw SpoolError.cannotStore(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw SpoolError.cannotStore(path: path, reason: "fsync: " + String(cString: strerror(errno))) }
    }

    public static func syncFolder(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw SpoolError.cannotStore(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        _ = fsync(fd)
    }

    /// Hard-links (same file system) or copies `source` to `target`, fsync'd; `source` is left in place.
    public static func copyDurably(_ source: String, to target: String) throws {
        if link(source, target) == 0 {
            try syncFile(target)
            return
        }
        guard errno == EXDEV || errno == EPERM || errno == EMLINK else {
            throw SpoolError.cannotStore(path: target, reason: String(cString: strerror(errno)))
        }
        let input = open(source, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw SpoolError.cannotStore(path: source, reason: String(cString: strerror(errno))) }
        defer { close(input) }
        try copyContents(of: input, to: target)
    }

    /// A durable copy of the open regular file `descriptor` (the entry `name` of the open folder `folder`)
    /// at `target`: a hard link when the file system allows it and the entry is still the file that was
    /// opened, a copy of the descriptor's content otherwise. Never reads through a name that may have
    /// changed, and never follows a link.
    public static func copyDurably(descriptor: Int32, in folder: Int32, name: String, to target: String) throws {
        var opened = stat()
        guard fstat(descriptor, &opened) == 0 else { throw SpoolError.cannotStore(path: target, reason: String(cString: strerror(errno))) }
        if linkat(folder, name, AT_FDCWD, target, 0) == 0 {
            var linked = stat()
            if lstat(target, &linked) == 0, linked.st_dev == opened.st_dev, linked.st_ino == opened.st_ino {
                try syncFile(target)
                return
            }
            unlink(target)  // the name now holds another file: copy the one that was opened
        } else if !(errno == EXDEV || errno == EPERM || errno == EMLINK) {
            throw SpoolError.cannotStore(path: target, reason: String(cString: strerror(errno)))
        }
        guard lseek(descriptor, 0, SEEK_SET) == 0 else { throw SpoolError.cannotStore(path: target, reason: "seek: " + String(cString: strerror(errno))) }
        try copyContents(of: descriptor, to: target)
    }

    /// Copies what `input` reads to a new file `target`, fsync'd; removes `target` on failure.
    public static func copyContents(of input: Int32, to target: String) throws {
        let output = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        guard output >= 0 else { throw SpoolError.cannotStore(path: target, reason: String(cString: strerror(errno))) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var failure: String?
        while failure == nil {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 { failure = "read: " + String(cString: strerror(errno)); break }
            var offset = 0
            while offset < n {
                let w = buffer.withUnsafeBytes { write(output, $0.baseAddress! + offset, n - offset) }
                if w <= 0 { failure = "write: " + String(cString: strerror(errno)); break }
                offset += w
            }
        }
        if failure == nil, fsync(output) != 0 { failure = "fsync: " + String(cString: strerror(errno)) }
        close(output)
        if let failure {
            unlink(target)
            throw SpoolError.cannotStore(path: target, reason: failure)
        }
    }

    /// Renames, or copies then removes across file systems; the target is fsync'd either way.
    public static func moveDurably(_ source: String, to target: String) throws {
        if rename(source, target) == 0 {
            try? syncFile(target)
            try? syncFolder((target as NSString).deletingLastPathComponent)
            return
        }
        guard errno == EXDEV else { throw SpoolError.cannotStore(path: target, reason: String(cString: strerror(errno))) }
        try copyDurably(source, to: target)
        unlink(source)
    }

    public static func writeDurably(_ data: Data, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw SpoolError.cannotStore(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == data.count, fsync(fd) == 0 else { throw SpoolError.cannotStore(path: path, reason: String(cString: strerror(errno))) }
    }

    /// Free space in megabytes on the file system holding `path`.
    public static func freeMegabytes(_ path: String) -> Int? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return Int(UInt64(s.f_bavail) * UInt64(s.f_frsize) >> 20)
    }
}
