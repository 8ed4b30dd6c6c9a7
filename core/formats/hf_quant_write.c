/* Quantized Hugging Face layouts written from mopt's packed tensors, bit for
 * bit (no requantization): AWQ GEMM, GPTQ v1, compressed-tensors and
 * ModelOpt's unified checkpoint. The layouts are the ones hf_quant.c reads
 * (its top comment); mopt's QINT stores unsigned levels q with w = (q - z) s
 * (z = 2^(b-1) when symmetric), f16 scales [out, groups] and an optional
 * g_idx, which every layout holds exactly. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "hf_quant.h"
#include "mopt/quant.h"
#include "tensor_impl.h"

static const char *fmt_name(mopt_hf_layout f) {
    return f == MOPT_HF_AWQ ? "awq" : f == MOPT_HF_GPTQ ? "gptq" : f == MOPT_HF_CT ? "compressed-tensors" : f == MOPT_HF_MODELOPT ? "modelopt" : "dense";
}

/* g's lm_head weight, or NULL */
static const mopt_tensor *lm_head_of(const mopt_graph *g) {
    const int32_t head = mopt_graph_find_node(g, MOPT_ROLE_LM_HEAD, -1);
    return head >= 0 ? mopt_graph_node(g, head)->weight : NULL;
}

/* s becomes packed tensor t's scheme (its first tensor) */
static void scheme_from(mopt_quant_scheme *s, const mopt_tensor *t) {
    s->dtype = t->dtype;
    s->bits = t->quant->bits;
    s->group_size = t->quant->group_size;
    s->flags = t->quant->flags;
    s->act_order = t->quant->g_idx != NULL;
    snprintf(s->first, sizeof s->first, "%s", t->name);
}

/* whether packed tensor t is stored in scheme s */
static int in_scheme(const mopt_quant_scheme *s, const mopt_tensor *t) {
    return t->dtype == s->dtype && t->quant->bits == s->bits && t->quant->group_size == s->group_size && t->quant->flags == s->flags &&
           (t->quant->g_idx != NULL) == s->act_order;
}

/* g's token embedding table, or NULL */
static const mopt_tensor *embedding_of(const mopt_graph *g) {
    const int32_t e = mopt_graph_find_node(g, MOPT_ROLE_EMBED, -1);
    return e >= 0 ? mopt_graph_node(g, e)->weight : NULL;
}

mopt_status mopt_quant_scheme_of(const mopt_graph *g, const char *what, mopt_quant_scheme *s, mopt_error *err) {
    memset(s, 0, sizeof *s);
    const mopt_tensor *lm = lm_head_of(g), *emb = embedding_of(g);
    for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        /* a packed lm_head (from GGUF) and a quantized embedding table are written in float */
        if (t->dtype < MOPT_DTYPE_PACKED_FIRST || t == lm || t == emb) continue;
        if (!s->n_packed++) scheme_from(s, t);
        else if (!in_scheme(s, t))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s and %s are quantized differently; a %s checkpoint holds one scheme", s->first,
                             t->name, what);
    }
    if (!s->n_packed && lm && lm->dtype >= MOPT_DTYPE_PACKED_FIRST && lm->dtype != MOPT_DTYPE_KQUANT) { /* only lm_head was quantized */
        s->n_packed = 1;
        scheme_from(s, lm);
    }
    return MOPT_OK;
}

int mopt_lm_head_in_scheme(const mopt_graph *g, const mopt_quant_scheme *s) {
    const mopt_tensor *lm = lm_head_of(g);
    return s->n_packed && lm && lm->dtype >= MOPT_DTYPE_PACKED_FIRST && lm->dtype != MOPT_DTYPE_KQUANT && in_scheme(s, lm);
}

/* NVFP4 weight-only (NVFP4A16) or with a calibrated global activation scale: what nvfp4-pack-quantized holds;
 * MXFP4 weight-only or with activations per block of 32 (MXFP4A16, W4A4): what mxfp4-pack-quantized holds */
static int ct_fp4_ok(const mopt_quant_scheme *s) {
    if (s->flags & MOPT_QUANT_SCALE_E8M0) return s->bits == 4;
    return !(s->flags & MOPT_QUANT_ACT_PER_TOKEN);
}

