/* prune.magnitude: zero the weights of smallest |W| (Han et al., 2015), over
 * the whole matrix for a target sparsity or within each group of M inputs of
 * a row for N:M (the baseline of the Wanda and SparseGPT papers, computed as
 * their code does). No calibration. */
#include <math.h>
#include <stdlib.h>

#include "prune_plugin.h"

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, "prune.magnitude", "needs a model");
    prune_spec sp;
    qlinear *ls;
    int32_t n;
    mopt_status st = prune_spec_from(h, o, &sp, err);
    if (st || (st = q_collect(h, g, o, &ls, &n, err))) return st;
    for (int32_t k = 0; k < n && !st; k++) st = prune_check_linear(h, g, &ls[k], sp, "prune.magnitude", err);
    prune_tally t = {calloc((size_t)(n > 0 ? n : 1), sizeof(double)), n, 0, 0};
    if (!st && !t.per_linear) st = h->error_set(err, MOPT_E_NOMEM, "prune.magnitude", "out of memory");
    for (int32_t k = 0; k < n && !st; k++) {
        const qlinear *l = &ls[k];
        float *W = q_weight_f32(h, g, l, err), *score = malloc((size_t)(l->out * l->in) * sizeof *score);
        uint8_t *mask = malloc((size_t)(l->out * l->in));
        if (!W || !score || !mask) st = h->error_set(err, MOPT_E_NOMEM, "prune.magnitude", "out of memory");
        for (int64_t i = 0; !st && i < l->out * l->in; i++) score[i] = fabsf(W[i]);
        if (!st) st = prune_mask(h, score, l->out, l->in, sp, 0, mask, err);
        for (int64_t i = 0; !st && i < l->out * l->in; i++)
            if (mask[i]) W[i] = 0;
        if (!st) st = prune_install(h, g, l, W, sp, err);
        if (!st) prune_count(&t, k, W, l->out * l->in);
        h->progress(ctx, k + 1, n);
        free(W), free(score), free(mask);
    }
    if (!st) prune_report(h, report, "magnitude", o, &t);
    free(t.per_linear);
    free(ls);
    return st;
}

static const mopt_opt_spec opts[] = {PRUNE_OPTS};

const mopt_pass_desc prune_magnitude_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_TRANSFORM,
    .name = "prune.magnitude",
    .summary = "sparsity by smallest |W|: unstructured (per matrix) or N:M (2:4, 4:8)",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
    .check = prune_check,
};
