/* Tensor names per format and the file tensors a format stores, from the
 * family's rule table (arch_impl.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arch_impl.h"
#include "base.h"
#include "rope_order.h"
#include "tensor_impl.h"

const char *mopt_rule_name(const mopt_name_rule *r, mopt_naming naming) {
    const char *n = r->name[naming];
    return n ? n : naming == MOPT_NAMING_HF ? r->graph : NULL;
}

static const char *format_name(const char *pattern, int32_t layer, const char *kind, char *buf, size_t cap) {
    char base[MOPT_MAX_NAME];
    int n = snprintf(base, sizeof base, pattern, layer);
    if (n < 0 || (size_t)n >= sizeof base) return NULL;
    n = snprintf(buf, cap, "%s.%s", base, kind);
    return n >= 0 && (size_t)n < cap ? buf : NULL;
}

const char *mopt_rule_graph_name(const mopt_name_rule *r, int32_t layer, const char *kind, char *buf, size_t cap) {
    return format_name(r->graph, layer, kind, buf, cap);
}

const char *mopt_rule_file_name(const mopt_name_rule *r, mopt_naming naming, int32_t layer, const char *kind, char *buf, size_t cap) {
    const char *n = mopt_rule_name(r, naming);
    return n ? format_name(n, layer, kind, buf, cap) : NULL;
}

const char *mopt_family_role_name(const mopt_family *f, mopt_role role, int32_t layer, const char *kind, char *buf, size_t cap) {
    for (int32_t i = 0; i < f->n_rules; i++)
        if (f->rules[i].role == (int32_t)role) return mopt_rule_graph_name(&f->rules[i], layer, kind, buf, cap);
    return NULL;
}

/* rules [i, i + n) that share rule i's name in `naming` (a fused tensor) */
int32_t mopt_family_fused_run(const mopt_family *f, mopt_naming naming, int32_t i) {
    const char *n = mopt_rule_name(&f->rules[i], naming);
    int32_t k = 1;
    while (n && i + k < f->n_rules && mopt_rule_name(&f->rules[i + k], naming) && !strcmp(mopt_rule_name(&f->rules[i + k], naming), n)) k++;
    return k;
}

/* Whether name[0, len) is pattern with a block number for %d (layer rules) or without one. */
static int match(const char *pattern, int at, const char *name, size_t len, int32_t *layer) {
    int32_t l = -1;
    if (at == MOPT_AT_LAYER) { /* the block number is the only number in the pattern */
        const size_t pre = (size_t)(strstr(pattern, "%d") - pattern);
        if (len <= pre || strncmp(name, pattern, pre)) return 0;
        char *end;
        long v = strtol(name + pre, &end, 10);
        if (end == name + pre || v < 0 || v > (1 << 20) || (name[pre] == '0' && end - (name + pre) > 1)) return 0;
        l = (int32_t)v;
    }
    char want[MOPT_MAX_NAME];
    int w = snprintf(want, sizeof want, pattern, l);
    if (w < 0 || (size_t)w != len || strncmp(name, want, len)) return 0;
    *layer = l;
    return 1;
}

/* the kind after the last dot ("weight" / "bias") and the length before it; 0 for other names */
static size_t split_kind(const char *name, char *kind, size_t kind_cap) {
    const char *dot = strrchr(name, '.');
    if (!dot || (strcmp(dot + 1, "weight") && strcmp(dot + 1, "bias"))) return 0;
    snprintf(kind, kind_cap, "%s", dot + 1);
    return (size_t)(dot - name);
}

int32_t mopt_family_parse_name(const mopt_family *f, mopt_naming naming, const char *name, const mopt_name_rule **rules,
                               int32_t *layer, char *kind, size_t kind_cap) {
    const size_t len = split_kind(name, kind, kind_cap);
    for (int32_t i = 0; len && i < f->n_rules; i += mopt_family_fused_run(f, naming, i)) {
        const char *pat = mopt_rule_name(&f->rules[i], naming);
        if (!pat || !match(pat, f->rules[i].at, name, len, layer)) continue;
        const int32_t n = mopt_family_fused_run(f, naming, i);
        for (int32_t k = 0; k < n; k++) rules[k] = &f->rules[i + k];
        return n;
    }
    return 0;
}

const char *mopt_family_file_name(const mopt_family *f, mopt_naming naming, const char *graph_name, char *buf, size_t cap) {
    char kind[16];
    const size_t len = split_kind(graph_name, kind, sizeof kind);
    int32_t layer;
    for (int32_t i = 0; len && i < f->n_rules; i++)
        if (mopt_rule_name(&f->rules[i], naming) && match(f->rules[i].graph, f->rules[i].at, graph_name, len, &layer))
            return format_name(mopt_rule_name(&f->rules[i], naming), layer, kind, buf, cap);
    return NULL;
}

/* --- file tensors -------------------------------------------------------------------- */

