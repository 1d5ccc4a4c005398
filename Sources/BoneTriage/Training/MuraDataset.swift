import Foundation

/// One labelled image in MURA's layout: `<root>/<split>/XR_<PART>/patientNNNNN/studyN_<positive|negative>/imageN.png`.
public struct LabelledImage: Sendable, Equatable {
    public var path: String
    public var split: String
    public var bodyPart: String
    public var patient: String
    /// Patient and study folder: unique per study.
    public var study: String
    /// 1 = abnormal (positive), 0 = normal.
    public var label: Int

    public init(path: String, split: String, bodyPart: String, patient: String, study: String, label: Int) {
        self.path = path
        self.split = split
        self.bodyPart = bodyPart
        self.patient = patient
        self.study = study
        self.label = label
    }
}

public enum MuraDataset {
    /// Every PNG or DICOM file in MURA's layout below `root`; with `split`, only those under that split
    /// folder when the tree has one (else all).
    public static func scan(root: String, split: String?) throws -> [LabelledImage] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw TrainingError.badLayout(path: root, reason: "not a folder; give the MURA-layout folder (…/train/XR_HUMERUS/patient*/study*_positive/*.png)")
        }
        guard let walker = FileManager.default.enumerator(atPath: root) else { throw TrainingError.badLayout(path: root, reason: "cannot list the folder") }
        var images: [LabelledImage] = []
        while let relative = walker.nextObject() as? String {
            let lower = relative.lowercased()
            guard lower.hasSuffix(".png") || lower.hasSuffix(".dcm") else { continue }
            let parts = relative.split(separator: "/").map(String.init)
            guard parts.count >= 4 else { continue }
            let studyFolder = parts[parts.count - 2], patient = parts[parts.count - 3], part = parts[parts.count - 4]
            guard part.hasPrefix("XR_"), patient.hasPrefix("patient"), studyFolder.hasPrefix("study"),
                  let labelText = studyFolder.split(separator: "_").last, ["positive", "negative"].contains(labelText) else { continue }
            let splitName = parts.count >= 5 ? parts[parts.count - 5] : ""
            images.append(LabelledImage(path: (root as NSString).appendingPathComponent(relative), split: splitName,
                                        bodyPart: String(part.dropFirst(3)), patient: "\(part)/\(patient)",
                                        study: "\(part)/\(patient)/\(studyFolder)", label: labelText == "positive" ? 1 : 0))
        }
        images.sort { $0.path < $1.path }
        if let split, images.contains(where: { $0.split == split }) { images = images.filter { $0.split == split } }
        guard !images.isEmpty else {
            throw TrainingError.badLayout(path: root, reason: "no images in MURA's layout (…/XR_<PART>/patient*/study*_positive|negative/*.png) were found")
        }
        return images
    }
}

extension MuraDataset {
    /// Images labelled by a CSV in MURA's `path,label` form (a study folder and 1 = abnormal), such as
    /// `train_labeled_studies.csv`: every PNG or DICOM file inside each listed folder. Folder paths are
    /// resolved against the CSV's folder and its parent (MURA's own CSVs name `MURA-v1.1/...`).
    public static func scan(labels csvPath: String, split: String?) throws -> [LabelledImage] {
        guard let text = try? String(contentsOfFile: csvPath, encoding: .utf8) else {
            throw TrainingError.badLayout(path: csvPath, reason: "cannot read the labels CSV")
        }
        let base = URL(fileURLWithPath: csvPath).deletingLastPathComponent()
        var images: [LabelledImage] = []
        for (number, line) in text.split(whereSeparator: \.isNewline).enumerated() {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 2, let label = Int(fields[1]), label == 0 || label == 1 else {
                if number == 0 { continue }  // a header row
                throw TrainingError.badLayout(path: csvPath, reason: "line \(number + 1) is not 'folder,label' with label 0 or 1: \(line)")
            }
            let candidates = [base.appendingPathComponent(fields[0]), base.deletingLastPathComponent().appendingPathComponent(fields[0])]
            guard let folder = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
                throw TrainingError.badLayout(path: csvPath, reason: "line \(number + 1): folder \(fields[0]) does not exist next to the CSV")
            }
            let parts = folder.standardizedFileURL.path.split(separator: "/").map(String.init)
            let bodyPart = parts.last { $0.hasPrefix("XR_") }.map { String($0.dropFirst(3)) }
            let splitName = parts.last { $0 == "train" || $0 == "valid" } ?? ""
            let files = (FileManager.default.enumerator(atPath: folder.path)?.allObjects as? [String] ?? [])
                .filter { $0.lowercased().hasSuffix(".png") || $0.lowercased().hasSuffix(".dcm") }.sorted()
            for file in files {
                let path = folder.appendingPathComponent(file).path
                var part = bodyPart
                if part == nil, file.lowercased().hasSuffix(".dcm") { part = (try? DicomReader.metadata(path: path))?.bodyPartExamined }
                images.append(LabelledImage(path: path, split: splitName, bodyPart: part ?? "UNKNOWN",
                                            patient: folder.deletingLastPathComponent().path, study: folder.path, label: label))
            }
        }
        if let split, images.contains(where: { $0.split == split }) { images = images.filter { $0.split == split } }
        guard !images.isEmpty else { throw TrainingError.badLayout(path: csvPath, reason: "the listed folders hold no PNG or DICOM file") }
        return images
    }
}

/// Study-level scores: the mean of each study's image probabilities, as in the MURA paper.
public enum StudyScores {
    public static func aggregate(_ images: [LabelledImage], probabilities: [Double]) -> (studies: [String], scores: [Double], labels: [Int], parts: [String]) {
        var sums: [String: (Double, Int, Int, String)] = [:]
        for (image, p) in zip(images, probabilities) {
            let s = sums[image.study] ?? (0, 0, image.label, image.bodyPart)
            sums[image.study] = (s.0 + p, s.1 + 1, s.2, s.3)
        }
        let keys = sums.keys.sorted()
        return (keys, keys.map { sums[$0].map { $0.0 / Double($0.1) } ?? 0 }, keys.map { sums[$0]?.2 ?? 0 }, keys.map { sums[$0]?.3 ?? "" })
    }
}
