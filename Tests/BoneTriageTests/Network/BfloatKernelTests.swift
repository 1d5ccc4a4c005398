import BoneTriage
import CKernels
import Foundation
import Testing

/// The bfloat16 path ([triage] precision = "bfloat16", issue 15): the conversion and the weight packing on
/// any CPU; the AVX512-BF16 kernel, the engine and the tools where the CPU has AVX512-BF16 (elsewhere those
/// tests say they were skipped). The kernel must give the float32 kernel's bits on the same values rounded to
/// bfloat16, which is what the study's emulation computes: a product of two bfloat16 values is exact in
/// float32, and the packing orders each pair so that VDPBF16PS adds in the float32 kernel's order.
@Suite("bfloat16 path: conversion, packing, the AVX512-BF16 kernel and engine")
struct BfloatKernelTests {
    static let hasBfloat16 = bt_bfloat16_supported() != 0
    static let skipReason: Comment = "skipped: this CPU (\(CPUInfo.modelName)) lacks AVX512-BF16; the emulation is checked instead"

    /// The upper 16 bits of `bt_round_bfloat16`'s result: what the conversion must store.
    static func bits(_ values: [Float]) -> [UInt16] {
        ReducedPrecisionTests.rounded(values).map { UInt16($0.bitPattern >> 16) }
    }

    @Test("the bfloat16 copy of a map rounds as the emulation does, each pair's even channel high, channel slices, odd counts padded with zero", arguments: [1, 2, 15, 16, 17, 31, 32, 33, 48, 71])
    func conversion(channels: Int) {
        let pixels = 5, stride = channels + 3
        let ulp = Float(1) / 128
        // Normal values, ties both ways, signed zeros and infinities (subnormals are flushed by the instruction; see bfloat16.c).
        let specials: [Float] = [1 + ulp / 2, 1 + 3 * ulp / 2, -(1 + ulp / 2), 0, -0.0, .infinity, -.infinity, 3.14159265, 1e-3, -65504]
        var source = ConvolutionKernelTests.values(pixels * stride, seed: UInt64(channels)).map { $0 * 300 }
        for (i, v) in specials.enumerated() where i < source.count { source[i] = v }
        let pairs = Int(bt_bfloat16_pairs(Int32(channels)))
        #expect(pairs == (channels + 1) / 2)
        var copy = [UInt16](repeating: 0xFFFF, count: pixels * 2 * pairs)
        bt_convert_bfloat16_map(source, pixels, Int32(channels), Int32(stride), &copy)
        for p in 0..<pixels {
            let values = Self.bits(Array(source[(p * stride)..<(p * stride + channels)])) + (channels % 2 == 1 ? [0] : [])
            // Each 32-bit word (little-endian: low half first in memory) holds channel 2q high, 2q+1 (or the pad) low.
            let expected = (0..<pairs).flatMap { q in [values[2 * q + 1], values[2 * q]] }
            let got = Array(copy[(p * 2 * pairs)..<((p + 1) * 2 * pairs)])
            #expect(got == expected, "pixel \(p) of \(channels) channels")
        }
    }

