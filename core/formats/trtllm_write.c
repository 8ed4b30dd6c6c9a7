/* TensorRT-LLM checkpoints written (trtllm.c reads them): config.json for the
 * family and quant_algo, and the tensors of one rank in TensorRT-LLM's layout,
 * quantized linears with their stored values under ModelOpt's names:
 *   W4A16_AWQ    weight I8 [out/2, in] (int4 pairs, hf_quant.h), weights_scaling_factor
 *                F16 [out, in/gs], prequant_scaling_factor F16 [in] (ones)
 *   W8A16        weight I8 [out, in], weights_scaling_factor F16 [out]
 *   W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN  weight I8, weights_scaling_factor F32 [out]
 *   FP8          weight F8_E4M3, weights_scaling_factor F32 [], activation_scaling_factor F32 []
 *   FP8_PER_CHANNEL_PER_TOKEN  weight F8_E4M3, weights_scaling_factor F32 [out]
 *   W4A8_AWQ     as W4A16_AWQ, and weights_scaling_factor_2 F32 [] (the FP8 scale the int4 values are
 *                widened with) and activation_scaling_factor F32 [] (static FP8 inputs); TRT-LLM's loader
 *                divides the group scales by the first and the prequant scales by the second
 *   NVFP4        weight U8 [out, in/2] (E2M1 pairs, low nibble first), weights_scaling_factor F8_E4M3
 *                [out, in/16], weights_scaling_factor_2 F32 [] and activation_scaling_factor F32 [] (the
 *                global scales; TRT-LLM's loader renames them weights_block_scaling_factor and so on)
 * A quantized KV cache (kv_cache_quant_algo FP8 or INT8) adds
 * attention.kv_cache_scaling_factor F32 [1] per layer on every rank, beside the
 * fused qkv: one scale for K and V, max(k_scale, v_scale), as ModelOpt writes it.
 * Which rows and columns a rank holds is the exporter's choice. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"
#include "hf_quant.h"
#include "json_util.h"
#include "mopt/quant.h"
#include "safetensors.h"

/* A float named BASE.PART holding one value, shape [] */
static mopt_status add_scalar(mopt_st_list *l, const char *base, const char *part, float v, mopt_error *err) {
    char n[MOPT_MAX_NAME + 48];
    snprintf(n, sizeof n, "%s.%s", base, part);
    float *d = malloc(sizeof *d);
    if (d) *d = v;
    const int64_t shape[1] = {1};
    return mopt_st_list_add(l, n, "F32", 0, shape, d, sizeof *d, err);
}

/* The global weight and activation scales a fused GEMM holds once (weights_scaling_factor_2,
 * activation_scaling_factor: ModelOpt's weight_scale_2 and input_scale), which every linear fused into ft must share */
static mopt_status shared_scales(const mopt_file_tensor *ft, const int64_t *rows, int64_t n_rows, const char *what, float *g,
                                 float *act, mopt_error *err) {
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t row = 0;
        const mopt_tensor *t = mopt_file_tensor_row(ft, rows[r], &row);
        if (r == 0) *g = t->quant->global_scale, *act = t->quant->act_scale;
        if (t->quant->global_scale != *g || t->quant->act_scale != *act)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED,
                             "%s: the fused linears have different %s global scales (TRT-LLM holds one; mopt's passes share them)", ft->name,
                             what);
    }
    return MOPT_OK;
}

/* NVFP4: E2M1 pairs U8 [rows, nc/2], E4M3 block scales [rows, nc/16], and the shared global scales */
static mopt_status add_nvfp4(mopt_st_list *l, const mopt_file_tensor *ft, const char *base, const int64_t *rows, int64_t n_rows,
                             int64_t c0, int64_t nc, mopt_error *err) {
    if (c0 % 16 || nc % 16)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: the tensor-parallel split (%lld columns) cuts an NVFP4 block of 16", ft->name,
                         (long long)nc);
    float g = 0, act = 0;
    mopt_status st = shared_scales(ft, rows, n_rows, "NVFP4", &g, &act, err);
    if (st) return st;
    uint8_t *w = malloc((size_t)(n_rows * nc / 2) + 1), *sc = malloc((size_t)(n_rows * nc / 16) + 1);
    if (!w || !sc) {
        free(w), free(sc);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t row = 0;
        const mopt_tensor *t = mopt_file_tensor_row(ft, rows[r], &row);
        memcpy(w + r * (nc / 2), (const uint8_t *)t->data + (size_t)row * t->nb[1] + c0 / 2, (size_t)(nc / 2));
        memcpy(sc + r * (nc / 16), (const uint8_t *)t->quant->scale->data + row * (t->ne[0] / 16) + c0 / 16, (size_t)(nc / 16));
    }
    char n[MOPT_MAX_NAME + 48];
    const int64_t ws[2] = {n_rows, nc / 2}, ss[2] = {n_rows, nc / 16};
    snprintf(n, sizeof n, "%s.weight", base);
    st = mopt_st_list_add(l, n, "U8", 2, ws, w, (size_t)(n_rows * nc / 2), err);
    snprintf(n, sizeof n, "%s.weights_scaling_factor", base);
    if (!st) st = mopt_st_list_add(l, n, "F8_E4M3", 2, ss, sc, (size_t)(n_rows * nc / 16), err);
    else free(sc);
    if (!st) st = add_scalar(l, base, "weights_scaling_factor_2", g, err);
    if (!st) st = add_scalar(l, base, "activation_scaling_factor", act, err);
    return st;
}

