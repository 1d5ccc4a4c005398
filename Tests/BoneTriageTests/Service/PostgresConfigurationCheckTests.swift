import BoneTriage
import Foundation
import Testing

/// `serve --check-config` with a PostgreSQL worklist: it connects (changing nothing) and says whether the
/// server answers, the schema's state, and whether the login may own or create it.
@Suite("serve --check-config on a PostgreSQL worklist", .enabled(if: PostgresCluster.isInstalled, "PostgreSQL 15 is not installed"))
struct PostgresConfigurationCheckTests {
    let check = ConfigurationCheck(cores: 4, defaultModelPath: { "/nonexistent" })

    static func configuration(_ conninfo: String) throws -> BoneTriageConfiguration {
        var c = BoneTriageConfiguration()
        c.postgresConnection = conninfo
        return c
    }

    @Test("reachable: an empty database the login may create the schema in, then the current schema it owns, then an older one (migrated at start); no failure")
    func reachable() throws {
        let conninfo = try PostgresCluster.shared().freshDatabase()
        let c = try Self.configuration(conninfo)
        let empty = check.worklistFindings(c)
        #expect(empty.findings.isEmpty, "\(empty.findings)")
        let server = WorklistLocation(conninfo).description
        #expect(empty.summary?.hasPrefix("\(server) reachable (PostgreSQL 15.") == true, "\(empty.summary ?? "nil")")
        #expect(empty.summary?.contains("as login postgres; no BoneTriage schema yet: created at the first start; the login may create it (in schema public)") == true,
                "\(empty.summary ?? "nil")")

        _ = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        let last = try #require(Worklist.schemaMigrations.last)
        let current = check.worklistFindings(c)
        #expect(current.findings.isEmpty)
        #expect(current.summary?.contains("schema current (\(last)); the login owns the schema") == true, "\(current.summary ?? "nil")")

        try PostgresConnection(conninfo).execute("DELETE FROM worklist_migrations WHERE identifier = $1", [last])
        let older = check.worklistFindings(c)
        #expect(older.findings.isEmpty)
        #expect(older.summary?.contains("schema older: 1 migration(s) applied at start (\(last))") == true, "\(older.summary ?? "nil")")
    }

    @Test("a schema newer than this BoneTriage is a failure naming the unknown migration; the database is left as it was")
    func newerSchema() throws {
        let conninfo = try PostgresCluster.shared().freshDatabase()
        _ = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        try PostgresConnection(conninfo).execute("INSERT INTO worklist_migrations (identifier) VALUES ('v99-from-the-future')")
        let found = check.worklistFindings(try Self.configuration(conninfo))
        #expect(found.findings.count == 1 && found.findings.first?.severity == .failure, "\(found.findings)")
        #expect(found.findings.first?.description.hasPrefix("[worklist] database: the worklist database") == true, "\(found.findings)")
        #expect(found.findings.first?.description.contains("newer BoneTriage (schema v99-from-the-future)") == true, "\(found.findings)")
        #expect(found.summary?.contains("schema newer than this BoneTriage (v99-from-the-future): refused") == true)
        let applied = try PostgresConnection(conninfo).execute("SELECT count(*) FROM worklist_migrations").first?.integer(0)
        #expect(applied == Worklist.schemaMigrations.count + 1, "the known ones and the unknown one, nothing removed")
    }

    @Test("a port nobody listens on: a failure with libpq's reason and the server, never the password; as [worklist.postgresql] it names that table")
    func unreachable() throws {
        let port = try PostgresCluster.freePort()
        var c = try Self.configuration("host=127.0.0.1 port=\(port) dbname=worklist user=bonetriage password=s3cret-Pa55 connect_timeout=5")
        let found = check.worklistFindings(c)
        #expect(found.summary == nil)
        let text = found.findings.map(\.description).joined(separator: "\n")
        #expect(found.findings.count == 1 && found.findings.first?.severity == .failure, "\(text)")
        #expect(text.hasPrefix("[worklist] database: cannot reach the worklist database 127.0.0.1:\(port)/worklist: "), "\(text)")
        #expect(text.contains("Connection refused") && text.contains("pg_isready"), "\(text)")
        #expect(!text.contains("s3cret-Pa55"))
        var settings = PostgresSettings()
        settings.host = "127.0.0.1"
        settings.ports = [port]
        settings.database = "worklist"
        settings.connectTimeout = 5
        c.postgresSettings = settings
        c.postgresConnection = settings.connectionString
        #expect(check.worklistFindings(c).findings.first?.description.hasPrefix("[worklist.postgresql]: cannot reach") == true)
    }

    @Test("a login that neither owns the tables nor may create them is a failure saying what to grant")
    func notTheOwner() throws {
        let cluster = try PostgresCluster.shared()
        let conninfo = try cluster.freshDatabase()
        let login = "check_" + UUID().uuidString.prefix(8).lowercased()
        let admin = try PostgresConnection(conninfo)
        try admin.execute("CREATE ROLE \(login) LOGIN")
        let asLogin = conninfo.replacingOccurrences(of: "user=postgres", with: "user=\(login)")
        let empty = check.worklistFindings(try Self.configuration(asLogin))
        #expect(empty.findings.first?.description.contains("login \(login) may not create tables in schema public") == true, "\(empty.findings)")
        #expect(empty.findings.first?.description.contains("GRANT CREATE ON SCHEMA public TO \(login)") == true)
        _ = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        let owned = check.worklistFindings(try Self.configuration(asLogin))
        #expect(owned.findings.first?.description.contains("the worklist's tables belong to postgres, not to login \(login)") == true, "\(owned.findings)")
    }

    @Test("the command: exit 0 with the database's state on a reachable worklist; exit 1 with the reason on an unreachable one",
          .enabled(if: Executable.url != nil, "the bonetriage executable is not built"))
    func command() throws {
        let dir = try TemporaryDirectory()
        let model = dir.path("model.safetensors")
        try Data("x".utf8).write(to: URL(fileURLWithPath: model))
        func config(_ database: String) throws -> String {
            let path = dir.path("c-\(UUID().uuidString).toml")
            try """
                [dicom]
                bind_address = "127.0.0.1"
                allowed_callers = [{ ae_title = "PACS" }]
                [drop_folder]
                path = "\(dir.path("drop"))"
                [storage]
                spool = "\(dir.path("spool"))"
                archive = "\(dir.path("archive"))"
                quarantine = "\(dir.path("quarantine"))"
                [worklist]
                database = "\(database)"
                [model]
                path = "\(model)"
                [triage]
                workers = 1
                engine_threads = 1
                """.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let cluster = try PostgresCluster.shared()
        let database = try PostgresCluster.databaseName(try cluster.freshDatabase())
        let ok = try Executable.run(["serve", "--config", try config(cluster.tcpConninfo(database: database)), "--check-config"])
        #expect(ok.status == 0 && ok.stderr.isEmpty, "\(ok)")
        #expect(ok.stdout.contains("worklist database: 127.0.0.1:\(cluster.port)/\(database) reachable (PostgreSQL 15."), "\(ok.stdout)")
        let port = try PostgresCluster.freePort()
        let bad = try Executable.run(["serve", "--config", try config("postgresql://bonetriage@127.0.0.1:\(port)/worklist?connect_timeout=5"), "--check-config"])
        #expect(bad.status == 1, "\(bad)")
        #expect(bad.stderr.contains("error: [worklist] database: cannot reach the worklist database 127.0.0.1:\(port)/worklist"), "\(bad.stderr)")
        #expect(bad.stderr.contains("Connection refused"), "\(bad.stderr)")
    }
}
