/* distill.hidden: distillation of hidden states (in the manner of FitNets,
 * TinyBERT and Minitron) on top of distill.logits' loss: for each mapped pair
 * of blocks, the MSE or cosine distance between the student's residual stream
 * after block s and the teacher's after block t, through a learned linear
 * projection P [D_t, D_s] when the widths differ (AdamW on P, at the loop's
 * learning rate, once per optimizer step).
 *
 *   mse:    l = mean over T x D_t of (P h_s - h_t)^2
 *   cosine: l = mean over T of 1 - cos(P h_s, h_t)
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "distill_plugin.h"
#include "kd_train.h"

typedef struct {
    int32_t s, t;       /* student block, teacher block */
    int32_t ds, dt;     /* widths */
    float *P, *dP, *m, *v; /* [dt, ds]; NULL when the widths match (no projection) */
    float *y, *dy;      /* [T, dt]: P h_s and the loss's gradient there */
} pair;

typedef struct {
    const mopt_host_api *h;
    pair *pairs;
    int32_t n, cosine, batch, windows;
    double weight;
    int64_t adam_steps;
    double first, last; /* the hidden loss of the first and of the latest optimizer step (mean over its windows) */
    double acc;
} hidden;

static void hidden_free(hidden *hd) {
    for (int32_t i = 0; hd->pairs && i < hd->n; i++) {
        pair *p = &hd->pairs[i];
        free(p->P), free(p->dP), free(p->m), free(p->v), free(p->y), free(p->dy);
    }
    free(hd->pairs);
}

/* One pair's loss on the window; its gradient goes to dhs (and dP). */
static double pair_loss(const hidden *hd, pair *p, const float *hs, float *dhs, const float *ht, int32_t T) {
    const float *y = hs;
    if (p->P) { /* y = h_s P^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, p->dt, p->ds, 1.0f, hs, p->ds, p->P, p->ds, 0.0f, p->y, p->dt);
        y = p->y;
    }
    double loss = 0;
    const double w = hd->weight / hd->n;
    for (int32_t t = 0; t < T; t++) {
        const float *yt = y + (size_t)t * p->dt, *gt = ht + (size_t)t * p->dt;
        float *dyt = p->dy + (size_t)t * p->dt;
        if (!hd->cosine) {
            const double c = 2.0 * w / ((double)T * p->dt);
            for (int32_t i = 0; i < p->dt; i++) {
                const double r = (double)yt[i] - gt[i];
                loss += r * r / ((double)T * p->dt);
                dyt[i] = (float)(c * r);
            }
        } else {
            double yy = 0, gg = 0, yg = 0;
            for (int32_t i = 0; i < p->dt; i++) yy += (double)yt[i] * yt[i], gg += (double)gt[i] * gt[i], yg += (double)yt[i] * gt[i];
            const double ny = sqrt(yy) + 1e-12, ng = sqrt(gg) + 1e-12, cs = yg / (ny * ng);
            loss += (1.0 - cs) / T;
            for (int32_t i = 0; i < p->dt; i++) /* d(-cos)/dy = -(g / (|y||g|) - cos y / |y|^2) */
                dyt[i] = (float)(-w / T * (gt[i] / (ny * ng) - cs * yt[i] / (ny * ny)));
        }
    }
    if (p->P) { /* dh_s += dy P; dP += dy^T h_s */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, p->ds, p->dt, 1.0f, p->dy, p->dt, p->P, p->ds, 1.0f, dhs, p->ds);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p->dt, p->ds, T, 1.0f, p->dy, p->dt, hs, p->ds, 1.0f, p->dP, p->ds);
    } else {
        for (size_t k = 0; k < (size_t)T * p->dt; k++) dhs[k] += p->dy[k];
    }
    return loss;
}

