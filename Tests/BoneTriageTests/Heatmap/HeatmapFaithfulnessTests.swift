import BoneTriage
import Foundation
import Testing

/// Does the heatmap point at what the model uses? Hiding the hottest 10% of each image's input must lower
/// its probability clearly more than hiding a random 10%; a random heatmap and a constant one must not
/// pass the same criterion (so it cannot pass by construction).
@Suite("Heatmap faithfulness (MURA, default model)",
       .enabled(if: FaithfulnessData.available,
                "skipped: needs ../shared/data/MURA-v1.1 (the MURA humerus training split) and the default model .cache/models/humerus.safetensors (make model)"))
struct HeatmapFaithfulnessTests {
    static var modelPath: String { FaithfulnessData.modelPath }
    /// Images of abnormal studies, drawn with a fixed seed.
    static let sampleSize = 40
    static let seed: UInt64 = 13
    /// Random 10% regions per image (their mean is the baseline).
    static let randomDraws = 3

    /// Paired comparison of one way of choosing the 10% against the random baseline.
    struct Comparison: CustomStringConvertible {
        var name: String
        var drops: [Double]
        var baseline: [Double]
        var meanDrop: Double { drops.reduce(0, +) / Double(drops.count) }
        var meanBaseline: Double { baseline.reduce(0, +) / Double(baseline.count) }
        var gap: Double { meanDrop - meanBaseline }
        /// Standard error of the mean paired difference.
        var standardError: Double {
            let d = zip(drops, baseline).map { $0 - $1 }
            let m = d.reduce(0, +) / Double(d.count)
            let variance = d.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(max(1, d.count - 1))
            return (variance / Double(d.count)).squareRoot()
        }
        /// "Clearly more": at least 0.05 (5 points of probability) more on average, at least 1.5 times the
        /// random drop, and at least 3 standard errors above it.
        var passes: Bool { gap >= 0.05 && meanDrop >= 1.5 * meanBaseline && gap >= 3 * standardError }
        var description: String {
            String(format: "%@: mean drop %.4f when its hottest 10%% is hidden, random 10%% %.4f, gap %.4f (standard error %.4f) -> %@",
                   name, meanDrop, meanBaseline, gap, standardError, passes ? "passes" : "does not pass")
        }
    }

    /// The pixels of the hottest tenth of the input by the heatmap upsampled to it (ties in raster order).
    static func hottestTenth(_ heatmap: Heatmap, size: Int) -> [Bool] {
        let values = heatmap.upsampled(width: size, height: size)
        let order = values.indices.sorted { values[$0] != values[$1] ? values[$0] > values[$1] : $0 < $1 }
        var hidden = [Bool](repeating: false, count: size * size)
        for p in order.prefix(size * size / 10) { hidden[p] = true }
        return hidden
    }

    /// A random tenth: 10 distinct cells of the 10x10 grid the heatmap is made on.
    static func randomTenth(size: Int, random: inout SplitMix) -> [Bool] {
        var cells = Array(0..<100)
        for i in stride(from: 99, to: 0, by: -1) { cells.swapAt(i, Int(random.next() % UInt64(i + 1))) }
        var hidden = [Bool](repeating: false, count: size * size)
        func bound(_ k: Int) -> Int { OcclusionSensitivity.cellBoundary(k, cells: 10, size: size) }
        for cell in cells.prefix(10) {
            let r = cell / 10, c = cell % 10
            for y in bound(r)..<bound(r + 1) { for x in bound(c)..<bound(c + 1) { hidden[y * size + x] = true } }
        }
        return hidden
    }

    @Test("hiding the hottest 10% lowers p(abnormal) clearly more than a random 10%; a random or constant heatmap does not")
    func faithful() throws {
        let data = try #require(Fixtures.shared).appendingPathComponent("data")
        let csv = try String(contentsOf: data.appendingPathComponent("MURA-v1.1/train_image_paths.csv"), encoding: .utf8)
        var abnormal = csv.split(whereSeparator: \.isNewline).map(String.init).filter { $0.contains("_positive/") }.sorted()
        var random = SplitMix(seed: Self.seed)
        for i in stride(from: abnormal.count - 1, to: 0, by: -1) { abnormal.swapAt(i, Int(random.next() % UInt64(i + 1))) }
        let sample = Array(abnormal.prefix(Self.sampleSize))
        try #require(sample.count == Self.sampleSize, "the shared MURA split has fewer abnormal images than the sample")

        let model = try TriageModel.load(path: Self.modelPath)
        let size = model.spec.size
        let engine = try InceptionV3Engine(network: InceptionV3Network(weights: model.backbone), inputSize: size)
        let maker = OcclusionSensitivity(engine: engine, head: model.head.head, reading: model.head.description.reading, modelFingerprint: "default")
        var hot: [Double] = [], randomMap: [Double] = [], constant: [Double] = [], baseline: [Double] = []
        let started = Date()
        for path in sample {
            guard case let .inputs(frames) = InProcessDecoder.decode(path: data.appendingPathComponent(path).path, spec: model.spec,
                                                                     maximumPixels: DicomReader.defaultMaximumPixels),
                  let input = frames.first else {
                Issue.record("\(path) could not be decoded")
                continue
            }
            let heatmap = try maker.heatmap(input: input)
            let noise = Heatmap(rows: 10, columns: 10, values: (0..<100).map { _ in Float(random.next() % 1_000_000) / 1e6 },
                                method: "random", modelFingerprint: "default")
            let flat = Heatmap(rows: 10, columns: 10, values: [Float](repeating: 0.5, count: 100), method: "constant", modelFingerprint: "default")
            let fill = OcclusionSensitivity.fillValues(input)
            var inputs = [input] + [heatmap, noise, flat].map { OcclusionSensitivity.occluded(input, hidden: Self.hottestTenth($0, size: size), fill: fill) }
            for _ in 0..<Self.randomDraws {
                inputs.append(OcclusionSensitivity.occluded(input, hidden: Self.randomTenth(size: size, random: &random), fill: fill))
            }
            let p = try maker.probabilities(inputs)
            hot.append(p[0] - p[1])
            randomMap.append(p[0] - p[2])
            constant.append(p[0] - p[3])
            baseline.append(p[4...].map { p[0] - $0 }.reduce(0, +) / Double(Self.randomDraws))
        }
        let seconds = Date().timeIntervalSince(started)
        let results = [Comparison(name: "occlusion heatmap", drops: hot, baseline: baseline),
                       Comparison(name: "random heatmap", drops: randomMap, baseline: baseline),
                       Comparison(name: "constant heatmap", drops: constant, baseline: baseline)]
        print("heatmap faithfulness on \(hot.count) images of abnormal MURA humerus training studies (seed \(Self.seed)), "
              + String(format: "%.0f s", seconds) + ":")
        for r in results { print("  \(r)") }
        #expect(hot.count == Self.sampleSize)
        #expect(results[0].passes, "\(results[0])")
        #expect(!results[1].passes, "\(results[1])")
        #expect(!results[2].passes, "\(results[2])")
    }
}

/// What the faithfulness test needs: the shared MURA split and the default model.
enum FaithfulnessData {
    static let modelPath = Fixtures.repositoryRoot.appendingPathComponent(".cache/models/humerus.safetensors").path
    static var available: Bool {
        guard let shared = Fixtures.shared else { return false }
        return FileManager.default.fileExists(atPath: shared.appendingPathComponent("data/MURA-v1.1/train_image_paths.csv").path)
            && FileManager.default.fileExists(atPath: modelPath)
    }
}
