import Foundation

/// MURA's `path,label` form from the radiologists' labels: `XR_<PART>/patient<ID>/study<N>_<positive|negative>/`
/// with 1 (abnormal) or 0 (normal), for reviewed studies that came from the drop folder in MURA's layout
/// (the drop folder keeps a PNG study's folder, e.g. `train/XR_HUMERUS/patient11185/study1_positive`).
public enum MuraExport {
    /// Why a study is left out of a MURA export.
    public enum Omission: String, Error, CaseIterable, Sendable {
        case notReviewed = "not reviewed"
        case changedAfterReview = "changed after review (review it again)"
        case notMuraLayout = "not in MURA layout (only drop-folder studies in XR_<PART>/patient.../study... folders)"
    }

    /// The study's MURA record (a CSV line), or why it has none.
    public static func record(_ s: Study) -> Result<String, Omission> {
        guard let path = path(s) else { return .failure(.notMuraLayout) }
        guard s.reviewState != .unreviewed, let label = s.reviewLabel else { return .failure(.notReviewed) }
        if s.changedAfterReview { return .failure(.changedAfterReview) }
        let folder = path.study + (label == .abnormal ? "_positive" : "_negative")
        return .success(WorklistPresentation.csvRecord(["\(path.part)/\(path.patient)/\(folder)/", label == .abnormal ? "1" : "0"]))
    }

    /// The XR_<PART>, patient and study folders of a drop-folder study in MURA layout (the study folder
    /// without a `_positive`/`_negative` suffix), or nil.
    public static func path(_ s: Study) -> (part: String, patient: String, study: String)? {
        guard s.source == .dropFolder, let folder = s.studyDescription else { return nil }
        let parts = folder.split(separator: "/").map(String.init)
        guard let k = parts.firstIndex(where: { $0.uppercased().hasPrefix("XR_") && $0.count > 3 }), parts.count > k + 2 else { return nil }
        let patient = parts[k + 1], study = parts[k + 2]
        guard patient.lowercased().hasPrefix("patient"), patient.count > 7, study.lowercased().hasPrefix("study"), study.count > 5 else { return nil }
        let bare = study.split(separator: "_").first.map(String.init) ?? study
        return ("XR_" + parts[k].dropFirst(3).uppercased(), patient, bare)
    }

    /// What an export left out: how many studies for each reason, with the first few IDs.
    public struct Report: Sendable {
        public private(set) var written = 0
        public private(set) var omitted: [Omission: (count: Int, ids: [String])] = [:]
        public static let idsShown = 5

        public init() {}

        public mutating func wrote() { written += 1 }

        public mutating func omit(_ s: Study, _ why: Omission) {
            var entry = omitted[why] ?? (0, [])
            entry.count += 1
            if entry.ids.count < Self.idsShown { entry.ids.append(String(s.shortID.prefix(8))) }
            omitted[why] = entry
        }

        /// Lines for standard error: what was written (to `destination`), then one line per reason left out.
        public func text(destination: String? = nil) -> String {
            var lines = ["wrote \(written) \(written == 1 ? "study" : "studies") in MURA form" + (destination.map { " to \($0)" } ?? "")]
            for why in Omission.allCases {
                guard let entry = omitted[why] else { continue }
                lines.append("left out \(entry.count): \(why.rawValue): \(entry.ids.joined(separator: ", "))\(entry.count > entry.ids.count ? ", ..." : "")")
            }
            return lines.joined(separator: "\n")
        }
    }
}
