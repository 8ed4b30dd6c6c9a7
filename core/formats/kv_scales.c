/* KV-cache scales in checkpoints (FORMATS.md, ALGORITHMS.md section 10):
 *   ModelOpt unified   <k_proj>.k_scale, <v_proj>.v_scale     F32 scalars, kv_cache_quant_algo "FP8"
 *   compressed-tensors <k_proj>.output_scale, <v_proj>.output_scale  F32 [1], kv_cache_scheme
 *   TensorRT-LLM       attention.kv_cache_scaling_factor       F32 [1], one for K and V (trtllm*.c)
 * Each scale is the one the cache divides by (x_q = x / scale), as vLLM reads it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "graph_impl.h"
#include "hf_quant.h"

mopt_status mopt_kv_scheme_of(const mopt_graph *g, mopt_kv_format *f, mopt_error *err) {
    *f = MOPT_KV_FLOAT;
    int32_t first = -1;
    for (int32_t l = 0; l < mopt_graph_arch(g)->n_layers; l++) {
        if (mopt_graph_find_node(g, MOPT_ROLE_ATTN, l) < 0) continue;
        const mopt_kv_quant q = mopt_graph_kv_quant(g, l);
        if (first < 0) first = l, *f = (mopt_kv_format)q.format;
        else if (q.format != (int32_t)*f)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "layer %d keeps its KV cache as %s but layer %d as %s; a checkpoint holds one KV-cache format",
                             first, mopt_kv_format_name(*f), l, mopt_kv_format_name(q.format));
        if (q.format != MOPT_KV_FLOAT && q.n_scales > 1)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                             "layer %d has a KV scale per head; vLLM, ModelOpt and TensorRT-LLM store one per layer (quant.kv granularity=tensor)", l);
    }
    return MOPT_OK;
}

const char *mopt_hf_kv_refuses(mopt_kv_format f, mopt_hf_layout layout) {
    if (f == MOPT_KV_FLOAT || layout == MOPT_HF_DENSE) return NULL;
    if (layout == MOPT_HF_AWQ || layout == MOPT_HF_GPTQ)
        return "AutoAWQ and AutoGPTQ configs have no KV-cache scheme; use format compressed-tensors or modelopt, which store the KV scales";
    if (f == MOPT_KV_INT8) return "vLLM reads FP8 KV caches only; an int8 KV cache exports to TensorRT-LLM (export.trtllm)";
    return NULL;
}

/* The layer when ft is the weight of its q, k or v projection (fused ones included), else -1. */
static int32_t qkv_layer_of(const mopt_file_tensor *ft) {
    if (ft->role != MOPT_ROLE_ATTN_Q && ft->role != MOPT_ROLE_ATTN_K && ft->role != MOPT_ROLE_ATTN_V) return -1;
    const char *dot = strrchr(ft->name, '.');
    return dot && !strcmp(dot, ".weight") ? ft->layer : -1;
}

mopt_status mopt_hf_add_kv_scales(mopt_st_list *l, const mopt_graph *g, const mopt_file_tensor *ft, mopt_hf_layout layout,
                                  mopt_error *err) {
    const int32_t layer = qkv_layer_of(ft);
    if (layer < 0 || layout == MOPT_HF_DENSE) return MOPT_OK;
    const mopt_kv_quant q = mopt_graph_kv_quant(g, layer);
    if (q.format == MOPT_KV_FLOAT) return MOPT_OK;
    if (ft->n_src != 1)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s fuses q, k and v; no checkpoint layout names KV scales for a fused projection", ft->name);
    if (ft->role == MOPT_ROLE_ATTN_Q) return MOPT_OK;
    const int v = ft->role == MOPT_ROLE_ATTN_V;
    const char *why = mopt_hf_kv_refuses((mopt_kv_format)q.format, layout);
    if (why) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s", why);
    char name[MOPT_MAX_NAME + 32];
    const size_t stem = strlen(ft->name) - strlen(".weight");
    const int ct = layout == MOPT_HF_CT;
    snprintf(name, sizeof name, "%.*s.%s", (int)stem, ft->name, ct ? "output_scale" : v ? "v_scale" : "k_scale");
    float *d = malloc(sizeof *d);
    if (d) *d = (v ? q.v_scale : q.k_scale)[0];
    const int64_t shape[1] = {1};
    return mopt_st_list_add(l, name, "F32", ct ? 1 : 0, shape, d, sizeof *d, err);
}

