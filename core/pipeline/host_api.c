/* The host function table handed to plugins: core services, nothing else. */
#include <cblas.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "pass_ctx.h"
#include "mopt/sampler.h"

static void host_log(const mopt_pass_ctx *ctx, const char *fmt, ...) {
    if (!ctx || ctx->quiet) return;
    char line[1024];
    int n = snprintf(line, sizeof line, "  [%s] ", ctx->pass ? ctx->pass : "mopt");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    ctx->log(ctx->log_user, MOPT_LOG_INFO, line);
}

static void host_progress(mopt_pass_ctx *ctx, int64_t done, int64_t total) {
    if (!ctx || ctx->quiet || total <= 0) return;
    double now = mopt_now();
    if (done < total && now - ctx->last_progress < 0.5) return;
    ctx->last_progress = now;
    double el = now - ctx->start, eta = done > 0 ? el * (double)(total - done) / (double)done : 0;
    int width = 30, fill = (int)(width * (done > total ? total : done) / total);
    char bar[256];
    snprintf(bar, sizeof bar, "  [%s] [%.*s%*s] %lld/%lld  %.1fs, ETA %.1fs", ctx->pass, fill, "==============================",
             width - fill, "", (long long)done, (long long)total, el, eta);
    ctx->log(ctx->log_user, MOPT_LOG_PROGRESS, bar);
}

static mopt_model *ctx_model(const mopt_pass_ctx *ctx) { return ctx->model; }
static int32_t ctx_n_threads(const mopt_pass_ctx *ctx) { return ctx->n_threads; }

static mopt_status session_forward(mopt_session *s, const int32_t *tokens, int32_t n, int32_t all_logits,
                                   const float **logits, mopt_error *err) {
    return mopt_session_forward(s, tokens, n, all_logits != 0, logits, err);
}

static void host_sgemm(int32_t ta, int32_t tb, int32_t M, int32_t N, int32_t K, float alpha, const float *A, int32_t lda,
                       const float *B, int32_t ldb, float beta, float *C, int32_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B,
                ldb, beta, C, ldc);
}

static void host_ssyrk_tn(int32_t n, int32_t k, float alpha, const float *A, int32_t lda, float beta, float *C, int32_t ldc) {
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, n, k, alpha, A, lda, beta, C, ldc);
}

/* LAPACK's Fortran entry points (OpenBLAS carries them), with the hidden
 * length of the character argument. Column-major: a row-major lower triangle
 * is LAPACK's upper one. */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
extern void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info, size_t uplo_len);
extern void dtrtri_(const char *uplo, const char *diag, const int *n, double *a, const int *lda, int *info, size_t uplo_len,
                    size_t diag_len);

static int32_t chol_f64(double *A, int64_t n) {
    if (n <= 0 || n > INT32_MAX) return 0;
    int nn = (int)n, info = 0;
    dpotrf_("U", &nn, A, &nn, &info, 1);
    return info == 0;
}

static int32_t chol_inverse_f64(double *A, int64_t n) {
    if (n <= 0 || n > INT32_MAX) return 0;
    int nn = (int)n, info = 0;
    dpotri_("U", &nn, A, &nn, &info, 1);
    if (info) return 0;
    for (int64_t i = 0; i < n; i++) /* LAPACK wrote the lower triangle (row-major); mirror it */
        for (int64_t j = i + 1; j < n; j++) A[i * n + j] = A[j * n + i];
    return 1;
}

static int32_t tri_inverse_f64(double *A, int64_t n) {
    if (n <= 0 || n > INT32_MAX) return 0;
    int nn = (int)n, info = 0;
    dtrtri_("U", "N", &nn, A, &nn, &info, 1, 1); /* column-major upper = row-major lower */
    return info == 0;
}

static float f16_round(float f) { return mopt_f16_to_f32(mopt_f32_to_f16(f)); }

static int32_t same_vocab(const mopt_tokenizer *a, const mopt_tokenizer *b, int32_t *first_diff) {
    return mopt_tokenizer_same_vocab(a, b, first_diff);
}

static int32_t interrupted(void) { return mopt_interrupted(); }

static mopt_status ctx_check_write(const mopt_pass_ctx *ctx, const char *path, mopt_error *err) {
    return ctx && ctx->write_root ? mopt_path_check_within(ctx->write_root, path, err) : MOPT_OK;
}

static void *host_alloc(size_t n) { return malloc(n); }
static void host_free(void *p) { free(p); }

