import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// File-system steps inside the drop folder that never follow a symbolic link, never open anything
/// but a folder or a regular file, and never need a path name of PATH_MAX bytes or more: every step
/// is relative to a folder descriptor, reached from the drop folder one component at a time with
/// `O_NOFOLLOW`. So a link (to a file or a folder anywhere) is never followed, a FIFO is never opened,
/// and a file nested deeper than PATH_MAX can still be moved to the quarantine.
enum DropTree {
    /// The longest path name the kernel takes, terminating NUL included (4096 on Linux).
    static let pathMax = Int(PATH_MAX)
    /// Folders nested deeper than this are not walked (each level holds a descriptor during a walk).
    static let maximumDepth = 100

    /// What an entry is, from `lstat` (a link is itself, not what it points to).
    enum Kind: Equatable, Sendable {
        case regular, folder, symbolicLink(target: String), fifo, socket, device, unknown

        init(mode: mode_t, target: @autoclosure () -> String) {
            switch mode & S_IFMT {
            case S_IFREG: self = .regular
            case S_IFDIR: self = .folder
            case S_IFLNK: self = .symbolicLink(target: target())
            case S_IFIFO: self = .fifo
            case S_IFSOCK: self = .socket
            case S_IFCHR, S_IFBLK: self = .device
            default: self = .unknown
            }
        }

        var description: String {
            switch self {
            case .regular: return "a regular file"
            case .folder: return "a folder"
            case let .symbolicLink(target): return "a symbolic link (to '\(target)')"
            case .fifo: return "a FIFO (named pipe)"
            case .socket: return "a socket"
            case .device: return "a device file"
            case .unknown: return "a special file"
            }
        }
    }

    enum Failure: Error, CustomStringConvertible {
        /// The entry (or a folder on its way) is no longer there.
        case gone
        /// A folder on the way is a symbolic link or not a folder: nothing below it is reached.
        case notAFolder(String)
        case system(String, Int32)

        var description: String {
            switch self {
            case .gone: return "it is gone"
            case let .notAFolder(name): return "'\(shortened(name))' on its path is a symbolic link or not a folder"
            case let .system(what, code): return "\(what): \(String(cString: strerror(code)))"
            }
        }
    }

    /// The drop folder itself (a link configured as the drop folder is followed: the admin chose it).
    static func openRoot(_ root: String) throws(Failure) -> Int32 {
        let fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .system("cannot open the drop folder \(root)", errno) }
        return fd
    }

    /// Opens the sub-folder `name` of `parent`, refusing a link or anything but a folder.
    static func openFolder(_ parent: Int32, _ name: String) throws(Failure) -> Int32 {
        let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else {
            switch errno {
            case ENOENT: throw .gone
            case ELOOP, ENOTDIR: throw .notAFolder(name)
            case let code: throw .system("cannot open '\(shortened(name))'", code)
            }
        }
        return fd
    }

    /// Opens the folder at `components` below `rootFD` (a new descriptor of the root when empty),
    /// one component at a time, so no link on the way is followed.
    static func openFolder(_ rootFD: Int32, components: some Collection<String>) throws(Failure) -> Int32 {
        var fd = dup(rootFD)
        guard fd >= 0 else { throw .system("dup", errno) }
        for name in components {
            do {
                let next = try openFolder(fd, name)
                close(fd)
                fd = next
            } catch {
                close(fd)
                throw error
            }
        }
        return fd
    }

    /// The components of a path relative to the drop folder; nil when `path` is not strictly inside it
    /// or has an empty, `.` or `..` component.
    static func components(of path: String, root: String) -> [String]? {
        let prefix = root.hasSuffix("/") ? root : root + "/"
        guard path.hasPrefix(prefix) else { return nil }
        let parts = path.dropFirst(prefix.count).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !parts.isEmpty, parts.allSatisfy({ !$0.isEmpty && $0 != "." && $0 != ".." }) else { return nil }
        return parts
    }

    /// `lstat` of `name` in `folder`.
    static func status(_ folder: Int32, _ name: String) -> stat? {
        var st = stat()
        return fstatat(folder, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? st : nil
    }

    static func kind(_ folder: Int32, _ name: String, _ st: stat) -> Kind {
        Kind(mode: st.st_mode, target: linkTarget(folder, name))
    }

    static func linkTarget(_ folder: Int32, _ name: String) -> String {
        var buffer = [CChar](repeating: 0, count: pathMax)
        let n = readlinkat(folder, name, &buffer, buffer.count - 1)
        guard n >= 0 else { return "?" }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The names in an open folder (without `.` and `..`); nil when it cannot be read.
    static func names(in folder: Int32) -> [String]? {
        let copy = openat(folder, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard copy >= 0 else { return nil }
        guard let dir = fdopendir(copy) else {
            close(copy)
            return nil
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Whether two `stat`s are the same file.
    static func same(_ a: stat, _ b: stat) -> Bool { a.st_dev == b.st_dev && a.st_ino == b.st_ino }

    static func modified(_ st: stat) -> Double { Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9 }

    /// A path short enough for a log line: a long one keeps its start and its end.
    static func shortened(_ path: String, limit: Int = 160) -> String {
        guard path.count > limit else { return path }
        return String(path.prefix(limit / 4)) + "…(\(path.utf8.count) bytes)…" + String(path.suffix(limit * 3 / 4))
    }
}
