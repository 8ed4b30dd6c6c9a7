/* The trainer's state, shared by its files (trainer.c: forward/backward,
 * optim.c: updates and writing back). */
#ifndef MOPT_TRAINER_IMPL_H
#define MOPT_TRAINER_IMPL_H

#include "mopt/train.h"
#include "threadpool.h"

typedef struct {
    const mopt_tensor *t; /* the graph tensor it mirrors; NULL: a parameter of the caller's (mopt_trainer_add_param) */
    char name[MOPT_MAX_NAME];
    int64_t n, rows, cols;
    float *w, *g;
    mopt_weight_fn fn; /* with fn, the ops read fw = fn(w) */
    void *fn_user;
    float *fw;
    mopt_weight_grad_fn gfn; /* with gfn, the ops' gradient goes to gfw and gfn turns it into g's */
    float *gfw;
    int frozen; /* no gradient computed, no update */
} param;

struct mopt_trainer {
    const mopt_graph *g;
    int32_t max_T, n_params, cap_params, n_values, n_nodes;
    param *params;
    int32_t *wparam, *bparam; /* per node: parameter index or -1 */
    float **act, **dact;      /* per value: [max_T, width] */
    float **aux;              /* per node: train_aux_floats() */
    /* activation recomputation: block L > 0's inner values and saved state
     * share block 0's buffers, and the backward runs each block's forward again */
    int recompute;
    uint8_t *shared_act, *shared_aux; /* per value / node: the buffer is block 0's, not its own */
    int32_t n_blocks, *blk_first, *blk_last; /* node range of each block */
    int32_t T;                /* tokens of the forward whose activations are kept; 0: none */
    int32_t *tokens;          /* [max_T] */
    float **m, **v;           /* AdamW moments per parameter (allocated by the first update) */
    int64_t adam_steps;
    mopt_pool *pool;
};

#endif
