/* eval.ab: an A/B traffic-split simulation. Requests are windows of a text
 * (a prompt of `prompt_tokens` and the reference continuation after it). A
 * seeded router sends each request to B (the `candidate` model) with
 * probability `split`, else to A (the pipeline's model). Each request is run
 * on its arm: greedy generation of `gen` tokens (timed), the NLL of the
 * reference continuation, and agreement of the output with A's output on the
 * same prompt. Per arm: latency percentiles, throughput, mean NLL, agreement;
 * then B - A differences with bootstrap 95% intervals and whether they exclude 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eval_plugin.h"
#include "eval_util.h"

typedef struct {
    double latency_ms, nll, agree, tok_s;
} outcome;

/* mean NLL of ref[n] after prompt[np] */
static mopt_status continuation_nll(const mopt_host_api *h, mopt_session *s, int32_t V, const int32_t *seq, int32_t np,
                                    int32_t n, double *nll, mopt_error *err) {
    const float *l;
    mopt_status st = h->session_truncate(s, 0, err);
    if (!st) st = h->session_forward(s, seq, np + n, 1, &l, err);
    if (st) return st;
    double *lp = malloc((size_t)V * sizeof *lp), sum = 0;
    if (!lp) return h->error_set(err, MOPT_E_NOMEM, "eval.ab", "out of memory");
    for (int32_t p = np - 1; p < np + n - 1; p++) {
        eval_log_softmax(l + (size_t)p * V, V, lp);
        sum -= lp[seq[p + 1]];
    }
    free(lp);
    *nll = sum / n;
    return MOPT_OK;
}

