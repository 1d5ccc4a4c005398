import BoneTriage
import Foundation
import GRDB
import Testing

@Suite("Worklist store: schema, migrations, triage and reviews")
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
        try store.recordReview(studyHandle: "1.2.3.4", reviewer: "alice", action: .confirm, label: nil, note: nil, at: Date())
        #expect(try store.study(handle: "1.2.3.4").reviewState == .confirmed)
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

    @Test("arrivals: a new study, more images, and a repeated SOP Instance UID stored once")
    func arrivals() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        var a = InstanceArrival(studyInstanceUID: "1.2.3", sopInstanceUID: "1.2.3.1", filePath: "/s/1", eligible: true, source: .dropFolder)
        a.bodyPart = "HUMERUS"
        #expect(try store.recordArrival(a) == .newStudy)
        #expect(try store.recordArrival(a) == .duplicate)
        var b = a
        b.sopInstanceUID = "1.2.3.2"
        b.bodyPart = nil
        b.eligible = false
        #expect(try store.recordArrival(b) == .addedToStudy)
        let s = try store.study(handle: "1.2.3")
        #expect(s.imageCount == 2 && s.eligibleImageCount == 1 && s.bodyPart == "HUMERUS" && s.state == .receiving)
        #expect(try store.images(ofStudy: s.studyInstanceUID).map(\.sopInstanceUID) == ["1.2.3.1", "1.2.3.2"])
    }

    @Test("triage: the study probability is the mean of its eligible images, the verdict uses the threshold")
    func triage() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        let flagged = try store.study(handle: WorklistFixture.uids.flagged)
        #expect(abs((flagged.probability ?? 0) - 0.8) < 1e-12 && flagged.verdict == .abnormal && flagged.state == .triaged)
        #expect(flagged.priority == 800 && flagged.modelID == "humerus-v1" && flagged.isFlagged)
        let normal = try store.study(handle: WorklistFixture.uids.normal)
        #expect(abs((normal.probability ?? 0) - 0.2) < 1e-12 && normal.verdict == .normal)
        let images = try store.images(ofStudy: normal.studyInstanceUID)
        #expect(images.compactMap(\.probability) == [0.1, 0.2, 0.3])
        let ct = try store.study(handle: WorklistFixture.uids.ct)
        #expect(ct.state == .notApplicable && ct.stateReason == "no eligible image (CT)" && ct.verdict == nil)
        // A study whose images are all ineligible cannot get a verdict, whatever the caller passes.
        let result = try store.recordTriage(TriageResult(studyInstanceUID: WorklistFixture.uids.ct, imageProbabilities: ["\(WorklistFixture.uids.ct).1": 0.99],
                                                         threshold: 0.5, modelID: "m", modelHash: "h"))
        #expect(result.state == .notApplicable && result.verdict == nil)
    }

    @Test("reviews: confirm and override, twice, all kept; the trail cannot be edited")
    func reviews() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("w.sqlite")
        let store = try SQLiteWorklist(path: path, create: true)
        try WorklistFixture.seed(store)
        let uid = WorklistFixture.uids.flagged
        let t = WorklistFixture.base
        try store.recordReview(studyHandle: uid, reviewer: "alice", action: .confirm, label: nil, note: "fracture", at: t)
        try store.recordReview(studyHandle: uid, reviewer: "alice", action: .confirm, label: nil, note: nil, at: t.addingTimeInterval(1))
        try store.recordReview(studyHandle: uid, reviewer: "bob", action: .override, label: .normal, note: "old callus", at: t.addingTimeInterval(2))
        let s = try store.study(handle: uid)
        #expect(s.reviewState == .overridden && s.reviewLabel == .normal && !s.isFlagged)
        let trail = try store.reviews(ofStudy: s.studyInstanceUID)
        #expect(trail.map(\.reviewer) == ["alice", "alice", "bob"])
        #expect(trail.map(\.action) == [.confirm, .confirm, .override])
        #expect(trail.map(\.label) == [.abnormal, .abnormal, .normal])
        #expect(trail.allSatisfy { $0.fromVerdict == .abnormal })
        #expect(trail.first?.note == "fracture")

        #expect(throws: WorklistError.nothingToConfirm(shortID: Study.shortID(for: WorklistFixture.uids.pending), state: .pending)) {
            try store.recordReview(studyHandle: WorklistFixture.uids.pending, reviewer: "alice", action: .confirm, label: nil, note: nil, at: t)
        }
        let queue = try DatabaseQueue(path: path)
        #expect(throws: DatabaseError.self) { try queue.write { try $0.execute(sql: "UPDATE review SET label = 'abnormal'") } }
        #expect(throws: DatabaseError.self) { try queue.write { try $0.execute(sql: "DELETE FROM review") } }
        #expect(try queue.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM review") } == 3)
    }

    @Test("a late image re-triages a reviewed study: history kept, marked changed, flagged again")
    func retriageAfterReview() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        let uid = WorklistFixture.uids.normal
        try store.recordReview(studyHandle: uid, reviewer: "alice", action: .confirm, label: nil, note: nil, at: Date())
        let late = try WorklistFixture.add(store, study: uid, images: 4, at: 1000)  // sops 1-3 are duplicates, 4 is new
        #expect(try store.study(handle: uid).imageCount == 4 && store.study(handle: uid).state == .receiving)
        try WorklistFixture.triage(store, study: uid, sops: late, probabilities: [0.6, 0.7, 0.8, 0.99])
        let s = try store.study(handle: uid)
        #expect(s.changedAfterReview && s.reviewState == .confirmed && s.verdict == .abnormal && s.isFlagged)
        #expect(try store.reviews(ofStudy: s.studyInstanceUID).count == 1)
        #expect(try store.studies(matching: { var f = WorklistFilter(); f.flaggedOnly = true; return f }()).map(\.studyInstanceUID).contains(uid))
        try store.recordReview(studyHandle: uid, reviewer: "alice", action: .confirm, label: nil, note: "seen the new image", at: Date())
        #expect(try !store.study(handle: uid).changedAfterReview)
    }

    @Test("order and filters: flagged first, then priority and arrival")
    func orderAndFilters() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        let u = WorklistFixture.uids
        #expect(try store.studies(matching: WorklistFilter()).map(\.studyInstanceUID) == [u.flagged, u.hostile, u.normal, u.pending, u.ct])
        var f = WorklistFilter()
        f.flaggedOnly = true
        #expect(try store.studies(matching: f).map(\.studyInstanceUID) == [u.flagged, u.hostile])
        f = WorklistFilter(); f.states = [.pending, .notApplicable]
        #expect(try store.studies(matching: f).map(\.studyInstanceUID) == [u.pending, u.ct])
        f = WorklistFilter(); f.bodyPart = "humerus"
        #expect(try store.studies(matching: f).count == 3)
        f = WorklistFilter(); f.since = WorklistFixture.base.addingTimeInterval(150); f.until = WorklistFixture.base.addingTimeInterval(350)
        #expect(try store.studies(matching: f).map(\.studyInstanceUID) == [u.hostile, u.pending])
        f = WorklistFilter(); f.limit = 2
        #expect(try store.studies(matching: f).count == 2)
        try store.recordReview(studyHandle: u.flagged, reviewer: "a", action: .confirm, label: nil, note: nil, at: Date())
        f = WorklistFilter(); f.review = .confirmed
        #expect(try store.studies(matching: f).map(\.studyInstanceUID) == [u.flagged])
    }

    @Test("study handles: short-ID and UID prefixes, ambiguity, nonsense")
    func handles() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        let flagged = try store.study(handle: WorklistFixture.uids.flagged)
        #expect(try store.study(handle: String(flagged.shortID.prefix(8))).studyInstanceUID == flagged.studyInstanceUID)
        #expect(try store.study(handle: flagged.shortID.uppercased()).studyInstanceUID == flagged.studyInstanceUID)
        #expect(throws: WorklistError.self) { try store.study(handle: "1.2.826.0.1") }  // all five share it
        do {
            _ = try store.study(handle: "1.2.826.0.1")
        } catch let WorklistError.ambiguousStudy(_, candidates) {
            #expect(candidates.count == 5)
        }
        #expect(throws: WorklistError.studyNotFound(handle: "ffffffff")) { try store.study(handle: "ffffffff") }
        #expect(throws: WorklistError.invalidHandle("ab")) { try store.study(handle: "ab") }
        #expect(throws: WorklistError.invalidHandle("x'; DROP TABLE study;--")) { try store.study(handle: "x'; DROP TABLE study;--") }
        #expect(throws: WorklistError.invalidHandle("1.2%")) { try store.study(handle: "1.2%") }
    }
}
