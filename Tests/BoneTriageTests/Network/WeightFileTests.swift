import BoneTriage
import Foundation
import Testing

@Suite("Weight files: round trip and refusal of broken files")
struct WeightFileTests {
    static let small = SafeTensorsFile(
        metadata: ["note": "tiny"],
        tensors: ["a": Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, -6.5]), "b": Tensor(shape: [1], values: [.pi])])

    @Test("a file reads back exactly, from disk and from memory, and encodes byte-identically")
    func roundTrip() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("t.safetensors")
        try Self.small.write(path: path)
        let fromDisk = try SafeTensorsFile.read(path: path)
        #expect(fromDisk.tensors == Self.small.tensors)
        #expect(fromDisk.metadata == Self.small.metadata)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(try SafeTensorsFile.decode(bytes).tensors == Self.small.tensors)
        #expect(try Self.small.encoded() == bytes)
        #expect((8 + Int(bytes[0])) % 8 == 0, "data section starts 8-byte aligned")
    }

    @Test("every truncation of a file is refused with a typed error, never a crash")
    func truncations() throws {
        let bytes = try Self.small.encoded()
        for cut in 0..<bytes.count {
            #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(bytes.prefix(cut)) }
        }
        let dir = try TemporaryDirectory()
        let path = dir.path("cut.safetensors")
        try bytes.prefix(bytes.count - 3).write(to: URL(fileURLWithPath: path))
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.read(path: path) }
    }

    @Test("missing files, absurd headers and bad entries say what is wrong")
    func malformed() throws {
        #expect(throws: SafeTensorsError.unreadable(path: "/nonexistent/x.safetensors", reason: "no such file")) {
            try SafeTensorsFile.read(path: "/nonexistent/x.safetensors")
        }
        func file(_ header: String, payload: Int = 0) -> Data {
            var d = Data()
            var n = UInt64(header.utf8.count).littleEndian
            withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
            d.append(Data(header.utf8))
            d.append(Data(count: payload))
            return d
        }
        var huge = Data([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F])
        huge.append(Data(count: 16))
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(huge) }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(file("[1,2]")) }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(file(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#, payload: 8)) }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, payload: 4)) }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(file(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, payload: 8)) }
        #expect(throws: SafeTensorsError.self) { try SafeTensorsFile.decode(file(#"{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}"#, payload: 8)) }
        #expect(throws: SafeTensorsError.unsupportedDType(path: "<memory>", name: "a", dtype: "I64")) {
            try SafeTensorsFile.decode(file(#"{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#, payload: 8))
        }
    }

    @Test("a backbone file missing a layer, with a wrong shape, NaN, or foreign metadata is refused")
    func backboneChecks() throws {
        let good = SyntheticWeights.backbone(variant: .keras).file
        let path = "b.safetensors"
        #expect(throws: Never.self) { try InceptionV3Weights(file: good, path: path) }

        var missing = good
        missing.tensors["mixed5/branch7x7/1/kernel"] = nil
        #expect(throws: SafeTensorsError.missingTensor(path: path, name: "mixed5/branch7x7/1/kernel")) { try InceptionV3Weights(file: missing, path: path) }

        var reshaped = good
        reshaped.tensors["stem/0/beta"] = Tensor(shape: [31], values: Array(repeating: 0, count: 31))
        #expect(throws: SafeTensorsError.wrongShape(path: path, name: "stem/0/beta", expected: [32], found: [31])) { try InceptionV3Weights(file: reshaped, path: path) }

        var poisoned = good
        poisoned.tensors["stem/0/kernel"]?.values[5] = .nan
        #expect(throws: SafeTensorsError.self) { try InceptionV3Weights(file: poisoned, path: path) }

        var negative = good
        negative.tensors["stem/0/moving_variance"]?.values[0] = -1
        #expect(throws: SafeTensorsError.self) { try InceptionV3Weights(file: negative, path: path) }

        for (key, value) in [("format", "other"), ("format_version", "99"), ("variant", "resnet"), ("input_size", "12"), ("input_range", "1,0")] {
            var foreign = good
            foreign.metadata[key] = value
            #expect(throws: SafeTensorsError.self, "metadata \(key)=\(value)") { try InceptionV3Weights(file: foreign, path: path) }
        }
    }
}
