import BoneTriage
import CKernels
import Foundation
import Testing

/// A worker that loses its core in the middle of a layer part no longer holds the layer up: the caller
/// takes the part over, and the worker's late result, computed into its own scratch, is dropped
/// (bt_pool_run_guarded, WorkerPool.runGuarded). These tests check the pieces and the whole engine with
/// stalls forced into the workers.
struct PartTakeoverTests {
    typealias Case = ConvolutionKernelTests.Case

    @Test("a part computed into scratch and committed is bt_conv's output, rows in visiting order (1xk too), panels, split output",
          arguments: ConvolutionKernelTests.shapes.indices)
    func directCommit(index: Int) {
        let c = Case(ConvolutionKernelTests.shapes[index], seed: UInt64(index) * 5 + 3)
        let s = c.shape
        let packed = c.packed()
        let pixels = Int32(s.batch * s.outHeight * s.outWidth), panels = bt_panel_count(Int32(s.outputChannels))
        let stride = s.outputChannels + 5
        let whole = c.run(outputStride: stride) { d in bt_conv(d, packed, 0, pixels, 0, panels, 1) }
        // Cuts that fall inside strips, and panel ranges of one and of all panels.
        let rowCuts: [Int32] = [0, pixels / 3 + 1, pixels / 2 + 2, pixels].sorted()
        let panelCuts: [Int32] = panels > 1 ? [0, 1, panels] : [0, panels]
        var strayWrites = 0
        let committed = c.run(outputStride: stride) { d in
            for (r0, r1) in zip(rowCuts, rowCuts.dropFirst()) where r1 > r0 {
                for (p0, p1) in zip(panelCuts, panelCuts.dropFirst()) {
                    var scratch = [Float](repeating: .nan, count: bt_conv_part_scratch_count(r0, r1, p0, p1))
                    bt_conv_part(d, packed, r0, r1, p0, p1, 1, &scratch)
                    bt_conv_commit(d, r0, r1, p0, p1, scratch)
                }
            }
            // The channels past out_c in each pixel's stride were never the convolution's to write.
            for p in 0..<Int(pixels) {
                for slack in s.outputChannels..<stride where !d.pointee.output[p * stride + slack].isNaN { strayWrites += 1 }
            }
        }
        let same = committed == whole
        #expect(same, "\(s)")
        #expect(strayWrites == 0, "\(s): nothing written past the output channels")
    }

    @Test("split output: committed parts send the first panels to the second map and leave them alone in the first")
    func splitCommit() {
        let c = Case(ConvolutionKernelTests.shapes[5], seed: 41)  // 1x1, 40 output channels: panels 16 | 16 | 8
        let s = c.shape
        let pixels = Int32(s.batch * s.outHeight * s.outWidth)
        let packed = c.packed()
        var leadingWhole = [Float](repeating: .nan, count: Int(pixels) * 20), leadingParts = leadingWhole
        let whole = c.runSplitOutput(into: &leadingWhole) { d in bt_conv_relu(d, packed, 0, pixels, 0, 3) }
        let parts = c.runSplitOutput(into: &leadingParts) { d in
            for (r0, r1, p0, p1) in [(Int32(0), pixels / 2 + 1, Int32(0), Int32(2)), (pixels / 2 + 1, pixels, 0, 2), (0, pixels, 2, 3)] {
                var scratch = [Float](repeating: .nan, count: bt_conv_part_scratch_count(r0, r1, p0, p1))
                bt_conv_part(d, packed, r0, r1, p0, p1, 1, &scratch)
                bt_conv_commit(d, r0, r1, p0, p1, scratch)
            }
        }
        #expect(parts.elementsEqual(whole) { $0 == $1 || ($0.isNaN && $1.isNaN) }, "the first map, its skipped channels still NaN")
        #expect(leadingParts.elementsEqual(leadingWhole) { $0 == $1 || ($0.isNaN && $1.isNaN) }, "the second map")
    }

