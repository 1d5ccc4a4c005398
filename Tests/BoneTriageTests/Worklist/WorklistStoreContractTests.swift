import BoneTriage
import Foundation
import Testing

/// A worklist backend under contract: how to open a new, empty store in a folder of its own (SQLite)
/// or a database of its own in the test process's PostgreSQL cluster (`PostgresCluster`; left out, with a
/// note, where PostgreSQL 15 is not installed).
struct WorklistBackend: Sendable, CustomTestStringConvertible {
    let name: String
    /// A new, empty worklist's location (a file in `folder`, or a fresh PostgreSQL database).
    let location: @Sendable (_ folder: String) throws -> WorklistLocation
    var testDescription: String { name }

    /// A new, empty store, as the daemon opens it.
    func open(_ folder: String) throws -> any WorklistStore { try Worklist.open(try location(folder), role: .daemon) }

    static let all: [WorklistBackend] = [
        WorklistBackend(name: "SQLite") { folder in .sqlite(path: folder + "/worklist.sqlite") },
    ] + (PostgresCluster.isInstalled ? [postgreSQL] : [])

    static let postgreSQL = WorklistBackend(name: "PostgreSQL") { _ in .postgresql(connection: try PostgresCluster.shared().freshDatabase()) }
}

/// What every worklist store does, whatever keeps it: pinned through the `WorklistStore` protocol alone.
@Suite("Worklist store contract")
struct WorklistStoreContractTests {
    /// A fresh store with the folder that holds it (each test keeps the folder alive while it uses the store).
    static func fresh(_ backend: WorklistBackend) throws -> (TemporaryDirectory, any WorklistStore) {
        let dir = try TemporaryDirectory()
        return (dir, try backend.open(dir.url.path))
    }

    static func arrival(_ study: String, _ sop: String, path: String? = nil, eligible: Bool = true) -> InstanceArrival {
        var a = InstanceArrival(studyInstanceUID: study, sopInstanceUID: sop, filePath: path ?? "/spool/\(study)/\(sop).dcm",
                                receivedAt: WorklistFixture.base, eligible: eligible, source: .cstore)
        a.bodyPart = "HUMERUS"
        return a
    }

    // MARK: Arrivals

    @Test("arrivals: a new study, more images, and a repeated SOP Instance UID stored once", arguments: WorklistBackend.all)
    func arrivals(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
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

    @Test("duplicates: a SOP Instance UID already stored changes nothing, even sent again for another study or from another file",
          arguments: WorklistBackend.all)
    func duplicates(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        #expect(try store.recordArrival(Self.arrival("1.2.40", "1.2.40.1")) == .newStudy)
        try store.markPending(studyInstanceUID: "1.2.40")
        #expect(try store.recordArrival(Self.arrival("1.2.40", "1.2.40.1", path: "/elsewhere/x.dcm")) == .duplicate)
        #expect(try store.recordArrival(Self.arrival("1.2.41", "1.2.40.1")) == .duplicate)
        let s = try store.study(studyInstanceUID: "1.2.40")
        #expect(s.imageCount == 1 && s.state == .pending, "a duplicate neither counts nor reopens the study")
        #expect(try store.imagePath(sopInstanceUID: "1.2.40.1") == "/spool/1.2.40/1.2.40.1.dcm")
        #expect(throws: WorklistError.studyNotFound(handle: "1.2.41")) { try store.study(studyInstanceUID: "1.2.41") }
    }

    @Test("metadata: the first non-empty value wins; the arrival window widens; images keep their series and reasons",
          arguments: WorklistBackend.all)
    func metadata(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        var a = Self.arrival("1.2.50", "1.2.50.2")
        a.receivedAt = WorklistFixture.base.addingTimeInterval(10)
        a.seriesInstanceUID = "1.2.50.0"
        a.accessionNumber = "ACC1"
        a.callingAETitle = "MODALITY1"
        _ = try store.recordArrival(a)
        var b = Self.arrival("1.2.50", "1.2.50.1", eligible: false)
        b.eligibilityReason = "CT is not a radiograph"
        b.accessionNumber = "OTHER"
        b.patientID = "PID1"
        _ = try store.recordArrival(b)
        let s = try store.study(studyInstanceUID: "1.2.50")
        #expect(s.accessionNumber == "ACC1" && s.patientID == "PID1" && s.callingAETitle == "MODALITY1" && s.source == .cstore)
        #expect(s.firstReceivedAt == WorklistFixture.base && s.lastReceivedAt == WorklistFixture.base.addingTimeInterval(10))
        #expect(s.shortID == Study.shortID(for: "1.2.50"))
        let images = try store.images(ofStudy: "1.2.50")
        #expect(images.map(\.sopInstanceUID) == ["1.2.50.1", "1.2.50.2"], "in order of arrival")
        #expect(images.map(\.studyInstanceUID) == ["1.2.50", "1.2.50"])
        #expect(images.map(\.seriesInstanceUID) == [nil, "1.2.50.0"])
        #expect(images.map(\.eligibilityReason) == ["CT is not a radiograph", nil])
    }

    @Test("character-set notes: a note comes with the first instance whose text the study takes", arguments: WorklistBackend.all)
    func characterSetNotes(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        var a = Self.arrival("1.2.60", "1.2.60.1")
        a.patientName = "Gérard^Zoë"
        _ = try store.recordArrival(a)
        var b = Self.arrival("1.2.60", "1.2.60.2")
        b.patientName = "Other"
        b.characterSetNote = "not taken"
        _ = try store.recordArrival(b)
        #expect(try store.study(studyInstanceUID: "1.2.60").characterSetNote == nil)
        var c = Self.arrival("1.2.60", "1.2.60.3")
        c.studyDescription = "Epaule"
        c.characterSetNote = "kept as received"
        _ = try store.recordArrival(c)
        var d = Self.arrival("1.2.60", "1.2.60.4")
        d.studyDescription = "x"
        d.characterSetNote = "a later note"
        _ = try store.recordArrival(d)
        let s = try store.study(studyInstanceUID: "1.2.60")
        #expect(s.characterSetNote == "kept as received" && s.patientName == "Gérard^Zoë" && s.studyDescription == "Epaule")
    }

    // MARK: States and triage

    @Test("triage: the study probability is the mean of its eligible images, the verdict uses the threshold", arguments: WorklistBackend.all)
    func triage(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
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

    @Test("triage records per-image problems, the model and its time; a result for fewer images than the study has is refused, untouched",
          arguments: WorklistBackend.all)
    func supersededTriage(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let uid = "1.2.70"
        for i in 1...3 { _ = try store.recordArrival(Self.arrival(uid, "\(uid).\(i)")) }
        let at = WorklistFixture.base.addingTimeInterval(60)
        let stale = TriageResult(studyInstanceUID: uid, imageProbabilities: ["\(uid).1": 0.9, "\(uid).2": 0.9], threshold: 0.5,
                                 modelID: "m1", modelHash: "h1", triagedAt: at, imageCount: 2)
        #expect(throws: WorklistError.triageSuperseded(shortID: Study.shortID(for: uid), classified: 2, now: 3)) { try store.recordTriage(stale) }
        #expect(try store.study(studyInstanceUID: uid).state == .receiving)
        #expect(try store.images(ofStudy: uid).allSatisfy { $0.probability == nil })

        let current = TriageResult(studyInstanceUID: uid, imageProbabilities: ["\(uid).1": 0.2, "\(uid).2": 0.4], threshold: 0.5,
                                   modelID: "m1", modelHash: "h1", triagedAt: at, imageCount: 3, imageProblems: ["\(uid).3": "could not be decoded: truncated"])
        let s = try store.recordTriage(current)
        #expect(s.state == .triaged && s.verdict == .normal && s.modelID == "m1" && s.modelHash == "h1" && s.triagedAt == at && s.threshold == 0.5)
        #expect(abs((s.probability ?? 0) - 0.3) < 1e-12 && s.priority == 300)
        #expect(try store.study(studyInstanceUID: uid) == s, "what recordTriage returns is what is stored")
        let images = try store.images(ofStudy: uid)
        #expect(images.map(\.probability) == [0.2, 0.4, nil])
        #expect(images.map(\.eligibilityReason) == [nil, nil, "could not be decoded: truncated"])
        try store.recordImageProblems(["\(uid).1": "gone"])
        #expect(try store.images(ofStudy: uid).first?.eligibilityReason == "gone")
    }

    @Test("states: pending, not applicable and failed keep their reason; a late instance reopens the study; a finished study is never queued",
          arguments: WorklistBackend.all)
    func states(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        _ = try store.recordArrival(Self.arrival("1.2.80", "1.2.80.1"))
        try store.markPending(studyInstanceUID: "1.2.80")
        #expect(try store.study(studyInstanceUID: "1.2.80").state == .pending)
        try store.markFailed(studyInstanceUID: "1.2.80", reason: "no image could be classified")
        var s = try store.study(studyInstanceUID: "1.2.80")
        #expect(s.state == .failed && s.stateReason == "no image could be classified")
        #expect(throws: WorklistError.transitionRefused(shortID: s.shortID, from: .failed, to: .pending)) {
            try store.markPending(studyInstanceUID: "1.2.80")
        }
        #expect(try store.study(studyInstanceUID: "1.2.80").state == .failed)
        _ = try store.recordArrival(Self.arrival("1.2.80", "1.2.80.2"))
        s = try store.study(studyInstanceUID: "1.2.80")
        #expect(s.state == .receiving && s.stateReason == nil)
        try store.markNotApplicable(studyInstanceUID: "1.2.80", reason: "body part SKULL is not covered")
        s = try store.study(studyInstanceUID: "1.2.80")
        #expect(s.state == .notApplicable && s.stateReason == "body part SKULL is not covered")

        try WorklistFixture.seed(store)
        let triaged = try store.study(studyInstanceUID: WorklistFixture.uids.flagged)
        #expect(throws: WorklistError.transitionRefused(shortID: triaged.shortID, from: .triaged, to: .pending)) {
            try store.markPending(studyInstanceUID: triaged.studyInstanceUID)
        }
        #expect(try store.study(studyInstanceUID: triaged.studyInstanceUID) == triaged)
        #expect(throws: WorklistError.studyNotFound(handle: "9.9.9")) { try store.markPending(studyInstanceUID: "9.9.9") }
    }

