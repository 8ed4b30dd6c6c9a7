/* Gradients of a graph: fp32 master copies of every weight, a forward that
 * keeps what the backward needs, and a backward for every op, in the manner of
 * llm.c (forward/backward pairs over [T, width] rows).
 *
 * The loss is the perplexity protocol's on one window: the mean cross-entropy
 * of tokens[1..T-1], each predicted from the row before it (no BOS added). */
#ifndef MOPT_TRAIN_H
#define MOPT_TRAIN_H

#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/graph.h"

MOPT_EXTERN_C_BEGIN

typedef struct mopt_trainer mopt_trainer;

/* Copies g's weights into fp32 master parameters (packed weights are
 * dequantized) and sizes activations for windows of up to max_tokens. The
 * graph must outlive the trainer; its tensors are not changed. */
MOPT_API mopt_trainer *mopt_trainer_new(const mopt_graph *g, int32_t max_tokens, mopt_error *err);
MOPT_API void mopt_trainer_free(mopt_trainer *tr);

/* Sets every gradient to zero. */
MOPT_API void mopt_trainer_zero_grad(mopt_trainer *tr);
/* Forward and backward over one window of n tokens (2 <= n <= max_tokens):
 * *loss gets the mean cross-entropy and the gradients grow by its gradient
 * (they accumulate over calls until mopt_trainer_zero_grad). */
MOPT_API mopt_status mopt_trainer_step(mopt_trainer *tr, const int32_t *tokens, int32_t n, double *loss, mopt_error *err);

/* The parameters: one per distinct weight or bias tensor of the graph (a tied
 * embedding is one parameter), in the order the nodes first use them. */
MOPT_API int32_t mopt_trainer_n_params(const mopt_trainer *tr);
/* The graph tensor a parameter mirrors (its name and shape). */
MOPT_API const mopt_tensor *mopt_trainer_param_tensor(const mopt_trainer *tr, int32_t i);
/* Its fp32 values (row-major as the tensor, writable) and its gradient; both
 * hold mopt_tensor_nelements(param_tensor) floats. */
MOPT_API float *mopt_trainer_param(mopt_trainer *tr, int32_t i);
MOPT_API const float *mopt_trainer_grad(const mopt_trainer *tr, int32_t i);

MOPT_EXTERN_C_END

#endif
