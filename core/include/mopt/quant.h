/* Packed quantized weights: layouts, packing and dequantization. Kernels that
 * read these layouts directly live in the CPU backend; quantization methods
 * (plugins/quant) produce them and exporters read them.
 *
 * MOPT_DTYPE_QINT, b bits (b = 2, 3, 4, 8): each row of `in` values is cut into
 * blocks of 32 (the last block zero-padded), each value an unsigned level
 * q in [0, 2^b). A block is stored as:
 *   8-bit: 32 bytes, byte j = q[j]
 *   4-bit: 16 bytes, byte j = q[j] | q[j+16] << 4
 *   2-bit:  8 bytes, byte j = q[j] | q[j+8] << 2 | q[j+16] << 4 | q[j+24] << 6
 *   3-bit: the low two bits as the 2-bit block (8 bytes), then a 32-bit
 *          little-endian mask whose bit j is bit 2 of q[j] (12 bytes)
 * Groups of `group_size` columns (a multiple of 32, or -1 for the whole row;
 * the last group may be shorter) share a scale s (F16 [out, n_groups]) and a
 * zero-point z (U8 [out, n_groups]); symmetric formats store no zeros and use
 * z = 2^(b-1). The weight is w = (q - z) * s. With act-order, g_idx (I32 [in])
 * gives each column's group instead of column / group_size.
 * With MOPT_QUANT_ACT_PER_TOKEN (or _STATIC with act_scale) the activations
 * are rounded onto the E4M3 grid first, max|x| / 448 per token as FP8's: W4A8.
 * With MOPT_QUANT_W_FP8 every weight is rounded onto E4M3 as well, with the
 * per-tensor global_scale g: w = e4m3((q - z) * s / g) * g. That is ModelOpt's
 * W4A8_AWQ (weight_scale_2 = g, input_scale = act_scale with _STATIC), whose
 * TensorRT-LLM kernel widens the int4 values to FP8 before an FP8 GEMM.
 * On the CPU, 4- and 8-bit rows of whole groups of whole blocks (every real
 * model's; not act-order) without FP8 activations run against activations quantized to int8 per 32
 * values at run time (scale max|x| / 127 per block, llama.cpp's Q8_0), with
 * every block's dot product in integers; other rows run in fp32.
 *
 * MOPT_DTYPE_W8A8: int8 [out, in] weights, F32 per-row scale [out]:
 * w = q * s. Activations are quantized per token at run time, x = qx * sx
 * with sx = max|x| / 127, and the dot product runs in int8 x int8 -> int32.
 *
 * MOPT_DTYPE_FP8: E4M3 bytes [out, in] (bias 7, no infinities, max 448), F32
 * scale [out] (per channel) or [1] (per tensor): w = e4m3(q) * s. Activations
 * are rounded to the E4M3 grid per token (dynamic) or with the calibrated
 * per-tensor act_scale (static), or left alone (weight-only).
 *
 * MOPT_DTYPE_SP24 (2:4 semi-structured sparsity; `in` a multiple of 8): every
 * group of four consecutive inputs of a row keeps two values. A row is stored
 * as its in/2 kept values in order, in the weight's float dtype (F16 unless
 * flags carry MOPT_QUANT_VALUES_BF16 or _F32), then in/8 bytes of positions:
 * byte k holds group 2k in its low nibble and group 2k + 1 in its high one,
 * each nibble i0 | i1 << 2 with i0 < i1 the positions (0..3) of the kept
 * values; rows are padded to a multiple of 4 bytes. A group with fewer than two non-zeros keeps zeros at its lowest free
 * positions. These are the kept values and 2-bit indices of NVIDIA's sparse
 * tensor cores (without their tile interleave) and, one bit per input instead
 * of two per kept value, compressed-tensors' sparse-24-bitmask.
 * With MOPT_QUANT_VALUES_I8 the kept values are int8 (one byte each) and a
 * row has an F32 scale (scale [out]): w = q * s, and activations are
 * quantized to int8 per token at run time as for W8A8. That is the 2:4 W8A8
 * scheme vLLM runs with CUTLASS sparse kernels.
 * With MOPT_QUANT_VALUES_I4 (and MOPT_QUANT_SYM; `in` a multiple of 64) the
 * kept values are int4 levels u in [0, 16), w = (u - 8) * s, packed as QINT
 * 4-bit blocks of 32 kept values (byte j = u[j] | u[j+16] << 4), so a row's
 * values take in/4 bytes; groups of group_size inputs (a multiple of 64, or -1
 * for the whole row) share an F16 scale (scale [out, n_groups]). Activations
 * stay in float: the W4A16 2:4 scheme vLLM runs with its Marlin-24 kernel.
 *
 * MOPT_DTYPE_KQUANT: ggml's k-quant super-blocks of 256 values, byte for byte
 * as GGUF files store them (`in` a multiple of 256; ggml's ggml-common.h),
 * quant.bits naming the type; every scale lives in its block, so there are no
 * side tensors:
 *   2 (Q2_K, 84 bytes): 16 bytes of sub-block scale sc (low nibble) and min m
 *     (high nibble) for 16 sub-blocks of 16, 64 bytes of 2-bit levels (per
 *     128 values n, bits 2k..2k+1 of byte 32n + l hold value 32k + l), f16 d,
 *     f16 dmin; w = d * sc[v / 16] * q - dmin * m[v / 16]
 *   3 (Q3_K, 110 bytes): 32 bytes hmask (bit k of byte l: the high bit of value
 *     32k + l), 64 bytes of low 2-bit levels as Q2_K's, 12 bytes of 6-bit
 *     scales (sub-block j: the low nibble of byte j % 8, the high one for j >=
 *     8, under bits 2(j / 4)..+1 of byte 8 + j % 4), f16 d;
 *     w = d * (sc[v / 16] - 32) * (q - 4)
 *   4 (Q4_K, 144 bytes): f16 d, f16 dmin, 12 bytes s of 6-bit scales sc[8] and
 *     mins m[8] (j < 4: the low 6 bits of s[j] and s[j+4]; j >= 4: the low and
 *     high nibble of s[j+4] under the top 2 bits of s[j-4] and s[j]), 128 bytes of levels: sub-blocks 2i and
 *     2i+1 of 32 values are the low and high nibbles of bytes 32i..32i+31;
 *     w = d * sc[j] * q - dmin * m[j]
 *   5 (Q5_K, 176 bytes): Q4_K's 16-byte header, 32 bytes qh (bit 2i / 2i+1 of
 *     byte l is the fifth bit of value l of sub-block 2i / 2i+1), then Q4_K's
 *     128 bytes of nibbles
 *   6 (Q6_K, 210 bytes): 128 bytes ql, 64 bytes qh, int8 sc[16], f16 d; per
 *     128 values n, value l < 32 of each quarter k takes its low nibble from
 *     ql[64n + l + 32 (k & 1)] (k < 2 low, else high nibble) and its high two
 *     bits from bits 2k..2k+1 of qh[32n + l]; w = d * sc[v / 16] * (q - 32)
 * On the CPU, Q4_K and Q6_K rows decode against activations quantized to int8
 * per 256 values (llama.cpp's Q8_K), each super-block's dot product in int32;
 * Q4_K prefill runs the int8 GEMM (d sc and dmin m as a scale and zero-point
 * per 32 values, x as int8 per 32), and Q5_K / Q6_K prefill widens rows for SGEMM.
 *
 * MOPT_DTYPE_MXFP: block-scaled floats, `in` a multiple of 32. Each block of
 * quant.group_size values of a row shares a one-byte scale (scale: U8
 * [out, in / group_size]); every value is a small float:
 *   NVFP4 (bits 4, blocks of 16): E2M1 values, E4M3 block scales, and an F32
 *     global scale G (quant.global_scale): w = e2m1 * (e4m3(scale) * G)
 *   MXFP4 (bits 4, blocks of 32, MOPT_QUANT_SCALE_E8M0): E2M1 values,
 *     w = e2m1 * 2^(scale - 127) (the OCP Microscaling spec's E8M0; 255 is NaN)
 *   MXFP8 (bits 8, blocks of 32, MOPT_QUANT_SCALE_E8M0): E4M3 values (as
 *     MOPT_DTYPE_FP8's), w = e4m3 * 2^(scale - 127)
 * E2M1 is a sign bit over two exponent bits and one mantissa bit, the
 * magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}; two values share a byte, value 2k
 * in the low nibble and 2k + 1 in the high one (ModelOpt's and
 * compressed-tensors' packing). Quantizing a block (mopt_mxfp_quantize):
 * NVFP4 scale = e4m3(max|v| / (6 G)) with G = max|W| / (6 * 448) per tensor
 * (ModelOpt's, at least 2^-9; a block of zeros gets scale 1); MX scale = 2^(floor(log2
 * max|v|) - emax), emax 2 for E2M1 and 8 for E4M3 (the OCP spec; 2^-127 for a
 * block of zeros); values v / scale rounded to nearest even and saturated at
 * the largest magnitude (6 or 448). With MOPT_QUANT_ACT_PER_TOKEN the
 * activations are rounded onto the same format at run time, block by block
 * along `in` (NVFP4's global scale max|x| / (6 * 448) of each token); NVFP4
 * with MOPT_QUANT_ACT_STATIC takes act_scale, calibrated, as their global
 * scale (ModelOpt's input_scale). On the CPU the kernels widen values in
 * registers: E2M1 through a 16-entry table, E4M3 as FP8's. */
