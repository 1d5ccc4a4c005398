import BoneTriage
import Foundation
import Testing

@Suite("[worklist] PostgreSQL: a URI or [worklist.postgresql], never a password")
struct PostgresConfigurationTests {
    @Test("a path is the SQLite worklist; a postgresql:// URI is the shared one; the shipped example keeps SQLite")
    func databaseSetting() throws {
        let sqlite = try BoneTriageConfiguration.parse("[worklist]\ndatabase = \"/srv/w.sqlite\"\n", path: "c.toml")
        #expect(sqlite.databasePath == "/srv/w.sqlite" && sqlite.postgresConnection == nil)
        let uri = "postgresql://bonetriage@db.example:5433/bonetriage?sslmode=verify-full"
        let shared = try BoneTriageConfiguration.parse("[worklist]\ndatabase = \"\(uri)\"\n", path: "c.toml")
        #expect(shared.postgresConnection == uri && shared.postgresSettings == nil)
        #expect(try BoneTriageConfiguration.parse("[worklist]\ndatabase = \"postgres://db/bt\"\n", path: "c.toml").postgresConnection == "postgres://db/bt")
        let shipped = try BoneTriageConfiguration.load(path: ConfigurationTests.shipped)
        #expect(shipped.postgresConnection == nil && shipped.databasePath == BoneTriageConfiguration.defaultDatabasePath)
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.parse("[worklist]\ndatabase = \"mysql://db/bt\"\n", path: "c.toml") }
    }

    @Test("[worklist.postgresql] becomes a libpq connection string with only what is set, quoted, and the application name")
    func table() throws {
        let text = """
            [worklist.postgresql]
            host = "db1.example,db2.example"
            port = 5433
            database = "bone triage"
            user = "o'brien"
            sslmode = "verify-full"
            sslrootcert = "/etc/bonetriage/ca.crt"
            password_file = "/etc/bonetriage/pgpass"
            connect_timeout_seconds = 5
            """
        let c = try BoneTriageConfiguration.parse(text, path: "c.toml")
        #expect(c.postgresConnection == "host='db1.example,db2.example' port='5433' dbname='bone triage' user='o\\'brien' sslmode='verify-full' "
                + "sslrootcert='/etc/bonetriage/ca.crt' passfile='/etc/bonetriage/pgpass' connect_timeout='5' target_session_attrs='read-write' "
                + "application_name='bonetriage'", "\(c.postgresConnection ?? "nil")")
        #expect(c.postgresSettings?.passwordFile == "/etc/bonetriage/pgpass")
        // Nothing set: libpq takes the PG* environment variables and ~/.pgpass, as psql does.
        let bare = try BoneTriageConfiguration.parse("[worklist.postgresql]\n", path: "c.toml")
        #expect(bare.postgresConnection == "connect_timeout='10' target_session_attrs='read-write' application_name='bonetriage'")
        #expect(PostgresSettings.quoted(#"a\b"#) == #"'a\\b'"#)
    }

    @Test("port: one for every host, or one per host (\"5432,5433\" or [5432, 5433]); a count that matches neither, or a bad port, is refused")
    func portsPerHost() throws {
        for port in ["\"5432,5433\"", "\"5432, 5433\"", "[5432, 5433]"] {
            let c = try BoneTriageConfiguration.parse("[worklist.postgresql]\nhost = \"db1,db2\"\nport = \(port)\n", path: "c.toml")
            #expect(c.postgresSettings?.ports == [5432, 5433], "\(port)")
            #expect(c.postgresConnection?.hasPrefix("host='db1,db2' port='5432,5433' ") == true, "\(c.postgresConnection ?? "nil")")
        }
        let one = try BoneTriageConfiguration.parse("[worklist.postgresql]\nhost = \"db1,db2\"\nport = 5433\n", path: "c.toml")
        #expect(one.postgresSettings?.ports == [5433] && one.postgresConnection?.contains("port='5433' ") == true)
        for (port, problem) in [("\"5432,5433,5434\"", "3 ports for 2 host(s); give one port for every host, or one per host"),
                                ("\"5432,x\"", "must be a TCP port from 1 to 65535, or one per host"),
                                ("[5432, 0]", "must be a TCP port from 1 to 65535, or one per host")] {
            do {
                _ = try BoneTriageConfiguration.parse("[worklist.postgresql]\nhost = \"db1,db2\"\nport = \(port)\n", path: "c.toml")
                Issue.record("port = \(port) accepted")
            } catch let error as ConfigurationError {
                #expect(error.problems.count == 1 && error.problems[0].contains("[worklist.postgresql] port = ") && error.problems[0].contains(problem),
                        "\(error.problems)")
            }
        }
    }

    @Test("a password in the URI or the table, a bad sslmode, port or key, and both forms at once are each refused with what to do")
    func refusals() throws {
        let text = """
            [worklist]
            database = "postgresql://bonetriage:secret@db.example/bonetriage"
            [worklist.postgresql]
            password = "secret"
            sslmode = "sometimes"
            port = 70000
            hostname = "db"
            target_session_attrs = "writable"
            """
        do {
            _ = try BoneTriageConfiguration.parse(text, path: "c.toml")
            Issue.record("accepted")
        } catch let error as ConfigurationError {
            let all = error.problems.joined(separator: "\n")
            #expect(error.problems.count == 7, "\(all)")
            #expect(all.contains("[worklist] database: the URI holds a password; leave it out and put it in a password file"))
            #expect(all.contains("[worklist.postgresql] password: a password does not go in the configuration; put it in a password file"))
            #expect(all.contains("[worklist.postgresql] sslmode = \"sometimes\": must be one of \"disable\""))
            #expect(all.contains("[worklist.postgresql] port = 70000: must be a TCP port"))
            #expect(all.contains("[worklist.postgresql] hostname: unknown key (known: host, port"))
            #expect(all.contains("[worklist.postgresql] target_session_attrs = \"writable\": must be one of \"any\", \"read-write\""))
            #expect(all.contains("[worklist] database is a PostgreSQL URI and [worklist.postgresql] is set too: use one of them"))
            #expect(!all.contains("secret@") || all.contains("database: the URI holds a password"), "the password is not echoed beyond the key")
        }
        #expect(PostgresSettings.uriHasPassword("postgresql://u:p@h/d") && PostgresSettings.uriHasPassword("postgresql://h/d?user=u&password=p"))
        #expect(!PostgresSettings.uriHasPassword("postgresql://u@h:5432/d?sslmode=require") && !PostgresSettings.uriHasPassword("postgresql://"))
    }

    @Test("check: a password file others may read, or none there, fails with the chmod to run; the SQLite folder is not checked for PostgreSQL")
    func passwordFileCheck() throws {
        let dir = try TemporaryDirectory()
        var c = try ConfigurationCheckTests.usable(dir)
        var settings = PostgresSettings()
        settings.passwordFile = dir.path("pgpass")
        c.postgresSettings = settings
        c.postgresConnection = settings.connectionString
        c.databasePath = "/proc/nowhere/worklist.sqlite"
        let check = ConfigurationCheck(cores: 4, defaultModelPath: { "/nonexistent" })
        let missing = check.findings(c).map(\.description)
        #expect(missing.count == 1 && missing[0].contains("[worklist.postgresql] password_file: \(dir.path("pgpass")) does not exist"), "\(missing)")
        try Data("*:*:*:bonetriage:secret\n".utf8).write(to: URL(fileURLWithPath: dir.path("pgpass")))
        chmod(dir.path("pgpass"), 0o644)
        let open = check.findings(c).map(\.description)
        #expect(open.count == 1 && open[0].contains("has mode 644") && open[0].contains("chmod 600"), "\(open)")
        chmod(dir.path("pgpass"), 0o600)
        #expect(check.findings(c).isEmpty)
    }
}
