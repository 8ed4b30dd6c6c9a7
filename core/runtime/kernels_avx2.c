/* AVX2 + FMA + F16C kernels (compiled with those flags only in this file). */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "kernels.h"
#include "tensor_impl.h"
#include "mopt/quant.h"
#include "mopt/tensor.h"

static inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* [sum a, sum b, sum c, sum d]: pairs interleaved and added within each 128-bit lane, then the two lanes */
static inline __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
    const __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    const __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    const __m256 abcd = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

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

/* 8 E4M3 bytes as f16 (value x 2^-8; NaN for 0x7f / 0xff), widened */
static inline __m256 load_e4m3(const uint8_t *p) {
    const __m128i b = _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p)), mag = _mm_and_si128(b, _mm_set1_epi16(0x7f));
    const __m128i h = _mm_or_si128(_mm_slli_epi16(mag, 7), _mm_slli_epi16(_mm_and_si128(b, _mm_set1_epi16(0x80)), 8));
    return _mm256_cvtph_ps(_mm_blendv_epi8(h, _mm_set1_epi16(0x7e00), _mm_cmpeq_epi16(mag, _mm_set1_epi16(0x7f))));
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

/* 4-bit levels against int8 activations: the 16 bytes of a 32-value block
 * become 32 unsigned bytes in value order (low nibbles, then high), and
 * pmaddubsw cannot saturate (15 x 127 x 2 < 2^15). Each block's int32 dot is
 * scaled by its x scale; blocks alternate between two accumulators so the FMA
 * latency does not set the pace. */
static inline __m256 q4q8_block(const uint8_t *w, const int8_t *xq, float xd, __m256 acc, __m256 mul) {
    const __m128i v = _mm_loadu_si128((const __m128i *)w);
    const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)xq)), _mm256_set1_epi16(1));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(_mm256_set1_ps(xd), mul), acc);
}

/* 8-bit levels as level - 128 (signed), multiplied as |w| times x with w's
 * sign: a pair stays below 2^15 (2 x 128 x 127). */
static inline __m256 q8q8_block(const uint8_t *w, const int8_t *xq, float xd, __m256 acc, __m256 mul) {
    const __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)w), _mm256_set1_epi8((char)0x80));
    const __m256i x = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xq), v);
    const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(v), x), _mm256_set1_epi16(1));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(_mm256_set1_ps(xd), mul), acc);
}

/* Rows of 4- or 8-bit blocks (BB bytes each) against int8 x; the weights
 * stream once, prefetched ahead. 8-bit levels are offset by 128 (q8q8_block),
 * so their zero-points are too. */
static inline __attribute__((always_inline)) void gemv_qx_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s,
                                                              const uint8_t *z, float zsym, const int8_t *xq, const float *xd,
                                                              const float *xsum, int64_t ng, int64_t bpg, float *y, const int BB) {
    const float zoff = BB == 32 ? 128.0f : 0.0f;
    if (bpg == 1 && ng % 8 == 0) { /* groups of one block (GGUF's Q4_0 / Q8_0): scales and zero terms 8 groups at a time */
        for (int64_t r = 0; r < nrows; r++) {
            const uint8_t *row = w + (size_t)r * row_bytes;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), zc = _mm256_setzero_ps();
            for (int64_t g = 0; g < ng; g += 8) {
                const __m256 sv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + r * ng + g)));
                const __m256 m = _mm256_mul_ps(sv, _mm256_loadu_ps(xd + g)); /* each block's x scale times its group's */
                const __m256 zv = z ? _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(z + r * ng + g))))
                                    : _mm256_set1_ps(zsym);
                zc = _mm256_fmadd_ps(_mm256_mul_ps(sv, _mm256_sub_ps(zv, _mm256_set1_ps(zoff))), _mm256_loadu_ps(xsum + g), zc);
                _mm_prefetch((const char *)(row + BB * g) + 1024, _MM_HINT_T0);
                for (int k = 0; k < 8; k += 2) {
                    const __m256 m0 = _mm256_permutevar8x32_ps(m, _mm256_set1_epi32(k)), m1 = _mm256_permutevar8x32_ps(m, _mm256_set1_epi32(k + 1));
                    a0 = (BB == 16 ? q4q8_block : q8q8_block)(row + BB * (g + k), xq + 32 * (g + k), 1.0f, a0, m0);
                    a1 = (BB == 16 ? q4q8_block : q8q8_block)(row + BB * (g + k + 1), xq + 32 * (g + k + 1), 1.0f, a1, m1);
                }
            }
            y[r] = hsum(_mm256_add_ps(a0, a1)) - hsum(zc);
        }
        return;
    }
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        __m256 acc = _mm256_setzero_ps();
        float zc = 0;
        for (int64_t g = 0; g < ng; g++) {
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            const int64_t b1 = (g + 1) * bpg;
            int64_t b = g * bpg;
            for (; b + 2 <= b1; b += 2) {
                _mm_prefetch((const char *)(row + BB * b) + 1024, _MM_HINT_T0);
                a0 = (BB == 16 ? q4q8_block : q8q8_block)(row + BB * b, xq + 32 * b, xd[b], a0, one);
                a1 = (BB == 16 ? q4q8_block : q8q8_block)(row + BB * b + BB, xq + 32 * b + 32, xd[b + 1], a1, one);
            }
            if (b < b1) a0 = (BB == 16 ? q4q8_block : q8q8_block)(row + BB * b, xq + 32 * b, xd[b], a0, one);
            const float sc = _cvtsh_ss(s[r * ng + g]);
            acc = _mm256_fmadd_ps(_mm256_add_ps(a0, a1), _mm256_set1_ps(sc), acc);
            zc += sc * ((z ? (float)z[r * ng + g] : zsym) - zoff) * xsum[g];
        }
        y[r] = hsum(acc) - zc;
    }
}

