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
}
