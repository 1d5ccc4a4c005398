import CKernels

/// The number format of the convolutions' weights and inputs: float32 by default, bfloat16 where the CPU has
/// AVX512-BF16 and the administrator opts in (`[triage] precision`), and an emulation of bfloat16 with the
/// float32 kernels for the reduced-precision study (`bonetriage model precision`, issue 15), which runs on any CPU.
public struct ConvolutionArithmetic: Sendable, Equatable, CustomStringConvertible {
    public enum Format: String, Sendable, CaseIterable {
        case float32
        /// Weights (after batch norm is folded in) and inputs rounded to bfloat16 (round to nearest, ties to even),
        /// products and sums in float32; biases, pools and the head in float32. Computed by the AVX512-BF16
        /// kernel (VDPBF16PS), about twice the float32 kernel's speed per layer. Layers that run Winograd
        /// (3x3 and 5x5 on the early maps) stay in float32: Winograd saves as much there and rounds less.
        case bfloat16
        /// The same rounding in the same layers, emulated with the float32 kernels, so that the study (and the
        /// suite) runs on any CPU. No faster than float32.
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
    /// What `[triage] precision = "bfloat16"` runs: the stem in float32, which the study found necessary to keep
    /// every image within 0.01 of float32 (see the README's "Reduced precision").
    public static let bfloat16 = ConvolutionArithmetic(format: .bfloat16, float32Blocks: ["stem"])

    /// The precisions a user may choose in the configuration ([triage] precision).
    public static let selectable: [ConvolutionArithmetic] = [.float32, .bfloat16]

    /// The configuration's name for a selectable precision ("float32", "bfloat16"), else the format's name.
    public var name: String {
        format.rawValue + (float32Blocks.isEmpty || self == .bfloat16 ? "" : ", float32 in " + float32Blocks.joined(separator: ", "))
    }

    public var description: String { name }

    /// What the precision is, for `bonetriage bench`, `check-config` and the logs.
    public var summary: String {
        switch format {
        case .float32: "float32"
        case .bfloat16: "bfloat16 weights and inputs, float32 sums (AVX512-BF16)"
            + (float32Blocks.isEmpty ? "" : "; float32 in " + float32Blocks.joined(separator: ", ") + " and the Winograd layers")
        case .bfloat16Emulated: "bfloat16 emulated with the float32 kernels (study only)"
            + (float32Blocks.isEmpty ? "" : "; float32 in " + float32Blocks.joined(separator: ", "))
        }
    }

    /// Whether this CPU can run it: the real bfloat16 path needs AVX512-BF16 (Zen 4 and later, Xeon since Cooper Lake).
    public var isSupported: Bool { format != .bfloat16 || bt_bfloat16_supported() != 0 }

    /// The configuration's name of a selectable precision.
    public static func named(_ name: String) -> ConvolutionArithmetic? {
        let trimmed = name.trimmingCharacters(in: .whitespaces).lowercased()
        return selectable.first { $0.format.rawValue == trimmed }
    }

    /// The environment variable that sets the precision of the tools that have no configuration (`bench`,
    /// the benchmarks); the daemon reads `[triage] precision`.
    public static let environmentVariable = "BONETRIAGE_PRECISION"

    /// `name`, else $BONETRIAGE_PRECISION, else float32; a name that is not a selectable precision, or one
    /// this CPU cannot run, is refused.
    public static func named(_ name: String?, environment: [String: String]) throws -> ConvolutionArithmetic {
        guard let given = name ?? environment[environmentVariable], !given.trimmingCharacters(in: .whitespaces).isEmpty else { return .float32 }
        guard let arithmetic = named(given) else { throw EngineError.unknownPrecision(given) }
        guard arithmetic.isSupported else { throw EngineError.precisionUnsupported(arithmetic, cpu: CPUInfo.modelName) }
        return arithmetic
    }

    /// Whether the layer computes in the reduced format: a layer (named "<block>/..." as in
    /// InceptionV3Architecture) outside `float32Blocks` that is not a Winograd layer (see `Format.bfloat16`).
    func reduces(_ spec: ConvolutionSpec) -> Bool {
        format != .float32 && !float32Blocks.contains(String(spec.name.prefix { $0 != "/" })) && !PackedConvolution.winogradApplies(spec)
    }

    /// Whether the layer runs the AVX512-BF16 kernel.
    func runsBfloat16Kernel(_ spec: ConvolutionSpec) -> Bool { format == .bfloat16 && reduces(spec) }

    /// Rounds a layer's weights in place for the emulation (other layers are not touched, nor copied).
    func round(weights: inout [Float], of spec: ConvolutionSpec) {
        guard format == .bfloat16Emulated, reduces(spec) else { return }
        weights.withUnsafeMutableBufferPointer { bt_round_bfloat16($0.baseAddress, $0.count) }
    }

    /// The blocks with a layer that computes in the reduced format (whose inputs need a rounded copy).
    func reducedBlocks(of architecture: InceptionV3Architecture) -> Set<String> {
        Set(architecture.convolutions.filter(reduces).map { String($0.name.prefix { $0 != "/" }) })
    }

    /// For the emulation, the layer's input as the bfloat16 kernel reads it: a dense copy in `buffer`, rounded
    /// to bfloat16 (the map itself is left alone: pools and later layers read it in float32, as in the real path).
    func emulatedInput(_ map: FeatureMap, of spec: ConvolutionSpec, buffer: UnsafeMutablePointer<Float>?) -> FeatureMap {
        guard format == .bfloat16Emulated, reduces(spec) else { return map }
        guard let buffer else { preconditionFailure("\(spec.name) is emulated in bfloat16 but was given no buffer for its input's copy") }
        bt_round_bfloat16_copy(map.data, map.pixels, Int32(map.channels), Int32(map.pixelStride), buffer)
        return FeatureMap.dense(buffer, batch: map.batch, height: map.height, width: map.width, channels: map.channels)
    }
}
