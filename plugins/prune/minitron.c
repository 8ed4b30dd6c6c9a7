/* prune.minitron: structured pruning as NVIDIA's Minitron (Muralidharan et
 * al., 2024). Importance of embedding channels, FFN neurons, attention heads
 * and query groups from the dense model's activations on calibration data,
 * and of blocks by 1 - cos(input, output) or by the loss rise without each
 * (depth=loss); the model is cut to an explicit
 * shape or to a parameter budget (params=: the widths that fit are ranked by
 * their loss on calibration windows) and comes out smaller, every tensor
 * sliced and the architecture rewritten. Recovery is distillation's job
 * (scripts/minitron.lua). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "minitron.h"
#include "prune_plugin.h"

#define PASS "prune.minitron"

static const char *const shape_opts[] = {"hidden", "ffn", "heads", "kv_heads", "layers"};

static mopt_status check(const mopt_host_api *h, const mopt_options *o, mopt_error *err) {
    int shape_set = 0;
    for (size_t i = 0; i < sizeof shape_opts / sizeof *shape_opts; i++) shape_set |= h->opt_int(o, shape_opts[i]) > 0;
    if (h->opt_is_set(o, "params") && shape_set)
        return h->error_set(err, MOPT_E_INVALID, PASS, "give either params= (a budget to search) or the shape (hidden=, ffn=, heads=, kv_heads=, layers=), not both");
    if (h->opt_is_set(o, "params") && !(h->opt_float(o, "params") > 0 && h->opt_float(o, "params") <= 1))
        return h->error_set(err, MOPT_E_INVALID, PASS, "params=%g is not a fraction in (0, 1]", h->opt_float(o, "params"));
    const char *depth = h->opt_string(o, "depth");
    if (strcmp(depth, "cosine") && strcmp(depth, "loss"))
        return h->error_set(err, MOPT_E_INVALID, PASS, "depth=%s: expected cosine (1 - cos of a block's input and output) or loss", depth);
    if (!h->opt_is_set(o, "params") && !shape_set)
        return h->error_set(err, MOPT_E_INVALID, PASS, "nothing to prune: give params= or at least one of hidden=, ffn=, heads=, kv_heads=, layers=");
    const int64_t heads = h->opt_int(o, "heads"), kv = h->opt_int(o, "kv_heads");
    if (heads > 0 && kv > 0 && heads % kv)
        return h->error_set(err, MOPT_E_INVALID, PASS, "heads=%lld do not divide into %lld query groups", (long long)heads, (long long)kv);
    return MOPT_OK;
}

/* The shape the options ask for (0: as the model), checked against the model's. */
static mopt_status target_from(const mopt_host_api *h, const mopt_options *o, mt_shape of, mt_shape *t, mopt_error *err) {
    const int32_t want[5] = {(int32_t)h->opt_int(o, "hidden"), (int32_t)h->opt_int(o, "ffn"), (int32_t)h->opt_int(o, "heads"),
                             (int32_t)h->opt_int(o, "kv_heads"), (int32_t)h->opt_int(o, "layers")};
    const int32_t have[5] = {of.dim, of.ffn, of.heads, of.kv, of.layers};
    for (int i = 0; i < 5; i++)
        if (want[i] > have[i])
            return h->error_set(err, MOPT_E_INVALID, PASS, "%s=%d is larger than the model's %d", shape_opts[i], want[i], have[i]);
    const int32_t q_of = of.heads / of.kv;
    *t = of;
    if (want[0]) t->dim = want[0];
    if (want[1]) t->ffn = want[1];
    if (want[4]) t->layers = want[4];
    if (want[2] && want[3]) t->heads = want[2], t->kv = want[3];
    else if (want[3]) t->kv = want[3], t->heads = want[3] * q_of; /* whole query groups */
    else if (want[2]) {
        if (want[2] % q_of)
            return h->error_set(err, MOPT_E_INVALID, PASS, "heads=%d is not a whole number of query groups of %d heads (set kv_heads= too)",
                                want[2], q_of);
        t->heads = want[2], t->kv = want[2] / q_of;
    }
    if (t->heads / t->kv > q_of)
        return h->error_set(err, MOPT_E_INVALID, PASS, "%d heads in %d query groups need %d heads per group; the model's groups hold %d", t->heads,
                            t->kv, t->heads / t->kv, q_of);
    return MOPT_OK;
}

