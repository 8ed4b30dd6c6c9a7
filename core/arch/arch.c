/* The family table, the builders' helpers, and the one build entry every importer calls. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"

/* --- the families ------------------------------------------------------------------------- */

static const mopt_family *const families[] = {&mopt_family_llama, &mopt_family_qwen2, &mopt_family_gpt2};
#define N_FAMILIES (sizeof families / sizeof *families)

const mopt_family *mopt_family_find(const char *name) {
    for (size_t i = 0; name && i < N_FAMILIES; i++)
        if (!strcmp(families[i]->name, name)) return families[i];
    return NULL;
}

/* the family one of whose `list` values is v */
static const mopt_family *family_listing(const char *v, size_t list_offset) {
    for (size_t i = 0; v && i < N_FAMILIES; i++)
        for (const char *const *t = *(const char *const *const *)((const char *)families[i] + list_offset); t && *t; t++)
            if (!strcmp(*t, v)) return families[i];
    return NULL;
}

const mopt_family *mopt_family_of_hf(const char *model_type) {
    return family_listing(model_type, offsetof(mopt_family, hf_model_types));
}

const mopt_family *mopt_family_of_trt(const char *trt_arch) { return family_listing(trt_arch, offsetof(mopt_family, trt_archs)); }

const mopt_family *mopt_family_of_gguf(const char *gguf_arch, size_t len) {
    for (size_t i = 0; i < N_FAMILIES; i++) /* the first family writing a GGUF arch reads it */
        if (families[i]->gguf_arch && strlen(families[i]->gguf_arch) == len && !memcmp(families[i]->gguf_arch, gguf_arch, len))
            return families[i];
    return NULL;
}

/* appends `v` to the list in buf unless it is there already */
static void list_add(char *buf, size_t cap, size_t *len, const char *v) {
    for (const char *p = buf; (p = strstr(p, v)); p += strlen(v))
        if ((p == buf || p[-1] == ' ') && (p[strlen(v)] == ',' || !p[strlen(v)])) return;
    int n = snprintf(buf + *len, cap - *len, "%s%s", *len ? ", " : "", v);
    if (n > 0 && (size_t)n < cap - *len) *len += (size_t)n;
}

const char *mopt_family_list(mopt_naming naming, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = 0;
    for (size_t i = 0; i < N_FAMILIES; i++) {
        const mopt_family *f = families[i];
        if (naming == MOPT_NAMING_GGUF && f->gguf_arch) list_add(buf, cap, &len, f->gguf_arch);
        const char *const *v = naming == MOPT_NAMING_HF ? f->hf_model_types : naming == MOPT_NAMING_TRTLLM ? f->trt_archs : NULL;
        for (; v && *v; v++) list_add(buf, cap, &len, *v);
    }
    return buf;
}

int mopt_family_has_rope(const mopt_family *f) {
    for (int32_t i = 0; i < f->n_rules; i++)
        if (f->rules[i].flags & MOPT_RULE_ROPE) return 1;
    return 0;
}

/* --- the builders' helpers ------------------------------------------------------------ */

/* the name a message should use: the file's own where the source says how */
static const char *file_name(const mopt_builder *b, const char *name, char *buf, size_t cap) {
    const char *n = b->src && b->src->naming >= 0 ? mopt_family_file_name(b->family, (mopt_naming)b->src->naming, name, buf, cap) : NULL;
    return n ? n : name;
}

static const char *config_name(const mopt_build_src *src) { return src && src->config ? src->config : "config.json"; }

