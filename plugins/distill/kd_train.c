/* The training loop the distillation and QAT passes share: windows of the
 * training text at seeded random offsets; per window alpha x cross-entropy +
 * (1 - alpha) x tau^2 x KL to the teacher (when there is one); AdamW with
 * warm-up + cosine, `batch` windows accumulated per step, clipping by global
 * norm; periodic validation keeping the best parameters (the student as it
 * came included); the weights written back in place. */
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_util.h"
#include "kd_run.h"
#include "kd_train.h"

const char *const kd_kl_choices[] = {"forward", "reverse", NULL};

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


static void kd_free(const mopt_host_api *h, kd_run *k) {
    for (int32_t i = 0; k->best && i < k->n_best; i++) free(k->best[i]);
    free(k->best);
    h->trainer_free(k->tr);
    h->trainer_free(k->ttr);
    h->session_free(k->ts);
    h->model_free(k->teacher);
    free(k->train);
    free(k->val);
    free(k->tlogits);
    for (int64_t w = 0; k->cache && w < k->n_cached_windows; w++) free(k->cache[w]);
    free(k->cache);
    free(k->curve);
    free(k->vcurve);
    free(k->vstep);
}

int kd_keep_best(const mopt_host_api *h, kd_run *k, int restore) {
    const int32_t np = h->trainer_n_params(k->tr);
    if (!k->best) {
        if (!(k->best = calloc((size_t)np, sizeof *k->best))) return 0;
        k->n_best = np;
    }
    for (int32_t i = 0; i < np; i++) {
        const int64_t n = h->trainer_param_size(k->tr, i);
        if (!k->best[i] && !(k->best[i] = malloc((size_t)n * sizeof(float)))) return 0;
        if (restore) memcpy(h->trainer_param(k->tr, i), k->best[i], (size_t)n * sizeof(float));
        else memcpy(k->best[i], h->trainer_param(k->tr, i), (size_t)n * sizeof(float));
    }
    return 1;
}

/* Freezes the parameters that match a glob of freeze=, or (with train=) every
 * one that matches none of train='s; a glob that matches nothing is an error. */
static mopt_status freeze(const mopt_host_api *h, mopt_trainer *tr, const mopt_options *o, const char *pass, mopt_error *err) {
    static const char *const keys[2] = {"freeze", "train"};
    const int32_t np = h->trainer_n_params(tr);
    int32_t trainable = np;
    for (int key = 0; key < 2; key++) {
        const int32_t ng = h->opt_list_len(o, keys[key]);
        if (ng == 0) continue;
        for (int32_t g = 0; g < ng; g++) {
            int hit = 0;
            for (int32_t i = 0; i < np; i++) hit |= !fnmatch(h->opt_list_item(o, keys[key], g), h->trainer_param_name(tr, i), 0);
            if (!hit)
                return h->error_set(err, MOPT_E_INVALID, pass, "%s=%s matches no parameter (names look like %s)", keys[key],
                                    h->opt_list_item(o, keys[key], g), h->trainer_param_name(tr, np > 1 ? 1 : 0));
        }
        for (int32_t i = 0; i < np; i++) {
            int hit = 0;
            for (int32_t g = 0; g < ng; g++) hit |= !fnmatch(h->opt_list_item(o, keys[key], g), h->trainer_param_name(tr, i), 0);
            if (hit == (key == 0)) {
                mopt_status st = h->trainer_set_frozen(tr, i, 1, err);
                if (st) return st;
                trainable--;
            }
        }
    }
    return trainable > 0 ? MOPT_OK : h->error_set(err, MOPT_E_INVALID, pass, "freeze= and train= leave no parameter to train");
}

