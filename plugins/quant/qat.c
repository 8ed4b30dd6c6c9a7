/* quant.qat: quantization-aware training, and with teacher= quantization-aware
 * distillation (QAD). The decoder linears train through fake quantization,
 * with the straight-through estimator for the rounding, on one of two grids:
 * RTN's (scales and zero-points recomputed from the current weights each step,
 * so training starts where RTN is), or, when an earlier AWQ/GPTQ/RTN pass
 * packed them in this format, that pass's scales and zero-points kept fixed
 * (training starts exactly where it ended); with learn_scales the scales of
 * that grid (or of RTN's at the start) train too, by LSQ's gradient; with
 * dtype=fp8, E4M3 with per-row amax scales (weight-only). The loop is distillation's
 * (plugins/distill/kd_train.c). At the end the trained fp32 weights are packed
 * on the same grid into QINT, so the kernels run exactly what was trained and
 * every exporter writes it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_train.h"
#include "passes.h"
#include "qcommon.h"

/* A PTQ pass's grid of one linear: its group scales and zero-points, kept fixed. */
typedef struct {
    float *scale;  /* [out, groups] */
    uint8_t *zero; /* [out, groups] */
} grid;

typedef struct {
    const mopt_host_api *h;
    qspec sp;
    mopt_graph *g;
    const qlinear *ls;
    int32_t n;
    int32_t *param;  /* per linear: its trainer parameter */
    float **trained; /* per linear: the final fp32 weights */
    grid *grids;     /* per linear: the PTQ grid it started on (scale NULL: RTN's, recomputed) */
    int fp8;         /* dtype=fp8: E4M3 with per-row amax scales instead of the int grid */
    uint8_t *fp8_levels;
    float *fp8_scales;
    int learn;        /* learn_scales: the grids' scales are trainer parameters (LSQ) */
    int32_t *sparam;  /* per linear: its scales' parameter */
    mopt_trainer *tr;
} qat;

/* E4M3 rounding of W [rows, cols] with its current per-row scales, into out
 * (the buffers prepare sized for the largest linear). */
static void fake_fp8(const qat *q, const float *w, float *out, int64_t rows, int64_t cols) {
    q_fp8_rows(q->h, w, rows, cols, 0, 0, q->fp8_levels, q->fp8_scales);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) out[r * cols + c] = q->h->e4m3_to_f32(q->fp8_levels[r * cols + c]) * q->fp8_scales[r];
}

static int64_t n_groups(const qat *q, int64_t in) { return q->sp.group > 0 ? (in + q->sp.group - 1) / q->sp.group : 1; }

/* The levels of W [out, in] on a fixed grid. */
static void grid_levels(const qat *q, const grid *gr, const float *W, int64_t out, int64_t in, uint8_t *levels) {
    const int64_t gs = q->sp.group > 0 ? q->sp.group : in, ng = n_groups(q, in);
    for (int64_t r = 0; r < out; r++)
        for (int64_t c = 0; c < in; c++)
            levels[r * in + c] = q_level(W[r * in + c], gr->scale[r * ng + c / gs], gr->zero[r * ng + c / gs], q->sp.bits);
}

static int32_t linear_of(const qat *q, int32_t param) {
    int32_t k = 0;
    while (k < q->n && q->param[k] != param) k++;
    return k;
}

/* A learned scale as the packed form will store it: f16, positive. */
static float stored_scale(const mopt_host_api *h, float s) {
    s = h->f16_round(fabsf(s));
    return s > 0 ? s : 6.0e-8f;
}

static void fake_quant(void *user, int32_t param, const float *w, float *out, int64_t rows, int64_t cols) {
    const qat *q = user;
    const int32_t k = linear_of(q, param);
    const grid *gr = k < q->n ? &q->grids[k] : NULL;
    if (q->fp8) {
        fake_fp8(q, w, out, rows, cols);
        return;
    }
    if (!gr || !gr->scale) { /* RTN's grid from the current weights */
        memcpy(out, w, (size_t)(rows * cols) * sizeof *out);
        q_fake_quant(q->h, out, rows, cols, q->sp);
        return;
    }
    const float *scale = q->learn ? q->h->trainer_param(q->tr, q->sparam[k]) : gr->scale;
    const int64_t gs = q->sp.group > 0 ? q->sp.group : cols, ng = n_groups(q, cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            const float sc = q->learn ? stored_scale(q->h, scale[r * ng + c / gs]) : scale[r * ng + c / gs];
            const uint8_t z = gr->zero[r * ng + c / gs];
            out[r * cols + c] = q_deq(q_level(w[r * cols + c], sc, z, q->sp.bits), sc, z);
        }
}

