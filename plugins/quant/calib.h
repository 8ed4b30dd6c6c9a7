/* Calibration: N windows of L tokens from a text file (seeded), run through
 * the model one decoder layer at a time. Only the current layer's input is
 * held ([N, L, dim]), never all layers' activations. */
#ifndef MOPT_CALIB_H
#define MOPT_CALIB_H

#include "qcommon.h"

typedef struct calib {
    const mopt_host_api *h;
    mopt_pass_ctx *ctx;
    mopt_graph *g;
    mopt_session *s;
    int32_t N, L, D, n_layers;
    int32_t *tokens;      /* [N, L] */
    float *x;             /* [N, L, D]: input of the current layer */
    float *x_next;        /* [N, L, D]: its output, when asked for */
    int32_t *first, *last; /* per layer: node range [first, last) */
    int32_t *in_value, *out_value;
    int64_t done, total;  /* progress */
    int32_t kept_layer;   /* the layer whose output x_next holds, or -1 */
    /* resuming a layer where the last observed input was (calib_keep_live) */
    float *live;          /* [N, L, live_w]: each window's values live at cut */
    int64_t live_w;       /* floats per token a window's slot holds (0: nothing kept) */
    int32_t cut, cut_layer; /* the node the slots are live at, and its layer; -1: none */
} calib;

/* Options every calibrating pass declares. */
#define Q_CALIB_OPTS(required)                                                                                     \
    {"calib", MOPT_OPT_DATASET, (required) ? MOPT_OPT_REQUIRED : 0, "calibration text (never the eval text)", NULL, 0, -1, NULL}, \
    {"calib_samples", MOPT_OPT_INT, 0, "calibration windows", "128", 1, 4096, NULL},                           \
    {"calib_len", MOPT_OPT_INT, 0, "tokens per calibration window", "512", 2, 1 << 16, NULL},                 \
    {"seed", MOPT_OPT_INT, 0, "seed for choosing the windows", "0", 0, 2147483647, NULL}

/* Tokenizes the calibration file and draws calib_samples windows of calib_len
 * tokens (seeded): *tokens [N, L], malloc'd. Fails before any work when the
 * file holds fewer tokens than one window. */
mopt_status calib_windows(const mopt_host_api *h, mopt_pass_ctx *ctx, const mopt_graph *g, const mopt_options *o, int32_t **tokens,
                          int32_t *N, int32_t *L, mopt_error *err);
/* Tokenizes the file, draws the windows and computes layer 0's input.
 * Fails before any work when the file holds fewer tokens than one window. */
mopt_status calib_init(calib *c, const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       int64_t progress_total, mopt_error *err);
/* The same with only the first max_windows of the windows drawn (the same windows a draw of that many gives): a pass
 * that reads fewer windows than calib_samples does not run the rest through the model. */
mopt_status calib_init_first(calib *c, const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                             int64_t progress_total, int32_t max_windows, mopt_error *err);
void calib_free(calib *c);

/* Observer called for node `node` of sample `sample`; inputs/outputs are [T, width]. */
typedef void (*calib_obs)(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w,
                          const float *out, int32_t out_w, int32_t T);

/* Runs layer l's nodes up to and including node `upto` (-1: the whole layer)
 * on every sample, with the observer. With keep_output the layer's output is
 * stored in x_next (only when the whole layer ran). */
mopt_status calib_run_layer(calib *c, int32_t l, int32_t upto, calib_obs obs, void *user, int keep_output,
                            mopt_error *err);
/* Runs layer l's nodes before linear node `node` on every sample and hands the
 * observer the node's input (the node itself does not run; out is NULL). With
 * calib_keep_live it starts where the previous call in this layer stopped,
 * from the values it kept, and keeps those live at `node` in turn. */
mopt_status calib_observe_input(calib *c, int32_t l, int32_t node, calib_obs obs, void *user, mopt_error *err);
/* Lets calib_observe_input and calib_run_layer (without an observer) resume a
 * layer at the node the last calib_observe_input stopped before, from each
 * window's values live there, instead of running the layer again from its
 * start: up to max_bytes for all windows (a cut whose values need more is not
 * kept). The caller promises not to change the weights of nodes before a cut
 * until calib_advance (GPTQ's groups, quantized in order, keep it). Results are
 * bit for bit those of the runs from the start; without the memory for them,
 * it says so in the log and keeps nothing. */
void calib_keep_live(calib *c, int64_t max_bytes);
/* Makes x_next the next layer's input and lets the finished layer's mapped
 * weight pages go. */
void calib_advance(calib *c);
/* Counts one unit of progress (the host draws the bar). */
void calib_tick(calib *c);

/* Runs the calibration windows through the whole model once, layer by layer, handing every node's inputs to
 * obs; *n_samples and *len (when given) receive the windows' count and length. */
mopt_status calib_observe_model(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, calib_obs obs,
                                void *user, int32_t *n_samples, int32_t *len, mopt_error *err);
/* Runs the calibration windows through the whole model once and raises
 * amax[i] to the largest |input| linear ls[i] sees (static activation scales). */
mopt_status calib_input_amax(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, const qlinear *ls,
                             int32_t n, float *amax, mopt_error *err);
/* activations=fp8_static, once ls are packed as QINT: each weight's E4M3 scale (global_scale) from max|w| of the
 * linears sharing its input / 448 (a fused GEMM holds one), then, with the weights so widened, each input's
 * calibrated max / 448 (act_scale): ModelOpt's W4A8_AWQ (mopt/quant.h, MOPT_QUANT_W_FP8). */
mopt_status calib_w4a8_static(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, const qlinear *ls,
                              int32_t n, mopt_error *err);

#endif
