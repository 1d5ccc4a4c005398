import Foundation

/// One image's result: its probability of abnormality, or why it was not classified.
public struct ImageResult: Sendable {
    public var path: String
    /// Mean over the image's frames; nil when not eligible.
    public var probability: Double?
    public var notApplicableReason: String?
}

/// A study's result: the mean of its eligible images' probabilities and the verdict at the model's threshold.
public struct StudyResult: Sendable {
    public var images: [ImageResult]
    public var probability: Double?
    public var verdict: Finding?
    public var threshold: Double
}

/// Runs a model on the images of one study. Not thread-safe (it owns an engine): one per worker.
public final class StudyClassifier {
    public let model: TriageModel
    let engine: InceptionV3Engine
    public var batchSize = 16

    public init(model: TriageModel, threads: Int = ProcessInfo.processInfo.activeProcessorCount) throws {
        self.model = model
        engine = try InceptionV3Engine(network: InceptionV3Network(weights: model.backbone), inputSize: model.spec.size, threads: threads)
    }

    /// Reads, renders and classifies every file; a file that cannot be read is an error (the caller
    /// decides whether to quarantine it), an ineligible one is reported with its reason.
    public func classify(paths: [String]) throws -> StudyResult {
        var results: [ImageResult] = []
        var inputs: [(image: Int, input: [Float])] = []
        for path in paths {
            let image = try IncomingImage.read(path: path)
            if case let .notApplicable(reason) = image.eligibility {
                results.append(ImageResult(path: path, probability: nil, notApplicableReason: reason))
                continue
            }
            results.append(ImageResult(path: path, probability: nil, notApplicableReason: nil))
            for frame in image.frames { inputs.append((results.count - 1, ModelInput.make(frame, spec: model.spec))) }
        }
        var sums = [Double](repeating: 0, count: results.count), counts = [Int](repeating: 0, count: results.count)
        var start = 0
        let d = InceptionV3Architecture.featureCount
        while start < inputs.count {
            let batch = Array(inputs[start..<min(inputs.count, start + batchSize)])
            let features = try engine.pooledFeatures(Array(batch.map(\.input).joined()), batch: batch.count)
            for (k, item) in batch.enumerated() {
                sums[item.image] += model.head.head.probability(features[(k * d)..<((k + 1) * d)])
                counts[item.image] += 1
            }
            start += batch.count
        }
        for i in results.indices where counts[i] > 0 { results[i].probability = sums[i] / Double(counts[i]) }
        let probabilities = results.compactMap(\.probability)
        let threshold = model.head.description.threshold
        let mean = probabilities.isEmpty ? nil : probabilities.reduce(0, +) / Double(probabilities.count)
        return StudyResult(images: results, probability: mean, verdict: mean.map { $0 >= threshold ? .abnormal : .normal }, threshold: threshold)
    }
}