#ifndef MOPT_QUANT_H
#define MOPT_QUANT_H

#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/tensor.h"

MOPT_EXTERN_C_BEGIN

#define MOPT_QBLOCK 32
#define MOPT_KQ_BLOCK 256 /* values per k-quant super-block */

enum {
    MOPT_QUANT_SYM = 1u << 0,            /* QINT: no zeros stored, z = 2^(b-1) */
    MOPT_QUANT_ACT_PER_TOKEN = 1u << 1,  /* FP8, QINT (W4A8), MXFP: dynamic per-token activation rounding */
    MOPT_QUANT_ACT_STATIC = 1u << 2,     /* FP8, QINT (W4A8_AWQ), NVFP4: static per-tensor activation scale */
    MOPT_QUANT_PER_TENSOR = 1u << 3,     /* FP8: one weight scale */
    MOPT_QUANT_VALUES_BF16 = 1u << 4,    /* SP24: kept values are bf16 */
    MOPT_QUANT_VALUES_F32 = 1u << 5,     /* SP24: kept values are f32 */
    MOPT_QUANT_VALUES_I8 = 1u << 6,      /* SP24: kept values are int8 with a scale per row; int8 activations per token */
    MOPT_QUANT_VALUES_I4 = 1u << 7,      /* SP24: kept values are int4 levels with an f16 scale per group of inputs */
    MOPT_QUANT_SCALE_E8M0 = 1u << 8,     /* MXFP: block scales are E8M0 powers of two (MXFP4, MXFP8), else E4M3 (NVFP4) */
    MOPT_QUANT_W_FP8 = 1u << 9           /* QINT: the weights rounded onto E4M3 with global_scale (W4A8_AWQ) */
};

