/* CPU inner kernels with runtime dispatch. The scalar set (kernels_ref.c) is
 * the reference the SIMD sets are tested against; kernels.c picks the best
 * set the CPU supports once, at first use. */
#ifndef MOPT_KERNELS_H
#define MOPT_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* x's int8 level for scale s as a float: x / s as defined (mopt/quant.h), not x times 1 / s, which can round to
 * the next level; clamped to +-127 with NaN to -127; 1.5 x 2^23 added and taken off rounds to nearest even, as lrintf
 * does, without a libm call. The scalar definition every quantizer of activations follows. */
static inline float mopt_i8_level(float x, float s) {
    float v = x / s;
    v = v >= -127.f ? (v <= 127.f ? v : 127.f) : -127.f;
    return (v + 12582912.0f) - 12582912.0f;
}

typedef struct mopt_kernels {
    const char *name;
    /* dot product of a weight row (in its stored dtype) with fp32 x, n elements */
    float (*dot_f32)(const float *w, const float *x, int64_t n);
    float (*dot_f16)(const uint16_t *w, const float *x, int64_t n);
    float (*dot_bf16)(const uint16_t *w, const float *x, int64_t n);
    /* one weight row against nt token rows of x (xs floats apart): out[t] is
     * bit for bit the dot above of the row with token t (batched decode) */
    void (*dots_f32)(const float *w, const float *x, int64_t xs, int32_t nt, int64_t n, float *out);
    void (*dots_f16)(const uint16_t *w, const float *x, int64_t xs, int32_t nt, int64_t n, float *out);
    void (*dots_bf16)(const uint16_t *w, const float *x, int64_t xs, int32_t nt, int64_t n, float *out);
    /* nrows consecutive rows (n values each) against nt <= 8 token rows: y[t * ys + r] bit for bit as the dots above */
    void (*dots_rows_f32)(const float *w, int64_t nrows, const float *x, int64_t xs, int32_t nt, int64_t n, float *y, int64_t ys);
    void (*dots_rows_f16)(const uint16_t *w, int64_t nrows, const float *x, int64_t xs, int32_t nt, int64_t n, float *y,
                          int64_t ys);
    void (*dots_rows_bf16)(const uint16_t *w, int64_t nrows, const float *x, int64_t xs, int32_t nt, int64_t n, float *y,
                           int64_t ys);
    /* widen n elements to fp32 */
    void (*cvt_f16)(const uint16_t *src, float *dst, int64_t n);
    void (*cvt_bf16)(const uint16_t *src, float *dst, int64_t n);
    /* dst[i] = (levels[i] - z) * s for n one-byte levels (a QINT group widened) */
    void (*dequant_u8)(const uint8_t *levels, int64_t n, float z, float s, float *dst);
    /* dst[i] = e4m3(q[i]) * s for n E4M3 bytes (an FP8 row widened), exactly mopt_e4m3_to_f32 times s */
    void (*dequant_e4m3)(const uint8_t *q, int64_t n, float s, float *dst);
    /* sum of e4m3(q[i]) * x[i] over n E4M3 bytes read in place (an FP8 row, unscaled) */
    float (*dot_e4m3)(const uint8_t *q, const float *x, int64_t n);
    /* out[i] = e4m3(x[i] / s) * s: activations rounded onto the E4M3 grid (nearest even, saturating at 448), exactly
     * as mopt_f32_to_e4m3 and mopt_e4m3_to_f32 round them */
    void (*round_e4m3)(const float *x, int64_t n, float s, float *out);
    /* x as int8 per block of bs values (n / bs blocks; bs a multiple of 16): d[b] = the block's max|x| / 127 (1 when
     * it is all zeros), q = round(x / d) to nearest even, clamped to +-127, NaN to -127; the same bits in every set */
    void (*quantize_i8_blocks)(const float *x, int64_t n, int64_t bs, int8_t *q, float *d);
    /* sum over nb whole 32-value blocks of level * x (packed layouts in mopt/quant.h) */
    float (*dot_q4)(const uint8_t *blocks, const float *x, int64_t nb);
    float (*dot_q8)(const uint8_t *blocks, const float *x, int64_t nb);
    /* sum over nb whole 4-bit blocks of lut[level] * x: a group whose 16 weight values are a table (W4A8_AWQ's
     * int4 values widened to E4M3), looked up in registers */
    float (*dot_q4_lut)(const uint8_t *blocks, const float *lut, const float *x, int64_t nb);
    /* nrows 4-bit rows of ng whole groups of bpg blocks (s f16, z u8 or NULL: zsym)
     * against activations quantized to int8 per 32 values (xq, with
     * scales xd; llama.cpp's Q4 x Q8 dot): y[r] = sum_g s[r,g] * (sum over the
     * group's blocks b of xd[b] * (levels[r, b] . xq[b]) - z[r,g] * xsum[g]),
     * xsum[g] = sum_b xd[b] * sum(xq[b]). Each block's dot is exact in int32. */
    void (*gemv_q4_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                       const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y);
    /* The same for 8-bit rows (32-byte blocks) */
    void (*gemv_q8_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                       const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y);
    /* Both for 2 <= nt <= 8 tokens at once (batched decode), each row's weights read once for all of them: token
     * t's x at xq + t * in, xd + t * nb, xsum + t * ng (in = 32 nb = 32 ng bpg), y[t * ys + r] bit for bit what
     * the one-token kernel gives that token alone. NULL: the caller runs the one-token kernel per token. */
    void (*gemvs_q4_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                        const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, int32_t nt, float *y,
                        int64_t ys);
    void (*gemvs_q8_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                        const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, int32_t nt, float *y,
                        int64_t ys);
    /* nrows k-quant rows of nsb super-blocks each (MOPT_DTYPE_KQUANT in mopt/quant.h: Q2_K ... Q6_K) against x
     * quantized to int8 per super-block of 256 values, as llama.cpp's Q8_K (xq [nsb * 256] in kquant_x_order's order,
     * scales xd [nsb]), with xs16 [nsb * 16] the sums of xq over every 16 values (in value order): y[r] = the row's
     * dot with the quantized x, each super-block's dot exact in int32 */
    void (*gemv_q4k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y);
    void (*gemv_q6k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y);
    /* the same for Q2_K and Q3_K rows (sub-blocks of 16) and Q5_K rows */
    void (*gemv_q2k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y);
    void (*gemv_q3k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y);
    void (*gemv_q5k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y);
    /* n (a multiple of 256) values of int8 x in value order to the order the set's kernels for `bits`-bit k-quants
     * read (each super-block's 32-value pieces moved to match its levels' unpacking); NULL: value order */
    void (*kquant_x_order)(int32_t bits, const int8_t *xq, int64_t n, int8_t *out);
    /* Each k-quant for 1 <= nt <= 8 tokens at once (batched decode), each row read once for all of them: token t's x
     * at xq + t * 256 nsb, xd + t * nsb, xs16 + t * 16 nsb, y[t * ys + r] bit for bit what the one-token kernel gives
     * that token alone. NULL: the caller runs the one-token kernel per token. */
    void (*gemvs_q2k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                         int64_t nsb, int32_t nt, float *y, int64_t ys);
    void (*gemvs_q3k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                         int64_t nsb, int32_t nt, float *y, int64_t ys);
    void (*gemvs_q4k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                         int64_t nsb, int32_t nt, float *y, int64_t ys);
    void (*gemvs_q5k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                         int64_t nsb, int32_t nt, float *y, int64_t ys);
    void (*gemvs_q6k_q8)(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                         int64_t nsb, int32_t nt, float *y, int64_t ys);
    /* nsb Q2_K ... Q6_K super-blocks (bits 2 ... 6) widened to 256 * nsb fp32 values, exactly as
     * mopt_weight_row_f32 decodes them (for SGEMM in prefill) */
    void (*dequant_kquant)(const uint8_t *blocks, int32_t bits, int64_t nsb, float *dst);
    /* nsb Q2_K ... Q6_K super-blocks' levels (0..2^bits - 1, Q3_K's and Q5_K's high bit in place) as 256 * nsb bytes
     * in value order, for the integer prefill GEMM */
    void (*unpack_kquant)(const uint8_t *blocks, int32_t bits, int64_t nsb, uint8_t *levels);
    /* The prefill form of the 4-bit product, for one tile of 8 tokens:
     *   wl  the rows' levels (0..15; 0..255 where u8_levels) one byte each, [nrows, in]
     *   s   their scales as floats, zs (NULL: none) s (z - o), [nrows, ng]
     *   xi  the tile's int8 x interleaved for token lanes, [in / 4][8 tokens][4]
     *   xzt each block's int32 start, -o times the block's sum of x levels [in / 32][8]
     *       (o = 8 for 4-bit levels, 128 for 8-bit, a k-quant's middle level)
     *   xdt the tile's block scales [in / 32][8], xst its group sums [ng][8]
     *       (padding tokens: zeros)
     * y[l * y_stride + r] = sum over groups of s (sum over blocks of xd (sum of (level - o) x)) - zs xs,
     * for tokens l < ntok. */
    void (*gemm_q4_q8)(const uint8_t *wl, int64_t in, int64_t nrows, const float *s, const float *zs, const int8_t *xi,
                       const int32_t *xzt, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                       int64_t y_stride, int32_t ntok);
    /* gemm_q4_q8 takes 8-bit levels too (its products go straight to int32: VNNI, the scalar set) */
    bool u8_levels;
    /* gemm_q4_q8 over blocks of 16 values (k-quants' sub-blocks of 16; levels up to 63): xzt and xdt per 16 values,
     * xi laid out the same. NULL where a block's sums would not fit the set's int16 steps (AVX2). */
    void (*gemm_q4_q8_b16)(const uint8_t *wl, int64_t in, int64_t nrows, const float *s, const float *zs, const int8_t *xi,
                           const int32_t *xzt, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                           int64_t y_stride, int32_t ntok);
    /* The same GEMM for signed int8 weights w [nrows, in] with |w| in wa (w may
     * hold -128), summed from 0 (no xzt): float scales s and zero-point terms
     * zs [nrows, ng] (NULL: none), y = sum over groups of s (...) - zs xs. */
    void (*gemm_s8_q8)(const int8_t *w, const uint8_t *wa, int64_t in, int64_t nrows, const float *s, const float *zs,
                       const int8_t *xi, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                       int64_t y_stride, int32_t ntok);
    /* W8A8's form: x quantized per token (scales xs [8]), one int32 sum per row
     * and token, y = (float)sum * s[r] * xs[l] as the decode's dot_i8 path */
    void (*gemm_s8_rows)(const int8_t *w, const uint8_t *wa, int64_t in, int64_t nrows, const float *s, const int8_t *xi,
                         const float *xs, float *y, int64_t y_stride, int32_t ntok);
    /* n bytes to signed int8 w (xor flip: 0x80 turns 8-bit levels into level - 128) and |w| */
    void (*unpack_s8)(const uint8_t *src, int64_t n, uint8_t flip, int8_t *w, uint8_t *wa);
    /* nb 4-bit blocks unpacked to 32 * nb level bytes in value order */
    void (*unpack_q4)(const uint8_t *blocks, int64_t nb, uint8_t *levels);
    /* int8 x int8 -> int32 over n elements (W8A8); b must not hold -128 */
    int32_t (*dot_i8)(const int8_t *a, const int8_t *b, int64_t n);
    /* a 2:4 row (mopt/quant.h, SP24) with x over n inputs (a multiple of 8):
     * the n/2 kept values widened to fp32, and the row's position bytes */
    float (*dot_sp24)(const float *vals, const uint8_t *pos, const float *x, int64_t n);
    /* the same with the kept values read as bf16 in place (no widening pass) */
    float (*dot_sp24_bf16)(const uint16_t *vals, const uint8_t *pos, const float *x, int64_t n);
    /* the same with int8 kept values (SP24 with MOPT_QUANT_VALUES_I8), unscaled:
     * with x holding int8 levels as floats every product and partial sum is an
     * integer, exact while |sum| < 2^24 */
    float (*dot_sp24_i8)(const int8_t *vals, const uint8_t *pos, const float *x, int64_t n);
    /* the same with int4 kept values read in place (SP24 with MOPT_QUANT_VALUES_I4: QINT 4-bit blocks of 32 kept
     * values, level - 8) and scaled per group of gs inputs by the f16 scales; n and gs multiples of 64 */
    float (*dot_sp24_i4)(const uint8_t *vals, const uint16_t *scales, int64_t gs, const uint8_t *pos, const float *x, int64_t n);
    /* Block-scaled floats (MOPT_DTYPE_MXFP in mopt/quant.h) over n values, n a multiple of 32 and gs 16 or 32, each
     * block of gs values times its scale bs[block] (global scale included):
     * dot_fp4: sum of e2m1(q) * x, two E2M1 codes a byte (value 2k in the low nibble), read in place */
    float (*dot_fp4)(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n);
    /* dequant_fp4: dst[i] = e2m1(q[i]) * bs[i / gs], exactly mopt_e2m1_to_f32 times the scale (for SGEMM in prefill) */
    void (*dequant_fp4)(const uint8_t *q, const float *bs, int64_t gs, int64_t n, float *dst);
    /* dot_e4m3_blocks: sum of e4m3(q) * x over E4M3 bytes (MXFP8), read in place */
    float (*dot_e4m3_blocks)(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n);
    /* SwiGLU: y[i] = g[i] / (1 + e^-g[i]) * u[i], the scalar set with expf, the vector sets with a polynomial e^x;
     * each within 4 ulp of float64 (test_kernels) */
    void (*silu_mul)(const float *g, const float *u, float *y, int64_t n);
    /* Decode attention over one KV head's n cached positions (K and V rows ld floats apart, hd values each) for the g
     * query rows q [g, hd] that share it: att_scores s[r * n + p] = scale * (q_r . K_p); att_values
     * out[r * hd + i] = sum_p P[r * n + p] * V_p[i] */
    void (*att_scores)(const float *q, int32_t g, const float *K, int64_t ld, int32_t n, int32_t hd, float scale, float *s);
    void (*att_values)(const float *P, int32_t g, const float *V, int64_t ld, int32_t n, int32_t hd, float *out);
    /* The same over a cache of IEEE halves (an f16 KV cache), each value widened exactly */
    void (*att_scores_f16)(const float *q, int32_t g, const uint16_t *K, int64_t ld, int32_t n, int32_t hd, float scale, float *s);
    void (*att_values_f16)(const float *P, int32_t g, const uint16_t *V, int64_t ld, int32_t n, int32_t hd, float *out);
    /* x[i] = e^(x[i] - max x) / sum: the scalar set with expf, the vector sets with silu_mul's e^x */
    void (*softmax)(float *x, int64_t n);
    /* the sum of n 64-bit words read with the set's widest loads: the read-bandwidth probe (membw.c), which is to
     * read as fast as the decode kernels can */
    uint64_t (*sum_u64)(const uint64_t *w, size_t n);
} mopt_kernels;

