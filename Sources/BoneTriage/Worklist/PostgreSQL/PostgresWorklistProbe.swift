import Foundation

/// What `serve --check-config` learns from a PostgreSQL worklist without changing it: whether the server
/// answers (and the server as host:port/database, never the password), whether it can be written, the
/// schema's state against this BoneTriage's migrations, and whether the login may own or create the schema.
public struct PostgresWorklistProbe: Sendable, Equatable {
    public enum Schema: Sendable, Equatable {
        /// No BoneTriage table yet: the daemon creates the schema when it first starts.
        case absent
        case current
        /// Migrations this BoneTriage applies at start.
        case older(missing: [String])
        /// Written by a newer BoneTriage: refused.
        case newer(unknown: [String])
        /// The login may not read the schema's migrations (it does not own them either).
        case unreadable
    }

    public enum Ownership: Sendable, Equatable {
        /// The login owns the worklist's tables (or is a member of the role that does).
        case ownsSchema
        /// No table yet, and the login may create tables in its schema.
        case canCreate(schema: String)
        /// The daemon could not create or upgrade the schema, nor grant the reviewer and reader roles.
        case cannot(String)
    }

    /// host:port/database as libpq resolved it.
    public var server: String
    public var login: String
    public var serverVersion: String
    /// A standby (in recovery) or a session that only reads.
    public var readOnly: Bool
    public var schema: Schema
    public var ownership: Ownership

    /// Connects once, reads, and closes. Throws `WorklistError.databaseUnreachable` (with libpq's reason)
    /// when no server answers.
    public static func probe(connection conninfo: String) throws -> PostgresWorklistProbe {
        let named = WorklistLocation.postgresql(connection: conninfo).description
        return try PostgresWorklist.mapErrors(named) {
            let c = try PostgresConnection(conninfo)
            guard let row = try c.execute("""
                SELECT current_user, current_setting('server_version'), pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on',
                       current_schema(), coalesce(has_schema_privilege(current_schema(), 'CREATE'), false)
                """).first else { throw PostgresError(sqlState: nil, message: "the server sent no row for a SELECT", connectionLost: false) }
            let login = row.text(0) ?? "?"
            // The migrations table: its owner, whether this login is (a member of) it, whether it may read it.
            let table = try c.execute("""
                SELECT pg_get_userbyid(relowner), pg_has_role(current_user, relowner, 'MEMBER'), has_table_privilege(oid, 'SELECT')
                FROM pg_class WHERE oid = to_regclass($1)
                """, [PostgresSchema.migrationTable]).first
            let schema: Schema
            if let table, try table.bool(2) != true {
                schema = .unreadable
            } else {
                let applied = table == nil ? [] : try PostgresSchema.applied(c)
                let known = Set(PostgresSchema.identifiers)
                let unknown = applied.filter { !known.contains($0) }
                let missing = PostgresSchema.identifiers.filter { !applied.contains($0) }
                schema = applied.isEmpty ? .absent : !unknown.isEmpty ? .newer(unknown: unknown.sorted()) : missing.isEmpty ? .current : .older(missing: missing)
            }
            let ownership: Ownership
            if table == nil {
                if let name = row.text(3), try row.bool(4) == true {
                    ownership = .canCreate(schema: name)
                } else {
                    let name = row.text(3).map { "schema \($0)" } ?? "any schema (search_path names none that exists)"
                    ownership = .cannot("login \(login) may not create tables in \(name) of this database; make the daemon's login the database's owner "
                                        + "(CREATE DATABASE ... OWNER \(login)) or GRANT CREATE ON SCHEMA public TO \(login)")
                }
            } else {
                if try table?.bool(1) == true {
                    ownership = .ownsSchema
                } else {
                    let name = table?.text(0) ?? "another role"
                    ownership = .cannot("the worklist's tables belong to \(name), not to login \(login): the daemon must connect as the login that "
                                        + "owns them (set user, or ALTER TABLE ... OWNER TO \(login) for each)")
                }
            }
            return PostgresWorklistProbe(server: c.server, login: login, serverVersion: row.text(1) ?? "?", readOnly: try row.bool(2) ?? false,
                                         schema: schema, ownership: ownership)
        }
    }

    /// What keeps the daemon from using this worklist (nil: nothing).
    public var problem: String? {
        if readOnly {
            return "\(server) is read-only (a standby, or default_transaction_read_only is on); the daemon writes: list the primary's host too, "
                + "with target_session_attrs = \"read-write\""
        }
        if case let .newer(unknown) = schema { return WorklistError.newerSchema(path: server, unknownMigrations: unknown).description }
        if case let .cannot(reason) = ownership { return reason }
        return nil
    }

    /// One line for the check's summary: server, version, login, schema, ownership.
    public var summary: String {
        let state: String
        switch schema {
        case .absent: state = "no BoneTriage schema yet: created at the first start"
        case .current: state = "schema current (\(PostgresSchema.identifiers.last ?? "?"))"
        case let .older(missing): state = "schema older: \(missing.count) migration(s) applied at start (\(missing.joined(separator: ", ")))"
        case let .newer(unknown): state = "schema newer than this BoneTriage (\(unknown.joined(separator: ", "))): refused"
        case .unreadable: state = "schema not readable by this login"
        }
        let owns: String
        switch ownership {
        case .ownsSchema: owns = "the login owns the schema"
        case let .canCreate(schema): owns = "the login may create it (in schema \(schema))"
        case .cannot: owns = "the login may not own or create the schema"
        }
        return "\(server) reachable (PostgreSQL \(serverVersion)\(readOnly ? ", read-only" : "")) as login \(login); \(state); \(owns)"
    }
}
