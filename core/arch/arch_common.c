/* Shared helpers for the architecture builders. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"

/* the name a message should use: the file's own where the source says how */
static const char *file_name(const mopt_build_src *src, const char *name, char *buf, size_t cap) {
    const char *n = src && src->tensor_name ? src->tensor_name(name, buf, cap) : NULL;
    return n ? n : name;
}

static const char *config_name(const mopt_build_src *src) { return src && src->config ? src->config : "config.json"; }

static mopt_tensor *weight(mopt_builder *b, const char *name, int n_dims, int64_t d0, int64_t d1, int required,
                           int packed_ok) {
    if (b->status != MOPT_OK) return NULL;
    mopt_tensor *t = mopt_graph_find_tensor(b->g, name);
    char fn[MOPT_MAX_NAME + 64];
    if (!t) {
        if (required) b->status = MOPT_FAIL(b->err, MOPT_E_FORMAT, "missing tensor %s", file_name(b->src, name, fn, sizeof fn));
        return NULL;
    }
    if (n_dims > 0) {
        int ok = t->ndim == n_dims && (n_dims == 1 ? t->ne[0] == d0 : (t->ne[1] == d0 && t->ne[0] == d1));
        if (!ok) {
            char found[64], want[64];
            mopt_tensor_shape_str(t, found, sizeof found);
            if (n_dims == 1) snprintf(want, sizeof want, "[%lld]", (long long)d0);
            else snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
            b->status = MOPT_FAIL(b->err, MOPT_E_FORMAT, "tensor %s has shape %s but %s implies %s",
                                  file_name(b->src, name, fn, sizeof fn), found, config_name(b->src), want);
            return NULL;
        }
    }
    if (packed_ok && t->dtype >= MOPT_DTYPE_PACKED_FIRST && t->dtype < MOPT_DTYPE_COUNT) return t;
    if (t->dtype != MOPT_DTYPE_F32 && t->dtype != MOPT_DTYPE_F16 && t->dtype != MOPT_DTYPE_BF16) {
        b->status = MOPT_FAIL(b->err, MOPT_E_UNSUPPORTED, "tensor %s: dtype %s cannot be run (need f32, f16 or bf16)",
                              file_name(b->src, name, fn, sizeof fn), mopt_dtype_name(t->dtype));
        return NULL;
    }
    return t;
}

mopt_tensor *mopt_builder_weight(mopt_builder *b, const char *name, int n_dims, int64_t d0, int64_t d1) {
    return weight(b, name, n_dims, d0, d1, 1, 0);
}

mopt_tensor *mopt_builder_linear_weight(mopt_builder *b, const char *name, int64_t out, int64_t in) {
    return weight(b, name, 2, out, in, 1, 1);
}

mopt_tensor *mopt_builder_weight_opt(mopt_builder *b, const char *name, int n_dims, int64_t d0, int64_t d1) {
    return weight(b, name, n_dims, d0, d1, 0, 0);
}

mopt_node mopt_builder_mknode(mopt_op op, mopt_role role, int layer, const char *name) {
    mopt_node n = {0};
    n.op = op;
    n.role = role;
    n.layer = layer;
    n.kv_slot = -1;
    snprintf(n.name, sizeof n.name, "%s", name);
    return n;
}

int32_t mopt_builder_node(mopt_builder *b, mopt_node node, int32_t width) {
    if (b->status != MOPT_OK) return -1;
    node.output = mopt_graph_add_value(b->g, width);
    if (node.output < 0) {
        b->status = MOPT_FAIL(b->err, MOPT_E_NOMEM, "out of memory");
        return -1;
    }
    int32_t idx = mopt_graph_add_node(b->g, &node, b->err);
    if (idx < 0) {
        b->status = (mopt_status)idx;
        return -1;
    }
    return node.output;
}

/* --- the whole build -------------------------------------------------------------- */

static mopt_status check_arch(const mopt_arch *a, const mopt_build_src *src, mopt_error *err) {
    const char *cfg = config_name(src);
    const struct {
        const char *what;
        int32_t v;
    } sizes[] = {{"hidden size", a->dim},       {"layer count", a->n_layers},  {"head count", a->n_heads},
                 {"kv head count", a->n_kv_heads}, {"head size", a->head_dim}, {"FFN size", a->ffn_dim},
                 {"vocabulary size", a->vocab_size}, {"context length", a->max_ctx}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        if (sizes[i].v <= 0 || sizes[i].v > (1 << 24))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s %d is not a usable size", cfg, sizes[i].what, sizes[i].v);
    if (a->n_heads % a->n_kv_heads)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %d heads are not a multiple of %d kv heads", cfg, a->n_heads, a->n_kv_heads);
    if ((int64_t)a->n_heads * a->head_dim > (1 << 24))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %d heads of %d values is not a usable size", cfg, a->n_heads, a->head_dim);
    /* an epsilon of 0 divides by zero on a zero row; a large one flattens every activation */
    if (!(a->norm_eps > 0 && a->norm_eps <= 0.1f))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: norm epsilon %g is not in (0, 0.1]", cfg, (double)a->norm_eps);
    if (a->norm == MOPT_NORM_RMS) { /* the rotary families */
        if (a->head_dim % 2) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: head size %d must be even for RoPE", cfg, a->head_dim);
        if (!(a->rope_theta > 0) || isinf(a->rope_theta))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: RoPE base %g must be positive and finite", cfg, (double)a->rope_theta);
    }
    if (a->bos_id < -1 || a->bos_id >= a->vocab_size)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: BOS token id %d is outside the vocabulary of %d", cfg, a->bos_id, a->vocab_size);
    if (a->eos_id < -1 || a->eos_id >= a->vocab_size)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: EOS token id %d is outside the vocabulary of %d", cfg, a->eos_id, a->vocab_size);
    return MOPT_OK;
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

mopt_status mopt_arch_build(mopt_graph *g, const mopt_build_src *src, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    mopt_status st = check_arch(a, src, err);
    if (st) return st;
    /* harmless extras: buffers older transformers saved, an lm_head tied to the embeddings */
    for (int32_t i = mopt_graph_n_tensors(g); i-- > 0;) {
        const char *n = mopt_graph_tensor(g, i)->name;
        if (ends_with(n, ".rotary_emb.inv_freq") || (a->tied_embeddings && !strcmp(n, "lm_head.weight")))
            mopt_graph_remove_tensor(g, n);
    }
    if (!strcmp(a->family, "gpt2")) st = mopt_arch_build_gpt2_from(g, src, err);
    else if (!strcmp(a->family, "llama")) st = mopt_arch_build_llama_from(g, src, err);
    else st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "architecture family \"%s\" has no builder", a->family);
    if (st) return st;
    const int32_t nn = mopt_graph_n_nodes(g);
    for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        int used = 0;
        for (int32_t k = 0; k < nn && !used; k++) used = mopt_graph_node(g, k)->weight == t || mopt_graph_node(g, k)->bias == t;
        if (!used) {
            char fn[MOPT_MAX_NAME + 64];
            return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s is not used by a %s model of %d layers (a layer beyond the count in %s, or another architecture's weight)",
                             file_name(src, t->name, fn, sizeof fn), a->family, a->n_layers, config_name(src));
        }
    }
    return MOPT_OK;
}
