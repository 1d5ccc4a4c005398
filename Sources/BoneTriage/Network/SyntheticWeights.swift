/// Deterministic, framework-independent Inception V3 weights from an integer hash.
///
/// Used where real weights are not the point: the Keras parity fixture (`tools/make_keras_fixture.py`
/// computes the very same values in Python, so only activations need committing, not 90 MB of
/// weights) and the speed benchmark. Scaled like He-uniform initialisation so activations keep their
/// magnitude through all 94 layers.
public enum SyntheticWeights {
    /// A 24-bit hash of (layer, tensor kind, element) mapped to [0, 1). Integer-exact in any language.
    public static func unit(layer: Int, salt: Int, index: Int) -> Double {
        let mask: UInt64 = 0xFFFF_FFFF
        var h = (UInt64(index) &* 2_654_435_761 &+ UInt64(layer + 1) &* 2_246_822_519 &+ UInt64(salt) &* 3_266_489_917) & mask
        h ^= h >> 15
        h = (h &* 2_246_822_519) & mask
        h ^= h >> 13
        return Double(h >> 8) / 16_777_216.0
    }

    public static func layer(_ spec: ConvolutionSpec, index layer: Int) -> ConvolutionParameters {
        let fanIn = Double(spec.kernelHeight * spec.kernelWidth * spec.inputChannels)
        let limit = (6.0 / fanIn).squareRoot()
        let count = spec.kernelShape.reduce(1, *)
        let kernel = (0..<count).map { Float((2 * unit(layer: layer, salt: 0, index: $0) - 1) * limit) }
        let oc = spec.outputChannels
        return ConvolutionParameters(
            kernel: Tensor(shape: spec.kernelShape, values: kernel),
            beta: (0..<oc).map { Float(0.1 * (2 * unit(layer: layer, salt: 1, index: $0) - 1)) },
            mean: (0..<oc).map { Float(0.1 * (2 * unit(layer: layer, salt: 2, index: $0) - 1)) },
            variance: (0..<oc).map { Float(0.5 + unit(layer: layer, salt: 3, index: $0)) })
    }

    public static func backbone(variant: InceptionVariant = .keras, inputSize: Int = 150) -> InceptionV3Weights {
        let architecture = InceptionV3Architecture(variant: variant)
        var layers: [String: ConvolutionParameters] = [:]
        for (index, spec) in architecture.convolutions.enumerated() {
            layers[spec.name] = layer(spec, index: index)
        }
        let range: ClosedRange<Float> = variant == .fid2015 ? -1...0.9921875 : -1...1
        return InceptionV3Weights(
            description: BackboneDescription(variant: variant, inputSize: inputSize, inputRange: range,
                                             provenance: "synthetic: SyntheticWeights hash, for tests and benchmarks only"),
            layers: layers)
    }

    /// A deterministic 8-bit test image, the same formula as the fixture script's.
    public static func testImage(size: Int, seed: Int) -> [UInt8] {
        (0..<(size * size)).map { p in
            let y = p / size, x = p % size
            let wave = (x * 7 + y * 3 + seed * 11) % 256
            let noise = Int(unit(layer: 1000 + seed, salt: 9, index: p) * 64)
            return UInt8((wave + noise) % 256)
        }
    }
}
