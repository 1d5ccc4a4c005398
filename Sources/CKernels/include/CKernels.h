#ifndef BONETRIAGE_CKERNELS_H
#define BONETRIAGE_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "CKernelsPool.h"

#ifdef __cplusplus
extern "C" {
#endif

/// Output channels per packed weight panel (the micro-kernel's width).
#define BT_PANEL_WIDTH 16
/// Largest kernel_h * kernel_w the convolution accepts (Inception's largest is 5x5).
#define BT_MAX_TAPS 49
/// Largest input channel count the convolution accepts (padding taps read this many zeros).
#define BT_MAX_INPUT_CHANNELS 4096

/// One convolution over NHWC maps, each possibly a channel slice of a wider map (pixel stride >= channels).
/// Element (n, y, x, c) of the input lives at input[((n*in_h + y)*in_w + x)*in_stride + c]; the output likewise.
typedef struct {
    const float *input;
    int batch, in_h, in_w, in_c, in_stride;
    int kernel_h, kernel_w, stride, pad_h, pad_w;
    float *output;
    int out_h, out_w, out_c, out_stride;
    /// When split_panel > 0, output panels below it (channels [0, 16*split_panel)) go to output2 (pixel
    /// stride out2_stride) instead: a block's fused 1x1 convolutions write their first branch straight
    /// into the block output. Not supported by the Winograd path.
    int split_panel;
    float *output2;
    int out2_stride;
    /// The kernel family (BT_KERNELS_*) that runs it; BT_KERNELS_BEST picks the fastest this CPU has.
    int family;
} bt_conv_desc;

/// Kernel families. Every one computes the same convolution; the AVX2 and AVX-512 ones give the
/// same bits (same summation order, fused multiply-adds), the portable one rounds differently.
enum {
    /// The fastest family this CPU runs: AVX-512, else AVX2, else portable.
    BT_KERNELS_BEST = 0,
    /// Plain C, 4-wide SSE as Swift's baseline x86-64 target compiles it.
    BT_KERNELS_PORTABLE = 1,
    /// 256-bit AVX2 + FMA: 6 pixels x 16 channels per micro-kernel call.
    BT_KERNELS_AVX2 = 2,
    /// 512-bit AVX-512F: 12 pixels x 16 channels per call; 16-wide transforms and pools.
    BT_KERNELS_AVX512 = 3,
    /// The AVX-512 family's code compiled for AVX2 (each 16-float vector in two halves): slower than
    /// either, it exists so the suite can check that code on CPUs without AVX-512.
    BT_KERNELS_AVX512_ON_AVX2 = 4,
};

/// 1 when this CPU (and OS) can run the family, else 0.
int bt_kernels_supported(int family);
/// The family BT_KERNELS_BEST stands for on this CPU.
int bt_kernels_best(void);
/// The family a descriptor's `family` runs as (BT_KERNELS_BEST, or one the CPU lacks, give the best).
int bt_kernels_resolve(int family);
/// Output pixels per micro-kernel call for the family (row ranges that are multiples of it waste nothing).
int bt_kernels_strip_height(int family);

/// Floats needed to pack a [k, n] weight matrix (k = kernel_h*kernel_w*in_c, rows ordered ky, kx, c).
size_t bt_packed_weights_count(int k, int n);

/// Packs row-major weights [k, n] and bias [n] into panels of BT_PANEL_WIDTH output channels:
/// each panel is its 16 biases then k rows of 16 weights (zero beyond n).
void bt_pack_weights(const float *weights, const float *bias, int k, int n, float *packed);

/// Number of panels for n output channels.
int bt_panel_count(int n);

/// output = relu(conv(input, weights) + bias) for output pixels [row_begin, row_end) (pixel index
/// across the batch) and output channel panels [panel_begin, panel_end). Disjoint ranges may run concurrently.
void bt_conv_relu(const bt_conv_desc *desc, const float *packed, int row_begin, int row_end,
                  int panel_begin, int panel_end);

/// The same without the ReLU when relu is 0 (the Winograd path's transformed products).
void bt_conv(const bt_conv_desc *d, const float *packed, int row_begin, int row_end,
             int panel_begin, int panel_end, int relu);

/// A part that another thread may take over (bt_pool_run_guarded): bt_conv's outputs for the part's rows
/// and panels go densely into `part_out` instead of the output (bt_conv_part_scratch_count floats: one row
/// per output pixel in the kernel's visiting order, 16 floats per panel), and bt_conv_commit then copies
/// them to where bt_conv writes them. NULL writes directly.
void bt_conv_part(const bt_conv_desc *d, const float *packed, int row_begin, int row_end,
                  int panel_begin, int panel_end, int relu, float *part_out);
size_t bt_conv_part_scratch_count(int row_begin, int row_end, int panel_begin, int panel_end);
void bt_conv_commit(const bt_conv_desc *d, int row_begin, int row_end, int panel_begin, int panel_end, const float *part_out);
/// Winograd F(4x4, 3x3) and F(2x2, 5x5) for stride-1 convolutions: 36 GEMMs over 6x6 input tiles,
/// 4x (3x3) or 2.8x (5x5) fewer multiplications. Weights are transformed and packed once at load
/// (36 packed matrices of [in_c, out_c], zero bias); the bias is added in the output transform.
int bt_winograd_supports(int kernel_h, int kernel_w, int stride);
size_t bt_winograd_weights_count(int in_c, int out_c);
/// weights: HWIO [kernel][kernel][in_c][out_c], kernel 3 or 5.
void bt_winograd_pack_weights(const float *weights, int kernel, int in_c, int out_c, float *packed);
/// Output tiles (4x4 pixels for 3x3, 2x2 for 5x5) of a convolution across the batch.
int bt_winograd_tile_count(const bt_conv_desc *desc);
/// Scratch floats one thread needs for bt_winograd_conv_relu.
size_t bt_winograd_scratch_count(int in_c, int out_c);
/// output = relu(conv(input) + bias) for output tiles [tile_begin, tile_end); desc must be supported.
/// Disjoint tile ranges may run concurrently, each with its own scratch.
void bt_winograd_conv_relu(const bt_conv_desc *desc, const float *packed, const float *bias,
                           int tile_begin, int tile_end, float *scratch);

/// bt_winograd_conv_relu into `part_out` (bt_winograd_part_scratch_count floats: each tile's ts x ts
/// pixels of out_c floats) instead of the output; bt_winograd_commit copies them into the output.
void bt_winograd_conv_relu_part(const bt_conv_desc *desc, const float *packed, const float *bias,
                                int tile_begin, int tile_end, float *scratch, float *part_out);
size_t bt_winograd_part_scratch_count(const bt_conv_desc *desc, int tile_begin, int tile_end);
void bt_winograd_commit(const bt_conv_desc *desc, int tile_begin, int tile_end, const float *part_out);
/// 3x3 max (average = 0) or average pooling, padding excluded from both, for output image rows
/// [row_begin, row_end) (row = n * out_h + oy). Uses input, in_*, stride, pad_*, output, out_h, out_w
/// and out_stride of the descriptor; channels = in_c.
void bt_pool3x3(const bt_conv_desc *desc, int average, int row_begin, int row_end);

/// Rounds each value to bfloat16 (round to nearest, ties to even) in place, kept as a float whose low 16
/// bits are zero: how the reduced-precision study emulates the bfloat16 kernel with the float32 ones.
void bt_round_bfloat16(float *values, long count);
/// The rounded values of `channels` values of each of `pixels` pixels `src_stride` floats apart (a map or a
/// slice of one), written densely to dst (`channels` floats per pixel), the source left alone: how the
/// emulation gives a layer the input the bfloat16 kernel reads.
void bt_round_bfloat16_copy(const float *src, long pixels, int channels, int src_stride, float *dst);

/// 1 when this CPU (and OS) runs the bfloat16 convolution (AVX512-BF16 besides the AVX-512 family).
int bt_bfloat16_supported(void);
/// Pairs of input channels the bfloat16 path reads per pixel: (in_c + 1) / 2 (an odd count gets a zero pair half).
int bt_bfloat16_pairs(int in_c);
/// 32-bit words needed to pack a convolution's weights for the bfloat16 path.
size_t bt_packed_weights_bfloat16_count(int taps, int in_c, int n);
/// Packs row-major weights [taps * in_c, n] (rows ordered ky, kx, c) and bias [n] into panels of
/// BT_PANEL_WIDTH output channels: each panel is its 16 float biases, then for each tap and pair of input
/// channels (2q, 2q+1) 16 words, word j holding channel j's two weights as bfloat16, 2q in the HIGH half.
/// VDPBF16PS adds a lane's high product first, then the low one (Intel SDM; AMD Zen 5 checked), and a
/// product of two bfloat16 values is exact in float32: with 2q high, each output is summed in the float32
/// kernels' order, so the kernel gives the float32 kernel's bits on rounded values (the emulation's).
/// Weights are rounded to nearest, ties to even. `packed` is only a store of 32-bit words here.
void bt_pack_weights_bfloat16(const float *weights, const float *bias, int taps, int in_c, int n, float *packed);
/// The bfloat16 copy of a map (or a channel slice of one) the bfloat16 convolution reads: `pixels` rows of
/// bt_bfloat16_pairs(channels) words, each channel 2q in the high half and 2q+1 (0 past an odd count) in
/// the low half, rounded to nearest, ties to even.
void bt_convert_bfloat16_map(const float *src, long pixels, int channels, int src_stride, uint16_t *dst);
/// bt_conv over the bfloat16 copy `input` of desc->input (as bt_convert_bfloat16_map writes it) and weights
/// packed by bt_pack_weights_bfloat16; requires bt_bfloat16_supported(). Output in float32 as bt_conv's.
void bt_conv_bfloat16(const bt_conv_desc *d, const uint16_t *input, const float *packed, int row_begin, int row_end,
                      int panel_begin, int panel_end, int relu);
/// bt_conv_bfloat16 into `part_out`, as bt_conv_part (then bt_conv_commit).
void bt_conv_bfloat16_part(const bt_conv_desc *d, const uint16_t *input, const float *packed, int row_begin, int row_end,
                           int panel_begin, int panel_end, int relu, float *part_out);

#ifdef __cplusplus
}
#endif

#endif
