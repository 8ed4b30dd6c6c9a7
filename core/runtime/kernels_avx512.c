/* AVX-512F kernels (compiled with those flags only in this file). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "tensor_impl.h"
#include "mopt/quant.h"
#include "mopt/tensor.h"

static inline __m512 load_bf16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

static inline __m512 load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }

/* 16 E4M3 bytes as f16 (value x 2^-8; NaN for 0x7f / 0xff), widened */
static inline __m512 load_e4m3(const uint8_t *p) {
    const __m256i b = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)p)), mag = _mm256_and_si256(b, _mm256_set1_epi16(0x7f));
    const __m256i h = _mm256_or_si256(_mm256_slli_epi16(mag, 7), _mm256_slli_epi16(_mm256_and_si256(b, _mm256_set1_epi16(0x80)), 8));
    return _mm512_cvtph_ps(_mm256_blendv_epi8(h, _mm256_set1_epi16(0x7e00), _mm256_cmpeq_epi16(mag, _mm256_set1_epi16(0x7f))));
}

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

/* Two 4-bit blocks (32 bytes) against their 64 int8 x in one vpdpbusd. The
 * 32 bytes are broadcast to both halves and masked, low nibbles below, high
 * nibbles (left in place, 16 times their level) above, so the 16-byte lanes
 * hold [block 0 values 0-15, block 1 values 0-15, block 0 values 16-31 x 16,
 * block 1 values 16-31 x 16], and x comes in that order (q4_lanes): one mask
 * per pair where shifts and shuffles took four (these zmm ops issue at about
 * one per cycle here, so their count is the kernel's speed). int32 lanes 0-3
 * and 8-11 hold block 0's partial sums, 4-7 and 12-15 block 1's; the upper
 * eight are 16 times too large, which the scales take back exactly (pair_scale:
 * a power of two, and |16 x sum| < 2^24 converts exactly). Unsigned bytes (at
 * most 240) times signed x, four to an int32 lane: nothing saturates. */
static inline __m512 q4_pair_x(const uint8_t *w, __m512i xl) {
    const __m512i mask = _mm512_inserti64x4(_mm512_set1_epi8(15), _mm256_set1_epi8((char)0xF0), 1);
    const __m512i q = _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)w)), mask);
    return _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, xl));
}

/* x (64 int8, block order) in q4_pair_x's lane order: the middle two 16-byte lanes swapped */
static inline __m512i q4_lanes(const int8_t *xq) {
    const __m512i x = _mm512_loadu_si512(xq);
    return _mm512_shuffle_i64x2(x, x, _MM_SHUFFLE(3, 1, 2, 0));
}

/* One 4-bit block (a row's odd last one): 8 int32 lanes of partial sums. */
static inline __m256 q4_one(const uint8_t *w, const int8_t *xq) {
    const __m128i v = _mm_loadu_si128((const __m128i *)w);
    const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), q, _mm256_loadu_si256((const __m256i *)xq)));
}

/* [sum a, sum b, sum c, sum d]: pairs interleaved and added within each 128-bit lane, then the four lanes */
static inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm512_extractf32x8_ps(abcd, 1));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* The sum of v's lanes as a halving tree: lane i + lane i+8, then + i+4, + i+2, + i+1 (GCC's own
 * _mm512_reduce_add_ps order, written out so that hsum8 below can repeat it exactly) */
static inline float hsum16(__m512 v) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 p = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(p, _mm_movehdup_ps(p)));
}

/* hsum16 of eight vectors at once, s[k] = hsum16(vk) bit for bit (float addition commutes, and every lane meets
 * the same partner at each level) with a fifth of the shuffles and adds of eight hsum16s: the epilogue of a short
 * row block (256 inputs: 8 steps) spent as long on its sums as on its FMAs. */
static inline void hsum8(__m512 v0, __m512 v1, __m512 v2, __m512 v3, __m512 v4, __m512 v5, __m512 v6, __m512 v7,
                         float s[8]) {
    /* i + 8: [v0 folded to 8 lanes, v1 folded], ... */
    const __m512 t01 = _mm512_add_ps(_mm512_shuffle_f32x4(v0, v1, 0x44), _mm512_shuffle_f32x4(v0, v1, 0xEE));
    const __m512 t23 = _mm512_add_ps(_mm512_shuffle_f32x4(v2, v3, 0x44), _mm512_shuffle_f32x4(v2, v3, 0xEE));
    const __m512 t45 = _mm512_add_ps(_mm512_shuffle_f32x4(v4, v5, 0x44), _mm512_shuffle_f32x4(v4, v5, 0xEE));
    const __m512 t67 = _mm512_add_ps(_mm512_shuffle_f32x4(v6, v7, 0x44), _mm512_shuffle_f32x4(v6, v7, 0xEE));
    /* i + 4: the four 128-bit blocks hold v0 .. v3 (w0) and v4 .. v7 (w1) folded to 4 lanes */
    const __m512 w0 = _mm512_add_ps(_mm512_shuffle_f32x4(t01, t23, 0x88), _mm512_shuffle_f32x4(t01, t23, 0xDD));
    const __m512 w1 = _mm512_add_ps(_mm512_shuffle_f32x4(t45, t67, 0x88), _mm512_shuffle_f32x4(t45, t67, 0xDD));
    /* i + 2 (block b: lanes 0-1 from w0, 2-3 from w1), then i + 1 */
    const __m512 z = _mm512_add_ps(_mm512_shuffle_ps(w0, w1, 0x44), _mm512_shuffle_ps(w0, w1, 0xEE));
    const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(z, z, 0x88), _mm512_shuffle_ps(z, z, 0xDD));
    float f[16];
    _mm512_storeu_ps(f, r); /* block b: lane 0 = v[b], lane 1 = v[b + 4] */
    for (int b = 0; b < 4; b++) s[b] = f[4 * b], s[b + 4] = f[4 * b + 1];
}

static inline float hsum256(__m256 v) {
    const __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    return _mm_cvtss_f32(_mm_hadd_ps(_mm_hadd_ps(h, h), h));
}

/* The scales of a block pair's lanes: 4-bit (q4_pair_x) [a x 4, b x 4, a / 16 x 4, b / 16 x 4], 8-bit (qx_pair)
 * [a x 8, b x 8] */
static inline __attribute__((always_inline)) __m512 pair_scale(float a, float b, const int bits) {
    if (bits == 8) return _mm512_insertf32x8(_mm512_set1_ps(a), _mm256_set1_ps(b), 1);
    return _mm512_permutexvar_ps(_mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
                                 _mm512_castps128_ps512(_mm_set_ps(b / 16, a / 16, b, a)));
}

/* -128 times the sum of every 4 x bytes of a pair, in int32 lanes: the start of an 8-bit pair's dot, so that
 * vpdpbusd on the levels as stored (unsigned) sums (level - 128) x exactly, as centred as the levels allow; summing
 * level x and taking 128 x sum(x) off in float cancelled digits when a row's result is small against them. */
static inline __m512i q8_centre(__m512i x) {
    return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), x));
}

/* A pair of blocks against their 64 int8 x: 4-bit as q4_pair_x (x in lane order), 8-bit levels as stored against x in
 * block order from c = q8_centre(x), lanes 0-7 the first block's partial sums. At most 4 x 255 x 127 per int32 lane. */
