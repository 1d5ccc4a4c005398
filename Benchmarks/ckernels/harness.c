// Checks bt_conv_relu against a naive convolution and times it beside im2col + OpenBLAS sgemm,
// single-threaded, on Inception V3 layer shapes at 150x150. Build and run (seconds, no Swift build):
//   clang -O2 -march=x86-64 -ISources/CKernels/include Benchmarks/ckernels/harness.c \
//         Sources/CKernels/conv.c Sources/CKernels/winograd.c -lopenblas -lm -o /tmp/bt_harness && /tmp/bt_harness
#include "CKernels.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct { const char *name; int batch, size, cin, kh, kw, stride, pad_h, pad_w, cout; } shape;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
static float rnd(void) { return (float)((double)rand() / RAND_MAX * 2 - 1); }

static void im2col(const bt_conv_desc *d, float *out) {
    int k = d->kernel_h * d->kernel_w * d->in_c;
    for (int r = 0; r < d->batch * d->out_h * d->out_w; r++) {
        int n = r / (d->out_h * d->out_w), rem = r % (d->out_h * d->out_w), oy = rem / d->out_w, ox = rem % d->out_w;
        for (int ky = 0; ky < d->kernel_h; ky++) for (int kx = 0; kx < d->kernel_w; kx++) {
            int iy = oy * d->stride - d->pad_h + ky, ix = ox * d->stride - d->pad_w + kx;
            float *dst = out + (size_t)r * k + (ky * d->kernel_w + kx) * d->in_c;
            if (iy < 0 || iy >= d->in_h || ix < 0 || ix >= d->in_w) memset(dst, 0, d->in_c * 4);
            else memcpy(dst, d->input + ((size_t)(n * d->in_h + iy) * d->in_w + ix) * d->in_stride, d->in_c * 4);
        }
    }
}

