/* Quantized Hugging Face checkpoints: the packed linears of AWQ (GEMM), GPTQ
 * (v1 zero points) and compressed-tensors (pack-, int- and float-quantized;
 * ModelOpt's FP8 uses the same tensors) become mopt's packed tensors, so the
 * kernels run exactly the stored values. Layouts: docs in mopt/quant.h and
 * ../shared/docs/FORMATS.md, ALGORITHMS.md.
 *   AWQ   qweight I32 [in, out/8]  word c: out 8c + {0,2,4,6,1,3,5,7}[k] at bits 4k
 *         qzeros  I32 [ng, out/8]  same interleave, raw zero points
 *         scales  F16 [ng, out]
 *   GPTQ  qweight I32 [in*b/32, out]  word r: in (32/b)r + k at bits bk
 *         qzeros  I32 [ng, out*b/32]  sequential along out, stored zero - 1
 *         scales  F16 [ng, out], g_idx I32 [in]
 *   CT    weight_packed I32 [out, in*b/32] word c: in (32/b)c + k at bits bk,
 *         values offset by 2^(b-1); weight_zero_point I32 [out*b/32, ng]
 *         packed along out the same way; weight_scale [out, ng]; weight_shape I64 [2]
 *         int-quantized: weight I8 [out, in], weight_scale [out, 1]
 *         float-quantized: weight F8_E4M3 [out, in], weight_scale [out, 1] | [1],
 *         input_scale [1] when activations are static.
 *         marlin-24: weight_packed I32, meta I16, scale_packed F16, weight_shape (marlin24.c)
 *         nvfp4-pack-quantized: weight_packed U8 [out, in/2] (E2M1 pairs),
 *         weight_scale F8_E4M3 [out, in/16], weight_global_scale [1] = 1 / G,
 *         input_global_scale [1] (static activations)
 *         mxfp4-pack-quantized: weight_packed U8 [out, in/2] (E2M1 pairs), weight_scale U8
 *         [out, in/32] (E8M0 bytes), no global scale
 *   ModelOpt unified (quant_method "modelopt" or hf_quant_config.json):
 *         W4A16_AWQ: weight U8 [out/2, in], signed int4, rows 2r / 2r+1 in the
 *         low / high nibble; weight_scale [out, in/gs]; pre_quant_scale [in]
 *         (only all-ones: mopt folds AWQ's smoothing into the graph instead)
 *         W4A8_AWQ: as W4A16_AWQ, plus scalars weight_scale_2 (the FP8 scale the
 *         int4 values are widened with) and input_scale (static FP8 inputs).
 *         FP8: as float-quantized, scalar scales.
 *         NVFP4: weight U8 [out, in/2] (E2M1 pairs), weight_scale F8_E4M3
 *         [out, in/16], scalars weight_scale_2 and input_scale (mopt/quant.h). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph_impl.h"
#include "base.h"
#include "json_util.h"
#include "hf_quant.h"
#include "mopt/quant.h"
#include "tensor_impl.h"

typedef enum { HFQ_AWQ, HFQ_GPTQ, HFQ_CT, HFQ_MODELOPT } hfq_method;

typedef struct hfq_cfg {
    hfq_method method;
    int32_t bits, group_size; /* AWQ/GPTQ; CT: from config_groups */
    int sym;                  /* GPTQ/CT: symmetric weights */
    uint32_t fp8_act;         /* CT float: activation flags */
    int int_act_dynamic;      /* CT int-quantized: per-token dynamic activations */
    int sparse24;             /* CT sparsity_config sparse-24-bitmask (float values, or int8 with sparse24_int8) */
    int sparse24_int8;        /* ... whose values are W8A8's int8 weights (a scale per row or one) */
    int marlin24;             /* CT format marlin-24: 2:4 with int4 values (W4A16) */
    int nvfp4;                /* ModelOpt NVFP4, or compressed-tensors' nvfp4-pack-quantized */
    int nvfp4_act_static;     /* ... the latter with a static global activation scale (input_global_scale) */
    int mxfp4;                /* compressed-tensors' mxfp4-pack-quantized (activations per block of 32 in packed_act) */
    int w4a8_awq;             /* ModelOpt W4A8_AWQ: int4 widened to FP8 (weight_scale_2), static FP8 inputs (input_scale) */
    uint32_t packed_act;      /* CT pack-quantized: MOPT_QUANT_ACT_PER_TOKEN for FP8 activations per token (W4A8) */
    mopt_kv_format kv;        /* ModelOpt kv_cache_quant_algo, CT kv_cache_scheme; MOPT_KV_FLOAT: none */
    const char *file;
} hfq_cfg;

static uint32_t word(const mopt_tensor *t, int64_t i) {
    uint32_t w;
    memcpy(&w, (const char *)t->data + (size_t)i * 4, 4);
    return w;
}

static mopt_tensor *part(mopt_graph *g, const char *prefix, const char *suffix) {
    char name[MOPT_MAX_NAME + 32];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    return mopt_graph_find_tensor(g, name);
}

static mopt_status need(const mopt_tensor *t, const char *prefix, const char *suffix, mopt_dtype dt, int64_t d0,
                        int64_t d1, mopt_error *err) {
    if (!t) return MOPT_FAIL(err, MOPT_E_FORMAT, "missing tensor %s.%s", prefix, suffix);
    int ok = t->dtype == dt && (d1 < 0 ? (t->ndim == 1 && t->ne[0] == d0) : (t->ndim == 2 && t->ne[1] == d0 && t->ne[0] == d1));
    if (!ok) {
        char s[64];
        if (d1 < 0)
            return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s.%s is %s %s, expected %s [%lld]", prefix, suffix,
                             mopt_dtype_name(t->dtype), mopt_tensor_shape_str(t, s, sizeof s), mopt_dtype_name(dt),
                             (long long)d0);
        return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s.%s is %s %s, expected %s [%lld, %lld]", prefix, suffix,
                         mopt_dtype_name(t->dtype), mopt_tensor_shape_str(t, s, sizeof s), mopt_dtype_name(dt),
                         (long long)d0, (long long)d1);
    }
    return MOPT_OK;
}

static int is_float(const mopt_tensor *t) {
    return t && (t->dtype == MOPT_DTYPE_F32 || t->dtype == MOPT_DTYPE_F16 || t->dtype == MOPT_DTYPE_BF16);
}

/* scales stored [ng, out] -> [out, ng] */
static mopt_status scales_t(const mopt_tensor *s, int64_t out, int64_t ng, float *dst, mopt_error *err) {
    float *row = malloc((size_t)out * sizeof *row);
    if (!row) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    mopt_status st = MOPT_OK;
    for (int64_t g = 0; g < ng && !st; g++) {
        st = mopt_tensor_read_f32(s, g * out, out, row, err);
        for (int64_t o = 0; o < out && !st; o++) dst[o * ng + g] = row[o];
    }
    free(row);
    return st;
}

