/* export.trtllm: a TensorRT-LLM checkpoint (docs/source/architecture/checkpoint.md):
 * config.json with the architecture, mapping {world_size, tp_size, pp_size} and
 * quantization {quant_algo, kv_cache_quant_algo, group_size, has_zero_point,
 * pre_quant_scale, exclude_modules}, and rank{r}.safetensors with TRT-LLM's
 * names: transformer.vocab_embedding, transformer.layers.N.{input_layernorm,
 * attention.qkv (q, k, v fused), attention.dense, post_layernorm, mlp.fc (LLaMA
 * gate_proj / GPT c_fc), mlp.gate (up_proj), mlp.proj (down_proj)},
 * transformer.ln_f, lm_head. Quantized linears keep their stored values, with
 * ModelOpt's tensor names:
 *   W4A16_AWQ    weight I8 [out/2, in] (int4, rows 2r / 2r+1 in the low / high nibble),
 *                weights_scaling_factor F16 [out, in/gs], prequant_scaling_factor F16 [in] (ones)
 *   W8A16        weight I8 [out, in], weights_scaling_factor F16 [out]
 *   W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN  weight I8, weights_scaling_factor F32 [out]
 *   FP8          weight F8_E4M3, weights_scaling_factor F32 [], activation_scaling_factor F32 []
 *   FP8_PER_CHANNEL_PER_TOKEN  weight F8_E4M3, weights_scaling_factor F32 [out]
 * tp=N splits column-parallel linears (qkv by heads, fc, gate, lm_head) by
 * output rows and row-parallel ones (dense, proj) by input columns; norms,
 * embeddings and row-parallel biases are replicated. LLaMA uses rotate-half
 * RoPE ("rope_gpt_neox"), so llama2.c's interleaved q/k rows are permuted. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic_dir.h"
#include "export_plugin.h"
#include "hf_quant.h"
#include "mopt/quant.h"
#include "rope_order.h"
#include "st_writer.h"

typedef enum { TQ_NONE, TQ_W4A16_AWQ, TQ_W8A16, TQ_W8A8, TQ_FP8, TQ_FP8_PC } tq_algo;

static const char *algo_name(tq_algo a) {
    static const char *const n[] = {NULL, "W4A16_AWQ", "W8A16", "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN", "FP8",
                                    "FP8_PER_CHANNEL_PER_TOKEN"};
    return n[a];
}

static tq_algo algo_of(const hfq_scheme *s) {
    if (!s->n_packed) return TQ_NONE;
    if (s->dtype == MOPT_DTYPE_W8A8) return TQ_W8A8;
    if (s->dtype == MOPT_DTYPE_FP8) {
        if ((s->flags & MOPT_QUANT_PER_TENSOR) && (s->flags & MOPT_QUANT_ACT_STATIC)) return TQ_FP8;
        if (!(s->flags & MOPT_QUANT_PER_TENSOR) && (s->flags & MOPT_QUANT_ACT_PER_TOKEN)) return TQ_FP8_PC;
        return TQ_NONE;
    }
    if (!(s->flags & MOPT_QUANT_SYM) || s->act_order) return TQ_NONE;
    if (s->bits == 4 && s->group_size > 0) return TQ_W4A16_AWQ;
    if (s->bits == 8 && s->group_size < 0) return TQ_W8A16;
    return TQ_NONE;
}

/* One logical TRT-LLM linear: the rows of up to three mopt tensors (q, k, v). */
typedef struct {
    const mopt_tensor *src[3];
    int n_src;
    int64_t out, in;
    int32_t hd; /* > 0: permute q/k rows of a llama2.c model to rotate-half */
} tlin;

static const mopt_tensor *row_of(const tlin *L, int64_t r, int64_t *row) {
    for (int k = 0; k < L->n_src; k++) {
        const int64_t n = L->src[k]->ndim == 1 ? L->src[k]->ne[0] : L->src[k]->ne[1];
        if (r < n) {
            if (L->hd > 0 && k < 2) r = rope_half_to_interleaved(r, L->hd); /* q and k only */
            *row = r;
            return L->src[k];
        }
        r -= n;
    }
    return NULL;
}

