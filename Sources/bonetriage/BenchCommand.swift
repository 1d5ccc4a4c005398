import ArgumentParser
import BoneTriage
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the Inception V3 engine: ms per image at batch 1 and 16, GFLOP/s, peak RSS.",
        discussion: "Uses deterministic synthetic weights unless --weights names a backbone or model file; speed does not depend on the weights' values.",
        subcommands: [WorklistBenchCommand.self, HeatmapBenchCommand.self])

    @Option(help: "A backbone or model file to run instead of synthetic weights.")
    var weights: String?
    @Option(help: "Square input size in pixels.")
    var inputSize: Int = 150
    @Option(help: "Worker threads for the engine (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Timed passes at batch 1 (batch 16 runs a quarter as many, at least 3).")
    var iterations: Int = 40
    @Option(help: "Kernel family: auto (the CPU's best, or $BONETRIAGE_KERNELS), avx512, avx2, portable, or avx512-on-avx2 (the AVX-512 code compiled for AVX2, a test emulation).")
    var kernels = "auto"
    @Option(help: "Precision of the convolutions: float32, or bfloat16 (AVX512-BF16; the stem and Winograd layers stay float32). Default: float32, or $BONETRIAGE_PRECISION.")
    var precision: String?
    @Flag(help: "Print one JSON object instead of text.")
    var json = false
    @Flag(help: "Also print the median time of each block (stem, mixed0 ... mixed10).")
    var profile = false

    func run() throws {
        let family = try kernels == "auto" ? KernelFamily.fromEnvironment() : KernelFamily.named(kernels)
        let arithmetic = try ConvolutionArithmetic.named(precision, environment: ProcessInfo.processInfo.environment)
        let network = InceptionV3Network(weights: try weights.map { try InceptionV3Weights.load(path: $0) }
                                          ?? SyntheticWeights.backbone(variant: .keras, inputSize: inputSize), arithmetic: arithmetic)
        let report = try EngineBenchmark.run(network: network, inputSize: inputSize, threads: threads, iterations: iterations,
                                             kernels: family)
        if json {
            print(report.json)
        } else {
            print(report.text)
            if profile { print(report.profileText) }
        }
    }
}

/// `bonetriage bench heatmap`: what one image's heatmap costs on this CPU.
struct HeatmapBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heatmap",
        abstract: "Measure the heatmap (occlusion sensitivity) cost per image at several batch sizes, naming the CPU.",
        discussion: "Uses the model file given (its input size), else synthetic weights at --input-size; speed does not depend on the weights' values.")

    @Option(help: "A model file (`bonetriage model join`) to run instead of synthetic weights.")
    var model: String?
    @Option(help: "Square input size in pixels (without --model).")
    var inputSize: Int = 150
    @Option(help: "Worker threads for the engine (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Timed heatmaps per batch size.")
    var runs: Int = 3
    @Option(parsing: .upToNextOption, help: "Batch sizes to compare.")
    var batchSizes: [Int] = [16, 41, 82]

    func run() throws {
        let network: InceptionV3Network, head: LogisticHead, size: Int
        var reading = HeadReading.mixed10
        if let model {
            let loaded = try TriageModel.load(path: model)
            size = loaded.spec.size
            head = loaded.head.head
            reading = loaded.head.description.reading
            network = InceptionV3Network(weights: loaded.backbone)
        } else {
            size = inputSize
            head = LogisticHead(weights: (0..<2048).map { Float(sin(Double($0))) * 0.01 }, bias: 0)
            network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: inputSize))
        }
        print(try HeatmapBenchmark.run(network: network, head: head, reading: reading, inputSize: size, threads: threads, runs: runs,
                                       batchSizes: batchSizes.filter { $0 > 0 }).text)
    }
}

/// `bonetriage bench worklist`: the synthetic worklist that Benchmarks/worklist_scale.py times the CLI on.
struct WorklistBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worklist",
        abstract: "Build a synthetic worklist of N studies through the store (2.42 images each, 72% reviewed, about 3% flagged, over 180 days).",
        discussion: "Benchmarks/worklist_scale.py (make bench-worklist) then times list, export, show, confirm and override on it.")

    @Option(help: "How many studies.")
    var studies: Int = 100_000
    @Option(help: "The worklist to create: a SQLite file, or an empty PostgreSQL database (postgresql://...), whose schema is made as the daemon makes it.")
    var out: String
    @Flag(help: "Replace --out if it is a SQLite file that exists (a PostgreSQL database is never emptied: give a new one).")
    var force = false

    func run() throws {
        guard studies > 0 else { throw ValidationError("--studies must be positive, not \(studies)") }
        let location = WorklistLocation(out)
        if case let .sqlite(path) = location, FileManager.default.fileExists(atPath: path) {
            guard force else { throw ValidationError("\(path) already exists; add --force to replace it") }
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
        let store = try Worklist.open(location, role: .daemon)
        if case .postgresql = location {
            // Adding synthetic studies to a real worklist would mix them with patients' studies.
            let held = try store.counts(matching: WorklistFilter()).total
            guard held == 0 else {
                throw ValidationError("\(location) already holds \(held) studies; build the benchmark's worklist in an empty database "
                                      + "(createdb a new one, or drop this one if it is a benchmark's)")
            }
        }
        let summary = try ScaleWorklist.build(into: store, studies: studies) { progress in
            FileHandle.standardError.write(Data("\r\(progress)".utf8))
        }
        FileHandle.standardError.write(Data("\n".utf8))
        print("\(location): \(summary)")
    }
}