/* --- reading ------------------------------------------------------------------------------ */

static const char *const kv_suffixes[] = {".k_scale", ".v_scale", ".output_scale", ".kv_scale"};

mopt_status mopt_hf_kv_take(mopt_graph *g, mopt_hf_kv *kv, const char *file, mopt_error *err) {
    for (int32_t i = 0; i < mopt_graph_n_tensors(g);) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        const size_t n = strlen(t->name);
        size_t k = 0, s = 0;
        for (; k < sizeof kv_suffixes / sizeof *kv_suffixes; k++)
            if (n > (s = strlen(kv_suffixes[k])) && !strcmp(t->name + n - s, kv_suffixes[k])) break;
        if (k == sizeof kv_suffixes / sizeof *kv_suffixes) {
            i++;
            continue;
        }
        if (t->dtype >= MOPT_DTYPE_PACKED_FIRST || mopt_tensor_nelements(t) != 1 ||
            !(t->dtype == MOPT_DTYPE_F32 || t->dtype == MOPT_DTYPE_F16 || t->dtype == MOPT_DTYPE_BF16))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s must be one float (a KV-cache scale, as the config's KV-cache scheme says)", file,
                             t->name);
        mopt_hf_kv_scale *e = realloc(kv->s, (size_t)(kv->n + 1) * sizeof *e);
        if (!e) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        kv->s = e;
        e += kv->n;
        memset(e, 0, sizeof *e);
        snprintf(e->prefix, sizeof e->prefix, "%.*s", (int)(n - s), t->name);
        e->kind = (int32_t)k;
        if (mopt_tensor_read_f32(t, 0, 1, &e->value, err)) return MOPT_E_FORMAT;
        kv->n++;
        char name[MOPT_MAX_NAME];
        snprintf(name, sizeof name, "%s", t->name);
        mopt_graph_remove_tensor(g, name); /* the tensor list shifts down: i stays */
    }
    return MOPT_OK;
}

/* The scale stored for a projection: its k_scale / v_scale (ModelOpt), output_scale
 * (compressed-tensors) or legacy kv_scale into *got; 0 when there is none. Marks it used. */
static int find_scale(mopt_hf_kv *kv, const char *weight_name, int v, float *got) {
    char p[MOPT_MAX_NAME];
    snprintf(p, sizeof p, "%s", weight_name);
    char *dot = strrchr(p, '.');
    if (dot) *dot = 0;
    int found = 0;
    for (int32_t i = 0; i < kv->n; i++)
        if (!strcmp(kv->s[i].prefix, p) && kv->s[i].kind != (v ? 0 : 1)) kv->s[i].used = 1, *got = kv->s[i].value, found = 1;
    return found;
}

mopt_status mopt_hf_kv_apply(mopt_graph *g, mopt_hf_kv *kv, const char *file, mopt_error *err) {
    mopt_status st = MOPT_OK;
    for (int32_t l = 0; l < mopt_graph_arch(g)->n_layers && !st && kv->format != MOPT_KV_FLOAT; l++) {
        const int32_t kn = mopt_graph_find_node(g, MOPT_ROLE_ATTN_K, l), vn = mopt_graph_find_node(g, MOPT_ROLE_ATTN_V, l);
        if (kn < 0 || vn < 0 || mopt_graph_find_node(g, MOPT_ROLE_ATTN, l) < 0) continue;
        float ks = 1.0f, vs = 1.0f; /* as vLLM: neither stored means 1.0, one stands for both (the legacy kv_scale) */
        const int hk = find_scale(kv, mopt_graph_node(g, kn)->weight->name, 0, &ks), hv = find_scale(kv, mopt_graph_node(g, vn)->weight->name, 1, &vs);
        if (hk && !hv) vs = ks;
        if (hv && !hk) ks = vs;
        mopt_error e = {0};
        if ((st = mopt_graph_set_kv_quant(g, l, kv->format, 1, &ks, &vs, &e))) MOPT_FAIL(err, st, "%s: %s", file, e.msg);
    }
    for (int32_t i = 0; i < kv->n && !st; i++)
        if (!kv->s[i].used && kv->format != MOPT_KV_FLOAT)
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s%s is a KV-cache scale of no attention layer", file, kv->s[i].prefix,
                           kv_suffixes[kv->s[i].kind]);
    return st;
}

void mopt_hf_kv_free(mopt_hf_kv *kv) {
    free(kv->s);
    memset(kv, 0, sizeof *kv);
}
