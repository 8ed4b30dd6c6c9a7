/* Shared pieces of the quantization passes: target linears, the integer
 * grid (RTN), packing into the core's formats, option checks, the report. */
#ifndef MOPT_QCOMMON_H
#define MOPT_QCOMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "mopt/plugin_util.h"

/* A decoder linear the pass will quantize. */
typedef struct qlinear {
    int32_t node;  /* graph node index */
    int32_t layer;
    int32_t role;  /* mopt_role */
    int64_t out, in;
    char wname[MOPT_MAX_NAME]; /* its weight tensor */
    char nname[64];            /* its node name */
} qlinear;

typedef struct qspec {
    int32_t bits;
    int32_t group; /* -1: whole row */
    int32_t sym;
    uint32_t act;  /* 0, or MOPT_QUANT_ACT_PER_TOKEN: activations rounded to E4M3 per token (W4A8, W8A8-FP8) */
    int32_t nvfp4; /* the target grid is NVFP4 (E2M1 in blocks of 16, quant.awq format=nvfp4), not integers */
    int32_t w4a8_static; /* activations=fp8_static: ModelOpt's W4A8_AWQ, its scales set once the weights are packed
                            (calib_w4a8_static) */
} qspec;

/* The `activations` option of the integer methods: none, fp8 or fp8_static. */
extern const char *const q_act_modes[];

/* Checks bits/group_size before any work. */
mopt_status q_check_spec(const mopt_host_api *h, const char *pass, qspec sp, mopt_error *err);
qspec q_spec_from(const mopt_host_api *h, const mopt_options *o);
/* The pass-level check of integer methods (bits and group_size). */
mopt_status q_check_int_options(const mopt_host_api *h, const mopt_options *o, mopt_error *err);

/* The LINEAR nodes of the decoder blocks that match the `only` globs (when
 * given) and no `exclude` glob (matched against node and tensor names).
 * lm_head and embeddings are never linears here. *out is malloc'd. Fails,
 * listing the linears' names, when none is left. */
mopt_status q_collect(const mopt_host_api *h, mopt_graph *g, const mopt_options *o, qlinear **out, int32_t *n,
                      mopt_error *err);
/* Before any work, for the block-scaled floats: every linear's rows must be whole blocks of 32 (else an error
 * naming the first one and how to keep it). */
mopt_status q_check_whole_blocks(const mopt_host_api *h, const char *pass, const qlinear *ls, int32_t n, mopt_error *err);
/* Same, restricted to one layer, into a caller array of cap entries. */
int32_t q_layer_linears(const qlinear *all, int32_t n, int32_t layer, const qlinear **out, int32_t cap);

/* max|w| of a linear's weight, read row by row. */
mopt_status q_weight_amax(const mopt_host_api *h, mopt_graph *g, const qlinear *l, float *amax, mopt_error *err);
/* shared[i]: the largest own[j] over the linears of ls that read ls[i]'s input (q/k/v; gate/up). A fused GEMM
 * holds one per-tensor scale, so vLLM and TensorRT-LLM take the group's max (ModelOpt and llm-compressor share
 * it before export); quantizing with it makes the model served the one mopt measured. */
void q_shared_input_amax(const mopt_host_api *h, mopt_graph *g, const qlinear *ls, int32_t n, const float *own, float *shared);

/* embeddings=true (quant.rtn): the token embedding table [vocab, dim] on the grid sp gives, rows as the linears'
 * (groups along dim), looked up row by row at run time. A table tied to lm_head is refused before any work
 * (q_embeddings_check), since the lookup and the output projection would change together. */
mopt_status q_embeddings_check(const mopt_host_api *h, mopt_graph *g, const char *pass, mopt_error *err);
mopt_status q_embeddings(const mopt_host_api *h, mopt_graph *g, qspec sp, const char *pass, mopt_report *report, mopt_error *err);

/* The weight as fp32 [out, in] (malloc'd). */
float *q_weight_f32(const mopt_host_api *h, mopt_graph *g, const qlinear *l, mopt_error *err);

/* Grid of one group: scale (rounded to what f16 stores) and zero-point.
 * Asymmetric: scale = (max - min) / maxq, zero = round(-min / scale) (AWQ/RTN).
 * Symmetric: 8-bit uses max|w| / 127 around 128; fewer bits use GPTQ's
 * 2 max|w| / maxq around 2^(b-1). */
void q_grid(const mopt_host_api *h, const float *w, int64_t n, int64_t stride, qspec sp, float *scale, uint8_t *zero);
/* fmaxf / fminf for hot loops, where the libm calls are not inlined (their NaN rules): a the running value, b the
 * new one; on numbers they agree, and a NaN b leaves a, as fmaxf / fminf do. */
