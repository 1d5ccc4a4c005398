import Foundation

/// What a backbone weight file says about itself (safetensors `__metadata__`).
public struct BackboneDescription: Sendable, Equatable {
    public static let format = "bonetriage-inception-v3"
    public static let formatVersion = "1"

    public var variant: InceptionVariant
    /// The square input size the weights are meant to be run at (any size >= 75 computes).
    public var inputSize: Int
    /// The model input for pixel value v in [0, 255] is `inputRange.lowerBound + v/255 * width`.
    public var inputRange: ClosedRange<Float>
    /// Free text: where the weights came from (package, file, checksum).
    public var provenance: String

    public init(variant: InceptionVariant, inputSize: Int, inputRange: ClosedRange<Float>, provenance: String) {
        self.variant = variant
        self.inputSize = inputSize
        self.inputRange = inputRange
        self.provenance = provenance
    }

    public var metadata: [String: String] {
        [
            "format": Self.format,
            "format_version": Self.formatVersion,
            "variant": variant.rawValue,
            "input_size": String(inputSize),
            "input_range": "\(inputRange.lowerBound),\(inputRange.upperBound)",
            "provenance": provenance,
        ]
    }

    public init(metadata: [String: String], path: String) throws {
        func require(_ key: String) throws -> String {
            guard let v = metadata[key] else {
                throw SafeTensorsError.malformed(path: path, reason: "metadata key '\(key)' is missing (not a BoneTriage backbone file)")
            }
            return v
        }
        guard try require("format") == Self.format else {
            throw SafeTensorsError.malformed(path: path, reason: "metadata 'format' is '\(metadata["format"] ?? "")', expected '\(Self.format)'")
        }
        guard try require("format_version") == Self.formatVersion else {
            throw SafeTensorsError.malformed(path: path, reason: "format_version '\(metadata["format_version"] ?? "")' is not supported by this BoneTriage (supports \(Self.formatVersion)); upgrade BoneTriage or re-import the backbone")
        }
        let variantText = try require("variant")
        guard let variant = InceptionVariant(rawValue: variantText) else {
            throw SafeTensorsError.malformed(path: path, reason: "unknown variant '\(variantText)' (known: keras, fid2015)")
        }
        let sizeText = try require("input_size")
        guard let size = Int(sizeText), size >= InceptionV3Architecture.minimumInputSize, size <= 4096 else {
            throw SafeTensorsError.malformed(path: path, reason: "input_size '\(sizeText)' must be a whole number from \(InceptionV3Architecture.minimumInputSize) to 4096")
        }
        let rangeText = try require("input_range")
        let parts = rangeText.split(separator: ",").compactMap { Float($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 2, parts[0].isFinite, parts[1].isFinite, parts[0] < parts[1] else {
            throw SafeTensorsError.malformed(path: path, reason: "input_range '\(rangeText)' must be 'low,high' with low < high")
        }
        self.init(variant: variant, inputSize: size, inputRange: parts[0]...parts[1], provenance: metadata["provenance"] ?? "")
    }
}

/// Raw per-layer parameters as stored: HWIO kernel plus batch-norm statistics.
public struct ConvolutionParameters: Sendable {
    public var kernel: Tensor
    public var beta: [Float]
    public var mean: [Float]
    public var variance: [Float]
    /// Batch-norm scale; absent (all ones) in both supported graphs.
    public var gamma: [Float]?

    public init(kernel: Tensor, beta: [Float], mean: [Float], variance: [Float], gamma: [Float]? = nil) {
        self.kernel = kernel
        self.beta = beta
        self.mean = mean
        self.variance = variance
        self.gamma = gamma
    }
}

/// A convolution with batch norm folded in: `relu(conv(x, kernel) + bias)`.
struct FoldedConvolution: Sendable {
    let spec: ConvolutionSpec
    /// Row-major [kh*kw*inputChannels, outputChannels], ready as GEMM operand B.
    var kernel: [Float]
    let bias: [Float]

    init(spec: ConvolutionSpec, parameters p: consuming ConvolutionParameters, epsilon: Float) {
        self.spec = spec
        let oc = spec.outputChannels
        var scale = [Double](repeating: 1, count: oc)
        var bias = [Float](repeating: 0, count: oc)
        for o in 0..<oc {
            let g = Double(p.gamma?[o] ?? 1)
            scale[o] = g / (Double(p.variance[o]) + Double(epsilon)).squareRoot()
            bias[o] = Float(Double(p.beta[o]) - Double(p.mean[o]) * scale[o])
        }
        var kernel = p.kernel.values
        p.kernel.values = []  // leaves `kernel` the only reference, so scaling it copies nothing
        for i in 0..<kernel.count {
            kernel[i] = Float(Double(kernel[i]) * scale[i % oc])
        }
        self.kernel = kernel
        self.bias = bias
    }

    /// Several 1x1 convolutions of the same input side by side as one: their output channels are
    /// concatenated in the given order.
    init(fusing parts: [FoldedConvolution], name: String) {
        let first = parts[0].spec
        let widths = parts.map(\.spec.outputChannels)
        let total = widths.reduce(0, +)
        spec = ConvolutionSpec(name, first.inputChannels, total, 1, 1)
        var kernel = [Float]()
        kernel.reserveCapacity(first.inputChannels * total)
        for row in 0..<first.inputChannels {
            for (part, width) in zip(parts, widths) {
                kernel.append(contentsOf: part.kernel[(row * width)..<((row + 1) * width)])
            }
        }
        self.kernel = kernel
        bias = parts.flatMap(\.bias)
    }
}

/// A whole Inception V3 backbone: its description and every layer's parameters.
public struct InceptionV3Weights: Sendable {
    public var description: BackboneDescription
    public var layers: [String: ConvolutionParameters]

    public var architecture: InceptionV3Architecture { InceptionV3Architecture(variant: description.variant) }

    public init(description: BackboneDescription, layers: [String: ConvolutionParameters]) {
        self.description = description
        self.layers = layers
    }

    public static func tensorNames(for spec: ConvolutionSpec) -> (kernel: String, beta: String, mean: String, variance: String, gamma: String) {
        (spec.name + "/kernel", spec.name + "/beta", spec.name + "/moving_mean", spec.name + "/moving_variance", spec.name + "/gamma")
    }

    /// Reads and checks a backbone (or a whole model file, whose extra tensors are ignored here).
    public init(file: SafeTensorsFile, path: String) throws {
        let description = try BackboneDescription(metadata: file.metadata, path: path)
        let architecture = InceptionV3Architecture(variant: description.variant)
        var layers: [String: ConvolutionParameters] = [:]
        for spec in architecture.convolutions {
            let names = Self.tensorNames(for: spec)
            let oc = spec.outputChannels
            let kernel = try file.tensor(names.kernel, shape: spec.kernelShape, path: path)
            let beta = try file.tensor(names.beta, shape: [oc], path: path).values
            let mean = try file.tensor(names.mean, shape: [oc], path: path).values
            let variance = try file.tensor(names.variance, shape: [oc], path: path).values
            let gamma = file.tensors[names.gamma] == nil ? nil : try file.tensor(names.gamma, shape: [oc], path: path).values
            guard variance.allSatisfy({ $0 >= 0 && $0.isFinite }) else {
                throw SafeTensorsError.malformed(path: path, reason: "'\(names.variance)' has a negative or non-finite variance")
            }
            guard kernel.values.allSatisfy(\.isFinite), beta.allSatisfy(\.isFinite), mean.allSatisfy(\.isFinite) else {
                throw SafeTensorsError.malformed(path: path, reason: "layer '\(spec.name)' holds NaN or infinite values")
            }
            layers[spec.name] = ConvolutionParameters(kernel: kernel, beta: beta, mean: mean, variance: variance, gamma: gamma)
        }
        self.init(description: description, layers: layers)
    }

    public static func load(path: String) throws -> InceptionV3Weights {
        try InceptionV3Weights(file: SafeTensorsFile.read(path: path), path: path)
    }

    /// The tensors and metadata of this backbone as a safetensors file.
    public var file: SafeTensorsFile {
        var out = SafeTensorsFile(metadata: description.metadata)
        for spec in architecture.convolutions {
            guard let p = layers[spec.name] else { continue }
            let names = Self.tensorNames(for: spec)
            out.tensors[names.kernel] = p.kernel
            out.tensors[names.beta] = Tensor(shape: [p.beta.count], values: p.beta)
            out.tensors[names.mean] = Tensor(shape: [p.mean.count], values: p.mean)
            out.tensors[names.variance] = Tensor(shape: [p.variance.count], values: p.variance)
            if let g = p.gamma { out.tensors[names.gamma] = Tensor(shape: [g.count], values: g) }
        }
        return out
    }
}
