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

void bt_round_bfloat16_map(float *data, long pixels, int channels, int stride) {
    for (long p = 0; p < pixels; p++) {
        float *row = data + p * (long)stride;
        for (int c = 0; c < channels; c++) row[c] = round_bfloat16(row[c]);
    }
}
