import Foundation

extension OcclusionSensitivity {
    /// The heatmap of an image file (its first frame), decoded for the model as for its triage; or why
    /// none could be made (its file gone, not decodable), so that it is recorded and not tried again.
    /// `shouldYield`: as for `heatmap(input:shouldYield:)`; nil when it gave the work up.
    public func outcome(path: String, fileRemovedAt: Date? = nil, decoder: any ImageDecoder, spec: ModelInputSpec,
                        maximumPixels: UInt64, shouldYield: () -> Bool = { false }) -> HeatmapOutcome? {
        guard fileRemovedAt == nil, FileManager.default.fileExists(atPath: path) else {
            return .notMade(reason: "the image file is gone (removed after triage or by storage retention)", modelFingerprint: modelFingerprint)
        }
        switch decoder.decode(path: path, spec: spec, maximumPixels: maximumPixels) {
        case let .inputs(frames):
            guard let first = frames.first else {
                return .notMade(reason: "the image has no frame", modelFingerprint: modelFingerprint)
            }
            do { return try heatmap(input: first, shouldYield: shouldYield).map { .made($0) } } catch {
                return .notMade(reason: "the engine could not run: \(error)", modelFingerprint: modelFingerprint)
            }
        case let .notApplicable(reason):
            return .notMade(reason: "not applicable: \(reason)", modelFingerprint: modelFingerprint)
        case let .unreadable(error):
            return .notMade(reason: "could not be decoded: \(error.explanation)", modelFingerprint: modelFingerprint)
        }
    }
}