static inline __attribute__((always_inline)) __m512 qx_pair(const uint8_t *w, __m512i x, __m512i c, const int bits) {
    if (bits == 4) return q4_pair_x(w, x);
    return _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, _mm512_loadu_si512(w), x));
}

/* One block (a row's odd last one), x in block order: 8 int32 lanes of partial sums (8-bit: of level - 128) */
static inline __attribute__((always_inline)) __m256 qx_one(const uint8_t *w, const int8_t *xq, const int bits) {
    if (bits == 4) return q4_one(w, xq);
    const __m256i x = _mm256_loadu_si256((const __m256i *)xq);
    const __m256i c = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8((char)0x80), x));
    return _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(c, _mm256_loadu_si256((const __m256i *)w), x));
}

#define PAIRS_MAX 512 /* x in lane order and its pairs' scales made up front for rows of up to 1024 blocks (32768
                       * inputs, a 70B model's FFN; 64 KB of the caller's stack, which may be an embedder's thread),
                       * each pair's x shuffled where it is used in longer ones */
#define QX_AHEAD 4096 /* bytes prefetched ahead in a row run: a few rows, more than DRAM's latency at ~15 GB/s a core
                       * (mopt-bench-kernels: 63-65% of the read bandwidth at 1 KB ahead, 65-70% at 4 KB) */

/* s[g] * (z[g] - zoff) for the (up to) 16 groups from g in mask m */
static inline __m512 qx_group_sz(const uint16_t *sr, const uint8_t *zr, float zsym, float zoff, int64_t g, __mmask16 m) {
    const __m512 sv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, sr + g));
    const __m512 zv = _mm512_sub_ps(zr ? _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, zr + g))) : _mm512_set1_ps(zsym),
                                    _mm512_set1_ps(zoff));
    return _mm512_mul_ps(sv, zv);
}

/* sum over the row's groups of s[g] * (z[g] - zoff) * xsum[g] (the zero-points' share), 16 groups at a time */
static inline float qx_zero_share(const uint16_t *sr, const uint8_t *zr, float zsym, float zoff, const float *xsum, int64_t ng) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g += 16) {
        const __mmask16 m = ng - g >= 16 ? (__mmask16)0xFFFF : tail_mask(ng - g);
        acc = _mm512_fmadd_ps(qx_group_sz(sr, zr, zsym, zoff, g, m), _mm512_maskz_loadu_ps(m, xsum + g), acc);
    }
    return hsum16(acc); /* (not _mm512_reduce_add_ps, whose order is the compiler's: gemvs_paired repeats these bits) */
}

/* The blocks' share of one row, ng groups of ppg block pairs, against x (for 4 bits in lane order; for 8 bits with
 * each pair's q8_centre in cz), the pairs' x scales in xs2 */
static inline __attribute__((always_inline)) float qx_row_paired(const uint8_t *row, const uint16_t *sr, const int8_t *x,
                                                                 const int8_t *cz, const __m512 *xs2, int64_t ng, int64_t ppg,
                                                                 const int bits) {
    __m512 acc = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g++) {
        __m512 gacc = _mm512_setzero_ps();
        if (bits == 4) _mm_prefetch((const char *)row + QX_AHEAD, _MM_HINT_T0); /* a group of 128: one line */
        for (int64_t k = 0; k < ppg; k++, row += 8 * bits, x += 64, cz += 64, xs2++) {
            if (bits == 8) _mm_prefetch((const char *)row + QX_AHEAD, _MM_HINT_T0); /* a pair: one line */
            const __m512i c = bits == 8 ? _mm512_loadu_si512(cz) : _mm512_setzero_si512();
            gacc = _mm512_fmadd_ps(qx_pair(row, _mm512_loadu_si512(x), c, bits), *xs2, gacc);
        }
        acc = _mm512_fmadd_ps(gacc, _mm512_set1_ps(_cvtsh_ss(sr[g])), acc);
    }
    return hsum16(acc);
}

/* The same for groups of an odd number of blocks (bpg; GGUF's Q4_0 and Q8_0 have one) or rows past PAIRS_MAX, each
 * block's scale times its x scale per pair: with one block per group, 8 at a time, the lanes picked per pair from a
 * vector of 8. 4-bit x in lane order (laned: the call's buffer) or in block order (shuffled here; inlined twice, so
 * the choice leaves the loop), 8-bit x in block order with the pairs' q8_centre from cz (laned) or made here; the odd
 * last block of a row from xq. */
static inline __attribute__((always_inline)) float qx_row_blocks(const uint8_t *row, const uint16_t *sr, const int8_t *x,
                                                                 const int8_t *cz, const int8_t *xq, const float *xd, int64_t nb,
                                                                 int64_t bpg, int laned, const int bits) {
    const int bb = 4 * bits; /* bytes per block */
    __m512 acc = _mm512_setzero_ps();
    int64_t b = 0;
    if (bpg == 1)
        for (; b + 8 <= nb; b += 8) {
            const __m256 m8 = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sr + b))), _mm256_loadu_ps(xd + b));
            /* 4 bits: and / 16 above, q4_pair_x's high lanes */
            const __m512 m = bits == 8 ? _mm512_castps256_ps512(m8)
                                       : _mm512_insertf32x8(_mm512_castps256_ps512(m8), _mm256_mul_ps(m8, _mm256_set1_ps(1.0f / 16)), 1);
            for (int l = 0; l < 8 * bb; l += 64) _mm_prefetch((const char *)(row + bb * b) + QX_AHEAD + l, _MM_HINT_T0);
            for (int k = 0; k < 8; k += 2) {
                const __m512i idx = bits == 8 ? _mm512_inserti64x4(_mm512_set1_epi32(k), _mm256_set1_epi32(k + 1), 1)
                                              : _mm512_set_epi32(k + 9, k + 9, k + 9, k + 9, k + 8, k + 8, k + 8, k + 8, k + 1,
                                                                 k + 1, k + 1, k + 1, k, k, k, k);
                const int8_t *xp = x + 32 * (b + k);
                const __m512i xv = laned || bits == 8 ? _mm512_loadu_si512(xp) : q4_lanes(xp);
                const __m512i c = bits == 4 ? _mm512_setzero_si512() : laned ? _mm512_loadu_si512(cz + 32 * (b + k)) : q8_centre(xv);
                acc = _mm512_fmadd_ps(qx_pair(row + bb * (b + k), xv, c, bits), _mm512_permutexvar_ps(idx, m), acc);
            }
        }
    for (; b + 2 <= nb; b += 2) {
        const int8_t *xp = x + 32 * b;
        const __m512 sc = pair_scale(_cvtsh_ss(sr[b / bpg]) * xd[b], _cvtsh_ss(sr[(b + 1) / bpg]) * xd[b + 1], bits);
        const __m512i xv = laned || bits == 8 ? _mm512_loadu_si512(xp) : q4_lanes(xp);
        const __m512i c = bits == 4 ? _mm512_setzero_si512() : laned ? _mm512_loadu_si512(cz + 32 * b) : q8_centre(xv);
        acc = _mm512_fmadd_ps(qx_pair(row + bb * b, xv, c, bits), sc, acc);
    }
    const float tail = b < nb ? hsum256(qx_one(row + bb * b, xq + 32 * b, bits)) * _cvtsh_ss(sr[b / bpg]) * xd[b] : 0;
    return hsum16(acc) + tail; /* (hsum16, not _mm512_reduce_add_ps: gemvs_blocks repeats these bits) */
}

