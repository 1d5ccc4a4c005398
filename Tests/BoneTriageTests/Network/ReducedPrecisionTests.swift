import BoneTriage
import CKernels
import Foundation
import Testing

/// The reduced-precision study's emulation (issue 15): bfloat16 rounding, the engine with bfloat16 weights
/// and inputs, and `bonetriage model precision` end to end on a self-made MURA layout.
@Suite("Reduced precision: bfloat16 rounding, the emulated engine, the precision study")
struct ReducedPrecisionTests {
    static func rounded(_ values: [Float]) -> [Float] {
        var v = values
        v.withUnsafeMutableBufferPointer { bt_round_bfloat16($0.baseAddress, $0.count) }
        return v
    }

    @Test("bfloat16 rounding: to nearest, ties to even, infinities and NaN kept, idempotent, low 16 bits zero")
    func rounding() {
        let ulp = Float(1) / 128  // bfloat16's spacing in [1, 2): 7 stored mantissa bits
        let cases: [(Float, Float)] = [
            (1, 1), (1 + ulp / 2, 1),                           // a tie goes to the even neighbour (1.0)
            (1 + 3 * ulp / 2, 1 + 2 * ulp),                     // a tie between 1+ulp (odd) and 1+2ulp (even)
            (1 + ulp / 2 + ulp / 4096, 1 + ulp),                // just above the tie: up
            (1 + ulp / 2 - ulp / 4096, 1),                      // just below: down
            (-(1 + 3 * ulp / 2), -(1 + 2 * ulp)), (0, 0), (-0.0, -0.0),
            (.infinity, .infinity), (-.infinity, -.infinity), (.greatestFiniteMagnitude, .infinity),
            (3.14159265, 3.140625), (1e-3, 0.00099945068359375),
        ]
        let out = Self.rounded(cases.map(\.0))
        for ((input, expected), got) in zip(cases, out) {
            #expect(got == expected && got.sign == expected.sign, "\(input) rounded to \(got), expected \(expected)")
            #expect(got.bitPattern & 0xFFFF == 0 || !got.isFinite)
        }
        // NaNs stay NaNs, signalling (0x7F800001) or with every bit set (0xFFFFFFFF), where plain rounding
        // would make an infinity or wrap around to zero.
        #expect(Self.rounded([.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFFF_FFFF)]).allSatisfy { $0.isNaN })
        let random = (0..<4096).map { _ in Float.random(in: -1000...1000) }
        let once = Self.rounded(random)
        #expect(Self.rounded(once) == once, "rounding twice changes nothing")
        #expect(zip(random, once).allSatisfy { abs($0 - $1) <= abs($0) / 256 }, "relative error at most 2^-8")
    }

    @Test("the map form copies the slice's channels of each pixel, rounded, densely, and leaves the map alone")
    func mapSlice() {
        // 3 pixels, stride 5: channels 1 ..< 3 of each are the slice.
        let data = (0..<15).map { Float($0) + 1 + Float(1) / 300 }
        var copy = [Float](repeating: .nan, count: 7)
        data.withUnsafeBufferPointer { bt_round_bfloat16_copy($0.baseAddress.map { $0 + 1 }, 3, 2, 5, &copy) }
        #expect(Array(copy.prefix(6)) == Self.rounded([data[1], data[2], data[6], data[7], data[11], data[12]]))
        #expect(copy[6].isNaN, "nothing written past the copy")
        #expect(data == (0..<15).map { Float($0) + 1 + Float(1) / 300 })
    }

    @Test("the emulated bfloat16 engine stays close to float32 without being it, and is deterministic")
    func emulatedEngine() throws {
        let size = 75
        let image = SyntheticWeights.testImage(size: size, seed: 3).flatMap { v in Array(repeating: Float(v) / 127.5 - 1, count: 3) }
        func features(_ arithmetic: ConvolutionArithmetic, of input: [Float]? = nil) throws -> [Float] {
            let network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: size), arithmetic: arithmetic)
            #expect(network.arithmetic == arithmetic)
            return try InceptionV3Engine(network: network, inputSize: size, threads: 2).pooledFeatures(input ?? image, batch: 1)
        }
        let reference = try features(.float32), reduced = try features(.bfloat16Emulated)
        // The first convolution's input is rounded: an image already rounded to bfloat16 gives the same bits,
        // where float32 sees the difference.
        let preRounded = Self.rounded(image)
        #expect(preRounded != image)
        #expect(try features(.bfloat16Emulated, of: preRounded) == reduced)
        #expect(try features(.float32, of: preRounded) != reference)
        #expect(try features(.bfloat16Emulated) == reduced, "the same bits on a second run")
        #expect(reference != reduced, "rounding weights and inputs changes the result")
        let allBlocks = InceptionV3Architecture(variant: .keras).blocks.map(\.name)
        #expect(try features(ConvolutionArithmetic(format: .bfloat16Emulated, float32Blocks: allBlocks)) == reference,
                "every block kept in float32: float32's bits")
        let lateOnly = try features(ConvolutionArithmetic(format: .bfloat16Emulated, float32Blocks: allBlocks.filter { $0 != "mixed10" }))
        #expect(lateOnly != reference && lateOnly != reduced, "only mixed10 reduced: a third result")
        #expect(ConvolutionArithmetic(format: .float32, float32Blocks: ["stem"]) == .float32)
        #expect(ConvolutionArithmetic(format: .bfloat16Emulated, float32Blocks: ["stem", "mixed10"]).name == "bfloat16-emulated, float32 in stem, mixed10")
        let scale = reference.map(abs).max() ?? 0
        let worst = zip(reference, reduced).map { abs($0 - $1) }.max() ?? 0
        #expect(scale > 0 && worst / scale < 0.05, "largest difference \(worst) against values up to \(scale)")
    }
}