    @Test("triage attempts: counted until one ends; a study never triaged has none", arguments: WorklistBackend.all)
    func triageAttempts(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        _ = try store.recordArrival(Self.arrival("1.2.90", "1.2.90.1"))
        _ = try store.recordArrival(Self.arrival("1.2.91", "1.2.91.1"))
        #expect(try store.beginTriage(studyInstanceUID: "1.2.90") == .claimed(attempts: 1))
        #expect(try store.beginTriage(studyInstanceUID: "1.2.90") == .claimed(attempts: 2), "the first never ended: the process died during it")
        #expect(try store.beginTriage(studyInstanceUID: "1.2.91") == .claimed(attempts: 1), "counted per study")
        try store.endTriage(studyInstanceUID: "1.2.90")
        #expect(try store.beginTriage(studyInstanceUID: "1.2.90") == .claimed(attempts: 1))
        #expect(throws: WorklistError.studyNotFound(handle: "9.9.9")) { try store.beginTriage(studyInstanceUID: "9.9.9") }
    }

    // MARK: Files

    @Test("file paths: where each instance is, moved files, and the paths under a folder (a sibling folder is not under it)",
          arguments: WorklistBackend.all)
    func filePaths(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        _ = try store.recordArrival(Self.arrival("1.2.100", "1.2.100.1", path: "/spool/a/1.dcm"))
        _ = try store.recordArrival(Self.arrival("1.2.100", "1.2.100.2", path: "/spool/a/2.dcm"))
        _ = try store.recordArrival(Self.arrival("1.2.101", "1.2.101.1", path: "/spool2/b/1.dcm"))
        #expect(try store.imagePath(sopInstanceUID: "1.2.100.2") == "/spool/a/2.dcm")
        #expect(try store.imagePath(sopInstanceUID: "9.9") == nil)
        #expect(try store.imagePaths(under: "/spool") == ["/spool/a/1.dcm", "/spool/a/2.dcm"])
        #expect(try store.imagePaths(under: "/spool/") == ["/spool/a/1.dcm", "/spool/a/2.dcm"])
        try store.updateImagePaths(["1.2.100.1": "/archive/a/1.dcm"])
        #expect(try store.imagePath(sopInstanceUID: "1.2.100.1") == "/archive/a/1.dcm")
        #expect(try store.imagePaths(under: "/spool") == ["/spool/a/2.dcm"])
        #expect(try store.imagePaths(under: "/archive") == ["/archive/a/1.dcm"])
    }

    @Test("retention: only finished studies, oldest first, with their files in that folder; removed files are forgotten, their rows kept",
          arguments: WorklistBackend.all)
    func retention(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)  // flagged, normal (triaged), pending, hostile (triaged), CT (not applicable)
        try WorklistFixture.add(store, study: "1.2.826.0.1.3680043.8.498.10006", images: 1, at: 500)  // still receiving
        let failed = "1.2.826.0.1.3680043.8.498.10007"
        try WorklistFixture.add(store, study: failed, images: 1, at: 600)
        try store.markFailed(studyInstanceUID: failed, reason: "no image could be classified")
        try WorklistFixture.add(store, study: "1.2.826.0.1.3680043.8.498.10008", images: 1, at: 700, folder: "/archive")

