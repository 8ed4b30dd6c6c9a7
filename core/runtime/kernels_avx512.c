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

#define VBITS 512
#define V_HSUM _mm512_reduce_add_ps
/* masked loads: every length runs in vector code */
#define F32_TAIL(w, x, i, n, acc)                                                                              \
    do {                                                                                                       \
        if (i < n) {                                                                                           \
            const __mmask16 m_ = tail_mask(n - i);                                                             \
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m_, w + i), _mm512_maskz_loadu_ps(m_, x + i), acc);    \
            i = n;                                                                                             \
        }                                                                                                      \
    } while (0)
#define LOAD_U8(p) _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p))))
/* all 16 bytes at once: low nibbles are values 0..15, high nibbles 16..31 */
#define Q4_BLOCK(b, x, a0, a1)                                                                                 \
    do {                                                                                                       \
        const __m512i m4_ = _mm512_set1_epi32(15);                                                             \
        __m512i v_ = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b)));                              \
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v_, m4_)), _mm512_loadu_ps(x), a0);           \
        a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v_, 4)), _mm512_loadu_ps((x) + 16), a1);     \
    } while (0)
#include "kernels_simd.h"

const mopt_kernels mopt_kernels_avx512 = {
    .name = "avx512",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .cvt_f16 = cvt_f16,
    .cvt_bf16 = cvt_bf16,
    .dequant_u8 = dequant_u8,
    .dot_q4 = dot_q4,
    .dot_q8 = dot_q8,
    .gemv_q4_q8 = mopt_gemv_q4_q8_avx2,
    .gemv_q8_q8 = mopt_gemv_q8_q8_avx2,
    .gemm_q4_q8 = mopt_gemm_q4_q8_avx2,
    .unpack_q4 = mopt_unpack_q4_avx2,
    .gemm_s8_q8 = mopt_gemm_s8_q8_avx2,
    .gemm_s8_rows = mopt_gemm_s8_rows_avx2,
    .unpack_s8 = mopt_unpack_s8_avx2,
    .dot_i8 = dot_i8,
    .dot_sp24 = mopt_dot_sp24_avx2,
    .dot_sp24_bf16 = mopt_dot_sp24_bf16_avx2,
    .dot_sp24_i8 = mopt_dot_sp24_i8_avx2,
    .dot_sp24_i4 = mopt_dot_sp24_i4_avx2,
};
