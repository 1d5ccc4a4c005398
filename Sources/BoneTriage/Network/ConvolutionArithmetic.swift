import CKernels

/// The number format of the convolutions' weights and inputs. The daemon always computes in float32; the
/// others are for the reduced-precision study (`bonetriage model precision`, issue 15), which measures what
/// computing as AMX-BF16 or AVX512-BF16 hardware does would cost in accuracy before any such path ships.
public struct ConvolutionArithmetic: Sendable, Equatable {
    public enum Format: String, Sendable, CaseIterable {
        case float32
        /// Weights (after batch norm is folded in) and inputs rounded to bfloat16 (round to nearest, ties to
        /// even), products and sums in float32; biases, pools and the head in float32: what TDPBF16PS /
        /// VDPBF16PS compute. Emulated with the float32 kernels, so it is no faster here.
        case bfloat16Emulated = "bfloat16-emulated"
    }

    public var format: Format
    /// Blocks (stem, mixed0 ... mixed10) whose convolutions stay in float32 under a reduced format.
    public var float32Blocks: [String]

    public init(format: Format, float32Blocks: [String] = []) {
        self.format = format
        self.float32Blocks = format == .float32 ? [] : float32Blocks
    }

    public static let float32 = ConvolutionArithmetic(format: .float32)
    public static let bfloat16Emulated = ConvolutionArithmetic(format: .bfloat16Emulated)

    /// "float32", "bfloat16-emulated", or "bfloat16-emulated, float32 in stem, mixed10".
    public var name: String {
        format.rawValue + (float32Blocks.isEmpty ? "" : ", float32 in " + float32Blocks.joined(separator: ", "))
    }

    /// Whether the layer (named "<block>/..." as in InceptionV3Architecture) computes in the reduced format.
    func isReduced(layer: String) -> Bool {
        format != .float32 && !float32Blocks.contains(String(layer.prefix { $0 != "/" }))
    }

    /// Rounds a layer's weights in place to its format (a float32 layer's are not touched, nor copied).
    func round(weights: inout [Float], layer: String) {
        guard isReduced(layer: layer) else { return }
        weights.withUnsafeMutableBufferPointer { bt_round_bfloat16($0.baseAddress, $0.count) }
    }

    /// Rounds a layer's input map (or a channel slice of one) in place to its format.
    func round(input map: FeatureMap, layer: String) {
        guard isReduced(layer: layer) else { return }
        bt_round_bfloat16_map(map.data, map.pixels, Int32(map.channels), Int32(map.pixelStride))
    }
}
