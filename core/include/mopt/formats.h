/* Checkpoint formats seen from a graph: which tensors a format stores and
 * under which names (the family's table says), and the encoders exporters use
 * to write them. Readers and writers of one format share one module of the
 * core (core/formats), so a name map, a value-type enum or a bit order is
 * written once. What an export decides (which variant for which consumer,
 * tensor-parallel splitting, the output directory) stays in the export plugin. */
#ifndef MOPT_FORMATS_H
#define MOPT_FORMATS_H

#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/graph.h"
#include "mopt/tokenizer.h"
#include "mopt/eval.h" /* mopt_progress_fn */

MOPT_EXTERN_C_BEGIN

/* How a format names tensors. */
typedef enum mopt_naming {
    MOPT_NAMING_HF = 0,     /* a Hugging Face checkpoint as stored (GPT-2: Conv1D, fused c_attn) */
    MOPT_NAMING_GGUF = 1,   /* llama.cpp: token_embd, blk.N.attn_q, ... */
    MOPT_NAMING_TRTLLM = 2, /* TensorRT-LLM: transformer.layers.N.attention.qkv, ... */
    MOPT_NAMING_COUNT
} mopt_naming;

/* How tensor parallelism splits a TensorRT-LLM tensor across ranks. */
typedef enum mopt_tp_split {
    MOPT_SPLIT_NONE = 0, /* replicated on every rank */
    MOPT_SPLIT_ROWS = 1, /* column-parallel: output rows */
    MOPT_SPLIT_COLS = 2, /* row-parallel: input columns */
    MOPT_SPLIT_HEADS = 3 /* fused q/k/v: each rank its q, k and v heads */
} mopt_tp_split;

/* One tensor of a checkpoint as a format stores it, in terms of the graph's
 * tensors: the rows of up to three sources (fused q/k/v) in order, possibly
 * in the other RoPE row order, possibly transposed. */
typedef struct mopt_file_tensor {
    char name[MOPT_MAX_NAME];     /* the format's name, with .weight / .bias */
    const mopt_tensor *src[3];    /* borrowed from the graph */
    int32_t n_src;
    int32_t ndim;                 /* 1 (norm weights, biases) or 2 */
    int64_t rows, cols;           /* as the graph holds them (before `transposed`) */
    int32_t rope_head_dim;        /* > 0: the rows of the sources in rope_srcs are in the other RoPE order */
    int32_t rope_to_interleaved;  /* the direction: the file holds interleaved (GGUF) or rotate-half rows */
    uint32_t rope_srcs;           /* bit k: source k's rows are permuted (q and k, never v) */
    int32_t transposed;           /* the file stores [cols, rows] (GPT-2's Conv1D) */
    int32_t split;                /* mopt_tp_split, for MOPT_NAMING_TRTLLM */
    int32_t role, layer;          /* the node it belongs to */
} mopt_file_tensor;

/* The tensors a format stores for graph g, in the format's customary order
 * (malloc'd array; free()). */
MOPT_API mopt_status mopt_file_tensors(const mopt_graph *g, mopt_naming naming, mopt_file_tensor **out, int32_t *n,
                                       mopt_error *err);
/* The source tensor and its row that hold row r of a file tensor. */
MOPT_API const mopt_tensor *mopt_file_tensor_row(const mopt_file_tensor *ft, int64_t r, int64_t *src_row);

/* --- safetensors writing ------------------------------------------------------- */

typedef struct mopt_st_entry {
    char name[MOPT_MAX_NAME];
    const char *dtype; /* "F32", "F16", "BF16", "I32", "I16", "I64", "I8", "U8", "F8_E4M3" (a static string) */
    int32_t ndim;      /* 0: a scalar */
    int64_t shape[4];  /* PyTorch order */
    void *data;        /* owned (malloc) */
    size_t nbytes;
} mopt_st_entry;

/* A growing list of entries that owns their data. */
typedef struct mopt_st_list {
    mopt_st_entry *e;
    int32_t n;
    size_t cap;
} mopt_st_list;