/* Mean next-token loss of the cut model on the first windows of the calibration tokens. */
static mopt_status cut_loss(const mopt_host_api *h, const mopt_graph *g, const mt_importance *imp, mt_shape s, const int32_t *tokens,
                            int32_t windows, int32_t len, double *loss, mopt_error *err) {
    mt_keep k;
    mopt_status st = mt_select(h, imp, s, &k, err);
    if (st) return st;
    mopt_graph *cut = mt_slice(h, g, &k, err);
    mt_keep_free(&k);
    if (!cut) return err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
    const mopt_session_opts so = {.struct_size = sizeof so, .max_ctx = len, .max_batch = len};
    mopt_session *ses = h->session_new(cut, &so, err);
    st = ses ? MOPT_OK : (mopt_status)err->code;
    double sum = 0;
    for (int32_t w = 0; w < windows && !st; w++) {
        const float *logits;
        st = h->session_truncate(ses, 0, err);
        if (!st) st = h->session_forward(ses, tokens + (size_t)w * len, len, 1, &logits, err);
        if (!st) sum += h->cross_entropy(logits, NULL, tokens + (size_t)w * len, len, h->graph_arch(cut)->vocab_size, 1.0);
    }
    *loss = sum / windows;
    if (ses) h->session_free(ses);
    h->graph_free(cut);
    return st;
}

/* Whether the family ties the hidden size to heads x head_dim (GPT-2's config
 * has no head_dim): a cut to a narrower hidden with the same heads does not assemble. */
static int hidden_tied_to_heads(const mopt_host_api *h, const mopt_graph *g, const mt_importance *imp) {
    const mt_shape of = imp->of;
    if (of.dim != of.heads * h->graph_arch(g)->head_dim || of.dim <= 8) return 0;
    mt_shape probe = of;
    probe.dim -= 8;
    mt_keep k;
    mopt_error e = {0};
    if (mt_select(h, imp, probe, &k, &e)) return 0;
    mopt_graph *cut = mt_slice(h, g, &k, &e);
    mt_keep_free(&k);
    if (cut) h->graph_free(cut);
    return cut == NULL;
}

/* depth=loss: a block's importance is how much the loss on the calibration
 * windows rises when that block alone is removed (the Minitron paper's
 * alternative to 1 - cos); it replaces imp->block. */
static mopt_status depth_by_loss(const mopt_host_api *h, mopt_pass_ctx *ctx, const mopt_graph *g, mt_importance *imp, const calib *c,
                                 int32_t windows, mopt_error *err) {
    const int32_t L = imp->of.layers;
    if (L < 2) return MOPT_OK; /* no block can go */
    double *mark = malloc((size_t)L * sizeof *mark), *rise = malloc((size_t)L * sizeof *rise), base = 0;
    mopt_status st = mark && rise ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, PASS, "out of memory");
    mt_importance one = *imp; /* mt_select keeps the marked blocks: all but one */
    one.block = mark;
    for (int32_t j = 0; j < L && !st; j++) mark[j] = 1;
    if (!st) st = cut_loss(h, g, &one, imp->of, c->tokens, windows, c->L, &base, err);
    for (int32_t l = 0; l < L && !st; l++) {
        for (int32_t j = 0; j < L; j++) mark[j] = j != l;
        mt_shape s = imp->of;
        s.layers--;
        double loss;
        st = cut_loss(h, g, &one, s, c->tokens, windows, c->L, &loss, err);
        if (st) break;
        rise[l] = loss - base;
        h->log(ctx, "%s: without block %d the calibration loss rises by %.4f (from %.4f)", PASS, l, rise[l], base);
        if (h->interrupted()) st = h->error_set(err, MOPT_E_INTERRUPTED, PASS, "interrupted while ranking blocks");
    }
    if (!st) memcpy(imp->block, rise, (size_t)L * sizeof *rise);
    free(mark), free(rise);
    return st;
}

