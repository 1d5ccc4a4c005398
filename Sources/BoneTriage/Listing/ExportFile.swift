import Foundation

/// A file of patient data written whole or not at all: into a temporary file in the same folder, mode
/// 0600 whatever the umask, then moved to its name; an existing file is replaced only when asked.
public enum ExportFile {
    public enum Failure: Error, CustomStringConvertible, Equatable {
        case exists(path: String)
        case cannotWrite(path: String, reason: String)

        public var description: String {
            switch self {
            case let .exists(path): return "\(path) already exists; add --force to replace it, or choose another --out"
            case let .cannotWrite(path, reason): return "cannot write \(path): \(reason); choose a folder you can write to, or --out - for standard output"
            }
        }
    }

    public static let mode: mode_t = 0o600

    public static func write(to path: String, force: Bool, _ body: (OutputWriter) throws -> Void) throws {
        var info = stat()
        if !force && lstat(path, &info) == 0 { throw Failure.exists(path: path) }
        let folder = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        var template = Array(((folder.isEmpty ? "." : folder) + "/.\(name).XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.map { mkstemp($0) } ?? -1 }
        guard fd >= 0 else { throw Failure.cannotWrite(path: path, reason: String(cString: strerror(errno))) }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var done = false
        defer {
            close(fd)
            if !done { unlink(temporary) }
        }
        guard fchmod(fd, mode) == 0 else { throw Failure.cannotWrite(path: path, reason: String(cString: strerror(errno))) }
        let writer = OutputWriter(fd: fd)
        do {
            try body(writer)
            try writer.flush()
        } catch let error as OutputError {
            throw Failure.cannotWrite(path: path, reason: error.reason)
        }
        guard fsync(fd) == 0 else { throw Failure.cannotWrite(path: path, reason: String(cString: strerror(errno))) }
        if force {
            guard rename(temporary, path) == 0 else { throw Failure.cannotWrite(path: path, reason: String(cString: strerror(errno))) }
        } else {
            // link() refuses an existing name: a file created meanwhile is never replaced.
            if link(temporary, path) != 0 {
                if errno == EEXIST { throw Failure.exists(path: path) }
                throw Failure.cannotWrite(path: path, reason: String(cString: strerror(errno)))
            }
            unlink(temporary)
        }
        done = true
    }
}