void mopt_gemv_q4_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                          const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y) {
    gemv_qx_q8(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, y, 16);
}

void mopt_gemv_q8_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                          const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y) {
    gemv_qx_q8(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, y, 32);
}

/* k-quant rows (mopt/quant.h, KQUANT) against int8 x per super-block (llama.cpp's Q8_K): each super-block's
 * sub-block dots are scaled by their 6- or 8-bit scales and summed in int32 (pmaddwd), then go to float once. */
static inline float kq_f16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* pshufb masks that spread scale byte k over a 16-byte lane (kq_one[k]) or bytes 2j and 2j + 1 over its halves
 * (kq_pair[j]); the bytes then widen to 16 pmaddwd factors */
static const uint8_t kq_one[8][16] = {{0}, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1}, {2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2},
                                      {3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}, {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4},
                                      {5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5}, {6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6},
                                      {7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7}};
static const uint8_t kq_pair[8][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1},         {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
                                       {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5},         {6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
                                       {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9},         {10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
                                       {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13}, {14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15, 15}};
static inline __m128i kq_mask(const uint8_t m[16]) { return _mm_loadu_si128((const __m128i *)m); }

/* Q4_K: 32 bytes hold sub-blocks 2i (low nibbles) and 2i+1 (high); the mins come off with xs16 in integers.
 * Q5_K (five): the same after 32 bytes qh whose bits 2i and 2i + 1 are the fifth bits of those sub-blocks. */
static inline void gemv_q45k(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                             const int16_t *xs16, int64_t nsb, float *y, const int five) {
    const __m256i m4 = _mm256_set1_epi8(15), one = _mm256_set1_epi8(1);
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        __m256 acc = _mm256_setzero_ps();
        float mins = 0;
        for (int64_t k = 0; k < nsb; k++, b += five ? 176 : 144) {
            const int8_t *x = xq + 256 * k;
            const int16_t *s16 = xs16 + 16 * k;
            uint8_t sm[16]; /* the 8 scales, then the 8 mins */
            mopt_kquant_scales_mins(b + 4, sm, sm + 8);
            const __m128i scv = _mm_loadu_si128((const __m128i *)sm);
            _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
            __m256i isum = _mm256_setzero_si256();
            /* the mins against the sums of x per 32 (pairs of xs16): one pmaddwd of the 8 mins with 8 pair sums */
            const __m256i s16v = _mm256_loadu_si256((const __m256i *)s16);
            const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(s16v), _mm256_extracti128_si256(s16v, 1));
            const __m128i mp = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_srli_si128(scv, 8)), pairs);
            const __m128i m2 = _mm_add_epi32(mp, _mm_srli_si128(mp, 8));
            const int32_t msum = _mm_cvtsi128_si32(_mm_add_epi32(m2, _mm_srli_si128(m2, 4)));
            const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
            for (int i = 0; i < 4; i++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(b + (five ? 48 : 16) + 32 * i));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (five) { /* a 16-bit shift keeps each byte's own bit in bit 0 */
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * i), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * i + 1), one), 4));
                }
                const __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(x + 64 * i)));
                const __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 64 * i + 32)));
                const __m256i s0 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scv, kq_mask(kq_one[2 * i])));
                const __m256i s1 = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scv, kq_mask(kq_one[2 * i + 1])));
                isum = _mm256_add_epi32(isum, _mm256_add_epi32(_mm256_madd_epi16(p0, s0), _mm256_madd_epi16(p1, s1)));
            }
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(kq_f16(b) * xd[k]), acc);
            mins += kq_f16(b + 2) * xd[k] * (float)msum;
        }
        y[r] = hsum(acc) - mins;
    }
}

