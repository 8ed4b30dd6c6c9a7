/* Block-scaled float weights (MOPT_DTYPE_MXFP, layout in mopt/quant.h):
 * NVFP4, MXFP4 and MXFP8. Quantizing a block, packing stored bytes, reading
 * rows back, and rounding activations onto the same grids. */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include "mopt/quant.h"
#include "tensor_impl.h"

#define NVFP4_G_DIV (6.0 * 448.0) /* largest E2M1 times largest E4M3: G = max|W| / this */

static const float e2m1_mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

/* nearest magnitude; a tie goes to the even code (0.25 -> 0, 0.75 -> 1, 1.25 -> 1, 1.75 -> 2, 2.5 -> 2, 3.5 -> 4,
 * 5 -> 4), and everything above 6 saturates. In double, so that a quotient is rounded once. */
static uint8_t e2m1_code(double f) {
    if (isnan(f)) return 0;
    const uint8_t sign = signbit(f) ? 8 : 0;
    const double a = fabs(f);
    uint8_t c = a <= 0.25 ? 0 : a < 0.75 ? 1 : a <= 1.25 ? 2 : a < 1.75 ? 3 : a <= 2.5 ? 4 : a < 3.5 ? 5 : a <= 5.0 ? 6 : 7;
    return sign | c;
}

uint8_t mopt_f32_to_e2m1(float f) { return e2m1_code(f); }

float mopt_e2m1_to_f32(uint8_t code) {
    const float v = e2m1_mag[code & 7];
    return (code & 8) ? -v : v;
}

mopt_mxfp_kind mopt_mxfp_kind_of(const mopt_tensor *t) {
    if (!t || t->dtype != MOPT_DTYPE_MXFP || !t->quant) return MOPT_MXFP_NONE;
    if (!(t->quant->flags & MOPT_QUANT_SCALE_E8M0)) return MOPT_MXFP_NVFP4;
    return t->quant->bits == 8 ? MOPT_MXFP_MXFP8 : MOPT_MXFP_MXFP4;
}

const char *mopt_mxfp_kind_name(mopt_mxfp_kind k) {
    return k == MOPT_MXFP_NVFP4 ? "nvfp4" : k == MOPT_MXFP_MXFP4 ? "mxfp4" : k == MOPT_MXFP_MXFP8 ? "mxfp8" : "none";
}

int32_t mopt_mxfp_block(mopt_mxfp_kind k) {
    return k == MOPT_MXFP_NVFP4 ? 16 : (k == MOPT_MXFP_MXFP4 || k == MOPT_MXFP_MXFP8) ? 32 : 0;
}

static float elem_value(mopt_mxfp_kind k, uint8_t code) {
    return k == MOPT_MXFP_MXFP8 ? mopt_e4m3_to_f32(code) : mopt_e2m1_to_f32(code);
}

/* What a block's scale byte multiplies its values by, global scale g included. */
static float block_scale(mopt_mxfp_kind k, uint8_t s, float g) {
    if (k == MOPT_MXFP_NVFP4) return mopt_e4m3_to_f32(s) * g;
    return s == 255 ? NAN : ldexpf(1.0f, (int)s - 127);
}

/* One block v[n]: returns its scale byte and writes its codes (E2M1 codes or E4M3 bytes). NVFP4's global scale
 * G comes as the fraction gnum / gden (max|W| / 2688 for weights) and each quotient is formed from exact
 * products and rounded once, in double: bf16 weights often sit exactly on a tie of a grid, where a rounded G or
 * a float quotient would fall to either side of it. */
static uint8_t quantize_block(mopt_mxfp_kind k, const float *v, int32_t n, double gnum, double gden, uint8_t *codes) {
    float amax = 0;
    for (int32_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(v[i]));
    uint8_t sb;
    if (!isfinite(amax)) { /* infinities in activations: the block reads back as NaN, as the product would */
        sb = k == MOPT_MXFP_NVFP4 ? 0x7f : 255;
        memset(codes, 0, (size_t)n);
        return sb;
    }
    if (k == MOPT_MXFP_NVFP4) {
        /* max|v| / (6 G), at least 2^-9 (0x01; ModelOpt clamps to [2^-9, 448]); 0x38 is 1.0, ModelOpt's scale for a
         * block of zeros */
        sb = amax > 0 ? mopt_e4m3_from_double((double)amax * gden / (6.0 * gnum)) : 0x38;
        if (sb == 0) sb = 0x01;
        const double den = (double)mopt_e4m3_to_f32(sb) * gnum; /* v / (scale G) = v gden / (scale gnum) */
        for (int32_t i = 0; i < n; i++) codes[i] = e2m1_code(den > 0 ? (double)v[i] * gden / den : 0.0);
        return sb;
    }
    int X = -127;
    if (amax > 0) {
        int e;
        frexpf(amax, &e); /* amax = m 2^e, m in [0.5, 1): floor(log2 amax) = e - 1 */
        X = e - 1 - (k == MOPT_MXFP_MXFP8 ? 8 : 2);
        if (X < -127) X = -127;
    }
    sb = (uint8_t)(X + 127);
    for (int32_t i = 0; i < n; i++) { /* MX scales are powers of two, so v / scale is exact */
        const float q = ldexpf(v[i], -X);
        codes[i] = k == MOPT_MXFP_MXFP8 ? mopt_f32_to_e4m3(q) : e2m1_code(q);
    }
    return sb;
}

