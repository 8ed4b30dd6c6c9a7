/* quant.smoothquant: SmoothQuant smoothing then W8A8.
 * Calibration records each input channel's max |x| for the linears a norm
 * feeds (q/k/v, gate/up); per such group s_j = max|x_j|^a / max|W_.j|^(1-a)
 * (both clamped at 1e-5) is folded into the norm (weight and bias / s) and the
 * linears' columns (* s), which is exact in full precision. Then every decoder
 * linear becomes int8 per output channel (max|w| / 127), and at run time each
 * token's activations are quantized to int8 (max|x| / 127) and multiplied in
 * int8 x int8 -> int32. o and down inputs are not smoothed, as in the paper. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "passes.h"
#include "qcommon.h"

typedef struct {
    const mopt_host_api *h;
    mopt_graph *g;
    int32_t lo, hi;  /* node range of the layer */
    float *amax;     /* [n_values_in_layer... indexed by value - base] */
    int32_t base, n; /* values tracked: [base, base + n) */
    int64_t *width;
} act_max;

static void track(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w,
                  const float *out, int32_t out_w, int32_t T) {
    act_max *m = user;
    const mopt_node *nd = m->h->graph_node(m->g, node);
    if (nd->op != MOPT_OP_LINEAR) return;
    int32_t v = nd->inputs[0] - m->base;
    if (v < 0 || v >= m->n) return;
    float *a = m->amax + (size_t)v * m->width[v];
    for (int32_t t = 0; t < T; t++)
        for (int32_t j = 0; j < in_w[0]; j++) a[j] = fmaxf(a[j], fabsf(in[0][(size_t)t * in_w[0] + j]));
}

