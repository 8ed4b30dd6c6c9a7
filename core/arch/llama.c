/* The LLaMA family (LLaMA, Mistral) and Qwen2, which is LLaMA with q/k/v
 * biases: x = embed(tokens)
 *   per layer: x += o(attn(rope(q(n1)), rope(k(n1)), v(n1)))   n1 = rmsnorm(x)
 *              x += down(silu(gate(n2)) * up(n2))              n2 = rmsnorm(x)
 *   logits = lm_head(rmsnorm(x)) */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"
#include "json_util.h"

/* --- names: mopt / Hugging Face, GGUF (llama.cpp), TensorRT-LLM -------------------------- */

static const mopt_name_rule rules[] = {
    {MOPT_ROLE_EMBED, MOPT_AT_TOP, "model.embed_tokens", {NULL, "token_embd", "transformer.vocab_embedding"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_ATTN_NORM, MOPT_AT_LAYER, "model.layers.%d.input_layernorm", {NULL, "blk.%d.attn_norm", "transformer.layers.%d.input_layernorm"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_ATTN_Q, MOPT_AT_LAYER, "model.layers.%d.self_attn.q_proj", {NULL, "blk.%d.attn_q", "transformer.layers.%d.attention.qkv"}, MOPT_RULE_ROPE, MOPT_SPLIT_HEADS},
    {MOPT_ROLE_ATTN_K, MOPT_AT_LAYER, "model.layers.%d.self_attn.k_proj", {NULL, "blk.%d.attn_k", "transformer.layers.%d.attention.qkv"}, MOPT_RULE_ROPE, MOPT_SPLIT_HEADS},
    {MOPT_ROLE_ATTN_V, MOPT_AT_LAYER, "model.layers.%d.self_attn.v_proj", {NULL, "blk.%d.attn_v", "transformer.layers.%d.attention.qkv"}, 0, MOPT_SPLIT_HEADS},
    {MOPT_ROLE_ATTN_O, MOPT_AT_LAYER, "model.layers.%d.self_attn.o_proj", {NULL, "blk.%d.attn_output", "transformer.layers.%d.attention.dense"}, 0, MOPT_SPLIT_COLS},
    {MOPT_ROLE_MLP_NORM, MOPT_AT_LAYER, "model.layers.%d.post_attention_layernorm", {NULL, "blk.%d.ffn_norm", "transformer.layers.%d.post_layernorm"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_MLP_GATE, MOPT_AT_LAYER, "model.layers.%d.mlp.gate_proj", {NULL, "blk.%d.ffn_gate", "transformer.layers.%d.mlp.fc"}, 0, MOPT_SPLIT_ROWS},
    {MOPT_ROLE_MLP_UP, MOPT_AT_LAYER, "model.layers.%d.mlp.up_proj", {NULL, "blk.%d.ffn_up", "transformer.layers.%d.mlp.gate"}, 0, MOPT_SPLIT_ROWS},
    {MOPT_ROLE_MLP_DOWN, MOPT_AT_LAYER, "model.layers.%d.mlp.down_proj", {NULL, "blk.%d.ffn_down", "transformer.layers.%d.mlp.proj"}, 0, MOPT_SPLIT_COLS},
    {MOPT_ROLE_FINAL_NORM, MOPT_AT_END, "model.norm", {NULL, "output_norm", "transformer.ln_f"}, 0, MOPT_SPLIT_NONE},
    {MOPT_ROLE_LM_HEAD, MOPT_AT_END, "lm_head", {NULL, "output", "lm_head"}, 0, MOPT_SPLIT_ROWS},
};

/* --- config.json ------------------------------------------------------------------------ */

static mopt_status need_size(const char *file, const char *key, int64_t v, mopt_error *err) {
    if (v <= 0 || v > (1 << 24))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: key \"%s\" = %lld is not a usable size", file, key, (long long)v);
    return MOPT_OK;
}

#define GET_SIZE(key, dst, opt)                                                                                    \
    do {                                                                                                           \
        int64_t v_ = (dst);                                                                                        \
        if (!((opt) ? mopt_json_get_int_opt(cfg, key, &v_, file, err) : mopt_json_get_int(cfg, key, &v_, file, err))) \
            return MOPT_E_FORMAT;                                                                                  \
        if (need_size(file, key, v_, err)) return MOPT_E_FORMAT;                                                   \
        dst = (int32_t)v_;                                                                                         \
    } while (0)

static mopt_status rope_from_config(const json_t *cfg, const char *file, mopt_arch *a, mopt_error *err) {
    double theta = 10000.0;
    if (!mopt_json_get_num_opt(cfg, "rope_theta", &theta, file, err)) return MOPT_E_FORMAT;
    /* transformers 5 moves rope settings into rope_parameters; older configs
     * may carry rope_scaling. Only the plain ("default") rotation is supported. */
    const char *keys[] = {"rope_parameters", "rope_scaling"};
    for (int i = 0; i < 2; i++) {
        json_t *rp = json_object_get(cfg, keys[i]);
        if (!rp || json_is_null(rp)) continue;
        if (!json_is_object(rp)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: key \"%s\" must be an object", file, keys[i]);
        if (!mopt_json_get_num_opt(rp, "rope_theta", &theta, file, err)) return MOPT_E_FORMAT;
        const char *type = NULL;
        if (!mopt_json_get_str_opt(rp, "rope_type", &type, file, err)) return MOPT_E_FORMAT;
        if (!type && !mopt_json_get_str_opt(rp, "type", &type, file, err)) return MOPT_E_FORMAT;
        if (type && strcmp(type, "default") != 0)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %s.rope_type \"%s\" is not supported (only \"default\")",
                             file, keys[i], type);
    }
    if (!(theta > 0) || !isfinite(theta))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: rope_theta %g must be positive", file, theta);
    a->rope_theta = (float)theta;
    return MOPT_OK;
}

static mopt_status hf_read(const json_t *cfg, const char *file, mopt_arch *a, mopt_error *err) {
    GET_SIZE("hidden_size", a->dim, 0);
    GET_SIZE("num_hidden_layers", a->n_layers, 0);
    GET_SIZE("num_attention_heads", a->n_heads, 0);
    GET_SIZE("intermediate_size", a->ffn_dim, 0);
    GET_SIZE("vocab_size", a->vocab_size, 0);
    a->n_kv_heads = a->n_heads;
    GET_SIZE("num_key_value_heads", a->n_kv_heads, 1);
    a->head_dim = a->dim / a->n_heads;
    GET_SIZE("head_dim", a->head_dim, 1);
    a->max_ctx = 2048;
    GET_SIZE("max_position_embeddings", a->max_ctx, 1);
    double eps = 1e-6;
    if (!mopt_json_get_num_opt(cfg, "rms_norm_eps", &eps, file, err)) return MOPT_E_FORMAT;
    a->norm_eps = (float)eps;
    if (rope_from_config(cfg, file, a, err)) return MOPT_E_FORMAT;
    bool tied = false, attn_bias = a->o_bias, mlp_bias = false;
    if (!mopt_json_get_bool_opt(cfg, "tie_word_embeddings", &tied, file, err) ||
        !mopt_json_get_bool_opt(cfg, "attention_bias", &attn_bias, file, err) ||
        !mopt_json_get_bool_opt(cfg, "mlp_bias", &mlp_bias, file, err))
        return MOPT_E_FORMAT;
    a->tied_embeddings = tied;
    a->qkv_bias = a->qkv_bias || attn_bias; /* Qwen2's shape has q/k/v biases whatever the key says */
    a->o_bias = attn_bias;
    a->mlp_bias = mlp_bias;
    const char *act = NULL;
    if (!mopt_json_get_str_opt(cfg, "hidden_act", &act, file, err)) return MOPT_E_FORMAT;
    if (act && strcmp(act, "silu") != 0)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: hidden_act \"%s\" is not supported (need \"silu\")", file, act);
    if (a->n_heads % a->n_kv_heads != 0)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                         file, a->n_heads, a->n_kv_heads);
    if (a->head_dim % 2 != 0) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: head_dim %d must be even for RoPE", file, a->head_dim);
    return MOPT_OK;
}