/* 4- or 8-bit rows against int8 x, 64 values per step (vpdpbusd). For 4 bits x is put in q4_pair_x's lane order
 * once per call. Groups of an even number of blocks sum their pairs with the x scales paired once for all rows;
 * groups of one block (GGUF's Q4_0 and Q8_0) fold the row's scale into each block's, 8 groups at a time; other rows
 * go pair by pair. The zero-points' share is taken off each row at the end, 16 groups at a time (for 8 bits, of
 * z - 128: the pairs' dots are of level - 128). */
static inline __attribute__((always_inline)) void gemv_qx_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s,
                                                              const uint8_t *z, float zsym, const int8_t *xq, const float *xd,
                                                              const float *xsum, int64_t ng, int64_t bpg, float *y, const int bits) {
    const int64_t nb = ng * bpg;
    const int laned = nb / 2 <= PAIRS_MAX, paired = laned && bpg % 2 == 0;
    __m512 xs2[PAIRS_MAX];
    int8_t lanes[64 * PAIRS_MAX]; /* 4 bits: x in lane order; 8 bits: each pair's q8_centre */
    const int8_t *x = bits == 4 ? lanes : xq;
    const float zoff = bits == 8 ? 128.0f : 0.0f; /* 8-bit levels are summed as level - 128 (q8_centre) */
    for (int64_t p = 0; paired && p < nb / 2; p++) xs2[p] = pair_scale(xd[2 * p], xd[2 * p + 1], bits);
    for (int64_t p = 0; laned && p < nb / 2; p++)
        _mm512_storeu_si512(lanes + 64 * p, bits == 4 ? q4_lanes(xq + 64 * p) : q8_centre(_mm512_loadu_si512(xq + 64 * p)));
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        const uint16_t *sr = s + r * ng;
        const uint8_t *zr = z ? z + r * ng : NULL;
        const float zero_share = qx_zero_share(sr, zr, zsym, zoff, xsum, ng);
        if (paired && bpg == 4) /* groups of 128, the common case: the pair loop unrolled (+20% from L2) */
            y[r] = qx_row_paired(row, sr, x, lanes, xs2, ng, 2, bits) - zero_share;
        else if (paired)
            y[r] = qx_row_paired(row, sr, x, lanes, xs2, ng, bpg / 2, bits) - zero_share;
        else if (laned)
            y[r] = qx_row_blocks(row, sr, x, lanes, xq, xd, nb, bpg, 1, bits) - zero_share;
        else
            y[r] = qx_row_blocks(row, sr, xq, lanes, xq, xd, nb, bpg, 0, bits) - zero_share;
    }
}

#define MT_PAIRS_MAX 64 /* the batched form's rows: up to 4096 inputs, x in lane order and the pair scales of 8 tokens
                        * in 64 KB of stack, as gemv_qx_q8's own */

/* NT tokens' x (each in values apart) in the batched kernels' form, np pairs each: 4 bits in q4_pair_x's lane order, 8
 * bits each pair's q8_centre */
static inline __attribute__((always_inline)) void gemvs_lanes(const int8_t *xq, int64_t in, int64_t np, int8_t lanes[][64 * MT_PAIRS_MAX],
                                                               const int bits, const int NT) {
    for (int t = 0; t < NT; t++)
        for (int64_t p = 0; p < np; p++) {
            const int8_t *xp = xq + t * in + 64 * p;
            _mm512_storeu_si512(lanes[t] + 64 * p, bits == 4 ? q4_lanes(xp) : q8_centre(_mm512_loadu_si512(xp)));
        }
}

/* The batched kernels' end of row r: qx_zero_share's sums for NT tokens with the scales times zero-points formed once,
 * every sum as hsum16 gives it (hsum8), then y = dot (+ the odd last block's tail) - the zero-points' share, as the
 * one-token kernel has it. acc: all eight (hsum8 reads them). */
static inline __attribute__((always_inline)) void gemvs_row_end(const __m512 *acc, const float *tails, const uint16_t *sr,
                                                                 const uint8_t *zr, float zsym, float zoff, const float *xsum,
                                                                 int64_t ng, float *y, int64_t ys, int64_t r, const int NT) {
    __m512 zacc[8];
    for (int t = 0; t < 8; t++) zacc[t] = _mm512_setzero_ps();
    for (int64_t g = 0; g < ng; g += 16) {
        const __mmask16 m = ng - g >= 16 ? (__mmask16)0xFFFF : tail_mask(ng - g);
        const __m512 sz = qx_group_sz(sr, zr, zsym, zoff, g, m);
        for (int t = 0; t < NT; t++) zacc[t] = _mm512_fmadd_ps(sz, _mm512_maskz_loadu_ps(m, xsum + t * ng + g), zacc[t]);
    }
    float dots[8], zeros[8];
    hsum8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7], dots);
    hsum8(zacc[0], zacc[1], zacc[2], zacc[3], zacc[4], zacc[5], zacc[6], zacc[7], zeros);
    for (int t = 0; t < NT; t++) y[t * ys + r] = (tails ? dots[t] + tails[t] : dots[t]) - zeros[t];
}

/* gemv_qx_q8's paired rows for NT tokens at once: each block pair's weights loaded (and for 4 bits masked) once, then
 * every token's pair dot, pair scale and group scale exactly as the one-token kernel does them, so each token's
 * result is the same bits as alone. */
static inline __attribute__((always_inline)) void gemvs_paired(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s,
                                                                const uint8_t *z, float zsym, const int8_t *xq, const float *xd,
                                                                const float *xsum, int64_t ng, int64_t bpg, float *y, int64_t ys,
                                                                const int bits, const int NT) {
    const int64_t nb = ng * bpg, np = nb / 2, ppg = bpg / 2, in = 32 * nb;
    const float zoff = bits == 8 ? 128.0f : 0.0f;
    const __m512i mask = _mm512_inserti64x4(_mm512_set1_epi8(15), _mm256_set1_epi8((char)0xF0), 1);
    __m512 xs2[8][MT_PAIRS_MAX];
    int8_t lanes[8][64 * MT_PAIRS_MAX]; /* 4 bits: x in lane order; 8 bits: each pair's q8_centre */
    for (int t = 0; t < NT; t++)
        for (int64_t p = 0; p < np; p++) xs2[t][p] = pair_scale(xd[t * nb + 2 * p], xd[t * nb + 2 * p + 1], bits);
    gemvs_lanes(xq, in, np, lanes, bits, NT);
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        const uint16_t *sr = s + r * ng;
        const uint8_t *zr = z ? z + r * ng : NULL;
        __m512 acc[8]; /* all eight zero: hsum8 reads them */
        for (int t = 0; t < 8; t++) acc[t] = _mm512_setzero_ps();
        int64_t p = 0;
        for (int64_t g = 0; g < ng; g++) {
            __m512 gacc[8];
            for (int t = 0; t < NT; t++) gacc[t] = _mm512_setzero_ps();
            if (bits == 4) _mm_prefetch((const char *)row + QX_AHEAD, _MM_HINT_T0);
            for (int64_t k = 0; k < ppg; k++, row += 8 * bits, p++) {
                if (bits == 8) _mm_prefetch((const char *)row + QX_AHEAD, _MM_HINT_T0);
                const __m512i wv = bits == 4 ? _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)row)), mask)
                                             : _mm512_loadu_si512(row);
                for (int t = 0; t < NT; t++) {
                    const __m512i d = bits == 4 ? _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, _mm512_loadu_si512(lanes[t] + 64 * p))
                                                : _mm512_dpbusd_epi32(_mm512_loadu_si512(lanes[t] + 64 * p), wv,
                                                                      _mm512_loadu_si512(xq + t * in + 64 * p));
                    gacc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), xs2[t][p], gacc[t]);
                }
            }
            const __m512 sg = _mm512_set1_ps(_cvtsh_ss(sr[g]));
            for (int t = 0; t < NT; t++) acc[t] = _mm512_fmadd_ps(gacc[t], sg, acc[t]);
        }
        gemvs_row_end(acc, NULL, sr, zr, zsym, zoff, xsum, ng, y, ys, r, NT);
    }
}

