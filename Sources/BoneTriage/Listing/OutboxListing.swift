import Foundation

/// `bonetriage outbox`: the result objects not yet delivered (or all), as a table, JSON or CSV. No patient
/// data: studies by their short ID.
public enum OutboxListing {
    public static let csvHeader = ["entry", "study", "study_instance_uid", "kind", "sop_instance_uid", "destination", "state", "attempts",
                                   "next_attempt_at", "last_error", "queued_at", "delivered_at", "dropped_by", "dropped_at", "file", "build_problem"]

    public static func csvFields(_ e: OutboxEntry) -> [String] {
        [e.entryID, e.shortID, e.studyInstanceUID, e.kind.rawValue, e.objectSOPInstanceUID, e.destination, e.shownState, String(e.attempts),
         WorklistPresentation.iso(e.nextAttemptAt) ?? "", e.lastError ?? "", WorklistPresentation.iso(e.queuedAt) ?? "",
         WorklistPresentation.iso(e.deliveredAt) ?? "", e.droppedBy ?? "", WorklistPresentation.iso(e.droppedAt) ?? "", e.filePath ?? "",
         e.buildProblem ?? ""]
    }

    public static func csv(_ entries: [OutboxEntry]) -> String {
        WorklistPresentation.csvRecord(csvHeader) + entries.map { WorklistPresentation.csvRecord(csvFields($0)) }.joined()
    }

    public static func jsonObject(_ e: OutboxEntry) -> [String: Any] {
        func v(_ x: Any?) -> Any { x ?? NSNull() }
        return ["entry": e.entryID, "study": e.shortID, "study_instance_uid": e.studyInstanceUID, "kind": e.kind.rawValue,
                "sop_instance_uid": e.objectSOPInstanceUID, "destination": e.destination, "state": e.shownState,
                "delivery_state": e.state.rawValue, "attempts": e.attempts, "next_attempt_at": v(WorklistPresentation.iso(e.nextAttemptAt)),
                "last_error": v(e.lastError), "queued_at": v(WorklistPresentation.iso(e.queuedAt)),
                "delivered_at": v(WorklistPresentation.iso(e.deliveredAt)), "dropped_by": v(e.droppedBy),
                "dropped_at": v(WorklistPresentation.iso(e.droppedAt)), "file": v(e.filePath), "build_problem": v(e.buildProblem)]
    }

    public static func json(_ entries: [OutboxEntry]) -> String { WorklistPresentation.json(entries.map(jsonObject)) }

    /// One line per entry (the error, when there is one, on the next line, indented).
    public static func table(_ entries: [OutboxEntry], now: Date = Date()) -> String {
        guard !entries.isEmpty else { return "the outbox is empty: every result object is delivered (--all lists them)" }
        var lines = ["ENTRY      STUDY    KIND DESTINATION          STATE      TRIES NEXT"]
        for e in entries {
            let next: String
            switch e.state {
            case .pending: next = e.filePath == nil ? "-" : e.nextAttemptAt.map { $0 <= now ? "now" : WorklistPresentation.local($0, "MM-dd HH:mm:ss") } ?? "now"
            case .delivered: next = e.deliveredAt.map { "at " + WorklistPresentation.local($0, "MM-dd HH:mm") } ?? ""
            case .dropped: next = "by \(e.droppedBy ?? "?")"
            case .refused: next = "retry: outbox retry"
            }
            let fields = [cell(e.entryID, 10), cell(String(e.shortID.prefix(8)), 8), cell(e.kind.rawValue.uppercased(), 4), cell(e.destination, 20),
                          cell(e.shownState, 10), cell(String(e.attempts), 5), next]
            lines.append(fields.joined(separator: " "))
            if let problem = e.buildProblem ?? e.lastError {
                lines += WorklistPresentation.wrap(WorklistPresentation.printable(problem), first: "           ", rest: "           ")
            }
        }
        return lines.joined(separator: "\n")
    }

    static func cell(_ raw: String, _ w: Int) -> String {
        let t = raw.count > w ? String(raw.prefix(w - 1)) + "~" : raw
        return t + String(repeating: " ", count: max(0, w - t.count))
    }

    /// `show`'s "Results" section: each object, and its delivery per destination.
    public static func detailLines(_ study: Study, images: [StudyImage], objects: [ResultObject]) -> [String] {
        var out = ["", "Results in the PACS"]
        if objects.isEmpty {
            let why = images.contains(where: { $0.sopClassUID != nil })
                ? "none queued (no [[results]] destination takes this study's verdict, or it has none)"
                : "none: images without DICOM identity (a drop-folder PNG study) have nothing to send back to a PACS"
            out += WorklistPresentation.wrap(why, first: "  ", rest: "  ")
            return out
        }
        for o in objects {
            var what = o.kind == .structuredReport ? (o.review == nil ? "report" : "updated report (\(o.review?.label.rawValue ?? "?") by \(o.review?.attribution ?? "?"))")
                : "capture of \(o.sourceSOPInstanceUID ?? "?")"
            what += ", series \(o.seriesNumber) / instance \(o.instanceNumber)"
            let built: String
            if let problem = o.buildProblem { built = "NOT BUILT: \(problem)" }
            else if o.filePath != nil { built = "built" + (o.fileRemovedAt != nil ? " (file removed by retention)" : "") }
            else { built = "waiting to be built" }
            out += WorklistPresentation.wrap(WorklistPresentation.printable("\(o.kind.rawValue.uppercased()) \(what): \(built)"), first: "  ", rest: "      ")
            for e in o.deliveries {
                var state = e.state.rawValue
                switch e.state {
                case .delivered: state += e.deliveredAt.map { " " + WorklistPresentation.local($0, "yyyy-MM-dd HH:mm") } ?? ""
                case .pending: state += " (\(e.attempts) attempt(s)" + (e.lastError.map { ", last: \($0)" } ?? "") + ")"
                case .refused: state += ": \(e.lastError ?? "?")"
                case .dropped: state += " by \(e.droppedBy ?? "?")" + (e.droppedAt.map { " " + WorklistPresentation.local($0, "yyyy-MM-dd HH:mm") } ?? "")
                }
                out += WorklistPresentation.wrap(WorklistPresentation.printable("-> \(e.destination) [\(e.entryID)]: \(state)"), first: "    ", rest: "       ")
            }
        }
        return out
    }

    public static func detailJSON(_ objects: [ResultObject]) -> [[String: Any]] {
        objects.map { o in
            ["kind": o.kind.rawValue, "sop_instance_uid": o.sopInstanceUID, "series_instance_uid": o.seriesInstanceUID,
             "series_number": o.seriesNumber, "instance_number": o.instanceNumber, "source_sop_instance_uid": o.sourceSOPInstanceUID ?? NSNull(),
             "replaces_sop_instance_uid": o.replaces?.sopInstanceUID ?? NSNull(), "queued_at": WorklistPresentation.iso(o.queuedAt) ?? NSNull(),
             "file": o.filePath ?? NSNull(), "build_problem": o.buildProblem ?? NSNull(),
             "deliveries": o.deliveries.map(jsonObject)] as [String: Any]
        }
    }
}
