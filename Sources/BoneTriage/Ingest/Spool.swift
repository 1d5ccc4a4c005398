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
        let name = ((originalName ?? path) as NSString).lastPathComponent
        let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: .gmt, formatOptions: [.withYear, .withMonth, .withDay, .withTime])
        var target = root + "/\(stamp)-\(name)"
        var n = 1
        while FileManager.default.fileExists(atPath: target) || FileManager.default.fileExists(atPath: target + ".reason") {
            n += 1
            target = root + "/\(stamp)-\(n)-\(name)"
        }
        try FileSystem.moveDurably(path, to: target)
        let text = "file: \(originalName ?? path)\nquarantined: \(ISO8601DateFormatter().string(from: Date()))\nreason: \(reason)\n"
        try FileSystem.writeDurably(Data(text.utf8), to: target + ".reason")
        return target
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

    public static func syncFile(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
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
