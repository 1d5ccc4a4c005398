import Foundation

/// Who opens the worklist, and so how it is opened.
public enum WorklistRole: Sendable {
    /// `bonetriage serve`: creates the database and its folder when they are missing (the database with
    /// `SQLiteWorklist.creationMode`, so that the radiologists' group can review), and upgrades its schema.
    case daemon
    /// The radiologists' commands: never create a database; a missing one is an error that says where to look.
    /// A user who may read the worklist but not write it opens it read-only (`list`, `show`, `export`).
    case reviewer
    /// `confirm` and `override`: as `reviewer`, once this user is found allowed to write the worklist;
    /// if not, an error names the group to join and the file, before anything else is done.
    case recordingReviews
}

/// The one way the daemon and the CLI open the worklist. The backend is chosen here: SQLite today.
public enum Worklist {
    public static func open(path: String, role: WorklistRole) throws -> any WorklistStore {
        switch role {
        case .daemon:
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty { try FileSystem.makeFolder(folder) }
            return try SQLiteWorklist(path: path, create: true)
        case .reviewer:
            return try SQLiteWorklist(path: path, create: false)
        case .recordingReviews:
            try WorklistAccess.requireWrite(path: path)
            return try SQLiteWorklist(path: path, create: false)
        }
    }

    /// The worklist named by `[worklist] database`.
    public static func open(configuration: BoneTriageConfiguration, role: WorklistRole) throws -> any WorklistStore {
        try open(path: configuration.databasePath, role: role)
    }
}