mopt_tensor *mopt_builder_tensor(mopt_builder *b, mopt_role role, int32_t layer, const char *kind, int64_t d0, int64_t d1,
                                 int optional) {
    if (b->status != MOPT_OK) return NULL;
    char name[MOPT_MAX_NAME], fn[MOPT_MAX_NAME + 64];
    if (!mopt_family_role_name(b->family, role, layer, kind, name, sizeof name)) {
        b->status = MOPT_FAIL(b->err, MOPT_E_UNSUPPORTED, "family %s has no %s tensor", b->family->name, mopt_role_name(role));
        return NULL;
    }
    mopt_tensor *t = mopt_graph_find_tensor(b->g, name);
    if (!t) {
        if (!optional) b->status = MOPT_FAIL(b->err, MOPT_E_FORMAT, "missing tensor %s", file_name(b, name, fn, sizeof fn));
        return NULL;
    }
    const int n_dims = d1 ? 2 : 1;
    if (t->ndim != n_dims || (n_dims == 1 ? t->ne[0] != d0 : (t->ne[1] != d0 || t->ne[0] != d1))) {
        char found[64], want[64];
        mopt_tensor_shape_str(t, found, sizeof found);
        if (n_dims == 1) snprintf(want, sizeof want, "[%lld]", (long long)d0);
        else snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        b->status = MOPT_FAIL(b->err, MOPT_E_FORMAT, "tensor %s has shape %s but %s implies %s", file_name(b, name, fn, sizeof fn),
                              found, config_name(b->src), want);
        return NULL;
    }
    /* linears, lm_head and the token embedding table may be packed (a quantized checkpoint; a lookup dequantizes its
     * row); everything else is float */
    if ((mopt_role_is_linear(role) || role == MOPT_ROLE_LM_HEAD || role == MOPT_ROLE_EMBED) && n_dims == 2 && t->dtype >= MOPT_DTYPE_PACKED_FIRST && t->dtype < MOPT_DTYPE_COUNT) return t;
    if (t->dtype != MOPT_DTYPE_F32 && t->dtype != MOPT_DTYPE_F16 && t->dtype != MOPT_DTYPE_BF16) {
        b->status = MOPT_FAIL(b->err, MOPT_E_UNSUPPORTED, "tensor %s: dtype %s cannot be run (need f32, f16 or bf16)",
                              file_name(b, name, fn, sizeof fn), mopt_dtype_name(t->dtype));
        return NULL;
    }
    return t;
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

/* --- the layers every family is made of --------------------------------------------------- */

int32_t mopt_builder_op(mopt_builder *b, mopt_op op, mopt_role role, int layer, const char *name, int32_t width, int32_t n_in,
                        const int32_t *in) {
    mopt_node n = mopt_builder_mknode(op, role, layer, name);
    n.n_inputs = n_in;
    for (int32_t i = 0; i < n_in; i++) n.inputs[i] = in[i];
    return mopt_builder_node(b, n, width);
}

int32_t mopt_builder_linear(mopt_builder *b, int32_t in, mopt_role role, int layer, int64_t out_dim, int64_t in_dim, int bias,
                            const char *name) {
    mopt_node n = mopt_builder_mknode(MOPT_OP_LINEAR, role, layer, name);
    n.n_inputs = 1;
    n.inputs[0] = in;
    n.weight = mopt_builder_tensor(b, role, layer, "weight", out_dim, in_dim, 0);
    n.bias = mopt_builder_tensor(b, role, layer, "bias", out_dim, 0, !bias);
    return mopt_builder_node(b, n, (int32_t)out_dim);
}

int32_t mopt_builder_norm(mopt_builder *b, int32_t in, mopt_role role, int layer, const char *name) {
    const mopt_arch *a = mopt_graph_arch(b->g);
    const int rms = a->norm == MOPT_NORM_RMS;
    mopt_node n = mopt_builder_mknode(rms ? MOPT_OP_RMSNORM : MOPT_OP_LAYERNORM, role, layer, name);
    n.n_inputs = 1;
    n.inputs[0] = in;
    n.eps = a->norm_eps;
    n.weight = mopt_builder_tensor(b, role, layer, "weight", a->dim, 0, 0);
    if (!rms) n.bias = mopt_builder_tensor(b, role, layer, "bias", a->dim, 0, 0);
    return mopt_builder_node(b, n, a->dim);
}

int32_t mopt_builder_attention(mopt_builder *b, int32_t q, int32_t k, int32_t v, int layer, const char *name) {
    const mopt_arch *a = mopt_graph_arch(b->g);
    mopt_node at = mopt_builder_mknode(MOPT_OP_ATTENTION, MOPT_ROLE_ATTN, layer, name);
    at.n_inputs = 3;
    at.inputs[0] = q;
    at.inputs[1] = k;
    at.inputs[2] = v;
    at.n_heads = a->n_heads;
    at.n_kv_heads = a->n_kv_heads;
    at.head_dim = a->head_dim;
    at.kv_slot = layer;
    return mopt_builder_node(b, at, a->n_heads * a->head_dim);
}

int32_t mopt_builder_embedding(mopt_builder *b, mopt_op op, mopt_role role, int64_t rows, int32_t in, const char *name) {
    const mopt_arch *a = mopt_graph_arch(b->g);
    mopt_node e = mopt_builder_mknode(op, role, -1, name);
    if (in >= 0) e.n_inputs = 1, e.inputs[0] = in;
    e.weight = mopt_builder_tensor(b, role, -1, "weight", rows, a->dim, 0);
    return mopt_builder_node(b, e, a->dim);
}

mopt_status mopt_builder_lm_head(mopt_builder *b, int32_t x) {
    const mopt_arch *a = mopt_graph_arch(b->g);
    mopt_node lm = mopt_builder_mknode(MOPT_OP_LM_HEAD, MOPT_ROLE_LM_HEAD, -1, "lm_head");
    lm.n_inputs = 1;
    lm.inputs[0] = x;
    lm.weight = mopt_builder_tensor(b, a->tied_embeddings ? MOPT_ROLE_EMBED : MOPT_ROLE_LM_HEAD, -1, "weight", a->vocab_size, a->dim, 0);
    mopt_builder_node(b, lm, a->vocab_size);
    return b->status;
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
    const mopt_family *f = mopt_family_find(a->family);
    if (!f) {
        char known[128];
        size_t len = 0;
        known[0] = 0;
        for (size_t i = 0; i < N_FAMILIES; i++) list_add(known, sizeof known, &len, families[i]->name);
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "architecture family \"%s\" is not one of %s", a->family, known);
    }
    mopt_builder b = {g, err, MOPT_OK, src, f};
    if ((st = f->build(&b))) return st;
    const int32_t nn = mopt_graph_n_nodes(g);
    for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        int used = 0;
        for (int32_t k = 0; k < nn && !used; k++) used = mopt_graph_node(g, k)->weight == t || mopt_graph_node(g, k)->bias == t;
        if (!used) {
            char fn[MOPT_MAX_NAME + 64];
            return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s is not used by a %s model of %d layers (a layer beyond the count in %s, or another architecture's weight)",
                             file_name(&b, t->name, fn, sizeof fn), a->family, a->n_layers, config_name(src));
        }
    }
    return MOPT_OK;
}

mopt_status mopt_graph_build(mopt_graph *g, mopt_error *err) { return mopt_arch_build(g, NULL, err); }

mopt_graph *mopt_graph_assemble(const mopt_arch *arch, mopt_tensor **ts, int32_t n, mopt_error *err) {
    mopt_graph *g = mopt_graph_new(arch, err);
    int32_t added = 0;
    mopt_status st = g ? MOPT_OK : MOPT_E_NOMEM;
    while (!st && added < n && !(st = mopt_graph_add_tensor(g, ts[added], err))) added++;
    for (int32_t k = added; k < n; k++) mopt_tensor_free(ts[k]); /* the one refused and those never added */
    if (!st) st = mopt_graph_build(g, err);
    if (st) {
        mopt_graph_free(g);
        return NULL;
    }
    return g;
}
