import BoneTriage
import Foundation
import Testing

@Suite("Head study: the kernel-form solver, study combinations, the design comparison")
struct HeadStudyTests {
    /// n rows of d features whose first `informative` columns carry a linear signal.
    static func problem(n: Int, d: Int, informative: Int, seed: UInt64) -> (x: [Float], y: [Int]) {
        var rng = SplitMix(seed: seed)
        var x: [Float] = [], y: [Int] = []
        for _ in 0..<n {
            let row = (0..<d).map { _ in rng.normal() * 2 + 1 }
            let z = row.prefix(informative).reduce(-0.3 * Double(informative)) { $0 + 0.3 * $1 }
            x += row.map(Float.init)
            y.append(rng.uniform() < 1 / (1 + exp(-z)) ? 1 : 0)
        }
        return (x, y)
    }

    @Test("the kernel form reaches the primal fit's optimum, with fewer and with more features than rows",
          arguments: [(n: 80, d: 12), (n: 40, d: 150)])
    func kernelFormMatchesPrimal(shape: (n: Int, d: Int)) throws {
        let (x, y) = Self.problem(n: shape.n, d: shape.d, informative: 3, seed: UInt64(shape.d))
        for lambda in [0.5, 20.0] {
            let primal = try LogisticRegression.fit(x: x, y: y, dimensions: shape.d, lambda: lambda)
            let kernel = try KernelLogisticProblem(x: x, y: y, dimensions: shape.d).fit(lambda: lambda).head
            let scale = primal.weights.map { abs($0) }.max() ?? 1
            let largest = zip(primal.weights, kernel.weights).map { abs($0 - $1) }.max() ?? 1
            #expect(largest < 1e-4 * scale + 1e-6, "lambda \(lambda): weights differ by \(largest) (largest weight \(scale))")
            #expect(abs(primal.bias - kernel.bias) < 1e-4 * max(1, abs(primal.bias)))
        }
        #expect(throws: TrainingError.self) { try KernelLogisticProblem(x: [1, 2], y: [1, 1], dimensions: 1) }
        #expect(throws: TrainingError.self) { try KernelLogisticProblem(x: x, y: y, dimensions: shape.d).fit(lambda: 0) }
    }

    @Test("the ways of combining a study's images give their defined values")
    func combinations() {
        let p = [0.2, 0.6]
        #expect(abs(StudyCombination.meanProbability.combine(p) - 0.4) < 1e-12)
        let meanLogit = (log(0.2 / 0.8) + log(0.6 / 0.4)) / 2
        #expect(abs(StudyCombination.meanLogit.combine(p) - 1 / (1 + exp(-meanLogit))) < 1e-12)
        #expect(abs(StudyCombination.probabilityWeighted.combine(p) - 0.5) < 1e-12)  // (0.04 + 0.36) / 0.8
        #expect(StudyCombination.maximum.combine(p) == 0.6)
        #expect(StudyCombination.meanProbability.combine([]).isNaN)
        #expect(StudyCombination.meanLogit.combine([1, 1]) > 0.999)
    }

