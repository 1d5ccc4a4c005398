import Foundation

/// How the worklist looks to a person (table, detail) and to programs (JSON, CSV). The JSON keys and
/// CSV columns are a stable interface, documented in the README.
public enum WorklistPresentation {
    // MARK: Values

    /// UTC, to the second: 2026-11-26T18:44:09Z (by hand: a listing formats 300,000 of them).
    public static func iso(_ date: Date?) -> String? {
        guard let date else { return nil }
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var t = tm()
        guard gmtime_r(&seconds, &t) != nil else { return date.formatted(.iso8601) }
        let year = Int(t.tm_year) + 1900
        guard (0...9999).contains(year) else { return date.formatted(.iso8601) }
        // yyyy-MM-ddTHH:mm:ssZ in 20 bytes, without building a string per field.
        var bytes = [UInt8](repeating: 0, count: 20)
        func put(_ value: Int, _ at: Int, _ width: Int) {
            var v = value
            for i in stride(from: at + width - 1, through: at, by: -1) { bytes[i] = UInt8(48 + v % 10); v /= 10 }
        }
        put(year, 0, 4); bytes[4] = 45; put(Int(t.tm_mon) + 1, 5, 2); bytes[7] = 45; put(Int(t.tm_mday), 8, 2); bytes[10] = 84
        put(Int(t.tm_hour), 11, 2); bytes[13] = 58; put(Int(t.tm_min), 14, 2); bytes[16] = 58; put(Int(t.tm_sec), 17, 2); bytes[19] = 90
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A day as a DICOM date (DA, local): 20261118.
    public static func studyDateDA(_ date: Date) -> String { String(StudyRules.arrivalDay(date)) }

    /// A DICOM date (DA, 20261118) as 2026-11-18; anything else as it is.
    public static func studyDate(_ da: String?) -> String {
        guard let da else { return "" }
        let digits = trimmed(da[...])
        guard digits.count == 8, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return da }
        return "\(digits.prefix(4))-\(digits.dropFirst(4).prefix(2))-\(digits.suffix(2))"
    }

