/* The graph's private layout (core only). */
#ifndef MOPT_GRAPH_IMPL_H
#define MOPT_GRAPH_IMPL_H

#include "mopt/graph.h"

struct mopt_graph {
    mopt_arch arch;
    mopt_tensor **tensors; /* owned */
    int32_t n_tensors;
    size_t cap_tensors;
    int32_t *value_width;
    int32_t n_values;
    size_t cap_values;
    mopt_node *nodes;
    int32_t n_nodes;
    size_t cap_nodes;
    int spill_fd;       /* >= 0: packed tensors installed by replace go to this unlinked file (mopt_graph_spill_to) */
    uint64_t spill_end; /* bytes used in it */
    mopt_kv_quant *kv;  /* [arch.n_layers] or NULL: KV-cache formats (kv_quant.c) */
};

void mopt_graph_kv_free(mopt_graph *g);
/* A layer's cache in a session: the graph's format, or for a float layer f16 where the session asks (kv_f16) */
mopt_kv_quant mopt_graph_kv_in_session(const mopt_graph *g, int32_t layer, int kv_f16);
/* Bytes one cached value takes in a format */
size_t mopt_kv_value_bytes(int32_t format);
/* Bytes every layer's K and V take per position in such a session */
int64_t mopt_graph_kv_bytes_in_session(const mopt_graph *g, int kv_f16);

mopt_arch *mopt_graph_arch_mut(mopt_graph *g);
/* Frees the named tensor (if present) and clears node references to it. */
void mopt_graph_remove_tensor(mopt_graph *g, const char *name);

#endif