typedef struct {
    const mopt_host_api *h;
    const char *fdtype; /* "F16", "BF16", "F32", or NULL: each float tensor keeps its dtype */
    tq_algo algo;
    mopt_error *err;
} ctx_t;

/* Adds `name` holding rows `rows` (n_rows indices into L) and columns [c0, c0 + nc). */
static mopt_status add_linear(ctx_t *c, st_list *l, const char *name, const tlin *L, const int64_t *rows, int64_t n_rows,
                              int64_t c0, int64_t nc) {
    const mopt_host_api *h = c->h;
    char n[MOPT_MAX_NAME + 48];
    const mopt_tensor *s0 = L->src[0];
    const int vec = s0->ndim == 1;
    if (vec || s0->dtype < MOPT_DTYPE_PACKED_FIRST) { /* float: weight or bias */
        const char *fdt = c->fdtype ? c->fdtype : s0->dtype == MOPT_DTYPE_F32 ? "F32" : s0->dtype == MOPT_DTYPE_BF16 ? "BF16" : "F16";
        const size_t es = strcmp(fdt, "F32") ? 2 : 4;
        void *d = malloc((size_t)(n_rows * nc) * es);
        float *tmp = malloc((size_t)(vec ? s0->ne[0] : L->in) * sizeof *tmp);
        mopt_status st = d && tmp ? MOPT_OK : h->error_set(c->err, MOPT_E_NOMEM, "export.trtllm", "out of memory");
        for (int64_t r = 0; r < n_rows && !st; r++) {
            int64_t row = 0;
            const mopt_tensor *t = row_of(L, rows[r], &row);
            if (vec) {
                st = h->tensor_read_f32(t, row, 1, tmp, c->err);
                if (!st) st_store_float(c->h, fdt, d, r, tmp[0]);
            } else {
                st = h->weight_row_f32(t, row, tmp, c->err);
                for (int64_t k = 0; k < nc && !st; k++) st_store_float(c->h, fdt, d, r * nc + k, tmp[c0 + k]);
            }
        }
        free(tmp);
        if (st) {
            free(d);
            return st;
        }
        const int64_t shape[2] = {n_rows, nc};
        snprintf(n, sizeof n, "%s", name);
        return st_list_add(h, l, n, fdt, vec ? 1 : 2, shape, d, (size_t)(n_rows * nc) * es, c->err);
    }
    /* packed: the stored values */
    char base[MOPT_MAX_NAME + 16];
    snprintf(base, sizeof base, "%s", name);
    char *dot = strrchr(base, '.');
    if (dot) *dot = 0;
    mopt_status st = MOPT_OK;
    if (c->algo == TQ_W4A16_AWQ) {
        if (n_rows % 2) return h->error_set(c->err, MOPT_E_UNSUPPORTED, "export.trtllm", "%s: odd row count %lld for int4 pairs", name, (long long)n_rows);
        const int32_t gs = s0->quant->group_size;
        if (c0 % gs || (nc % gs && c0 + nc != L->in))
            return h->error_set(c->err, MOPT_E_UNSUPPORTED, "export.trtllm", "%s: the tensor-parallel split (%lld columns) cuts a %d-column group",
                                name, (long long)nc, gs);
        const int64_t ng = (nc + gs - 1) / gs, g0 = c0 / gs;
        uint8_t *w = calloc((size_t)(n_rows / 2 * nc), 1);
        void *sc = malloc((size_t)(n_rows * ng) * 2), *pq = malloc((size_t)nc * 2);
        if (!w || !sc || !pq) {
            free(w), free(sc), free(pq);
            return h->error_set(c->err, MOPT_E_NOMEM, "export.trtllm", "out of memory");
        }
        for (int64_t r = 0; r < n_rows; r++) {
            int64_t row = 0;
            const mopt_tensor *t = row_of(L, rows[r], &row);
            const int64_t tng = t->quant->scale->ne[0];
            for (int64_t k = 0; k < nc; k++)
                w[(r / 2) * nc + k] |= (uint8_t)(((h->qint_get(t, row, c0 + k) - 8) & 15) << (4 * (r % 2)));
            for (int64_t g = 0; g < ng; g++) ((uint16_t *)sc)[r * ng + g] = ((const uint16_t *)t->quant->scale->data)[row * tng + g0 + g];
        }
        for (int64_t k = 0; k < nc; k++) ((uint16_t *)pq)[k] = 0x3c00; /* 1.0: the smoothing is folded into the graph */
        const int64_t ws[2] = {n_rows / 2, nc}, ss[2] = {n_rows, ng}, ps[1] = {nc};
        snprintf(n, sizeof n, "%s.weight", base);
        st = st_list_add(h, l, n, "I8", 2, ws, w, (size_t)(n_rows / 2 * nc), c->err);
        snprintf(n, sizeof n, "%s.weights_scaling_factor", base);
        if (!st) st = st_list_add(h, l, n, "F16", 2, ss, sc, (size_t)(n_rows * ng) * 2, c->err);
        else free(sc);
        snprintf(n, sizeof n, "%s.prequant_scaling_factor", base);
        if (!st) st = st_list_add(h, l, n, "F16", 1, ps, pq, (size_t)nc * 2, c->err);
        else free(pq);
        return st;
    }
    /* 8-bit kinds: one byte per value, per-row or per-tensor scales */
    uint8_t *w = malloc((size_t)(n_rows * nc));
    const int per_tensor = c->algo == TQ_FP8;
    float *sc = malloc((size_t)(per_tensor ? 1 : n_rows) * sizeof *sc);
    if (!w || !sc) {
        free(w), free(sc);
        return h->error_set(c->err, MOPT_E_NOMEM, "export.trtllm", "out of memory");
    }
    float act = 0;
    for (int64_t r = 0; r < n_rows; r++) {
        int64_t row = 0;
        const mopt_tensor *t = row_of(L, rows[r], &row);
        for (int64_t k = 0; k < nc; k++)
            w[r * nc + k] = c->algo == TQ_W8A16 ? (uint8_t)(int8_t)(h->qint_get(t, row, c0 + k) - 128)
                                                : ((const uint8_t *)t->data)[(size_t)row * t->nb[1] + (size_t)(c0 + k)];
        float v = 0;
        if (c->algo == TQ_W8A16) {
            h->tensor_read_f32(t->quant->scale, row, 1, &v, c->err);
        } else {
            v = ((const float *)t->quant->scale->data)[per_tensor ? 0 : row];
        }
        if (!per_tensor) sc[r] = v;
        else if (r == 0) sc[0] = v, act = t->quant->act_scale;
        else if (v != sc[0] || t->quant->act_scale != act) { /* q, k and v fused under one scale */
            free(w), free(sc);
            return h->error_set(c->err, MOPT_E_UNSUPPORTED, "export.trtllm",
                                "%s: per-tensor FP8 scales differ between the fused q/k/v (TRT-LLM holds one)", name);
        }
    }
    const int64_t ws[2] = {n_rows, nc}, ss[1] = {n_rows};
    const char *sdt = c->algo == TQ_W8A16 ? "F16" : "F32"; /* the values the scales hold exactly */
    void *sv = sc;
    if (c->algo == TQ_W8A16 && strcmp(sdt, "F32")) { /* scales in the model dtype */
        sv = malloc((size_t)n_rows * 2);
        for (int64_t r = 0; sv && r < n_rows; r++) st_store_float(h, sdt, sv, r, sc[r]);
        free(sc);
    }
    snprintf(n, sizeof n, "%s.weight", base);
    st = st_list_add(h, l, n, c->algo == TQ_FP8 || c->algo == TQ_FP8_PC ? "F8_E4M3" : "I8", 2, ws, w, (size_t)(n_rows * nc), c->err);
    snprintf(n, sizeof n, "%s.weights_scaling_factor", base);
    const size_t sb = (size_t)(per_tensor ? 1 : n_rows) * (strcmp(sdt, "F32") ? 2 : 4);
    if (!st) st = st_list_add(h, l, n, sdt, per_tensor ? 0 : 1, ss, sv, sb, c->err);
    else free(sv);
    if (!st && per_tensor) {
        float *a = malloc(4);
        if (a) *a = act;
        snprintf(n, sizeof n, "%s.activation_scaling_factor", base);
        st = st_list_add(h, l, n, "F32", 0, ss, a, 4, c->err);
    }
    return st;
}

