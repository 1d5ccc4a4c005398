import COpenBLAS
import Foundation

/// Where the engine can hand out intermediate activations (for parity checks and inspection).
public enum InceptionStage: String, CaseIterable, Sendable {
    /// End of the stem (after the second max pool).
    case stem
    /// Output of mixed2, the last 35x35 (at 299 input) block.
    case mixed2
    /// Output of mixed7, the last 17x17 block.
    case mixed7
    /// Output of mixed10, the last block, before global pooling.
    case mixed10
}

/// A copy of one activation, NHWC.
public struct ActivationSnapshot: Sendable {
    public let batch: Int
    public let height: Int
    public let width: Int
    public let channels: Int
    public let values: [Float]

    /// The same values in NCHW order for one image, as PyTorch lays them out.
    public func nchw(image n: Int) -> [Float] {
        var out = [Float](repeating: 0, count: channels * height * width)
        let hw = height * width
        for p in 0..<hw {
            for c in 0..<channels {
                out[c * hw + p] = values[(n * hw + p) * channels + c]
            }
        }
        return out
    }
}

public enum EngineError: Error, CustomStringConvertible, Equatable {
    case inputSizeTooSmall(Int)
    case wrongInputCount(expected: Int, found: Int)
    case emptyBatch
    case unknownBlock(String)
    case unknownKernelFamily(String)
    case kernelFamilyUnsupported(KernelFamily, cpu: String)
    case precisionUnsupported(ConvolutionArithmetic, cpu: String)
    case unknownPrecision(String)

    public var description: String {
        switch self {
        case let .inputSizeTooSmall(s):
            return "input size \(s) is below Inception V3's minimum of \(InceptionV3Architecture.minimumInputSize) pixels"
        case let .wrongInputCount(expected, found):
            return "the input holds \(found) values where batch x size x size x 3 = \(expected) were expected"
        case .emptyBatch:
            return "a batch must hold at least one image"
        case let .unknownBlock(name):
            return "Inception V3 has no block named \(name) (its blocks: stem, mixed0 ... mixed10)"
        case let .unknownKernelFamily(name):
            return "'\(name)' is not a kernel family; use auto, " + KernelFamily.selectable.map(\.rawValue).joined(separator: ", ")
                + " (in [triage] kernels or $\(KernelFamily.environmentVariable))"
        case let .kernelFamilyUnsupported(family, cpu):
            return "the \(family.rawValue) kernels (\(family.summary)) cannot run on this CPU (\(cpu)); it runs "
                + KernelFamily.supported.filter { KernelFamily.selectable.contains($0) }.map(\.rawValue).joined(separator: ", ")
                + ": choose one of those or auto (in [triage] kernels or $\(KernelFamily.environmentVariable))"
        case let .unknownPrecision(name):
            return "'\(name)' is not a precision; use " + ConvolutionArithmetic.selectable.map(\.name).joined(separator: " or ")
                + " (in [triage] precision or $\(ConvolutionArithmetic.environmentVariable))"
        case let .precisionUnsupported(arithmetic, cpu):
            return "the \(arithmetic.name) precision (\(arithmetic.summary)) needs AVX512-BF16, which this CPU (\(cpu)) lacks: "
                + "use float32, the default ([triage] precision, --precision or $\(ConvolutionArithmetic.environmentVariable))"
        }
    }
}

/// Inception V3 with batch norm folded in, ready to run. Immutable: share one between engines.
public final class InceptionV3Network: Sendable {
    public let description: BackboneDescription
    public let architecture: InceptionV3Architecture
    /// float32 everywhere but in the reduced-precision study.
    public let arithmetic: ConvolutionArithmetic
    let convolutions: [String: PackedConvolution]

