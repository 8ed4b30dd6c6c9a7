/* Tensor descriptors, dtype table and the scalar float conversions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor_impl.h"
#include "mopt/quant.h"
#include "mopt/tensor.h"

size_t mopt_dtype_size(mopt_dtype t) {
    switch (t) {
    case MOPT_DTYPE_F32: return 4;
    case MOPT_DTYPE_F16: return 2;
    case MOPT_DTYPE_BF16: return 2;
    case MOPT_DTYPE_I8: return 1;
    case MOPT_DTYPE_I32: return 4;
    case MOPT_DTYPE_U8: return 1;
    case MOPT_DTYPE_I64: return 8;
    case MOPT_DTYPE_I16: return 2;
    case MOPT_DTYPE_F8E4M3: return 1;
    default: return 0;
    }
}

const char *mopt_dtype_name(mopt_dtype t) {
    switch (t) {
    case MOPT_DTYPE_F32: return "f32";
    case MOPT_DTYPE_F16: return "f16";
    case MOPT_DTYPE_BF16: return "bf16";
    case MOPT_DTYPE_I8: return "i8";
    case MOPT_DTYPE_I32: return "i32";
    case MOPT_DTYPE_U8: return "u8";
    case MOPT_DTYPE_I64: return "i64";
    case MOPT_DTYPE_I16: return "i16";
    case MOPT_DTYPE_F8E4M3: return "f8_e4m3";
    case MOPT_DTYPE_QINT: return "qint";
    case MOPT_DTYPE_W8A8: return "w8a8";
    case MOPT_DTYPE_FP8: return "fp8_e4m3";
    case MOPT_DTYPE_SP24: return "sp24";
    case MOPT_DTYPE_KQUANT: return "kquant";
    case MOPT_DTYPE_MXFP: return "mxfp";
    default: return "?";
    }
}

/* --- float conversions ------------------------------------------------------ */

static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float mopt_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t mopt_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                                          /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float mopt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0) {
        if (mant == 0) return bits_f32(sign);
        /* subnormal: value = mant * 2^-24 */
        float v = (float)mant * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (mant << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

uint16_t mopt_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) return sign | 0x7e00u; /* NaN */
    if (absu >= 0x477ff000u) return sign | 0x7c00u; /* rounds to >= 65520: inf */
    if (absu < 0x38800000u) {
        /* subnormal or zero in f16: round |f| / 2^-24 to nearest even */
        float a = bits_f32(absu);
        float m = nearbyintf(a * 16777216.0f);
        return sign | (uint16_t)m;
    }
    uint32_t r = absu + 0xfffu + ((absu >> 13) & 1u); /* round mantissa to 10 bits, nearest even */
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

/* --- descriptors ------------------------------------------------------------ */

int64_t mopt_tensor_nelements(const mopt_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < MOPT_MAX_DIMS; i++) n *= t->ne[i];
    return n;
}

size_t mopt_tensor_nbytes(const mopt_tensor *t) {
    if (t->dtype >= MOPT_DTYPE_PACKED_FIRST) /* rows of packed bytes; scales and zeros are separate tensors */
        return t->nb[1] * (size_t)t->ne[1] * (size_t)t->ne[2] * (size_t)t->ne[3];
    return (size_t)mopt_tensor_nelements(t) * mopt_dtype_size(t->dtype);
}

bool mopt_tensor_is_contiguous(const mopt_tensor *t) {
    size_t expect = mopt_dtype_size(t->dtype);
    for (int i = 0; i < MOPT_MAX_DIMS; i++) {
        if (t->ne[i] != 1 && t->nb[i] != expect) return false;
        expect *= (size_t)t->ne[i];
    }
    return true;
}

const char *mopt_tensor_shape_str(const mopt_tensor *t, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, len - off, "[");
    for (int i = t->ndim - 1; i >= 0 && off < len; i--)
        off += (size_t)snprintf(buf + off, len - off, "%lld%s", (long long)t->ne[i], i ? ", " : "");
    if (off < len) snprintf(buf + off, len - off, "]");
    return buf;
}

static void set_shape(mopt_tensor *t, mopt_dtype dtype, int32_t ndim, const int64_t *dims) {
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < MOPT_MAX_DIMS; i++) t->ne[i] = 1;
    for (int i = 0; i < ndim; i++) t->ne[i] = dims[ndim - 1 - i];
    t->nb[0] = mopt_dtype_size(dtype);
    for (int i = 1; i < MOPT_MAX_DIMS; i++) t->nb[i] = t->nb[i - 1] * (size_t)t->ne[i - 1];
}

mopt_tensor *mopt_tensor_view(mopt_buffer *b, void *data, const char *name, mopt_dtype dtype, int32_t ndim,
                              const int64_t *dims, mopt_error *err) {
    if (ndim < 1 || ndim > MOPT_MAX_DIMS) {
        MOPT_FAIL(err, MOPT_E_INVALID, "tensor %s: %d dimensions (1..%d supported)", name, ndim, MOPT_MAX_DIMS);
        return NULL;
    }
    mopt_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    set_shape(t, dtype, ndim, dims);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->data = data;
    t->buffer = b;
    t->device = b ? b->device : MOPT_DEVICE_CPU;
    mopt_buffer_retain(b);
    return t;
}