/* A linear's unpacked contents: levels [out, in], zero points and scales
 * [out, groups], packed into a QINT tensor once filled. */
typedef struct {
    int64_t out, in, ng;
    uint8_t *q, *z;
    float *s;
} levels;

static int levels_new(levels *l, int64_t out, int64_t in, int64_t ng, mopt_error *err) {
    l->out = out, l->in = in, l->ng = ng;
    l->q = malloc((size_t)(out * in));
    l->z = malloc((size_t)(out * ng));
    l->s = malloc((size_t)(out * ng) * sizeof *l->s);
    if (l->q && l->z && l->s) return 1;
    MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    return 0;
}

static void levels_free(levels *l) {
    free(l->q);
    free(l->z);
    free(l->s);
}

/* PREFIX.weight from the levels; zeros NULL for a symmetric grid */
static mopt_tensor *levels_pack(const levels *l, const char *p, int32_t bits, int32_t gs, const uint8_t *zeros,
                                const int32_t *g_idx, mopt_error *err) {
    char name[MOPT_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s.weight", p);
    return mopt_qint_pack(name, l->out, l->in, bits, gs, l->q, l->s, zeros, g_idx, err);
}

/* Symmetric when the config says so and every zero point is the midpoint. */
static const uint8_t *zeros_or_sym(const uint8_t *z, int64_t n, int32_t bits, int sym) {
    if (!sym) return z;
    for (int64_t i = 0; i < n; i++)
        if (z[i] != (uint8_t)(1u << (bits - 1))) return z;
    return NULL;
}

static int32_t groups_from(int64_t in, int64_t ng, int32_t cfg_gs) {
    if (ng == 1 && (cfg_gs <= 0 || cfg_gs >= in)) return -1;
    return cfg_gs > 0 ? cfg_gs : (int32_t)((in + ng - 1) / ng);
}

/* the group size of weight_scale's ng groups per row of in columns, or 0 when they do not fit */
static int32_t scale_groups(const char *p, int64_t in, int64_t ng, const hfq_cfg *c, mopt_error *err) {
    const int32_t gs = groups_from(in, ng, c->group_size);
    if (mopt_qint_n_groups(in, gs) == ng) return gs;
    MOPT_FAIL(err, MOPT_E_FORMAT, "%s.weight_scale has %lld groups, group_size %d gives %lld", p, (long long)ng, gs,
              (long long)mopt_qint_n_groups(in, gs));
    return 0;
}

static mopt_tensor *awq_linear(mopt_graph *g, const char *p, const hfq_cfg *c, mopt_error *err) {
    mopt_tensor *qw = part(g, p, "qweight"), *qz = part(g, p, "qzeros"), *sc = part(g, p, "scales");
    if (!qw || qw->ndim != 2 || qw->dtype != MOPT_DTYPE_I32) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.qweight must be I32 [in, out/8]", p);
        return NULL;
    }
    const int64_t in = qw->ne[1], out = qw->ne[0] * 8;
    const int32_t gs = c->group_size > 0 ? c->group_size : (int32_t)in;
    const int64_t ng = (in + gs - 1) / gs;
    if (need(qz, p, "qzeros", MOPT_DTYPE_I32, ng, out / 8, err)) return NULL;
    if (!is_float(sc) || sc->ndim != 2 || sc->ne[1] != ng || sc->ne[0] != out) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.scales must be a float tensor [%lld, %lld]", p, (long long)ng, (long long)out);
        return NULL;
    }
    levels L = {0};
    mopt_tensor *t = NULL;
    if (!levels_new(&L, out, in, ng, err)) goto done;
    uint8_t *q = L.q, *z = L.z;
    float *s = L.s;
    for (int64_t i = 0; i < in; i++)
        for (int64_t w = 0; w < out / 8; w++) {
            uint32_t v = word(qw, i * (out / 8) + w);
            for (int k = 0; k < 8; k++) q[(8 * w + mopt_awq_order[k]) * in + i] = (uint8_t)((v >> (4 * k)) & 15u);
        }
    for (int64_t gi = 0; gi < ng; gi++)
        for (int64_t w = 0; w < out / 8; w++) {
            uint32_t v = word(qz, gi * (out / 8) + w);
            for (int k = 0; k < 8; k++) z[(8 * w + mopt_awq_order[k]) * ng + gi] = (uint8_t)((v >> (4 * k)) & 15u);
        }
    if (scales_t(sc, out, ng, s, err)) goto done;
    t = levels_pack(&L, p, 4, gs >= in ? -1 : gs, z, NULL, err);
done:
    levels_free(&L);
    return t;
}

static mopt_tensor *gptq_linear(mopt_graph *g, const char *p, const hfq_cfg *c, mopt_error *err) {
    mopt_tensor *qw = part(g, p, "qweight"), *qz = part(g, p, "qzeros"), *sc = part(g, p, "scales"), *gi = part(g, p, "g_idx");
    const int32_t b = c->bits, pf = 32 / b;
    const uint32_t mask = (1u << b) - 1;
    if (!qw || qw->ndim != 2 || qw->dtype != MOPT_DTYPE_I32) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.qweight must be I32 [in*bits/32, out]", p);
        return NULL;
    }
    const int64_t in = qw->ne[1] * pf, out = qw->ne[0];
    const int32_t gs = c->group_size > 0 ? c->group_size : (int32_t)in;
    const int64_t ng = (in + gs - 1) / gs;
    if (out % pf) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %lld outputs do not pack into %d-bit zero words", p, (long long)out, b);
        return NULL;
    }
    if (need(qz, p, "qzeros", MOPT_DTYPE_I32, ng, out / pf, err)) return NULL;
    if (!is_float(sc) || sc->ndim != 2 || sc->ne[1] != ng || sc->ne[0] != out) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.scales must be a float tensor [%lld, %lld]", p, (long long)ng, (long long)out);
        return NULL;
    }
    if (gi && need(gi, p, "g_idx", MOPT_DTYPE_I32, in, -1, err)) return NULL;
    levels L = {0};
    mopt_tensor *t = NULL;
    if (!levels_new(&L, out, in, ng, err)) goto done;
    uint8_t *q = L.q, *z = L.z;
    float *s = L.s;
    for (int64_t r = 0; r < in / pf; r++)
        for (int64_t o = 0; o < out; o++) {
            uint32_t v = word(qw, r * out + o);
            for (int k = 0; k < pf; k++) q[o * in + r * pf + k] = (uint8_t)((v >> (b * k)) & mask);
        }
    for (int64_t gg = 0; gg < ng; gg++)
        for (int64_t w = 0; w < out / pf; w++) {
            uint32_t v = word(qz, gg * (out / pf) + w);
            for (int k = 0; k < pf; k++) z[(w * pf + k) * ng + gg] = (uint8_t)(((v >> (b * k)) + 1u) & mask);
        }
    if (scales_t(sc, out, ng, s, err)) goto done;
    /* g_idx that is just column / group_size is the plain layout */
    const int32_t *gidx = NULL;
    if (gi) {
        const int32_t *v = gi->data;
        for (int64_t i = 0; i < in && !gidx; i++)
            if (v[i] != (int32_t)(i / gs)) gidx = v;
    }
    t = levels_pack(&L, p, b, gs >= in ? -1 : gs, zeros_or_sym(z, out * ng, b, c->sym), gidx, err);