    @Test("a feature bank gives the named blocks' columns and refuses unknown blocks or variants")
    func bankColumns() throws {
        var bank = FeatureBank(blocks: [("a", 2), ("b", 3)], rows: 2)
        let area = FeatureBank.Variant(filter: .area, mirrored: false)
        try bank.add(area, features: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        #expect(try bank.columns(area, blocks: ["b"]).values == [3, 4, 5, 8, 9, 10])
        #expect(try bank.columns(area, blocks: ["b", "a"]).values == [3, 4, 5, 1, 2, 8, 9, 10, 6, 7])
        #expect(try bank.columns(area, blocks: ["a", "b"]).width == 5)
        #expect(throws: TrainingError.self) { try bank.columns(area, blocks: ["c"]) }
        #expect(throws: TrainingError.self) { try bank.columns(.init(filter: .nearest, mirrored: false), blocks: ["a"]) }
        #expect(throws: TrainingError.self) { try bank.add(area, features: [1, 2]) }
        let variants = FeatureBank.variants(for: [HeadConfiguration(name: "x", flip: .testTime), HeadConfiguration(name: "y", filter: .nearest)])
        #expect(variants == [area, .init(filter: .area, mirrored: true), .init(filter: .nearest, mirrored: false)])
    }

    @Test("the comparison keeps a block that carries signal and rejects a flip that only adds noise")
    func comparisonKeepsWhatHelps() throws {
        // 300 patients with one two-image study each. Block "early" carries most of the signal, "late" a
        // little; the mirrored features are the plain ones plus heavy noise.
        let patients = 300, width = 6
        var rng = SplitMix(seed: 7)
        var images: [LabelledImage] = [], plain: [Float] = [], mirrored: [Float] = []
        for p in 0..<patients {
            let label = p % 2
            for i in 0..<2 {
                images.append(LabelledImage(path: "p\(p)/\(i).png", split: "train", bodyPart: "HUMERUS", patient: "patient\(p)",
                                            study: "patient\(p)/study1", label: label))
                let signal = Double(label) * 2 - 1
                let early = (0..<width).map { j in j < 3 ? 0.9 * signal + rng.normal() : rng.normal() }
                let late = (0..<width).map { j in j == 0 ? 0.15 * signal + rng.normal() : rng.normal() }
                plain += (early + late).map(Float.init)
                mirrored += (early + late).map { Float($0 + 4 * rng.normal()) }
            }
        }
        var bank = FeatureBank(blocks: [("early", width), ("late", width)], rows: images.count)
        try bank.add(.init(filter: .area, mirrored: false), features: plain)
        try bank.add(.init(filter: .area, mirrored: true), features: mirrored)
        var study = HeadStudy()
        study.lambdas = [1, 10, 100]
        let rows = try study.run(images: images, bank: bank, configurations: [
            HeadConfiguration(name: "late", blocks: ["late"]),
            HeadConfiguration(name: "early + late", blocks: ["early", "late"]),
            HeadConfiguration(name: "late, noisy flip", blocks: ["late"], flip: .testTime),
        ])
        #expect(rows.count == 3 && rows.allSatisfy { $0.foldAUROCs.count == 5 && $0.path.count == 3 })
        #expect(rows[0].difference == nil && !rows[0].clearlyHelps)
        #expect(rows[1].clearlyHelps, "gain \(String(describing: rows[1].difference))")
        #expect(rows[1].pooledAUROC > 0.9 && rows[0].pooledAUROC < 0.75)
        #expect(!rows[2].clearlyHelps, "gain \(String(describing: rows[2].difference))")
        let table = HeadStudy.markdown(rows, images: images.count, studies: patients, patients: patients, folds: 5)
        #expect(table.contains("| early + late | ") && table.contains("**yes**") && table.contains("(baseline)"))
        #expect(table.components(separatedBy: "\n").filter { $0.hasPrefix("| late") }.count == 4)
    }

    @Test("pooled block outputs: mixed10's part equals the daemon's pooled features; unknown blocks are refused")
    func pooledBlocks() throws {
        let size = 75
        let network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: size))
        let engine = try InceptionV3Engine(network: network, inputSize: size, threads: 2)
        var rng = SplitMix(seed: 3)
        let input = (0..<(2 * size * size * 3)).map { _ in Float(rng.uniform() * 2 - 1) }
        let pooled = try engine.pooledFeatures(input, batch: 2)
        let blocks = try engine.pooledBlockFeatures(input, batch: 2, blocks: ["mixed7", "mixed10"])
        #expect(blocks.count == 2 * (768 + 2048))
        for n in 0..<2 {
            let row = blocks[(n * 2816)..<((n + 1) * 2816)]
            #expect(Array(row.suffix(2048)) == Array(pooled[(n * 2048)..<((n + 1) * 2048)]))
        }
        var snapshot: ActivationSnapshot?
        _ = try engine.pooledFeatures(input, batch: 2) { stage, s in if stage == .mixed7 { snapshot = s } }
        let mixed7 = try #require(snapshot)
        let hw = mixed7.height * mixed7.width
        let channel5 = (0..<hw).reduce(Float(0)) { $0 + mixed7.values[(hw + $1) * 768 + 5] } / Float(hw)
        #expect(abs(blocks[2816 + 5] - channel5) < 1e-4 * max(1, abs(channel5)))
        #expect(throws: EngineError.unknownBlock("mixed11")) { try engine.pooledBlockFeatures(input, batch: 2, blocks: ["mixed11"]) }
    }

    @Test("mirroring a model input flips each row and keeps the channels")
    func mirror() {
        let size = 3
        let input = (0..<(size * size * 3)).map(Float.init)
        let out = ModelInput.mirrored(input, size: size)
        #expect(Array(out[0..<3]) == Array(input[6..<9]) && Array(out[6..<9]) == Array(input[0..<3]))
        #expect(Array(out[12..<15]) == Array(input[12..<15]))
        #expect(ModelInput.mirrored(out, size: size) == input)
        // A batch of three: each image mirrored on its own, pixel for pixel.
        let batch = (0..<(3 * size * size * 3)).map { Float($0 * 7 % 31) }
        let flipped = ModelInput.mirrored(batch: batch, size: size)
        for n in 0..<3 { for y in 0..<size { for x in 0..<size { for c in 0..<3 {
            #expect(flipped[((n * size + y) * size + x) * 3 + c] == batch[((n * size + y) * size + (size - 1 - x)) * 3 + c])
        } } } }
    }
}

