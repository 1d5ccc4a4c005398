import Foundation

/// What the daemon makes and sends results with (issue 13): the DICOM writer and the C-STORE sender,
/// and, for Secondary Captures, the picture maker and the heatmap hook. Injected, so that tests and the
/// other parts can give their own.
public struct ResultsComponents: Sendable {
    public var writer: any ResultObjectWriting
    public var sender: any ResultSending
    /// The pictures Secondary Captures carry. Nil: reports only (no Secondary Capture is queued, and the
    /// daemon says so at start). This is where the heatmap overlay's picture maker is wired in.
    public var pictures: (any TriagePictureMaking)?
    /// Whether an image's heatmap is settled (made, or will not be): a Secondary Capture of the image waits
    /// until it is. Nil: always settled. This is where the heatmap worker's state is wired in.
    public var heatmapSettled: (@Sendable (StudyImage) -> Bool)?
    /// With `pictures` nil: the daemon makes them from its own worklist once it is open, the heatmap
    /// overlays of `TriagePictureMaker`, each waiting for its image's heatmap (`withHeatmapOverlays`).
    public var heatmapOverlays: Bool

    public init(writer: any ResultObjectWriting, sender: any ResultSending, pictures: (any TriagePictureMaking)? = nil,
                heatmapSettled: (@Sendable (StudyImage) -> Bool)? = nil, heatmapOverlays: Bool = false) {
        self.writer = writer
        self.sender = sender
        self.pictures = pictures
        self.heatmapSettled = heatmapSettled
        self.heatmapOverlays = heatmapOverlays
    }

    /// The Secondary Captures' pictures as the daemon makes them: the radiograph with the heatmap the
    /// worklist holds for the study's current model (`TriagePictureMaker`). A capture waits until its
    /// image's heatmap is settled: made or recorded as impossible by that model, or never to be made
    /// (the study is outside `[heatmaps] compute`, the image was not classified, its file is gone); a
    /// picture without a heatmap says so in its band.
    /// `radiographs`: where the radiographs are rendered (the daemon's decoder process with `[triage] isolate_decoder`).
    public func withHeatmapOverlays(worklist: any WorklistStore, scope: HeatmapScope, maximumPixels: UInt64,
                                    radiographs: any RadiographSource = InProcessRadiographs()) -> ResultsComponents {
        var c = self
        c.pictures = TriagePictureMaker(worklist: worklist, maximumPixels: maximumPixels, requireHeatmap: false, radiographs: radiographs)
        c.heatmapSettled = { image in
            guard image.probability != nil, FileManager.default.fileExists(atPath: image.filePath),
                  let study = try? worklist.study(studyInstanceUID: image.studyInstanceUID) else { return true }
            let wanted: Bool
            switch scope {
            case .none: wanted = false
            case .all: wanted = study.state == .triaged
            case .flagged: wanted = study.state == .triaged && study.verdict == .abnormal
            }
            guard wanted else { return true }
            guard let stored = try? worklist.heatmap(sopInstanceUID: image.sopInstanceUID) else { return false }
            return stored.outcome.modelFingerprint == study.modelHash
        }
        return c
    }

    /// The destinations as the worklist queues for them: without Secondary Captures when there is no
    /// picture maker (a destination left with nothing to receive is left out).
    public func queueing(_ destinations: [ResultDestination]) -> [ResultDestination] {
        guard pictures == nil else { return destinations }
        return destinations.compactMap { d in
            var d = d
            d.kinds.remove(.secondaryCapture)
            return d.kinds.isEmpty ? nil : d
        }
    }
}

/// The delivery settings: `[delivery]` in the configuration.
public struct DeliveryPolicy: Sendable, Equatable {
    /// Seconds before the first retry of an object a destination could not take; doubled each time.
    public var firstRetry: Double
    /// The longest wait between two retries.
    public var maximumRetry: Double
    /// Objects sent to one destination over one association, at most.
    public var batchSize: Int

    public init(firstRetry: Double = 10, maximumRetry: Double = 600, batchSize: Int = 50) {
        self.firstRetry = firstRetry
        self.maximumRetry = maximumRetry
        self.batchSize = batchSize
    }

    /// The wait after the `failures`-th failed attempt in a row (1: `firstRetry`), doubling up to `maximumRetry`.
    public func retryDelay(afterFailures failures: Int) -> Double {
        let doublings = max(0, min(failures - 1, 30))
        return min(maximumRetry, firstRetry * pow(2, Double(doublings)))
    }
}
