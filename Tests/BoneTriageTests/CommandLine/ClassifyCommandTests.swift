import BoneTriage
import Foundation
import Testing

@Suite("bonetriage classify", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct ClassifyCommandTests {
    @Test("per-image probabilities, the study mean and verdict; an unreadable file exits 1")
    func classify() throws {
        let dir = try TemporaryDirectory()
        let backbone = SyntheticWeights.backbone(variant: .keras, inputSize: 75)
        let description = HeadDescription(
            modelID: "synthetic", backboneVariant: .keras, backboneSHA256: BackboneFingerprint.of(backbone), inputSize: 75,
            inputRange: -1...1, resizeFilter: .area, threshold: 0.5, targetSensitivity: nil, bodyParts: ["HUMERUS"],
            trainingData: "none", trainedAt: "2026-11-26T00:00:00Z", crossValidation: "{}")
        let weights = (0..<2048).map { Float(sin(Double($0))) * 0.01 }
        let model = try TriageModel(backbone: backbone, head: HeadFile(description: description, head: LogisticHead(weights: weights, bias: 0)))
        try model.file.write(path: dir.path("m.safetensors"))
        try PNGReader.write(testPattern(), to: dir.path("a.png"))
        try PNGReader.write(testPattern(width: 80, height: 90), to: dir.path("b.png"))
        let r = try Executable.run(["classify", "--json", "--model", dir.path("m.safetensors"), dir.path("a.png"), dir.path("b.png")])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let images = try #require(object["images"] as? [[String: Any]])
        let ps = images.compactMap { $0["probability"] as? Double }
        #expect(ps.count == 2 && ps.allSatisfy { $0 > 0 && $0 < 1 })
        let study = try #require(object["probability"] as? Double)
        #expect(abs(study - (ps[0] + ps[1]) / 2) < 1e-12)
        #expect(object["verdict"] as? String == (study >= 0.5 ? "abnormal" : "normal"))
        // The same answer as the library computes.
        let library = try StudyClassifier(model: model).classify(paths: [dir.path("a.png"), dir.path("b.png")])
        #expect(abs((library.probability ?? -1) - study) < 1e-9)

        let text = try Executable.run(["classify", "--model", dir.path("m.safetensors"), dir.path("a.png")])
        #expect(text.status == 0 && text.stdout.contains("triage aid, not a diagnosis"))
        let bad = try Executable.run(["classify", "--model", dir.path("m.safetensors"), Fixtures.path("png/truncated.png")])
        #expect(bad.status == 1 && bad.stderr.contains("truncated.png"))
    }
}