    @Test("a Winograd tile range computed into scratch and committed is bt_winograd_conv_relu's output",
          arguments: ConvolutionKernelTests.winogradShapes)
    func winogradCommit(index: Int) {
        let c = Case(ConvolutionKernelTests.shapes[index], seed: UInt64(index) * 5 + 3)
        let s = c.shape
        let winograd = c.winogradPacked()
        let packed = winograd.weights
        var scratch = winograd.scratch
        let stride = s.outputChannels + 2
        let whole = c.run(outputStride: stride) { d in
            bt_winograd_conv_relu(d, packed, c.bias, 0, bt_winograd_tile_count(d), &scratch)
        }
        let committed = c.run(outputStride: stride) { d in
            let tiles = bt_winograd_tile_count(d)
            // Ranges that start and end inside a row of tiles.
            let cuts: [Int32] = [0, tiles / 3 + 1, tiles].filter { $0 <= tiles }
            for (t0, t1) in zip(cuts, cuts.dropFirst()) where t1 > t0 {
                var out = [Float](repeating: .nan, count: bt_winograd_part_scratch_count(d, t0, t1))
                bt_winograd_conv_relu_part(d, packed, c.bias, t0, t1, &scratch, &out)
                bt_winograd_commit(d, t0, t1, out)
            }
        }
        let same = committed == whole
        #expect(same, "\(s)")
    }

    /// One job of the guarded pool test: its number, and per part the value it must end with, how often the
    /// caller wrote it directly and how often a worker's commit did. Each job has its own, kept to the end,
    /// so that a late worker's task or commit, whenever it comes, is charged to the job it belongs to.
    final class Job: @unchecked Sendable {
        let number: Int
        let parts: Int
        var output: [Int], direct: [Int], commits: [Int]
        /// Shared by all jobs, as the engine's is: one slot per worker for its task's result.
        let scratch: UnsafeMutablePointer<Int>

        init(number: Int, parts: Int, scratch: UnsafeMutablePointer<Int>) {
            self.number = number
            self.parts = parts
            self.scratch = scratch
            output = [Int](repeating: -1, count: parts)
            direct = [Int](repeating: 0, count: parts)
            commits = [Int](repeating: 0, count: parts)
        }

        func expected(_ part: Int) -> Int { number * 1000 + part }

        /// Parts that did not land exactly once, with the right value.
        var failures: [String] {
            (0..<parts).compactMap { i in
                output[i] == expected(i) && direct[i] + commits[i] == 1
                    ? nil : "job \(number) part \(i): output \(output[i]), direct \(direct[i]), commits \(commits[i])"
            }
        }
    }

