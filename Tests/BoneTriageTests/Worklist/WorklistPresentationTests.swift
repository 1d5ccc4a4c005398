import BoneTriage
import Foundation
import Testing

/// Parses RFC 4180 CSV (CRLF records, quoted fields with doubled quotes) to check what we write.
func parseCSV(_ text: String) -> [[String]] {
    var rows: [[String]] = [], row: [String] = [], field = "", quoted = false
    var chars = Array(text.unicodeScalars)[...]
    while let c = chars.popFirst() {
        if quoted {
            if c == "\"" {
                if chars.first == "\"" { field.unicodeScalars.append("\""); chars.removeFirst() } else { quoted = false }
            } else { field.unicodeScalars.append(c) }
        } else if c == "\"" { quoted = true }
        else if c == "," { row.append(field); field = "" }
        else if c == "\r" && chars.first == "\n" { chars.removeFirst(); row.append(field); rows.append(row); row = []; field = "" }
        else { field.unicodeScalars.append(c) }
    }
    if !field.isEmpty || !row.isEmpty { row.append(field); rows.append(row) }
    return rows
}

@Suite("Worklist output: CSV escaping, formula injection, the 80-column table, JSON keys")
struct WorklistPresentationTests {
    @Test("hostile fields survive a CSV round trip; formula prefixes are neutralised", arguments: [
        "plain", "a, b", "say \"hi\"", "line1\nline2", "cr\rinside", "Zoë Ørsted 王", "=1+1", "+41 79", "-2", "@SUM(A1)",
        "\tTAB", "\rCR", " leading space", WorklistFixture.hostileName, "",
    ])
    func csvField(_ value: String) throws {
        let line = WorklistPresentation.csvRecord([value, "next"])
        let parsed = parseCSV(line)
        #expect(parsed.count == 1 && parsed[0].count == 2, "\(line.debugDescription)")
        let cell = parsed.first?.first ?? ""
        if let first = value.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(first) {
            #expect(cell == "'" + value)
        } else {
            #expect(cell == value)
        }
        #expect(parsed.first?.last == "next")
    }