/* qx_row_blocks for NT tokens at once (groups of one block: GGUF's Q4_0 and Q8_0): each pair of blocks loaded (and
 * for 4 bits masked) once, then every token's pair dot, scaled by its block scales times the row's as the one-token
 * kernel does, so each token's result is the same bits as alone. x in lane order (4 bits) or each pair's q8_centre
 * (8 bits) made once per call where the row fits MT_PAIRS_MAX (laned), else per pair as the one-token kernel does. */
static inline __attribute__((always_inline)) void gemvs_blocks(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s,
                                                                const uint8_t *z, float zsym, const int8_t *xq, const float *xd,
                                                                const float *xsum, int64_t nb, float *y, int64_t ys, int laned,
                                                                const int bits, const int NT) {
    const int bb = 4 * bits; /* bytes per block */
    const int64_t in = 32 * nb;
    const float zoff = bits == 8 ? 128.0f : 0.0f;
    const __m512i mask = _mm512_inserti64x4(_mm512_set1_epi8(15), _mm256_set1_epi8((char)0xF0), 1);
    int8_t lanes[8][64 * MT_PAIRS_MAX]; /* laned: 4 bits x in lane order; 8 bits each pair's q8_centre */
    if (laned) gemvs_lanes(xq, in, nb / 2, lanes, bits, NT);
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        const uint16_t *sr = s + r * nb;
        const uint8_t *zr = z ? z + r * nb : NULL;
        __m512 acc[8]; /* all eight zero: hsum8 reads them */
        for (int t = 0; t < 8; t++) acc[t] = _mm512_setzero_ps();
        int64_t b = 0;
        for (; b + 8 <= nb; b += 8) {
            const __m256 s8 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sr + b)));
            __m512 m[8];
            for (int t = 0; t < NT; t++) {
                const __m256 m8 = _mm256_mul_ps(s8, _mm256_loadu_ps(xd + t * nb + b));
                m[t] = bits == 8 ? _mm512_castps256_ps512(m8)
                                 : _mm512_insertf32x8(_mm512_castps256_ps512(m8), _mm256_mul_ps(m8, _mm256_set1_ps(1.0f / 16)), 1);
            }
            for (int l = 0; l < 8 * bb; l += 64) _mm_prefetch((const char *)(row + bb * b) + QX_AHEAD + l, _MM_HINT_T0);
            for (int k = 0; k < 8; k += 2) {
                const __m512i idx = bits == 8 ? _mm512_inserti64x4(_mm512_set1_epi32(k), _mm256_set1_epi32(k + 1), 1)
                                              : _mm512_set_epi32(k + 9, k + 9, k + 9, k + 9, k + 8, k + 8, k + 8, k + 8, k + 1,
                                                                 k + 1, k + 1, k + 1, k, k, k, k);
                const uint8_t *wp = row + bb * (b + k);
                const __m512i wv = bits == 4 ? _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)wp)), mask)
                                             : _mm512_loadu_si512(wp);
                for (int t = 0; t < NT; t++) {
                    const int8_t *xp = xq + t * in + 32 * (b + k), *lp = lanes[t] + 32 * (b + k);
                    const __m512i xv = bits == 4 && laned ? _mm512_loadu_si512(lp) : bits == 4 ? q4_lanes(xp) : _mm512_loadu_si512(xp);
                    const __m512i c = bits == 4 ? _mm512_setzero_si512() : laned ? _mm512_loadu_si512(lp) : q8_centre(xv);
                    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, wv, xv)), _mm512_permutexvar_ps(idx, m[t]), acc[t]);
                }
            }
        }
        for (; b + 2 <= nb; b += 2) {
            const __m512i wv = bits == 4 ? _mm512_and_si512(_mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(row + bb * b))), mask)
                                         : _mm512_loadu_si512(row + bb * b);
            for (int t = 0; t < NT; t++) {
                const int8_t *xp = xq + t * in + 32 * b, *lp = lanes[t] + 32 * b;
                const __m512 sc = pair_scale(_cvtsh_ss(sr[b]) * xd[t * nb + b], _cvtsh_ss(sr[b + 1]) * xd[t * nb + b + 1], bits);
                const __m512i xv = bits == 4 && laned ? _mm512_loadu_si512(lp) : bits == 4 ? q4_lanes(xp) : _mm512_loadu_si512(xp);
                const __m512i c = bits == 4 ? _mm512_setzero_si512() : laned ? _mm512_loadu_si512(lp) : q8_centre(xv);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(c, wv, xv)), sc, acc[t]);
            }
        }
        float tails[8];
        for (int t = 0; t < NT; t++)
            tails[t] = b < nb ? hsum256(qx_one(row + bb * b, xq + t * in + 32 * b, bits)) * _cvtsh_ss(sr[b]) * xd[t * nb + b] : 0;
        gemvs_row_end(acc, tails, sr, zr, zsym, zoff, xsum, nb, y, ys, r, NT);
    }
}

static __attribute__((noinline)) void gemvs_qx_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s,
                                                  const uint8_t *z, float zsym, const int8_t *xq, const float *xd,
                                                  const float *xsum, int64_t ng, int64_t bpg, int32_t nt, float *y, int64_t ys,
                                                  const int bits) {
    const int64_t nb = ng * bpg;
    if (bpg == 1) { /* Q4_0, Q8_0 */
        const int laned = nb / 2 <= MT_PAIRS_MAX;
#define GEMVS_CASE(N) \
    case N: \
        if (laned) gemvs_blocks(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, nb, y, ys, 1, bits, N); \
        else gemvs_blocks(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, nb, y, ys, 0, bits, N); \
        break;
        switch (nt) {
            GEMVS_CASE(1) GEMVS_CASE(2) GEMVS_CASE(3) GEMVS_CASE(4) GEMVS_CASE(5) GEMVS_CASE(6) GEMVS_CASE(7) GEMVS_CASE(8)
        }
#undef GEMVS_CASE
        return;
    }
    if (bpg % 2 || nb / 2 > MT_PAIRS_MAX) { /* odd groups of 3 or more blocks, long rows of pairs: per token */
        for (int32_t t = 0; t < nt; t++)
            gemv_qx_q8(w, row_bytes, nrows, s, z, zsym, xq + t * 32 * nb, xd + t * nb, xsum + t * ng, ng, bpg, y + t * ys, bits);
        return;
    }
#define GEMVS_CASE(N) \
    case N: gemvs_paired(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, y, ys, bits, N); break;
    switch (nt) {
        GEMVS_CASE(1) GEMVS_CASE(2) GEMVS_CASE(3) GEMVS_CASE(4) GEMVS_CASE(5) GEMVS_CASE(6) GEMVS_CASE(7) GEMVS_CASE(8)
    }
#undef GEMVS_CASE
}

