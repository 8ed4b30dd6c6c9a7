/* The plugin ABI. A plugin is a shared object exporting one symbol,
 * `mopt_plugin_entry`, which receives the host function table and returns a
 * descriptor starting with abi_version and struct_size. Plugins reach core
 * services only through the host table (they link no core symbols, so
 * dlopen(RTLD_NOW | RTLD_LOCAL) suffices) and keep no global mutable state.
 *
 * Versioning: MOPT_PLUGIN_ABI_VERSION changes when a field is removed or
 * reordered; new host functions and descriptor fields are only appended, and
 * struct_size tells the reader how much is there. Option structs a plugin
 * hands the host start with struct_size too (mopt_gguf_write_opts,
 * mopt_adamw_opts), so fields appended to them later are left at their
 * defaults for a plugin built before; result structs the host fills in do not
 * grow. */
#ifndef MOPT_PLUGIN_H
#define MOPT_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/executor.h"
#include "mopt/export.h"
#include "mopt/formats.h"
#include "mopt/graph.h"
#include "mopt/model.h"
#include "mopt/pass.h"
#include "mopt/tensor.h"
#include "mopt/tokenizer.h"
#include "mopt/eval.h"
#include "mopt/quant.h"
#include "mopt/train.h"

MOPT_EXTERN_C_BEGIN

/* 2: the format encoders moved into the core (mopt/formats.h); the raw
 * accessors exporters used to re-encode (qint_get, tokenizer_ggml_*, ggml_*,
 * f32_to_f16/bf16) left the table. */
/* 3: mopt_gguf_write_opts and mopt_adamw_opts start with struct_size (the
 * former had grown a field, imatrix, that a plugin built before it lacked). */
#define MOPT_PLUGIN_ABI_VERSION 3u
#define MOPT_PLUGIN_ENTRY_SYMBOL "mopt_plugin_entry"

