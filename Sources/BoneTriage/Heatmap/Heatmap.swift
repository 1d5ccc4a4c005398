import Foundation

/// Where the model looked in one image: a grid over the model's input (the whole image, resized to the
/// input square as the model saw it), row-major, each value how much hiding that region lowered the
/// probability of abnormality (0 where hiding it did not lower it).
public struct Heatmap: Sendable, Equatable {
    public var rows: Int
    public var columns: Int
    /// `rows` x `columns` values, top row first; 0 or more.
    public var values: [Float]
    /// How it was made, e.g. "occlusion 30x30 stride 15 fill mean" (`OcclusionSensitivity.method`).
    public var method: String
    /// The fingerprint of the model it was made with (`LoadedModel.identity`): a heatmap counts only for
    /// a study triaged by that model.
    public var modelFingerprint: String

    public init(rows: Int, columns: Int, values: [Float], method: String, modelFingerprint: String) {
        precondition(rows > 0 && columns > 0 && values.count == rows * columns, "a heatmap holds rows x columns values")
        self.rows = rows
        self.columns = columns
        self.values = values
        self.method = method
        self.modelFingerprint = modelFingerprint
    }

    public var maximum: Float { values.max() ?? 0 }

    /// The heatmap at each pixel of a `width` x `height` picture of the same image: bilinear between the
    /// cells' centres (constant beyond the outer centres), row-major.
    public func upsampled(width: Int, height: Int) -> [Float] {
        var out = [Float](repeating: 0, count: max(0, width * height))
        guard width > 0, height > 0 else { return out }
        func taps(_ n: Int, cells: Int) -> [(Int, Int, Float)] {
            (0..<n).map { i in
                let centre = (Double(i) + 0.5) * Double(cells) / Double(n) - 0.5
                let clamped = min(max(centre, 0), Double(cells - 1))
                let a = Int(clamped.rounded(.down)), b = min(cells - 1, a + 1)
                return (a, b, Float(clamped - Double(a)))
            }
        }
        let xs = taps(width, cells: columns), ys = taps(height, cells: rows)
        for (y, (r0, r1, ty)) in ys.enumerated() {
            for (x, (c0, c1, tx)) in xs.enumerated() {
                let top = values[r0 * columns + c0] * (1 - tx) + values[r0 * columns + c1] * tx
                let bottom = values[r1 * columns + c0] * (1 - tx) + values[r1 * columns + c1] * tx
                out[y * width + x] = top * (1 - ty) + bottom * ty
            }
        }
        return out
    }

    /// The values as stored: 32-bit little-endian floats, row-major.
    public var storedValues: Data {
        var data = Data(capacity: values.count * 4)
        for v in values { withUnsafeBytes(of: v.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
        return data
    }

    /// The values back from `storedValues`; nil when the bytes do not hold rows x columns floats.
    public static func values(stored data: Data, rows: Int, columns: Int) -> [Float]? {
        guard rows > 0, columns > 0, data.count == rows * columns * 4 else { return nil }
        let bytes = [UInt8](data)
        return (0..<(rows * columns)).map { i in
            let b = UInt32(bytes[4 * i]) | UInt32(bytes[4 * i + 1]) << 8 | UInt32(bytes[4 * i + 2]) << 16 | UInt32(bytes[4 * i + 3]) << 24
            return Float(bitPattern: b)
        }
    }
}

/// What became of an image's heatmap: made, or why it could not be (its file gone, undecodable), with
/// the model it was tried with, so that it is not tried again for that model.
public enum HeatmapOutcome: Sendable, Equatable {
    case made(Heatmap)
    case notMade(reason: String, modelFingerprint: String)

    public var modelFingerprint: String {
        switch self {
        case let .made(h): return h.modelFingerprint
        case let .notMade(_, fingerprint): return fingerprint
        }
    }

    public var heatmap: Heatmap? {
        if case let .made(h) = self { return h }
        return nil
    }

    public var reason: String? {
        if case let .notMade(reason, _) = self { return reason }
        return nil
    }
}

/// An image's heatmap as the worklist keeps it.
public struct StoredHeatmap: Sendable, Equatable {
    public var sopInstanceUID: String
    public var outcome: HeatmapOutcome
    public var madeAt: Date

    public init(sopInstanceUID: String, outcome: HeatmapOutcome, madeAt: Date) {
        self.sopInstanceUID = sopInstanceUID
        self.outcome = outcome
        self.madeAt = madeAt
    }
}

/// Which triaged studies get heatmaps (`[heatmaps] compute`).
public enum HeatmapScope: String, Sendable, Codable, CaseIterable {
    /// Studies the model found abnormal.
    case flagged
    /// Every triaged study.
    case all
    /// None.
    case none
}

/// One image that still lacks a heatmap for its study's current model.
public struct HeatmapWork: Sendable, Equatable {
    public var studyInstanceUID: String
    public var sopInstanceUID: String
    public var filePath: String
    /// When retention removed the file (nil: it should be there).
    public var fileRemovedAt: Date?
    /// The study's current model (`Study.modelHash`).
    public var modelFingerprint: String

    public init(studyInstanceUID: String, sopInstanceUID: String, filePath: String, fileRemovedAt: Date?, modelFingerprint: String) {
        self.studyInstanceUID = studyInstanceUID
        self.sopInstanceUID = sopInstanceUID
        self.filePath = filePath
        self.fileRemovedAt = fileRemovedAt
        self.modelFingerprint = modelFingerprint
    }
}
