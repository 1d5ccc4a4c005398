import Foundation

/// Times the engine the way `bonetriage bench` reports it.
public struct EngineBenchmark: Sendable {
    public let inputSize: Int
    public let threads: Int
    /// The kernel family the engine ran with, and the CPU (model name, logical CPUs).
    public let kernels: KernelFamily
    /// The precision of the convolutions (float32, or bfloat16 where asked for).
    public let arithmetic: ConvolutionArithmetic
    public let cpu: String
    public let msPerImageBatch1: Double
    public let msPerImageBatch16: Double
    public let gflopsBatch16: Double
    public let peakRSSMegabytes: Double
    public let multiplyAddsPerImage: Int
    /// Layer parts the calling thread took over from a worker that had lost its core (WorkerPool.runGuarded):
    /// 0 on a quiet machine; under a busy neighbour, how often the takeover saved a wait.
    public let partsTakenOver: Int
    /// Median ms per block (whole batch) at batch 1 and batch 16, in network order.
    public let blockProfile: [(block: String, batch1: Double, batch16: Double)]

    /// `kernels` nil: $BONETRIAGE_KERNELS when set, else the CPU's best family.
    public static func run(network: InceptionV3Network, inputSize: Int, threads: Int, iterations: Int,
                           kernels: KernelFamily? = nil) throws -> EngineBenchmark {
        let engine = try InceptionV3Engine(network: network, inputSize: inputSize, threads: threads, kernels: kernels)
        var blockTimes: [Int: [String: [Double]]] = [1: [:], 16: [:]]
        func median(batch: Int, repeats: Int) throws -> Double {
            let image = SyntheticWeights.testImage(size: inputSize, seed: 1).flatMap { v in Array(repeating: Float(v) / 127.5 - 1, count: 3) }
            let input = Array((0..<batch).map { _ in image }.joined())
            _ = try engine.pooledFeatures(input, batch: batch)  // warm-up: allocates buffers, faults pages in
            var times: [Double] = []
            for _ in 0..<max(1, repeats) {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try engine.pooledFeatures(input, batch: batch, blockTime: { blockTimes[batch]?[$0, default: []].append($1) })
                times.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6 / Double(batch))
            }
            return times.sorted()[times.count / 2]
        }
        let b1 = try median(batch: 1, repeats: iterations)
        let b16 = try median(batch: 16, repeats: max(3, iterations / 4))
        let macs = network.architecture.multiplyAdds(inputSize: inputSize)
        func med(_ v: [Double]?) -> Double { guard let v, !v.isEmpty else { return 0 }; return v.sorted()[v.count / 2] }
        let profile = network.architecture.blocks.map { block in
            (block: block.name, batch1: med(blockTimes[1]?[block.name]), batch16: med(blockTimes[16]?[block.name]))
        }
        return EngineBenchmark(inputSize: inputSize, threads: threads, kernels: engine.kernels, arithmetic: network.arithmetic, cpu: CPUInfo.summary, msPerImageBatch1: b1, msPerImageBatch16: b16,
                               gflopsBatch16: 2 * Double(macs) / (b16 / 1000) / 1e9,
                               peakRSSMegabytes: ProcessMemory.peakResidentMegabytes(), multiplyAddsPerImage: macs,
                               partsTakenOver: engine.partsTakenOver, blockProfile: profile)
    }

    public var json: String {
        let object: [String: Any] = [
            "ms_per_image_batch1": (msPerImageBatch1 * 100).rounded() / 100,
            "ms_per_image_batch16": (msPerImageBatch16 * 100).rounded() / 100,
            "gflops_batch16": (gflopsBatch16 * 10).rounded() / 10,
            "peak_rss_mb": (peakRSSMegabytes * 10).rounded() / 10,
            "input_size": inputSize,
            "threads": threads,
            "kernels": kernels.rawValue,
            "precision": arithmetic.name,
            "cpu": cpu,
            "multiply_adds_per_image": multiplyAddsPerImage,
            "parts_taken_over": partsTakenOver,
        ]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// One line per block: median ms at batch 1 and per image at batch 16.
    public var profileText: String {
        (["block      ms (batch 1)  ms/image (batch 16)"] + blockProfile.map {
            $0.block.padding(toLength: 10, withPad: " ", startingAt: 0) + String(format: " %12.2f %20.2f", $0.batch1, $0.batch16 / 16)
        }).joined(separator: "\n")
    }

    public var text: String {
        """
        Inception V3 at \(inputSize)x\(inputSize), \(threads) thread(s), \(String(format: "%.2f", Double(multiplyAddsPerImage) / 1e9)) G multiply-adds per image
          CPU:      \(cpu)
          kernels:  \(kernels.rawValue) (\(kernels.summary))
          precision: \(arithmetic.name)\(arithmetic == .float32 ? "" : " (\(arithmetic.summary))")
          batch 1:  \(String(format: "%7.2f", msPerImageBatch1)) ms/image  (\(String(format: "%.1f", 1000 / msPerImageBatch1)) images/s)
          batch 16: \(String(format: "%7.2f", msPerImageBatch16)) ms/image  (\(String(format: "%.1f", 1000 / msPerImageBatch16)) images/s, \(String(format: "%.1f", gflopsBatch16)) GFLOP/s)
          peak RSS: \(String(format: "%.1f", peakRSSMegabytes)) MB
          parts taken over from a stalled worker: \(partsTakenOver)
        """
    }
}

/// The process's own memory figures from /proc (Linux).
public enum ProcessMemory {
    /// VmHWM: the peak resident set size so far, in MB (0 where /proc is unavailable).
    public static func peakResidentMegabytes() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kb = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
            return kb / 1024
        }
        return 0
    }
}
