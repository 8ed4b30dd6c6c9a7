/* quant.auto (ModelOpt's auto_quantize): which format each decoder linear
 * should take under a bits-per-weight budget.
 *
 * 1. Sensitivity: for every linear and candidate format, the linear alone is
 *    put in that format and the model's next-token distributions on the
 *    calibration windows are compared with the unquantized model's (mean KL
 *    divergence per token). int4_awq is judged by round-to-nearest int4 at
 *    the same group size (AWQ only lowers that error; its scale search runs
 *    once, on the linears that take it).
 * 2. Assignment: the choice per linear that minimizes the total sensitivity
 *    under the budget (storage bytes, scales included): a Lagrangian search
 *    over sensitivity + lambda * bytes, then the best upgrades (least
 *    sensitivity per byte) that still fit.
 * 3. The plan is reported per linear and as a recipe (mopt_pipeline_add_recipe:
 *    one entry per format, its linears joined by '|'); `mopt quantize --method
 *    auto` and Lua's {recipe = report.strings.recipe} then quantize. The pass
 *    itself leaves the model as it found it. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"
#include "passes.h"
#include "qcommon.h"

enum { C_INT4_AWQ, C_INT4, C_INT8, C_FP8, C_NVFP4, C_MXFP4, C_MXFP8, C_KEEP, C_COUNT };
static const char *const cand_names[C_COUNT] = {"int4_awq", "int4", "int8", "fp8", "nvfp4", "mxfp4", "mxfp8", "keep"};

/* Linear l's weight in candidate c (NULL for keep, or with err set when the format cannot hold it). */
static mopt_tensor *cand_tensor(const mopt_host_api *h, int c, const qlinear *l, const float *W, int32_t group, mopt_error *err) {
    const int64_t out = l->out, in = l->in;
    if (c == C_INT4_AWQ || c == C_INT4 || c == C_INT8) {
        const qspec sp = {.bits = c == C_INT8 ? 8 : 4, .group = c == C_INT8 ? -1 : group, .sym = c == C_INT8};
        return q_rtn_tensor(h, l, sp, W, "quant.auto", err);
    }
    if (c == C_FP8) {
        uint8_t *q = malloc((size_t)(out * in));
        float *s = malloc((size_t)out * sizeof *s);
        mopt_tensor *t = NULL;
        if (q && s) {
            q_fp8_rows(h, W, out, in, 0, 0, q, s);
            t = h->fp8_pack(l->wname, out, in, q, s, out, MOPT_QUANT_ACT_PER_TOKEN, 0, err);
        } else {
            h->error_set(err, MOPT_E_NOMEM, "quant.auto", "out of memory");
        }
        free(q), free(s);
        return t;
    }
    const mopt_mxfp_kind k = c == C_NVFP4 ? MOPT_MXFP_NVFP4 : c == C_MXFP4 ? MOPT_MXFP_MXFP4 : MOPT_MXFP_MXFP8;
    return h->mxfp_quantize(l->wname, k, out, in, W, MOPT_QUANT_ACT_PER_TOKEN, 0, err);
}

/* Log-softmax of logits [V] into out [V]. */
static void log_softmax(const float *x, int32_t V, float *out) {
    float mx = -INFINITY;
    for (int32_t v = 0; v < V; v++) mx = fmaxf(mx, x[v]);
    double sum = 0;
    for (int32_t v = 0; v < V; v++) sum += exp((double)(x[v] - mx));
    const float lse = mx + (float)log(sum);
    for (int32_t v = 0; v < V; v++) out[v] = x[v] - lse;
}

typedef struct {
    const mopt_host_api *h;
    mopt_pass_ctx *ctx;
    mopt_graph *g;
    const int32_t *tokens;
    int32_t N, L, V;
    float *base; /* [N, L, V] the unquantized model's log-probabilities */
    float *lp;   /* [V] scratch */
} judge;

/* Runs the windows through the graph as it stands: the log-probabilities into j->base (base != 0), else the mean
 * KL(base || model) per token into *kl. */
