import BoneTriage
import Foundation
import Testing

@Suite("bonetriage train and evaluate", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct TrainingCommandTests {
    @Test("train writes a head and model; evaluate --json prints exactly the documented keys; a wrong backbone is refused")
    func trainAndEvaluate() throws {
        let dir = try TemporaryDirectory()
        let tree = try FakeMura.make(in: dir.url, patients: 12)
        let validation = try FakeMura.make(in: dir.url.appendingPathComponent("v"), patients: 6, split: "valid")
        let backbone = dir.path("backbone.safetensors")
        try SyntheticWeights.backbone(variant: .keras, inputSize: 75).file.write(path: backbone)
        let train = try Executable.run(["train", "--data", tree, "--backbone", backbone, "--out", dir.path("head.safetensors"),
                                        "--model", dir.path("model.safetensors"), "--input-size", "75", "--target-sensitivity", "0.9",
                                        "--cache", dir.path("cache")])
        #expect(train.status == 0, "\(train.stderr)")
        #expect(train.stdout.contains("training on 24 images, 12 studies, 12 patients"))
        let head = try HeadFile.load(path: dir.path("head.safetensors"))
        #expect(head.description.inputSize == 75 && head.description.targetSensitivity == 0.9 && head.description.bodyParts == ["HUMERUS"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path("cache")).isEmpty == false, "features are cached")
        // The default operating point: cross-validated on the training studies.
        let point = try #require(head.description.operatingPoint)
        #expect(point.source == .default && point.targetSensitivity == 0.9 && point.threshold == head.description.threshold && point.calibration == nil)
        #expect(point.abnormalStudies == 4 && point.normalStudies == 8 && point.sensitivity >= 0.9)

        let evaluation = try Executable.run(["evaluate", "--data", validation, "--model", dir.path("model.safetensors"), "--json", "--cache", dir.path("cache")])
        #expect(evaluation.status == 0, "\(evaluation.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(evaluation.stdout.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["images", "studies", "image_accuracy", "image_auroc", "study_accuracy", "study_auroc", "study_kappa",
                                     "sensitivity", "specificity", "threshold", "per_body_part", "study_evaluation", "left_out"])
        #expect(object["images"] as? Int == 12 && object["studies"] as? Int == 6)
        #expect((object["per_body_part"] as? [String: Any])?.keys.sorted() == ["HUMERUS"])

        let otherBackbone = dir.path("other.safetensors")
        try SyntheticWeights.backbone(variant: .fid2015, inputSize: 75).file.write(path: otherBackbone)
        let join = try Executable.run(["model", "join", "--backbone", otherBackbone, "--head", dir.path("head.safetensors"), "--out", dir.path("bad.safetensors")])
        #expect(join.status == 1 && join.stderr.contains("join the head with the backbone it was trained on"))
        #expect(!FileManager.default.fileExists(atPath: dir.path("bad.safetensors")))
        let noData = try Executable.run(["train", "--data", dir.path("nothing"), "--backbone", backbone, "--out", dir.path("x.safetensors")])
        #expect(noData.status == 1 && noData.stderr.contains("not a folder"))
    }
}