/* A packed file tensor's rows `rows` (n_rows indices into it) and columns [c0, c0 + nc), as stored. */
static mopt_status add_packed(mopt_st_list *l, const mopt_file_tensor *ft, mopt_tq_algo algo, const int64_t *rows, int64_t n_rows,
                             int64_t c0, int64_t nc, mopt_error *err) {
    const char *name = ft->name;
    char n[MOPT_MAX_NAME + 48];
    const mopt_tensor *s0 = ft->src[0];
    char base[MOPT_MAX_NAME + 16];
    snprintf(base, sizeof base, "%s", name);
    char *dot = strrchr(base, '.');
    if (dot) *dot = 0;
    mopt_status st = MOPT_OK;
    if (algo == MOPT_TQ_W4A16_AWQ || algo == MOPT_TQ_W4A8_AWQ) {
        if (n_rows % 2) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: odd row count %lld for int4 pairs", name, (long long)n_rows);
        float g = 0, act = 0;
        if (algo == MOPT_TQ_W4A8_AWQ && (st = shared_scales(ft, rows, n_rows, "W4A8_AWQ", &g, &act, err))) return st;
        const int32_t gs = s0->quant->group_size;
        if (c0 % gs || (nc % gs && c0 + nc != ft->cols))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: the tensor-parallel split (%lld columns) cuts a %d-column group",
                                name, (long long)nc, gs);
        const int64_t ng = (nc + gs - 1) / gs, g0 = c0 / gs;
        uint8_t *w = calloc((size_t)(n_rows / 2 * nc), 1);
        void *sc = malloc((size_t)(n_rows * ng) * 2), *pq = malloc((size_t)nc * 2);
        if (!w || !sc || !pq) {
            free(w), free(sc), free(pq);
            return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        }
        for (int64_t r = 0; r < n_rows; r++) {
            int64_t row = 0;
            const mopt_tensor *t = mopt_file_tensor_row(ft, rows[r], &row);
            const int64_t tng = t->quant->scale->ne[0];
            for (int64_t k = 0; k < nc; k++) mopt_int4_pair_put(w, nc, r, k, mopt_qint_get(t, row, c0 + k));
            for (int64_t g = 0; g < ng; g++) ((uint16_t *)sc)[r * ng + g] = ((const uint16_t *)t->quant->scale->data)[row * tng + g0 + g];
        }
        for (int64_t k = 0; k < nc; k++) ((uint16_t *)pq)[k] = 0x3c00; /* 1.0: the smoothing is folded into the graph */
        const int64_t ws[2] = {n_rows / 2, nc}, ss[2] = {n_rows, ng}, ps[1] = {nc};
        snprintf(n, sizeof n, "%s.weight", base);
        st = mopt_st_list_add(l, n, "I8", 2, ws, w, (size_t)(n_rows / 2 * nc), err);
        snprintf(n, sizeof n, "%s.weights_scaling_factor", base);
        if (!st) st = mopt_st_list_add(l, n, "F16", 2, ss, sc, (size_t)(n_rows * ng) * 2, err);
        else free(sc);
        snprintf(n, sizeof n, "%s.prequant_scaling_factor", base);
        if (!st) st = mopt_st_list_add(l, n, "F16", 1, ps, pq, (size_t)nc * 2, err);
        else free(pq);
        if (!st && algo == MOPT_TQ_W4A8_AWQ) st = add_scalar(l, base, "weights_scaling_factor_2", g, err);
        if (!st && algo == MOPT_TQ_W4A8_AWQ) st = add_scalar(l, base, "activation_scaling_factor", act, err);
        return st;
    }
    if (algo == MOPT_TQ_NVFP4) return add_nvfp4(l, ft, base, rows, n_rows, c0, nc, err);
    /* 8-bit kinds: one byte per value, per-row or per-tensor scales */
    uint8_t *w = malloc((size_t)(n_rows * nc));
    const int per_tensor = algo == MOPT_TQ_FP8;
    float *sc = malloc((size_t)(per_tensor ? 1 : n_rows) * sizeof *sc);
    if (!w || !sc) {
        free(w), free(sc);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    float act = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t row = 0;
        const mopt_tensor *t = mopt_file_tensor_row(ft, rows[r], &row);
        for (int64_t k = 0; k < nc; k++)
            w[r * nc + k] = algo == MOPT_TQ_W8A16 ? (uint8_t)(int8_t)(mopt_qint_get(t, row, c0 + k) - 128)
                                                : ((const uint8_t *)t->data)[(size_t)row * t->nb[1] + (size_t)(c0 + k)];
        float v = 0;
        if (algo == MOPT_TQ_W8A16) {
            mopt_tensor_read_f32(t->quant->scale, row, 1, &v, err);
        } else {
            v = ((const float *)t->quant->scale->data)[per_tensor ? 0 : row];
        }
        if (!per_tensor) sc[r] = v;
        else if (r == 0) sc[0] = v, act = t->quant->act_scale;
        else if (v != sc[0] || t->quant->act_scale != act) { /* q, k and v fused under one scale */
            free(w), free(sc);
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: per-tensor FP8 scales differ between the fused q/k/v (TRT-LLM holds one)", name);
        }
    }
    const int64_t ws[2] = {n_rows, nc}, ss[1] = {n_rows};
    const char *sdt = algo == MOPT_TQ_W8A16 ? "F16" : "F32"; /* the values the scales hold exactly */
    void *sv = sc;
    if (algo == MOPT_TQ_W8A16 && strcmp(sdt, "F32")) { /* scales in the model dtype */
        sv = malloc((size_t)n_rows * 2);
        for (int64_t r = 0; sv && r < n_rows; r++) mopt_st_store_float(sdt, sv, r, sc[r]);
        free(sc);
    }
    snprintf(n, sizeof n, "%s.weight", base);
    st = mopt_st_list_add(l, n, algo == MOPT_TQ_FP8 || algo == MOPT_TQ_FP8_PC ? "F8_E4M3" : "I8", 2, ws, w, (size_t)(n_rows * nc), err);
    snprintf(n, sizeof n, "%s.weights_scaling_factor", base);
    const size_t sb = (size_t)(per_tensor ? 1 : n_rows) * (strcmp(sdt, "F32") ? 2 : 4);
    if (!st) st = mopt_st_list_add(l, n, sdt, per_tensor ? 0 : 1, ss, sv, sb, err);
    else free(sv);
    if (!st && per_tensor) {
        float *a = malloc(4);
        if (a) *a = act;
        snprintf(n, sizeof n, "%s.activation_scaling_factor", base);
        st = mopt_st_list_add(l, n, "F32", 0, ss, a, 4, err);
    }
    return st;
}