/* Appends a tensor; takes ownership of data (malloc'd; NULL is reported as out
 * of memory), freeing it on failure. */
MOPT_API mopt_status mopt_st_list_add(mopt_st_list *l, const char *name, const char *dtype, int32_t ndim, const int64_t *shape,
                                      void *data, size_t nbytes, mopt_error *err);
MOPT_API void mopt_st_list_free(mopt_st_list *l);
/* Adds rows `rows` (n_rows indices into the file tensor; NULL: all of them) and
 * columns [c0, c0 + nc) (nc 0: all) of a file tensor as floats of `dtype`
 * ("F32", "F16", "BF16"; NULL: the first source's own, f16 for packed ones),
 * dequantizing packed sources; a transposed file tensor is stored [nc, n_rows]. */
MOPT_API mopt_status mopt_st_add_rows(mopt_st_list *l, const mopt_file_tensor *ft, const char *dtype, const int64_t *rows,
                                      int64_t n_rows, int64_t c0, int64_t nc, mopt_error *err);
/* The bytes of a safetensors file holding the entries (reordered as the
 * reference writer orders them: wider elements first, then by name). */
MOPT_API mopt_status mopt_safetensors_encode(mopt_st_entry *e, int32_t n, char **out, size_t *len, mopt_error *err);
/* The same with more __metadata__ string pairs: meta = {key, value, ..., NULL}. */
MOPT_API mopt_status mopt_safetensors_encode_meta(mopt_st_entry *e, int32_t n, const char *const *meta, char **out, size_t *len,
                                                  mopt_error *err);

/* Writing a safetensors file tensor by tensor, so no more than one tensor's
 * bytes need to be in memory: the header is laid out from the entries' names,
 * dtypes, shapes and sizes (their data is not read) exactly as
 * mopt_safetensors_encode lays it out, then each tensor's bytes go to their
 * place as they are put. The file is created new (never replacing one). */
typedef struct mopt_st_writer mopt_st_writer;
MOPT_API mopt_st_writer *mopt_st_writer_open(const char *path, const mopt_st_entry *e, int32_t n, const char *const *meta,
                                             mopt_error *err);
/* Writes the bytes of the entry named `name` (its size must match). */
MOPT_API mopt_status mopt_st_writer_put(mopt_st_writer *w, const char *name, const void *data, size_t nbytes, mopt_error *err);
/* With complete: fails unless every entry was put, then flushes. Without (after
 * a failure): only closes. Frees w either way. */
MOPT_API mopt_status mopt_st_writer_close(mopt_st_writer *w, int32_t complete, mopt_error *err);

/* --- quantized checkpoints (Hugging Face layouts, ModelOpt, TensorRT-LLM) ------------- */

/* The scheme every packed linear of a graph shares (a packed lm_head, as GGUF
 * files store it, is not one of them: exporters write it in float). */
typedef struct mopt_quant_scheme {
    mopt_dtype dtype; /* MOPT_DTYPE_QINT, W8A8, FP8, SP24 or KQUANT */
    int32_t bits, group_size;
    uint32_t flags;
    int32_t act_order; /* QINT with g_idx */
    int64_t n_packed;  /* packed tensors; 0: a float model */
    char first[MOPT_MAX_NAME];
} mopt_quant_scheme;

/* Finds the packed tensors' common scheme; two schemes are an error that names
 * `what` (the checkpoint kind that holds one). */
MOPT_API mopt_status mopt_quant_scheme_of(const mopt_graph *g, const char *what, mopt_quant_scheme *s, mopt_error *err);

typedef enum mopt_hf_layout {
    MOPT_HF_DENSE = 0,    /* float weights */
    MOPT_HF_AWQ = 1,      /* AutoAWQ GEMM */
    MOPT_HF_GPTQ = 2,     /* AutoGPTQ v1 */
    MOPT_HF_CT = 3,       /* compressed-tensors */
    MOPT_HF_MODELOPT = 4  /* ModelOpt's unified checkpoint */
} mopt_hf_layout;