int main(int argc, char **argv) {
    openblas_set_num_threads(1);
    shape shapes[] = {
        {"stem/1", 1, 74, 32, 3, 3, 1, 0, 0, 32}, {"stem/2", 1, 72, 32, 3, 3, 1, 1, 1, 64},
        {"stem/4", 1, 35, 80, 3, 3, 1, 0, 0, 192}, {"stem/0", 1, 150, 3, 3, 3, 2, 0, 0, 32},
        {"m0 heads", 1, 16, 192, 1, 1, 1, 0, 0, 176}, {"m0 5x5", 1, 16, 48, 5, 5, 1, 2, 2, 64}, {"m0 5x5 b16", 16, 16, 48, 5, 5, 1, 2, 2, 64},
        {"m0 3x3", 1, 16, 96, 3, 3, 1, 1, 1, 96}, {"m4 7x1", 1, 7, 128, 7, 1, 1, 3, 0, 128}, {"m7 1x7", 1, 7, 192, 1, 7, 1, 0, 3, 192},
        {"m7 1x7 b16", 16, 7, 192, 1, 7, 1, 0, 3, 192}, {"m7 7x1 b16", 16, 7, 192, 7, 1, 1, 3, 0, 192},
        {"m5 heads", 1, 7, 768, 1, 1, 1, 0, 0, 512}, {"m9 heads", 1, 3, 1280, 1, 1, 1, 0, 0, 1152},
        {"m10 heads", 1, 3, 2048, 1, 1, 1, 0, 0, 1152}, {"m10 3x3", 1, 3, 448, 3, 3, 1, 1, 1, 384},
        {"m10 1x3", 1, 3, 384, 1, 3, 1, 0, 1, 384}, {"m10 pool", 1, 3, 2048, 1, 1, 1, 0, 0, 192},
        {"stem/1 b16", 16, 74, 32, 3, 3, 1, 0, 0, 32}, {"stem/2 b16", 16, 72, 32, 3, 3, 1, 1, 1, 64},
        {"stem/4 b16", 16, 35, 80, 3, 3, 1, 0, 0, 192}, {"m0 heads b16", 16, 16, 192, 1, 1, 1, 0, 0, 176},
        {"m5 heads b16", 16, 7, 768, 1, 1, 1, 0, 0, 512}, {"m9 heads b16", 16, 3, 1280, 1, 1, 1, 0, 0, 1152},
        {"m10 3x3 b16", 16, 3, 448, 3, 3, 1, 1, 1, 384},
    };
    int count = sizeof shapes / sizeof shapes[0];
    printf("avx2 kernel: %d\n", bt_kernels_use_avx2());
    printf("%-14s %8s %9s %9s %8s\n", "shape", "MFLOP", "bt GF/s", "blas GF/s", "max err");
    for (int s = 0; s < count; s++) {
        shape sh = shapes[s];
        if (argc > 1 && !strstr(sh.name, argv[1])) continue;
        bt_conv_desc d = {0};
        d.batch = sh.batch; d.in_h = d.in_w = sh.size; d.in_c = d.in_stride = sh.cin;
        d.kernel_h = sh.kh; d.kernel_w = sh.kw; d.stride = sh.stride; d.pad_h = sh.pad_h; d.pad_w = sh.pad_w;
        d.out_h = (sh.size + 2 * sh.pad_h - sh.kh) / sh.stride + 1; d.out_w = (sh.size + 2 * sh.pad_w - sh.kw) / sh.stride + 1;
        d.out_c = d.out_stride = sh.cout;
        int m = sh.batch * d.out_h * d.out_w, k = sh.kh * sh.kw * sh.cin, n = sh.cout;
        float *in = malloc(sizeof(float) * sh.batch * sh.size * sh.size * sh.cin);
        for (size_t i = 0; i < (size_t)sh.batch * sh.size * sh.size * sh.cin; i++) in[i] = rnd();
        float *w = malloc(sizeof(float) * k * n), *bias = malloc(sizeof(float) * n);
        for (int i = 0; i < k * n; i++) w[i] = rnd() / sqrtf(k);
        for (int i = 0; i < n; i++) bias[i] = rnd() * 0.1f;
        float *packed = aligned_alloc(64, (bt_packed_weights_count(k, n) * 4 + 63) / 64 * 64);
        bt_pack_weights(w, bias, k, n, packed);
        float *out = malloc(sizeof(float) * m * n), *ref = malloc(sizeof(float) * m * n), *cols = malloc(sizeof(float) * m * k);
        d.input = in; d.output = out;
        im2col(&d, cols);
        for (int r = 0; r < m; r++) for (int j = 0; j < n; j++) {
            double acc = bias[j];
            for (int q = 0; q < k; q++) acc += (double)cols[(size_t)r * k + q] * w[(size_t)q * n + j];
            ref[(size_t)r * n + j] = acc > 0 ? acc : 0;
        }
        bt_conv_relu(&d, packed, 0, m, 0, bt_panel_count(n));
        double err = 0, mag = 0;
        for (size_t i = 0; i < (size_t)m * n; i++) { err = fmax(err, fabs(out[i] - ref[i])); mag = fmax(mag, fabs(ref[i])); }
        int wino = bt_winograd_supports(sh.kh, sh.kw, sh.stride);
        float *wpacked = NULL, *scratch = NULL;
        double werr = 0;
        if (wino) {
            wpacked = malloc(bt_winograd_weights_count(sh.cin, n) * 4);
            bt_winograd_pack_weights(w, sh.kh, sh.cin, n, wpacked);
            scratch = malloc(bt_winograd_scratch_count(sh.cin, n) * 4);
            memset(out, 0, sizeof(float) * m * n);
            bt_winograd_conv_relu(&d, wpacked, bias, 0, bt_winograd_tile_count(&d), scratch);
            for (size_t i = 0; i < (size_t)m * n; i++) werr = fmax(werr, fabs(out[i] - ref[i]));
        }
        double flop = 2.0 * m * n * k, budget = 0.3;
        int reps = (int)fmax(3, budget / (flop / 100e9));
        double best = 1e9, bestBlas = 1e9, bestWino = 1e9;
        for (int rep = 0; rep < reps; rep++) {
            double t0 = now();
            bt_conv_relu(&d, packed, 0, m, 0, bt_panel_count(n));
            double t1 = now();
            if (!(sh.kh == 1 && sh.kw == 1)) im2col(&d, cols);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1, sh.kh == 1 && sh.kw == 1 ? in : cols, k, w, n, 0, ref, n);
            for (size_t i = 0; i < (size_t)m * n; i++) { float v = ref[i] + bias[i % n]; ref[i] = v > 0 ? v : 0; }
            double t2 = now();
            if (wino) bt_winograd_conv_relu(&d, wpacked, bias, 0, bt_winograd_tile_count(&d), scratch);
            double t3 = now();
            if (t3 - t2 < bestWino) bestWino = t3 - t2;
            if (t1 - t0 < best) best = t1 - t0;
            if (t2 - t1 < bestBlas) bestBlas = t2 - t1;
        }
        printf("%-14s %8.1f %9.1f %9.1f %8.1e", sh.name, flop / 1e6, flop / best / 1e9, flop / bestBlas / 1e9, err / fmax(mag, 1e-30));
        if (wino) printf("  winograd %6.1f (direct-equivalent GF/s) err %.1e", flop / bestWino / 1e9, werr / fmax(mag, 1e-30));
        printf("\n");
        free(wpacked); free(scratch);
        free(in); free(w); free(bias); free(packed); free(out); free(ref); free(cols);
    }
    return 0;
}