    static func local(_ date: Date, _ format: String) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = .current
        f.dateFormat = format
        return f.string(from: date)
    }

    static func probability(_ p: Double?) -> String { p.map { fixed($0, digits: 3) } ?? "" }

    /// A probability (0 to 1) with `digits` decimals, as "%.<digits>f" prints it, without Foundation's formatter.
    static func fixed(_ value: Double, digits: Int) -> String {
        guard value.isFinite, value >= 0, value < 1e9 else { return String(format: "%.\(digits)f", value) }
        var scale = 1
        for _ in 0..<digits { scale *= 10 }
        let scaled = Int((value * Double(scale)).rounded(.toNearestOrEven))
        let fraction = String(scaled % scale)
        return "\(scaled / scale)." + String(repeating: "0", count: digits - fraction.count) + fraction
    }

    /// The model's verdict when triaged, else the state.
    static func outcome(_ s: Study) -> String {
        switch s.state {
        case .triaged: return s.verdict == .abnormal ? "ABNORMAL" : "normal"
        case .notApplicable: return "n/a"
        default: return s.state.rawValue
        }
    }

    static func review(_ s: Study) -> String { s.changedAfterReview ? "changed" : s.reviewState.rawValue }

    /// What the table shows as the study's finding: the radiologist's label when they overrode the
    /// model, marked with a "*", else the model's verdict (or the state).
    static func finding(_ s: Study) -> String {
        if s.reviewState == .overridden, let label = s.reviewLabel { return (label == .abnormal ? "ABNORMAL" : "normal") + "*" }
        return outcome(s)
    }

    // MARK: JSON

    public static func jsonObject(_ s: Study) -> [String: Any] {
        func v(_ x: Any?) -> Any { x ?? NSNull() }
        return [
            "id": s.shortID,
            "study_instance_uid": s.studyInstanceUID,
            "patient_id": v(s.patientID),
            "patient_name": v(s.patientName),
            "accession_number": v(s.accessionNumber),
            "study_date": v(s.studyDate),
            "modality": v(s.modality),
            "body_part": v(s.bodyPart),
            "description": v(s.studyDescription),
            "source": s.source.rawValue,
            "calling_ae_title": v(s.callingAETitle),
            "peer_address": v(s.peerAddress),
            "first_received_at": v(iso(s.firstReceivedAt)),
            "last_received_at": v(iso(s.lastReceivedAt)),
            "images": s.imageCount,
            "eligible_images": s.eligibleImageCount,
            "state": s.state.rawValue,
            "state_reason": v(s.stateReason),
            "probability": v(s.probability),
            "verdict": v(s.verdict?.rawValue),
            "threshold": v(s.threshold),
            "model_id": v(s.modelID),
            "model_hash": v(s.modelHash),
            "triaged_at": v(iso(s.triagedAt)),
            "priority": s.priority,
            "flagged": s.isFlagged,
            "review_state": s.reviewState.rawValue,
            "review_label": v(s.reviewLabel?.rawValue),
            "reviewed_at": v(iso(s.reviewedAt)),
            "changed_after_review": s.changedAfterReview,
            "character_set_note": v(s.characterSetNote),
            "heatmaps": s.heatmapCount,
            "delivery": v(s.deliveryMark?.rawValue),
        ]
    }

    public static func jsonObject(_ i: StudyImage) -> [String: Any] {
        [
            "sop_instance_uid": i.sopInstanceUID,
            "series_instance_uid": i.seriesInstanceUID ?? NSNull(),
            "file_path": i.filePath,
            "received_at": iso(i.receivedAt) ?? NSNull(),
            "eligible": i.eligible,
            "eligibility_reason": i.eligibilityReason ?? NSNull(),
            "probability": i.probability ?? NSNull(),
            "file_removed_at": iso(i.fileRemovedAt) ?? NSNull(),
        ]
    }

    public static func jsonObject(_ r: Review) -> [String: Any] {
        [
            "reviewer": r.reviewer,
            "reviewed_at": iso(r.reviewedAt) ?? NSNull(),
            "action": r.action.rawValue,
            "from_verdict": r.fromVerdict?.rawValue ?? NSNull(),
            "label": r.label.rawValue,
            "note": r.note ?? NSNull(),
        ]
    }

    /// One study as a JSON object on one line, with the keys and values of `jsonObject` (sorted keys),
    /// written by hand: `list --format json` streams 100,000 of them.
    public static func jsonLine(_ s: Study) -> String {
        var out = "{"
        out.reserveCapacity(1024)
        var first = true
        func key(_ k: StaticString) {
            out += first ? "\"" : ",\""
            out += k.description
            out += "\":"
            first = false
        }
        func str(_ k: StaticString, _ v: String?) { key(k); if let v { appendJSONString(v, to: &out) } else { out += "null" } }
        func num(_ k: StaticString, _ v: Double?) { key(k); out += v.map { $0.isFinite ? "\($0)" : "null" } ?? "null" }
        func int(_ k: StaticString, _ v: Int) { key(k); out += String(v) }
        func bool(_ k: StaticString, _ v: Bool) { key(k); out += v ? "true" : "false" }
        str("accession_number", s.accessionNumber)
        str("body_part", s.bodyPart)
        str("calling_ae_title", s.callingAETitle)
        bool("changed_after_review", s.changedAfterReview)
        str("character_set_note", s.characterSetNote)
        str("delivery", s.deliveryMark?.rawValue)
        str("description", s.studyDescription)
        int("eligible_images", s.eligibleImageCount)
        str("first_received_at", iso(s.firstReceivedAt))
        bool("flagged", s.isFlagged)
        int("heatmaps", s.heatmapCount)
        str("id", s.shortID)
        int("images", s.imageCount)
        str("last_received_at", iso(s.lastReceivedAt))
        str("modality", s.modality)
        str("model_hash", s.modelHash)
        str("model_id", s.modelID)
        str("patient_id", s.patientID)
        str("patient_name", s.patientName)
        str("peer_address", s.peerAddress)
        int("priority", s.priority)
        num("probability", s.probability)
        str("review_label", s.reviewLabel?.rawValue)
        str("review_state", s.reviewState.rawValue)
        str("reviewed_at", iso(s.reviewedAt))
        str("source", s.source.rawValue)
        str("state", s.state.rawValue)
        str("state_reason", s.stateReason)
        str("study_date", s.studyDate)
        str("study_instance_uid", s.studyInstanceUID)
        num("threshold", s.threshold)
        str("triaged_at", iso(s.triagedAt))
        str("verdict", s.verdict?.rawValue)
        return out + "}"
    }

    /// A JSON string literal (RFC 8259): quotes, backslashes and control characters escaped.
    static func appendJSONString(_ value: String, to out: inout String) {
        out += "\""
        if !value.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out += value
            out += "\""
            return
        }
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
    }

    public static func json(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: CSV (RFC 4180)

    public static let csvHeader = [
        "id", "study_instance_uid", "accession_number", "patient_id", "patient_name", "study_date", "modality",
        "body_part", "first_received_at", "images", "eligible_images", "state", "state_reason", "probability",
        "verdict", "threshold", "model_id", "review_state", "review_label", "reviewed_at", "changed_after_review",
        "heatmaps", "delivery",
    ]

    public static func csvFields(_ s: Study) -> [String] {
        [
            s.shortID, s.studyInstanceUID, s.accessionNumber ?? "", s.patientID ?? "", s.patientName ?? "",
            s.studyDate ?? "", s.modality ?? "", s.bodyPart ?? "", iso(s.firstReceivedAt) ?? "", String(s.imageCount),
            String(s.eligibleImageCount), s.state.rawValue, s.stateReason ?? "", probability(s.probability),
            s.verdict?.rawValue ?? "", s.threshold.map { String($0) } ?? "", s.modelID ?? "", s.reviewState.rawValue,
            s.reviewLabel?.rawValue ?? "", iso(s.reviewedAt) ?? "", s.changedAfterReview ? "true" : "false",
            String(s.heatmapCount), s.deliveryMark?.rawValue ?? "",
        ]
    }

    /// One CSV field: quoted when needed, and a leading =, +, -, @, tab or carriage return neutralised
    /// with an apostrophe so a spreadsheet never runs it as a formula.
    public static func csvField(_ raw: String) -> String {
        var value = raw
        if let first = value.utf8.first, "=+-@\t\r".utf8.contains(first) { value = "'" + value }
        let needsQuotes = value.utf8.contains { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0A || $0 == 0x0D }
            || value.utf8.first == UInt8(ascii: " ") || value.utf8.last == UInt8(ascii: " ")
        return needsQuotes ? "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : value
    }

    public static func csvRecord(_ fields: [String]) -> String { fields.map(csvField).joined(separator: ",") + "\r\n" }

    public static func csv(_ studies: [Study]) -> String {
        csvRecord(csvHeader) + studies.map { csvRecord(csvFields($0)) }.joined()
    }

    // MARK: Text for a terminal

    /// The table's columns and widths: 80 characters with the two-character flag mark and the spaces.
    static let tableColumns: [(title: String, width: Int)] = [("ID", 9), ("STUDY DATE", 10), ("ACCESSION", 10), ("PATIENT", 9),
                                                             ("PART", 7), ("PROB", 4), ("FINDING", 9), ("REVIEW", 10), ("P", 1)]

    static func cell(_ raw: String, _ w: Int, right: Bool = false) -> String {
        let text = printable(raw)
        let t = text.count > w ? String(text.prefix(max(0, w - 1))) + "~" : text
        let pad = String(repeating: " ", count: max(0, w - t.count))
        return right ? pad + t : t + pad
    }

    /// The table's header line.
    public static func tableHeader() -> String {
        var header = "  " + tableColumns.map { cell($0.title, $0.width, right: $0.title == "PROB") }.joined(separator: " ")
        while header.hasSuffix(" ") { header.removeLast() }
        return header
    }

    /// One study's line of the table: `id` is the prefix of its short ID to print (`ShortIDPrefixes`); an
    /// ID longer than its column takes the room from the patient's name, so the line stays within 80.
    public static func tableLine(_ s: Study, id: String, colour: Bool) -> String {
        let flagged = s.isFlagged
        let extra = max(0, id.count - 9)
        let fields = [
            cell(id, 9 + extra),
            cell(studyDate(s.studyDate), 10),
            cell(s.accessionNumber ?? "", 10),
            cell(displayName(s.patientName), 9 - extra),
            cell(s.bodyPart ?? "", 7),
            cell(s.probability.map { fixed($0, digits: 2) } ?? "-", 4, right: true),
            cell(finding(s), 9),
            cell(review(s), 10),
            cell(s.deliveryMark?.symbol ?? "", 1),
        ]
        // The mark: "!" flagged, then "#" when pictures (heatmaps) exist for the study (`show --images`).
        var line = (flagged ? "!" : " ") + (s.heatmapCount > 0 ? "#" : " ") + fields.joined(separator: " ")
        while line.hasSuffix(" ") { line.removeLast() }
        if colour && flagged { line = "\u{1B}[1;31m" + line + "\u{1B}[0m" }
        else if colour && s.changedAfterReview { line = "\u{1B}[33m" + line + "\u{1B}[0m" }
        return line
    }

    /// Fits `width` characters (default 80), one line per study, flagged studies marked with `!`, `*`
    /// after a radiologist's own label. IDs are printed as `prefixes` gives them (8 characters without).
    public static func table(_ studies: [Study], colour: Bool, width: Int = 80, prefixes: ShortIDPrefixes? = nil) -> String {
        var lines = [tableHeader()]
        for s in studies {
            lines.append(tableLine(s, id: prefixes?.prefix(of: s.shortID) ?? String(s.shortID.prefix(8)), colour: colour))
        }
        if studies.isEmpty { lines.append("  (no studies match)") }
        return lines.map { $0.count > width && !colour ? String($0.prefix(width)) : $0 }.joined(separator: "\n")
    }

    /// The line under a page of the table: "3,057 flagged, 97,000 others; 1-40 shown; --all for everything".
    public static func summary(_ counts: WorklistCounts, shown: Int) -> String {
        let f = NumberFormatter()
        f.numberStyle = .decimal
        f.locale = Locale(identifier: "en_US_POSIX")
        f.usesGroupingSeparator = true
        f.groupingSeparator = ","
        f.groupingSize = 3
        func n(_ x: Int) -> String { f.string(from: NSNumber(value: x)) ?? String(x) }
        let head = "\(n(counts.flagged)) flagged, \(n(counts.others)) \(counts.others == 1 ? "other" : "others")"
        if shown >= counts.total { return head + "; all shown" }
        return head + "; " + (shown == 0 ? "none shown" : "1-\(n(shown)) shown") + "; --all for everything"
    }

    /// Text from the network or a file, made safe for a terminal: control characters (newlines,
    /// escape sequences that could repaint the screen) become "?".
    static func printable(_ text: String) -> String {
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F || $0 == 0xC2 }) { return text }  // no C0, DEL or C1 control
        return String(String.UnicodeScalarView(text.unicodeScalars.map { $0.properties.generalCategory == .control ? "?" : $0 }))
    }

    /// DICOM person names are `Family^Given^Middle^Prefix^Suffix`; show "Family, Given".
    static func displayName(_ pn: String?) -> String {
        guard let pn, !pn.isEmpty else { return "" }
        let parts = pn.split(separator: "^", omittingEmptySubsequences: false).map(trimmed)
        if parts.count >= 2, !parts[1].isEmpty { return "\(parts[0]), \(parts[1])" }
        return parts[0]
    }

    /// Without leading and trailing spaces; Foundation's trimming only when there are some (a listing trims 100,000 names).
    static func trimmed(_ text: Substring) -> String {
        guard let first = text.first, let last = text.last, first.isWhitespace || last.isWhitespace else { return String(text) }
        return text.trimmingCharacters(in: .whitespaces)
    }

}