void mopt_gemv_q4k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y) {
    gemv_q45k(w, row_bytes, nrows, xq, xd, xs16, nsb, y, 0);
}

void mopt_gemv_q5k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y) {
    gemv_q45k(w, row_bytes, nrows, xq, xd, xs16, nsb, y, 1);
}

/* Q6_K: 128 values from 64 bytes of low nibbles and 32 of high bit pairs; q - 32 as two pmaddubsw (q . x and
 * 32 . x, neither can saturate), each 16 values' sum times its int8 scale with pmaddwd */
void mopt_gemv_q6k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y) {
    (void)xs16;
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3), m32 = _mm256_set1_epi8(32);
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        __m256 acc = _mm256_setzero_ps();
        for (int64_t k = 0; k < nsb; k++, b += 210) {
            const int8_t *x = xq + 256 * k;
            const __m128i scv = _mm_loadu_si128((const __m128i *)(b + 192));
            _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
            __m256i isum = _mm256_setzero_si256();
            for (int n = 0; n < 2; n++) {
                const __m256i l0 = _mm256_loadu_si256((const __m256i *)(b + 64 * n)), l1 = _mm256_loadu_si256((const __m256i *)(b + 64 * n + 32));
                const __m256i h = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * n));
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m3), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4));
                for (int kq = 0; kq < 4; kq++) {
                    const int j = 4 * n + kq;
                    const __m256i xv = _mm256_loadu_si256((const __m256i *)(x + 32 * j));
                    const __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q[kq], xv), _mm256_maddubs_epi16(m32, xv));
                    const __m256i s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scv, kq_mask(kq_pair[j])));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, s));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(kq_f16(b + 208) * xd[k]), acc);
        }
        y[r] = hsum(acc);
    }
}

/* Q2_K / Q3_K: each 32 bytes of 2-bit levels hold four runs of 32 values (bits 2 kq); a run is sub-blocks 2j and
 * 2j + 1 of 16, scaled as Q6_K's with pmaddwd. Q2_K's mins come off with xs16 as Q4_K's; Q3_K's third bit comes
 * from hmask (bit 4 n + kq of each byte: a 16-bit shift is exact for the bit kept), its -4 with xs16 */
static inline int32_t kq_hsum_epi32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_srli_si128(s, 8));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_srli_si128(s, 4)));
}

void mopt_gemv_q2k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y) {
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m4 = _mm_set1_epi8(15);
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        __m256 acc = _mm256_setzero_ps();
        float mins = 0;
        for (int64_t k = 0; k < nsb; k++, b += 84) {
            const int8_t *x = xq + 256 * k;
            const __m128i raw = _mm_loadu_si128((const __m128i *)b);
            const __m128i scv = _mm_and_si128(raw, m4), mnv = _mm_and_si128(_mm_srli_epi16(raw, 4), m4);
            _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
            const int32_t msum = kq_hsum_epi32(_mm256_madd_epi16(_mm256_cvtepu8_epi16(mnv), _mm256_loadu_si256((const __m256i *)(xs16 + 16 * k))));
            __m256i isum = _mm256_setzero_si256();
            for (int n = 0; n < 2; n++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * n));
                for (int kq = 0; kq < 4; kq++) {
                    const int j = 4 * n + kq;
                    const __m256i q = _mm256_and_si256(_mm256_srli_epi16(v, 2 * kq), m3);
                    const __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)(x + 32 * j)));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_cvtepu8_epi16(_mm_shuffle_epi8(scv, kq_mask(kq_pair[j])))));
                }
            }
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(kq_f16(b + 80) * xd[k]), acc);
            mins += kq_f16(b + 82) * xd[k] * (float)msum;
        }
        y[r] = hsum(acc) - mins;
    }
}