const char *mopt_hf_layout_refuses(const mopt_quant_scheme *s, mopt_hf_layout f) {
    if (!s->n_packed || f == MOPT_HF_DENSE) return NULL;
    if (s->dtype == MOPT_DTYPE_KQUANT)
        return "GGUF k-quants (Q4_K, Q5_K, Q6_K) have no Hugging Face layout; export them dense (format dense: dequantized) or as GGUF";
    if (s->dtype == MOPT_DTYPE_SP24)
        return f == MOPT_HF_CT ? NULL : "2:4 packed weights export as compressed-tensors (sparse-24-bitmask, or marlin-24 for int4 values) or dense";
    if (s->dtype == MOPT_DTYPE_QINT && (s->flags & MOPT_QUANT_W_FP8))
        return f == MOPT_HF_MODELOPT && mopt_modelopt_algo(s)
                   ? NULL
                   : "W4A8_AWQ (int4 weights widened to FP8, static FP8 activations) exports as ModelOpt's unified checkpoint "
                     "(format modelopt; symmetric int4 in groups) or as a TensorRT-LLM checkpoint";
    if (s->dtype == MOPT_DTYPE_QINT && (s->flags & (MOPT_QUANT_ACT_PER_TOKEN | MOPT_QUANT_ACT_STATIC)) && f != MOPT_HF_CT)
        return "W4A8 (integer weights with FP8 activations per token) exports as compressed-tensors";
    if (s->dtype == MOPT_DTYPE_MXFP && !(f == MOPT_HF_MODELOPT && mopt_modelopt_algo(s)) && !(f == MOPT_HF_CT && ct_fp4_ok(s)))
        return "NVFP4 exports as ModelOpt's unified checkpoint (format modelopt, with static activations for input_scale) or as "
               "compressed-tensors (static activations or none: quant.nvfp4's activations=, mopt quantize's --act); MXFP4 as "
               "compressed-tensors (mxfp4-pack-quantized); MXFP8 exports dense (dequantized) for now";
    if (f == MOPT_HF_MODELOPT)
        return mopt_modelopt_algo(s) ? NULL
                                     : "ModelOpt's unified checkpoint holds symmetric int4 (W4A16_AWQ: quantize with sym=true), FP8 with "
                                       "per-tensor static or per-channel dynamic activations, and NVFP4 with static activations; use "
                                       "compressed-tensors";
    if (s->dtype != MOPT_DTYPE_QINT && f != MOPT_HF_CT) return "W8A8 and FP8 weights export as compressed-tensors";
    if (f == MOPT_HF_AWQ && s->bits != 4) return "AWQ GEMM holds 4-bit weights only";
    if (f == MOPT_HF_AWQ && s->act_order) return "AWQ has no act-order (g_idx); use gptq or compressed-tensors";
    if (s->dtype == MOPT_DTYPE_QINT && s->bits == 3) return "3-bit weights do not pack into these int32 layouts";
    return NULL;
}

/* level, zero and f16 scale bits of a QINT tensor, row r */
static uint8_t zero_of(const mopt_tensor *t, int64_t r, int64_t gi, int64_t ng) {
    return t->quant->zero ? ((const uint8_t *)t->quant->zero->data)[r * ng + gi] : (uint8_t)(1u << (t->quant->bits - 1));
}
static uint16_t scale_bits(const mopt_tensor *t, int64_t r, int64_t gi, int64_t ng) {
    return ((const uint16_t *)t->quant->scale->data)[r * ng + gi];
}

static mopt_status add_i32(mopt_st_list *l, const char *prefix, const char *part, int64_t d0,
                           int64_t d1, uint32_t *data, mopt_error *err) {
    char name[MOPT_MAX_NAME + 32];
    snprintf(name, sizeof name, "%s.%s", prefix, part);
    const int64_t shape[2] = {d0, d1};
    return mopt_st_list_add(l, name, "I32", d1 ? 2 : 1, shape, data, (size_t)(d0 * (d1 ? d1 : 1)) * 4, err);
}

static mopt_status add_scales(mopt_st_list *l, const char *prefix, const char *part,
                              const mopt_tensor *t, const int64_t *perm, int transposed, mopt_error *err) {
    const int64_t out = t->ne[1], ng = t->quant->scale->ne[0];
    uint16_t *v = malloc((size_t)(out * ng) * 2);
    if (v)
        for (int64_t r = 0; r < out; r++)
            for (int64_t gi = 0; gi < ng; gi++)
                v[transposed ? gi * out + r : r * ng + gi] = scale_bits(t, perm ? perm[r] : r, gi, ng);
    char name[MOPT_MAX_NAME + 32];
    snprintf(name, sizeof name, "%s.%s", prefix, part);
    const int64_t shape[2] = {transposed ? ng : out, transposed ? out : ng};
    return mopt_st_list_add(l, name, "F16", 2, shape, v, (size_t)(out * ng) * 2, err);
}

static mopt_status awq(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm,
                       mopt_error *err) {
    const int64_t out = t->ne[1], in = t->ne[0], ng = t->quant->scale->ne[0];
    if (out % 8) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: AWQ needs outputs divisible by 8", t->name);
    uint32_t *qw = calloc((size_t)(in * out / 8), 4), *qz = calloc((size_t)(ng * out / 8), 4);
    if (qw && qz) {
        for (int64_t w = 0; w < out / 8; w++)
            for (int k = 0; k < 8; k++) {
                const int64_t o = 8 * w + mopt_awq_order[k], src = perm ? perm[o] : o;
                for (int64_t i = 0; i < in; i++) qw[i * (out / 8) + w] |= (uint32_t)mopt_qint_get(t, src, i) << (4 * k);
                for (int64_t gi = 0; gi < ng; gi++) qz[gi * (out / 8) + w] |= (uint32_t)zero_of(t, src, gi, ng) << (4 * k);
            }
    }
    mopt_status st = add_i32(l, p, "qweight", in, out / 8, qw, err);
    if (st) {
        free(qz);
        return st;
    }
    st = add_i32(l, p, "qzeros", ng, out / 8, qz, err);
    return st ? st : add_scales(l, p, "scales", t, perm, 1, err);
}