/* LSQ (Esser et al., 2020): w_q = s (clamp(round(w/s) + z, 0, qmax) - z).
 * The weight gets the straight-through gradient inside the grid and none
 * where it is clamped; the scale gets round(w/s) - w/s inside and the
 * clamped level's (level - z) outside, times 1/sqrt(group x qmax). */
static void lsq_grad(void *user, int32_t param, const float *w, const float *dfw, float *dw, int64_t rows, int64_t cols) {
    const qat *q = user;
    const int32_t k = linear_of(q, param);
    if (k >= q->n) return;
    const float *scale = q->h->trainer_param(q->tr, q->sparam[k]);
    float *ds = q->h->trainer_grad_mut(q->tr, q->sparam[k]);
    const int32_t qmax = (1 << q->sp.bits) - 1;
    const int64_t gs = q->sp.group > 0 ? q->sp.group : cols, ng = n_groups(q, cols);
    const float gscale = 1.0f / sqrtf((float)gs * (float)qmax);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            const int64_t gi = r * ng + c / gs, i = r * cols + c;
            const float sc = stored_scale(q->h, scale[gi]), v = w[i] / sc;
            const int32_t z = q->grids[k].zero[gi];
            const float level = nearbyintf(v) + (float)z;
            float dsi;
            if (level < 0) dsi = (float)-z;
            else if (level > (float)qmax) dsi = (float)(qmax - z);
            else {
                dw[i] += dfw[i];
                dsi = nearbyintf(v) - v;
            }
            ds[gi] += dfw[i] * dsi * gscale;
        }
}

/* With learn_scales, the grid each linear starts on (the PTQ pass's, or RTN's
 * of the starting weights) becomes a trainer parameter NAME.qat_scale. */
static mopt_status learn_grid(qat *q, mopt_trainer *tr, int32_t k, mopt_error *err) {
    const mopt_host_api *h = q->h;
    const qlinear *l = &q->ls[k];
    grid *gr = &q->grids[k];
    const int64_t ng = n_groups(q, l->in);
    if (!gr->scale) {
        uint8_t *levels = malloc((size_t)(l->out * l->in));
        gr->scale = malloc((size_t)(l->out * ng) * sizeof *gr->scale);
        gr->zero = malloc((size_t)(l->out * ng));
        if (!levels || !gr->scale || !gr->zero) {
            free(levels);
            return h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
        }
        q_rtn(h, h->trainer_param(tr, q->param[k]), l->out, l->in, q->sp, levels, gr->scale, gr->zero);
        free(levels);
    }
    char name[MOPT_MAX_NAME];
    if (snprintf(name, sizeof name, "%s.qat_scale", l->wname) >= (int)sizeof name)
        return h->error_set(err, MOPT_E_INVALID, "quant.qat", "%s: name too long for its scales' parameter", l->wname);
    if ((q->sparam[k] = h->trainer_add_param(tr, name, l->out * ng, gr->scale, err)) < 0)
        return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    return h->trainer_set_transform_grad(tr, q->param[k], lsq_grad, err);
}

static mopt_status prepare(void *user, mopt_trainer *tr, mopt_error *err) {
    qat *q = user;
    const mopt_host_api *h = q->h;
    int64_t most = 0, rows = 0;
    for (int32_t k = 0; k < q->n; k++) {
        if (q->ls[k].out * q->ls[k].in > most) most = q->ls[k].out * q->ls[k].in;
        if (q->ls[k].out > rows) rows = q->ls[k].out;
    }
    if (q->fp8 && (!(q->fp8_levels = malloc((size_t)most + 1)) || !(q->fp8_scales = malloc((size_t)rows * sizeof(float) + 1))))
        return h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
    for (int32_t k = 0; k < q->n; k++) {
        q->param[k] = -1;
        for (int32_t i = 0; i < h->trainer_n_params(tr) && q->param[k] < 0; i++)
            if (h->trainer_param_tensor(tr, i) && !strcmp(h->trainer_param_name(tr, i), q->ls[k].wname)) q->param[k] = i;
        if (q->param[k] < 0) return h->error_set(err, MOPT_E_INVALID, "quant.qat", "%s is not a trained parameter", q->ls[k].wname);
        mopt_status st = h->trainer_set_transform(tr, q->param[k], fake_quant, q, err);
        if (!st && q->learn) st = learn_grid(q, tr, k, err);
        if (st) return st;
    }
    q->tr = tr;
    return MOPT_OK;
}