    /// Takes the weights over: each layer is folded in place and dropped, so loading never holds
    /// two copies of the 87 MB of parameters. With `arithmetic` bfloat16 the reduced layers are packed for
    /// the AVX512-BF16 kernel (half the bytes); the emulation rounds the folded weights (and, in the engine,
    /// each convolution's input) instead: see `ConvolutionArithmetic`. An engine refuses a bfloat16 network
    /// on a CPU without AVX512-BF16.
    public init(weights: consuming InceptionV3Weights, arithmetic: ConvolutionArithmetic = .float32) {
        self.arithmetic = arithmetic
        description = weights.description
        architecture = weights.architecture
        var layers = weights.layers
        weights.layers = [:]
        var folded: [String: FoldedConvolution] = [:]
        for spec in architecture.convolutions {
            guard let p = layers.removeValue(forKey: spec.name) else { preconditionFailure("checked weights lack \(spec.name)") }
            folded[spec.name] = FoldedConvolution(spec: spec, parameters: p, epsilon: InceptionV3Architecture.batchNormEpsilon)
        }
        // A block's 1x1 convolutions of its input become one wider GEMM: the input is packed once
        // and the late-stage GEMMs get enough columns to split over the cores.
        for block in architecture.blocks where !block.pointwiseHeads.isEmpty {
            let parts = block.pointwiseHeads.compactMap { folded.removeValue(forKey: $0) }
            folded["\(block.name)/heads"] = FoldedConvolution(fusing: parts, name: "\(block.name)/heads")
        }
        // One layer at a time, so the folded and packed copies never coexist for the whole network.
        var packed: [String: PackedConvolution] = [:]
        for name in Array(folded.keys) {
            guard var layer = folded.removeValue(forKey: name) else { continue }
            arithmetic.round(weights: &layer.kernel, of: layer.spec)
            packed[name] = PackedConvolution(layer, bfloat16: arithmetic.runsBfloat16Kernel(layer.spec))
        }
        convolutions = packed
    }

    /// Bytes held by the packed parameters (biases and Winograd-transformed copies included).
    public var parameterBytes: Int { convolutions.values.reduce(0) { $0 + ($1.weights.count + ($1.winogradWeights?.count ?? 0)) * 4 } }
}

/// Runs the network on batches of NHWC images. Not thread-safe: it owns its buffers, reused
/// from one call to the next; give each worker its own engine over a shared network.
///
/// Every layer is split across `threads` threads (by output pixels when there are many, else by output
/// channels); see `PackedConvolution.run`.
public final class InceptionV3Engine {
    public let network: InceptionV3Network
    public let inputSize: Int
    public let threads: Int
    /// The kernel family every layer runs with.
    public let kernels: KernelFamily
    private let pool: WorkerPool
    private var buffers: EngineBuffers?

    /// `kernels` nil takes $BONETRIAGE_KERNELS when set, else the best family of this CPU; a family the
    /// CPU cannot run is refused with `EngineError.kernelFamilyUnsupported`, a bfloat16 network on a CPU
    /// without AVX512-BF16 with `EngineError.precisionUnsupported`. The bfloat16 layers run their own
    /// AVX512-BF16 kernel whatever `kernels` is; the float32 layers run `kernels`.
    public init(network: InceptionV3Network, inputSize: Int, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                kernels: KernelFamily? = nil) throws {
        guard inputSize >= InceptionV3Architecture.minimumInputSize else { throw EngineError.inputSizeTooSmall(inputSize) }
        let family = try kernels ?? KernelFamily.fromEnvironment()
        guard family.isSupported else { throw EngineError.kernelFamilyUnsupported(family, cpu: CPUInfo.modelName) }
        guard network.arithmetic.isSupported else { throw EngineError.precisionUnsupported(network.arithmetic, cpu: CPUInfo.modelName) }
        self.kernels = family
        self.network = network
        self.inputSize = inputSize
        self.threads = max(1, threads)
        pool = WorkerPool(threads: self.threads)
        // The engine no longer calls BLAS, but the training code does, from threads the engine also
        // uses: keep OpenBLAS's own pool out of the way.
        openblas_set_num_threads(1)
    }

    deinit {
        pool.quiesce()  // before the buffers go: a late worker may still be reading them (WorkerPool.runGuarded)
    }

    /// Parts of layers the calling thread took over from a worker that had lost its core (WorkerPool.runGuarded).
    public var partsTakenOver: Int { pool.takeovers }

    /// For tests: makes every `every`-th part a worker runs start with a sleep of `microseconds`, as if the
    /// worker had lost its core there (0 turns it off).
    public func injectWorkerStalls(every: Int, microseconds: Int) {
        pool.injectStalls(every: every, nanoseconds: microseconds * 1000)
    }