static mopt_status gptq(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm,
                        mopt_error *err) {
    const int32_t b = t->quant->bits, pf = 32 / b, gs = t->quant->group_size;
    const uint32_t mask = (1u << b) - 1;
    const int64_t out = t->ne[1], in = t->ne[0], ng = t->quant->scale->ne[0];
    if (in % pf || out % pf)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: GPTQ needs both dimensions divisible by %d", t->name, pf);
    uint32_t *qw = calloc((size_t)(in / pf * out), 4), *qz = calloc((size_t)(ng * out / pf), 4), *gi = malloc((size_t)in * 4);
    if (qw && qz && gi) {
        for (int64_t o = 0; o < out; o++) {
            const int64_t src = perm ? perm[o] : o;
            for (int64_t i = 0; i < in; i++) qw[(i / pf) * out + o] |= (uint32_t)mopt_qint_get(t, src, i) << (b * (i % pf));
            for (int64_t g = 0; g < ng; g++) /* v1: zero - 1, wrapping within b bits */
                qz[g * (out / pf) + o / pf] |= (((uint32_t)zero_of(t, src, g, ng) - 1u) & mask) << (b * (o % pf));
        }
        const int32_t *gx = t->quant->g_idx ? t->quant->g_idx->data : NULL;
        for (int64_t i = 0; i < in; i++) gi[i] = gx ? (uint32_t)gx[i] : (uint32_t)(gs > 0 ? i / gs : 0);
    }
    mopt_status st = add_i32(l, p, "qweight", in / pf, out, qw, err);
    if (st) {
        free(qz);
        free(gi);
        return st;
    }
    if ((st = add_i32(l, p, "qzeros", ng, out / pf, qz, err))) {
        free(gi);
        return st;
    }
    if ((st = add_i32(l, p, "g_idx", in, 0, gi, err))) return st;
    return add_scales(l, p, "scales", t, perm, 1, err);
}

static mopt_status ct_packed(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm,
                             mopt_error *err) {
    const int32_t b = t->quant->bits, pf = 32 / b;
    const int64_t out = t->ne[1], in = t->ne[0], ng = t->quant->scale->ne[0], words = (in + pf - 1) / pf;
    uint32_t *wp = calloc((size_t)(out * words), 4);
    if (wp)
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++)
                wp[o * words + i / pf] |= (uint32_t)mopt_qint_get(t, perm ? perm[o] : o, i) << (b * (i % pf));
    mopt_status st = add_i32(l, p, "weight_packed", out, words, wp, err);
    if (!st) st = add_scales(l, p, "weight_scale", t, perm, 0, err);
    if (!st && t->quant->zero) {
        const int64_t zr = (out + pf - 1) / pf;
        uint32_t *zp = calloc((size_t)(zr * ng), 4);
        if (zp)
            for (int64_t o = 0; o < out; o++)
                for (int64_t g = 0; g < ng; g++)
                    zp[(o / pf) * ng + g] |= (uint32_t)zero_of(t, perm ? perm[o] : o, g, ng) << (b * (o % pf));
        st = add_i32(l, p, "weight_zero_point", zr, ng, zp, err);
    }
    if (!st && t->quant->g_idx) {
        uint32_t *gi = malloc((size_t)in * 4);
        if (gi) memcpy(gi, t->quant->g_idx->data, (size_t)in * 4);
        st = add_i32(l, p, "weight_g_idx", in, 0, gi, err);
    }
    if (!st) {
        int64_t *shape = malloc(16), one[1] = {2};
        if (shape) shape[0] = out, shape[1] = in;
        char name[MOPT_MAX_NAME + 32];
        snprintf(name, sizeof name, "%s.weight_shape", p);
        st = mopt_st_list_add(l, name, "I64", 1, one, shape, 16, err);
    }
    return st;
}

/* W8A8 (I8) and FP8 (F8_E4M3): the bytes as stored, F32 scales */
static mopt_status ct_8bit(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm,
                           mopt_error *err) {
    const int64_t out = t->ne[1], in = t->ne[0], ns = mopt_tensor_nelements(t->quant->scale);
    uint8_t *w = malloc((size_t)(out * in));
    float *s = malloc((size_t)ns * 4);
    if (w)
        for (int64_t o = 0; o < out; o++)
            memcpy(w + o * in, (const uint8_t *)t->data + (size_t)(perm ? perm[o] : o) * t->nb[1], (size_t)in);
    if (s)
        for (int64_t o = 0; o < ns; o++) s[o] = ((const float *)t->quant->scale->data)[ns == 1 ? 0 : perm ? perm[o] : o];
    char name[MOPT_MAX_NAME + 32];
    snprintf(name, sizeof name, "%s.weight", p);
    const int64_t wshape[2] = {out, in}, sshape[2] = {ns, 1};
    mopt_status st = mopt_st_list_add(l, name, t->dtype == MOPT_DTYPE_W8A8 ? "I8" : "F8_E4M3", 2, wshape, w, (size_t)(out * in), err);
    if (st) {
        free(s);
        return st;
    }
    snprintf(name, sizeof name, "%s.weight_scale", p);
    if ((st = mopt_st_list_add(l, name, "F32", ns == 1 ? 1 : 2, sshape, s, (size_t)ns * 4, err))) return st;
    if (t->dtype == MOPT_DTYPE_FP8 && (t->quant->flags & MOPT_QUANT_ACT_STATIC)) {
        float *a = malloc(4);
        if (a) *a = t->quant->act_scale;
        const int64_t one[1] = {1};
        snprintf(name, sizeof name, "%s.input_scale", p);
        st = mopt_st_list_add(l, name, "F32", 1, one, a, 4, err);
    }
    return st;
}