    @Test("an export of the seeded worklist parses back to one row per study with the header")
    func exportParses() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        let studies = try store.studies(matching: WorklistFilter())
        let text = WorklistPresentation.csv(studies)
        #expect(text.hasSuffix("\r\n"))
        let rows = parseCSV(text)
        #expect(rows.first == WorklistPresentation.csvHeader)
        #expect(rows.count == studies.count + 1)
        #expect(rows.dropFirst().allSatisfy { $0.count == WorklistPresentation.csvHeader.count })
        let nameColumn = try #require(WorklistPresentation.csvHeader.firstIndex(of: "patient_name"))
        #expect(rows.contains { $0[nameColumn] == "'" + WorklistFixture.hostileName })
        let partColumn = try #require(WorklistPresentation.csvHeader.firstIndex(of: "body_part"))
        #expect(rows.contains { $0[partColumn] == "'-SHOULDER" })
    }

    @Test("the table fits 80 columns, marks flagged studies, uses colour only when asked")
    func table() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        let studies = try store.studies(matching: WorklistFilter())
        let plain = WorklistPresentation.table(studies, colour: false)
        let lines = plain.split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.count == studies.count + 1)
        #expect(lines.allSatisfy { $0.count <= 80 }, "\(plain)")
        #expect(lines.filter { $0.hasPrefix("! ") }.count == 2)
        #expect(!plain.contains("\u{1B}["))
        #expect(!plain.contains("\n\n"), "a newline in a name must not break the table")
        #expect(WorklistPresentation.table(studies, colour: true).contains("\u{1B}[1;31m"))
        #expect(WorklistPresentation.table([], colour: false).contains("no studies"))

        // A name with a terminal escape sequence or newline cannot repaint the screen or break lines.
        var evil = studies[0]
        evil.patientName = "\u{1B}[2J\u{1B}[31mX^Y\nZ"
        evil.studyDescription = "desc\u{1B}]0;title\u{07}"
        #expect(!WorklistPresentation.table([evil], colour: false).contains("\u{1B}"))
        let detail = WorklistPresentation.detail(evil, images: [], reviews: [])
        #expect(!detail.contains("\u{1B}") && !detail.contains("\u{07}"))
    }

    @Test("JSON has the same documented keys for every study, nulls included")
    func jsonKeys() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        let keys = try store.studies(matching: WorklistFilter()).map { Set(WorklistPresentation.jsonObject($0).keys) }
        #expect(Set(keys).count == 1)
        #expect(keys.first?.isSuperset(of: ["id", "study_instance_uid", "probability", "verdict", "flagged", "review_state", "review_label", "changed_after_review"]) == true)
    }

    @Test("the table shows the accession number, the study date with its year, and an override's label marked as the radiologist's")
    func tableColumns() throws {
        var s = Study(studyInstanceUID: "1.2.3", source: .cstore, receivedAt: WorklistFixture.base)
        s.accessionNumber = "RX2026-0042"
        s.studyDate = "20261118"
        s.patientName = "DOE^JANE"
        s.bodyPart = "HUMERUS"
        s.state = .triaged
        s.verdict = .abnormal
        s.probability = 0.91
        let header = WorklistPresentation.tableHeader()
        #expect(header.contains("ACCESSION") && header.contains("STUDY DATE") && header.count <= 80)
        let flagged = WorklistPresentation.tableLine(s, id: "abcdef12", colour: false)
        #expect(flagged.hasPrefix("! abcdef12") && flagged.contains("2026-11-18") && flagged.contains("RX2026-00~") && flagged.contains("ABNORMAL"))
        s.accessionNumber = "RX-42"
        s.reviewState = .overridden
        s.reviewLabel = .normal
        let overridden = WorklistPresentation.tableLine(s, id: "abcdef12", colour: false)
        #expect(overridden.contains("normal*") && !overridden.contains("ABNORMAL") && overridden.contains("overridden") && overridden.contains("RX-42"))
        s.reviewState = .confirmed
        s.reviewLabel = .abnormal
        #expect(WorklistPresentation.tableLine(s, id: "abcdef12", colour: false).contains("ABNORMAL "))
        s.patientName = String(repeating: "LONGNAME", count: 5)
        s.reviewState = .overridden
        let long = WorklistPresentation.tableLine(s, id: "abcdef1234ab", colour: false)
        #expect(long.count <= 80 && long.contains("abcdef1234ab ") && long.hasSuffix("overridden"), "a long ID takes room from the name")
        #expect(WorklistPresentation.studyDate("20261118") == "2026-11-18" && WorklistPresentation.studyDate("2026") == "2026")
        #expect(WorklistPresentation.studyDate(nil) == "")
    }

    @Test("the summary line: counts with thousands separators, the rows shown, how to see everything")
    func summary() {
        #expect(WorklistPresentation.summary(WorklistCounts(flagged: 3057, others: 97000), shown: 40)
                == "3,057 flagged, 97,000 others; 1-40 shown; --all for everything")
        #expect(WorklistPresentation.summary(WorklistCounts(flagged: 2, others: 3), shown: 5) == "2 flagged, 3 others; all shown")
        #expect(WorklistPresentation.summary(WorklistCounts(flagged: 0, others: 1), shown: 1) == "0 flagged, 1 other; all shown")
    }

    @Test("a streamed JSON line has the keys and values of the JSON object, hostile text included")
    func jsonLine() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        try store.recordReview(studyInstanceUID: WorklistFixture.uids.flagged, by: ReviewerIdentity(login: "a"), action: .confirm, label: nil, note: nil, at: WorklistFixture.base)
        var studies = try store.studies(matching: WorklistFilter())
        studies[0].patientName = "tab\t quote\" back\\ bell\u{07} nul\u{0} Zoë 王 / end"
        for s in studies {
            let line = WorklistPresentation.jsonLine(s)
            #expect(!line.contains("\n"))
            let parsed = try JSONSerialization.jsonObject(with: Data(line.utf8))
            #expect(WorklistPresentation.json(parsed) == WorklistPresentation.json(WorklistPresentation.jsonObject(s)), "\(line)")
        }
        #expect(WorklistPresentation.iso(WorklistFixture.base) == WorklistFixture.base.formatted(.iso8601))
        #expect(WorklistPresentation.iso(Date(timeIntervalSince1970: 1_795_000_000.9)) == "2026-11-18T11:06:40Z", "to the second, truncated")
    }

    @Test("MURA records: reviewed drop-folder studies in MURA layout, labelled from the radiologist; the rest left out with the reason")
    func muraRecords() {
        var s = Study(studyInstanceUID: "2.25.1", source: .dropFolder, receivedAt: WorklistFixture.base)
        s.studyDescription = "valid/XR_humerus/patient11185/study1_positive"
        #expect(MuraExport.record(s) == .failure(.notReviewed))
        s.reviewState = .overridden
        s.reviewLabel = .normal
        #expect(MuraExport.record(s) == .success("XR_HUMERUS/patient11185/study1_negative/,0\r\n"))
        s.reviewState = .confirmed
        s.reviewLabel = .abnormal
        #expect(MuraExport.record(s) == .success("XR_HUMERUS/patient11185/study1_positive/,1\r\n"))
        s.changedAfterReview = true
        #expect(MuraExport.record(s) == .failure(.changedAfterReview))
        s.changedAfterReview = false
        s.studyDescription = "incoming/batch7"
        #expect(MuraExport.record(s) == .failure(.notMuraLayout))
        s.studyDescription = "XR_WRIST/patient1"
        #expect(MuraExport.record(s) == .failure(.notMuraLayout))
        var c = Study(studyInstanceUID: "1.2.3", source: .cstore, receivedAt: WorklistFixture.base)
        c.studyDescription = "XR_WRIST/patient1/study1"
        c.reviewState = .confirmed
        c.reviewLabel = .normal
        #expect(MuraExport.record(c) == .failure(.notMuraLayout))
    }
}
