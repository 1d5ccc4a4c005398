import Foundation

/// How occlusion sensitivity covers the model input: a grid of `cells` x `cells` cells; a patch of
/// `patchCells` x `patchCells` cells is hidden at every cell position (stride one cell), so each cell is
/// measured by up to patchCells^2 overlapping patches. At 150 px: 15 px cells, 30x30 px patches at a
/// stride of 15 px, 9 x 9 = 81 patch positions, a 10 x 10 map.
public struct OcclusionSettings: Sendable, Equatable {
    public var cells: Int
    public var patchCells: Int
    /// Occluded inputs per engine run; the original and the 81 occluded inputs make 2 batches of 41.
    public var batchSize: Int

    public init(cells: Int = 10, patchCells: Int = 2, batchSize: Int = 41) {
        self.cells = max(2, cells)
        self.patchCells = min(max(1, patchCells), self.cells)
        self.batchSize = max(1, batchSize)
    }

    /// Patch positions per side.
    public var positions: Int { cells - patchCells + 1 }
}

/// Occlusion sensitivity (Zeiler and Fergus, 2014): the model input with one patch replaced by the
/// image's mean value, for every patch position, run as batches through the worker's own engine and
/// head; a patch's value is max(0, p(original) - p(occluded)), and a cell's value is the mean over the
/// patches that cover it. Faithful by construction (it measures the model itself, not a proxy such as
/// gradients) and model-agnostic; its cost is (positions^2 + 1) forward passes per image.
///
/// Not thread-safe (it runs an engine): one per worker.
public final class OcclusionSensitivity {
    public let engine: InceptionV3Engine
    public let head: LogisticHead
    public let reading: HeadReading
    public let modelFingerprint: String
    public var settings: OcclusionSettings

    public init(engine: InceptionV3Engine, head: LogisticHead, reading: HeadReading = .mixed10, modelFingerprint: String,
                settings: OcclusionSettings = OcclusionSettings()) {
        self.engine = engine
        self.head = head
        self.reading = reading
        self.modelFingerprint = modelFingerprint
        self.settings = settings
    }

    var size: Int { engine.inputSize }

    /// Where cell k begins (and cell k - 1 ends) along a side of the input, in pixels.
    public static func cellBoundary(_ k: Int, cells: Int, size: Int) -> Int { (k * size + cells / 2) / cells }

    /// How the heatmap is made, as recorded with it.
    public var method: String {
        let c = settings.cells, s = size
        let patch = Self.cellBoundary(settings.patchCells, cells: c, size: s), stride = Self.cellBoundary(1, cells: c, size: s)
        return "occlusion: \(patch)x\(patch) px patches of the \(s)x\(s) input at a stride of \(stride) px (\(settings.positions)x\(settings.positions) positions), "
            + "filled with the image's mean; \(c)x\(c) map of the mean drop in p(abnormal)"
            + (reading.testTimeFlip ? " (each input also scored mirrored, as the verdict was)" : "")
    }

    /// The model's probability of abnormality for each input (size x size x 3, NHWC), in batches.
    public func probabilities(_ inputs: [[Float]]) throws -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(inputs.count)
        var start = 0
        while start < inputs.count {
            let end = min(inputs.count, start + settings.batchSize)
            out += try engine.probabilities(of: Array(inputs[start..<end]), head: head, reading: reading)
            start = end
        }
        return out
    }

    /// The per-channel mean of an input: what hidden pixels are set to.
    public static func fillValues(_ input: [Float]) -> [Float] {
        var sums = [Double](repeating: 0, count: 3)
        let pixels = input.count / 3
        for p in 0..<pixels { for c in 0..<3 { sums[c] += Double(input[p * 3 + c]) } }
        return sums.map { Float($0 / Double(max(1, pixels))) }
    }

    /// The input with the pixels where `hidden` is true (size x size, row-major) set to the image's mean.
    public static func occluded(_ input: [Float], hidden: [Bool], fill: [Float]) -> [Float] {
        var out = input
        for (p, hide) in hidden.enumerated() where hide { for c in 0..<3 { out[p * 3 + c] = fill[c] } }
        return out
    }

    /// Sets rows `rows` and columns `columns` (pixels) of one input in place to `fill`.
    static func occlude(_ image: UnsafeMutableBufferPointer<Float>, size: Int, rows: Range<Int>, columns: Range<Int>, fill: [Float]) {
        for y in rows { for x in columns { for c in 0..<3 { image[(y * size + x) * 3 + c] = fill[c] } } }
    }

    /// The heatmap of one model input (size x size x 3, in the model's range, as `ModelInput.make` gives it).
    public func heatmap(input: [Float]) throws -> Heatmap {
        guard let heatmap = try heatmap(input: input, shouldYield: { false }) else { preconditionFailure("a heatmap that never yields was given up") }
        return heatmap
    }

    /// As `heatmap(input:)`, but `shouldYield` is asked between two batches: when it says yes (a study
    /// is due for triage), the work so far is given up and nil returned, so the study waits at most for
    /// one batch (about half an image's heatmap), not a whole one.
    public func heatmap(input: [Float], shouldYield: () -> Bool) throws -> Heatmap? {
        let s = size, c = settings.cells, k = settings.patchCells, n = settings.positions
        guard input.count == s * s * 3 else { throw EngineError.wrongInputCount(expected: s * s * 3, found: input.count) }
        let fill = Self.fillValues(input)
        func bound(_ i: Int) -> Int { Self.cellBoundary(i, cells: c, size: s) }
        // The original first, then each patch position, row by row; built one batch at a time.
        let total = 1 + n * n
        var probabilities: [Double] = []
        probabilities.reserveCapacity(total)
        // Each batch is written straight into one flat array, reused while the batch size stays.
        let pixels = s * s * 3
        var batch: [Float] = []
        var start = 0
        while start < total {
            if start > 0 && shouldYield() { return nil }
            let end = min(total, start + max(1, settings.batchSize))
            if batch.count != (end - start) * pixels { batch = [Float](repeating: 0, count: (end - start) * pixels) }
            batch.withUnsafeMutableBufferPointer { out in
                for index in start..<end {
                    let image = UnsafeMutableBufferPointer(rebasing: out[((index - start) * pixels)..<((index - start + 1) * pixels)])
                    _ = image.update(fromContentsOf: input)
                    guard index > 0 else { continue }
                    let i = (index - 1) / n, j = (index - 1) % n
                    Self.occlude(image, size: s, rows: bound(i)..<bound(i + k), columns: bound(j)..<bound(j + k), fill: fill)
                }
            }
            probabilities += try engine.probabilities(ofBatch: batch, count: end - start, head: head, reading: reading)
            start = end
        }
        let original = probabilities[0]
        var sums = [Double](repeating: 0, count: c * c), counts = [Int](repeating: 0, count: c * c)
        for i in 0..<n {
            for j in 0..<n {
                let drop = max(0, original - probabilities[1 + i * n + j])
                for r in i..<(i + k) { for q in j..<(j + k) { sums[r * c + q] += drop; counts[r * c + q] += 1 } }
            }
        }
        let values = (0..<(c * c)).map { Float(counts[$0] > 0 ? sums[$0] / Double(counts[$0]) : 0) }
        return Heatmap(rows: c, columns: c, values: values, method: method, modelFingerprint: modelFingerprint)
    }
}
