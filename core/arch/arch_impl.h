/* The arch layer: one table per model family (its config.json keys, its
 * graph builder, and the names every format gives its tensors), in the manner
 * of llama.cpp's per-architecture tensor-name tables. Importers, exporters and
 * passes ask this layer or the graph's roles; nothing outside arch/ compares a
 * family's name. Never installed. */
#ifndef MOPT_ARCH_IMPL_H
#define MOPT_ARCH_IMPL_H

#include <jansson.h>

#include "graph_impl.h"
#include "mopt/formats.h"

/* --- names ----------------------------------------------------------------------- */

enum { MOPT_AT_TOP = 0, MOPT_AT_LAYER = 1, MOPT_AT_END = 2 }; /* before the blocks, in block %d, after them */

enum {
    MOPT_RULE_ROPE = 1u << 0,  /* q/k rows: they follow the RoPE row order of the format */
    MOPT_RULE_CONV1D = 1u << 1 /* the HF checkpoint stores the weight [in, out] (GPT-2) */
};

/* One weight-carrying node of a family and its tensor names, without the
 * .weight / .bias suffix; %d is the block. Consecutive rules with the same
 * name in a format are one fused tensor there (rows concatenated in rule
 * order), as GPT-2's c_attn or TensorRT-LLM's attention.qkv. */
typedef struct mopt_name_rule {
    int32_t role;      /* mopt_role */
    int32_t at;        /* MOPT_AT_* */
    const char *graph; /* mopt's name, as Hugging Face's modules */
    const char *name[MOPT_NAMING_COUNT]; /* per format; NULL: HF as the graph, other formats do not store it */
    uint32_t flags;    /* MOPT_RULE_* */
    int32_t split;     /* mopt_tp_split of the weight (a row-parallel bias is replicated) */
} mopt_name_rule;

/* Where a graph's tensors came from, so build errors speak the file's language. */
typedef struct mopt_build_src {
    const char *config;     /* what holds the architecture: "config.json", "the GGUF metadata", ... */
    int32_t naming;         /* how the file names tensors (mopt_naming), or -1: as the graph */
} mopt_build_src;

typedef struct mopt_builder mopt_builder;

/* A model family: everything mopt knows of it, in one place. */
typedef struct mopt_family {
    const char *name;                  /* mopt_arch.family */
    const char *const *hf_model_types; /* config.json model_type values it reads (NULL-terminated) */
    const char *hf_architecture;       /* the "architectures" entry it writes */
    const char *gguf_arch;             /* general.architecture it writes and reads */
    const char *const *trt_archs;      /* TensorRT-LLM "architecture" values it reads; [0] is written */
    const char *trt_act;               /* TensorRT-LLM hidden_act and position_embedding_type it writes */
    const char *trt_pos_embedding;
    void (*trt_write)(const mopt_arch *a, json_t *cfg); /* the family's own TensorRT-LLM config keys */
    mopt_arch shape;                   /* norm, mlp, biases and RoPE style of the family */
    /* config.json: read into a (after the shape was copied in), and written back */
    mopt_status (*hf_read)(const json_t *cfg, const char *file, mopt_arch *a, mopt_error *err);
    json_t *(*hf_write)(const mopt_arch *a);
    /* (optional) the family's quirks of HF checkpoints, before the file tensors are mapped */
    mopt_status (*hf_fixup)(mopt_graph *g, mopt_error *err);
    mopt_status (*build)(mopt_builder *b);
    const mopt_name_rule *rules;
    int32_t n_rules;
} mopt_family;

/* The family named `name` (mopt_arch.family), or NULL. */
const mopt_family *mopt_family_find(const char *name);
/* The family that reads a config.json model_type / a GGUF general.architecture /
 * a TensorRT-LLM architecture, or NULL. */
const mopt_family *mopt_family_of_hf(const char *model_type);
const mopt_family *mopt_family_of_gguf(const char *gguf_arch, size_t len);
const mopt_family *mopt_family_of_trt(const char *trt_arch);
/* What mopt reads in a format, as a list for messages, in buf: the config.json
 * model_types (HF), the general.architecture values (GGUF), the TensorRT-LLM
 * architectures. */
const char *mopt_family_list(mopt_naming naming, char *buf, size_t cap);
/* Whether the family rotates q/k (a rule carries MOPT_RULE_ROPE). */
int mopt_family_has_rope(const mopt_family *f);

/* A rule's name pattern in a format (NULL: the format does not store it), and
 * the number of rules from rule i on that one fused tensor of the format holds. */
const char *mopt_rule_name(const mopt_name_rule *r, mopt_naming naming);
int32_t mopt_family_fused_run(const mopt_family *f, mopt_naming naming, int32_t i);
/* A rule's tensor name in format `naming` for block `layer` and kind; NULL if buf is too small. */
const char *mopt_rule_file_name(const mopt_name_rule *r, mopt_naming naming, int32_t layer, const char *kind, char *buf, size_t cap);
/* The graph name (with "." kind appended: "weight" or "bias") of a rule's
 * tensor in block `layer`; NULL if buf is too small. */