const char *const mopt_tq_names[MOPT_TQ_COUNT] = {NULL, "W4A16_AWQ", "W8A16", "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN", "FP8",
                                                   "FP8_PER_CHANNEL_PER_TOKEN", "NVFP4", "W4A8_AWQ"};

mopt_tq_algo mopt_tq_parse(const char *name) {
    for (int i = 1; name && i < MOPT_TQ_COUNT; i++)
        if (!strcmp(name, mopt_tq_names[i])) return (mopt_tq_algo)i;
    return MOPT_TQ_NONE;
}

/* the TensorRT-LLM / ModelOpt algorithm that holds the scheme's stored values */
static mopt_tq_algo tq_of(const mopt_quant_scheme *s) {
    if (!s->n_packed) return MOPT_TQ_NONE;
    if (s->dtype == MOPT_DTYPE_MXFP) /* NVFP4 weights and activations, the activations' global scale calibrated */
        return !(s->flags & MOPT_QUANT_SCALE_E8M0) && (s->flags & MOPT_QUANT_ACT_STATIC) ? MOPT_TQ_NVFP4 : MOPT_TQ_NONE;
    if (s->dtype == MOPT_DTYPE_W8A8) return MOPT_TQ_W8A8;
    if (s->dtype == MOPT_DTYPE_FP8) {
        if ((s->flags & MOPT_QUANT_PER_TENSOR) && (s->flags & MOPT_QUANT_ACT_STATIC)) return MOPT_TQ_FP8;
        if (!(s->flags & MOPT_QUANT_PER_TENSOR) && (s->flags & MOPT_QUANT_ACT_PER_TOKEN)) return MOPT_TQ_FP8_PC;
        return MOPT_TQ_NONE;
    }
    if ((s->flags & MOPT_QUANT_W_FP8) && (s->flags & MOPT_QUANT_ACT_STATIC) && (s->flags & MOPT_QUANT_SYM) && !s->act_order &&
        s->bits == 4 && s->group_size > 0)
        return MOPT_TQ_W4A8_AWQ; /* int4 widened to FP8 per tensor, FP8 activations with a calibrated scale */
    if (!(s->flags & MOPT_QUANT_SYM) || s->act_order || (s->flags & (MOPT_QUANT_ACT_PER_TOKEN | MOPT_QUANT_ACT_STATIC | MOPT_QUANT_W_FP8)))
        return MOPT_TQ_NONE; /* W4A8 per token has no TensorRT-LLM algorithm here */
    if (s->bits == 4 && s->group_size > 0) return MOPT_TQ_W4A16_AWQ;
    if (s->bits == 8 && s->group_size < 0) return MOPT_TQ_W8A16;
    return MOPT_TQ_NONE;
}

const char *mopt_trtllm_algo(const mopt_quant_scheme *s) { return mopt_tq_names[tq_of(s)]; }

/* ModelOpt's unified checkpoint holds the int4 and FP8 kinds */
const char *mopt_modelopt_algo(const mopt_quant_scheme *s) {
    const mopt_tq_algo a = tq_of(s);
    return a == MOPT_TQ_W4A16_AWQ || a == MOPT_TQ_W4A8_AWQ || a == MOPT_TQ_FP8 || a == MOPT_TQ_FP8_PC || a == MOPT_TQ_NVFP4
               ? mopt_tq_names[a]
               : NULL;
}

static uint8_t *pack_int4_rows(const mopt_tensor *t, const int64_t *perm) {
    const int64_t out = t->ne[1], in = t->ne[0];
    uint8_t *w = calloc((size_t)((out + 1) / 2 * in), 1);
    if (w)
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < in; i++) mopt_int4_pair_put(w, in, o, i, mopt_qint_get(t, perm ? perm[o] : o, i));
    return w;
}

/* A float named P.PART: a scalar (shape []) or, with one_d, shape [1]. */
static mopt_status add_scalar(mopt_st_list *l, const char *p, const char *part, float v, int one_d, mopt_error *err) {
    char name[MOPT_MAX_NAME + 32];
    snprintf(name, sizeof name, "%s.%s", p, part);
    float *d = malloc(sizeof *d);
    if (d) *d = v;
    const int64_t shape[1] = {1};
    return mopt_st_list_add(l, name, "F32", one_d ? 1 : 0, shape, d, sizeof *d, err);
}

/* NVFP4 as ModelOpt (weight U8 [out, in/2], weight_scale F8_E4M3 [out, in/16], scalars weight_scale_2 = G and
 * input_scale) or compressed-tensors' nvfp4-pack-quantized (weight_packed, weight_scale, and [1] weight_global_scale =
 * 1 / G and input_global_scale) hold: mopt's rows as they are. MXFP4 as compressed-tensors' mxfp4-pack-quantized:
 * weight_packed U8 [out, in/2] and weight_scale U8 [out, in/32], the E8M0 bytes, no global scale. */
