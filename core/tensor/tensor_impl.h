/* The tensor layer's internals: buffers and views. Never installed. */
#ifndef MOPT_TENSOR_IMPL_H
#define MOPT_TENSOR_IMPL_H

#include <string.h>

#include "base.h"
#include "mopt/tensor.h"

/* Maps a file read-only into a new buffer (refcount 1). */
mopt_buffer *mopt_buffer_mmap(const char *path, mopt_error *err);
/* Allocates a zeroed, 64-byte aligned heap buffer (refcount 1). */
mopt_buffer *mopt_buffer_heap(size_t size, mopt_error *err);
void mopt_buffer_retain(mopt_buffer *b);
void mopt_buffer_release(mopt_buffer *b);
/* Lets the kernel drop the whole pages of [p, p + n) of a file mapping b (nothing for a heap buffer): for bytes
 * that were copied out and will not be read again. The pages at its ends may hold a neighbour's and stay. */
void mopt_buffer_drop(const mopt_buffer *b, const void *p, size_t n);
/* Moves the heap storage of t (and of its scales, zero-points and g_idx) into
 * the file fd, from byte *end on (page-aligned; *end moves past it), and maps
 * it back read-only: the bytes stay the same, the memory becomes page cache
 * the kernel may drop. Storage shared with another tensor stays where it is. */
mopt_status mopt_tensor_spill(mopt_tensor *t, int fd, uint64_t *end, mopt_error *err);

/* Creates a tensor viewing `data` inside buffer b (takes a new reference).
 * dims are in PyTorch order. */
mopt_tensor *mopt_tensor_view(mopt_buffer *b, void *data, const char *name, mopt_dtype dtype, int32_t ndim,
                              const int64_t *dims, mopt_error *err);

/* Columns [col0, col0 + n) of a 2-D float tensor [R, C], transposed into a new
 * heap tensor [n, R] of the same dtype named `name`: out[i][j] = t[j][col0 + i]
 * (a Conv1D weight [in, out] becomes a linear [out, in]). */
mopt_tensor *mopt_tensor_transpose2d(const mopt_tensor *t, const char *name, int64_t col0, int64_t n, mopt_error *err);

/* A packed weight [out, in] of `row_bytes` per row, zero-filled, with an empty quant info. */
mopt_tensor *mopt_packed_new(const char *name, mopt_dtype dtype, int64_t out, int64_t in, size_t row_bytes, mopt_error *err);

/* A side tensor of a packed weight, named "NAME.SUFFIX" (scales, zeros, g_idx). */
mopt_tensor *mopt_packed_side_new(const char *name, const char *suffix, mopt_dtype dtype, int ndim, const int64_t *dims,
                                  mopt_error *err);
/* Gives packed t an F32 scale tensor [n] holding scales; frees t and returns NULL on failure. */
mopt_tensor *mopt_packed_f32_scales(mopt_tensor *t, const char *name, const float *scales, int64_t n, mopt_error *err);
/* F16 scales [out, ng]; like the above, frees t on failure. */
mopt_tensor *mopt_packed_f16_scales(mopt_tensor *t, const char *name, const float *scales, int64_t out, int64_t ng, mopt_error *err);

/* MXFP rows (layout in mopt/quant.h): the float each of blocks b0..b0+n-1
 * of `row` multiplies its values by (global scale included), and a whole
 * row dequantized. */
/* The reciprocal of x that reads back as x (1 / r == x in float) when one of
 * its float neighbours does, else 1 / x: compressed-tensors stores NVFP4's
 * global scales inverted, and mopt_mxfp_quantize picks scales for which this
 * holds, so they reload exactly. */
float mopt_exact_reciprocal(float x);
/* mopt_f32_to_e4m3 for a double: a quotient rounded onto E4M3 once. */
uint8_t mopt_e4m3_from_double(double f);
void mopt_mxfp_block_scales(const mopt_tensor *t, int64_t row, int64_t b0, int64_t n, float *out);
void mopt_mxfp_row_f32(const mopt_tensor *t, int64_t row, float *out);
/* QINT with MOPT_QUANT_W_FP8: n dequantized weights rounded onto E4M3 with the tensor's global_scale, in place. */
void mopt_qint_round_fp8(const mopt_quant_info *qi, float *w, int64_t n);

/* SP24 rows (layout in mopt/quant.h; rows padded to 4 bytes): the kept values
 * of `row` widened to fp32 vals[in/2], its position bytes, and the whole row
 * as dense fp32. */
void mopt_sp24_values_f32(const mopt_tensor *t, int64_t row, float *vals);
/* Bytes of a row's kept values for the quant flags (MOPT_QUANT_VALUES_*) and `in` inputs. */
size_t mopt_sp24_values_bytes(uint32_t flags, int64_t in);
/* mopt_sp24_pack_i8 from levels already held as floats (integers in -128..127), as the importer reads them. */
mopt_tensor *mopt_sp24_pack_i8_levels(const char *name, int64_t out, int64_t in, const float *levels, const float *scales, mopt_error *err);
const uint8_t *mopt_sp24_positions(const mopt_tensor *t, int64_t row);
void mopt_sp24_row_f32(const mopt_tensor *t, int64_t row, float *out);
/* An int4 row's signed levels (-8..7, 0 where pruned) as dense fp32 out[in]. */
void mopt_sp24_levels(const mopt_tensor *t, int64_t row, float *out);
/* out[in]: the in/2 kept values in its upper half become the dense row, in place. */
void mopt_sp24_spread(float *out, const uint8_t *pos, int64_t in);

/* The f16 stored (unaligned, little-endian) at p, as a float. */
static inline float mopt_f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return mopt_f16_to_f32(h);
}

/* All eight 6-bit scales and mins of a Q4_K/Q5_K block's 12 scale bytes at
 * once, four per 32-bit word: sub-blocks 0..3 keep the low 6 bits of bytes
 * 0..3 (scales) and 4..7 (mins); 4..7 take their low 4 bits from bytes 8..11
 * and their top 2 from the spare bits of bytes 0..7. */
static inline void mopt_kquant_scales_mins(const uint8_t *q, uint8_t sc[8], uint8_t m[8]) {
    uint32_t u0, u1, u2, w[4];
    memcpy(&u0, q, 4);
    memcpy(&u1, q + 4, 4);
    memcpy(&u2, q + 8, 4);
    w[0] = u0 & 0x3f3f3f3fu;
    w[1] = (u2 & 0x0f0f0f0fu) | ((u0 >> 6) & 0x03030303u) << 4;
    w[2] = u1 & 0x3f3f3f3fu;
    w[3] = ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 6) & 0x03030303u) << 4;
    memcpy(sc, w, 8);
    memcpy(m, w + 2, 8);
}

/* Q3_K's 6-bit scale j (0..15) as stored (level + 32) in the block's 12 scale bytes s: the low nibble of byte
 * j % 8 (the high one for j >= 8) under bits 2 (j / 4)..+1 of byte 8 + j % 4 */
static inline int mopt_q3k_scale(const uint8_t *s, int j) {
    return (j < 8 ? s[j] & 0xF : s[j - 8] >> 4) | ((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4;
}

/* One k-quant super-block (bits 2 to 6) as 256 fp32 values, and a KQUANT row as in fp32 values. */
void mopt_kquant_block_f32(int32_t bits, const uint8_t *block, float *y);
void mopt_kquant_row_f32(const mopt_tensor *t, int64_t row, float *out);

#endif
