/* The training loop of distill.logits and quant.qat (compiled into both plugins). */
#ifndef MOPT_KD_TRAIN_H
#define MOPT_KD_TRAIN_H

#include "mopt/plugin_util.h"

/* Called once the trainer exists, before the first step (QAT installs its fake quantization). */
typedef mopt_status (*kd_prepare_fn)(void *user, mopt_trainer *tr, mopt_error *err);
/* Hooks of a pass that trains with the loop: prepare runs before the first
 * step, finish after the last (the best parameters restored), before the
 * weights are written back; either may be NULL. */
typedef struct kd_hooks {
    kd_prepare_fn prepare, finish;
    /* With step, the teacher runs as a trainer (forward only, its activations
     * kept) and step adds a loss on both models' activations of the window
     * after the student's forward: its value to *loss, its gradient into the
     * student's buffers (mopt_trainer_block_output), before the backward.
     * resume= is refused: step's own state is not saved. */
    mopt_status (*step)(void *user, mopt_trainer *student, mopt_trainer *teacher, int32_t n, float lr, double *loss, mopt_error *err);
    void *user;
} kd_hooks;

/* Trains the pass's graph on the options of KD_TRAIN_OPTS; teacher NULL: the
 * hard-label loss alone. */
mopt_status kd_train(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o, mopt_report *report,
                     const char *pass, const char *teacher, const kd_hooks *hooks, mopt_error *err);

/* Refuses a student with packed (quantized or 2:4) weights before any work:
 * distillation trains and writes back float weights (QAT trains packed ones itself). */
mopt_status kd_refuse_packed(const mopt_host_api *h, const mopt_graph *g, const char *pass, mopt_error *err);

extern const char *const kd_kl_choices[];

/* The loop's options (a pass adds its own, such as teacher). */
#define KD_TRAIN_OPTS(TOKENS, LR)                                                                                                   \
    {"data", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "training text (tokenized once; windows drawn at seeded random offsets)", NULL, 0, -1, NULL}, \
    {"eval", MOPT_OPT_DATASET, 0, "validation text: loss every eval_every steps, the best parameters kept", NULL, 0, -1, NULL},            \
    {"tokens", MOPT_OPT_INT, 0, "training tokens in all (steps = tokens / (batch x ctx))", TOKENS, 1, 1e13, NULL},                       \
    {"ctx", MOPT_OPT_INT, 0, "window length", "256", 2, 1 << 20, NULL},                                                                  \
    {"batch", MOPT_OPT_INT, 0, "windows per optimizer step (gradients accumulated)", "4", 1, 4096, NULL},                                \
    {"lr", MOPT_OPT_FLOAT, 0, "peak learning rate (AdamW)", LR, 1e-12, 10, NULL},                                                       \
    {"lr_min_ratio", MOPT_OPT_FLOAT, 0, "final learning rate as a fraction of lr (cosine)", "0.1", 0, 1, NULL},                          \
    {"warmup", MOPT_OPT_INT, 0, "linear warm-up steps", "10", 0, 1e9, NULL},                                                             \
    {"weight_decay", MOPT_OPT_FLOAT, 0, "decoupled weight decay on matrices", "0", 0, 10, NULL},                                         \
    {"clip", MOPT_OPT_FLOAT, 0, "clip the global gradient norm to this (0: off)", "1", 0, 1e9, NULL},                                    \
    {"temp", MOPT_OPT_FLOAT, 0, "softening temperature tau (the KL term is scaled by tau^2)", "1", 0.01, 100, NULL},                     \
    {"alpha", MOPT_OPT_FLOAT, 0, "weight of the hard-label cross-entropy; 1 - alpha goes to the KL term", "0.5", 0, 1, NULL},           \
    {"kl", MOPT_OPT_ENUM, 0, "forward: KL(teacher || student); reverse: KL(student || teacher)", "forward", 0, -1, kd_kl_choices},      \
    {"topk", MOPT_OPT_INT, 0, "forward KL on the teacher's top-k tokens renormalized (0: all)", "0", 0, 1 << 20, NULL},                  \
    {"eval_every", MOPT_OPT_INT, 0, "steps between validations (0: only at the end)", "50", 0, 1e9, NULL},                               \
    {"eval_tokens", MOPT_OPT_INT, 0, "validate on the first N tokens of eval (0: all)", "16384", 0, 1e13, NULL},                         \
    {"seed", MOPT_OPT_INT, 0, "seed of the window sampler", "1", 0, 2147483647, NULL},                                                   \
    {"recompute", MOPT_OPT_BOOL, 0, "keep only each block's output and run its forward again in the backward (less memory, ~1/3 more time)", "false", 0, -1, NULL}, \
    {"teacher_cache", MOPT_OPT_INT, 0, "MiB for the teacher's logits of a small dataset: windows at multiples of ctx, each computed once (0: off)", "0", 0, 1 << 30, NULL}, \
    {"freeze", MOPT_OPT_LIST, 0, "globs of parameters to keep fixed (e.g. *norm*)", "", 0, -1, NULL},                                   \
    {"train", MOPT_OPT_LIST, 0, "globs of the only parameters to train (the rest fixed)", "", 0, -1, NULL},                            \
    {"checkpoint", MOPT_OPT_STRING, 0, "file of the resumable state (parameters, AdamW moments, curves), saved atomically", NULL, 0, -1, NULL}, \
    {"checkpoint_every", MOPT_OPT_INT, 0, "steps between saves of checkpoint= (0: only at the end and on interrupt)", "50", 0, 1e9, NULL}, \
    {"resume", MOPT_OPT_STRING, 0, "continue the run saved in this file (same model, tokens, ctx and batch)", NULL, 0, -1, NULL}

#endif
