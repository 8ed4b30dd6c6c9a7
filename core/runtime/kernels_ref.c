/* Scalar kernels: the portable fallback and the oracle for the SIMD sets. */
#include "kernels.h"
#include "mopt/tensor.h"

static float dot_f32(const float *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += mopt_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += mopt_bf16_to_f32(w[i]) * x[i];
    return s;
}

static void cvt_f16(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = mopt_f16_to_f32(src[i]);
}

static void cvt_bf16(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = mopt_bf16_to_f32(src[i]);
}

void mopt_qblock_levels(const uint8_t *b, int32_t bits, float *out) {
    switch (bits) {
    case 8:
        for (int j = 0; j < 32; j++) out[j] = b[j];
        break;
    case 4:
        for (int j = 0; j < 16; j++) {
            out[j] = (float)(b[j] & 15);
            out[j + 16] = (float)(b[j] >> 4);
        }
        break;
    case 2:
    case 3: {
        uint32_t mask = bits == 3 ? (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24 : 0;
        for (int j = 0; j < 32; j++) out[j] = (float)(((b[j & 7] >> (2 * (j >> 3))) & 3) | ((mask >> j) & 1) << 2);
        break;
    }
    default:
        for (int j = 0; j < 32; j++) out[j] = 0;
    }
}

float mopt_qblock_dot(const uint8_t *block, int32_t bits, const float *x, int32_t n) {
    float v[32], s = 0;
    mopt_qblock_levels(block, bits, v);
    for (int32_t j = 0; j < n; j++) s += v[j] * x[j];
    return s;
}

static float dot_q4(const uint8_t *b, const float *x, int64_t nb) {
    float s = 0;
    for (int64_t k = 0; k < nb; k++) s += mopt_qblock_dot(b + 16 * k, 4, x + 32 * k, 32);
    return s;
}

static float dot_q8(const uint8_t *b, const float *x, int64_t nb) {
    float s = 0;
    for (int64_t i = 0; i < nb * 32; i++) s += (float)b[i] * x[i];
    return s;
}

static int32_t dot_i8(const int8_t *a, const int8_t *b, int64_t n) {
    int32_t s = 0;
    for (int64_t i = 0; i < n; i++) s += (int32_t)a[i] * b[i];
    return s;
}

#define F16 mopt_f16_to_f32
#define GEMV_QROWS(NAME, DOT, BB)                                                                                \
    static void NAME(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z,     \
                     float zsym, const float *x, const float *xsum, int64_t ng, int64_t bpg, float *y) {          \
        for (int64_t r = 0; r < nrows; r++) {                                                                    \
            const uint8_t *row = w + (size_t)r * row_bytes;                                                      \
            float acc = 0;                                                                                       \
            for (int64_t g = 0; g < ng; g++) {                                                                   \
                float sc = F16(s[r * ng + g]), zz = z ? (float)z[r * ng + g] : zsym;                             \
                acc += sc * (DOT(row + g * bpg * (BB), x + g * bpg * 32, bpg) - zz * xsum[g]);                  \
            }                                                                                                    \
            y[r] = acc;                                                                                          \
        }                                                                                                        \
    }
GEMV_QROWS(gemv_q4, dot_q4, 16)
GEMV_QROWS(gemv_q8, dot_q8, 32)

static float dot_sp24(const float *vals, const uint8_t *pos, const float *x, int64_t n) {
    float s = 0;
    for (int64_t g = 0; g < n / 4; g++) {
        const int nib = pos[g / 2] >> (4 * (g % 2)) & 15;
        s += vals[2 * g] * x[4 * g + (nib & 3)] + vals[2 * g + 1] * x[4 * g + (nib >> 2)];
    }
    return s;
}

static float dot_sp24_bf16(const uint16_t *vals, const uint8_t *pos, const float *x, int64_t n) {
    float s = 0;
    for (int64_t g = 0; g < n / 4; g++) {
        const int nib = pos[g / 2] >> (4 * (g % 2)) & 15;
        s += mopt_bf16_to_f32(vals[2 * g]) * x[4 * g + (nib & 3)] + mopt_bf16_to_f32(vals[2 * g + 1]) * x[4 * g + (nib >> 2)];
    }
    return s;
}

static float dot_sp24_i8(const int8_t *vals, const uint8_t *pos, const float *x, int64_t n) {
    float s = 0;
    for (int64_t g = 0; g < n / 4; g++) {
        const int nib = pos[g / 2] >> (4 * (g % 2)) & 15;
        s += (float)vals[2 * g] * x[4 * g + (nib & 3)] + (float)vals[2 * g + 1] * x[4 * g + (nib >> 2)];
    }
    return s;
}

const mopt_kernels mopt_kernels_ref = {"ref", dot_f32, dot_f16, dot_bf16, cvt_f16, cvt_bf16, dot_q4, dot_q8,
                                       gemv_q4, gemv_q8, dot_i8, dot_sp24, dot_sp24_bf16, dot_sp24_i8};
