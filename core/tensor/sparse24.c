/* 2:4 sparse weights (MOPT_DTYPE_SP24, layout in mopt/quant.h): packing a
 * masked matrix and reading rows back. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mopt/quant.h"
#include "tensor_impl.h"

size_t mopt_sp24_values_bytes(uint32_t flags, int64_t in) {
    if (flags & MOPT_QUANT_VALUES_I4) return (size_t)in / 4;
    return (size_t)in / 2 * (flags & MOPT_QUANT_VALUES_F32 ? 4 : flags & MOPT_QUANT_VALUES_I8 ? 1 : 2);
}

/* Kept value k of a row: a float in the row's dtype, an int8 level, or an int4 level (v + 8) in QINT's 4-bit blocks. */
static void put_value(uint8_t *row, int64_t k, float v, uint32_t flags) {
    if (flags & MOPT_QUANT_VALUES_I4) {
        uint8_t *b = row + k / 32 * 16 + k % 16;
        *b = (uint8_t)(*b | ((uint8_t)((int)v + 8) << (k % 32 >= 16 ? 4 : 0)));
    } else if (flags & MOPT_QUANT_VALUES_F32) memcpy(row + 4 * k, &v, 4);
    else if (flags & MOPT_QUANT_VALUES_I8) *(int8_t *)(row + k) = (int8_t)v;
    else {
        const uint16_t h = flags & MOPT_QUANT_VALUES_BF16 ? mopt_f32_to_bf16(v) : mopt_f32_to_f16(v);
        memcpy(row + 2 * k, &h, 2);
    }
}

/* Kept int4 value k of a row, as its signed level. */
static float i4_level(const uint8_t *row, int64_t k) {
    const uint8_t b = row[k / 32 * 16 + k % 16];
    return (float)((k % 32 >= 16 ? b >> 4 : b & 15) - 8);
}

/* The packed rows of W (values already integer levels, around 0, when flags say I8 or I4). */
static mopt_tensor *sp24_build(const char *name, int64_t out, int64_t in, uint32_t flags, const float *W, mopt_error *err) {
    const int64_t mult = flags & MOPT_QUANT_VALUES_I4 ? 64 : 8;
    if (in <= 0 || in % mult || out <= 0) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: 2:4 storage needs a positive input width that is a multiple of %lld (got %lld)", name,
                  (long long)mult, (long long)in);
        return NULL;
    }
    const size_t vbytes = mopt_sp24_values_bytes(flags, in);
    for (int64_t r = 0; r < out; r++) /* refuse before allocating */
        for (int64_t g = 0; g < in / 4; g++) {
            const float *w = W + r * in + 4 * g;
            if ((w[0] != 0) + (w[1] != 0) + (w[2] != 0) + (w[3] != 0) > 2) {
                MOPT_FAIL(err, MOPT_E_INVALID, "%s: row %lld, inputs %lld..%lld hold more than two non-zeros: not 2:4", name, (long long)r,
                          (long long)(4 * g), (long long)(4 * g + 3));
                return NULL;
            }
        }
    /* rows padded to 4 bytes so every row's values are aligned for their dtype */
    mopt_tensor *t = mopt_packed_new(name, MOPT_DTYPE_SP24, out, in, (vbytes + (size_t)in / 8 + 3) / 4 * 4, err);
    if (!t) return NULL;
    t->quant->bits = (int32_t)(vbytes * 16 / (size_t)in);
    t->quant->group_size = 4;
    t->quant->flags = flags;
    for (int64_t r = 0; r < out; r++) {
        uint8_t *row = (uint8_t *)t->data + (size_t)r * t->nb[1], *pos = row + vbytes;
        for (int64_t g = 0; g < in / 4; g++) {
            const float *w = W + r * in + 4 * g;
            int keep[2], n = 0;
            for (int i = 0; i < 4 && n < 2; i++)
                if (w[i] != 0) keep[n++] = i;
            for (int i = 0; i < 4 && n < 2; i++) /* pad with zeros at the lowest free positions, in order */
                if (w[i] == 0 && (n == 0 || keep[0] != i)) keep[n++] = i;
            if (keep[0] > keep[1]) {
                const int k = keep[0];
                keep[0] = keep[1], keep[1] = k;
            }
            pos[g / 2] |= (uint8_t)((keep[0] | keep[1] << 2) << (4 * (g % 2)));
            for (int k = 0; k < 2; k++) put_value(row, 2 * g + k, w[keep[k]], flags);
        }
    }
    return t;
}

mopt_tensor *mopt_sp24_pack(const char *name, int64_t out, int64_t in, mopt_dtype values, const float *W, mopt_error *err) {
    if (values != MOPT_DTYPE_F16 && values != MOPT_DTYPE_BF16 && values != MOPT_DTYPE_F32) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: 2:4 values must be f16, bf16 or f32, not %s", name, mopt_dtype_name(values));
        return NULL;
    }
    return sp24_build(name, out, in, values == MOPT_DTYPE_BF16 ? MOPT_QUANT_VALUES_BF16 : values == MOPT_DTYPE_F32 ? MOPT_QUANT_VALUES_F32 : 0,
                      W, err);
}

mopt_tensor *mopt_sp24_pack_i8_levels(const char *name, int64_t out, int64_t in, const float *levels, const float *scales, mopt_error *err) {
    for (int64_t r = 0; r < out; r++)
        if (!(scales[r] > 0) || !isfinite(scales[r])) {
            MOPT_FAIL(err, MOPT_E_INVALID, "%s: row %lld has scale %g; 2:4 int8 scales must be finite and positive", name, (long long)r,
                      (double)scales[r]);
            return NULL;
        }
    mopt_tensor *t = sp24_build(name, out, in, MOPT_QUANT_VALUES_I8, levels, err);
    if (!t) return NULL;
    t->quant->flags |= MOPT_QUANT_SYM;
    return mopt_packed_f32_scales(t, name, scales, out, err);
}

