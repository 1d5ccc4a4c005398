#include "CKernels.h"

#include <stdint.h>
#include <string.h>

/// Round to nearest, ties to even, keeping the upper 16 bits (what VCVTNEPS2BF16 does for normal finite
/// values; a NaN stays a NaN; unlike that instruction, subnormals are rounded rather than flushed to zero,
/// which changes nothing for this network's values). The result is a float whose low 16 bits are zero.
static inline float round_bfloat16(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu)) {
        bits |= 0x00400000u;  // quiet NaN, payload kept in the upper half
    } else {
        bits += 0x7FFFu + ((bits >> 16) & 1u);
    }
    bits &= 0xFFFF0000u;
    memcpy(&value, &bits, sizeof value);
    return value;
}

void bt_round_bfloat16(float *values, long count) {
    for (long i = 0; i < count; i++) values[i] = round_bfloat16(values[i]);
}

void bt_round_bfloat16_copy(const float *src, long pixels, int channels, int src_stride, float *dst) {
    for (long p = 0; p < pixels; p++) {
        const float *row = src + p * (long)src_stride;
        float *out = dst + p * (long)channels;
        for (int c = 0; c < channels; c++) out[c] = round_bfloat16(row[c]);
    }
}

static inline uint16_t bfloat16_bits(float value) {
    const float rounded = round_bfloat16(value);
    uint32_t bits;
    memcpy(&bits, &rounded, sizeof bits);
    return (uint16_t)(bits >> 16);
}

void bt_pack_weights_bfloat16(const float *weights, const float *bias, int taps, int in_c, int n, float *packed) {
    const int pairs = bt_bfloat16_pairs(in_c);
    for (int p = 0; p < bt_panel_count(n); p++) {
        float *dst = packed + (size_t)p * (BT_PANEL_WIDTH + (size_t)taps * pairs * BT_PANEL_WIDTH);
        const int j0 = p * BT_PANEL_WIDTH;
        for (int j = 0; j < BT_PANEL_WIDTH; j++) dst[j] = j0 + j < n ? bias[j0 + j] : 0.0f;
        dst += BT_PANEL_WIDTH;
        for (int t = 0; t < taps; t++) {
            for (int q = 0; q < pairs; q++) {
                const size_t even = (size_t)t * in_c + 2 * q;
                for (int j = 0; j < BT_PANEL_WIDTH; j++) {
                    const int col = j0 + j;
                    // Channel 2q in the high half: VDPBF16PS adds the high product first (see CKernels.h).
                    const uint32_t first = col < n ? bfloat16_bits(weights[even * n + col]) : 0;
                    const uint32_t second = col < n && 2 * q + 1 < in_c ? bfloat16_bits(weights[(even + 1) * n + col]) : 0;
                    const uint32_t word = first << 16 | second;
                    memcpy(dst + j, &word, sizeof word);
                }
                dst += BT_PANEL_WIDTH;
            }
        }
    }
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/// VCVTNEPS2BF16 rounds as round_bfloat16 does, but flushes subnormal inputs to zero (no value of this
/// network's maps is that small after a ReLU but exact zeros). Each pair's halves are then swapped.
__attribute__((target("avx512f,avx512vl,avx512bw,avx512bf16"), min_vector_width(512))) static void
convert_bfloat16_map_avx512(const float *src, long pixels, int channels, int src_stride, uint16_t *dst) {
    const int dst_stride = 2 * bt_bfloat16_pairs(channels);
    for (long p = 0; p < pixels; p++) {
        const float *row = src + p * (long)src_stride;
        uint16_t *out = dst + p * (long)dst_stride;
        int c = 0;
        for (; c + 32 <= channels; c += 32) {
            const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(row + c + 16), _mm512_loadu_ps(row + c));
            _mm512_storeu_si512(out + c, _mm512_rol_epi32((__m512i)h, 16));
        }
        for (; c < channels; c += 16) {
            // Lanes past the channels load as 0, so an odd count's pad half is 0; whole pairs are stored.
            const int left = channels - c >= 16 ? 16 : channels - c, stored = (left + 1) & ~1;
            const __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1u), row + c));
            _mm256_mask_storeu_epi16(out + c, (__mmask16)((1u << stored) - 1u), _mm256_rol_epi32((__m256i)h, 16));
        }
    }
}
#endif

void bt_convert_bfloat16_map(const float *src, long pixels, int channels, int src_stride, uint16_t *dst) {
#if defined(__x86_64__) || defined(__i386__)
    if (bt_bfloat16_supported()) {
        convert_bfloat16_map_avx512(src, pixels, channels, src_stride, dst);
        return;
    }
#endif
    const int pairs = bt_bfloat16_pairs(channels);
    for (long p = 0; p < pixels; p++) {
        const float *row = src + p * (long)src_stride;
        uint16_t *out = dst + p * (long)(2 * pairs);
        for (int q = 0; q < pairs; q++) {
            out[2 * q] = 2 * q + 1 < channels ? bfloat16_bits(row[2 * q + 1]) : 0;
            out[2 * q + 1] = bfloat16_bits(row[2 * q]);
        }
    }
}
