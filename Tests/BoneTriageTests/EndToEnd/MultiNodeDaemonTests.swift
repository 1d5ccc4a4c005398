import BoneTriage
import Foundation
import Synchronization
import Testing

/// Two `bonetriage serve` nodes (the real binary, each with its own spool) on one PostgreSQL worklist.
@Suite("two daemon nodes on one PostgreSQL worklist", .serialized,
       .enabled(if: PostgresCluster.isInstalled && Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs PostgreSQL 15, the bonetriage executable and DCMTK's storescu; `make test` installs them"))
struct MultiNodeDaemonTests {
    /// A node of the shared worklist `database`.
    static func node(_ name: String, database: String, extraConfig: String = "") throws -> DaemonHarness {
        let daemon = try DaemonHarness(quietPeriod: 1, extraConfig: extraConfig)
        daemon.postgresWorklist = database
        daemon.worklistNode = name
        return daemon
    }

    /// The daemons' log lines that record a triage of `uid` ("study triaged", "study not applicable", a failure).
    static func triageLines(_ uid: String, in logs: [String]) -> [String] {
        let id = Study.shortID(for: uid)
        return logs.flatMap { $0.split(separator: "\n").map(String.init) }.filter {
            $0.contains(id) && ($0.contains("study triaged") || $0.contains("study not applicable") || $0.contains("study triage failed"))
        }
    }

    @Test("studies sent to one node or to both at once are each triaged exactly once, by a node that holds them; a reviewer login's CLI reviews them, a reader's may not")
    func eachStudyTriagedOnce() throws {
        let cluster = try PostgresCluster.shared()
        let (reviewerLogin, readerLogin) = try PostgresRolesTests.logins(cluster)
        let database = try cluster.freshDatabase()
        let a = try Self.node("node-a", database: database), b = try Self.node("node-b", database: database)
        try a.start()
        defer { _ = try? a.stop() }
        try b.start()
        defer { _ = try? b.stop() }

        let files = try TemporaryDirectory()
        let onlyA = "1.2.826.0.1.3680043.10.30.1", onlyB = "1.2.826.0.1.3680043.10.30.2"
        let both = ["1.2.826.0.1.3680043.10.30.3", "1.2.826.0.1.3680043.10.30.4", "1.2.826.0.1.3680043.10.30.5"]
        #expect(try a.storescu(try RadiographFactory.makeStudy(in: files, prefix: "a", study: onlyA, count: 2)).status == 0)
        #expect(try b.storescu(try RadiographFactory.makeStudy(in: files, prefix: "b", study: onlyB, count: 2)).status == 0)
        // Each shared study goes to both nodes at the same time, as a router sending to two destinations does.
        let sent = DispatchGroup()
        let statuses = Mutex<[Int32]>([])
        for (n, uid) in both.enumerated() {
            let study = try RadiographFactory.makeStudy(in: files, prefix: "both\(n)-", study: uid, count: 3)
            for port in [a.port, b.port] {
                DispatchQueue.global().async(group: sent) {
                    let status = (try? DaemonHarness.run("storescu", ["-aet", "STORESCU", "-aec", "BONETRIAGE", "127.0.0.1", "\(port)"] + study).status) ?? -1
                    statuses.withLock { $0.append(status) }
                }
            }
        }
        sent.wait()
        #expect(statuses.withLock { $0 } == Array(repeating: 0, count: both.count * 2))

        let all = [onlyA, onlyB] + both
        let studies = try a.waitForTriage(all, timeout: 90)
        // Both nodes' quiet periods have ended by now: the one that did not triage a shared study has looked
        // at it and left it (or is waiting for the other's claim); give it a few quiet periods to be sure.
        Thread.sleep(forTimeInterval: 4)
        for uid in all {
            #expect(studies[uid]?["state"] as? String == "triaged", "\(uid): \(studies[uid] ?? [:])")
            let lines = Self.triageLines(uid, in: [a.allLogs, b.allLogs])
            #expect(lines.count == 1, "\(uid) was triaged \(lines.count) times:\n\(lines.joined(separator: "\n"))")
        }
        for uid in both { #expect(studies[uid]?["images"] as? Int == 3, "a copy on the second node is not another image") }
        #expect(try a.show(onlyA).study["triage_node"] as? String == "node-a")
        #expect(try b.show(onlyB).study["triage_node"] as? String == "node-b")
        for uid in both {
            let shown = try a.show(uid)
            let node = shown.study["triage_node"] as? String
            #expect(node == "node-a" || node == "node-b")
            #expect(shown.study["triage_in_progress"] is NSNull, "no claim left open")
        }

        // A radiologist's own login reviews from a workstation; a viewer's is refused by the database.
        let asReviewer = PostgresRolesTests.connection(database, as: reviewerLogin)
        let asReader = PostgresRolesTests.connection(database, as: readerLogin)
        let listed = try Executable.run(["list", "--all", "--format", "csv", "--db", asReader])
        #expect(listed.status == 0 && all.allSatisfy { listed.stdout.contains($0) }, "\(listed.stdout)\(listed.stderr)")
        let refused = try Executable.run(["confirm", both[0], "--db", asReader])
        #expect(refused.status == 1 && refused.stderr.contains("bonetriage_reviewer"), "\(refused.stderr)")
        let confirmed = try Executable.run(["confirm", both[0], "--db", asReviewer])
        #expect(confirmed.status == 0, "\(confirmed.stderr)")
        let reviews = try a.show(both[0]).reviews
        #expect(reviews.map { $0["reviewer"] as? String } == [reviewerLogin])
        #expect(a.isRunning && b.isRunning)
    }

    @Test("a node killed during a triage leaves the study claimed: the other node, which has the study too, leaves it and shows who holds it; the first node's restart triages it, once")
    func deadNodeResumesItsClaim() throws {
        let cluster = try PostgresCluster.shared()
        let database = try cluster.freshDatabase()
        let uid = "1.2.826.0.1.3680043.10.31.1"
        // node-a's decoder hangs on this study's files (in its spool, named by the Study Instance UID).
        let a = try Self.node("node-a", database: database, extraConfig: "decode_timeout_seconds = 300")
        let b = try Self.node("node-b", database: database)
        try a.start(environment: [DecoderService.faultVariable: "hang:\(uid)"])
        defer { _ = try? a.stop() }
        try b.start()
        defer { _ = try? b.stop() }
        let files = try TemporaryDirectory()
        let study = try RadiographFactory.makeStudy(in: files, prefix: "s", study: uid, count: 2)
        #expect(try a.storescu(study).status == 0)
        let claimed = try a.waitFor("node-a's claim", timeout: 60) {
            ((try? a.show(uid).study["triage_in_progress"]) as? [String: Any])?["node"] as? String == "node-a"
        }
        #expect(claimed)
        a.kill9()

        #expect(try b.storescu(study).status == 0, "node-b gets the same study")
        let left = try b.waitFor("node-b leaving the study to node-a", timeout: 60) { b.log.contains("study left to node node-a") }
        #expect(left, "\(b.log)")
        let shown = try Executable.run(["show", uid, "--db", database])
        #expect(shown.status == 0 && shown.stdout.contains("claimed by node node-a"), "\(shown.stdout)\(shown.stderr)")
        #expect(try a.show(uid).study["state"] as? String != "triaged")

        try a.start()
        let studies = try a.waitForTriage([uid], timeout: 90)
        #expect(studies[uid]?["state"] as? String == "triaged")
        #expect(try a.show(uid).study["triage_node"] as? String == "node-a")
        Thread.sleep(forTimeInterval: 3)
        #expect(Self.triageLines(uid, in: [a.allLogs, b.allLogs]).count == 1)
        #expect(b.isRunning)
    }
}
