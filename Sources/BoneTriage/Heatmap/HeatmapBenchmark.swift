import Foundation

/// `bonetriage bench heatmap`: the wall time of one image's heatmap (occlusion sensitivity, all its
/// forward passes) at several batch sizes, on this machine's CPU.
public struct HeatmapBenchmark: Sendable {
    public struct Row: Sendable {
        public var batchSize: Int
        /// Median over the timed runs, milliseconds per image.
        public var millisecondsPerImage: Double
        public var forwardPasses: Int
    }

    public var cpu: String
    public var threads: Int
    public var inputSize: Int
    public var method: String
    public var rows: [Row]

    /// The CPU's model name (from /proc/cpuinfo), with the number of logical CPUs.
    public static var cpuName: String { CPUInfo.summary }

    /// Times `runs` heatmaps (after one untimed) per batch size, on `input` (or a deterministic pseudo-random one).
    public static func run(network: InceptionV3Network, head: LogisticHead, reading: HeadReading = .mixed10, inputSize: Int, threads: Int, runs: Int,
                           batchSizes: [Int], input: [Float]? = nil) throws -> HeatmapBenchmark {
        let engine = try InceptionV3Engine(network: network, inputSize: inputSize, threads: threads)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let image = input ?? (0..<(inputSize * inputSize * 3)).map { _ -> Float in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(state >> 40) / Float(1 << 24) * 2 - 1
        }
        let maker = OcclusionSensitivity(engine: engine, head: head, reading: reading, modelFingerprint: "benchmark")
        var rows: [Row] = []
        for batch in batchSizes {
            maker.settings = OcclusionSettings(batchSize: batch)
            _ = try maker.heatmap(input: image)
            var times: [Double] = []
            for _ in 0..<max(1, runs) {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try maker.heatmap(input: image)
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            times.sort()
            rows.append(Row(batchSize: batch, millisecondsPerImage: times[times.count / 2],
                            forwardPasses: (maker.settings.positions * maker.settings.positions + 1) * (reading.testTimeFlip ? 2 : 1)))
        }
        return HeatmapBenchmark(cpu: cpuName, threads: threads, inputSize: inputSize, method: maker.method, rows: rows)
    }

    public var text: String {
        var lines = ["heatmap cost per image on \(cpu), \(threads) engine thread(s), \(inputSize)x\(inputSize) input",
                     "method: \(method)"]
        for r in rows {
            lines.append("  batch \(String(r.batchSize).padding(toLength: 3, withPad: " ", startingAt: 0)): "
                         + String(format: "%8.0f ms per image (%ld forward passes, %.1f ms each)", r.millisecondsPerImage, r.forwardPasses,
                                  r.millisecondsPerImage / Double(r.forwardPasses)))
        }
        return lines.joined(separator: "\n")
    }
}