static int32_t round_down(int64_t v, int32_t step) { return (int32_t)(v / step * step > 0 ? v / step * step : step); }

/* params=: the widths and depths that fit the budget, nearest to it first,
 * ranked by the loss of the cut (undistilled) model on calibration windows. */
static mopt_status search(const mopt_host_api *h, mopt_pass_ctx *ctx, const mopt_graph *g, const mopt_options *o, const mt_importance *imp,
                          const calib *c, mopt_report *report, mt_shape *best, mopt_error *err) {
    const mt_shape of = imp->of;
    const int64_t total = h->graph_n_params(g), budget = (int64_t)floor(h->opt_float(o, "params") * (double)total);
    const int32_t q_of = of.heads / of.kv, max_c = (int32_t)h->opt_int(o, "search_candidates"), hd = h->graph_arch(g)->head_dim;
    const int tied = hidden_tied_to_heads(h, g, imp);
    mt_shape *cand = NULL;
    int64_t *size = NULL;
    int32_t n = 0, cap = 0;
    for (int32_t fd = 8; fd >= 4; fd--)          /* hidden: eighths down to half */
        for (int32_t ff = 12; ff >= 4; ff--)     /* FFN: twelfths down to a third */
            for (int32_t kv = of.kv; kv >= (of.kv + 1) / 2; kv--)
                for (int32_t l = of.layers; l >= (of.layers + 1) / 2; l--) {
                    const mt_shape s = {round_down((int64_t)of.dim * fd / 8, 8), round_down((int64_t)of.ffn * ff / 12, 8), kv * q_of, kv, l};
                    if (tied && s.dim != s.heads * hd) continue;
                    const int64_t p = mt_count_params(h, g, s, err);
                    if (p < 0 || p > budget) continue;
                    if (n == cap) {
                        cap = cap ? 2 * cap : 64;
                        mt_shape *nc = realloc(cand, (size_t)cap * sizeof *cand);
                        int64_t *ns = realloc(size, (size_t)cap * sizeof *size);
                        if (nc) cand = nc;
                        if (ns) size = ns;
                        if (!nc || !ns) {
                            free(cand), free(size);
                            return h->error_set(err, MOPT_E_NOMEM, PASS, "out of memory");
                        }
                    }
                    cand[n] = s, size[n++] = p;
                }
    if (!n) {
        free(cand), free(size);
        return h->error_set(err, MOPT_E_INVALID, PASS, "no shape down to half the width and depth fits params=%g (%lld parameters)",
                            h->opt_float(o, "params"), (long long)budget);
    }
    /* the candidates nearest the budget (a simple selection by size) */
    for (int32_t i = 0; i < n && i < max_c; i++)
        for (int32_t j = i + 1; j < n; j++)
            if (size[j] > size[i]) {
                const mt_shape ts = cand[i];
                const int64_t tp = size[i];
                cand[i] = cand[j], size[i] = size[j], cand[j] = ts, size[j] = tp;
            }
    const int32_t m = n < max_c ? n : max_c, windows = (int32_t)(h->opt_int(o, "search_windows") < c->N ? h->opt_int(o, "search_windows") : c->N);
    double *loss = malloc((size_t)m * sizeof *loss), best_loss = INFINITY;
    mopt_status st = loss ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, PASS, "out of memory");
    for (int32_t i = 0; i < m && !st; i++) {
        st = cut_loss(h, g, imp, cand[i], c->tokens, windows, c->L, &loss[i], err);
        if (st) break;
        h->log(ctx, "%s: candidate hidden %d, ffn %d, heads %d/%d, layers %d: %.2fM parameters, loss %.4f", PASS, cand[i].dim, cand[i].ffn,
               cand[i].heads, cand[i].kv, cand[i].layers, (double)size[i] / 1e6, loss[i]);
        if (loss[i] < best_loss) best_loss = loss[i], *best = cand[i];
        if (h->interrupted()) st = h->error_set(err, MOPT_E_INTERRUPTED, PASS, "interrupted during the search");
    }
    if (!st) {
        h->report_series(report, "search_loss", loss, m);
        h->report_metric(report, "search_candidates", m);
        h->report_metric(report, "search_best_loss", best_loss);
        h->report_metric(report, "params_budget", (double)budget);
    }
    free(loss), free(cand), free(size);
    return st;
}