    /// The 2048 pooled features of each image: `input` is [batch, size, size, 3] NHWC in the model's range.
    /// `blockTime`, when given, receives each block's name and wall time in milliseconds (for profiling).
    public func pooledFeatures(_ input: [Float], batch: Int,
                               tap: ((InceptionStage, ActivationSnapshot) -> Void)? = nil,
                               blockTime: ((String, Double) -> Void)? = nil) throws -> [Float] {
        guard batch >= 1 else { throw EngineError.emptyBatch }
        let expected = batch * inputSize * inputSize * 3
        guard input.count == expected else { throw EngineError.wrongInputCount(expected: expected, found: input.count) }
        let buffers = self.buffers(for: batch)
        buffers.input.update(from: input, count: expected)
        var output = [Float](repeating: 0, count: batch * InceptionV3Architecture.featureCount)
        output.withUnsafeMutableBufferPointer { out in
            guard let base = out.baseAddress else { return }
            forward(buffers, batch: batch, into: base, tap: tap, blockTime: blockTime)
        }
        return output
    }

    /// The global-average-pooled output of each named block (for example mixed7 ... mixed10), concatenated
    /// per image in the order given: [batch, sum of the blocks' channels]. mixed10 alone is `pooledFeatures`.
    public func pooledBlockFeatures(_ input: [Float], batch: Int, blocks: [String]) throws -> [Float] {
        if blocks == ["mixed10"] { return try pooledFeatures(input, batch: batch) }
        guard batch >= 1 else { throw EngineError.emptyBatch }
        let expected = batch * inputSize * inputSize * 3
        guard input.count == expected else { throw EngineError.wrongInputCount(expected: expected, found: input.count) }
        let known = Set(network.architecture.blocks.map(\.name))
        guard let unknown = blocks.first(where: { !known.contains($0) }) else {
            let buffers = self.buffers(for: batch)
            buffers.input.update(from: input, count: expected)
            var pooled: [String: [Float]] = [:]
            var last = [Float](repeating: 0, count: batch * InceptionV3Architecture.featureCount)
            last.withUnsafeMutableBufferPointer { out in
                guard let base = out.baseAddress else { return }
                forward(buffers, batch: batch, into: base, tap: nil, blockTime: nil) { name, map in
                    guard blocks.contains(name) else { return }
                    var values = [Float](repeating: 0, count: batch * map.channels)
                    values.withUnsafeMutableBufferPointer { v in
                        guard let dst = v.baseAddress else { return }
                        FeatureMapKernels.globalAveragePool(map, into: dst, images: 0..<batch)
                    }
                    pooled[name] = values
                }
            }
            let widths = blocks.map { (pooled[$0]?.count ?? 0) / batch }
            var out: [Float] = []
            out.reserveCapacity(batch * widths.reduce(0, +))
            for n in 0..<batch {
                for (block, width) in zip(blocks, widths) { out += pooled[block]?[(n * width)..<((n + 1) * width)] ?? [] }
            }
            return out
        }
        throw EngineError.unknownBlock(unknown)
    }

    /// The buffer set for a batch. A set made for a larger batch serves a smaller one (its maps are laid out image
    /// after image), up to twice the smaller batch: studies of 3 and 4 images then share one set instead of
    /// reallocating and zeroing ~25 MB at each change (about 3 ms), and a heatmap's batch-41 set is not kept
    /// for single images.
    private func buffers(for batch: Int) -> EngineBuffers {
        if let b = buffers, b.batch >= batch, b.batch <= 2 * batch { return b }
        pool.quiesce()  // a worker that lost its core may still be reading the old buffers (WorkerPool.runGuarded)
        buffers = nil  // release the old set before allocating the new one
        let b = EngineBuffers(architecture: network.architecture, inputSize: inputSize, batch: batch, threads: threads,
                              reducedBlocks: network.arithmetic.reducedBlocks(of: network.architecture),
                              emulated: network.arithmetic.format == .bfloat16Emulated)
        buffers = b
        return b
    }