static void diff_ci(const mopt_host_api *h, const double *a, int64_t na, const double *b, int64_t nb, uint64_t *rs, int32_t B,
                    double *d, double *lo, double *hi) {
    *d = eval_mean(b, nb) - eval_mean(a, na);
    double *r = malloc((size_t)B * sizeof *r);
    if (!r || na == 0 || nb == 0) {
        *lo = *hi = NAN;
        free(r);
        return;
    }
    for (int32_t k = 0; k < B; k++) {
        double sa = 0, sb = 0;
        for (int64_t i = 0; i < na; i++) sa += a[mopt_rand(rs) % (uint64_t)na];
        for (int64_t i = 0; i < nb; i++) sb += b[mopt_rand(rs) % (uint64_t)nb];
        r[k] = sb / (double)nb - sa / (double)na;
    }
    *lo = h->quantile(r, B, 0.025);
    *hi = h->quantile(r, B, 0.975);
    free(r);
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       mopt_report *report, mopt_error *err) {
    mopt_model *A = h->ctx_model(ctx);
    if (!A || !g) return h->error_set(err, MOPT_E_INVALID, "eval.ab", "needs a model");
    const int32_t np = (int32_t)h->opt_int(o, "prompt_tokens"), gen = (int32_t)h->opt_int(o, "gen");
    const int32_t maxr = (int32_t)h->opt_int(o, "requests");
    const double split = h->opt_float(o, "split");
    mopt_model *Bm = h->model_load(h->opt_string(o, "candidate"), NULL, err);
    if (!Bm) return err ? (mopt_status)err->code : MOPT_E_IO;
    mopt_status st = eval_same_tokenizer(h, A, Bm, "eval.ab", err);
    const mopt_arch *a = h->graph_arch(g);
    const int32_t V = a->vocab_size, win = np + gen;
    int32_t *ids = NULL;
    size_t n = 0;
    if (!st && win > a->max_ctx) st = h->error_set(err, MOPT_E_INVALID, "eval.ab", "prompt_tokens + gen = %d exceeds the context of %d", win, a->max_ctx);
    if (!st) st = eval_tokens(h, A, h->opt_string(o, "data"), 0, &ids, &n, err);
    const int64_t avail = st ? 0 : (int64_t)n / win, R = avail < maxr ? avail : maxr;
    if (!st && R == 0) st = h->error_set(err, MOPT_E_INVALID, "eval.ab", "the data holds no request of %d tokens", win);
    mopt_session *sa = st ? NULL : eval_session(h, ctx, g, win, err);
    mopt_session *sb = sa ? eval_session(h, ctx, h->model_graph(Bm), win, err) : NULL;
    if (!st && (!sa || !sb)) st = err ? (mopt_status)err->code : MOPT_E_NOMEM;
    outcome *res[2] = {calloc((size_t)(R ? R : 1), sizeof(outcome)), calloc((size_t)(R ? R : 1), sizeof(outcome))};
    int64_t cnt[2] = {0, 0};
    int32_t *outA = malloc((size_t)gen * sizeof *outA), *outX = malloc((size_t)gen * sizeof *outX);
    double *lat = malloc((size_t)gen * sizeof *lat);
    uint64_t rs = 0x2545F4914F6CDD1Dull ^ (uint64_t)(h->opt_int(o, "seed") + 7) * 0x9E3779B97F4A7C15ull;
    for (int64_t r = 0; r < R && !st; r++) {
        const int32_t *seq = ids + r * win;
        const int arm = mopt_rand_uniform(&rs) < split; /* 1: B */
        mopt_session *s = arm ? sb : sa;
        double ttft;
        /* A's output is the reference for agreement (shadow traffic, not timed) */
        if ((st = eval_greedy(h, sa, V, seq, np, gen, outA, NULL, NULL, err))) break;
        double t0 = h->now();
        if ((st = eval_greedy(h, s, V, seq, np, gen, outX, lat, &ttft, err))) break;
        double secs = h->now() - t0;
        outcome *oc = &res[arm][cnt[arm]++];
        oc->latency_ms = secs * 1e3;
        oc->tok_s = gen / secs;
        int32_t same = 0;
        for (int32_t i = 0; i < gen; i++) same += outX[i] == outA[i];
        oc->agree = (double)same / gen;
        if ((st = continuation_nll(h, s, V, seq, np, gen, &oc->nll, err))) break;
        h->progress(ctx, r + 1, R);
    }
    if (!st) {
        const char *arm_name[2] = {"a", "b"};
        double *lat_arm[2], *nll_arm[2];
        for (int k = 0; k < 2; k++) {
            lat_arm[k] = malloc((size_t)(cnt[k] ? cnt[k] : 1) * sizeof(double));
            nll_arm[k] = malloc((size_t)(cnt[k] ? cnt[k] : 1) * sizeof(double));
            double agree = 0, toks = 0;
            for (int64_t i = 0; i < cnt[k]; i++) {
                lat_arm[k][i] = res[k][i].latency_ms;
                nll_arm[k][i] = res[k][i].nll;
                agree += res[k][i].agree;
                toks += res[k][i].tok_s;
            }
            char key[64];
#define M(name, v) (snprintf(key, sizeof key, "%s_%s", arm_name[k], name), h->report_metric(report, key, v))
            M("requests", (double)cnt[k]);
            M("latency_ms_p50", h->quantile(lat_arm[k], cnt[k], 0.5));
            M("latency_ms_p95", h->quantile(lat_arm[k], cnt[k], 0.95));
            M("latency_ms_p99", h->quantile(lat_arm[k], cnt[k], 0.99));
            M("tok_s", cnt[k] ? toks / cnt[k] : NAN);
            M("nll", eval_mean(nll_arm[k], cnt[k]));
            M("agree_with_a", cnt[k] ? agree / cnt[k] : NAN);
#undef M
            snprintf(key, sizeof key, "latency_ms_%s", k ? "B" : "A");
            h->report_series(report, key, lat_arm[k], cnt[k]);
        }
        double d, lo, hi;
        diff_ci(h, nll_arm[0], cnt[0], nll_arm[1], cnt[1], &rs, 1000, &d, &lo, &hi);
        h->report_metric(report, "nll_diff", d);
        h->report_metric(report, "nll_diff_ci95_lo", lo);
        h->report_metric(report, "nll_diff_ci95_hi", hi);
        h->report_metric(report, "nll_diff_significant", isfinite(lo) && (lo > 0 || hi < 0));
        diff_ci(h, lat_arm[0], cnt[0], lat_arm[1], cnt[1], &rs, 1000, &d, &lo, &hi);
        h->report_metric(report, "latency_ms_diff", d);
        h->report_metric(report, "latency_ms_diff_ci95_lo", lo);
        h->report_metric(report, "latency_ms_diff_ci95_hi", hi);
        h->report_metric(report, "latency_diff_significant", isfinite(lo) && (lo > 0 || hi < 0));
        h->report_metric(report, "speedup", h->quantile(lat_arm[0], cnt[0], 0.5) / h->quantile(lat_arm[1], cnt[1], 0.5));
        h->report_metric(report, "split", split);
        h->report_string(report, "candidate", h->opt_string(o, "candidate"));
        for (int k = 0; k < 2; k++) free(lat_arm[k]), free(nll_arm[k]);
    }
    free(res[0]);
    free(res[1]);
    free(outA);
    free(outX);
    free(lat);
    free(ids);
    if (sa) h->session_free(sa);
    if (sb) h->session_free(sb);
    h->model_free(Bm);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"candidate", MOPT_OPT_MODEL, MOPT_OPT_REQUIRED, "arm B (arm A is the pipeline's model)", NULL, 0, -1, NULL},
    {"data", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "text cut into requests (prompt + reference continuation)", NULL, 0, -1, NULL},
    {"split", MOPT_OPT_FLOAT, 0, "fraction of requests routed to B", "0.5", 0, 1, NULL},
    {"requests", MOPT_OPT_INT, 0, "requests to simulate (at most what the text holds)", "64", 1, 1 << 20, NULL},
    {"prompt_tokens", MOPT_OPT_INT, 0, "prompt length of each request", "64", 1, 1 << 16, NULL},
    {"gen", MOPT_OPT_INT, 0, "tokens generated (and reference tokens scored) per request", "32", 1, 1 << 16, NULL},
    {"seed", MOPT_OPT_INT, 0, "router and bootstrap seed", "0", 0, 2147483647, NULL},
};

MOPT_PASS_DEFINE(eval_ab_pass, MOPT_PASS_ANALYSIS, "eval.ab",
                 "A/B traffic split: per-arm latency, throughput, NLL and agreement, differences with 95% intervals",
                 opts, run);
