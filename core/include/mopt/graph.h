/* Model graph: an ordered list of ops over activation values and named weight
 * tensors, plus the architecture metadata.
 *
 * Values are per-token activation rows: value v holds a [T, width] fp32 matrix
 * during a forward over T tokens. Nodes are stored in execution order; each
 * reads up to three values and writes one. Structure (which norm feeds which
 * linears, which linears form an attention block) is read from the graph with
 * mopt_graph_consumers() and the node roles, never from the model family. */
#ifndef MOPT_GRAPH_H
#define MOPT_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/tensor.h"

MOPT_EXTERN_C_BEGIN

#define MOPT_MAX_NODE_INPUTS 3

typedef enum mopt_op {
    MOPT_OP_EMBEDDING = 0, /* out[t] = weight[token_t]            weight [vocab, dim] */
    MOPT_OP_POS_EMBEDDING, /* out[t] = in0[t] + weight[pos_t]     weight [ctx, dim] */
    MOPT_OP_RMSNORM,       /* out = in0 / rms(in0) * weight */
    MOPT_OP_LAYERNORM,     /* out = (in0 - mean) / std * weight + bias */
    MOPT_OP_LINEAR,        /* out = in0 @ weight^T (+ bias)       weight [out, in] */
    MOPT_OP_ROPE,          /* rotary position embedding on in0, per head */
    MOPT_OP_ATTENTION,     /* causal attention of q=in0 over the KV cache extended by k=in1, v=in2 */
    MOPT_OP_SWIGLU,        /* out = silu(in0) * in1 */
    MOPT_OP_GELU,          /* out = gelu_tanh(in0) (GPT-2 "gelu_new") */
    MOPT_OP_ADD,           /* out = in0 + in1 (residual) */
    MOPT_OP_LM_HEAD,       /* logits = in0 @ weight^T, computed only for the rows the caller asks for */
    MOPT_OP_COUNT
} mopt_op;

/* What a node is for inside its block; lets passes find e.g. "the norm that
 * feeds q/k/v" or "the MLP down projection" on any architecture. */
typedef enum mopt_role {
    MOPT_ROLE_NONE = 0,
    MOPT_ROLE_EMBED,
    MOPT_ROLE_POS_EMBED,
    MOPT_ROLE_ATTN_NORM,
    MOPT_ROLE_ATTN_Q,
    MOPT_ROLE_ATTN_K,
    MOPT_ROLE_ATTN_V,
    MOPT_ROLE_ATTN_ROPE_Q,
    MOPT_ROLE_ATTN_ROPE_K,
    MOPT_ROLE_ATTN,
    MOPT_ROLE_ATTN_O,
    MOPT_ROLE_ATTN_RESIDUAL,
    MOPT_ROLE_MLP_NORM,
    MOPT_ROLE_MLP_GATE,
    MOPT_ROLE_MLP_UP,
    MOPT_ROLE_MLP_ACT,
    MOPT_ROLE_MLP_DOWN,
    MOPT_ROLE_MLP_RESIDUAL,
    MOPT_ROLE_FINAL_NORM,
    MOPT_ROLE_LM_HEAD,
    MOPT_ROLE_COUNT
} mopt_role;

typedef enum mopt_rope_style {
    MOPT_ROPE_HALF = 0,       /* HF LLaMA: rotate (i, i + head_dim/2) */
    MOPT_ROPE_INTERLEAVED = 1 /* llama2.c / GPT-J: rotate (2i, 2i + 1) */
} mopt_rope_style;

typedef struct mopt_node {
    mopt_op op;
    mopt_role role;
    int32_t layer; /* decoder block index, -1 outside the blocks */
    int32_t n_inputs;
    int32_t inputs[MOPT_MAX_NODE_INPUTS]; /* value ids */
    int32_t output;                       /* value id */
    mopt_tensor *weight;                  /* borrowed from the graph; may be NULL */
    mopt_tensor *bias;                    /* borrowed from the graph; may be NULL */
    /* op parameters */
    float eps;          /* norms */
    float rope_theta;   /* rope */
    int32_t rope_style; /* mopt_rope_style */
    int32_t n_heads;    /* rope, attention */
    int32_t n_kv_heads; /* attention */
    int32_t head_dim;   /* rope, attention */
    int32_t kv_slot;    /* attention: index of this node's KV cache */
    char name[64];
} mopt_node;

