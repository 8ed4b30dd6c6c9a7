/* eval.generate_match: greedy continuations of a prompt set by the pipeline's
 * model and a baseline; the share of prompts whose first N tokens match
 * exactly and the mean position of the first divergence (N when identical). */
#include <stdlib.h>
#include <string.h>

#include "eval_plugin.h"
#include "eval_util.h"

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    mopt_model *cand = h->ctx_model(ctx);
    if (!cand || !g) return h->error_set(err, MOPT_E_INVALID, "eval.generate_match", "needs a model");
    const int32_t N = (int32_t)h->opt_int(o, "n");
    mopt_model *base = h->model_load(h->opt_string(o, "baseline"), NULL, err);
    if (!base) return err ? (mopt_status)err->code : MOPT_E_IO;
    mopt_status st = eval_same_tokenizer(h, base, cand, "eval.generate_match", err);
    char *text = NULL;
    size_t len = 0;
    if (!st) st = h->read_file(h->opt_string(o, "prompts"), &text, &len, err);
    const mopt_arch *a = h->graph_arch(g);
    mopt_session *sc = st ? NULL : eval_session(h, ctx, g, a->max_ctx, err);
    mopt_session *sb = sc ? eval_session(h, ctx, h->model_graph(base), a->max_ctx, err) : NULL;
    if (!st && (!sc || !sb)) st = err ? (mopt_status)err->code : MOPT_E_NOMEM;
    int32_t *oc = malloc((size_t)N * sizeof *oc), *ob = malloc((size_t)N * sizeof *ob);
    int64_t prompts = 0, exact = 0;
    double div_sum = 0;
    for (char *line = text, *next; !st && line && *line; line = next) {
        next = strchr(line, '\n');
        size_t ll = next ? (size_t)(next - line) : strlen(line);
        if (next) next++;
        if (ll == 0) continue;
        int32_t *ids;
        size_t n;
        if ((st = h->tokenizer_encode(h->model_tokenizer(cand), line, ll, MOPT_TOK_ADD_SPECIAL, &ids, &n, err))) break;
        if (n == 0 || (int64_t)n + N > a->max_ctx) {
            free(ids);
            continue;
        }
        st = eval_greedy(h, sc, a->vocab_size, ids, (int32_t)n, N, oc, NULL, NULL, err);
        if (!st) st = eval_greedy(h, sb, a->vocab_size, ids, (int32_t)n, N, ob, NULL, NULL, err);
        free(ids);
        if (st) break;
        int32_t d = 0;
        while (d < N && oc[d] == ob[d]) d++;
        exact += d == N;
        div_sum += d;
        prompts++;
        h->progress(ctx, prompts, prompts);
    }
    if (!st && prompts == 0) st = h->error_set(err, MOPT_E_INVALID, "eval.generate_match", "%s holds no usable prompt (one per line)", h->opt_string(o, "prompts"));
    if (!st) {
        h->report_metric(report, "exact_match", (double)exact / (double)prompts);
        h->report_metric(report, "mean_first_divergence", div_sum / (double)prompts);
        h->report_metric(report, "prompts", (double)prompts);
        h->report_metric(report, "n", N);
    }
    free(oc);
    free(ob);
    h->free(text);
    if (sc) h->session_free(sc);
    if (sb) h->session_free(sb);
    h->model_free(base);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"baseline", MOPT_OPT_MODEL, MOPT_OPT_REQUIRED, "the reference model (same tokenizer)", NULL, 0, -1, NULL},
    {"prompts", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "prompts, one per line", NULL, 0, -1, NULL},
    {"n", MOPT_OPT_INT, 0, "greedy tokens compared per prompt", "32", 1, 1 << 16, NULL},
};

MOPT_PASS_DEFINE(eval_generate_match_pass, MOPT_PASS_ANALYSIS, "eval.generate_match",
                 "greedy outputs of candidate vs baseline: exact-match rate and mean first divergence",
                 opts, run);
