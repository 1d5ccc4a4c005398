import BoneTriage
import Foundation
import Testing

/// `bonetriage outbox` (list, retry, drop) and the results in `show`, through the real binary.
@Suite("bonetriage outbox and the results in show", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct OutboxCommandTests {
    let dir: TemporaryDirectory
    let db: String
    let store: SQLiteWorklist
    let uid = "1.2.826.0.1.3680043.8.498.20001"
    static let pacs = ResultDestination(name: "PACS", aeTitle: "PACS", host: "10.0.0.5", port: 104, callingAETitle: "BONETRIAGE")

    init() throws {
        dir = try TemporaryDirectory()
        db = dir.path("worklist.sqlite")
        store = try SQLiteWorklist(path: db, create: true)
        var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: uid + ".1", seriesInstanceUID: uid + ".0", filePath: "/spool/x/1.dcm",
                                receivedAt: WorklistFixture.base, eligible: true, source: .cstore)
        a.sopClassUID = "1.2.840.10008.5.1.4.1.1.1"
        a.patientName = "DOE^JANE"
        a.bodyPart = "HUMERUS"
        _ = try store.recordArrival(a)
        var r = TriageResult(studyInstanceUID: uid, imageProbabilities: [uid + ".1": 0.9], threshold: 0.5, modelID: "m", modelHash: "h")
        r.resultDestinations = [Self.pacs]
        try store.recordTriage(r)
    }

    func run(_ args: [String]) throws -> Executable.Result { try Executable.run(args + ["--db", db]) }

    @Test("outbox lists what is not delivered (table, JSON, CSV), --all adds delivered ones; no patient data")
    func list() throws {
        let objects = try store.resultObjects(ofStudy: uid)
        try store.recordResultBuilt(sopInstanceUID: objects[0].sopInstanceUID, filePath: "/results/sr.dcm", at: Date())
        try store.recordResultBuildProblem(sopInstanceUID: objects[1].sopInstanceUID, reason: "no picture maker", at: Date())
        let sr = objects[0].deliveries[0]
        try store.recordDeliveryAttempt(entryID: sr.entryID, state: .pending, message: "association rejected", nextAttemptAt: Date() + 60, at: Date())

        let table = try run(["outbox"])
        #expect(table.status == 0, "\(table.stderr)")
        #expect(table.stdout.contains(sr.entryID) && table.stdout.contains(String(Study.shortID(for: uid).prefix(8))))
        #expect(table.stdout.contains("PACS") && table.stdout.contains("association rejected") && table.stdout.contains("not built")
                && table.stdout.contains("no picture maker"))
        #expect(!table.stdout.contains("DOE"), "the outbox names studies by ID only")

        let json = try run(["outbox", "--format", "json"])
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(entries.count == 2 && entries[0]["entry"] as? String == sr.entryID && entries[0]["attempts"] as? Int == 1)
        #expect(entries[0]["last_error"] as? String == "association rejected" && entries[1]["state"] as? String == "not built")

        let listed = try run(["list", "--format", "json"])
        let studies = try #require(try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]])
        #expect(studies.first?["delivery"] as? String == "failed", "a capture that cannot be built needs a look")
        let listTable = try run(["list"])
        #expect(listTable.stdout.split(separator: "\n").contains { $0.hasPrefix("! ") && $0.hasSuffix(" x") }, "\(listTable.stdout)")
        #expect(listTable.stdout.split(separator: "\n").allSatisfy { $0.count <= 80 })

        try store.recordDeliveryAttempt(entryID: sr.entryID, state: .delivered, message: nil, nextAttemptAt: nil, at: Date())
        let csv = try run(["outbox", "list", "--format", "csv"])
        #expect(csv.stdout.hasPrefix("entry,study,study_instance_uid,kind,") && csv.stdout.split(separator: "\r\n").count == 2, "\(csv.stdout)")
        #expect(try run(["outbox", "--all", "--format", "csv"]).stdout.split(separator: "\r\n").count == 3)
    }

    @Test("outbox retry and drop: by entry ID or prefix, --all-refused; dropping records who; a finished entry is refused with a reason")
    func retryAndDrop() throws {
        let objects = try store.resultObjects(ofStudy: uid)
        for o in objects { try store.recordResultBuilt(sopInstanceUID: o.sopInstanceUID, filePath: "/results/\(o.sopInstanceUID).dcm", at: Date()) }
        let (sr, sc) = (objects[0].deliveries[0], objects[1].deliveries[0])
        try store.recordDeliveryAttempt(entryID: sr.entryID, state: .refused, message: "0xA900", nextAttemptAt: nil, at: Date())
        try store.recordDeliveryAttempt(entryID: sc.entryID, state: .refused, message: "0xC000", nextAttemptAt: nil, at: Date())

        let one = try run(["outbox", "retry", String(sr.entryID.prefix(6))])
        #expect(one.status == 0 && one.stdout.contains("\(sr.entryID)") && one.stdout.contains("pending"), "\(one.stderr)")
        let all = try run(["outbox", "retry", "--all-refused"])
        #expect(all.status == 0 && all.stdout.contains(sc.entryID) && !all.stdout.contains(sr.entryID))
        #expect(try store.outboxEntries(includeDelivered: true).allSatisfy { $0.state == .pending })

        let drop = try run(["outbox", "drop", sc.entryID])
        #expect(drop.status == 0 && drop.stdout.contains("dropped by \(ReviewCommandTests.login)"), "\(drop.stderr)")
        let dropped = try #require(try store.outboxEntries(includeDelivered: true).first { $0.entryID == sc.entryID })
        #expect(dropped.state == .dropped && dropped.droppedBy == ReviewCommandTests.login && dropped.droppedAt != nil)

        let again = try run(["outbox", "retry", sc.entryID])
        #expect(again.status == 1 && again.stderr.contains("is dropped"), "\(again.stderr)")
        let unknown = try run(["outbox", "drop", "abcdef0123"])
        #expect(unknown.status == 1 && unknown.stderr.contains("no outbox entry matches 'abcdef0123'"))
        #expect(try run(["outbox", "retry"]).status == 2, "retry without entries is a usage error")
    }

    @Test("show lists the study's result objects with their delivery per destination; a PNG study says it has nothing to send")
    func show() throws {
        let objects = try store.resultObjects(ofStudy: uid)
        try store.recordResultBuilt(sopInstanceUID: objects[0].sopInstanceUID, filePath: "/results/sr.dcm", at: Date())
        try store.recordDeliveryAttempt(entryID: objects[0].deliveries[0].entryID, state: .delivered, message: nil, nextAttemptAt: nil, at: Date())
        let text = try run(["show", uid])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("Results in the PACS") && text.stdout.contains("SR report, series 9001 / instance 1: built"))
        #expect(text.stdout.contains("-> PACS [\(objects[0].deliveries[0].entryID)]: delivered"))
        #expect(text.stdout.contains("SC capture of \(uid).1") && text.stdout.contains("waiting to be built"))
        #expect(text.stdout.split(separator: "\n").allSatisfy { $0.count <= 80 })
        let json = try run(["show", uid, "--format", "json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let results = try #require(object["results"] as? [[String: Any]])
        #expect(results.map { $0["kind"] as? String } == ["sr", "sc"])

        let png = "1.2.826.0.1.3680043.8.498.20002"
        _ = try store.recordArrival(InstanceArrival(studyInstanceUID: png, sopInstanceUID: png + ".1", filePath: "/drop/a.png", eligible: true, source: .dropFolder))
        let flowed = try run(["show", png]).stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        #expect(flowed.contains("a drop-folder PNG study) have nothing to send back to a PACS"), "\(flowed)")
    }
}