        let u = WorklistFixture.uids
        let finished = try store.finishedStudyFiles(under: "/spool")
        // Triage time (base + 1 h) is later than the arrivals of the seeded studies, which all share it:
        // ties keep the order of arrival; the CT and the failed study finished at their last arrival.
        #expect(Set(finished.map(\.studyInstanceUID)) == [u.flagged, u.normal, u.hostile, u.ct, failed])
        #expect(finished.map(\.finishedAt) == finished.map(\.finishedAt).sorted())
        #expect(finished.first { $0.studyInstanceUID == u.normal }?.paths.count == 3)
        #expect(finished.first { $0.studyInstanceUID == u.ct }?.finishedAt == WorklistFixture.base.addingTimeInterval(401))
        #expect(finished.first { $0.studyInstanceUID == u.flagged }?.shortID == Study.shortID(for: u.flagged))
        #expect(try store.finishedStudyFiles(under: "/archive").isEmpty, "a receiving study is never offered")

        try store.markFilesRemoved(["/spool/\(u.normal)/1.dcm"], at: WorklistFixture.base.addingTimeInterval(7200))
        #expect(try store.finishedStudyFiles(under: "/spool").first { $0.studyInstanceUID == u.normal }?.paths.count == 2)
        let images = try store.images(ofStudy: u.normal)
        #expect(images.count == 3 && images.compactMap(\.probability).count == 3, "the rows and their probabilities stay")
        #expect(images.filter { $0.fileRemovedAt != nil }.map(\.filePath) == ["/spool/\(u.normal)/1.dcm"])
        #expect(images.compactMap(\.fileRemovedAt) == [WorklistFixture.base.addingTimeInterval(7200)])
    }

    // MARK: Reviews

    @Test("reviews: confirm, override and override back, all kept in order in the trail", arguments: WorklistBackend.all)
    func reviews(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)
        let uid = WorklistFixture.uids.flagged
        let t = WorklistFixture.base
        let first = try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "alice"), action: .confirm, label: nil, note: "fracture", at: t)
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "bob"), action: .override, label: .normal, note: "old callus", at: t.addingTimeInterval(1))
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "alice"), action: .override, label: .abnormal, note: nil, at: t.addingTimeInterval(2))
        let s = try store.study(handle: uid)
        #expect(s.reviewState == .overridden && s.reviewLabel == .abnormal && s.reviewedAt == t.addingTimeInterval(2) && !s.isFlagged)
        let trail = try store.reviews(ofStudy: s.studyInstanceUID)
        #expect(trail.first == first, "an entry is never changed by a later review")
        #expect(trail.map(\.studyInstanceUID) == [uid, uid, uid])
        #expect(trail.map(\.reviewer) == ["alice", "bob", "alice"])
        #expect(trail.map(\.action) == [.confirm, .override, .override])
        #expect(trail.map(\.label) == [.abnormal, .normal, .abnormal])
        #expect(trail.allSatisfy { $0.fromVerdict == .abnormal })
        #expect(trail.first?.note == "fracture")
        #expect(try store.reviews(ofStudy: WorklistFixture.uids.normal).isEmpty)

        #expect(throws: WorklistError.nothingToConfirm(shortID: Study.shortID(for: WorklistFixture.uids.pending), state: .pending)) {
            try store.recordReview(studyInstanceUID: WorklistFixture.uids.pending, by: ReviewerIdentity(login: "alice"), action: .confirm, label: nil, note: nil, at: t)
        }
        #expect(try store.reviews(ofStudy: WorklistFixture.uids.pending).isEmpty, "a refused review leaves no entry")
        let overridden = try store.recordReview(studyInstanceUID: WorklistFixture.uids.pending, by: ReviewerIdentity(login: "carol"), action: .override, label: .abnormal, note: nil, at: t)
        #expect(overridden.fromVerdict == nil && overridden.label == .abnormal)
        #expect(throws: WorklistError.studyNotFound(handle: "9.9.9")) { try store.reviews(ofStudy: "9.9.9") }
    }

    @Test("a late image re-triages a reviewed study: history kept, marked changed, flagged again", arguments: WorklistBackend.all)
    func retriageAfterReview(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)
        let uid = WorklistFixture.uids.normal
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "alice"), action: .confirm, label: nil, note: nil, at: Date())
        let late = try WorklistFixture.add(store, study: uid, images: 4, at: 1000)  // sops 1-3 are duplicates, 4 is new
        #expect(try store.study(handle: uid).imageCount == 4 && store.study(handle: uid).state == .receiving)
        try WorklistFixture.triage(store, study: uid, sops: late, probabilities: [0.6, 0.7, 0.8, 0.99])
        let s = try store.study(handle: uid)
        #expect(s.changedAfterReview && s.reviewState == .confirmed && s.verdict == .abnormal && s.isFlagged)
        #expect(try store.reviews(ofStudy: s.studyInstanceUID).count == 1)
        #expect(try store.studies(matching: { var f = WorklistFilter(); f.flaggedOnly = true; return f }()).map(\.studyInstanceUID).contains(uid))
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "alice"), action: .confirm, label: nil, note: "seen the new image", at: Date())
        #expect(try !store.study(handle: uid).changedAfterReview)
    }

    // MARK: Image details and reviews by UID

    @Test("image details: series and instance numbers, view, laterality and the drop-folder file name round-trip; absent stays absent",
          arguments: WorklistBackend.all)
    func imageDetails(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        var a = Self.arrival("1.2.300", "1.2.300.1")
        a.seriesNumber = 3
        a.instanceNumber = 12
        a.viewPosition = "PA"
        a.laterality = "L"
        _ = try store.recordArrival(a)
        var b = Self.arrival("1.2.300", "1.2.300.2", path: "/spool/1.2.300/2.png")
        b.fileName = "image2.png"
        _ = try store.recordArrival(b)
        let images = try store.images(ofStudy: "1.2.300")
        #expect(images.map(\.seriesNumber) == [3, nil] && images.map(\.instanceNumber) == [12, nil])
        #expect(images.map(\.viewPosition) == ["PA", nil] && images.map(\.laterality) == ["L", nil])
        #expect(images.map(\.fileName) == [nil, "image2.png"])
    }

    @Test("the reviewer is recorded as given: the login, and a stated name only beside it", arguments: WorklistBackend.all)
    func statedReviewer(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)
        let u = WorklistFixture.uids
        let recorded = try store.recordReviews(studyInstanceUIDs: [u.flagged], by: ReviewerIdentity(login: "alice", statedName: "Dr Smith"),
                                               action: .confirm, label: nil, note: nil, at: WorklistFixture.base)
        try store.recordReviews(studyInstanceUIDs: [u.normal], by: ReviewerIdentity(login: "bob"), action: .confirm, label: nil, note: nil,
                                at: WorklistFixture.base)
        let flaggedTrail = try store.reviews(ofStudy: u.flagged)
        #expect(flaggedTrail == recorded)
        #expect(flaggedTrail.map(\.reviewer) == ["alice"] && flaggedTrail.map(\.statedReviewer) == ["Dr Smith"])
        #expect(flaggedTrail.first?.attribution == "alice (for Dr Smith)")
        let normalTrail = try store.reviews(ofStudy: u.normal)
        #expect(normalTrail.map(\.reviewer) == ["bob"] && normalTrail.map(\.statedReviewer) == [nil])
        #expect(normalTrail.first?.attribution == "bob")
    }

    @Test("several studies are reviewed in one transaction: all recorded, or none when one is refused", arguments: WorklistBackend.all)
    func severalStudies(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)
        let u = WorklistFixture.uids
        let alice = ReviewerIdentity(login: "alice")
        // The pending study has no verdict to confirm: the whole command records nothing.
        #expect(throws: WorklistError.nothingToConfirm(shortID: Study.shortID(for: u.pending), state: .pending)) {
            try store.recordReviews(studyInstanceUIDs: [u.flagged, u.pending, u.normal], by: alice, action: .confirm, label: nil, note: nil,
                                    at: WorklistFixture.base)
        }
        #expect(try store.reviews(ofStudy: u.flagged).isEmpty && store.study(studyInstanceUID: u.flagged).reviewState == .unreviewed)
        #expect(try store.reviews(ofStudy: u.normal).isEmpty)
        #expect(throws: WorklistError.studyNotFound(handle: "9.9.9")) {
            try store.recordReviews(studyInstanceUIDs: [u.flagged, "9.9.9"], by: alice, action: .confirm, label: nil, note: nil, at: WorklistFixture.base)
        }
        #expect(try store.reviews(ofStudy: u.flagged).isEmpty)

        let recorded = try store.recordReviews(studyInstanceUIDs: [u.flagged, u.hostile, u.normal], by: alice, action: .override, label: .abnormal,
                                               note: "series of fractures", at: WorklistFixture.base)
        #expect(recorded.map(\.studyInstanceUID) == [u.flagged, u.hostile, u.normal], "one entry per study, in the order given")
        #expect(recorded.map(\.fromVerdict) == [.abnormal, .abnormal, .normal] && recorded.allSatisfy { $0.label == .abnormal })
        for uid in [u.flagged, u.hostile, u.normal] {
            let s = try store.study(studyInstanceUID: uid)
            let entries = try store.reviews(ofStudy: uid).count
            #expect(s.reviewState == .overridden && s.reviewLabel == .abnormal && entries == 1)
        }
        #expect(try store.recordReviews(studyInstanceUIDs: [], by: alice, action: .confirm, label: nil, note: nil, at: WorklistFixture.base).isEmpty)
    }

    @Test("already reviewed: a confirm, or an override to the label it has, records nothing and says by whom, when and with which label; changed after review, it can be confirmed again", arguments: WorklistBackend.all)
    func alreadyReviewed(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)
        let uid = WorklistFixture.uids.normal
        let t = WorklistFixture.base
        let first = try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "alice", statedName: "Dr Smith"), action: .confirm,
                                           label: nil, note: nil, at: t)
        let again = WorklistError.alreadyReviewed(shortID: Study.shortID(for: uid), requested: .confirm, previous: first)
        #expect(throws: again) {
            try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "bob"), action: .confirm, label: nil, note: nil, at: t.addingTimeInterval(60))
        }
        #expect(again.description.contains("alice (for Dr Smith)") && again.description.contains("normal") && again.description.contains("override"))
        #expect(throws: WorklistError.alreadyReviewed(shortID: Study.shortID(for: uid), requested: .override, previous: first)) {
            try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "bob"), action: .override, label: .normal, note: nil, at: t.addingTimeInterval(60))
        }
        #expect(try store.reviews(ofStudy: uid) == [first], "a refused review leaves no entry")
        // Overridden to the other label, then confirming is refused too (the override is what was reviewed).
        let changed = try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "bob"), action: .override, label: .abnormal, note: nil,
                                             at: t.addingTimeInterval(120))
        #expect(throws: WorklistError.alreadyReviewed(shortID: Study.shortID(for: uid), requested: .confirm, previous: changed)) {
            try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "carol"), action: .confirm, label: nil, note: nil, at: t.addingTimeInterval(180))
        }
        // A late image re-triages it: changed after review, it may be confirmed again.
        let sops = try WorklistFixture.add(store, study: uid, images: 4, at: 1000)
        try WorklistFixture.triage(store, study: uid, sops: sops, probabilities: [0.1, 0.1, 0.1, 0.1])
        #expect(try store.study(studyInstanceUID: uid).changedAfterReview)
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "carol"), action: .confirm, label: nil, note: nil, at: t.addingTimeInterval(240))
        let s = try store.study(studyInstanceUID: uid)
        #expect(!s.changedAfterReview && s.reviewState == .confirmed && s.reviewLabel == .normal)
        #expect(try store.reviews(ofStudy: uid).map(\.reviewer) == ["alice", "bob", "carol"])
    }

    // MARK: Listing

    @Test("order and filters: flagged first (most probable first within a day), then the others newest first", arguments: WorklistBackend.all)
    func orderAndFilters(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)
        let u = WorklistFixture.uids
        #expect(try store.studies(matching: WorklistFilter()).map(\.studyInstanceUID) == [u.flagged, u.hostile, u.ct, u.pending, u.normal])
        var f = WorklistFilter()
        f.flaggedOnly = true
        #expect(try store.studies(matching: f).map(\.studyInstanceUID) == [u.flagged, u.hostile])
        f = WorklistFilter(); f.states = [.pending, .notApplicable]
        #expect(try store.studies(matching: f).map(\.studyInstanceUID) == [u.ct, u.pending])
        f = WorklistFilter(); f.bodyPart = "humerus"
        #expect(try store.studies(matching: f).count == 3)
        f = WorklistFilter(); f.since = WorklistFixture.base.addingTimeInterval(150); f.until = WorklistFixture.base.addingTimeInterval(350)
        #expect(try store.studies(matching: f).map(\.studyInstanceUID) == [u.hostile, u.pending])
        f = WorklistFilter(); f.limit = 2
        #expect(try store.studies(matching: f).count == 2)
        try store.recordReview(studyInstanceUID: u.flagged, by: ReviewerIdentity(login: "a"), action: .confirm, label: nil, note: nil, at: Date())
        f = WorklistFilter(); f.review = .confirmed
        #expect(try store.studies(matching: f).map(\.studyInstanceUID) == [u.flagged])
    }

    @Test("the flagged filter and the order agree with the one flagged rule (StudyRules.isFlagged) in every review situation",
          arguments: WorklistBackend.all)
    func flaggedRuleAgrees(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        // Every verdict (none, normal, abnormal) x review (none, confirmed, overridden) x changed after review.
        var n = 0
        for probability in [nil, 0.2, 0.9] as [Double?] {
            for review in [nil, ReviewAction.confirm, .override] {
                for changed in [false, true] {
                    if review == nil && changed { continue }
                    if probability == nil && (review == .confirm || changed) { continue }  // nothing to confirm, nothing to re-triage
                    n += 1
                    let uid = "1.2.200.\(n)"
                    _ = try store.recordArrival(Self.arrival(uid, "\(uid).1"))
                    if let probability {
                        try store.recordTriage(TriageResult(studyInstanceUID: uid, imageProbabilities: ["\(uid).1": probability], threshold: 0.5, modelID: "m", modelHash: "h"))
                    }
                    if let review {
                        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "r"), action: review, label: review == .override ? .normal : nil, note: nil, at: WorklistFixture.base)
                    }
                    if changed, let probability {
                        _ = try store.recordArrival(Self.arrival(uid, "\(uid).2"))
                        try store.recordTriage(TriageResult(studyInstanceUID: uid, imageProbabilities: ["\(uid).1": probability, "\(uid).2": probability],
                                                            threshold: 0.5, modelID: "m", modelHash: "h"))
                    }
                }
            }
        }
        let all = try store.studies(matching: WorklistFilter())
        #expect(all.count == n)
        var f = WorklistFilter()
        f.flaggedOnly = true
        let flagged = try store.studies(matching: f).map(\.studyInstanceUID)
        #expect(flagged == all.filter(\.isFlagged).map(\.studyInstanceUID))
        #expect(flagged.count == 3, "abnormal: unreviewed, confirmed then changed, overridden then changed")
        #expect(all.map(\.tier) == all.map(\.tier).sorted(), "changed after review first, then flagged, then the others")
        #expect(all.filter { $0.tier == .flagged }.allSatisfy(\.isFlagged) && all.filter { $0.tier == .other }.allSatisfy { !$0.isFlagged })
    }

    @Test("study handles: short-ID and UID prefixes, ambiguity, nonsense", arguments: WorklistBackend.all)
    func handles(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
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

    // MARK: Heatmaps

    @Test("heatmaps: kept per image with the model they were made with, replaced, counted for the study's current model only; why none could be made is kept too",
          arguments: WorklistBackend.all)
    func heatmaps(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let base = WorklistFixture.base
        let sops = try WorklistFixture.add(store, study: "1.2.60", images: 3, at: 0)
        try WorklistFixture.triage(store, study: "1.2.60", sops: sops, probabilities: [0.9, 0.8, 0.7])  // model abc123
        #expect(try store.heatmap(sopInstanceUID: sops[0]) == nil)
        #expect(try store.study(studyInstanceUID: "1.2.60").heatmapCount == 0)
        let h = Heatmap(rows: 10, columns: 10, values: (0..<100).map { Float($0) / 128 }, method: "occlusion test", modelFingerprint: "abc123")
        try store.recordHeatmap(sopInstanceUID: sops[0], .made(h), at: base)
        let gone = HeatmapOutcome.notMade(reason: "the image file is gone", modelFingerprint: "abc123")
        try store.recordHeatmap(sopInstanceUID: sops[1], gone, at: base.addingTimeInterval(1))
        #expect(try store.heatmap(sopInstanceUID: sops[0]) == StoredHeatmap(sopInstanceUID: sops[0], outcome: .made(h), madeAt: base))
        #expect(try store.heatmap(sopInstanceUID: sops[1])?.outcome == gone)
        // A reason is not a picture: one image has one.
        #expect(try store.study(studyInstanceUID: "1.2.60").heatmapCount == 1)
        #expect(try store.studies(matching: WorklistFilter()).first { $0.studyInstanceUID == "1.2.60" }?.heatmapCount == 1)
        // Made again later: replaced.
        try store.recordHeatmap(sopInstanceUID: sops[1], .made(h), at: base.addingTimeInterval(2))
        #expect(try store.heatmap(sopInstanceUID: sops[1])?.outcome == .made(h))
        #expect(try store.study(studyInstanceUID: "1.2.60").heatmapCount == 2)
        #expect(throws: WorklistError.self) { try store.recordHeatmap(sopInstanceUID: "9.9.9", .made(h), at: base) }
        // Triaged again by another model: the heatmaps stay, but no longer count for the study.
        let recorded = try store.recordTriage(TriageResult(studyInstanceUID: "1.2.60", imageProbabilities: Dictionary(uniqueKeysWithValues: zip(sops, [0.6, 0.5, 0.4])),
                                                           threshold: 0.5, modelID: "humerus-v2", modelHash: "def456"))
        #expect(recorded.heatmapCount == 0)
        #expect(try store.study(studyInstanceUID: "1.2.60").heatmapCount == 0)
        #expect(try store.heatmap(sopInstanceUID: sops[0])?.outcome.modelFingerprint == "abc123")
        try store.recordHeatmap(sopInstanceUID: sops[2], .made(Heatmap(rows: 10, columns: 10, values: h.values, method: "m", modelFingerprint: "def456")), at: base)
        #expect(try store.study(studyInstanceUID: "1.2.60").heatmapCount == 1)
    }

    @Test("heatmap work: classified images of triaged studies without a heatmap for the study's current model, flagged only or all, newest triage first",
          arguments: WorklistBackend.all)
    func heatmapWork(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)  // abnormal: flagged (2 images), hostile (1); normal (3); pending; CT
        let u = WorklistFixture.uids
        func sops(_ scope: HeatmapScope, _ model: String = "abc123", limit: Int = 100) throws -> [String] {
            try store.heatmapWork(scope: scope, modelFingerprint: model, limit: limit).map(\.sopInstanceUID)
        }
        #expect(try sops(.flagged) == ["\(u.flagged).1", "\(u.flagged).2", "\(u.hostile).1"])
        #expect(try Set(sops(.all)) == Set(["\(u.flagged).1", "\(u.flagged).2", "\(u.hostile).1", "\(u.normal).1", "\(u.normal).2", "\(u.normal).3"]))
        #expect(try sops(.none).isEmpty && sops(.flagged, "other-model").isEmpty)
        #expect(try sops(.flagged, limit: 1) == ["\(u.flagged).1"])
        let first = try #require(try store.heatmapWork(scope: .flagged, modelFingerprint: "abc123", limit: 1).first)
        #expect(first == HeatmapWork(studyInstanceUID: u.flagged, sopInstanceUID: "\(u.flagged).1", filePath: "/spool/\(u.flagged)/1.dcm",
                                     fileRemovedAt: nil, modelFingerprint: "abc123"))
        // Made (or found impossible) for this model: no longer work.
        let h = Heatmap(rows: 10, columns: 10, values: [Float](repeating: 0.1, count: 100), method: "m", modelFingerprint: "abc123")
        try store.recordHeatmap(sopInstanceUID: "\(u.flagged).1", .made(h), at: WorklistFixture.base)
        try store.recordHeatmap(sopInstanceUID: "\(u.flagged).2", .notMade(reason: "gone", modelFingerprint: "abc123"), at: WorklistFixture.base)
        #expect(try sops(.flagged) == ["\(u.hostile).1"])
        // A file removed by retention is still work (to record why), with the date.
        try store.markFilesRemoved(["/spool/\(u.hostile)/1.dcm"], at: WorklistFixture.base.addingTimeInterval(5))
        #expect(try store.heatmapWork(scope: .flagged, modelFingerprint: "abc123", limit: 5).first?.fileRemovedAt == WorklistFixture.base.addingTimeInterval(5))
        // A heatmap made by an older model does not count once the study is triaged by a newer one.
        let later = WorklistFixture.base.addingTimeInterval(7200)
        try store.recordTriage(TriageResult(studyInstanceUID: u.flagged, imageProbabilities: ["\(u.flagged).1": 0.95, "\(u.flagged).2": 0.9],
                                            threshold: 0.5, modelID: "humerus-v2", modelHash: "def456", triagedAt: later))
        #expect(try sops(.flagged, "def456") == ["\(u.flagged).1", "\(u.flagged).2"])
        #expect(try sops(.flagged) == ["\(u.hostile).1"])
        // Newest triage first.
        try store.recordTriage(TriageResult(studyInstanceUID: u.hostile, imageProbabilities: ["\(u.hostile).1": 0.8],
                                            threshold: 0.5, modelID: "humerus-v2", modelHash: "def456", triagedAt: later.addingTimeInterval(60)))
        #expect(try sops(.flagged, "def456") == ["\(u.hostile).1", "\(u.flagged).1", "\(u.flagged).2"])
    }
}