void mopt_gemv_q3k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        __m256 acc = _mm256_setzero_ps();
        float off = 0;
        for (int64_t k = 0; k < nsb; k++, b += 110) {
            const int8_t *x = xq + 256 * k;
            const uint8_t *s = b + 96;
            int8_t sc[16];
            for (int j = 0; j < 16; j++) sc[j] = (int8_t)(mopt_q3k_scale(s, j) - 32);
            const __m128i scv = _mm_loadu_si128((const __m128i *)sc);
            _mm_prefetch((const char *)b + 1024, _MM_HINT_T0);
            const int32_t xsum = kq_hsum_epi32(_mm256_madd_epi16(_mm256_cvtepi8_epi16(scv), _mm256_loadu_si256((const __m256i *)(xs16 + 16 * k))));
            const __m256i hm = _mm256_loadu_si256((const __m256i *)b);
            __m256i isum = _mm256_setzero_si256();
            for (int n = 0; n < 2; n++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(b + 32 + 32 * n));
                for (int kq = 0; kq < 4; kq++) {
                    const int j = 4 * n + kq;
                    const __m256i hb = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, j), one), 2);
                    const __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 2 * kq), m3), hb);
                    const __m256i p = _mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)(x + 32 * j)));
                    isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p, _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scv, kq_mask(kq_pair[j])))));
                }
            }
            const float dx = kq_f16(b + 108) * xd[k];
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(dx), acc);
            off += dx * (float)(4 * xsum);
        }
        y[r] = hsum(acc) - off;
    }
}

/* 16 level bytes (signed ones when sgn) times ds minus dm, 8 at a time: the scalar decoding's own two roundings */
static inline void kq_widen16(__m128i q, int sgn, float ds, float dm, float *dst) {
    const __m256 vs = _mm256_set1_ps(ds), vm = _mm256_set1_ps(dm);
    const __m128i parts[2] = {q, _mm_srli_si128(q, 8)};
    for (int p = 0; p < 2; p++) {
        const __m256i w = sgn ? _mm256_cvtepi8_epi32(parts[p]) : _mm256_cvtepu8_epi32(parts[p]);
        _mm256_storeu_ps(dst + 8 * p, _mm256_sub_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(w), vs), vm));
    }
}

/* 32 (unsigned) level bytes, one scale and min */
static inline void kq_widen32(__m256i q, float ds, float dm, float *dst) {
    kq_widen16(_mm256_castsi256_si128(q), 0, ds, dm, dst);
    kq_widen16(_mm256_extracti128_si256(q, 1), 0, ds, dm, dst + 16);
}

/* Q2_K: (d sc) q - dmin m per 16; Q3_K: (d (sc - 32)) (q - 4) per 16, q's third bit from hmask (bit 4n + k of byte
 * l for value 128 n + 32 k + l); Q4_K / Q5_K: (d sc) q - dmin m per 32, Q5_K's fifth bit from qh; Q6_K:
 * (d sc) (q - 32), the level's offset taken in the integers. Each value rounds as mopt_kquant_block_f32's. */
