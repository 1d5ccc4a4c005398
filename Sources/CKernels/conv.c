// Convolution as an implicit GEMM over pre-packed weights, in the style of XNNPACK's igemm: each
// group of 6 output pixels gets a table of pointers to its input pixels (one per kernel tap, or to a
// zero row for padding), and the micro-kernel walks the channels behind those pointers. No im2col
// copy is made, and the weights are packed once at load, so nothing is re-packed per call.
#include "CKernels.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BT_X86 1
#endif

/// Output pixels per micro-kernel call: 6 for the portable and AVX2 kernels (12 ymm accumulators),
/// 12 for the AVX-512 one (12 zmm accumulators, enough in flight to keep two FMA ports busy).
#define MR 6
#define MR_WIDE 12
#define MR_MAX MR_WIDE
#define NR BT_PANEL_WIDTH
/// M(1) ... M(6) and M(1) ... M(12): one instantiation per strip height of the 6- and 12-row kernels.
#define FOR_ROWS_6(M) M(1) M(2) M(3) M(4) M(5) M(6)
#define FOR_ROWS_12(M) FOR_ROWS_6(M) M(7) M(8) M(9) M(10) M(11) M(12)

/// Weight bytes of the panels one pass over a row strip visits: sized to stay in the (512 KB) L2,
/// so weights larger than that are streamed from memory once per group of panels, not once per strip.
#define PANEL_BLOCK_BYTES (192 * 1024)
/// The kernels ask for the weight row this many rows (64 bytes each) ahead of the one they multiply. The
/// first strip over a panel reads its weights from memory, and at batch 1 the late layers see each weight
/// for only a few pixels: the hardware's own prefetch then leaves the core waiting on memory. 96 rows
/// (6 KB, a few hundred cycles of FMAs) ahead took batch 1 from 6.3 to 5.0-5.3 ms on a Zen 5 (mixed10's
/// fused 1x1 from 32 to 50 GB/s; AVX2 kernels 8.3 -> 7.4 ms, bfloat16 4.0 -> 3.6 ms), batch 16 1-2% slower; 16
/// rows gained little, 48-192 about as much. Asking only in a panel's first strip was no better. Past a
/// panel's end it reads the next panel, which is usually next; prefetching never faults.
#define WEIGHT_PREFETCH_ROWS 96
#define PREFETCH_WEIGHTS(row) __builtin_prefetch((const void *)((uintptr_t)(row) + WEIGHT_PREFETCH_ROWS * NR * sizeof(float)), 0, 3)

static const float zero_row[BT_MAX_INPUT_CHANNELS] __attribute__((aligned(64)));

int bt_panel_count(int n) { return (n + NR - 1) / NR; }

size_t bt_packed_weights_count(int k, int n) {
    return (size_t)bt_panel_count(n) * (size_t)(NR + (size_t)k * NR);
}

void bt_pack_weights(const float *weights, const float *bias, int k, int n, float *packed) {
    for (int p = 0; p < bt_panel_count(n); p++) {
        float *dst = packed + (size_t)p * (NR + (size_t)k * NR);
        int j0 = p * NR;
        for (int j = 0; j < NR; j++) dst[j] = j0 + j < n ? bias[j0 + j] : 0.0f;
        dst += NR;
        for (int r = 0; r < k; r++) {
            for (int j = 0; j < NR; j++) dst[j] = j0 + j < n ? weights[(size_t)r * n + j0 + j] : 0.0f;
            dst += NR;
        }
    }
}

// ---- Kernel families -------------------------------------------------------------------------------

int bt_kernels_supported(int family) {
    switch (family) {
    case BT_KERNELS_BEST:
    case BT_KERNELS_PORTABLE:
        return 1;
#ifdef BT_X86
    case BT_KERNELS_AVX2:
    case BT_KERNELS_AVX512_ON_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case BT_KERNELS_AVX512:
        // compiler-rt reports AVX-512 only when the OS also saves the ZMM state (XCR0). Every feature the
        // AVX-512 functions are compiled for is required (F alone, as on Knights Landing or a VM that
        // hides the rest, would let the compiler's VL/DQ/BW instructions die on an illegal instruction).
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    default:
        return 0;
    }
}