mopt_tensor *mopt_sp24_pack_i8(const char *name, int64_t out, int64_t in, const int8_t *q, const float *scales, mopt_error *err) {
    float *W = out > 0 && in > 0 ? malloc((size_t)(out * in) * sizeof *W) : NULL; /* the levels, exactly */
    if (!W && out > 0 && in > 0) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "%s: out of memory", name);
        return NULL;
    }
    for (int64_t i = 0; W && i < out * in; i++) W[i] = q[i];
    mopt_tensor *t = mopt_sp24_pack_i8_levels(name, out, in, W, scales, err);
    free(W);
    return t;
}

mopt_tensor *mopt_sp24_pack_i4(const char *name, int64_t out, int64_t in, int32_t group_size, const uint8_t *u, const float *scales,
                               mopt_error *err) {
    if (group_size != -1 && (group_size <= 0 || group_size % 64)) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: 2:4 int4 groups must be a multiple of 64 inputs or -1 (got %d)", name, group_size);
        return NULL;
    }
    const int64_t ng = out > 0 && in > 0 ? mopt_qint_n_groups(in, group_size) : 0;
    for (int64_t i = 0; i < out * ng; i++)
        if (!(scales[i] > 0) || !isfinite(mopt_f16_to_f32(mopt_f32_to_f16(scales[i])))) {
            MOPT_FAIL(err, MOPT_E_INVALID, "%s: row %lld has scale %g; 2:4 int4 scales must be positive and fit in f16", name,
                      (long long)(i / ng), (double)scales[i]);
            return NULL;
        }
    float *W = out > 0 && in > 0 ? malloc((size_t)(out * in) * sizeof *W) : NULL; /* the levels around zero, exactly */
    if (!W && out > 0 && in > 0) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "%s: out of memory", name);
        return NULL;
    }
    for (int64_t i = 0; W && i < out * in; i++) {
        if (u[i] > 15) {
            MOPT_FAIL(err, MOPT_E_INVALID, "%s: level %u at [%lld, %lld] exceeds 15 for int4", name, u[i], (long long)(i / in),
                      (long long)(i % in));
            free(W);
            return NULL;
        }
        W[i] = (float)u[i] - 8.0f;
    }
    mopt_tensor *t = sp24_build(name, out, in, MOPT_QUANT_VALUES_I4 | MOPT_QUANT_SYM, W, err);
    free(W);
    if (!t) return NULL;
    t->quant->group_size = group_size;
    return mopt_packed_f16_scales(t, name, scales, out, ng, err);
}

const uint8_t *mopt_sp24_positions(const mopt_tensor *t, int64_t row) {
    return (const uint8_t *)t->data + (size_t)row * t->nb[1] + mopt_sp24_values_bytes(t->quant->flags, t->ne[0]);
}

void mopt_sp24_values_f32(const mopt_tensor *t, int64_t row, float *vals) {
    const uint8_t *p = (const uint8_t *)t->data + (size_t)row * t->nb[1];
    const int64_t n = t->ne[0] / 2;
    const uint32_t f = t->quant->flags;
    if (f & MOPT_QUANT_VALUES_F32) {
        memcpy(vals, p, (size_t)n * sizeof(float));
        return;
    }
    if (f & MOPT_QUANT_VALUES_I8) {
        const float s = ((const float *)t->quant->scale->data)[row];
        for (int64_t k = 0; k < n; k++) vals[k] = (float)(int8_t)p[k] * s;
        return;
    }
    if (f & MOPT_QUANT_VALUES_I4) { /* a group of gs inputs holds gs/2 kept values */
        const int64_t ng = t->quant->scale->ne[0], per = t->quant->group_size > 0 ? t->quant->group_size / 2 : n;
        const uint16_t *sc = (const uint16_t *)t->quant->scale->data + row * ng;
        for (int64_t k = 0; k < n; k++) vals[k] = i4_level(p, k) * mopt_f16_to_f32(sc[k / per]);
        return;
    }
    for (int64_t k = 0; k < n; k++) {
        uint16_t h;
        memcpy(&h, p + 2 * k, 2);
        vals[k] = f & MOPT_QUANT_VALUES_BF16 ? mopt_bf16_to_f32(h) : mopt_f16_to_f32(h);
    }
}

void mopt_sp24_levels(const mopt_tensor *t, int64_t row, float *out) {
    const uint8_t *p = (const uint8_t *)t->data + (size_t)row * t->nb[1];
    const int64_t n = t->ne[0] / 2;
    for (int64_t k = 0; k < n; k++) out[n + k] = i4_level(p, k);
    mopt_sp24_spread(out, mopt_sp24_positions(t, row), t->ne[0]);
}

void mopt_sp24_row_f32(const mopt_tensor *t, int64_t row, float *out) {
    mopt_sp24_values_f32(t, row, out + t->ne[0] / 2);
    mopt_sp24_spread(out, mopt_sp24_positions(t, row), t->ne[0]);
}

void mopt_sp24_spread(float *out, const uint8_t *pos, int64_t in) {
    const float *v = out + in / 2;
    for (int64_t g = 0; g < in / 4; g++) { /* group g reads values 2g, 2g+1 at or after where it writes */
        const uint8_t nib = (uint8_t)(pos[g / 2] >> (4 * (g % 2)) & 15);
        const float a = v[2 * g], b = v[2 * g + 1];
        out[4 * g] = out[4 * g + 1] = out[4 * g + 2] = out[4 * g + 3] = 0;
        out[4 * g + (nib & 3)] = a;
        out[4 * g + (nib >> 2)] = b;
    }
}
