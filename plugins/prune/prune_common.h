/* What the sparsity passes share: the pattern (a target sparsity, or N:M =
 * at most N non-zeros in every M consecutive inputs of a row), masks chosen
 * from a score, writing the pruned weights back in their dtype, and the
 * report. */
#ifndef MOPT_PRUNE_COMMON_H
#define MOPT_PRUNE_COMMON_H

#include "calib.h"
#include "qcommon.h"

typedef struct prune_spec {
    double sparsity; /* unstructured: the fraction set to zero */
    int32_t n, m;    /* N:M; m = 0: unstructured */
    int32_t pack;    /* 2:4 stored packed (MOPT_DTYPE_SP24) */
    int32_t vbits;   /* with pack: 8 = int8 kept values, a scale per row, int8 activations per token (W8A8); 4 = int4
                        kept values, an f16 scale per PRUNE_I4_GROUP inputs, float activations (W4A16, Marlin-24); 0 = float */
} prune_spec;

#define PRUNE_I4_GROUP 128 /* Marlin-24's group of inputs */

#define PRUNE_OPTS                                                                                                           \
    {"sparsity", MOPT_OPT_FLOAT, 0, "unstructured: the fraction of each linear's weights set to zero, in (0, 1)", "0.5", 0, 1, NULL}, \
    {"pattern", MOPT_OPT_STRING, 0, "unstructured, or N:M: at most N non-zeros in every M consecutive inputs of a row (2:4, 4:8)",      \
     "unstructured", 0, -1, NULL},                                                                                          \
    {"exclude", MOPT_OPT_LIST, 0, "globs of linears to keep dense (node or tensor names)", "", 0, -1, NULL},                    \
    {"pack", MOPT_OPT_BOOL, 0, "2:4 only: store the pruned linears packed (kept values + 2-bit positions) for the sparse kernels", \
     "false", 0, -1, NULL},                                                                                                 \
    {"values", MOPT_OPT_STRING, 0,                                                                                          \
     "with pack: the kept values' type, float (the weight's dtype), int8 (a scale per row and int8 activations per token: "  \
     "the W8A8 2:4 scheme vLLM runs) or int4 (symmetric, a scale per 128 inputs: vLLM's W4A16 Marlin-24)", "float", 0, -1, NULL}

/* Reads and checks sparsity= and pattern= (the passes' check, at pipeline time). */
mopt_status prune_spec_from(const mopt_host_api *h, const mopt_options *o, prune_spec *sp, mopt_error *err);
mopt_status prune_check(const mopt_host_api *h, const mopt_options *o, mopt_error *err);
/* Refuses a linear the pattern cannot tile, or a packed one. */
mopt_status prune_check_linear(const mopt_host_api *h, mopt_graph *g, const qlinear *l, prune_spec sp, const char *pass, mopt_error *err);

/* mask[out, in] (1: set to zero) from score[out, in] (lower: pruned first).
 * per_row: the floor(in x sparsity) lowest of each row (Wanda); else the
 * floor(n x sparsity) + 1 lowest of the whole matrix (magnitude, SparseGPT's
 * blocks: the reference's "<= k-th smallest" without its ties). N:M always
 * picks the M - N lowest of each group of M in a row. */
mopt_status prune_mask(const mopt_host_api *h, const float *score, int64_t out, int64_t in, prune_spec sp, int per_row, uint8_t *mask, mopt_error *err);

/* Writes W (fp32, already masked or updated) back into the graph in the
 * weight's own dtype, or with sp.pack as 2:4 storage of kept values in that
 * dtype (sp.vbits 8: rounded to int8 per row, q_int8_rows; 4: to symmetric
 * int4 per group of PRUNE_I4_GROUP inputs, q_grid). */
mopt_status prune_install(const mopt_host_api *h, mopt_graph *g, const qlinear *l, const float *W, prune_spec sp, mopt_error *err);

/* Report: sparsity per linear (a series), its min, max and mean, zeros in all, the method and pattern. */
typedef struct prune_tally {
    double *per_linear;
    int32_t n;
    int64_t zeros, weights;
} prune_tally;
void prune_count(prune_tally *t, int32_t k, const float *W, int64_t n);
void prune_report(const mopt_host_api *h, mopt_report *r, const char *method, const mopt_options *o, const prune_tally *t);

/* The calibrated passes' sweep, as the Wanda and SparseGPT code runs it:
 * layer by layer on calibration windows that went through the layers already
 * pruned; within a layer, every linear's statistics from one run of the
 * layer, then each linear pruned, then the layer run again for the next one's
 * input. */
typedef struct prune_layer_ops {
    /* statistics for the layer's k linears (mine[0..k-1]) from now on; s: the calibration's session, whose threads
     * the observer may share its work with */
    mopt_status (*begin)(void *user, const qlinear *const *mine, int32_t k, mopt_session *s, mopt_error *err);
    calib_obs observe;
    /* prunes linear i of the layer: W [out, in] in place; *installed = 1 when it
     * put the result into the graph itself (packed), else W is written back */
    mopt_status (*prune)(void *user, int32_t i, float *W, int *installed, mopt_error *err);
    void (*end)(void *user);
    void *user;
} prune_layer_ops;
mopt_status prune_by_layer(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, const qlinear *ls,
                           int32_t n, prune_spec sp, prune_tally *t, const prune_layer_ops *ops, mopt_error *err);
/* A calibrated pass from start to report: reads the pattern into *sp (which
 * ops' user sees), selects and checks the linears, sweeps, reports. */
mopt_status prune_run_calibrated(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                                 const char *method, prune_spec *sp, const prune_layer_ops *ops, mopt_error *err);

#endif
