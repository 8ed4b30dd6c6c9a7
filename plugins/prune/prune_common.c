/* The sparsity passes' shared parts: pattern options, masks from scores,
 * writing back in the weight's dtype, and the report. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune_common.h"

mopt_status prune_spec_from(const mopt_host_api *h, const mopt_options *o, prune_spec *sp, mopt_error *err) {
    memset(sp, 0, sizeof *sp);
    sp->sparsity = h->opt_float(o, "sparsity");
    const char *pat = h->opt_string(o, "pattern");
    if (strcmp(pat, "unstructured")) {
        char tail;
        if (sscanf(pat, "%d:%d%c", &sp->n, &sp->m, &tail) != 2 || sp->n < 1 || sp->m < 2 || sp->m > 64)
            return h->error_set(err, MOPT_E_INVALID, "prune", "pattern=%s: expected unstructured or N:M such as 2:4 (1 <= N < M <= 64)", pat);
        if (sp->n >= sp->m)
            return h->error_set(err, MOPT_E_INVALID, "prune", "pattern=%s: N must be smaller than M (N non-zeros kept of every M)", pat);
        sp->sparsity = 1.0 - (double)sp->n / sp->m;
    } else if (!(sp->sparsity > 0 && sp->sparsity < 1)) {
        return h->error_set(err, MOPT_E_INVALID, "prune", "sparsity=%g: give a fraction strictly between 0 and 1", sp->sparsity);
    }
    sp->pack = h->opt_bool(o, "pack");
    const char *values = h->opt_string(o, "values");
    if (strcmp(values, "float") && strcmp(values, "int8") && strcmp(values, "int4"))
        return h->error_set(err, MOPT_E_INVALID, "prune", "values=%s: expected float, int8 or int4", values);
    sp->vbits = !strcmp(values, "int8") ? 8 : !strcmp(values, "int4") ? 4 : 0;
    if (sp->vbits && !sp->pack)
        return h->error_set(err, MOPT_E_INVALID, "prune", "values=%s is the packed 2:4 storage's; add pack=true", values);
    if (sp->pack && !(sp->n == 2 && sp->m == 4))
        return h->error_set(err, MOPT_E_INVALID, "prune", "pack=true stores the 2:4 pattern only; give pattern=2:4");
    if (sp->pack && h->opt_int(o, "bits") > 0) /* bits has a default, so "set" is always true */
        return h->error_set(err, MOPT_E_INVALID, "prune",
                            "pack=true stores float, int8 or int4 (values=) values; with bits= the result is packed QINT (drop one of them)");
    return MOPT_OK;
}

mopt_status prune_check(const mopt_host_api *h, const mopt_options *o, mopt_error *err) {
    prune_spec sp;
    return prune_spec_from(h, o, &sp, err);
}

mopt_status prune_check_linear(const mopt_host_api *h, mopt_graph *g, const qlinear *l, prune_spec sp, const char *pass, mopt_error *err) {
    const mopt_tensor *t = h->graph_find_tensor(g, l->wname);
    if (!t || t->dtype >= MOPT_DTYPE_PACKED_FIRST)
        return h->error_set(err, MOPT_E_INVALID, pass, "%s is packed: prune the float model, then quantize", l->wname);
    if (sp.m && l->in % sp.m)
        return h->error_set(err, MOPT_E_INVALID, pass, "%s has %lld inputs, not a multiple of M = %d", l->wname, (long long)l->in, sp.m);
    if (sp.vbits == 4 && l->in % PRUNE_I4_GROUP)
        return h->error_set(err, MOPT_E_INVALID, pass, "%s has %lld inputs; values=int4 needs a multiple of %d (a scale per %d inputs)",
                            l->wname, (long long)l->in, PRUNE_I4_GROUP, PRUNE_I4_GROUP);
    return MOPT_OK;
}

typedef struct {
    float v;
    int32_t i;
} scored;

/* ascending score, then index: a stable sort, as torch.sort(stable=True) */
static int cmp_scored(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? -1 : 1;
    return x->i - y->i;
}