float mopt_trtllm_kv_scale(const mopt_kv_quant *q) { return q->k_scale[0] > q->v_scale[0] ? q->k_scale[0] : q->v_scale[0]; }

mopt_status mopt_trtllm_add_kv_scale(mopt_st_list *l, const mopt_graph *g, const mopt_file_tensor *ft, mopt_error *err) {
    const char *dot = strrchr(ft->name, '.');
    if (ft->role != MOPT_ROLE_ATTN_Q || ft->ndim != 2 || !dot || strcmp(dot, ".weight")) return MOPT_OK;
    const mopt_kv_quant q = mopt_graph_kv_quant(g, ft->layer);
    if (q.format == MOPT_KV_FLOAT) return MOPT_OK;
    char n[MOPT_MAX_NAME + 48];
    snprintf(n, sizeof n, "%s", ft->name);
    *strrchr(n, '.') = 0; /* without .weight, then without the module (qkv) */
    char *mod = strrchr(n, '.');
    if (!mod) return MOPT_FAIL(err, MOPT_E_INVALID, "%s: no attention module to hold the KV-cache scale", ft->name);
    snprintf(mod, sizeof n - (size_t)(mod - n), ".kv_cache_scaling_factor");
    float *d = malloc(sizeof *d);
    if (d) *d = mopt_trtllm_kv_scale(&q);
    const int64_t shape[1] = {1};
    return mopt_st_list_add(l, n, "F32", 1, shape, d, sizeof *d, err);
}

