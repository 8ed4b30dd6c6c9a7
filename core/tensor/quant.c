/* Packed weight formats (layouts in mopt/quant.h): packing, element access,
 * row dequantization and storage size. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "mopt/quant.h"
#include "tensor_impl.h"

int32_t mopt_qint_block_bytes(int32_t bits) {
    switch (bits) {
    case 2: return 8;
    case 3: return 12;
    case 4: return 16;
    case 8: return 32;
    default: return 0;
    }
}

int64_t mopt_qint_n_groups(int64_t in, int32_t group_size) {
    return group_size <= 0 ? 1 : (in + group_size - 1) / group_size;
}

/* A packed tensor of `rows` rows of `row_bytes` bytes over `in` logical columns. */
mopt_tensor *mopt_packed_new(const char *name, mopt_dtype dtype, int64_t out, int64_t in, size_t row_bytes,
                               mopt_error *err) {
    int64_t dims[2] = {out, (int64_t)row_bytes};
    mopt_tensor *t = mopt_tensor_new(name, MOPT_DTYPE_U8, 2, dims, err);
    if (!t) return NULL;
    t->dtype = dtype;
    t->ne[0] = in;
    t->ne[1] = out;
    t->nb[0] = 0; /* not addressable per element */
    t->nb[1] = row_bytes;
    t->nb[2] = t->nb[3] = row_bytes * (size_t)out;
    t->quant = calloc(1, sizeof *t->quant);
    if (!t->quant) {
        mopt_tensor_free(t);
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    return t;
}

/* A side tensor of a packed weight ("NAME.scales", ".zeros", ".g_idx"). */
mopt_tensor *mopt_packed_side_new(const char *name, const char *suffix, mopt_dtype dtype, int ndim, const int64_t *dims,
                             mopt_error *err) {
    char sub[MOPT_MAX_NAME + 16];
    snprintf(sub, sizeof sub, "%.80s.%s", name, suffix);
    return mopt_tensor_new(sub, dtype, ndim, dims, err);
}

/* One f32 scale per row (or one for the tensor) for the 8-bit per-channel formats. */
mopt_tensor *mopt_packed_f32_scales(mopt_tensor *t, const char *name, const float *scales, int64_t n, mopt_error *err) {
    int64_t sd[1] = {n};
    t->quant->scale = mopt_packed_side_new(name, "scales", MOPT_DTYPE_F32, 1, sd, err);
    if (!t->quant->scale) {
        mopt_tensor_free(t);
        return NULL;
    }
    memcpy(t->quant->scale->data, scales, (size_t)n * sizeof(float));
    return t;
}

/* F16 scales [out, ng] (QINT and 2:4 int4), rounded to nearest even. */
mopt_tensor *mopt_packed_f16_scales(mopt_tensor *t, const char *name, const float *scales, int64_t out, int64_t ng, mopt_error *err) {
    const int64_t sd[2] = {out, ng};
    t->quant->scale = mopt_packed_side_new(name, "scales", MOPT_DTYPE_F16, 2, sd, err);
    if (!t->quant->scale) {
        mopt_tensor_free(t);
        return NULL;
    }
    for (int64_t i = 0; i < out * ng; i++) ((uint16_t *)t->quant->scale->data)[i] = mopt_f32_to_f16(scales[i]);
    return t;
}

static void put_block(uint8_t *dst, const uint8_t *v, int32_t bits) {
    switch (bits) {
    case 8: memcpy(dst, v, 32); break;
    case 4:
        for (int j = 0; j < 16; j++) dst[j] = (uint8_t)(v[j] | v[j + 16] << 4);
        break;
    case 2:
        for (int j = 0; j < 8; j++) dst[j] = (uint8_t)(v[j] | v[j + 8] << 2 | v[j + 16] << 4 | v[j + 24] << 6);
        break;
    case 3: {
        uint32_t mask = 0;
        for (int j = 0; j < 8; j++)
            dst[j] = (uint8_t)((v[j] & 3) | (v[j + 8] & 3) << 2 | (v[j + 16] & 3) << 4 | (v[j + 24] & 3) << 6);
        for (int j = 0; j < 32; j++) mask |= (uint32_t)((v[j] >> 2) & 1) << j;
        for (int k = 0; k < 4; k++) dst[8 + k] = (uint8_t)(mask >> (8 * k));
        break;
    }
    }
}

static uint8_t get_level(const uint8_t *block, int32_t bits, int j) {
    switch (bits) {
    case 8: return block[j];
    case 4: return j < 16 ? block[j] & 15 : block[j - 16] >> 4;
    case 2: return (block[j & 7] >> (2 * (j >> 3))) & 3;
    case 3: {
        uint8_t lo = (block[j & 7] >> (2 * (j >> 3))) & 3;
        uint8_t hi = (block[8 + (j >> 3)] >> (j & 7)) & 1;
        return (uint8_t)(lo | hi << 2);
    }
    }
    return 0;
}

mopt_tensor *mopt_qint_pack(const char *name, int64_t out, int64_t in, int32_t bits, int32_t group_size,
                            const uint8_t *q, const float *scales, const uint8_t *zeros, const int32_t *g_idx,
                            mopt_error *err) {
    const int32_t bb = mopt_qint_block_bytes(bits);
    if (!bb) {
        MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %d-bit packing is not supported (2, 3, 4 or 8)", name, bits);
        return NULL;
    }
    if (group_size != -1 && (group_size <= 0 || group_size % MOPT_QBLOCK)) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: group size %d must be a multiple of %d (or -1 for a whole row)", name,
                  group_size, MOPT_QBLOCK);
        return NULL;
    }
    const int64_t nblk = (in + MOPT_QBLOCK - 1) / MOPT_QBLOCK, ng = mopt_qint_n_groups(in, group_size);
    mopt_tensor *t = mopt_packed_new(name, MOPT_DTYPE_QINT, out, in, (size_t)(nblk * bb), err);
    if (!t) return NULL;
    t->quant->bits = bits;
    t->quant->group_size = group_size;
    t->quant->flags = zeros ? 0 : MOPT_QUANT_SYM;
    const uint8_t maxq = (uint8_t)((1u << bits) - 1);
    for (int64_t r = 0; r < out; r++) {
        uint8_t *row = (uint8_t *)t->data + (size_t)r * t->nb[1];
        for (int64_t b = 0; b < nblk; b++) {
            uint8_t v[32] = {0};
            for (int j = 0; j < 32 && b * 32 + j < in; j++) {
                uint8_t x = q[r * in + b * 32 + j];
                if (x > maxq) {
                    MOPT_FAIL(err, MOPT_E_INVALID, "%s: level %u at [%lld, %lld] exceeds %u for %d bits", name, x,
                              (long long)r, (long long)(b * 32 + j), maxq, bits);
                    mopt_tensor_free(t);
                    return NULL;
                }
                v[j] = x;
            }
            put_block(row + b * bb, v, bits);
        }
    }
    int64_t sdims[2] = {out, ng};
    if (!mopt_packed_f16_scales(t, name, scales, out, ng, err)) return NULL;
    if (zeros) {
        t->quant->zero = mopt_packed_side_new(name, "zeros", MOPT_DTYPE_U8, 2, sdims, err);
        if (!t->quant->zero) goto fail;
        memcpy(t->quant->zero->data, zeros, (size_t)(out * ng));
    }
    if (g_idx) {
        int64_t gd[1] = {in};
        t->quant->g_idx = mopt_packed_side_new(name, "g_idx", MOPT_DTYPE_I32, 1, gd, err);
        if (!t->quant->g_idx) goto fail;
        for (int64_t c = 0; c < in; c++) {
            if (g_idx[c] < 0 || g_idx[c] >= ng) {
                MOPT_FAIL(err, MOPT_E_INVALID, "%s: g_idx[%lld] = %d outside 0..%lld", name, (long long)c, g_idx[c],
                          (long long)ng - 1);
                goto fail;
            }
        }
        memcpy(t->quant->g_idx->data, g_idx, (size_t)in * sizeof *g_idx);
    }
    return t;