void mopt_dequant_kquant_avx2(const uint8_t *blocks, int32_t bits, int64_t nsb, float *dst) {
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), four = _mm256_set1_epi8(4);
    for (int64_t k = 0; k < nsb; k++, dst += 256) {
        if (bits == 2 || bits == 3) {
            const int three = bits == 3;
            const uint8_t *b = blocks + (three ? 110 : 84) * k, *q = b + (three ? 32 : 16);
            float ds[16], dm[16];
            if (three) {
                const float d = kq_f16(b + 108);
                for (int j = 0; j < 16; j++) ds[j] = d * (float)(mopt_q3k_scale(b + 96, j) - 32), dm[j] = 0.0f;
            } else {
                const float d = kq_f16(b + 80), dmin = kq_f16(b + 82);
                for (int j = 0; j < 16; j++) ds[j] = d * (float)(b[j] & 0xF), dm[j] = dmin * (float)(b[j] >> 4);
            }
            const __m256i hm = three ? _mm256_loadu_si256((const __m256i *)b) : _mm256_setzero_si256();
            for (int n = 0; n < 2; n++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * n));
                for (int kq = 0; kq < 4; kq++) {
                    __m256i lv = _mm256_and_si256(_mm256_srli_epi16(v, 2 * kq), m3);
                    if (three) /* the high bit set: the level as it is; clear: 4 below */
                        lv = _mm256_sub_epi8(_mm256_or_si256(lv, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + kq), one), 2)), four);
                    const int j = 8 * n + 2 * kq;
                    kq_widen16(_mm256_castsi256_si128(lv), three, ds[j], dm[j], dst + 16 * j);
                    kq_widen16(_mm256_extracti128_si256(lv, 1), three, ds[j + 1], dm[j + 1], dst + 16 * j + 16);
                }
            }
            continue;
        }
        if (bits == 4 || bits == 5) {
            const int five = bits == 5;
            const uint8_t *b = blocks + (five ? 176 : 144) * k, *q = b + (five ? 48 : 16);
            const float d = kq_f16(b), dmin = kq_f16(b + 2);
            uint8_t sc[8], mn[8];
            mopt_kquant_scales_mins(b + 4, sc, mn);
            const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
            for (int i = 0; i < 4; i++) {
                const __m256i v = _mm256_loadu_si256((const __m256i *)(q + 32 * i));
                __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
                if (five) {
                    lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * i), one), 4));
                    hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * i + 1), one), 4));
                }
                kq_widen32(lo, d * sc[2 * i], dmin * mn[2 * i], dst + 64 * i);
                kq_widen32(hi, d * sc[2 * i + 1], dmin * mn[2 * i + 1], dst + 64 * i + 32);
            }
            continue;
        }
        const uint8_t *b = blocks + 210 * k;
        const float d = kq_f16(b + 208);
        const int8_t *sc = (const int8_t *)(b + 192);
        for (int n = 0; n < 2; n++) {
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(b + 64 * n)), l1 = _mm256_loadu_si256((const __m256i *)(b + 64 * n + 32));
            const __m256i h = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * n));
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(h, m3), 4)),
                _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m3), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m3), 4)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m3), 4))};
            for (int kq = 0; kq < 4; kq++) {
                const int j = 4 * n + kq;
                const __m128i lo = _mm256_castsi256_si128(q[kq]), hi = _mm256_extracti128_si256(q[kq], 1);
                const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
                for (int p = 0; p < 4; p++) {
                    const __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(parts[p]), _mm256_set1_epi32(32)));
                    _mm256_storeu_ps(dst + 32 * j + 8 * p, _mm256_mul_ps(_mm256_set1_ps(d * sc[2 * j + p / 2]), v));
                }
            }
        }
    }
}

static void unpack_q4k(const uint8_t *blocks, int64_t nsb, uint8_t *levels) {
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int64_t k = 0; k < nsb; k++)
        for (int i = 0; i < 4; i++) {
            const __m256i v = _mm256_loadu_si256((const __m256i *)(blocks + 144 * k + 16 + 32 * i));
            _mm256_storeu_si256((__m256i *)(levels + 256 * k + 64 * i), _mm256_and_si256(v, m4));
            _mm256_storeu_si256((__m256i *)(levels + 256 * k + 64 * i + 32), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
        }
}

/* Q4_K in vector code (the only k-quant this set's integer GEMM takes), the others as the scalar set unpacks them */
void mopt_unpack_kquant_avx2(const uint8_t *blocks, int32_t bits, int64_t nsb, uint8_t *levels) {
    if (bits == 4) unpack_q4k(blocks, nsb, levels);
    else mopt_unpack_kquant_ref(blocks, bits, nsb, levels);
}

/* Eight levels (indices 0..15 in 32-bit lanes) looked up in the 16-entry table lo:hi: both halves permuted by the
 * low three bits, bit 3 (shifted to the sign) picks the half. */
static inline __m256 lut16(__m256 lo, __m256 hi, __m256i idx) {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx),
                            _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

