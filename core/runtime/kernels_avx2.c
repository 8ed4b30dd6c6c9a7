/* AVX2 + FMA + F16C kernels (compiled with those flags only in this file). */
#include <immintrin.h>
#include <pthread.h>

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

#define VBITS 256
#define V_HSUM hsum
#define F32_TAIL NO_TAIL
#define LOAD_U8(p) _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
/* bytes 0..7 and 8..15: low nibbles are values 0..15, high nibbles 16..31 */
#define Q4_BLOCK(b, x, a0, a1)                                                                                 \
    do {                                                                                                       \
        const __m256i m4_ = _mm256_set1_epi32(15);                                                             \
        __m256i lo8_ = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b)));                            \
        __m256i hi8_ = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((b) + 8)));                      \
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(lo8_, m4_)), _mm256_loadu_ps(x), a0);         \
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_and_si256(hi8_, m4_)), _mm256_loadu_ps((x) + 8), a1);   \
        a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(lo8_, 4)), _mm256_loadu_ps((x) + 16), a0);   \
        a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(hi8_, 4)), _mm256_loadu_ps((x) + 24), a1);   \
    } while (0)
#include "kernels_simd.h"

/* For one position byte (two groups of four inputs, 8 x values): which x each
 * of the group pair's 4 kept values multiplies, in lanes 0..3 and again in 4..7. */
static int32_t sp24_xidx[256][8];
static void sp24_init(void) {
    for (int b = 0; b < 256; b++)
        for (int g = 0; g < 2; g++) {
            const int nib = b >> (4 * g) & 15;
            for (int half = 0; half < 8; half += 4) {
                sp24_xidx[b][half + 2 * g] = 4 * g + (nib & 3);
                sp24_xidx[b][half + 2 * g + 1] = 4 * g + (nib >> 2);
            }
        }
}
static pthread_once_t sp24_once = PTHREAD_ONCE_INIT;

/* The x values 16 inputs' 8 kept weights multiply, in the values' order: each
 * group pair's x picked by one permute, the two halves blended. */
static inline __m256 sp24_x16(const float *x, const uint8_t *pos) {
    const __m256 p0 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x), _mm256_loadu_si256((const __m256i *)sp24_xidx[pos[0]]));
    const __m256 p1 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(x + 8), _mm256_loadu_si256((const __m256i *)sp24_xidx[pos[1]]));
    return _mm256_blend_ps(p0, p1, 0xF0);
}

/* The last 8 inputs (4 values), when n is not a multiple of 16. */
static inline float sp24_tail(const float *v, const uint8_t *pos, const float *x) {
    float s = 0;
    for (int g = 0; g < 2; g++) {
        const int nib = pos[0] >> (4 * g) & 15;
        s += v[2 * g] * x[4 * g + (nib & 3)] + v[2 * g + 1] * x[4 * g + (nib >> 2)];
    }
    return s;
}

static inline float f32_at(const float *v, int64_t k) { return v[k]; }
static inline float bf16_at(const uint16_t *v, int64_t k) { return mopt_bf16_to_f32(v[k]); }
static inline float i8_at(const int8_t *v, int64_t k) { return (float)v[k]; }
#define LOAD_I8(p) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p))))

/* 2:4 rows: every lane of every FMA is a kept weight, so the arithmetic and
 * the weight bytes are half the dense row's (plus a byte of positions per 8
 * inputs). The positions gate each step's loads, so both streams are fetched
 * ahead. T: the values' type, LOAD: 8 of them as floats, AT: one. */
#define SP24_DOT(NAME, T, LOAD, AT)                                                                              \
    float NAME(const T *vals, const uint8_t *pos, const float *x, int64_t n) {                                  \
        pthread_once(&sp24_once, sp24_init);                                                                     \
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();                                               \
        int64_t i = 0;                                                                                           \
        for (; i + 32 <= n; i += 32) {                                                                           \
            _mm_prefetch((const char *)(vals + i / 2) + 512, _MM_HINT_T0);                                       \
            _mm_prefetch((const char *)(pos + i / 8) + 64, _MM_HINT_T0);                                         \
            a0 = _mm256_fmadd_ps(LOAD(vals + i / 2), sp24_x16(x + i, pos + i / 8), a0);                          \
            a1 = _mm256_fmadd_ps(LOAD(vals + i / 2 + 8), sp24_x16(x + i + 16, pos + i / 8 + 2), a1);             \
        }                                                                                                        \
        for (; i + 16 <= n; i += 16) a0 = _mm256_fmadd_ps(LOAD(vals + i / 2), sp24_x16(x + i, pos + i / 8), a0); \
        float s = hsum(_mm256_add_ps(a0, a1));                                                                   \
        if (i < n) {                                                                                             \
            float v[4];                                                                                          \
            for (int k = 0; k < 4; k++) v[k] = AT(vals, i / 2 + k);                                              \
            s += sp24_tail(v, pos + i / 8, x + i);                                                               \
        }                                                                                                        \
        return s;                                                                                                \
    }
SP24_DOT(mopt_dot_sp24_avx2, float, _mm256_loadu_ps, f32_at)
SP24_DOT(mopt_dot_sp24_bf16_avx2, uint16_t, load_bf16, bf16_at)
SP24_DOT(mopt_dot_sp24_i8_avx2, int8_t, LOAD_I8, i8_at)

const mopt_kernels mopt_kernels_avx2 = {"avx2", dot_f32, dot_f16, dot_bf16, cvt_f16, cvt_bf16, dot_q4, dot_q8,
                                        gemv_q4, gemv_q8, dot_i8, mopt_dot_sp24_avx2, mopt_dot_sp24_bf16_avx2,
                                        mopt_dot_sp24_i8_avx2};
