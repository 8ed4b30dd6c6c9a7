/* Graph storage: tensors (owned), activation values and nodes in execution order. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "graph_impl.h"
#include "tensor_impl.h"
#include "mopt/quant.h"
#include "base.h"

static const char *const op_names[MOPT_OP_COUNT] = {
    "embedding", "pos_embedding", "rmsnorm", "layernorm", "linear", "rope",
    "attention", "swiglu",        "gelu",    "add",       "lm_head"};

static const char *const role_names[MOPT_ROLE_COUNT] = {
    "none",     "embed",  "pos_embed",     "attn_norm", "attn_q",   "attn_k",  "attn_v",
    "rope_q",   "rope_k", "attn",          "attn_o",    "attn_res", "mlp_norm", "mlp_gate",
    "mlp_up",   "mlp_act", "mlp_down",     "mlp_res",   "final_norm", "lm_head"};

const char *mopt_op_name(mopt_op op) { return (op >= 0 && op < MOPT_OP_COUNT) ? op_names[op] : "?"; }
const char *mopt_role_name(mopt_role r) { return (r >= 0 && r < MOPT_ROLE_COUNT) ? role_names[r] : "?"; }

int mopt_role_is_linear(mopt_role r) {
    return r == MOPT_ROLE_ATTN_Q || r == MOPT_ROLE_ATTN_K || r == MOPT_ROLE_ATTN_V || r == MOPT_ROLE_ATTN_O || r == MOPT_ROLE_MLP_GATE ||
           r == MOPT_ROLE_MLP_UP || r == MOPT_ROLE_MLP_DOWN;
}


mopt_graph *mopt_graph_new(const mopt_arch *arch, mopt_error *err) {
    mopt_graph *g = calloc(1, sizeof *g);
    if (!g) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    if (arch) g->arch = *arch;
    g->spill_fd = -1;
    return g;
}

void mopt_graph_free(mopt_graph *g) {
    if (!g) return;
    for (int32_t i = 0; i < g->n_tensors; i++) mopt_tensor_free(g->tensors[i]);
    free(g->tensors);
    free(g->nodes);
    free(g->value_width);
    mopt_graph_kv_free(g);
    if (g->spill_fd >= 0) close(g->spill_fd); /* the mappings of spilled tensors keep the file until they go */
    free(g);
}

void mopt_graph_take(mopt_graph *g, mopt_graph *from) {
    mopt_graph old = *g;
    *g = *from;
    *from = old;
    /* where replaced tensors spill is the graph's setting, not its contents' */
    g->spill_fd = old.spill_fd, g->spill_end = old.spill_end;
    from->spill_fd = -1;
    mopt_graph_free(from);
}

mopt_status mopt_graph_spill_to(mopt_graph *g, const char *dir, mopt_error *err) {
    char path[4200];
    snprintf(path, sizeof path, "%s/.mopt-spill-XXXXXX", dir);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) return MOPT_FAIL(err, MOPT_E_IO, "%s: cannot create a spill file: %s", dir, strerror(errno));
    unlink(path); /* nameless: the space returns when the last mapping goes, however the process ends */
    if (g->spill_fd >= 0) close(g->spill_fd);
    g->spill_fd = fd;
    g->spill_end = 0;
    return MOPT_OK;
}

const mopt_arch *mopt_graph_arch(const mopt_graph *g) { return &g->arch; }
mopt_arch *mopt_graph_arch_mut(mopt_graph *g) { return &g->arch; }

mopt_status mopt_graph_add_tensor(mopt_graph *g, mopt_tensor *t, mopt_error *err) {
    if (mopt_graph_find_tensor(g, t->name))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "tensor %s appears twice", t->name);
    if (!mopt_grow((void **)&g->tensors, &g->cap_tensors, (size_t)g->n_tensors + 1, sizeof *g->tensors))
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    g->tensors[g->n_tensors++] = t;
    return MOPT_OK;
}

mopt_tensor *mopt_graph_find_tensor(const mopt_graph *g, const char *name) {
    for (int32_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i]->name, name) == 0) return g->tensors[i];
    return NULL;
}

int32_t mopt_graph_n_tensors(const mopt_graph *g) { return g->n_tensors; }
mopt_tensor *mopt_graph_tensor(const mopt_graph *g, int32_t i) {
    return (i >= 0 && i < g->n_tensors) ? g->tensors[i] : NULL;
}

static void retarget_nodes(mopt_graph *g, const mopt_tensor *old, mopt_tensor *neu) {
    for (int32_t i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].weight == old) g->nodes[i].weight = neu;
        if (g->nodes[i].bias == old) g->nodes[i].bias = neu;
    }
}

mopt_status mopt_graph_replace_tensor(mopt_graph *g, mopt_tensor *t, mopt_error *err) {
    for (int32_t i = 0; i < g->n_tensors; i++) {
        if (strcmp(g->tensors[i]->name, t->name) != 0) continue;
        mopt_tensor *old = g->tensors[i];
        if (old == t) return MOPT_OK;
        if (g->spill_fd >= 0 && t->dtype >= MOPT_DTYPE_PACKED_FIRST) { /* packed weights are never written again */
            mopt_status st = mopt_tensor_spill(t, g->spill_fd, &g->spill_end, err);
            if (st) return st;
        }
        retarget_nodes(g, old, t);
        g->tensors[i] = t;
        mopt_tensor_drop_pages(old); /* a mapped original is not read again: its pages need not stay */
        mopt_tensor_free(old);
        return MOPT_OK;
    }
    return MOPT_FAIL(err, MOPT_E_INVALID, "no tensor named %s to replace", t->name);
}

