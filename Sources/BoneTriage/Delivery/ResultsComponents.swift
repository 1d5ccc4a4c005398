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

    public init(writer: any ResultObjectWriting, sender: any ResultSending, pictures: (any TriagePictureMaking)? = nil,
                heatmapSettled: (@Sendable (StudyImage) -> Bool)? = nil) {
        self.writer = writer
        self.sender = sender
        self.pictures = pictures
        self.heatmapSettled = heatmapSettled
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
