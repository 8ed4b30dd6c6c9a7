/* Shared helpers for the eval passes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval_util.h"

int eval_on_progress(void *user, int64_t done, int64_t total) {
    eval_progress *p = user;
    p->host->progress(p->ctx, done, total);
    return 0;
}

mopt_status eval_tokens(const mopt_host_api *h, const mopt_model *m, const char *path, int64_t limit, int32_t **ids,
                        size_t *n, mopt_error *err) {
    const mopt_tokenizer *tok = h->model_tokenizer(m);
    if (!tok) return h->error_set(err, MOPT_E_INVALID, "eval", "%s has no tokenizer", h->model_path(m));
    mopt_status st = h->tokenizer_encode_file(tok, path, 0, ids, n, err);
    if (!st && limit > 0 && (int64_t)*n > limit) *n = (size_t)limit;
    return st;
}

mopt_session *eval_session(const mopt_host_api *h, mopt_pass_ctx *ctx, const mopt_graph *g, int32_t max_ctx,
                           mopt_error *err) {
    mopt_session_opts so = {0};
    so.struct_size = sizeof so;
    so.n_threads = h->ctx_n_threads(ctx);
    so.max_ctx = max_ctx;
    return h->session_new(g, &so, err);
}

mopt_status eval_same_tokenizer(const mopt_host_api *h, const mopt_model *a, const mopt_model *b, const char *pass,
                                mopt_error *err) {
    const mopt_tokenizer *ta = h->model_tokenizer(a), *tb = h->model_tokenizer(b);
    if (!ta || !tb) return h->error_set(err, MOPT_E_INVALID, pass, "both models need a tokenizer");
    int32_t diff;
    if (h->tokenizer_same_vocab(ta, tb, &diff)) return MOPT_OK;
    if (diff < 0)
        return h->error_set(err, MOPT_E_INVALID, pass, "%s has %d tokens but %s has %d: not the same tokenizer",
                            h->model_path(a), h->tokenizer_vocab_size(ta), h->model_path(b), h->tokenizer_vocab_size(tb));
    return h->error_set(err, MOPT_E_INVALID, pass, "token %d differs between %s and %s: not the same tokenizer", diff,
                        h->model_path(a), h->model_path(b));
}

double eval_mean(const double *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += v[i];
    return n ? s / (double)n : NAN;
}

double eval_stdev(const double *v, int64_t n) {
    if (n < 2) return 0;
    double m = eval_mean(v, n), s = 0;
    for (int64_t i = 0; i < n; i++) s += (v[i] - m) * (v[i] - m);
    return sqrt(s / (double)(n - 1));
}

void eval_log_softmax(const float *row, int32_t V, double *out) {
    double mx = row[0], z = 0;
    for (int32_t i = 1; i < V; i++) mx = row[i] > mx ? row[i] : mx;
    for (int32_t i = 0; i < V; i++) z += exp((double)row[i] - mx);
    double lz = log(z) + mx;
    for (int32_t i = 0; i < V; i++) out[i] = (double)row[i] - lz;
}

mopt_status eval_greedy(const mopt_host_api *h, mopt_session *s, int32_t vocab, const int32_t *prompt, int32_t n_prompt,
                        int32_t n_new, int32_t *out, double *lat, double *ttft_ms, mopt_error *err) {
    mopt_status st = h->session_truncate(s, 0, err);
    if (st) return st;
    const float *logits;
    double t0 = h->now();
    if ((st = h->session_forward(s, prompt, n_prompt, 0, &logits, err))) return st;
    double t1 = h->now();
    if (ttft_ms) *ttft_ms = (t1 - t0) * 1e3;
    for (int32_t i = 0; i < n_new; i++) {
        out[i] = h->argmax(logits, vocab);
        if (i + 1 == n_new) break;
        double a = h->now();
        if ((st = h->session_forward(s, &out[i], 1, 0, &logits, err))) return st;
        if (lat) lat[i] = (h->now() - a) * 1e3;
    }
    return MOPT_OK;
}
