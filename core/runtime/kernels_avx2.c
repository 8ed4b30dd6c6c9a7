/* AVX2 + FMA + F16C kernels (compiled with those flags only in this file). */
#include <immintrin.h>

#include "kernels.h"
#include "mopt/tensor.h"

static inline float hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}

static inline __m256 load_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

static inline __m256 load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static float dot_f32(const float *w, const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(load_bf16(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load_bf16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_bf16(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += mopt_bf16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_fmadd_ps(load_f16(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load_f16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_f16(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(a0, a1));
    for (; i < n; i++) s += mopt_f16_to_f32(w[i]) * x[i];
    return s;
}

static void cvt_bf16(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_bf16(src + i));
    for (; i < n; i++) dst[i] = mopt_bf16_to_f32(src[i]);
}

static void cvt_f16(const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load_f16(src + i));
    for (; i < n; i++) dst[i] = mopt_f16_to_f32(src[i]);
}

static float dot_q4(const uint8_t *b, const float *x, int64_t nb) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi32(15);
    for (int64_t k = 0; k < nb; k++, b += 16, x += 32) {
        __m256i lo8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b));      /* bytes 0..7 */
        __m256i hi8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 8))); /* bytes 8..15 */
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(lo8, m4)), _mm256_loadu_ps(x), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(hi8, m4)), _mm256_loadu_ps(x + 8), a1);
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(lo8, 4)), _mm256_loadu_ps(x + 16), a0);
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(hi8, 4)), _mm256_loadu_ps(x + 24), a1);
    }
    return hsum(_mm256_add_ps(a0, a1));
}

static float dot_q8(const uint8_t *b, const float *x, int64_t nb) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb * 32; i += 16) {
        __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + i))));
        __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + i + 8))));
        a0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), a1);
    }
    return hsum(_mm256_add_ps(a0, a1));
}

/* |a| (unsigned) times b with a's sign: pmaddubsw cannot saturate when |a|, |b| <= 127 */
static int32_t dot_i8(const int8_t *a, const int8_t *b, int64_t n) {
    __m256i acc = _mm256_setzero_si256();
    const __m256i ones = _mm256_set1_epi16(1);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i va = _mm256_loadu_si256((const __m256i *)(a + i)), vb = _mm256_loadu_si256((const __m256i *)(b + i));
        __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(va, va), _mm256_sign_epi8(vb, va));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    int32_t r = _mm_cvtsi128_si32(s);
    for (; i < n; i++) r += (int32_t)a[i] * b[i];
    return r;
}

/* One reduction per row: each group's products accumulate in vectors that are
 * scaled into the row's accumulator. */
static inline float dot_q4_row(const uint8_t *b, const float *x, const float *scale, int64_t ng, int64_t bpg) {
    __m256 row = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi32(15);
    for (int64_t g = 0; g < ng; g++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int64_t k = 0; k < bpg; k++, b += 16, x += 32) {
            __m256i lo8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b));
            __m256i hi8 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + 8)));
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(lo8, m4)), _mm256_loadu_ps(x), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(hi8, m4)), _mm256_loadu_ps(x + 8), a1);
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(lo8, 4)), _mm256_loadu_ps(x + 16), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(hi8, 4)), _mm256_loadu_ps(x + 24), a1);
        }
        row = _mm256_fmadd_ps(_mm256_add_ps(a0, a1), _mm256_set1_ps(scale[g]), row);
    }
    return hsum(row);
}

static inline float dot_q8_row(const uint8_t *b, const float *x, const float *scale, int64_t ng, int64_t bpg) {
    __m256 row = _mm256_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int64_t i = 0; i < bpg * 32; i += 16) {
            a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + i)))),
                                 _mm256_loadu_ps(x + i), a0);
            a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + i + 8)))),
                                 _mm256_loadu_ps(x + i + 8), a1);
        }
        row = _mm256_fmadd_ps(_mm256_add_ps(a0, a1), _mm256_set1_ps(scale[g]), row);
        b += bpg * 32;
        x += bpg * 32;
    }
    return hsum(row);
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

const mopt_kernels mopt_kernels_avx2 = {"avx2", dot_f32, dot_f16, dot_bf16, cvt_f16, cvt_bf16, dot_q4, dot_q8,
                                        gemv_q4, gemv_q8, dot_i8};