/* Unpacks one block of b-bit levels into 32 floats (any b the format has). */
void mopt_qblock_levels(const uint8_t *block, int32_t bits, float *out);
/* sum of level * x over the first n (< 32 allowed) values of one block */
float mopt_qblock_dot(const uint8_t *block, int32_t bits, const float *x, int32_t n);

/* The AVX2 2:4 row dot products, which the AVX-512 set shares. */
float mopt_dot_sp24_avx2(const float *vals, const uint8_t *pos, const float *x, int64_t n);
float mopt_dot_sp24_bf16_avx2(const uint16_t *vals, const uint8_t *pos, const float *x, int64_t n);
float mopt_dot_sp24_i8_avx2(const int8_t *vals, const uint8_t *pos, const float *x, int64_t n);
void mopt_round_e4m3_avx2(const float *x, int64_t n, float s, float *out);
float mopt_dot_q4_lut_avx2(const uint8_t *b, const float *lut, const float *x, int64_t nb);
float mopt_dot_fp4_avx2(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n);
void mopt_dequant_fp4_avx2(const uint8_t *q, const float *bs, int64_t gs, int64_t n, float *dst);
float mopt_dot_e4m3_blocks_avx2(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n);
float mopt_dot_sp24_i4_avx2(const uint8_t *vals, const uint16_t *scales, int64_t gs, const uint8_t *pos, const float *x, int64_t n);
/* The AVX2 integer GEMVs, k-quant kernels and unpacking, which the AVX-512 set shares (the prefill GEMMs are
 * built in each file from kernels_tiles.h). */
