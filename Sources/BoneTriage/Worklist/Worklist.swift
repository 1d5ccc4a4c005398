import Foundation

/// Who opens the worklist, and so how it is opened.
public enum WorklistRole: Sendable {
    /// `bonetriage serve`: creates the database and its folder when they are missing (the database with
    /// `SQLiteWorklist.creationMode`, so that the radiologists' group can review), and upgrades its schema.
    case daemon
    /// The radiologists' commands: never create a database; a missing one is an error that says where to look.
    case reviewer
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
        }
    }

    /// The worklist named by `[worklist] database`.
    public static func open(configuration: BoneTriageConfiguration, role: WorklistRole) throws -> any WorklistStore {
        try open(path: configuration.databasePath, role: role)
    }
}
