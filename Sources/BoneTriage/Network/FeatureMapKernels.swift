import CKernels
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

    /// Images [start, start + count) of the batch.
    func images(_ start: Int, _ count: Int) -> FeatureMap {
        FeatureMap(data: data + start * height * width * pixelStride, batch: count, height: height, width: width, channels: channels,
                   pixelStride: pixelStride)
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

/// The engine's pooling kernels (the 3x3 pools, like the convolutions, run in Sources/CKernels). Every
/// kernel can work on a subrange of output rows, so the engine splits each layer across threads.
enum FeatureMapKernels {
    /// 3x3 max pool with the given stride and padding (padding never wins: it acts as -infinity).
    static func maxPool3x3(_ input: FeatureMap, stride: Int, pad: Int, output: FeatureMap, outRows: Range<Int>, kernels: KernelFamily) {
        pool3x3(input, stride: stride, pad: pad, output: output, outRows: outRows, average: false, kernels: kernels)
    }

    /// 3x3 average pool, stride 1, padding 1, padding excluded from the count (TF 'SAME',
    /// PyTorch count_include_pad=False).
    static func averagePool3x3(_ input: FeatureMap, output: FeatureMap, outRows: Range<Int>, kernels: KernelFamily) {
        pool3x3(input, stride: 1, pad: 1, output: output, outRows: outRows, average: true, kernels: kernels)
    }

    /// `outRows` indexes output image rows across the batch: n * outHeight + oy.
    private static func pool3x3(_ input: FeatureMap, stride: Int, pad: Int, output: FeatureMap,
                                outRows: Range<Int>, average: Bool, kernels: KernelFamily) {
        precondition(input.channels == output.channels && input.batch == output.batch, "pool shape mismatch")
        var desc = bt_conv_desc(
            input: UnsafePointer(input.data), batch: Int32(input.batch), in_h: Int32(input.height), in_w: Int32(input.width),
            in_c: Int32(input.channels), in_stride: Int32(input.pixelStride),
            kernel_h: 3, kernel_w: 3, stride: Int32(stride), pad_h: Int32(pad), pad_w: Int32(pad),
            output: output.data, out_h: Int32(output.height), out_w: Int32(output.width),
            out_c: Int32(output.channels), out_stride: Int32(output.pixelStride),
            split_panel: 0, output2: nil, out2_stride: 0, family: kernels.code)
        bt_pool3x3(&desc, average ? 1 : 0, Int32(outRows.lowerBound), Int32(outRows.upperBound))
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
