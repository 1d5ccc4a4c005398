import CKernels
import Foundation
import Testing

/// The C convolution kernels against a plain convolution computed in Double, on small odd shapes
/// that reach their edge cases: partial 16-channel panels, partial 6-pixel strips, padding taps
/// dropped per strip, 1xk layers visited column by column, Winograd tiles past the map's edge,
/// channel slices (pixel stride > channels) on both sides, and split output. Every kernel family this
/// CPU can run is checked, the AVX-512 family's code on AVX2 machines through its AVX2 compilation.
@Suite("Convolution kernels (Sources/CKernels)")
struct ConvolutionKernelTests {
    struct Shape: CustomStringConvertible {
        var batch: Int, height: Int, width: Int, inputChannels: Int, outputChannels: Int
        var kernelHeight: Int, kernelWidth: Int, stride: Int, padHeight: Int, padWidth: Int
        var outHeight: Int { (height + 2 * padHeight - kernelHeight) / stride + 1 }
        var outWidth: Int { (width + 2 * padWidth - kernelWidth) / stride + 1 }
        var k: Int { kernelHeight * kernelWidth * inputChannels }
        var description: String {
            "\(batch)x\(height)x\(width)x\(inputChannels) \(kernelHeight)x\(kernelWidth)/\(stride) -> \(outputChannels)"
        }
    }

    static let shapes: [Shape] = [
        Shape(batch: 2, height: 9, width: 10, inputChannels: 5, outputChannels: 20, kernelHeight: 3, kernelWidth: 3, stride: 1, padHeight: 1, padWidth: 1),
        Shape(batch: 1, height: 11, width: 11, inputChannels: 7, outputChannels: 16, kernelHeight: 3, kernelWidth: 3, stride: 2, padHeight: 0, padWidth: 0),
        Shape(batch: 2, height: 7, width: 7, inputChannels: 12, outputChannels: 24, kernelHeight: 1, kernelWidth: 7, stride: 1, padHeight: 0, padWidth: 3),
        Shape(batch: 1, height: 7, width: 7, inputChannels: 12, outputChannels: 16, kernelHeight: 7, kernelWidth: 1, stride: 1, padHeight: 3, padWidth: 0),
        Shape(batch: 1, height: 12, width: 12, inputChannels: 8, outputChannels: 33, kernelHeight: 5, kernelWidth: 5, stride: 1, padHeight: 2, padWidth: 2),
        Shape(batch: 3, height: 5, width: 5, inputChannels: 33, outputChannels: 40, kernelHeight: 1, kernelWidth: 1, stride: 1, padHeight: 0, padWidth: 0),
        Shape(batch: 1, height: 14, width: 13, inputChannels: 16, outputChannels: 32, kernelHeight: 3, kernelWidth: 3, stride: 1, padHeight: 0, padWidth: 0),
    ]