done:
    levels_free(&L);
    return t;
}

static mopt_tensor *ct_packed_linear(mopt_graph *g, const char *p, const hfq_cfg *c, mopt_error *err) {
    mopt_tensor *wp = part(g, p, "weight_packed"), *sc = part(g, p, "weight_scale"), *zp = part(g, p, "weight_zero_point"),
                *shp = part(g, p, "weight_shape"), *gi = part(g, p, "weight_g_idx");
    if (c->bits != 2 && c->bits != 4 && c->bits != 8) { /* found by fuzz_checkpoint_dir: 32 / 0 */
        MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s.weight_packed: pack-quantized with %d bits (supported: 2, 4, 8)", p, c->bits);
        return NULL;
    }
    const int32_t b = c->bits, pf = 32 / b;
    const uint32_t mask = (1u << b) - 1, off = 1u << (b - 1);
    if (need(shp, p, "weight_shape", MOPT_DTYPE_I64, 2, -1, err)) return NULL;
    int64_t dims[2];
    memcpy(dims, shp->data, sizeof dims);
    const int64_t out = dims[0], in = dims[1];
    if (out <= 0 || in <= 0 || out > (1 << 24) || in > (1 << 24)) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.weight_shape [%lld, %lld] is not a usable size", p, (long long)out, (long long)in);
        return NULL;
    }
    if (need(wp, p, "weight_packed", MOPT_DTYPE_I32, out, (in + pf - 1) / pf, err)) return NULL;
    if (!is_float(sc) || sc->ndim != 2 || sc->ne[1] != out) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.weight_scale must be a float tensor [%lld, groups]", p, (long long)out);
        return NULL;
    }
    const int64_t ng = sc->ne[0];
    const int32_t gs = scale_groups(p, in, ng, c, err);
    if (!gs) return NULL;
    if (!zp && !c->sym) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: the scheme is asymmetric (symmetric: false) but %s.weight_zero_point is missing", c->file, p);
        return NULL;
    }
    if (zp && need(zp, p, "weight_zero_point", MOPT_DTYPE_I32, (out + pf - 1) / pf, ng, err)) return NULL;
    if (gi && need(gi, p, "weight_g_idx", MOPT_DTYPE_I32, in, -1, err)) return NULL;
    levels L = {0};
    mopt_tensor *t = NULL;
    if (!levels_new(&L, out, in, ng, err)) goto done;
    uint8_t *q = L.q, *z = L.z;
    float *s = L.s;
    const int64_t words = (in + pf - 1) / pf;
    for (int64_t o = 0; o < out; o++)
        for (int64_t w = 0; w < words; w++) {
            uint32_t v = word(wp, o * words + w);
            for (int k = 0; k < pf && w * pf + k < in; k++) q[o * in + w * pf + k] = (uint8_t)((v >> (b * k)) & mask);
        }
    /* stored zero = signed zero + 2^(b-1), which is mopt's unsigned zero point */
    for (int64_t o = 0; o < out; o++)
        for (int64_t gg = 0; gg < ng; gg++)
            z[o * ng + gg] = zp ? (uint8_t)((word(zp, (o / pf) * ng + gg) >> (b * (o % pf))) & mask) : (uint8_t)off;
    if (mopt_tensor_read_f32(sc, 0, out * ng, s, err)) goto done;
    t = levels_pack(&L, p, b, gs, zp ? z : NULL, gi ? gi->data : NULL, err);
    if (t) t->quant->flags |= c->packed_act; /* W4A8: FP8 activations per token */
done:
    levels_free(&L);
    return t;
}

/* int-quantized (I8) and float-quantized (F8_E4M3) weights with per-row or per-tensor scales */
static mopt_tensor *ct_8bit_linear(mopt_graph *g, const char *p, const hfq_cfg *c, mopt_error *err) {
    mopt_tensor *w = part(g, p, "weight"), *sc = part(g, p, "weight_scale"), *is = part(g, p, "input_scale");
    const int64_t out = w->ne[1], in = w->ne[0];
    const int64_t ns = sc ? mopt_tensor_nelements(sc) : 0;
    if (w->ndim != 2 || !is_float(sc) || (ns != out && ns != 1)) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: an 8-bit weight needs a float weight_scale with one value per row or one", p);
        return NULL;
    }
    float *s = malloc((size_t)out * sizeof *s);
    if (!s) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    mopt_tensor *t = NULL;
    char name[MOPT_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s.weight", p);
    if (mopt_tensor_read_f32(sc, 0, ns, s, err)) goto done;
    if (w->dtype == MOPT_DTYPE_I8) {
        if (!c->int_act_dynamic) {
            MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                      "%s: int8 weights run only with dynamic per-token int8 activations (W8A8); this config has none", p);
            goto done;
        }
        for (int64_t o = ns; o < out; o++) s[o] = s[0];
        t = mopt_w8a8_pack(name, out, in, w->data, s, err);
    } else {
        float act = 0;
        uint32_t flags = c->fp8_act;
        if (is && is_float(is) && mopt_tensor_nelements(is) == 1) {
            if (mopt_tensor_read_f32(is, 0, 1, &act, err)) goto done;
            flags = MOPT_QUANT_ACT_STATIC;
        }
        t = mopt_fp8_pack(name, out, in, w->data, s, ns, flags, act, err);
    }
done:
    free(s);
    return t;
}

static int scalar_part(mopt_graph *g, const char *p, const char *suffix, float *v, mopt_error *err);

/* W4A8_AWQ's two per-tensor scales onto an int4 tensor: weight_scale_2 (the FP8 scale its int4 values are widened
 * with) and input_scale (the calibrated FP8 scale of its inputs), both finite and > 0. Non-zero on error. */
static int w4a8_scales(mopt_graph *g, const char *p, mopt_tensor *t, mopt_error *err) {
    float ws2 = 0, is = 0;
    const int has_w = scalar_part(g, p, "weight_scale_2", &ws2, err), has_i = scalar_part(g, p, "input_scale", &is, err);
    if (has_w < 0 || has_i < 0) return 1;
    if (!has_w || !has_i || !(ws2 > 0) || !(is > 0) || !isfinite(ws2) || !isfinite(is)) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: W4A8_AWQ needs weight_scale_2 and input_scale, finite and > 0", p);
        return 1;
    }
    t->quant->flags |= MOPT_QUANT_W_FP8 | MOPT_QUANT_ACT_STATIC;
    t->quant->global_scale = ws2;
    t->quant->act_scale = is;
    return 0;
}