mopt_status prune_mask(const mopt_host_api *h, const float *score, int64_t out, int64_t in, prune_spec sp, int per_row, uint8_t *mask, mopt_error *err) {
    memset(mask, 0, (size_t)(out * in));
    if (sp.m) { /* the M - N lowest of every group of M */
        scored g[64];
        for (int64_t r = 0; r < out; r++)
            for (int64_t c0 = 0; c0 < in; c0 += sp.m) {
                for (int32_t k = 0; k < sp.m; k++) g[k] = (scored){score[r * in + c0 + k], k};
                qsort(g, (size_t)sp.m, sizeof *g, cmp_scored);
                for (int32_t k = 0; k < sp.m - sp.n; k++) mask[r * in + c0 + g[k].i] = 1;
            }
        return MOPT_OK;
    }
    if (per_row) { /* the floor(in x sparsity) lowest of each row */
        scored *row = malloc((size_t)in * sizeof *row);
        if (!row) return h->error_set(err, MOPT_E_NOMEM, "prune", "out of memory");
        const int64_t k = (int64_t)((double)in * sp.sparsity);
        for (int64_t r = 0; r < out; r++) {
            for (int64_t c = 0; c < in; c++) row[c] = (scored){score[r * in + c], (int32_t)c};
            qsort(row, (size_t)in, sizeof *row, cmp_scored);
            for (int64_t c = 0; c < k; c++) mask[r * in + row[c].i] = 1;
        }
        free(row);
        return MOPT_OK;
    }
    /* the reference's rule, score <= the k-th smallest (index k of the sorted scores), marks k + 1 of them and
       every tie of the k-th; ties (frequent in bf16 weights) are broken by position so that exactly k + 1 go */
    const int64_t n = out * in, k = (int64_t)((double)n * sp.sparsity) + 1;
    scored *all = malloc((size_t)n * sizeof *all);
    if (!all) return h->error_set(err, MOPT_E_NOMEM, "prune", "out of memory");
    for (int64_t i = 0; i < n; i++) all[i] = (scored){score[i], (int32_t)i};
    qsort(all, (size_t)n, sizeof *all, cmp_scored);
    for (int64_t i = 0; i < k && i < n; i++) mask[all[i].i] = 1;
    free(all);
    return MOPT_OK;
}

mopt_status prune_install(const mopt_host_api *h, mopt_graph *g, const qlinear *l, const float *W, prune_spec sp, mopt_error *err) {
    const mopt_tensor *old = h->graph_find_tensor(g, l->wname);
    const int64_t dims[2] = {l->out, l->in};
    const mopt_dtype dt = old ? old->dtype : MOPT_DTYPE_F32;
    if (sp.pack && sp.vbits == 4) { /* symmetric int4 levels per group; a pruned weight is level 8, exactly 0 */
        const int64_t ng = l->in / PRUNE_I4_GROUP;
        const qspec q4 = {.bits = 4, .group = PRUNE_I4_GROUP, .sym = 1};
        uint8_t *u = malloc((size_t)(l->out * l->in)), zero;
        float *s = malloc((size_t)(l->out * ng) * sizeof *s);
        mopt_status st = u && s ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, "prune", "out of memory");
        for (int64_t r = 0; !st && r < l->out; r++)
            for (int64_t gi = 0; gi < ng; gi++) {
                const float *w = W + r * l->in + gi * PRUNE_I4_GROUP;
                q_grid(h, w, PRUNE_I4_GROUP, 1, q4, &s[r * ng + gi], &zero);
                for (int64_t c = 0; c < PRUNE_I4_GROUP; c++) u[r * l->in + gi * PRUNE_I4_GROUP + c] = q_level(w[c], s[r * ng + gi], zero, 4);
            }
        if (!st) st = q_replace(h, g, h->sp24_pack_i4(l->wname, l->out, l->in, PRUNE_I4_GROUP, u, s, err), err);
        free(u), free(s);
        return st;
    }
    if (sp.pack && sp.vbits == 8) {
        int8_t *q = malloc((size_t)(l->out * l->in));
        float *s = malloc((size_t)l->out * sizeof *s);
        mopt_status st = q && s ? MOPT_OK : h->error_set(err, MOPT_E_NOMEM, "prune", "out of memory");
        if (!st) q_int8_rows(W, l->out, l->in, q, s);
        if (!st) st = q_replace(h, g, h->sp24_pack_i8(l->wname, l->out, l->in, q, s, err), err);
        free(q), free(s);
        return st;
    }
    if (sp.pack) return q_replace(h, g, h->sp24_pack(l->wname, l->out, l->in, dt, W, err), err);
    return q_replace(h, g, h->tensor_from_f32(l->wname, dt, 2, dims, W, err), err);
}