static void gemvs_q4_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                        const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, int32_t nt, float *y, int64_t ys) {
    gemvs_qx_q8(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, nt, y, ys, 4);
}

static void gemvs_q8_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                        const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, int32_t nt, float *y, int64_t ys) {
    gemvs_qx_q8(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, nt, y, ys, 8);
}

static void gemv_q4_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                       const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y) {
    gemv_qx_q8(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, y, 4);
}

static void gemv_q8_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                       const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y) {
    gemv_qx_q8(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, y, 8);
}

/* mopt_kquant_scales_mins in one vector, the 8 scales then the 8 mins, from the 12 bytes at q (read as 16: the block
 * goes on past them). As 32-bit words u0, u1, u2: scales 0-3 and mins 0-3 are u0 and u1's low 6 bits a byte, scales
 * and mins 4-7 u2's nibbles under u0 and u1's top 2 bits. */
static inline __m128i kquant_scales_mins(const uint8_t *q) {
    const __m128i v = _mm_loadu_si128((const __m128i *)q);
    const __m128i p = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_setr_epi32(0, 0, 0, 4)); /* u0 u2 u1 u2>>4 */
    const __m128i top = _mm_srli_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)), 2);                       /* -, u0, -, u1 */
    const __m128i low = _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f);
    const __m128i high = _mm_setr_epi32(0, 0x30303030, 0, 0x30303030);
    return _mm_or_si128(_mm_and_si128(p, low), _mm_and_si128(top, high));
}

/* Where the AVX-512 k-quant kernels want each 32 values of a super-block's x (kquant_x_order): one vector of
 * Q4_K / Q5_K levels holds sub-blocks 4h and 4h + 2 (a 64-byte load's low nibbles) or 4h + 1 and 4h + 3 (its high
 * ones); one of Q2_K / Q3_K levels the 32 values at 32kq and those at 128 + 32kq (a shift of its 64 bytes). */
static const uint8_t kq_order45[8] = {0, 2, 1, 3, 4, 6, 5, 7}, kq_order23[8] = {0, 4, 1, 5, 2, 6, 3, 7};

static void kquant_x_order(int32_t bits, const int8_t *xq, int64_t n, int8_t *out) {
    const uint8_t *order = bits == 4 || bits == 5 ? kq_order45 : bits == 2 || bits == 3 ? kq_order23 : NULL;
    for (int64_t k = 0; k < n / 256; k++)
        for (int j = 0; j < 8; j++) memcpy(out + 256 * k + 32 * j, xq + 256 * k + 32 * (order ? order[j] : j), 32);
}

/* One token's super-block in int32 lanes: 256 levels (lv, 64 a vector, in x's order) against x, each pair sum of
 * vpmaddubsw (it fits int16: levels <= 63, |x| <= 128) times its sub-block's scale (sv) in vpdpwssd; two chains */
static inline __attribute__((always_inline)) __m512i kq_dot(const __m512i lv[4], const __m512i sv[4], const int8_t *x) {
    __m512i i0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_maddubs_epi16(lv[0], _mm512_loadu_si512(x)), sv[0]);
    __m512i i1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_maddubs_epi16(lv[1], _mm512_loadu_si512(x + 64)), sv[1]);
    i0 = _mm512_dpwssd_epi32(i0, _mm512_maddubs_epi16(lv[2], _mm512_loadu_si512(x + 128)), sv[2]);
    i1 = _mm512_dpwssd_epi32(i1, _mm512_maddubs_epi16(lv[3], _mm512_loadu_si512(x + 192)), sv[3]);
    return _mm512_add_epi32(i0, i1);
}

/* A Q4_K / Q5_K super-block's levels, 64 a vector in kquant_x_order's order: [2h] the low nibbles of a 64-byte load
 * (sub-blocks 4h and 4h + 2), [2h + 1] its high ones (4h + 1 and 4h + 3); Q5_K's fifth bits (bit j of each qh byte for
 * sub-block j) brought to bit 4 by a rotate of each 32-bit lane that never takes a bit from another byte */
static inline __attribute__((always_inline)) void q45k_levels(const uint8_t *b, const int five, __m512i lv[4]) {
    const __m512i m4 = _mm512_set1_epi8(15), bit4 = _mm512_set1_epi8(0x10);
    const __m512i qh = five ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 16))) : _mm512_setzero_si512();
    for (int h = 0; h < 2; h++) {
        const __m512i v = _mm512_loadu_si512(b + (five ? 48 : 16) + 64 * h);
        lv[2 * h] = _mm512_and_si512(v, m4);
        lv[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
        for (int n = 0; five && n < 2; n++) { /* | (rotated qh & 0x10) */
            const int a = 4 * h + n, c = a + 2;
            const __m512i rot = _mm512_inserti64x4(_mm512_set1_epi32((4 - a) & 31), _mm256_set1_epi32((4 - c) & 31), 1);
            lv[2 * h + n] = _mm512_ternarylogic_epi32(lv[2 * h + n], _mm512_rolv_epi32(qh, rot), bit4, 0xF8);
        }
    }
}

/* A Q2_K / Q3_K super-block's levels, 64 a vector: [kq] values 32kq..+31 and 128 + 32kq..+31 (bits 2kq of the 64 level
 * bytes); Q3_K's third bit (bit 4n + kq of hmask byte l) brought to bit 2 by a rotate that never takes a bit from another
 * byte */
static inline __attribute__((always_inline)) void q23k_levels(const uint8_t *b, const int three, __m512i lv[4]) {
    const __m512i m3 = _mm512_set1_epi8(3), bit2 = _mm512_set1_epi8(4);
    const __m512i v = _mm512_loadu_si512(b + (three ? 32 : 16));
    const __m512i hm = three ? _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b)) : _mm512_setzero_si512();
    for (int kq = 0; kq < 4; kq++) {
        lv[kq] = _mm512_and_si512(_mm512_srli_epi16(v, 2 * kq), m3);
        if (three) { /* | (rotated & 4) */
            const __m512i rot = _mm512_inserti64x4(_mm512_set1_epi32((2 - kq) & 31), _mm256_set1_epi32((2 - 4 - kq) & 31), 1);
            lv[kq] = _mm512_ternarylogic_epi32(lv[kq], _mm512_rolv_epi32(hm, rot), bit2, 0xF8);
        }
    }
}

/* Q4_K and Q5_K for nt tokens at once (1 to 8), each row's levels unpacked once for all of them: a 64-byte load holds
 * two 32-byte chunks, sub-blocks 4h and 4h + 2 in the low nibbles, 4h + 1 and 4h + 3 in the high, against x in
 * kquant_x_order. Each token's x meets them in vpmaddubsw, whose pair sums fit int16 (levels <= 31, |x| <= 128), and
 * vpdpwssd multiplies those by each sub-block's scale into int32: a super-block's dot stays in integers, as the AVX2
 * kernel's, and takes d xd once. Q5_K's fifth bits (bit j of each qh byte for sub-block j) reach bit 4 by a rotate of
 * each 32-bit lane that never takes a bit from another byte. The mins' share, dmin xd times the sum of m times each
 * sub-block's x sum, is in integers per super-block too (m doubled against xs16's sums of 16). A token's operations,
 * and so its bits, are the same whatever nt. */
