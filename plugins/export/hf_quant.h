/* Quantized Hugging Face layouts written from mopt's packed tensors, bit for
 * bit (no requantization): AWQ GEMM, GPTQ v1, compressed-tensors and
 * ModelOpt's unified checkpoint (W4A16_AWQ, FP8). */
#ifndef MOPT_HF_QUANT_H
#define MOPT_HF_QUANT_H

#include <jansson.h>

#include "st_writer.h"

typedef enum hf_format { HF_DENSE, HF_AWQ, HF_GPTQ, HF_CT, HF_MODELOPT } hf_format;

/* The scheme every packed linear of the graph shares. */
typedef struct hfq_scheme {
    mopt_dtype dtype; /* MOPT_DTYPE_QINT, W8A8 or FP8 */
    int32_t bits, group_size;
    uint32_t flags;
    int act_order;     /* QINT with g_idx */
    int64_t n_packed;  /* packed linears */
    char first[MOPT_MAX_NAME];
} hfq_scheme;

/* Finds the packed linears' common scheme (n_packed = 0 for a float model) and
 * checks that `f` can hold it. */
mopt_status hfq_scheme_of(const mopt_host_api *h, mopt_graph *g, hf_format f, hfq_scheme *s, mopt_error *err);

/* Adds the tensors of packed linear t (named PREFIX.weight) in layout f. perm
 * (NULL: identity) reorders output rows: new row r is old row perm[r]. */
mopt_status hfq_add_linear(const mopt_host_api *h, st_list *l, const mopt_tensor *t, hf_format f, const int64_t *perm,
                           mopt_error *err);

/* ModelOpt's / TensorRT-LLM's quant_algo for the scheme ("W4A16_AWQ", "FP8", ...), or NULL. */
const char *hfq_modelopt_algo(const hfq_scheme *s);
/* Signed int4 levels of a symmetric 4-bit QINT tensor, two output rows per byte
 * (low nibble = even row): uint8 [out/2, in] (ModelOpt pack_int4_in_uint8). */
uint8_t *hfq_pack_int4_rows(const mopt_host_api *h, const mopt_tensor *t, const int64_t *perm);
/* hf_quant_config.json (ModelOpt's own record of the scheme). */
json_t *hfq_modelopt_file(const mopt_host_api *h, mopt_graph *g, const hfq_scheme *s);

/* config.json's quantization_config for the scheme; float linears (other than
 * lm_head) are listed in the format's ignore list. */
json_t *hfq_config(const mopt_host_api *h, mopt_graph *g, hf_format f, const hfq_scheme *s);

#endif
