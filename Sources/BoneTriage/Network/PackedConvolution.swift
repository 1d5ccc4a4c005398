import CKernels

/// Floats on a 64-byte boundary, written once at creation and read-only after, hence Sendable.
/// A 16-float weight row then never straddles two cache lines (Swift arrays are only 16-byte
/// aligned, and where a layer's weights landed changed the speed from one run to the next).
final class AlignedFloats: @unchecked Sendable {
    let count: Int
    private let storage: UnsafeMutableRawPointer

    /// `fill` writes all `count` floats.
    init(count: Int, fill: (UnsafeMutablePointer<Float>) -> Void) {
        self.count = count
        let floats = EngineMemory.allocateFloats(count)
        storage = UnsafeMutableRawPointer(floats)
        fill(floats)
    }

    deinit { storage.deallocate() }

    var pointer: UnsafePointer<Float> { UnsafePointer(storage.assumingMemoryBound(to: Float.self)) }
}

/// A folded convolution with its weights in the micro-kernel's panel layout (Sources/CKernels):
/// packed once at load, so no forward pass re-packs the 87 MB of weights.
struct PackedConvolution: Sendable {
    let spec: ConvolutionSpec
    /// Panels of 16 output channels: each is 16 biases then kh*kw*inputChannels rows of 16 weights; for
    /// the bfloat16 kernel, 16 biases then kh*kw*ceil(inputChannels/2) rows of 16 words, each a pair of
    /// bfloat16 weights (`bt_pack_weights_bfloat16`).
    let weights: AlignedFloats
    /// Whether the layer runs the AVX512-BF16 kernel ([triage] precision = "bfloat16").
    let bfloat16: Bool
    /// For 3x3 and 5x5 stride-1 layers: the 36 Winograd-transformed weight matrices, packed likewise.
    let winogradWeights: AlignedFloats?
    let bias: [Float]

    /// `bfloat16` packs the weights for the bfloat16 kernel only (not for Winograd layers).
    init(_ folded: consuming FoldedConvolution, bfloat16: Bool = false) {
        let spec = folded.spec
        let taps = spec.kernelHeight * spec.kernelWidth
        let k = taps * spec.inputChannels
        let n = spec.outputChannels
        let kernel = folded.kernel, bias = folded.bias
        self.spec = spec
        self.bfloat16 = bfloat16
        precondition(kernel.count == k * n && bias.count == n, "\(spec.name): folded weights of the wrong size")
        precondition(!bfloat16 || !Self.winogradApplies(spec), "\(spec.name): a Winograd layer has no bfloat16 kernel")
        if bfloat16 {
            weights = AlignedFloats(count: bt_packed_weights_bfloat16_count(Int32(taps), Int32(spec.inputChannels), Int32(n))) { packed in
                bt_pack_weights_bfloat16(kernel, bias, Int32(taps), Int32(spec.inputChannels), Int32(n), packed)
            }
        } else {
            weights = AlignedFloats(count: bt_packed_weights_count(Int32(k), Int32(n))) { packed in
                bt_pack_weights(kernel, bias, Int32(k), Int32(n), packed)
            }
        }
        self.bias = bias
        if Self.winogradApplies(spec) {
            let wcount = bt_winograd_weights_count(Int32(spec.inputChannels), Int32(n))
            winogradWeights = AlignedFloats(count: wcount) { packed in
                bt_winograd_pack_weights(kernel, Int32(spec.kernelHeight), Int32(spec.inputChannels), Int32(n), packed)
            }
        } else {
            winogradWeights = nil
        }
    }

    /// The transformed weights are 4x (3x3) the size of the plain ones, so only the layers of the large
    /// early maps (stem, 35x35 blocks at 299 input) get them; the wide late 3x3 layers would add ~50 MB.
    static func winogradApplies(_ spec: ConvolutionSpec) -> Bool {
        bt_winograd_supports(Int32(spec.kernelHeight), Int32(spec.kernelWidth), Int32(spec.stride)) != 0
            && spec.inputChannels * spec.outputChannels <= 96 * 192
    }

    /// Winograd's transforms only pay off on maps of several 4x4 tiles; on the 3x3 (at 150 input)
    /// maps of the last blocks the direct kernel is faster.
    static let winogradMinimumOutputSize = 8

    /// Scratch floats per thread that `run` needs for a Winograd layer of this shape.
    static func winogradScratchCount(_ spec: ConvolutionSpec) -> Int {
        winogradApplies(spec) ? bt_winograd_scratch_count(Int32(spec.inputChannels), Int32(spec.outputChannels)) : 0
    }

