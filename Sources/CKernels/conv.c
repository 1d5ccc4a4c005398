// Convolution as an implicit GEMM over pre-packed weights, in the style of XNNPACK's igemm: each
// group of 6 output pixels gets a table of pointers to its input pixels (one per kernel tap, or to a
// zero row for padding), and the micro-kernel walks the channels behind those pointers. No im2col
// copy is made, and the weights are packed once at load, so nothing is re-packed per call.
#include "CKernels.h"

#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BT_X86 1
#endif

#define MR 6
#define NR BT_PANEL_WIDTH

/// Weight bytes of the panels one pass over a row strip visits: sized to stay in the (512 KB) L2,
/// so weights larger than that are streamed from memory once per group of panels, not once per strip.
#define PANEL_BLOCK_BYTES (192 * 1024)

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

/// One 6x16 block: out[i][0..nc) = act(bias + sum over the listed taps of a_i,tap . w_tap) for rows i < mr.
/// `tap_offsets[t]` is where tap t's cin x 16 weights start after the panel's biases; `ptrs` holds
/// [t][MR] input pointers; rows beyond mr alias row mr-1 (see strip_setup) and are computed, not stored.
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
KERNEL_AVX2_ROWS(1)
KERNEL_AVX2_ROWS(2)
KERNEL_AVX2_ROWS(3)
KERNEL_AVX2_ROWS(4)
KERNEL_AVX2_ROWS(5)
KERNEL_AVX2_ROWS(6)

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
#endif

static micro_kernel selected_kernel(void) {
#ifdef BT_X86
    // The answer never changes, so concurrent first uses all store the same value (atomically).
    static int avx2 = -1;
    int known = __atomic_load_n(&avx2, __ATOMIC_RELAXED);
    if (known < 0) {
        __builtin_cpu_init();
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        __atomic_store_n(&avx2, known, __ATOMIC_RELAXED);
    }
    if (known) return kernel_avx2;
#endif
    return kernel_portable;
}

int bt_kernels_use_avx2(void) {
#ifdef BT_X86
    return selected_kernel() == kernel_avx2;
#else
    return 0;
#endif
}

/// A 1xk convolution visits its output pixels column by column (x outer, y inner), so that the pixels
/// of one strip share their x and with it the taps that fall into the left or right padding.
static int is_horizontal(const bt_conv_desc *d) { return d->kernel_h == 1 && d->kernel_w > 1; }

/// For output pixels r0 ..< r0+mr (in visiting order): their output pixel indices, and the input
/// pointers of every tap that is inside the image for at least one of them, laid out [tap][MR] with
/// the taps' weight offsets in `tap_offsets`. Taps that only read padding for the whole strip are
/// dropped (on the 7x7 maps of the 1x7 / 7x1 layers a quarter of all taps are padding). Rows past
/// mr repeat the last one so the micro-kernel needs no row tail. Returns the number of taps kept.
static int strip_setup(const bt_conv_desc *d, int r0, int mr, const float **ptrs, int *tap_offsets, size_t *pixels) {
    if (d->kernel_h == 1 && d->kernel_w == 1 && d->stride == 1 && d->pad_h == 0 && d->pad_w == 0) {
        for (int i = 0; i < MR; i++) {
            pixels[i] = (size_t)(r0 + (i < mr ? i : mr - 1));
            ptrs[i] = d->input + pixels[i] * d->in_stride;
        }
        tap_offsets[0] = 0;
        return 1;
    }
    const int per_image = d->out_h * d->out_w, horizontal = is_horizontal(d);
    int y0[MR], x0[MR], img[MR];
    for (int i = 0; i < MR; i++) {
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
            const float **group = ptrs + kept * MR;
            for (int i = 0; i < MR; i++) {
                const int iy = y0[i] + ky, ix = x0[i] + kx;
                const int inside = iy >= 0 && iy < d->in_h && ix >= 0 && ix < d->in_w;
                any |= inside;
                group[i] = inside ? d->input + ((size_t)(img[i] * d->in_h + iy) * d->in_w + ix) * d->in_stride : zero_row;
            }
            if (any) tap_offsets[kept++] = (ky * d->kernel_w + kx) * d->in_c * NR;
        }
    }
    return kept;
}

void bt_conv_with(const bt_conv_desc *d, const float *packed, int row_begin, int row_end,
                  int panel_begin, int panel_end, int relu, int portable) {
    const micro_kernel kernel = portable ? kernel_portable : selected_kernel();
    const int taps = d->kernel_h * d->kernel_w;
    const size_t k = (size_t)taps * d->in_c;
    const size_t panel_floats = NR + k * NR;
    int block = (int)(PANEL_BLOCK_BYTES / (panel_floats * sizeof(float)));
    if (block < 1) block = 1;
    const float *ptrs[BT_MAX_TAPS * MR];
    int tap_offsets[BT_MAX_TAPS];
    size_t pixels[MR];
    float *out[MR];
    for (int pb = panel_begin; pb < panel_end; pb += block) {
        const int pe = pb + block < panel_end ? pb + block : panel_end;
        for (int r = row_begin; r < row_end; r += MR) {
            const int mr = row_end - r < MR ? row_end - r : MR;
            const int kept = strip_setup(d, r, mr, ptrs, tap_offsets, pixels);
            for (int p = pb; p < pe; p++) {
                const int nc = d->out_c - p * NR < NR ? d->out_c - p * NR : NR;
                const int second = p < d->split_panel && d->output2;
                for (int i = 0; i < MR; i++)
                    out[i] = second ? d->output2 + pixels[i] * d->out2_stride + p * NR
                                    : d->output + pixels[i] * d->out_stride + p * NR;
                kernel(mr, nc, kept, tap_offsets, d->in_c, ptrs, packed + (size_t)p * panel_floats, out, relu);
            }
        }
    }
}

void bt_conv(const bt_conv_desc *d, const float *packed, int row_begin, int row_end,
             int panel_begin, int panel_end, int relu) {
    bt_conv_with(d, packed, row_begin, row_end, panel_begin, panel_end, relu, 0);
}

void bt_conv_relu(const bt_conv_desc *d, const float *packed, int row_begin, int row_end,
                  int panel_begin, int panel_end) {
    bt_conv(d, packed, row_begin, row_end, panel_begin, panel_end, 1);
}
