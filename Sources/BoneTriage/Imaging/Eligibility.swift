/// Whether an image is a radiograph the model may see, decided by SOP class and modality.
public enum Eligibility: Sendable, Equatable {
    case radiograph
    case notApplicable(reason: String)

    public var isEligible: Bool { self == .radiograph }

    static let radiographClasses: [String: String] = [
        "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
        "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
        "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
        "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    ]
    static let singleFrameOnlyClasses: [String: String] = [
        "1.2.840.10008.5.1.4.1.1.12.1": "X-Ray Angiographic Image Storage",
        "1.2.840.10008.5.1.4.1.1.12.2": "X-Ray Radiofluoroscopic Image Storage",
    ]

    /// Modalities that are never plain radiographs, even inside a Secondary Capture.
    static let nonRadiographModalities: Set<String> = ["CT", "MR", "NM", "PT", "US", "MG", "SR", "PR", "KO", "DOC", "RTPLAN",
                                                       "RTDOSE", "RTSTRUCT", "RTIMAGE", "SEG", "ECG", "OP", "OPT", "SM", "ES"]

    public static func decide(_ m: DicomMetadata) -> Eligibility {
        if let modality = m.modality, nonRadiographModalities.contains(modality.uppercased()) {
            return .notApplicable(reason: "modality \(modality) is not a radiograph")
        }
        if let sop = m.sopClassUID {
            if radiographClasses[sop] != nil { return .radiograph }
            if let name = singleFrameOnlyClasses[sop] {
                return m.numberOfFrames == 1 ? .radiograph : .notApplicable(reason: "\(name) with \(m.numberOfFrames) frames (only single frames are radiographs)")
            }
            return .notApplicable(reason: "SOP class \(sop)\(m.modality.map { " (modality \($0))" } ?? "") is not a radiograph")
        }
        // No SOP Class UID (some files without File Meta): fall back on the modality.
        if let modality = m.modality, ["CR", "DX"].contains(modality) { return .radiograph }
        return .notApplicable(reason: "no SOP Class UID (0008,0016) and modality \(m.modality ?? "absent") is not CR or DX")
    }
}