mopt_status mopt_file_tensors(const mopt_graph *g, mopt_naming naming, mopt_file_tensor **out, int32_t *n_out, mopt_error *err) {
    *out = NULL;
    *n_out = 0;
    const mopt_arch *a = mopt_graph_arch(g);
    const mopt_family *f = mopt_family_find(a->family);
    if (!f) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "architecture family \"%s\" has no name table", a->family);
    /* the row order of RoPE q/k rows each format expects */
    const int want_interleaved = naming == MOPT_NAMING_GGUF;
    const int permute = (a->rope_style == MOPT_ROPE_INTERLEAVED) != want_interleaved;
    mopt_file_tensor *v = NULL;
    int32_t n = 0;
    size_t cap = 0;
    for (int pass = MOPT_AT_TOP; pass <= MOPT_AT_END; pass++)
        for (int32_t l = pass == MOPT_AT_LAYER ? 0 : -1; l < (pass == MOPT_AT_LAYER ? a->n_layers : 0); l++)
            for (int32_t i = 0; i < f->n_rules;) {
                const int32_t run = mopt_family_fused_run(f, naming, i);
                const mopt_name_rule *r = &f->rules[i];
                if (r->at != pass || !mopt_rule_name(r, naming)) {
                    i += run;
                    continue;
                }
                for (int b = 0; b < 2; b++) {
                    const char *kind = b ? "bias" : "weight";
                    mopt_file_tensor ft;
                    memset(&ft, 0, sizeof ft);
                    for (int32_t k = 0; k < run; k++) {
                        char gn[MOPT_MAX_NAME];
                        const mopt_tensor *t = mopt_graph_find_tensor(g, mopt_rule_graph_name(&f->rules[i + k], l, kind, gn, sizeof gn) ? gn : "");
                        /* TensorRT-LLM stores the classifier even when it is tied to the embeddings */
                        if (!t && naming == MOPT_NAMING_TRTLLM && r->role == MOPT_ROLE_LM_HEAD && !b && a->tied_embeddings) {
                            for (int32_t e = 0; e < f->n_rules && !t; e++)
                                if (f->rules[e].role == MOPT_ROLE_EMBED && mopt_rule_graph_name(&f->rules[e], -1, "weight", gn, sizeof gn))
                                    t = mopt_graph_find_tensor(g, gn);
                        }
                        if (!t) continue;
                        if (permute && (f->rules[i + k].flags & MOPT_RULE_ROPE)) ft.rope_srcs |= 1u << ft.n_src;
                        ft.src[ft.n_src++] = t;
                    }
                    if (!ft.n_src) continue;
                    if (!format_name(mopt_rule_name(r, naming), l, kind, ft.name, sizeof ft.name)) {
                        free(v);
                        return MOPT_FAIL(err, MOPT_E_INVALID, "tensor name too long for block %d", l);
                    }
                    const mopt_tensor *s0 = ft.src[0];
                    ft.ndim = s0->ndim == 1 ? 1 : 2;
                    ft.cols = s0->ndim == 1 ? 1 : s0->ne[0];
                    for (int32_t k = 0; k < ft.n_src; k++) ft.rows += ft.src[k]->ndim == 1 ? ft.src[k]->ne[0] : ft.src[k]->ne[1];
                    if (ft.rope_srcs) ft.rope_head_dim = a->head_dim, ft.rope_to_interleaved = want_interleaved;
                    ft.transposed = naming == MOPT_NAMING_HF && (r->flags & MOPT_RULE_CONV1D) && !b;
                    ft.split = b && r->split == MOPT_SPLIT_COLS ? MOPT_SPLIT_NONE : r->split; /* a row-parallel bias is whole */
                    ft.role = r->role;
                    ft.layer = l;
                    if (!mopt_grow((void **)&v, &cap, (size_t)n + 1, sizeof *v)) {
                        free(v);
                        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
                    }
                    v[n++] = ft;
                }
                i += run;
            }
    *out = v;
    *n_out = n;
    return MOPT_OK;
}

const mopt_tensor *mopt_file_tensor_row(const mopt_file_tensor *ft, int64_t r, int64_t *src_row) {
    for (int32_t k = 0; k < ft->n_src; k++) {
        const mopt_tensor *t = ft->src[k];
        const int64_t rows = t->ndim == 1 ? t->ne[0] : t->ne[1];
        if (r < rows) {
            if (ft->rope_srcs & (1u << k))
                r = ft->rope_to_interleaved ? rope_interleaved_to_half(r, ft->rope_head_dim) : rope_half_to_interleaved(r, ft->rope_head_dim);
            *src_row = r;
            return t;
        }
        r -= rows;
    }
    *src_row = -1;
    return NULL;
}

/* --- file names to graph names ----------------------------------------------------------- */

