import Foundation

/// `[worklist.postgresql]`: a PostgreSQL worklist that several nodes and the radiologists' workstations
/// share, as libpq connection parameters. What is not set here comes from libpq's own sources, as for
/// `psql`: the `PG*` environment variables (PGHOST, PGPORT, PGDATABASE, PGUSER, PGSSLMODE, ...), a service
/// file, and `~/.pgpass` (or `password_file`) for the password, which never goes in the configuration.
public struct PostgresSettings: Sendable, Equatable {
    /// Host names or addresses, comma-separated for failover ("db1.example,db2.example"), or a Unix socket folder.
    public var host: String?
    /// One port for every host, or one per host in the order of `host` (libpq's rule); empty: libpq's default.
    public var ports: [Int] = []
    public var database: String?
    public var user: String?
    /// libpq's `sslmode`: disable, allow, prefer, require, verify-ca or verify-full.
    public var sslMode: String?
    /// The CA certificate that verifies the server (libpq's `sslrootcert`), for verify-ca and verify-full.
    public var sslRootCertificate: String?
    /// A password file in `~/.pgpass` format (`host:port:database:user:password`, mode 0600 or stricter).
    public var passwordFile: String?
    /// Seconds to wait for a server to answer a connection (libpq's `connect_timeout`), per host.
    public var connectTimeout = 10
    /// Which of several hosts to use (libpq's `target_session_attrs`): "read-write", the default, finds the
    /// primary after a failover; "any" takes the first that answers (a read-only workstation on a replica).
    public var targetSessionAttributes = "read-write"

    public static let sslModes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
    public static let sessionAttributes = ["any", "read-write", "read-only", "primary", "standby", "prefer-standby"]
    /// The name a BoneTriage connection shows in `pg_stat_activity`.
    public static let applicationName = "bonetriage"

    public init() {}

    /// The libpq connection string (`key='value' ...`), with only what is set, plus the application name.
    public var connectionString: String {
        var parts: [(String, String)] = []
        if let host { parts.append(("host", host)) }
        if !ports.isEmpty { parts.append(("port", ports.map(String.init).joined(separator: ","))) }
        if let database { parts.append(("dbname", database)) }
        if let user { parts.append(("user", user)) }
        if let sslMode { parts.append(("sslmode", sslMode)) }
        if let sslRootCertificate { parts.append(("sslrootcert", sslRootCertificate)) }
        if let passwordFile { parts.append(("passfile", passwordFile)) }
        parts.append(("connect_timeout", String(connectTimeout)))
        parts.append(("target_session_attrs", targetSessionAttributes))
        parts.append(("application_name", Self.applicationName))
        return parts.map { "\($0.0)=\(Self.quoted($0.1))" }.joined(separator: " ")
    }

    /// A value as libpq reads it in a connection string: in single quotes, with \ and ' escaped.
    public static func quoted(_ value: String) -> String {
        "'" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'") + "'"
    }

    /// Whether `text` is a PostgreSQL URI (`postgresql://...` or `postgres://...`), as `[worklist] database` and `--db` take:
    /// `WorklistLocation`'s one rule.
    public static func isURI(_ text: String) -> Bool {
        if case .postgresql = WorklistLocation(text) { return true }
        return false
    }

    /// Whether a PostgreSQL URI carries a password (`postgresql://user:secret@host/db`, or `password=` in its query).
    public static func uriHasPassword(_ uri: String) -> Bool {
        guard let schemeEnd = uri.range(of: "://") else { return false }
        let rest = uri[schemeEnd.upperBound...]
        let authority = rest.prefix { $0 != "/" && $0 != "?" }
        if let at = authority.lastIndex(of: "@"), authority[..<at].contains(":") { return true }
        guard let query = rest.firstIndex(of: "?") else { return false }
        return rest[rest.index(after: query)...].split(separator: "&").contains { $0.lowercased().hasPrefix("password=") }
    }
}
