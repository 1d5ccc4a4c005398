import BoneTriage
import Foundation
import GRDB
import Synchronization
import Testing

/// What only the PostgreSQL worklist has to show: its schema's migrations, the database's own guards,
/// several processes writing one study at once, and its connection's errors. (Everything a store does is
/// in the contract suites, which run against PostgreSQL too.)
@Suite("PostgreSQL worklist", .enabled(if: PostgresCluster.isInstalled, "PostgreSQL 15 is not installed"))
struct PostgresWorklistTests {
    static func freshDatabase() throws -> String { try PostgresCluster.shared().freshDatabase() }

    static func identifiers(_ conninfo: String) throws -> [String] {
        // Sorted here: the database's collation may order "v10-…" and "v1-…" otherwise.
        try PostgresConnection(conninfo).execute("SELECT identifier FROM worklist_migrations").rows.compactMap { $0.text(0) }.sorted()
    }

    // MARK: Schema

    @Test("migrations: the SQLite schema's identifiers, each applied once, also when two daemons start at once; opening again changes nothing")
    func migrationsOnce() throws {
        let conninfo = try Self.freshDatabase()
        let opened = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            do { _ = try Worklist.open(.postgresql(connection: conninfo), role: .daemon) } catch { opened.withLock { $0.append("\(error)") } }
        }
        #expect(opened.withLock { $0 } == [], "every daemon starts")
        let sqlite = try DatabaseQueue()
        try WorklistSchema.migrator.migrate(sqlite)
        let expected = try sqlite.read { db in try WorklistSchema.migrator.appliedIdentifiers(db) }.sorted()
        #expect(try Self.identifiers(conninfo) == expected)
        _ = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        _ = try Worklist.open(.postgresql(connection: conninfo), role: .reviewer)
        #expect(try Self.identifiers(conninfo) == expected)
    }

    @Test("a database holding a migration this BoneTriage does not know is refused, by the daemon and the CLI, and left as it is")
    func newerRefused() throws {
        let conninfo = try Self.freshDatabase()
        let store = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        _ = try store.recordArrival(WorklistStoreContractTests.arrival("1.2.3", "1.2.3.1"))
        try PostgresConnection(conninfo).execute("INSERT INTO worklist_migrations (identifier) VALUES ('v99-from-the-future')")
        let server = WorklistLocation(conninfo).description
        let refusal = WorklistError.newerSchema(path: server, unknownMigrations: ["v99-from-the-future"])
        #expect(throws: refusal) { try Worklist.open(.postgresql(connection: conninfo), role: .daemon) }
        #expect(throws: refusal) { try Worklist.open(.postgresql(connection: conninfo), role: .reviewer) }
        #expect(refusal.description.contains("newer BoneTriage"))
        #expect(try Self.identifiers(conninfo).contains("v99-from-the-future"))
        #expect(try store.study(studyInstanceUID: "1.2.3").imageCount == 1)
    }

    @Test("the radiologists' commands never create or upgrade the schema: an empty or older database says the daemon upgrades it")
    func reviewerNeverMigrates() throws {
        let empty = try Self.freshDatabase()
        let server = WorklistLocation(empty).description
        let all = WorklistSchema.migrator.migrations
        #expect(throws: WorklistError.olderSchema(path: server, missingMigrations: all)) { try Worklist.open(.postgresql(connection: empty), role: .reviewer) }
        #expect(throws: WorklistError.olderSchema(path: server, missingMigrations: all)) {
            try Worklist.open(.postgresql(connection: empty), role: .recordingReviews)
        }
        #expect(try PostgresConnection(empty).execute("SELECT to_regclass('study') IS NULL AND to_regclass('worklist_migrations') IS NULL").first?.bool(0) == true)
        let older = try Self.freshDatabase()
        _ = try Worklist.open(.postgresql(connection: older), role: .daemon)
        try PostgresConnection(older).execute("DELETE FROM worklist_migrations WHERE identifier = 'v9-results-outbox'")
        #expect(throws: WorklistError.olderSchema(path: WorklistLocation(older).description, missingMigrations: ["v9-results-outbox"])) {
            try Worklist.open(.postgresql(connection: older), role: .reviewer)
        }
    }

    @Test("migration v13 gives each result object its study's triage node; one of a study no node triaged keeps none (as in SQLite)")
    func resultObjectNodeBackfill() throws {
        let conninfo = try Self.freshDatabase()
        let store = try Worklist.open(.postgresql(connection: conninfo), role: .daemon, node: "node-a")
        let pacs = ResultDestination(name: "pacs", aeTitle: "PACS", host: "127.0.0.1", port: 104, callingAETitle: "BONETRIAGE", verdicts: .all)
        for uid in ["1.2.13.1", "1.2.13.2"] {
            var arrival = WorklistStoreContractTests.arrival(uid, "\(uid).1")
            arrival.sopClassUID = "1.2.840.10008.5.1.4.1.1.1"
            _ = try store.recordArrival(arrival)
            var result = TriageResult(studyInstanceUID: uid, imageProbabilities: ["\(uid).1": 0.9], threshold: 0.5, modelID: "m", modelHash: "h")
            result.resultDestinations = [pacs]
            try store.recordTriage(result)
        }
        // As v12 left them: no node on objects, and a study triaged before nodes were kept.
        try PostgresConnection(conninfo).execute("""
            ALTER TABLE resultObject DROP COLUMN node;
            DELETE FROM worklist_migrations WHERE identifier = 'v13-result-object-node';
            UPDATE study SET triageNode = NULL WHERE studyInstanceUID = '1.2.13.2';
            """)
        let upgraded = try Worklist.open(.postgresql(connection: conninfo), role: .daemon, node: "node-b")
        #expect(try upgraded.resultObjects(ofStudy: "1.2.13.1").map(\.node) == ["node-a", "node-a"])
        #expect(try upgraded.resultObjects(ofStudy: "1.2.13.2").map(\.node) == [nil, nil])
        #expect(Set(try upgraded.resultObjectsAwaitingBuild(limit: 10).map(\.studyInstanceUID)) == ["1.2.13.2"], "node-a's objects are not node-b's to build")
    }

    @Test("the review audit trail is append-only in the database itself: a plain UPDATE, DELETE or TRUNCATE is refused")
    func appendOnlyTrail() throws {
        let conninfo = try Self.freshDatabase()
        let store = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        try WorklistFixture.seed(store)
        let review = try store.recordReview(studyInstanceUID: WorklistFixture.uids.flagged, by: ReviewerIdentity(login: "alice"), action: .confirm,
                                            label: nil, note: "fracture", at: WorklistFixture.base)
        let raw = try PostgresConnection(conninfo)
        for statement in ["UPDATE review SET label = 'normal'", "DELETE FROM review", "TRUNCATE review CASCADE"] {
            do {
                try raw.execute(statement)
                Issue.record("\(statement) was allowed")
            } catch let error as PostgresError {
                #expect(error.sqlState == "23001" && error.message.contains("append-only") && !error.connectionLost, "\(statement): \(error)")
            }
        }
        #expect(try store.reviews(ofStudy: WorklistFixture.uids.flagged) == [review])
    }

    // MARK: Several processes at once

    @Test("two stores (as two nodes) receiving the same study from several threads at once: one study, every instance once, counts right")
    func concurrentArrivals() throws {
        let conninfo = try Self.freshDatabase()
        let nodes = [try Worklist.open(.postgresql(connection: conninfo), role: .daemon), try Worklist.open(.postgresql(connection: conninfo), role: .daemon)]
        let uid = "1.2.826.0.1.3680043.8.498.777"
        let instances = 30
        let outcomes = Mutex<[ArrivalOutcome]>([])
        let failures = Mutex<[String]>([])
        // Eight senders, four per node, each sending every instance in its own order (so most are duplicates).
        DispatchQueue.concurrentPerform(iterations: 8) { sender in
            let store = nodes[sender % 2]
            var order = Array(1...instances)
            order.shuffle()
            for i in order {
                var a = WorklistStoreContractTests.arrival(uid, "\(uid).\(i)", eligible: i % 3 != 0)
                a.receivedAt = WorklistFixture.base.addingTimeInterval(Double(i))
                do {
                    let outcome = try store.recordArrival(a)
                    outcomes.withLock { $0.append(outcome) }
                } catch { failures.withLock { $0.append("\(error)") } }
            }
        }
        #expect(failures.withLock { $0 } == [])
        let all = outcomes.withLock { $0 }
        #expect(all.filter { $0 == .newStudy }.count == 1 && all.filter { $0 == .addedToStudy }.count == instances - 1)
        #expect(all.filter { $0 == .duplicate }.count == 8 * instances - instances)
        let s = try nodes[0].study(studyInstanceUID: uid)
        let images = try nodes[1].images(ofStudy: uid)
        #expect(s.imageCount == instances && images.count == instances && Set(images.map(\.sopInstanceUID)).count == instances)
        #expect(s.eligibleImageCount == images.filter(\.eligible).count && s.eligibleImageCount == instances - instances / 3)
        #expect(s.firstReceivedAt == WorklistFixture.base.addingTimeInterval(1) && s.lastReceivedAt == WorklistFixture.base.addingTimeInterval(Double(instances)))
        #expect(try nodes[1].studies(matching: WorklistFilter()).count == 1)
    }

    @Test("arrivals and triage of one study from two stores at once: a triage that missed an instance is refused, the study stays consistent")
    func concurrentTriage() throws {
        let conninfo = try Self.freshDatabase()
        let receiver = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        let triager = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        let uid = "1.2.826.0.1.3680043.8.498.778"
        _ = try receiver.recordArrival(WorklistStoreContractTests.arrival(uid, "\(uid).0"))
        let problems = Mutex<[String]>([])
        let superseded = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 3) { worker in
            for i in 1...15 {
                do {
                    if worker == 0 {
                        _ = try receiver.recordArrival(WorklistStoreContractTests.arrival(uid, "\(uid).\(i)"))
                    } else {
                        // A worker's triage: what it read, classified, recorded for the image count it saw.
                        let images = try triager.images(ofStudy: uid)
                        var result = TriageResult(studyInstanceUID: uid, imageProbabilities: Dictionary(uniqueKeysWithValues: images.map { ($0.sopInstanceUID, 0.75) }),
                                                  threshold: 0.5, modelID: "m", modelHash: "h", imageCount: images.count)
                        result.triagedAt = WorklistFixture.base.addingTimeInterval(Double(i))
                        try triager.recordTriage(result)
                    }
                } catch WorklistError.triageSuperseded {
                    superseded.withLock { $0 += 1 }
                } catch { problems.withLock { $0.append("\(error)") } }
            }
        }
        #expect(problems.withLock { $0 } == [])
        let s = try triager.study(studyInstanceUID: uid)
        let images = try receiver.images(ofStudy: uid)
        #expect(s.imageCount == 16 && images.count == 16)
        if s.state == .triaged {
            // The last recorded triage saw every image: each has its probability.
            #expect(images.allSatisfy { $0.probability == 0.75 } && s.probability == 0.75)
        } else {
            #expect(s.state == .receiving, "an instance arrived after the last triage")
        }
    }

    @Test("two radiologists confirming one study at once from two connections: one entry, the other is told who reviewed it")
    func concurrentReviews() throws {
        let conninfo = try Self.freshDatabase()
        try WorklistFixture.seed(try Worklist.open(.postgresql(connection: conninfo), role: .daemon))
        let stores = [try Worklist.open(.postgresql(connection: conninfo), role: .recordingReviews),
                      try Worklist.open(.postgresql(connection: conninfo), role: .recordingReviews)]
        let recorded = Mutex(0), refused = Mutex(0), other = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 6) { n in
            do {
                try stores[n % 2].recordReview(studyInstanceUID: WorklistFixture.uids.flagged, by: ReviewerIdentity(login: "r\(n)"), action: .confirm,
                                               label: nil, note: nil, at: WorklistFixture.base)
                recorded.withLock { $0 += 1 }
            } catch WorklistError.alreadyReviewed {
                refused.withLock { $0 += 1 }
            } catch { other.withLock { $0.append("\(error)") } }
        }
        #expect(recorded.withLock { $0 } == 1 && refused.withLock { $0 } == 5 && other.withLock { $0 } == [])
        #expect(try stores[0].reviews(ofStudy: WorklistFixture.uids.flagged).count == 1)
    }

    @Test("triage attempts counted from several threads at once: each start gets its own number")
    func concurrentAttempts() throws {
        let conninfo = try Self.freshDatabase()
        let stores = [try Worklist.open(.postgresql(connection: conninfo), role: .daemon), try Worklist.open(.postgresql(connection: conninfo), role: .daemon)]
        _ = try stores[0].recordArrival(WorklistStoreContractTests.arrival("1.2.5", "1.2.5.1"))
        let numbers = Mutex<[Int]>([])
        DispatchQueue.concurrentPerform(iterations: 10) { n in
            if case let .claimed(k)? = try? stores[n % 2].beginTriage(studyInstanceUID: "1.2.5") { numbers.withLock { $0.append(k) } }
        }
        #expect(numbers.withLock { $0 }.sorted() == Array(1...10))
    }

    @Test("two nodes claiming one study from several threads at once: one node gets it, the other is told who holds it")
    func concurrentClaimsOfTwoNodes() throws {
        let conninfo = try Self.freshDatabase()
        let stores = [try Worklist.open(.postgresql(connection: conninfo), role: .daemon, node: "node-a"),
                      try Worklist.open(.postgresql(connection: conninfo), role: .daemon, node: "node-b")]
        _ = try stores[0].recordArrival(WorklistStoreContractTests.arrival("1.2.6", "1.2.6.1"))
        let outcomes = Mutex<[(node: String, claim: TriageClaim)]>([])
        DispatchQueue.concurrentPerform(iterations: 12) { n in
            let store = stores[n % 2]
            if let claim = try? store.beginTriage(studyInstanceUID: "1.2.6") { outcomes.withLock { $0.append((store.node, claim)) } }
        }
        let all = outcomes.withLock { $0 }
        #expect(all.count == 12)
        let winners = Set(all.compactMap { if case .claimed = $0.claim { return $0.node } else { return nil } })
        #expect(winners.count == 1, "one node holds the claim: \(all)")
        guard let winner = winners.first else { return }
        #expect(all.filter { $0.node == winner }.allSatisfy { if case .claimed = $0.claim { return true } else { return false } })
        #expect(all.filter { $0.node != winner }.allSatisfy { $0.claim.heldByNode == winner })
        #expect(try stores[1].triageInProgress(ofStudy: "1.2.6")?.node == winner)
    }

    @Test("every listing order, filter and handle lookup is served by an index: no sort, no scan of the whole table",
          arguments: [WorklistSort.priority, .arrival, .probability])
    func indexesServeOrders(_ sort: WorklistSort) throws {
        let store = try PostgresWorklist(connection: try Self.freshDatabase(), migrate: true)
        try WorklistFixture.seed(store)
        for flagged in [false, true] {
            var f = WorklistFilter()
            f.sort = sort
            f.flaggedOnly = flagged
            f.limit = 40
            let plans = try store.queryPlans(listing: f, handle: "1.2.826.0.1")
            #expect(!plans[0].plan.contains { $0.contains("Sort") || $0.contains("Seq Scan") }, "\(plans[0].query): \(plans[0].plan)")
            for (query, plan) in plans.dropFirst() {
                #expect(!plan.contains { $0.contains("Seq Scan") }, "\(query): \(plan)")
            }
        }
        var byPatient = WorklistFilter()
        byPatient.patient = "doe"
        byPatient.sort = sort
        let patient = try store.queryPlans(listing: byPatient, handle: "ACC-1")
        // The count (no order to keep) finds a patient through both indexes.
        #expect(patient[1].plan.contains { $0.contains("study_patient_name") } && patient[1].plan.contains { $0.contains("study_patient_id") },
                "\(patient[1].plan)")
        #expect(patient.contains { $0.plan.contains { $0.contains("study_accession") } })
    }

    // MARK: Connections

    @Test("an unreachable server: the error names host:port/database and what to do, never the password")
    func unreachable() throws {
        let port = try PostgresCluster.freePort()
        let conninfo = "postgresql://bonetriage:s3cret-Pa55@127.0.0.1:\(port)/worklist?connect_timeout=5"
        do {
            _ = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
            Issue.record("nothing listens on \(port), and yet it opened")
        } catch let error as WorklistError {
            guard case let .databaseUnreachable(server, _, sqlState) = error else {
                Issue.record("not a connection error: \(error)")
                return
            }
            #expect(server == "127.0.0.1:\(port)/worklist" && sqlState == nil)
            #expect(error.description.contains("127.0.0.1:\(port)/worklist") && error.description.contains("pg_isready"))
            #expect(!error.description.contains("s3cret-Pa55") && !"\(error)".contains("s3cret-Pa55"))
            #expect(error.isDatabaseFault)
        }
    }

    @Test("a pooled connection the server ended (a restart, a failover) is replaced: the next call works")
    func reconnects() throws {
        let conninfo = try Self.freshDatabase()
        let store = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        _ = try store.recordArrival(WorklistStoreContractTests.arrival("1.2.6", "1.2.6.1"))
        let admin = try PostgresConnection(conninfo)
        let ended = try admin.execute("""
            SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                  WHERE datname = current_database() AND pid <> pg_backend_pid()) t
            """).first?.integer(0)
        #expect(ended ?? 0 >= 1, "the store's idle connection was ended")
        #expect(try store.recordArrival(WorklistStoreContractTests.arrival("1.2.6", "1.2.6.2")) == .addedToStudy)
        #expect(try store.study(studyInstanceUID: "1.2.6").imageCount == 2)
    }

    @Test("a pooled connection on a server that refuses writes (SQLSTATE 25006: a standby after a failover) is dropped and the write made on a new connection")
    func readOnlyConnectionDropped() throws {
        let conninfo = try Self.freshDatabase()
        let pool = PostgresPool(conninfo: conninfo)
        try pool.withConnection { c in try c.execute("CREATE TABLE t (n integer)") }
        // The pooled connection now only reads, as one left on a server that became a standby.
        try pool.withConnection { c in try c.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY") }
        #expect(pool.idleCount == 1)
        let faults = pool.connectionFaults
        try pool.withConnection { c in try c.transaction { c in try c.execute("INSERT INTO t VALUES (1)") } }
        #expect(pool.connectionFaults == faults + 1, "counted, so that the daemon checks its spool against the database")
        #expect(pool.idleCount == 1, "the new connection went back to the pool, the read-only one was closed")
        try pool.withConnection { c in try c.transaction { c in try c.execute("INSERT INTO t VALUES (2)") } }
        #expect(pool.connectionFaults == faults + 1)
        #expect(try PostgresConnection(conninfo).execute("SELECT count(*) FROM t").first?.integer(0) == 2)
    }

    @Test("a store whose every new connection is read-only: a write is a database fault (the instance is answered 0xA701 and kept), saying what to set")
    func readOnlyServerIsAFault() throws {
        let conninfo = try Self.freshDatabase()
        let store = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        let admin = try PostgresConnection(conninfo)
        try admin.execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$")
        try admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        do {
            _ = try store.recordArrival(WorklistStoreContractTests.arrival("1.2.7", "1.2.7.1"))
            Issue.record("a read-only server took a write")
        } catch let error as WorklistError {
            guard case let .databaseUnreachable(_, reason, sqlState) = error else {
                Issue.record("not a connection fault: \(error)")
                return
            }
            #expect(sqlState == "25006" && error.isDatabaseFault)
            #expect(reason.contains("is read-only") && reason.contains("target_session_attrs=read-write"), "\(reason)")
        }
        try admin.execute("DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', current_database()); END $$")
        #expect(try store.recordArrival(WorklistStoreContractTests.arrival("1.2.7", "1.2.7.1")) == .newStudy)
    }

    @Test("a listing streams through its cursor in batches: every study once, in the listing's order")
    func streamsInBatches() throws {
        let conninfo = try Self.freshDatabase()
        let store = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        let arrivals = (1...1234).map { n in
            var a = WorklistStoreContractTests.arrival("1.3.\(n)", "1.3.\(n).1")
            a.receivedAt = WorklistFixture.base.addingTimeInterval(Double(n))
            return a
        }
        _ = try store.recordArrivals(arrivals)
        var f = WorklistFilter()
        f.sort = .arrival
        var streamed: [String] = []
        try store.forEachStudy(matching: f) { (study: Study) throws in
            // A call from inside the listing gets a connection of its own.
            if streamed.count == 700 {
                let total = try store.counts(matching: WorklistFilter()).total
                #expect(total == 1234)
            }
            streamed.append(study.studyInstanceUID)
        }
        #expect(streamed == (1...1234).reversed().map { "1.3.\($0)" })
    }

    @Test("a listing whose connection is lost midway fails naming the server; it is not started again from the top")
    func listingCutOff() throws {
        let conninfo = try Self.freshDatabase()
        let store = try Worklist.open(.postgresql(connection: conninfo), role: .daemon)
        _ = try store.recordArrivals((1...1234).map { n in WorklistStoreContractTests.arrival("1.5.\(n)", "1.5.\(n).1") })
        let admin = try PostgresConnection(conninfo)
        var seen: [String] = []
        do {
            try store.forEachStudy(matching: WorklistFilter()) { (study: Study) throws in
                if seen.count == 600 {
                    try admin.execute("""
                        SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                        """)
                }
                seen.append(study.studyInstanceUID)
            }
            Issue.record("the listing went on after its connection was ended")
        } catch let error as WorklistError {
            guard case let .databaseUnreachable(server, _, _) = error else {
                Issue.record("not a connection error: \(error)")
                return
            }
            #expect(server == WorklistLocation(conninfo).description)
        }
        #expect(seen.count == 1000 && Set(seen).count == 1000, "the two batches fetched before, each study once")
        #expect(try store.counts(matching: WorklistFilter()).total == 1234, "the next call works on a new connection")
    }

    @Test("times round-trip at microsecond precision, before 1970 and after 2038 too")
    func times() throws {
        let store = try Worklist.open(.postgresql(connection: try Self.freshDatabase()), role: .daemon)
        for (n, t) in [1_795_000_000.123456, -86_400.5, 2_500_000_000.000001, 0].enumerated() {
            var a = WorklistStoreContractTests.arrival("1.4.\(n)", "1.4.\(n).1")
            a.receivedAt = Date(timeIntervalSince1970: t)
            _ = try store.recordArrival(a)
            let stored = try store.study(studyInstanceUID: "1.4.\(n)").firstReceivedAt.timeIntervalSince1970
            #expect(abs(stored - t) < 0.000_001, "\(t) came back as \(stored)")
        }
    }

    // MARK: Where the worklist is

    @Test("WorklistLocation: postgresql:// and postgres:// are PostgreSQL, anything else a SQLite path; described without a password")
    func locations() {
        #expect(WorklistLocation("/var/lib/bonetriage/worklist.sqlite") == .sqlite(path: "/var/lib/bonetriage/worklist.sqlite"))
        #expect(WorklistLocation("worklist.sqlite").description == "worklist.sqlite")
        #expect(WorklistLocation("postgresql://bt:pw-secret@db.example.org:6432/worklist?sslmode=verify-full") ==
                .postgresql(connection: "postgresql://bt:pw-secret@db.example.org:6432/worklist?sslmode=verify-full"))
        #expect(WorklistLocation("postgresql://bt:pw-secret@db.example.org:6432/worklist?sslmode=verify-full").description == "db.example.org:6432/worklist")
        #expect(WorklistLocation("postgres://db.example.org/worklist").description == "db.example.org:5432/worklist")
        #expect(WorklistLocation("POSTGRESQL://db/wl") == .postgresql(connection: "POSTGRESQL://db/wl"))
        #expect(WorklistLocation("postgresql://a.example:5433,b.example:5434/wl?target_session_attrs=read-write").description == "a.example:5433,b.example:5434/wl")
        #expect(WorklistLocation("postgresql:///wl?host=/run/postgresql&password=pw-secret").description == "/run/postgresql:5432/wl")
        #expect(!WorklistLocation("postgresql://u:pw-secret@[nonsense").description.contains("pw-secret"))
        #expect(WorklistLocation("postgresql.sqlite") == .sqlite(path: "postgresql.sqlite"))
    }
}
