/* The GPT-2 family:
 *   x = wte(tokens) + wpe(positions)
 *   per layer: x += c_proj(attn(q(n1), k(n1), v(n1)))   n1 = layernorm(x)
 *              x += mlp.c_proj(gelu(c_fc(n2)))          n2 = layernorm(x)
 *   logits = wte^T layernorm(x)                          (tied)
 * Hugging Face stores every linear as a Conv1D weight [in, out] and q/k/v fused
 * as c_attn; mopt keeps [out, in] linears and separate q/k/v (the rules below
 * say how each format stores them). */
#include <stdio.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"
#include "json_util.h"

/* --- names: mopt, Hugging Face as stored, GGUF, TensorRT-LLM ------------------------------ */

#define C1 MOPT_RULE_CONV1D
static const mopt_name_rule rules[] = {
    {MOPT_ROLE_EMBED, MOPT_AT_TOP, "transformer.wte", {NULL, "token_embd", "transformer.vocab_embedding"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_POS_EMBED, MOPT_AT_TOP, "transformer.wpe", {NULL, "position_embd", "transformer.position_embedding"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_ATTN_Q, MOPT_AT_LAYER, "transformer.h.%d.attn.q_proj", {"transformer.h.%d.attn.c_attn", "blk.%d.attn_qkv", "transformer.layers.%d.attention.qkv"}, C1, MOPT_SPLIT_HEADS},
    {MOPT_ROLE_ATTN_K, MOPT_AT_LAYER, "transformer.h.%d.attn.k_proj", {"transformer.h.%d.attn.c_attn", "blk.%d.attn_qkv", "transformer.layers.%d.attention.qkv"}, C1, MOPT_SPLIT_HEADS},
    {MOPT_ROLE_ATTN_V, MOPT_AT_LAYER, "transformer.h.%d.attn.v_proj", {"transformer.h.%d.attn.c_attn", "blk.%d.attn_qkv", "transformer.layers.%d.attention.qkv"}, C1, MOPT_SPLIT_HEADS},
    {MOPT_ROLE_ATTN_NORM, MOPT_AT_LAYER, "transformer.h.%d.ln_1", {NULL, "blk.%d.attn_norm", "transformer.layers.%d.input_layernorm"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_ATTN_O, MOPT_AT_LAYER, "transformer.h.%d.attn.c_proj", {NULL, "blk.%d.attn_output", "transformer.layers.%d.attention.dense"}, C1, MOPT_SPLIT_COLS},
    {MOPT_ROLE_MLP_NORM, MOPT_AT_LAYER, "transformer.h.%d.ln_2", {NULL, "blk.%d.ffn_norm", "transformer.layers.%d.post_layernorm"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_MLP_UP, MOPT_AT_LAYER, "transformer.h.%d.mlp.c_fc", {NULL, "blk.%d.ffn_up", "transformer.layers.%d.mlp.fc"}, C1, MOPT_SPLIT_ROWS},
    {MOPT_ROLE_MLP_DOWN, MOPT_AT_LAYER, "transformer.h.%d.mlp.c_proj", {NULL, "blk.%d.ffn_down", "transformer.layers.%d.mlp.proj"}, C1, MOPT_SPLIT_COLS},
    {MOPT_ROLE_FINAL_NORM, MOPT_AT_END, "transformer.ln_f", {NULL, "output_norm", "transformer.ln_f"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_LM_HEAD, MOPT_AT_END, "lm_head", {NULL, "output", "lm_head"}, 0, MOPT_SPLIT_ROWS},
};
#undef C1

/* --- config.json ---------------------------------------------------------------------- */

static mopt_status need_size(const char *file, const char *key, int64_t v, mopt_error *err) {
    if (v <= 0 || v > (1 << 24))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: key \"%s\" = %lld is not a usable size", file, key, (long long)v);
    return MOPT_OK;
}

static mopt_status hf_read(const json_t *cfg, const char *file, mopt_arch *a, mopt_error *err) {
    static const char *const keys[] = {"n_embd", "n_layer", "n_head", "vocab_size", "n_positions"};
    int32_t *dst[] = {&a->dim, &a->n_layers, &a->n_heads, &a->vocab_size, &a->max_ctx};
    for (int i = 0; i < 5; i++) {
        int64_t v;
        if (!mopt_json_get_int(cfg, keys[i], &v, file, err) || need_size(file, keys[i], v, err)) return MOPT_E_FORMAT;
        *dst[i] = (int32_t)v;
    }
    int64_t inner = 4 * (int64_t)a->dim;
    if (!mopt_json_get_int_opt(cfg, "n_inner", &inner, file, err) || need_size(file, "n_inner", inner, err)) return MOPT_E_FORMAT;
    a->ffn_dim = (int32_t)inner;
    if (a->dim % a->n_heads != 0)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: n_embd %d is not a multiple of n_head %d", file, a->dim, a->n_heads);
    a->n_kv_heads = a->n_heads;
    a->head_dim = a->dim / a->n_heads;
    double eps = 1e-5;
    if (!mopt_json_get_num_opt(cfg, "layer_norm_epsilon", &eps, file, err)) return MOPT_E_FORMAT;
    a->norm_eps = (float)eps;
    const char *act = NULL;
    if (!mopt_json_get_str_opt(cfg, "activation_function", &act, file, err)) return MOPT_E_FORMAT;
    if (act && strcmp(act, "gelu_new") != 0 && strcmp(act, "gelu_pytorch_tanh") != 0)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: activation_function \"%s\" is not supported (need \"gelu_new\")", file, act);
    bool tied = true;
    if (!mopt_json_get_bool_opt(cfg, "tie_word_embeddings", &tied, file, err)) return MOPT_E_FORMAT;
    a->tied_embeddings = tied;
    return MOPT_OK;
}

static json_t *hf_write(const mopt_arch *a) {
    return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:s, s:b}", "architectures", "GPT2LMHeadModel", "model_type",
                     "gpt2", "n_embd", a->dim, "n_layer", a->n_layers, "n_head", a->n_heads, "n_inner", a->ffn_dim, "n_positions",
                     a->max_ctx, "vocab_size", a->vocab_size, "layer_norm_epsilon", (double)a->norm_eps, "activation_function",
                     "gelu_new", "tie_word_embeddings", a->tied_embeddings);
}

/* --- the graph ------------------------------------------------------------------------ */

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

mopt_status mopt_build_gpt2(mopt_builder *b) {
    const mopt_arch *a = mopt_graph_arch(b->g);
    const int64_t D = a->dim, F = a->ffn_dim;
    char nm[64];
    int32_t x = mopt_builder_embedding(b, MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, a->vocab_size, -1, "wte");
    x = mopt_builder_embedding(b, MOPT_OP_POS_EMBEDDING, MOPT_ROLE_POS_EMBED, a->max_ctx, x, "wpe");
    for (int l = 0; l < a->n_layers && b->status == MOPT_OK; l++) {
        int32_t h = mopt_builder_norm(b, x, MOPT_ROLE_ATTN_NORM, l, NAME(nm, "h.%d.ln_1", l));
        int32_t q = mopt_builder_linear(b, h, MOPT_ROLE_ATTN_Q, l, D, D, 1, NAME(nm, "h.%d.q", l));
        int32_t k = mopt_builder_linear(b, h, MOPT_ROLE_ATTN_K, l, D, D, 1, NAME(nm, "h.%d.k", l));
        int32_t v = mopt_builder_linear(b, h, MOPT_ROLE_ATTN_V, l, D, D, 1, NAME(nm, "h.%d.v", l));
        int32_t att = mopt_builder_attention(b, q, k, v, l, NAME(nm, "h.%d.attn", l));
        int32_t o = mopt_builder_linear(b, att, MOPT_ROLE_ATTN_O, l, D, D, 1, NAME(nm, "h.%d.attn.c_proj", l));
        x = mopt_builder_op(b, MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, l, NAME(nm, "h.%d.attn_residual", l), (int32_t)D, 2,
                            (int32_t[]){x, o});
        int32_t h2 = mopt_builder_norm(b, x, MOPT_ROLE_MLP_NORM, l, NAME(nm, "h.%d.ln_2", l));
        int32_t fc = mopt_builder_linear(b, h2, MOPT_ROLE_MLP_UP, l, F, D, 1, NAME(nm, "h.%d.c_fc", l));
        int32_t m = mopt_builder_op(b, MOPT_OP_GELU, MOPT_ROLE_MLP_ACT, l, NAME(nm, "h.%d.gelu", l), (int32_t)F, 1, &fc);
        int32_t dn = mopt_builder_linear(b, m, MOPT_ROLE_MLP_DOWN, l, D, F, 1, NAME(nm, "h.%d.mlp.c_proj", l));
        x = mopt_builder_op(b, MOPT_OP_ADD, MOPT_ROLE_MLP_RESIDUAL, l, NAME(nm, "h.%d.mlp_residual", l), (int32_t)D, 2,
                            (int32_t[]){x, dn});
    }
    return mopt_builder_lm_head(b, mopt_builder_norm(b, x, MOPT_ROLE_FINAL_NORM, -1, "ln_f"));
}

/* Older GPT-2 checkpoints lack the "transformer." prefix; the causal-mask
 * buffers some carry (attn.bias, attn.masked_bias) are not weights. */
static mopt_status hf_fixup(mopt_graph *g, mopt_error *err) {
    if (!mopt_graph_find_tensor(g, "transformer.wte.weight"))
        for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++) {
            mopt_tensor *t = mopt_graph_tensor(g, i);
            if (strncmp(t->name, "lm_head.", 8) == 0) continue;
            char nn[MOPT_MAX_NAME];
            if (snprintf(nn, sizeof nn, "transformer.%s", t->name) >= (int)sizeof nn)
                return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "tensor name too long: %s", t->name);
            memcpy(t->name, nn, sizeof nn);
        }
    for (int l = 0; l < mopt_graph_arch(g)->n_layers; l++) {
        char name[128];
        snprintf(name, sizeof name, "transformer.h.%d.attn.bias", l);
        mopt_graph_remove_tensor(g, name);
        snprintf(name, sizeof name, "transformer.h.%d.attn.masked_bias", l);
        mopt_graph_remove_tensor(g, name);
    }
    return MOPT_OK;
}

static void trt_write(const mopt_arch *a, json_t *c) {
    (void)a;
    json_object_set_new(c, "bias", json_true());
}

static const char *const gpt2_types[] = {"gpt2", NULL};
static const char *const gpt2_trt[] = {"GPTForCausalLM", NULL};

const mopt_family mopt_family_gpt2 = {
    .name = "gpt2", .hf_model_types = gpt2_types, .hf_architecture = "GPT2LMHeadModel", .gguf_arch = "gpt2", .trt_archs = gpt2_trt,
    .trt_act = "gelu", .trt_pos_embedding = "learned_absolute", .trt_write = trt_write,
    .shape = {.norm = MOPT_NORM_LAYER, .mlp = MOPT_MLP_GELU, .qkv_bias = 1, .o_bias = 1, .mlp_bias = 1, .tied_embeddings = 1,
              .bos_id = -1, .eos_id = -1},
    .hf_read = hf_read, .hf_write = hf_write, .hf_fixup = hf_fixup, .build = mopt_build_gpt2,
    .rules = rules, .n_rules = (int32_t)(sizeof rules / sizeof *rules)};
