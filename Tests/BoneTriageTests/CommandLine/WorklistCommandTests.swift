import BoneTriage
import Foundation
import Testing

/// The radiologist's commands through the real binary, against a seeded worklist.
@Suite("bonetriage list, show, confirm, override, export", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct WorklistCommandTests {
    let dir: TemporaryDirectory
    let db: String
    let store: SQLiteWorklist

    init() throws {
        dir = try TemporaryDirectory()
        db = dir.path("worklist.sqlite")
        store = try SQLiteWorklist(path: db, create: true)
        try WorklistFixture.seed(store)
    }

    func run(_ args: [String]) throws -> Executable.Result { try Executable.run(args + ["--db", db]) }
    func short(_ uid: String) -> String { String(Study.shortID(for: uid).prefix(8)) }
    func reviewCount() throws -> Int {
        try store.studies(matching: WorklistFilter()).reduce(0) { $0 + (try store.reviews(ofStudy: $1.studyInstanceUID).count) }
    }

    @Test("list: the table, JSON and CSV, with filters")
    func list() throws {
        let table = try run(["list"])
        #expect(table.status == 0, "\(table.stderr)")
        let lines = table.stdout.split(separator: "\n")
        #expect(lines.count == 7 && lines.allSatisfy { $0.count <= 80 })
        #expect(lines.last == "2 flagged, 3 others; all shown")
        #expect(lines[1].hasPrefix("! \(short(WorklistFixture.uids.flagged))"))
        #expect(!table.stdout.contains("\u{1B}["), "no colour when stdout is not a terminal")

        let json = try run(["list", "--format", "json", "--flagged"])
        let array = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(array.map { $0["study_instance_uid"] as? String } == [WorklistFixture.uids.flagged, WorklistFixture.uids.hostile])
        #expect(array.allSatisfy { $0["flagged"] as? Bool == true })

        let csv = try run(["list", "--format", "csv", "--state", "pending", "--state", "not_applicable"])
        #expect(parseCSV(csv.stdout).count == 3)
        let bodyPart = try run(["list", "--format", "json", "--body-part", "chest"])
        #expect((try JSONSerialization.jsonObject(with: Data(bodyPart.stdout.utf8)) as? [Any])?.count == 1)
        let since = try run(["list", "--format", "json", "--since", "2030-01-01"])
        #expect(since.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[\n\n]" || since.stdout.contains("[]"))
    }

    @Test("show: text and JSON with images, model and review history")
    func show() throws {
        let uid = WorklistFixture.uids.flagged
        let text = try run(["show", short(uid)])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains(uid) && text.stdout.contains("ABNORMAL") && text.stdout.contains("humerus-v1"))
        #expect(text.stdout.contains("0.900") && text.stdout.contains("0.700"))
        let json = try run(["show", uid, "--format", "json"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect((object["images"] as? [Any])?.count == 2 && (object["reviews"] as? [Any])?.count == 0)
        #expect((object["study"] as? [String: Any])?["verdict"] as? String == "abnormal")
    }

    @Test("confirm and override record reviews with the reviewer and note; the history shows both")
    func reviews() throws {
        let id = short(WorklistFixture.uids.flagged)
        let confirm = try run(["confirm", id, "--reviewer", "alice", "--note", "displaced fracture"])
        #expect(confirm.status == 0 && confirm.stdout.contains("confirmed \(id) as abnormal"), "\(confirm.stderr)")
        let override = try run(["override", id, "--label", "normal", "--reviewer", "bob"])
        #expect(override.status == 0, "\(override.stderr)")
        let again = try run(["override", id, "--label", "abnormal"])  // the login alone
        #expect(again.status == 0, "\(again.stderr)")
        let s = try store.study(handle: id)
        let trail = try store.reviews(ofStudy: s.studyInstanceUID)
        #expect(trail.map(\.statedReviewer) == ["alice", "bob", nil] && !trail[2].reviewer.isEmpty)
        #expect(trail[0].note == "displaced fracture" && trail[1].label == .normal)
        let shown = try run(["show", id])
        #expect(shown.stdout.contains("(for alice)") && shown.stdout.contains("(for bob): overrode abnormal -> normal"))
        let reviewed = try run(["list", "--format", "json", "--review", "overridden"])
        #expect(reviewed.stdout.contains(WorklistFixture.uids.flagged))
    }

    @Test("errors: exit 1 for unknown, ambiguous or missing; exit 2 for usage; nothing changes")
    func errors() throws {
        let before = try reviewCount()
        let unknown = try run(["confirm", "ffffffff"])
        #expect(unknown.status == 1 && unknown.stderr.contains("bonetriage list"))
        let ambiguous = try run(["show", "1.2.826.0.1"])
        #expect(ambiguous.status == 1 && ambiguous.stderr.contains("matches 5 studies"))
        let nothing = try run(["confirm", short(WorklistFixture.uids.pending)])
        #expect(nothing.status == 1 && nothing.stderr.contains("override"))
        let badLabel = try run(["override", short(WorklistFixture.uids.flagged), "--label", "maybe"])
        #expect(badLabel.status == 2)
        let badDate = try run(["list", "--since", "someday"])
        #expect(badDate.status == 2 && badDate.stderr.contains("YYYY-MM-DD"))
        let badState = try run(["list", "--state", "done"])
        #expect(badState.status == 2)
        let noDB = try Executable.run(["list", "--db", dir.path("absent.sqlite")])
        #expect(noDB.status == 1 && noDB.stderr.contains("no worklist database"))
        #expect(!FileManager.default.fileExists(atPath: dir.path("absent.sqlite")))
        let noArgs = try run(["override"])
        #expect(noArgs.status == 2)
        #expect(try reviewCount() == before)
    }

    @Test("export: CSV to a file and to stdout, MURA form from reviewed studies, unwritable path refused")
    func export() throws {
        let out = dir.path("worklist.csv")
        let written = try run(["export", "--out", out])
        #expect(written.status == 0, "\(written.stderr)")
        let rows = parseCSV(try String(contentsOfFile: out, encoding: .utf8))
        #expect(rows.count == 6 && rows[0] == WorklistPresentation.csvHeader)
        let toStdout = try run(["export", "--out", "-", "--flagged"])
        #expect(parseCSV(toStdout.stdout).count == 3)

        _ = try run(["confirm", short(WorklistFixture.uids.flagged), "--reviewer", "a"])
        _ = try run(["override", short(WorklistFixture.uids.normal), "--label", "abnormal", "--reviewer", "a"])
        let mura = try run(["export", "--out", "-", "--mura"])
        #expect(mura.status == 0 && mura.stdout.isEmpty, "C-STORE studies have no MURA path")
        #expect(mura.stderr.contains("wrote 0 studies in MURA form") && mura.stderr.contains("left out 5: not in MURA layout"))

        let unwritable = try run(["export", "--out", "/nonexistent-folder/x.csv"])
        #expect(unwritable.status == 1 && unwritable.stderr.contains("cannot write /nonexistent-folder/x.csv"))
        #expect(!FileManager.default.fileExists(atPath: "/nonexistent-folder/x.csv"))
    }

    @Test("--config names the database; a broken config is refused with the key and the reason")
    func config() throws {
        let good = dir.path("bt.toml")
        try "[worklist]\ndatabase = \"\(db)\"\n".write(toFile: good, atomically: true, encoding: .utf8)
        let listed = try Executable.run(["list", "--config", good])
        #expect(listed.status == 0 && listed.stdout.contains(short(WorklistFixture.uids.flagged)), "\(listed.stderr)")
        let bad = dir.path("bad.toml")
        try "[worklist]\ndatabse = \"/x\"\ndatabase = 3\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let refused = try Executable.run(["list", "--config", bad])
        #expect(refused.status == 1 && refused.stderr.contains("databse: unknown key") && refused.stderr.contains("database = 3"))
    }
}