static inline __attribute__((always_inline)) void gemvs_q45k(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq,
                                                             const float *xd, const int16_t *xs16, int64_t nsb, float *y, int64_t ys,
                                                             const int nt, const int five) {
    __m512i pick[4]; /* [2h + n]: the scales of sub-blocks 4h + n and 4h + n + 2 */
    for (int h = 0; h < 2; h++)
        for (int n = 0; n < 2; n++) {
            const int a = 4 * h + n, c = a + 2;
            pick[2 * h + n] = _mm512_inserti64x4(_mm512_set1_epi16((short)(0x0100 + 0x0202 * a)), _mm256_set1_epi16((short)(0x0100 + 0x0202 * c)), 1);
        }
    const size_t bb = five ? 176 : 144;
    const int64_t in = 256 * nsb;
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        __m512 acc[8];
        __m256 macc[8];
        for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps(), macc[t] = _mm256_setzero_ps();
        for (int64_t k = 0; k < nsb; k++, b += bb) {
            for (size_t l = 0; l < bb; l += 64) _mm_prefetch((const char *)b + QX_AHEAD + l, _MM_HINT_T0);
            const __m128i smv = kquant_scales_mins(b + 4); /* 8 scales, 8 mins */
            const __m512i sc = _mm512_broadcast_i32x4(_mm256_castsi256_si128(_mm256_cvtepu8_epi16(smv)));
            const __m256i mdup = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(smv, smv)); /* m0 m0 m1 m1 ...: against sums of 16 */
            uint32_t dd;
            memcpy(&dd, b, 4);
            const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd)); /* d, dmin */
            __m512i lv[4], sv[4]; /* the levels of 64 values each, in x's order, and their sub-blocks' scales */
            q45k_levels(b, five, lv);
            for (int i = 0; i < 4; i++) sv[i] = _mm512_shuffle_epi8(sc, pick[i]);
            for (int t = 0; t < nt; t++) {
                const int8_t *x = xq + (size_t)t * (size_t)in + 256 * k;
                const __m128 ds = _mm_mul_ps(dm, _mm_set1_ps(xd[(size_t)t * (size_t)nsb + (size_t)k])); /* d xd, dmin xd */
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(kq_dot(lv, sv, x)), _mm512_broadcastss_ps(ds), acc[t]);
                const __m256i mp = _mm256_madd_epi16(mdup, _mm256_loadu_si256((const __m256i *)(xs16 + (size_t)t * (size_t)(in / 16) + 16 * k)));
                macc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mp), _mm256_broadcastss_ps(_mm_movehdup_ps(ds)), macc[t]);
            }
        }
        for (int t = 0; t < nt; t++) y[(size_t)t * (size_t)ys + (size_t)r] = hsum16(acc[t]) - hsum256(macc[t]);
    }
}


/* Q2_K and Q3_K for nt tokens at once (1 to 8), each row's levels unpacked once for all of them: 64 bytes of 2-bit
 * levels, bits 2kq of byte l value 32kq + l and of byte 32 + l value 128 + 32kq + l, so one shift and mask gives 64
 * levels: sub-blocks 2kq, 2kq + 1 in the low half, 8 + 2kq, 9 + 2kq in the high, against x in kquant_x_order. Each 16
 * values' pair sums (vpmaddubsw; levels <= 7) take their scale in vpdpwssd, the int16 scales picked per 128-bit lane
 * by vpshufb from a vector holding scales 0-7 twice, then 8-15 twice. Q3_K's scales are unpacked in a vector; its
 * third bit (bit 4n + kq of hmask byte l) reaches bit 2 by a rotate that never takes a bit from another byte, and its
 * levels' offset of 4 comes off in integers (4 times the scales against each 16 values' x sum). Q2_K's mins, dmin xd
 * times m against those sums, stay apart. A token's operations, and so its bits, are the same whatever nt. */
static inline __attribute__((always_inline)) void gemvs_q23k(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq,
                                                             const float *xd, const int16_t *xs16, int64_t nsb, float *y, int64_t ys,
                                                             const int nt, const int three) {
    const __m128i m4 = _mm_set1_epi8(15);
    __m512i pick[4]; /* [kq]: scales 2kq (lanes 0, 2) and 2kq + 1 (lanes 1, 3) */
    for (int kq = 0; kq < 4; kq++) {
        const int e0 = (4 * kq) | (4 * kq + 1) << 8, e1 = e0 + 0x0202;
        pick[kq] = _mm512_broadcast_i64x4(_mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16((short)e0)), _mm_set1_epi16((short)e1), 1));
    }
    const size_t bb = three ? 110 : 84;
    const int64_t in = 256 * nsb;
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        __m512 acc[8];
        __m256 macc[8];
        for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps(), macc[t] = _mm256_setzero_ps();
        for (int64_t k = 0; k < nsb; k++, b += bb) {
            for (size_t l = 0; l < bb; l += 64) _mm_prefetch((const char *)b + QX_AHEAD + l, _MM_HINT_T0);
            __m256i sc16, side16; /* the 16 scales; the 16 values Q2_K's mins (Q3_K: its scales) take against xs16 */
            __m128 dm;            /* d, dmin (Q2_K) */
            if (three) { /* scale j: the low nibble of byte j % 8 (the high one from j = 8) under bits 2 (j / 4)..+1 of byte 8 + j % 4 */
                const __m128i raw = _mm_maskz_loadu_epi8(0x0FFF, b + 96);
                const __m128i low = _mm_unpacklo_epi64(_mm_and_si128(raw, m4), _mm_and_si128(_mm_srli_epi16(raw, 4), m4));
                const __m128i top = _mm_srlv_epi32(_mm_shuffle_epi8(raw, _mm_set1_epi32(0x0B0A0908)), _mm_setr_epi32(0, 2, 4, 6));
                const __m128i sc8 = _mm_sub_epi8(_mm_or_si128(low, _mm_slli_epi16(_mm_and_si128(top, _mm_set1_epi8(3)), 4)), _mm_set1_epi8(32));
                side16 = sc16 = _mm256_cvtepi8_epi16(sc8);
                uint16_t hd;
                memcpy(&hd, b + 108, 2);
                dm = _mm_set_ss(_cvtsh_ss(hd));
            } else {
                const __m128i raw = _mm_loadu_si128((const __m128i *)b);
                sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
                side16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
                uint32_t dd;
                memcpy(&dd, b + 80, 4);
                dm = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd));
            }
            const __m512i z = _mm512_castsi256_si512(sc16), scz = _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(1, 1, 0, 0));
            __m512i lv[4], sv[4];
            q23k_levels(b, three, lv);
            for (int kq = 0; kq < 4; kq++) sv[kq] = _mm512_shuffle_epi8(scz, pick[kq]);
            for (int t = 0; t < nt; t++) {
                const int8_t *x = xq + (size_t)t * (size_t)in + 256 * k;
                const __m256i side = _mm256_madd_epi16(side16, _mm256_loadu_si256((const __m256i *)(xs16 + (size_t)t * (size_t)(in / 16) + 16 * k)));
                __m512i isum = kq_dot(lv, sv, x);
                const __m128 ds = _mm_mul_ps(dm, _mm_set1_ps(xd[(size_t)t * (size_t)nsb + (size_t)k])); /* d xd, dmin xd */
                if (three) isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(_mm256_slli_epi32(side, 2)));
                else macc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(side), _mm256_broadcastss_ps(_mm_movehdup_ps(ds)), macc[t]);
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_broadcastss_ps(ds), acc[t]);
            }
        }
        for (int t = 0; t < nt; t++) y[(size_t)t * (size_t)ys + (size_t)r] = hsum16(acc[t]) - (three ? 0.0f : hsum256(macc[t]));
    }
}

