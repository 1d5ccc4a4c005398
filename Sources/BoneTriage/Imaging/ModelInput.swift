/// How an image is scaled to the model's input size.
public enum ResizeFilter: String, Sendable, Codable, CaseIterable {
    /// Area averaging when shrinking (each output pixel is the mean of the input area it covers),
    /// bilinear when enlarging. The default: it keeps thin cortical lines that nearest drops.
    case area
    /// Nearest neighbour, as Keras' `flow_from_directory` (PIL NEAREST) does: for models trained that way.
    case nearest
}

/// What the model expects: a square size, a value range, and the resize filter (all from the model file).
public struct ModelInputSpec: Sendable, Equatable {
    public var size: Int
    public var range: ClosedRange<Float>
    public var filter: ResizeFilter

    public init(size: Int, range: ClosedRange<Float>, filter: ResizeFilter) {
        self.size = size
        self.range = range
        self.filter = filter
    }
}

/// Turns a rendered radiograph into the model's size x size x 3 float input (NHWC, one image).
public enum ModelInput {
    /// Each input of a batch ([n, size, size, 3], NHWC) mirrored left to right.
    public static func mirrored(batch: [Float], size: Int) -> [Float] {
        let row = size * 3
        guard row > 0 else { return batch }
        var out = batch  // a trailing part shorter than a row (not an input) stays as it was
        batch.withUnsafeBufferPointer { from in
            out.withUnsafeMutableBufferPointer { to in
                guard let source = from.baseAddress, let target = to.baseAddress else { return }
                for start in stride(from: 0, to: batch.count - row + 1, by: row) {
                    for x in 0..<size {
                        let a = source + start + (size - 1 - x) * 3, b = target + start + x * 3
                        b[0] = a[0]; b[1] = a[1]; b[2] = a[2]
                    }
                }
            }
        }
        return out
    }

    /// An NHWC size x size x 3 input mirrored left to right.
    public static func mirrored(_ input: [Float], size: Int) -> [Float] { mirrored(batch: input, size: size) }

    /// `reduction`: the image is a JPEG 2000 resolution level (see `Reduction`), resized as the full
    /// image would be; nil for a full-resolution image.
    public static func make(_ image: Radiograph, spec: ModelInputSpec, reduction: Reduction? = nil) -> [Float] {
        let resized: [Float]
        if let reduction, reduction.level > 0, spec.filter == .area {
            resized = resize(image, to: spec.size, reduction: reduction)
        } else {
            resized = resize(image, to: spec.size, filter: spec.filter)
        }
        let low = spec.range.lowerBound, scale = (spec.range.upperBound - spec.range.lowerBound) / 255
        var out = [Float](repeating: 0, count: spec.size * spec.size * 3)
        let pixels = spec.size * spec.size
        for p in 0..<pixels {
            for c in 0..<3 {
                // Gray is replicated to R, G and B.
                // Weights sum to 1 only up to rounding: keep the value inside 0...255.
                let v = min(255, max(0, resized[p * image.channels + (image.channels == 3 ? c : 0)]))
                out[p * 3 + c] = low + v * scale
            }
        }
        return out
    }

    /// The model input as an 8-bit RGB image, to look at exactly what the model sees.
    public static func preview(_ input: [Float], spec: ModelInputSpec) -> Radiograph {
        let low = spec.range.lowerBound, width = spec.range.upperBound - spec.range.lowerBound
        let bytes = input.map { UInt8(max(0, min(255, (($0 - low) / width * 255).rounded()))) }
        return Radiograph(width: spec.size, height: spec.size, channels: 3, pixels: bytes)
    }

    /// Resamples to size x size, keeping channels; values stay in 0...255 as floats.
    public static func resize(_ image: Radiograph, to size: Int, filter: ResizeFilter) -> [Float] {
        resize(image, to: size, columns: weights(from: image.width, to: size, filter: filter),
               rows: weights(from: image.height, to: size, filter: filter))
    }

    static func resize(_ image: Radiograph, to size: Int, columns: [[(Int, Float)]], rows: [[(Int, Float)]]) -> [Float] {
        resize(image, columns: columns, rows: rows)
    }

    /// Separable resampling: output pixel (x, y) of each channel is the sum over `rows[y]` of the sums over
    /// `columns[x]` (input index, weight); `columns.count` x `rows.count` x channels floats, row by row.
    static func resize(_ image: Radiograph, columns: [[(Int, Float)]], rows: [[(Int, Float)]]) -> [Float] {
        let ch = image.channels, width = columns.count
        // Horizontal pass: height x width x ch.
        var horizontal = [Float](repeating: 0, count: image.height * width * ch)
        image.pixels.withUnsafeBufferPointer { src in
            for y in 0..<image.height {
                let rowStart = y * image.width * ch
                for (x, taps) in columns.enumerated() {
                    for c in 0..<ch {
                        var sum: Float = 0
                        for (index, weight) in taps { sum += Float(src[rowStart + index * ch + c]) * weight }
                        horizontal[(y * width + x) * ch + c] = sum
                    }
                }
            }
        }
        var out = [Float](repeating: 0, count: width * rows.count * ch)
        for (y, taps) in rows.enumerated() {
            for x in 0..<width {
                for c in 0..<ch {
                    var sum: Float = 0
                    for (index, weight) in taps { sum += horizontal[(index * width + x) * ch + c] * weight }
                    out[(y * width + x) * ch + c] = sum
                }
            }
        }
        return out
    }

