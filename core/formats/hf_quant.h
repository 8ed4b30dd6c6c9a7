/* Bit layouts the quantized checkpoint readers and writers share (hf_quant.c,
 * hf_quant_write.c, trtllm.c, trtllm_write.c), written once. */
#ifndef MOPT_HF_QUANT_IMPL_H
#define MOPT_HF_QUANT_IMPL_H

#include <jansson.h>
#include <stdint.h>

#include "mopt/formats.h"

/* AutoAWQ GEMM: nibble k of a packed word holds output 8c + awq_order[k]. */
static const int mopt_awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

/* Signed int4 in pairs of rows (ModelOpt's pack_int4_in_uint8, TensorRT-LLM's
 * W4A16): byte (r/2, c) of a [rows/2, cols] array holds row r in its low
 * (even r) or high (odd r) nibble as two's complement; mopt's level is that
 * value + 8, which flipping bit 3 gives. */
static inline uint8_t mopt_int4_pair_get(const uint8_t *w, int64_t cols, int64_t r, int64_t c) {
    return (uint8_t)(((w[(r / 2) * cols + c] >> (4 * (r % 2))) & 15) ^ 8);
}
static inline void mopt_int4_pair_put(uint8_t *w, int64_t cols, int64_t r, int64_t c, uint8_t level) {
    w[(r / 2) * cols + c] |= (uint8_t)((level ^ 8) << (4 * (r % 2)));
}

/* TensorRT-LLM's (and ModelOpt's) quant_algo names and what mopt stores for each. */
typedef enum { MOPT_TQ_NONE, MOPT_TQ_W4A16_AWQ, MOPT_TQ_W8A16, MOPT_TQ_W8A8, MOPT_TQ_FP8, MOPT_TQ_FP8_PC, MOPT_TQ_NVFP4, MOPT_TQ_W4A8_AWQ, MOPT_TQ_COUNT } mopt_tq_algo;
extern const char *const mopt_tq_names[MOPT_TQ_COUNT]; /* [MOPT_TQ_NONE] is NULL */
mopt_tq_algo mopt_tq_parse(const char *name);           /* MOPT_TQ_NONE when unknown */

/* OK when t holds n ones (n < 0: any count): AWQ's smoothing folded into the
 * graph, as the pre_quant_scale / prequant_scaling_factor mopt reads and writes. */
mopt_status mopt_check_ones(const mopt_tensor *t, int64_t n, const char *prefix, const char *what, mopt_error *err);

/* compressed-tensors marlin-24 (2:4 with int4 values; layout in marlin24.c):
 * why a tensor cannot be written (NULL: it can), its four tensors added to l
 * under prefix p (rows in perm's order, or as stored), and the packed weight
 * read back from them. */
const char *mopt_marlin24_refuses(const mopt_tensor *t);
mopt_status mopt_marlin24_write(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm, mopt_error *err);
mopt_tensor *mopt_marlin24_read(const char *name, int64_t n, int64_t k, int32_t group_size, const uint32_t *qw, const uint16_t *meta,
                                const uint16_t *sc, mopt_error *err);

/* KV-cache scales read from a checkpoint (kv_scales.c): taken out of the graph
 * before it is built (no node uses them as tensors), set on the layers after. */
typedef struct mopt_hf_kv_scale {
    char prefix[MOPT_MAX_NAME]; /* the projection, e.g. model.layers.0.self_attn.k_proj */
    int32_t kind;               /* 0 k_scale, 1 v_scale, 2 output_scale, 3 kv_scale */
    int32_t used;
    float value;
} mopt_hf_kv_scale;
typedef struct mopt_hf_kv {
    mopt_kv_format format; /* what the config names; MOPT_KV_FLOAT: none */
    mopt_hf_kv_scale *s;
    int32_t n;
} mopt_hf_kv;
/* Moves every one-float tensor named *.k_scale, *.v_scale, *.output_scale or *.kv_scale out of g. */
mopt_status mopt_hf_kv_take(mopt_graph *g, mopt_hf_kv *kv, const char *file, mopt_error *err);
/* Sets each layer's cache to kv->format with the scales of its k_proj and v_proj (as vLLM: one
 * missing takes the other's, both missing 1.0); a scale no layer claims is an error naming it. */
mopt_status mopt_hf_kv_apply(mopt_graph *g, mopt_hf_kv *kv, const char *file, mopt_error *err);
void mopt_hf_kv_free(mopt_hf_kv *kv);

/* config.json's quantization_config for a layout, and ModelOpt's file (JSON objects). */
json_t *mopt_hfq_config(const mopt_graph *g, mopt_hf_layout f, const mopt_quant_scheme *s);
json_t *mopt_hfq_modelopt_file(const mopt_graph *g, const mopt_quant_scheme *s);

#endif