    @Test("packed bfloat16 weights: 16 float biases, then per tap and channel pair one word per output channel, high half the even channel")
    func packing() {
        let taps = 2, inputChannels = 3, outputChannels = 18  // two panels, the second 2 wide; pairs (0,1) and (2, pad)
        let weights = (0..<(taps * inputChannels * outputChannels)).map { Float($0) + 0.25 }
        let bias = (0..<outputChannels).map { Float(-$0) }
        let count = bt_packed_weights_bfloat16_count(Int32(taps), Int32(inputChannels), Int32(outputChannels))
        #expect(count == 2 * (16 + taps * 2 * 16))
        var packed = [Float](repeating: .nan, count: count)
        bt_pack_weights_bfloat16(weights, bias, Int32(taps), Int32(inputChannels), Int32(outputChannels), &packed)
        func word(_ i: Int) -> (lo: UInt16, hi: UInt16) { (UInt16(packed[i].bitPattern & 0xFFFF), UInt16(packed[i].bitPattern >> 16)) }
        func weight(_ t: Int, _ c: Int, _ o: Int) -> UInt16 { Self.bits([weights[(t * inputChannels + c) * outputChannels + o]])[0] }
        for panel in 0..<2 {
            let base = panel * (16 + taps * 2 * 16)
            for j in 0..<16 {
                let o = panel * 16 + j
                #expect(packed[base + j] == (o < outputChannels ? bias[o] : 0), "bias \(o)")
                for t in 0..<taps {
                    let first = word(base + 16 + (t * 2 + 0) * 16 + j), second = word(base + 16 + (t * 2 + 1) * 16 + j)
                    if o < outputChannels {
                        #expect(first.hi == weight(t, 0, o) && first.lo == weight(t, 1, o), "tap \(t), pair 0, channel \(o)")
                        #expect(second.hi == weight(t, 2, o) && second.lo == 0, "tap \(t), pair 1 (padded), channel \(o)")
                    } else {
                        #expect(first == (0, 0) && second == (0, 0), "beyond the last output channel: zero")
                    }
                }
            }
        }
    }

    /// Shapes that reach the kernel's edges: partial 12-pixel strips and 16-channel panels, odd channel counts,
    /// padding taps dropped per strip, 1x7 and 7x1 (visited column by column), strides, slices, and channel
    /// counts of the real network's size (several pairs per panel row).
    static let shapes = ConvolutionKernelTests.shapes + [
        ConvolutionKernelTests.Shape(batch: 2, height: 8, width: 8, inputChannels: 64, outputChannels: 48, kernelHeight: 1, kernelWidth: 1, stride: 1, padHeight: 0, padWidth: 0),
        ConvolutionKernelTests.Shape(batch: 1, height: 9, width: 9, inputChannels: 40, outputChannels: 36, kernelHeight: 3, kernelWidth: 3, stride: 2, padHeight: 0, padWidth: 0),
        ConvolutionKernelTests.Shape(batch: 1, height: 3, width: 3, inputChannels: 96, outputChannels: 32, kernelHeight: 3, kernelWidth: 3, stride: 1, padHeight: 1, padWidth: 1),
    ]