    private func forward(_ b: EngineBuffers, batch n: Int, into features: UnsafeMutablePointer<Float>,
                         tap: ((InceptionStage, ActivationSnapshot) -> Void)?, blockTime: ((String, Double) -> Void)?,
                         blockOutput: ((String, FeatureMap) -> Void)? = nil) {
        let s = inputSize
        var current = FeatureMap.dense(b.input, batch: n, height: s, width: s, channels: 3)
        var spare = b.ping, other = b.pong
        func emit(_ stage: InceptionStage, _ map: FeatureMap) {
            guard let tap else { return }
            tap(stage, ActivationSnapshot(batch: map.batch, height: map.height, width: map.width,
                                          channels: map.channels, values: map.denseValues()))
        }
        for block in network.architecture.blocks {
            let geometry = InceptionGeometry(inputSize: current.height, block: block)
            let output = FeatureMap.dense(spare, batch: n, height: geometry.outputSize, width: geometry.outputSize,
                                          channels: block.outputChannels)
            let start = blockTime == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            switch block {
            case .stem: stem(current, output, b)
            case .a: blockA(block, current, output, b)
            case .b: blockB(block, current, output, b)
            case .c: blockC(block, current, output, b)
            case .d: blockD(block, current, output, b)
            case let .e(_, _, maxPool): blockE(block, current, output, b, maxPoolBranch: maxPool)
            }
            if let blockTime { blockTime(block.name, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6) }
            current = output
            swap(&spare, &other)
            blockOutput?(block.name, current)
            switch block.name {
            case "stem": emit(.stem, current)
            case "mixed2": emit(.mixed2, current)
            case "mixed7": emit(.mixed7, current)
            case "mixed10": emit(.mixed10, current)
            default: break
            }
        }
        let final = current
        let parts = pool.parts(n)
        pool.run(parts) { t in
            FeatureMapKernels.globalAveragePool(final, into: features, images: partition(n, parts: parts, index: t))
        }
    }

    // MARK: Blocks

    private func conv(_ name: String) -> PackedConvolution {
        guard let c = network.convolutions[name] else { preconditionFailure("network lacks \(name)") }
        return c
    }

    private func temp(_ buffer: UnsafeMutablePointer<Float>, like input: FeatureMap, channels: Int, size: Int? = nil) -> FeatureMap {
        FeatureMap.dense(buffer, batch: input.batch, height: size ?? input.height, width: size ?? input.width, channels: channels)
    }

    /// Images per pass through the stem. Its maps are the network's largest (at batch 16, 11 MB each at 150
    /// pixels): a few images at a time keep them in the caches from one stem layer to the next. Measured on
    /// a Zen 5: 0.90 -> 0.73 ms per image at batch 16 (1, 2 and 4 all gain; 4 the most).
    static let stemImagesPerPass = 4

    private func stem(_ x: FeatureMap, _ out: FeatureMap, _ b: EngineBuffers) {
        var start = 0
        while start < x.batch {
            let n = min(Self.stemImagesPerPass, x.batch - start)
            stemImages(x.images(start, n), out.images(start, n), b)
            start += n
        }
    }

    private func stemImages(_ x: FeatureMap, _ out: FeatureMap, _ b: EngineBuffers) {
        let g = InceptionGeometry(inputSize: x.height, block: .stem)
        let sizes = g.convolutionOutputSizes
        // The stem alternates between the two scratch regions that are not `out`: stemA and stemB.
        let c0 = temp(b.stemA, like: x, channels: 32, size: sizes[0].0)
        convolve(conv("stem/0"), x, c0, b)
        let c1 = temp(b.stemB, like: x, channels: 32, size: sizes[1].0)
        convolve(conv("stem/1"), c0, c1, b)
        let c2 = temp(b.stemA, like: x, channels: 64, size: sizes[2].0)
        convolve(conv("stem/2"), c1, c2, b)
        let p1 = temp(b.stemB, like: x, channels: 64, size: InceptionGeometry.reduce(sizes[2].0))
        maxPool(c2, stride: 2, pad: 0, into: p1)
        let c3 = temp(b.stemA, like: x, channels: 80, size: sizes[3].0)
        convolve(conv("stem/3"), p1, c3, b)
        let c4 = temp(b.stemB, like: x, channels: 192, size: sizes[4].0)
        convolve(conv("stem/4"), c3, c4, b)
        maxPool(c4, stride: 2, pad: 0, into: out)
    }

