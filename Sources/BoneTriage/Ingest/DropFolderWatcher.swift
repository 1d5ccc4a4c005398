import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Watches a drop folder (recursively) with inotify and reports each entry once it is complete: a file
/// closed after writing (`IN_CLOSE_WRITE`) or moved in whole (`IN_MOVED_TO`), so a file still being
/// copied is never read half-way; anything else that appears and is not a folder (a symbolic link, a
/// FIFO, a socket, a device) as soon as it is created, for the intake to quarantine without opening it.
/// New sub-folders are watched as they appear, and what is already in them is reported (it may have
/// landed before the watch was added). `existingFiles()` lists what arrived while nothing was watching.
///
/// Nothing here follows a symbolic link or opens anything but a folder: folders are walked and watched
/// through descriptors opened with `O_NOFOLLOW` one component at a time (`DropTree`), so a linked
/// folder is never watched or walked, and a folder nested deeper than PATH_MAX is still reached.
///
/// Folders below the root that are empty and unchanged for `removeEmptyFoldersAfter` seconds are
/// removed (`removeEmptyFolders()`), with their watches, so months of studies do not fill the kernel's
/// watch table. When the table is full anyway (`inotify_add_watch` fails with ENOSPC) or the kernel's
/// event queue overflows (`IN_Q_OVERFLOW`), the watcher says so in the log with what to raise, and finds
/// the files it was not told about by rescanning the folder.
/// Sendable: the watch table is behind a lock and the descriptors never change.
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
    /// Seconds an emptied folder must stay unchanged before it is removed (a writer may still be using it).
    public let removeEmptyFoldersAfter: Double
    /// Seconds between rescans while some folder could not be watched.
    public let rescanInterval: Double
    /// A rescan reports a regular file only once it has been unchanged this long (a writer may still be
    /// filling a file whose close-after-write event was lost); younger ones are looked at again.
    static let settleSeconds = 2.0

    private let fd: Int32
    private let rootFD: Int32
    private let logger: Logger
    private let lock = NSLock()
    private var state = State()

    private struct State {
        /// Watch descriptor → folder, relative to the root ("" for the root).
        var folders: [Int32: String] = [:]
        var watches: [String: Int32] = [:]
        /// Folders found but not watched (a full watch table, or another error): rescanned.
        var unwatched: Set<String> = []
        var nextRescan: Date?
        var tableFullReported = false
        var overflows = 0
        var rescans = 0
    }

    private static let mask = UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO) | UInt32(IN_CREATE) | UInt32(IN_ONLYDIR)

    public init(root: String, removeEmptyFoldersAfter: Double = 120, rescanInterval: Double = 30,
                logger: Logger = Logger(label: "bonetriage.drop-folder")) throws {
        self.root = (root as NSString).standardizingPath
        self.removeEmptyFoldersAfter = removeEmptyFoldersAfter
        self.rescanInterval = rescanInterval
        self.logger = logger
        do { rootFD = try DropTree.openRoot(self.root) } catch {
            throw WatchError.cannotWatch(path: root, reason: "\(error)")
        }
        fd = inotify_init1(Int32(IN_CLOEXEC | IN_NONBLOCK))
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            close(rootFD)
            throw WatchError.cannotWatch(path: root, reason: reason)
        }
        // The root and every sub-folder that already exists (a study folder still being filled when
        // the daemon started).
        _ = walk()
    }

    deinit {
        close(fd)
        close(rootFD)
    }

    /// How many folders are watched now (the root included).
    public var watchCount: Int { lock.withLock { state.folders.count } }
    /// How many event-queue overflows were seen, and how many rescans were made.
    public var overflowCount: Int { lock.withLock { state.overflows } }
    public var rescanCount: Int { lock.withLock { state.rescans } }

    private func full(_ relative: String) -> String { relative.isEmpty ? root : root + "/" + relative }

    private static func join(_ folder: String, _ name: String) -> String { folder.isEmpty ? name : folder + "/" + name }

    private static func components(_ relative: String) -> [String] { relative.split(separator: "/").map(String.init) }

    /// Watches the open folder `folderFD` (at `relative`). Through /proc/self/fd, so the folder watched is
    /// the one opened (no link followed on the way, no path length limit).
    @discardableResult
    private func watch(_ folderFD: Int32, _ relative: String) -> Bool {
        var wd = inotify_add_watch(fd, "/proc/self/fd/\(folderFD)", Self.mask)
        if wd < 0, errno == ENOENT, full(relative).utf8.count < DropTree.pathMax {
            // No /proc: by name, without following a final link (the walk already refused links on the way).
            wd = inotify_add_watch(fd, full(relative), Self.mask | UInt32(IN_DONT_FOLLOW))
        }
        guard wd >= 0 else {
            let code = errno
            let first = lock.withLock { () -> Bool in
                state.unwatched.insert(relative)
                if state.nextRescan == nil { state.nextRescan = Date().addingTimeInterval(rescanInterval) }
                defer { if code == ENOSPC { state.tableFullReported = true } }
                return !(code == ENOSPC && state.tableFullReported)
            }
            if code == ENOSPC {
                if first {
                    logger.error("""
                        the kernel's inotify watch table is full (fs.inotify.max_user_watches = \(Self.sysctl("max_user_watches") ?? "?"), \
                        shared by every process of this user): drop-folder folders that cannot be watched are rescanned every \
                        \(Int(rescanInterval)) s instead. Raise it, e.g. `sysctl -w fs.inotify.max_user_watches=524288` and the \
                        same line in /etc/sysctl.d/90-bonetriage.conf
                        """, metadata: ["folder": "\(DropTree.shortened(full(relative)))"])
                }
            } else {
                logger.warning("cannot watch the drop-folder folder \(DropTree.shortened(full(relative))): \(String(cString: strerror(code))); it is rescanned every \(Int(rescanInterval)) s")
            }
            return false
        }
        lock.withLock {
            // A folder renamed inside the drop folder keeps its watch: forget its old name.
            if let old = state.folders[wd], old != relative, state.watches[old] == wd { state.watches[old] = nil }
            state.folders[wd] = relative
            state.watches[relative] = wd
            state.unwatched.remove(relative)
            if state.unwatched.isEmpty { state.tableFullReported = false }  // a later full table is reported again
        }
        return true
    }

    static func sysctl(_ name: String) -> String? {
        (try? String(contentsOfFile: "/proc/sys/fs/inotify/\(name)", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// An entry found by a walk: its path relative to the root, whether it is a regular file, when it changed.
    struct Found {
        var relative: String
        var regular: Bool
        var modified: Double
    }

    /// Walks `start` (relative; the root by default) and everything below it without following links:
    /// watches each folder and returns every entry that is not a folder.
    private func walk(_ start: String = "") -> [Found] {
        let folderFD: Int32
        do { folderFD = try DropTree.openFolder(rootFD, components: Self.components(start)) } catch {
            if case .gone = error { return [] }
            logger.warning("cannot read the drop-folder folder \(DropTree.shortened(full(start))): \(error)")
            return []
        }
        defer { close(folderFD) }
        var found: [Found] = []
        walk(folderFD, start, depth: Self.components(start).count, into: &found)
        return found
    }

    private func walk(_ folderFD: Int32, _ relative: String, depth: Int, into found: inout [Found]) {
        watch(folderFD, relative)
        guard let names = DropTree.names(in: folderFD) else {
            logger.warning("cannot list the drop-folder folder \(DropTree.shortened(full(relative))): \(String(cString: strerror(errno)))")
            return
        }
        for name in names.sorted() {
            guard let st = DropTree.status(folderFD, name) else { continue }
            let path = Self.join(relative, name)
            if st.st_mode & S_IFMT == S_IFDIR {
                guard depth < DropTree.maximumDepth else {
                    logger.error("the drop-folder folder \(DropTree.shortened(full(path))) is nested more than \(DropTree.maximumDepth) folders deep: it is not watched and nothing below it is taken in; move its files to a shallower folder")
                    continue
                }
                guard let child = try? DropTree.openFolder(folderFD, name) else { continue }
                walk(child, path, depth: depth + 1, into: &found)
                close(child)
            } else if Self.isCandidate(name) {
                found.append(Found(relative: path, regular: st.st_mode & S_IFMT == S_IFREG, modified: DropTree.modified(st)))
            }
        }
    }

    /// Every entry below the root that is not a folder (regular files, and links or special files for the
    /// intake to quarantine), oldest first (hidden files and `.part` downloads skipped). Watches every folder.
    public func existingFiles() -> [String] {
        walk().sorted { ($0.modified, $0.relative) < ($1.modified, $1.relative) }.map { full($0.relative) }
    }

    static func isCandidate(_ path: String) -> Bool {
        let name = (path as NSString).lastPathComponent
        return !name.hasPrefix(".") && !name.hasSuffix(".part") && !name.hasSuffix(".reason")
    }

    /// Walks the whole folder again (after lost events, or while some folder is unwatched): reports what
    /// is there, except regular files changed in the last `settleSeconds` (looked at again shortly).
    private func rescan(reason: String) -> [String] {
        lock.withLock {
            state.rescans += 1
            state.nextRescan = state.unwatched.isEmpty ? nil : Date().addingTimeInterval(rescanInterval)
        }
        let found = walk()
        let ready = settled(found)
        logger.debug("drop folder rescanned (\(reason)): \(ready.count) of \(found.count) entr(ies) reported, the others still changing")
        return ready
    }

    /// The entries of a walk that may be read now, oldest first: all but regular files changed in the
    /// last `settleSeconds`, for which a rescan is due once they have settled.
    private func settled(_ found: [Found]) -> [String] {
        let now = Date().timeIntervalSince1970
        let ready = found.filter { !$0.regular || now - $0.modified >= Self.settleSeconds }
        if ready.count < found.count {
            lock.withLock {
                let soon = Date().addingTimeInterval(Self.settleSeconds)
                state.nextRescan = min(state.nextRescan ?? soon, soon)
            }
        }
        return ready.sorted { ($0.modified, $0.relative) < ($1.modified, $1.relative) }.map { full($0.relative) }
    }

    /// Waits up to `timeout` seconds for events and returns the complete files they announce (and what a
    /// due rescan finds).
    public func nextFiles(timeout: Double) -> [String] {
        var ready: [String] = []
        let due = lock.withLock { state.nextRescan }
        if let due, due <= Date() { ready += rescan(reason: "some folders are not watched, or files were still changing") }
        let wait = due.map { max(0, min(timeout, $0.timeIntervalSinceNow)) } ?? timeout
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        if poll(&descriptor, 1, Int32(wait * 1000)) > 0 {
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                guard count > 0 else { break }
                ready += handle(events: Array(buffer[0..<count]))
            }
        }
        var seen = Set<String>()
        return ready.filter { seen.insert($0).inserted }
    }

    /// Interprets inotify events as `read(2)` returns them on the watcher's descriptor, and returns the
    /// entries they announce. Public so that a test can present events the kernel sends only under load
    /// (`IN_Q_OVERFLOW`).
    public func handle(events buffer: [UInt8]) -> [String] {
        var ready: [String] = []
        var offset = 0
        var overflowed = false
        // struct inotify_event: int wd; uint32 mask, cookie, len; char name[len] (NUL-padded).
        while offset + 16 <= buffer.count {
            let (wd, mask, length) = buffer.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: offset, as: Int32.self),
                 raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self),
                 Int(raw.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self)))
            }
            let nameBytes = buffer[(offset + 16)..<min(buffer.count, offset + 16 + length)].prefix { $0 != 0 }
            offset += 16 + length
            if mask & UInt32(IN_Q_OVERFLOW) != 0 {
                overflowed = true
                continue
            }
            if mask & UInt32(IN_IGNORED) != 0 {
                // The folder was removed (by us or by someone): its watch is gone.
                lock.withLock {
                    if let folder = state.folders.removeValue(forKey: wd), state.watches[folder] == wd { state.watches[folder] = nil }
                }
                continue
            }
            guard let folder = lock.withLock({ state.folders[wd] }), !nameBytes.isEmpty else { continue }
            let name = String(decoding: nameBytes, as: UTF8.self)
            let relative = Self.join(folder, name)
            if mask & UInt32(IN_ISDIR) != 0 {
                if mask & (UInt32(IN_CREATE) | UInt32(IN_MOVED_TO)) != 0 {
                    // Folders and files may have landed inside before the watch existed: watch every
                    // sub-folder and report what is already there. A file still changing (a `cp -r` under
                    // way) waits for its close-after-write, or for a rescan once it has settled.
                    ready += settled(walk(relative))
                }
                continue
            }
            guard Self.isCandidate(name) else { continue }
            if mask & (UInt32(IN_CLOSE_WRITE) | UInt32(IN_MOVED_TO)) != 0 {
                ready.append(full(relative))
            } else if mask & UInt32(IN_CREATE) != 0, !isRegularFile(relative) {
                // A link, FIFO, socket or device: no close-after-write will follow.
                ready.append(full(relative))
            }
        }
        if overflowed {
            let total = lock.withLock { () -> Int in
                state.overflows += 1
                return state.overflows
            }
            logger.warning("""
                the kernel's inotify event queue overflowed (fs.inotify.max_queued_events = \(Self.sysctl("max_queued_events") ?? "?")): \
                drop-folder events were lost, so the drop folder is rescanned (\(total) time(s) so far). If this recurs, raise it, \
                e.g. `sysctl -w fs.inotify.max_queued_events=65536` and the same line in /etc/sysctl.d/90-bonetriage.conf
                """)
            ready += rescan(reason: "event queue overflow")
        }
        return ready
    }

    /// Whether the entry at `relative` is a regular file (or gone: then its own event decides).
    private func isRegularFile(_ relative: String) -> Bool {
        var parts = Self.components(relative)
        guard let name = parts.popLast(), let folder = try? DropTree.openFolder(rootFD, components: parts) else { return true }
        defer { close(folder) }
        guard let st = DropTree.status(folder, name) else { return true }
        return st.st_mode & S_IFMT == S_IFREG
    }

    /// Removes every folder below the root that is empty and has not changed for `removeEmptyFoldersAfter`
    /// seconds, with its watch, deepest first; a parent emptied this way goes after its own wait. A
    /// folder that is not empty (a writer got there first) stays. Returns the removed folders' paths.
    @discardableResult
    public func removeEmptyFolders(now: Date = Date()) -> [String] {
        let known = lock.withLock { Set(state.watches.keys).union(state.unwatched) }.filter { !$0.isEmpty }
        // Deepest first, so a parent is looked at after its children.
        let candidates = known.sorted { ($0.utf8.count, $0) > ($1.utf8.count, $1) }
        var removed: [String] = []
        for relative in candidates {
            var parts = Self.components(relative)
            guard let name = parts.popLast() else { continue }
            let parent: Int32
            do { parent = try DropTree.openFolder(rootFD, components: parts) } catch {
                if case .gone = error { forget(relative) }
                continue
            }
            defer { close(parent) }
            guard let st = DropTree.status(parent, name) else {
                forget(relative)
                continue
            }
            guard st.st_mode & S_IFMT == S_IFDIR, now.timeIntervalSince1970 - DropTree.modified(st) >= removeEmptyFoldersAfter else { continue }
            if unlinkat(parent, name, AT_REMOVEDIR) == 0 {
                // The kernel drops the watch (and sends IN_IGNORED, then ignored here).
                forget(relative)
                removed.append(full(relative))
            }
        }
        if !removed.isEmpty {
            logger.debug("removed \(removed.count) emptied drop-folder folder(s) and their watches")
        }
        return removed
    }

    private func forget(_ relative: String) {
        lock.withLock {
            if let wd = state.watches.removeValue(forKey: relative) { state.folders[wd] = nil }
            state.unwatched.remove(relative)
        }
    }
}