/* Services the host offers plugins. Append only. */
typedef struct mopt_host_api {
    uint32_t abi_version; /* MOPT_PLUGIN_ABI_VERSION of the host */
    uint32_t struct_size; /* sizeof(mopt_host_api) of the host */

    /* errors, logging, progress */
    mopt_status (*error_set)(mopt_error *err, mopt_status code, const char *where, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
    void (*log)(const mopt_pass_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
    /* Reports progress of long work; the host draws a bar with ETA on stderr. */
    void (*progress)(mopt_pass_ctx *ctx, int64_t done, int64_t total);

    /* the run's context */
    mopt_model *(*ctx_model)(const mopt_pass_ctx *ctx);
    int32_t (*ctx_n_threads)(const mopt_pass_ctx *ctx);

    /* options (already validated) */
    int64_t (*opt_int)(const mopt_options *o, const char *name);
    double (*opt_float)(const mopt_options *o, const char *name);
    int32_t (*opt_bool)(const mopt_options *o, const char *name);
    const char *(*opt_string)(const mopt_options *o, const char *name);
    int32_t (*opt_list_len)(const mopt_options *o, const char *name);
    const char *(*opt_list_item)(const mopt_options *o, const char *name, int32_t i);
    /* whether the option has a value: given in the pipeline, or its spec's default (an option without a default that
     * was not given reads 0, NULL or an empty list) */
    int32_t (*opt_is_set)(const mopt_options *o, const char *name);

    /* report */
    mopt_status (*report_metric)(mopt_report *r, const char *key, double value);
    mopt_status (*report_string)(mopt_report *r, const char *key, const char *value);
    mopt_status (*report_artifact)(mopt_report *r, const char *kind, const char *path);

    /* graph and tensors */
    const mopt_arch *(*graph_arch)(const mopt_graph *g);
    int32_t (*graph_n_tensors)(const mopt_graph *g);
    mopt_tensor *(*graph_tensor)(const mopt_graph *g, int32_t i);
    mopt_tensor *(*graph_find_tensor)(const mopt_graph *g, const char *name);
    mopt_status (*graph_replace_tensor)(mopt_graph *g, mopt_tensor *t, mopt_error *err);
    int32_t (*graph_n_nodes)(const mopt_graph *g);
    const mopt_node *(*graph_node)(const mopt_graph *g, int32_t i);
    int32_t (*graph_consumers)(const mopt_graph *g, int32_t value, int32_t *out, int32_t cap);
    int32_t (*graph_find_node)(const mopt_graph *g, mopt_role role, int32_t layer);
    mopt_tensor *(*tensor_new)(const char *name, mopt_dtype dtype, int32_t ndim, const int64_t *dims, mopt_error *err);
    void (*tensor_free)(mopt_tensor *t);
    mopt_status (*tensor_read_f32)(const mopt_tensor *t, int64_t offset, int64_t n, float *out, mopt_error *err);
    int64_t (*tensor_nelements)(const mopt_tensor *t);

    /* models, tokenizers, execution */
    mopt_model *(*model_load)(const char *path, const char *tokenizer_path, mopt_error *err);
    void (*model_free)(mopt_model *m);
    mopt_graph *(*model_graph)(const mopt_model *m);
    const mopt_tokenizer *(*model_tokenizer)(const mopt_model *m);
    mopt_status (*tokenizer_encode)(const mopt_tokenizer *tok, const char *text, size_t len, uint32_t flags,
                                    int32_t **ids, size_t *n_ids, mopt_error *err);
    mopt_session *(*session_new)(const mopt_graph *g, const mopt_session_opts *opts, mopt_error *err);
    void (*session_free)(mopt_session *s);
    mopt_status (*session_forward)(mopt_session *s, const int32_t *tokens, int32_t n, int32_t all_logits,
                                   const float **logits, mopt_error *err);
    mopt_status (*session_truncate)(mopt_session *s, int32_t n, mopt_error *err);
    mopt_status (*perplexity)(mopt_session *s, const int32_t *tokens, int64_t n_tokens, int32_t ctx,
                              mopt_progress_fn progress, void *user, mopt_ppl_result *out, mopt_error *err);

    /* files and memory */
    mopt_status (*read_file)(const char *path, char **data, size_t *len, mopt_error *err);
    void *(*alloc)(size_t size);
    void (*free)(void *p);

    /* appended: partial runs, dense math and packed weights (quantization) */
    mopt_tensor *(*graph_swap_tensor)(mopt_graph *g, mopt_tensor *t, mopt_error *err);
    mopt_status (*session_set_value)(mopt_session *s, int32_t value, const float *data, int32_t T, mopt_error *err);
    mopt_status (*session_run_range)(mopt_session *s, int32_t first, int32_t last, const int32_t *tokens, int32_t T,
                                     mopt_node_observer observer, void *user, mopt_error *err);
    const float *(*session_value)(const mopt_session *s, int32_t value);
    /* row-major C = alpha * op(A) op(B) + beta * C, op = transpose when trans_* != 0 */
    void (*sgemm)(int32_t trans_a, int32_t trans_b, int32_t M, int32_t N, int32_t K, float alpha, const float *A,
                  int32_t lda, const float *B, int32_t ldb, float beta, float *C, int32_t ldc);
    mopt_tensor *(*qint_pack)(const char *name, int64_t out, int64_t in, int32_t bits, int32_t group_size,
                              const uint8_t *q, const float *scales, const uint8_t *zeros, const int32_t *g_idx,
                              mopt_error *err);
    mopt_tensor *(*w8a8_pack)(const char *name, int64_t out, int64_t in, const int8_t *q, const float *scales,
                              mopt_error *err);
    mopt_tensor *(*fp8_pack)(const char *name, int64_t out, int64_t in, const uint8_t *q, const float *scales,
                             int64_t n_scales, uint32_t act_flags, float act_scale, mopt_error *err);
    uint8_t (*f32_to_e4m3)(float f);
    float (*e4m3_to_f32)(uint8_t b);
    mopt_status (*weight_row_f32)(const mopt_tensor *t, int64_t row, float *out, mopt_error *err);
    int64_t (*weight_storage_bytes)(const mopt_tensor *t);
    float (*f16_round)(float f); /* the value an f16 stores for f */

    /* appended: validation and A/B passes */
    mopt_status (*report_series)(mopt_report *r, const char *key, const double *v, int64_t n);
    mopt_status (*report_gate)(mopt_report *r, const char *metric, const char *op, double threshold, double value,
                               int32_t passed);
    /* the latest value of a metric any earlier successful pass reported (NaN if none) */
    double (*report_get_metric)(const mopt_report *r, const char *key);
    int32_t (*argmax)(const float *x, int32_t n);
    int64_t (*tokenizer_decode_next)(const mopt_tokenizer *tok, const int32_t *prev, size_t n_prev, int32_t id,
                                     char *buf, size_t cap);
    int32_t (*tokenizer_vocab_size)(const mopt_tokenizer *tok);
    const char *(*tokenizer_token_str)(const mopt_tokenizer *tok, int32_t id);
    const char *(*model_path)(const mopt_model *m);
    double (*now)(void); /* monotonic seconds */
    mopt_status (*perplexity_strided)(mopt_session *s, const int32_t *tokens, int64_t n_tokens, int32_t ctx,
                                      int32_t stride, double *window_nll, mopt_progress_fn progress, void *user,
                                      mopt_ppl_result *out, mopt_error *err);
    int64_t (*perplexity_windows)(int64_t n_tokens, int32_t ctx, int32_t stride);
    /* same size and the same string for every id; *first_diff as mopt_tokenizer_same_vocab */
    int32_t (*tokenizer_same_vocab)(const mopt_tokenizer *a, const mopt_tokenizer *b, int32_t *first_diff);
    /* appended: stopping on request (mopt/interrupt.h). Long loops check it at
     * safe points and return MOPT_E_INTERRUPTED; forward passes check it too. */
    int32_t (*interrupted)(void);
    /* OK when the run may write `path` (inside its write_root, if it has one);
     * passes that write files call it before creating anything */
    mopt_status (*ctx_check_write)(const mopt_pass_ctx *ctx, const char *path, mopt_error *err);
    /* a whole text file, mapped and encoded; errors name the file */
    mopt_status (*tokenizer_encode_file)(const mopt_tokenizer *tok, const char *path, uint32_t flags, int32_t **ids,
                                         size_t *n_ids, mopt_error *err);

    /* checkpoint formats (mopt/formats.h): exporters decide what to write and
     * where; the encodings are the core's, shared with its readers */
    mopt_status (*file_tensors)(const mopt_graph *g, mopt_naming naming, mopt_file_tensor **out, int32_t *n, mopt_error *err);
    mopt_status (*st_list_add)(mopt_st_list *l, const char *name, const char *dtype, int32_t ndim, const int64_t *shape, void *data,
                               size_t nbytes, mopt_error *err);
    void (*st_list_free)(mopt_st_list *l);
    mopt_status (*st_add_rows)(mopt_st_list *l, const mopt_file_tensor *ft, const char *dtype, const int64_t *rows, int64_t n_rows,
                               int64_t c0, int64_t nc, mopt_error *err);
    mopt_status (*safetensors_encode)(mopt_st_entry *e, int32_t n, char **out, size_t *len, mopt_error *err);
    mopt_status (*quant_scheme_of)(const mopt_graph *g, const char *what, mopt_quant_scheme *s, mopt_error *err);
    const char *(*hf_layout_refuses)(const mopt_quant_scheme *s, mopt_hf_layout layout);
    mopt_status (*hf_add_packed)(mopt_st_list *l, const mopt_file_tensor *ft, mopt_hf_layout layout, mopt_error *err);
    char *(*hf_config_json)(const mopt_graph *g, const char *torch_dtype, mopt_hf_layout layout, const mopt_quant_scheme *s,
                            mopt_error *err);
    char *(*modelopt_quant_json)(const mopt_graph *g, const mopt_quant_scheme *s, mopt_error *err);
    const char *(*trtllm_algo)(const mopt_quant_scheme *s);
    mopt_status (*trtllm_add)(mopt_st_list *l, const mopt_file_tensor *ft, const char *algo, const char *fdtype, const int64_t *rows,
                              int64_t n_rows, int64_t c0, int64_t nc, mopt_error *err);
    char *(*trtllm_config_json)(const mopt_graph *g, const char *torch_dtype, int32_t tp, const mopt_quant_scheme *s, mopt_error *err);
    mopt_status (*gguf_write)(const mopt_graph *g, const mopt_tokenizer *tok, const char *path, const mopt_gguf_write_opts *o,
                              mopt_gguf_write_result *res, mopt_error *err);

    /* appended: training (mopt/train.h) for distillation and QAT */
    mopt_trainer *(*trainer_new)(const mopt_graph *g, int32_t max_tokens, mopt_error *err);
    void (*trainer_free)(mopt_trainer *tr);
    void (*trainer_zero_grad)(mopt_trainer *tr);
    mopt_status (*trainer_forward)(mopt_trainer *tr, const int32_t *tokens, int32_t n, const float **logits, mopt_error *err);
    float *(*trainer_dlogits)(mopt_trainer *tr);
    mopt_status (*trainer_backward)(mopt_trainer *tr, mopt_error *err);
    double (*cross_entropy)(const float *logits, float *dlogits, const int32_t *tokens, int32_t n, int32_t vocab, double weight);
    double (*trainer_grad_norm)(const mopt_trainer *tr);
    mopt_status (*trainer_adamw)(mopt_trainer *tr, const mopt_adamw_opts *o, float lr, float grad_scale, mopt_error *err);
    float (*lr_cosine)(int64_t step, int64_t warmup, int64_t total, float lr, float lr_min);
    mopt_status (*trainer_write_back)(mopt_trainer *tr, mopt_graph *g, mopt_error *err);
    void (*adamw_opts_default)(mopt_adamw_opts *o);
    int32_t (*trainer_n_params)(const mopt_trainer *tr);
    const mopt_tensor *(*trainer_param_tensor)(const mopt_trainer *tr, int32_t i);
    float *(*trainer_param)(mopt_trainer *tr, int32_t i);
    const float *(*trainer_grad)(const mopt_trainer *tr, int32_t i);
    mopt_status (*trainer_set_threads)(mopt_trainer *tr, int32_t n, mopt_error *err);
    double (*distill_kl)(const float *student, const float *teacher, float *dstudent, int32_t n, int32_t vocab, double tau,
                         int32_t kind, int32_t top_k, double weight);
    mopt_status (*trainer_set_transform)(mopt_trainer *tr, int32_t i, mopt_weight_fn fn, void *user, mopt_error *err);
    mopt_status (*trainer_set_frozen)(mopt_trainer *tr, int32_t i, int32_t frozen, mopt_error *err);
    mopt_status (*trainer_save)(const mopt_trainer *tr, const char *path, const mopt_train_extra *x, int32_t nx, mopt_error *err);
    mopt_status (*trainer_load)(mopt_trainer *tr, const char *path, mopt_train_extra *x, int32_t nx, mopt_error *err);
    const float *(*trainer_block_output)(mopt_trainer *tr, int32_t layer, int32_t *width, float **grad);
    mopt_status (*trainer_set_transform_grad)(mopt_trainer *tr, int32_t i, mopt_weight_grad_fn fn, mopt_error *err);
    int32_t (*trainer_add_param)(mopt_trainer *tr, const char *name, int64_t n, const float *init, mopt_error *err);
    const char *(*trainer_param_name)(const mopt_trainer *tr, int32_t i);
    int64_t (*trainer_param_size)(const mopt_trainer *tr, int32_t i);
    float *(*trainer_grad_mut)(mopt_trainer *tr, int32_t i);
    mopt_status (*trainer_set_recompute)(mopt_trainer *tr, int32_t on, mopt_error *err);
    int64_t (*trainer_activation_bytes)(const mopt_trainer *tr);

    /* appended: pruning */
    mopt_tensor *(*tensor_from_f32)(const char *name, mopt_dtype dtype, int32_t ndim, const int64_t *dims, const float *src,
                                    mopt_error *err);

    /* appended: structured pruning (a model of another shape) */
    mopt_graph *(*graph_assemble)(const mopt_arch *arch, mopt_tensor **ts, int32_t n, mopt_error *err);
    void (*graph_take)(mopt_graph *g, mopt_graph *from);
    void (*graph_free)(mopt_graph *g);
    int64_t (*graph_n_params)(const mopt_graph *g);
    /* 2:4 sparse storage (mopt/quant.h, MOPT_DTYPE_SP24) */
    mopt_tensor *(*sp24_pack)(const char *name, int64_t out, int64_t in, mopt_dtype values, const float *W, mopt_error *err);
    /* appended: 2:4 with int8 values and a scale per row (W8A8) */
    mopt_tensor *(*sp24_pack_i8)(const char *name, int64_t out, int64_t in, const int8_t *q, const float *scales, mopt_error *err);
    /* appended: memory bandwidth (mopt/graph.h, mopt/executor.h) */
    int64_t (*graph_decode_bytes)(const mopt_graph *g);
    double (*read_bandwidth)(int32_t n_threads, size_t bytes, int32_t runs);
    int32_t (*session_n_threads)(const mopt_session *s);
    /* appended: 2:4 with int4 values and f16 group scales (W4A16, Marlin-24) */
    mopt_tensor *(*sp24_pack_i4)(const char *name, int64_t out, int64_t in, int32_t group_size, const uint8_t *u, const float *scales,
                                 mopt_error *err);
    /* appended: blocked symmetric factorizations in double (LAPACK), row-major [n, n].
     * chol_f64: A = L L^T in place, L in the lower triangle (the upper one is
     * left as it was); 0 when A is not positive definite, else 1.
     * chol_inverse_f64: from chol_f64's L, A = (L L^T)^-1 in both triangles;
     * 0 when L is singular. */
    int32_t (*chol_f64)(double *A, int64_t n);
    int32_t (*chol_inverse_f64)(double *A, int64_t n);
    /* appended: exports and quantization that stream (mopt/formats.h, mopt/tensor.h) */
    mopt_st_writer *(*st_writer_open)(const char *path, const mopt_st_entry *e, int32_t n, const char *const *meta, mopt_error *err);
    mopt_status (*st_writer_put)(mopt_st_writer *w, const char *name, const void *data, size_t nbytes, mopt_error *err);
    mopt_status (*st_writer_close)(mopt_st_writer *w, int32_t complete, mopt_error *err);
    void (*tensor_drop_pages)(const mopt_tensor *t);
    /* appended: row-major C = alpha A^T A + beta C for A [k, n], only C's upper
     * triangle (j >= i) written: half the work of sgemm for a Gram matrix */
    void (*ssyrk_tn)(int32_t n, int32_t k, float alpha, const float *A, int32_t lda, float beta, float *C, int32_t ldc);
    /* appended: block-scaled floats, NVFP4 / MXFP4 / MXFP8 (mopt/quant.h, MOPT_DTYPE_MXFP) */
    mopt_tensor *(*mxfp_quantize)(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, const float *W, uint32_t act_flags,
                                  float act_scale, mopt_error *err);
    void (*mxfp_round)(mopt_mxfp_kind k, float *x, int64_t n, float g);
    const char *(*mxfp_kind_name)(mopt_mxfp_kind k);
    /* appended: KV-cache quantization (mopt/graph.h) */
    mopt_status (*graph_set_kv_quant)(mopt_graph *g, int32_t layer, mopt_kv_format format, int32_t n_scales, const float *k_scale,
                                      const float *v_scale, mopt_error *err);
    mopt_kv_quant (*graph_kv_quant)(const mopt_graph *g, int32_t layer);
    int64_t (*graph_kv_bytes_per_token)(const mopt_graph *g);
    const char *(*kv_format_name)(mopt_kv_format f);
    mopt_status (*kv_scheme_of)(const mopt_graph *g, mopt_kv_format *f, mopt_error *err);
    const char *(*hf_kv_refuses)(mopt_kv_format f, mopt_hf_layout layout);
    mopt_status (*hf_add_kv_scales)(mopt_st_list *l, const mopt_graph *g, const mopt_file_tensor *ft, mopt_hf_layout layout,
                                    mopt_error *err);
    mopt_status (*trtllm_add_kv_scale)(mopt_st_list *l, const mopt_graph *g, const mopt_file_tensor *ft, mopt_error *err);
    /* appended: lm_head quantized on request (mopt/formats.h) */
    int (*lm_head_in_scheme)(const mopt_graph *g, const mopt_quant_scheme *s);
    /* appended: NVFP4 with a global scale shared by a fused group (mopt/quant.h) */
    mopt_tensor *(*mxfp_quantize_shared)(const char *name, mopt_mxfp_kind k, int64_t out, int64_t in, const float *W, float weight_amax,
                                         uint32_t act_flags, float act_scale, mopt_error *err);
    /* appended: importance matrices, llama.cpp's imatrix.dat or GGUF imatrix (mopt/formats.h) */
    mopt_status (*imatrix_read)(const char *path, mopt_imatrix **out, mopt_error *err);
    mopt_status (*imatrix_write)(const char *path, const mopt_imatrix *m, mopt_error *err);
    void (*imatrix_free)(mopt_imatrix *m);
    /* appended: GGUF block grids for calibrated quantizers (mopt/formats.h, mopt/quant.h) */
    int64_t (*ggml_type_block)(int32_t type);
    int64_t (*ggml_type_block_bytes)(int32_t type);
    mopt_status (*ggml_quantize_block)(int32_t type, const float *x, const float *qw, uint8_t *block, mopt_error *err);
    float (*ggml_block_requantize)(int32_t type, uint8_t *block, int32_t v, float w);
    int32_t (*gguf_weight_type)(const mopt_graph *g, const char *type, const char *weight, int has_imatrix);
    mopt_tensor *(*ggml_blocks_tensor)(const char *name, int32_t type, int64_t rows, int64_t cols, const uint8_t *blocks, mopt_error *err);
    /* appended: a k-quant sub-block's scale picked again as GPTQ's updates reach it (mopt/formats.h) */
    int (*ggml_type_sub_block)(int32_t type);
    int (*ggml_block_refit_sub)(int32_t type, uint8_t *block, int32_t j, const float *x, const float *w);
    mopt_status (*ggml_quantize_block_direct)(int32_t type, const float *x, const float *w, uint8_t *block, mopt_error *err);
    /* appended: mopt_quantile (mopt/eval.h) */
    double (*quantile)(const double *v, int64_t n, double q);
    /* appended: a GGUF block's d, dmin and sub-block scales as free parameters, for GPTQ's descent (mopt/formats.h) */
    int (*ggml_block_basis)(int32_t type, const uint8_t *block, float *per_d, float *per_dmin, float scales[2]);
    void (*ggml_block_set_scales)(int32_t type, uint8_t *block, float d, float dmin);
    void (*ggml_block_sub_get)(int32_t type, const uint8_t *block, int32_t j, int sm[2]);
    int (*ggml_block_sub_set)(int32_t type, uint8_t *block, int32_t j, const int sm[2]);
    /* appended: a GGUF file's tokenizer as tokenizer.json and tokenizer_config.json (mopt/tokenizer.h) */
    mopt_status (*tokenizer_hf_files)(const mopt_tokenizer *tok, char **tokenizer_json, char **config_json, mopt_error *err);
    /* appended: the floats per token of a graph value (mopt_graph_value_width, mopt/graph.h) */
    int32_t (*graph_value_width)(const mopt_graph *g, int32_t value);
    /* appended: a pass's own loop over a session's threads (mopt_session_parallel_for, mopt/executor.h) */
    void (*session_parallel_for)(mopt_session *s, int64_t n_tasks, mopt_parallel_fn fn, void *user);
    /* appended: from chol_f64's L (row-major, lower triangle), L^-1 in its place (LAPACK's blocked
     * triangular inverse); the upper triangle is left as it was. 0 when L is singular, else 1. */
    int32_t (*tri_inverse_f64)(double *A, int64_t n);
    /* appended: "cpu" or "cuda:N", where a session runs (mopt_session_device, mopt/executor.h) */
    const char *(*session_device)(const mopt_session *s);
    /* appended: a session's KV cache bytes per position (mopt_session_kv_bytes_per_position, mopt/executor.h) */
    int64_t (*session_kv_bytes_per_position)(const mopt_session *s);
    /* appended: the CPU kernel set and the GEMM library's kernels (mopt_cpu_kernels_name, mopt_cpu_gemm_name) */
    const char *(*cpu_kernels_name)(void);
    const char *(*cpu_gemm_name)(void);
    /* appended: the read bandwidth on a session's own threads (mopt_session_read_bandwidth, mopt/executor.h) */
    double (*session_read_bandwidth)(mopt_session *s, size_t bytes, int32_t runs);
} mopt_host_api;

typedef struct mopt_plugin_desc {
    uint32_t abi_version; /* MOPT_PLUGIN_ABI_VERSION the plugin was built against */
    uint32_t struct_size; /* sizeof(mopt_plugin_desc) */
    const char *name;     /* equals the NAME in libmopt-NAME.so */
    const char *version;
    const char *license;
    const char *description;
    const mopt_pass_desc *const *passes; /* NULL-terminated */
    void (*fini)(void);                  /* optional, called before dlclose */
    void *reserved[4];
} mopt_plugin_desc;

/* The one exported symbol. Returns the (static) descriptor, or NULL with err set. */
typedef const mopt_plugin_desc *(*mopt_plugin_entry_fn)(const mopt_host_api *host, mopt_error *err);

/* Declares the entry point with default visibility (plugins build with hidden visibility). */
#define MOPT_PLUGIN_ENTRY                                                                                          \
    __attribute__((visibility("default"))) const mopt_plugin_desc *mopt_plugin_entry(const mopt_host_api *host,   \
                                                                                    mopt_error *err)

MOPT_EXTERN_C_END

#endif