// MARK: The results outbox (issue 13)

extension WorklistStoreContractTests {
    static let secondaryCaptureClass = "1.2.840.10008.5.1.4.1.1.1"  // CR Image Storage, as a source image's class

    /// A study of `images` DICOM images (each with a SOP Class UID), or PNG images without one.
    static func dicomStudy(_ store: any WorklistStore, _ uid: String, images: Int, dicom: Bool = true, folder: String = "/spool") throws -> [String] {
        try (1...images).map { i in
            var a = Self.arrival(uid, "\(uid).\(i)", path: "\(folder)/\(uid)/\(i).dcm")
            a.seriesInstanceUID = "\(uid).0"
            a.sopClassUID = dicom ? Self.secondaryCaptureClass : nil
            _ = try store.recordArrival(a)
            return "\(uid).\(i)"
        }
    }

    static func result(_ uid: String, _ probabilities: [String: Double], destinations: [ResultDestination], at offset: TimeInterval = 3600) -> TriageResult {
        var r = TriageResult(studyInstanceUID: uid, imageProbabilities: probabilities, threshold: 0.5, modelID: "m1", modelHash: "h1",
                             triagedAt: WorklistFixture.base.addingTimeInterval(offset))
        r.resultDestinations = destinations
        return r
    }

    static let everything = ResultDestination(name: "PACS", aeTitle: "PACS", host: "10.0.0.5", port: 104, callingAETitle: "BONETRIAGE",
                                              kinds: [.structuredReport, .secondaryCapture], verdicts: .abnormal)
    static let reportsOfAll = ResultDestination(name: "RIS", aeTitle: "RIS", host: "10.0.0.6", port: 104, callingAETitle: "BONETRIAGE",
                                                kinds: [.structuredReport], verdicts: .all)

