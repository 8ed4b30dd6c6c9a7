/* quant.rtn: round-to-nearest, per group along the input dimension. */
#include <stdlib.h>

#include "passes.h"
#include "qcommon.h"

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    qspec sp = q_spec_from(h, o);
    mopt_status st = q_check_spec(h, "quant.rtn", sp, err);
    if (st) return st;
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.rtn", "needs a model");
    if (sp.w4a8_static)
        return h->error_set(err, MOPT_E_INVALID, "quant.rtn",
                            "activations=fp8_static calibrates its scales on data: use quant.awq or quant.gptq (calib=FILE), or "
                            "activations=fp8 (per token)");
    const int embeddings = h->opt_bool(o, "embeddings");
    if (embeddings && (st = q_embeddings_check(h, g, "quant.rtn", err))) return st;
    qlinear *ls;
    int32_t n;
    if ((st = q_collect(h, g, o, &ls, &n, err))) return st;
    int64_t before, after, weights;
    q_measure(h, g, ls, n, &before, &weights);
    for (int32_t i = 0; i < n && st == MOPT_OK; i++) {
        const qlinear *l = &ls[i];
        float *W = q_weight_f32(h, g, l, err);
        if (!W) st = err && err->code ? (mopt_status)err->code : h->error_set(err, MOPT_E_NOMEM, "quant.rtn", "out of memory");
        if (!st && h->interrupted()) st = h->error_set(err, MOPT_E_INTERRUPTED, "quant.rtn", "interrupted at %s", l->wname);
        if (!st) st = q_rtn_install(h, g, l, sp, W, "quant.rtn", err);
        free(W);
        h->progress(ctx, i + 1, n);
    }
    if (!st) {
        q_measure(h, g, ls, n, &after, &weights);
        st = q_report(h, report, g, o, "rtn", sp, before, after, weights, n, err);
    }
    if (!st && embeddings) st = q_embeddings(h, g, sp, "quant.rtn", report, err);
    free(ls);
    return st;
}

static const mopt_opt_spec opts[] = {
    Q_INT_OPTS("4", "128"),
    Q_ACT_OPT,
    Q_LM_HEAD_OPT,
    {"embeddings", MOPT_OPT_BOOL, 0,
     "quantize the token embedding table too, each row on the same grid (looked up row by row; an untied table; GGUF "
     "exports keep it packed, Hugging Face and TensorRT-LLM exports write it dequantized, as vLLM loads embeddings)",
     "false", 0, -1, NULL},
};

const mopt_pass_desc quant_rtn_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_TRANSFORM,
    .name = "quant.rtn",
    .summary = "round-to-nearest weight quantization (int8/4/3/2, groups, sym or asym), packed",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
    .check = q_check_int_options,
};
