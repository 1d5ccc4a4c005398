import ArgumentParser
import BoneTriage
import Foundation

struct ClassifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "classify",
        abstract: "Classify the images of one study (DICOM or PNG files) with a model, without the worklist.",
        discussion: "The study probability is the mean of its eligible images' probabilities. A triage aid, not a diagnosis.")

    @Argument(help: "The study's image files.")
    var files: [String]
    @Option(help: "The model file (default: the default model).")
    var model: String?
    @Flag(help: "One JSON object.")
    var json = false
    @Option(help: ArgumentHelp("Also make each file's heatmap (where the model looked) and write NAME-overlay.png and NAME-plain.png into this folder.",
                               valueName: "dir"))
    var pictures: String?

    func run() throws {
        if let pictures {
            let path = try DefaultModel.resolve(model)
            for line in try FilePictures.write(paths: files, model: try LoadedModel.load(path: path), folder: pictures) { print(line) }
            print("A triage aid, not a diagnosis.")
            return
        }
        let loaded = try TriageModel.load(path: try DefaultModel.resolve(model))
        let result = try StudyClassifier(model: loaded).classify(paths: files)
        if json {
            let object: [String: Any] = [
                "model_id": loaded.head.description.modelID, "threshold": result.threshold,
                "probability": result.probability ?? NSNull(), "verdict": result.verdict?.rawValue ?? NSNull(),
                "uncalibrated_probability": result.uncalibratedProbability ?? NSNull(), "calibrated": result.calibrated,
                "images": result.images.map { ["file": $0.path, "probability": $0.probability ?? NSNull(), "not_applicable": $0.notApplicableReason ?? NSNull()] as [String: Any] },
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        for image in result.images {
            let p = image.probability.map { String(format: "%.3f", $0) } ?? "n/a"
            print("\(p.padding(toLength: 6, withPad: " ", startingAt: 0)) \(image.path)" + (image.notApplicableReason.map { "  (\($0))" } ?? ""))
        }
        if let probability = result.probability, let verdict = result.verdict {
            print("study: " + String(format: "%.3f", probability) + (result.calibrated ? " calibrated" : "") + " -> \(verdict.rawValue.uppercased()) (threshold "
                  + String(format: "%.3f", result.threshold) + ", model \(loaded.head.description.modelID))")
        } else {
            print("study: not applicable (no eligible image)")
        }
        print("A triage aid, not a diagnosis.")
    }
}
