/* ggml block formats as GGUF files store them (ggml's ggml-common.h and the
 * reference quantizers in ggml-quants.c), for GGUF reading and writing. Internal:
 * the GGUF module of the formats layer is the only user.
 *   Q4_0  32 values: f16 d, 16 bytes; byte j = q[j] | q[j+16] << 4;  x = d (q - 8)
 *   Q4_1  32 values: f16 d, f16 m, 16 bytes as Q4_0;                  x = d q + m
 *   Q5_0  32 values: f16 d, u32 qh (bit j = bit 4 of q[j]), 16 bytes of low nibbles; x = d (q - 16)
 *   Q5_1  32 values: f16 d, f16 m, qh, 16 bytes;                      x = d q + m
 *   Q8_0  32 values: f16 d, 32 int8;                                  x = d q
 *   IQ4_NL 32 values: f16 d, 16 bytes of 4-bit indices as Q4_0;       x = d kv[i], kv ggml's fixed table of 16
 *   Q2_K  256 values in 16 sub-blocks of 16: 16 bytes of 4-bit scale (low) and min (high) pairs, 64 bytes of
 *         2-bit levels (byte l of each 32: values l, l+32, l+64, l+96 of its 128 from bit 0 up), f16 d,
 *         f16 dmin;                                                   x = d sc q - dmin m
 *   Q3_K  256 values in 16 sub-blocks of 16: 32 bytes of high bits (bit k of byte l: value 32k + l),
 *         64 bytes of low 2-bit levels as Q2_K, 12 bytes of 6-bit scales (low nibbles in bytes 0-7, high
 *         bit pairs in bytes 8-11), f16 d;                            x = d (sc - 32) (q - 4)
 *   Q4_K  256 values in 8 sub-blocks of 32: f16 d, f16 dmin, 12 bytes of 6-bit
 *         scales and mins, 128 bytes (sub-blocks 2i and 2i+1 share 32 bytes, low
 *         and high nibbles);                                          x = d sc q - dmin m
 *   Q5_K  256 values: f16 d, f16 dmin, 12 bytes of scales/mins as Q4_K, 32 bytes of
 *         fifth bits (bit 2i / 2i+1 of byte l: sub-blocks 2i / 2i+1), 128 bytes as Q4_K
 *   Q6_K  256 values in 16 sub-blocks of 16: 128 bytes of low nibbles, 64 bytes of
 *         high 2-bit pairs, 16 int8 scales, f16 d;                    x = d sc (q - 32)
 * Values are little-endian; ne[0] of a tensor must be a multiple of the block. */
#ifndef MOPT_GGML_H
#define MOPT_GGML_H

#include <stdint.h>

#include "mopt/error.h"

typedef enum mopt_ggml_type { /* ggml's type ids, as GGUF stores them */
    MOPT_GGML_F32 = 0, MOPT_GGML_F16 = 1, MOPT_GGML_Q4_0 = 2, MOPT_GGML_Q4_1 = 3, MOPT_GGML_Q5_0 = 6, MOPT_GGML_Q5_1 = 7,
    MOPT_GGML_Q8_0 = 8, MOPT_GGML_Q2_K = 10, MOPT_GGML_Q3_K = 11, MOPT_GGML_Q4_K = 12, MOPT_GGML_Q5_K = 13, MOPT_GGML_Q6_K = 14,
    MOPT_GGML_IQ4_NL = 20, MOPT_GGML_BF16 = 30
} mopt_ggml_type;

/* Values per block (1 for float types), 0 for a type mopt does not handle. */
int64_t mopt_ggml_block_size(int32_t type);
/* Bytes per block. */
int64_t mopt_ggml_block_bytes(int32_t type);
/* "q4_0", "f16", ...; NULL for unknown types. */
const char *mopt_ggml_type_name(int32_t type);
/* Bytes of a row of n values; -1 when n is not a multiple of the block. */
int64_t mopt_ggml_row_bytes(int32_t type, int64_t n);