static mopt_status fp4_tensors(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm, int ct, mopt_error *err) {
    char name[MOPT_MAX_NAME + 32];
    const int mx = mopt_mxfp_kind_of(t) == MOPT_MXFP_MXFP4;
    const int64_t out = t->ne[1], in = t->ne[0], nb = in / (mx ? 32 : 16);
    uint8_t *w = malloc((size_t)(out * in / 2) + 1), *sc = malloc((size_t)(out * nb) + 1);
    if (!w || !sc) {
        free(w), free(sc);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    for (int64_t r = 0; r < out; r++) {
        const int64_t src = perm ? perm[r] : r;
        memcpy(w + r * (in / 2), (const uint8_t *)t->data + (size_t)src * t->nb[1], (size_t)(in / 2));
        memcpy(sc + r * nb, (const uint8_t *)t->quant->scale->data + src * nb, (size_t)nb);
    }
    const int64_t dw[2] = {out, in / 2}, ds[2] = {out, nb};
    snprintf(name, sizeof name, "%s.%s", p, ct ? "weight_packed" : "weight");
    mopt_status st = mopt_st_list_add(l, name, "U8", 2, dw, w, (size_t)(out * in / 2), err);
    snprintf(name, sizeof name, "%s.weight_scale", p);
    if (!st) st = mopt_st_list_add(l, name, mx ? "U8" : "F8_E4M3", 2, ds, sc, (size_t)(out * nb), err);
    else free(sc);
    if (mx) return st;
    const float g = t->quant->global_scale, a = t->quant->act_scale;
    if (!st) st = ct ? add_scalar(l, p, "weight_global_scale", mopt_exact_reciprocal(g), 1, err) : add_scalar(l, p, "weight_scale_2", g, 0, err);
    if (!st && (t->quant->flags & MOPT_QUANT_ACT_STATIC))
        st = ct ? add_scalar(l, p, "input_global_scale", mopt_exact_reciprocal(a), 1, err) : add_scalar(l, p, "input_scale", a, 0, err);
    return st;
}

/* ModelOpt unified HF: weight, weight_scale, pre_quant_scale / input_scale */
static mopt_status modelopt(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm,
                            mopt_error *err) {
    char name[MOPT_MAX_NAME + 32];
    const int64_t out = t->ne[1], in = t->ne[0];
    if (t->dtype == MOPT_DTYPE_QINT) {
        if (out % 2) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: int4 rows pack in pairs; %lld is odd", t->name, (long long)out);
        snprintf(name, sizeof name, "%s.weight", p);
        const int64_t ws[2] = {out / 2, in}, ps[1] = {in};
        mopt_status st = mopt_st_list_add(l, name, "U8", 2, ws, pack_int4_rows(t, perm), (size_t)(out / 2 * in), err);
        if (!st) st = add_scales(l, p, "weight_scale", t, perm, 0, err);
        uint16_t *ones = malloc((size_t)in * 2);
        for (int64_t i = 0; ones && i < in; i++) ones[i] = 0x3c00; /* f16 1.0: AWQ's smoothing is folded into the graph */
        snprintf(name, sizeof name, "%s.pre_quant_scale", p);
        if (!st) st = mopt_st_list_add(l, name, "F16", 1, ps, ones, (size_t)in * 2, err);
        else free(ones);
        if (!st && (t->quant->flags & MOPT_QUANT_W_FP8)) /* W4A8_AWQ: the weights' FP8 scale and the inputs' */
            st = add_scalar(l, p, "weight_scale_2", t->quant->global_scale, 0, err);
        if (!st && (t->quant->flags & MOPT_QUANT_W_FP8)) st = add_scalar(l, p, "input_scale", t->quant->act_scale, 0, err);
        return st;
    }
    if (t->dtype == MOPT_DTYPE_MXFP) return fp4_tensors(l, p, t, perm, 0, err);
    mopt_status st = ct_8bit(l, p, t, perm, err); /* FP8: weight, weight_scale, input_scale */
    const int per_tensor = (t->quant->flags & MOPT_QUANT_PER_TENSOR) != 0;
    for (int32_t i = l->n - 1; !st && i >= 0 && i >= l->n - 2; i--) /* scales: scalars per tensor, [out] per channel */
        if (strstr(l->e[i].name, ".weight_scale") || strstr(l->e[i].name, ".input_scale")) l->e[i].ndim = per_tensor ? 0 : 1;
    return st;
}

/* compressed-tensors sparse-24-bitmask: P.compressed [out, in/2] (the kept
 * values in order), P.bitmask U8 [out, in/8] (bit j of byte k: input 8k + j
 * is kept, numpy.packbits little), P.shape I64 [2, 1]. */
static mopt_status ct_sparse24(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm, mopt_error *err) {
    const int64_t out = t->ne[1], in = t->ne[0];
    const uint32_t f = t->quant->flags;
    const size_t vrow = mopt_sp24_values_bytes(f, in);
    const char *dt = f & MOPT_QUANT_VALUES_F32 ? "F32" : f & MOPT_QUANT_VALUES_I8 ? "I8" : f & MOPT_QUANT_VALUES_BF16 ? "BF16" : "F16";
    uint8_t *vals = malloc((size_t)out * vrow + 1), *mask = malloc((size_t)(out * in / 8) + 1);
    int64_t *shape = malloc(2 * sizeof *shape);
    if (!vals || !mask || !shape) {
        free(vals), free(mask), free(shape);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    for (int64_t r = 0; r < out; r++) {
        const int64_t src = perm ? perm[r] : r;
        const uint8_t *row = (const uint8_t *)t->data + (size_t)src * t->nb[1], *pos = row + vrow;
        memcpy(vals + (size_t)r * vrow, row, vrow);
        for (int64_t k = 0; k < in / 8; k++) { /* a position byte covers 8 inputs, as a bitmask byte does */
            uint8_t b = 0;
            for (int g = 0; g < 2; g++) {
                const int nib = pos[k] >> (4 * g) & 15;
                b |= (uint8_t)((1u << (nib & 3) | 1u << (nib >> 2)) << (4 * g));
            }
            mask[r * (in / 8) + k] = b;
        }
    }
    shape[0] = out, shape[1] = in;
    char name[MOPT_MAX_NAME + 32];
    const int64_t dv[2] = {out, in / 2}, dm[2] = {out, in / 8}, ds[2] = {2, 1};
    snprintf(name, sizeof name, "%s.compressed", p);
    mopt_status st = mopt_st_list_add(l, name, dt, 2, dv, vals, (size_t)out * vrow, err);
    snprintf(name, sizeof name, "%s.bitmask", p);
    if (!st) st = mopt_st_list_add(l, name, "U8", 2, dm, mask, (size_t)(out * in / 8), err);
    else free(mask);
    snprintf(name, sizeof name, "%s.shape", p);
    if (!st) st = mopt_st_list_add(l, name, "I64", 2, ds, shape, 2 * sizeof *shape, err);
    else free(shape);
    if (!st && (f & MOPT_QUANT_VALUES_I8)) { /* W8A8: weight_scale [out, 1] F32, as for int-quantized */
        float *sc = malloc((size_t)out * sizeof *sc + 1);
        if (!sc) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        for (int64_t r = 0; r < out; r++) sc[r] = ((const float *)t->quant->scale->data)[perm ? perm[r] : r];
        const int64_t dsc[2] = {out, 1};
        snprintf(name, sizeof name, "%s.weight_scale", p);
        st = mopt_st_list_add(l, name, "F32", 2, dsc, sc, (size_t)out * sizeof *sc, err);
    }
    return st;
}

static mopt_status add_linear(mopt_st_list *l, const mopt_tensor *t, const char *p, mopt_hf_layout f, const int64_t *perm,
                              mopt_error *err) {
    if (t->dtype == MOPT_DTYPE_SP24 && (t->quant->flags & MOPT_QUANT_VALUES_I4)) return mopt_marlin24_write(l, p, t, perm, err);
    if (t->dtype == MOPT_DTYPE_SP24) return ct_sparse24(l, p, t, perm, err);
    if (f == MOPT_HF_MODELOPT) return modelopt(l, p, t, perm, err);
    if (t->dtype == MOPT_DTYPE_MXFP) return fp4_tensors(l, p, t, perm, 1, err); /* compressed-tensors' nvfp4- / mxfp4-pack-quantized */
    if (t->dtype != MOPT_DTYPE_QINT) return ct_8bit(l, p, t, perm, err);
    return f == MOPT_HF_AWQ ? awq(l, p, t, perm, err) : f == MOPT_HF_GPTQ ? gptq(l, p, t, perm, err) : ct_packed(l, p, t, perm, err);
}

mopt_status mopt_hf_add_packed(mopt_st_list *l, const mopt_file_tensor *ft, mopt_hf_layout f, mopt_error *err) {
    const mopt_tensor *t = ft->src[0];
    char p[MOPT_MAX_NAME];
    snprintf(p, sizeof p, "%s", ft->name);
    char *dot = strrchr(p, '.');
    if (ft->n_src != 1 || ft->transposed || t->dtype < MOPT_DTYPE_PACKED_FIRST || !dot || strcmp(dot, ".weight"))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: only a linear's own packed .weight exports in %s (not a fused or transposed one)",
                         ft->name, fmt_name(f));
    *dot = 0;
    /* the rows in the file's order: a RoPE permutation of q/k, or none */
    int64_t *perm = NULL;
    if (ft->rope_srcs) {
        if (!(perm = malloc((size_t)ft->rows * sizeof *perm))) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        for (int64_t r = 0; r < ft->rows; r++) mopt_file_tensor_row(ft, r, &perm[r]);
    }
    mopt_status st = add_linear(l, t, p, f, perm, err);
    free(perm);
    return st;
}

/* Decoder linears kept in float, by module name; lm_head unless it was quantized in the scheme. */
static json_t *float_linears(const mopt_graph *g, const mopt_quant_scheme *s) {
    json_t *a = json_array();
    if (!mopt_lm_head_in_scheme(g, s)) json_array_append_new(a, json_string("lm_head"));
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->op != MOPT_OP_LINEAR || !n->weight || n->weight->dtype >= MOPT_DTYPE_PACKED_FIRST) continue;
        char m[MOPT_MAX_NAME];
        snprintf(m, sizeof m, "%s", n->weight->name);
        char *dot = strrchr(m, '.');
        if (dot) *dot = 0;
        json_array_append_new(a, json_string(m));
    }
    return a;
}

