/* prune.wanda: Wanda (Sun et al., 2023): score |W_ij| x ||X_j||_2, the L2 norm
 * of input feature j over every calibration token, compared within each
 * output row (unstructured) or each group of M inputs of a row (N:M); no
 * weight update. Layer by layer on inputs that went through the pruned layers
 * before (prune_by_layer). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "prune_plugin.h"

typedef struct {
    const mopt_host_api *h;
    prune_spec sp;
    const qlinear *const *mine;
    int32_t k;
    double *sq[32]; /* per linear of the layer: sum over tokens of x_j^2 */
} wanda;

static mopt_status begin(void *user, const qlinear *const *mine, int32_t k, mopt_session *s, mopt_error *err) {
    (void)s;
    wanda *w = user;
    w->mine = mine;
    w->k = k;
    for (int32_t i = 0; i < k; i++)
        if (!(w->sq[i] = calloc((size_t)mine[i]->in, sizeof(double)))) return w->h->error_set(err, MOPT_E_NOMEM, "prune.wanda", "out of memory");
    return MOPT_OK;
}

static void observe(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                    int32_t out_w, int32_t T) {
    (void)sample, (void)out, (void)out_w;
    wanda *w = user;
    for (int32_t i = 0; i < w->k; i++) {
        if (w->mine[i]->node != node) continue;
        for (int32_t t = 0; t < T; t++)
            for (int64_t j = 0; j < w->mine[i]->in; j++) {
                const double x = in[0][(size_t)t * in_w[0] + j];
                w->sq[i][j] += x * x;
            }
    }
}

static mopt_status prune(void *user, int32_t i, float *W, int *installed, mopt_error *err) {
    (void)installed;
    wanda *w = user;
    const qlinear *l = w->mine[i];
    float *score = malloc((size_t)(l->out * l->in) * sizeof *score);
    uint8_t *mask = malloc((size_t)(l->out * l->in));
    mopt_status st = score && mask ? MOPT_OK : w->h->error_set(err, MOPT_E_NOMEM, "prune.wanda", "out of memory");
    for (int64_t r = 0; !st && r < l->out; r++)
        for (int64_t j = 0; j < l->in; j++) score[r * l->in + j] = (float)(fabs((double)W[r * l->in + j]) * sqrt(w->sq[i][j]));
    if (!st) st = prune_mask(w->h, score, l->out, l->in, w->sp, 1, mask, err);
    for (int64_t q = 0; !st && q < l->out * l->in; q++)
        if (mask[q]) W[q] = 0;
    free(score);
    free(mask);
    return st;
}

static void end(void *user) {
    wanda *w = user;
    for (int32_t i = 0; i < w->k; i++) free(w->sq[i]), w->sq[i] = NULL;
    w->k = 0;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    wanda w = {.h = h};
    const prune_layer_ops ops = {begin, observe, prune, end, &w};
    return prune_run_calibrated(h, ctx, g, o, report, "wanda", &w.sp, &ops, err);
}

static const mopt_opt_spec opts[] = {PRUNE_OPTS, Q_CALIB_OPTS(1)};

const mopt_pass_desc prune_wanda_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_TRANSFORM,
    .name = "prune.wanda",
    .summary = "Wanda: sparsity by |W| x ||X_j|| per output row (or N:M), calibrated, no weight update",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
    .check = prune_check,
};