static mopt_status run_windows(judge *j, int base, double *kl, mopt_error *err) {
    const mopt_host_api *h = j->h;
    mopt_session_opts so = {0};
    so.struct_size = sizeof so;
    so.n_threads = h->ctx_n_threads(j->ctx);
    so.max_ctx = j->L;
    mopt_session *s = h->session_new(j->g, &so, err);
    if (!s) return err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    mopt_status st = MOPT_OK;
    double sum = 0;
    for (int32_t w = 0; w < j->N && !st; w++) {
        const float *logits;
        if ((st = h->session_truncate(s, 0, err)) || (st = h->session_forward(s, j->tokens + (size_t)w * j->L, j->L, 1, &logits, err)))
            break;
        for (int32_t t = 0; t < j->L; t++) {
            float *bp = j->base + ((size_t)w * j->L + t) * j->V;
            if (base) {
                log_softmax(logits + (size_t)t * j->V, j->V, bp);
                continue;
            }
            log_softmax(logits + (size_t)t * j->V, j->V, j->lp);
            double k = 0;
            for (int32_t v = 0; v < j->V; v++) k += exp((double)bp[v]) * ((double)bp[v] - j->lp[v]);
            sum += k;
        }
    }
    h->session_free(s);
    if (kl) *kl = sum / ((double)j->N * j->L);
    return st;
}

/* The pass text a candidate runs as in the recipe. */
static void cand_pass(const mopt_host_api *h, const mopt_options *o, int c, int32_t group, char *buf, size_t cap) {
    switch (c) {
    case C_INT4_AWQ:
        snprintf(buf, cap, "quant.awq<bits=4;group_size=%d;calib=%s;calib_samples=%lld;calib_len=%lld;seed=%lld>", group,
                 h->opt_string(o, "calib"), (long long)h->opt_int(o, "calib_samples"), (long long)h->opt_int(o, "calib_len"),
                 (long long)h->opt_int(o, "seed"));
        return;
    case C_INT4: snprintf(buf, cap, "quant.rtn<bits=4;group_size=%d>", group); return;
    case C_INT8: snprintf(buf, cap, "quant.rtn<bits=8;group_size=-1;sym=true>"); return;
    default: snprintf(buf, cap, "quant.%s", cand_names[c]); return;
    }
}

/* Per linear, the candidate minimizing sens + lambda * bytes; returns the total bytes. */
static double choose(int32_t n, const double *sens, const double *bytes, const int *cands, int nc, double lambda, int *pick) {
    double total = 0;
    for (int32_t i = 0; i < n; i++) {
        int best = -1;
        for (int k = 0; k < nc; k++) {
            const int c = cands[k];
            if (!isfinite(sens[i * C_COUNT + c])) continue;
            if (best < 0 || sens[i * C_COUNT + c] + lambda * bytes[i * C_COUNT + c] <
                                sens[i * C_COUNT + best] + lambda * bytes[i * C_COUNT + best])
                best = c;
        }
        pick[i] = best;
        total += best >= 0 ? bytes[i * C_COUNT + best] : INFINITY;
    }
    return total;
}

/* The cheapest assignment within the budget by lambda, then the upgrades with the most sensitivity saved per byte
 * that still fit. Returns 0 when even the smallest formats exceed the budget. */