/* The KV-cache format of the layers (the exporter checked they share one). */
static mopt_kv_format kv_format(const mopt_graph *g) {
    mopt_kv_format f;
    return mopt_kv_scheme_of(g, &f, NULL) ? MOPT_KV_FLOAT : f;
}

static json_t *modelopt_quantization(const mopt_graph *g, const mopt_quant_scheme *s) {
    const mopt_kv_format kv = kv_format(g);
    json_t *q = json_pack("{s:s?, s:s?, s:o}", "quant_algo", s->n_packed ? mopt_modelopt_algo(s) : NULL, "kv_cache_quant_algo",
                          kv == MOPT_KV_FP8 ? "FP8" : kv == MOPT_KV_INT8 ? "INT8" : NULL, "exclude_modules", float_linears(g, s));
    if (s->dtype == MOPT_DTYPE_MXFP) json_object_set_new(q, "group_size", json_integer(16));
    if (s->dtype == MOPT_DTYPE_QINT) {
        json_object_set_new(q, "group_size", json_integer(s->group_size));
        json_object_set_new(q, "has_zero_point", json_false());
        json_object_set_new(q, "pre_quant_scale", json_true());
    }
    return q;
}

json_t *mopt_hfq_modelopt_file(const mopt_graph *g, const mopt_quant_scheme *s) {
    return json_pack("{s:{s:s, s:s}, s:o}", "producer", "name", "modelopt", "version", "mopt", "quantization",
                     modelopt_quantization(g, s));
}

