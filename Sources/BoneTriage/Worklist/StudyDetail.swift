import Foundation

/// `bonetriage show`: one study for a radiologist.
extension WorklistPresentation {
    public static func detail(_ s: Study, images: [StudyImage], reviews: [Review]) -> String {
        var out: [String] = []
        func line(_ key: String, _ value: String?) {
            if let value, !value.isEmpty { out.append(key.padding(toLength: 18, withPad: " ", startingAt: 0) + printable(value)) }
        }
        line("Study", "\(s.shortID)  \(s.studyInstanceUID)")
        line("Patient", [displayName(s.patientName), s.patientID.map { "(\($0))" }].compactMap { $0 }.joined(separator: " "))
        line("Accession", s.accessionNumber)
        line("Study date", s.studyDate)
        line("Modality / part", [s.modality, s.bodyPart].compactMap { $0 }.joined(separator: " / "))
        line("Description", s.studyDescription)
        line("Text", s.characterSetNote.map { "NOT CONVERTED: \($0)" })
        let from = s.source == .cstore ? "C-STORE from \(s.callingAETitle ?? "?") at \(s.peerAddress ?? "?")" : "drop folder"
        line("Received", "\(local(s.firstReceivedAt, "yyyy-MM-dd HH:mm:ss")) .. \(local(s.lastReceivedAt, "HH:mm:ss")), \(from)")
        line("Images", "\(s.imageCount) (\(s.eligibleImageCount) eligible)")
        line("State", s.state.rawValue + (s.stateReason.map { ": \($0)" } ?? ""))
        if s.state == .triaged {
            line("Verdict", "\(outcome(s))  probability \(probability(s.probability)), threshold \(s.threshold.map { String($0) } ?? "?")")
            line("Model", "\(s.modelID ?? "?") (\(String((s.modelHash ?? "?").prefix(16))))")
            line("Triaged", s.triagedAt.map { local($0, "yyyy-MM-dd HH:mm:ss") })
        }
        line("Review", s.reviewState.rawValue + (s.reviewLabel.map { ": \($0.rawValue)" } ?? "")
             + (s.changedAfterReview ? "  (CHANGED AFTER REVIEW: triaged again since)" : ""))
        out.append("")
        out.append("Images")
        for i in images {
            let p = i.probability.map { String(format: "%.3f", $0) } ?? (i.eligible ? "-" : "n/a")
            let removed = i.fileRemovedAt.map { "  (file removed by retention " + local($0, "yyyy-MM-dd") + ")" } ?? ""
            out.append(printable("  \(p.padding(toLength: 6, withPad: " ", startingAt: 0)) \(i.sopInstanceUID)" + (i.eligible ? i.eligibilityReason.map { "  (not classified: \($0))" } ?? "" : "  (\(i.eligibilityReason ?? "not eligible"))") + removed))
        }
        out.append("")
        out.append("Review history")
        if reviews.isEmpty { out.append("  (none)") }
        for r in reviews {
            let change = r.action == .confirm ? "confirmed \(r.label.rawValue)" : "overrode \(r.fromVerdict?.rawValue ?? "no verdict") -> \(r.label.rawValue)"
            out.append(printable("  \(local(r.reviewedAt, "yyyy-MM-dd HH:mm")) \(r.reviewer): \(change)" + (r.note.map { "  \"\($0)\"" } ?? "")))
        }
        return out.joined(separator: "\n")
    }
}