const mopt_host_api mopt_host = {
    .abi_version = MOPT_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(mopt_host_api),
    .error_set = mopt_error_set,
    .log = host_log,
    .progress = host_progress,
    .ctx_model = ctx_model,
    .ctx_n_threads = ctx_n_threads,
    .opt_int = mopt_options_int,
    .opt_float = mopt_options_float,
    .opt_bool = mopt_options_bool,
    .opt_string = mopt_options_string,
    .opt_list_len = mopt_options_list_len,
    .opt_list_item = mopt_options_list_item,
    .opt_is_set = mopt_options_is_set,
    .report_metric = mopt_report_metric,
    .report_string = mopt_report_string,
    .report_artifact = mopt_report_artifact,
    .graph_arch = mopt_graph_arch,
    .graph_n_tensors = mopt_graph_n_tensors,
    .graph_tensor = mopt_graph_tensor,
    .graph_find_tensor = mopt_graph_find_tensor,
    .graph_replace_tensor = mopt_graph_replace_tensor,
    .graph_n_nodes = mopt_graph_n_nodes,
    .graph_node = mopt_graph_node,
    .graph_consumers = mopt_graph_consumers,
    .graph_find_node = mopt_graph_find_node,
    .tensor_new = mopt_tensor_new,
    .tensor_free = mopt_tensor_free,
    .tensor_read_f32 = mopt_tensor_read_f32,
    .tensor_nelements = mopt_tensor_nelements,
    .model_load = mopt_model_load,
    .model_free = mopt_model_free,
    .model_graph = mopt_model_graph,
    .model_tokenizer = mopt_model_tokenizer,
    .tokenizer_encode = mopt_tokenizer_encode,
    .session_new = mopt_session_new,
    .session_free = mopt_session_free,
    .session_forward = session_forward,
    .session_truncate = mopt_session_truncate,
    .perplexity = mopt_perplexity,
    .read_file = mopt_read_file,
    .alloc = host_alloc,
    .free = host_free,
    .graph_swap_tensor = mopt_graph_swap_tensor,
    .session_set_value = mopt_session_set_value,
    .session_run_range = mopt_session_run_range,
    .session_value = mopt_session_value,
    .sgemm = host_sgemm,
    .chol_f64 = chol_f64,
    .chol_inverse_f64 = chol_inverse_f64,
    .st_writer_open = mopt_st_writer_open,
    .st_writer_put = mopt_st_writer_put,
    .st_writer_close = mopt_st_writer_close,
    .tensor_drop_pages = mopt_tensor_drop_pages,
    .ssyrk_tn = host_ssyrk_tn,
    .mxfp_quantize = mopt_mxfp_quantize,
    .mxfp_round = mopt_mxfp_round,
    .mxfp_kind_name = mopt_mxfp_kind_name,
    .graph_set_kv_quant = mopt_graph_set_kv_quant,
    .graph_kv_quant = mopt_graph_kv_quant,
    .graph_kv_bytes_per_token = mopt_graph_kv_bytes_per_token,
    .kv_format_name = mopt_kv_format_name,
    .kv_scheme_of = mopt_kv_scheme_of,
    .hf_kv_refuses = mopt_hf_kv_refuses,
    .hf_add_kv_scales = mopt_hf_add_kv_scales,
    .trtllm_add_kv_scale = mopt_trtllm_add_kv_scale,
    .lm_head_in_scheme = mopt_lm_head_in_scheme,
    .mxfp_quantize_shared = mopt_mxfp_quantize_shared,
    .imatrix_read = mopt_imatrix_read,
    .imatrix_write = mopt_imatrix_write,
    .imatrix_free = mopt_imatrix_free,
    .ggml_type_block = mopt_ggml_type_block,
    .ggml_type_block_bytes = mopt_ggml_type_block_bytes,
    .ggml_quantize_block = mopt_ggml_quantize_block,
    .ggml_block_requantize = mopt_ggml_block_requantize,
    .gguf_weight_type = mopt_gguf_weight_type,
    .ggml_blocks_tensor = mopt_ggml_blocks_tensor,
    .ggml_type_sub_block = mopt_ggml_type_sub_block,
    .ggml_block_refit_sub = mopt_ggml_block_refit_sub,
    .ggml_quantize_block_direct = mopt_ggml_quantize_block_direct,
    .quantile = mopt_quantile,
    .ggml_block_basis = mopt_ggml_block_basis,
    .ggml_block_set_scales = mopt_ggml_block_set_scales,
    .ggml_block_sub_get = mopt_ggml_block_sub_get,
    .ggml_block_sub_set = mopt_ggml_block_sub_set,
    .tokenizer_hf_files = mopt_tokenizer_hf_files,
    .graph_value_width = mopt_graph_value_width,
    .session_parallel_for = mopt_session_parallel_for,
    .tri_inverse_f64 = tri_inverse_f64,
    .session_device = mopt_session_device,
    .session_kv_bytes_per_position = mopt_session_kv_bytes_per_position,
    .cpu_kernels_name = mopt_cpu_kernels_name,
    .cpu_gemm_name = mopt_cpu_gemm_name,
    .session_read_bandwidth = mopt_session_read_bandwidth,
    .qint_pack = mopt_qint_pack,
    .w8a8_pack = mopt_w8a8_pack,
    .fp8_pack = mopt_fp8_pack,
    .f32_to_e4m3 = mopt_f32_to_e4m3,
    .e4m3_to_f32 = mopt_e4m3_to_f32,
    .weight_row_f32 = mopt_weight_row_f32,
    .weight_storage_bytes = mopt_weight_storage_bytes,
    .f16_round = f16_round,
    .report_series = mopt_report_series,
    .report_gate = mopt_report_gate,
    .report_get_metric = mopt_report_get_metric,
    .argmax = mopt_argmax,
    .tokenizer_decode_next = mopt_tokenizer_decode_next,
    .tokenizer_vocab_size = mopt_tokenizer_vocab_size,
    .tokenizer_token_str = mopt_tokenizer_token_str,
    .model_path = mopt_model_path,
    .now = mopt_now,
    .perplexity_strided = mopt_perplexity_strided,
    .perplexity_windows = mopt_perplexity_windows,
    .tokenizer_same_vocab = same_vocab,
    .interrupted = interrupted,
    .ctx_check_write = ctx_check_write,
    .tokenizer_encode_file = mopt_tokenizer_encode_file,
    .file_tensors = mopt_file_tensors,
    .st_list_add = mopt_st_list_add,
    .st_list_free = mopt_st_list_free,
    .st_add_rows = mopt_st_add_rows,
    .safetensors_encode = mopt_safetensors_encode,
    .quant_scheme_of = mopt_quant_scheme_of,
    .hf_layout_refuses = mopt_hf_layout_refuses,
    .hf_add_packed = mopt_hf_add_packed,
    .hf_config_json = mopt_hf_config_json,
    .modelopt_quant_json = mopt_modelopt_quant_json,
    .trtllm_algo = mopt_trtllm_algo,
    .trtllm_add = mopt_trtllm_add,
    .trtllm_config_json = mopt_trtllm_config_json,
    .gguf_write = mopt_gguf_write,
    .trainer_new = mopt_trainer_new,
    .trainer_free = mopt_trainer_free,
    .trainer_zero_grad = mopt_trainer_zero_grad,
    .trainer_forward = mopt_trainer_forward,
    .trainer_dlogits = mopt_trainer_dlogits,
    .trainer_backward = mopt_trainer_backward,
    .cross_entropy = mopt_cross_entropy,
    .trainer_grad_norm = mopt_trainer_grad_norm,
    .trainer_adamw = mopt_trainer_adamw,
    .lr_cosine = mopt_lr_cosine,
    .trainer_write_back = mopt_trainer_write_back,
    .adamw_opts_default = mopt_adamw_opts_default,
    .trainer_n_params = mopt_trainer_n_params,
    .trainer_param_tensor = mopt_trainer_param_tensor,
    .trainer_param = mopt_trainer_param,
    .trainer_grad = mopt_trainer_grad,
    .trainer_set_threads = mopt_trainer_set_threads,
    .distill_kl = mopt_distill_kl,
    .trainer_set_transform = mopt_trainer_set_transform,
    .trainer_set_frozen = mopt_trainer_set_frozen,
    .trainer_save = mopt_trainer_save,
    .trainer_load = mopt_trainer_load,
    .trainer_block_output = mopt_trainer_block_output,
    .trainer_set_transform_grad = mopt_trainer_set_transform_grad,
    .trainer_add_param = mopt_trainer_add_param,
    .trainer_param_name = mopt_trainer_param_name,
    .trainer_param_size = mopt_trainer_param_size,
    .trainer_grad_mut = mopt_trainer_grad_mut,
    .trainer_set_recompute = mopt_trainer_set_recompute,
    .trainer_activation_bytes = mopt_trainer_activation_bytes,
    .tensor_from_f32 = mopt_tensor_from_f32,
    .graph_assemble = mopt_graph_assemble,
    .graph_take = mopt_graph_take,
    .graph_free = mopt_graph_free,
    .graph_n_params = mopt_graph_n_params,
    .sp24_pack = mopt_sp24_pack,
    .sp24_pack_i8 = mopt_sp24_pack_i8,
    .graph_decode_bytes = mopt_graph_decode_bytes,
    .read_bandwidth = mopt_read_bandwidth,
    .session_n_threads = mopt_session_n_threads,
    .sp24_pack_i4 = mopt_sp24_pack_i4,
};
