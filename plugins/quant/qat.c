/* quant.qat: quantization-aware training, and with teacher= quantization-aware
 * distillation (QAD). The decoder linears train through fake quantization on
 * the RTN grid of the format (scales and zero-points recomputed from the
 * current weights each step, so training starts where RTN is), with the
 * straight-through estimator for the rounding; the loop is distillation's
 * (plugins/distill/kd_train.c). At the end the trained fp32 weights are packed
 * by the same RTN rule into QINT, so the kernels run exactly what was trained
 * and every exporter writes it. */
#include <stdlib.h>
#include <string.h>

#include "kd_train.h"
#include "passes.h"
#include "qcommon.h"

typedef struct {
    const mopt_host_api *h;
    qspec sp;
    mopt_graph *g;
    const qlinear *ls;
    int32_t n;
    int32_t *param; /* per linear: its trainer parameter */
    float **trained;  /* per linear: the final fp32 weights */
} qat;

static void fake_quant(void *user, int32_t param, const float *w, float *out, int64_t rows, int64_t cols) {
    (void)param;
    const qat *q = user;
    memcpy(out, w, (size_t)(rows * cols) * sizeof *out);
    q_fake_quant(q->h, out, rows, cols, q->sp);
}

static mopt_status prepare(void *user, mopt_trainer *tr, mopt_error *err) {
    qat *q = user;
    const mopt_host_api *h = q->h;
    for (int32_t k = 0; k < q->n; k++) {
        q->param[k] = -1;
        for (int32_t i = 0; i < h->trainer_n_params(tr) && q->param[k] < 0; i++)
            if (!strcmp(h->trainer_param_tensor(tr, i)->name, q->ls[k].wname)) q->param[k] = i;
        if (q->param[k] < 0) return h->error_set(err, MOPT_E_INVALID, "quant.qat", "%s is not a trained parameter", q->ls[k].wname);
        mopt_status st = h->trainer_set_transform(tr, q->param[k], fake_quant, q, err);
        if (st) return st;
    }
    return MOPT_OK;
}

/* Keeps the trained fp32 weights of the linears (written back they would pass through the checkpoint's dtype). */
static mopt_status finish(void *user, mopt_trainer *tr, mopt_error *err) {
    qat *q = user;
    for (int32_t k = 0; k < q->n; k++) {
        const size_t n = (size_t)(q->ls[k].out * q->ls[k].in);
        if (!(q->trained[k] = malloc(n * sizeof(float)))) return q->h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
        memcpy(q->trained[k], q->h->trainer_param(tr, q->param[k]), n * sizeof(float));
    }
    return MOPT_OK;
}

static mopt_status pack(qat *q, mopt_error *err) {
    mopt_status st = MOPT_OK;
    for (int32_t k = 0; k < q->n && !st; k++) st = q_rtn_install(q->h, q->g, &q->ls[k], q->sp, q->trained[k], "quant.qat", err);
    return st;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    qat q = {h, q_spec_from(h, o), g, NULL, 0, NULL, NULL};
    mopt_status st = q_check_spec(h, "quant.qat", q.sp, err);
    if (st) return st;
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.qat", "needs a model");
    qlinear *ls;
    if ((st = q_collect(h, g, o, &ls, &q.n, err))) return st;
    q.ls = ls;
    for (int32_t k = 0; k < q.n && !st; k++) {
        const mopt_tensor *t = h->graph_find_tensor(g, ls[k].wname);
        if (t && t->dtype >= MOPT_DTYPE_PACKED_FIRST)
            st = h->error_set(err, MOPT_E_INVALID, "quant.qat", "%s is already quantized: QAT starts from the float model", ls[k].wname);
    }
    int64_t before = 0, after = 0, weights = 0;
    q_measure(h, g, ls, q.n, &before, &weights);
    q.param = calloc((size_t)(q.n ? q.n : 1), sizeof *q.param);
    q.trained = calloc((size_t)(q.n ? q.n : 1), sizeof *q.trained);
    if (!st && (!q.param || !q.trained)) st = h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
    const kd_hooks hooks = {prepare, finish, &q};
    const char *teacher = h->opt_is_set(o, "teacher") ? h->opt_string(o, "teacher") : NULL;
    if (!st) st = kd_train(h, ctx, g, o, report, "quant.qat", teacher, &hooks, err);
    if (!st) st = pack(&q, err);
    if (!st) {
        q_measure(h, g, ls, q.n, &after, &weights);
        q_report(h, report, teacher ? "qad" : "qat", q.sp, before, after, weights, q.n);
    }
    for (int32_t k = 0; q.trained && k < q.n; k++) free(q.trained[k]);
    free(q.trained);
    free(q.param);
    free(ls);
    return st;
}

static const mopt_opt_spec opts[] = {
    Q_INT_OPTS("4", "128"),
    {"teacher", MOPT_OPT_MODEL, 0, "QAD: distill from this model (usually the unquantized one) instead of the text alone", NULL, 0, -1, NULL},
    KD_TRAIN_OPTS("200000", "0.00005"),
};

const mopt_pass_desc quant_qat_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_TRANSFORM,
    .name = "quant.qat",
    .summary = "quantization-aware training through RTN fake quantization (STE); with teacher= QAD; packed at the end",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
    .check = q_check_int_options,
};
