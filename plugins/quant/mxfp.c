/* quant.nvfp4, quant.mxfp4, quant.mxfp8: block-scaled float weights
 * (MOPT_DTYPE_MXFP in mopt/quant.h) as ModelOpt's NVFP4 and the OCP
 * Microscaling formats define them. Activations are rounded onto the same
 * format at run time (dynamic; NVFP4's global activation scale taken per
 * token), with NVFP4's global activation scale calibrated (static: max|x| /
 * (6 * 448) over the calibration data, as ModelOpt exports input_scale), or
 * left in float (none: weight-only). NVFP4's weight global scale is shared by
 * the linears that read one input (q/k/v, gate/up), as fused GEMMs hold it. */
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "passes.h"
#include "qcommon.h"

static mopt_status run_kind(mopt_mxfp_kind kind, const char *pass, const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g,
                            const mopt_options *o, mopt_report *report, mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, pass, "needs a model");
    const char *amode = h->opt_string(o, "activations");
    const int is_static = !strcmp(amode, "static");
    if (is_static && !h->opt_is_set(o, "calib"))
        return h->error_set(err, MOPT_E_INVALID, pass, "activations=static needs calib=FILE for the activation maxima");
    if (is_static && h->opt_bool(o, "lm_head"))
        return h->error_set(err, MOPT_E_UNSUPPORTED, pass, "lm_head=true goes with activations=dynamic or none (static scales are calibrated per decoder block)");
    qlinear *ls;
    int32_t n;
    mopt_status st;
    if ((st = q_collect(h, g, o, &ls, &n, err))) return st;
    if ((st = q_check_whole_blocks(h, pass, ls, n, err))) {
        free(ls);
        return st;
    }
    int64_t before, after, weights;
    q_measure(h, g, ls, n, &before, &weights);
    float *amax = calloc((size_t)n * 3 + 1, sizeof(float)); /* per linear: input max, weight max, its fused group's weight max */
    float *wown = amax + n, *wshared = amax + 2 * n;
    if (!amax) st = h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    if (!st && is_static) st = calib_input_amax(h, ctx, g, o, ls, n, amax, err);
    for (int32_t i = 0; i < n && !st && kind == MOPT_MXFP_NVFP4; i++) st = q_weight_amax(h, g, &ls[i], &wown[i], err);
    if (!st) q_shared_input_amax(h, g, ls, n, wown, wshared); /* NVFP4's global scale; 0 for the MX formats */
    const uint32_t act = is_static ? MOPT_QUANT_ACT_STATIC : strcmp(amode, "none") ? MOPT_QUANT_ACT_PER_TOKEN : 0;
    for (int32_t i = 0; i < n && !st; i++) {
        const qlinear *l = &ls[i];
        float *W = q_weight_f32(h, g, l, err);
        if (!W) {
            st = err ? (mopt_status)err->code : MOPT_E_NOMEM;
            break;
        }
        const float as = amax[i] > 0 ? amax[i] / (6.0f * 448.0f) : 1.0f; /* static: ModelOpt's input_scale */
        st = q_replace(h, g, h->mxfp_quantize_shared(l->wname, kind, l->out, l->in, W, wshared[i], act, as, err), err);
        free(W);
        h->progress(ctx, i + 1, n);
    }
    if (!st) {
        q_measure(h, g, ls, n, &after, &weights);
        const qspec sp = {.bits = kind == MOPT_MXFP_MXFP8 ? 8 : 4, .group = kind == MOPT_MXFP_NVFP4 ? 16 : 32, .sym = 1};
        st = q_report(h, report, g, o, h->mxfp_kind_name(kind), sp, before, after, weights, n, err);
        h->report_string(report, "activations", amode);
    }
    free(amax);
    free(ls);
    return st;
}

static mopt_status run_nvfp4(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *r,
                             mopt_error *err) {
    return run_kind(MOPT_MXFP_NVFP4, "quant.nvfp4", h, ctx, g, o, r, err);
}
static mopt_status run_mxfp4(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *r,
                             mopt_error *err) {
    return run_kind(MOPT_MXFP_MXFP4, "quant.mxfp4", h, ctx, g, o, r, err);
}
static mopt_status run_mxfp8(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *r,
                             mopt_error *err) {
    return run_kind(MOPT_MXFP_MXFP8, "quant.mxfp8", h, ctx, g, o, r, err);
}

static const char *const nv_modes[] = {"dynamic", "static", "none", NULL};
static const mopt_opt_spec nv_opts[] = {
    {"activations", MOPT_OPT_ENUM, 0,
     "activations rounded to NVFP4 at run time with a global scale per token (dynamic) or calibrated (static), or left in float (none)",
     "dynamic", 0, -1, nv_modes},
    Q_SELECT_OPTS,
    Q_LM_HEAD_OPT,
    Q_CALIB_OPTS(0),
};

static const char *const mx_modes[] = {"dynamic", "none", NULL};
static const mopt_opt_spec mx_opts[] = {
    {"activations", MOPT_OPT_ENUM, 0, "activations rounded to the format at run time, a scale per block of 32 (dynamic), or left in float (none)",
     "dynamic", 0, -1, mx_modes},
    Q_SELECT_OPTS,
    Q_LM_HEAD_OPT,
};

MOPT_PASS_DEFINE(quant_nvfp4_pass, MOPT_PASS_TRANSFORM, "quant.nvfp4",
                 "NVFP4: E2M1 weights, an E4M3 scale per 16 values and an FP32 scale per tensor; activations likewise or in float",
                 nv_opts, run_nvfp4);
MOPT_PASS_DEFINE(quant_mxfp4_pass, MOPT_PASS_TRANSFORM, "quant.mxfp4",
                 "MXFP4 (OCP Microscaling): E2M1 weights with a power-of-two E8M0 scale per 32 values; activations likewise or in float",
                 mx_opts, run_mxfp4);
MOPT_PASS_DEFINE(quant_mxfp8_pass, MOPT_PASS_TRANSFORM, "quant.mxfp8",
                 "MXFP8 (OCP Microscaling): E4M3 weights with a power-of-two E8M0 scale per 32 values; activations likewise or in float",
                 mx_opts, run_mxfp8);
