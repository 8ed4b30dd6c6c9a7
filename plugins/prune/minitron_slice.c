/* Slicing a model to what a Minitron cut keeps: every tensor's rows and
 * columns chosen consistently by the role of the node that reads it, blocks
 * dropped and renumbered, the architecture rewritten (head_dim kept). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minitron.h"

typedef enum { K_NONE, K_ALL, K_HIDDEN, K_HEADS, K_GROUPS, K_NEURONS } kind;

/* Which index set a weight's rows and columns (PyTorch order [rows, cols]) follow, by the role of its node. */
static int kinds_of(mopt_role r, kind *rows, kind *cols) {
    *rows = K_ALL, *cols = K_HIDDEN;
    switch (r) {
    case MOPT_ROLE_EMBED: case MOPT_ROLE_POS_EMBED: case MOPT_ROLE_LM_HEAD: *rows = K_ALL; return 1;
    case MOPT_ROLE_ATTN_NORM: case MOPT_ROLE_MLP_NORM: case MOPT_ROLE_FINAL_NORM: *rows = K_HIDDEN, *cols = K_NONE; return 1;
    case MOPT_ROLE_ATTN_Q: *rows = K_HEADS; return 1;
    case MOPT_ROLE_ATTN_K: case MOPT_ROLE_ATTN_V: *rows = K_GROUPS; return 1;
    case MOPT_ROLE_ATTN_O: *rows = K_HIDDEN, *cols = K_HEADS; return 1;
    case MOPT_ROLE_MLP_GATE: case MOPT_ROLE_MLP_UP: *rows = K_NEURONS; return 1;
    case MOPT_ROLE_MLP_DOWN: *rows = K_HIDDEN, *cols = K_NEURONS; return 1;
    default: return 0;
    }
}

static int64_t kind_len(kind k, int64_t orig, mt_shape s, int32_t hd) {
    switch (k) {
    case K_HIDDEN: return s.dim;
    case K_HEADS: return (int64_t)s.heads * hd;
    case K_GROUPS: return (int64_t)s.kv * hd;
    case K_NEURONS: return s.ffn;
    default: return orig;
    }
}

static int64_t kind_index(kind k, const mt_keep *keep, int32_t layer, int64_t i, int32_t hd) {
    const mt_shape s = keep->shape;
    switch (k) {
    case K_HIDDEN: return keep->channels[i];
    case K_HEADS: return (int64_t)keep->heads[(size_t)layer * s.heads + i / hd] * hd + i % hd;
    case K_GROUPS: return (int64_t)keep->groups[(size_t)layer * s.kv + i / hd] * hd + i % hd;
    case K_NEURONS: return keep->neurons[(size_t)layer * s.ffn + i];
    default: return i;
    }
}

/* Calls fn for each distinct weight and bias of g with its node (a tied tensor once). */
typedef mopt_status (*tensor_fn)(void *user, const mopt_node *n, const mopt_tensor *t, int is_bias, mopt_error *err);
static mopt_status each_tensor(const mopt_host_api *h, const mopt_graph *g, tensor_fn fn, void *user, mopt_error *err) {
    const int32_t nn = h->graph_n_nodes(g);
    const mopt_tensor **seen = calloc((size_t)nn * 2 + 1, sizeof *seen);
    int32_t n_seen = 0;
    mopt_status st = seen ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, "prune.minitron", "out of memory");
    for (int32_t i = 0; i < nn && !st; i++) {
        const mopt_node *n = h->graph_node(g, i);
        const mopt_tensor *ts[2] = {n->weight, n->bias};
        for (int b = 0; b < 2 && !st; b++) {
            int dup = !ts[b];
            for (int32_t j = 0; j < n_seen && !dup; j++) dup = seen[j] == ts[b];
            if (dup) continue;
            seen[n_seen++] = ts[b];
            st = fn(user, n, ts[b], b, err);
        }
    }
    free(seen);
    return st;
}

typedef struct {
    const mopt_host_api *h;
    mt_shape s;
    int32_t hd;
    int64_t n;
} counter;

static mopt_status count_one(void *user, const mopt_node *n, const mopt_tensor *t, int is_bias, mopt_error *err) {
    counter *c = user;
    kind rows, cols;
    if (!kinds_of(n->role, &rows, &cols))
        return c->h->error_set(err, MOPT_E_UNSUPPORTED, "prune.minitron", "%s: a weight of node %s, which Minitron cannot slice", t->name,
                               n->name);
    if (n->layer >= c->s.layers) return MOPT_OK;
    if (is_bias || t->ndim == 1) cols = K_NONE;
    const int64_t R = t->ndim == 1 ? t->ne[0] : t->ne[1];
    c->n += kind_len(rows, R, c->s, c->hd) * (cols == K_NONE ? 1 : kind_len(cols, t->ne[0], c->s, c->hd));
    return MOPT_OK;
}