static mopt_tensor *modelopt_int4_linear(mopt_graph *g, const char *p, const hfq_cfg *c, mopt_error *err) {
    mopt_tensor *w = part(g, p, "weight"), *sc = part(g, p, "weight_scale"), *pq = part(g, p, "pre_quant_scale");
    const int64_t out = w->ne[1] * 2, in = w->ne[0];
    if (w->ndim != 2 || !is_float(sc) || sc->ndim != 2 || sc->ne[1] != out) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: W4A16_AWQ needs weight U8 [out/2, in] and a float weight_scale [out, groups]", p);
        return NULL;
    }
    const int64_t ng = sc->ne[0];
    const int32_t gs = scale_groups(p, in, ng, c, err);
    if (!gs) return NULL;
    if (pq && mopt_check_ones(pq, in, p, "pre_quant_scale", err)) return NULL;
    levels L = {0};
    mopt_tensor *t = NULL;
    if (levels_new(&L, out, in, ng, err) && !mopt_tensor_read_f32(sc, 0, out * ng, L.s, err)) {
        const uint8_t *b = w->data;
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++)
                L.q[o * in + i] = mopt_int4_pair_get(b, in, o, i);
        t = levels_pack(&L, p, 4, gs, NULL, NULL, err);
    }
    levels_free(&L);
    if (t && c->w4a8_awq && w4a8_scales(g, p, t, err)) {
        mopt_tensor_free(t);
        return NULL;
    }
    return t;
}

/* A float scalar part (shape [] or [1]) into *v; absent: *v untouched and 0 returned. */
static int scalar_part(mopt_graph *g, const char *p, const char *suffix, float *v, mopt_error *err) {
    const mopt_tensor *t = part(g, p, suffix);
    if (!t) return 0;
    if (!is_float(t) || mopt_tensor_nelements(t) != 1) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.%s must be one float", p, suffix);
        return -1;
    }
    return mopt_tensor_read_f32(t, 0, 1, v, err) ? -1 : 1;
}

/* The E2M1 pairs `wn` U8 [out, in/2] and the block scales weight_scale [out, in/block] of scale_dt that NVFP4 and
 * MXFP4 checkpoints hold for linear p (*w NULL, err set, when they are missing or misshapen). */
static void fp4_parts(mopt_graph *g, const char *p, const char *wn, mopt_dtype scale_dt, int64_t block, const mopt_tensor **w,
                      const mopt_tensor **sc, int64_t *out, int64_t *in, mopt_error *err) {
    *w = part(g, p, wn);
    *sc = part(g, p, "weight_scale");
    *out = *w && (*w)->ndim == 2 && (*w)->dtype == MOPT_DTYPE_U8 ? (*w)->ne[1] : 0;
    *in = *out ? (*w)->ne[0] * 2 : 0;
    if (!*out || !*sc || (*sc)->dtype != scale_dt || (*sc)->ndim != 2 || (*sc)->ne[1] != *out || (*sc)->ne[0] * block != *in) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s needs %s U8 [out, in/2] and weight_scale %s [out, in/%lld]", p, block == 16 ? "NVFP4" : "MXFP4",
                  wn, scale_dt == MOPT_DTYPE_U8 ? "U8" : "F8_E4M3", (long long)block);
        *w = NULL;
    }
}

/* MXFP4 as compressed-tensors' mxfp4-pack-quantized holds it: weight_packed U8 [out, in/2] (E2M1 pairs) and weight_scale
 * U8 [out, in/32] (E8M0 bytes) become mopt's MXFP tensor as they are. */
static mopt_tensor *mxfp4_linear(mopt_graph *g, const char *p, uint32_t act, mopt_error *err) {
    const mopt_tensor *w, *sc;
    int64_t out, in;
    fp4_parts(g, p, "weight_packed", MOPT_DTYPE_U8, 32, &w, &sc, &out, &in, err);
    if (!w) return NULL;
    char name[MOPT_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s.weight", p);
    return mopt_mxfp_pack(name, MOPT_MXFP_MXFP4, out, in, w->data, sc->data, 1.0f, act, 0.0f, err);
}

/* NVFP4 from its stored bytes as ModelOpt (weight U8 [out, in/2], weight_scale F8_E4M3 [out, in/16], scalars
 * weight_scale_2 = G and input_scale) or compressed-tensors' nvfp4-pack-quantized (weight_packed, weight_scale, and
 * [1] weight_global_scale = 1 / G, input_global_scale) hold it: the bytes become mopt's MXFP tensor as they are.
 * Activations are static when ModelOpt's input_scale is there, or when the compressed-tensors config says so. */
static mopt_tensor *nvfp4_linear(mopt_graph *g, const char *p, int ct, int act_static, mopt_error *err) {
    const char *wn = ct ? "weight_packed" : "weight", *gn = ct ? "weight_global_scale" : "weight_scale_2",
               *an = ct ? "input_global_scale" : "input_scale";
    const mopt_tensor *w, *sc;
    int64_t out, in;
    fp4_parts(g, p, wn, MOPT_DTYPE_F8E4M3, 16, &w, &sc, &out, &in, err);
    if (!w) return NULL;
    float gv = 0, av = 0;
    const int has_g = scalar_part(g, p, gn, &gv, err), has_a = scalar_part(g, p, an, &av, err);
    if (has_g < 0 || has_a < 0) return NULL;
    if (!ct) act_static = has_a;
    if (!has_g || !(gv > 0) || (act_static && !(has_a && av > 0))) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: NVFP4 needs %s > 0%s%s (its global scales)", p, gn, act_static ? " and " : "", act_static ? an : "");
        return NULL;
    }
    char name[MOPT_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s.weight", p);
    return mopt_mxfp_pack(name, MOPT_MXFP_NVFP4, out, in, w->data, sc->data, ct ? 1.0f / gv : gv, act_static ? MOPT_QUANT_ACT_STATIC : 0,
                          act_static ? (ct ? 1.0f / av : av) : 0.0f, err);
}

/* --- config ----------------------------------------------------------------- */

/* ModelOpt's kv_cache_quant_algo ("FP8", "INT8" or null) */
static mopt_status modelopt_kv(json_t *q, hfq_cfg *c, mopt_error *err) {
    const char *kv = NULL;
    if (!mopt_json_get_str_opt(q, "kv_cache_quant_algo", &kv, c->file, err)) return MOPT_E_FORMAT;
    if (!kv) return MOPT_OK;
    if (!strcmp(kv, "FP8")) c->kv = MOPT_KV_FP8;
    else if (!strcmp(kv, "INT8")) c->kv = MOPT_KV_INT8;
    else return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: kv_cache_quant_algo \"%s\" is not supported (FP8, INT8)", c->file, kv);
    return MOPT_OK;
}