/* AdamW (no decay) on the projections, once per optimizer step. */
static void update_projections(hidden *hd, float lr) {
    hd->adam_steps++;
    const double c1 = 1 - pow(0.9, (double)hd->adam_steps), c2 = 1 - pow(0.95, (double)hd->adam_steps);
    for (int32_t i = 0; i < hd->n; i++) {
        pair *p = &hd->pairs[i];
        for (int64_t k = 0; p->P && k < (int64_t)p->dt * p->ds; k++) {
            const float g = p->dP[k] / (float)hd->batch;
            p->m[k] = 0.9f * p->m[k] + 0.1f * g;
            p->v[k] = 0.95f * p->v[k] + 0.05f * g * g;
            p->P[k] -= lr * (float)((p->m[k] / c1) / (sqrt(p->v[k] / c2) + 1e-8));
            p->dP[k] = 0;
        }
    }
}

static mopt_status step(void *user, mopt_trainer *student, mopt_trainer *teacher, int32_t T, float lr, double *loss, mopt_error *err) {
    hidden *hd = user;
    const mopt_host_api *h = hd->h;
    double sum = 0;
    for (int32_t i = 0; i < hd->n; i++) {
        pair *p = &hd->pairs[i];
        float *dhs;
        const float *hs = h->trainer_block_output(student, p->s, NULL, &dhs), *ht = h->trainer_block_output(teacher, p->t, NULL, NULL);
        if (!hs || !ht) return h->error_set(err, MOPT_E_INVALID, "distill.hidden", "no block %d output", !hs ? p->s : p->t);
        sum += pair_loss(hd, p, hs, dhs, ht, T);
    }
    *loss = hd->weight * sum / hd->n;
    hd->acc += sum / hd->n / hd->batch;
    if (++hd->windows % hd->batch == 0) {
        update_projections(hd, lr);
        if (hd->windows == hd->batch) hd->first = hd->acc;
        hd->last = hd->acc;
        hd->acc = 0;
    }
    return MOPT_OK;
}

/* "s:t,s:t" (student:teacher blocks), or each student block mapped to the
 * teacher block at the same relative depth. */
static mopt_status map_layers(hidden *hd, const mopt_options *o, int32_t ls, int32_t lt, mopt_error *err) {
    const mopt_host_api *h = hd->h;
    const int32_t nl = h->opt_list_len(o, "layers");
    hd->n = nl ? nl : ls;
    if (!(hd->pairs = calloc((size_t)(hd->n ? hd->n : 1), sizeof *hd->pairs)))
        return h->error_set(err, MOPT_E_NOMEM, "distill.hidden", "out of memory");
    for (int32_t i = 0; i < hd->n; i++) {
        pair *p = &hd->pairs[i];
        if (!nl) {
            p->s = i;
            p->t = (int32_t)(((int64_t)(i + 1) * lt + ls / 2) / ls) - 1;
            continue;
        }
        const char *item = h->opt_list_item(o, "layers", i);
        char tail;
        if (sscanf(item, "%d:%d%c", &p->s, &p->t, &tail) != 2)
            return h->error_set(err, MOPT_E_INVALID, "distill.hidden", "layers=%s: expected student:teacher block pairs such as 0:1,1:3", item);
        if (p->s < 0 || p->s >= ls || p->t < 0 || p->t >= lt)
            return h->error_set(err, MOPT_E_INVALID, "distill.hidden", "layers pair %s: the student has blocks 0..%d, the teacher 0..%d",
                                item, ls - 1, lt - 1);
    }
    return MOPT_OK;
}