/* Scales a norm's weight/bias by 1/s into fp32 copies. */
static mopt_status scale_norm(const mopt_host_api *h, mopt_graph *g, const mopt_node *norm, const float *s, int64_t D,
                              mopt_error *err) {
    const mopt_tensor *parts[2] = {norm->weight, norm->bias};
    float *d = malloc((size_t)D * sizeof *d);
    if (!d) return h->error_set(err, MOPT_E_NOMEM, "quant.smoothquant", "out of memory");
    mopt_status st = MOPT_OK;
    for (int p = 0; p < 2 && !st; p++) {
        if (!parts[p]) continue;
        st = h->tensor_read_f32(parts[p], 0, D, d, err);
        for (int64_t j = 0; j < D && !st; j++) d[j] /= s[j];
        int64_t dims[1] = {D};
        if (!st) st = q_install_f32(h, g, parts[p]->name, 1, dims, d, err);
    }
    free(d);
    return st;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.smoothquant", "needs a model");
    const double alpha = h->opt_float(o, "alpha");
    const int smooth = h->opt_bool(o, "smooth");
    if (smooth && !h->opt_is_set(o, "calib"))
        return h->error_set(err, MOPT_E_INVALID, "quant.smoothquant",
                            "smoothing needs calib=FILE for the activation maxima (or smooth=false for naive W8A8)");
    qlinear *ls;
    int32_t n;
    mopt_status st;
    if ((st = q_collect(h, g, o, &ls, &n, err))) return st;
    int64_t before, after, weights;
    q_measure(h, g, ls, n, &before, &weights);
    const mopt_arch *a = h->graph_arch(g);
    calib c = {0};
    if (smooth && (st = calib_init(&c, h, ctx, g, o, (int64_t)a->n_layers * 2, err))) {
        free(ls);
        return st;
    }
    int32_t groups = 0;
    for (int32_t l = 0; l < a->n_layers && smooth && !st; l++) {
        /* max |x| per channel of every value this layer's linears read */
        int32_t base = c.in_value[l], top = c.out_value[l] + 1;
        act_max m = {h, g, c.first[l], c.last[l], NULL, base, top - base, NULL};
        m.width = calloc((size_t)m.n, sizeof *m.width);
        for (int32_t i = c.first[l]; m.width && i < c.last[l]; i++) {
            const mopt_node *nd = h->graph_node(g, i);
            if (nd->op == MOPT_OP_LINEAR && nd->inputs[0] >= base && nd->inputs[0] < top)
                m.width[nd->inputs[0] - base] = nd->weight->ne[0];
        }
        /* one flat array with a row of the widest width per tracked value */
        int64_t wmax = 1;
        for (int32_t v = 0; m.width && v < m.n; v++) wmax = m.width[v] > wmax ? m.width[v] : wmax;
        for (int32_t v = 0; m.width && v < m.n; v++) m.width[v] = wmax;
        m.amax = calloc((size_t)m.n * (size_t)wmax, sizeof(float));
        if (!m.width || !m.amax) st = h->error_set(err, MOPT_E_NOMEM, "quant.smoothquant", "out of memory");
        if (!st) st = calib_run_layer(&c, l, -1, track, &m, 1, err);
        calib_tick(&c);
        /* smooth each norm -> linears group */
        for (int32_t i = c.first[l]; i < c.last[l] && !st; i++) {
            const mopt_node *nd = h->graph_node(g, i);
            if (nd->op != MOPT_OP_RMSNORM && nd->op != MOPT_OP_LAYERNORM) continue;
            int32_t cons[8], ncons = h->graph_consumers(g, nd->output, cons, 8), nl = 0;
            const qlinear *lin[8];
            for (int32_t k = 0; k < ncons && k < 8; k++)
                for (int32_t q = 0; q < n; q++)
                    if (ls[q].node == cons[k]) lin[nl++] = &ls[q];
            if (nl == 0 || nl != ncons) continue; /* an excluded or non-linear consumer: leave it */
            const int64_t D = nd->weight->ne[0];
            const float *am = m.amax + (size_t)(nd->output - base) * wmax;
            float *s = malloc((size_t)D * sizeof *s), *wm = calloc((size_t)D, sizeof *wm);
            float *W[8] = {0};
            if (!s || !wm) st = h->error_set(err, MOPT_E_NOMEM, "quant.smoothquant", "out of memory");
            for (int32_t k = 0; k < nl && !st; k++) {
                if (!(W[k] = q_weight_f32(h, g, lin[k], err))) st = MOPT_E_NOMEM;
                for (int64_t r = 0; !st && r < lin[k]->out; r++)
                    for (int64_t j = 0; j < D; j++) wm[j] = fmaxf(wm[j], fabsf(W[k][r * D + j]));
            }
            for (int64_t j = 0; !st && j < D; j++) {
                double v = pow(fmax(am[j], 1e-5), alpha) / pow(fmax(wm[j], 1e-5), 1 - alpha);
                s[j] = (float)fmax(v, 1e-5);
            }
            if (!st) st = scale_norm(h, g, nd, s, D, err);
            for (int32_t k = 0; k < nl && !st; k++) {
                for (int64_t r = 0; r < lin[k]->out; r++)
                    for (int64_t j = 0; j < D; j++) W[k][r * D + j] *= s[j];
                int64_t dims[2] = {lin[k]->out, D};
                st = q_install_f32(h, g, lin[k]->wname, 2, dims, W[k], err);
            }
            for (int32_t k = 0; k < nl; k++) free(W[k]);
            free(s);
            free(wm);
            groups++;
        }
        free(m.amax);
        free(m.width);
        if (!st) calib_advance(&c);
        calib_tick(&c);
    }
    if (smooth) calib_free(&c);
    /* W8A8 for every target linear */
    for (int32_t i = 0; i < n && !st; i++) {
        const qlinear *l = &ls[i];
        float *W = q_weight_f32(h, g, l, err), *sc = malloc((size_t)l->out * sizeof *sc);
        int8_t *q = malloc((size_t)(l->out * l->in));
        if (!W || !sc || !q) st = h->error_set(err, MOPT_E_NOMEM, "quant.smoothquant", "out of memory");
        if (!st) q_int8_rows(W, l->out, l->in, q, sc);
        if (!st) st = q_replace(h, g, h->w8a8_pack(l->wname, l->out, l->in, q, sc, err), err);
        free(W);
        free(sc);
        free(q);
    }
    if (!st) {
        q_measure(h, g, ls, n, &after, &weights);
        qspec sp = {.bits = 8, .group = -1, .sym = 1};
        st = q_report(h, report, g, o, smooth ? "smoothquant-w8a8" : "w8a8", sp, before, after, weights, n, err);
        h->report_metric(report, "alpha", smooth ? alpha : 0);
        h->report_metric(report, "smoothed_groups", groups);
    }
    free(ls);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"alpha", MOPT_OPT_FLOAT, 0, "migration strength: s = amax^alpha / wmax^(1-alpha)", "0.5", 0, 1, NULL},
    {"smooth", MOPT_OPT_BOOL, 0, "smooth before quantizing (false: naive W8A8)", "true", 0, -1, NULL},
    Q_SELECT_OPTS,
    Q_CALIB_OPTS(0),
};

MOPT_PASS_DEFINE(quant_smoothquant_pass, MOPT_PASS_TRANSFORM, "quant.smoothquant",
                 "SmoothQuant smoothing folded into the norms, then W8A8 (int8 weights, per-token int8 activations)",
                 opts, run);
