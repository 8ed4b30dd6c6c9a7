/* Speculative decoding (see spec.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "spec.h"


static int by_prob_desc(const void *a, const void *b, void *ctx) {
    const float *p = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (p[x] != p[y]) return p[x] < p[y] ? 1 : -1;
    return x - y;
}

/* The sampling distribution of a logits row: softmax(l / T), restricted to the
 * top-p nucleus and renormalized. idx is scratch of V ints. */
static void distribution(const float *l, int32_t V, float T, float top_p, float *p, int32_t *idx) {
    float mx = l[0];
    for (int32_t i = 1; i < V; i++) mx = l[i] > mx ? l[i] : mx;
    double z = 0;
    for (int32_t i = 0; i < V; i++) z += (p[i] = expf((l[i] - mx) / T));
    for (int32_t i = 0; i < V; i++) p[i] = (float)(p[i] / z);
    if (top_p > 0 && top_p < 1) {
        for (int32_t i = 0; i < V; i++) idx[i] = i;
        qsort_r(idx, (size_t)V, sizeof *idx, by_prob_desc, p);
        double c = 0;
        int32_t kept = 0;
        while (kept < V) {
            c += p[idx[kept++]];
            if (c >= top_p) break;
        }
        for (int32_t i = kept; i < V; i++) p[idx[i]] = 0;
        for (int32_t i = 0; i < kept; i++) p[idx[i]] = (float)(p[idx[i]] / c);
    }
}