    static func isDicomUID(_ uid: String) -> Bool {
        uid.count <= 64 && uid.hasPrefix("2.25.") && uid.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { part in
            !part.isEmpty && part.allSatisfy(\.isNumber) && (part == "0" || part.first != "0")
        }
    }

    @Test("outbox: a verdict queues its report and captures, for the destinations that take that kind and verdict, in the same transaction",
          arguments: WorklistBackend.all)
    func outboxQueuedWithVerdict(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let abnormal = "1.2.900", normal = "1.2.901", png = "1.2.902", none = "1.2.903"
        let a = try Self.dicomStudy(store, abnormal, images: 2)
        try store.recordTriage(Self.result(abnormal, [a[0]: 0.9, a[1]: 0.7], destinations: [Self.everything, Self.reportsOfAll]))
        let objects = try store.resultObjects(ofStudy: abnormal)
        #expect(objects.map(\.kind) == [.structuredReport, .secondaryCapture, .secondaryCapture])
        #expect(objects.allSatisfy { Self.isDicomUID($0.sopInstanceUID) && Self.isDicomUID($0.seriesInstanceUID) })
        #expect(Set(objects.map(\.sopInstanceUID)).count == 3)
        #expect(objects[0].deliveries.map(\.destination) == ["PACS", "RIS"])
        #expect(objects[1].deliveries.map(\.destination) == ["PACS"] && objects[2].deliveries.map(\.destination) == ["PACS"])
        #expect(objects[1].seriesInstanceUID == objects[2].seriesInstanceUID && objects[0].seriesInstanceUID != objects[1].seriesInstanceUID)
        #expect(objects.map(\.seriesNumber) == [9001, 9002, 9002] && objects.map(\.instanceNumber) == [1, 1, 2])
        #expect(objects.map(\.sourceSOPInstanceUID) == [nil, a[0], a[1]])
        #expect(objects.allSatisfy { $0.queuedAt == WorklistFixture.base.addingTimeInterval(3600) && $0.awaitsBuild && $0.replaces == nil })
        #expect(objects.flatMap(\.deliveries).allSatisfy { $0.state == .pending && $0.attempts == 0 && $0.shortID == Study.shortID(for: abnormal) })
        #expect(try store.resultObjects(ofStudy: abnormal) == objects, "identities are assigned once and read back the same")
        #expect(try store.study(studyInstanceUID: abnormal).deliveryMark == .pending)

        let n = try Self.dicomStudy(store, normal, images: 1)
        try store.recordTriage(Self.result(normal, [n[0]: 0.1], destinations: [Self.everything, Self.reportsOfAll]))
        #expect(try store.resultObjects(ofStudy: normal).map { $0.deliveries.map(\.destination) } == [["RIS"]], "verdicts = abnormal leaves normal studies out")

        let p = try Self.dicomStudy(store, png, images: 1, dicom: false)
        try store.recordTriage(Self.result(png, [p[0]: 0.9], destinations: [Self.everything]))
        #expect(try store.resultObjects(ofStudy: png).isEmpty, "a study without DICOM images has nothing to send back")
        #expect(try store.study(studyInstanceUID: png).deliveryMark == nil)

        let x = try Self.dicomStudy(store, none, images: 2)
        try store.recordTriage(Self.result(none, [x[0]: 0.9, x[1]: 0.9], destinations: []))
        #expect(try store.resultObjects(ofStudy: none).isEmpty, "no destination, nothing queued")

        // A refused (superseded) triage records no verdict, and so queues nothing.
        var stale = Self.result(none, [x[0]: 0.9], destinations: [Self.everything])
        stale.imageCount = 1
        #expect(throws: WorklistError.self) { try store.recordTriage(stale) }
        #expect(try store.resultObjects(ofStudy: none).isEmpty)

        // A re-triage queues anew: a report replacing the previous one, and a new capture series.
        try store.recordTriage(Self.result(abnormal, [a[0]: 0.8, a[1]: 0.8], destinations: [Self.everything], at: 7200))
        let again = try store.resultObjects(ofStudy: abnormal)
        #expect(Array(again.prefix(3)) == objects, "earlier objects are kept as they were")
        #expect(again.dropFirst(3).map(\.kind) == [.structuredReport, .secondaryCapture, .secondaryCapture])
        #expect(again[3].replaces == objects[0].reported)
        #expect(again[4].seriesInstanceUID != objects[1].seriesInstanceUID && again[4].seriesNumber == 9004 && again[3].seriesNumber == 9003)
    }

