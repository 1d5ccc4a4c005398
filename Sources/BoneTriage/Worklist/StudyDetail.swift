import Foundation

/// `bonetriage show`: one study for a radiologist at an 80-column terminal, and the same as JSON.
extension WorklistPresentation {
    /// The width `detail` fits, and the width of its labels.
    static let detailWidth = 80
    static let detailLabelWidth = 18

    /// `inProgress`: the study's open triage claim (a shared worklist names the node that holds it).
    public static func detail(_ s: Study, images: [StudyImage], reviews: [Review], inProgress: TriageInProgress? = nil) -> String {
        var out: [String] = []
        let indent = String(repeating: " ", count: detailLabelWidth)
        func line(_ key: String, _ value: String?) {
            guard let value, !value.isEmpty else { return }
            out += wrap(printable(value), first: key.padding(toLength: detailLabelWidth, withPad: " ", startingAt: 0), rest: indent)
        }
        line("Study", s.shortID)
        line("Study UID", s.studyInstanceUID)
        line("Patient", [displayName(s.patientName), s.patientID.map { "(\($0))" }].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: " "))
        line("Accession", s.accessionNumber)
        line("Study date", s.studyDate.map { studyDate($0) })
        line("Modality / part", [s.modality, s.bodyPart].compactMap { $0 }.joined(separator: " / "))
        line("Description", s.studyDescription)
        line("Text", s.characterSetNote.map { "NOT CONVERTED: \($0)" })
        let from = s.source == .cstore ? "C-STORE from \(s.callingAETitle ?? "?") at \(s.peerAddress ?? "?")" : "drop folder"
        line("Received", "\(span(s.firstReceivedAt, s.lastReceivedAt)), \(from)")
        line("Images", "\(s.imageCount) (\(s.eligibleImageCount) eligible)")
        line("State", s.state.rawValue + (s.stateReason.map { ": \($0)" } ?? ""))
        line("Triage", inProgress.map(triageInProgressText))
        if s.state == .triaged {
            line("Verdict", "\(outcome(s))  probability \(probability(s.probability)), threshold \(s.threshold.map { String(($0 * 10000).rounded() / 10000) } ?? "?")")
            line("Operating point", s.operatingPoint)
            line("Model", "\(s.modelID ?? "?") (\(String((s.modelHash ?? "?").prefix(16))))")
            line("Triaged", s.triagedAt.map { local($0, "yyyy-MM-dd HH:mm:ss") + (s.triageNode.map { " on node \($0)" } ?? "") })
            line("Pictures", s.heatmapCount > 0
                 ? "heatmaps for \(s.heatmapCount) image\(s.heatmapCount == 1 ? "" : "s"); write them with --images DIR"
                 : "no heatmap yet ([heatmaps] compute in the daemon's config)")
        }
        line("Review", s.reviewState.rawValue + (s.reviewLabel.map { ": \($0.rawValue)" } ?? "")
             + (s.reviewedAt.map { " on " + local($0, "yyyy-MM-dd HH:mm") } ?? "")
             + (s.changedAfterReview ? "  (CHANGED AFTER REVIEW: triaged again since)" : ""))
        out.append("")
        out.append("Images")
        for i in images {
            let p = i.probability.map { String(format: "%.3f", $0) } ?? (i.eligible ? "-" : "n/a")
            var text = imageName(i)
            if let details = imageDetails(i) { text += "  " + details }
            if i.eligible, let problem = i.eligibilityReason { text += "  (not classified: \(problem))" }
            if !i.eligible { text += "  (\(i.eligibilityReason ?? "not eligible"))" }
            if let removed = i.fileRemovedAt { text += "  (file removed by retention " + local(removed, "yyyy-MM-dd") + ")" }
            if let node = i.node, Set(images.compactMap(\.node)).count > 1 { text += "  (on node \(node))" }
            out += wrap(printable(text), first: "  " + p.padding(toLength: 7, withPad: " ", startingAt: 0), rest: String(repeating: " ", count: 9))
        }
        out.append("")
        out.append("Review history")
        if reviews.isEmpty { out.append("  (none)") }
        for r in reviews {
            let change = r.action == .confirm ? "confirmed \(r.label.rawValue)" : "overrode \(r.fromVerdict?.rawValue ?? "no verdict") -> \(r.label.rawValue)"
            let text = "\(r.attribution): \(change)" + (r.note.map { "  \"\($0)\"" } ?? "")
            out += wrap(printable(text), first: "  " + local(r.reviewedAt, "yyyy-MM-dd HH:mm") + "  ", rest: String(repeating: " ", count: 20))
        }
        return out.joined(separator: "\n")
    }

    /// `show --format json`: the study, its images (with their series and instance numbers, view,
    /// laterality and drop-folder file name) and its reviews (with a stated reviewer's name).
    /// `heatmaps`: what is recorded for the images (by SOP Instance UID); each image gets "heatmap": "made",
    /// "not_made" (with "heatmap_problem") or "none", for the study's current model.
    public static func detailJSONObject(_ s: Study, images: [StudyImage], reviews: [Review],
                                        heatmaps: [String: StoredHeatmap] = [:], inProgress: TriageInProgress? = nil) -> [String: Any] {
        var study = jsonObject(s)
        study["triage_node"] = s.triageNode ?? NSNull()
        study["operating_point"] = s.operatingPoint ?? NSNull()
        study["triage_in_progress"] = inProgress.map { ["node": $0.node, "started_at": iso($0.startedAt) ?? NSNull(), "attempts": $0.attempts] as [String: Any] }
            ?? NSNull()
        return [
            "study": study,
            "images": images.map { i -> [String: Any] in
                var object = jsonObject(i)
                object["node"] = i.node ?? NSNull()
                object["series_number"] = i.seriesNumber ?? NSNull()
                object["instance_number"] = i.instanceNumber ?? NSNull()
                object["view_position"] = i.viewPosition ?? NSNull()
                object["laterality"] = i.laterality ?? NSNull()
                object["file_name"] = i.fileName ?? NSNull()
                let current = heatmaps[i.sopInstanceUID].flatMap { $0.outcome.modelFingerprint == s.modelHash ? $0.outcome : nil }
                object["heatmap"] = current == nil ? "none" : current?.heatmap != nil ? "made" : "not_made"
                object["heatmap_problem"] = current?.reason ?? NSNull()
                return object
            },
            "reviews": reviews.map { r -> [String: Any] in
                var object = jsonObject(r)
                object["stated_reviewer"] = r.statedReviewer ?? NSNull()
                return object
            },
        ]
    }

    /// An open claim as `show` says it: a node triages the study now, or stopped during its triage and
    /// resumes it when it starts again (the other nodes leave it to that node).
    static func triageInProgressText(_ t: TriageInProgress) -> String {
        "claimed by node \(t.node) since \(local(t.startedAt, "yyyy-MM-dd HH:mm:ss"))"
            + (t.attempts > 1 ? ", attempt \(t.attempts) (the node stopped during the earlier ones)" : "")
            + "; if that node is down, it resumes the study when it starts again"
    }

    /// DICOM's Study Date (0008,0020) is YYYYMMDD: 20261118 reads 2026-11-18. Anything else is shown as received.
    static func studyDate(_ raw: String) -> String {
        let digits = Array(raw.trimmingCharacters(in: .whitespaces))
        guard digits.count == 8, digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return raw }
        return String(digits[0..<4]) + "-" + String(digits[4..<6]) + "-" + String(digits[6..<8])
    }

    /// From the first to the last arrival, the second date given only when the day differs.
    static func span(_ first: Date, _ last: Date) -> String {
        let start = local(first, "yyyy-MM-dd HH:mm:ss")
        let end = local(last, "yyyy-MM-dd HH:mm:ss")
        if end <= start { return start }
        return start + " to " + (end.prefix(10) == start.prefix(10) ? String(end.dropFirst(11)) : end)
    }

    /// How a radiologist finds the image in the PACS or the drop folder: the file name it was dropped
    /// under, else its series and instance numbers, else its SOP Instance UID.
    static func imageName(_ i: StudyImage) -> String {
        if let name = i.fileName, !name.isEmpty { return name }
        if i.seriesNumber != nil || i.instanceNumber != nil {
            return "series \(i.seriesNumber.map(String.init) ?? "?") / instance \(i.instanceNumber.map(String.init) ?? "?")"
        }
        return i.sopInstanceUID
    }

    /// View position and laterality, when the file has them: "view PA, left".
    static func imageDetails(_ i: StudyImage) -> String? {
        let side: String? = i.laterality.map {
            switch $0.uppercased() {
            case "L": return "left"
            case "R": return "right"
            case "B": return "both sides"
            case "U": return "unpaired"
            default: return $0
            }
        }
        let parts = [i.viewPosition.map { "view \($0)" }, side].compactMap { $0 }
        return parts.isEmpty ? nil : parts.joined(separator: ", ")
    }

    /// `text` in lines of at most `width` characters: the first after `first`, the others after `rest`.
    /// Words move to the next line whole; a word too long for a line is broken after its last '.', '/',
    /// '_', '-' or ',' that fits (a UID, a path), or else cut with a '\' at the end of the line, so that
    /// nothing is lost or cut without a mark.
    static func wrap(_ text: String, first: String, rest: String, width: Int = detailWidth) -> [String] {
        var lines: [String] = []
        var current = first
        var prefixCount = first.count
        func room() -> Int { width - current.count }
        func newLine() {
            var finished = current
            while finished.hasSuffix(" ") { finished.removeLast() }
            lines.append(finished)
            current = rest
            prefixCount = rest.count
        }
        let words = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
        for (n, rawWord) in words.enumerated() {
            var word = rawWord
            let space = (n == 0 || current.count == prefixCount) ? "" : " "
            if space.count + word.count <= room() {
                current += space + word
                continue
            }
            if word.count <= width - rest.count {
                newLine()
                current += word
                continue
            }
            // Too long for any line: break it, starting on this line if a useful part fits.
            current += space
            while word.count > room() {
                let available = room()
                if available < 8 { newLine(); continue }
                let head = word.prefix(available)
                if let cut = head.dropLast().lastIndex(where: { ".,/_-".contains($0) }), head.distance(from: head.startIndex, to: cut) >= 8 {
                    let after = word.index(after: cut)
                    current += String(word[word.startIndex..<after])
                    word = String(word[after...])
                } else {
                    current += String(word.prefix(available - 1)) + "\\"
                    word = String(word.dropFirst(available - 1))
                }
                newLine()
            }
            current += word
        }
        newLine()
        return lines
    }
}
