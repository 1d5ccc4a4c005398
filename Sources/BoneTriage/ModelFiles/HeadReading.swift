import Foundation

/// How a head reads the backbone: the blocks whose pooled outputs it takes (side by side, in order), and
/// whether each image is also scored mirrored left to right, its probability then the mean of the two.
/// Heads written before this was recorded read mixed10 alone, unmirrored.
public struct HeadReading: Sendable, Equatable {
    public var blocks: [String]
    public var testTimeFlip: Bool

    public static let mixed10 = HeadReading(blocks: ["mixed10"], testTimeFlip: false)

    public init(blocks: [String], testTimeFlip: Bool) {
        self.blocks = blocks
        self.testTimeFlip = testTimeFlip
    }

    /// Pooled values per image for these blocks, or nil when a block is not one of Inception V3's.
    public var featureWidth: Int? {
        let widths = Dictionary(InceptionV3Architecture(variant: .keras).blocks.map { ($0.name, $0.outputChannels) }, uniquingKeysWith: { a, _ in a })
        guard !blocks.isEmpty else { return nil }
        var total = 0
        for block in blocks {
            guard block != "stem", let width = widths[block] else { return nil }
            total += width
        }
        return total
    }

    /// In words, for `model show` and reports.
    public var summary: String {
        let pooled = blocks == ["mixed10"] ? "pooled mixed10 (2048 values)"
            : "pooled \(blocks.joined(separator: " + ")) (\(featureWidth ?? 0) values)"
        return pooled + (testTimeFlip ? "; each image also scored mirrored, probabilities averaged" : "")
    }
}

extension InceptionV3Engine {
    /// Each input's probability of abnormality under `head` read as `reading` (with a test-time flip:
    /// the mean of the input's and its mirror image's). The mirror images run as a second batch of the
    /// same size, so the engine's buffers, and the memory they take, are those of one batch.
    public func probabilities(of inputs: [[Float]], head: LogisticHead, reading: HeadReading) throws -> [Double] {
        guard !inputs.isEmpty else { return [] }
        return try probabilities(ofBatch: Array(inputs.joined()), count: inputs.count, head: head, reading: reading)
    }

    /// As `probabilities(of:)`, for `count` inputs laid one after another in `batch` ([count, size, size, 3]).
    public func probabilities(ofBatch batch: [Float], count: Int, head: LogisticHead, reading: HeadReading) throws -> [Double] {
        guard count > 0 else { return [] }
        let d = head.weights.count
        func features(_ batch: [Float]) throws -> [Float] {
            let features = try pooledBlockFeatures(batch, batch: count, blocks: reading.blocks)
            guard features.count == count * d else {
                throw ModelFileError.notAModel(path: "<head>", reason: "the head has \(d) weights for \(features.count / count) pooled features")
            }
            return features
        }
        let plain = try features(batch)
        let mirrored = reading.testTimeFlip ? try features(ModelInput.mirrored(batch: batch, size: inputSize)) : nil
        return head.probabilities(plain, mirrored: mirrored, count: count)
    }
}
