/* GPT-2 graph over tensors named as in HF checkpoints, with the Conv1D
 * weights already turned into [out, in] linears and c_attn split into
 * attn.q_proj / attn.k_proj / attn.v_proj by the importer:
 *   x = wte(tokens) + wpe(positions)
 *   per layer: x += c_proj(attn(q(n1), k(n1), v(n1)))   n1 = layernorm(x)
 *              x += mlp.c_proj(gelu(c_fc(n2)))          n2 = layernorm(x)
 *   logits = wte^T layernorm(x)                          (tied) */
#include <stdio.h>

#include "arch_impl.h"
#include "base.h"

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

#define mk mopt_builder_mknode

static int32_t layernorm(mopt_builder *b, int32_t in, const char *prefix, int64_t D, float eps, int layer,
                         mopt_role role, const char *node_name) {
    char w[128];
    mopt_node n = mk(MOPT_OP_LAYERNORM, role, layer, node_name);
    n.n_inputs = 1;
    n.inputs[0] = in;
    n.eps = eps;
    n.weight = mopt_builder_weight(b, NAME(w, "%s.weight", prefix), 1, D, 0);
    n.bias = mopt_builder_weight(b, NAME(w, "%s.bias", prefix), 1, D, 0);
    return mopt_builder_node(b, n, (int32_t)D);
}

static int32_t linear(mopt_builder *b, int32_t in, const char *prefix, int64_t out_dim, int64_t in_dim, int layer,
                      mopt_role role, const char *node_name) {
    char w[128];
    mopt_node n = mk(MOPT_OP_LINEAR, role, layer, node_name);
    n.n_inputs = 1;
    n.inputs[0] = in;
    n.weight = mopt_builder_linear_weight(b, NAME(w, "%s.weight", prefix), out_dim, in_dim);
    n.bias = mopt_builder_weight(b, NAME(w, "%s.bias", prefix), 1, out_dim, 0);
    return mopt_builder_node(b, n, (int32_t)out_dim);
}

mopt_status mopt_arch_build_gpt2(mopt_graph *g, mopt_error *err) { return mopt_arch_build_gpt2_from(g, NULL, err); }

mopt_status mopt_arch_build_gpt2_from(mopt_graph *g, const mopt_build_src *src, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    mopt_builder b = {g, err, MOPT_OK, src};
    const int64_t D = a->dim, F = a->ffn_dim;
    char p[128], nm[64];

    mopt_node e = mk(MOPT_OP_EMBEDDING, MOPT_ROLE_EMBED, -1, "wte");
    e.weight = mopt_builder_weight(&b, "transformer.wte.weight", 2, a->vocab_size, D);
    int32_t x = mopt_builder_node(&b, e, (int32_t)D);
    mopt_node pe = mk(MOPT_OP_POS_EMBEDDING, MOPT_ROLE_POS_EMBED, -1, "wpe");
    pe.n_inputs = 1;
    pe.inputs[0] = x;
    pe.weight = mopt_builder_weight(&b, "transformer.wpe.weight", 2, a->max_ctx, D);
    x = mopt_builder_node(&b, pe, (int32_t)D);

    for (int l = 0; l < a->n_layers && b.status == MOPT_OK; l++) {
        int32_t h = layernorm(&b, x, NAME(p, "transformer.h.%d.ln_1", l), D, a->norm_eps, l, MOPT_ROLE_ATTN_NORM,
                              NAME(nm, "h.%d.ln_1", l));
        int32_t q = linear(&b, h, NAME(p, "transformer.h.%d.attn.q_proj", l), D, D, l, MOPT_ROLE_ATTN_Q,
                           NAME(nm, "h.%d.q", l));
        int32_t k = linear(&b, h, NAME(p, "transformer.h.%d.attn.k_proj", l), D, D, l, MOPT_ROLE_ATTN_K,
                           NAME(nm, "h.%d.k", l));
        int32_t v = linear(&b, h, NAME(p, "transformer.h.%d.attn.v_proj", l), D, D, l, MOPT_ROLE_ATTN_V,
                           NAME(nm, "h.%d.v", l));
        mopt_node at = mk(MOPT_OP_ATTENTION, MOPT_ROLE_ATTN, l, NAME(nm, "h.%d.attn", l));
        at.n_inputs = 3;
        at.inputs[0] = q;
        at.inputs[1] = k;
        at.inputs[2] = v;
        at.n_heads = a->n_heads;
        at.n_kv_heads = a->n_kv_heads;
        at.head_dim = a->head_dim;
        at.kv_slot = l;
        int32_t att = mopt_builder_node(&b, at, (int32_t)D);
        int32_t o = linear(&b, att, NAME(p, "transformer.h.%d.attn.c_proj", l), D, D, l, MOPT_ROLE_ATTN_O,
                           NAME(nm, "h.%d.attn.c_proj", l));
        mopt_node r1 = mk(MOPT_OP_ADD, MOPT_ROLE_ATTN_RESIDUAL, l, NAME(nm, "h.%d.attn_residual", l));
        r1.n_inputs = 2;
        r1.inputs[0] = x;
        r1.inputs[1] = o;
        x = mopt_builder_node(&b, r1, (int32_t)D);

        int32_t h2 = layernorm(&b, x, NAME(p, "transformer.h.%d.ln_2", l), D, a->norm_eps, l, MOPT_ROLE_MLP_NORM,
                               NAME(nm, "h.%d.ln_2", l));
        int32_t fc = linear(&b, h2, NAME(p, "transformer.h.%d.mlp.c_fc", l), F, D, l, MOPT_ROLE_MLP_UP,
                            NAME(nm, "h.%d.c_fc", l));
        mopt_node act = mk(MOPT_OP_GELU, MOPT_ROLE_MLP_ACT, l, NAME(nm, "h.%d.gelu", l));
        act.n_inputs = 1;
        act.inputs[0] = fc;
        int32_t m = mopt_builder_node(&b, act, (int32_t)F);
        int32_t dn = linear(&b, m, NAME(p, "transformer.h.%d.mlp.c_proj", l), D, F, l, MOPT_ROLE_MLP_DOWN,
                            NAME(nm, "h.%d.mlp.c_proj", l));
        mopt_node r2 = mk(MOPT_OP_ADD, MOPT_ROLE_MLP_RESIDUAL, l, NAME(nm, "h.%d.mlp_residual", l));
        r2.n_inputs = 2;
        r2.inputs[0] = x;
        r2.inputs[1] = dn;
        x = mopt_builder_node(&b, r2, (int32_t)D);
    }
    int32_t xf = layernorm(&b, x, "transformer.ln_f", D, a->norm_eps, -1, MOPT_ROLE_FINAL_NORM, "ln_f");
    mopt_node lm = mk(MOPT_OP_LM_HEAD, MOPT_ROLE_LM_HEAD, -1, "lm_head");
    lm.n_inputs = 1;
    lm.inputs[0] = xf;
    lm.weight = a->tied_embeddings ? mopt_builder_weight(&b, "transformer.wte.weight", 2, a->vocab_size, D)
                                   : mopt_builder_weight(&b, "lm_head.weight", 2, a->vocab_size, D);
    mopt_builder_node(&b, lm, a->vocab_size);
    return b.status;
}
