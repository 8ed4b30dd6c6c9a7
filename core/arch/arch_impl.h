/* The arch layer's internals: the builders' shared helpers and the entry every
 * importer calls. Never installed. */
#ifndef MOPT_ARCH_IMPL_H
#define MOPT_ARCH_IMPL_H

#include "graph_impl.h"

/* Where a graph's tensors came from, so build errors speak the file's language. */
typedef struct mopt_build_src {
    const char *config; /* what holds the architecture: "config.json", "the GGUF metadata", ... */
    /* a tensor's name as the checkpoint spells it (NULL: as in the graph) */
    const char *(*tensor_name)(const char *graph_name, char *buf, size_t cap);
} mopt_build_src;

/* Checks the architecture's numbers (sizes, head split, norm epsilon, RoPE
 * base, special-token ids), builds the family's graph, and refuses tensors no
 * node uses (a layer beyond the layer count, a weight of another
 * architecture). Known harmless extras (rotary inv_freq buffers, an lm_head
 * stored beside tied embeddings) are dropped. src may be NULL. */
mopt_status mopt_arch_build(mopt_graph *g, const mopt_build_src *src, mopt_error *err);

/* Helpers the architecture builders share (arch_common.c). */
typedef struct mopt_builder {
    mopt_graph *g;
    mopt_error *err;
    mopt_status status;
    const mopt_build_src *src;
} mopt_builder;

mopt_status mopt_arch_build_llama_from(mopt_graph *g, const mopt_build_src *src, mopt_error *err);
mopt_status mopt_arch_build_gpt2_from(mopt_graph *g, const mopt_build_src *src, mopt_error *err);

/* Fetches a tensor and checks its PyTorch-order shape; records the first
 * failure in b and returns NULL. n_dims <= 0 skips the check. */
mopt_tensor *mopt_builder_weight(mopt_builder *b, const char *name, int n_dims, int64_t d0, int64_t d1);
/* A linear's [out, in] weight: float, or a packed quantized type read from a
 * quantized checkpoint. */
mopt_tensor *mopt_builder_linear_weight(mopt_builder *b, const char *name, int64_t out, int64_t in);
/* Like mopt_builder_weight but a missing tensor is not an error. */
mopt_tensor *mopt_builder_weight_opt(mopt_builder *b, const char *name, int n_dims, int64_t d0, int64_t d1);
/* A node with its op, role, layer and name set and everything else empty. */
mopt_node mopt_builder_mknode(mopt_op op, mopt_role role, int layer, const char *name);
/* Appends a node writing a new value of `width`; returns the value id or -1. */
int32_t mopt_builder_node(mopt_builder *b, mopt_node node, int32_t width);

#endif