float mopt_dot_q4_lut_avx2(const uint8_t *b, const float *lut, const float *x, int64_t nb) {
    const __m256 lo = _mm256_loadu_ps(lut), hi = _mm256_loadu_ps(lut + 8);
    const __m128i m4 = _mm_set1_epi8(15);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int64_t k = 0; k < nb; k++, b += 16, x += 32) {
        const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)b);
        const __m128i l = _mm_and_si128(v, m4), h = _mm_and_si128(_mm_srli_epi16(v, 4), m4); /* values 0..15, 16..31 */
        a0 = _mm256_fmadd_ps(lut16(lo, hi, _mm256_cvtepu8_epi32(l)), _mm256_loadu_ps(x), a0);
        a1 = _mm256_fmadd_ps(lut16(lo, hi, _mm256_cvtepu8_epi32(_mm_srli_si128(l, 8))), _mm256_loadu_ps(x + 8), a1);
        a0 = _mm256_fmadd_ps(lut16(lo, hi, _mm256_cvtepu8_epi32(h)), _mm256_loadu_ps(x + 16), a0);
        a1 = _mm256_fmadd_ps(lut16(lo, hi, _mm256_cvtepu8_epi32(_mm_srli_si128(h, 8))), _mm256_loadu_ps(x + 24), a1);
    }
    const __m256 a = _mm256_add_ps(a0, a1);
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

/* x / s onto the E4M3 grid, times s. Normals (2^-6 and up) keep 3 mantissa bits, rounded to nearest even in the
 * float's own bits; below 2^-6 the grid is 2^-9 apart; from 464 up (the tie between 448 and the NaN code's 480)
 * saturate to 448. NaN stays NaN, and the sign (zero's too) is kept. */
void mopt_round_e4m3_avx2(const float *x, int64_t n, float s, float *out) {
    const __m256 vs = _mm256_set1_ps(s), sign = _mm256_set1_ps(-0.0f), tiny = _mm256_set1_ps(0.015625f), sat = _mm256_set1_ps(464.0f);
    const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7ffff), keep = _mm256_set1_epi32(~0xfffff);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_div_ps(_mm256_loadu_ps(x + i), vs), a = _mm256_andnot_ps(sign, v);
        const __m256i u = _mm256_castps_si256(a);
        const __m256 nrm = _mm256_castsi256_ps(
            _mm256_and_si256(_mm256_add_epi32(u, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(u, 20), one))), keep));
        const __m256 sub = _mm256_mul_ps(_mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(512.0f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                                         _mm256_set1_ps(1.0f / 512.0f));
        __m256 r = _mm256_blendv_ps(nrm, sub, _mm256_cmp_ps(a, tiny, _CMP_LT_OQ));
        r = _mm256_blendv_ps(r, _mm256_set1_ps(448.0f), _mm256_cmp_ps(a, sat, _CMP_GE_OQ));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_or_ps(r, _mm256_and_ps(v, sign)), vs));
    }
    for (; i < n; i++) out[i] = mopt_e4m3_to_f32(mopt_f32_to_e4m3(x[i] / s)) * s;
}

void mopt_unpack_q4_avx2(const uint8_t *blocks, int64_t nb, uint8_t *levels) {
    for (int64_t k = 0; k < nb; k++) {
        const __m128i v = _mm_loadu_si128((const __m128i *)(blocks + 16 * k));
        _mm256_storeu_si256((__m256i *)(levels + 32 * k), _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15)));
    }
}

/* AVX2: pmaddubsw pairs summed in int16 over a block (8 x 2 x 15 x 127 < 2^15), widened once with pmaddwd; the
 * signed form widens every step (|w| up to 128) */
#define TILE_LINKAGE static
#define TILE_FN(name) name
#define TILE_R 4
#define Q4_STEP(a, w4, xv) (a) = _mm256_add_epi16((a), _mm256_maddubs_epi16(_mm256_set1_epi32(w4), (xv)))
#define Q4_START(z) _mm256_setzero_si256()
#define Q4_BLOCK_SUM(a, z) _mm256_add_epi32(_mm256_madd_epi16((a), _mm256_set1_epi16(1)), (z))
#define S8_STEP(a, wa4, xs) _mm256_add_epi32((a), _mm256_madd_epi16(_mm256_maddubs_epi16((wa4), (xs)), _mm256_set1_epi16(1)))
#include "kernels_tiles.h"