/* compressed-tensors' kv_cache_scheme: 8-bit float (FP8) or int, one scale per tensor */
static mopt_status ct_kv(json_t *qc, hfq_cfg *c, mopt_error *err) {
    json_t *s = json_object_get(qc, "kv_cache_scheme");
    if (!s || json_is_null(s)) return MOPT_OK;
    int64_t bits = 0;
    const char *type = NULL, *strategy = NULL;
    bool dynamic = false;
    if (!json_is_object(s)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: kv_cache_scheme must be an object or null", c->file);
    if (!mopt_json_get_int(s, "num_bits", &bits, c->file, err) || !mopt_json_get_str_opt(s, "type", &type, c->file, err) ||
        !mopt_json_get_str_opt(s, "strategy", &strategy, c->file, err) || !mopt_json_get_bool_opt(s, "dynamic", &dynamic, c->file, err))
        return MOPT_E_FORMAT;
    if (bits != 8 || (type && strcmp(type, "float") && strcmp(type, "int")) || (strategy && strcmp(strategy, "tensor")) || dynamic)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                         "%s: kv_cache_scheme is read as 8-bit float or int with one static scale per tensor (strategy tensor)", c->file);
    c->kv = type && !strcmp(type, "int") ? MOPT_KV_INT8 : MOPT_KV_FP8;
    return MOPT_OK;
}

static mopt_status modelopt_config(json_t *q, hfq_cfg *c, mopt_error *err) {
    const char *algo = NULL;
    int64_t gs = -1;
    if (!mopt_json_get_str_opt(q, "quant_algo", &algo, c->file, err) || !mopt_json_get_int_opt(q, "group_size", &gs, c->file, err))
        return MOPT_E_FORMAT;
    if (gs != -1 && (gs <= 0 || gs > (1 << 24)))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: group_size %lld is not a usable group size", c->file, (long long)gs);
    c->group_size = (int32_t)gs;
    if (modelopt_kv(q, c, err)) return MOPT_E_FORMAT;
    if (!algo && c->kv != MOPT_KV_FLOAT) return MOPT_OK; /* a float model with a quantized KV cache */
    if (algo && !strcmp(algo, "W4A16_AWQ")) return MOPT_OK;
    if (algo && !strcmp(algo, "W4A8_AWQ")) {
        c->w4a8_awq = 1;
        return MOPT_OK;
    }
    if (algo && !strcmp(algo, "NVFP4")) {
        c->nvfp4 = 1;
        return MOPT_OK;
    }
    if (algo && !strcmp(algo, "FP8")) {
        c->fp8_act = MOPT_QUANT_ACT_STATIC;
        return MOPT_OK;
    }
    if (algo && !strcmp(algo, "FP8_PER_CHANNEL_PER_TOKEN")) {
        c->fp8_act = MOPT_QUANT_ACT_PER_TOKEN;
        return MOPT_OK;
    }
    return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: ModelOpt quant_algo \"%s\" is not supported (W4A16_AWQ, W4A8_AWQ, FP8, FP8_PER_CHANNEL_PER_TOKEN, NVFP4)",
                     c->file, algo ? algo : "(missing)");
}

/* sparsity_config: sparse-24-bitmask over float values is read; other compressors are refused. */
static mopt_status ct_sparsity(json_t *qc, hfq_cfg *c, mopt_error *err) {
    json_t *sc = json_object_get(qc, "sparsity_config");
    if (!sc || json_is_null(sc)) return MOPT_OK;
    const char *fmt = NULL;
    if (!json_is_object(sc) || !mopt_json_get_str_opt(sc, "format", &fmt, c->file, err))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: quantization_config.sparsity_config must be an object with a string \"format\"", c->file);
    if (!fmt || !strcmp(fmt, "dense")) return MOPT_OK; /* sparsity recorded, weights stored dense */
    if (strcmp(fmt, "sparse-24-bitmask"))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: sparsity_config.format \"%s\" is not supported (sparse-24-bitmask, dense)", c->file, fmt);
    c->sparse24 = 1;
    return MOPT_OK;
}

/* nvfp4-pack-quantized: E2M1 weights in groups of 16, weight-only (NVFP4A16) or with activations that take a static
 * global scale and dynamic per-16 scales ("dynamic": "local", llm-compressor's NVFP4) */
static mopt_status ct_nvfp4_config(json_t *wts, json_t *acts, int64_t bits, int64_t gs, const char *type, const char *key, hfq_cfg *c,
                                   mopt_error *err) {
    if (bits != 4 || !type || strcmp(type, "float") || gs != 16)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: config_groups.%s: nvfp4-pack-quantized is read for 4-bit float weights in groups of 16",
                         c->file, key);
    c->nvfp4 = 1;
    if (!acts || json_is_null(acts)) return MOPT_OK;
    json_t *dyn = json_object_get(acts, "dynamic");
    int64_t abits = 0, ags = 0;
    if (!mopt_json_get_int_opt(acts, "num_bits", &abits, c->file, err) || !mopt_json_get_int_opt(acts, "group_size", &ags, c->file, err))
        return MOPT_E_FORMAT;
    if (abits != 4 || ags != 16 || !json_is_string(dyn) || strcmp(json_string_value(dyn), "local"))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                         "%s: config_groups.%s.input_activations: nvfp4-pack-quantized is read with NVFP4 activations in groups of 16 "
                         "with a static global scale (dynamic \"local\"), or none",
                         c->file, key);
    c->nvfp4_act_static = 1;
    return MOPT_OK;
}

/* mxfp4-pack-quantized: E2M1 weights with an E8M0 scale per group of 32; activations, when named, the same per block
 * at run time (dynamic) */
static mopt_status ct_mxfp4_config(json_t *acts, int64_t bits, int64_t gs, const char *type, const char *key, hfq_cfg *c,
                                   mopt_error *err) {
    if (bits != 4 || !type || strcmp(type, "float") || gs != 32)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: mxfp4-pack-quantized is read for 4-bit float weights in groups of 32 (config_groups.%s)",
                         c->file, key);
    c->mxfp4 = 1;
    if (!json_is_object(acts)) return MOPT_OK;
    bool dynamic = false;
    int64_t abits = 0, ags = 0;
    if (!mopt_json_get_bool_opt(acts, "dynamic", &dynamic, c->file, err) || !mopt_json_get_int_opt(acts, "num_bits", &abits, c->file, err) ||
        !mopt_json_get_int_opt(acts, "group_size", &ags, c->file, err))
        return MOPT_E_FORMAT;
    if (!dynamic || abits != 4 || ags != 32)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: mxfp4-pack-quantized activations are read as MXFP4 per block of 32, dynamic (config_groups.%s)",
                         c->file, key);
    c->packed_act = MOPT_QUANT_ACT_PER_TOKEN;
    return MOPT_OK;
}

