/* LLaMA-family graph (LLaMA, Mistral, Qwen2 with q/k/v biases), over tensors
 * named as in Hugging Face checkpoints:
 *   x = embed(tokens)
 *   per layer: x += o(attn(rope(q(n1)), rope(k(n1)), v(n1)))   n1 = rmsnorm(x)
 *              x += down(silu(gate(n2)) * up(n2))              n2 = rmsnorm(x)
 *   logits = lm_head(rmsnorm(x)) */
#include <stdio.h>

#include "arch_impl.h"
#include "base.h"

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

#define mk mopt_builder_mknode

static int32_t linear(mopt_builder *b, int32_t in, const char *wname, const char *bname, int64_t out_dim,
                      int64_t in_dim, int layer, mopt_role role, const char *node_name, int bias_required) {
    mopt_node n = mk(MOPT_OP_LINEAR, role, layer, node_name);
    n.n_inputs = 1;
    n.inputs[0] = in;
    n.weight = mopt_builder_linear_weight(b, wname, out_dim, in_dim);
    if (bname)
        n.bias = bias_required ? mopt_builder_weight(b, bname, 1, out_dim, 0)
                               : mopt_builder_weight_opt(b, bname, 1, out_dim, 0);
    return mopt_builder_node(b, n, (int32_t)out_dim);
}

mopt_status mopt_arch_build_llama(mopt_graph *g, mopt_error *err) { return mopt_arch_build_llama_from(g, NULL, err); }