/* --- layout of the model ------------------------------------------------------- */

typedef enum { SPLIT_NONE, SPLIT_ROWS, SPLIT_COLS, SPLIT_QKV } split_kind;

static const mopt_tensor *T(const mopt_host_api *h, mopt_graph *g, const char *fmt, int l) {
    char name[MOPT_MAX_NAME];
    snprintf(name, sizeof name, fmt, l);
    return h->graph_find_tensor(g, name);
}

/* Adds one TRT-LLM tensor (rank r of tp) built from mopt tensors a[, b, c]. */
static mopt_status emit(ctx_t *c, st_list *l, mopt_graph *g, const char *name, const mopt_tensor *a, const mopt_tensor *b,
                        const mopt_tensor *cc, split_kind split, int r, int tp, int32_t hd) {
    if (!a) return MOPT_OK;
    const mopt_host_api *h = c->h;
    const mopt_arch *ar = h->graph_arch(g);
    tlin L = {{a, b, cc}, cc ? 3 : 1, 0, a->ne[0], hd};
    for (int k = 0; k < L.n_src; k++) L.out += L.src[k]->ndim == 1 ? L.src[k]->ne[0] : L.src[k]->ne[1];
    const int vec = a->ndim == 1;
    if (vec) L.in = 1;
    int64_t n_rows = L.out, c0 = 0, nc = L.in;
    int64_t *rows = malloc((size_t)L.out * sizeof *rows);
    if (!rows) return h->error_set(c->err, MOPT_E_NOMEM, "export.trtllm", "out of memory");
    for (int64_t i = 0; i < L.out; i++) rows[i] = i;
    if (split == SPLIT_ROWS) {
        n_rows = L.out / tp;
        for (int64_t i = 0; i < n_rows; i++) rows[i] = r * n_rows + i;
    } else if (split == SPLIT_QKV) { /* this rank's q heads, then its k and v heads */
        const int64_t q = (int64_t)ar->n_heads * ar->head_dim, kv = (int64_t)ar->n_kv_heads * ar->head_dim;
        const int64_t qr = q / tp, kr = kv / tp;
        n_rows = 0;
        for (int64_t i = 0; i < qr; i++) rows[n_rows++] = r * qr + i;
        for (int64_t i = 0; i < kr; i++) rows[n_rows++] = q + r * kr + i;
        for (int64_t i = 0; i < kr; i++) rows[n_rows++] = q + kv + r * kr + i;
    } else if (split == SPLIT_COLS && !vec) {
        nc = L.in / tp;
        c0 = r * nc;
    }
    mopt_status st = add_linear(c, l, name, &L, rows, n_rows, c0, vec ? 1 : nc);
    if (!st && vec) l->e[l->n - 1].ndim = 1, l->e[l->n - 1].shape[0] = n_rows;
    free(rows);
    return st;
}