static inline float q_max(float a, float b) { return b > a ? b : a; }
static inline float q_min(float a, float b) { return b < a ? b : a; }

static inline uint8_t q_level(float w, float scale, uint8_t zero, int32_t bits) {
    float q = __builtin_nearbyintf(w / scale) + (float)zero;
    float maxq = (float)((1 << bits) - 1);
    return (uint8_t)(q < 0 ? 0 : q > maxq ? maxq : q);
}
static inline float q_deq(uint8_t q, float scale, uint8_t zero) { return ((float)q - (float)zero) * scale; }

/* Round-to-nearest of a whole matrix: levels [out, in], scales/zeros [out, n_groups]. */
void q_rtn(const mopt_host_api *h, const float *W, int64_t out, int64_t in, qspec sp, uint8_t *q, float *scales,
           uint8_t *zeros);
/* W <- dequant(quant(W)) in place (searches judge candidates this way). */
/* E4M3 levels of W [out, in] with amax/448 scales per output row (per_tensor:
 * one, in scales[0], from the larger of max|W| and shared_amax); quant.fp8
 * packs them, quant.qat trains through them. */
void q_fp8_rows(const mopt_host_api *h, const float *W, int64_t out, int64_t in, int per_tensor, float shared_amax, uint8_t *q,
                float *scales);
void q_fake_quant(const mopt_host_api *h, float *W, int64_t out, int64_t in, qspec sp);

/* Puts t (a new packed tensor named like an existing weight) in the graph; frees it on failure. */
mopt_status q_replace(const mopt_host_api *h, mopt_graph *g, mopt_tensor *t, mopt_error *err);
/* int8 per output row, symmetric: s[r] = max|W[r]| / 127 (1 for a zero row),
 * q = round(w / s) in [-127, 127]; zeros stay zero. */
void q_int8_rows(const float *W, int64_t out, int64_t in, int8_t *q, float *s);
/* Packs levels into a QINT tensor named like the linear's weight and puts it in the graph. */
mopt_status q_install(const mopt_host_api *h, mopt_graph *g, const qlinear *l, qspec sp, const uint8_t *q,
                      const float *scales, const uint8_t *zeros, const int32_t *g_idx, mopt_error *err);
/* Round-to-nearest of W [out, in] (fp32), packed (NULL with err set when it cannot be) ... */
mopt_tensor *q_rtn_tensor(const mopt_host_api *h, const qlinear *l, qspec sp, const float *W, const char *pass, mopt_error *err);
/* ... and put in the graph as the linear's weight. */
mopt_status q_rtn_install(const mopt_host_api *h, mopt_graph *g, const qlinear *l, qspec sp, const float *W, const char *pass,
                          mopt_error *err);
/* Replaces the named tensor with an fp32 tensor holding `data` (dims in PyTorch order). */
mopt_status q_install_f32(const mopt_host_api *h, mopt_graph *g, const char *name, int32_t ndim, const int64_t *dims,
                          const float *data, mopt_error *err);

/* GGUF block grids (gguf_type of quant.gptq and quant.awq): the option's values, export.gguf's types and mixes
 * the calibrated passes can target. */
extern const char *const q_gguf_types[];
/* 1 when ggml type ty is a grid they quantize onto: Q4_0, Q8_0, Q2_K ... Q6_K (others are left to the export). */
int q_gguf_grid(int32_t ty);
/* W [out, in] (rows of whole blocks) onto blocks of ty as export.gguf quantizes them, weighted by imp[in] (an
 * importance matrix's row; NULL: unweighted): into blocks when not NULL, and W replaced by what they decode to
 * when decode. */
mopt_status q_gguf_quantize(const mopt_host_api *h, int32_t ty, float *W, int64_t out, int64_t in, const float *imp, uint8_t *blocks,
                            int decode, mopt_error *err);

/* Storage bytes and element count of the target linears' weights as they stand. */
void q_measure(const mopt_host_api *h, mopt_graph *g, const qlinear *ls, int32_t n, int64_t *bytes, int64_t *weights);
/* method, bits, group_size, weight_bytes(_baseline), bits_per_weight, layers,
 * and the coverage: "coverage" (which linears of each kind changed, which
 * were left and why), linears_changed, linears_left. Fails when the pass
 * changed no linear. */
mopt_status q_report(const mopt_host_api *h, mopt_report *r, mopt_graph *g, const mopt_options *o, const char *method, qspec sp,
                     int64_t bytes_before, int64_t bytes_after, int64_t weights, int32_t n_linear, mopt_error *err);

#endif