mopt_status mopt_trtllm_add(mopt_st_list *l, const mopt_file_tensor *ft, const char *algo_name, const char *fdtype, const int64_t *rows,
                            int64_t n_rows, int64_t c0, int64_t nc, mopt_error *err) {
    if (ft->ndim == 1 || ft->src[0]->dtype < MOPT_DTYPE_PACKED_FIRST || ft->role == MOPT_ROLE_LM_HEAD ||
        ft->role == MOPT_ROLE_EMBED) /* float: a weight, a bias, lm_head, the embedding table (dequantized when packed) */
        return mopt_st_add_rows(l, ft, fdtype, rows, n_rows, c0, nc, err);
    const mopt_tq_algo algo = mopt_tq_parse(algo_name);
    if (!algo) return MOPT_FAIL(err, MOPT_E_INVALID, "%s: packed, but quant_algo %s is not one TensorRT-LLM holds", ft->name, algo_name ? algo_name : "(none)");
    return add_packed(l, ft, algo, rows, n_rows, c0, nc, err);
}

/* --- config.json ------------------------------------------------------------------------- */

char *mopt_trtllm_config_json(const mopt_graph *g, const char *torch, int32_t tp, const mopt_quant_scheme *s, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    const mopt_family *f = mopt_family_find(a->family);
    if (!f || !f->trt_archs) {
        MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "architecture family \"%s\" has no TensorRT-LLM form", a->family);
        return NULL;
    }
    const mopt_tq_algo algo = mopt_tq_parse(mopt_trtllm_algo(s));
    mopt_kv_format kv = MOPT_KV_FLOAT;
    if (mopt_kv_scheme_of(g, &kv, err)) return NULL;
    json_t *q = json_pack("{s:o, s:s?, s:i, s:b, s:b}", "quant_algo", algo ? json_string(mopt_tq_names[algo]) : json_null(),
                          "kv_cache_quant_algo", kv == MOPT_KV_FP8 ? "FP8" : kv == MOPT_KV_INT8 ? "INT8" : NULL, "group_size", algo == MOPT_TQ_W4A16_AWQ || algo == MOPT_TQ_W4A8_AWQ ? s->group_size : algo == MOPT_TQ_NVFP4 ? 16 : 128,
                          "has_zero_point", 0, "pre_quant_scale", algo == MOPT_TQ_W4A16_AWQ || algo == MOPT_TQ_W4A8_AWQ);
    json_t *ex = json_array();
    for (int32_t i = 0; algo && i < mopt_graph_n_nodes(g); i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->op == MOPT_OP_LINEAR && n->weight && n->weight->dtype < MOPT_DTYPE_PACKED_FIRST)
            json_array_append_new(ex, json_string(n->weight->name));
    }
    json_array_append_new(ex, json_string("lm_head"));
    json_object_set_new(q, "exclude_modules", ex);
    json_t *c = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:s, s:b, s:b, s:{s:i, s:i, s:i}, s:o}",
                          "architecture", f->trt_archs[0], "dtype", torch, "logits_dtype", "float32", "vocab_size", a->vocab_size,
                          "max_position_embeddings", a->max_ctx, "hidden_size", a->dim, "num_hidden_layers", a->n_layers,
                          "num_attention_heads", a->n_heads, "num_key_value_heads", a->n_kv_heads, "head_size", a->head_dim,
                          "intermediate_size", a->ffn_dim, "hidden_act", f->trt_act, "norm_epsilon", (double)a->norm_eps,
                          "position_embedding_type", f->trt_pos_embedding, "share_embedding_table", 0, "tie_word_embeddings",
                          a->tied_embeddings, "mapping", "world_size", tp, "tp_size", tp, "pp_size", 1, "quantization", q);
    if (c && f->trt_write) f->trt_write(a, c);
    if (c && a->bos_id >= 0) json_object_set_new(c, "bos_token_id", json_integer(a->bos_id));
    if (c && a->eos_id >= 0) json_object_set_new(c, "eos_token_id", json_integer(a->eos_id));
    char *text = c ? mopt_json_dump_text(c, 0) : NULL;
    json_decref(c);
    if (!text) MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    return text;
}
