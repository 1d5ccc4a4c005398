// Winograd F(4x4, 3x3) and F(2x2, 5x5) (Lavin & Gray, 2015): each 6x6 input tile is transformed
// (B^T d B), multiplied position by position with the transformed weights (G g G^T) as 36 GEMMs over a
// chunk of tiles, and transformed back (A^T m A) to a 4x4 (or 2x2) output tile: 36 products per 16
// outputs instead of 144 (3x3), per 4 outputs instead of 100 (5x5). Both use the interpolation points
// 0, 1, -1, 2, -2 and infinity, so they share B^T; G and A^T follow from the points.
// The transforms run across channels (NHWC keeps a pixel's channels contiguous), so they vectorize.
#include "CKernels.h"

#include <stdlib.h>
#include <string.h>

/// Tiles per chunk: a multiple of the micro-kernel's 6 rows, small enough that a chunk's transformed
/// input and products stay in L2/L3 between the three phases.
#define CHUNK_TILES 48

static const float zero_row[BT_MAX_INPUT_CHANNELS] __attribute__((aligned(64)));

size_t bt_winograd_weights_count(int in_c, int out_c) { return 36 * bt_packed_weights_count(in_c, out_c); }

size_t bt_winograd_scratch_count(int in_c, int out_c) {
    // Chunk buffers, then the transforms' temporaries (36*in_c, or 24*out_c plus a 4*out_c sink).
    return (size_t)36 * CHUNK_TILES * ((size_t)in_c + out_c) + (size_t)36 * (in_c > out_c ? in_c : out_c);
}

/// Kernel taps per side handled: 3 (4x4 output tiles) or 5 (2x2 tiles).
static int tile_size(int kernel) { return 6 - kernel + 1; }

int bt_winograd_supports(int kernel_h, int kernel_w, int stride) {
    return stride == 1 && kernel_h == kernel_w && (kernel_h == 3 || kernel_h == 5);
}

void bt_winograd_pack_weights(const float *weights, int kernel, int in_c, int out_c, float *packed) {
    // Row i of G is f_i * (1, p_i, p_i^2, ...) for the points p = 0, 1, -1, 2, -2, with the scale f_i
    // matching B^T; the point at infinity takes the highest coefficient alone.
    static const double points[5] = {0, 1, -1, 2, -2}, scales[5] = {1.0 / 4, -1.0 / 6, -1.0 / 6, 1.0 / 24, 1.0 / 24};
    double G[6][5] = {{0}};
    for (int i = 0; i < 5; i++) {
        double power = 1;
        for (int k = 0; k < kernel; k++, power *= points[i]) G[i][k] = scales[i] * power;
    }
    G[5][kernel - 1] = 1;
    const size_t plane = (size_t)in_c * out_c, per = bt_packed_weights_count(in_c, out_c);
    float *u = malloc(plane * sizeof(float));
    float *bias = calloc((size_t)out_c, sizeof(float));
    if (!u || !bias) abort();  // a few hundred KB at model load
    for (int a = 0; a < 6; a++) {
        for (int b = 0; b < 6; b++) {
            for (size_t e = 0; e < plane; e++) {
                double acc = 0;
                for (int ky = 0; ky < kernel; ky++)
                    for (int kx = 0; kx < kernel; kx++)
                        acc += G[a][ky] * G[b][kx] * weights[(size_t)(ky * kernel + kx) * plane + e];
                u[e] = (float)acc;
            }
            bt_pack_weights(u, bias, in_c, out_c, packed + (size_t)(a * 6 + b) * per);
        }
    }
    free(u);
    free(bias);
}

int bt_winograd_tile_count(const bt_conv_desc *d) {
    const int m = tile_size(d->kernel_h);
    return d->batch * ((d->out_h + m - 1) / m) * ((d->out_w + m - 1) / m);
}

// The 1-D transforms over a run of channels. Separate functions because LLVM honours `restrict` on
// parameters (not on locals): without it each short channel loop pays for dozens of overlap checks.
static inline __attribute__((always_inline)) void
transform_b(const float *restrict p0, const float *restrict p1, const float *restrict p2, const float *restrict p3,
            const float *restrict p4, const float *restrict p5, float *restrict o0, float *restrict o1,
            float *restrict o2, float *restrict o3, float *restrict o4, float *restrict o5, int n) {
    for (int c = 0; c < n; c++) {
        const float d0 = p0[c], d1 = p1[c], d2 = p2[c], d3 = p3[c], d4 = p4[c], d5 = p5[c];
        o0[c] = 4 * d0 - 5 * d2 + d4;
        o1[c] = -4 * (d1 + d2) + d3 + d4;
        o2[c] = 4 * (d1 - d2) - d3 + d4;
        o3[c] = 2 * (d3 - d1) - d2 + d4;
        o4[c] = 2 * (d1 - d3) - d2 + d4;
        o5[c] = 4 * d1 - 5 * d3 + d5;
    }
}