/* Keeps the trained fp32 weights of the linears (written back they would pass through the checkpoint's dtype). */
static mopt_status finish(void *user, mopt_trainer *tr, mopt_error *err) {
    qat *q = user;
    for (int32_t k = 0; k < q->n; k++) {
        const size_t n = (size_t)(q->ls[k].out * q->ls[k].in);
        if (!(q->trained[k] = malloc(n * sizeof(float)))) return q->h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
        memcpy(q->trained[k], q->h->trainer_param(tr, q->param[k]), n * sizeof(float));
        const float *learned = q->learn ? q->h->trainer_param(tr, q->sparam[k]) : NULL;
        for (int64_t i = 0; learned && i < q->h->trainer_param_size(tr, q->sparam[k]); i++)
            q->grids[k].scale[i] = stored_scale(q->h, learned[i]);
    }
    return MOPT_OK;
}

static mopt_status pack(qat *q, mopt_error *err) {
    mopt_status st = MOPT_OK;
    for (int32_t k = 0; k < q->n && !st; k++) {
        const qlinear *l = &q->ls[k];
        if (q->fp8) { /* weight-only E4M3: what was trained, activations unrounded */
            uint8_t *levels = malloc((size_t)(l->out * l->in));
            float *sc = malloc((size_t)l->out * sizeof *sc);
            if (levels && sc) q_fp8_rows(q->h, q->trained[k], l->out, l->in, 0, 0, levels, sc);
            st = levels && sc ? q_replace(q->h, q->g, q->h->fp8_pack(l->wname, l->out, l->in, levels, sc, l->out, 0, 1.0f, err), err)
                              : q->h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
            free(levels);
            free(sc);
            continue;
        }
        if (!q->grids[k].scale) {
            st = q_rtn_install(q->h, q->g, l, q->sp, q->trained[k], "quant.qat", err);
            continue;
        }
        uint8_t *levels = malloc((size_t)(l->out * l->in));
        if (!levels) return q->h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
        grid_levels(q, &q->grids[k], q->trained[k], l->out, l->in, levels);
        st = q_install(q->h, q->g, l, q->sp, levels, q->grids[k].scale, q->grids[k].zero, NULL, err);
        free(levels);
    }
    return st;
}

/* Linears packed by an earlier PTQ pass (RTN, AWQ, GPTQ) in this pass's format
 * are the starting point: their dequantized values become the fp32 weights
 * and their scales and zero-points the fixed grid of the fake quantization
 * and of the final packing, so training starts exactly where the PTQ pass
 * ended. Other packings are refused. */
