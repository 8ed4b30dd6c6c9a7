/* prune.minitron's parts: activation importance on calibration data, the
 * choice of what to keep, and slicing every tensor into a smaller graph. */
#ifndef MOPT_MINITRON_H
#define MOPT_MINITRON_H

#include "calib.h"

/* A model shape: hidden size, FFN size, attention heads, query groups (KV
 * heads), decoder blocks. head_dim never changes. */
typedef struct mt_shape {
    int32_t dim, ffn, heads, kv, layers;
} mt_shape;

/* Importance from the dense model (Minitron's best setting: mean of |activation|
 * over a window's tokens, then L2 over the windows). */
typedef struct mt_importance {
    mt_shape of;     /* the dense model's shape */
    double *channel; /* [dim]: every norm layer's output, summed per window */
    double *neuron;  /* [layers][ffn]: the activation entering the down projection */
    double *head;    /* [layers][heads]: L2 norm of each head's output before the output projection */
    double *block;   /* [layers]: 1 - cos(block input, block output), mean over tokens */
} mt_importance;

/* What a pruned model keeps: original indices, ascending. Per-layer lists are
 * indexed by the original layer. */
typedef struct mt_keep {
    mt_shape shape;
    int32_t *layers;   /* [shape.layers] */
    int32_t *channels; /* [shape.dim] */
    int32_t *neurons;  /* [of.layers][shape.ffn] */
    int32_t *heads;    /* [of.layers][shape.heads] */
    int32_t *groups;   /* [of.layers][shape.kv] */
} mt_keep;

mt_shape mt_shape_of(const mopt_arch *a);

/* Runs the calibration windows through the dense model once and fills imp.
 * The calibration state is kept (its tokens rank candidates of params=). */
mopt_status mt_importance_run(calib *c, const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                              mt_importance *imp, mopt_error *err);
void mt_importance_free(mt_importance *imp);

/* The most important units for `target`: layers by block importance, then per
 * kept layer the FFN neurons, the query groups (sum of their heads) and within
 * each kept group its most important heads. */
mopt_status mt_select(const mopt_host_api *h, const mt_importance *imp, mt_shape target, mt_keep *k, mopt_error *err);
void mt_keep_free(mt_keep *k);

/* Parameters of g cut to `s` (counted from the graph's tensors, no data
 * touched); -1 with err set when g has a weight Minitron cannot slice. */
int64_t mt_count_params(const mopt_host_api *h, const mopt_graph *g, mt_shape s, mopt_error *err);
/* A new graph holding g's tensors sliced to k (in their dtypes) with the
 * architecture rewritten; g is unchanged. */
mopt_graph *mt_slice(const mopt_host_api *h, const mopt_graph *g, const mt_keep *k, mopt_error *err);

#endif