void mopt_unpack_s8_avx2(const uint8_t *src, int64_t n, uint8_t flip, int8_t *w, uint8_t *wa) {
    const __m256i f = _mm256_set1_epi8((char)flip);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        const __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(src + i)), f);
        _mm256_storeu_si256((__m256i *)(w + i), v);
        _mm256_storeu_si256((__m256i *)(wa + i), _mm256_abs_epi8(v)); /* |-128| is 128 as an unsigned byte */
    }
    for (; i < n; i++) {
        w[i] = (int8_t)(src[i] ^ flip);
        wa[i] = (uint8_t)(w[i] < 0 ? -(int)w[i] : w[i]);
    }
}

/* One step of the int8 GEMMs for one row: 4 weights (|w| and w) against 4
 * bytes of each of 8 tokens; pmaddubsw takes |w| and x with w's sign, so a
 * pair stays below 2^15 (2 x 128 x 127) but two may not: widened at once. */
#define VBITS 256
#define V_HSUM hsum
#define V_ROUND(v) _mm256_round_ps((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_AS_FLOAT _mm256_castsi256_ps
#define V_HMAX hmax
#define V_HSUM4 hsum4
#define F32_TAIL NO_TAIL
#define LOAD_U8(p) _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p))))
#define V_STORE_I8(p, vi)                                                                                      \
    do {                                                                                                       \
        const __m128i w16_ = _mm_packs_epi32(_mm256_castsi256_si128(vi), _mm256_extracti128_si256((vi), 1));   \
        _mm_storel_epi64((__m128i *)(p), _mm_packs_epi16(w16_, w16_));                                         \
    } while (0)
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

/* 8 int4 levels (low nibbles already split out, as signed level - 8 bytes) as floats */
#define I4_8(b) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))

/* int4 2:4 rows read in place: a 16-byte block holds 32 kept values (64 inputs), the first 16 in the low nibbles;
 * each group of gs inputs sums unscaled, then takes its f16 scale */
float mopt_dot_sp24_i4_avx2(const uint8_t *vals, const uint16_t *scales, int64_t gs, const uint8_t *pos, const float *x, int64_t n) {
    pthread_once(&sp24_once, sp24_init);
    const __m128i m4 = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
    __m256 total = _mm256_setzero_ps();
    for (int64_t g0 = 0; g0 < n; g0 += gs) {
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (int64_t i = g0; i < g0 + gs && i < n; i += 64) {
            const __m128i b = _mm_loadu_si128((const __m128i *)(vals + i / 4));
            const __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m4), eight), hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m4), eight);
            _mm_prefetch((const char *)(vals + i / 4) + 256, _MM_HINT_T0);
            _mm_prefetch((const char *)(pos + i / 8) + 128, _MM_HINT_T0);
            a0 = _mm256_fmadd_ps(I4_8(lo), sp24_x16(x + i, pos + i / 8), a0);
            a1 = _mm256_fmadd_ps(I4_8(_mm_srli_si128(lo, 8)), sp24_x16(x + i + 16, pos + i / 8 + 2), a1);
            a0 = _mm256_fmadd_ps(I4_8(hi), sp24_x16(x + i + 32, pos + i / 8 + 4), a0);
            a1 = _mm256_fmadd_ps(I4_8(_mm_srli_si128(hi, 8)), sp24_x16(x + i + 48, pos + i / 8 + 6), a1);
        }
        total = _mm256_fmadd_ps(_mm256_add_ps(a0, a1), _mm256_set1_ps(mopt_f16_to_f32(scales[g0 / gs])), total);
    }
    return hsum(total);
}

/* 16 E2M1 codes from 8 bytes (value 2k in the low nibble), in value order, as int8 twice their value: the
 * magnitudes 0, 0.5, ..., 6 in halves are the integers 0..12 */
static inline __m128i load_e2m1_x2(const uint8_t *p) {
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12);
    const __m128i b = _mm_loadl_epi64((const __m128i *)p), m = _mm_set1_epi8(0x0f);
    return _mm_shuffle_epi8(lut, _mm_unpacklo_epi8(_mm_and_si128(b, m), _mm_and_si128(_mm_srli_epi16(b, 4), m)));
}