typedef enum mopt_norm_kind { MOPT_NORM_RMS = 0, MOPT_NORM_LAYER = 1 } mopt_norm_kind;
typedef enum mopt_mlp_kind { MOPT_MLP_SWIGLU = 0, MOPT_MLP_GELU = 1 } mopt_mlp_kind;

/* Architecture metadata, read from config.json or a checkpoint header. */
typedef struct mopt_arch {
    char family[32]; /* the model family, as core/arch names it: llama, qwen2, gpt2 */
    int32_t dim;
    int32_t n_layers;
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t ffn_dim;
    int32_t vocab_size;
    int32_t max_ctx;
    float norm_eps;
    float rope_theta;
    int32_t rope_style; /* mopt_rope_style */
    int32_t norm;       /* mopt_norm_kind */
    int32_t mlp;        /* mopt_mlp_kind */
    int32_t tied_embeddings;
    int32_t qkv_bias;
    int32_t o_bias;
    int32_t mlp_bias;
    int32_t bos_id; /* -1 when unknown */
    int32_t eos_id; /* -1 when unknown */
} mopt_arch;

typedef struct mopt_graph mopt_graph;

MOPT_API mopt_graph *mopt_graph_new(const mopt_arch *arch, mopt_error *err);
/* Frees the graph, its nodes and every tensor it owns. NULL is a no-op. */
MOPT_API void mopt_graph_free(mopt_graph *g);

MOPT_API const mopt_arch *mopt_graph_arch(const mopt_graph *g);

/* Transfers ownership of t to the graph. Names must be unique. */
MOPT_API mopt_status mopt_graph_add_tensor(mopt_graph *g, mopt_tensor *t, mopt_error *err);
MOPT_API mopt_tensor *mopt_graph_find_tensor(const mopt_graph *g, const char *name);
MOPT_API int32_t mopt_graph_n_tensors(const mopt_graph *g);
MOPT_API mopt_tensor *mopt_graph_tensor(const mopt_graph *g, int32_t i);
/* Replaces the tensor named like `t` (which must exist) with t; the old one is
 * freed and every node that referenced it is updated. Ownership of t moves. */
MOPT_API mopt_status mopt_graph_replace_tensor(mopt_graph *g, mopt_tensor *t, mopt_error *err);

/* From now on, packed tensors installed by mopt_graph_replace_tensor keep their bytes
 * in a nameless file created in `dir` (mapped read-only) instead of the heap,
 * and the tensors they replace give their mapped pages back: a quantization
 * pass then holds about one tensor in memory however large the model. The
 * file's space returns when the graph and its tensors are freed. */
MOPT_API mopt_status mopt_graph_spill_to(mopt_graph *g, const char *dir, mopt_error *err);

/* Like mopt_graph_replace_tensor, but hands the old tensor back to the caller
 * (who owns it from then on) instead of freeing it: for trying a weight and
 * swapping the original back. Returns NULL (err set) if no tensor has t's name. */
MOPT_API mopt_tensor *mopt_graph_swap_tensor(mopt_graph *g, mopt_tensor *t, mopt_error *err);

/* Declares an activation value of `width` floats per token; returns its id. */
MOPT_API int32_t mopt_graph_add_value(mopt_graph *g, int32_t width);
MOPT_API int32_t mopt_graph_n_values(const mopt_graph *g);
MOPT_API int32_t mopt_graph_value_width(const mopt_graph *g, int32_t value);

/* Appends a copy of *node (execution order = insertion order); returns its
 * index or a negative status. Inputs must be values produced earlier. */
MOPT_API int32_t mopt_graph_add_node(mopt_graph *g, const mopt_node *node, mopt_error *err);
MOPT_API int32_t mopt_graph_n_nodes(const mopt_graph *g);
MOPT_API const mopt_node *mopt_graph_node(const mopt_graph *g, int32_t i);
/* Index of the node that writes `value`, or -1. */
MOPT_API int32_t mopt_graph_producer(const mopt_graph *g, int32_t value);
/* Indices of nodes reading `value`, up to `cap`; returns the total count. */
MOPT_API int32_t mopt_graph_consumers(const mopt_graph *g, int32_t value, int32_t *out, int32_t cap);
/* First node with this role in this layer, or -1. */
MOPT_API int32_t mopt_graph_find_node(const mopt_graph *g, mopt_role role, int32_t layer);

