/* distill.logits: knowledge distillation (Hinton et al., 2015). The pipeline's
 * model is the student; the teacher runs alongside on the same windows. Loss
 * per window: alpha * CE(labels) + (1 - alpha) * tau^2 * KL on distributions
 * softened by tau (forward KL(teacher || student), reverse, or the teacher's
 * top-k renormalized). AdamW with warm-up + cosine, gradient accumulation over
 * `batch` windows, clipping by global norm, periodic validation keeping the
 * best parameters, then the student's weights are written back in place. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "distill_plugin.h"
#include "eval_util.h"

typedef struct {
    double tau, alpha;
    int kl, topk;
} kd_loss;

/* Mean CE of the student on held-out windows (no gradients kept). */
static mopt_status val_loss(const mopt_host_api *h, mopt_trainer *tr, const int32_t *ids, int64_t nw, int32_t ctx, int32_t V,
                            double *out, mopt_error *err) {
    double sum = 0;
    for (int64_t w = 0; w < nw; w++) {
        const float *logits;
        mopt_status st = h->trainer_forward(tr, ids + w * ctx, ctx, &logits, err);
        if (st) return st;
        sum += h->cross_entropy(logits, NULL, ids + w * ctx, ctx, V, 1.0);
    }
    *out = sum / (double)nw;
    return MOPT_OK;
}

typedef struct {
    int32_t *train, *val;
    size_t n_train, n_val;
    mopt_model *teacher;
    mopt_session *ts;
    mopt_trainer *tr;
    float *tlogits, **best;
    int32_t n_best;
    double *curve, *vcurve, *vstep;
} kd_run;

static void kd_free(const mopt_host_api *h, kd_run *k) {
    for (int32_t i = 0; k->best && i < k->n_best; i++) free(k->best[i]);
    free(k->best);
    h->trainer_free(k->tr);
    h->session_free(k->ts);
    h->model_free(k->teacher);
    free(k->train);
    free(k->val);
    free(k->tlogits);
    free(k->curve);
    free(k->vcurve);
    free(k->vstep);
}