    /// Deterministic values in [-1, 1).
    static func values(_ count: Int, seed: UInt64) -> [Float] {
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: state >> 11) % 2_000_000) / 1_000_000 - 1
        }
    }

    /// Input laid out with `inputStride` floats per pixel, weights [k, n], bias [n].
    struct Case {
        let shape: Shape
        let inputStride: Int
        /// Variable so a test can run the same case on other input values (the bfloat16 tests: rounded ones).
        var input: [Float]
        let weights: [Float], bias: [Float]
        let expected: [Float]  // dense [pixels, outputChannels], after ReLU

        /// `denseInput`: the input's pixels hold their channels only (pixel stride = channels), else 3 more floats.
        init(_ s: Shape, seed: UInt64, denseInput: Bool = false) {
            shape = s
            inputStride = s.inputChannels + (denseInput ? 0 : 3)
            input = ConvolutionKernelTests.values(s.batch * s.height * s.width * inputStride, seed: seed)
            weights = ConvolutionKernelTests.values(s.k * s.outputChannels, seed: seed + 1).map { $0 / Float(s.k).squareRoot() }
            bias = ConvolutionKernelTests.values(s.outputChannels, seed: seed + 2).map { $0 * 0.1 }
            var out = [Float](repeating: 0, count: s.batch * s.outHeight * s.outWidth * s.outputChannels)
            for n in 0..<s.batch {
                for oy in 0..<s.outHeight {
                    for ox in 0..<s.outWidth {
                        for o in 0..<s.outputChannels {
                            var acc = Double(bias[o])
                            for ky in 0..<s.kernelHeight {
                                for kx in 0..<s.kernelWidth {
                                    let iy = oy * s.stride - s.padHeight + ky, ix = ox * s.stride - s.padWidth + kx
                                    guard iy >= 0, iy < s.height, ix >= 0, ix < s.width else { continue }
                                    for c in 0..<s.inputChannels {
                                        let a = input[((n * s.height + iy) * s.width + ix) * inputStride + c]
                                        let w = weights[((ky * s.kernelWidth + kx) * s.inputChannels + c) * s.outputChannels + o]
                                        acc += Double(a) * Double(w)
                                    }
                                }
                            }
                            out[((n * s.outHeight + oy) * s.outWidth + ox) * s.outputChannels + o] = Float(max(acc, 0))
                        }
                    }
                }
            }
            expected = out
        }

        /// Runs `body` with a descriptor whose output has `outputStride` floats per pixel; returns the
        /// dense output channels.
        func run(outputStride: Int, family: Int32 = Int32(BT_KERNELS_BEST), _ body: (UnsafePointer<bt_conv_desc>) -> Void) -> [Float] {
            let s = shape
            let pixels = s.batch * s.outHeight * s.outWidth
            var output = [Float](repeating: .nan, count: pixels * outputStride)
            input.withUnsafeBufferPointer { inp in
                output.withUnsafeMutableBufferPointer { out in
                    var desc = bt_conv_desc(
                        input: inp.baseAddress, batch: Int32(s.batch), in_h: Int32(s.height), in_w: Int32(s.width),
                        in_c: Int32(s.inputChannels), in_stride: Int32(inputStride),
                        kernel_h: Int32(s.kernelHeight), kernel_w: Int32(s.kernelWidth), stride: Int32(s.stride),
                        pad_h: Int32(s.padHeight), pad_w: Int32(s.padWidth),
                        output: out.baseAddress, out_h: Int32(s.outHeight), out_w: Int32(s.outWidth),
                        out_c: Int32(s.outputChannels), out_stride: Int32(outputStride),
                        split_panel: 0, output2: nil, out2_stride: 0, family: family)
                    body(&desc)
                }
            }
            return (0..<pixels).flatMap { p in output[(p * outputStride)..<(p * outputStride + s.outputChannels)] }
        }

        /// Runs `body` with the first output panel sent to `leading` (20 floats per pixel): returns the main output.
        func runSplitOutput(into leading: inout [Float], _ body: (UnsafePointer<bt_conv_desc>) -> Void) -> [Float] {
            run(outputStride: shape.outputChannels) { d in
                var desc = d.pointee
                leading.withUnsafeMutableBufferPointer { l in
                    desc.split_panel = 1
                    desc.output2 = l.baseAddress
                    desc.out2_stride = 20
                    body(&desc)
                }
            }
        }

        /// The Winograd-transformed weights (3x3 and 5x5 stride-1 shapes) and one thread's scratch for them.
        func winogradPacked() -> (weights: [Float], scratch: [Float]) {
            let s = shape
            var packed = [Float](repeating: 0, count: bt_winograd_weights_count(Int32(s.inputChannels), Int32(s.outputChannels)))
            bt_winograd_pack_weights(weights, Int32(s.kernelHeight), Int32(s.inputChannels), Int32(s.outputChannels), &packed)
            return (packed, [Float](repeating: 0, count: bt_winograd_scratch_count(Int32(s.inputChannels), Int32(s.outputChannels))))
        }

        func packed() -> [Float] {
            let count = bt_packed_weights_count(Int32(shape.k), Int32(shape.outputChannels))
            var packed = [Float](repeating: 0, count: count)
            bt_pack_weights(weights, bias, Int32(shape.k), Int32(shape.outputChannels), &packed)
            return packed
        }

        func relativeError(_ actual: [Float]) -> Double {
            let scale = expected.map { Double(abs($0)) }.max() ?? 1
            guard actual.count == expected.count else { return .infinity }
            return zip(actual, expected).map { Double(abs($0 - $1)) }.max().map { $0 / max(scale, 1e-30) } ?? .infinity
        }
    }

    /// The C codes of the families this CPU runs.
    static let families: [(name: String, code: Int32)] = [
        ("portable", Int32(BT_KERNELS_PORTABLE)), ("avx2", Int32(BT_KERNELS_AVX2)), ("avx512", Int32(BT_KERNELS_AVX512)),
        ("avx512-on-avx2", Int32(BT_KERNELS_AVX512_ON_AVX2)),
    ].filter { bt_kernels_supported($0.1) != 0 }

    @Test("direct kernel, every family, whole and split into row and panel ranges", arguments: shapes.indices)
    func direct(index: Int) {
        let c = Case(Self.shapes[index], seed: UInt64(index) * 7 + 1)
        let packed = c.packed()
        let pixels = Int32(c.shape.batch * c.shape.outHeight * c.shape.outWidth)
        let panels = bt_panel_count(Int32(c.shape.outputChannels))
        var byFamily: [String: [Float]] = [:]
        for (name, family) in Self.families {
            let whole = c.run(outputStride: c.shape.outputChannels + 5, family: family) { d in
                bt_conv(d, packed, 0, pixels, 0, panels, 1)
            }
            #expect(c.relativeError(whole) <= 1e-5, "\(c.shape), \(name)")
            // Row ranges that are not multiples of the 6- or 12-pixel strip, and single panels.
            let pieces = c.run(outputStride: c.shape.outputChannels, family: family) { d in
                let cut = pixels / 2 + 1
                for p in 0..<panels {
                    bt_conv(d, packed, 0, cut, p, p + 1, 1)
                    bt_conv(d, packed, cut, pixels, p, p + 1, 1)
                }
            }
            #expect(pieces == whole, "\(c.shape), \(name)")
            // Without the ReLU (the Winograd path's products), negative values must come through.
            let linear = c.run(outputStride: c.shape.outputChannels, family: family) { d in
                bt_conv(d, packed, 0, pixels, 0, panels, 0)
            }
            #expect(linear.contains { $0 < 0 }, "\(c.shape), \(name): no negative output without the ReLU")
            #expect(zip(linear, whole).allSatisfy { max($0, 0) == $1 }, "\(c.shape), \(name): the ReLU is max(x, 0)")
            byFamily[name] = whole
        }
        // The AVX2 and AVX-512 kernels sum in the same order with fused multiply-adds: the same bits.
        if let avx2 = byFamily["avx2"] {
            for wide in ["avx512", "avx512-on-avx2"] {
                if let other = byFamily[wide] { #expect(other == avx2, "\(c.shape): \(wide) differs from avx2") }
            }
        }
    }

    /// Layers with few weight rows per output channel and no padding, like the stem's first convolution (3x3/2,
    /// 3 channels): from a dense input each strip's patches are gathered and run as one tap.
    static let gatheredShapes: [Shape] = [
        Shape(batch: 2, height: 15, width: 13, inputChannels: 3, outputChannels: 32, kernelHeight: 3, kernelWidth: 3, stride: 2, padHeight: 0, padWidth: 0),
        Shape(batch: 1, height: 9, width: 8, inputChannels: 7, outputChannels: 20, kernelHeight: 2, kernelWidth: 2, stride: 1, padHeight: 0, padWidth: 0),
        Shape(batch: 3, height: 6, width: 5, inputChannels: 10, outputChannels: 16, kernelHeight: 3, kernelWidth: 1, stride: 1, padHeight: 0, padWidth: 0),
    ]

    @Test("gathered patches (few channels, no padding, dense input) give the bits of the tap-by-tap kernel, every family",
          arguments: gatheredShapes.indices)
    func gatheredPatches(index: Int) {
        let dense = Case(Self.gatheredShapes[index], seed: UInt64(index) * 5 + 3, denseInput: true)
        // The same values with 3 more floats per input pixel: not gathered, each tap walked on its own.
        var strided = Case(dense.shape, seed: UInt64(index) * 5 + 3)
        let c = dense.shape.inputChannels
        var spread: [Float] = []
        for p in 0..<(dense.input.count / c) { spread += dense.input[(p * c)..<((p + 1) * c)]; spread += [9, 9, 9] }
        strided.input = spread
        let packed = dense.packed()
        let pixels = Int32(dense.shape.batch * dense.shape.outHeight * dense.shape.outWidth)
        let panels = bt_panel_count(Int32(dense.shape.outputChannels))
        for (name, family) in Self.families {
            for relu in [Int32(1), 0] {
                let gathered = dense.run(outputStride: dense.shape.outputChannels + 2, family: family) { d in
                    bt_conv(d, packed, 0, pixels, 0, panels, relu)
                }
                let taps = strided.run(outputStride: dense.shape.outputChannels, family: family) { d in
                    bt_conv(d, packed, 0, pixels, 0, panels, relu)
                }
                #expect(gathered == taps, "\(dense.shape), \(name), relu \(relu)")
                if relu == 1 { #expect(dense.relativeError(gathered) <= 1e-5, "\(dense.shape), \(name)") }
            }
            // Row ranges that end inside a strip (its last rows repeated) and single panels, into scratch and committed.
            let whole = dense.run(outputStride: dense.shape.outputChannels, family: family) { d in bt_conv(d, packed, 0, pixels, 0, panels, 1) }
            let pieces = dense.run(outputStride: dense.shape.outputChannels, family: family) { d in
                let cut = pixels / 2 + 1
                for p in 0..<panels {
                    for (begin, end) in [(Int32(0), cut), (cut, pixels)] {
                        var scratch = [Float](repeating: .nan, count: bt_conv_part_scratch_count(begin, end, p, p + 1))
                        bt_conv_part(d, packed, begin, end, p, p + 1, 1, &scratch)
                        bt_conv_commit(d, begin, end, p, p + 1, scratch)
                    }
                }
            }
            #expect(pieces == whole, "\(dense.shape), \(name)")
        }
    }

    /// The shapes the Winograd path takes (3x3 and 5x5, stride 1).
    static let winogradShapes = shapes.indices.filter {
        bt_winograd_supports(Int32(shapes[$0].kernelHeight), Int32(shapes[$0].kernelWidth), Int32(shapes[$0].stride)) != 0
    }

    @Test("Winograd F(4x4,3x3) and F(2x2,5x5) match the plain convolution, tile ranges in any split, every family", arguments: winogradShapes)
    func winograd(index: Int) {
        let c = Case(Self.shapes[index], seed: UInt64(index) * 7 + 1)
        let s = c.shape
        let winograd = c.winogradPacked()
        let packed = winograd.weights
        var scratch = winograd.scratch
        var byFamily: [String: [Float]] = [:]
        for (name, family) in Self.families {
            let output = c.run(outputStride: s.outputChannels + 2, family: family) { d in
                let tiles = bt_winograd_tile_count(d)
                bt_winograd_conv_relu(d, packed, c.bias, 0, tiles / 3, &scratch)
                bt_winograd_conv_relu(d, packed, c.bias, tiles / 3, tiles, &scratch)
            }
            #expect(c.relativeError(output) <= 1e-4, "\(s), \(name)")
            byFamily[name] = output
        }
        if let avx2 = byFamily["avx2"] {
            for wide in ["avx512", "avx512-on-avx2"] {
                if let other = byFamily[wide] { #expect(other == avx2, "\(s): \(wide) differs from avx2") }
            }
        }
    }

    @Test("an unknown family code runs as the best family, never an unsupported one")
    func unknownFamily() {
        #expect(bt_kernels_resolve(99) == bt_kernels_best())
        #expect(bt_kernels_resolve(Int32(BT_KERNELS_BEST)) == bt_kernels_best())
        #expect(bt_kernels_resolve(Int32(BT_KERNELS_PORTABLE)) == Int32(BT_KERNELS_PORTABLE))
        if bt_kernels_supported(Int32(BT_KERNELS_AVX512)) == 0 {
            #expect(bt_kernels_resolve(Int32(BT_KERNELS_AVX512)) == bt_kernels_best())
        }
    }

    @Test("split output: the first panels go to the second map, the rest stay")
    func splitOutput() {
        let c = Case(Self.shapes[5], seed: 99)  // 1x1, 40 output channels: panels 16 | 16 | 8
        let s = c.shape
        let pixels = s.batch * s.outHeight * s.outWidth
        let packed = c.packed()
        var leading = [Float](repeating: .nan, count: pixels * 20)
        let rest = c.runSplitOutput(into: &leading) { d in bt_conv_relu(d, packed, 0, Int32(pixels), 0, bt_panel_count(Int32(s.outputChannels))) }
        var merged: [Float] = []
        var strayWrites = 0, missingSkips = 0
        for p in 0..<pixels {
            let first: [Float] = Array(leading[(p * 20)..<(p * 20 + 16)])
            let others: [Float] = Array(rest[(p * s.outputChannels + 16)..<((p + 1) * s.outputChannels)])
            merged += first + others
            if !leading[p * 20 + 16].isNaN { strayWrites += 1 }
            let skipped: [Float] = Array(rest[(p * s.outputChannels)..<(p * s.outputChannels + 16)])
            if !skipped.allSatisfy({ $0.isNaN }) { missingSkips += 1 }
        }
        #expect(strayWrites == 0, "the second map is written only in its 16 channels")
        #expect(missingSkips == 0, "split channels are left alone in the first map")
        #expect(c.relativeError(merged) <= 1e-5)
    }

    @Test("the worker pool runs every index exactly once, job after job")
    func pool() {
        final class Counts: @unchecked Sendable {
            var hits = [Int32](repeating: 0, count: 64)
        }
        guard let pool = bt_pool_create(3) else {
            Issue.record("bt_pool_create failed")
            return
        }
        defer { bt_pool_destroy(pool) }
        let counts = Counts()
        for round in 0..<2000 {
            let n = Int32(round % 40)
            counts.hits.withUnsafeMutableBufferPointer { hits in
                hits.update(repeating: 0)
                bt_pool_run(pool, n, { context, index, worker in
                    guard let context else { return }
                    // Each index owns its slot, so plain stores do not race; a worker index out of
                    // 0..<3 is recorded as a count of 100.
                    context.assumingMemoryBound(to: Int32.self)[Int(index)] += (0..<3).contains(worker) ? 1 : 100
                }, hits.baseAddress)
            }
            let ran: [Int32] = Array(counts.hits.prefix(Int(n))), idle: [Int32] = Array(counts.hits.dropFirst(Int(n)))
            if ran.contains(where: { $0 != 1 }) || idle.contains(where: { $0 != 0 }) {
                Issue.record("round \(round): counts \(counts.hits.prefix(Int(n) + 1))")
                return
            }
        }
    }
}