static mopt_status rank_tensors(ctx_t *c, mopt_graph *g, st_list *l, int r, int tp) {
    const mopt_host_api *h = c->h;
    const mopt_arch *a = h->graph_arch(g);
    const int gpt2 = !strcmp(a->family, "gpt2");
    const int32_t hd = !gpt2 && a->rope_style == MOPT_ROPE_INTERLEAVED ? a->head_dim : 0;
    char n[128];
    mopt_status st = MOPT_OK;
#define E(NAME, A, B, C, SPLIT, HD) \
    if (!st) st = emit(c, l, g, NAME, A, B, C, SPLIT, r, tp, HD)
    E("transformer.vocab_embedding.weight", T(h, g, gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight", 0), 0, 0, SPLIT_NONE, 0);
    if (gpt2) E("transformer.position_embedding.weight", T(h, g, "transformer.wpe.weight", 0), 0, 0, SPLIT_NONE, 0);
    for (int L = 0; L < a->n_layers && !st; L++) {
        for (int bias = 0; bias < 2; bias++) {
            const char *kind = bias ? "bias" : "weight";
            char f[3][96];
#define NM(fmt) (snprintf(n, sizeof n, "transformer.layers.%d." fmt ".%s", L, kind), n)
#define SRC(i, fmt) (snprintf(f[i], sizeof f[i], fmt ".%s", L, kind), h->graph_find_tensor(g, f[i]))
            if (gpt2) {
                E(NM("input_layernorm"), SRC(0, "transformer.h.%d.ln_1"), 0, 0, SPLIT_NONE, 0);
                E(NM("attention.qkv"), SRC(0, "transformer.h.%d.attn.q_proj"), SRC(1, "transformer.h.%d.attn.k_proj"),
                  SRC(2, "transformer.h.%d.attn.v_proj"), SPLIT_QKV, 0);
                E(NM("attention.dense"), SRC(0, "transformer.h.%d.attn.c_proj"), 0, 0, bias ? SPLIT_NONE : SPLIT_COLS, 0);
                E(NM("post_layernorm"), SRC(0, "transformer.h.%d.ln_2"), 0, 0, SPLIT_NONE, 0);
                E(NM("mlp.fc"), SRC(0, "transformer.h.%d.mlp.c_fc"), 0, 0, SPLIT_ROWS, 0);
                E(NM("mlp.proj"), SRC(0, "transformer.h.%d.mlp.c_proj"), 0, 0, bias ? SPLIT_NONE : SPLIT_COLS, 0);
            } else {
                E(NM("input_layernorm"), SRC(0, "model.layers.%d.input_layernorm"), 0, 0, SPLIT_NONE, 0);
                E(NM("attention.qkv"), SRC(0, "model.layers.%d.self_attn.q_proj"), SRC(1, "model.layers.%d.self_attn.k_proj"),
                  SRC(2, "model.layers.%d.self_attn.v_proj"), SPLIT_QKV, bias ? 0 : hd);
                E(NM("attention.dense"), SRC(0, "model.layers.%d.self_attn.o_proj"), 0, 0, bias ? SPLIT_NONE : SPLIT_COLS, 0);
                E(NM("post_layernorm"), SRC(0, "model.layers.%d.post_attention_layernorm"), 0, 0, SPLIT_NONE, 0);
                E(NM("mlp.fc"), SRC(0, "model.layers.%d.mlp.gate_proj"), 0, 0, SPLIT_ROWS, 0);
                E(NM("mlp.gate"), SRC(0, "model.layers.%d.mlp.up_proj"), 0, 0, SPLIT_ROWS, 0);
                E(NM("mlp.proj"), SRC(0, "model.layers.%d.mlp.down_proj"), 0, 0, bias ? SPLIT_NONE : SPLIT_COLS, 0);
            }
#undef NM
#undef SRC
        }
    }
    E("transformer.ln_f.weight", T(h, g, gpt2 ? "transformer.ln_f.weight" : "model.norm.weight", 0), 0, 0, SPLIT_NONE, 0);
    if (gpt2) E("transformer.ln_f.bias", T(h, g, "transformer.ln_f.bias", 0), 0, 0, SPLIT_NONE, 0);
    const mopt_tensor *lm = a->tied_embeddings ? T(h, g, gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight", 0)
                                               : T(h, g, "lm_head.weight", 0);
    E("lm_head.weight", lm, 0, 0, SPLIT_ROWS, 0);
#undef E
    return st;
}

static json_t *config(const mopt_host_api *h, mopt_graph *g, const char *torch, int tp, tq_algo algo, const hfq_scheme *s) {
    const mopt_arch *a = h->graph_arch(g);
    const int gpt2 = !strcmp(a->family, "gpt2");
    json_t *q = json_pack("{s:o, s:n, s:i, s:b, s:b}", "quant_algo", algo ? json_string(algo_name(algo)) : json_null(),
                          "kv_cache_quant_algo", "group_size", algo == TQ_W4A16_AWQ ? s->group_size : 128, "has_zero_point", 0,
                          "pre_quant_scale", algo == TQ_W4A16_AWQ);
    json_t *ex = json_array();
    for (int32_t i = 0; algo && i < h->graph_n_nodes(g); i++) {
        const mopt_node *n = h->graph_node(g, i);
        if (n->op == MOPT_OP_LINEAR && n->weight && n->weight->dtype < MOPT_DTYPE_PACKED_FIRST) {
            char m[MOPT_MAX_NAME];
            snprintf(m, sizeof m, "%s", n->weight->name);
            json_array_append_new(ex, json_string(m));
        }
    }
    json_array_append_new(ex, json_string("lm_head"));
    json_object_set_new(q, "exclude_modules", ex);
    json_t *c = json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:f, s:s, s:b, s:b, s:{s:i, s:i, s:i}, s:o}",
                          "architecture", gpt2 ? "GPTForCausalLM" : "LlamaForCausalLM", "dtype", torch, "logits_dtype", "float32",
                          "vocab_size", a->vocab_size, "max_position_embeddings", a->max_ctx, "hidden_size", a->dim,
                          "num_hidden_layers", a->n_layers, "num_attention_heads", a->n_heads, "num_key_value_heads",
                          a->n_kv_heads, "head_size", a->head_dim, "intermediate_size", a->ffn_dim, "hidden_act",
                          gpt2 ? "gelu" : "silu", "norm_epsilon", (double)a->norm_eps, "position_embedding_type",
                          gpt2 ? "learned_absolute" : "rope_gpt_neox", "share_embedding_table", 0, "tie_word_embeddings",
                          a->tied_embeddings, "mapping", "world_size", tp, "tp_size", tp, "pp_size", 1, "quantization", q);
    if (!gpt2) {
        json_object_set_new(c, "rotary_base", json_real(a->rope_theta));
        json_object_set_new(c, "attn_bias", json_boolean(a->qkv_bias));
        json_object_set_new(c, "mlp_bias", json_boolean(a->mlp_bias));
    } else {
        json_object_set_new(c, "bias", json_true());
    }
    if (a->bos_id >= 0) json_object_set_new(c, "bos_token_id", json_integer(a->bos_id));
    if (a->eos_id >= 0) json_object_set_new(c, "eos_token_id", json_integer(a->eos_id));
    return c;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *pctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, "export.trtllm", "needs a model");
    const mopt_arch *a = h->graph_arch(g);
    const int tp = (int)h->opt_int(o, "tp");
    hfq_scheme s;
    mopt_status st = hfq_scheme_of(h, g, HF_DENSE, &s, err);
    if (st) return st;
    const tq_algo algo = algo_of(&s);
    if (s.n_packed && !algo)
        return h->error_set(err, MOPT_E_UNSUPPORTED, "export.trtllm",
                            "%s's scheme has no TensorRT-LLM quant_algo here (W4A16_AWQ: int4 sym with groups; W8A16: int8 sym "
                            "per channel; W8A8 per token; FP8 per tensor static or per channel dynamic)",
                            s.first);
    if (a->n_heads % tp || a->n_kv_heads % tp || a->ffn_dim % tp || a->vocab_size % tp || a->dim % tp)
        return h->error_set(err, MOPT_E_INVALID, "export.trtllm",
                            "tp=%d must divide the heads (%d, %d kv), the MLP width %d, the vocabulary %d and the width %d", tp,
                            a->n_heads, a->n_kv_heads, a->ffn_dim, a->vocab_size, a->dim);
    const char *want = h->opt_string(o, "dtype");
    const mopt_tensor *emb = h->graph_tensor(g, 0);
    const char *fdt = !strcmp(want, "f32") ? "F32" : !strcmp(want, "bf16") ? "BF16" : !strcmp(want, "f16") ? "F16" : NULL;
    const char *mdt = fdt ? fdt : emb && emb->dtype == MOPT_DTYPE_F32 ? "F32" : emb && emb->dtype == MOPT_DTYPE_BF16 ? "BF16" : "F16";
    const char *torch = !strcmp(mdt, "F32") ? "float32" : !strcmp(mdt, "BF16") ? "bfloat16" : "float16";
    atomic_dir d;
    if ((st = atomic_dir_begin(h, pctx, &d, h->opt_string(o, "out"), h->opt_bool(o, "force"), 0, err))) return st;
    ctx_t c = {h, fdt, algo, err};
    int64_t bytes = 0;
    for (int r = 0; r < tp && !st; r++) {
        st_list l = {0};
        if (h->interrupted()) st = h->error_set(err, MOPT_E_INTERRUPTED, "export.trtllm", "interrupted before rank %d", r);
        if (!st) st = rank_tensors(&c, g, &l, r, tp);
        char name[64];
        snprintf(name, sizeof name, "rank%d.safetensors", r);
        for (int32_t i = 0; i < l.n; i++) bytes += (int64_t)l.e[i].nbytes;
        if (!st) st = st_write_file(h, &d, name, l.e, l.n, err);
        st_list_free(&l);
        h->progress(pctx, r + 1, tp);
    }
    if (!st) {
        json_t *cfg = config(h, g, torch, tp, algo, &s);
        char *text = json_dumps(cfg, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
        json_decref(cfg);
        st = text ? atomic_dir_write(h, &d, "config.json", text, strlen(text), err)
                  : h->error_set(err, MOPT_E_NOMEM, "export.trtllm", "out of memory");
        free(text);
    }
    /* TRT-LLM reads the tokenizer from --tokenizer_dir; keeping it here makes the directory self-contained */
    if (!st && h->ctx_model(pctx)) st = export_copy_tokenizer(h, h->model_path(h->ctx_model(pctx)), &d, err);
    if (!st) st = atomic_dir_commit(h, &d, err);
    if (st) {
        atomic_dir_abort(&d);
        return st;
    }
    h->report_artifact(report, "trtllm-checkpoint", d.target);
    h->report_metric(report, "bytes", (double)bytes);
    h->report_metric(report, "tp", tp);
    h->report_string(report, "quant_algo", algo ? algo_name(algo) : "none");
    return MOPT_OK;
}

static const char *const dtypes[] = {"auto", "f32", "f16", "bf16", NULL};

static const mopt_opt_spec opts[] = {
    {"out", MOPT_OPT_STRING, MOPT_OPT_REQUIRED, "target directory (written atomically)", NULL, 0, -1, NULL},
    {"tp", MOPT_OPT_INT, 0, "tensor-parallel ranks: rank0..rank{tp-1}.safetensors", "1", 1, 64, NULL},
    {"dtype", MOPT_OPT_ENUM, 0, "dtype of the float tensors (auto: each keeps its own; config.json names the embeddings')", "auto", 0, -1, dtypes},
    {"force", MOPT_OPT_BOOL, 0, "replace an existing target", "false", 0, -1, NULL},
};

const mopt_pass_desc export_trtllm_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_EXPORT,
    .name = "export.trtllm",
    .summary = "TensorRT-LLM checkpoint (config.json + rank*.safetensors), fused qkv, W4A16_AWQ/W8A16/W8A8/FP8, tensor-parallel split",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
};