json_t *mopt_hfq_config(const mopt_graph *g, mopt_hf_layout f, const mopt_quant_scheme *s) {
    const int sym = (s->flags & MOPT_QUANT_SYM) != 0;
    if (f == MOPT_HF_MODELOPT) { /* what export_hf_checkpoint converts hf_quant_config.json into */
        json_t *q = modelopt_quantization(g, s);
        json_object_set_new(q, "quant_method", json_string("modelopt"));
        json_object_set_new(q, "producer", json_pack("{s:s, s:s}", "name", "modelopt", "version", "mopt"));
        json_object_set(q, "ignore", json_object_get(q, "exclude_modules"));
        if (kv_format(g) != MOPT_KV_FLOAT) /* static FP8, one scale per tensor (k_scale / v_scale) */
            json_object_set_new(q, "kv_cache_scheme", json_pack("{s:b, s:i, s:s}", "dynamic", 0, "num_bits", 8, "type", "float"));
        if (s->dtype == MOPT_DTYPE_MXFP) /* NVFP4: a static global and dynamic per-16 scales for the activations */
            json_object_set_new(q, "config_groups",
                                json_pack("{s:{s:[s], s:{s:b, s:i, s:s, s:i}, s:{s:b, s:i, s:s, s:i}}}", "group_0", "targets",
                                          "Linear", "input_activations", "dynamic", 0, "num_bits", 4, "type", "float",
                                          "group_size", 16, "weights", "dynamic", 0, "num_bits", 4, "type", "float", "group_size", 16));
        if (s->dtype == MOPT_DTYPE_FP8) {
            const int pt = (s->flags & MOPT_QUANT_PER_TENSOR) != 0;
            json_object_set_new(q, "config_groups",
                                json_pack("{s:{s:[s], s:{s:b, s:i, s:s, s:n}, s:{s:b, s:i, s:s, s:n}}}", "group_0", "targets",
                                          "Linear", "input_activations", "dynamic", !pt, "num_bits", 8, "type", "float",
                                          "group_size", "weights", "dynamic", 0, "num_bits", 8, "type", "float", "group_size"));
        }
        return q;
    }
    json_t *ignore = float_linears(g, s);
    if (f == MOPT_HF_AWQ) {
        json_t *mods = json_array_size(ignore) > 1 ? json_deep_copy(ignore) : json_null();
        json_decref(ignore);
        return json_pack("{s:s, s:i, s:i, s:b, s:s, s:o}", "quant_method", "awq", "bits", 4, "group_size", s->group_size,
                         "zero_point", 1, "version", "gemm", "modules_to_not_convert", mods);
    }
    if (f == MOPT_HF_GPTQ) {
        json_decref(ignore);
        return json_pack("{s:s, s:s, s:i, s:i, s:b, s:b, s:b, s:f}", "quant_method", "gptq", "checkpoint_format", "gptq",
                         "bits", s->bits, "group_size", s->group_size, "desc_act", s->act_order, "sym", sym,
                         "static_groups", 0, "damp_percent", 0.01);
    }
    const mopt_kv_format kvf = kv_format(g);
    json_t *kv = kvf == MOPT_KV_FLOAT ? json_null()
                                      : json_pack("{s:i, s:s, s:s, s:b, s:b, s:n, s:s}", "num_bits", 8, "type", kvf == MOPT_KV_FP8 ? "float" : "int",
                                                  "strategy", "tensor", "dynamic", 0, "symmetric", 1, "group_size", "observer", "minmax");
    if (!s->n_packed) /* float weights, the KV cache quantized */
        return json_pack("{s:s, s:s, s:s, s:{}, s:o, s:o, s:n}", "quant_method", "compressed-tensors", "format", "dense",
                         "quantization_status", "compressed", "config_groups", "ignore", ignore, "kv_cache_scheme", kv, "sparsity_config");
    json_t *sparsity = json_null();
    if (s->dtype == MOPT_DTYPE_SP24) { /* the compressor in sparsity_config; int8 values add W8A8's quantization scheme */
        int64_t sparse = 0;
        for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++)
            if (mopt_graph_tensor(g, i)->dtype == MOPT_DTYPE_SP24) sparse += mopt_tensor_nelements(mopt_graph_tensor(g, i));
        const double global = 0.5 * (double)sparse / (double)mopt_graph_n_params(g); /* the share of weights not stored */
        /* marlin-24 holds the 2:4 structure in its own tensors: the sparsity config says "dense", as llm-compressor writes it */
        const int i4 = (s->flags & MOPT_QUANT_VALUES_I4) != 0;
        sparsity = json_pack("{s:s, s:f, s:O, s:b, s:s, s:[s]}", "format", i4 ? "dense" : "sparse-24-bitmask", "global_sparsity", global,
                             "ignore", ignore, "registry_requires_subclass", 0, "sparsity_structure", "2:4", "targets", "Linear");
        if (!(s->flags & (MOPT_QUANT_VALUES_I8 | MOPT_QUANT_VALUES_I4)))
            return json_pack("{s:s, s:s, s:{}, s:o, s:o, s:o}", "quant_method", "compressed-tensors", "quantization_status", "compressed",
                             "config_groups", "ignore", ignore, "kv_cache_scheme", kv, "sparsity_config", sparsity);
    }
    json_t *w, *act = json_null();
    const char *format;
    if (s->dtype == MOPT_DTYPE_MXFP && (s->flags & MOPT_QUANT_SCALE_E8M0)) { /* MXFP4 (llm-compressor's MXFP4A16 and MXFP4) */
        format = "mxfp4-pack-quantized";
        w = json_pack("{s:i, s:s, s:b, s:s, s:i, s:b}", "num_bits", 4, "type", "float", "symmetric", 1, "strategy", "group",
                      "group_size", 32, "dynamic", 0);
        if (s->flags & MOPT_QUANT_ACT_PER_TOKEN) /* rounded per block of 32 at run time */
            act = json_pack("{s:i, s:s, s:b, s:s, s:i, s:b}", "num_bits", 4, "type", "float", "symmetric", 1, "strategy", "group",
                            "group_size", 32, "dynamic", 1);
    } else if (s->dtype == MOPT_DTYPE_MXFP) { /* NVFP4 (llm-compressor's NVFP4 and NVFP4A16 presets) */
        format = "nvfp4-pack-quantized";
        w = json_pack("{s:i, s:s, s:b, s:s, s:i, s:b, s:s}", "num_bits", 4, "type", "float", "symmetric", 1, "strategy", "tensor_group",
                      "group_size", 16, "dynamic", 0, "observer", "static_minmax");
        if (s->flags & MOPT_QUANT_ACT_STATIC) /* a static global scale, dynamic per-16 scales */
            act = json_pack("{s:i, s:s, s:b, s:s, s:i, s:s}", "num_bits", 4, "type", "float", "symmetric", 1, "strategy", "tensor_group",
                            "group_size", 16, "dynamic", "local");
    } else if (s->dtype == MOPT_DTYPE_QINT || (s->dtype == MOPT_DTYPE_SP24 && (s->flags & MOPT_QUANT_VALUES_I4))) {
        format = s->dtype == MOPT_DTYPE_QINT ? "pack-quantized" : "marlin-24"; /* marlin-24: W4A16, symmetric */
        w = json_pack("{s:i, s:s, s:b, s:s, s:b, s:s, s:s}", "num_bits", s->bits, "type", "int", "symmetric", sym,
                      "strategy", s->group_size > 0 ? "group" : "channel", "dynamic", 0, "observer", "minmax",
                      "actorder", s->act_order ? "group" : "");
        if (!s->act_order) json_object_set_new(w, "actorder", json_null());
        json_object_set_new(w, "group_size", s->group_size > 0 ? json_integer(s->group_size) : json_null());
        if (s->flags & MOPT_QUANT_ACT_PER_TOKEN) /* W4A8: FP8 activations per token */
            act = json_pack("{s:i, s:s, s:b, s:s, s:b, s:n}", "num_bits", 8, "type", "float", "symmetric", 1, "strategy", "token",
                            "dynamic", 1, "group_size");
    } else if (s->dtype == MOPT_DTYPE_W8A8 || s->dtype == MOPT_DTYPE_SP24) { /* SP24 here: int8 values */
        format = "int-quantized";
        w = json_pack("{s:i, s:s, s:b, s:s, s:b, s:n}", "num_bits", 8, "type", "int", "symmetric", 1, "strategy",
                      "channel", "dynamic", 0, "group_size");
        act = json_pack("{s:i, s:s, s:b, s:s, s:b, s:n}", "num_bits", 8, "type", "int", "symmetric", 1, "strategy", "token",
                        "dynamic", 1, "group_size");
    } else {
        format = "float-quantized";
        const int per_tensor = (s->flags & MOPT_QUANT_PER_TENSOR) != 0;
        w = json_pack("{s:i, s:s, s:b, s:s, s:b, s:n}", "num_bits", 8, "type", "float", "symmetric", 1, "strategy",
                      per_tensor ? "tensor" : "channel", "dynamic", 0, "group_size");
        if (s->flags & MOPT_QUANT_ACT_PER_TOKEN)
            act = json_pack("{s:i, s:s, s:b, s:s, s:b, s:n}", "num_bits", 8, "type", "float", "symmetric", 1, "strategy",
                            "token", "dynamic", 1, "group_size");
        else if (s->flags & MOPT_QUANT_ACT_STATIC)
            act = json_pack("{s:i, s:s, s:b, s:s, s:b, s:n}", "num_bits", 8, "type", "float", "symmetric", 1, "strategy",
                            "tensor", "dynamic", 0, "group_size");
    }
    return json_pack("{s:s, s:s, s:s, s:{s:{s:[s], s:o, s:o, s:n}}, s:o, s:o, s:o}", "quant_method", "compressed-tensors",
                     "format", format, "quantization_status", "compressed", "config_groups", "group_0", "targets",
                     "Linear", "weights", w, "input_activations", act, "output_activations", "ignore", ignore,
                     "kv_cache_scheme", kv, "sparsity_config", sparsity);
}