static int assign(int32_t n, const double *sens, const double *bytes, const int *cands, int nc, double budget, int *pick) {
    double hi = 1.0;
    while (choose(n, sens, bytes, cands, nc, hi, pick) > budget && hi < 1e30) hi *= 4;
    if (choose(n, sens, bytes, cands, nc, hi, pick) > budget) return 0;
    double lo = 0;
    for (int it = 0; it < 100; it++) {
        const double mid = 0.5 * (lo + hi);
        if (choose(n, sens, bytes, cands, nc, mid, pick) > budget) lo = mid;
        else hi = mid;
    }
    double total = choose(n, sens, bytes, cands, nc, hi, pick);
    for (;;) {
        int bi = -1, bc = -1;
        double best = 0;
        for (int32_t i = 0; i < n; i++)
            for (int k = 0; k < nc; k++) {
                const int c = cands[k];
                const double ds = sens[i * C_COUNT + pick[i]] - sens[i * C_COUNT + c], db = bytes[i * C_COUNT + c] - bytes[i * C_COUNT + pick[i]];
                if (!isfinite(sens[i * C_COUNT + c]) || ds <= 0 || total + db > budget) continue;
                const double gain = db > 0 ? ds / db : INFINITY;
                if (bi < 0 || gain > best) bi = i, bc = c, best = gain;
            }
        if (bi < 0) break;
        total += bytes[bi * C_COUNT + bc] - bytes[bi * C_COUNT + pick[bi]];
        pick[bi] = bc;
    }
    return 1;
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, "quant.auto", "needs a model");
    int cands[C_COUNT], nc = 0;
    for (int32_t k = 0; k < h->opt_list_len(o, "candidates"); k++) {
        const char *name = h->opt_list_item(o, "candidates", k);
        int c = -1;
        for (int i = 0; i < C_COUNT; i++)
            if (!strcmp(name, cand_names[i])) c = i;
        if (c < 0)
            return h->error_set(err, MOPT_E_INVALID, "quant.auto",
                                "unknown candidate '%s' (int4_awq, int4, int8, fp8, nvfp4, mxfp4, mxfp8, keep)", name);
        int dup = 0;
        for (int i = 0; i < nc; i++) dup |= cands[i] == c;
        if (!dup) cands[nc++] = c;
    }
    if (nc < 2) return h->error_set(err, MOPT_E_INVALID, "quant.auto", "needs at least two candidates to choose between");
    const char *calib = h->opt_string(o, "calib");
    if (strlen(calib) > 1024 || strpbrk(calib, ";<>,"))
        return h->error_set(err, MOPT_E_INVALID, "quant.auto", "calib path '%.64s' is over 1024 bytes or holds ; < > or , which the recipe's pass text cannot carry",
                            calib);
    const int32_t group = (int32_t)h->opt_int(o, "group_size");
    const double budget_bits = h->opt_float(o, "bits_budget");
    qspec gsp = {.bits = 4, .group = group};
    mopt_status st = q_check_spec(h, "quant.auto", gsp, err);
    if (st) return st;
    qlinear *ls;
    int32_t n;
    if ((st = q_collect(h, g, o, &ls, &n, err))) return st;
    const mopt_arch *a = h->graph_arch(g);
    judge j = {h, ctx, g, NULL, 0, 0, a->vocab_size, NULL, NULL};
    int32_t *tokens = NULL;
    double *sens = malloc((size_t)n * C_COUNT * sizeof *sens), *bytes = malloc((size_t)n * C_COUNT * sizeof *bytes);
    int *pick = malloc((size_t)n * sizeof *pick);
    if (!sens || !bytes || !pick) st = h->error_set(err, MOPT_E_NOMEM, "quant.auto", "out of memory");
    if (!st) st = calib_windows(h, ctx, g, o, &tokens, &j.N, &j.L, err);
    j.tokens = tokens;
    if (!st) {
        j.base = malloc((size_t)j.N * j.L * j.V * sizeof *j.base);
        j.lp = malloc((size_t)j.V * sizeof *j.lp);
        if (!j.base || !j.lp)
            st = h->error_set(err, MOPT_E_NOMEM, "quant.auto", "out of memory for %d x %d x %d log-probabilities (lower calib_samples)", j.N,
                              j.L, j.V);
    }
    if (!st) st = run_windows(&j, 1, NULL, err);
    double weights = 0;
    for (int32_t i = 0; i < n && !st; i++) {
        const qlinear *l = &ls[i];
        weights += (double)l->out * l->in;
        float *W = q_weight_f32(h, g, l, err);
        if (!W) {
            st = err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
            break;
        }
        for (int c = 0; c < C_COUNT; c++) sens[i * C_COUNT + c] = INFINITY, bytes[i * C_COUNT + c] = INFINITY;
        for (int k = 0; k < nc && !st; k++) {
            const int c = cands[k];
            if (c == C_KEEP) {
                sens[i * C_COUNT + c] = 0;
                bytes[i * C_COUNT + c] = (double)h->weight_storage_bytes(h->graph_find_tensor(g, l->wname));
                continue;
            }
            mopt_error cerr = {0};
            mopt_tensor *t = cand_tensor(h, c, l, W, group, &cerr);
            if (!t) continue; /* the format cannot hold this linear: not a choice for it */
            bytes[i * C_COUNT + c] = (double)h->weight_storage_bytes(t);
            mopt_tensor *old = h->graph_swap_tensor(g, t, err);
            if (!old) {
                h->tensor_free(t);
                st = err && err->code ? (mopt_status)err->code : MOPT_E_INVALID;
                break;
            }
            st = run_windows(&j, 0, &sens[i * C_COUNT + c], err);
            h->tensor_free(h->graph_swap_tensor(g, old, NULL));
        }
        free(W);
        h->progress(ctx, i + 1, n);
    }
    const double budget = budget_bits * weights / 8.0;
    if (!st && !assign(n, sens, bytes, cands, nc, budget, pick)) {
        double least = 0;
        for (int32_t i = 0; i < n; i++) {
            double m = INFINITY;
            for (int k = 0; k < nc; k++) m = fmin(m, bytes[i * C_COUNT + cands[k]]);
            least += m;
        }
        st = h->error_set(err, MOPT_E_INVALID, "quant.auto", "bits_budget=%g is below the smallest mix of the candidates (%.3f bits per weight)",
                          budget_bits, 8.0 * least / weights);
    }
    if (!st) { /* the plan: per linear, and as a recipe with one entry per format */
        char pass[1400]; /* a candidate's pass text: the calib path is at most a path's length */
        char *plan = malloc((size_t)n * (sizeof ls->nname + 16) + 64),
             *recipe = malloc((size_t)n * (sizeof ls->nname + 2) + (size_t)C_COUNT * (sizeof pass + 16) + 64);
        if (!plan || !recipe) st = h->error_set(err, MOPT_E_NOMEM, "quant.auto", "out of memory");
        double total = 0, ssum = 0;
        if (!st) {
            plan[0] = 0;
            strcpy(recipe, "{");
            for (int32_t i = 0; i < n; i++) {
                total += bytes[i * C_COUNT + pick[i]], ssum += sens[i * C_COUNT + pick[i]];
                sprintf(plan + strlen(plan), "%s%s %s", i ? ", " : "", ls[i].nname, cand_names[pick[i]]);
            }
            int first = 1;
            for (int k = 0; k < nc; k++) {
                const int c = cands[k];
                int32_t cnt = 0;
                for (int32_t i = 0; i < n; i++) cnt += pick[i] == c;
                char key[64];
                snprintf(key, sizeof key, "n_%s", cand_names[c]);
                h->report_metric(report, key, cnt);
                if (!cnt || c == C_KEEP) continue;
                sprintf(recipe + strlen(recipe), "%s\"", first ? "" : ", ");
                for (int32_t i = 0, m = 0; i < n; i++)
                    if (pick[i] == c) sprintf(recipe + strlen(recipe), "%s%s", m++ ? "|" : "", ls[i].nname);
                cand_pass(h, o, c, group, pass, sizeof pass);
                sprintf(recipe + strlen(recipe), "\": \"%s\"", pass);
                first = 0;
            }
            strcat(recipe, "}");
            h->report_string(report, "plan", plan);
            h->report_string(report, "recipe", recipe);
            h->report_metric(report, "planned_bits_per_weight", 8.0 * total / weights);
            h->report_metric(report, "bits_budget", budget_bits);
            h->report_metric(report, "sensitivity", ssum);
            h->report_metric(report, "linear_layers", n);
        }
        free(plan);
        free(recipe);
    }
    free(j.base);
    free(j.lp);
    free(tokens);
    free(sens);
    free(bytes);
    free(pick);
    free(ls);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"bits_budget", MOPT_OPT_FLOAT, 0, "effective bits per weight over the decoder linears (storage, scales included)", "4.5", 1, 16, NULL},
    {"candidates", MOPT_OPT_LIST, 0, "formats to choose from: int4_awq, int4, int8, fp8, nvfp4, mxfp4, mxfp8, keep", "int4_awq,int8,fp8",
     0, -1, NULL},
    {"group_size", MOPT_OPT_INT, 0, "columns per scale of the int4 candidates (multiple of 32)", "128", 32, 1 << 20, NULL},
    Q_SELECT_OPTS,
    {"calib", MOPT_OPT_DATASET, MOPT_OPT_REQUIRED, "calibration text (never the eval text)", NULL, 0, -1, NULL},
    {"calib_samples", MOPT_OPT_INT, 0, "calibration windows (the KL of every candidate runs over all of them)", "8", 1, 4096, NULL},
    {"calib_len", MOPT_OPT_INT, 0, "tokens per calibration window", "256", 2, 1 << 16, NULL},
    {"seed", MOPT_OPT_INT, 0, "seed for choosing the windows", "0", 0, 2147483647, NULL},
};

MOPT_PASS_DEFINE(quant_auto_pass, MOPT_PASS_ANALYSIS, "quant.auto",
                 "auto_quantize: the format per decoder linear that loses least (KL on calibration data) under a bits budget, as a recipe",
                 opts, run);
