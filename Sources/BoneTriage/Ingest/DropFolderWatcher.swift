import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Watches a drop folder (recursively) with inotify and reports each file once it is complete:
/// closed after writing (`IN_CLOSE_WRITE`) or moved in whole (`IN_MOVED_TO`), so a file still being
/// copied is never read half-way. New sub-folders are watched as they appear, and files already in
/// them are reported (they may have landed before the watch was added). `existingFiles()` lists what
/// arrived while nothing was watching.
/// Sendable: the watch table is behind a lock and the descriptor never changes.
public final class DropFolderWatcher: @unchecked Sendable {
    public enum WatchError: Error, CustomStringConvertible {
        case cannotWatch(path: String, reason: String)
        public var description: String {
            switch self {
            case let .cannotWatch(path, reason): return "cannot watch the drop folder \(path): \(reason); check that it exists and the service may read it"
            }
        }
    }

    public let root: String
    private let fd: Int32
    private var folders: [Int32: String] = [:]
    private let lock = NSLock()

    public init(root: String) throws {
        self.root = (root as NSString).standardizingPath
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else { throw WatchError.cannotWatch(path: root, reason: String(cString: strerror(errno))) }
        try addWatch(self.root)
        // Sub-folders that already exist (a study folder still being filled when the daemon started).
        for entry in FileManager.default.enumerator(atPath: self.root)?.allObjects.compactMap({ $0 as? String }) ?? [] {
            let path = (self.root as NSString).appendingPathComponent(entry)
            if !Self.isRegularFile(path) { try? addWatch(path) }
        }
    }

    deinit { close(fd) }

    private func addWatch(_ path: String) throws {
        let mask = UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO) | UInt32(IN_CREATE)
        let wd = inotify_add_watch(fd, path, mask)
        guard wd >= 0 else { throw WatchError.cannotWatch(path: path, reason: String(cString: strerror(errno))) }
        lock.withLock { folders[wd] = path }
    }

    /// Every regular file below the root, oldest first (hidden files and `.part` downloads skipped).
    public func existingFiles() -> [String] {
        let files = FileManager.default.enumerator(atPath: root)?.allObjects.compactMap { $0 as? String } ?? []
        return files.map { (root as NSString).appendingPathComponent($0) }
            .filter { Self.isCandidate($0) && Self.isRegularFile($0) }
            .sorted { (Self.modified($0) ?? .distantPast, $0) < (Self.modified($1) ?? .distantPast, $1) }
    }

    static func isCandidate(_ path: String) -> Bool {
        let name = (path as NSString).lastPathComponent
        return !name.hasPrefix(".") && !name.hasSuffix(".part") && !name.hasSuffix(".reason")
    }

    static func isRegularFile(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
    }

    static func modified(_ path: String) -> Date? {
        (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date
    }

    /// Waits up to `timeout` seconds for events and returns the complete files they announce.
    public func nextFiles(timeout: Double) -> [String] {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(timeout * 1000)) > 0 else { return [] }
        var ready: [String] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            var offset = 0
            // struct inotify_event: int wd; uint32 mask, cookie, len; char name[len] (NUL-padded).
            while offset + 16 <= count {
                let (wd, mask, length) = buffer.withUnsafeBytes { raw in
                    (raw.loadUnaligned(fromByteOffset: offset, as: Int32.self),
                     raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self),
                     Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self)))
                }
                let nameBytes = buffer[(offset + 16)..<min(count, offset + 16 + length)].prefix { $0 != 0 }
                offset += 16 + length
                guard let folder = lock.withLock({ folders[wd] }), !nameBytes.isEmpty else { continue }
                let path = (folder as NSString).appendingPathComponent(String(decoding: nameBytes, as: UTF8.self))
                if mask & UInt32(IN_ISDIR) != 0 {
                    if mask & (UInt32(IN_CREATE) | UInt32(IN_MOVED_TO)) != 0, (try? addWatch(path)) != nil {
                        // Folders and files may have landed inside before the watch existed: watch every
                        // sub-folder and report the files already there.
                        let inside = (FileManager.default.enumerator(atPath: path)?.allObjects.compactMap { $0 as? String } ?? [])
                            .map { (path as NSString).appendingPathComponent($0) }.sorted()
                        for entry in inside {
                            if Self.isRegularFile(entry) {
                                if Self.isCandidate(entry) { ready.append(entry) }
                            } else {
                                try? addWatch(entry)
                            }
                        }
                    }
                    continue
                }
                if mask & (UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO)) != 0, Self.isCandidate(path) { ready.append(path) }
            }
        }
        var seen = Set<String>()
        return ready.filter { seen.insert($0).inserted }
    }
}
