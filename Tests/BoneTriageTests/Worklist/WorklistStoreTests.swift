import BoneTriage
import Foundation
import GRDB
import Testing

@Suite("SQLite worklist: schema, migrations, files and the database's own guards")
struct WorklistStoreTests {
    @Test("a new database gets the whole schema, WAL, and mode 0660 (the daemon and its group of radiologists write it)")
    func createEmpty() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("w.sqlite")
        _ = try SQLiteWorklist(path: path, create: true)
        let mode = try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
        #expect(mode & 0o777 == 0o660)
        let queue = try DatabaseQueue(path: path)
        try queue.read { db in
            let tables = try ["study", "image", "review"].map { try db.tableExists($0) }
            #expect(tables == [true, true, true])
            let journal = try String.fetchOne(db, sql: "PRAGMA journal_mode")
            #expect(journal == "wal")
            let applied = try WorklistSchema.migrator.appliedIdentifiers(db)
            #expect(applied == Set(WorklistSchema.migrator.migrations))
        }
    }

    @Test("the CLI never creates a database: a missing one is an error that says where to look")
    func missingDatabase() throws {
        let dir = try TemporaryDirectory()
        #expect(throws: WorklistError.databaseNotFound(path: dir.path("none.sqlite"))) { try SQLiteWorklist(path: dir.path("none.sqlite"), create: false) }
        #expect(!FileManager.default.fileExists(atPath: dir.path("none.sqlite")))
    }

    @Test("the one factory: the daemon creates the worklist and its folder (mode 0660); a reviewer never creates one")
    func factory() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("state/worklist.sqlite")
        #expect(throws: WorklistError.databaseNotFound(path: path)) { try Worklist.open(path: path, role: .reviewer) }
        #expect(!FileManager.default.fileExists(atPath: dir.path("state")))
        var configuration = BoneTriageConfiguration()
        configuration.databasePath = path
        let daemon = try Worklist.open(configuration: configuration, role: .daemon)
        let mode = try #require(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
        #expect(mode & 0o777 == 0o660)
        _ = try daemon.recordArrival(InstanceArrival(studyInstanceUID: "1.2.3", sopInstanceUID: "1.2.3.1", filePath: "/s/1", eligible: true, source: .cstore))
        let reviewer = try Worklist.open(path: path, role: .reviewer)
        #expect(try reviewer.study(studyInstanceUID: "1.2.3").imageCount == 1)
    }

    @Test("a database of the previous schema (v1) is upgraded in place and keeps its rows")
    func upgradeFromV1() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("old.sqlite")
        let old = try DatabaseQueue(path: path)
        try WorklistSchema.migrator.migrate(old, upTo: "v1-studies-and-images")
        try old.write { db in
            try db.execute(sql: """
                INSERT INTO study (studyInstanceUID, shortID, source, firstReceivedAt, lastReceivedAt, imageCount, eligibleImageCount, state, probability, verdict, threshold, priority)
                VALUES ('1.2.3.4', ?, 'cstore', '2026-01-01 10:00:00.000', '2026-01-01 10:00:00.000', 1, 1, 'triaged', 0.8, 'abnormal', 0.5, 800)
                """, arguments: [Study.shortID(for: "1.2.3.4")])
        }
        try old.close()
        let store = try SQLiteWorklist(path: path, create: false)
        let s = try store.study(handle: "1.2.3.4")
        #expect(s.probability == 0.8 && s.verdict == .abnormal && s.reviewState == .unreviewed && !s.changedAfterReview)
        try store.recordReview(studyInstanceUID: "1.2.3.4", by: ReviewerIdentity(login: "alice"), action: .confirm, label: nil, note: nil, at: Date())
        #expect(try store.study(handle: "1.2.3.4").reviewState == .confirmed)
    }

    @Test("migration v13 gives each result object its study's triage node; one of a study no node triaged keeps none (anyone's, as before)")
    func resultObjectNodeBackfill() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("v12.sqlite")
        let old = try DatabaseQueue(path: path)
        try WorklistSchema.migrator.migrate(old, upTo: "v12-operating-point")
        try old.write { db in
            for (n, node) in [(1, "node-a"), (2, nil)] as [(Int, String?)] {
                let uid = "1.2.13.\(n)"
                try db.execute(sql: """
                    INSERT INTO study (studyInstanceUID, shortID, source, firstReceivedAt, lastReceivedAt, state, verdict, triageNode)
                    VALUES (?, ?, 'cstore', '2026-01-01 10:00:00.000', '2026-01-01 10:00:00.000', 'triaged', 'abnormal', ?)
                    """, arguments: [uid, Study.shortID(for: uid), node])
                try db.execute(sql: """
                    INSERT INTO resultObject (studyID, kind, sopInstanceUID, seriesInstanceUID, seriesNumber, instanceNumber, queuedAt)
                    VALUES (?, 'sr', ?, ?, 9001, 1, '2026-01-01 10:00:00.000')
                    """, arguments: [db.lastInsertedRowID, "\(uid).9", "\(uid).8"])
            }
        }
        try old.close()
        let store = try SQLiteWorklist(path: path, create: false, node: "node-b")
        #expect(try store.resultObjects(ofStudy: "1.2.13.1").map(\.node) == ["node-a"])
        #expect(try store.resultObjects(ofStudy: "1.2.13.2").map(\.node) == [nil])
        #expect(try store.resultObjectsAwaitingBuild(limit: 10).map(\.sopInstanceUID) == ["1.2.13.2.9"], "node-a's object is not node-b's to build")
    }

    @Test("a database from a newer BoneTriage is refused, untouched")
    func newerSchemaRefused() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("new.sqlite")
        _ = try SQLiteWorklist(path: path, create: true)
        let queue = try DatabaseQueue(path: path)
        try queue.write { db in try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v9-from-the-future')") }
        try queue.close()
        #expect(throws: WorklistError.newerSchema(path: path, unknownMigrations: ["v9-from-the-future"])) {
            try SQLiteWorklist(path: path, create: false)
        }
    }

    @Test("the review trail is append-only in the database itself: UPDATE and DELETE on it are refused")
    func trailIsAppendOnly() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("w.sqlite")
        let store = try SQLiteWorklist(path: path, create: true)
        try WorklistFixture.seed(store)
        let uid = WorklistFixture.uids.flagged
        let t = WorklistFixture.base
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "alice"), action: .confirm, label: nil, note: "fracture", at: t)
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "bob"), action: .override, label: .normal, note: "old callus", at: t.addingTimeInterval(1))
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "alice", statedName: "Dr Smith"), action: .override, label: .abnormal,
                               note: nil, at: t.addingTimeInterval(2))
        let queue = try DatabaseQueue(path: path)
        #expect(throws: DatabaseError.self) { try queue.write { try $0.execute(sql: "UPDATE review SET label = 'abnormal'") } }
        #expect(throws: DatabaseError.self) { try queue.write { try $0.execute(sql: "DELETE FROM review") } }
        #expect(try queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM review") } == 3)
    }
}