    @Test("guarded pool, 3 workers: stalled parts are taken over, each part lands exactly once, late results never land")
    func guardedPool() throws {
        let pool = try #require(bt_pool_create(4))
        defer { bt_pool_destroy(pool) }
        let scratch = UnsafeMutablePointer<Int>.allocate(capacity: 4)
        defer { scratch.deallocate() }
        // Every second part a worker runs sleeps 2 ms, far beyond the caller's parts: alternately after it has
        // claimed the part but before marking it as its own, and in the middle of it.
        bt_pool_inject_stalls(pool, 2, 2_000_000)
        var jobs: [Job] = [], failures: [String] = [], stillInside = 0
        for number in 1...200 {
            let job = Job(number: number, parts: 2 + number % 30, scratch: scratch)
            jobs.append(job)
            let context = Unmanaged.passUnretained(job).toOpaque()
            bt_pool_run_guarded(pool, Int32(job.parts), { context, index, worker in
                guard let context else { return }
                let job = Unmanaged<Job>.fromOpaque(context).takeUnretainedValue()
                // A little work, so that the caller's parts take measurable time.
                var x = 0.0
                for k in 0..<2000 { x += Double(k).squareRoot() }
                let value = job.expected(Int(index)) + (x < 0 ? 1 : 0)
                if worker == 0 {
                    job.output[Int(index)] = value
                    job.direct[Int(index)] += 1
                } else {
                    job.scratch[Int(worker)] = value
                }
            }, { context, index, worker in
                guard let context else { return }
                let job = Unmanaged<Job>.fromOpaque(context).takeUnretainedValue()
                job.output[Int(index)] = job.scratch[Int(worker)]
                job.commits[Int(index)] += 1
            }, context)
            failures += job.failures  // every part in place when the call returns
            if bt_pool_context_in_use(pool, context) != 0 { stillInside += 1 }
        }
        let takenOver = bt_pool_takeovers(pool)
        bt_pool_quiesce(pool)
        #expect(jobs.allSatisfy { bt_pool_context_in_use(pool, Unmanaged.passUnretained($0).toOpaque()) == 0 },
                "no worker is inside a job after quiesce")
        // Late workers have all finished now: none of them committed into its old job (or another one).
        let late = jobs.flatMap(\.failures)
        #expect(failures.isEmpty, "when the call returned: \(failures.prefix(5))")
        #expect(late.isEmpty, "after every late worker finished: \(late.prefix(5))")
        #expect(takenOver > 0, "2 ms stalls were taken over")
        #expect(stillInside > 0, "calls returned while a stalled worker was still inside their job (what the takeover is for)")
        bt_pool_inject_stalls(pool, 0, 0)
    }

    static func images(size: Int, count: Int) -> [Float] {
        var images: [Float] = []
        for seed in 0..<count {
            for v in SyntheticWeights.testImage(size: size, seed: 11 + seed) { images += [Float](repeating: Float(v) / 127.5 - 1, count: 3) }
        }
        return images
    }

    @Test("the engine (2 workers) with workers stalling in layer parts gives the same bits as one thread, float32 and bfloat16, batch 1 and 3",
          arguments: [ConvolutionArithmetic.float32, .bfloat16])
    func engineWithStalls(arithmetic: ConvolutionArithmetic) throws {
        guard arithmetic.isSupported else {
            print("skipped: \(arithmetic.name) is not supported on this CPU (\(CPUInfo.modelName)): it needs AVX512-BF16")
            return
        }
        let size = 150  // 16x16 maps in mixed0-2: Winograd layers, row splits and panel splits all run
        let network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: size), arithmetic: arithmetic)
        let images = Self.images(size: size, count: 3)
        // The float32 layers in each SIMD family this CPU runs (their strips differ: 6 or 12 pixels); the
        // bfloat16 layers have their own kernel.
        let families: [KernelFamily] = arithmetic == .float32 ? [.avx2, .avx512].filter(\.isSupported) : [.avx512]
        for family in families {
            let single = try InceptionV3Engine(network: network, inputSize: size, threads: 1, kernels: family)
            let reference = try single.pooledFeatures(images, batch: 3)
            let engine = try InceptionV3Engine(network: network, inputSize: size, threads: 3, kernels: family)
            // Every third part a worker runs stalls for 0.5 ms: its late result, computed on inputs that later
            // layers overwrite meanwhile, must never reach the output.
            engine.injectWorkerStalls(every: 3, microseconds: 500)
            let batch3 = try engine.pooledFeatures(images, batch: 3)
            let batch1 = try engine.pooledFeatures(Array(images.prefix(size * size * 3)), batch: 1)
            let again = try engine.pooledFeatures(images, batch: 3)
            #expect(engine.partsTakenOver > 0, "\(family): stalls of 0.5 ms were taken over")
            let same3 = batch3 == reference, same1 = batch1 == Array(reference.prefix(InceptionV3Architecture.featureCount))
            let sameAgain = again == reference
            #expect(same3, "\(family), batch 3 with stalls: largest difference \(zip(batch3, reference).map { abs($0 - $1) }.max() ?? 0)")
            #expect(same1, "\(family), batch 1 with stalls")
            #expect(sameAgain, "\(family), batch 3 again after a batch-size change with stalls in flight")
            engine.injectWorkerStalls(every: 0, microseconds: 0)
            let quiet = try engine.pooledFeatures(images, batch: 3) == reference
            #expect(quiet, "\(family), without stalls")
        }
    }

    @Test("an engine freed while a stalled worker is still inside a part waits for it (no use after free)")
    func engineFreedDuringStall() throws {
        let size = 75
        let network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: size))
        let images = Self.images(size: size, count: 1)
        let reference = try InceptionV3Engine(network: network, inputSize: size, threads: 1).pooledFeatures(images, batch: 1)
        for _ in 0..<5 {
            var engine: InceptionV3Engine? = try InceptionV3Engine(network: network, inputSize: size, threads: 3)
            // Every part a worker runs stalls for 3 ms, so a worker is nearly always still inside one at the end.
            engine?.injectWorkerStalls(every: 1, microseconds: 3000)
            let same = try engine?.pooledFeatures(images, batch: 1) == reference
            #expect(same)
            engine = nil
        }
    }
}
