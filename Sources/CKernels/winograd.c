// Winograd F(4x4, 3x3) (Lavin & Gray, 2015): each 6x6 input tile is transformed (B^T d B), multiplied
// position by position with the transformed weights (G g G^T) as 36 GEMMs over a chunk of tiles, and
// transformed back (A^T m A) to a 4x4 output tile. 36 products per 16 outputs instead of 144.
// The transforms run across channels (NHWC keeps a pixel's channels contiguous), so they vectorize.
#include "CKernels.h"

#include <stdlib.h>

/// Tiles per chunk: a multiple of the micro-kernel's 6 rows, small enough that a chunk's transformed
/// input and products stay in L2/L3 between the three phases.
#define CHUNK_TILES 48

static const float zero_row[BT_MAX_INPUT_CHANNELS] __attribute__((aligned(64)));

size_t bt_winograd_weights_count(int in_c, int out_c) { return 36 * bt_packed_weights_count(in_c, out_c); }

size_t bt_winograd_scratch_count(int in_c, int out_c) {
    return (size_t)36 * CHUNK_TILES * ((size_t)in_c + out_c) + (size_t)36 * (in_c > out_c ? in_c : out_c);
}

void bt_winograd_pack_weights(const float *weights, int in_c, int out_c, float *packed) {
    static const double G[6][3] = {
        {1.0 / 4, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
        {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1},
    };
    const size_t plane = (size_t)in_c * out_c, per = bt_packed_weights_count(in_c, out_c);
    float *u = malloc(plane * sizeof(float));
    float *bias = calloc((size_t)out_c, sizeof(float));
    if (!u || !bias) abort();  // a few hundred KB at model load
    for (int a = 0; a < 6; a++) {
        for (int b = 0; b < 6; b++) {
            for (size_t e = 0; e < plane; e++) {
                double acc = 0;
                for (int ky = 0; ky < 3; ky++)
                    for (int kx = 0; kx < 3; kx++) acc += G[a][ky] * G[b][kx] * weights[(size_t)(ky * 3 + kx) * plane + e];
                u[e] = (float)acc;
            }
            bt_pack_weights(u, bias, in_c, out_c, packed + (size_t)(a * 6 + b) * per);
        }
    }
    free(u);
    free(bias);
}

int bt_winograd_tile_count(const bt_conv_desc *d) {
    return d->batch * ((d->out_h + 3) / 4) * ((d->out_w + 3) / 4);
}

/// B^T d B of one tile into v[(a*6 + b) * position_stride + c].
static inline __attribute__((always_inline)) void input_transform(const bt_conv_desc *d, int tile, float *v, size_t position_stride, float *tmp) {
    const int th = (d->out_h + 3) / 4, tw = (d->out_w + 3) / 4;
    const int n = tile / (th * tw), rem = tile - n * th * tw, ty = rem / tw, tx = rem - ty * tw;
    const int y0 = ty * 4 - d->pad_h, x0 = tx * 4 - d->pad_w, cn = d->in_c;
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
        for (int c = 0; c < cn; c++) {
            const float d0 = p[0][c], d1 = p[1][c], d2 = p[2][c], d3 = p[3][c], d4 = p[4][c], d5 = p[5][c];
            o[0 * cn + c] = 4 * d0 - 5 * d2 + d4;
            o[1 * cn + c] = -4 * (d1 + d2) + d3 + d4;
            o[2 * cn + c] = 4 * (d1 - d2) - d3 + d4;
            o[3 * cn + c] = 2 * (d3 - d1) - d2 + d4;
            o[4 * cn + c] = 2 * (d1 - d3) - d2 + d4;
            o[5 * cn + c] = 4 * d1 - 5 * d3 + d5;
        }
    }
    for (int b = 0; b < 6; b++) {
        const float *q0 = tmp + (size_t)(0 * 6 + b) * cn, *q1 = tmp + (size_t)(1 * 6 + b) * cn;
        const float *q2 = tmp + (size_t)(2 * 6 + b) * cn, *q3 = tmp + (size_t)(3 * 6 + b) * cn;
        const float *q4 = tmp + (size_t)(4 * 6 + b) * cn, *q5 = tmp + (size_t)(5 * 6 + b) * cn;
        float *o0 = v + (size_t)(0 * 6 + b) * position_stride, *o1 = v + (size_t)(1 * 6 + b) * position_stride;
        float *o2 = v + (size_t)(2 * 6 + b) * position_stride, *o3 = v + (size_t)(3 * 6 + b) * position_stride;
        float *o4 = v + (size_t)(4 * 6 + b) * position_stride, *o5 = v + (size_t)(5 * 6 + b) * position_stride;
        for (int c = 0; c < cn; c++) {
            const float d0 = q0[c], d1 = q1[c], d2 = q2[c], d3 = q3[c], d4 = q4[c], d5 = q5[c];
            o0[c] = 4 * d0 - 5 * d2 + d4;
            o1[c] = -4 * (d1 + d2) + d3 + d4;
            o2[c] = 4 * (d1 - d2) - d3 + d4;
            o3[c] = 2 * (d3 - d1) - d2 + d4;
            o4[c] = 2 * (d1 - d3) - d2 + d4;
            o5[c] = 4 * d1 - 5 * d3 + d5;
        }
    }
}