/* Number of parameters (elements of distinct weight tensors) and their bytes as stored. */
MOPT_API int64_t mopt_graph_n_params(const mopt_graph *g);
MOPT_API int64_t mopt_graph_weight_bytes(const mopt_graph *g);
/* Bytes of weights one decode step reads per token, as stored (scales
 * included): every weight a node uses whole, and one row of each embedding
 * table that is only looked up (a table tied to lm_head is read whole). */
MOPT_API int64_t mopt_graph_decode_bytes(const mopt_graph *g);

/* KV-cache quantization (quant.kv): the attention of a layer may keep its
 * cache as E4M3 or int8 values with a scale per KV head (or one per layer):
 * the cache stores q = round(k / k_scale) (E4M3: nearest even, saturating at
 * 448; int8: nearest even, clamped to +-127) and attention reads q * k_scale,
 * as vLLM's fp8 cache does; likewise v. K is quantized after RoPE. */
typedef enum mopt_kv_format {
    MOPT_KV_FLOAT = 0,
    MOPT_KV_FP8 = 1,
    MOPT_KV_INT8 = 2,
    /* IEEE half values, no scales: a session's choice for the layers a graph leaves in float
     * (mopt_session_opts.kv_cache), never stored in a graph */
    MOPT_KV_F16 = 3,
    MOPT_KV_FORMAT_COUNT
} mopt_kv_format;

typedef struct mopt_kv_quant {
    int32_t format;                 /* mopt_kv_format; MOPT_KV_FLOAT: an fp32 cache, no scales */
    int32_t n_scales;               /* 1 (one per layer) or the layer's n_kv_heads (one per head) */
    const float *k_scale, *v_scale; /* [n_scales], held by the graph */
} mopt_kv_quant;

/* Sets layer's cache format and scales (copied); MOPT_KV_FLOAT clears them.
 * Fails unless the layer has an attention node, the format is FP8 or INT8
 * (or FLOAT), n_scales is 1 or its n_kv_heads, and every scale is finite and positive. Sessions made earlier
 * keep the cache they were made with. */
MOPT_API mopt_status mopt_graph_set_kv_quant(mopt_graph *g, int32_t layer, mopt_kv_format format, int32_t n_scales,
                                             const float *k_scale, const float *v_scale, mopt_error *err);
/* The layer's cache format (format MOPT_KV_FLOAT when it has none). */
MOPT_API mopt_kv_quant mopt_graph_kv_quant(const mopt_graph *g, int32_t layer);
/* Bytes the KV caches of all layers take per token, as the executor stores them. */
MOPT_API int64_t mopt_graph_kv_bytes_per_token(const mopt_graph *g);
/* "float", "fp8", "int8", "f16" */
MOPT_API const char *mopt_kv_format_name(mopt_kv_format f);

MOPT_API const char *mopt_op_name(mopt_op op);
MOPT_API const char *mopt_role_name(mopt_role role);

/* Whether nodes of this role are the transformer's linears (q, k, v, o, gate,
 * up, down): the weights quantization packs. The embedding and lm_head are not. */
MOPT_API int mopt_role_is_linear(mopt_role role);

/* Wires the nodes of g's architecture family (mopt_arch.family) over the
 * tensors already added to g under their graph (Hugging Face) names; checks
 * the architecture's numbers and the shapes, names the first tensor that is
 * missing or has the wrong shape, and refuses tensors no node uses. */
MOPT_API mopt_status mopt_graph_build(mopt_graph *g, mopt_error *err);

/* A new graph of architecture `arch` over the tensors ts[0..n) (graph names),
 * wired by mopt_graph_build: for passes that change a model's shape
 * (structured pruning). Ownership of every tensor moves to the call, which
 * frees them all when it fails. */
MOPT_API mopt_graph *mopt_graph_assemble(const mopt_arch *arch, mopt_tensor **ts, int32_t n, mopt_error *err);
/* g takes over everything `from` holds (architecture, tensors, nodes) and its
 * old contents are freed with `from`: a pass swaps in a reshaped model while
 * the pointer everyone holds stays valid. */
MOPT_API void mopt_graph_take(mopt_graph *g, mopt_graph *from);

MOPT_EXTERN_C_END

#endif