static inline __attribute__((always_inline)) void
transform_a(const float *restrict p0, const float *restrict p1, const float *restrict p2, const float *restrict p3,
            const float *restrict p4, const float *restrict p5, float *restrict o0, float *restrict o1,
            float *restrict o2, float *restrict o3, int n) {
    for (int c = 0; c < n; c++) {
        const float m0 = p0[c], m1 = p1[c], m2 = p2[c], m3 = p3[c], m4 = p4[c], m5 = p5[c];
        const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
        o0[c] = m0 + s12 + s34;
        o1[c] = d12 + 2 * d34;
        o2[c] = s12 + 4 * s34;
        o3[c] = d12 + 8 * d34 + m5;
    }
}

static inline __attribute__((always_inline)) void
transform_a_bias_relu(const float *restrict p0, const float *restrict p1, const float *restrict p2,
                      const float *restrict p3, const float *restrict p4, const float *restrict p5,
                      const float *restrict bias, float *restrict o0, float *restrict o1, float *restrict o2,
                      float *restrict o3, int n) {
    for (int c = 0; c < n; c++) {
        const float m0 = p0[c], m1 = p1[c], m2 = p2[c], m3 = p3[c], m4 = p4[c], m5 = p5[c];
        const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4, bk = bias[c];
        const float r0 = m0 + s12 + s34 + bk, r1 = d12 + 2 * d34 + bk;
        const float r2 = s12 + 4 * s34 + bk, r3 = d12 + 8 * d34 + m5 + bk;
        o0[c] = r0 > 0 ? r0 : 0;
        o1[c] = r1 > 0 ? r1 : 0;
        o2[c] = r2 > 0 ? r2 : 0;
        o3[c] = r3 > 0 ? r3 : 0;
    }
}

static inline __attribute__((always_inline)) void
transform_a2(const float *restrict p0, const float *restrict p1, const float *restrict p2, const float *restrict p3,
             const float *restrict p4, const float *restrict p5, float *restrict o0, float *restrict o1, int n) {
    for (int c = 0; c < n; c++) {
        const float m1 = p1[c], m2 = p2[c], m3 = p3[c], m4 = p4[c];
        o0[c] = p0[c] + (m1 + m2) + (m3 + m4);
        o1[c] = (m1 - m2) + 2 * (m3 - m4) + p5[c];
    }
}

static inline __attribute__((always_inline)) void
transform_a2_bias_relu(const float *restrict p0, const float *restrict p1, const float *restrict p2,
                       const float *restrict p3, const float *restrict p4, const float *restrict p5,
                       const float *restrict bias, float *restrict o0, float *restrict o1, int n) {
    for (int c = 0; c < n; c++) {
        const float m1 = p1[c], m2 = p2[c], m3 = p3[c], m4 = p4[c];
        const float r0 = p0[c] + (m1 + m2) + (m3 + m4) + bias[c];
        const float r1 = (m1 - m2) + 2 * (m3 - m4) + p5[c] + bias[c];
        o0[c] = r0 > 0 ? r0 : 0;
        o1[c] = r1 > 0 ? r1 : 0;
    }
}