static char *join_ints(const int32_t *v, int32_t n) {
    char *s = malloc((size_t)n * 12 + 1);
    if (!s) return NULL;
    size_t len = 0;
    s[0] = 0;
    for (int32_t i = 0; i < n; i++) len += (size_t)sprintf(s + len, i ? ",%d" : "%d", v[i]);
    return s;
}

static void report_string_ints(const mopt_host_api *h, mopt_report *r, const char *key, const int32_t *v, int32_t n) {
    char *s = join_ints(v, n);
    if (s) h->report_string(r, key, s);
    free(s);
}

static void report_cut(const mopt_host_api *h, mopt_report *r, const mt_importance *imp, const mt_keep *k, int64_t before, int64_t after) {
    const mt_shape s = k->shape, of = imp->of;
    h->report_metric(r, "params_before", (double)before);
    h->report_metric(r, "params_after", (double)after);
    h->report_metric(r, "params_ratio", before ? (double)after / (double)before : 0);
    const int32_t v[5] = {s.dim, s.ffn, s.heads, s.kv, s.layers};
    for (int i = 0; i < 5; i++) h->report_metric(r, shape_opts[i], v[i]);
    h->report_series(r, "block_importance", imp->block, of.layers);
    report_string_ints(h, r, "kept_layers", k->layers, s.layers);
    report_string_ints(h, r, "kept_hidden", k->channels, s.dim);
    for (int32_t i = 0; i < s.layers; i++) {
        const int32_t l = k->layers[i];
        char key[48];
        snprintf(key, sizeof key, "kept_ffn.%d", l);
        report_string_ints(h, r, key, k->neurons + (size_t)l * s.ffn, s.ffn);
        snprintf(key, sizeof key, "kept_heads.%d", l);
        report_string_ints(h, r, key, k->heads + (size_t)l * s.heads, s.heads);
        snprintf(key, sizeof key, "kept_groups.%d", l);
        report_string_ints(h, r, key, k->groups + (size_t)l * s.kv, s.kv);
    }
}

