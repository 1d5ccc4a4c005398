import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The daemon (the real binary) on a PostgreSQL primary with a streaming standby (`pg_basebackup -R`),
/// both listed in `[worklist.postgresql]` with `target_session_attrs = "read-write"`; the test kills the
/// primary and promotes the standby.
@Suite("daemon on a PostgreSQL worklist that fails over to its standby", .serialized,
       .enabled(if: PostgresCluster.isInstalled && Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs PostgreSQL 15, the bonetriage executable and DCMTK's storescu; `make test` installs them"))
struct PostgresFailoverTests {
    /// A primary, its database, a streaming standby, and a daemon configured with both servers.
    static func setUp() throws -> (primary: PostgresCluster, standby: PostgresCluster, database: String, daemon: DaemonHarness) {
        let primary = try PostgresCluster.dedicated()
        let database = try PostgresCluster.databaseName(try primary.freshDatabase())
        let standby = try PostgresCluster.standby(of: primary)
        let daemon = try DaemonHarness(quietPeriod: 0.5)
        daemon.postgresTable = """
            host = "127.0.0.1,127.0.0.1"
            port = "\(primary.port),\(standby.port)"
            database = "\(database)"
            user = "postgres"
            connect_timeout_seconds = 2
            target_session_attrs = "read-write"
            """
        // The radiologists' CLI: the same two servers in a multi-host URI.
        daemon.postgresWorklist = "postgresql://postgres@127.0.0.1:\(primary.port),127.0.0.1:\(standby.port)/\(database)"
            + "?target_session_attrs=read-write&connect_timeout=2"
        return (primary, standby, database, daemon)
    }

    /// Each study's image rows on one server: (rows, distinct SOP Instance UIDs).
    static func imageRows(_ cluster: PostgresCluster, database: String) throws -> [String: (rows: Int, distinct: Int)] {
        let c = try PostgresConnection(cluster.conninfo(database: database))
        let rows = try c.execute("""
            SELECT s.studyInstanceUID, count(*), count(DISTINCT i.sopInstanceUID) FROM image i JOIN study s ON s.id = i.studyID GROUP BY 1
            """).rows
        return Dictionary(uniqueKeysWithValues: try rows.map { row in
            (try #require(row.text(0)), (try #require(try row.integer(1)), try #require(try row.integer(2))))
        })
    }

    @Test("the primary dies between transfers: while no primary answers C-STORE is refused 0xA701 and the files kept; once the standby is promoted they are recorded and triaged there without a resend, new studies go to it, nothing acknowledged is lost or doubled, and the CLI lists them through the multi-host URI")
    func failoverToStandby() throws {
        let (primary, standby, database, daemon) = try Self.setUp()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let before = "1.2.826.0.1.3680043.10.21.1", during = "1.2.826.0.1.3680043.10.21.2", after = "1.2.826.0.1.3680043.10.21.3"
        let first = try RadiographFactory.makeStudy(in: files, prefix: "a", study: before, count: 2)
        let second = try RadiographFactory.makeStudy(in: files, prefix: "b", study: during, count: 2)
        let third = try RadiographFactory.makeStudy(in: files, prefix: "c", study: after, count: 2)
        #expect(try daemon.storescu(first).status == 0)
        #expect(try daemon.waitForTriage([before])[before]?["state"] as? String == "triaged")
        try standby.waitUntilReplayed(from: primary)

        try primary.stopImmediately()
        let refused = try daemon.storescu(second, extra: ["-v", "--no-halt"])
        #expect(refused.output.contains("Refused: OutOfResources"), "\(refused.output)")
        #expect(daemon.isRunning)
        let spooled = try second.map { try RadiographFactory.sopInstanceUID($0) }.map { daemon.spool + "/" + during + "/" + $0 + ".dcm" }
        #expect(spooled.allSatisfy { FileManager.default.fileExists(atPath: $0) }, "the refused files are kept in the spool")

        try standby.promote()
        #expect(try daemon.storescu(third).status == 0, "a study sent after the promotion is acknowledged at once")
        let studies = try daemon.waitForTriage([before, during, after], timeout: 90)
        for uid in [before, during, after] {
            #expect(studies[uid]?["state"] as? String == "triaged" && studies[uid]?["images"] as? Int == 2, "\(uid): \(studies[uid] ?? [:])")
        }
        let rows = try Self.imageRows(standby, database: database)
        #expect(rows.count == 3 && rows.values.allSatisfy { $0.rows == 2 && $0.distinct == 2 }, "every instance once on the promoted server: \(rows)")

        let listed = try Executable.run(["list", "--db", try #require(daemon.postgresWorklist), "--all"])
        #expect(listed.status == 0, "\(listed.stderr)")
        for uid in [before, during, after] { #expect(listed.stdout.contains(Study.shortID(for: uid).prefix(8)), "\(listed.stdout)") }
        #expect(daemon.isRunning)
    }

    @Test("a study the primary acknowledged but never replicated (the standby had stopped streaming) is found missing after the failover and taken in again from the spool, and triaged on the promoted server")
    func commitLostInFailover() throws {
        let (primary, standby, database, daemon) = try Self.setUp()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let replicated = "1.2.826.0.1.3680043.10.22.1", lost = "1.2.826.0.1.3680043.10.22.2", after = "1.2.826.0.1.3680043.10.22.3"
        #expect(try daemon.storescu(try RadiographFactory.makeStudy(in: files, prefix: "a", study: replicated, count: 2)).status == 0)
        #expect(try daemon.waitForTriage([replicated])[replicated]?["state"] as? String == "triaged")
        try standby.waitUntilReplayed(from: primary)

        // From here on the primary's commits never reach the standby: asynchronous replication cut short.
        try standby.detachFromPrimary()
        #expect(try daemon.storescu(try RadiographFactory.makeStudy(in: files, prefix: "b", study: lost, count: 2)).status == 0)
        #expect(try daemon.waitForTriage([lost])[lost]?["state"] as? String == "triaged", "acknowledged and triaged on the primary")

        try primary.stopImmediately()
        try standby.promote()
        #expect(try Self.imageRows(standby, database: database)[lost] == nil, "the promoted standby never received the study")

        #expect(try daemon.storescu(try RadiographFactory.makeStudy(in: files, prefix: "c", study: after, count: 2)).status == 0)
        let studies = try daemon.waitForTriage([replicated, lost, after], timeout: 90)
        for uid in [replicated, lost, after] {
            #expect(studies[uid]?["state"] as? String == "triaged" && studies[uid]?["images"] as? Int == 2, "\(uid): \(studies[uid] ?? [:])")
        }
        let rows = try Self.imageRows(standby, database: database)
        #expect(rows.count == 3 && rows.values.allSatisfy { $0.rows == 2 && $0.distinct == 2 }, "\(rows)")
        #expect(daemon.log.contains("took in 2 instance(s) found in the spool without a worklist row"), "\(daemon.log)")
    }

    @Test("a triage the primary recorded but never replicated (the study waited for a model, and was triaged once the standby had stopped streaming) is done again on the promoted server, where the study is still pending")
    func triageLostInFailover() throws {
        let (primary, standby, database, daemon) = try Self.setUp()
        let model = daemon.dir.path("model.safetensors"), away = daemon.dir.path("model.away")
        try FileManager.default.moveItem(atPath: model, toPath: away)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let waiting = "1.2.826.0.1.3680043.10.23.1", after = "1.2.826.0.1.3680043.10.23.2"
        #expect(try daemon.storescu(try RadiographFactory.makeStudy(in: files, prefix: "a", study: waiting, count: 2)).status == 0)
        try daemon.waitFor("the study to wait for a model", timeout: 30) { daemon.log.contains("no model is loaded; the study waits") }
        try standby.waitUntilReplayed(from: primary)

        try standby.detachFromPrimary()
        try FileManager.default.moveItem(atPath: away, toPath: model)
        daemon.signal(SIGHUP)
        #expect(try daemon.waitForTriage([waiting])[waiting]?["state"] as? String == "triaged", "triaged on the primary")

        try primary.stopImmediately()
        try standby.promote()
        let promoted = try PostgresConnection(standby.conninfo(database: database))
        let state = try promoted.execute("SELECT state FROM study WHERE studyInstanceUID = $1", [waiting]).first?.text(0)
        #expect(state == "pending" || state == "receiving", "the promoted standby has the study's rows but not its triage: \(state ?? "no row")")

        #expect(try daemon.storescu(try RadiographFactory.makeStudy(in: files, prefix: "b", study: after, count: 2)).status == 0)
        let studies = try daemon.waitForTriage([waiting, after], timeout: 90)
        for uid in [waiting, after] {
            #expect(studies[uid]?["state"] as? String == "triaged" && studies[uid]?["images"] as? Int == 2, "\(uid): \(studies[uid] ?? [:])")
        }
        #expect(daemon.log.contains("1 study(ies) the worklist shows waiting are triaged again"), "\(daemon.log)")
    }
}