/* A Q6_K super-block's 256 levels in value order, 64 a vector: each half (64 bytes of low nibbles, 32 of high bit pairs)
 * as quarters 0 and 1 (low nibbles, bit pairs 0 and 1) and quarters 2 and 3 (high nibbles, bit pairs 2 and 3), the
 * bit pairs shifted into place per 256-bit half by a variable 16-bit shift (no bit crosses into a byte that keeps it) */
static inline __attribute__((always_inline)) void q6k_levels(const uint8_t *b, __m512i lv[4]) {
    const __m512i m4 = _mm512_set1_epi8(15), m30 = _mm512_set1_epi8(0x30);
    const __m512i lo_up = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);  /* bit pairs 0, 1 to bits 4-5 */
    const __m512i hi_down = _mm512_inserti64x4(_mm512_set1_epi16(0), _mm256_set1_epi16(2), 1); /* bit pairs 2, 3 */
    for (int n = 0; n < 2; n++) {
        const __m512i l = _mm512_loadu_si512(b + 64 * n);
        const __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 128 + 32 * n)));
        lv[2 * n] = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_and_si512(_mm512_sllv_epi16(h, lo_up), m30));
        lv[2 * n + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_and_si512(_mm512_srlv_epi16(h, hi_down), m30));
    }
}

/* every k-quant's levels in value order: Q6_K's as they come, the others' 256-bit halves put in place */
static void unpack_kquant(const uint8_t *blocks, int32_t bits, int64_t nsb, uint8_t *levels) {
    const int64_t bb = mopt_kquant_block_bytes(bits);
    for (int64_t k = 0; k < nsb; k++) {
        const uint8_t *b = blocks + k * bb;
        uint8_t *out = levels + 256 * k;
        __m512i lv[4];
        if (bits == 6) q6k_levels(b, lv);
        else if (bits >= 4) q45k_levels(b, bits == 5, lv);
        else q23k_levels(b, bits == 3, lv);
        for (int i = 0; i < 4; i++) {
            /* where each vector's two halves go: Q6_K 64i and 64i + 32; Q4_K / Q5_K sub-blocks (4h + n, 4h + n + 2)
             * for i = 2h + n; Q2_K / Q3_K 32i and 128 + 32i */
            const int lo = bits == 6 ? 64 * i : bits >= 4 ? 32 * (4 * (i / 2) + i % 2) : 32 * i;
            const int hi = bits == 6 ? lo + 32 : bits >= 4 ? lo + 64 : lo + 128;
            _mm256_storeu_si256((__m256i *)(out + lo), _mm512_castsi512_si256(lv[i]));
            _mm256_storeu_si256((__m256i *)(out + hi), _mm512_extracti64x4_epi64(lv[i], 1));
        }
    }
}

/* Q6_K for nt tokens at once (1 to 8), each row's levels unpacked once for all of them (q6k_levels). Each 128-bit lane
 * of a vector of levels holds one sub-block of 16: vpmaddubsw's pair sums fit int16 (levels <= 63, |x| <= 128) and vpdpwssd multiplies them
 * by the sub-block's int8 scale (picked per lane by vpshufb) into int32, so a super-block's dot stays in integers and
 * takes d xd once. The levels' offset of 32 comes off in integers: 32 times the scales against xs16's sums of 16. A
 * token's operations, and so its bits, are the same whatever nt. */
static inline __attribute__((always_inline)) void gemvs_q6k(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq,
                                                            const float *xd, const int16_t *xs16, int64_t nsb, float *y, int64_t ys,
                                                            const int nt) {
    /* [q]: 128-bit lane i takes int16 scale 4q + i of the (8-scale) half it is given */
    const __m512i pick[2] = {_mm512_set_epi32(0x07060706, 0x07060706, 0x07060706, 0x07060706, 0x05040504, 0x05040504, 0x05040504, 0x05040504,
                                              0x03020302, 0x03020302, 0x03020302, 0x03020302, 0x01000100, 0x01000100, 0x01000100, 0x01000100),
                             _mm512_set_epi32(0x0F0E0F0E, 0x0F0E0F0E, 0x0F0E0F0E, 0x0F0E0F0E, 0x0D0C0D0C, 0x0D0C0D0C, 0x0D0C0D0C, 0x0D0C0D0C,
                                              0x0B0A0B0A, 0x0B0A0B0A, 0x0B0A0B0A, 0x0B0A0B0A, 0x09080908, 0x09080908, 0x09080908, 0x09080908)};
    const int64_t in = 256 * nsb;
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        __m512 acc[8];
        for (int t = 0; t < nt; t++) acc[t] = _mm512_setzero_ps();
        for (int64_t k = 0; k < nsb; k++, b += 210) {
            for (int l = 0; l < 256; l += 64) _mm_prefetch((const char *)b + QX_AHEAD + l, _MM_HINT_T0);
            const __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 192)));
            uint16_t hd;
            memcpy(&hd, b + 208, 2);
            const float d = _cvtsh_ss(hd);
            __m512i lv[4], sv[4]; /* values 64i..64i+63's levels and their sub-blocks' scales */
            q6k_levels(b, lv);
            for (int n = 0; n < 2; n++) {
                const __m512i half = _mm512_broadcast_i32x4(n ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16));
                sv[2 * n] = _mm512_shuffle_epi8(half, pick[0]);
                sv[2 * n + 1] = _mm512_shuffle_epi8(half, pick[1]);
            }
            for (int t = 0; t < nt; t++) {
                const int8_t *x = xq + (size_t)t * (size_t)in + 256 * k;
                const __m256i off = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)(xs16 + (size_t)t * (size_t)(in / 16) + 16 * k)));
                const __m512i isum = _mm512_sub_epi32(kq_dot(lv, sv, x), _mm512_zextsi256_si512(_mm256_slli_epi32(off, 5)));
                acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d * xd[(size_t)t * (size_t)nsb + (size_t)k]), acc[t]);
            }
        }
        for (int t = 0; t < nt; t++) y[(size_t)t * (size_t)ys + (size_t)r] = hsum16(acc[t]);
    }
}

/* The k-quant kernels, one-token and batched: nt (1 to 8) and the type constants in each copy, so the tokens'
 * accumulators stay in registers */
static inline __attribute__((always_inline)) void gemvs_kq_n(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq,
                                                             const float *xd, const int16_t *xs16, int64_t nsb, float *y, int64_t ys,
                                                             const int nt, const int bits) {
    if (bits == 2 || bits == 3) gemvs_q23k(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, nt, bits == 3);
    else if (bits == 4 || bits == 5) gemvs_q45k(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, nt, bits == 5);
    else gemvs_q6k(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, nt);
}

static inline __attribute__((always_inline)) void gemvs_kq(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq,
                                                           const float *xd, const int16_t *xs16, int64_t nsb, int32_t nt, float *y,
                                                           int64_t ys, const int bits) {
    switch (nt) {
    case 1: gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, 1, bits); break;
    case 2: gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, 2, bits); break;
    case 3: gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, 3, bits); break;
    case 4: gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, 4, bits); break;
    case 5: gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, 5, bits); break;
    case 6: gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, 6, bits); break;
    case 7: gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, 7, bits); break;
    case 8: gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, ys, 8, bits); break;
    }
}