fail:
    mopt_tensor_free(t);
    return NULL;
}

uint8_t mopt_qint_get(const mopt_tensor *t, int64_t row, int64_t col) {
    const int32_t bits = t->quant->bits, bb = mopt_qint_block_bytes(bits);
    const uint8_t *block = (const uint8_t *)t->data + (size_t)row * t->nb[1] + (size_t)(col / 32) * (size_t)bb;
    return get_level(block, bits, (int)(col % 32));
}

mopt_tensor *mopt_w8a8_pack(const char *name, int64_t out, int64_t in, const int8_t *q, const float *scales,
                            mopt_error *err) {
    mopt_tensor *t = mopt_packed_new(name, MOPT_DTYPE_W8A8, out, in, (size_t)in, err);
    if (!t) return NULL;
    memcpy(t->data, q, (size_t)(out * in));
    t->quant->bits = 8;
    t->quant->group_size = -1;
    t->quant->flags = MOPT_QUANT_SYM;
    return mopt_packed_f32_scales(t, name, scales, out, err);
}

mopt_tensor *mopt_fp8_pack(const char *name, int64_t out, int64_t in, const uint8_t *q, const float *scales,
                           int64_t n_scales, uint32_t act_flags, float act_scale, mopt_error *err) {
    if (n_scales != out && n_scales != 1) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: %lld scales for %lld rows (need one per row or one)", name,
                  (long long)n_scales, (long long)out);
        return NULL;
    }
    mopt_tensor *t = mopt_packed_new(name, MOPT_DTYPE_FP8, out, in, (size_t)in, err);
    if (!t) return NULL;
    memcpy(t->data, q, (size_t)(out * in));
    t->quant->bits = 8;
    t->quant->group_size = -1;
    t->quant->flags = act_flags | (n_scales == 1 ? MOPT_QUANT_PER_TENSOR : 0);
    t->quant->act_scale = act_scale;
    return mopt_packed_f32_scales(t, name, scales, n_scales, err);
}

/* --- E4M3 -------------------------------------------------------------------- */