/// B^T d B of one tile into v[(a*6 + b) * position_stride + c].
static inline __attribute__((always_inline)) void input_transform(const bt_conv_desc *d, int tile, float *v,
                                                                  size_t position_stride, float *tmp) {
    const int ts = tile_size(d->kernel_h);
    const int th = (d->out_h + ts - 1) / ts, tw = (d->out_w + ts - 1) / ts;
    const int n = tile / (th * tw), rem = tile - n * th * tw, ty = rem / tw, tx = rem - ty * tw;
    const int y0 = ty * ts - d->pad_h, x0 = tx * ts - d->pad_w, cn = d->in_c;
    for (int i = 0; i < 6; i++) {
        const int iy = y0 + i;
        const float *p[6];
        for (int j = 0; j < 6; j++) {
            const int ix = x0 + j;
            p[j] = iy >= 0 && iy < d->in_h && ix >= 0 && ix < d->in_w
                       ? d->input + ((size_t)(n * d->in_h + iy) * d->in_w + ix) * d->in_stride
                       : zero_row;
        }
        float *o = tmp + (size_t)i * 6 * cn;
        transform_b(p[0], p[1], p[2], p[3], p[4], p[5], o, o + cn, o + 2 * cn, o + 3 * cn, o + 4 * cn, o + 5 * cn, cn);
    }
    for (int b = 0; b < 6; b++) {
        const float *q = tmp + (size_t)b * cn;
        const size_t s = 6 * (size_t)cn;
        float *o = v + (size_t)b * position_stride;
        const size_t ps = 6 * position_stride;
        transform_b(q, q + s, q + 2 * s, q + 3 * s, q + 4 * s, q + 5 * s, o, o + ps, o + 2 * ps, o + 3 * ps, o + 4 * ps,
                    o + 5 * ps, cn);
    }
}

/// relu(A^T m A + bias) of one tile from m[(a*6 + b) * position_stride + c], stored where inside the output.
/// `tmp` holds 6*ts*out_c floats of row transforms then a sink for output pixels past the map's edge.
/// With `part_out` the tile goes there instead, as ts*ts pixels of out_c floats at slot `slot`.
static inline __attribute__((always_inline)) void output_transform(const bt_conv_desc *d, int tile, const float *m,
                                                                   size_t position_stride, const float *bias, float *tmp,
                                                                   float *part_out, int slot) {
    const int ts = tile_size(d->kernel_h);
    const int th = (d->out_h + ts - 1) / ts, tw = (d->out_w + ts - 1) / ts;
    const int n = tile / (th * tw), rem = tile - n * th * tw, ty = rem / tw, tx = rem - ty * tw;
    const int cn = d->out_c;
    float *sink = tmp + (size_t)6 * ts * cn;
    const size_t ps = position_stride;
    for (int i = 0; i < 6; i++) {
        const float *p = m + (size_t)i * 6 * ps;
        float *o = tmp + (size_t)i * ts * cn;
        if (ts == 4) transform_a(p, p + ps, p + 2 * ps, p + 3 * ps, p + 4 * ps, p + 5 * ps, o, o + cn, o + 2 * cn, o + 3 * cn, cn);
        else transform_a2(p, p + ps, p + 2 * ps, p + 3 * ps, p + 4 * ps, p + 5 * ps, o, o + cn, cn);
    }
    for (int b = 0; b < ts; b++) {
        const int ox = tx * ts + b;
        if (ox >= d->out_w) break;
        float *dst[4];
        for (int a = 0; a < ts; a++) {
            const int oy = ty * ts + a;
            if (oy >= d->out_h) dst[a] = sink + a * cn;
            else if (part_out) dst[a] = part_out + ((size_t)slot * ts * ts + (size_t)a * ts + b) * cn;
            else dst[a] = d->output + ((size_t)(n * d->out_h + oy) * d->out_w + ox) * d->out_stride;
        }
        const float *q = tmp + (size_t)b * cn;
        const size_t s = (size_t)ts * cn;
        if (ts == 4)
            transform_a_bias_relu(q, q + s, q + 2 * s, q + 3 * s, q + 4 * s, q + 5 * s, bias, dst[0], dst[1], dst[2], dst[3], cn);
        else
            transform_a2_bias_relu(q, q + s, q + 2 * s, q + 3 * s, q + 4 * s, q + 5 * s, bias, dst[0], dst[1], cn);
    }
}