    var panelCount: Int { Int(bt_panel_count(Int32(spec.outputChannels))) }

    /// output = relu(conv(input) + bias), split over the pool's threads: by output pixels in whole
    /// micro-kernel strips when there are many (the weights are then small next to the activations),
    /// else by 16-channel panels, so that each core streams only its share of the large late-stage
    /// weights. Either way into several parts per thread (`WorkerPool.parts`), claimed one at a time.
    ///
    /// `scratch` holds `scratchPerThread` floats for each thread (Winograd layers only). With `leading`,
    /// the first `leading.channels` output channels (a multiple of 16) are written there instead of
    /// into `output`, whose first channels are then left alone. A bfloat16 layer first writes the
    /// bfloat16 copy of its input into `bfloat16Input` (`bfloat16InputCount` values), in parallel
    /// when the map is large.
    func run(_ input: FeatureMap, _ output: FeatureMap, pool: WorkerPool, kernels: KernelFamily,
             scratch: UnsafeMutablePointer<Float>, scratchPerThread: Int, bfloat16Input: UnsafeMutablePointer<UInt16>? = nil,
             leading: FeatureMap? = nil) {
        let outHeight = (input.height + 2 * spec.padHeight - spec.kernelHeight) / spec.stride + 1
        let outWidth = (input.width + 2 * spec.padWidth - spec.kernelWidth) / spec.stride + 1
        precondition(outHeight == output.height && outWidth == output.width && output.channels == spec.outputChannels
                     && input.channels == spec.inputChannels && input.batch == output.batch, "shape mismatch at \(spec.name)")
        precondition(spec.inputChannels <= Int(BT_MAX_INPUT_CHANNELS) && spec.kernelHeight * spec.kernelWidth <= Int(BT_MAX_TAPS),
                     "\(spec.name) exceeds the convolution kernel's limits")
        var desc = bt_conv_desc(
            input: UnsafePointer(input.data), batch: Int32(input.batch), in_h: Int32(input.height), in_w: Int32(input.width),
            in_c: Int32(input.channels), in_stride: Int32(input.pixelStride),
            kernel_h: Int32(spec.kernelHeight), kernel_w: Int32(spec.kernelWidth), stride: Int32(spec.stride),
            pad_h: Int32(spec.padHeight), pad_w: Int32(spec.padWidth),
            output: output.data, out_h: Int32(outHeight), out_w: Int32(outWidth),
            out_c: Int32(output.channels), out_stride: Int32(output.pixelStride),
            split_panel: 0, output2: nil, out2_stride: 0, family: kernels.code)
        if let leading {
            precondition(leading.channels % Int(BT_PANEL_WIDTH) == 0 && leading.channels <= output.channels
                         && leading.pixels == output.pixels && !Self.winogradApplies(spec), "bad split output at \(spec.name)")
            desc.split_panel = Int32(leading.channels / Int(BT_PANEL_WIDTH))
            desc.output2 = leading.data
            desc.out2_stride = Int32(leading.pixelStride)
        }
        // The parts below are guarded (WorkerPool.runGuarded): a stalled worker's part is taken over, and the
        // worker may still run its part after `run` returns. So each closure holds its own copy of `desc` and
        // the weights; the maps, the bfloat16 copy and the scratch belong to the engine, which quiesces the
        // pool before freeing them.
        let layer = desc
        if let winogradWeights, outHeight >= Self.winogradMinimumOutputSize, outWidth >= Self.winogradMinimumOutputSize {
            precondition(scratchPerThread >= Self.winogradScratchCount(spec), "Winograd scratch too small for \(spec.name)")
            let bias = self.bias
            let tiles = withUnsafePointer(to: &desc) { Int(bt_winograd_tile_count($0)) }
            let parts = pool.parts(tiles, minimumUnits: Self.minimumWinogradTilesPerPart)
            let largest = (0..<parts).map { partition(tiles, parts: parts, index: $0).count }.max() ?? 0
            pool.runGuarded(parts, scratchFloats: withUnsafePointer(to: &desc) { Int(bt_winograd_part_scratch_count($0, 0, Int32(largest))) },
                            part: { t, worker, out in
                var d = layer
                let r = partition(tiles, parts: parts, index: t)
                bias.withUnsafeBufferPointer { b in
                    guard let bias = b.baseAddress else { return }
                    bt_winograd_conv_relu_part(&d, winogradWeights.pointer, bias, Int32(r.lowerBound), Int32(r.upperBound),
                                               scratch + worker * scratchPerThread, out)
                }
            }, commit: { t, out in
                var d = layer
                let r = partition(tiles, parts: parts, index: t)
                bt_winograd_commit(&d, Int32(r.lowerBound), Int32(r.upperBound), out)
            })
            return
        }
        let copy: UnsafePointer<UInt16>?
        if bfloat16 {
            guard let bfloat16Input else { preconditionFailure("\(spec.name) runs in bfloat16 but was given no buffer for its input's copy") }
            Self.convertToBfloat16(input, into: bfloat16Input, pool: pool)
            copy = UnsafePointer(bfloat16Input)
        } else {
            copy = nil
        }
        let rows = output.pixels, panels = panelCount
        let height = bfloat16 ? KernelFamily.avx512.stripHeight : kernels.stripHeight
        let strips = (rows + height - 1) / height
        let weights = self.weights
        // Part t's output pixels (in the kernel's visiting order) and channel panels.
        let parts: Int, ranges: (Int) -> (rows: Range<Int>, panels: Range<Int>)
        if pool.threads > 1 && rows >= Self.minimumRowsPerPart * pool.threads {
            let split = pool.parts(strips, minimumUnits: (Self.minimumRowsPerPart + height - 1) / height)
            parts = split
            ranges = { t in
                let s = partition(strips, parts: split, index: t)
                return ((s.lowerBound * height)..<min(rows, s.upperBound * height), 0..<panels)
            }
        } else {
            let split = pool.parts(panels)
            parts = split
            ranges = { t in (0..<rows, partition(panels, parts: split, index: t)) }
        }
        let largest = (0..<parts).map { t -> Int in
            let r = ranges(t)
            return bt_conv_part_scratch_count(Int32(r.rows.lowerBound), Int32(r.rows.upperBound), Int32(r.panels.lowerBound),
                                              Int32(r.panels.upperBound))
        }.max() ?? 0
        pool.runGuarded(parts, scratchFloats: largest, part: { t, _, out in
            var d = layer
            let r = ranges(t)
            let r0 = Int32(r.rows.lowerBound), r1 = Int32(r.rows.upperBound), p0 = Int32(r.panels.lowerBound), p1 = Int32(r.panels.upperBound)
            if let copy {
                bt_conv_bfloat16_part(&d, copy, weights.pointer, r0, r1, p0, p1, 1, out)
            } else {
                bt_conv_part(&d, weights.pointer, r0, r1, p0, p1, 1, out)
            }
        }, commit: { t, out in
            var d = layer
            let r = ranges(t)
            bt_conv_commit(&d, Int32(r.rows.lowerBound), Int32(r.rows.upperBound), Int32(r.panels.lowerBound), Int32(r.panels.upperBound), out)
        })
    }

