/* Quantized Hugging Face layouts written from mopt's packed tensors, bit for
 * bit (no requantization): AWQ GEMM, GPTQ v1 and compressed-tensors. */
#ifndef MOPT_HF_QUANT_H
#define MOPT_HF_QUANT_H

#include <jansson.h>

#include "st_writer.h"

typedef enum hf_format { HF_DENSE, HF_AWQ, HF_GPTQ, HF_CT } hf_format;

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

/* config.json's quantization_config for the scheme; float linears (other than
 * lm_head) are listed in the format's ignore list. */
json_t *hfq_config(const mopt_host_api *h, mopt_graph *g, hf_format f, const hfq_scheme *s);

#endif
