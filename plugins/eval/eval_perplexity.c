/* eval.perplexity: the runtime's perplexity (lit.json protocol by default) as a
 * pass, with per-window NLL in the report. */
#include <stdlib.h>

#include "eval_plugin.h"
#include "eval_util.h"

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *opts,
                       mopt_report *report, mopt_error *err) {
    const char *data = h->opt_string(opts, "data");
    const int32_t win = (int32_t)h->opt_int(opts, "ctx");
    const int32_t stride = h->opt_int(opts, "stride") > 0 ? (int32_t)h->opt_int(opts, "stride") : win;
    mopt_model *model = h->ctx_model(ctx);
    if (!model || !graph) return h->error_set(err, MOPT_E_INVALID, "eval.perplexity", "needs a model");
    if (win > h->graph_arch(graph)->max_ctx)
        return h->error_set(err, MOPT_E_INVALID, "eval.perplexity", "ctx %d exceeds the model's context of %d", win,
                            h->graph_arch(graph)->max_ctx);
    if (stride > win) return h->error_set(err, MOPT_E_INVALID, "eval.perplexity", "stride %d exceeds ctx %d", stride, win);
    int32_t *ids = NULL;
    size_t n = 0;
    mopt_status st = eval_tokens(h, model, data, h->opt_int(opts, "limit_tokens"), &ids, &n, err);
    if (st) return st;
    const int64_t nw = h->perplexity_windows((int64_t)n, win, stride);
    if (nw == 0) {
        free(ids);
        return h->error_set(err, MOPT_E_INVALID, "eval.perplexity", "%s: %zu tokens, fewer than one window of %d", data, n, win);
    }
    double *wnll = malloc((size_t)nw * sizeof *wnll);
    mopt_session *s = wnll ? eval_session(h, ctx, graph, win, err) : NULL;
    if (!s) {
        free(ids);
        free(wnll);
        return err && err->code ? (mopt_status)err->code : h->error_set(err, MOPT_E_NOMEM, "eval.perplexity", "out of memory");
    }
    eval_progress link = {h, ctx};
    mopt_ppl_result r;
    st = h->perplexity_strided(s, ids, (int64_t)n, win, stride, wnll, eval_on_progress, &link, &r, err);
    h->session_free(s);
    free(ids);
    if (!st) {
        h->report_metric(report, "ppl", r.ppl);
        h->report_metric(report, "nll", r.nll);
        h->report_metric(report, "tokens_scored", (double)r.tokens_scored);
        h->report_metric(report, "windows", (double)r.windows);
        h->report_metric(report, "ctx", r.ctx);
        h->report_metric(report, "stride", stride);
        h->report_metric(report, "tokens", (double)n);
        h->report_string(report, "data", data);
        h->report_series(report, "window_nll", wnll, r.windows);
    }
    free(wnll);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"data", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "UTF-8 text file to score", NULL, 0, -1, NULL},
    {"ctx", MOPT_OPT_INT, 0, "window length in tokens; each window is scored on positions 1..ctx-1", "256", 2, 1 << 20, NULL},
    {"stride", MOPT_OPT_INT, 0, "tokens between window starts (0: ctx, non-overlapping); later windows score only their last stride tokens", "0", 0, 1 << 20, NULL},
    {"limit_tokens", MOPT_OPT_INT, 0, "score only the first N tokens of the file (0: all)", "0", 0, (double)(1LL << 40), NULL},
};

MOPT_PASS_DEFINE(eval_perplexity_pass, MOPT_PASS_ANALYSIS, "eval.perplexity",
                 "perplexity of the model on a text file, with per-window NLL",
                 opts, run);