/* Whether g's lm_head is packed in scheme s (quantized on request, lm_head=true): exporters then write it packed
 * and leave it out of their ignore lists; otherwise a packed lm_head (a GGUF file's) is written in float. */
MOPT_API int mopt_lm_head_in_scheme(const mopt_graph *g, const mopt_quant_scheme *s);

/* Why `layout` cannot hold the scheme (a sentence), or NULL when it can. */
MOPT_API const char *mopt_hf_layout_refuses(const mopt_quant_scheme *s, mopt_hf_layout layout);
/* ModelOpt's and TensorRT-LLM's quant_algo for the scheme ("W4A16_AWQ", "FP8", ...), or NULL. */
MOPT_API const char *mopt_modelopt_algo(const mopt_quant_scheme *s);
MOPT_API const char *mopt_trtllm_algo(const mopt_quant_scheme *s);
/* Adds a packed linear's file tensor in `layout`, its stored values bit for bit. */
MOPT_API mopt_status mopt_hf_add_packed(mopt_st_list *l, const mopt_file_tensor *ft, mopt_hf_layout layout, mopt_error *err);
/* config.json for the graph's family (architecture keys, torch_dtype, special
 * ids, and quantization_config for a quantized layout); hf_quant_config.json
 * (ModelOpt's own record). JSON text, malloc'd. */
MOPT_API char *mopt_hf_config_json(const mopt_graph *g, const char *torch_dtype, mopt_hf_layout layout,
                                   const mopt_quant_scheme *s, mopt_error *err);
MOPT_API char *mopt_modelopt_quant_json(const mopt_graph *g, const mopt_quant_scheme *s, mopt_error *err);

/* The KV-cache format every layer of g shares (MOPT_KV_FLOAT when none is
 * quantized); fails when layers differ or keep a scale per head, which no
 * checkpoint format stores. */
MOPT_API mopt_status mopt_kv_scheme_of(const mopt_graph *g, mopt_kv_format *f, mopt_error *err);
/* Why `layout` cannot hold a KV cache of format f (a sentence), or NULL
 * (dense holds none: its cache is float). */
MOPT_API const char *mopt_hf_kv_refuses(mopt_kv_format f, mopt_hf_layout layout);
/* Adds the KV-cache scale that goes with file tensor ft (a k_proj or v_proj
 * weight of a layer whose cache is quantized) in layout: ModelOpt's scalar
 * <k_proj>.k_scale / <v_proj>.v_scale, compressed-tensors' [1]
 * <k_proj>.output_scale / <v_proj>.output_scale. Nothing for other tensors. */
MOPT_API mopt_status mopt_hf_add_kv_scales(mopt_st_list *l, const mopt_graph *g, const mopt_file_tensor *ft, mopt_hf_layout layout,
                                           mopt_error *err);

/* Adds rows `rows` (n_rows indices into the file tensor) and columns [c0, c0 +
 * nc) of a file tensor in TensorRT-LLM's layout for quant_algo `algo` (NULL:
 * float, in fdtype as mopt_st_add_rows). */
MOPT_API mopt_status mopt_trtllm_add(mopt_st_list *l, const mopt_file_tensor *ft, const char *algo, const char *fdtype,
                                     const int64_t *rows, int64_t n_rows, int64_t c0, int64_t nc, mopt_error *err);
/* When ft is the fused qkv weight of a layer of g whose KV cache is quantized,
 * adds its attention.kv_cache_scaling_factor F32 [1] (every rank holds it). */
MOPT_API mopt_status mopt_trtllm_add_kv_scale(mopt_st_list *l, const mopt_graph *g, const mopt_file_tensor *ft, mopt_error *err);
/* TensorRT-LLM's one KV-cache scale for a layer: max(k_scale, v_scale). */
MOPT_API float mopt_trtllm_kv_scale(const mopt_kv_quant *q);
/* A TensorRT-LLM config.json for the graph over tp ranks (JSON text, malloc'd). */
MOPT_API char *mopt_trtllm_config_json(const mopt_graph *g, const char *torch_dtype, int32_t tp, const mopt_quant_scheme *s,
                                       mopt_error *err);

