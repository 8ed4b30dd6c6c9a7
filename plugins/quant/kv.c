/* quant.kv: the KV cache stored as FP8 (E4M3) or int8 with calibrated scales,
 * as ModelOpt's kv_fp8 recipes and vLLM's fp8 cache: K (after RoPE) and V are
 * run through the calibration windows, max|k| and max|v| taken per KV head,
 * and each scale is amax / 448 (fp8) or amax / 127 (int8), one per layer (the
 * largest head's, which is what vLLM, ModelOpt and TensorRT-LLM store) or one
 * per head. The cache then holds round(k / k_scale) and attention reads
 * q * k_scale (mopt_graph_set_kv_quant). Unlike ModelOpt's export, scales
 * below 1 are kept: small K/V use the whole E4M3 range. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "passes.h"
#include "qcommon.h"

typedef struct {
    const mopt_host_api *h;
    mopt_graph *g;
    int32_t node, hd, heads;
    float *kmax, *vmax; /* [heads] of the current layer */
} kv_stats;

static void track_kv(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                     int32_t out_w, int32_t T) {
    kv_stats *s = user;
    if (node != s->node) return;
    for (int32_t t = 0; t < T; t++)
        for (int32_t i = 0; i < s->heads * s->hd; i++) {
            const int32_t hh = i / s->hd;
            s->kmax[hh] = fmaxf(s->kmax[hh], fabsf(in[1][(size_t)t * in_w[1] + i]));
            s->vmax[hh] = fmaxf(s->vmax[hh], fabsf(in[2][(size_t)t * in_w[2] + i]));
        }
}