void prune_count(prune_tally *t, int32_t k, const float *W, int64_t n) {
    int64_t z = 0;
    for (int64_t i = 0; i < n; i++) z += W[i] == 0.0f;
    t->per_linear[k] = (double)z / (double)n;
    t->zeros += z;
    t->weights += n;
}

void prune_report(const mopt_host_api *h, mopt_report *r, const char *method, const mopt_options *o, const prune_tally *t) {
    double lo = INFINITY, hi = -INFINITY;
    for (int32_t k = 0; k < t->n; k++) lo = fmin(lo, t->per_linear[k]), hi = fmax(hi, t->per_linear[k]);
    h->report_string(r, "method", method);
    h->report_string(r, "pattern", h->opt_string(o, "pattern"));
    h->report_series(r, "sparsity_per_linear", t->per_linear, t->n);
    h->report_metric(r, "sparsity", t->weights ? (double)t->zeros / (double)t->weights : 0);
    h->report_metric(r, "sparsity_min", t->n ? lo : 0);
    h->report_metric(r, "sparsity_max", t->n ? hi : 0);
    h->report_metric(r, "weights_zeroed", (double)t->zeros);
    h->report_metric(r, "linear_layers", t->n);
}

mopt_status prune_by_layer(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, const qlinear *ls,
                           int32_t n, prune_spec sp, prune_tally *t, const prune_layer_ops *ops, mopt_error *err) {
    const mopt_arch *a = h->graph_arch(g);
    calib c;
    mopt_status st = calib_init(&c, h, ctx, g, o, (int64_t)n + a->n_layers, err);
    if (st) return st;
    for (int32_t l = 0; l < a->n_layers && !st; l++) {
        const qlinear *mine[32];
        const int32_t k = q_layer_linears(ls, n, l, mine, 32);
        st = ops->begin(ops->user, mine, k, c.s, err);
        if (!st) st = calib_run_layer(&c, l, -1, ops->observe, ops->user, 0, err);
        for (int32_t i = 0; i < k && !st; i++) {
            float *W = q_weight_f32(h, g, mine[i], err);
            if (!W) st = err && err->code ? (mopt_status)err->code : MOPT_E_NOMEM;
            int installed = 0;
            if (!st) st = ops->prune(ops->user, i, W, &installed, err);
            if (!st && !installed) st = prune_install(h, g, mine[i], W, sp, err);
            if (!st) prune_count(t, (int32_t)(mine[i] - ls), W, mine[i]->out * mine[i]->in);
            free(W);
            calib_tick(&c);
        }
        ops->end(ops->user);
        if (!st && l + 1 < a->n_layers) { /* the next layer sees this one pruned */
            st = calib_run_layer(&c, l, -1, NULL, NULL, 1, err);
            calib_advance(&c);
        }
        calib_tick(&c);
    }
    calib_free(&c);
    return st;
}

mopt_status prune_run_calibrated(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, mopt_report *report,
                                 const char *method, prune_spec *sp, const prune_layer_ops *ops, mopt_error *err) {
    char pass[64];
    snprintf(pass, sizeof pass, "prune.%s", method);
    if (!g) return h->error_set(err, MOPT_E_INVALID, pass, "needs a model");
    qlinear *ls;
    int32_t n;
    mopt_status st = prune_spec_from(h, o, sp, err);
    if (st || (st = q_collect(h, g, o, &ls, &n, err))) return st;
    for (int32_t k = 0; k < n && !st; k++) st = prune_check_linear(h, g, &ls[k], *sp, pass, err);
    prune_tally t = {calloc((size_t)(n > 0 ? n : 1), sizeof(double)), n, 0, 0};
    if (!st && !t.per_linear) st = h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    if (!st) st = prune_by_layer(h, ctx, g, o, ls, n, *sp, &t, ops, err);
    ops->end(ops->user);
    if (!st) prune_report(h, report, method, o, &t);
    free(t.per_linear);
    free(ls);
    return st;
}