static mopt_status ct_config(json_t *qc, hfq_cfg *c, mopt_error *err) {
    const char *fmt = NULL;
    if (!mopt_json_get_str_opt(qc, "format", &fmt, c->file, err)) return MOPT_E_FORMAT;
    mopt_status st = ct_sparsity(qc, c, err);
    if (!st) st = ct_kv(qc, c, err);
    if (st) return st;
    json_t *groups = json_object_get(qc, "config_groups");
    const int quantized = json_is_object(groups) && json_object_size(groups) > 0;
    if ((c->sparse24 || c->kv != MOPT_KV_FLOAT) && !quantized) return MOPT_OK; /* 2:4 float values, or only the KV cache quantized */
    if (!json_is_object(groups) || json_object_size(groups) == 0)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: quantization_config.config_groups must be a non-empty object", c->file);
    if (json_object_size(groups) > 1)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %zu config_groups; only one scheme per checkpoint is supported",
                         c->file, json_object_size(groups));
    const char *key;
    json_t *grp, *wts = NULL, *acts = NULL;
    json_object_foreach(groups, key, grp) {
        wts = json_object_get(grp, "weights");
        acts = json_object_get(grp, "input_activations");
    }
    if (!json_is_object(wts)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: config_groups.%s.weights must be an object", c->file, key);
    int64_t bits = 0, gs = -1;
    bool sym = true;
    const char *strategy = NULL, *type = NULL;
    if (!mopt_json_get_int(wts, "num_bits", &bits, c->file, err) || !mopt_json_get_bool_opt(wts, "symmetric", &sym, c->file, err) ||
        !mopt_json_get_str_opt(wts, "strategy", &strategy, c->file, err) || !mopt_json_get_str_opt(wts, "type", &type, c->file, err) ||
        !mopt_json_get_int_opt(wts, "group_size", &gs, c->file, err))
        return MOPT_E_FORMAT;
    if (fmt && !strcmp(fmt, "nvfp4-pack-quantized")) return ct_nvfp4_config(wts, acts, bits, gs, type, key, c, err);
    if (fmt && !strcmp(fmt, "mxfp4-pack-quantized")) return ct_mxfp4_config(acts, bits, gs, type, key, c, err);
    /* what mopt runs; anything else (block, tensor_group, ...) would be read wrongly */
    if (strategy && strcmp(strategy, "group") && strcmp(strategy, "channel") && strcmp(strategy, "tensor"))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: config_groups.%s.weights.strategy \"%s\" is not supported (group, channel, tensor)",
                         c->file, key, strategy);
    if (type && strcmp(type, "int") && strcmp(type, "float"))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: config_groups.%s.weights.type \"%s\" is not supported (int, float)", c->file, key, type);
    if (json_is_integer(json_object_get(wts, "group_size")) && (gs <= 0 || gs > (1 << 24)))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: config_groups.%s.weights.group_size %lld is not a usable group size", c->file, key,
                         (long long)gs);
    if (strategy && !strcmp(strategy, "group") && gs <= 0)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: config_groups.%s.weights.strategy is \"group\" but group_size is not set", c->file, key);
    if (bits < 1 || bits > 8)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: config_groups.%s.weights.num_bits %lld is not supported (2..8)", c->file, key, (long long)bits);
    c->bits = (int32_t)bits;
    c->group_size = (int32_t)gs;
    c->sym = sym;
    const int int_weights = !type || !strcmp(type, "int"), channel_or_tensor = strategy && strcmp(strategy, "group");
    if (json_is_object(acts)) {
        bool dynamic = false;
        strategy = type = NULL;
        if (!mopt_json_get_str_opt(acts, "strategy", &strategy, c->file, err) ||
            !mopt_json_get_bool_opt(acts, "dynamic", &dynamic, c->file, err) || !mopt_json_get_str_opt(acts, "type", &type, c->file, err))
            return MOPT_E_FORMAT;
        if (strategy && strcmp(strategy, "token") && strcmp(strategy, "tensor"))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: config_groups.%s.input_activations.strategy \"%s\" is not supported (token, tensor)",
                             c->file, key, strategy);
        if (type && strcmp(type, "int") && strcmp(type, "float"))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: config_groups.%s.input_activations.type \"%s\" is not supported (int, float)",
                             c->file, key, type);
        int per_token = dynamic && strategy && !strcmp(strategy, "token");
        c->int_act_dynamic = per_token;
        c->fp8_act = per_token ? MOPT_QUANT_ACT_PER_TOKEN : MOPT_QUANT_ACT_STATIC;
    }
    if (fmt && !strcmp(fmt, "marlin-24")) { /* what the Marlin24Compressor accepts */
        if (bits != 4 || !int_weights || !sym || json_is_object(acts) || !strategy || !strcmp(strategy, "tensor") || (gs > 0 && gs != 128))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                             "%s: marlin-24 is read for symmetric int4 weights in groups of 128 or per channel, without activation "
                             "quantization (W4A16)",
                             c->file);
        c->marlin24 = 1;
        return MOPT_OK;
    }
    if (c->sparse24) { /* quantized 2:4: what vLLM's CUTLASS 2:4 kernels run, W8A8 int8 */
        if (bits != 8 || !int_weights || !sym || !channel_or_tensor || !c->int_act_dynamic)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                             "%s: sparse-24-bitmask with quantized values is read for symmetric int8 weights per channel or tensor with "
                             "dynamic per-token int8 activations (W8A8) only",
                             c->file);
        c->sparse24_int8 = 1;
        return MOPT_OK;
    }
    if (fmt && !strcmp(fmt, "pack-quantized") && bits != 2 && bits != 4 && bits != 8)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: pack-quantized with %lld bits (supported: 2, 4, 8)", c->file, (long long)bits);
    if (fmt && !strcmp(fmt, "pack-quantized") && json_is_object(acts)) { /* W4A8 (FP8 per token) runs; other schemes would be dropped */
        int64_t abits = 0;
        if (!mopt_json_get_int_opt(acts, "num_bits", &abits, c->file, err)) return MOPT_E_FORMAT;
        if (abits != 8 || !type || strcmp(type, "float") || !c->int_act_dynamic)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                             "%s: pack-quantized weights with activation quantization are read with FP8 activations per token "
                             "(dynamic, strategy token) only",
                             c->file);
        c->packed_act = MOPT_QUANT_ACT_PER_TOKEN;
    }
    if (fmt && strcmp(fmt, "pack-quantized") && strcmp(fmt, "int-quantized") && strcmp(fmt, "float-quantized") &&
        strcmp(fmt, "naive-quantized"))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                         "%s: compressed-tensors format \"%s\" is not supported (pack-quantized, int-quantized, float-quantized, marlin-24, "
                         "nvfp4-pack-quantized)",
                         c->file, fmt);
    return MOPT_OK;
}