/* The block-scaled float formats of MOPT_DTYPE_MXFP. */
typedef enum mopt_mxfp_kind {
    MOPT_MXFP_NONE = 0,
    MOPT_MXFP_NVFP4 = 1,
    MOPT_MXFP_MXFP4 = 2,
    MOPT_MXFP_MXFP8 = 3
} mopt_mxfp_kind;

/* Bytes of one 32-value block for b bits (0 for unsupported b). */
MOPT_API int32_t mopt_qint_block_bytes(int32_t bits);
/* Groups per row for `in` columns. */
MOPT_API int64_t mopt_qint_n_groups(int64_t in, int32_t group_size);

/* Packs integer levels q [out, in] (each in [0, 2^bits)) with scales [out, n_groups]
 * and zeros [out, n_groups] (NULL for symmetric) into a new QINT tensor. g_idx
 * (NULL or [in]) is copied. Fails on bad bits/group sizes or out-of-range levels. */
MOPT_API mopt_tensor *mopt_qint_pack(const char *name, int64_t out, int64_t in, int32_t bits, int32_t group_size,
                                     const uint8_t *q, const float *scales, const uint8_t *zeros, const int32_t *g_idx,
                                     mopt_error *err);
/* The level of element (row, col) of a QINT tensor. */
MOPT_API uint8_t mopt_qint_get(const mopt_tensor *t, int64_t row, int64_t col);

/* int8 weights with per-row scales. */
MOPT_API mopt_tensor *mopt_w8a8_pack(const char *name, int64_t out, int64_t in, const int8_t *q, const float *scales,
                                     mopt_error *err);
/* E4M3 bytes with n_scales = out (per channel) or 1 (per tensor) scales. */
MOPT_API mopt_tensor *mopt_fp8_pack(const char *name, int64_t out, int64_t in, const uint8_t *q, const float *scales,
                                    int64_t n_scales, uint32_t act_flags, float act_scale, mopt_error *err);

/* 2:4 sparse storage of W [out, in] (fp32, at most two non-zeros in every
 * group of four inputs of a row) with the kept values in `values` (F16, BF16
 * or F32, rounded to nearest even). Fails when `in` is not a multiple of 8 or
 * a group holds three or four non-zeros, naming the row and the group. */
