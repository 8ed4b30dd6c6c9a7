/* Shared helpers for the architecture builders. */
#include <stdio.h>
#include <string.h>

#include "graph_impl.h"
#include "internal.h"

static mopt_tensor *weight(mopt_builder *b, const char *name, int n_dims, int64_t d0, int64_t d1, int required,
                           int packed_ok) {
    if (b->status != MOPT_OK) return NULL;
    mopt_tensor *t = mopt_graph_find_tensor(b->g, name);
    if (!t) {
        if (required) b->status = MOPT_FAIL(b->err, MOPT_E_FORMAT, "missing tensor %s", name);
        return NULL;
    }
    if (n_dims > 0) {
        int ok = t->ndim == n_dims && (n_dims == 1 ? t->ne[0] == d0 : (t->ne[1] == d0 && t->ne[0] == d1));
        if (!ok) {
            char found[64];
            mopt_tensor_shape_str(t, found, sizeof found);
            if (n_dims == 1)
                b->status = MOPT_FAIL(b->err, MOPT_E_FORMAT,
                                      "tensor %s has shape %s but config.json implies [%lld]", name, found,
                                      (long long)d0);
            else
                b->status = MOPT_FAIL(b->err, MOPT_E_FORMAT,
                                      "tensor %s has shape %s but config.json implies [%lld, %lld]", name, found,
                                      (long long)d0, (long long)d1);
            return NULL;
        }
    }
    if (packed_ok && t->dtype >= MOPT_DTYPE_PACKED_FIRST && t->dtype < MOPT_DTYPE_COUNT) return t;
    if (t->dtype != MOPT_DTYPE_F32 && t->dtype != MOPT_DTYPE_F16 && t->dtype != MOPT_DTYPE_BF16) {
        b->status = MOPT_FAIL(b->err, MOPT_E_UNSUPPORTED, "tensor %s: dtype %s cannot be run (need f32, f16 or bf16)",
                              name, mopt_dtype_name(t->dtype));
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