mopt_tensor *mopt_tensor_new(const char *name, mopt_dtype dtype, int32_t ndim, const int64_t *dims,
                             mopt_error *err) {
    uint64_t n = mopt_dtype_size(dtype);
    if (n == 0) {
        MOPT_FAIL(err, MOPT_E_INVALID, "tensor %s: dtype %d has no element size", name, (int)dtype);
        return NULL;
    }
    if (ndim < 1 || ndim > MOPT_MAX_DIMS) {
        MOPT_FAIL(err, MOPT_E_INVALID, "tensor %s: %d dimensions (1..%d supported)", name, ndim, MOPT_MAX_DIMS);
        return NULL;
    }
    for (int i = 0; i < ndim; i++) {
        if (dims[i] < 0 || mopt_mul_overflows(n, (uint64_t)dims[i], &n)) {
            MOPT_FAIL(err, MOPT_E_INVALID, "tensor %s: shape too large", name);
            return NULL;
        }
    }
    mopt_buffer *b = mopt_buffer_heap((size_t)n, err);
    if (!b) return NULL;
    mopt_tensor *t = mopt_tensor_view(b, b->base, name, dtype, ndim, dims, err);
    mopt_buffer_release(b); /* the tensor holds the only reference now */
    return t;
}

mopt_tensor *mopt_tensor_transpose2d(const mopt_tensor *t, const char *name, int64_t col0, int64_t n, mopt_error *err) {
    if (t->ndim != 2 || t->dtype >= MOPT_DTYPE_PACKED_FIRST || !mopt_tensor_is_contiguous(t) || col0 < 0 || n < 0 ||
        col0 + n > t->ne[0]) {
        MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "tensor %s: cannot transpose columns %lld..%lld of a %d-D %s tensor", t->name,
                  (long long)col0, (long long)(col0 + n), t->ndim, mopt_dtype_name(t->dtype));
        return NULL;
    }
    const int64_t R = t->ne[1], C = t->ne[0];
    int64_t dims[2] = {n, R};
    mopt_tensor *o = mopt_tensor_new(name, t->dtype, 2, dims, err);
    if (!o) return NULL;
    const size_t es = mopt_dtype_size(t->dtype);
    const char *src = t->data;
    char *dst = o->data;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < R; j++) memcpy(dst + (size_t)(i * R + j) * es, src + (size_t)(j * C + col0 + i) * es, es);
    return o;
}

void mopt_tensor_free(mopt_tensor *t) {
    if (!t) return;
    if (t->quant) {
        mopt_tensor_free(t->quant->scale);
        mopt_tensor_free(t->quant->zero);
        mopt_tensor_free(t->quant->g_idx);
        free(t->quant);
    }
    mopt_buffer_release(t->buffer);
    free(t);
}

mopt_status mopt_tensor_read_f32(const mopt_tensor *t, int64_t offset, int64_t n, float *out, mopt_error *err) {
    if (offset < 0 || n < 0 || offset + n > mopt_tensor_nelements(t))
        return MOPT_FAIL(err, MOPT_E_INVALID, "tensor %s: read of %lld elements at %lld out of range", t->name,
                         (long long)n, (long long)offset);
    if (t->dtype < MOPT_DTYPE_PACKED_FIRST && !mopt_tensor_is_contiguous(t))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "tensor %s: not contiguous", t->name);
    switch (t->dtype) {
    case MOPT_DTYPE_F32: memcpy(out, (const float *)t->data + offset, (size_t)n * 4); break;
    case MOPT_DTYPE_F16: {
        const uint16_t *p = (const uint16_t *)t->data + offset;
        for (int64_t i = 0; i < n; i++) out[i] = mopt_f16_to_f32(p[i]);
        break;
    }
    case MOPT_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)t->data + offset;
        for (int64_t i = 0; i < n; i++) out[i] = mopt_bf16_to_f32(p[i]);
        break;
    }
    default:
        if (t->dtype >= MOPT_DTYPE_PACKED_FIRST) { /* dequantize whole rows, keep the requested span */
            const int64_t in = t->ne[0];
            float *row = malloc((size_t)in * sizeof *row);
            if (!row) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            for (int64_t i = offset; i < offset + n;) {
                int64_t r = i / in, c0 = i % in, k = in - c0 < offset + n - i ? in - c0 : offset + n - i;
                mopt_status st = mopt_weight_row_f32(t, r, row, err);
                if (st) {
                    free(row);
                    return st;
                }
                memcpy(out + (i - offset), row + c0, (size_t)k * sizeof(float));
                i += k;
            }
            free(row);
            return MOPT_OK;
        }
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "tensor %s: dtype %s cannot be read as f32", t->name,
                         mopt_dtype_name(t->dtype));
    }
    return MOPT_OK;
}

mopt_tensor *mopt_tensor_from_f32(const char *name, mopt_dtype dtype, int32_t ndim, const int64_t *dims, const float *src,
                                  mopt_error *err) {
    if (dtype != MOPT_DTYPE_F32 && dtype != MOPT_DTYPE_F16 && dtype != MOPT_DTYPE_BF16) {
        MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %s is not a float dtype to store fp32 values in", name, mopt_dtype_name(dtype));
        return NULL;
    }
    mopt_tensor *t = mopt_tensor_new(name, dtype, ndim, dims, err);
    if (!t) return NULL;
    const int64_t n = mopt_tensor_nelements(t);
    for (int64_t k = 0; k < n; k++) switch (dtype) {
        case MOPT_DTYPE_F32: ((float *)t->data)[k] = src[k]; break;
        case MOPT_DTYPE_F16: ((uint16_t *)t->data)[k] = mopt_f32_to_f16(src[k]); break;
        default: ((uint16_t *)t->data)[k] = mopt_f32_to_bf16(src[k]); break;
        }
    return t;
}