    private func blockA(_ block: InceptionBlock, _ x: FeatureMap, _ out: FeatureMap, _ b: EngineBuffers) {
        let n = block.name
        let heads = pointwiseHeads(block, x, b, leading: out.slice(channelOffset: 0, count: 64))  // 64 | 48 | 64
        convolve(conv("\(n)/branch5x5/1"), heads.slice(channelOffset: 64, count: 48), out.slice(channelOffset: 64, count: 64), b)
        let d1 = temp(b.t1, like: x, channels: 96)
        convolve(conv("\(n)/branch3x3dbl/1"), heads.slice(channelOffset: 112, count: 64), d1, b)
        convolve(conv("\(n)/branch3x3dbl/2"), d1, out.slice(channelOffset: 128, count: 96), b)
        poolBranch(block, x, out, channelOffset: 224, maxPool: false, b)
    }

    private func blockB(_ block: InceptionBlock, _ x: FeatureMap, _ out: FeatureMap, _ b: EngineBuffers) {
        let n = block.name
        convolve(conv("\(n)/branch3x3/0"), x, out.slice(channelOffset: 0, count: 384), b)
        let d0 = temp(b.t0, like: x, channels: 64), d1 = temp(b.t1, like: x, channels: 96)
        convolve(conv("\(n)/branch3x3dbl/0"), x, d0, b)
        convolve(conv("\(n)/branch3x3dbl/1"), d0, d1, b)
        convolve(conv("\(n)/branch3x3dbl/2"), d1, out.slice(channelOffset: 384, count: 96), b)
        maxPool(x, stride: 2, pad: 0, into: out.slice(channelOffset: 480, count: x.channels))
    }

    private func blockC(_ block: InceptionBlock, _ x: FeatureMap, _ out: FeatureMap, _ b: EngineBuffers) {
        guard case let .c(_, c7) = block else { return }
        let n = block.name
        let heads = pointwiseHeads(block, x, b, leading: out.slice(channelOffset: 0, count: 192))  // 192 | c7 | c7
        let u = temp(b.t0, like: x, channels: c7), v = temp(b.t1, like: x, channels: c7)
        convolve(conv("\(n)/branch7x7/1"), heads.slice(channelOffset: 192, count: c7), v, b)
        convolve(conv("\(n)/branch7x7/2"), v, out.slice(channelOffset: 192, count: 192), b)
        convolve(conv("\(n)/branch7x7dbl/1"), heads.slice(channelOffset: 192 + c7, count: c7), v, b)
        convolve(conv("\(n)/branch7x7dbl/2"), v, u, b)
        convolve(conv("\(n)/branch7x7dbl/3"), u, v, b)
        convolve(conv("\(n)/branch7x7dbl/4"), v, out.slice(channelOffset: 384, count: 192), b)
        poolBranch(block, x, out, channelOffset: 576, maxPool: false, b)
    }

    private func blockD(_ block: InceptionBlock, _ x: FeatureMap, _ out: FeatureMap, _ b: EngineBuffers) {
        let n = block.name
        let heads = pointwiseHeads(block, x, b)  // 192 | 192
        let u = temp(b.t0, like: x, channels: 192), v = temp(b.t1, like: x, channels: 192)
        convolve(conv("\(n)/branch3x3/1"), heads.slice(channelOffset: 0, count: 192), out.slice(channelOffset: 0, count: 320), b)
        convolve(conv("\(n)/branch7x7x3/1"), heads.slice(channelOffset: 192, count: 192), v, b)
        convolve(conv("\(n)/branch7x7x3/2"), v, u, b)
        convolve(conv("\(n)/branch7x7x3/3"), u, out.slice(channelOffset: 320, count: 192), b)
        maxPool(x, stride: 2, pad: 0, into: out.slice(channelOffset: 512, count: x.channels))
    }

    private func blockE(_ block: InceptionBlock, _ x: FeatureMap, _ out: FeatureMap, _ b: EngineBuffers, maxPoolBranch: Bool) {
        let n = block.name
        let heads = pointwiseHeads(block, x, b, leading: out.slice(channelOffset: 0, count: 320))  // 320 | 384 | 448
        let a = heads.slice(channelOffset: 320, count: 384)
        convolve(conv("\(n)/branch3x3/1"), a, out.slice(channelOffset: 320, count: 384), b)
        convolve(conv("\(n)/branch3x3/2"), a, out.slice(channelOffset: 704, count: 384), b)
        let d1 = temp(b.t1, like: x, channels: 384)
        convolve(conv("\(n)/branch3x3dbl/1"), heads.slice(channelOffset: 704, count: 448), d1, b)
        convolve(conv("\(n)/branch3x3dbl/2"), d1, out.slice(channelOffset: 1088, count: 384), b)
        convolve(conv("\(n)/branch3x3dbl/3"), d1, out.slice(channelOffset: 1472, count: 384), b)
        poolBranch(block, x, out, channelOffset: 1856, maxPool: maxPoolBranch, b)
    }