float mopt_dot_fp4_avx2(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < n; b0 += gs) {
        __m256 blk = _mm256_setzero_ps();
        for (int64_t i = b0; i < b0 + gs; i += 16) {
            const __m128i v = load_e2m1_x2(q + i / 2);
            blk = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), _mm256_loadu_ps(x + i), blk);
            blk = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))), _mm256_loadu_ps(x + i + 8), blk);
        }
        acc = _mm256_fmadd_ps(blk, _mm256_set1_ps(0.5f * *bs++), acc); /* blocks in order */
    }
    return hsum(acc);
}

void mopt_dequant_fp4_avx2(const uint8_t *q, const float *bs, int64_t gs, int64_t n, float *dst) {
    const int sh = gs == 16 ? 4 : 5; /* the block of value i: i >> sh, not a division per step */
    for (int64_t i = 0; i < n; i += 16) {
        const __m128i v = load_e2m1_x2(q + i / 2);
        const __m256 s = _mm256_set1_ps(0.5f * bs[i >> sh]);
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)), s));
        _mm256_storeu_ps(dst + i + 8, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))), s));
    }
}

/* load_e4m3 gives each value times 2^-8; the 2^8 goes into the block's scale */
float mopt_dot_e4m3_blocks_avx2(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b0 = 0; b0 < n; b0 += gs) {
        __m256 blk = _mm256_setzero_ps();
        for (int64_t i = b0; i < b0 + gs; i += 8) blk = _mm256_fmadd_ps(load_e4m3(q + i), _mm256_loadu_ps(x + i), blk);
        acc = _mm256_fmadd_ps(blk, _mm256_set1_ps(256.0f * *bs++), acc);
    }
    return hsum(acc);
}

const mopt_kernels mopt_kernels_avx2 = {
    .name = "avx2",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dots_f32 = dots_f32,
    .dots_f16 = dots_f16,
    .dots_bf16 = dots_bf16,
    .dots_rows_f32 = dots_rows_f32,
    .dots_rows_f16 = dots_rows_f16,
    .dots_rows_bf16 = dots_rows_bf16,
    .cvt_f16 = cvt_f16,
    .cvt_bf16 = cvt_bf16,
    .dequant_u8 = dequant_u8,
    .dequant_e4m3 = dequant_e4m3,
    .dot_e4m3 = dot_e4m3,
    .round_e4m3 = mopt_round_e4m3_avx2,
    .quantize_i8_blocks = quantize_i8_blocks,
    .dot_q4 = dot_q4,
    .dot_q4_lut = mopt_dot_q4_lut_avx2,
    .dot_q8 = dot_q8,
    .gemv_q4_q8 = mopt_gemv_q4_q8_avx2,
    .gemv_q8_q8 = mopt_gemv_q8_q8_avx2,
    .gemv_q4k_q8 = mopt_gemv_q4k_q8_avx2,
    .gemv_q6k_q8 = mopt_gemv_q6k_q8_avx2,
    .gemv_q2k_q8 = mopt_gemv_q2k_q8_avx2,
    .gemv_q3k_q8 = mopt_gemv_q3k_q8_avx2,
    .gemv_q5k_q8 = mopt_gemv_q5k_q8_avx2,
    .dequant_kquant = mopt_dequant_kquant_avx2,
    .unpack_kquant = mopt_unpack_kquant_avx2,
    .gemm_q4_q8 = gemm_q4_q8,
    .unpack_q4 = mopt_unpack_q4_avx2,
    .gemm_s8_q8 = gemm_s8_q8,
    .gemm_s8_rows = gemm_s8_rows,
    .unpack_s8 = mopt_unpack_s8_avx2,
    .dot_i8 = dot_i8,
    .dot_sp24 = mopt_dot_sp24_avx2,
    .dot_sp24_bf16 = mopt_dot_sp24_bf16_avx2,
    .dot_sp24_i8 = mopt_dot_sp24_i8_avx2,
    .dot_sp24_i4 = mopt_dot_sp24_i4_avx2,
    .dot_fp4 = mopt_dot_fp4_avx2,
    .dequant_fp4 = mopt_dequant_fp4_avx2,
    .dot_e4m3_blocks = mopt_dot_e4m3_blocks_avx2,
    .silu_mul = silu_mul,
    .att_scores = att_scores,
    .att_values = att_values,
    .att_scores_f16 = att_scores_f16,
    .att_values_f16 = att_values_f16,
    .softmax = softmax,
    .sum_u64 = sum_u64,
};