/// relu(A^T m A + bias) of one tile from m[(a*6 + b) * position_stride + c], stored where inside the output.
static inline __attribute__((always_inline)) void output_transform(const bt_conv_desc *d, int tile, const float *m, size_t position_stride,
                             const float *bias, float *tmp) {
    const int th = (d->out_h + 3) / 4, tw = (d->out_w + 3) / 4;
    const int n = tile / (th * tw), rem = tile - n * th * tw, ty = rem / tw, tx = rem - ty * tw;
    const int cn = d->out_c;
    for (int i = 0; i < 6; i++) {
        const float *p0 = m + (size_t)(i * 6 + 0) * position_stride, *p1 = m + (size_t)(i * 6 + 1) * position_stride;
        const float *p2 = m + (size_t)(i * 6 + 2) * position_stride, *p3 = m + (size_t)(i * 6 + 3) * position_stride;
        const float *p4 = m + (size_t)(i * 6 + 4) * position_stride, *p5 = m + (size_t)(i * 6 + 5) * position_stride;
        float *o = tmp + (size_t)i * 4 * cn;
        for (int c = 0; c < cn; c++) {
            const float m0 = p0[c], m1 = p1[c], m2 = p2[c], m3 = p3[c], m4 = p4[c], m5 = p5[c];
            const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
            o[0 * cn + c] = m0 + s12 + s34;
            o[1 * cn + c] = d12 + 2 * d34;
            o[2 * cn + c] = s12 + 4 * s34;
            o[3 * cn + c] = d12 + 8 * d34 + m5;
        }
    }
    for (int b = 0; b < 4; b++) {
        const int ox = tx * 4 + b;
        if (ox >= d->out_w) break;
        float *dst[4];
        for (int a = 0; a < 4; a++) {
            const int oy = ty * 4 + a;
            dst[a] = oy < d->out_h ? d->output + ((size_t)(n * d->out_h + oy) * d->out_w + ox) * d->out_stride : NULL;
        }
        const float *q0 = tmp + (size_t)(0 * 4 + b) * cn, *q1 = tmp + (size_t)(1 * 4 + b) * cn;
        const float *q2 = tmp + (size_t)(2 * 4 + b) * cn, *q3 = tmp + (size_t)(3 * 4 + b) * cn;
        const float *q4 = tmp + (size_t)(4 * 4 + b) * cn, *q5 = tmp + (size_t)(5 * 4 + b) * cn;
        float y[4][BT_PANEL_WIDTH];
        for (int c0 = 0; c0 < cn; c0 += BT_PANEL_WIDTH) {
            const int w = cn - c0 < BT_PANEL_WIDTH ? cn - c0 : BT_PANEL_WIDTH;
            for (int c = 0; c < w; c++) {
                const int k = c0 + c;
                const float m0 = q0[k], m1 = q1[k], m2 = q2[k], m3 = q3[k], m4 = q4[k], m5 = q5[k];
                const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4, bk = bias[k];
                const float r0 = m0 + s12 + s34 + bk, r1 = d12 + 2 * d34 + bk;
                const float r2 = s12 + 4 * s34 + bk, r3 = d12 + 8 * d34 + m5 + bk;
                y[0][c] = r0 > 0 ? r0 : 0;
                y[1][c] = r1 > 0 ? r1 : 0;
                y[2][c] = r2 > 0 ? r2 : 0;
                y[3][c] = r3 > 0 ? r3 : 0;
            }
            for (int a = 0; a < 4; a++)
                if (dst[a])
                    for (int c = 0; c < w; c++) dst[a][c0 + c] = y[a][c];
        }
    }
}

static inline __attribute__((always_inline)) void winograd_body(const bt_conv_desc *d, const float *packed, const float *bias,
                                                                int tile_begin, int tile_end, float *scratch) {
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
            };
            bt_conv(&g, packed + p * per, 0, nt, 0, panels, 0);
        }
        for (int t = 0; t < nt; t++) output_transform(d, t0 + t, m + (size_t)t * cout, mstride, bias, tmp);
    }
}

// The transforms are plain loops over channels; compiled a second time for AVX2 they vectorize 8 wide.
static void winograd_portable(const bt_conv_desc *d, const float *packed, const float *bias,
                              int tile_begin, int tile_end, float *scratch) {
    winograd_body(d, packed, bias, tile_begin, tile_end, scratch);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma")))
static void winograd_avx2(const bt_conv_desc *d, const float *packed, const float *bias,
                          int tile_begin, int tile_end, float *scratch) {
    winograd_body(d, packed, bias, tile_begin, tile_end, scratch);
}
#endif

void bt_winograd_conv_relu(const bt_conv_desc *d, const float *packed, const float *bias,
                           int tile_begin, int tile_end, float *scratch) {
#if defined(__x86_64__) || defined(__i386__)
    if (bt_kernels_use_avx2()) {
        winograd_avx2(d, packed, bias, tile_begin, tile_end, scratch);
        return;
    }
#endif
    winograd_portable(d, packed, bias, tile_begin, tile_end, scratch);
}