static mopt_status read_config(const char *file, int *present, hfq_cfg *c, mopt_error *err) {
    *present = 0;
    memset(c, 0, sizeof *c);
    c->file = file;
    json_t *cfg = mopt_json_load_file(file, err);
    if (!cfg) return MOPT_E_FORMAT;
    json_t *qc = json_object_get(cfg, "quantization_config");
    mopt_status st = MOPT_OK;
    const char *m = NULL;
    if (!qc || json_is_null(qc)) { /* older ModelOpt exports record the scheme only in hf_quant_config.json */
        char side[4200];
        snprintf(side, sizeof side, "%s", file);
        char *slash = strrchr(side, '/');
        snprintf(slash ? slash + 1 : side, sizeof side - (size_t)(slash ? slash + 1 - side : 0), "hf_quant_config.json");
        if (!mopt_file_exists(side)) goto done;
        json_t *hq = mopt_json_load_file(side, err);
        if (!hq) {
            st = MOPT_E_FORMAT;
            goto done;
        }
        json_t *q = json_object_get(hq, "quantization");
        *present = 1;
        c->method = HFQ_MODELOPT;
        st = json_is_object(q) ? modelopt_config(q, c, err)
                               : MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing object \"quantization\"", side);
        json_decref(hq);
        goto done;
    }
    if (!json_is_object(qc) || !mopt_json_get_str_opt(qc, "quant_method", &m, file, err) || !m) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: quantization_config needs a string \"quant_method\"", file);
        goto done;
    }
    *present = 1;
    int64_t bits = 4, gs = -1;
    bool sym = true;
    if (!strcmp(m, "awq") || !strcmp(m, "gptq")) {
        if (!mopt_json_get_int_opt(qc, "bits", &bits, file, err) || !mopt_json_get_int_opt(qc, "group_size", &gs, file, err) ||
            !mopt_json_get_bool_opt(qc, "sym", &sym, file, err)) {
            st = MOPT_E_FORMAT;
            goto done;
        }
        if (gs != -1 && (gs <= 0 || gs > (1 << 24))) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: quantization_config.group_size %lld is not a usable group size (-1 or 1..2^24)", file,
                           (long long)gs);
            goto done;
        }
        c->bits = (int32_t)bits;
        c->group_size = (int32_t)gs;
        c->sym = sym;
    }
    if (!strcmp(m, "awq")) {
        const char *version = "gemm";
        bool zp = true;
        c->method = HFQ_AWQ;
        if (!mopt_json_get_str_opt(qc, "version", &version, file, err) || !mopt_json_get_bool_opt(qc, "zero_point", &zp, file, err))
            st = MOPT_E_FORMAT;
        else if (strcasecmp(version, "gemm") || bits != 4 || !zp)
            st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: AWQ version \"%s\", %lld bits%s: only GEMM 4-bit with zero points is supported",
                           file, version, (long long)bits, zp ? "" : ", no zero point");
    } else if (!strcmp(m, "gptq")) {
        const char *fmt = "gptq";
        c->method = HFQ_GPTQ;
        if (!mopt_json_get_str_opt(qc, "checkpoint_format", &fmt, file, err))
            st = MOPT_E_FORMAT;
        else if (strcmp(fmt, "gptq"))
            st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: GPTQ checkpoint_format \"%s\" (only \"gptq\", the v1 zero points vLLM reads)", file, fmt);
        else if (bits != 2 && bits != 4 && bits != 8)
            st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: GPTQ with %lld bits (supported: 2, 4, 8)", file, (long long)bits);
    } else if (!strcmp(m, "modelopt")) {
        c->method = HFQ_MODELOPT;
        st = modelopt_config(qc, c, err);
    } else if (!strcmp(m, "compressed-tensors")) {
        c->method = HFQ_CT;
        st = ct_config(qc, c, err);
    } else {
        st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: quant_method \"%s\" is not supported (awq, gptq, compressed-tensors, modelopt)", file, m);
    }
done:
    json_decref(cfg);
    return st;
}

/* --- entry ------------------------------------------------------------------ */

static int strip(const char *name, const char *suffix, char *prefix, size_t cap) {
    size_t n = strlen(name), s = strlen(suffix);
    if (n <= s || strcmp(name + n - s, suffix) || n - s >= cap) return 0;
    memcpy(prefix, name, n - s);
    prefix[n - s] = 0;
    return 1;
}

/* sparse-24-bitmask (layout in hf_quant_write.c): every group of four inputs
 * holds exactly two set bits, the values fill the rows in order. */
static mopt_tensor *ct_sparse24_linear(mopt_graph *g, const char *p, int int8, mopt_error *err) {
    const mopt_tensor *v = part(g, p, "compressed"), *m = part(g, p, "bitmask"), *sh = part(g, p, "shape");
    if (!v || (int8 ? v->dtype != MOPT_DTYPE_I8 : !is_float(v)) || v->ndim != 2) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s.compressed must be a 2-D %s tensor", p, int8 ? "I8" : "float");
        return NULL;
    }
    const int64_t out = v->ne[1], in = v->ne[0] * 2;
    if (!sh || sh->dtype != MOPT_DTYPE_I64 || mopt_tensor_nelements(sh) != 2) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s.shape must hold two I64 values", p);
        return NULL;
    }
    int64_t dims[2];
    memcpy(dims, sh->data, sizeof dims);
    if (dims[0] != out || dims[1] != in) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.shape is [%lld, %lld] but %s.compressed holds [%lld, %lld] values (half of each row)", p,
                  (long long)dims[0], (long long)dims[1], p, (long long)out, (long long)(in / 2));
        return NULL;
    }
    if (in % 8) {
        MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: 2:4 rows of %lld inputs (mopt stores multiples of 8)", p, (long long)in);
        return NULL;
    }
    if (need(m, p, "bitmask", MOPT_DTYPE_U8, out, in / 8, err)) return NULL;
    const mopt_tensor *ws = int8 ? part(g, p, "weight_scale") : NULL;
    const int64_t nws = ws ? mopt_tensor_nelements(ws) : 0;
    if (int8 && (!ws || !is_float(ws) || (nws != out && nws != 1))) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s.weight_scale must hold %lld float scales (one per row) or one", p, (long long)out);
        return NULL;
    }
    float *vals = malloc((size_t)(out * in / 2) * sizeof *vals), *W = calloc((size_t)(out * in), sizeof *W);
    float *scales = int8 ? malloc((size_t)out * sizeof *scales) : NULL;
    mopt_status st = vals && W && (scales || !int8) ? MOPT_OK : MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    if (!st && int8) { /* the levels, exactly */
        for (int64_t i = 0; i < out * in / 2; i++) vals[i] = ((const int8_t *)v->data)[i];
        st = mopt_tensor_read_f32(ws, 0, nws, scales, err);
        for (int64_t r = nws; !st && r < out; r++) scales[r] = scales[0]; /* one per tensor, to every row */
    } else if (!st)
        st = mopt_tensor_read_f32(v, 0, out * in / 2, vals, err);
    const uint8_t *mask = m->data;
    for (int64_t r = 0; r < out && !st; r++) {
        int64_t k = r * in / 2;
        for (int64_t c = 0; c < in && !st; c += 4) {
            const int bits = mask[(r * in + c) / 8] >> (c % 8) & 15;
            if (__builtin_popcount((unsigned)bits) != 2) {
                st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s.bitmask: row %lld, inputs %lld..%lld keep %d values, not 2 of 4", p, (long long)r,
                               (long long)c, (long long)c + 3, __builtin_popcount((unsigned)bits));
                break;
            }
            for (int j = 0; j < 4; j++)
                if (bits >> j & 1) W[r * in + c + j] = vals[k++];
        }
    }
    char name[MOPT_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s.weight", p);
    mopt_tensor *t = NULL;
    if (!st && int8) t = mopt_sp24_pack_i8_levels(name, out, in, W, scales, err);
    else if (!st)
        t = mopt_sp24_pack(name, out, in, v->dtype, W, err);
    free(vals), free(W), free(scales);
    return t;
}