void mopt_gemv_q4_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                          const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y);
void mopt_gemv_q8_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                          const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y);
void mopt_gemv_q4k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y);
void mopt_gemv_q6k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y);
void mopt_gemv_q2k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y);
void mopt_gemv_q3k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y);
void mopt_gemv_q5k_q8_avx2(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd,
                           const int16_t *xs16, int64_t nsb, float *y);
void mopt_dequant_kquant_avx2(const uint8_t *blocks, int32_t bits, int64_t nsb, float *dst);
void mopt_unpack_kquant_avx2(const uint8_t *blocks, int32_t bits, int64_t nsb, uint8_t *levels);
void mopt_unpack_kquant_ref(const uint8_t *blocks, int32_t bits, int64_t nsb, uint8_t *levels);
void mopt_unpack_q4_avx2(const uint8_t *blocks, int64_t nb, uint8_t *levels);
void mopt_unpack_s8_avx2(const uint8_t *src, int64_t n, uint8_t flip, int8_t *w, uint8_t *wa);

extern const mopt_kernels mopt_kernels_ref;
/* NULL when the file was built without the instruction set. */
extern const mopt_kernels mopt_kernels_avx2;
extern const mopt_kernels mopt_kernels_avx512;

/* The set for this CPU; MOPT_KERNELS=ref|avx2|avx512 in the environment
 * forces one (falling back when the CPU lacks it). */
const mopt_kernels *mopt_kernels_get(void);
/* Whether the CPU can run a given set. */
int mopt_kernels_supported(const mopt_kernels *k);

#endif
