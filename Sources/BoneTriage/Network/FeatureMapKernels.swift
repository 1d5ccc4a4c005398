import Foundation

/// A view of an NHWC float tensor, possibly a channel slice of a wider one (for concatenation
/// without copies): element (n, y, x, c) lives at `data[((n*height + y)*width + x)*pixelStride + c]`.
struct FeatureMap {
    var data: UnsafeMutablePointer<Float>
    var batch: Int
    var height: Int
    var width: Int
    var channels: Int
    var pixelStride: Int

    var pixels: Int { batch * height * width }

    func slice(channelOffset: Int, count: Int) -> FeatureMap {
        FeatureMap(data: data + channelOffset, batch: batch, height: height, width: width, channels: count, pixelStride: pixelStride)
    }

    /// A dense map of the given shape laid over `buffer`.
    static func dense(_ buffer: UnsafeMutablePointer<Float>, batch: Int, height: Int, width: Int, channels: Int) -> FeatureMap {
        FeatureMap(data: buffer, batch: batch, height: height, width: width, channels: channels, pixelStride: channels)
    }

    /// Copies out as dense NHWC values.
    func denseValues() -> [Float] {
        var out = [Float](repeating: 0, count: pixels * channels)
        out.withUnsafeMutableBufferPointer { dst in
            guard let base = dst.baseAddress else { return }
            for p in 0..<pixels {
                (base + p * channels).update(from: data + p * pixelStride, count: channels)
            }
        }
        return out
    }
}

/// Splits `count` items into `parts` contiguous ranges of nearly equal size.
@inline(__always)
func partition(_ count: Int, parts: Int, index: Int) -> Range<Int> {
    let base = count / parts, extra = count % parts
    let start = index * base + min(index, extra)
    return start..<(start + base + (index < extra ? 1 : 0))
}

/// The engine's pooling kernels (convolutions are in Sources/CKernels). Every kernel can work on a
/// subrange of output rows, so the engine splits each layer across threads without extra copies.
enum FeatureMapKernels {
    /// 3x3 max pool with the given stride and padding (padding never wins: it acts as -infinity).
    static func maxPool3x3(_ input: FeatureMap, stride: Int, pad: Int, output: FeatureMap, outRows: Range<Int>) {
        pool3x3(input, stride: stride, pad: pad, output: output, outRows: outRows, average: false)
    }

    /// 3x3 average pool, stride 1, padding 1, padding excluded from the count (TF 'SAME',
    /// PyTorch count_include_pad=False).
    static func averagePool3x3(_ input: FeatureMap, output: FeatureMap, outRows: Range<Int>) {
        pool3x3(input, stride: 1, pad: 1, output: output, outRows: outRows, average: true)
    }

    /// `outRows` indexes output image rows across the batch: n * outHeight + oy.
    private static func pool3x3(_ input: FeatureMap, stride: Int, pad: Int, output: FeatureMap,
                                outRows: Range<Int>, average: Bool) {
        let c = input.channels
        for row in outRows {
            let n = row / output.height
            let oy = row - n * output.height
            let yLow = max(0, oy * stride - pad), yHigh = min(input.height, oy * stride - pad + 3)
            for ox in 0..<output.width {
                let xLow = max(0, ox * stride - pad), xHigh = min(input.width, ox * stride - pad + 3)
                let dst = output.data + ((n * output.height + oy) * output.width + ox) * output.pixelStride
                var first = true
                for y in yLow..<yHigh {
                    for x in xLow..<xHigh {
                        let src = input.data + ((n * input.height + y) * input.width + x) * input.pixelStride
                        if first {
                            dst.update(from: src, count: c)
                            first = false
                        } else if average {
                            for j in 0..<c { dst[j] += src[j] }
                        } else {
                            for j in 0..<c { dst[j] = max(dst[j], src[j]) }
                        }
                    }
                }
                if average {
                    let inv = 1 / Float((yHigh - yLow) * (xHigh - xLow))
                    for j in 0..<c { dst[j] *= inv }
                }
            }
        }
    }

    /// Mean over each image's pixels: output is [batch, channels].
    static func globalAveragePool(_ input: FeatureMap, into out: UnsafeMutablePointer<Float>, images: Range<Int>) {
        let c = input.channels, perImage = input.height * input.width
        let inv = 1 / Float(perImage)
        for n in images {
            let dst = out + n * c
            dst.update(repeating: 0, count: c)
            for p in 0..<perImage {
                let src = input.data + (n * perImage + p) * input.pixelStride
                for j in 0..<c { dst[j] += src[j] }
            }
            for j in 0..<c { dst[j] *= inv }
        }
    }
}