void mopt_mxfp_round(mopt_mxfp_kind k, float *x, int64_t n, float g) {
    const int32_t B = mopt_mxfp_block(k);
    double gnum = g, gden = 1;
    if (k == MOPT_MXFP_NVFP4 && !(g > 0)) { /* per token: G = max|x| / (6 * 448) */
        float amax = 0;
        for (int64_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(x[i]));
        gnum = amax > 0 && isfinite(amax) ? amax : 1.0;
        gden = amax > 0 && isfinite(amax) ? NVFP4_G_DIV : 1.0;
    }
    const float gf = (float)(gnum / gden);
    uint8_t codes[32];
    for (int64_t b = 0; B && b + B <= n; b += B) {
        const float s = block_scale(k, quantize_block(k, x + b, B, gnum, gden, codes), gf);
        for (int32_t i = 0; i < B; i++) x[b + i] = elem_value(k, codes[i]) * s;
    }
}

float mopt_exact_reciprocal(float x) {
    const float r = 1.0f / x;
    const float c[3] = {r, nextafterf(r, 0.0f), nextafterf(r, INFINITY)};
    for (int i = 0; i < 3; i++)
        if (1.0f / c[i] == x) return c[i];
    return r;
}

/* The float nearest v (within two ulps) whose reciprocal reads back exactly: an NVFP4 global scale that
 * compressed-tensors' inverted form holds without loss. The grid decisions use the exact v. */
static float invertible(double v) {
    const float f = (float)v, up = nextafterf(f, INFINITY), dn = nextafterf(f, 0.0f);
    const float c[5] = {f, up, dn, nextafterf(up, INFINITY), nextafterf(dn, 0.0f)};
    for (int i = 0; i < 5; i++)
        if (1.0f / mopt_exact_reciprocal(c[i]) == c[i]) return c[i];
    return f;
}

/* An empty MXFP tensor with its scale tensor, after checking the shape and the scales. */
static mopt_tensor *mxfp_new(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, float g, uint32_t act_flags, float act_scale,
                             mopt_error *err) {
    const int32_t B = mopt_mxfp_block(k);
    if (!B) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: unknown block-scaled float format %d (nvfp4, mxfp4, mxfp8)", name, (int)k);
        return NULL;
    }
    if (out <= 0 || in <= 0 || in % 32) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: %s rows are whole blocks of 32 values (got [%lld, %lld])", name, mopt_mxfp_kind_name(k),
                  (long long)out, (long long)in);
        return NULL;
    }
    const int is_static = act_flags == MOPT_QUANT_ACT_STATIC;
    if (!(g > 0) || !isfinite(g) || (act_flags && act_flags != MOPT_QUANT_ACT_PER_TOKEN && !is_static) ||
        (is_static && (k != MOPT_MXFP_NVFP4 || !(act_scale > 0) || !isfinite(act_scale)))) {
        MOPT_FAIL(err, MOPT_E_INVALID,
                  "%s: %s needs a finite global scale > 0 and activations none, per token, or (NVFP4) static with a finite scale > 0",
                  name, mopt_mxfp_kind_name(k));
        return NULL;
    }
    const int32_t bits = k == MOPT_MXFP_MXFP8 ? 8 : 4;
    mopt_tensor *t = mopt_packed_new(name, MOPT_DTYPE_MXFP, out, in, (size_t)(bits == 4 ? in / 2 : in), err);
    if (!t) return NULL;
    t->quant->bits = bits;
    t->quant->group_size = B;
    t->quant->flags = act_flags | (k == MOPT_MXFP_NVFP4 ? 0 : MOPT_QUANT_SCALE_E8M0);
    t->quant->act_scale = is_static ? act_scale : 0;
    t->quant->global_scale = g;
    const int64_t sd[2] = {out, in / B};
    if (!(t->quant->scale = mopt_packed_side_new(name, "scales", MOPT_DTYPE_U8, 2, sd, err))) {
        mopt_tensor_free(t);
        return NULL;
    }
    return t;
}

mopt_tensor *mopt_mxfp_quantize(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, const float *W, uint32_t act_flags,
                                float act_scale, mopt_error *err) {
    return mopt_mxfp_quantize_shared(name, k, out, in, W, 0.0f, act_flags, act_scale, err);
}

