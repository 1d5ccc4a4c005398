import BoneTriage
import Foundation
import GRDB
import Testing

/// A study whose text could not be converted to UTF-8 keeps a note (migration v4), which `show` prints
/// and the JSON carries; UTF-8 text goes through JSON and CSV unchanged.
@Suite("Worklist: character set notes")
struct CharacterSetNoteTests {
    static let uid = "1.2.826.0.1.3680043.8.498.7171"

    static func arrival(_ sop: String, name: String, description: String? = nil, note: String?) -> InstanceArrival {
        var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: sop, filePath: "/spool/\(sop).dcm", eligible: true, source: .cstore)
        a.patientName = name
        a.studyDescription = description
        a.characterSetNote = note
        return a
    }

    @Test("a v3 database gets the note column in place and keeps its rows")
    func upgradeFromV3() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("v3.sqlite")
        let old = try DatabaseQueue(path: path)
        try WorklistSchema.migrator.migrate(old, upTo: "v3-triage-attempts")
        try old.write { db in
            try db.execute(sql: """
                INSERT INTO study (studyInstanceUID, shortID, source, firstReceivedAt, lastReceivedAt, imageCount, eligibleImageCount, state, priority)
                VALUES ('1.2.3.4', ?, 'cstore', '2026-01-01 10:00:00.000', '2026-01-01 10:00:00.000', 1, 1, 'pending', 0)
                """, arguments: [Study.shortID(for: "1.2.3.4")])
        }
        try old.close()
        let store = try SQLiteWorklist(path: path, create: false)
        #expect(try store.study(handle: "1.2.3.4").characterSetNote == nil)
        _ = try store.recordArrival(Self.arrival(Self.uid + ".1", name: "A^B", note: "kept as received"))
        #expect(try store.study(handle: Self.uid).characterSetNote == "kept as received")
    }

    @Test("a note comes with the first instance whose text the study takes; show prints it; JSON carries it; UTF-8 reaches JSON and CSV")
    func presentation() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        _ = try store.recordArrival(Self.arrival(Self.uid + ".1", name: "Gérard^Zoë", note: nil))
        #expect(try store.study(handle: Self.uid).characterSetNote == nil)
        // Its text is not taken (the name is already there): no note.
        _ = try store.recordArrival(Self.arrival(Self.uid + ".2", name: "Other", note: "not taken"))
        #expect(try store.study(handle: Self.uid).characterSetNote == nil)
        let note = "Specific Character Set (0008,0005) 'ISO_IR 999' is unknown or cannot be converted here; such text is kept as received"
        _ = try store.recordArrival(Self.arrival(Self.uid + ".3", name: "Other", description: "Epaule", note: note))
        _ = try store.recordArrival(Self.arrival(Self.uid + ".4", name: "Other", description: "x", note: "a later note"))
        let study = try store.study(handle: Self.uid)
        #expect(study.characterSetNote == note && study.patientName == "Gérard^Zoë")
        let detail = WorklistPresentation.detail(study, images: try store.images(ofStudy: study.studyInstanceUID), reviews: [])
        // show wraps long values to 80 columns under their label: read the note with its lines joined.
        #expect(detail.replacingOccurrences(of: "\n" + String(repeating: " ", count: 18), with: " ").contains("NOT CONVERTED: " + note), "\(detail)")
        #expect(WorklistPresentation.jsonObject(study)["character_set_note"] as? String == note)
        #expect(WorklistPresentation.json([WorklistPresentation.jsonObject(study)]).contains("Gérard^Zoë"))
        #expect(WorklistPresentation.csv([study]).contains("Gérard^Zoë"))
        var clean = study
        clean.characterSetNote = nil
        #expect(!WorklistPresentation.detail(clean, images: [], reviews: []).contains("NOT CONVERTED"))
        #expect(WorklistPresentation.jsonObject(clean)["character_set_note"] is NSNull)
    }
}
