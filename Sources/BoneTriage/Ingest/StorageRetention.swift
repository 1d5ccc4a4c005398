import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Keeps the spool and the archive from filling the disk. A triage node is not the archive (the PACS
/// is): the files of finished studies (triaged, not applicable, failed) are removed once they are older
/// than `[storage] retention_days`, and, while a folder is over its size limit, those of the oldest
/// finished studies first. A study that is receiving, waiting for triage or being triaged is never
/// touched; the worklist keeps every row, result and review, and notes when each file was removed.
public struct StorageRetention: Sendable {
    /// Why a study's files go.
    public enum Reason: String, Sendable, Equatable {
        case age = "older than [storage] retention_days"
        case size = "the folder is over its size limit"
    }

    public struct Removal: Sendable, Equatable {
        public var study: FinishedStudyFiles
        public var reason: Reason
    }

    public let folder: String
    /// "spool" or "archive", for the log.
    public let name: String
    public let limit: StorageLimit
    public let maximumAge: TimeInterval?

    public init(folder: String, name: String, limit: StorageLimit, retentionDays: Double) {
        self.folder = (folder as NSString).standardizingPath
        self.name = name
        self.limit = limit
        maximumAge = retentionDays > 0 ? retentionDays * 86_400 : nil
    }

    /// What to remove, oldest first: every finished study past the age limit, then the oldest others
    /// until the folder's size (`usedBytes`, all its files) is within `limitBytes`. `sizes` gives each
    /// file's size on disk (a file already gone counts nothing).
    public static func plan(finished: [FinishedStudyFiles], usedBytes: UInt64, limitBytes: UInt64?, maximumAge: TimeInterval?,
                            now: Date, sizes: (String) -> UInt64) -> [Removal] {
        var used = usedBytes
        var removals: [Removal] = []
        for study in finished {
            let reason: Reason
            if let maximumAge, now.timeIntervalSince(study.finishedAt) > maximumAge {
                reason = .age
            } else if let limitBytes, used > limitBytes {
                reason = .size
            } else {
                break  // oldest first: no later study is past the age, and the folder is within its limit
            }
            removals.append(Removal(study: study, reason: reason))
            let freed = study.paths.reduce(UInt64(0)) { $0 + sizes($1) }
            used = used > freed ? used - freed : 0
        }
        return removals
    }

    /// One pass: plans, removes the files (only below this folder), records it in the worklist and
    /// logs what went. Returns the removals.
    @discardableResult
    public func run(worklist: any WorklistStore, logger: Logger, now: Date = Date()) -> [Removal] {
        let finished: [FinishedStudyFiles]
        do { finished = try worklist.finishedStudyFiles(under: folder) } catch {
            logger.error("storage retention skipped for the \(name): \(error)")
            return []
        }
        let limitBytes = limit.bytes(ofFileSystem: FileSystem.sizeBytes(folder) ?? 0)
        guard maximumAge != nil || limitBytes != nil else { return [] }
        let used = limitBytes == nil ? 0 : FileSystem.usedBytes(under: folder)
        let removals = Self.plan(finished: finished, usedBytes: used, limitBytes: limitBytes, maximumAge: maximumAge, now: now,
                                 sizes: FileSystem.usedBytes(ofFile:))
        guard !removals.isEmpty else { return [] }
        var removedPaths: [String] = [], freed: UInt64 = 0
        for removal in removals {
            var folders = Set<String>()
            for path in removal.study.paths where path.hasPrefix(folder + "/") {
                let size = FileSystem.usedBytes(ofFile: path)
                if unlink(path) == 0 || errno == ENOENT {
                    removedPaths.append(path)
                    freed += size
                    folders.insert((path as NSString).deletingLastPathComponent)
                } else {
                    logger.warning("storage retention could not remove \(path): \(String(cString: strerror(errno)))")
                }
            }
            // The study's folder goes once it is empty (rmdir refuses a folder with anything in it).
            for f in folders where f != folder { rmdir(f) }
        }
        do { try worklist.markFilesRemoved(removedPaths, at: now) } catch {
            logger.error("storage retention removed \(removedPaths.count) file(s) but could not note it in the worklist: \(error)")
        }
        for reason in [Reason.age, .size] {
            let studies = removals.filter { $0.reason == reason }.map(\.study)
            guard !studies.isEmpty else { continue }
            let ids = studies.prefix(20).map(\.shortID).joined(separator: " ") + (studies.count > 20 ? " and \(studies.count - 20) more" : "")
            logger.info("storage retention removed the files of \(studies.count) finished study(ies) from the \(name): \(reason.rawValue)",
                        metadata: ["studies": "\(ids)", "oldest_finished": "\(studies[0].finishedAt)",
                                   "limit": "\(limitBytes.map { "\($0 / 1_000_000) MB (\(limit))" } ?? "none")"])
        }
        logger.info("storage retention freed \(freed / 1_000_000) MB in the \(name)", metadata: ["files": "\(removedPaths.count)"])
        return removals
    }
}

extension FileSystem {
    /// The size of the file system holding `path`, in bytes.
    public static func sizeBytes(_ path: String) -> UInt64? {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return nil }
        return UInt64(s.f_blocks) * UInt64(s.f_frsize)
    }

    /// Disk space a file takes (its allocated blocks); 0 when it is gone.
    public static func usedBytes(ofFile path: String) -> UInt64 {
        var info = stat()
        guard lstat(path, &info) == 0 else { return 0 }
        return UInt64(max(info.st_blocks, 0)) * 512
    }

    /// Disk space taken by every file below `folder` (links are not followed).
    public static func usedBytes(under folder: String) -> UInt64 {
        guard let walker = FileManager.default.enumerator(atPath: folder) else { return 0 }
        var total: UInt64 = 0
        while let relative = walker.nextObject() as? String {
            total += usedBytes(ofFile: folder + "/" + relative)
        }
        return total
    }
}