/* The k-quant types as mopt's KQUANT tensors name them, by bits: Q2_K 2 ...
 * Q6_K 6 (0: not a k-quant), and back (-1: no such k-quant). ggml numbers them
 * in a row, Q2_K = 10 to Q6_K = 14. */
static inline int32_t mopt_ggml_kquant_bits(int32_t type) {
    return type >= MOPT_GGML_Q2_K && type <= MOPT_GGML_Q6_K ? type - MOPT_GGML_Q2_K + 2 : 0;
}
static inline int32_t mopt_ggml_kquant_type(int32_t bits) { return bits >= 2 && bits <= 6 ? MOPT_GGML_Q2_K + bits - 2 : -1; }

/* One row of n values to and from the block format (ggml's reference
 * quantizers: round to nearest, scales in f16). */
mopt_status mopt_ggml_quantize_row(int32_t type, const float *x, int64_t n, void *dst, mopt_error *err);
/* Same, with importance weights qw[n] (an importance matrix's mean x^2 per input
 * column; NULL: as above): the error weights llama.cpp's quantize_*_impl
 * use, qw * sqrt(sigma^2 + x^2) (Q6_K: qw alone); Q8_0 and the floats ignore them. IQ4_NL, which llama-quantize
 * writes only where a Q2_K / Q3_K row is no whole 256-value block, searches its scale as quantize_iq4_nl does. */
mopt_status mopt_ggml_quantize_row_weighted(int32_t type, const float *x, int64_t n, const float *qw, void *dst, mopt_error *err);
mopt_status mopt_ggml_dequantize_row(int32_t type, const void *src, int64_t n, float *y, mopt_error *err);

/* ggml's scale searches (ggml_search.c): the symmetric one (make_qx_quants:
 * levels [-nmax, nmax - 1] stored + nmax, error weights qw or by rmse_type)
 * and the asymmetric one (make_qkx2_quants: x ~ scale l + min, l in [0,
 * nmax], *the_min = -min); both return the scale. mopt_ggml_nearest rounds
 * half to even as ggml's nearest_int. */
int mopt_ggml_nearest(float f);
/* v limited to [lo, hi] */
static inline int mopt_ggml_clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
/* ggml's GROUP_MAX_EPS: a group whose largest |x| is below it quantizes to zeros */
#define MOPT_GGML_ALL_ZERO 1e-15f
float mopt_ggml_qx_search(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw);
float mopt_ggml_qkx2_search(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min, uint8_t *Laux, float rmin,
                            float rdelta, int nstep, int use_mad);
/* make_qp_quants: non-negative x (a super-block's sub-block scales or mins) on
 * levels [0, nmax] under weights w, nine grids then coordinate descent; the
 * importance-weighted k-quants pick d and dmin with it. (ggml's
 * make_qkx3_quants is make_qkx2_quants whenever weights are given, as they
 * always are here.) */
float mopt_ggml_qp_search(int n, int nmax, const float *x, uint8_t *L, const float *w);
/* make_q3_quants (Q3_K without weights): the symmetric levels [-nmax, nmax - 1]
 * from the value of largest magnitude, then coordinate descent under error
 * weights x^2; L stored + nmax. */
float mopt_ggml_q3_search(int n, int nmax, const float *x, int8_t *L);

/* Q4_0 and Q8_0 blocks hold 32 of mopt's QINT levels (4-bit: q, 8-bit:
 * int8 + 128) with their f16 scale as is: a block's levels and scale bits,
 * and a block from them (the importer and the exporter share the bit order). */
void mopt_ggml_block_to_levels(int32_t type, const uint8_t *blk, uint8_t q[32], uint16_t *d);
void mopt_ggml_block_from_levels(int32_t type, const uint8_t q[32], uint16_t d, uint8_t *blk);

#endif