int bt_kernels_best(void) {
    // The answer never changes, so concurrent first uses all store the same value (atomically).
    static int best = -1;
    int known = __atomic_load_n(&best, __ATOMIC_RELAXED);
    if (known < 0) {
        known = bt_kernels_supported(BT_KERNELS_AVX512) ? BT_KERNELS_AVX512
              : bt_kernels_supported(BT_KERNELS_AVX2)   ? BT_KERNELS_AVX2
                                                        : BT_KERNELS_PORTABLE;
        __atomic_store_n(&best, known, __ATOMIC_RELAXED);
    }
    return known;
}

int bt_kernels_resolve(int family) {
    // A family this CPU cannot run would die on an illegal instruction; callers check first (the
    // engine refuses it with an error), so this is only the last guard.
    if (family == BT_KERNELS_BEST || family == BT_KERNELS_PORTABLE) return family == BT_KERNELS_BEST ? bt_kernels_best() : family;
    static int checked[5] = {-1, -1, -1, -1, -1};
    if (family < 0 || family > 4) return bt_kernels_best();
    int ok = __atomic_load_n(&checked[family], __ATOMIC_RELAXED);
    if (ok < 0) {
        ok = bt_kernels_supported(family);
        __atomic_store_n(&checked[family], ok, __ATOMIC_RELAXED);
    }
    return ok ? family : bt_kernels_best();
}

/// One block of MR (or MR_WIDE) output pixels x 16 channels: out[i][0..nc) = act(bias + sum over the
/// listed taps of a_i,tap . w_tap) for rows i < mr. `tap_offsets[t]` is where tap t's cin x 16 weights
/// start after the panel's biases; `ptrs` holds [t][block] input pointers (block = the kernel's row
/// count); rows beyond mr alias row mr-1 (see strip_setup) and are computed, not stored.
///
/// Every family sums each output in the same order (bias, then tap by tap, channel by channel), and
/// the AVX2 and AVX-512 kernels with one fused multiply-add per term, so the two give the same bits.
/// (One exception, without the ReLU only: a 12-pixel strip keeps a padding tap that a 6-pixel strip
/// drops, and adding its 0 x w turns an output of -0 into +0. With the ReLU both give +0.)
typedef void (*micro_kernel)(int mr, int nc, int taps, const int *tap_offsets, int cin, const float *const *ptrs,
                             const float *w, float *const *out, int relu);