int64_t mt_count_params(const mopt_host_api *h, const mopt_graph *g, mt_shape s, mopt_error *err) {
    counter c = {h, s, h->graph_arch(g)->head_dim, 0};
    return each_tensor(h, g, count_one, &c, err) ? -1 : c.n;
}

typedef struct {
    const mopt_host_api *h;
    const mt_keep *k;
    int32_t hd;
    mopt_tensor **out;
    int32_t n_out;
} slicer;

/* The name with block `from`'s number (the first ".N." in it) changed to `to`. */
static mopt_status renumber(const mopt_host_api *h, const char *name, int32_t from, int32_t to, char *out, size_t cap, mopt_error *err) {
    char pat[24];
    snprintf(pat, sizeof pat, ".%d.", from);
    const char *at = strstr(name, pat);
    if (!at) return h->error_set(err, MOPT_E_UNSUPPORTED, "prune.minitron", "%s: no block number %d in the name to renumber", name, from);
    if (snprintf(out, cap, "%.*s.%d.%s", (int)(at - name), name, to, at + strlen(pat)) >= (int)cap)
        return h->error_set(err, MOPT_E_INVALID, "prune.minitron", "%s: name too long", name);
    return MOPT_OK;
}

static mopt_status slice_one(void *user, const mopt_node *n, const mopt_tensor *t, int is_bias, mopt_error *err) {
    slicer *sl = user;
    const mopt_host_api *h = sl->h;
    int32_t new_layer = -1;
    for (int32_t i = 0; n->layer >= 0 && i < sl->k->shape.layers; i++)
        if (sl->k->layers[i] == n->layer) new_layer = i;
    if (n->layer >= 0 && new_layer < 0) return MOPT_OK; /* a dropped block */
    kind rows, cols;
    kinds_of(n->role, &rows, &cols); /* every role was checked by the count */
    if (is_bias || t->ndim == 1) cols = K_NONE;
    const int64_t R = t->ndim == 1 ? t->ne[0] : t->ne[1], C = t->ndim == 1 ? 1 : t->ne[0];
    const int64_t r2 = kind_len(rows, R, sl->k->shape, sl->hd), c2 = cols == K_NONE ? 1 : kind_len(cols, C, sl->k->shape, sl->hd);
    char name[MOPT_MAX_NAME];
    mopt_status st = MOPT_OK;
    if (n->layer >= 0) st = renumber(h, t->name, n->layer, new_layer, name, sizeof name, err);
    else snprintf(name, sizeof name, "%s", t->name);
    float *src = st ? NULL : malloc((size_t)(R * C) * sizeof *src), *dst = st ? NULL : malloc((size_t)(r2 * c2) * sizeof *dst);
    if (!st && (!src || !dst)) st = h->error_set(err, MOPT_E_NOMEM, "prune.minitron", "out of memory");
    if (!st) st = h->tensor_read_f32(t, 0, R * C, src, err);
    for (int64_t i = 0; !st && i < r2; i++) {
        const int64_t si = kind_index(rows, sl->k, n->layer, i, sl->hd);
        for (int64_t j = 0; j < c2; j++) dst[i * c2 + j] = src[si * C + (cols == K_NONE ? 0 : kind_index(cols, sl->k, n->layer, j, sl->hd))];
    }
    const int64_t dims[2] = {r2, c2};
    mopt_tensor *nt = st ? NULL : h->tensor_from_f32(name, t->dtype, t->ndim, dims, dst, err);
    if (!st && !nt) st = err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    if (nt) sl->out[sl->n_out++] = nt;
    free(src);
    free(dst);
    return st;
}

mopt_graph *mt_slice(const mopt_host_api *h, const mopt_graph *g, const mt_keep *k, mopt_error *err) {
    const mopt_arch *a = h->graph_arch(g);
    mopt_arch a2 = *a;
    a2.dim = k->shape.dim;
    a2.ffn_dim = k->shape.ffn;
    a2.n_heads = k->shape.heads;
    a2.n_kv_heads = k->shape.kv;
    a2.n_layers = k->shape.layers;
    slicer sl = {h, k, a->head_dim, calloc((size_t)h->graph_n_tensors(g) + 1, sizeof(mopt_tensor *)), 0};
    if (!sl.out) {
        h->error_set(err, MOPT_E_NOMEM, "prune.minitron", "out of memory");
        return NULL;
    }
    mopt_status st = each_tensor(h, g, slice_one, &sl, err);
    mopt_graph *out = NULL;
    if (!st) out = h->graph_assemble(&a2, sl.out, sl.n_out, err); /* takes the tensors */
    else
        for (int32_t i = 0; i < sl.n_out; i++) h->tensor_free(sl.out[i]);
    free(sl.out);
    return out;
}