mopt_tensor *mopt_graph_swap_tensor(mopt_graph *g, mopt_tensor *t, mopt_error *err) {
    for (int32_t i = 0; i < g->n_tensors; i++) {
        if (strcmp(g->tensors[i]->name, t->name) != 0) continue;
        mopt_tensor *old = g->tensors[i];
        retarget_nodes(g, old, t);
        g->tensors[i] = t;
        return old;
    }
    MOPT_FAIL(err, MOPT_E_INVALID, "no tensor named %s to swap", t->name);
    return NULL;
}

void mopt_graph_remove_tensor(mopt_graph *g, const char *name) {
    for (int32_t i = 0; i < g->n_tensors; i++) {
        if (strcmp(g->tensors[i]->name, name) != 0) continue;
        retarget_nodes(g, g->tensors[i], NULL);
        mopt_tensor_drop_pages(g->tensors[i]); /* as on replacing: a packed checkpoint's parts, read once into a
                                                  tensor of mopt's, need not stay resident */
        mopt_tensor_free(g->tensors[i]);
        memmove(&g->tensors[i], &g->tensors[i + 1], (size_t)(g->n_tensors - i - 1) * sizeof *g->tensors);
        g->n_tensors--;
        return;
    }
}

int32_t mopt_graph_add_value(mopt_graph *g, int32_t width) {
    if (width <= 0 || !mopt_grow((void **)&g->value_width, &g->cap_values, (size_t)g->n_values + 1, sizeof *g->value_width))
        return -1;
    g->value_width[g->n_values] = width;
    return g->n_values++;
}

int32_t mopt_graph_n_values(const mopt_graph *g) { return g->n_values; }
int32_t mopt_graph_value_width(const mopt_graph *g, int32_t v) {
    return (v >= 0 && v < g->n_values) ? g->value_width[v] : 0;
}

int32_t mopt_graph_add_node(mopt_graph *g, const mopt_node *node, mopt_error *err) {
    if (node->op < 0 || node->op >= MOPT_OP_COUNT)
        return MOPT_FAIL(err, MOPT_E_INVALID, "node %s: unknown op %d", node->name, (int)node->op);
    if (node->n_inputs < 0 || node->n_inputs > MOPT_MAX_NODE_INPUTS)
        return MOPT_FAIL(err, MOPT_E_INVALID, "node %s: %d inputs", node->name, node->n_inputs);
    for (int i = 0; i < node->n_inputs; i++)
        if (mopt_graph_producer(g, node->inputs[i]) < 0)
            return MOPT_FAIL(err, MOPT_E_INVALID, "node %s: input value %d is not produced by an earlier node",
                             node->name, node->inputs[i]);
    if (node->output < 0 || node->output >= g->n_values || mopt_graph_producer(g, node->output) >= 0)
        return MOPT_FAIL(err, MOPT_E_INVALID, "node %s: output value %d is undeclared or already written",
                         node->name, node->output);
    if (!mopt_grow((void **)&g->nodes, &g->cap_nodes, (size_t)g->n_nodes + 1, sizeof *g->nodes))
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    g->nodes[g->n_nodes] = *node;
    return g->n_nodes++;
}

int32_t mopt_graph_n_nodes(const mopt_graph *g) { return g->n_nodes; }
const mopt_node *mopt_graph_node(const mopt_graph *g, int32_t i) {
    return (i >= 0 && i < g->n_nodes) ? &g->nodes[i] : NULL;
}

int32_t mopt_graph_producer(const mopt_graph *g, int32_t value) {
    for (int32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].output == value) return i;
    return -1;
}

int32_t mopt_graph_consumers(const mopt_graph *g, int32_t value, int32_t *out, int32_t cap) {
    int32_t n = 0;
    for (int32_t i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_inputs; k++)
            if (g->nodes[i].inputs[k] == value) {
                if (n < cap && out) out[n] = i;
                n++;
                break;
            }
    return n;
}

int32_t mopt_graph_find_node(const mopt_graph *g, mopt_role role, int32_t layer) {
    for (int32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].role == role && g->nodes[i].layer == layer) return i;
    return -1;
}

int64_t mopt_graph_n_params(const mopt_graph *g) {
    int64_t n = 0;
    for (int32_t i = 0; i < g->n_tensors; i++) n += mopt_tensor_nelements(g->tensors[i]);
    return n;
}

int64_t mopt_graph_decode_bytes(const mopt_graph *g) {
    int64_t n = 0;
    for (int32_t i = 0; i < g->n_tensors; i++) {
        const mopt_tensor *t = g->tensors[i];
        int table = 0, whole = 0; /* looked up by row (embeddings), read whole (everything else, lm_head included) */
        for (int32_t k = 0; k < g->n_nodes; k++) {
            const mopt_node *nd = &g->nodes[k];
            if (nd->weight == t && (nd->op == MOPT_OP_EMBEDDING || nd->op == MOPT_OP_POS_EMBEDDING)) table = 1;
            else if (nd->weight == t || nd->bias == t) whole = 1;
        }
        if (whole) n += mopt_weight_storage_bytes(t);
        else if (table) n += mopt_weight_storage_bytes(t) / (t->ndim == 2 && t->ne[1] > 0 ? t->ne[1] : 1); /* a row, scales included */
    }
    return n;
}

int64_t mopt_graph_weight_bytes(const mopt_graph *g) {
    int64_t n = 0;
    for (int32_t i = 0; i < g->n_tensors; i++) n += (int64_t)mopt_tensor_nbytes(g->tensors[i]);
    return n;
}