static void kernel_portable(int mr, int nc, int taps, const int *tap_offsets, int cin, const float *const *ptrs,
                            const float *w, float *const *out, int relu) {
    float acc[MR][NR];
    for (int i = 0; i < MR; i++) memcpy(acc[i], w, sizeof acc[i]);
    for (int t = 0; t < taps; t++) {
        const float *const *a = ptrs + t * MR;
        const float *wt = w + NR + tap_offsets[t];
        for (int k = 0; k < cin; k++) {
            for (int i = 0; i < MR; i++) {
                float v = a[i][k];
                for (int j = 0; j < NR; j++) acc[i][j] += v * wt[j];
            }
            wt += NR;
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nc; j++) out[i][j] = !relu || acc[i][j] > 0 ? acc[i][j] : 0;
}

#ifdef BT_X86
// One body, instantiated for each strip height: a strip of r < 6 rows then costs r rows of FMAs
// rather than 6 (49 = 8x6 + 1 output pixels per 7x7 image, 9 = 6 + 3 per 3x3 image at batch 1).
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
kernel_avx2_rows(const int rows, int nc, int taps, const int *tap_offsets, int cin, const float *const *ptrs,
                 const float *w, float *const *out, int relu) {
    __m256 acc[MR][2];
    const __m256 bias0 = _mm256_loadu_ps(w), bias1 = _mm256_loadu_ps(w + 8);
    for (int i = 0; i < rows; i++) { acc[i][0] = bias0; acc[i][1] = bias1; }
    for (int t = 0; t < taps; t++) {
        const float *a[MR];
        for (int i = 0; i < rows; i++) a[i] = ptrs[t * MR + i];
        const float *wt = w + NR + tap_offsets[t];
        for (int k = 0; k < cin; k++) {
            const __m256 b0 = _mm256_loadu_ps(wt), b1 = _mm256_loadu_ps(wt + 8);
            PREFETCH_WEIGHTS(wt);
            wt += NR;
            for (int i = 0; i < rows; i++) {
                const __m256 v = _mm256_broadcast_ss(a[i] + k);
                acc[i][0] = _mm256_fmadd_ps(v, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(v, b1, acc[i][1]);
            }
        }
    }
    // max(x, -inf) is x: the same code path without the ReLU.
    const __m256 z = relu ? _mm256_setzero_ps() : _mm256_set1_ps(-__builtin_inff());
    for (int i = 0; i < rows; i++) {
        const __m256 r0 = _mm256_max_ps(acc[i][0], z), r1 = _mm256_max_ps(acc[i][1], z);
        float *dst = out[i];
        if (nc == NR) {
            _mm256_storeu_ps(dst, r0);
            _mm256_storeu_ps(dst + 8, r1);
        } else {
            float tmp[NR];
            _mm256_storeu_ps(tmp, r0);
            _mm256_storeu_ps(tmp + 8, r1);
            memcpy(dst, tmp, (size_t)nc * sizeof(float));
        }
    }
}

#define KERNEL_AVX2_ROWS(R)                                                                                       \
    __attribute__((target("avx2,fma"))) static void kernel_avx2_##R(                                             \
        int nc, int taps, const int *tap_offsets, int cin, const float *const *ptrs, const float *w,             \
        float *const *out, int relu) {                                                                           \
        kernel_avx2_rows(R, nc, taps, tap_offsets, cin, ptrs, w, out, relu);                                      \
    }
FOR_ROWS_6(KERNEL_AVX2_ROWS)

static void kernel_avx2(int mr, int nc, int taps, const int *tap_offsets, int cin, const float *const *ptrs,
                        const float *w, float *const *out, int relu) {
    switch (mr) {
    case 1: kernel_avx2_1(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;
    case 2: kernel_avx2_2(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;
    case 3: kernel_avx2_3(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;
    case 4: kernel_avx2_4(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;
    case 5: kernel_avx2_5(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;
    default: kernel_avx2_6(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;
    }
}

// The AVX-512 kernel, written with 16-float vectors of the compiler (Clang's ext_vector_type) rather
// than intrinsics, so that the same body also compiles for AVX2 (each vector split into two ymm
// halves): the "avx512-on-avx2" family runs this exact code on CPUs without AVX-512, which is how the
// suite checks it on every machine. Compiled for AVX-512 it is one zmm register per row: 12 rows x 16
// channels, a 64-byte weight load and 12 broadcast FMAs per input channel.
typedef float bt_v16 __attribute__((ext_vector_type(16)));
typedef float bt_v16u __attribute__((ext_vector_type(16), aligned(4)));

static inline __attribute__((always_inline)) void
kernel_wide_rows(const int rows, int nc, int taps, const int *tap_offsets, int cin, const float *const *ptrs,
                 const float *w, float *const *out, int relu) {
    bt_v16 acc[MR_WIDE];
    const bt_v16 bias = *(const bt_v16u *)w;
    for (int i = 0; i < rows; i++) acc[i] = bias;
    for (int t = 0; t < taps; t++) {
        const float *a[MR_WIDE];
        for (int i = 0; i < rows; i++) a[i] = ptrs[t * MR_WIDE + i];
        const float *wt = w + NR + tap_offsets[t];
        for (int k = 0; k < cin; k++) {
            const bt_v16 b = *(const bt_v16u *)wt;
            PREFETCH_WEIGHTS(wt);
            wt += NR;
            for (int i = 0; i < rows; i++) acc[i] = __builtin_elementwise_fma((bt_v16)(a[i][k]), b, acc[i]);
        }
    }
    const bt_v16 z = (bt_v16)(relu ? 0.0f : -__builtin_inff());
    for (int i = 0; i < rows; i++) {
        // x > z ? x : z, like _mm256_max_ps(x, z) in the AVX2 kernel (so a ReLU of -0 or NaN agrees too).
        const bt_v16 v = (acc[i] > z) ? acc[i] : z;
        if (nc == NR) {
            *(bt_v16u *)out[i] = v;
        } else {
            float tmp[NR];
            *(bt_v16u *)tmp = v;
            memcpy(out[i], tmp, (size_t)nc * sizeof(float));
        }
    }
}

#define BT_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"), min_vector_width(512)))
#define BT_TARGET_AVX2 __attribute__((target("avx2,fma")))

#define KERNEL_WIDE_ROWS(R)                                                                                       \
    BT_TARGET_AVX512 static void kernel_avx512_##R(int nc, int taps, const int *tap_offsets, int cin,             \
                                                   const float *const *ptrs, const float *w, float *const *out,   \
                                                   int relu) {                                                    \
        kernel_wide_rows(R, nc, taps, tap_offsets, cin, ptrs, w, out, relu);                                      \
    }                                                                                                             \
    BT_TARGET_AVX2 static void kernel_avx512_on_avx2_##R(int nc, int taps, const int *tap_offsets, int cin,      \
                                                         const float *const *ptrs, const float *w,                \
                                                         float *const *out, int relu) {                           \
        kernel_wide_rows(R, nc, taps, tap_offsets, cin, ptrs, w, out, relu);                                      \
    }
FOR_ROWS_12(KERNEL_WIDE_ROWS)

#define KERNEL_WIDE_SWITCH(NAME)                                                                                  \
    static void NAME(int mr, int nc, int taps, const int *tap_offsets, int cin, const float *const *ptrs,        \
                     const float *w, float *const *out, int relu) {                                               \
        switch (mr) {                                                                                             \
        case 1: NAME##_1(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 2: NAME##_2(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 3: NAME##_3(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 4: NAME##_4(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 5: NAME##_5(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 6: NAME##_6(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 7: NAME##_7(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 8: NAME##_8(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 9: NAME##_9(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                  \
        case 10: NAME##_10(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                \
        case 11: NAME##_11(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                \
        default: NAME##_12(nc, taps, tap_offsets, cin, ptrs, w, out, relu); break;                                \
        }                                                                                                         \
    }
KERNEL_WIDE_SWITCH(kernel_avx512)
KERNEL_WIDE_SWITCH(kernel_avx512_on_avx2)
#endif

/// The micro-kernel of a (resolved) family and its rows per call.
static micro_kernel family_kernel(int family, int *rows) {
    *rows = MR;
#ifdef BT_X86
    switch (family) {
    case BT_KERNELS_AVX2: return kernel_avx2;
    case BT_KERNELS_AVX512: *rows = MR_WIDE; return kernel_avx512;
    case BT_KERNELS_AVX512_ON_AVX2: *rows = MR_WIDE; return kernel_avx512_on_avx2;
    default: break;
    }
#else
    (void)family;
#endif
    return kernel_portable;
}

int bt_kernels_strip_height(int family) {
    int rows;
    family_kernel(bt_kernels_resolve(family), &rows);
    return rows;
}

/// A 1xk convolution visits its output pixels column by column (x outer, y inner), so that the pixels
/// of one strip share their x and with it the taps that fall into the left or right padding.
static int is_horizontal(const bt_conv_desc *d) { return d->kernel_h == 1 && d->kernel_w > 1; }

/// The output pixel index (across the batch) of the pixel visited `r`-th: r itself, except for 1xk layers.
static size_t visit_pixel(const bt_conv_desc *d, int r) {
    if (!is_horizontal(d)) return (size_t)r;
    const int per_image = d->out_h * d->out_w, n = r / per_image, rem = r - n * per_image;
    const int ox = rem / d->out_h, oy = rem - ox * d->out_h;
    return (size_t)(n * d->out_h + oy) * d->out_w + ox;
}

/// For output pixels r0 ..< r0+mr (in visiting order): their output pixel indices, and the input
/// pointers of every tap that is inside the image for at least one of them, laid out [tap][block] with
/// each kept tap's index (ky * kernel_w + kx) in `kept_taps`. Taps that only read padding for the whole
/// strip are dropped (on the 7x7 maps of the 1x7 / 7x1 layers a quarter of all taps are padding). Rows
/// past mr repeat the last one so the micro-kernel needs no row tail; `block` is the kernel's rows per
/// call (MR or MR_WIDE). `input` is the map's first pixel, `pixel_bytes` the distance between pixels
/// (float32 maps, or the bfloat16 copy the reduced-precision path reads). Returns the number of taps kept.
static int strip_setup(const bt_conv_desc *d, const char *input, size_t pixel_bytes, int r0, int mr, int block,
                       const float **ptrs, int *kept_taps, size_t *pixels) {
    if (d->kernel_h == 1 && d->kernel_w == 1 && d->stride == 1 && d->pad_h == 0 && d->pad_w == 0) {
        for (int i = 0; i < block; i++) {
            pixels[i] = (size_t)(r0 + (i < mr ? i : mr - 1));
            ptrs[i] = (const float *)(input + pixels[i] * pixel_bytes);
        }
        kept_taps[0] = 0;
        return 1;
    }
    const int per_image = d->out_h * d->out_w, horizontal = is_horizontal(d);
    int y0[MR_MAX], x0[MR_MAX], img[MR_MAX];
    for (int i = 0; i < block; i++) {
        const int r = r0 + (i < mr ? i : mr - 1);
        const int n = r / per_image, rem = r - n * per_image;
        int oy, ox;
        if (horizontal) { ox = rem / d->out_h; oy = rem - ox * d->out_h; }
        else { oy = rem / d->out_w; ox = rem - oy * d->out_w; }
        pixels[i] = (size_t)(n * d->out_h + oy) * d->out_w + ox;
        img[i] = n;
        y0[i] = oy * d->stride - d->pad_h;
        x0[i] = ox * d->stride - d->pad_w;
    }
    int kept = 0;
    for (int ky = 0; ky < d->kernel_h; ky++) {
        for (int kx = 0; kx < d->kernel_w; kx++) {
            int any = 0;
            const float **group = ptrs + kept * block;
            for (int i = 0; i < block; i++) {
                const int iy = y0[i] + ky, ix = x0[i] + kx;
                const int inside = iy >= 0 && iy < d->in_h && ix >= 0 && ix < d->in_w;
                any |= inside;
                group[i] = inside ? (const float *)(input + ((size_t)(img[i] * d->in_h + iy) * d->in_w + ix) * pixel_bytes) : zero_row;
            }
            if (any) kept_taps[kept++] = ky * d->kernel_w + kx;
        }
    }
    return kept;
}

/// The most weight rows per tap a gathered strip may hold (see `gathers_patches`).
#define GATHER_MAX_DEPTH 32

/// Whether a layer runs as a 1x1 convolution over each strip's gathered patches: no padding, a dense
/// float32 input (each run of kernel_w pixels in a row is kernel_w * in_c consecutive floats) and few
/// weight rows per output channel (kernel_h * kernel_w * in_c <= GATHER_MAX_DEPTH). That is the stem's
/// first convolution (3x3, 3 channels): the micro-kernel then walks one tap of 27 rows instead of 9 taps
/// of 3, doing the same multiply-adds in the same order, so the output has the same bits.
static int gathers_patches(const bt_conv_desc *d, size_t pixel_bytes, int depth) {
    return d->pad_h == 0 && d->pad_w == 0 && depth == d->in_c && pixel_bytes == (size_t)d->in_c * sizeof(float) &&
           !(d->kernel_h == 1 && d->kernel_w == 1) && !is_horizontal(d) && d->kernel_h * d->kernel_w * d->in_c <= GATHER_MAX_DEPTH;
}

/// For output pixels r0 ..< r0+mr: their output pixel indices, and each one's patch (kernel_h runs of
/// kernel_w * in_c floats, in the packed weights' row order ky, kx, c) copied into `patches`
/// (GATHER_MAX_DEPTH floats per pixel), one pointer per row in `ptrs`; rows past mr repeat the last one.
static void gather_strip(const bt_conv_desc *d, const float *input, int r0, int mr, int block, float *patches,
                         const float **ptrs, size_t *pixels) {
    const int per_image = d->out_h * d->out_w, run = d->kernel_w * d->in_c;
    for (int i = 0; i < mr; i++) {
        const int r = r0 + i, n = r / per_image, rem = r - n * per_image, oy = rem / d->out_w, ox = rem - oy * d->out_w;
        float *patch = patches + (size_t)i * GATHER_MAX_DEPTH;
        for (int ky = 0; ky < d->kernel_h; ky++)
            memcpy(patch + ky * run, input + ((size_t)(n * d->in_h + oy * d->stride + ky) * d->in_w + (size_t)ox * d->stride) * d->in_c,
                   (size_t)run * sizeof(float));
        pixels[i] = (size_t)r;
        ptrs[i] = patch;
    }
    for (int i = mr; i < block; i++) { pixels[i] = pixels[mr - 1]; ptrs[i] = ptrs[mr - 1]; }
}

/// Panels per pass over the row strips: as many as keep their weights (`panel_bytes` each) in the L2.
static int panels_per_pass(size_t panel_bytes) {
    const int n = (int)(PANEL_BLOCK_BYTES / panel_bytes);
    return n < 1 ? 1 : n;
}

/// The loop every family shares: row strips of `block` pixels within groups of panels that stay in the L2.
/// `depth` is what the kernel walks per tap: input channels (float32), or channel pairs (bfloat16), each
/// one 16-word weight row; `input` and `pixel_bytes` locate the pixels the kernel reads. With `part_out`,
/// the part's outputs go there instead, densely (bt_conv_part_scratch_count), for bt_conv_commit to copy.
static void conv_strips(const bt_conv_desc *d, micro_kernel kernel, int block, const char *input, size_t pixel_bytes, int depth,
                        const float *packed, int row_begin, int row_end, int panel_begin, int panel_end, int relu,
                        float *part_out) {
    const size_t part_width = (size_t)(panel_end - panel_begin) * NR;
    const size_t panel_words = NR + (size_t)d->kernel_h * d->kernel_w * depth * NR;
    const int per_pass = panels_per_pass(panel_words * sizeof(float));
    const float *ptrs[BT_MAX_TAPS * MR_MAX];
    int kept_taps[BT_MAX_TAPS], tap_offsets[BT_MAX_TAPS];
    size_t pixels[MR_MAX];
    float *out[MR_MAX];
    const int gather = gathers_patches(d, pixel_bytes, depth);
    float patches[MR_MAX * GATHER_MAX_DEPTH] __attribute__((aligned(64)));
    const int kernel_depth = gather ? d->kernel_h * d->kernel_w * depth : depth;
    for (int pb = panel_begin; pb < panel_end; pb += per_pass) {
        const int pe = pb + per_pass < panel_end ? pb + per_pass : panel_end;
        for (int r = row_begin; r < row_end; r += block) {
            const int mr = row_end - r < block ? row_end - r : block;
            int kept = 1;
            if (gather) {
                gather_strip(d, (const float *)input, r, mr, block, patches, ptrs, pixels);
                tap_offsets[0] = 0;
            } else {
                kept = strip_setup(d, input, pixel_bytes, r, mr, block, ptrs, kept_taps, pixels);
                for (int t = 0; t < kept; t++) tap_offsets[t] = kept_taps[t] * depth * NR;
            }
            for (int p = pb; p < pe; p++) {
                const int nc = d->out_c - p * NR < NR ? d->out_c - p * NR : NR;
                const int second = p < d->split_panel && d->output2;
                if (part_out) {
                    for (int i = 0; i < block; i++)
                        out[i] = part_out + (size_t)(r - row_begin + (i < mr ? i : mr - 1)) * part_width + (size_t)(p - panel_begin) * NR;
                } else {
                    for (int i = 0; i < block; i++)
                        out[i] = second ? d->output2 + pixels[i] * d->out2_stride + p * NR : d->output + pixels[i] * d->out_stride + p * NR;
                }
                kernel(mr, nc, kept, tap_offsets, kernel_depth, ptrs, packed + (size_t)p * panel_words, out, relu);
            }
        }
    }
}

void bt_conv_part(const bt_conv_desc *d, const float *packed, int row_begin, int row_end,
                  int panel_begin, int panel_end, int relu, float *part_out) {
    int block;
    const micro_kernel kernel = family_kernel(bt_kernels_resolve(d->family), &block);
    conv_strips(d, kernel, block, (const char *)d->input, (size_t)d->in_stride * sizeof(float), d->in_c, packed, row_begin, row_end,
                panel_begin, panel_end, relu, part_out);
}

void bt_conv(const bt_conv_desc *d, const float *packed, int row_begin, int row_end,
             int panel_begin, int panel_end, int relu) {
    bt_conv_part(d, packed, row_begin, row_end, panel_begin, panel_end, relu, NULL);
}

size_t bt_conv_part_scratch_count(int row_begin, int row_end, int panel_begin, int panel_end) {
    return (size_t)(row_end - row_begin) * (size_t)(panel_end - panel_begin) * NR;
}

void bt_conv_commit(const bt_conv_desc *d, int row_begin, int row_end, int panel_begin, int panel_end, const float *part_out) {
    const size_t part_width = (size_t)(panel_end - panel_begin) * NR;
    // The part's panels below split_panel go to output2, the rest to output: per pixel one contiguous run
    // of channels in each (the last panel's channels stop at out_c).
    const int split = d->output2 ? d->split_panel : 0;
    const int second_end = panel_end < split ? panel_end : split;
    const int first_begin = panel_begin > split ? panel_begin : split;
    const int first_end_channel = panel_end * NR < d->out_c ? panel_end * NR : d->out_c;
    const size_t second_bytes = panel_begin < second_end ? (size_t)(second_end - panel_begin) * NR * sizeof(float) : 0;
    const size_t first_bytes = first_begin < panel_end ? (size_t)(first_end_channel - first_begin * NR) * sizeof(float) : 0;
    for (int r = row_begin; r < row_end; r++) {
        const size_t pixel = visit_pixel(d, r);
        const float *src = part_out + (size_t)(r - row_begin) * part_width;
        if (second_bytes) memcpy(d->output2 + pixel * d->out2_stride + (size_t)panel_begin * NR, src, second_bytes);
        if (first_bytes)
            memcpy(d->output + pixel * d->out_stride + (size_t)first_begin * NR, src + (size_t)(first_begin - panel_begin) * NR,
                   first_bytes);
    }
}

void bt_conv_relu(const bt_conv_desc *d, const float *packed, int row_begin, int row_end,
                  int panel_begin, int panel_end) {
    bt_conv(d, packed, row_begin, row_end, panel_begin, panel_end, 1);
}

// ---- bfloat16 (AVX512-BF16) -------------------------------------------------------------------------
//
// The opt-in reduced-precision path ([triage] precision = "bfloat16"): weights and inputs in bfloat16,
// products and sums in float32 (VDPBF16PS: each 32-bit lane adds the products of one pair of bfloat16
// values), biases, ReLU and output in float32. The kernel has the AVX-512 one's shape, 12 pixels x 16
// channels per call, but each instruction covers two input channels, and the weights take half the bytes.

int bt_bfloat16_supported(void) {
#ifdef BT_X86
    static int known = -1;
    int ok = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (ok < 0) {
        __builtin_cpu_init();
        ok = bt_kernels_supported(BT_KERNELS_AVX512) && __builtin_cpu_supports("avx512bf16");
        __atomic_store_n(&known, ok, __ATOMIC_RELAXED);
    }
    return ok;
#else
    return 0;
#endif
}

int bt_bfloat16_pairs(int in_c) { return (in_c + 1) / 2; }

size_t bt_packed_weights_bfloat16_count(int taps, int in_c, int n) {
    return (size_t)bt_panel_count(n) * (NR + (size_t)taps * (size_t)bt_bfloat16_pairs(in_c) * NR);
}

#ifdef BT_X86
#define BT_TARGET_BF16                                                                                            \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx512bf16,avx2,fma"), min_vector_width(512)))

/// A pair of bfloat16 inputs, read as one 32-bit word (the copy is written as 16-bit values).
typedef uint32_t bt_bf16_pair __attribute__((may_alias, aligned(4)));

/// `tap_offsets[t]` counts 32-bit words (one word = a pair of bfloat16 weights) after the panel's 16
/// float biases; each input pointer points at a pixel's bfloat16 copy, `pairs` words long.
BT_TARGET_BF16 static inline __attribute__((always_inline)) void
kernel_bf16_rows(const int rows, int nc, int taps, const int *tap_offsets, int pairs, const float *const *ptrs,
                 const float *w, float *const *out, int relu) {
    __m512 acc[MR_WIDE];
    const __m512 bias = _mm512_loadu_ps(w);
    for (int i = 0; i < rows; i++) acc[i] = bias;
    for (int t = 0; t < taps; t++) {
        const bt_bf16_pair *a[MR_WIDE];
        for (int i = 0; i < rows; i++) a[i] = (const bt_bf16_pair *)ptrs[t * MR_WIDE + i];
        const float *wt = w + NR + tap_offsets[t];
        for (int k = 0; k < pairs; k++) {
            const __m512bh b = (__m512bh)_mm512_loadu_si512(wt);
            PREFETCH_WEIGHTS(wt);
            wt += NR;
            for (int i = 0; i < rows; i++) acc[i] = _mm512_dpbf16_ps(acc[i], b, (__m512bh)_mm512_set1_epi32((int)a[i][k]));
        }
    }
    const __m512 z = relu ? _mm512_setzero_ps() : _mm512_set1_ps(-__builtin_inff());
    for (int i = 0; i < rows; i++) {
        const __m512 v = _mm512_max_ps(acc[i], z);
        if (nc == NR) _mm512_storeu_ps(out[i], v);
        else _mm512_mask_storeu_ps(out[i], (__mmask16)((1u << nc) - 1u), v);
    }
}

#define KERNEL_BF16_ROWS(R)                                                                                       \
    BT_TARGET_BF16 static void kernel_bf16_##R(int nc, int taps, const int *tap_offsets, int pairs,               \
                                               const float *const *ptrs, const float *w, float *const *out,       \
                                               int relu) {                                                        \
        kernel_bf16_rows(R, nc, taps, tap_offsets, pairs, ptrs, w, out, relu);                                    \
    }
FOR_ROWS_12(KERNEL_BF16_ROWS)
KERNEL_WIDE_SWITCH(kernel_bf16)
#endif

void bt_conv_bfloat16_part(const bt_conv_desc *d, const uint16_t *input, const float *packed, int row_begin, int row_end,
                           int panel_begin, int panel_end, int relu, float *part_out) {
#ifdef BT_X86
    // The last guard against an illegal instruction: callers check bt_bfloat16_supported() first.
    if (!bt_bfloat16_supported()) abort();
    const int pairs = bt_bfloat16_pairs(d->in_c);
    conv_strips(d, kernel_bf16, MR_WIDE, (const char *)input, (size_t)pairs * 2 * sizeof(uint16_t), pairs, packed, row_begin, row_end,
                panel_begin, panel_end, relu, part_out);
#else
    (void)d; (void)input; (void)packed; (void)row_begin; (void)row_end; (void)panel_begin; (void)panel_end; (void)relu; (void)part_out;
    abort();
#endif
}

void bt_conv_bfloat16(const bt_conv_desc *d, const uint16_t *input, const float *packed, int row_begin, int row_end,
                      int panel_begin, int panel_end, int relu) {
    bt_conv_bfloat16_part(d, input, packed, row_begin, row_end, panel_begin, panel_end, relu, NULL);
}