    /// Values the bfloat16 copy of a map takes (an odd channel count is padded to even).
    static func bfloat16InputCount(pixels: Int, channels: Int) -> Int { pixels * 2 * Int(bt_bfloat16_pairs(Int32(channels))) }

    /// Maps of fewer values are converted by the calling thread alone: handing ~20 us of work to the pool costs
    /// more than it saves.
    static let minimumParallelConversion = 1 << 16

    /// Writes the bfloat16 copy of `map` (round to nearest, ties to even) that the bfloat16 kernel reads.
    static func convertToBfloat16(_ map: FeatureMap, into copy: UnsafeMutablePointer<UInt16>, pool: WorkerPool) {
        let pixels = map.pixels, channels = map.channels, stride = map.pixelStride
        let copyStride = bfloat16InputCount(pixels: 1, channels: channels)
        let parts = pixels * channels >= minimumParallelConversion ? pool.parts(pixels) : 1
        let source = map.data
        pool.run(parts) { t in
            let r = partition(pixels, parts: parts, index: t)
            bt_convert_bfloat16_map(source + r.lowerBound * stride, r.count, Int32(channels), Int32(stride), copy + r.lowerBound * copyStride)
        }
    }

    /// Output pixels a part of a pixel split gets at least (8 strips of the AVX2 kernel's 6): below
    /// that per thread, the layer is split by channel panels instead.
    static let minimumRowsPerPart = 48
    /// Output tiles a part of a Winograd layer gets at least: each part streams all 36 transformed
    /// weight matrices once, so parts must not get too small; yet a 16x16 map (mixed0-2 at 150 input) at batch 1
    /// has only 16 tiles, and both threads must share those (48 here made such layers run on one thread).
    static let minimumWinogradTilesPerPart = 8
}
