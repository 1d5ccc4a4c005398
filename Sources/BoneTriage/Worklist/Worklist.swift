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

/// Where the worklist is: a SQLite file, or a PostgreSQL database (a libpq conninfo string or postgresql:// URI).
public enum WorklistLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case postgresql(connection: String)

    /// "postgresql://…" or "postgres://…" is PostgreSQL; anything else is a SQLite path.
    public init(_ text: String) {
        let lower = text.lowercased()
        if lower.hasPrefix("postgresql://") || lower.hasPrefix("postgres://") {
            self = .postgresql(connection: text)
        } else {
            self = .sqlite(path: text)
        }
    }

    /// For messages and logs: the path, or the server as host:port/database with any password removed.
    public var description: String {
        switch self {
        case let .sqlite(path): return path
        case let .postgresql(connection): return PostgresConnectionString.server(connection)
        }
    }
}

/// The one way the daemon and the CLI open the worklist. The backend is chosen here, by its location.
public enum Worklist {
    public static func open(path: String, role: WorklistRole) throws -> any WorklistStore {
        try open(.sqlite(path: path), role: role)
    }

    /// The daemon creates a missing worklist (a SQLite file and its folder, or the schema in an existing
    /// PostgreSQL database) and upgrades an older one; the radiologists' commands never create nor
    /// upgrade a PostgreSQL schema, and are told the daemon does.
    /// `node`: the name the daemon records its files and triages under (`[worklist] node`).
    public static func open(_ location: WorklistLocation, role: WorklistRole, node: String = WorklistNode.local) throws -> any WorklistStore {
        switch (location, role) {
        case let (.sqlite(path), .daemon):
            let folder = (path as NSString).deletingLastPathComponent
            if !folder.isEmpty { try FileSystem.makeFolder(folder) }
            return try SQLiteWorklist(path: path, create: true, node: node)
        case let (.sqlite(path), .reviewer):
            return try SQLiteWorklist(path: path, create: false, node: node)
        case let (.sqlite(path), .recordingReviews):
            try WorklistAccess.requireWrite(path: path)
            return try SQLiteWorklist(path: path, create: false, node: node)
        case let (.postgresql(connection), .daemon):
            return try PostgresWorklist(connection: connection, migrate: true, node: node)
        case let (.postgresql(connection), .reviewer), let (.postgresql(connection), .recordingReviews):
            return try PostgresWorklist(connection: connection, migrate: false, node: node)
        }
    }

    /// The schema's named migrations, oldest first: the same for every backend.
    public static var schemaMigrations: [String] { WorklistSchema.migrator.migrations }

    /// The worklist named by `[worklist] database` or `[worklist.postgresql]`.
    public static func open(configuration: BoneTriageConfiguration, role: WorklistRole) throws -> any WorklistStore {
        try open(configuration.worklistLocation, role: role, node: configuration.worklistNode)
    }
}
