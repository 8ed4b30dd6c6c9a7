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
/* Activation recomputation (on != 0, before the first forward; it stays on):
 * only each block's output is kept; the backward runs each block's forward
 * again from it. Activation memory falls from every block's inner values and
 * attention probabilities to one block's, for one more forward's time. The
 * gradients are the same, bit for bit. */
MOPT_API mopt_status mopt_trainer_set_recompute(mopt_trainer *tr, int32_t on, mopt_error *err);
/* Bytes of activations, their gradients and saved state the trainer holds. */
MOPT_API int64_t mopt_trainer_activation_bytes(const mopt_trainer *tr);
/* Worker threads for the GEMMs and attention (n <= 0: every core, the default). */
MOPT_API mopt_status mopt_trainer_set_threads(mopt_trainer *tr, int32_t n, mopt_error *err);

/* A transform of a weight used in place of it in the forward and the backward
 * (fake quantization for QAT): out = f(w), both [rows, cols]. The gradient
 * still goes to w unchanged (the straight-through estimator). */
typedef void (*mopt_weight_fn)(void *user, int32_t param, const float *w, float *out, int64_t rows, int64_t cols);
/* Applies fn to parameter i from the next forward on (fn NULL: none). */
MOPT_API mopt_status mopt_trainer_set_transform(mopt_trainer *tr, int32_t i, mopt_weight_fn fn, void *user, mopt_error *err);

/* The gradient side of a transform (learned quantization scales, LSQ): after
 * each backward, dfw holds the gradient with respect to the transformed weight
 * and fn adds what it makes of it to dw (the weight's gradient) and to any
 * parameter of its own (mopt_trainer_grad_mut); without one, dw += dfw. fn
 * gets the user given to mopt_trainer_set_transform. */
typedef void (*mopt_weight_grad_fn)(void *user, int32_t param, const float *w, const float *dfw, float *dw, int64_t rows,
                                    int64_t cols);
MOPT_API mopt_status mopt_trainer_set_transform_grad(mopt_trainer *tr, int32_t i, mopt_weight_grad_fn fn, mopt_error *err);
/* A parameter of the caller's, outside the graph (quantization scales): n
 * values starting at init, trained, clipped, saved and resumed like the
 * graph's, never written back. Returns its index, or -1 with err set. */
MOPT_API int32_t mopt_trainer_add_param(mopt_trainer *tr, const char *name, int64_t n, const float *init, mopt_error *err);

/* Freezes parameter i (frozen != 0): no gradient is computed for it and no
 * update changes it; its gradient reads zero. */
MOPT_API mopt_status mopt_trainer_set_frozen(mopt_trainer *tr, int32_t i, int32_t frozen, mopt_error *err);

/* Sets every gradient to zero. */
MOPT_API void mopt_trainer_zero_grad(mopt_trainer *tr);
/* Forward and backward over one window of n tokens (2 <= n <= max_tokens):
 * *loss gets the mean cross-entropy and the gradients grow by its gradient
 * (they accumulate over calls until mopt_trainer_zero_grad). */
MOPT_API mopt_status mopt_trainer_step(mopt_trainer *tr, const int32_t *tokens, int32_t n, double *loss, mopt_error *err);

/* The same in two halves, for any loss on the logits (distillation): the
 * forward returns the logits [n, vocab] and zeroes the logits' gradient
 * buffer; the caller adds its loss's gradient there; the backward then
 * accumulates the weights' gradients. */
MOPT_API mopt_status mopt_trainer_forward(mopt_trainer *tr, const int32_t *tokens, int32_t n, const float **logits,
                                          mopt_error *err);
MOPT_API float *mopt_trainer_dlogits(mopt_trainer *tr);
MOPT_API mopt_status mopt_trainer_backward(mopt_trainer *tr, mopt_error *err);

/* The residual stream after decoder block `layer` in the last forward ([n,
 * *width] rows) and, in *grad, its gradient buffer: a loss on hidden states
 * (distillation) adds its gradient there between mopt_trainer_forward and
 * mopt_trainer_backward. NULL when the graph has no such block. */
MOPT_API const float *mopt_trainer_block_output(mopt_trainer *tr, int32_t layer, int32_t *width, float **grad);

/* Mean cross-entropy of tokens[1..n-1] predicted from logits rows 0..n-2 (the
 * perplexity protocol); with dlogits, adds weight times its gradient there. */
MOPT_API double mopt_cross_entropy(const float *logits, float *dlogits, const int32_t *tokens, int32_t n, int32_t vocab,
                                   double weight);