@Suite("A head that reads several blocks and scores each image mirrored too")
struct HeadReadingTests {
    static func model(size: Int, reading: HeadReading) throws -> TriageModel {
        let backbone = SyntheticWeights.backbone(variant: .keras, inputSize: size)
        let description = HeadDescription(
            modelID: "reading-test", backboneVariant: .keras, backboneSHA256: BackboneFingerprint.of(backbone), inputSize: size,
            inputRange: -1...1, resizeFilter: .area, threshold: 0.5, targetSensitivity: nil, bodyParts: ["HUMERUS"],
            trainingData: "none", trainedAt: "2026-12-01T00:00:00Z", crossValidation: "{}", reading: reading)
        let width = try #require(reading.featureWidth)
        let weights = (0..<width).map { Float(sin(Double($0) * 0.7)) * 0.02 }
        return try TriageModel(backbone: backbone, head: HeadFile(description: description, head: LogisticHead(weights: weights, bias: 0.1)))
    }

    @Test("the reading survives the model file; old files read mixed10 alone; wrong blocks or widths are refused")
    func modelFile() throws {
        let dir = try TemporaryDirectory()
        let reading = HeadReading(blocks: ["mixed7", "mixed10"], testTimeFlip: true)
        #expect(reading.featureWidth == 768 + 2048 && HeadReading.mixed10.featureWidth == 2048)
        #expect(HeadReading(blocks: ["mixed11"], testTimeFlip: false).featureWidth == nil && HeadReading(blocks: ["stem"], testTimeFlip: false).featureWidth == nil)
        try Self.model(size: 75, reading: reading).file.write(path: dir.path("m.safetensors"))
        let loaded = try TriageModel.load(path: dir.path("m.safetensors"))
        #expect(loaded.head.description.reading == reading && loaded.head.head.weights.count == 2816)
        try DaemonHarness.writeModel(to: dir.path("old.safetensors"), inputSize: 75)
        let old = try TriageModel.load(path: dir.path("old.safetensors"))
        #expect(old.head.description.reading == .mixed10)
        #expect(old.head.file.metadata["head_blocks"] == nil && old.head.file.metadata["test_time_flip"] == nil, "old heads keep their metadata")
        for (key, value, expected) in [("head_blocks", "mixed7,mixed12", "head_blocks"), ("test_time_flip", "maybe", "test_time_flip"),
                                       ("head_blocks", "mixed10,mixed9", "shape")] {
            var file = try SafeTensorsFile.read(path: dir.path("m.safetensors"))
            file.metadata[key] = value
            let error = #expect(throws: ModelFileError.self) { try HeadFile(file: file, path: "m.safetensors") }
            #expect("\(String(describing: error))".contains(expected) || expected == "shape", "\(String(describing: error))")
        }
    }

    @Test("the classifier scores an image as the mean of its own and its mirror image's probability from the named blocks")
    func classifierReadsTheBlocksAndFlips() throws {
        let size = 75
        let model = try Self.model(size: size, reading: HeadReading(blocks: ["mixed7", "mixed10"], testTimeFlip: true))
        let dir = try TemporaryDirectory()
        let picture = testPattern(width: 120, height: 90)
        try PNGReader.write(picture, to: dir.path("a.png"))
        let classifier = try StudyClassifier(model: model, threads: 2)
        guard case let .probability(p) = try #require(classifier.outcomes(paths: [dir.path("a.png")]).first) else {
            Issue.record("no probability"); return
        }
        let frame = try #require(IncomingImage.read(path: dir.path("a.png")).frames.first)
        let input = ModelInput.make(frame, spec: model.spec)
        let engine = try InceptionV3Engine(network: InceptionV3Network(weights: model.backbone), inputSize: size, threads: 2)
        let plain = try engine.pooledBlockFeatures(input, batch: 1, blocks: ["mixed7", "mixed10"])
        let mirrored = try engine.pooledBlockFeatures(ModelInput.mirrored(input, size: size), batch: 1, blocks: ["mixed7", "mixed10"])
        let expected = (model.head.head.probability(plain[...]) + model.head.head.probability(mirrored[...])) / 2
        #expect(abs(p - expected) < 1e-6, "\(p) vs \(expected)")
        #expect(abs(model.head.head.probability(plain[...]) - model.head.head.probability(mirrored[...])) > 1e-6,
                "the test pattern is not symmetric, so the flip matters")
    }
}
