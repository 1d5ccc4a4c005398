import BoneTriage
import Foundation
import Testing

@Suite("Heatmap")
struct HeatmapTests {
    /// A small synthetic model at 75 px (cheap: the arithmetic, not the network's accuracy, is under test).
    static func maker(batchSize: Int) throws -> OcclusionSensitivity {
        let size = 75
        let network = InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: size))
        let engine = try InceptionV3Engine(network: network, inputSize: size, threads: 2)
        let head = LogisticHead(weights: (0..<2048).map { Float(sin(Double($0) * 0.37)) * 0.05 }, bias: 0.1)
        return OcclusionSensitivity(engine: engine, head: head, modelFingerprint: "fp-test", settings: OcclusionSettings(batchSize: batchSize))
    }

    /// A deterministic input with structure (a bright bar on a gradient), in -1...1.
    static func input(size: Int) -> [Float] {
        var out = [Float](repeating: 0, count: size * size * 3)
        for y in 0..<size {
            for x in 0..<size {
                let bar: Float = (x > size / 3 && x < size / 2) ? 0.8 : 0
                let v = -0.6 + Float(y) / Float(size) * 0.5 + bar
                for c in 0..<3 { out[(y * size + x) * 3 + c] = v }
            }
        }
        return out
    }

    @Test("occlusion: a 10x10 map from 9x9 patches of 2x2 cells, each cell the mean drop of the patches covering it, whatever the batch size")
    func occlusionMap() throws {
        let maker = try Self.maker(batchSize: 41)
        let size = 75, input = Self.input(size: size)
        let heatmap = try maker.heatmap(input: input)
        #expect(heatmap.rows == 10 && heatmap.columns == 10 && heatmap.values.count == 100)
        #expect(heatmap.modelFingerprint == "fp-test")
        #expect(heatmap.method.contains("15x15 px patches") && heatmap.method.contains("stride of 8 px") && heatmap.method.contains("9x9 positions"),
                "\(heatmap.method)")
        // The same map, computed here one occluded input at a time.
        let fill = OcclusionSensitivity.fillValues(input)
        func bound(_ k: Int) -> Int { OcclusionSensitivity.cellBoundary(k, cells: 10, size: size) }
        let p0 = try maker.probabilities([input])[0]
        var sums = [Double](repeating: 0, count: 100), counts = [Double](repeating: 0, count: 100)
        var anyDrop = false
        for i in 0..<9 {
            for j in 0..<9 {
                var hidden = [Bool](repeating: false, count: size * size)
                for y in bound(i)..<bound(i + 2) { for x in bound(j)..<bound(j + 2) { hidden[y * size + x] = true } }
                let p = try maker.probabilities([OcclusionSensitivity.occluded(input, hidden: hidden, fill: fill)])[0]
                let drop = max(0, p0 - p)
                anyDrop = anyDrop || drop > 0
                for r in i...(i + 1) { for c in j...(j + 1) { sums[r * 10 + c] += drop; counts[r * 10 + c] += 1 } }
            }
        }
        #expect(anyDrop, "some patch must lower the probability for the test to mean anything")
        for k in 0..<100 {
            #expect(abs(Double(heatmap.values[k]) - sums[k] / counts[k]) < 1e-5, "cell \(k): \(heatmap.values[k]) vs \(sums[k] / counts[k])")
        }
        #expect(heatmap.values.allSatisfy { $0 >= 0 })
        // Another batch size gives the same map.
        let other = try Self.maker(batchSize: 7).heatmap(input: input)
        #expect(zip(other.values, heatmap.values).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    @Test("a heatmap gives way between its batches when asked (a study is due): nil, after one batch; not asked before the first; the same map when not asked to")
    func yields() throws {
        let maker = try Self.maker(batchSize: 41)
        let input = Self.input(size: 75)
        var asked = 0
        #expect(try maker.heatmap(input: input, shouldYield: { asked += 1; return true }) == nil)
        #expect(asked == 1, "asked once, after the first batch")
        asked = 0
        let whole = try #require(try maker.heatmap(input: input, shouldYield: { asked += 1; return false }))
        #expect(asked == 1, "82 inputs in batches of 41: one boundary between batches")
        let plain = try maker.heatmap(input: input)
        #expect(whole.values.count == plain.values.count && zip(whole.values, plain.values).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test("upsampling: bilinear between cell centres, the cells' values at their centres and beyond the outer ones")
    func upsampling() {
        let h = Heatmap(rows: 2, columns: 2, values: [0, 1, 2, 3], method: "m", modelFingerprint: "f")
        let up = h.upsampled(width: 8, height: 8)
        #expect(up[0] == 0 && up[7] == 1 && up[56] == 2 && up[63] == 3)
        // Rising from left to right along the top row, never outside the cells' range.
        #expect(zip(up[0..<8], up[1..<8]).allSatisfy { $0 <= $1 })
        #expect(up.allSatisfy { $0 >= 0 && $0 <= 3 })
        #expect(up[3] > 0 && up[3] < 1)
    }

    @Test("stored values: 32-bit little-endian floats round-trip; a wrong length is refused")
    func storedValues() {
        let h = Heatmap(rows: 3, columns: 2, values: [0, 0.25, 1e-7, 0.5, 3, 0.125], method: "m", modelFingerprint: "f")
        #expect(h.storedValues.count == 24)
        #expect(Heatmap.values(stored: h.storedValues, rows: 3, columns: 2) == h.values)
        #expect(Heatmap.values(stored: h.storedValues, rows: 2, columns: 2) == nil)
        #expect(Heatmap.values(stored: h.storedValues.dropLast(), rows: 3, columns: 2) == nil)
    }
}