    @Test("the AVX512-BF16 kernel gives the float32 kernel's bits on bfloat16-rounded values, whole or split into rows and panels",
          .enabled(if: hasBfloat16, skipReason), arguments: shapes.indices)
    func kernel(index: Int) {
        let c = ConvolutionKernelTests.Case(Self.shapes[index], seed: UInt64(index) * 11 + 5)
        let s = c.shape
        let pixels = Int32(s.batch * s.outHeight * s.outWidth), panels = bt_panel_count(Int32(s.outputChannels))
        // The reference: the float32 kernel on rounded weights and a rounded input (slice channels only).
        var roundedWeights = ReducedPrecisionTests.rounded(c.weights)
        var reference = [Float](repeating: 0, count: bt_packed_weights_count(Int32(s.k), Int32(s.outputChannels)))
        bt_pack_weights(&roundedWeights, c.bias, Int32(s.k), Int32(s.outputChannels), &reference)
        var roundedInput = c.input
        for p in 0..<(roundedInput.count / c.inputStride) {
            let slice = (p * c.inputStride)..<(p * c.inputStride + s.inputChannels)
            roundedInput.replaceSubrange(slice, with: ReducedPrecisionTests.rounded(Array(roundedInput[slice])))
        }
        var rounded = c
        rounded.input = roundedInput
        // The AVX-512 family: 12-pixel strips like the bfloat16 kernel, so the same padding taps are dropped.
        let avx512 = Int32(BT_KERNELS_AVX512)
        let expected = rounded.run(outputStride: s.outputChannels, family: avx512) { d in bt_conv(d, reference, 0, pixels, 0, panels, 1) }
        let linearExpected = rounded.run(outputStride: s.outputChannels, family: avx512) { d in bt_conv(d, reference, 0, pixels, 0, panels, 0) }

        var packed = [Float](repeating: 0, count: bt_packed_weights_bfloat16_count(Int32(s.kernelHeight * s.kernelWidth), Int32(s.inputChannels), Int32(s.outputChannels)))
        bt_pack_weights_bfloat16(c.weights, c.bias, Int32(s.kernelHeight * s.kernelWidth), Int32(s.inputChannels), Int32(s.outputChannels), &packed)
        let inputPixels = s.batch * s.height * s.width
        var copy = [UInt16](repeating: 0xFFFF, count: inputPixels * 2 * Int(bt_bfloat16_pairs(Int32(s.inputChannels))))
        bt_convert_bfloat16_map(c.input, inputPixels, Int32(s.inputChannels), Int32(c.inputStride), &copy)

        let whole = c.run(outputStride: s.outputChannels + 3) { d in bt_conv_bfloat16(d, copy, packed, 0, pixels, 0, panels, 1) }
        let worst = zip(whole, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(whole == expected && expected.contains { $0 > 0 }, "\(s): largest difference \(worst)")
        #expect(c.relativeError(whole) < 0.02, "\(s): bfloat16 stays near the exact convolution")
        let pieces = c.run(outputStride: s.outputChannels) { d in
            let cut = pixels / 2 + 1
            for p in 0..<panels {
                bt_conv_bfloat16(d, copy, packed, 0, cut, p, p + 1, 1)
                bt_conv_bfloat16(d, copy, packed, cut, pixels, p, p + 1, 1)
            }
        }
        #expect(pieces == whole, "\(s): split into rows and panels")
        let linear = c.run(outputStride: s.outputChannels) { d in bt_conv_bfloat16(d, copy, packed, 0, pixels, 0, panels, 0) }
        #expect(linear.contains { $0 < 0 } && zip(linear, whole).allSatisfy { max($0, 0) == $1 }, "\(s): without the ReLU")
        #expect(linear == linearExpected, "\(s): without the ReLU, the float32 kernel's bits")
    }

    @Test("split output: the bfloat16 kernel writes the first panels to the second map, like the float32 one", .enabled(if: hasBfloat16, skipReason))
    func splitOutput() {
        let c = ConvolutionKernelTests.Case(ConvolutionKernelTests.shapes[5], seed: 99)  // 1x1, 40 output channels: panels 16 | 16 | 8
        let s = c.shape
        let pixels = s.batch * s.outHeight * s.outWidth
        var packed = [Float](repeating: 0, count: bt_packed_weights_bfloat16_count(1, Int32(s.inputChannels), Int32(s.outputChannels)))
        bt_pack_weights_bfloat16(c.weights, c.bias, 1, Int32(s.inputChannels), Int32(s.outputChannels), &packed)
        var copy = [UInt16](repeating: 0, count: pixels * 2 * Int(bt_bfloat16_pairs(Int32(s.inputChannels))))
        bt_convert_bfloat16_map(c.input, pixels, Int32(s.inputChannels), Int32(c.inputStride), &copy)
        let whole = c.run(outputStride: s.outputChannels) { d in bt_conv_bfloat16(d, copy, packed, 0, Int32(pixels), 0, 3, 1) }
        var leading = [Float](repeating: .nan, count: pixels * 20)
        let rest = c.runSplitOutput(into: &leading) { d in bt_conv_bfloat16(d, copy, packed, 0, Int32(pixels), 0, 3, 1) }
        for p in 0..<pixels {
            #expect(Array(leading[(p * 20)..<(p * 20 + 16)]) == Array(whole[(p * 40)..<(p * 40 + 16)]), "pixel \(p): the second map's channels")
            #expect(leading[p * 20 + 16].isNaN && rest[(p * 40)..<(p * 40 + 16)].allSatisfy(\.isNaN), "pixel \(p): nothing written elsewhere")
            #expect(Array(rest[(p * 40 + 16)..<(p * 40 + 40)]) == Array(whole[(p * 40 + 16)..<(p * 40 + 40)]), "pixel \(p): the rest")
        }
    }

    @Test("the bfloat16 engine gives the emulation's bits (stem and Winograd layers in float32), at batch 1 and 3, deterministically",
          .enabled(if: hasBfloat16, skipReason))
    func engine() throws {
        let size = 75
        var images: [Float] = []
        for seed in 3..<6 {
            let pixels: [UInt8] = SyntheticWeights.testImage(size: size, seed: seed)
            for v in pixels { images += [Float](repeating: Float(v) / 127.5 - 1, count: 3) }
        }
        func features(_ arithmetic: ConvolutionArithmetic, batch: Int, threads: Int = 2) throws -> [Float] {
            let network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: size), arithmetic: arithmetic)
            let engine = try InceptionV3Engine(network: network, inputSize: size, threads: threads, kernels: .avx512)
            return try engine.pooledFeatures(Array(images.prefix(batch * size * size * 3)), batch: batch)
        }
        let float32 = try features(.float32, batch: 3), real = try features(.bfloat16, batch: 3)
        #expect(try features(.bfloat16, batch: 3) == real, "the same bits on a second run")
        #expect(try features(.bfloat16, batch: 3, threads: 1) == real, "the same bits on one thread")
        #expect(Array(try features(.bfloat16, batch: 1)) == Array(real.prefix(2048)), "batch 1 is the first image of batch 3")
        let emulated = try features(ConvolutionArithmetic(format: .bfloat16Emulated, float32Blocks: ["stem"]), batch: 3)
        let scale = float32.map(abs).max() ?? 0
        let toEmulation = zip(real, emulated).map { abs($0 - $1) }.max() ?? .infinity
        #expect(real == emulated, "the kernel path is its emulation, bit for bit (largest difference \(toEmulation), values up to \(scale))")
        let toFloat32 = zip(real, float32).map { abs($0 - $1) }.max() ?? .infinity
        #expect(scale > 0 && toFloat32 > 0 && toFloat32 < 0.05 * scale, "bfloat16 is close to float32 without being it: \(toFloat32)")
        // The stem in bfloat16 too: only the 3-channel input layer and the 1x1 (the others are Winograd), odd pairs included.
        let stem = try features(.init(format: .bfloat16, float32Blocks: []), batch: 3)
        #expect(stem == (try features(.init(format: .bfloat16Emulated, float32Blocks: []), batch: 3)) && stem != real)
    }

    @Test("precision names: float32 and bfloat16 are selectable; an unknown name is refused with the choices; nothing or blank is float32")
    func names() throws {
        #expect(ConvolutionArithmetic.named("float32") == .float32)
        #expect(ConvolutionArithmetic.named(" BFloat16 ") == .bfloat16)
        #expect(ConvolutionArithmetic.named("bfloat16-emulated") == nil, "the emulation is for the study only")
        #expect(try ConvolutionArithmetic.named(nil, environment: [:]) == .float32)
        #expect(try ConvolutionArithmetic.named(nil, environment: ["BONETRIAGE_PRECISION": " "]) == .float32)
        #expect(throws: EngineError.unknownPrecision("half")) { try ConvolutionArithmetic.named("half", environment: [:]) }
        #expect(EngineError.unknownPrecision("half").description == "'half' is not a precision; use float32 or bfloat16 (in [triage] precision or $BONETRIAGE_PRECISION)")
        #expect(ConvolutionArithmetic.bfloat16.float32Blocks == ["stem"] && ConvolutionArithmetic.bfloat16.name == "bfloat16")
        if Self.hasBfloat16 {
            #expect(try ConvolutionArithmetic.named(nil, environment: ["BONETRIAGE_PRECISION": "bfloat16"]) == .bfloat16)
        } else {
            #expect(throws: EngineError.precisionUnsupported(.bfloat16, cpu: CPUInfo.modelName)) {
                try ConvolutionArithmetic.named("bfloat16", environment: [:])
            }
            let network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: 75), arithmetic: .bfloat16)
            #expect(throws: EngineError.precisionUnsupported(.bfloat16, cpu: CPUInfo.modelName)) {
                try InceptionV3Engine(network: network, inputSize: 75, threads: 1)
            }
        }
    }
}