static inline __attribute__((always_inline)) void winograd_body(const bt_conv_desc *d, const float *packed, const float *bias,
                                                                int tile_begin, int tile_end, float *scratch, float *part_out) {
    const int cin = d->in_c, cout = d->out_c;
    const size_t vstride = (size_t)CHUNK_TILES * cin, mstride = (size_t)CHUNK_TILES * cout;
    float *v = scratch, *m = v + 36 * vstride, *tmp = m + 36 * mstride;
    const size_t per = bt_packed_weights_count(cin, cout);
    const int panels = bt_panel_count(cout);
    for (int t0 = tile_begin; t0 < tile_end; t0 += CHUNK_TILES) {
        const int nt = tile_end - t0 < CHUNK_TILES ? tile_end - t0 : CHUNK_TILES;
        for (int t = 0; t < nt; t++) input_transform(d, t0 + t, v + (size_t)t * cin, vstride, tmp);
        for (int p = 0; p < 36; p++) {
            const bt_conv_desc g = {
                .input = v + p * vstride, .batch = 1, .in_h = 1, .in_w = nt, .in_c = cin, .in_stride = cin,
                .kernel_h = 1, .kernel_w = 1, .stride = 1, .pad_h = 0, .pad_w = 0,
                .output = m + p * mstride, .out_h = 1, .out_w = nt, .out_c = cout, .out_stride = cout,
                .family = d->family,
            };
            bt_conv(&g, packed + p * per, 0, nt, 0, panels, 0);
        }
        for (int t = 0; t < nt; t++) output_transform(d, t0 + t, m + (size_t)t * cout, mstride, bias, tmp, part_out, t0 + t - tile_begin);
    }
}

// The transforms are plain loops over channels; compiled again for AVX2 they vectorize 8 wide, for
// AVX-512 16 wide. Their expressions contract to the same fused multiply-adds on both (the contraction
// is decided before the target's lowering), so the two families give the same bits.
static void winograd_portable(const bt_conv_desc *d, const float *packed, const float *bias,
                              int tile_begin, int tile_end, float *scratch, float *part_out) {
    winograd_body(d, packed, bias, tile_begin, tile_end, scratch, part_out);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma")))
static void winograd_avx2(const bt_conv_desc *d, const float *packed, const float *bias,
                          int tile_begin, int tile_end, float *scratch, float *part_out) {
    winograd_body(d, packed, bias, tile_begin, tile_end, scratch, part_out);
}

__attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"), min_vector_width(512)))
static void winograd_avx512(const bt_conv_desc *d, const float *packed, const float *bias,
                            int tile_begin, int tile_end, float *scratch, float *part_out) {
    winograd_body(d, packed, bias, tile_begin, tile_end, scratch, part_out);
}
#endif

void bt_winograd_conv_relu_part(const bt_conv_desc *d, const float *packed, const float *bias,
                                int tile_begin, int tile_end, float *scratch, float *part_out) {
#if defined(__x86_64__) || defined(__i386__)
    switch (bt_kernels_resolve(d->family)) {
    case BT_KERNELS_AVX512:
        winograd_avx512(d, packed, bias, tile_begin, tile_end, scratch, part_out);
        return;
    case BT_KERNELS_AVX2:
    case BT_KERNELS_AVX512_ON_AVX2:  // the transforms' code is the same loops; the GEMMs follow d->family
        winograd_avx2(d, packed, bias, tile_begin, tile_end, scratch, part_out);
        return;
    default:
        break;
    }
#endif
    winograd_portable(d, packed, bias, tile_begin, tile_end, scratch, part_out);
}

void bt_winograd_conv_relu(const bt_conv_desc *d, const float *packed, const float *bias,
                           int tile_begin, int tile_end, float *scratch) {
    bt_winograd_conv_relu_part(d, packed, bias, tile_begin, tile_end, scratch, NULL);
}

size_t bt_winograd_part_scratch_count(const bt_conv_desc *d, int tile_begin, int tile_end) {
    const int ts = tile_size(d->kernel_h);
    return (size_t)(tile_end - tile_begin) * ts * ts * d->out_c;
}

void bt_winograd_commit(const bt_conv_desc *d, int tile_begin, int tile_end, const float *part_out) {
    const int ts = tile_size(d->kernel_h);
    const int th = (d->out_h + ts - 1) / ts, tw = (d->out_w + ts - 1) / ts;
    const size_t cn = (size_t)d->out_c;
    for (int tile = tile_begin; tile < tile_end; tile++) {
        const int n = tile / (th * tw), rem = tile - n * th * tw, ty = rem / tw, tx = rem - ty * tw;
        for (int a = 0; a < ts && ty * ts + a < d->out_h; a++) {
            for (int b = 0; b < ts && tx * ts + b < d->out_w; b++) {
                const int oy = ty * ts + a, ox = tx * ts + b;
                memcpy(d->output + ((size_t)(n * d->out_h + oy) * d->out_w + ox) * d->out_stride,
                       part_out + ((size_t)(tile - tile_begin) * ts * ts + (size_t)a * ts + b) * cn, cn * sizeof(float));
            }
        }
    }
}
