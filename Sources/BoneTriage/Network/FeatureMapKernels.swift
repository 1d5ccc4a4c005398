import COpenBLAS
import Dispatch
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

/// Runs `body(i)` for i in 0..<n on up to n threads and returns when all are done; inline when n == 1.
///
/// The engine's callers hand each iteration a disjoint range of one output buffer and read shared
/// inputs only, so the non-Sendable closure (it captures raw buffer pointers) is safe to run
/// concurrently; `concurrentPerform` does not let it escape past this call.
@inline(__always)
func parallel(_ n: Int, _ body: (Int) -> Void) {
    if n <= 1 { body(0); return }
    withoutActuallyEscaping(body) { escapable in
        let concurrent = unsafeBitCast(escapable, to: (@Sendable (Int) -> Void).self)
        DispatchQueue.concurrentPerform(iterations: n, execute: concurrent)
    }
}

/// The numeric kernels of the engine. Every kernel can work on a subrange of output rows (pixels),
/// so the engine splits each layer across threads without extra copies.
enum FeatureMapKernels {
    /// Writes the im2col patches of output pixels `rows` into `patches` (one row of kh*kw*c per pixel,
    /// ordered ky, kx, c to match HWIO kernels). Out-of-image taps are zero.
    static func im2col(_ input: FeatureMap, _ spec: ConvolutionSpec, outHeight: Int, outWidth: Int,
                       rows: Range<Int>, into patches: UnsafeMutablePointer<Float>) {
        let c = input.channels
        let rowLength = spec.kernelHeight * spec.kernelWidth * c
        let perImage = outHeight * outWidth
        var dst = patches
        for r in rows {
            let n = r / perImage
            let rem = r - n * perImage
            let oy = rem / outWidth
            let ox = rem - oy * outWidth
            let y0 = oy * spec.stride - spec.padHeight
            let x0 = ox * spec.stride - spec.padWidth
            // Kernel columns that fall inside the image for this pixel; the rest are zero.
            let kxLow = max(0, -x0), kxHigh = min(spec.kernelWidth, input.width - x0)
            for ky in 0..<spec.kernelHeight {
                let iy = y0 + ky
                let rowDst = dst + ky * spec.kernelWidth * c
                if iy < 0 || iy >= input.height || kxLow >= kxHigh {
                    rowDst.update(repeating: 0, count: spec.kernelWidth * c)
                    continue
                }
                if kxLow > 0 { rowDst.update(repeating: 0, count: kxLow * c) }
                let src = input.data + ((n * input.height + iy) * input.width + x0) * input.pixelStride
                if input.pixelStride == c {
                    (rowDst + kxLow * c).update(from: src + kxLow * c, count: (kxHigh - kxLow) * c)
                } else {
                    for kx in kxLow..<kxHigh {
                        (rowDst + kx * c).update(from: src + kx * input.pixelStride, count: c)
                    }
                }
                if kxHigh < spec.kernelWidth {
                    (rowDst + kxHigh * c).update(repeating: 0, count: (spec.kernelWidth - kxHigh) * c)
                }
            }
            dst += rowLength
        }
    }

    /// C[rows, cols] = relu(A[rows, :] * B[:, cols] + bias[cols]), row-major with leading dimensions.
    static func gemmBiasReLU(a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             c: UnsafeMutablePointer<Float>, ldc: Int, bias: UnsafePointer<Float>,
                             rows: Range<Int>, cols: Range<Int>, k: Int) {
        guard !rows.isEmpty, !cols.isEmpty else { return }
        let m = rows.count, n = cols.count
        let aStart = a + rows.lowerBound * lda
        let bStart = b + cols.lowerBound
        let cStart = c + rows.lowerBound * ldc + cols.lowerBound
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k),
                    1, aStart, Int32(lda), bStart, Int32(ldb), 0, cStart, Int32(ldc))
        let biasStart = bias + cols.lowerBound
        for r in 0..<m {
            let row = cStart + r * ldc
            for j in 0..<n {
                let v = row[j] + biasStart[j]
                row[j] = v > 0 ? v : 0
            }
        }
    }

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
