import BoneTriage
import Foundation
import Testing

@Suite("Training: logistic fit, metrics, model files")
struct TrainingTests {
    @Test("logistic regression recovers a known model")
    func knownProblem() throws {
        let trueW: [Double] = [1.5, -2.0, 0.0], trueB = 0.3
        var rng = SplitMix(seed: 42)
        let n = 6000
        var x: [Float] = [], y: [Int] = []
        for _ in 0..<n {
            let row = (0..<3).map { _ in rng.normal() }
            let z = zip(trueW, row).map { $0 * $1 }.reduce(trueB, +)
            x += row.map(Float.init)
            y.append(rng.uniform() < 1 / (1 + exp(-z)) ? 1 : 0)
        }
        let head = try LogisticRegression.fit(x: x, y: y, dimensions: 3, lambda: 1e-3)
        for (w, t) in zip(head.weights, trueW) { #expect(abs(Double(w) - t) < 0.15, "\(head.weights) vs \(trueW)") }
        #expect(abs(Double(head.bias) - trueB) < 0.15)
        // Strong regularisation shrinks the weights towards zero.
        let shrunk = try LogisticRegression.fit(x: x, y: y, dimensions: 3, lambda: 1e5)
        #expect(shrunk.weights.map { abs($0) }.max() ?? 1 < 0.2)
        #expect(throws: TrainingError.self) { try LogisticRegression.fit(x: [1, 2], y: [1, 1], dimensions: 1, lambda: 1) }
    }

    @Test("AUROC with ties, accuracy, kappa, sensitivity, specificity match hand-computed values")
    func metrics() {
        // Pairs (positive, negative): (0.4,0.1)=1, (0.4,0.4)=0.5, (0.8,0.1)=1, (0.8,0.4)=1 -> 3.5/4.
        #expect(Metrics.auroc(scores: [0.1, 0.4, 0.4, 0.8], labels: [0, 1, 0, 1]) == 0.875)
        #expect(Metrics.auroc(scores: [0.5, 0.5, 0.5], labels: [0, 1, 1]) == 0.5)
        #expect(Metrics.auroc(scores: [0.9, 0.1], labels: [0, 1]) == 0)
        let f = Metrics.figures(scores: [0.1, 0.4, 0.4, 0.8], labels: [0, 1, 0, 1], threshold: 0.5)
        // tp 1, fn 1, tn 2, fp 0: accuracy 0.75, chance agreement (1*2 + 3*2)/16 = 0.5, kappa 0.5.
        #expect(f.accuracy == 0.75 && f.kappa == 0.5 && f.sensitivity == 0.5 && f.specificity == 1)
        #expect(Metrics.threshold(forSensitivity: 0.5, scores: [0.1, 0.4, 0.4, 0.8], labels: [0, 1, 0, 1]) == 0.8)
        #expect(Metrics.threshold(forSensitivity: 1.0, scores: [0.1, 0.4, 0.4, 0.8], labels: [0, 1, 0, 1]) == 0.4)
    }

    @Test("a head joins only the backbone it was trained on; broken model files are refused")
    func modelFiles() throws {
        let keras = SyntheticWeights.backbone(variant: .keras, inputSize: 150)
        let description = HeadDescription(
            modelID: "t", backboneVariant: .keras, backboneSHA256: BackboneFingerprint.of(keras), inputSize: 150, inputRange: -1...1,
            resizeFilter: .area, threshold: 0.4, targetSensitivity: 0.9, bodyParts: ["HUMERUS"], trainingData: "none",
            trainedAt: "2026-11-26T00:00:00Z", crossValidation: "{}")
        let head = HeadFile(description: description, head: LogisticHead(weights: [Float](repeating: 0.001, count: 2048), bias: -0.2))
        let dir = try TemporaryDirectory()
        let path = dir.path("m.safetensors")
        try TriageModel(backbone: keras, head: head).file.write(path: path)
        let loaded = try TriageModel.load(path: path)
        #expect(loaded.head.description == description && loaded.head.head == head.head)
        #expect(loaded.spec == ModelInputSpec(size: 150, range: -1...1, filter: .area))

        var other = SyntheticWeights.backbone(variant: .keras, inputSize: 150)
        other.layers["stem/0"]?.beta[0] += 0.5
        #expect(throws: ModelFileError.self) { try TriageModel(backbone: other, head: head) }

        var poisoned = try SafeTensorsFile.read(path: path)
        poisoned.tensors["head/weights"]?.values[3] = .nan
        #expect(throws: ModelFileError.self) { try HeadFile(file: poisoned, path: path) }
        var foreign = try SafeTensorsFile.read(path: path)
        foreign.metadata["threshold"] = "1.5"
        #expect(throws: ModelFileError.self) { try HeadFile(file: foreign, path: path) }
        // A model whose backbone tensors were changed after joining is refused at load.
        var tampered = try SafeTensorsFile.read(path: path)
        tampered.tensors["mixed10/branch_pool/0/beta"]?.values[0] += 1
        try tampered.write(path: dir.path("tampered.safetensors"))
        #expect(throws: ModelFileError.self) { try TriageModel.load(path: dir.path("tampered.safetensors")) }
    }

    @Test("MURA's layout is read with labels, patients and studies; other layouts are refused")
    func muraLayout() throws {
        let dir = try TemporaryDirectory()
        let tree = try FakeMura.make(in: dir.url, patients: 3)
        let images = try MuraDataset.scan(root: tree, split: "train")
        #expect(images.count == 6 && Set(images.map(\.patient)).count == 3 && Set(images.map(\.study)).count == 3)
        #expect(images.allSatisfy { $0.bodyPart == "HUMERUS" && $0.split == "train" })
        #expect(images.filter { $0.label == 1 }.count == 2)
        #expect(throws: TrainingError.self) { try MuraDataset.scan(root: dir.path("nothing-here"), split: nil) }
        try FileManager.default.createDirectory(atPath: dir.path("flat"), withIntermediateDirectories: true)
        try PNGReader.write(testPattern(), to: dir.path("flat/a.png"))
        #expect(throws: TrainingError.self) { try MuraDataset.scan(root: dir.path("flat"), split: nil) }
    }

    @Test("DICOM studies labelled by a MURA-style CSV", .enabled(if: DicomTools.available, "skipped: img2dcm is not installed"))
    func dicomWithLabels() throws {
        let dir = try TemporaryDirectory()
        for (study, label) in [("patient1/studyA", 1), ("patient2/studyB", 0)] {
            let folder = dir.url.appendingPathComponent("data/train/XR_HUMERUS/\(study)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try DicomTools.writeBMP(testPattern(), to: dir.path("p.bmp"))
            for i in 1...2 { try DicomTools.run("img2dcm", ["-i", "BMP", dir.path("p.bmp"), folder.appendingPathComponent("\(i).dcm").path]) }
            _ = label
        }
        let csv = "data/train/XR_HUMERUS/patient1/studyA/,1\ndata/train/XR_HUMERUS/patient2/studyB/,0\n"
        try csv.write(toFile: dir.path("labels.csv"), atomically: true, encoding: .utf8)
        let images = try MuraDataset.scan(labels: dir.path("labels.csv"), split: "train")
        #expect(images.count == 4 && images.filter { $0.label == 1 }.count == 2 && Set(images.map(\.study)).count == 2)
        #expect(images.allSatisfy { $0.bodyPart == "HUMERUS" && $0.path.hasSuffix(".dcm") })
        try "data/train/XR_HUMERUS/patient9/none/,1\n".write(toFile: dir.path("bad.csv"), atomically: true, encoding: .utf8)
        #expect(throws: TrainingError.self) { try MuraDataset.scan(labels: dir.path("bad.csv"), split: nil) }
        try "data/train/XR_HUMERUS/patient1/studyA/,maybe\n".write(toFile: dir.path("bad2.csv"), atomically: true, encoding: .utf8)
        #expect(throws: TrainingError.self) { try MuraDataset.scan(labels: dir.path("bad2.csv"), split: nil) }
    }

    @Test("the default model joins the committed head with the imported backbone",
          .enabled(if: FileManager.default.fileExists(atPath: Fixtures.repositoryRoot.appendingPathComponent(".cache/models/humerus.safetensors").path),
                   "skipped: the default model was not built (make model needs the backbone wheel from PyPI)"))
    func defaultModel() throws {
        let model = try TriageModel.load(path: Fixtures.repositoryRoot.appendingPathComponent(".cache/models/humerus.safetensors").path)
        let committed = try HeadFile.load(path: Fixtures.repositoryRoot.appendingPathComponent("models/humerus-head.safetensors").path)
        #expect(model.head.head == committed.head && model.head.description == committed.description)
        #expect(model.backbone.description.variant == .fid2015 && model.spec.size == 150)
    }
}

/// A deterministic random source for tests.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func normal() -> Double { (-2 * log(max(uniform(), 1e-300))).squareRoot() * cos(2 * .pi * uniform()) }
}

/// A small MURA-layout tree of self-made PNGs: patient i has one study with two images.
enum FakeMura {
    static func make(in root: URL, patients: Int, split: String = "train") throws -> String {
        for p in 0..<patients {
            let label = p % 3 == 0 ? "positive" : "negative"
            let folder = root.appendingPathComponent("MURA/\(split)/XR_HUMERUS/patient\(String(format: "%05d", p))/study1_\(label)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for i in 1...2 {
                let image = testPattern(width: 40 + p, height: 30 + i)
                let shifted = Radiograph(width: image.width, height: image.height, channels: 1,
                                         pixels: image.pixels.map { label == "positive" ? 255 - $0 : $0 })
                try PNGReader.write(shifted, to: folder.appendingPathComponent("image\(i).png").path)
            }
        }
        return root.appendingPathComponent("MURA").path
    }
}

@Suite("The committed default head is reproducible", .enabled(if: Fixtures.shared != nil && FileManager.default.fileExists(atPath: Fixtures.repositoryRoot.appendingPathComponent(".cache/models/backbone-fid2015.safetensors").path),
                                                              "skipped: needs ../shared/data/MURA-v1.1 and the imported backbone (make model)"))
struct DefaultHeadReproductionTests {
    @Test("make train-default's command gives the committed head and plots byte for byte, with the cross-validated operating point for sensitivity 0.9")
    func reproduce() throws {
        let root = Fixtures.repositoryRoot
        let committedPath = root.appendingPathComponent("models/humerus-head.safetensors").path
        let committed = try HeadFile.load(path: committedPath)
        let data = try #require(Fixtures.shared).appendingPathComponent("data/MURA-v1.1").path
        let dir = try TemporaryDirectory()
        // The Makefile's train-default line (TRAIN_ENV, DEFAULT_HEAD_TIME), with outputs in a temporary folder.
        let run = try Executable.run(
            ["train", "--data", data, "--backbone", root.appendingPathComponent(".cache/models/backbone-fid2015.safetensors").path,
             "--target-sensitivity", "0.9", "--trained-at", committed.description.trainedAt,
             "--out", dir.path("head.safetensors"), "--plots", dir.path("plots")],
            environment: ["OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_NUM_THREADS": "1"])
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        let retrained = try Data(contentsOf: URL(fileURLWithPath: dir.path("head.safetensors")))
        let original = try Data(contentsOf: URL(fileURLWithPath: committedPath))
        #expect(retrained == original, "retraining gave other bytes: \(retrained.count) vs \(original.count) bytes; run make train-default and commit, or find what is not deterministic")
        for plot in ["roc.png", "calibration.png"] {
            let made = try Data(contentsOf: URL(fileURLWithPath: dir.path("plots/\(plot)")))
            let shipped = try Data(contentsOf: root.appendingPathComponent("docs/default-model/\(plot)"))
            #expect(made == shipped, "\(plot) differs from docs/default-model/\(plot)")
        }
        // The shipped operating point: the default one, cross-validated, for sensitivity 0.9, reached.
        let point = try #require(committed.description.operatingPoint)
        #expect(point.source == .default && point.targetSensitivity == 0.9 && point.sensitivity >= 0.9)
        #expect(point.abnormalStudies + point.normalStudies == 592 && committed.description.threshold == point.threshold)
    }
}

@Suite("Keras model import", .enabled(if: FileManager.default.fileExists(atPath: Fixtures.repositoryRoot.appendingPathComponent(".cache/keras-import/expected.json").path),
                                       "skipped: .cache/keras-import is absent (make keras-import-check needs TensorFlow from PyPI)"))
struct KerasImportTests {
    @Test("a Keras Inception V3 + sigmoid model converted by tools/import_keras_model.py gives Keras' probabilities")
    func convertedModelMatchesKeras() throws {
        let folder = Fixtures.repositoryRoot.appendingPathComponent(".cache/keras-import")
        let expected = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("expected.json"))) as? [String: Any])
        let probabilities = try #require(expected["probabilities"] as? [Double])
        let model = try TriageModel.load(path: folder.appendingPathComponent("model.safetensors").path)
        #expect(model.backbone.description.variant == .keras && model.spec.range == 0...1 && model.head.description.modelID == "seed-check")
        let engine = try InceptionV3Engine(network: InceptionV3Network(weights: model.backbone), inputSize: 150)
        let n = 150 * 150 * 3
        var inputs = [Float](repeating: 0, count: 3 * n)
        for i in 0..<n {
            inputs[n + i] = 1  // input 0 is all zeros
            inputs[2 * n + i] = Float(i % 256) / 255
        }
        let features = try engine.pooledFeatures(inputs, batch: 3)
        for k in 0..<3 {
            let p = model.head.head.probability(features[(k * 2048)..<((k + 1) * 2048)])
            #expect(abs(p - probabilities[k]) < 1e-4, "input \(k): \(p) vs Keras \(probabilities[k])")
        }
    }
}
