import BoneTriage
import Foundation
import Testing

/// `show`, `confirm` and `override` through the real binary: a detail that fits 80 columns and finds
/// the image in the PACS, the login as the reviewer, several studies per command, and reviews refused
/// when the study is already reviewed.
@Suite("bonetriage show, confirm and override", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct ReviewCommandTests {
    let dir: TemporaryDirectory
    let db: String
    let store: SQLiteWorklist

    init() throws {
        dir = try TemporaryDirectory()
        db = dir.path("worklist.sqlite")
        store = try SQLiteWorklist(path: db, create: true)
        try WorklistFixture.seed(store)
    }

    /// The binary with `--db`, and these variables changed in its environment.
    func run(_ args: [String], environment: [String: String] = [:]) throws -> Executable.Result {
        try Executable.run(args + ["--db", db], environment: environment)
    }

    func short(_ uid: String) -> String { String(Study.shortID(for: uid).prefix(8)) }

    /// The login of this process's real uid: who the commands it runs must record.
    static var login: String {
        guard let entry = getpwuid(getuid()), let name = String(validatingCString: entry.pointee.pw_name) else { return "uid\(getuid())" }
        return name
    }

    // MARK: show

    @Test("show fits 80 columns for a study with long values, wraps without losing text, and formats dates with the year")
    func showFitsEightyColumns() throws {
        let uid = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901"  // 64 characters
        let longReason = "the image is a lateral view of the chest with a collimation so tight that the humerus is outside it, check positioning-and-send-again"
        var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: uid + ".1", seriesInstanceUID: uid + ".0", filePath: "/spool/a/1.dcm",
                                receivedAt: WorklistFixture.base, eligible: true, source: .cstore)
        a.patientName = "VERYLONGFAMILYNAMEOFSOMEONE-WITH-SEVERAL-PARTS^GIVENNAMETHATGOESONANDON^MIDDLE"
        a.patientID = "PATIENT-IDENTIFIER-0123456789-ABCDEFGHIJ"
        a.accessionNumber = "ACC-2026-000000123456"
        a.studyDate = "20261118"
        a.modality = "CR"
        a.bodyPart = "HUMERUS"
        a.studyDescription = String(repeating: "Right humerus two views after a fall from a ladder, ", count: 3)
        a.callingAETitle = "A-VERY-LONG-AE-T"
        a.peerAddress = "fd00:1234:5678:9abc:def0:1234:5678:9abc"
        a.seriesNumber = 3
        a.instanceNumber = 12
        a.viewPosition = "PA"
        a.laterality = "L"
        _ = try store.recordArrival(a)
        var b = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: uid + ".2", filePath: "/spool/a/2.png",
                                receivedAt: WorklistFixture.base.addingTimeInterval(90_000), eligible: false, source: .cstore)
        b.eligibilityReason = longReason
        b.fileName = "image-" + String(repeating: "x", count: 100) + ".png"
        _ = try store.recordArrival(b)
        try store.recordTriage(TriageResult(studyInstanceUID: uid, imageProbabilities: [uid + ".1": 0.91], threshold: 0.5,
                                            modelID: "humerus-inception-v3-finetuned-on-mura-and-local-data-2026-11", modelHash: "abc",
                                            triagedAt: WorklistFixture.base.addingTimeInterval(100_000)))
        try store.recordReview(studyInstanceUID: uid, by: ReviewerIdentity(login: "alice", statedName: "Dr Smith of the musculoskeletal team"),
                               action: .confirm, label: nil, note: String(repeating: "displaced fracture of the surgical neck; ", count: 4),
                               at: WorklistFixture.base.addingTimeInterval(110_000))

        let shown = try run(["show", uid])
        #expect(shown.status == 0, "\(shown.stderr)")
        let lines = shown.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        for line in lines { #expect(line.count <= 80, "\(line.count) columns: \(line)") }
        // Nothing is lost: the UID and the reason read whole once the wrapped lines are joined.
        let joined = shown.stdout.replacingOccurrences(of: "\n" + String(repeating: " ", count: 18), with: "")
        #expect(joined.contains("Study UID         " + uid), "\(shown.stdout)")
        let flowed = shown.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
        #expect(flowed.contains(longReason), "\(shown.stdout)")
        #expect(shown.stdout.contains("\\\n"), "a name too long for a line is cut with a mark: \(shown.stdout)")
        #expect(flowed.replacingOccurrences(of: "\\ ", with: "").contains(b.fileName ?? "-"), "\(shown.stdout)")
        #expect(shown.stdout.contains("Study date        2026-11-18"))
        #expect(shown.stdout.contains("Received          \(Self.local(WorklistFixture.base, "yyyy-MM-dd HH:mm:ss")) to "
                                      + Self.local(WorklistFixture.base.addingTimeInterval(90_000), "yyyy-MM-dd HH:mm:ss")))
        #expect(shown.stdout.contains("Triaged           " + Self.local(WorklistFixture.base.addingTimeInterval(100_000), "yyyy-MM-dd HH:mm:ss")))
        #expect(shown.stdout.contains("  0.910  series 3 / instance 12  view PA, left"), "\(shown.stdout)")
        #expect(shown.stdout.contains("  n/a    image-xxx"), "\(shown.stdout)")
        #expect(flowed.contains("alice (for Dr Smith of the musculoskeletal team): confirmed abnormal"), "\(shown.stdout)")

        let json = try run(["show", uid, "--format", "json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let images = try #require(object["images"] as? [[String: Any]])
        #expect(images.first?["series_number"] as? Int == 3 && images.first?["instance_number"] as? Int == 12)
        #expect(images.first?["view_position"] as? String == "PA" && images.first?["laterality"] as? String == "L")
        #expect(images.last?["file_name"] as? String == b.fileName)
        #expect((object["reviews"] as? [[String: Any]])?.first?["stated_reviewer"] as? String == "Dr Smith of the musculoskeletal team")
    }

    static func local(_ date: Date, _ format: String) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = .current
        f.dateFormat = format
        return f.string(from: date)
    }

    // MARK: Reviews

    @Test("the reviewer is the login of the real uid, whatever $USER says; --reviewer is recorded beside it, never instead")
    func reviewerIsTheLogin() throws {
        let id = short(WorklistFixture.uids.flagged)
        let spoofed = ["USER": "mallory", "LOGNAME": "mallory"]
        let confirm = try run(["confirm", id, "--reviewer", "Dr Smith"], environment: spoofed)
        #expect(confirm.status == 0, "\(confirm.stderr)")
        #expect(confirm.stdout.contains("reviewer \(Self.login) (for Dr Smith)"), "\(confirm.stdout)")
        let override = try run(["override", short(WorklistFixture.uids.normal), "--label", "abnormal"], environment: spoofed)
        #expect(override.status == 0, "\(override.stderr)")
        let flagged = try store.reviews(ofStudy: WorklistFixture.uids.flagged)
        #expect(flagged.map(\.reviewer) == [Self.login] && flagged.map(\.statedReviewer) == ["Dr Smith"])
        let normal = try store.reviews(ofStudy: WorklistFixture.uids.normal)
        #expect(normal.map(\.reviewer) == [Self.login] && normal.map(\.statedReviewer) == [nil])
        #expect(!(flagged + normal).contains { $0.reviewer == "mallory" || $0.statedReviewer == "mallory" })
        let shown = try run(["show", id])
        #expect(shown.stdout.contains("\(Self.login) (for Dr Smith): confirmed abnormal"), "\(shown.stdout)")

        let empty = try run(["confirm", short(WorklistFixture.uids.hostile), "--reviewer", "  "])
        #expect(empty.status == 2 && empty.stderr.contains("--reviewer"), "\(empty.stderr)")
        let control = try run(["confirm", short(WorklistFixture.uids.hostile), "--reviewer", "Dr\u{1B}[2JSmith"])
        #expect(control.status == 2 && control.stderr.contains("control character"), "\(control.stderr)")
        #expect(try store.reviews(ofStudy: WorklistFixture.uids.hostile).isEmpty)
    }

    @Test("several studies per command: all resolved first (an unknown or ambiguous one records nothing), then one line per study")
    func severalStudies() throws {
        let u = WorklistFixture.uids
        func trail() throws -> Int { try [u.flagged, u.normal, u.hostile].reduce(0) { $0 + (try store.reviews(ofStudy: $1).count) } }
        let unknown = try run(["confirm", short(u.flagged), "ffffffff", short(u.hostile)])
        #expect(unknown.status == 1 && unknown.stderr.contains("ffffffff") && unknown.stdout.isEmpty, "\(unknown.stderr)")
        let ambiguous = try run(["confirm", short(u.flagged), "1.2.826.0.1"])
        #expect(ambiguous.status == 1 && ambiguous.stderr.contains("matches 5 studies"), "\(ambiguous.stderr)")
        let notHex = try run(["override", short(u.flagged), "zz!", "--label", "normal"])
        #expect(notHex.status == 1 && notHex.stderr.contains("zz!"), "\(notHex.stderr)")
        let refused = try run(["confirm", short(u.flagged), short(u.pending)])
        #expect(refused.status == 1 && refused.stderr.contains("no model verdict"), "\(refused.stderr)")
        #expect(try trail() == 0, "nothing recorded by a refused command")

        let confirmed = try run(["confirm", short(u.flagged), short(u.hostile), short(u.flagged), "--note", "both fractures"])
        #expect(confirmed.status == 0, "\(confirmed.stderr)")
        let lines = confirmed.stdout.split(separator: "\n")
        #expect(lines == ["confirmed \(short(u.flagged)) as abnormal (reviewer \(Self.login))",
                          "confirmed \(short(u.hostile)) as abnormal (reviewer \(Self.login))"], "one line per study, each once: \(confirmed.stdout)")
        let overridden = try run(["override", short(u.normal), short(u.pending), "--label", "abnormal"])
        #expect(overridden.status == 0, "\(overridden.stderr)")
        #expect(overridden.stdout.split(separator: "\n") == [
            "overrode \(short(u.normal)): model normal, label abnormal (reviewer \(Self.login))",
            "overrode \(short(u.pending)): model had no verdict, label abnormal (reviewer \(Self.login))",
        ], "\(overridden.stdout)")
        #expect(try store.reviews(ofStudy: u.hostile).first?.note == "both fractures")
        #expect(try trail() == 3)
        let usage = try run(["confirm"])
        #expect(usage.status == 2)
    }

    @Test("a study already reviewed is not confirmed again: exit 1, who, when, which label, and what to do; changed after review, it is")
    func alreadyReviewed() throws {
        let u = WorklistFixture.uids
        let id = short(u.normal)
        #expect(try run(["confirm", id, "--reviewer", "Dr Smith"]).status == 0)
        let when = try #require(try store.reviews(ofStudy: u.normal).first?.reviewedAt)
        let again = try run(["confirm", id])
        #expect(again.status == 1, "\(again.stdout)")
        #expect(again.stderr.contains("confirmed") && again.stderr.contains("normal") && again.stderr.contains("\(Self.login) (for Dr Smith)"), "\(again.stderr)")
        #expect(again.stderr.contains(Self.local(when, "yyyy-MM-dd")) && again.stderr.contains(Self.local(when, "HH:mm")), "\(again.stderr)")
        #expect(again.stderr.contains("bonetriage override") && again.stderr.contains("--label abnormal"), "\(again.stderr)")
        let same = try run(["override", id, "--label", "normal"])
        #expect(same.status == 1 && same.stderr.contains("already"), "\(same.stderr)")
        // Confirming it with another, not yet reviewed, study records neither.
        let mixed = try run(["confirm", short(u.flagged), id])
        #expect(mixed.status == 1)
        #expect(try store.reviews(ofStudy: u.flagged).isEmpty && store.reviews(ofStudy: u.normal).count == 1)

        let sops = try WorklistFixture.add(store, study: u.normal, images: 4, at: 1000)
        try WorklistFixture.triage(store, study: u.normal, sops: sops, probabilities: [0.1, 0.1, 0.1, 0.1])
        let afterChange = try run(["confirm", id])
        #expect(afterChange.status == 0, "\(afterChange.stderr)")
        #expect(try store.reviews(ofStudy: u.normal).count == 2)
    }
}