    /// The block's 1x1 convolutions of its input, computed as one GEMM into the `heads` buffer; the
    /// first branch, when it is a final output, goes straight to its slice of the block output (`leading`).
    private func pointwiseHeads(_ block: InceptionBlock, _ x: FeatureMap, _ b: EngineBuffers, leading: FeatureMap? = nil) -> FeatureMap {
        let fused = conv("\(block.name)/heads")
        let heads = temp(b.heads, like: x, channels: fused.spec.outputChannels)
        let input = network.arithmetic.emulatedInput(x, of: fused.spec, buffer: b.emulatedInput)
        fused.run(input, heads, pool: pool, kernels: kernels, scratch: b.winogradScratch, scratchPerThread: b.winogradScratchPerThread,
                  bfloat16Input: b.bfloat16Input, leading: leading)
        return heads
    }

    /// 3x3 stride-1 pool (average excluding padding, or max) then the branch's 1x1 convolution.
    private func poolBranch(_ block: InceptionBlock, _ x: FeatureMap, _ out: FeatureMap, channelOffset: Int,
                            maxPool: Bool, _ b: EngineBuffers) {
        let pooled = temp(b.t0, like: x, channels: x.channels)
        let rows = x.batch * x.height
        let parts = pool.parts(rows), kernels = kernels
        pool.run(parts) { t in
            let r = partition(rows, parts: parts, index: t)
            if maxPool {
                FeatureMapKernels.maxPool3x3(x, stride: 1, pad: 1, output: pooled, outRows: r, kernels: kernels)
            } else {
                FeatureMapKernels.averagePool3x3(x, output: pooled, outRows: r, kernels: kernels)
            }
        }
        let c = conv("\(block.name)/branch_pool/0")
        convolve(c, pooled, out.slice(channelOffset: channelOffset, count: c.spec.outputChannels), b)
    }

    private func maxPool(_ x: FeatureMap, stride: Int, pad: Int, into out: FeatureMap) {
        let rows = out.batch * out.height
        let parts = pool.parts(rows), kernels = kernels
        pool.run(parts) { t in
            FeatureMapKernels.maxPool3x3(x, stride: stride, pad: pad, output: out, outRows: partition(rows, parts: parts, index: t),
                                         kernels: kernels)
        }
    }

    // MARK: Convolution

    /// With the study's emulation of bfloat16 the layer reads a rounded copy of its input.
    private func convolve(_ c: PackedConvolution, _ input: FeatureMap, _ output: FeatureMap, _ b: EngineBuffers) {
        let input = network.arithmetic.emulatedInput(input, of: c.spec, buffer: b.emulatedInput)
        c.run(input, output, pool: pool, kernels: kernels, scratch: b.winogradScratch, scratchPerThread: b.winogradScratchPerThread,
              bfloat16Input: b.bfloat16Input)
    }
}

/// Every buffer one forward pass needs, for batches of up to `batch` images at one input size.
final class EngineBuffers {
    let batch: Int
    let input: UnsafeMutablePointer<Float>
    /// Block outputs alternate between ping and pong.
    let ping: UnsafeMutablePointer<Float>
    let pong: UnsafeMutablePointer<Float>
    /// Stem intermediates (the stem's maps are the largest of the network).
    let stemA: UnsafeMutablePointer<Float>
    let stemB: UnsafeMutablePointer<Float>
    /// Branch intermediates and the pooled copy of a block's input.
    let t0: UnsafeMutablePointer<Float>
    let t1: UnsafeMutablePointer<Float>
    /// The fused output of a block's 1x1 convolutions of its input.
    let heads: UnsafeMutablePointer<Float>
    /// Each thread's Winograd workspace (transformed tiles and products of one chunk).
    let winogradScratch: UnsafeMutablePointer<Float>
    let winogradScratchPerThread: Int
    /// The bfloat16 copy of a bfloat16 layer's input (nil when no layer runs the bfloat16 kernel).
    let bfloat16Input: UnsafeMutablePointer<UInt16>?
    /// The rounded float copy of an emulated layer's input (nil without the emulation).
    let emulatedInput: UnsafeMutablePointer<Float>?

