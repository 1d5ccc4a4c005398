import ArgumentParser
import BoneTriage
import Foundation

/// `bonetriage model precision`: what a reduced-precision engine would cost in accuracy on labelled images.
struct PrecisionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "precision",
        abstract: "Compare a reduced-precision engine with float32 on labelled images: each image's probability and the cross-validated study AUROC.",
        discussion: """
            Runs every image through the float32 engine and through the reduced one (bfloat16 weights and inputs, float32 sums), \
            scores them with the model's head as the daemon does, and fits heads by patient-grouped cross-validation on the float32 \
            features to score both. The bar of issue 15: every image within 0.01, the study AUROC within 0.002. --arithmetic bfloat16 \
            runs the AVX512-BF16 kernels the daemon runs with [triage] precision = "bfloat16" (the stem and the Winograd layers in \
            float32); bfloat16-emulated rounds as they do but computes with the float32 kernels, on any CPU. By default the study \
            answers "is [triage] precision = bfloat16 safe on these images": the kernels where the CPU has them, else their emulation, \
            with the stem in float32. About 2 minutes for MURA's 1,272 humerus images on 2 cores.
            """)

    @Option(help: "MURA-layout folder of labelled images.")
    var data: String
    @Option(help: "The split folder to use ('train', 'valid'); every image when the folder has no such split.")
    var split = "train"
    @Option(help: "The model file (default: the default model).")
    var model: String?
    @Option(help: "Reduced arithmetic to compare with float32: bfloat16 (the daemon's, needs AVX512-BF16) or bfloat16-emulated (any CPU). Default: bfloat16 where the CPU has AVX512-BF16, else bfloat16-emulated.")
    var arithmetic: String?
    @Option(help: ArgumentHelp("Blocks (stem, mixed0 ... mixed10) kept in float32, comma-separated, \"\" for none (default: stem, as [triage] precision = \"bfloat16\" runs).", valueName: "blocks"))
    var float32Blocks: String?
    @Option(help: "Use only the first N patients (in sorted order), for a quick look.")
    var patients: Int?
    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func run() throws {
        let automatic: ConvolutionArithmetic.Format = ConvolutionArithmetic.bfloat16.isSupported ? .bfloat16 : .bfloat16Emulated
        guard let format = arithmetic.map({ ConvolutionArithmetic.Format(rawValue: $0) }) ?? automatic, format != .float32 else {
            throw ValidationError("--arithmetic must be one of " + ConvolutionArithmetic.Format.allCases.filter { $0 != .float32 }.map(\.rawValue).joined(separator: ", "))
        }
        let blocks = float32Blocks.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
            ?? ConvolutionArithmetic.bfloat16.float32Blocks
        let known = InceptionV3Architecture(variant: .keras).blocks.map(\.name)
        if let unknown = blocks.first(where: { !known.contains($0) }) {
            throw ValidationError("--float32-blocks: '\(unknown)' is not a block of Inception V3 (its blocks: \(known.joined(separator: ", ")))")
        }
        let reduced = ConvolutionArithmetic(format: format, float32Blocks: blocks)
        guard reduced.isSupported else { throw EngineError.precisionUnsupported(reduced, cpu: CPUInfo.modelName) }
        if let patients, patients < 2 { throw ValidationError("--patients must be at least 2 (cross-validation needs both labels)") }
        let loaded = try TriageModel.load(path: try DefaultModel.resolve(model))
        var images = try MuraDataset.scan(root: data, split: split)
        if let patients {
            let kept = Set(Set(images.map(\.patient)).sorted().prefix(patients))
            images = images.filter { kept.contains($0.patient) }
        }
        let progress = ProgressLine("features")
        let report = try PrecisionStudy().run(model: loaded, images: images, arithmetic: reduced) { _, done, total in progress.update(done, total) }
        print(json ? report.json : report.text)
    }
}