    /// Where a reduced image's pixels lie on the full image: JPEG 2000 resolution level `level` of a
    /// `fullWidth` x `fullHeight` image. Its pixel n is the wavelet low-pass centred on full-resolution
    /// pixel 2^level x n (not on the middle of the 2^level pixels from there), so the area filter reads
    /// it shifted by (2^level - 1) / 2 full-resolution pixels, and at the full image's scale. A JPEG
    /// decoded with DCT scaling 1/2^level (`blockAligned`) has pixel n covering exactly full-resolution
    /// pixels [2^level n, 2^level (n + 1)): no shift.
    public struct Reduction: Sendable, Equatable {
        public var level: Int
        public var fullWidth: Int
        public var fullHeight: Int
        public var blockAligned: Bool
        public init(level: Int, fullWidth: Int, fullHeight: Int, blockAligned: Bool = false) {
            self.level = level
            self.fullWidth = fullWidth
            self.fullHeight = fullHeight
            self.blockAligned = blockAligned
        }
    }

    /// Area averaging of a reduced image over the same full-resolution areas as `resize(_:to:filter:)`
    /// averages on the full image.
    static func resize(_ image: Radiograph, to size: Int, reduction: Reduction) -> [Float] {
        let aligned = reduction.blockAligned
        let columns = reducedAreaWeights(input: image.width, full: reduction.fullWidth, level: reduction.level, output: size, blockAligned: aligned)
        let rows = reducedAreaWeights(input: image.height, full: reduction.fullHeight, level: reduction.level, output: size, blockAligned: aligned)
        return resize(image, to: size, columns: columns, rows: rows)
    }

    /// Output pixel o covers full-resolution [o s, (o + 1) s), s = full / output. Reduced pixel n covers
    /// full-resolution [2^l n + 1/2 - 2^(l-1), 2^l n + 1/2 + 2^(l-1)), in reduced units [n + d, n + 1 + d)
    /// with d = 1/2^(l+1) - 1/2 (d = 0 when `blockAligned`). Overlaps are clipped to the image and the
    /// weights renormalised.
    static func reducedAreaWeights(input: Int, full: Int, level: Int, output: Int, blockAligned: Bool = false) -> [[(Int, Float)]] {
        let factor = Double(1 << min(max(level, 0), 30))
        let scale = Double(full) / Double(output) / factor
        let shift = blockAligned ? 0 : 0.5 / factor - 0.5
        return (0..<output).map { o in
            let start = max(0, Double(o) * scale - shift), end = min(Double(input), Double(o + 1) * scale - shift)
            var taps: [(Int, Float)] = []
            var total = 0.0
            var i = Int(start.rounded(.down))
            while Double(i) < end && i < input {
                let overlap = min(end, Double(i + 1)) - max(start, Double(i))
                if overlap > 1e-12 { taps.append((i, Float(overlap))); total += overlap }
                i += 1
            }
            guard total > 0 else { return [(max(0, min(input - 1, Int(start))), Float(1))] }
            return taps.map { ($0.0, Float(Double($0.1) / total)) }
        }
    }

    /// For each output index, the input indices it reads and their weights (summing to 1).
    static func weights(from input: Int, to output: Int, filter: ResizeFilter) -> [[(Int, Float)]] {
        let scale = Double(input) / Double(output)
        return (0..<output).map { o in
            switch filter {
            case .nearest:
                return [(min(input - 1, Int((Double(o) + 0.5) * scale)), Float(1))]
            case .area where scale >= 1:
                let start = Double(o) * scale, end = start + scale
                var taps: [(Int, Float)] = []
                var i = Int(start)
                while Double(i) < end && i < input {
                    let overlap = min(end, Double(i + 1)) - max(start, Double(i))
                    if overlap > 1e-12 { taps.append((i, Float(overlap / scale))) }
                    i += 1
                }
                return taps
            case .area:  // enlarging: bilinear with pixel centres aligned
                let centre = (Double(o) + 0.5) * scale - 0.5
                let left = Int(centre.rounded(.down))
                let t = Float(centre - Double(left))
                let a = max(0, min(input - 1, left)), b = max(0, min(input - 1, left + 1))
                return a == b ? [(a, Float(1))] : [(a, 1 - t), (b, t)]
            }
        }
    }
}
