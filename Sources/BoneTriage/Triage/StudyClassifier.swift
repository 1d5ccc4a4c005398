import Foundation
import Synchronization

/// One image's result: its probability of abnormality, or why it was not classified.
public struct ImageResult: Sendable {
    public var path: String
    /// Mean over the image's frames; nil when not eligible.
    public var probability: Double?
    public var notApplicableReason: String?
}

/// A study's result: the mean of its eligible images' probabilities and the verdict at the model's threshold.
///
/// With a calibrated model (`model calibrate`), `probability` is the calibrated study probability and
/// `threshold` the calibrated threshold (the model's threshold mapped through the calibration); the
/// verdict is decided on the uncalibrated mean against the model's threshold, which gives the same
/// verdict (the calibration keeps the order) without rounding at the cut, and is what the daemon records.
public struct StudyResult: Sendable {
    public var images: [ImageResult]
    public var probability: Double?
    public var verdict: Finding?
    public var threshold: Double
    /// The mean of the eligible images' probabilities, before any calibration.
    public var uncalibratedProbability: Double?
    public var calibrated: Bool
}

/// Runs a model on the images of one study. Not thread-safe (it owns an engine): one per worker.
public final class StudyClassifier {
    public let model: TriageModel
    let engine: InceptionV3Engine
    public var batchSize = 16
    /// The convolutions' precision the classifier runs with.
    public var precision: ConvolutionArithmetic { engine.network.arithmetic }
    /// Images over this many pixels (rows x columns x frames) are refused before decoding.
    public var maximumPixels = DicomReader.defaultMaximumPixels

    /// `kernels` nil: $BONETRIAGE_KERNELS when set, else the CPU's best family. `precision` nil:
    /// $BONETRIAGE_PRECISION when set, else float32 (the daemon passes `[triage] precision`).
    public init(model: TriageModel, threads: Int = ProcessInfo.processInfo.activeProcessorCount, kernels: KernelFamily? = nil,
                precision: ConvolutionArithmetic? = nil) throws {
        self.model = model
        let arithmetic = try precision ?? ConvolutionArithmetic.named(nil, environment: ProcessInfo.processInfo.environment)
        engine = try InceptionV3Engine(network: InceptionV3Network(weights: model.backbone, arithmetic: arithmetic), inputSize: model.spec.size,
                                       threads: threads, kernels: kernels)
    }

    /// What became of one file: its probability, why it is not applicable, or why it could not be read.
    public enum ImageOutcome: Sendable {
        case probability(Double)
        case notApplicable(reason: String)
        case unreadable(any Error)
    }

    /// Reads, renders and classifies every file (all frames, batched); one outcome per file, in order.
    /// A file that cannot be read does not stop the others. `decoders` are where files are decoded,
    /// several at once when there are several (the daemon's workers use isolated child processes).
    public func outcomes(paths: [String], decoders: [any ImageDecoder] = [InProcessDecoder()]) -> [ImageOutcome] {
        var outcomes: [ImageOutcome] = []
        var inputs: [(image: Int, input: [Float])] = []
        for decoded in decode(paths, with: decoders) {
            switch decoded {
            case let .notApplicable(reason):
                outcomes.append(.notApplicable(reason: reason))
            case let .unreadable(error):
                outcomes.append(.unreadable(error))
            case let .inputs(frames):
                outcomes.append(.probability(.nan))
                for input in frames { inputs.append((outcomes.count - 1, input)) }
            }
        }
        var sums = [Double](repeating: 0, count: outcomes.count), counts = [Int](repeating: 0, count: outcomes.count)
        var start = 0
        while start < inputs.count {
            let batch = Array(inputs[start..<min(inputs.count, start + batchSize)])
            start += batch.count
            do {
                let probabilities = try engine.probabilities(of: batch.map(\.input), head: model.head.head, reading: model.head.description.reading)
                for (item, p) in zip(batch, probabilities) {
                    sums[item.image] += p
                    counts[item.image] += 1
                }
            } catch {
                for item in batch { outcomes[item.image] = .unreadable(error) }
            }
        }
        for i in outcomes.indices {
            guard case .probability = outcomes[i] else { continue }
            outcomes[i] = counts[i] > 0 ? .probability(sums[i] / Double(counts[i]))
                : .unreadable(ImagingError.undecodable(path: paths[i], reason: "the image has no frame"))
        }
        return outcomes
    }

    /// Each decoder takes the next file as it comes free; results in the order of `paths`.
    private func decode(_ paths: [String], with decoders: [any ImageDecoder]) -> [DecodedImage] {
        let spec = model.spec, limit = maximumPixels
        guard decoders.count > 1, paths.count > 1 else {
            let decoder = decoders.first ?? InProcessDecoder()
            return paths.map { decoder.decode(path: $0, spec: spec, maximumPixels: limit) }
        }
        let results = Mutex([DecodedImage?](repeating: nil, count: paths.count))
        let next = Atomic<Int>(0)
        let lanes = DecoderLanes(decoders: Array(decoders.prefix(paths.count)))
        DispatchQueue.concurrentPerform(iterations: lanes.decoders.count) { lane in
            while true {
                let index = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard index < paths.count else { return }
                let decoded = lanes.decoders[lane].decode(path: paths[index], spec: spec, maximumPixels: limit)
                results.withLock { $0[index] = decoded }
            }
        }
        return results.withLock { $0 }.enumerated().map { index, decoded in
            decoded ?? .unreadable(.undecodable(path: paths[index], reason: "it was not decoded"))
        }
    }

    /// Classifies a study's files; a file that cannot be read is an error (the caller decides whether to
    /// quarantine it), an ineligible one is reported with its reason.
    public func classify(paths: [String]) throws -> StudyResult {
        var results: [ImageResult] = []
        for (path, outcome) in zip(paths, outcomes(paths: paths)) {
            switch outcome {
            case let .probability(p): results.append(ImageResult(path: path, probability: p, notApplicableReason: nil))
            case let .notApplicable(reason): results.append(ImageResult(path: path, probability: nil, notApplicableReason: reason))
            case let .unreadable(error): throw error
            }
        }
        let probabilities = results.compactMap(\.probability)
        let threshold = model.head.description.threshold
        let mean = StudyRules.studyProbability(probabilities)
        let verdict = mean.map { StudyRules.verdict(probability: $0, threshold: threshold) }
        if let point = model.head.description.operatingPoint, let calibration = point.calibration {
            return StudyResult(images: results, probability: mean.map { calibration.calibrated($0) }, verdict: verdict,
                               threshold: point.calibratedThreshold ?? calibration.calibrated(threshold), uncalibratedProbability: mean, calibrated: true)
        }
        return StudyResult(images: results, probability: mean, verdict: verdict, threshold: threshold, uncalibratedProbability: mean, calibrated: false)
    }
}

/// Decoders handed to concurrent lanes: lane k uses decoder k alone, so no decoder (each one keeps a
/// child process and is not thread-safe) is ever used by two threads at once.
private struct DecoderLanes: @unchecked Sendable {
    let decoders: [any ImageDecoder]
}