MOPT_API mopt_tensor *mopt_sp24_pack(const char *name, int64_t out, int64_t in, mopt_dtype values, const float *W, mopt_error *err);
/* The same with int8 kept values: q [out, in] (at most two non-zeros in every
 * group of four) and one scale per row, scales [out] (finite, > 0). */
MOPT_API mopt_tensor *mopt_sp24_pack_i8(const char *name, int64_t out, int64_t in, const int8_t *q, const float *scales,
                                        mopt_error *err);
/* The same with int4 kept values: levels u [out, in] in [0, 16) (8 is zero; at
 * most two other levels in every group of four), groups of group_size inputs
 * (a multiple of 64, or -1) and scales [out, n_groups] (finite, > 0, rounded
 * to f16). */
MOPT_API mopt_tensor *mopt_sp24_pack_i4(const char *name, int64_t out, int64_t in, int32_t group_size, const uint8_t *u,
                                        const float *scales, mopt_error *err);

/* Bytes of one k-quant super-block for bits 2 to 6 (Q2_K ... Q6_K); 0 otherwise. */
MOPT_API int32_t mopt_kquant_block_bytes(int32_t bits);
/* A KQUANT tensor [out, in] (in a multiple of 256) holding a copy of `blocks`,
 * out * in / 256 super-blocks of the type `bits` names, rows one after another. */
MOPT_API mopt_tensor *mopt_kquant_pack(const char *name, int64_t out, int64_t in, int32_t bits, const void *blocks, mopt_error *err);

/* E4M3 conversions: round to nearest even, saturating at +-448. */
MOPT_API uint8_t mopt_f32_to_e4m3(float f);
MOPT_API float mopt_e4m3_to_f32(uint8_t b);

/* The format of an MXFP tensor (MOPT_MXFP_NONE for any other), its name
 * ("nvfp4", "mxfp4", "mxfp8"), and the values per block (16 or 32). */
MOPT_API mopt_mxfp_kind mopt_mxfp_kind_of(const mopt_tensor *t);
MOPT_API const char *mopt_mxfp_kind_name(mopt_mxfp_kind k);
MOPT_API int32_t mopt_mxfp_block(mopt_mxfp_kind k);
/* Quantizes W [out, in] (fp32, `in` a multiple of 32) into a new MXFP tensor
 * of format k as the layout comment above says; act_flags 0,
 * MOPT_QUANT_ACT_PER_TOKEN or (NVFP4) MOPT_QUANT_ACT_STATIC with act_scale
 * the activations' global scale. Fails naming the tensor on a bad shape,
 * flags or scale, or non-finite weights. */
MOPT_API mopt_tensor *mopt_mxfp_quantize(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, const float *W, uint32_t act_flags,
                                         float act_scale, mopt_error *err);
/* Same, with NVFP4's global scale taken from weight_amax (>= max|W|; 0: W's
 * own) instead of W alone: linears that read one input (q/k/v, gate/up) share
 * it, as vLLM and TensorRT-LLM fuse them into one GEMM with one global scale. */
MOPT_API mopt_tensor *mopt_mxfp_quantize_shared(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, const float *W,
                                                float weight_amax, uint32_t act_flags, float act_scale, mopt_error *err);
/* An MXFP tensor from stored bytes: values [out, in / 2] (4-bit) or [out, in]
 * (MXFP8), scales [out, in / block], and NVFP4's global scale (finite, > 0). */
MOPT_API mopt_tensor *mopt_mxfp_pack(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, const uint8_t *values,
                                     const uint8_t *scales, float global_scale, uint32_t act_flags, float act_scale, mopt_error *err);
/* Rounds x[n] (n a multiple of the block) onto format k's grid in place,
 * block by block: how activations are quantized at run time. NVFP4 takes g
 * as its global scale or, when g is 0, max|x| / (6 * 448). */
MOPT_API void mopt_mxfp_round(mopt_mxfp_kind k, float *x, int64_t n, float g);
/* E2M1: the 4-bit code of f (nearest even, saturating at +-6; NaN gives 0) and back. */
MOPT_API uint8_t mopt_f32_to_e2m1(float f);
MOPT_API float mopt_e2m1_to_f32(uint8_t code);

/* Dequantizes row `row` of any float or packed weight into out[ne[0]]. */
MOPT_API mopt_status mopt_weight_row_f32(const mopt_tensor *t, int64_t row, float *out, mopt_error *err);
/* Bytes a weight occupies as stored: packed values plus scales, zeros and g_idx. */
MOPT_API int64_t mopt_weight_storage_bytes(const mopt_tensor *t);

MOPT_EXTERN_C_END

#endif