static int32_t draw(const float *p, int32_t V, uint64_t *rs) {
    double r = mopt_rand_uniform(rs), c = 0;
    int32_t last = 0;
    for (int32_t i = 0; i < V; i++) {
        if (p[i] <= 0) continue;
        c += p[i];
        last = i;
        if (r < c) return i;
    }
    return last;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

/* Prompt lookup: the tokens that followed the latest earlier occurrence of the last n tokens. */
static int32_t lookup(const int32_t *ctx, int32_t len, int32_t n, int32_t k, int32_t *prop) {
    if (len <= n) return 0;
    const int32_t *tail = ctx + len - n;
    for (int32_t s = len - n - 1; s >= 0; s--) {
        if (memcmp(ctx + s, tail, (size_t)n * sizeof *ctx) != 0) continue;
        int32_t m = 0;
        while (m < k && s + n + m < len) prop[m] = ctx[s + n + m], m++;
        return m;
    }
    return 0;
}

mopt_status spec_same_tokenizer(const mopt_host_api *h, const mopt_model *a, const mopt_model *b, mopt_error *err) {
    const mopt_tokenizer *ta = h->model_tokenizer(a), *tb = h->model_tokenizer(b);
    if (!ta || !tb) return h->error_set(err, MOPT_E_INVALID, "specdec", "both models need a tokenizer");
    int32_t diff;
    if (h->tokenizer_same_vocab(ta, tb, &diff)) return MOPT_OK;
    if (diff < 0)
        return h->error_set(err, MOPT_E_INVALID, "specdec", "the draft %s has %d tokens but the target %s has %d: not the same tokenizer",
                            h->model_path(b), h->tokenizer_vocab_size(tb), h->model_path(a), h->tokenizer_vocab_size(ta));
    return h->error_set(err, MOPT_E_INVALID, "specdec", "token %d differs between the target and the draft: not the same tokenizer", diff);
}

mopt_status spec_generate(const mopt_host_api *h, mopt_session *target, mopt_session *draft, int32_t V,
                          const int32_t *prompt, int32_t np, int32_t n_new, int32_t eos, const spec_cfg *cfg,
                          int32_t *out, int32_t *n_out, spec_stats *st_out, mopt_error *err) {
    const int32_t kmax = cfg->k > 0 ? cfg->k : 0, greedy = cfg->temperature <= 0;
    int32_t k = kmax;
    spec_stats S = {0};
    uint64_t rs = cfg->seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
    int32_t *ctx = malloc((size_t)(np + n_new + kmax + 2) * sizeof *ctx), *prop = malloc((size_t)(kmax + 1) * sizeof *prop);
    int32_t *idx = malloc((size_t)V * sizeof *idx);
    float *q = malloc((size_t)(kmax + 1) * V * sizeof *q), *p = malloc((size_t)V * sizeof *p);
    float *tl = malloc((size_t)(np + kmax + 1) * V * sizeof *tl);
    mopt_status st = ctx && prop && idx && q && p && tl ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, "specdec", "out of memory");
    int32_t len = np, tlen = 0, dlen = 0, produced = 0;
    if (!st) memcpy(ctx, prompt, (size_t)np * sizeof *ctx);
    if (!st) st = h->session_truncate(target, 0, err);
    if (!st && draft) st = h->session_truncate(draft, 0, err);
    double w0 = h->now();
    while (!st && produced < n_new) {
        /* 1. propose up to k tokens */
        int32_t m = 0;
        double t0 = h->now();
        if (k > 0 && draft) {
            const float *dl;
            int32_t pending = len - dlen; /* context the draft has not seen */
            st = h->session_forward(draft, ctx + dlen, pending, 0, &dl, err);
            dlen = len;
            for (; !st && m < k && produced + m < n_new; m++) {
                if (greedy) {
                    prop[m] = argmax(dl, V);
                } else {
                    distribution(dl, V, cfg->temperature, cfg->top_p, q + (size_t)m * V, idx);
                    prop[m] = draw(q + (size_t)m * V, V, &rs);
                }
                if (m + 1 < k && produced + m + 1 < n_new) st = h->session_forward(draft, &prop[m], 1, 0, &dl, err);
            }
            /* the draft has seen the context and every proposal but the last */
            dlen = len + (m > 0 ? m - 1 : 0);
            S.draft_s += h->now() - t0;
        } else if (k > 0 && cfg->uniform) {
            for (; m < k && produced + m < n_new; m++) {
                prop[m] = (int32_t)(mopt_rand(&rs) % (uint64_t)V);
                if (!greedy)
                    for (int32_t i = 0; i < V; i++) q[(size_t)m * V + i] = 1.0f / (float)V;
            }
        } else if (k > 0 && cfg->lookup_n > 0) {
            m = lookup(ctx, len, cfg->lookup_n, k < n_new - produced ? k : n_new - produced, prop);
            if (!greedy)
                for (int32_t i = 0; i < m; i++) { /* a lookup proposal is certain: q is one-hot */
                    memset(q + (size_t)i * V, 0, (size_t)V * sizeof *q);
                    q[(size_t)i * V + prop[i]] = 1;
                }
        }
        if (st) break;
        /* 2. the target scores the pending context plus the proposals in one call */
        const int32_t pend = len - tlen;
        memcpy(ctx + len, prop, (size_t)m * sizeof *ctx);
        const float *l;
        t0 = h->now();
        st = h->session_forward(target, ctx + tlen, pend + m, 1, &l, err);
        S.target_s += h->now() - t0;
        if (st) break;
        S.rounds++;
        memcpy(tl, l + (size_t)(pend - 1) * V, (size_t)(m + 1) * V * sizeof *tl); /* rows that judge the proposals */
        /* 3. accept / reject */
        int32_t acc = 0, next = -1;
        for (; acc < m; acc++) {
            const float *row = tl + (size_t)acc * V;
            if (greedy) {
                int32_t t = argmax(row, V);
                if (t != prop[acc]) {
                    next = t;
                    break;
                }
            } else {
                distribution(row, V, cfg->temperature, cfg->top_p, p, idx);
                const float *qi = q + (size_t)acc * V;
                double pr = p[prop[acc]], qr = qi[prop[acc]];
                if (mopt_rand_uniform(&rs) < (qr > 0 ? fmin(1.0, pr / qr) : 0.0)) continue;
                double z = 0;
                for (int32_t i = 0; i < V; i++) z += (p[i] = p[i] > qi[i] ? p[i] - qi[i] : 0.0f);
                if (z > 0)
                    for (int32_t i = 0; i < V; i++) p[i] = (float)(p[i] / z);
                else
                    distribution(row, V, cfg->temperature, cfg->top_p, p, idx);
                next = draw(p, V, &rs);
                break;
            }
        }
        if (next < 0) { /* all accepted (or nothing proposed): one token from the target's last row */
            const float *row = tl + (size_t)m * V;
            if (greedy) next = argmax(row, V);
            else {
                distribution(row, V, cfg->temperature, cfg->top_p, p, idx);
                next = draw(p, V, &rs);
            }
        }
        S.proposed += m;
        S.accepted += acc;
        /* 4. keep the accepted prefix and the replacement; roll both caches back */
        len += acc;
        ctx[len++] = next;
        tlen = len - 1; /* the target has seen everything but the new token */
        st = h->session_truncate(target, tlen, err);
        if (!st && draft && dlen > len - 1) {
            dlen = len - 1;
            st = h->session_truncate(draft, dlen, err);
        }
        int32_t added = acc + 1;
        for (int32_t i = 0; i < added && produced < n_new; i++) {
            out[produced] = ctx[len - added + i];
            if (out[produced++] == eos) {
                n_new = produced;
                break;
            }
        }
        if (cfg->adaptive && kmax > 0) {
            if (m > 0 && acc == m) k = k + 1 <= kmax ? k + 1 : kmax;
            else if (acc == 0 && k > 1) k--;
        }
    }
    S.wall_s = h->now() - w0;
    S.generated = produced;
    *n_out = produced;
    if (st_out) *st_out = S;
    free(ctx);
    free(prop);
    free(idx);
    free(q);
    free(p);
    free(tl);
    return st;
}