int64_t mopt_rule_rows(const mopt_arch *a, const mopt_name_rule *r) {
    switch (r->role) {
    case MOPT_ROLE_ATTN_Q: return (int64_t)a->n_heads * a->head_dim;
    case MOPT_ROLE_ATTN_K:
    case MOPT_ROLE_ATTN_V: return (int64_t)a->n_kv_heads * a->head_dim;
    default: return -1;
    }
}

/* The parts of file tensor t (one rule, or a fused run) as graph tensors: split
 * along the output (rows, or columns of a Conv1D [in, out] weight), transposed
 * back where the format stores the weight transposed. */
static mopt_status adopt_one(mopt_graph *g, mopt_tensor *t, const mopt_name_rule **rules, int32_t n, int32_t layer,
                             const char *kind, mopt_naming naming, const char *config, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(g);
    const int weight = !strcmp(kind, "weight");
    const int transposed = naming == MOPT_NAMING_HF && weight && (rules[0]->flags & MOPT_RULE_CONV1D);
    char gn[MOPT_MAX_NAME];
    if (n == 1 && !transposed) { /* a rename, or nothing */
        if (!mopt_rule_graph_name(rules[0], layer, kind, gn, sizeof gn))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s: block number too large", t->name);
        if (strcmp(gn, t->name) && mopt_graph_find_tensor(g, gn))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s is stored twice", t->name);
        snprintf(t->name, sizeof t->name, "%s", gn);
        return MOPT_OK;
    }
    /* the output axis: ne[0] of a Conv1D weight, the rows (ne[ndim-1]) otherwise */
    const int64_t out_len = transposed ? t->ne[0] : t->ne[t->ndim - 1];
    int64_t total = 0;
    for (int32_t k = 0; k < n; k++) total += n == 1 ? out_len : mopt_rule_rows(a, rules[k]);
    if ((t->ndim != (weight ? 2 : 1)) || out_len != total || (n > 1 && weight && (transposed ? t->ne[1] : t->ne[0]) != a->dim)) {
        char s[64], want[64];
        const long long D = n > 1 ? a->dim : (transposed ? t->ne[1] : t->ne[0]), T = (long long)total;
        if (!weight) snprintf(want, sizeof want, "[%lld]", T);
        else snprintf(want, sizeof want, "[%lld, %lld]", transposed ? D : T, transposed ? T : D);
        return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s has shape %s but %s implies %s", t->name,
                         mopt_tensor_shape_str(t, s, sizeof s), config, want);
    }
    if (t->dtype >= MOPT_DTYPE_PACKED_FIRST)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "tensor %s: a fused or transposed tensor must be f32, f16 or bf16", t->name);
    const size_t es = mopt_dtype_size(t->dtype);
    int64_t off = 0;
    for (int32_t k = 0; k < n; k++) {
        const int64_t rows = n == 1 ? out_len : mopt_rule_rows(a, rules[k]);
        if (!mopt_rule_graph_name(rules[k], layer, kind, gn, sizeof gn))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s: block number too large", t->name);
        mopt_tensor *p;
        if (transposed) {
            p = mopt_tensor_transpose2d(t, gn, off, rows, err);
        } else { /* rows [off, off + rows) */
            int64_t dims[2] = {rows, t->ndim == 2 ? t->ne[0] : 0};
            p = mopt_tensor_new(gn, t->dtype, t->ndim, dims, err);
            const int64_t row_elems = t->ndim == 2 ? t->ne[0] : 1;
            if (p) memcpy(p->data, (const char *)t->data + (size_t)(off * row_elems) * es, (size_t)(rows * row_elems) * es);
        }
        if (!p) return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
        mopt_status st = strcmp(gn, t->name) ? mopt_graph_add_tensor(g, p, err) : mopt_graph_replace_tensor(g, p, err);
        if (st) {
            mopt_tensor_free(p);
            return st;
        }
        off += rows;
    }
    if (n > 1) mopt_graph_remove_tensor(g, t->name); /* the fused tensor itself */
    return MOPT_OK;
}

mopt_status mopt_family_adopt_names(mopt_graph *g, const mopt_family *f, mopt_naming naming, const char *config, mopt_error *err) {
    /* names first: adopting adds and removes tensors, so walk a copy */
    const int32_t nt = mopt_graph_n_tensors(g);
    char(*names)[MOPT_MAX_NAME] = malloc((size_t)(nt ? nt : 1) * sizeof *names);
    if (!names) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < nt; i++) snprintf(names[i], MOPT_MAX_NAME, "%s", mopt_graph_tensor(g, i)->name);
    mopt_status st = MOPT_OK;
    for (int32_t i = 0; i < nt && !st; i++) {
        const mopt_name_rule *rules[3];
        int32_t layer;
        char kind[16];
        const int32_t n = mopt_family_parse_name(f, naming, names[i], rules, &layer, kind, sizeof kind);
        mopt_tensor *t = mopt_graph_find_tensor(g, names[i]);
        if (n && t) st = adopt_one(g, t, rules, n, layer, kind, naming, config, err);
    }
    free(names);
    return st;
}
