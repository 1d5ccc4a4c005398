import Foundation

/// How the worklist looks to a person (table, detail) and to programs (JSON, CSV). The JSON keys and
/// CSV columns are a stable interface, documented in the README.
public enum WorklistPresentation {
    // MARK: Values

    /// UTC, to the second: 2026-11-26T18:44:09Z.
    public static func iso(_ date: Date?) -> String? { date.map { $0.formatted(.iso8601) } }

    static func local(_ date: Date, _ format: String) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = .current
        f.dateFormat = format
        return f.string(from: date)
    }

    static func probability(_ p: Double?) -> String { p.map { String(format: "%.3f", $0) } ?? "" }

    /// The model's verdict when triaged, else the state.
    static func outcome(_ s: Study) -> String {
        switch s.state {
        case .triaged: return s.verdict == .abnormal ? "ABNORMAL" : "normal"
        case .notApplicable: return "n/a"
        default: return s.state.rawValue
        }
    }

    static func review(_ s: Study) -> String { s.changedAfterReview ? "changed" : s.reviewState.rawValue }

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

    public static func json(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])) ?? Data("null".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    // MARK: CSV (RFC 4180)

    public static let csvHeader = [
        "id", "study_instance_uid", "accession_number", "patient_id", "patient_name", "study_date", "modality",
        "body_part", "first_received_at", "images", "eligible_images", "state", "state_reason", "probability",
        "verdict", "threshold", "model_id", "review_state", "review_label", "reviewed_at", "changed_after_review",
    ]

    public static func csvFields(_ s: Study) -> [String] {
        [
            s.shortID, s.studyInstanceUID, s.accessionNumber ?? "", s.patientID ?? "", s.patientName ?? "",
            s.studyDate ?? "", s.modality ?? "", s.bodyPart ?? "", iso(s.firstReceivedAt) ?? "", String(s.imageCount),
            String(s.eligibleImageCount), s.state.rawValue, s.stateReason ?? "", probability(s.probability),
            s.verdict?.rawValue ?? "", s.threshold.map { String($0) } ?? "", s.modelID ?? "", s.reviewState.rawValue,
            s.reviewLabel?.rawValue ?? "", iso(s.reviewedAt) ?? "", s.changedAfterReview ? "true" : "false",
        ]
    }

    /// One CSV field: quoted when needed, and a leading =, +, -, @, tab or carriage return neutralised
    /// with an apostrophe so a spreadsheet never runs it as a formula.
    public static func csvField(_ raw: String) -> String {
        var value = raw
        if let first = value.unicodeScalars.first, "=+-@\t\r".unicodeScalars.contains(first) { value = "'" + value }
        let needsQuotes = value.contains { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" || $0 == "\r\n" } || value.hasPrefix(" ") || value.hasSuffix(" ")
        return needsQuotes ? "\"" + value.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : value
    }

    public static func csvRecord(_ fields: [String]) -> String { fields.map(csvField).joined(separator: ",") + "\r\n" }

    public static func csv(_ studies: [Study]) -> String {
        csvRecord(csvHeader) + studies.map { csvRecord(csvFields($0)) }.joined()
    }

    /// MURA's `path,label` form (1 = abnormal) from the radiologists' labels: the folder holding each
    /// reviewed study's images.
    public static func mura(_ rows: [(study: Study, images: [StudyImage])]) -> String {
        rows.compactMap { row -> String? in
            guard let label = row.study.reviewLabel, row.study.reviewState != .unreviewed else { return nil }
            let folders = Set(row.images.map { URL(fileURLWithPath: $0.filePath).deletingLastPathComponent().path })
            guard let folder = commonFolder(Array(folders)) else { return nil }
            return csvRecord([folder.hasSuffix("/") ? folder : folder + "/", label == .abnormal ? "1" : "0"])
        }.joined()
    }

    static func commonFolder(_ folders: [String]) -> String? {
        guard var common = folders.first?.split(separator: "/", omittingEmptySubsequences: false) else { return nil }
        for f in folders.dropFirst() {
            let parts = f.split(separator: "/", omittingEmptySubsequences: false)
            common = Array(zip(common, parts).prefix { $0 == $1 }.map(\.0))
        }
        let joined = common.joined(separator: "/")
        return joined.isEmpty ? "/" : joined
    }

    // MARK: Text for a terminal

    /// Fits `width` characters (default 80), one line per study, flagged studies marked with `!`.
    public static func table(_ studies: [Study], colour: Bool, width: Int = 80) -> String {
        // ! ID        ARRIVED      PATIENT      PART     IMG  PROB   VERDICT   REVIEW
        let columns: [(String, Int)] = [("ID", 8), ("ARRIVED", 11), ("PATIENT", 12), ("PART", 8), ("IMG", 3),
                                        ("PROB", 5), ("VERDICT", 9), ("REVIEW", 10)]
        func cell(_ raw: String, _ w: Int, right: Bool = false) -> String {
            let text = printable(raw)
            let t = text.count > w ? String(text.prefix(w - 1)) + "~" : text
            let pad = String(repeating: " ", count: w - t.count)
            return right ? pad + t : t + pad
        }
        var header = "  " + columns.map { cell($0.0, $0.1, right: $0.0 == "IMG" || $0.0 == "PROB") }.joined(separator: " ")
        while header.hasSuffix(" ") { header.removeLast() }
        var lines = [header]
        for s in studies {
            let flagged = s.isFlagged
            let fields = [
                cell(String(s.shortID.prefix(8)), 8),
                cell(local(s.firstReceivedAt, "MM-dd HH:mm"), 11),
                cell(displayName(s.patientName), 12),
                cell(s.bodyPart ?? "", 8),
                cell(String(s.imageCount), 3, right: true),
                cell(s.probability.map { String(format: "%.2f", $0) } ?? "-", 5, right: true),
                cell(outcome(s), 9),
                cell(review(s), 10),
            ]
            var line = (flagged ? "! " : "  ") + fields.joined(separator: " ")
            while line.hasSuffix(" ") { line.removeLast() }
            if colour && flagged { line = "\u{1B}[1;31m" + line + "\u{1B}[0m" }
            else if colour && s.changedAfterReview { line = "\u{1B}[33m" + line + "\u{1B}[0m" }
            lines.append(line)
        }
        if studies.isEmpty { lines.append("  (no studies match)") }
        return lines.map { $0.count > width && !colour ? String($0.prefix(width)) : $0 }.joined(separator: "\n")
    }

    /// Text from the network or a file, made safe for a terminal: control characters (newlines,
    /// escape sequences that could repaint the screen) become "?".
    static func printable(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { $0.properties.generalCategory == .control ? "?" : $0 }))
    }

    /// DICOM person names are `Family^Given^Middle^Prefix^Suffix`; show "Family, Given".
    static func displayName(_ pn: String?) -> String {
        guard let pn, !pn.isEmpty else { return "" }
        let parts = pn.split(separator: "^", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        if parts.count >= 2, !parts[1].isEmpty { return "\(parts[0]), \(parts[1])" }
        return parts[0]
    }
}
