/* quant.fp8: E4M3 weights (per output channel amax/448, or one per-tensor
 * scale) with activations rounded to E4M3 per token (dynamic), with a
 * calibrated per-tensor scale (static: calibration max / 448), or not at all
 * (weight-only). On the CPU the kernel widens E4M3 to fp32 as it reads. */
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "passes.h"
#include "qcommon.h"

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.fp8", "needs a model");
    const char *wmode = h->opt_string(o, "weights"), *amode = h->opt_string(o, "activations");
    const int per_tensor = !strcmp(wmode, "per_tensor"), is_static = !strcmp(amode, "static");
    if (is_static && !h->opt_is_set(o, "calib"))
        return h->error_set(err, MOPT_E_INVALID, "quant.fp8", "activations=static needs calib=FILE for the activation maxima");
    if (is_static && h->opt_bool(o, "lm_head"))
        return h->error_set(err, MOPT_E_UNSUPPORTED, "quant.fp8",
                            "lm_head=true goes with activations=dynamic or none (static scales are calibrated per decoder block)");
    qlinear *ls;
    int32_t n;
    mopt_status st;
    if ((st = q_collect(h, g, o, &ls, &n, err))) return st;
    int64_t before, after, weights;
    q_measure(h, g, ls, n, &before, &weights);
    float *amax = calloc((size_t)n * 3, sizeof(float)); /* per linear: input max, weight max, its fused group's weight max */
    float *wown = amax + n, *wshared = amax + 2 * n;
    if (!amax) st = h->error_set(err, MOPT_E_NOMEM, "quant.fp8", "out of memory");
    if (!st && is_static) st = calib_input_amax(h, ctx, g, o, ls, n, amax, err);
    for (int32_t i = 0; i < n && !st && per_tensor; i++) st = q_weight_amax(h, g, &ls[i], &wown[i], err);
    if (!st && per_tensor) q_shared_input_amax(h, g, ls, n, wown, wshared);
    const uint32_t act = is_static ? MOPT_QUANT_ACT_STATIC : !strcmp(amode, "dynamic") ? MOPT_QUANT_ACT_PER_TOKEN : 0;
    for (int32_t i = 0; i < n && !st; i++) {
        const qlinear *l = &ls[i];
        float *W = q_weight_f32(h, g, l, err), *sc = malloc((size_t)l->out * sizeof *sc);
        uint8_t *q = malloc((size_t)(l->out * l->in));
        if (!W || !sc || !q) st = h->error_set(err, MOPT_E_NOMEM, "quant.fp8", "out of memory");
        if (!st) q_fp8_rows(h, W, l->out, l->in, per_tensor, wshared[i], q, sc);
        if (!st) {
            float as = amax[i] > 0 ? amax[i] / 448.0f : 1.0f;
            st = q_replace(h, g, h->fp8_pack(l->wname, l->out, l->in, q, sc, per_tensor ? 1 : l->out, act, as, err), err);
        }
        free(W);
        free(sc);
        free(q);
    }
    if (!st) {
        q_measure(h, g, ls, n, &after, &weights);
        qspec sp = {.bits = 8, .group = -1, .sym = 1};
        st = q_report(h, report, g, o, "fp8-e4m3", sp, before, after, weights, n, err);
        h->report_string(report, "weight_scales", wmode);
        h->report_string(report, "activations", amode);
    }
    free(amax);
    free(ls);
    return st;
}

static const char *const wmodes[] = {"per_channel", "per_tensor", NULL};
static const char *const amodes[] = {"dynamic", "static", "none", NULL};

static const mopt_opt_spec opts[] = {
    {"weights", MOPT_OPT_ENUM, 0, "weight scales: one per output channel or one per tensor", "per_channel", 0, -1, wmodes},
    {"activations", MOPT_OPT_ENUM, 0, "activation rounding: per-token dynamic, calibrated per-tensor static, or none", "dynamic", 0, -1, amodes},
    Q_SELECT_OPTS,
    Q_LM_HEAD_OPT,
    Q_CALIB_OPTS(0),
};

MOPT_PASS_DEFINE(quant_fp8_pass, MOPT_PASS_TRANSFORM, "quant.fp8",
                 "FP8 E4M3 weights (per-channel or per-tensor) with dynamic, static or no activation rounding",
                 opts, run);