#define KQ_KERNELS(bits)                                                                                                    \
    static void gemv_q##bits##k_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,    \
                                   const int16_t *xs16, int64_t nsb, float *y) {                                            \
        gemvs_kq_n(w, row_bytes, nrows, xq, xd, xs16, nsb, y, 1, 1, bits);                                                  \
    }                                                                                                                       \
    static void gemvs_q##bits##k_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,   \
                                    const int16_t *xs16, int64_t nsb, int32_t nt, float *y, int64_t ys) {                   \
        gemvs_kq(w, row_bytes, nrows, xq, xd, xs16, nsb, nt, y, ys, bits);                                                  \
    }
KQ_KERNELS(2)
KQ_KERNELS(3)
KQ_KERNELS(4)
KQ_KERNELS(5)
KQ_KERNELS(6)
#undef KQ_KERNELS

/* VNNI: vpdpbusd takes each step's 4 bytes times 4 bytes of every token straight into int32 lanes, where AVX2
 * needs pmaddubsw, an int16 sum and pmaddwd */
#define TILE_LINKAGE static
#define TILE_FN(name) name
#define TILE_R 8
#define Q4_STEP(a, w4, xv) (a) = _mm256_dpbusd_epi32((a), _mm256_set1_epi32(w4), (xv))
#define Q4_START(z) (z)
#define Q4_BLOCK_SUM(a, z) (a)
#define S8_STEP(a, wa4, xs) _mm256_dpbusd_epi32((a), (wa4), (xs))
#define TILE_B16
#include "kernels_tiles.h"

#define VBITS 512
#define V_HSUM hsum16
#define V_HSUM8 hsum8
#define V_ROUND(v) _mm512_roundscale_ps((v), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define V_AS_FLOAT _mm512_castsi512_ps
#define V_HMAX _mm512_reduce_max_ps
#define V_HSUM4 hsum4
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
#define V_STORE_I8(p, vi) _mm_storeu_si128((__m128i *)(p), _mm512_cvtepi32_epi8(vi))
/* all 16 bytes at once: low nibbles are values 0..15, high nibbles 16..31 */
#define Q4_BLOCK(b, x, a0, a1)                                                                                 \
    do {                                                                                                       \
        const __m512i m4_ = _mm512_set1_epi32(15);                                                             \
        __m512i v_ = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b)));                              \
        a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(v_, m4_)), _mm512_loadu_ps(x), a0);           \
        a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(v_, 4)), _mm512_loadu_ps((x) + 16), a1);     \
    } while (0)
#include "kernels_simd.h"

/* W4A8_AWQ's groups: the 16-entry table in one register, each block's 32 levels looked up 16 at a time */
static float dot_q4_lut(const uint8_t *b, const float *lut, const float *x, int64_t nb) {
    const __m512 t = _mm512_loadu_ps(lut);
    const __m128i m4 = _mm_set1_epi8(15);
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int64_t k = 0; k < nb; k++, b += 16, x += 32) {
        const __m128i v = _mm_loadu_si128((const __m128i *)(const void *)b);
        const __m512i l = _mm512_cvtepu8_epi32(_mm_and_si128(v, m4)), h = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(v, 4), m4));
        a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(l, t), _mm512_loadu_ps(x), a0);
        a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(h, t), _mm512_loadu_ps(x + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* MXFP rows (n a multiple of 32; gs 16 or 32): 32 values per step, each half scaled by its block's scale as it is
 * widened, two accumulators. E2M1 codes come through a table as int8 twice their value (0..12). */
static float dot_fp4(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n) {
    const __m128i lut = _mm_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12), m = _mm_set1_epi8(0x0f);
    const int sh = gs == 16 ? 4 : 5; /* the block of value i: i >> sh, not a division per step */
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 32) {
        const __m128i b = _mm_loadu_si128((const __m128i *)(q + i / 2)), lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
        const __m128i v0 = _mm_shuffle_epi8(lut, _mm_unpacklo_epi8(lo, hi)), v1 = _mm_shuffle_epi8(lut, _mm_unpackhi_epi8(lo, hi));
        const __m512 w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v0)), _mm512_set1_ps(0.5f * bs[i >> sh]));
        const __m512 w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v1)), _mm512_set1_ps(0.5f * bs[(i + 16) >> sh]));
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

/* load_e4m3 gives each value times 2^-8; the 2^8 goes into the block's scale */
static float dot_e4m3_blocks(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n) {
    const int sh = gs == 16 ? 4 : 5;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 32) {
        const __m512 w0 = _mm512_mul_ps(load_e4m3(q + i), _mm512_set1_ps(256.0f * bs[i >> sh]));
        const __m512 w1 = _mm512_mul_ps(load_e4m3(q + i + 16), _mm512_set1_ps(256.0f * bs[(i + 16) >> sh]));
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

const mopt_kernels mopt_kernels_avx512 = {
    .name = "avx512",
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
    .dot_q4_lut = dot_q4_lut,
    .dot_q8 = dot_q8,
    .gemv_q4_q8 = gemv_q4_q8,
    .gemv_q8_q8 = gemv_q8_q8,
    .gemvs_q4_q8 = gemvs_q4_q8,
    .gemvs_q8_q8 = gemvs_q8_q8,
    .gemv_q4k_q8 = gemv_q4k_q8,
    .gemv_q6k_q8 = gemv_q6k_q8,
    .gemv_q2k_q8 = gemv_q2k_q8,
    .gemv_q3k_q8 = gemv_q3k_q8,
    .gemv_q5k_q8 = gemv_q5k_q8,
    .gemvs_q4k_q8 = gemvs_q4k_q8,
    .gemvs_q5k_q8 = gemvs_q5k_q8,
    .gemvs_q2k_q8 = gemvs_q2k_q8,
    .gemvs_q3k_q8 = gemvs_q3k_q8,
    .gemvs_q6k_q8 = gemvs_q6k_q8,
    .kquant_x_order = kquant_x_order,
    .dequant_kquant = mopt_dequant_kquant_avx2,
    .unpack_kquant = unpack_kquant,
    .gemm_q4_q8 = gemm_q4_q8,
    .unpack_q4 = mopt_unpack_q4_avx2,
    .u8_levels = true,
    .gemm_q4_q8_b16 = gemm_q4_q8_b16,
    .gemm_s8_q8 = gemm_s8_q8,
    .gemm_s8_rows = gemm_s8_rows,
    .unpack_s8 = mopt_unpack_s8_avx2,
    .dot_i8 = dot_i8,
    .dot_sp24 = mopt_dot_sp24_avx2,
    .dot_sp24_bf16 = mopt_dot_sp24_bf16_avx2,
    .dot_sp24_i8 = mopt_dot_sp24_i8_avx2,
    .dot_sp24_i4 = mopt_dot_sp24_i4_avx2,
    .dot_fp4 = dot_fp4,
    .dequant_fp4 = mopt_dequant_fp4_avx2,
    .dot_e4m3_blocks = dot_e4m3_blocks,
    .silu_mul = silu_mul,
    .att_scores = att_scores,
    .att_values = att_values,
    .att_scores_f16 = att_scores_f16,
    .att_values_f16 = att_values_f16,
    .softmax = softmax,
    .sum_u64 = sum_u64,
};
