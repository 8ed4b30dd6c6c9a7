/* The backend interface the executor drives. The executor owns the graph
 * walk, buffers and KV caches; a backend runs one node at a time. A CUDA
 * backend implements the same interface over device buffers. */
#ifndef MOPT_BACKEND_IMPL_H
#define MOPT_BACKEND_IMPL_H

#include <stdint.h>

#include "mopt/error.h"
#include "mopt/graph.h"

/* Everything one node needs for a forward over T tokens. Activations are
 * row-major [T, width] fp32. */
typedef struct mopt_op_args {
    const mopt_node *node;
    int32_t T;             /* tokens in this call */
    int32_t pos;           /* position of the first token */
    const int32_t *tokens; /* [T] (embedding) */
    const float *in[MOPT_MAX_NODE_INPUTS];
    int32_t in_width[MOPT_MAX_NODE_INPUTS];
    float *out;
    int32_t out_width;
    void *k_cache, *v_cache;  /* attention: [max_ctx, n_kv_heads * head_dim] floats, or bytes as kv says */
    mopt_kv_quant kv;         /* attention: the cache's format and scales */
    int32_t row0, rows;       /* lm_head: input rows to compute; out is [rows, vocab] */
    /* attention over several sequences in one call (a batched forward): each
     * entry is a whole attention call for one sequence's rows, with its own
     * cache and position; the fields above are then unused. n_seqs 0: one sequence. */
    const struct mopt_op_args *seqs;
    int32_t n_seqs;
    /* linears that read the same input (q, k and v; gate and up), each entry a
     * whole linear call, in one call so that the backend can spread all their
     * rows over its threads at once; the fields above are then unused. 0: one linear. */
    const struct mopt_op_args *group;
    int32_t n_group;
} mopt_op_args;

#define MOPT_MAX_LINEAR_GROUP 4 /* linears of one mopt_op_args group */

typedef struct mopt_backend_i {
    const char *name;
    /* prepares per-session state for n_threads and a graph on GPU `device` (the CPU backend ignores it) */
    mopt_status (*init)(void **ctx, const mopt_graph *g, int32_t n_threads, int32_t max_ctx, int32_t device, mopt_error *err);
    void (*free)(void *ctx);
    mopt_status (*forward)(void *ctx, const mopt_op_args *a, mopt_error *err);
    int32_t (*n_threads)(const void *ctx);
    /* (optional) fn(user, task, thread) for tasks [0, n_tasks) on the backend's host threads */
    void (*parallel_for)(void *ctx, int64_t n_tasks, void (*fn)(void *user, int64_t task, int32_t thread), void *user);
} mopt_backend_i;

extern const mopt_backend_i mopt_backend_cpu;
/* The linears on a GPU through libmopt-cuda, loaded at run time; everything else on the CPU backend. */
extern const mopt_backend_i mopt_backend_cuda;

struct mopt_kernels;
/* y[T, out] = x[T, in] @ w^T + b with the CPU backend's linear kernels on a
 * throwaway context, using kernel set k (NULL: the dispatched one). For tests. */
mopt_status mopt_cpu_linear_once(int32_t n_threads, const struct mopt_kernels *k, const mopt_tensor *w,
                                 const mopt_tensor *b, const float *x, int32_t T, float *y, mopt_error *err);

#endif