@Suite("bonetriage model precision", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct PrecisionStudyCommandTests {
    /// A head trained by `bonetriage train` on a self-made MURA layout, over synthetic 75-pixel weights.
    static func trainedModel(in dir: TemporaryDirectory) throws -> (data: String, model: String) {
        let tree = try FakeMura.make(in: dir.url, patients: 12)
        let backbone = dir.path("backbone.safetensors")
        try SyntheticWeights.backbone(variant: .keras, inputSize: 75).file.write(path: backbone)
        let train = try Executable.run(["train", "--data", tree, "--backbone", backbone, "--out", dir.path("head.safetensors"),
                                        "--model", dir.path("model.safetensors"), "--input-size", "75"])
        #expect(train.status == 0, "\(train.stderr)")
        return (tree, dir.path("model.safetensors"))
    }

    @Test("float32 against itself differs by nothing; bfloat16 is reported image by image and by cross-validated AUROC; bad options are refused")
    func study() throws {
        let dir = try TemporaryDirectory()
        let (data, model) = try Self.trainedModel(in: dir)
        let images = try MuraDataset.scan(root: data, split: "train")
        let loaded = try TriageModel.load(path: model)

        let same = try PrecisionStudy().run(model: loaded, images: images, arithmetic: .float32)
        #expect(same.images == 24 && same.studies == 12 && same.imageDifferences.count == 24)
        #expect(same.maximumImageDifference == 0 && same.maximumStudyDifference == 0 && same.aurocDifference == 0
                && same.largestAUROCDifference == 0 && same.imageVerdictChanges == 0 && same.withinTolerance,
                "the comparison itself adds no difference")

        let run = try Executable.run(["model", "precision", "--data", data, "--model", model, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let object = try #require(try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "stdout: \(run.stdout) stderr: \(run.stderr)")
        // By default, what [triage] precision = "bfloat16" runs: the kernels where the CPU has them, else their emulation; the stem in float32.
        let automatic = ConvolutionArithmetic.bfloat16.isSupported ? "bfloat16" : "bfloat16-emulated"
        #expect(object["arithmetic"] as? String == automatic && object["float32_blocks"] as? [String] == ["stem"])
        #expect(object["images"] as? Int == 24 && object["studies"] as? Int == 12)
        let worst = try #require(object["image_difference_max"] as? Double)
        let mean = try #require(object["image_difference_mean"] as? Double)
        #expect(worst > 0 && mean > 0 && mean <= worst && worst < 0.5, "image differences \(mean) mean, \(worst) largest")
        let auroc32 = try #require(object["auroc_float32"] as? Double), aurocReduced = try #require(object["auroc_reduced"] as? Double)
        #expect((0...1).contains(auroc32) && (0...1).contains(aurocReduced))
        #expect(abs((object["auroc_difference"] as? Double ?? .nan) - (aurocReduced - auroc32)) < 1e-5)
        #expect((object["within_tolerance"] as? Bool) == (worst <= 0.01 && abs(aurocReduced - auroc32) <= 0.002))

        let text = try Executable.run(["model", "precision", "--data", data, "--model", model, "--patients", "6", "--arithmetic", "bfloat16-emulated",
                                       "--float32-blocks", ""])
        #expect(text.status == 0 && text.stdout.contains("bfloat16-emulated against float32") && text.stdout.contains("images:   12 in 6 studies")
                && text.stdout.contains("not a speed figure"), "\(text.stdout)\(text.stderr)")

        let float32 = try Executable.run(["model", "precision", "--data", data, "--model", model, "--arithmetic", "float32"])
        #expect(float32.status != 0 && float32.stderr.contains("--arithmetic must be one of bfloat16, bfloat16-emulated"))
        let unknownBlock = try Executable.run(["model", "precision", "--data", data, "--model", model, "--float32-blocks", "stem,mixed11"])
        #expect(unknownBlock.status != 0 && unknownBlock.stderr.contains("'mixed11' is not a block of Inception V3"))
        let kept = try Executable.run(["model", "precision", "--data", data, "--model", model, "--patients", "6", "--float32-blocks", "stem, mixed10", "--json"])
        let keptObject = try #require(try JSONSerialization.jsonObject(with: Data(kept.stdout.utf8)) as? [String: Any], "\(kept.stderr)")
        #expect(keptObject["float32_blocks"] as? [String] == ["stem", "mixed10"])
        let real = try Executable.run(["model", "precision", "--data", data, "--model", model, "--patients", "6", "--arithmetic", "bfloat16", "--json"])
        if ConvolutionArithmetic.bfloat16.isSupported {
            let realObject = try #require(try JSONSerialization.jsonObject(with: Data(real.stdout.utf8)) as? [String: Any], "\(real.stderr)")
            #expect(realObject["arithmetic"] as? String == "bfloat16" && realObject["float32_blocks"] as? [String] == ["stem"])
            #expect((realObject["image_difference_max"] as? Double ?? 0) > 0)
        } else {
            #expect(real.status != 0 && real.stderr.contains("needs AVX512-BF16"), "\(real.stderr)")
        }
        let missing = try Executable.run(["model", "precision", "--data", dir.path("nothing"), "--model", model])
        #expect(missing.status != 0 && missing.stderr.contains("not a folder"))
    }
}
