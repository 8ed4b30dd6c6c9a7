/* eval.perplexity: the runtime's perplexity (lit.json protocol) as a pass. */
#include <stdlib.h>

#include "eval_plugin.h"

typedef struct {
    const mopt_host_api *host;
    mopt_pass_ctx *ctx;
} progress_link;

static int on_window(void *user, int64_t done, int64_t total) {
    progress_link *p = user;
    p->host->progress(p->ctx, done, total);
    return 0;
}

static mopt_status run(const mopt_host_api *host, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *opts,
                       mopt_report *report, mopt_error *err) {
    const char *data = host->opt_string(opts, "data");
    const int32_t win = (int32_t)host->opt_int(opts, "ctx");
    mopt_model *model = host->ctx_model(ctx);
    if (!model || !graph) return host->error_set(err, MOPT_E_INVALID, "eval.perplexity", "needs a model");
    const mopt_tokenizer *tok = host->model_tokenizer(model);
    if (!tok) return host->error_set(err, MOPT_E_INVALID, "eval.perplexity", "the model has no tokenizer");
    if (win > host->graph_arch(graph)->max_ctx)
        return host->error_set(err, MOPT_E_INVALID, "eval.perplexity", "ctx %d exceeds the model's context of %d", win,
                               host->graph_arch(graph)->max_ctx);
    char *text = NULL;
    size_t len = 0;
    mopt_status st = host->read_file(data, &text, &len, err);
    if (st) return st;
    if (len == 0) {
        host->free(text);
        return host->error_set(err, MOPT_E_INVALID, "eval.perplexity", "%s: empty data file, nothing to score", data);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    st = host->tokenizer_encode(tok, text, len, 0, &ids, &n, err);
    host->free(text);
    if (st) return st;
    if ((int64_t)n < win) {
        free(ids);
        return host->error_set(err, MOPT_E_INVALID, "eval.perplexity", "%s: %zu tokens, fewer than one window of %d",
                               data, n, win);
    }
    mopt_session_opts so = {0};
    so.struct_size = sizeof so;
    so.n_threads = host->ctx_n_threads(ctx);
    so.max_ctx = win;
    mopt_session *s = host->session_new(graph, &so, err);
    if (!s) {
        free(ids);
        return err ? (mopt_status)err->code : MOPT_E_NOMEM;
    }
    progress_link link = {host, ctx};
    mopt_ppl_result r;
    st = host->perplexity(s, ids, (int64_t)n, win, on_window, &link, &r, err);
    host->session_free(s);
    free(ids);
    if (st) return st;
    host->report_metric(report, "ppl", r.ppl);
    host->report_metric(report, "nll", r.nll);
    host->report_metric(report, "tokens_scored", (double)r.tokens_scored);
    host->report_metric(report, "windows", (double)r.windows);
    host->report_metric(report, "ctx", r.ctx);
    host->report_metric(report, "tokens", (double)n);
    host->report_string(report, "data", data);
    return MOPT_OK;
}

static const mopt_opt_spec opts[] = {
    {"data", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "UTF-8 text file to score", NULL, 0, -1, NULL},
    {"ctx", MOPT_OPT_INT, 0, "window length in tokens (non-overlapping windows, positions 1..ctx-1 scored)", "256", 2,
     1 << 20, NULL},
};

const mopt_pass_desc eval_perplexity_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_ANALYSIS,
    .name = "eval.perplexity",
    .summary = "perplexity of the model on a text file (non-overlapping windows)",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
};
