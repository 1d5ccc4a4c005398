import ArgumentParser
import BoneTriage
import Foundation

/// Progress on a terminal: images done / total, rate, time left. Silent when stderr is not a terminal.
final class ProgressLine {
    let start = Date()
    let label: String
    init(_ label: String) { self.label = label }
    func update(_ done: Int, _ total: Int) {
        guard isatty(STDERR_FILENO) != 0 else { return }
        let elapsed = Date().timeIntervalSince(start)
        let rate = Double(done) / max(elapsed, 1e-3)
        let eta = rate > 0 ? Double(total - done) / rate : 0
        FileHandle.standardError.write(Data(("\r\(label) \(done)/\(total) images  " + String(format: "%.1f/s  ETA %.0f s   ", rate, eta)).utf8))
        if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}

extension FlipUse: ExpressibleByArgument {}

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a logistic abnormality head on frozen Inception V3 features of MURA-layout data.",
        discussion: "Regularisation is chosen by 5-fold cross-validation grouped by patient, on study AUROC. Writes the head file (a few KB); join it with its backbone with `bonetriage model join`.")

    @Option(help: "MURA-layout folder (…/train/XR_<PART>/patient*/study*_positive|negative/*.png).")
    var data: String
    @Option(help: "The backbone file (from `bonetriage model import-backbone`).")
    var backbone: String
    @Option(help: "Labels in MURA's 'folder,label' CSV form (1 = abnormal), e.g. for DICOM studies; default: the folder names.")
    var labels: String?
    @Option(help: "Where to write the trained head.")
    var out: String?
    @Option(help: ArgumentHelp("Instead of training: cross-validate the head designs (flip, blocks mixed7-10, study combination, resize filter, each with its regularisation path) and write the comparison as Markdown to this file.", valueName: "file"))
    var study: String?
    @Option(help: ArgumentHelp("Write roc.png (with the operating point) and calibration.png from the cross-validated study probabilities into this folder.", valueName: "dir"))
    var plots: String?
    @Option(help: ArgumentHelp("The training time recorded in the head (ISO 8601); fixed by `make train-default` so retraining gives the same bytes. Default: now.", valueName: "time"))
    var trainedAt: String?
    @Option(help: "Also write the whole model (backbone + head) here.")
    var model: String?
    @Option(help: "Input size in pixels.")
    var inputSize: Int = 150
    @Option(help: "Resize filter: area or nearest.")
    var filter: ResizeFilter = .area
    @Option(help: ArgumentHelp("The blocks whose pooled outputs the head reads, comma-separated (mixed0 ... mixed10). The default won the head study (models/README.md).", valueName: "blocks"))
    var blocks: String = HeadDesign.blocks.joined(separator: ",")
    @Option(help: ArgumentHelp("The horizontal flip: none, test-time (each image also scored mirrored), or training-and-test-time (mirrored images also train).", valueName: "use"))
    var flip: FlipUse = HeadDesign.flip
    @Option(help: "Choose the threshold that reaches this study sensitivity in cross-validation (default: 0.5).")
    var targetSensitivity: Double?
    @Option(help: "An identifier stored in the model (default: derived from the body parts).")
    var modelID: String?
    @Option(help: "Feature cache folder (default: $XDG_CACHE_HOME/bonetriage/features).")
    var cache: String?

    func validate() throws {
        if let t = targetSensitivity, !(t > 0 && t < 1) { throw ValidationError("--target-sensitivity must be between 0 and 1, not \(t)") }
        switch (out, study) {
        case (nil, nil): throw ValidationError("give --out FILE to train a head, or --study FILE to compare head designs")
        case (.some, .some): throw ValidationError("--out trains a head and --study compares designs: give one of them")
        default: break
        }
        if HeadReading(blocks: blockList, testTimeFlip: false).featureWidth == nil {
            throw ValidationError("--blocks must list Inception V3 blocks (mixed0 ... mixed10), not '\(blocks)'")
        }
        if let trainedAt, (try? Date(trainedAt, strategy: .iso8601)) == nil {
            throw ValidationError("--trained-at must be an ISO 8601 time such as 2026-12-01T00:00:00Z, not '\(trainedAt)'")
        }
    }

    func run() throws {
        let images = try labels.map { try MuraDataset.scan(labels: $0, split: "train") } ?? MuraDataset.scan(root: data, split: "train")
        let weights = try InceptionV3Weights.load(path: backbone)
        let fingerprint = BackboneFingerprint.of(weights)
        let spec = ModelInputSpec(size: inputSize, range: weights.description.inputRange, filter: filter)
        let parts = Array(Set(images.map(\.bodyPart))).sorted()
        print("training on \(images.count) images, \(Set(images.map(\.study)).count) studies, \(Set(images.map(\.patient)).count) patients (\(parts.joined(separator: ", ")))")
        if let study {
            try runStudy(images: images, weights: weights, fingerprint: fingerprint, to: study)
            return
        }
        guard let out else { return }
        let reading = HeadReading(blocks: blockList, testTimeFlip: flip != .none)
        let network = InceptionV3Network(weights: weights)
        let extractor = try FeatureExtractor(network: network, fingerprint: fingerprint, spec: spec, cacheRoot: cache ?? FeatureExtractor.defaultCacheRoot,
                                             blocks: reading.blocks)
        let progress = ProgressLine("features")
        let features = try extractor.features(of: images.map(\.path)) { progress.update($0, $1) }
        var mirrored: [Float]?
        if flip != .none {
            let mirroredExtractor = try FeatureExtractor(network: network, fingerprint: fingerprint, spec: spec,
                                                         cacheRoot: cache ?? FeatureExtractor.defaultCacheRoot, blocks: reading.blocks, mirrored: true)
            let progress = ProgressLine("features (mirrored)")
            mirrored = try mirroredExtractor.features(of: images.map(\.path)) { progress.update($0, $1) }
        }
        print("head reads \(reading.summary)\(flip == .trainingAndTestTime ? "; mirrored images also train" : "")")
        let result = try HeadTrainer().train(images: images, features: features, mirrored: mirrored, flip: flip,
                                             targetSensitivity: targetSensitivity) { print($0) }
        let cv: [String: Any] = [
            "lambda": result.lambda, "folds": 5, "grouped_by": "patient", "blocks": reading.blocks, "flip": flip.rawValue,
            "study_auroc": result.studyFigures.auroc, "study_accuracy": result.studyFigures.accuracy, "study_kappa": result.studyFigures.kappa,
            "sensitivity": result.studyFigures.sensitivity, "specificity": result.studyFigures.specificity,
            "image_auroc": result.imageFigures.auroc, "image_accuracy": result.imageFigures.accuracy,
            "images": images.count, "studies": result.studyFigures.count,
        ]
        let cvText = String(decoding: (try? JSONSerialization.data(withJSONObject: cv, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
        let description = HeadDescription(
            modelID: modelID ?? "mura-\(parts.joined(separator: "-").lowercased())-logistic", backboneVariant: weights.description.variant,
            backboneSHA256: fingerprint, inputSize: inputSize, inputRange: spec.range, resizeFilter: filter, threshold: result.threshold,
            targetSensitivity: targetSensitivity, bodyParts: parts,
            trainingData: "\(images.count) images / \(result.studyFigures.count) studies in MURA layout under \(URL(fileURLWithPath: data).lastPathComponent)",
            trainedAt: trainedAt ?? Date().formatted(.iso8601), crossValidation: cvText,
            operatingPoint: OperatingPoint.measured(
                source: .default, targetSensitivity: targetSensitivity, threshold: result.threshold,
                scores: result.crossValidatedStudies.map(\.probability), labels: result.crossValidatedStudies.map(\.label),
                identifiers: result.crossValidatedStudies.map { LabelledStudyScoring.identifier($0.identifier, base: labels.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path } ?? data) },
                data: "cross-validated (5 folds by patient) on the training split: \(URL(fileURLWithPath: data).lastPathComponent)",
                calibration: nil, setAt: trainedAt ?? Date().formatted(.iso8601)),
            reading: reading)
        let head = HeadFile(description: description, head: result.head)
        try head.file.write(path: out)
        print(String(format: "cross-validated (5 folds by patient, lambda %g): study AUROC %.4f, study accuracy %.4f, kappa %.4f, sensitivity %.4f, specificity %.4f at threshold %.4f",
                     result.lambda, result.studyFigures.auroc, result.studyFigures.accuracy, result.studyFigures.kappa,
                     result.studyFigures.sensitivity, result.studyFigures.specificity, result.threshold))
        print("wrote \(out)")
        if let plots {
            let evaluation = StudyEvaluation(studies: result.crossValidatedStudies, model: description)
            for file in try EvaluationPlots.write(evaluation, folder: plots) { print("wrote \(file)") }
        }
        if let model {
            try TriageModel(backbone: weights, head: head).file.write(path: model)
            print("wrote \(model)")
        }
    }
}

extension TrainCommand {
    /// `--study`: every design of `HeadConfiguration.standardSet` on the same folds, written as Markdown.
    var blockList: [String] { blocks.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func runStudy(images: [LabelledImage], weights: consuming InceptionV3Weights, fingerprint: String, to path: String) throws {
        let range = weights.description.inputRange
        let configurations = HeadConfiguration.standardSet
        let network = InceptionV3Network(weights: weights)
        var progress: (name: String, line: ProgressLine)?
        let bank = try FeatureBank.extract(
            paths: images.map(\.path), network: network, fingerprint: fingerprint, size: inputSize, range: range,
            variants: FeatureBank.variants(for: configurations), blocks: ["mixed7", "mixed8", "mixed9", "mixed10"],
            cacheRoot: cache ?? FeatureExtractor.defaultCacheRoot) { name, done, total in
                if progress?.name != name { progress = (name, ProgressLine("features (\(name))")) }
                progress?.line.update(done, total)
            }
        print("comparing \(configurations.count) head designs (5 folds by patient)")
        let rows = try HeadStudy().run(images: images, bank: bank, configurations: configurations) { print($0) }
        let text = HeadStudy.markdown(rows, images: images.count, studies: Set(images.map(\.study)).count,
                                      patients: Set(images.map(\.patient)).count, folds: 5)
        try Data((text + "\n").utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        print(text)
        print("wrote \(path)")
    }
}

struct EvaluateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "evaluate",
        abstract: "Evaluate a model on labelled studies (MURA layout, or DICOM with a labels CSV), per body part and overall, with confidence intervals and the calibration error.",
        discussion: "Images are scored as the daemon scores them (ineligible images left out; study probability = mean of its eligible images'). Study AUROC with DeLong's 95% interval; sensitivity and specificity at the model's threshold with Wilson 95% intervals; expected calibration error (10 equal-width bins) and Brier score of the probabilities the model reports (calibrated when it was calibrated).")

    @Option(help: "MURA-layout folder; its 'valid' split is used when present, else every image.")
    var data: String
    @Option(help: "The model file (default: the default model).")
    var model: String?
    @Option(help: "Labels in MURA's 'folder,label' CSV form (1 = abnormal), e.g. DICOM studies listed by `bonetriage export --mura`; default: the folder names.")
    var labels: String?
    @Flag(help: "One JSON object (overall figures at the top level, plus per_body_part and study_evaluation).")
    var json = false
    @Option(help: ArgumentHelp("Write roc.png (the ROC curve with the operating point) and calibration.png (reliability plot) into this folder.", valueName: "dir"))
    var plots: String?
    @Option(help: "Unused: evaluate scores images through the daemon's path, without the feature cache (kept so scripts keep working).")
    var cache: String?

    func run() throws {
        let path = try DefaultModel.resolve(model)
        let loaded = try TriageModel.load(path: path)
        let images = try labels.map { try MuraDataset.scan(labels: $0, split: "valid") } ?? MuraDataset.scan(root: data, split: "valid")
        let base = labels.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path } ?? data
        let progress = ProgressLine("scoring")
        let scored = try LabelledStudyScoring.score(images, model: loaded, identifierBase: base) { progress.update($0, $1) }
        guard !scored.images.isEmpty else {
            throw ValidationError("no eligible radiograph among the \(images.count) images: nothing to evaluate")
        }
        let report = EvaluationReport(images: scored.images, probabilities: scored.imageProbabilities, threshold: loaded.head.description.threshold)
        let evaluation = StudyEvaluation(studies: scored.studies, model: loaded.head.description)
        var written: [String] = []
        if let plots { written = try EvaluationPlots.write(evaluation, folder: plots) }
        if json {
            print(report.json(adding: ["study_evaluation": evaluation.object, "left_out": scored.leftOut.map { ["study": $0.study, "reason": $0.reason] }]))
        } else {
            print(report.text)
            print(evaluation.text)
            for (study, reason) in scored.leftOut { print("left out \(study): \(reason)") }
            for file in written { print("wrote \(file)") }
        }
    }
}