    @Test("outbox: a review queues an updated report replacing the latest, to the same destinations; none without a report, none when refused",
          arguments: WorklistBackend.all)
    func outboxQueuedWithReview(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let uid = "1.2.910", other = "1.2.911"
        let a = try Self.dicomStudy(store, uid, images: 1)
        try store.recordTriage(Self.result(uid, [a[0]: 0.9], destinations: [Self.everything, Self.reportsOfAll]))
        let b = try Self.dicomStudy(store, other, images: 1)
        try store.recordTriage(Self.result(other, [b[0]: 0.9], destinations: []))
        let before = try store.resultObjects(ofStudy: uid)
        let at = WorklistFixture.base.addingTimeInterval(9000)
        try store.recordReviews(studyInstanceUIDs: [uid, other], by: ReviewerIdentity(login: "alice", statedName: "Dr Smith"), action: .override,
                                label: .normal, note: "old callus", at: at)
        let after = try store.resultObjects(ofStudy: uid)
        #expect(after.count == before.count + 1 && Array(after.prefix(before.count)) == before)
        let updated = try #require(after.last)
        #expect(updated.kind == .structuredReport && updated.replaces == before[0].reported && updated.queuedAt == at)
        #expect(updated.seriesInstanceUID == before[0].seriesInstanceUID && updated.instanceNumber == 2 && updated.sopInstanceUID != before[0].sopInstanceUID)
        #expect(updated.review?.reviewer == "alice" && updated.review?.statedReviewer == "Dr Smith" && updated.review?.label == .normal)
        #expect(updated.deliveries.map(\.destination) == ["PACS", "RIS"], "the destinations of the report it replaces, whatever the config")
        #expect(try store.resultObjects(ofStudy: other).isEmpty, "a study without a report gets none from a review")

        // A second review replaces the updated report; a refused review queues nothing.
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "bob"), action: .override, label: .abnormal, note: nil, at: at + 60)
        let third = try #require(try store.resultObjects(ofStudy: uid).last)
        #expect(third.replaces == updated.reported && third.instanceNumber == 3)
        let count = try store.resultObjects(ofStudy: uid).count
        #expect(throws: WorklistError.self) {
            try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "bob"), action: .override, label: .abnormal, note: nil, at: at + 120)
        }
        #expect(try store.resultObjects(ofStudy: uid).count == count)
    }

    @Test("outbox: builds begun and not ended are counted per object until one ends; an unknown object is an error",
          arguments: WorklistBackend.all)
    func resultBuildAttempts(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let uid = "1.2.925"
        let a = try Self.dicomStudy(store, uid, images: 1)
        try store.recordTriage(Self.result(uid, [a[0]: 0.9], destinations: [Self.everything]))
        let objects = try store.resultObjects(ofStudy: uid)
        #expect(objects.count == 2)
        #expect(try store.beginResultBuild(sopInstanceUID: objects[0].sopInstanceUID) == 1)
        #expect(try store.beginResultBuild(sopInstanceUID: objects[0].sopInstanceUID) == 2, "the first build never ended")
        #expect(try store.beginResultBuild(sopInstanceUID: objects[1].sopInstanceUID) == 1, "counted per object")
        try store.endResultBuild(sopInstanceUID: objects[0].sopInstanceUID)
        #expect(try store.beginResultBuild(sopInstanceUID: objects[0].sopInstanceUID) == 1)
        #expect(throws: WorklistError.self) { try store.beginResultBuild(sopInstanceUID: "2.25.1") }
    }

    @Test("outbox: built once, due when built and its time has come, delivered, refused, retried, dropped; entries by ID or prefix",
          arguments: WorklistBackend.all)
    func outboxDeliveries(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let uid = "1.2.920"
        let a = try Self.dicomStudy(store, uid, images: 1)
        try store.recordTriage(Self.result(uid, [a[0]: 0.9], destinations: [Self.everything, Self.reportsOfAll]))
        let t = WorklistFixture.base.addingTimeInterval(4000)
        let objects = try store.resultObjects(ofStudy: uid)
        #expect(try store.resultObjectsAwaitingBuild(limit: 10).map(\.sopInstanceUID) == objects.map(\.sopInstanceUID))
        #expect(try store.deliveriesDue(at: t, limit: 10).isEmpty, "nothing is due before its file is built")
        try store.recordResultBuilt(sopInstanceUID: objects[0].sopInstanceUID, filePath: "/results/sr.dcm", at: t)
        try store.recordResultBuildProblem(sopInstanceUID: objects[1].sopInstanceUID, reason: "no picture", at: t)
        #expect(try store.resultObjectsAwaitingBuild(limit: 10).isEmpty)
        let built = try store.resultObjects(ofStudy: uid)
        #expect(built[0].filePath == "/results/sr.dcm" && built[0].builtAt == t && built[1].buildProblem == "no picture" && built[1].filePath == nil)
        #expect(built.map(\.sopInstanceUID) == objects.map(\.sopInstanceUID))

        let due = try store.deliveriesDue(at: t, limit: 10)
        #expect(due.map(\.destination) == ["PACS", "RIS"] && due.allSatisfy { $0.filePath == "/results/sr.dcm" && $0.kind == .structuredReport })
        let (pacs, ris) = (due[0], due[1])
        try store.recordDeliveryAttempt(entryID: pacs.entryID, state: .pending, message: "connection refused", nextAttemptAt: t + 10, at: t)
        try store.recordDeliveryAttempt(entryID: ris.entryID, state: .delivered, message: nil, nextAttemptAt: nil, at: t)
        #expect(try store.deliveriesDue(at: t + 5, limit: 10).isEmpty, "not before its next attempt")
        let later = try #require(try store.deliveriesDue(at: t + 10, limit: 10).first)
        #expect(later.entryID == pacs.entryID && later.attempts == 1 && later.lastError == "connection refused" && later.nextAttemptAt == t + 10)
        try store.recordDeliveryAttempt(entryID: pacs.entryID, state: .refused, message: "0xA900", nextAttemptAt: nil, at: t + 10)
        // Once delivered, an entry stays so (a late outcome does not undo it).
        try store.recordDeliveryAttempt(entryID: ris.entryID, state: .refused, message: "late", nextAttemptAt: nil, at: t + 11)

        let open = try store.outboxEntries(includeDelivered: false)
        #expect(Set(open.map(\.state)) == [.refused, .pending] && !open.contains { $0.entryID == ris.entryID })
        let all = try store.outboxEntries(includeDelivered: true)
        let delivered = try #require(all.first { $0.entryID == ris.entryID })
        #expect(delivered.state == .delivered && delivered.deliveredAt == t && delivered.attempts == 1)
        #expect(all.count == 3, "a report to two destinations, a capture to one")

        let retried = try store.retryRefusedDeliveries(at: t + 20)
        #expect(retried.map(\.entryID) == [pacs.entryID] && retried[0].state == .pending && retried[0].nextAttemptAt == t + 20)
        #expect(try store.deliveriesDue(at: t + 20, limit: 10).map(\.entryID) == [pacs.entryID])
        #expect(throws: WorklistError.outboxEntryFinished(entry: ris.entryID, state: .delivered)) { try store.retryDeliveries(entryIDs: [ris.entryID], at: t) }
        let dropped = try store.dropDeliveries(entryIDs: [String(pacs.entryID.prefix(6))], by: "carol", at: t + 30)
        #expect(dropped.map(\.state) == [.dropped] && dropped[0].droppedBy == "carol" && dropped[0].droppedAt == t + 30)
        #expect(try store.deliveriesDue(at: t + 40, limit: 10).isEmpty)
        #expect(throws: WorklistError.outboxEntryFinished(entry: pacs.entryID, state: .dropped)) { try store.retryDeliveries(entryIDs: [pacs.entryID], at: t) }
        #expect(throws: WorklistError.outboxEntryNotFound(entry: "zz")) { try store.dropDeliveries(entryIDs: ["zz"], by: "carol", at: t) }
        #expect(throws: WorklistError.outboxEntryNotFound(entry: "0000000000")) { try store.retryDeliveries(entryIDs: ["0000000000"], at: t) }
        #expect(try store.outboxEntries(includeDelivered: true).count == 3, "a dropped entry is kept")
        #expect(DeliveryMark.of(try store.resultObjects(ofStudy: uid).flatMap(\.deliveries)) == .failed, "a capture that could not be built needs a look")
        #expect(try store.study(studyInstanceUID: uid).deliveryMark == .failed, "the study's mark follows its entries")
        #expect(try store.studies(matching: WorklistFilter()).first?.deliveryMark == .failed, "and a listing reads it")
    }

    @Test("outbox and retention: a study's files stay while an object waits for them; result files go once delivered or dropped everywhere",
          arguments: WorklistBackend.all)
    func outboxRetention(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let uid = "1.2.930"
        let a = try Self.dicomStudy(store, uid, images: 1)
        try store.recordTriage(Self.result(uid, [a[0]: 0.9], destinations: [Self.everything]))
        #expect(try store.images(ofStudy: uid).map(\.sopClassUID) == [Self.secondaryCaptureClass], "the image's SOP Class UID is kept")
        #expect(try store.finishedStudyFiles(under: "/spool").isEmpty, "objects not built yet keep the study's source files")
        let objects = try store.resultObjects(ofStudy: uid)
        let t = WorklistFixture.base.addingTimeInterval(5000)
        try store.recordResultBuilt(sopInstanceUID: objects[0].sopInstanceUID, filePath: "/results/\(uid)/sr.dcm", at: t)
        #expect(try store.finishedStudyFiles(under: "/spool").isEmpty, "one object still waits")
        try store.recordResultBuildProblem(sopInstanceUID: objects[1].sopInstanceUID, reason: "no picture", at: t)
        #expect(try store.finishedStudyFiles(under: "/spool").map(\.paths) == [["/spool/\(uid)/1.dcm"]])
        #expect(try store.finishedStudyFiles(under: "/results").isEmpty, "an undelivered result file stays")
        let entries = try store.outboxEntries(includeDelivered: true)
        for e in entries where e.kind == .structuredReport {
            try store.recordDeliveryAttempt(entryID: e.entryID, state: .delivered, message: nil, nextAttemptAt: nil, at: t)
        }
        try store.dropDeliveries(entryIDs: entries.filter { $0.kind == .secondaryCapture }.map(\.entryID), by: "carol", at: t)
        #expect(try store.study(studyInstanceUID: uid).deliveryMark == .sent)
        let results = try store.finishedStudyFiles(under: "/results")
        #expect(results.map(\.paths) == [["/results/\(uid)/sr.dcm"]] && results.first?.studyInstanceUID == uid)
        try store.markFilesRemoved(["/results/\(uid)/sr.dcm"], at: t + 1)
        #expect(try store.finishedStudyFiles(under: "/results").isEmpty)
        #expect(try store.resultObjects(ofStudy: uid)[0].fileRemovedAt == t + 1)
    }
}