enum { MOPT_KL_FORWARD = 0, MOPT_KL_REVERSE = 1 };
/* Distillation: the mean over all n rows of tau^2 KL between the teacher's and
 * the student's distributions softened by tau, KL(teacher || student) (forward;
 * with top_k > 0 over the teacher's k likeliest tokens, renormalized) or
 * KL(student || teacher) (reverse). With dstudent, adds weight times its
 * gradient with respect to the student's logits. NaN when out of memory. */
MOPT_API double mopt_distill_kl(const float *student, const float *teacher, float *dstudent, int32_t n, int32_t vocab,
                                double tau, int32_t kind, int32_t top_k, double weight);

/* --- optimization ------------------------------------------------------------------ */

typedef struct mopt_adamw_opts {
    uint32_t struct_size;    /* sizeof(mopt_adamw_opts): the fields past it keep mopt_adamw_opts_default's values;
                                0 is refused */
    float beta1, beta2, eps; /* 0.9, 0.95, 1e-8 by mopt_adamw_opts_default */
    float weight_decay;      /* decoupled, on matrices only (not norms, biases) */
} mopt_adamw_opts;

MOPT_API void mopt_adamw_opts_default(mopt_adamw_opts *o);
/* Global L2 norm of all gradients. */
MOPT_API double mopt_trainer_grad_norm(const mopt_trainer *tr);
/* One AdamW update of every parameter at learning rate lr (bias-corrected
 * moments kept in the trainer; the first call allocates them), after scaling
 * the gradients by grad_scale (e.g. 1/micro-batches, or clipping). */
MOPT_API mopt_status mopt_trainer_adamw(mopt_trainer *tr, const mopt_adamw_opts *o, float lr, float grad_scale,
                                        mopt_error *err);
/* Linear warm-up over `warmup` steps, then cosine from lr down to lr_min at `total`. */
MOPT_API float mopt_lr_cosine(int64_t step, int64_t warmup, int64_t total, float lr, float lr_min);
/* Writes the parameters back into g (the graph the trainer was made from) as
 * new tensors of each weight's own float dtype (rounded to nearest even);
 * packed weights are refused. The trainer follows the new tensors. */
MOPT_API mopt_status mopt_trainer_write_back(mopt_trainer *tr, mopt_graph *g, mopt_error *err);

/* --- resumable state ------------------------------------------------------------- */

/* A vector a training loop keeps beside the trainer's state (best parameters
 * so far, loss curves, counters): n floats, or n int64_t with is_int. */
typedef struct mopt_train_extra {
    const char *name;
    int32_t is_int;
    void *data;
    int64_t n; /* save: values at data (< 0: none); load: the room at data, then the count in the file
                  (-1: absent; more than the room: not copied) */
} mopt_train_extra;

/* Saves every parameter, the AdamW moments and step count and the extras to
 * one safetensors file, written atomically (a save cut short by a signal or a
 * full disk leaves the previous file whole). */
MOPT_API mopt_status mopt_trainer_save(const mopt_trainer *tr, const char *path, const mopt_train_extra *x, int32_t nx,
                                       mopt_error *err);
/* Restores a state mopt_trainer_save wrote, into a trainer of the same model:
 * a file whose parameters differ in name, count or shape (another model) is
 * refused naming the difference, and nothing changes. */
MOPT_API mopt_status mopt_trainer_load(mopt_trainer *tr, const char *path, mopt_train_extra *x, int32_t nx, mopt_error *err);

/* The parameters: one per distinct weight or bias tensor of the graph (a tied
 * embedding is one parameter), in the order the nodes first use them. */
MOPT_API int32_t mopt_trainer_n_params(const mopt_trainer *tr);
/* The graph tensor a parameter mirrors (its name and shape); NULL for one of mopt_trainer_add_param. */
MOPT_API const mopt_tensor *mopt_trainer_param_tensor(const mopt_trainer *tr, int32_t i);
/* A parameter's name (its tensor's, or the one it was added under) and its number of values. */
MOPT_API const char *mopt_trainer_param_name(const mopt_trainer *tr, int32_t i);
MOPT_API int64_t mopt_trainer_param_size(const mopt_trainer *tr, int32_t i);
/* Its gradient, writable (a gradient transform adds to it). */
MOPT_API float *mopt_trainer_grad_mut(mopt_trainer *tr, int32_t i);
/* Its fp32 values (row-major as the tensor, writable) and its gradient; both
 * hold mopt_trainer_param_size floats. */
MOPT_API float *mopt_trainer_param(mopt_trainer *tr, int32_t i);
MOPT_API const float *mopt_trainer_grad(const mopt_trainer *tr, int32_t i);

MOPT_EXTERN_C_END

#endif