/* marlin-24 (layout in marlin24.c) */
static mopt_tensor *ct_marlin24_linear(mopt_graph *g, const char *p, const hfq_cfg *c, mopt_error *err) {
    const mopt_tensor *shp = part(g, p, "weight_shape"), *qw = part(g, p, "weight_packed"), *meta = part(g, p, "meta"),
                      *sc = part(g, p, "scale_packed");
    if (need(shp, p, "weight_shape", MOPT_DTYPE_I64, 2, -1, err)) return NULL;
    int64_t d[2];
    memcpy(d, shp->data, sizeof d);
    const int64_t n = d[0], k = d[1], gs = c->group_size > 0 ? c->group_size : k;
    if (n <= 0 || k <= 0 || n % 64 || k % 128 || n > (1 << 24) || k > (1 << 24)) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s.weight_shape [%lld, %lld]: marlin-24 needs outputs divisible by 64 and inputs by 128", p,
                  (long long)n, (long long)k);
        return NULL;
    }
    if (need(qw, p, "weight_packed", MOPT_DTYPE_I32, k / 32, 2 * n, err) || need(meta, p, "meta", MOPT_DTYPE_I16, k / 32, 2 * n, err) ||
        need(sc, p, "scale_packed", MOPT_DTYPE_F16, k / gs, n, err))
        return NULL;
    char name[MOPT_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s.weight", p);
    return mopt_marlin24_read(name, n, k, c->group_size > 0 ? c->group_size : -1, qw->data, meta->data, sc->data, err);
}

static const char *const parts[] = {"qweight", "qzeros", "scales", "g_idx", "weight_packed", "weight_scale",
                                    "weight_zero_point", "weight_shape", "weight_g_idx", "input_scale", "pre_quant_scale", "weight", "weight_scale_2",
                                    "weight_global_scale", "input_global_scale",
                                    "compressed", "bitmask", "shape", "meta", "scale_packed"};

mopt_status mopt_import_hf_quant(mopt_graph *g, const char *config_path, mopt_hf_kv *kv, mopt_error *err) {
    hfq_cfg c;
    int present;
    mopt_status st = read_config(config_path, &present, &c, err);
    if (st) return st;
    kv->format = c.kv;
    if (c.kv != MOPT_KV_FLOAT && (st = mopt_hf_kv_take(g, kv, config_path, err))) return st;
    /* the prefixes of packed linears, collected before the graph changes */
    int32_t n = mopt_graph_n_tensors(g), np = 0;
    char (*pre)[MOPT_MAX_NAME] = calloc((size_t)(n ? n : 1), sizeof *pre);
    if (!pre) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < n; i++) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        int hit = strip(t->name, ".qweight", pre[np], sizeof pre[np]) || strip(t->name, ".weight_packed", pre[np], sizeof pre[np]) ||
                  strip(t->name, ".compressed", pre[np], sizeof pre[np]) ||
                  ((t->dtype == MOPT_DTYPE_I8 || t->dtype == MOPT_DTYPE_F8E4M3 || t->dtype == MOPT_DTYPE_U8) &&
                   strip(t->name, ".weight", pre[np], sizeof pre[np]));
        np += hit;
    }
    if (np && !present) st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: packed weights (%s) but no quantization_config", config_path, pre[0]);
    for (int32_t i = 0; i < np && !st; i++) {
        mopt_tensor *t = NULL;
        const mopt_tensor *w = part(g, pre[i], "weight");
        if (part(g, pre[i], "compressed")) {
            if (c.method == HFQ_CT && c.sparse24) t = ct_sparse24_linear(g, pre[i], c.sparse24_int8, err);
            else st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s.compressed is a compressed-tensors sparse weight, but %s names no sparse-24-bitmask", pre[i], config_path);
        } else if (c.method == HFQ_AWQ) t = awq_linear(g, pre[i], &c, err);
        else if (c.method == HFQ_GPTQ) t = gptq_linear(g, pre[i], &c, err);
        else if (w && w->dtype == MOPT_DTYPE_U8 && c.method == HFQ_MODELOPT && c.nvfp4) t = nvfp4_linear(g, pre[i], 0, 0, err);
        else if (w && w->dtype == MOPT_DTYPE_U8 && c.method == HFQ_MODELOPT) t = modelopt_int4_linear(g, pre[i], &c, err);
        else if (w && w->dtype == MOPT_DTYPE_U8)
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s.weight is U8, which only ModelOpt's W4A16_AWQ and NVFP4 store", pre[i]);
        else if (w && (w->dtype == MOPT_DTYPE_I8 || w->dtype == MOPT_DTYPE_F8E4M3)) t = ct_8bit_linear(g, pre[i], &c, err);
        else if (c.method == HFQ_CT && c.marlin24) t = ct_marlin24_linear(g, pre[i], &c, err);
        else if (c.method == HFQ_CT && c.nvfp4) t = nvfp4_linear(g, pre[i], 1, c.nvfp4_act_static, err);
        else if (c.method == HFQ_CT && c.mxfp4) t = mxfp4_linear(g, pre[i], c.packed_act, err);
        else if (c.method == HFQ_CT) t = ct_packed_linear(g, pre[i], &c, err);
        else st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s.weight_packed is a compressed-tensors packed weight, but %s names another scheme", pre[i], config_path);
        if (!t) {
            st = err && err->code ? (mopt_status)err->code : MOPT_E_FORMAT;
            break;
        }
        for (size_t k = 0; k < sizeof parts / sizeof *parts; k++) {
            char name[MOPT_MAX_NAME + 32];
            snprintf(name, sizeof name, "%s.%s", pre[i], parts[k]);
            mopt_graph_remove_tensor(g, name);
        }
        st = mopt_graph_add_tensor(g, t, err);
        if (st) mopt_tensor_free(t);
    }
    free(pre);
    return st;
}

mopt_status mopt_check_ones(const mopt_tensor *t, int64_t n, const char *prefix, const char *what, mopt_error *err) {
    float v = 1;
    for (int64_t i = 0; i < mopt_tensor_nelements(t) && v == 1; i++)
        if (mopt_tensor_read_f32(t, i, 1, &v, err)) return MOPT_E_FORMAT;
    if (v != 1 || (n >= 0 && mopt_tensor_nelements(t) != n))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s.%s is not all ones (an explicit activation multiply mopt does not run)", prefix, what);
    return MOPT_OK;
}