static json_t *hf_write_as(const mopt_arch *a, const char *architecture, const char *model_type) {
    return json_pack("{s:[s], s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:n, s:s, s:b, s:b, s:b}", "architectures",
                     architecture, "model_type", model_type, "hidden_size", a->dim, "intermediate_size", a->ffn_dim,
                     "num_hidden_layers", a->n_layers, "num_attention_heads", a->n_heads, "num_key_value_heads", a->n_kv_heads,
                     "head_dim", a->head_dim, "max_position_embeddings", a->max_ctx, "vocab_size", a->vocab_size,
                     "rms_norm_eps", (double)a->norm_eps, "rope_theta", (double)a->rope_theta, "rope_scaling", "hidden_act",
                     "silu", "tie_word_embeddings", a->tied_embeddings, "attention_bias", a->o_bias, "mlp_bias", a->mlp_bias);
}

/* a LLaMA with q/k/v biases but no output bias is Qwen2's shape (read from a
 * GGUF or TensorRT-LLM file, which name both "llama") */
static json_t *llama_hf_write(const mopt_arch *a) {
    const int qwen = a->qkv_bias && !a->o_bias;
    return hf_write_as(a, qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM", qwen ? "qwen2" : "llama");
}
static json_t *qwen2_hf_write(const mopt_arch *a) { return hf_write_as(a, "Qwen2ForCausalLM", "qwen2"); }

static void trt_write(const mopt_arch *a, json_t *c) {
    json_object_set_new(c, "rotary_base", json_real(a->rope_theta));
    json_object_set_new(c, "attn_bias", json_boolean(a->qkv_bias));
    json_object_set_new(c, "mlp_bias", json_boolean(a->mlp_bias));
}

/* --- the graph ------------------------------------------------------------------------ */

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

static int32_t rope(mopt_builder *b, int32_t in, mopt_role role, int l, int32_t n_heads, const char *name) {
    const mopt_arch *a = mopt_graph_arch(b->g);
    mopt_node r = mopt_builder_mknode(MOPT_OP_ROPE, role, l, name);
    r.n_inputs = 1;
    r.inputs[0] = in;
    r.n_heads = n_heads;
    r.head_dim = a->head_dim;
    r.rope_theta = a->rope_theta;
    r.rope_style = a->rope_style;
    return mopt_builder_node(b, r, n_heads * a->head_dim);
}

mopt_status mopt_build_llama(mopt_builder *b) {
    const mopt_arch *a = mopt_graph_arch(b->g);
    const int64_t D = a->dim, F = a->ffn_dim, HD = a->head_dim;
    const int64_t QD = (int64_t)a->n_heads * HD, KVD = (int64_t)a->n_kv_heads * HD;
    char nm[64];
    int32_t x = mopt_builder_embedding(b, MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, a->vocab_size, -1, "embed");
    for (int l = 0; l < a->n_layers && b->status == MOPT_OK; l++) {
        int32_t h = mopt_builder_norm(b, x, MOPT_ROLE_ATTN_NORM, l, NAME(nm, "layers.%d.attn_norm", l));
        int32_t q = mopt_builder_linear(b, h, MOPT_ROLE_ATTN_Q, l, QD, D, a->qkv_bias, NAME(nm, "layers.%d.q", l));
        int32_t k = mopt_builder_linear(b, h, MOPT_ROLE_ATTN_K, l, KVD, D, a->qkv_bias, NAME(nm, "layers.%d.k", l));
        int32_t v = mopt_builder_linear(b, h, MOPT_ROLE_ATTN_V, l, KVD, D, a->qkv_bias, NAME(nm, "layers.%d.v", l));
        int32_t qr = rope(b, q, MOPT_ROLE_ATTN_ROPE_Q, l, a->n_heads, NAME(nm, "layers.%d.rope_q", l));
        int32_t kr = rope(b, k, MOPT_ROLE_ATTN_ROPE_K, l, a->n_kv_heads, NAME(nm, "layers.%d.rope_k", l));
        int32_t att = mopt_builder_attention(b, qr, kr, v, l, NAME(nm, "layers.%d.attn", l));
        int32_t o = mopt_builder_linear(b, att, MOPT_ROLE_ATTN_O, l, D, QD, a->o_bias, NAME(nm, "layers.%d.o", l));
        x = mopt_builder_op(b, MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, l, NAME(nm, "layers.%d.attn_residual", l), (int32_t)D, 2,
                            (int32_t[]){x, o});
        int32_t h2 = mopt_builder_norm(b, x, MOPT_ROLE_MLP_NORM, l, NAME(nm, "layers.%d.mlp_norm", l));
        int32_t gt = mopt_builder_linear(b, h2, MOPT_ROLE_MLP_GATE, l, F, D, a->mlp_bias, NAME(nm, "layers.%d.gate", l));
        int32_t up = mopt_builder_linear(b, h2, MOPT_ROLE_MLP_UP, l, F, D, a->mlp_bias, NAME(nm, "layers.%d.up", l));
        int32_t m = mopt_builder_op(b, MOPT_OP_SWIGLU, MOPT_ROLE_MLP_ACT, l, NAME(nm, "layers.%d.swiglu", l), (int32_t)F, 2,
                                    (int32_t[]){gt, up});
        int32_t dn = mopt_builder_linear(b, m, MOPT_ROLE_MLP_DOWN, l, D, F, a->mlp_bias, NAME(nm, "layers.%d.down", l));
        x = mopt_builder_op(b, MOPT_OP_ADD, MOPT_ROLE_MLP_RESIDUAL, l, NAME(nm, "layers.%d.mlp_residual", l), (int32_t)D, 2,
                            (int32_t[]){x, dn});
    }
    return mopt_builder_lm_head(b, mopt_builder_norm(b, x, MOPT_ROLE_FINAL_NORM, -1, "final_norm"));
}

/* --- the families ----------------------------------------------------------------------- */

static const char *const llama_types[] = {"llama", "mistral", NULL};
static const char *const llama_trt[] = {"LlamaForCausalLM", "MistralForCausalLM", NULL};
static const char *const qwen2_types[] = {"qwen2", NULL};

#define SHAPE(qkv_b)                                                                                               \
    {.rope_style = MOPT_ROPE_HALF, .norm = MOPT_NORM_RMS, .mlp = MOPT_MLP_SWIGLU, .qkv_bias = (qkv_b), .bos_id = -1, .eos_id = -1}

const mopt_family mopt_family_llama = {
    .name = "llama", .hf_model_types = llama_types, .hf_architecture = "LlamaForCausalLM", .gguf_arch = "llama",
    .trt_archs = llama_trt, .trt_act = "silu", .trt_pos_embedding = "rope_gpt_neox", .trt_write = trt_write, .shape = SHAPE(0), .hf_read = hf_read, .hf_write = llama_hf_write, .build = mopt_build_llama,
    .rules = rules, .n_rules = (int32_t)(sizeof rules / sizeof *rules)};

/* Qwen2 runs the LLaMA graph with q/k/v biases; GGUF and TensorRT-LLM files
 * hold it as a LLaMA with biases, as mopt has always written it. */
const mopt_family mopt_family_qwen2 = {
    .name = "qwen2", .hf_model_types = qwen2_types, .hf_architecture = "Qwen2ForCausalLM", .gguf_arch = "llama",
    .trt_archs = llama_trt, .trt_act = "silu", .trt_pos_embedding = "rope_gpt_neox", .trt_write = trt_write, .shape = SHAPE(1), .hf_read = hf_read, .hf_write = qwen2_hf_write, .build = mopt_build_llama,
    .rules = rules, .n_rules = (int32_t)(sizeof rules / sizeof *rules)};