const char *mopt_rule_graph_name(const mopt_name_rule *r, int32_t layer, const char *kind, char *buf, size_t cap);
/* The graph name of a role's weight or bias in block `layer` (-1 outside the
 * blocks); NULL if the family has no such tensor. */
const char *mopt_family_role_name(const mopt_family *f, mopt_role role, int32_t layer, const char *kind, char *buf, size_t cap);
/* Parses a tensor name of format `naming`: the rules (1, or 3 for a fused
 * q/k/v) it stands for, its block and its kind. Returns the number of rules
 * (0: the family has no such tensor). */
int32_t mopt_family_parse_name(const mopt_family *f, mopt_naming naming, const char *name, const mopt_name_rule **rules,
                               int32_t *layer, char *kind, size_t kind_cap);
/* A graph tensor's name in format `naming` (a q/k/v part names its fused tensor); NULL if unknown. */
const char *mopt_family_file_name(const mopt_family *f, mopt_naming naming, const char *graph_name, char *buf, size_t cap);

/* The rows one part of a fused q/k/v tensor holds (-1 for other roles). */
int64_t mopt_rule_rows(const mopt_arch *a, const mopt_name_rule *r);
/* Gives g's tensors, stored under format `naming`'s names, the graph's names:
 * a fused tensor is split into its parts (rows in rule order) and a Conv1D
 * weight is transposed back. Names the family does not know are left alone
 * (mopt_arch_build refuses them); `config` names the architecture's source
 * in messages. */
mopt_status mopt_family_adopt_names(mopt_graph *g, const mopt_family *f, mopt_naming naming, const char *config, mopt_error *err);

/* --- building --------------------------------------------------------------------- */

/* Checks the architecture's numbers (sizes, head split, norm epsilon, RoPE
 * base, special-token ids), builds the family's graph, and refuses tensors no
 * node uses (a layer beyond the layer count, a weight of another
 * architecture). Known harmless extras (rotary inv_freq buffers, an lm_head
 * stored beside tied embeddings) are dropped. src may be NULL. */
mopt_status mopt_arch_build(mopt_graph *g, const mopt_build_src *src, mopt_error *err);

struct mopt_builder {
    mopt_graph *g;
    mopt_error *err;
    mopt_status status;
    const mopt_build_src *src;
    const mopt_family *family;
};

/* The weight (kind "weight") or bias ("bias") of a role's node in block layer
 * (-1 outside the blocks), with its PyTorch-order shape checked: [d0] when d1
 * is 0, else [d0, d1]. Linears may be packed. A missing tensor is an error
 * unless optional. Records the first failure in b and returns NULL. */
mopt_tensor *mopt_builder_tensor(mopt_builder *b, mopt_role role, int32_t layer, const char *kind, int64_t d0, int64_t d1,
                                 int optional);
/* A node with its op, role, layer and name set and everything else empty. */
mopt_node mopt_builder_mknode(mopt_op op, mopt_role role, int layer, const char *name);
/* Appends a node writing a new value of `width`; returns the value id or -1. */
int32_t mopt_builder_node(mopt_builder *b, mopt_node node, int32_t width);

/* The layers families are made of (each returns the value it writes, or -1
 * after recording a failure in b): a node of `op` over n_in values; a linear
 * (its bias optional unless `bias`); the family's norm (RMS: weight; layer
 * norm: weight and bias); attention over q, k, v; an embedding lookup (in < 0:
 * the token ids) or position embedding; and the classifier, tied or not. */
int32_t mopt_builder_op(mopt_builder *b, mopt_op op, mopt_role role, int layer, const char *name, int32_t width, int32_t n_in,
                        const int32_t *in);
int32_t mopt_builder_linear(mopt_builder *b, int32_t in, mopt_role role, int layer, int64_t out_dim, int64_t in_dim, int bias,
                            const char *name);
int32_t mopt_builder_norm(mopt_builder *b, int32_t in, mopt_role role, int layer, const char *name);
int32_t mopt_builder_attention(mopt_builder *b, int32_t q, int32_t k, int32_t v, int layer, const char *name);
int32_t mopt_builder_embedding(mopt_builder *b, mopt_op op, mopt_role role, int64_t rows, int32_t in, const char *name);
mopt_status mopt_builder_lm_head(mopt_builder *b, int32_t x);

/* The families' builders (shared where families share a graph). */
mopt_status mopt_build_llama(mopt_builder *b);
mopt_status mopt_build_gpt2(mopt_builder *b);

extern const mopt_family mopt_family_llama, mopt_family_qwen2, mopt_family_gpt2;

#endif