/* amax / qmax, or 1 for a head that only ever saw zeros (or non-finite values) */
static float scale_of(float amax, float qmax) { return amax > 0 && isfinite(amax) ? amax / qmax : 1.0f; }

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.kv", "needs a model");
    const mopt_arch *a = h->graph_arch(g);
    const mopt_kv_format fmt = !strcmp(h->opt_string(o, "format"), "int8") ? MOPT_KV_INT8 : MOPT_KV_FP8;
    const int per_head = !strcmp(h->opt_string(o, "granularity"), "head");
    const float qmax = fmt == MOPT_KV_FP8 ? 448.0f : 127.0f;
    mopt_status st = MOPT_OK;
    /* calibrate on the float cache: a format set by an earlier run goes first */
    for (int32_t l = 0; l < a->n_layers && !st; l++)
        if (h->graph_find_node(g, MOPT_ROLE_ATTN, l) >= 0) st = h->graph_set_kv_quant(g, l, MOPT_KV_FLOAT, 0, NULL, NULL, err);
    if (st) return st;
    const int64_t before = h->graph_kv_bytes_per_token(g);
    const int32_t heads = a->n_kv_heads > 0 ? a->n_kv_heads : a->n_heads;
    float *buf = calloc(4 * (size_t)heads + 2, sizeof(float));
    if (!buf) return h->error_set(err, MOPT_E_NOMEM, "quant.kv", "out of memory");
    kv_stats ks = {h, g, -1, 0, heads, buf, buf + heads};
    float *kscale = buf + 2 * heads, *vscale = buf + 3 * heads;
    float kmin = INFINITY, kmx = 0, vmin = INFINITY, vmx = 0;
    int32_t layers = 0;
    calib c;
    if ((st = calib_init(&c, h, ctx, g, o, a->n_layers, err))) { /* it cleans up when it fails */
        free(buf);
        return st;
    }
    mopt_kv_quant *done = calloc((size_t)a->n_layers, sizeof *done); /* set after calibration, so it runs on float caches */
    float *scales = calloc((size_t)a->n_layers * 2 * (size_t)heads + 1, sizeof(float));
    if (!done || !scales) st = h->error_set(err, MOPT_E_NOMEM, "quant.kv", "out of memory");
    for (int32_t l = 0; l < a->n_layers && !st; l++) {
        ks.node = h->graph_find_node(g, MOPT_ROLE_ATTN, l);
        if (ks.node >= 0) {
            const mopt_node *n = h->graph_node(g, ks.node);
            if (n->n_kv_heads > heads) {
                st = h->error_set(err, MOPT_E_UNSUPPORTED, "quant.kv", "%s has %d KV heads, more than the model's %d", n->name,
                                  n->n_kv_heads, heads);
                break;
            }
            ks.hd = n->head_dim;
            ks.heads = n->n_kv_heads;
            memset(ks.kmax, 0, 2 * (size_t)heads * sizeof(float));
        }
        st = calib_run_layer(&c, l, -1, ks.node >= 0 ? track_kv : NULL, &ks, 1, err);
        calib_advance(&c);
        calib_tick(&c);
        if (st || ks.node < 0) continue;
        float km = 0, vm = 0;
        for (int32_t i = 0; i < ks.heads; i++) km = fmaxf(km, ks.kmax[i]), vm = fmaxf(vm, ks.vmax[i]);
        const int32_t ns = per_head ? ks.heads : 1;
        for (int32_t i = 0; i < ns; i++) {
            kscale[i] = scale_of(per_head ? ks.kmax[i] : km, qmax);
            vscale[i] = scale_of(per_head ? ks.vmax[i] : vm, qmax);
            kmin = fminf(kmin, kscale[i]), kmx = fmaxf(kmx, kscale[i]);
            vmin = fminf(vmin, vscale[i]), vmx = fmaxf(vmx, vscale[i]);
        }
        float *k = scales + (size_t)l * 2 * heads;
        memcpy(k, kscale, (size_t)ns * sizeof(float));
        memcpy(k + heads, vscale, (size_t)ns * sizeof(float));
        done[l] = (mopt_kv_quant){fmt, ns, k, k + heads};
        h->log(ctx, "layer %d: k_scale %.6g, v_scale %.6g%s", l, (double)scale_of(km, qmax), (double)scale_of(vm, qmax),
               per_head ? " (the largest head's)" : "");
    }
    calib_free(&c);
    for (int32_t l = 0; l < a->n_layers && !st; l++)
        if (done[l].format != MOPT_KV_FLOAT) {
            st = h->graph_set_kv_quant(g, l, fmt, done[l].n_scales, done[l].k_scale, done[l].v_scale, err);
            layers++;
        }
    if (!st && !layers) st = h->error_set(err, MOPT_E_UNSUPPORTED, "quant.kv", "the model has no attention layer, so no KV cache");
    if (!st) {
        const int64_t after = h->graph_kv_bytes_per_token(g);
        h->report_string(report, "method", "kv");
        h->report_string(report, "kv_format", h->kv_format_name(fmt));
        h->report_string(report, "granularity", per_head ? "head" : "tensor");
        h->report_metric(report, "kv_layers", layers);
        h->report_metric(report, "kv_bytes_per_token_baseline", (double)before);
        h->report_metric(report, "kv_bytes_per_token", (double)after);
        h->report_metric(report, "k_scale_min", kmin);
        h->report_metric(report, "k_scale_max", kmx);
        h->report_metric(report, "v_scale_min", vmin);
        h->report_metric(report, "v_scale_max", vmx);
        h->log(ctx, "KV cache: %s, %lld -> %lld bytes per token over %d layers", h->kv_format_name(fmt), (long long)before,
               (long long)after, layers);
    }
    free(done);
    free(scales);
    free(buf);
    return st;
}

static const char *const formats[] = {"fp8", "int8", NULL};
static const char *const granularities[] = {"tensor", "head", NULL};
static const mopt_opt_spec opts[] = {
    {"format", MOPT_OPT_ENUM, 0, "fp8: E4M3 (vLLM --kv-cache-dtype fp8, ModelOpt FP8 KV); int8: symmetric int8 (TensorRT-LLM INT8 KV)",
     "fp8", 0, -1, formats},
    {"granularity", MOPT_OPT_ENUM, 0,
     "tensor: one K and one V scale per layer (what vLLM, ModelOpt and TensorRT-LLM store); head: one per KV head (finer, not exportable)",
     "tensor", 0, -1, granularities},
    Q_CALIB_OPTS(1),
};

MOPT_PASS_DEFINE(quant_kv_pass, MOPT_PASS_TRANSFORM, "quant.kv",
                 "KV cache in FP8 (E4M3) or int8 with K and V scales calibrated per layer or per head; attention reads the quantized cache",
                 opts, run);