/* Saves the state when checkpoint= is set (a note in the log says where). */
static mopt_status checkpoint(const mopt_host_api *h, mopt_pass_ctx *ctx, const kd_run *k, const mopt_options *o, mopt_error *err) {
    if (!h->opt_is_set(o, "checkpoint")) return MOPT_OK;
    mopt_status st = kd_save(h, k, h->opt_string(o, "checkpoint"), err);
    if (!st) h->log(ctx, "state after step %lld saved to %s", (long long)k->step, h->opt_string(o, "checkpoint"));
    return st;
}

mopt_status kd_train(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o, mopt_report *report,
                     const char *pass, const char *teacher, const kd_hooks *hooks, mopt_error *err) {
    mopt_model *student = h->ctx_model(ctx);
    if (!student || !graph) return h->error_set(err, MOPT_E_INVALID, pass, "needs a model");
    kd_run k = {0};
    k.ctx = (int32_t)h->opt_int(o, "ctx");
    k.batch = (int32_t)h->opt_int(o, "batch");
    const int32_t ctxlen = k.ctx, batch = k.batch;
    const int64_t budget = h->opt_int(o, "tokens"), eval_every = h->opt_int(o, "eval_every"), save_every = h->opt_int(o, "checkpoint_every");
    const kd_loss L = {h->opt_float(o, "temp"), teacher ? h->opt_float(o, "alpha") : 1.0, strcmp(h->opt_string(o, "kl"), "reverse") ? MOPT_KL_FORWARD : MOPT_KL_REVERSE,
                       (int)h->opt_int(o, "topk")};
    const float lr = (float)h->opt_float(o, "lr"), lr_min = (float)(lr * h->opt_float(o, "lr_min_ratio")), clip = (float)h->opt_float(o, "clip");
    const int64_t steps = k.steps = budget / ((int64_t)ctxlen * batch), warmup = h->opt_int(o, "warmup");
    k.seed = (uint64_t)h->opt_int(o, "seed") * 0x9E3779B97F4A7C15ull + 1;
    const int32_t V = h->graph_arch(graph)->vocab_size;
    if (ctxlen > h->graph_arch(graph)->max_ctx)
        return h->error_set(err, MOPT_E_INVALID, pass, "ctx %d exceeds the student's context of %d", ctxlen,
                            h->graph_arch(graph)->max_ctx);
    if (steps < 1)
        return h->error_set(err, MOPT_E_INVALID, pass, "tokens=%lld is less than one step (batch %d x ctx %d)",
                            (long long)budget, batch, ctxlen);
    mopt_status st = MOPT_OK;
    if (teacher && !(k.teacher = h->model_load(teacher, NULL, err))) return err && err->code ? (mopt_status)err->code : MOPT_E_IO;
    if (k.teacher) st = eval_same_tokenizer(h, k.teacher, student, pass, err);
    if (!st && k.teacher && h->graph_arch(h->model_graph(k.teacher))->vocab_size != V)
        st = h->error_set(err, MOPT_E_INVALID, pass, "the teacher's vocabulary has %d entries, the student's %d",
                          h->graph_arch(h->model_graph(k.teacher))->vocab_size, V);
    if (!st && k.teacher && ctxlen > h->graph_arch(h->model_graph(k.teacher))->max_ctx)
        st = h->error_set(err, MOPT_E_INVALID, pass, "ctx %d exceeds the teacher's context", ctxlen);
    if (!st) st = eval_tokens(h, student, h->opt_string(o, "data"), 0, &k.train, &k.n_train, err);
    if (!st && k.n_train < (size_t)ctxlen)
        st = h->error_set(err, MOPT_E_INVALID, pass, "%s has %zu tokens, fewer than one window of %d",
                          h->opt_string(o, "data"), k.n_train, ctxlen);
    const int has_val = h->opt_is_set(o, "eval");
    if (!st && has_val) st = eval_tokens(h, student, h->opt_string(o, "eval"), h->opt_int(o, "eval_tokens"), &k.val, &k.n_val, err);
    const int64_t n_valw = has_val ? (int64_t)k.n_val / ctxlen : 0;
    if (!st && has_val && n_valw == 0)
        st = h->error_set(err, MOPT_E_INVALID, pass, "%s has %zu tokens, fewer than one window of %d",
                          h->opt_string(o, "eval"), k.n_val, ctxlen);
    const int teacher_trains = hooks && hooks->step; /* its activations are needed, not only its logits */
    if (!st && teacher_trains && !k.teacher) st = h->error_set(err, MOPT_E_INVALID, pass, "needs a teacher");
    if (!st && teacher_trains && h->opt_is_set(o, "resume"))
        st = h->error_set(err, MOPT_E_UNSUPPORTED, pass, "resume= does not restore this pass's own state (learned projections); start anew");
    if (!st && teacher_trains) {
        if ((k.ttr = h->trainer_new(h->model_graph(k.teacher), ctxlen, err))) st = h->trainer_set_threads(k.ttr, h->ctx_n_threads(ctx), err);
        else st = err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    }
    if (!st) {
        k.ts = k.teacher && !teacher_trains ? eval_session(h, ctx, h->model_graph(k.teacher), ctxlen, err) : NULL;
        k.tr = k.ts || k.ttr || !k.teacher ? h->trainer_new(graph, ctxlen, err) : NULL;
        if (!k.tr) st = err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
        else st = h->trainer_set_threads(k.tr, h->ctx_n_threads(ctx), err);
        if (!st && h->opt_bool(o, "recompute")) st = h->trainer_set_recompute(k.tr, 1, err);
        if (!st && hooks && hooks->prepare) st = hooks->prepare(hooks->user, k.tr, err);
        if (!st) st = freeze(h, k.tr, o, pass, err);
    }
    const int64_t cache_mib = h->opt_int(o, "teacher_cache");
    if (!st && cache_mib > 0 && (!k.teacher || teacher_trains))
        st = h->error_set(err, MOPT_E_INVALID, pass, "teacher_cache= keeps a teacher's logits: %s", k.teacher ? "this pass needs its activations" : "there is no teacher");
    if (!st && cache_mib > 0) {
        k.n_cached_windows = (int64_t)k.n_train / ctxlen;
        const double need = (double)k.n_cached_windows * ctxlen * V * sizeof(float) / 1048576.0;
        if (need > (double)cache_mib)
            st = h->error_set(err, MOPT_E_INVALID, pass, "teacher_cache=%lld MiB: the %lld windows of %s need %.0f MiB (raise it, or use less data)",
                              (long long)cache_mib, (long long)k.n_cached_windows, h->opt_string(o, "data"), ceil(need));
        else if (!(k.cache = calloc((size_t)k.n_cached_windows, sizeof *k.cache)))
            st = h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    }
    k.vcap = steps / (eval_every > 0 ? eval_every : steps) + 3;
    if (!st) {
        k.tlogits = malloc((size_t)ctxlen * V * sizeof *k.tlogits);
        k.curve = malloc((size_t)steps * sizeof *k.curve);
        k.vcurve = malloc((size_t)k.vcap * sizeof *k.vcurve);
        k.vstep = malloc((size_t)k.vcap * sizeof *k.vstep);
        if (!k.tlogits || !k.curve || !k.vcurve || !k.vstep)
            st = h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    }
    mopt_adamw_opts ao;
    h->adamw_opts_default(&ao);
    ao.weight_decay = (float)h->opt_float(o, "weight_decay");
    k.best_val = INFINITY;
    const double t0 = h->now();
    if (!st && h->opt_is_set(o, "resume")) {
        st = kd_resume(h, &k, h->opt_string(o, "resume"), pass, err);
        if (!st)
            h->log(ctx, "%s: resumed from %s at step %lld of %lld", pass, h->opt_string(o, "resume"), (long long)k.step, (long long)steps);
    } else if (!st && has_val) {
        st = val_loss(h, k.tr, k.val, n_valw, ctxlen, V, &k.vcurve[0], err);
        k.vstep[k.nv++] = 0;
        k.best_val = k.vcurve[0]; /* training has to beat the student as it came */
        if (!st && !kd_keep_best(h, &k, 0)) st = h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
        h->log(ctx, "%s: %lld steps of %d x %d tokens; validation loss %.4f before", pass, (long long)steps, batch, ctxlen,
               k.vcurve[0]);
    }
    if (!st && has_val && k.nv > 0) h->report_metric(report, "val_loss_before", k.vcurve[0]);
    const int64_t first = k.step;
    /* the state as training starts: a checkpoint path that cannot take it fails now, not after the run */
    if (!st) st = checkpoint(h, ctx, &k, o, err);
    while (k.step < steps && !st) {
        const int64_t s = k.step;
        uint64_t rng = k.seed; /* k.seed moves on only with a complete step, so a saved state redraws its windows */
        if (h->interrupted()) {
            st = h->error_set(err, MOPT_E_INTERRUPTED, pass, "interrupted at step %lld of %lld", (long long)s, (long long)steps);
            break;
        }
        h->trainer_zero_grad(k.tr);
        double step_loss = 0;
        for (int32_t b = 0; b < batch && !st; b++) {
            const int64_t cw = k.cache ? (int64_t)(mopt_rand(&rng) % (uint64_t)k.n_cached_windows) : -1;
            const int32_t *win = k.cache ? k.train + cw * ctxlen : k.train + (int64_t)(mopt_rand(&rng) % (uint64_t)(k.n_train - (size_t)ctxlen + 1));
            const float *tl, *sl;
            if (k.cache && k.cache[cw]) {
                memcpy(k.tlogits, k.cache[cw], (size_t)ctxlen * V * sizeof *k.tlogits);
            } else if (k.teacher) {
                if (k.ts && ((st = h->session_truncate(k.ts, 0, err)) || (st = h->session_forward(k.ts, win, ctxlen, 1, &tl, err)))) break;
                if (k.ttr && (st = h->trainer_forward(k.ttr, win, ctxlen, &tl, err))) break;
                memcpy(k.tlogits, tl, (size_t)ctxlen * V * sizeof *k.tlogits);
                k.teacher_forwards++;
                if (k.cache && (k.cache[cw] = malloc((size_t)ctxlen * V * sizeof(float))))
                    memcpy(k.cache[cw], tl, (size_t)ctxlen * V * sizeof(float));
                else if (k.cache) st = h->error_set(err, MOPT_E_NOMEM, pass, "out of memory for the teacher cache");
                if (st) break;
            }
            if ((st = h->trainer_forward(k.tr, win, ctxlen, &sl, err))) break;
            float *ds = h->trainer_dlogits(k.tr);
            double l = L.alpha > 0 ? L.alpha * h->cross_entropy(sl, ds, win, ctxlen, V, L.alpha) : 0;
            if (k.teacher && L.alpha < 1) l += (1 - L.alpha) * h->distill_kl(sl, k.tlogits, ds, ctxlen, V, L.tau, L.kl, L.topk, 1 - L.alpha);
            double extra = 0;
            if (k.ttr && (st = hooks->step(hooks->user, k.tr, k.ttr, ctxlen, h->lr_cosine(s, warmup, steps, lr, lr_min), &extra, err))) break;
            l += extra;
            if (!isfinite(l)) st = h->error_set(err, MOPT_E_RUNTIME, pass, "the loss is not finite at step %lld", (long long)s);
            if (!st) st = h->trainer_backward(k.tr, err);
            step_loss += l / batch;
        }
        if (st) break;
        const double norm = h->trainer_grad_norm(k.tr) / batch;
        const float scale = (float)(1.0 / batch) * (clip > 0 && norm > clip ? (float)(clip / norm) : 1.0f);
        st = h->trainer_adamw(k.tr, &ao, h->lr_cosine(s, warmup, steps, lr, lr_min), scale, err);
        if (st) break;
        k.curve[s] = step_loss;
        k.seed = rng;
        k.step = s + 1; /* complete: an interrupted validation below costs only its point of the curve */
        h->progress(ctx, s + 1, steps);
        const int eval_now = has_val && ((eval_every > 0 && (s + 1) % eval_every == 0) || s + 1 == steps);
        if (!st && eval_now && k.nv < k.vcap) {
            st = val_loss(h, k.tr, k.val, n_valw, ctxlen, V, &k.vcurve[k.nv], err);
            if (!st) {
                k.vstep[k.nv] = (double)(s + 1);
                if (k.vcurve[k.nv] < k.best_val) {
                    k.best_val = k.vcurve[k.nv];
                    if (!kd_keep_best(h, &k, 0)) st = h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
                }
                h->log(ctx, "%s: step %lld/%lld train loss %.4f, validation loss %.4f (%.0f tokens/s)", pass, (long long)(s + 1),
                       (long long)steps, step_loss, k.vcurve[k.nv], (double)(s + 1 - first) * batch * ctxlen / (h->now() - t0));
                k.nv++;
            }
        }
        if (!st && save_every > 0 && (s + 1) % save_every == 0 && s + 1 < steps) st = checkpoint(h, ctx, &k, o, err);
    }
    /* an interrupted run saves where it stands: the steps before k.step are complete */
    if (st == MOPT_E_INTERRUPTED && k.tr && h->opt_is_set(o, "checkpoint")) {
        mopt_error e2 = {0};
        if (kd_save(h, &k, h->opt_string(o, "checkpoint"), &e2) == MOPT_OK)
            h->error_set(err, MOPT_E_INTERRUPTED, pass, "interrupted at step %lld of %lld; resume with resume=%s", (long long)k.step,
                         (long long)steps, h->opt_string(o, "checkpoint"));
    }
    if (!st) st = checkpoint(h, ctx, &k, o, err); /* the final state, before the best parameters come back */
    if (!st && has_val && k.best) kd_keep_best(h, &k, 1); /* the best validation loss wins */
    if (!st && hooks && hooks->finish) st = hooks->finish(hooks->user, k.tr, err);
    if (!st) st = h->trainer_write_back(k.tr, graph, err);
    if (!st) {
        const double secs = h->now() - t0;
        h->report_series(report, "train_loss", k.curve, steps);
        if (has_val) {
            h->report_series(report, "val_loss", k.vcurve, k.nv);
            h->report_series(report, "val_step", k.vstep, k.nv);
            h->report_metric(report, "val_loss_best", k.best_val);
        }
        h->report_metric(report, "steps", (double)steps);
        h->report_metric(report, "activation_bytes", (double)h->trainer_activation_bytes(k.tr));
        h->report_metric(report, "tokens_trained", (double)steps * batch * ctxlen);
        h->report_metric(report, "seconds", secs);
        h->report_metric(report, "tokens_per_second", (double)(steps - first) * batch * ctxlen / secs);
        if (first > 0) h->report_metric(report, "resumed_at_step", (double)first);
        if (teacher) h->report_string(report, "teacher", teacher);
        if (teacher) h->report_metric(report, "teacher_forwards", (double)k.teacher_forwards);
    }
    kd_free(h, &k);
    return st;
}

mopt_status kd_refuse_packed(const mopt_host_api *h, const mopt_graph *g, const char *pass, mopt_error *err) {
    for (int32_t i = 0; g && i < h->graph_n_tensors(g); i++) {
        const mopt_tensor *t = h->graph_tensor(g, i);
        if (t->dtype >= MOPT_DTYPE_PACKED_FIRST)
            return h->error_set(err, MOPT_E_INVALID, pass, "%s is packed; distill the float model (quantize or pack 2:4 afterwards, or use quant.qat)",
                                t->name);
    }
    return MOPT_OK;
}
