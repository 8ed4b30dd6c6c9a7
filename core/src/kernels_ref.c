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

const mopt_kernels mopt_kernels_ref = {"ref", dot_f32, dot_f16, dot_bf16, cvt_f16, cvt_bf16};
