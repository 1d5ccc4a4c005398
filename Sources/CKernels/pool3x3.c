// 3x3 max and average pooling over NHWC maps, vectorized across channels. The same loops compiled
// for AVX2 run 8 channels per instruction, for AVX-512 16; Swift's build targets baseline x86-64 (4-wide SSE).
#include "CKernels.h"

static inline __attribute__((always_inline)) void copy_run(float *restrict dst, const float *restrict src, int n) {
    for (int c = 0; c < n; c++) dst[c] = src[c];
}

static inline __attribute__((always_inline)) void max_run(float *restrict dst, const float *restrict src, int n) {
    for (int c = 0; c < n; c++) dst[c] = src[c] > dst[c] ? src[c] : dst[c];
}

static inline __attribute__((always_inline)) void add_run(float *restrict dst, const float *restrict src, int n) {
    for (int c = 0; c < n; c++) dst[c] += src[c];
}

static inline __attribute__((always_inline)) void scale_run(float *restrict dst, float s, int n) {
    for (int c = 0; c < n; c++) dst[c] *= s;
}

static inline __attribute__((always_inline)) void pool_body(const bt_conv_desc *d, int average, int row_begin, int row_end) {
    const int c = d->in_c;
    for (int row = row_begin; row < row_end; row++) {
        const int n = row / d->out_h, oy = row - n * d->out_h;
        const int y_low = oy * d->stride - d->pad_h < 0 ? 0 : oy * d->stride - d->pad_h;
        const int y_high = oy * d->stride - d->pad_h + 3 > d->in_h ? d->in_h : oy * d->stride - d->pad_h + 3;
        for (int ox = 0; ox < d->out_w; ox++) {
            const int x_low = ox * d->stride - d->pad_w < 0 ? 0 : ox * d->stride - d->pad_w;
            const int x_high = ox * d->stride - d->pad_w + 3 > d->in_w ? d->in_w : ox * d->stride - d->pad_w + 3;
            float *dst = d->output + ((size_t)(n * d->out_h + oy) * d->out_w + ox) * d->out_stride;
            int first = 1;
            for (int y = y_low; y < y_high; y++) {
                for (int x = x_low; x < x_high; x++) {
                    const float *src = d->input + ((size_t)(n * d->in_h + y) * d->in_w + x) * d->in_stride;
                    if (first) copy_run(dst, src, c);
                    else if (average) add_run(dst, src, c);
                    else max_run(dst, src, c);
                    first = 0;
                }
            }
            // Padding is excluded: the average is over the taps inside the map (TF 'SAME',
            // PyTorch count_include_pad=False), and padding never wins a max.
            if (average) scale_run(dst, 1.0f / (float)((y_high - y_low) * (x_high - x_low)), c);
        }
    }
}

static void pool_portable(const bt_conv_desc *d, int average, int row_begin, int row_end) {
    pool_body(d, average, row_begin, row_end);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) static void pool_avx2(const bt_conv_desc *d, int average, int row_begin, int row_end) {
    pool_body(d, average, row_begin, row_end);
}

__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"), min_vector_width(512)))
static void pool_avx512(const bt_conv_desc *d, int average, int row_begin, int row_end) {
    pool_body(d, average, row_begin, row_end);
}
#endif

void bt_pool3x3(const bt_conv_desc *d, int average, int row_begin, int row_end) {
#if defined(__x86_64__) || defined(__i386__)
    switch (bt_kernels_resolve(d->family)) {
    case BT_KERNELS_AVX512:
        pool_avx512(d, average, row_begin, row_end);
        return;
    case BT_KERNELS_AVX2:
    case BT_KERNELS_AVX512_ON_AVX2:
        pool_avx2(d, average, row_begin, row_end);
        return;
    default:
        break;
    }
#endif
    pool_portable(d, average, row_begin, row_end);
}
