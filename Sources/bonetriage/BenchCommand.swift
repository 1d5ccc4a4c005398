import ArgumentParser
import BoneTriage
import Foundation

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure the Inception V3 engine: ms per image at batch 1 and 16, GFLOP/s, peak RSS.",
        discussion: "Uses deterministic synthetic weights unless --weights names a backbone or model file; speed does not depend on the weights' values.")

    @Option(help: "A backbone or model file to run instead of synthetic weights.")
    var weights: String?
    @Option(help: "Square input size in pixels.")
    var inputSize: Int = 150
    @Option(help: "Worker threads for the engine (default: all cores).")
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Timed passes at batch 1 (batch 16 runs a quarter as many, at least 3).")
    var iterations: Int = 40
    @Flag(help: "Print one JSON object instead of text.")
    var json = false
    @Flag(help: "Also print the median time of each block (stem, mixed0 ... mixed10).")
    var profile = false

    func run() throws {
        let network = InceptionV3Network(weights: try weights.map { try InceptionV3Weights.load(path: $0) }
                                          ?? SyntheticWeights.backbone(variant: .keras, inputSize: inputSize))
        let report = try EngineBenchmark.run(network: network, inputSize: inputSize, threads: threads, iterations: iterations)
        if json {
            print(report.json)
        } else {
            print(report.text)
            if profile { print(report.profileText) }
        }
    }
}
