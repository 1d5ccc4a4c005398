import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What the user running a command may do with a worklist file: the radiologists who review are in
/// the database file's group (`bonetriage` as installed), which may write it (mode 0660); others the
/// administrator lets read it can list, show and export, and nothing more.
public enum WorklistAccess {
    /// The group a radiologist joins to record reviews when the file's own group cannot be named.
    public static let reviewersGroup = "bonetriage"

    /// Fails, before anything else is done, when this user (its real uid and groups, as `access(2)`
    /// checks) may not write the worklist and its WAL files, with an error naming the group to join and the file.
    public static func requireWrite(path: String) throws {
        for file in [path, path + "-wal", path + "-shm"] {
            var info = stat()
            guard stat(file, &info) == 0 else {
                if file == path && errno == ENOENT { throw WorklistError.databaseNotFound(path: path) }
                if file == path { throw WorklistError.databaseUnusable(path: path, reason: String(cString: strerror(errno))) }
                continue  // No WAL file yet: SQLite creates it with the database's mode.
            }
            if access(file, W_OK) != 0 { throw WorklistError.reviewNotAllowed(path: file, group: groupName(info.st_gid), groupMayWrite: info.st_mode & S_IWGRP != 0) }
        }
    }

    /// Whether this user (real uid and groups) may write `path`.
    static func mayWrite(_ path: String) -> Bool { access(path, W_OK) == 0 }

    /// The name of a group, or its number when it has none.
    static func groupName(_ gid: gid_t) -> String {
        if let entry = getgrgid(gid), let name = String(validatingCString: entry.pointee.gr_name), !name.isEmpty { return name }
        return "\(gid)"
    }
}
