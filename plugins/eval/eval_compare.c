/* eval.compare: the pipeline's model (candidate) against a baseline model on the
 * same text and windows: mean and p99 token KL(p_base || p_cand), top-1
 * agreement, mean |delta log p| of the correct token, both perplexities and
 * their ratio with a paired bootstrap 95% interval over windows (seeded). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_plugin.h"
#include "eval_util.h"

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    mopt_model *cand = h->ctx_model(ctx);
    if (!cand || !graph) return h->error_set(err, MOPT_E_INVALID, "eval.compare", "needs a model");
    const int32_t win = (int32_t)h->opt_int(o, "ctx"), B = (int32_t)h->opt_int(o, "bootstrap");
    mopt_model *base = h->model_load(h->opt_string(o, "baseline"), NULL, err);
    if (!base) return err ? (mopt_status)err->code : MOPT_E_IO;
    mopt_status st = eval_same_tokenizer(h, base, cand, "eval.compare", err);
    const int32_t V = h->graph_arch(graph)->vocab_size;
    if (!st && h->graph_arch(h->model_graph(base))->vocab_size != V)
        st = h->error_set(err, MOPT_E_INVALID, "eval.compare", "vocabulary sizes differ (%d vs %d)",
                          h->graph_arch(h->model_graph(base))->vocab_size, V);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!st) st = eval_tokens(h, cand, h->opt_string(o, "data"), h->opt_int(o, "limit_tokens"), &ids, &n, err);
    const int64_t nw = st ? 0 : (int64_t)n / win, per = win - 1, ntok = nw * per;
    if (!st && nw == 0) st = h->error_set(err, MOPT_E_INVALID, "eval.compare", "%zu tokens, fewer than one window of %d", n, win);
    mopt_session *sc = NULL, *sb = NULL;
    double *kl = NULL, *wc = NULL, *wb = NULL, *lpc = NULL, *lpb = NULL, *ratios = NULL;
    float *lb = NULL;
    if (!st) {
        sc = eval_session(h, ctx, graph, win, err);
        sb = sc ? eval_session(h, ctx, h->model_graph(base), win, err) : NULL;
        kl = malloc((size_t)ntok * sizeof *kl);
        wc = malloc((size_t)nw * sizeof *wc);
        wb = malloc((size_t)nw * sizeof *wb);
        lpc = malloc((size_t)V * sizeof *lpc);
        lpb = malloc((size_t)V * sizeof *lpb);
        lb = malloc((size_t)win * V * sizeof *lb);
        ratios = malloc((size_t)(B > 0 ? B : 1) * sizeof *ratios);
        if (!sc || !sb) st = err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
        else if (!kl || !wc || !wb || !lpc || !lpb || !lb || !ratios)
            st = h->error_set(err, MOPT_E_NOMEM, "eval.compare", "out of memory");
    }
    double sum_kl = 0, sum_dlp = 0;
    int64_t agree = 0, k = 0;
    for (int64_t w = 0; w < nw && !st; w++) {
        const int32_t *t = ids + w * win;
        const float *l;
        if ((st = h->session_truncate(sb, 0, err)) || (st = h->session_forward(sb, t, win, 1, &l, err))) break;
        memcpy(lb, l, (size_t)win * V * sizeof *lb);
        if ((st = h->session_truncate(sc, 0, err)) || (st = h->session_forward(sc, t, win, 1, &l, err))) break;
        double nc = 0, nb = 0;
        for (int32_t p = 0; p < per; p++, k++) {
            eval_log_softmax(l + (size_t)p * V, V, lpc);
            eval_log_softmax(lb + (size_t)p * V, V, lpb);
            double d = 0;
            for (int32_t i = 0; i < V; i++) d += exp(lpb[i]) * (lpb[i] - lpc[i]);
            kl[k] = d > 0 ? d : 0; /* rounding can make an exact zero slightly negative */
            sum_kl += kl[k];
            agree += h->argmax(l + (size_t)p * V, V) == h->argmax(lb + (size_t)p * V, V);
            const int32_t y = t[p + 1];
            nc -= lpc[y];
            nb -= lpb[y];
            sum_dlp += fabs(lpc[y] - lpb[y]);
        }
        if (!isfinite(nc) || !isfinite(nb)) {
            st = h->error_set(err, MOPT_E_RUNTIME, "eval.compare", "window %lld: the %s model's logits are not finite", (long long)w,
                              isfinite(nc) ? "baseline" : "candidate");
            break;
        }
        wc[w] = nc / per;
        wb[w] = nb / per;
        h->progress(ctx, w + 1, nw);
    }
    if (!st) {
        const double mc = eval_mean(wc, nw), mb = eval_mean(wb, nw);
        /* paired bootstrap over windows: resample window indices, ratio of the two perplexities */
        uint64_t rs = 0x853c49e6748fea9bull ^ (uint64_t)(h->opt_int(o, "seed") + 1) * 0x9E3779B97F4A7C15ull;
        for (int32_t b = 0; b < B; b++) {
            double a = 0, c = 0;
            for (int64_t i = 0; i < nw; i++) {
                int64_t j = (int64_t)(mopt_rand(&rs) % (uint64_t)nw);
                a += wc[j];
                c += wb[j];
            }
            ratios[b] = exp((a - c) / (double)nw);
        }
        double lo = B > 0 ? h->quantile(ratios, B, 0.025) : NAN, hi = B > 0 ? h->quantile(ratios, B, 0.975) : NAN;
        h->report_metric(report, "ppl", exp(mc));
        h->report_metric(report, "ppl_baseline", exp(mb));
        h->report_metric(report, "ppl_ratio", exp(mc - mb));
        h->report_metric(report, "ppl_ratio_ci95_lo", lo);
        h->report_metric(report, "ppl_ratio_ci95_hi", hi);
        double ci[2] = {lo, hi};
        h->report_series(report, "ppl_ratio_ci95", ci, 2);
        h->report_metric(report, "kl_mean", sum_kl / (double)ntok);
        h->report_metric(report, "kl_p99", h->quantile(kl, ntok, 0.99));
        h->report_metric(report, "top1_agree", (double)agree / (double)ntok);
        h->report_metric(report, "mean_abs_dlogp", sum_dlp / (double)ntok);
        h->report_metric(report, "tokens_scored", (double)ntok);
        h->report_metric(report, "windows", (double)nw);
        h->report_metric(report, "ctx", win);
        h->report_string(report, "baseline", h->opt_string(o, "baseline"));
        h->report_string(report, "data", h->opt_string(o, "data"));
        h->report_series(report, "window_nll", wc, nw);
        h->report_series(report, "window_nll_baseline", wb, nw);
    }
    if (sc) h->session_free(sc);
    if (sb) h->session_free(sb);
    free(kl);
    free(wc);
    free(wb);
    free(lpc);
    free(lpb);
    free(lb);
    free(ratios);
    free(ids);
    h->model_free(base);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"baseline", MOPT_OPT_MODEL, MOPT_OPT_REQUIRED, "the reference model (same tokenizer)", NULL, 0, -1, NULL},
    {"data", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "UTF-8 text both models score", NULL, 0, -1, NULL},
    {"ctx", MOPT_OPT_INT, 0, "window length (non-overlapping windows, positions 1..ctx-1 scored)", "256", 2, 1 << 20, NULL},
    {"limit_tokens", MOPT_OPT_INT, 0, "use only the first N tokens (0: all)", "0", 0, (double)(1LL << 40), NULL},
    {"bootstrap", MOPT_OPT_INT, 0, "bootstrap resamples for the ppl-ratio interval", "1000", 0, 1000000, NULL},
    {"seed", MOPT_OPT_INT, 0, "bootstrap seed", "0", 0, 2147483647, NULL},
};

MOPT_PASS_DEFINE(eval_compare_pass, MOPT_PASS_ANALYSIS, "eval.compare",
                 "candidate vs baseline: KL, top-1 agreement, ppl ratio with a bootstrap 95% interval",
                 opts, run);