static mopt_status unpack_ptq(qat *q, int32_t *count, mopt_error *err) {
    const mopt_host_api *h = q->h;
    const qspec sp = q->sp;
    for (int32_t k = 0; k < q->n; k++) {
        const qlinear *l = &q->ls[k];
        const mopt_tensor *t = h->graph_find_tensor(q->g, l->wname);
        if (!t || t->dtype < MOPT_DTYPE_PACKED_FIRST) continue;
        if (q->fp8)
            return h->error_set(err, MOPT_E_INVALID, "quant.qat", "%s is already packed: FP8 QAT starts from the float model", l->wname);
        if (t->dtype != MOPT_DTYPE_QINT)
            return h->error_set(err, MOPT_E_INVALID, "quant.qat",
                                "%s is packed W8A8, FP8, 2:4 or a GGUF k-quant: QAT starts from a float model or an int PTQ pass's result",
                                l->wname);
        if (t->quant->flags & MOPT_QUANT_W_FP8)
            return h->error_set(err, MOPT_E_INVALID, "quant.qat",
                                "%s is W4A8_AWQ (int4 widened to FP8): QAT trains int4 groups; start from the float model or a W4A16 pass",
                                l->wname);
        if (t->quant->g_idx)
            return h->error_set(err, MOPT_E_INVALID, "quant.qat",
                                "%s has GPTQ act-order groups (g_idx); QAT trains groups of consecutive columns: use act_order=false",
                                l->wname);
        const int sym = (t->quant->flags & MOPT_QUANT_SYM) != 0;
        if (t->quant->bits != sp.bits || t->quant->group_size != sp.group || sym != sp.sym)
            return h->error_set(err, MOPT_E_INVALID, "quant.qat",
                                "%s is packed int%d g%d %s, but this pass trains int%d g%d %s: give the earlier pass the same format",
                                l->wname, t->quant->bits, t->quant->group_size, sym ? "sym" : "asym", sp.bits, sp.group,
                                sp.sym ? "sym" : "asym");
        const int64_t ng = n_groups(q, l->in);
        grid *gr = &q->grids[k];
        gr->scale = malloc((size_t)(l->out * ng) * sizeof *gr->scale);
        gr->zero = malloc((size_t)(l->out * ng));
        if (!gr->scale || !gr->zero) return h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
        if (h->tensor_nelements(t->quant->scale) != l->out * ng || (!sym && h->tensor_nelements(t->quant->zero) != l->out * ng))
            return h->error_set(err, MOPT_E_INVALID, "quant.qat", "%s: its scales do not fit %lld x %lld groups", l->wname,
                                (long long)l->out, (long long)ng);
        mopt_status st = h->tensor_read_f32(t->quant->scale, 0, l->out * ng, gr->scale, err);
        if (st) return st;
        for (int64_t i = 0; i < l->out * ng; i++)
            gr->zero[i] = sym ? (uint8_t)(1u << (sp.bits - 1)) : ((const uint8_t *)t->quant->zero->data)[i];
        float *w = q_weight_f32(h, q->g, l, err);
        const int64_t dims[2] = {l->out, l->in};
        st = w ? q_install_f32(h, q->g, l->wname, 2, dims, w, err) : MOPT_E_NOMEM;
        free(w);
        if (st) return st;
        (*count)++;
    }
    return MOPT_OK;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    qat q = {.h = h, .sp = q_spec_from(h, o), .g = g, .fp8 = !strcmp(h->opt_string(o, "dtype"), "fp8"), .learn = h->opt_bool(o, "learn_scales")};
    if (q.fp8 && q.learn) return h->error_set(err, MOPT_E_INVALID, "quant.qat", "learn_scales applies to the int grid, not dtype=fp8");
    mopt_status st = q_check_spec(h, "quant.qat", q.sp, err);
    if (st) return st;
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.qat", "needs a model");
    qlinear *ls;
    if ((st = q_collect(h, g, o, &ls, &q.n, err))) return st;
    q.ls = ls;
    int64_t before = 0, after = 0, weights = 0;
    q_measure(h, g, ls, q.n, &before, &weights);
    q.param = calloc((size_t)(q.n ? q.n : 1), sizeof *q.param);
    q.trained = calloc((size_t)(q.n ? q.n : 1), sizeof *q.trained);
    q.grids = calloc((size_t)(q.n ? q.n : 1), sizeof *q.grids);
    q.sparam = calloc((size_t)(q.n ? q.n : 1), sizeof *q.sparam);
    if (!q.param || !q.trained || !q.grids || !q.sparam) st = h->error_set(err, MOPT_E_NOMEM, "quant.qat", "out of memory");
    int32_t from_ptq = 0;
    if (!st) st = unpack_ptq(&q, &from_ptq, err);
    if (!st && from_ptq)
        h->log(ctx, "quant.qat: starting from the int%d weights and grid of an earlier pass (%d linears)", q.sp.bits, from_ptq);
    const kd_hooks hooks = {prepare, finish, NULL, &q};
    const char *teacher = h->opt_is_set(o, "teacher") ? h->opt_string(o, "teacher") : NULL;
    if (!st) st = kd_train(h, ctx, g, o, report, "quant.qat", teacher, &hooks, err);
    if (!st) st = pack(&q, err);
    if (!st) {
        q_measure(h, g, ls, q.n, &after, &weights);
        const qspec fp8_spec = {.bits = 8, .group = -1, .sym = 1};
        st = q_report(h, report, g, o, q.fp8 ? (teacher ? "qad-fp8" : "qat-fp8") : teacher ? "qad" : "qat", q.fp8 ? fp8_spec : q.sp, before, after,
                 weights, q.n, err);
    }
    for (int32_t k = 0; q.trained && k < q.n; k++) free(q.trained[k]);
    for (int32_t k = 0; q.grids && k < q.n; k++) free(q.grids[k].scale), free(q.grids[k].zero);
    free(q.grids);
    free(q.sparam);
    free(q.fp8_levels);
    free(q.fp8_scales);
    free(q.trained);
    free(q.param);
    free(ls);
    return st;
}

static const char *const dtypes[] = {"int", "fp8", NULL};

static const mopt_opt_spec opts[] = {
    {"dtype", MOPT_OPT_ENUM, 0, "int: bits/group_size/sym as quant.rtn; fp8: E4M3 weights, per-row scales (activations not rounded)", "int", 0, -1, dtypes},
    Q_INT_OPTS("4", "128"),
    {"learn_scales", MOPT_OPT_BOOL, 0, "train the group scales too (LSQ), starting from the PTQ pass's or RTN's; zero-points stay", "false", 0, -1, NULL},
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
