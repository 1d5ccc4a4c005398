import BoneTriage
import Foundation
import Testing

/// `list` and `export` at a few hundred studies through the real binary: pages, the summary line,
/// streaming JSON and CSV, finding a study, and export's file handling.
@Suite("bonetriage list and export: pages, finding a study, export files", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct ListCommandTests {
    let dir: TemporaryDirectory
    let db: String
    let store: SQLiteWorklist
    static let studies = 300

    /// 300 studies over 30 days: every 10th abnormal (30 flagged), accession numbers ACC0000-ACC0299
    /// (ACC0007 given twice), patients by threes, every 5th from the drop folder in MURA layout.
    init() throws {
        dir = try TemporaryDirectory()
        db = dir.path("worklist.sqlite")
        store = try SQLiteWorklist(path: db, create: true)
        let now = Date()
        var arrivals: [InstanceArrival] = []
        for i in 0..<Self.studies {
            let uid = "1.2.826.0.1.3680043.9.\(i)"
            let mura = i % 5 == 0
            var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: uid + ".1", filePath: "/spool/\(uid)/1", receivedAt: now.addingTimeInterval(-Double(i) * 8640),
                                    eligible: true, source: mura ? .dropFolder : .cstore)
            if mura {
                a.studyDescription = "train/XR_WRIST/patient\(1000 + i)/study1_positive"
                a.patientID = "patient\(1000 + i)"
            } else {
                a.accessionNumber = i == 8 ? "ACC0007" : String(format: "ACC%04d", i)
                a.patientID = "PID\(i / 3)"
                a.patientName = i / 3 == 7 ? "GARCIA^ANA" : "DOE^JOHN\(i)"
                a.studyDate = "20261118"
            }
            a.bodyPart = "WRIST"
            arrivals.append(a)
        }
        _ = try store.recordArrivals(arrivals)
        for i in 0..<Self.studies {
            let uid = "1.2.826.0.1.3680043.9.\(i)"
            try store.recordTriage(TriageResult(studyInstanceUID: uid, imageProbabilities: [uid + ".1": i % 10 == 0 ? 0.9 : 0.1], threshold: 0.5, modelID: "m", modelHash: "h"))
        }
    }

    func run(_ args: [String]) throws -> Executable.Result { try Executable.run(args + ["--db", db]) }

    @Test("the table: a first page of 40 when not on a terminal, --limit, --all, and the summary line with the counts of the filter")
    func pages() throws {
        let page = try run(["list"])
        #expect(page.status == 0, "\(page.stderr)")
        let lines = page.stdout.split(separator: "\n")
        #expect(lines.count == 1 + 40 + 1 && lines.allSatisfy { $0.count <= 80 })
        #expect(lines.last == "30 flagged, 270 others; 1-40 shown; --all for everything")
        #expect(lines.dropFirst().prefix(30).allSatisfy { $0.hasPrefix("! ") } && !lines[31].hasPrefix("! "), "flagged first")
        let limited = try run(["list", "--limit", "5", "--flagged"])
        #expect(limited.stdout.split(separator: "\n").count == 7)
        #expect(limited.stdout.hasSuffix("30 flagged, 0 others; 1-5 shown; --all for everything\n"))
        let all = try run(["list", "--all"])
        #expect(all.stdout.split(separator: "\n").count == 1 + 300 + 1, "no pager when not a terminal")
        #expect(all.stdout.hasSuffix("30 flagged, 270 others; all shown\n"))
        let conflict = try run(["list", "--all", "--limit", "3"])
        #expect(conflict.status == 2 && conflict.stderr.contains("--all and --limit"))
        let byArrival = try run(["list", "--sort", "arrival", "--limit", "3"])
        #expect(byArrival.stdout.split(separator: "\n")[1].contains(String(Study.shortID(for: "1.2.826.0.1.3680043.9.0").prefix(8))))
    }

    @Test("JSON streams one valid array with the documented keys; CSV one row per study; both whole without --limit")
    func formats() throws {
        let json = try run(["list", "--format", "json"])
        #expect(json.status == 0, "\(json.stderr)")
        let array = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(array.count == 300)
        let expected = Set(WorklistPresentation.jsonObject(try store.study(studyInstanceUID: "1.2.826.0.1.3680043.9.0")).keys)
        #expect(array.allSatisfy { Set($0.keys) == expected })
        #expect(array.prefix(30).allSatisfy { $0["flagged"] as? Bool == true })
        let empty = try run(["list", "--format", "json", "--accession", "NONE"])
        #expect((try JSONSerialization.jsonObject(with: Data(empty.stdout.utf8)) as? [Any])?.isEmpty == true)
        let csv = try run(["list", "--format", "csv"])
        #expect(parseCSV(csv.stdout).count == 301)
    }

    @Test("finding a study: --accession, --patient by ID or name, show/confirm by accession number, an ambiguous accession, a non-hex ID")
    func finding() throws {
        let acc = try run(["list", "--format", "json", "--accession", "ACC0042"])
        #expect((try JSONSerialization.jsonObject(with: Data(acc.stdout.utf8)) as? [[String: Any]])?.map { $0["study_instance_uid"] as? String } == ["1.2.826.0.1.3680043.9.42"])
        let table = try run(["list", "--accession", "ACC0042"])
        #expect(table.stdout.contains("ACC0042") && table.stdout.contains("2026-11-18"))
        let byID = try run(["list", "--format", "json", "--patient", "PID7"])
        #expect((try JSONSerialization.jsonObject(with: Data(byID.stdout.utf8)) as? [Any])?.count == 3)
        let byName = try run(["list", "--format", "json", "--patient", "garcia^a"])
        #expect((try JSONSerialization.jsonObject(with: Data(byName.stdout.utf8)) as? [Any])?.count == 3)
        let show = try run(["show", "ACC0042"])
        #expect(show.status == 0 && show.stdout.contains("1.2.826.0.1.3680043.9.42"), "\(show.stderr)")
        let confirm = try run(["confirm", "ACC0041", "--reviewer", "alice"])
        #expect(confirm.status == 0, "\(confirm.stderr)")
        #expect(try store.study(studyInstanceUID: "1.2.826.0.1.3680043.9.41").reviewState == .confirmed)
        let ambiguous = try run(["show", "ACC0007"])
        #expect(ambiguous.status == 1 && ambiguous.stderr.contains("belongs to 2 studies"))
        #expect(ambiguous.stderr.contains(Study.shortID(for: "1.2.826.0.1.3680043.9.7")))
        let nonsense = try run(["show", "zz-not-an-id"])
        #expect(nonsense.status == 1 && nonsense.stderr.contains("hexadecimal") && nonsense.stderr.contains("accession number"))
    }

    @Test("--since and --until: today, yesterday, spans and local times; anything else exits 2 saying what is accepted")
    func times() throws {
        func count(_ args: [String]) throws -> Int? {
            let r = try run(["list", "--format", "json"] + args)
            return (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [Any])?.count
        }
        #expect(try count(["--since", "25h"]) == 11, "one study every 2.4 h")
        #expect(try count(["--since", "3d", "--until", "1d"]) == 20)
        #expect(try count(["--since", "2000-01-01T08:00"]) == 300)
        let todayStart = Calendar.current.startOfDay(for: Date())
        let sinceToday = (0..<300).filter { Date().addingTimeInterval(-Double($0) * 8640) >= todayStart }.count
        let today = try count(["--since", "today"]) ?? -1
        #expect(abs(today - sinceToday) <= 1)
        let bad = try run(["list", "--since", "last tuesday"])
        #expect(bad.status == 2 && bad.stderr.contains("--since 'last tuesday' is not a time") && bad.stderr.contains("yesterday"))
    }

    @Test("export: streams the CSV to a new file with mode 0600 whatever the umask; refuses to replace a file without --force")
    func exportFiles() throws {
        let out = dir.path("e.csv")
        let binary = try #require(Executable.url?.path)
        let first = try Executable.shell("umask 000; exec '\(binary)' export --out '\(out)' --db '\(db)'")
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stderr.contains("wrote 300 studies to \(out)"))
        var info = stat()
        #expect(stat(out, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(parseCSV(try String(contentsOfFile: out, encoding: .utf8)).count == 301)
        try "keep me".write(toFile: out, atomically: false, encoding: .utf8)
        let refused = try run(["export", "--out", out])
        #expect(refused.status == 1 && refused.stderr.contains("already exists") && refused.stderr.contains("--force"))
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "keep me")
        let forced = try run(["export", "--out", out, "--force", "--flagged"])
        let replaced = try String(contentsOfFile: out, encoding: .utf8)
        #expect(forced.status == 0 && parseCSV(replaced).count == 31)
        #expect(stat(out, &info) == 0 && info.st_mode & 0o777 == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.url.path).filter { $0.hasPrefix(".") }.isEmpty, "no temporary file left")
    }

    @Test("export --mura: reviewed drop-folder studies in MURA layout, labelled by the radiologist; stderr counts what was left out and why")
    func exportMura() throws {
        try store.recordReview(studyInstanceUID: "1.2.826.0.1.3680043.9.0", by: ReviewerIdentity(login: "a"), action: .override, label: .normal, note: nil, at: Date())
        try store.recordReview(studyInstanceUID: "1.2.826.0.1.3680043.9.5", by: ReviewerIdentity(login: "a"), action: .confirm, label: nil, note: nil, at: Date())
        try store.recordReview(studyInstanceUID: "1.2.826.0.1.3680043.9.1", by: ReviewerIdentity(login: "a"), action: .confirm, label: nil, note: nil, at: Date())
        let mura = try run(["export", "--out", "-", "--mura"])
        #expect(mura.status == 0, "\(mura.stderr)")
        #expect(Set(parseCSV(mura.stdout).map { $0.joined(separator: ",") }) == ["XR_WRIST/patient1000/study1_negative/,0", "XR_WRIST/patient1005/study1_negative/,0"])
        #expect(mura.stderr.contains("wrote 2 studies in MURA form"))
        #expect(mura.stderr.contains("left out 58: not reviewed"))
        #expect(mura.stderr.contains("left out 240: not in MURA layout"))
        #expect(mura.stderr.contains(String(Study.shortID(for: "1.2.826.0.1.3680043.9.1").prefix(8))) || mura.stderr.contains(", ..."))
    }
}