/* --- importance matrices (llama.cpp's imatrix.dat and GGUF imatrix) ------------------- */

/* One tensor's importance: mean x^2 of each input column over the calibration tokens. */
typedef struct mopt_imatrix_entry {
    char name[MOPT_MAX_NAME]; /* the GGUF tensor name: blk.0.attn_q.weight */
    int32_t ncall;            /* calls (chunks) the means were taken over */
    int32_t n;                /* input columns */
    float *mean;              /* [n] */
} mopt_imatrix_entry;

typedef struct mopt_imatrix {
    int32_t n;
    mopt_imatrix_entry *e;
    int32_t chunks;     /* calibration chunks, as llama-imatrix records them */
    char dataset[256];  /* the calibration file's name */
    int32_t chunk_size; /* appended: tokens per chunk (0: unknown); a GGUF imatrix counts tokens */
} mopt_imatrix;

/* Reads an importance matrix in either of llama-imatrix's layouts, told apart
 * by the file's magic: the legacy imatrix.dat (the means are the stored sums /
 * ncall) or the GGUF imatrix (general.type "imatrix"; the means are each
 * weight's in_sum2 / counts), both in float as llama-quantize takes them.
 * Bounds-checked; a bad file fails naming what is wrong. Free with
 * mopt_imatrix_free. */
MOPT_API mopt_status mopt_imatrix_read(const char *path, mopt_imatrix **out, mopt_error *err);
/* Writes m atomically: as a GGUF imatrix when path ends in ".gguf" (sums =
 * mean * tokens, tokens = ncall * chunk_size, or ncall when chunk_size is 0),
 * else as imatrix.dat (sums = mean * ncall). */
MOPT_API mopt_status mopt_imatrix_write(const char *path, const mopt_imatrix *m, mopt_error *err);
MOPT_API void mopt_imatrix_free(mopt_imatrix *m);
/* The means of tensor `name` and their count; NULL and 0 when m has none. */
MOPT_API const float *mopt_imatrix_find(const mopt_imatrix *m, const char *name);
MOPT_API int64_t mopt_imatrix_len(const mopt_imatrix *m, const char *name);

/* --- GGUF block grids for calibrated quantizers (GPTQ on the blocks) ---------------- */

/* ggml types (GGUF type ids): Q4_0 2, Q8_0 8, Q2_K 10, Q3_K 11, Q4_K 12, Q5_K 13, Q6_K 14. Values per block
 * (32 or 256; 0 for others) and bytes per block. */
MOPT_API int64_t mopt_ggml_type_block(int32_t type);
MOPT_API int64_t mopt_ggml_type_block_bytes(int32_t type);
/* One block of `type` from x (qw: importance weights, or NULL), as export.gguf writes it. */
MOPT_API mopt_status mopt_ggml_quantize_block(int32_t type, const float *x, const float *qw, uint8_t *block, mopt_error *err);
/* The same with w the error weights as they are (llama.cpp's searches, which weigh by qw * sqrt(sigma^2 + x^2),
 * get qw = w / that factor): GPTQ's diag(H) is the weight of a value's squared error. */
MOPT_API mopt_status mopt_ggml_quantize_block_direct(int32_t type, const float *x, const float *w, uint8_t *block, mopt_error *err);
/* Value v of a block set to the level nearest w under the block's stored scales (its header is kept);
 * returns the value it now decodes to. Q4_0, Q8_0 and Q2_K ... Q6_K. */
MOPT_API float mopt_ggml_block_requantize(int32_t type, uint8_t *block, int32_t v, float w);
/* The values one scale of a k-quant block covers: 16 (Q2_K, Q3_K, Q6_K) or 32 (Q4_K, Q5_K); 0 for other types. */
MOPT_API int mopt_ggml_type_sub_block(int32_t type);
/* Sub-block j (its values x, error weights w) of a k-quant block picks its stored scale (and min) again under the
 * block's d and dmin, by least weighted squared error among the stored ones +-6; 1 when the block changed, 0
 * otherwise and for other types. */
