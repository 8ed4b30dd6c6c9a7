/* One graph op's forward (keeping what its backward needs) and backward, over
 * fp32 rows [T, width]. The trainer owns every buffer; an op only reads and
 * writes the ones it is handed. */
#ifndef MOPT_TRAIN_BACKPROP_H
#define MOPT_TRAIN_BACKPROP_H

#include <stdint.h>

#include "mopt/error.h"
#include "mopt/graph.h"
#include "threadpool.h"

typedef struct train_op {
    mopt_pool *pool; /* GEMM row blocks and attention heads run on it */
    const mopt_node *node;
    int32_t T;               /* tokens in the window, at positions 0..T-1 */
    const int32_t *tokens;   /* embedding */
    const float *in[MOPT_MAX_NODE_INPUTS];
    int32_t in_w[MOPT_MAX_NODE_INPUTS]; /* row widths (strides) of the inputs */
    float *out;
    int32_t out_w;
    const float *w, *b;      /* fp32 master weight [rows, cols] and bias, or NULL */
    int64_t w_rows, w_cols, b_n;
    float *aux;              /* what the backward needs: train_aux_floats() floats */
    /* backward: gradients accumulate (+=); dw, db NULL: a frozen parameter (not computed) */
    const float *dout;
    float *din[MOPT_MAX_NODE_INPUTS];
    float *dw, *db;
} train_op;

/* Floats of saved state the op keeps for windows of up to max_T tokens. */
size_t train_aux_floats(const mopt_node *n, int32_t max_T);
/* Checks what the forward relies on (shapes, token ids, positions). */
mopt_status train_forward(train_op *o, mopt_error *err);
mopt_status train_backward(train_op *o, mopt_error *err);

#endif