/* In double, so that a quotient (the NVFP4 block scale) is rounded onto the grid once. */
uint8_t mopt_e4m3_from_double(double f) {
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    double a = fabs(f);
    if (a >= 464.0) return sign | 0x7e; /* saturate: 448 is the largest finite */
    if (a < 0.015625) {                 /* below 2^-6: subnormal steps of 2^-9 (8 rounds up to the first normal) */
        int q = (int)nearbyint(a * 512.0);
        return sign | (uint8_t)q;
    }
    int ex;
    frexp(a, &ex);
    int e = ex - 1; /* a = 1.m * 2^e */
    int m = (int)nearbyint((ldexp(a, -e) - 1.0) * 8.0);
    if (m == 8) {
        m = 0;
        e++;
    }
    if (e > 8 || (e == 8 && m > 6)) return sign | 0x7e;
    return sign | (uint8_t)((e + 7) << 3 | m);
}

uint8_t mopt_f32_to_e4m3(float f) { return mopt_e4m3_from_double(f); }

float mopt_e4m3_to_f32(uint8_t b) {
    int e = (b >> 3) & 15, m = b & 7;
    float v;
    if ((b & 0x7f) == 0x7f) return NAN;
    if (e == 0) v = ldexpf((float)m, -9);
    else v = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return (b & 0x80) ? -v : v;
}

/* --- rows and sizes ------------------------------------------------------------ */

void mopt_qint_round_fp8(const mopt_quant_info *qi, float *w, int64_t n) {
    const float g = qi->global_scale;
    for (int64_t i = 0; i < n; i++) w[i] = mopt_e4m3_to_f32(mopt_f32_to_e4m3(w[i] / g)) * g;
}

mopt_status mopt_weight_row_f32(const mopt_tensor *t, int64_t row, float *out, mopt_error *err) {
    const int64_t in = t->ne[0];
    if (row < 0 || row >= t->ne[1]) return MOPT_FAIL(err, MOPT_E_INVALID, "%s: row %lld out of range", t->name, (long long)row);
    if (t->dtype < MOPT_DTYPE_PACKED_FIRST) return mopt_tensor_read_f32(t, row * in, in, out, err);
    const mopt_quant_info *qi = t->quant;
    const uint8_t *p = (const uint8_t *)t->data + (size_t)row * t->nb[1];
    if (t->dtype == MOPT_DTYPE_W8A8) {
        float s = ((const float *)qi->scale->data)[row];
        for (int64_t c = 0; c < in; c++) out[c] = (float)(int8_t)p[c] * s;
        return MOPT_OK;
    }
    if (t->dtype == MOPT_DTYPE_FP8) {
        float s = ((const float *)qi->scale->data)[(qi->flags & MOPT_QUANT_PER_TENSOR) ? 0 : row];
        for (int64_t c = 0; c < in; c++) out[c] = mopt_e4m3_to_f32(p[c]) * s;
        return MOPT_OK;
    }
    if (t->dtype == MOPT_DTYPE_SP24) {
        mopt_sp24_row_f32(t, row, out);
        return MOPT_OK;
    }
    if (t->dtype == MOPT_DTYPE_KQUANT) {
        mopt_kquant_row_f32(t, row, out);
        return MOPT_OK;
    }
    if (t->dtype == MOPT_DTYPE_MXFP) {
        mopt_mxfp_row_f32(t, row, out);
        return MOPT_OK;
    }
    if (t->dtype != MOPT_DTYPE_QINT) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: unknown packed dtype", t->name);
    const int64_t ng = qi->scale->ne[0];
    const uint16_t *sc = (const uint16_t *)qi->scale->data + row * ng;
    const uint8_t *zp = qi->zero ? (const uint8_t *)qi->zero->data + row * ng : NULL;
    const int32_t *gi = qi->g_idx ? (const int32_t *)qi->g_idx->data : NULL;
    const float zsym = (float)(1 << (qi->bits - 1));
    for (int64_t c = 0; c < in; c++) {
        int64_t g = gi ? gi[c] : (qi->group_size > 0 ? c / qi->group_size : 0);
        float z = zp ? (float)zp[g] : zsym;
        out[c] = ((float)mopt_qint_get(t, row, c) - z) * mopt_f16_to_f32(sc[g]);
    }
    if (qi->flags & MOPT_QUANT_W_FP8) mopt_qint_round_fp8(qi, out, in);
    return MOPT_OK;
}

int64_t mopt_weight_storage_bytes(const mopt_tensor *t) {
    int64_t n = (int64_t)mopt_tensor_nbytes(t);
    if (t->quant) {
        if (t->quant->scale) n += (int64_t)mopt_tensor_nbytes(t->quant->scale);
        if (t->quant->zero) n += (int64_t)mopt_tensor_nbytes(t->quant->zero);
        if (t->quant->g_idx) n += (int64_t)mopt_tensor_nbytes(t->quant->g_idx);
        if (mopt_mxfp_kind_of(t) == MOPT_MXFP_NVFP4 || (t->quant->flags & MOPT_QUANT_W_FP8))
            n += (int64_t)sizeof(float); /* the global scale (NVFP4's; W4A8_AWQ's weight_scale_2) */
    }
    return n;
}