    /// `reducedBlocks`: the blocks with layers in bfloat16, whose inputs need a copy: bfloat16 values for the
    /// kernel, or rounded floats for the emulation (`emulated`).
    init(architecture: InceptionV3Architecture, inputSize: Int, batch: Int, threads: Int, reducedBlocks: Set<String> = [],
         emulated: Bool = false) {
        self.batch = batch
        var blockOutput = 0, stemScratch = 0, branchScratch = 0, headScratch = 0, bfloat16Copy = 0
        var size = inputSize
        // Any map a convolution of a bfloat16 block reads: the block input, a convolution's output or the fused heads' output.
        func copyCount(_ block: InceptionBlock, pixels: Int, channels: Int) {
            guard reducedBlocks.contains(block.name) else { return }
            bfloat16Copy = max(bfloat16Copy, PackedConvolution.bfloat16InputCount(pixels: pixels, channels: channels))
        }
        for block in architecture.blocks {
            let g = InceptionGeometry(inputSize: size, block: block)
            blockOutput = max(blockOutput, g.outputSize * g.outputSize * block.outputChannels)
            copyCount(block, pixels: size * size, channels: block.inputChannels)
            for (spec, out) in zip(block.convolutions, g.convolutionOutputSizes) {
                let pixels = out.0 * out.1
                copyCount(block, pixels: pixels, channels: spec.outputChannels)
                if case .stem = block {
                    stemScratch = max(stemScratch, pixels * spec.outputChannels)
                    // The first stem pool's output also lives in stem scratch.
                    let pooled = InceptionGeometry.reduce(out.0) * InceptionGeometry.reduce(out.1)
                    stemScratch = max(stemScratch, pooled * spec.outputChannels)
                    copyCount(block, pixels: pooled, channels: spec.outputChannels)
                } else {
                    branchScratch = max(branchScratch, pixels * spec.outputChannels)
                }
            }
            if case .stem = block {} else {
                branchScratch = max(branchScratch, size * size * block.inputChannels)
                let headChannels = block.convolutions.filter { block.pointwiseHeads.contains($0.name) }.reduce(0) { $0 + $1.outputChannels }
                headScratch = max(headScratch, size * size * headChannels)
                copyCount(block, pixels: size * size, channels: headChannels)
            }
            size = g.outputSize
        }
        // 64-byte aligned so that the kernels' 16-channel rows do not straddle cache lines.
        func allocate(_ count: Int) -> UnsafeMutablePointer<Float> { EngineMemory.allocateFloats(count) }
        input = allocate(batch * inputSize * inputSize * 3)
        ping = allocate(batch * blockOutput)
        pong = allocate(batch * blockOutput)
        stemA = allocate(batch * stemScratch)
        stemB = allocate(batch * stemScratch)
        t0 = allocate(batch * branchScratch)
        t1 = allocate(batch * branchScratch)
        heads = allocate(batch * headScratch)
        winogradScratchPerThread = architecture.convolutions.map(PackedConvolution.winogradScratchCount).max() ?? 0
        winogradScratch = allocate(threads * winogradScratchPerThread)
        // Two bfloat16 values per float of storage; the emulation's copy is dense floats (no more than the bfloat16 count).
        bfloat16Input = bfloat16Copy == 0 || emulated ? nil
            : UnsafeMutableRawPointer(allocate((batch * bfloat16Copy + 1) / 2)).bindMemory(to: UInt16.self, capacity: batch * bfloat16Copy)
        emulatedInput = bfloat16Copy == 0 || !emulated ? nil : allocate(batch * bfloat16Copy)
    }

    deinit {
        for p in [input, ping, pong, stemA, stemB, t0, t1, heads, winogradScratch] { p.deallocate() }
        bfloat16Input?.deallocate()
        emulatedInput?.deallocate()
    }
}