mopt_tensor *mopt_mxfp_quantize_shared(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, const float *W, float weight_amax,
                                       uint32_t act_flags, float act_scale, mopt_error *err) {
    float amax = 0;
    for (int64_t i = 0; out > 0 && in > 0 && i < out * in; i++) {
        if (!isfinite(W[i])) {
            MOPT_FAIL(err, MOPT_E_INVALID, "%s: weight %lld is not finite; nothing to quantize", name, (long long)i);
            return NULL;
        }
        amax = fmaxf(amax, fabsf(W[i]));
    }
    if (weight_amax != 0) { /* the global scale of a fused group: it must cover this tensor */
        if (!(weight_amax >= amax) || !isfinite(weight_amax)) {
            MOPT_FAIL(err, MOPT_E_INVALID, "%s: shared max|w| %g is below the tensor's own %g (or not finite)", name, (double)weight_amax,
                      (double)amax);
            return NULL;
        }
        amax = weight_amax;
    }
    const double gnum = k == MOPT_MXFP_NVFP4 && amax > 0 ? amax : 1.0, gden = k == MOPT_MXFP_NVFP4 && amax > 0 ? NVFP4_G_DIV : 1.0;
    const float gf = k == MOPT_MXFP_NVFP4 ? invertible(gnum / gden) : 1.0f; /* stored rounded, within two ulps */
    const float af = act_flags == MOPT_QUANT_ACT_STATIC && act_scale > 0 && isfinite(act_scale) ? invertible(act_scale) : act_scale;
    mopt_tensor *t = mxfp_new(name, k, out, in, gf, act_flags, af, err);
    if (!t) return NULL;
    const int32_t B = mopt_mxfp_block(k);
    uint8_t *sc = t->quant->scale->data, codes[32];
    for (int64_t r = 0; r < out; r++) {
        uint8_t *row = (uint8_t *)t->data + (size_t)r * t->nb[1];
        for (int64_t b = 0; b < in / B; b++) {
            sc[r * (in / B) + b] = quantize_block(k, W + r * in + b * B, B, gnum, gden, codes);
            for (int32_t i = 0; i < B; i++) {
                const int64_t c = b * B + i;
                if (t->quant->bits == 8) row[c] = codes[i];
                else row[c / 2] |= (uint8_t)(codes[i] << (4 * (c & 1)));
            }
        }
    }
    return t;
}

mopt_tensor *mopt_mxfp_pack(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, const uint8_t *values,
                            const uint8_t *scales, float global_scale, uint32_t act_flags, float act_scale, mopt_error *err) {
    if (k != MOPT_MXFP_NVFP4) global_scale = 1.0f; /* MX scales stand alone */
    mopt_tensor *t = mxfp_new(name, k, out, in, global_scale, act_flags, act_scale, err);
    if (!t) return NULL;
    memcpy(t->data, values, t->nb[1] * (size_t)out);
    memcpy(t->quant->scale->data, scales, mopt_tensor_nbytes(t->quant->scale));
    return t;
}

/* Every scale byte's value, E4M3 and E8M0, built once: the kernels look them up per block of 16 or 32 values,
 * where a conversion per block (ldexpf) cost more than the block's arithmetic. */
static float e4m3_table[256], e8m0_table[256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static void build_tables(void) {
    for (int b = 0; b < 256; b++) {
        e4m3_table[b] = mopt_e4m3_to_f32((uint8_t)b);
        e8m0_table[b] = block_scale(MOPT_MXFP_MXFP8, (uint8_t)b, 1.0f);
    }
}

void mopt_mxfp_block_scales(const mopt_tensor *t, int64_t row, int64_t b0, int64_t n, float *out) {
    pthread_once(&tables_once, build_tables);
    const int64_t nb = t->ne[0] / t->quant->group_size;
    const uint8_t *sc = (const uint8_t *)t->quant->scale->data + row * nb + b0;
    if (t->quant->flags & MOPT_QUANT_SCALE_E8M0) {
        for (int64_t b = 0; b < n; b++) out[b] = e8m0_table[sc[b]];
        return;
    }
    const float g = t->quant->global_scale; /* e4m3 * G, as block_scale forms it */
    for (int64_t b = 0; b < n; b++) out[b] = e4m3_table[sc[b]] * g;
}

void mopt_mxfp_row_f32(const mopt_tensor *t, int64_t row, float *out) {
    const mopt_mxfp_kind k = mopt_mxfp_kind_of(t);
    const int64_t in = t->ne[0], B = t->quant->group_size;
    const uint8_t *p = (const uint8_t *)t->data + (size_t)row * t->nb[1];
    for (int64_t b = 0; b < in / B; b++) {
        float s;
        mopt_mxfp_block_scales(t, row, b, 1, &s);
        for (int64_t c = b * B; c < (b + 1) * B; c++) {
            const uint8_t code = t->quant->bits == 8 ? p[c] : (uint8_t)(p[c / 2] >> (4 * (c & 1)) & 15);
            out[c] = elem_value(k, code) * s;
        }
    }
}