/* Allocates each pair's buffers; a projection starts Xavier-uniform (seeded). */
static mopt_status size_pairs(hidden *hd, int32_t ds, int32_t dt, int32_t T, uint64_t seed, mopt_error *err) {
    for (int32_t i = 0; i < hd->n; i++) {
        pair *p = &hd->pairs[i];
        p->ds = ds;
        p->dt = dt;
        p->y = malloc((size_t)T * dt * sizeof(float));
        p->dy = malloc((size_t)T * dt * sizeof(float));
        if (!p->y || !p->dy) return hd->h->error_set(err, MOPT_E_NOMEM, "distill.hidden", "out of memory");
        if (ds == dt) continue;
        const size_t n = (size_t)dt * ds;
        p->P = malloc(n * sizeof(float));
        p->dP = calloc(n, sizeof(float));
        p->m = calloc(n, sizeof(float));
        p->v = calloc(n, sizeof(float));
        if (!p->P || !p->dP || !p->m || !p->v) return hd->h->error_set(err, MOPT_E_NOMEM, "distill.hidden", "out of memory");
        const double a = sqrt(6.0 / (ds + dt));
        for (size_t k = 0; k < n; k++) p->P[k] = (float)(a * (2.0 * (double)(mopt_rand(&seed) >> 11) / 9007199254740992.0 - 1.0));
    }
    return MOPT_OK;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    if (!graph) return h->error_set(err, MOPT_E_INVALID, "distill.hidden", "needs a model");
    if (kd_refuse_packed(h, graph, "distill.hidden", err)) return (mopt_status)err->code;
    mopt_error e2 = {0};
    mopt_model *t = h->model_load(h->opt_string(o, "teacher"), NULL, &e2); /* its shape, before the loop loads it */
    if (!t) {
        if (err) *err = e2;
        return e2.code ? (mopt_status)e2.code : MOPT_E_IO;
    }
    const mopt_arch *sa = h->graph_arch(graph), *ta = h->graph_arch(h->model_graph(t));
    const int32_t ls = sa->n_layers, lt = ta->n_layers, ds = sa->dim, dt = ta->dim;
    h->model_free(t);
    hidden hd = {.h = h, .cosine = !strcmp(h->opt_string(o, "hidden_loss"), "cosine"), .batch = (int32_t)h->opt_int(o, "batch"),
                 .weight = h->opt_float(o, "hidden_weight")};
    mopt_status st = map_layers(&hd, o, ls, lt, err);
    if (!st) st = size_pairs(&hd, ds, dt, (int32_t)h->opt_int(o, "ctx"), (uint64_t)h->opt_int(o, "seed") * 2654435761u + 7, err);
    if (!st) {
        h->log(ctx, "distill.hidden: %d block pairs (%s%s)", hd.n, hd.cosine ? "cosine" : "mse",
               ds != dt ? ", learned projections" : "");
        const kd_hooks hooks = {NULL, NULL, step, &hd};
        st = kd_train(h, ctx, graph, o, report, "distill.hidden", h->opt_string(o, "teacher"), &hooks, err);
    }
    if (!st) {
        h->report_metric(report, "hidden_pairs", hd.n);
        h->report_metric(report, "hidden_loss_first_step", hd.first);
        h->report_metric(report, "hidden_loss_last_step", hd.last);
        h->report_string(report, "hidden_loss", hd.cosine ? "cosine" : "mse");
    }
    hidden_free(&hd);
    return st;
}

static const char *const loss_choices[] = {"cosine", "mse", NULL};

static const mopt_opt_spec opts[] = {
    {"teacher", MOPT_OPT_MODEL, MOPT_OPT_REQUIRED, "the teacher model (same tokenizer and vocabulary as the student)", NULL, 0, -1, NULL},
    {"layers", MOPT_OPT_LIST, 0, "student:teacher block pairs (default: every student block to the teacher's at the same depth)", "", 0, -1, NULL},
    {"hidden_loss", MOPT_OPT_ENUM, 0, "distance between hidden states", "cosine", 0, -1, loss_choices},
    {"hidden_weight", MOPT_OPT_FLOAT, 0, "weight of the hidden-state loss (mean over pairs), added to the logits' loss", "1", 0, 1e6, NULL},
    KD_TRAIN_OPTS("200000", "0.0003"),
};

MOPT_PASS_DEFINE(distill_hidden_pass, MOPT_PASS_TRANSFORM, "distill.hidden",
                 "distillation of hidden states (MSE or cosine per block pair, learned projection when widths differ) + the logits' loss",
                 opts, run);