/* Copies the trainer's parameters into (or out of) the best-so-far buffers. */
static int keep_best(const mopt_host_api *h, kd_run *k, int restore) {
    const int32_t np = h->trainer_n_params(k->tr);
    if (!k->best) {
        if (!(k->best = calloc((size_t)np, sizeof *k->best))) return 0;
        k->n_best = np;
    }
    for (int32_t i = 0; i < np; i++) {
        const int64_t n = h->tensor_nelements(h->trainer_param_tensor(k->tr, i));
        if (!k->best[i] && !(k->best[i] = malloc((size_t)n * sizeof(float)))) return 0;
        if (restore) memcpy(h->trainer_param(k->tr, i), k->best[i], (size_t)n * sizeof(float));
        else memcpy(k->best[i], h->trainer_param(k->tr, i), (size_t)n * sizeof(float));
    }
    return 1;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    mopt_model *student = h->ctx_model(ctx);
    if (!student || !graph) return h->error_set(err, MOPT_E_INVALID, "distill.logits", "needs a model (the student)");
    const int32_t ctxlen = (int32_t)h->opt_int(o, "ctx"), batch = (int32_t)h->opt_int(o, "batch");
    const int64_t budget = h->opt_int(o, "tokens"), eval_every = h->opt_int(o, "eval_every");
    const kd_loss L = {h->opt_float(o, "temp"), h->opt_float(o, "alpha"), strcmp(h->opt_string(o, "kl"), "reverse") ? MOPT_KL_FORWARD : MOPT_KL_REVERSE,
                       (int)h->opt_int(o, "topk")};
    const float lr = (float)h->opt_float(o, "lr"), lr_min = (float)(lr * h->opt_float(o, "lr_min_ratio")), clip = (float)h->opt_float(o, "clip");
    const int64_t steps = budget / ((int64_t)ctxlen * batch), warmup = h->opt_int(o, "warmup");
    uint64_t seed = (uint64_t)h->opt_int(o, "seed") * 0x9E3779B97F4A7C15ull + 1;
    const int32_t V = h->graph_arch(graph)->vocab_size;
    if (ctxlen > h->graph_arch(graph)->max_ctx)
        return h->error_set(err, MOPT_E_INVALID, "distill.logits", "ctx %d exceeds the student's context of %d", ctxlen,
                            h->graph_arch(graph)->max_ctx);
    if (steps < 1)
        return h->error_set(err, MOPT_E_INVALID, "distill.logits", "tokens=%lld is less than one step (batch %d x ctx %d)",
                            (long long)budget, batch, ctxlen);
    kd_run k = {0};
    mopt_status st = MOPT_OK;
    if (!(k.teacher = h->model_load(h->opt_string(o, "teacher"), NULL, err))) return err && err->code ? (mopt_status)err->code : MOPT_E_IO;
    st = eval_same_tokenizer(h, k.teacher, student, "distill.logits", err);
    if (!st && h->graph_arch(h->model_graph(k.teacher))->vocab_size != V)
        st = h->error_set(err, MOPT_E_INVALID, "distill.logits", "the teacher's vocabulary has %d entries, the student's %d",
                          h->graph_arch(h->model_graph(k.teacher))->vocab_size, V);
    if (!st && ctxlen > h->graph_arch(h->model_graph(k.teacher))->max_ctx)
        st = h->error_set(err, MOPT_E_INVALID, "distill.logits", "ctx %d exceeds the teacher's context", ctxlen);
    if (!st) st = eval_tokens(h, student, h->opt_string(o, "data"), 0, &k.train, &k.n_train, err);
    if (!st && k.n_train < (size_t)ctxlen)
        st = h->error_set(err, MOPT_E_INVALID, "distill.logits", "%s has %zu tokens, fewer than one window of %d",
                          h->opt_string(o, "data"), k.n_train, ctxlen);
    const int has_val = h->opt_is_set(o, "eval");
    if (!st && has_val) st = eval_tokens(h, student, h->opt_string(o, "eval"), h->opt_int(o, "eval_tokens"), &k.val, &k.n_val, err);
    const int64_t n_valw = has_val ? (int64_t)k.n_val / ctxlen : 0;
    if (!st && has_val && n_valw == 0)
        st = h->error_set(err, MOPT_E_INVALID, "distill.logits", "%s has %zu tokens, fewer than one window of %d",
                          h->opt_string(o, "eval"), k.n_val, ctxlen);
    if (!st) {
        k.ts = eval_session(h, ctx, h->model_graph(k.teacher), ctxlen, err);
        k.tr = k.ts ? h->trainer_new(graph, ctxlen, err) : NULL;
        if (!k.tr) st = err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
        else st = h->trainer_set_threads(k.tr, h->ctx_n_threads(ctx), err);
    }
    const int64_t n_evals = has_val ? steps / (eval_every > 0 ? eval_every : steps) + 2 : 0;
    if (!st) {
        k.tlogits = malloc((size_t)ctxlen * V * sizeof *k.tlogits);
        k.curve = malloc((size_t)steps * sizeof *k.curve);
        k.vcurve = malloc((size_t)(n_evals + 1) * sizeof *k.vcurve);
        k.vstep = malloc((size_t)(n_evals + 1) * sizeof *k.vstep);
        if (!k.tlogits || !k.curve || !k.vcurve || !k.vstep)
            st = h->error_set(err, MOPT_E_NOMEM, "distill.logits", "out of memory");
    }
    mopt_adamw_opts ao;
    h->adamw_opts_default(&ao);
    ao.weight_decay = (float)h->opt_float(o, "weight_decay");
    int64_t nv = 0;
    double best = INFINITY, t0 = h->now();
    if (!st && has_val) {
        st = val_loss(h, k.tr, k.val, n_valw, ctxlen, V, &k.vcurve[0], err);
        k.vstep[nv++] = 0;
        best = k.vcurve[0]; /* training has to beat the student as it came */
        if (!st && !keep_best(h, &k, 0)) st = h->error_set(err, MOPT_E_NOMEM, "distill.logits", "out of memory");
        h->report_metric(report, "val_loss_before", k.vcurve[0]);
        h->log(ctx, "distill.logits: %lld steps of %d x %d tokens; validation loss %.4f before", (long long)steps, batch, ctxlen,
               k.vcurve[0]);
    }
    int64_t s = 0;
    for (; s < steps && !st; s++) {
        if (h->interrupted()) {
            st = h->error_set(err, MOPT_E_INTERRUPTED, "distill.logits", "interrupted at step %lld of %lld", (long long)s, (long long)steps);
            break;
        }
        h->trainer_zero_grad(k.tr);
        double step_loss = 0;
        for (int32_t b = 0; b < batch && !st; b++) {
            const int32_t *win = k.train + (int64_t)(mopt_rand(&seed) % (uint64_t)(k.n_train - (size_t)ctxlen + 1));
            const float *tl, *sl;
            if ((st = h->session_truncate(k.ts, 0, err)) || (st = h->session_forward(k.ts, win, ctxlen, 1, &tl, err))) break;
            memcpy(k.tlogits, tl, (size_t)ctxlen * V * sizeof *k.tlogits);
            if ((st = h->trainer_forward(k.tr, win, ctxlen, &sl, err))) break;
            float *ds = h->trainer_dlogits(k.tr);
            double l = L.alpha > 0 ? L.alpha * h->cross_entropy(sl, ds, win, ctxlen, V, L.alpha) : 0;
            if (L.alpha < 1) l += (1 - L.alpha) * h->distill_kl(sl, k.tlogits, ds, ctxlen, V, L.tau, L.kl, L.topk, 1 - L.alpha);
            if (!isfinite(l)) st = h->error_set(err, MOPT_E_RUNTIME, "distill.logits", "the loss is not finite at step %lld", (long long)s);
            if (!st) st = h->trainer_backward(k.tr, err);
            step_loss += l / batch;
        }
        if (st) break;
        const double norm = h->trainer_grad_norm(k.tr) / batch;
        const float scale = (float)(1.0 / batch) * (clip > 0 && norm > clip ? (float)(clip / norm) : 1.0f);
        st = h->trainer_adamw(k.tr, &ao, h->lr_cosine(s, warmup, steps, lr, lr_min), scale, err);
        k.curve[s] = step_loss;
        h->progress(ctx, s + 1, steps);
        const int eval_now = has_val && ((eval_every > 0 && (s + 1) % eval_every == 0) || s + 1 == steps);
        if (!st && eval_now) {
            st = val_loss(h, k.tr, k.val, n_valw, ctxlen, V, &k.vcurve[nv], err);
            if (!st) {
                k.vstep[nv] = (double)(s + 1);
                if (k.vcurve[nv] < best) {
                    best = k.vcurve[nv];
                    if (!keep_best(h, &k, 0)) st = h->error_set(err, MOPT_E_NOMEM, "distill.logits", "out of memory");
                }
                h->log(ctx, "distill.logits: step %lld/%lld train loss %.4f, validation loss %.4f (%.0f tokens/s)", (long long)(s + 1),
                       (long long)steps, step_loss, k.vcurve[nv], (double)(s + 1) * batch * ctxlen / (h->now() - t0));
                nv++;
            }
        }
    }
    if (!st && has_val && k.best) keep_best(h, &k, 1); /* the best validation loss wins */
    if (!st) st = h->trainer_write_back(k.tr, graph, err);
    if (!st) {
        const double secs = h->now() - t0;
        h->report_series(report, "train_loss", k.curve, steps);
        if (has_val) {
            h->report_series(report, "val_loss", k.vcurve, nv);
            h->report_series(report, "val_step", k.vstep, nv);
            h->report_metric(report, "val_loss_best", best);
        }
        h->report_metric(report, "steps", (double)steps);
        h->report_metric(report, "tokens_trained", (double)steps * batch * ctxlen);
        h->report_metric(report, "seconds", secs);
        h->report_metric(report, "tokens_per_second", (double)steps * batch * ctxlen / secs);
        h->report_string(report, "teacher", h->opt_string(o, "teacher"));
    }
    kd_free(h, &k);
    return st;
}

