/* AVX-512F kernels (compiled with those flags only in this file). */
#include <immintrin.h>

#include "kernels.h"
#include "mopt/tensor.h"

static inline __m512 load_bf16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

static inline __m512 load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

/* Tails use masked loads so every length runs in vector code. */
static inline __mmask16 tail_mask(int64_t r) { return (__mmask16)((1u << r) - 1u); }

static float dot_f32(const float *w, const float *x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, x + i), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

static float dot_bf16(const uint16_t *w, const float *x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(load_bf16(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(load_bf16(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(load_bf16(w + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++) s += mopt_bf16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(load_f16(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(load_f16(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(load_f16(w + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++) s += mopt_f16_to_f32(w[i]) * x[i];
    return s;
}

static void cvt_bf16(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load_bf16(src + i));
    for (; i < n; i++) dst[i] = mopt_bf16_to_f32(src[i]);
}

static void cvt_f16(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load_f16(src + i));
    for (; i < n; i++) dst[i] = mopt_f16_to_f32(src[i]);
}

static float dot_q4(const uint8_t *b, const float *x, int64_t nb) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi32(15);
    for (int64_t k = 0; k < nb; k++, b += 16, x += 32) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b));
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v, m4)), _mm512_loadu_ps(x), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)), _mm512_loadu_ps(x + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

static float dot_q8(const uint8_t *b, const float *x, int64_t nb) {
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb * 32; i += 32) {
        __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + i))));
        __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + i + 16))));
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* VNNI: dpbusd multiplies unsigned by signed bytes, so feed |a| and b with a's sign. */
static int32_t dot_i8(const int8_t *a, const int8_t *b, int64_t n) {
    __m512i acc = _mm512_setzero_si512();
    const __m512i zero = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i va = _mm512_loadu_si512(a + i), vb = _mm512_loadu_si512(b + i);
        __mmask64 neg = _mm512_movepi8_mask(va);
        acc = _mm512_dpbusd_epi32(acc, _mm512_abs_epi8(va), _mm512_mask_sub_epi8(vb, neg, zero, vb));
    }
    int32_t r = _mm512_reduce_add_epi32(acc);
    for (; i < n; i++) r += (int32_t)a[i] * b[i];
    return r;
}

/* One reduction per row (see the AVX2 version). */
static inline float dot_q4_row(const uint8_t *b, const float *x, const float *scale, int64_t ng, int64_t bpg) {
    __m512 row = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi32(15);
    for (int64_t g = 0; g < ng; g++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (int64_t k = 0; k < bpg; k++, b += 16, x += 32) {
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b));
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v, m4)), _mm512_loadu_ps(x), a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4)), _mm512_loadu_ps(x + 16), a1);
        }
        row = _mm512_fmadd_ps(_mm512_add_ps(a0, a1), _mm512_set1_ps(scale[g]), row);
    }
    return _mm512_reduce_add_ps(row);
}

static inline float dot_q8_row(const uint8_t *b, const float *x, const float *scale, int64_t ng, int64_t bpg) {
    __m512 row = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        for (int64_t i = 0; i < bpg * 32; i += 32) {
            a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + i)))),
                                 _mm512_loadu_ps(x + i), a0);
            a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + i + 16)))),
                                 _mm512_loadu_ps(x + i + 16), a1);
        }
        row = _mm512_fmadd_ps(_mm512_add_ps(a0, a1), _mm512_set1_ps(scale[g]), row);
        b += bpg * 32;
        x += bpg * 32;
    }
    return _mm512_reduce_add_ps(row);
}

/* Whole rows at once: scales widened with F16C, zero-points folded with xsum. */
#define GEMV_ROWS_FN(NAME, DOTROW)                                                                              \
    static void NAME(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z,     \
                     float zsym, const float *x, const float *xsum, int64_t ng, int64_t bpg, float *y) {          \
        float sc[256];                                                                                           \
        for (int64_t r = 0; r < nrows; r++) {                                                                    \
            float zc = 0;                                                                                        \
            for (int64_t g = 0; g < ng; g++) {                                                                   \
                sc[g] = _cvtsh_ss(s[r * ng + g]);                                                                \
                zc += sc[g] * (z ? (float)z[r * ng + g] : zsym) * xsum[g];                                       \
            }                                                                                                    \
            y[r] = DOTROW(w + (size_t)r * row_bytes, x, sc, ng, bpg) - zc;                                       \
        }                                                                                                        \
    }
GEMV_ROWS_FN(gemv_q4, dot_q4_row)
GEMV_ROWS_FN(gemv_q8, dot_q8_row)

const mopt_kernels mopt_kernels_avx512 = {"avx512", dot_f32, dot_f16, dot_bf16, cvt_f16, cvt_bf16, dot_q4, dot_q8,
                                          gemv_q4, gemv_q8, dot_i8};
