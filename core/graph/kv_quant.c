/* KV-cache formats per layer (mopt_graph_set_kv_quant): the graph holds each
 * layer's format and scales; sessions read them when they allocate caches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "graph_impl.h"

static const char *const kv_names[MOPT_KV_FORMAT_COUNT] = {"float", "fp8", "int8", "f16"};

const char *mopt_kv_format_name(mopt_kv_format f) { return f >= 0 && f < MOPT_KV_FORMAT_COUNT ? kv_names[f] : "?"; }

static void clear_layer(mopt_kv_quant *q) {
    free((void *)q->k_scale);
    memset(q, 0, sizeof *q);
}

void mopt_graph_kv_free(mopt_graph *g) {
    for (int32_t l = 0; g->kv && l < g->arch.n_layers; l++) clear_layer(&g->kv[l]);
    free(g->kv);
    g->kv = NULL;
}

mopt_status mopt_graph_set_kv_quant(mopt_graph *g, int32_t layer, mopt_kv_format format, int32_t n_scales, const float *k_scale,
                                    const float *v_scale, mopt_error *err) {
    const int32_t at = mopt_graph_find_node(g, MOPT_ROLE_ATTN, layer);
    if (at < 0) return MOPT_FAIL(err, MOPT_E_INVALID, "layer %d has no attention, so no KV cache", layer);
    if (format < 0 || format >= MOPT_KV_FORMAT_COUNT) return MOPT_FAIL(err, MOPT_E_INVALID, "unknown KV-cache format %d", (int)format);
    if (format == MOPT_KV_F16)
        return MOPT_FAIL(err, MOPT_E_INVALID, "an f16 KV cache is a session's choice (mopt_session_opts.kv_cache, --kv-cache f16), not a model's");
    const int32_t heads = mopt_graph_node(g, at)->n_kv_heads;
    if (format != MOPT_KV_FLOAT) {
        if (n_scales != 1 && n_scales != heads)
            return MOPT_FAIL(err, MOPT_E_INVALID, "layer %d: %d KV scales; it takes 1 or one per KV head (%d)", layer, n_scales, heads);
        for (int32_t i = 0; i < n_scales; i++)
            if (!(k_scale[i] > 0 && isfinite(k_scale[i])) || !(v_scale[i] > 0 && isfinite(v_scale[i])))
                return MOPT_FAIL(err, MOPT_E_INVALID, "layer %d: KV scale %d is %g / %g; scales must be finite and positive", layer, i,
                                 (double)k_scale[i], (double)v_scale[i]);
    }
    if (!g->kv) {
        if (format == MOPT_KV_FLOAT) return MOPT_OK;
        g->kv = calloc((size_t)g->arch.n_layers, sizeof *g->kv);
        if (!g->kv) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    float *s = NULL;
    if (format != MOPT_KV_FLOAT) {
        s = malloc(2 * (size_t)n_scales * sizeof *s); /* k then v, one block */
        if (!s) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        memcpy(s, k_scale, (size_t)n_scales * sizeof *s);
        memcpy(s + n_scales, v_scale, (size_t)n_scales * sizeof *s);
    }
    mopt_kv_quant *q = &g->kv[layer];
    clear_layer(q);
    if (s) *q = (mopt_kv_quant){format, n_scales, s, s + n_scales};
    return MOPT_OK;
}

mopt_kv_quant mopt_graph_kv_quant(const mopt_graph *g, int32_t layer) {
    if (!g->kv || layer < 0 || layer >= g->arch.n_layers) return (mopt_kv_quant){0};
    return g->kv[layer];
}

mopt_kv_quant mopt_graph_kv_in_session(const mopt_graph *g, int32_t layer, int kv_f16) {
    const mopt_kv_quant kq = mopt_graph_kv_quant(g, layer);
    return kq.format == MOPT_KV_FLOAT && kv_f16 ? (mopt_kv_quant){.format = MOPT_KV_F16} : kq;
}

size_t mopt_kv_value_bytes(int32_t format) { return format == MOPT_KV_FLOAT ? sizeof(float) : format == MOPT_KV_F16 ? 2 : 1; }

int64_t mopt_graph_kv_bytes_in_session(const mopt_graph *g, int kv_f16) {
    int64_t bytes = 0;
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->op == MOPT_OP_ATTENTION)
            bytes += 2 * (int64_t)n->n_kv_heads * n->head_dim * (int64_t)mopt_kv_value_bytes(mopt_graph_kv_in_session(g, n->layer, kv_f16).format);
    }
    return bytes;
}

int64_t mopt_graph_kv_bytes_per_token(const mopt_graph *g) { return mopt_graph_kv_bytes_in_session(g, 0); }