static const char *const kls[] = {"forward", "reverse", NULL};

static const mopt_opt_spec opts[] = {
    {"teacher", MOPT_OPT_MODEL, MOPT_OPT_REQUIRED, "the teacher model (same tokenizer and vocabulary as the student)", NULL, 0, -1, NULL},
    {"data", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "training text (tokenized once; windows drawn at seeded random offsets)", NULL, 0, -1, NULL},
    {"eval", MOPT_OPT_DATASET, 0, "validation text: loss every eval_every steps, the best parameters kept", NULL, 0, -1, NULL},
    {"tokens", MOPT_OPT_INT, 0, "training tokens in all (steps = tokens / (batch x ctx))", "200000", 1, 1e13, NULL},
    {"ctx", MOPT_OPT_INT, 0, "window length", "256", 2, 1 << 20, NULL},
    {"batch", MOPT_OPT_INT, 0, "windows per optimizer step (gradients accumulated)", "4", 1, 4096, NULL},
    {"lr", MOPT_OPT_FLOAT, 0, "peak learning rate (AdamW)", "0.0003", 1e-12, 10, NULL},
    {"lr_min_ratio", MOPT_OPT_FLOAT, 0, "final learning rate as a fraction of lr (cosine)", "0.1", 0, 1, NULL},
    {"warmup", MOPT_OPT_INT, 0, "linear warm-up steps", "10", 0, 1e9, NULL},
    {"weight_decay", MOPT_OPT_FLOAT, 0, "decoupled weight decay on matrices", "0", 0, 10, NULL},
    {"clip", MOPT_OPT_FLOAT, 0, "clip the global gradient norm to this (0: off)", "1", 0, 1e9, NULL},
    {"temp", MOPT_OPT_FLOAT, 0, "softening temperature tau (the KL term is scaled by tau^2)", "1", 0.01, 100, NULL},
    {"alpha", MOPT_OPT_FLOAT, 0, "weight of the hard-label cross-entropy; 1 - alpha goes to the KL term", "0.5", 0, 1, NULL},
    {"kl", MOPT_OPT_ENUM, 0, "forward: KL(teacher || student); reverse: KL(student || teacher)", "forward", 0, -1, kls},
    {"topk", MOPT_OPT_INT, 0, "forward KL on the teacher's top-k tokens renormalized (0: all)", "0", 0, 1 << 20, NULL},
    {"eval_every", MOPT_OPT_INT, 0, "steps between validations (0: only at the end)", "50", 0, 1e9, NULL},
    {"eval_tokens", MOPT_OPT_INT, 0, "validate on the first N tokens of eval (0: all)", "16384", 0, 1e13, NULL},
    {"seed", MOPT_OPT_INT, 0, "seed of the window sampler", "1", 0, 2147483647, NULL},
};

MOPT_PASS_DEFINE(distill_logits_pass, MOPT_PASS_TRANSFORM, "distill.logits",
                 "knowledge distillation from a teacher's logits: KL (forward, reverse, top-k) at temperature tau + hard CE, AdamW",
                 opts, run);
