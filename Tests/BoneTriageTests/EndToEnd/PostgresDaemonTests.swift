import BoneTriage
import Foundation
import Testing

/// The daemon (the real binary) on a PostgreSQL worklist of its own cluster, which the test stops and starts.
@Suite("daemon on a PostgreSQL worklist", .serialized,
       .enabled(if: PostgresCluster.isInstalled && Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs PostgreSQL 15, the bonetriage executable and DCMTK's storescu; `make test` installs them"))
struct PostgresDaemonTests {
    @Test("PostgreSQL stopped during a transfer and started again: the instances it could not record are refused 0xA701, kept, and recorded and triaged once it is back, without a resend; nothing acknowledged is lost")
    func databaseStoppedDuringTransfer() throws {
        let cluster = try PostgresCluster.dedicated()
        let daemon = try DaemonHarness(quietPeriod: 0.5)
        daemon.postgresWorklist = try cluster.freshDatabase()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let before = "1.2.826.0.1.3680043.10.20.1", during = "1.2.826.0.1.3680043.10.20.2"
        let first = try RadiographFactory.makeStudy(in: files, prefix: "a", study: before, count: 2)
        let second = try RadiographFactory.makeStudy(in: files, prefix: "b", study: during, count: 2)
        #expect(try daemon.storescu(first).status == 0)
        #expect(try daemon.waitForTriage([before])[before]?["images"] as? Int == 2)

        try cluster.stop()
        let refused = try daemon.storescu(second, extra: ["-v", "--no-halt"])
        #expect(refused.output.contains("Refused: OutOfResources"), "\(refused.output)")
        #expect(daemon.isRunning)
        #expect(daemon.log.contains("0xA701"), "\(daemon.log)")
        let spooled = try second.map { try RadiographFactory.sopInstanceUID($0) }.map { daemon.spool + "/" + during + "/" + $0 + ".dcm" }
        #expect(spooled.allSatisfy { FileManager.default.fileExists(atPath: $0) }, "the refused files are kept in the spool")

        try cluster.start()
        let studies = try daemon.waitForTriage([before, during], timeout: 90)
        #expect(studies[during]?["state"] as? String == "triaged" && studies[during]?["images"] as? Int == 2, "\(studies[during] ?? [:])")
        #expect(studies[before]?["state"] as? String == "triaged" && studies[before]?["images"] as? Int == 2)
        #expect(daemon.isRunning)
    }
}