mopt_status mopt_arch_build_llama_from(mopt_graph *g, const mopt_build_src *src, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    mopt_builder b = {g, err, MOPT_OK, src};
    const int64_t D = a->dim, F = a->ffn_dim, HD = a->head_dim;
    const int64_t QD = (int64_t)a->n_heads * HD, KVD = (int64_t)a->n_kv_heads * HD;
    char w[128], bb[128], nm[64];

    mopt_node e = mk(MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, -1, "embed");
    e.weight = mopt_builder_weight(&b, "model.embed_tokens.weight", 2, a->vocab_size, D);
    int32_t x = mopt_builder_node(&b, e, (int32_t)D);

    for (int l = 0; l < a->n_layers && b.status == MOPT_OK; l++) {
        mopt_node n1 = mk(MOPT_OP_RMSNORM, MOPT_ROLE_ATTN_NORM, l, NAME(nm, "layers.%d.attn_norm", l));
        n1.n_inputs = 1;
        n1.inputs[0] = x;
        n1.eps = a->norm_eps;
        n1.weight = mopt_builder_weight(&b, NAME(w, "model.layers.%d.input_layernorm.weight", l), 1, D, 0);
        int32_t h = mopt_builder_node(&b, n1, (int32_t)D);

        int32_t q = linear(&b, h, NAME(w, "model.layers.%d.self_attn.q_proj.weight", l),
                           NAME(bb, "model.layers.%d.self_attn.q_proj.bias", l), QD, D, l, MOPT_ROLE_ATTN_Q,
                           NAME(nm, "layers.%d.q", l), a->qkv_bias);
        int32_t k = linear(&b, h, NAME(w, "model.layers.%d.self_attn.k_proj.weight", l),
                           NAME(bb, "model.layers.%d.self_attn.k_proj.bias", l), KVD, D, l, MOPT_ROLE_ATTN_K,
                           NAME(nm, "layers.%d.k", l), a->qkv_bias);
        int32_t v = linear(&b, h, NAME(w, "model.layers.%d.self_attn.v_proj.weight", l),
                           NAME(bb, "model.layers.%d.self_attn.v_proj.bias", l), KVD, D, l, MOPT_ROLE_ATTN_V,
                           NAME(nm, "layers.%d.v", l), a->qkv_bias);

        mopt_node rq = mk(MOPT_OP_ROPE, MOPT_ROLE_ATTN_ROPE_Q, l, NAME(nm, "layers.%d.rope_q", l));
        rq.n_inputs = 1;
        rq.inputs[0] = q;
        rq.n_heads = a->n_heads;
        rq.head_dim = a->head_dim;
        rq.rope_theta = a->rope_theta;
        rq.rope_style = a->rope_style;
        int32_t qr = mopt_builder_node(&b, rq, (int32_t)QD);
        mopt_node rk = rq;
        rk.role = MOPT_ROLE_ATTN_ROPE_K;
        snprintf(rk.name, sizeof rk.name, "layers.%d.rope_k", l);
        rk.inputs[0] = k;
        rk.n_heads = a->n_kv_heads;
        int32_t kr = mopt_builder_node(&b, rk, (int32_t)KVD);

        mopt_node at = mk(MOPT_OP_ATTENTION, MOPT_ROLE_ATTN, l, NAME(nm, "layers.%d.attn", l));
        at.n_inputs = 3;
        at.inputs[0] = qr;
        at.inputs[1] = kr;
        at.inputs[2] = v;
        at.n_heads = a->n_heads;
        at.n_kv_heads = a->n_kv_heads;
        at.head_dim = a->head_dim;
        at.kv_slot = l;
        int32_t att = mopt_builder_node(&b, at, (int32_t)QD);

        int32_t o = linear(&b, att, NAME(w, "model.layers.%d.self_attn.o_proj.weight", l),
                           NAME(bb, "model.layers.%d.self_attn.o_proj.bias", l), D, QD, l, MOPT_ROLE_ATTN_O,
                           NAME(nm, "layers.%d.o", l), a->o_bias);
        mopt_node r1 = mk(MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, l, NAME(nm, "layers.%d.attn_residual", l));
        r1.n_inputs = 2;
        r1.inputs[0] = x;
        r1.inputs[1] = o;
        x = mopt_builder_node(&b, r1, (int32_t)D);

        mopt_node n2 = mk(MOPT_OP_RMSNORM, MOPT_ROLE_MLP_NORM, l, NAME(nm, "layers.%d.mlp_norm", l));
        n2.n_inputs = 1;
        n2.inputs[0] = x;
        n2.eps = a->norm_eps;
        n2.weight = mopt_builder_weight(&b, NAME(w, "model.layers.%d.post_attention_layernorm.weight", l), 1, D, 0);
        int32_t h2 = mopt_builder_node(&b, n2, (int32_t)D);

        int32_t gt = linear(&b, h2, NAME(w, "model.layers.%d.mlp.gate_proj.weight", l),
                            NAME(bb, "model.layers.%d.mlp.gate_proj.bias", l), F, D, l, MOPT_ROLE_MLP_GATE,
                            NAME(nm, "layers.%d.gate", l), a->mlp_bias);
        int32_t up = linear(&b, h2, NAME(w, "model.layers.%d.mlp.up_proj.weight", l),
                            NAME(bb, "model.layers.%d.mlp.up_proj.bias", l), F, D, l, MOPT_ROLE_MLP_UP,
                            NAME(nm, "layers.%d.up", l), a->mlp_bias);
        mopt_node act = mk(MOPT_OP_SWIGLU, MOPT_ROLE_MLP_ACT, l, NAME(nm, "layers.%d.swiglu", l));
        act.n_inputs = 2;
        act.inputs[0] = gt;
        act.inputs[1] = up;
        int32_t m = mopt_builder_node(&b, act, (int32_t)F);
        int32_t dn = linear(&b, m, NAME(w, "model.layers.%d.mlp.down_proj.weight", l),
                            NAME(bb, "model.layers.%d.mlp.down_proj.bias", l), D, F, l, MOPT_ROLE_MLP_DOWN,
                            NAME(nm, "layers.%d.down", l), a->mlp_bias);
        mopt_node r2 = mk(MOPT_OP_ADD, MOPT_ROLE_MLP_RESIDUAL, l, NAME(nm, "layers.%d.mlp_residual", l));
        r2.n_inputs = 2;
        r2.inputs[0] = x;
        r2.inputs[1] = dn;
        x = mopt_builder_node(&b, r2, (int32_t)D);
    }

    mopt_node fn = mk(MOPT_OP_RMSNORM, MOPT_ROLE_FINAL_NORM, -1, "final_norm");
    fn.n_inputs = 1;
    fn.inputs[0] = x;
    fn.eps = a->norm_eps;
    fn.weight = mopt_builder_weight(&b, "model.norm.weight", 1, D, 0);
    int32_t xf = mopt_builder_node(&b, fn, (int32_t)D);

    mopt_node lm = mk(MOPT_OP_LM_HEAD, MOPT_ROLE_LM_HEAD, -1, "lm_head");
    lm.n_inputs = 1;
    lm.inputs[0] = xf;
    lm.weight = a->tied_embeddings ? mopt_builder_weight(&b, "model.embed_tokens.weight", 2, a->vocab_size, D)
                                   : mopt_builder_weight(&b, "lm_head.weight", 2, a->vocab_size, D);
    mopt_builder_node(&b, lm, a->vocab_size);
    return b.status;
}