MOPT_API int mopt_ggml_block_refit_sub(int32_t type, uint8_t *block, int32_t j, const float *x, const float *w);
/* Sub-block j's stored scale and min (min 0 where the type has none): get, and set (0, block unchanged, when either
 * is out of the type's range). */
MOPT_API void mopt_ggml_block_sub_get(int32_t type, const uint8_t *block, int32_t j, int sm[2]);
MOPT_API int mopt_ggml_block_sub_set(int32_t type, uint8_t *block, int32_t j, const int sm[2]);
/* A block decodes to d * per_d + dmin * per_dmin, linear in its f16 d and dmin (its other fields kept): fills
 * per_d (and per_dmin for Q2_K, Q4_K, Q5_K) with the block's values, scales with its d and dmin (0 where the type
 * has none), and returns how many bases it filled (1 or 2; 0 for types without a d). set_scales stores new ones. */
MOPT_API int mopt_ggml_block_basis(int32_t type, const uint8_t *block, float *per_d, float *per_dmin, float scales[2]);
MOPT_API void mopt_ggml_block_set_scales(int32_t type, uint8_t *block, float d, float dmin);
/* A packed linear [rows, cols] holding blocks of `type` (rows of whole blocks, back to back) as they are: KQUANT
 * for Q2_K ... Q6_K, QINT symmetric groups of 32 for Q4_0 / Q8_0; export.gguf writes them back unchanged. */
MOPT_API mopt_tensor *mopt_ggml_blocks_tensor(const char *name, int32_t type, int64_t rows, int64_t cols, const uint8_t *blocks,
                                              mopt_error *err);
/* The ggml type export.gguf<type> gives the file tensor holding graph weight `weight` (mixes, output rules and
 * fallbacks applied; has_imatrix as when an importance matrix is given); -1 when the type or weight is unknown. */
MOPT_API int32_t mopt_gguf_weight_type(const mopt_graph *g, const char *type, const char *weight, int has_imatrix);

/* --- GGUF writing ----------------------------------------------------------------- */

typedef struct mopt_gguf_write_opts {
    uint32_t struct_size;  /* sizeof(mopt_gguf_write_opts): the fields past it keep mopt_gguf_write_opts_default's
                              values; 0 is refused */
    const char *type;      /* of the 2-D weights: "auto", "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1",
                              "q5_0", "q5_1", "q3_k", "q4_k", "q5_k", "q6_k", or one of
                              llama-quantize's mixes: "q2_k", "q2_k_s", "q3_k_s", "q3_k_m",
                              "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m" */
    const char *name;      /* general.name */
    int32_t tokenizer;     /* store the tokenizer as tokenizer.ggml.* */
    mopt_progress_fn progress; /* per tensor written (optional) */
    void *user;
    /* importance weights for the block quantizers (llama-quantize --imatrix), by GGUF tensor name; NULL for none,
     * and tensors it does not name are quantized unweighted */
    const mopt_imatrix *imatrix;
    /* new fields are appended here */
} mopt_gguf_write_opts;

/* struct_size set, type "auto", the tokenizer stored, no name, progress or importance matrix */
MOPT_API void mopt_gguf_write_opts_default(mopt_gguf_write_opts *o);

typedef struct mopt_gguf_write_result {
    uint64_t bytes;          /* of the file */
    uint64_t data_bytes;     /* of the tensors */
    int32_t n_tensors;
    int32_t n_dequantized;   /* packed tensors written as f16 under type auto */
    double bits_per_weight;
} mopt_gguf_write_result;

/* Writes a GGUF v3 file of graph g (and tok, when given and asked for) to
 * `path` (the caller chooses where: the exporter writes beside its target and
 * renames). Stops with MOPT_E_INTERRUPTED when mopt_interrupt() was called. */
MOPT_API mopt_status mopt_gguf_write(const mopt_graph *g, const mopt_tokenizer *tok, const char *path,
                                     const mopt_gguf_write_opts *o, mopt_gguf_write_result *res, mopt_error *err);

MOPT_EXTERN_C_END

#endif