static mopt_status run(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                       mopt_error *err) {
    if (!g) return h->error_set(err, MOPT_E_INVALID, PASS, "needs a model");
    for (int32_t i = 0; i < h->graph_n_tensors(g); i++) {
        const mopt_tensor *t = h->graph_tensor(g, i);
        if (t->dtype != MOPT_DTYPE_F32 && t->dtype != MOPT_DTYPE_F16 && t->dtype != MOPT_DTYPE_BF16)
            return h->error_set(err, MOPT_E_INVALID, PASS, "%s is stored as %d, not a float: prune the float model, then quantize", t->name, (int)t->dtype);
    }
    const mt_shape of = mt_shape_of(h->graph_arch(g));
    mt_shape target = of;
    mopt_status st = h->opt_is_set(o, "params") ? MOPT_OK : target_from(h, o, of, &target, err);
    const int64_t before = h->graph_n_params(g);
    if (!st && mt_count_params(h, g, of, err) < 0) st = (mopt_status)err->code;
    if (st) return st;
    calib c;
    mt_importance imp;
    st = mt_importance_run(&c, h, ctx, g, o, &imp, err);
    if (st) {
        calib_free(&c);
        return st;
    }
    const int32_t windows = (int32_t)(h->opt_int(o, "search_windows") < c.N ? h->opt_int(o, "search_windows") : c.N);
    if (!strcmp(h->opt_string(o, "depth"), "loss")) st = depth_by_loss(h, ctx, g, &imp, &c, windows, err);
    h->report_string(report, "depth_importance", h->opt_string(o, "depth"));
    if (!st && h->opt_is_set(o, "params")) st = search(h, ctx, g, o, &imp, &c, report, &target, err);
    calib_free(&c);
    mt_keep k = {0};
    mopt_graph *cut = NULL;
    if (!st) st = mt_select(h, &imp, target, &k, err);
    if (!st && !(cut = mt_slice(h, g, &k, err))) {
        st = err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
        if (st == MOPT_E_FORMAT) { /* the builder's shape check: this family cannot take the shape */
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            st = h->error_set(err, MOPT_E_INVALID, PASS, "a %s model cannot take hidden %d with %d heads of %d: %s", h->graph_arch(g)->family,
                              target.dim, target.heads, h->graph_arch(g)->head_dim, why);
        }
    }
    if (!st) {
        const int64_t after = h->graph_n_params(cut);
        h->graph_take(g, cut);
        report_cut(h, report, &imp, &k, before, after);
        h->log(ctx, "%s: %.2fM -> %.2fM parameters (%.1f%%): hidden %d -> %d, ffn %d -> %d, heads %d/%d -> %d/%d, layers %d -> %d", PASS,
               (double)before / 1e6, (double)after / 1e6, 100.0 * (double)after / (double)before, of.dim, target.dim, of.ffn, target.ffn,
               of.heads, of.kv, target.heads, target.kv, of.layers, target.layers);
    }
    mt_keep_free(&k);
    mt_importance_free(&imp);
    return st;
}

static const mopt_opt_spec opts[] = {
    {"hidden", MOPT_OPT_INT, 0, "hidden size to keep (embedding channels); 0: the model's", "0", 0, 1 << 24, NULL},
    {"ffn", MOPT_OPT_INT, 0, "FFN neurons to keep in every block; 0: the model's", "0", 0, 1 << 24, NULL},
    {"heads", MOPT_OPT_INT, 0, "attention heads to keep; 0: the model's", "0", 0, 1 << 24, NULL},
    {"kv_heads", MOPT_OPT_INT, 0, "query groups (KV heads) to keep; 0: heads / the model's heads per group", "0", 0, 1 << 24, NULL},
    {"layers", MOPT_OPT_INT, 0, "decoder blocks to keep, by block importance; 0: all", "0", 0, 1 << 24, NULL},
    {"params", MOPT_OPT_FLOAT, 0, "parameter budget as a fraction of the model's: search the shapes that fit (instead of the shape options)",
     NULL, 0, 1, NULL},
    {"depth", MOPT_OPT_STRING, 0,
     "how blocks are ranked: cosine (1 - cos of a block's input and output) or loss (the calibration loss rise when the block "
     "alone is removed, on search_windows windows)",
     "cosine", 0, -1, NULL},
    {"search_windows", MOPT_OPT_INT, 0, "calibration windows that rank the candidates of params= (and the blocks of depth=loss)", "8", 1,
     4096, NULL},
    {"search_candidates", MOPT_OPT_INT, 0, "shapes nearest the budget ranked by their loss", "12", 1, 10000, NULL},
    Q_CALIB_OPTS(1),
};

const mopt_pass_desc prune_minitron_pass = {
    .struct_size = sizeof(mopt_pass_desc),
    .kind = MOPT_PASS_TRANSFORM,
    .name = PASS,
    .summary = "Minitron: a smaller model (hidden, FFN, heads, query groups, blocks) by activation importance; to a shape or params=",
    .opts = opts,
    .n_opts = sizeof opts / sizeof *opts,
    .run = run,
    .check = check,
};
