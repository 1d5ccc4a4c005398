import BoneTriage
import Foundation
import Testing

/// The `keras` variant against keras.applications.InceptionV3 itself: the fixture was computed by
/// TensorFlow (tools/make_keras_fixture.py) with the same hash weights SyntheticWeights makes here.
@Suite("Inception V3 engine: parity with Keras")
struct KerasParityTests {
    static let fixturePath = Fixtures.path("keras-inception-v3-parity.safetensors")
    let fixture: SafeTensorsFile
    let network: InceptionV3Network

    init() throws {
        fixture = try SafeTensorsFile.read(path: Self.fixturePath)
        network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras))
    }

    func tensor(_ name: String) throws -> Tensor {
        try #require(fixture.tensors[name], "fixture lacks \(name)")
    }

    @Test("the architecture lists Keras' 94 convolutions in Keras' order")
    func convolutionOrder() throws {
        let text = try #require(fixture.metadata["kernel_shapes"])
        let shapes = try JSONDecoder().decode([[Int]].self, from: Data(text.utf8))
        #expect(shapes == InceptionV3Architecture(variant: .keras).convolutions.map(\.kernelShape))
    }

    @Test("the test images are the fixture's inputs, bit for bit")
    func inputsMatch() throws {
        let x = try tensor("in150")
        let mine = [1, 2].flatMap { seed in SyntheticWeights.testImage(size: 150, seed: seed).flatMap { v in Array(repeating: Float(v) / 127.5 - 1, count: 3) } }
        #expect(mine == x.values)
    }

    @Test("150x150, batch of 2: pooled features and four stage activations within 1e-4 of Keras, every kernel family",
          arguments: KernelFamily.supported)
    func parity150(family: KernelFamily) throws {
        let x = try tensor("in150")
        let engine = try InceptionV3Engine(network: network, inputSize: 150, threads: 2, kernels: family)
        #expect(engine.kernels == family)
        var stages: [InceptionStage: ActivationSnapshot] = [:]
        let pooled = try engine.pooledFeatures(x.values, batch: 2) { stages[$0] = $1 }
        #expect(relativeMaxDifference(pooled, try tensor("in150/pooled").values) <= 1e-4)
        for stage in InceptionStage.allCases {
            let reference = try tensor("in150/\(stage.rawValue)")
            let snapshot = try #require(stages[stage])
            #expect([snapshot.height, snapshot.width, snapshot.channels] == reference.shape)
            let image0 = Array(snapshot.values.prefix(reference.count))
            let diff = relativeMaxDifference(image0, reference.values)
            #expect(diff <= 1e-4, "stage \(stage.rawValue): relative difference \(diff)")
        }
    }

    @Test("299x299 input works and matches Keras, every kernel family", arguments: KernelFamily.supported)
    func parity299(family: KernelFamily) throws {
        let x = try tensor("in299")
        let engine = try InceptionV3Engine(network: network, inputSize: 299, threads: 2, kernels: family)
        let pooled = try engine.pooledFeatures(x.values, batch: 1)
        #expect(relativeMaxDifference(pooled, try tensor("in299/pooled").values) <= 1e-4)
    }

    @Test("one thread, two threads, alone or in a batch: the same features")
    func threadingAndBatchingAgree() throws {
        let x = try tensor("in150").values
        let one = try InceptionV3Engine(network: network, inputSize: 150, threads: 1)
        let two = try InceptionV3Engine(network: network, inputSize: 150, threads: 2)
        let batch = try two.pooledFeatures(x, batch: 2)
        let serial = try one.pooledFeatures(x, batch: 2)
        let image2 = Array(x[(150 * 150 * 3)...])
        let second = try two.pooledFeatures(image2, batch: 1)
        #expect(relativeMaxDifference(serial, batch) <= 1e-5)
        #expect(relativeMaxDifference(second, Array(batch[2048...])) <= 1e-5)
        // Reusing the engine's buffers after a different batch size gives the same answer again.
        #expect(try two.pooledFeatures(x, batch: 2) == batch)
        // A single image in the set made for two (the engine keeps it) gives a fresh engine's bits.
        let fresh = try InceptionV3Engine(network: network, inputSize: 150, threads: 2)
        #expect(try fresh.pooledFeatures(image2, batch: 1) == second)
        #expect(try two.pooledFeatures(image2, batch: 1) == second)
    }

    @Test("AVX2 and the AVX-512 code give the same bits through the whole network, in any thread split")
    func widefamiliesAgree() throws {
        let x = try tensor("in150").values
        guard KernelFamily.avx2.isSupported else { return }
        let reference = try InceptionV3Engine(network: network, inputSize: 150, threads: 2, kernels: .avx2).pooledFeatures(x, batch: 2)
        for family in [KernelFamily.avx512, .avx512OnAVX2] where family.isSupported {
            for threads in [1, 2, 3] {
                let features = try InceptionV3Engine(network: network, inputSize: 150, threads: threads, kernels: family).pooledFeatures(x, batch: 2)
                #expect(features == reference, "\(family), \(threads) thread(s)")
            }
        }
        // The portable family rounds differently (no fused multiply-add) but stays close.
        let portable = try InceptionV3Engine(network: network, inputSize: 150, threads: 2, kernels: .portable).pooledFeatures(x, batch: 2)
        #expect(portable != reference)
        #expect(relativeMaxDifference(portable, reference) <= 1e-5)
    }

    @Test("a kernel family is chosen by name; an unknown or unsupported one is refused with what this CPU runs")
    func familyChoice() throws {
        #expect(try KernelFamily.named(nil) == KernelFamily.best)
        #expect(try KernelFamily.named(" Auto ") == KernelFamily.best)
        #expect(try KernelFamily.fromEnvironment([:]) == KernelFamily.best)
        #expect(try KernelFamily.fromEnvironment(["BONETRIAGE_KERNELS": "portable"]) == .portable)
        #expect(throws: EngineError.unknownKernelFamily("sse9")) { try KernelFamily.named("sse9") }
        let message = EngineError.unknownKernelFamily("sse9").description
        #expect(message.contains("auto, avx512, avx2, portable"), "\(message)")
        if !KernelFamily.avx512.isSupported {
            #expect(throws: EngineError.kernelFamilyUnsupported(.avx512, cpu: CPUInfo.modelName)) { try KernelFamily.named("avx512") }
            #expect(throws: EngineError.kernelFamilyUnsupported(.avx512, cpu: CPUInfo.modelName)) {
                try InceptionV3Engine(network: network, inputSize: 150, threads: 1, kernels: .avx512)
            }
            let text = EngineError.kernelFamilyUnsupported(.avx512, cpu: "Test CPU").description
            #expect(text.contains("cannot run on this CPU (Test CPU)") && text.contains("avx2"), "\(text)")
        }
        #expect(KernelFamily.supported.contains(.portable) && KernelFamily.supported.contains(KernelFamily.best))
    }

    @Test("bad input is refused with a clear error")
    func badInput() throws {
        #expect(throws: EngineError.inputSizeTooSmall(74)) { try InceptionV3Engine(network: network, inputSize: 74) }
        let engine = try InceptionV3Engine(network: network, inputSize: 150, threads: 1)
        #expect(throws: EngineError.wrongInputCount(expected: 67500, found: 3)) { try engine.pooledFeatures([0, 0, 0], batch: 1) }
        #expect(throws: EngineError.emptyBatch) { try engine.pooledFeatures([], batch: 0) }
    }
}
