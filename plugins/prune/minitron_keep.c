/* What a Minitron cut keeps: the most important units for a target shape. */
#include <stdlib.h>
#include <string.h>

#include "minitron.h"

typedef struct {
    double v;
    int32_t i;
} scored;

static int by_importance(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->i - y->i; /* ties: the lower index first */
}

static int ascending(const void *a, const void *b) { return *(const int32_t *)a - *(const int32_t *)b; }

/* The k most important of v[0..n) into out[0..k), ascending (keeps the model's order). */
static int top_k(const double *v, int32_t n, int32_t k, int32_t *out) {
    scored *s = malloc((size_t)n * sizeof *s);
    if (!s) return 0;
    for (int32_t i = 0; i < n; i++) s[i] = (scored){v[i], i};
    qsort(s, (size_t)n, sizeof *s, by_importance);
    for (int32_t i = 0; i < k; i++) out[i] = s[i].i;
    qsort(out, (size_t)k, sizeof *out, ascending);
    free(s);
    return 1;
}

void mt_keep_free(mt_keep *k) {
    free(k->layers);
    free(k->channels);
    free(k->neurons);
    free(k->heads);
    free(k->groups);
    memset(k, 0, sizeof *k);
}

mopt_status mt_select(const mopt_host_api *h, const mt_importance *imp, mt_shape t, mt_keep *k, mopt_error *err) {
    const mt_shape of = imp->of;
    const int32_t q_of = of.heads / of.kv, q_t = t.heads / t.kv, L = of.layers;
    memset(k, 0, sizeof *k);
    k->shape = t;
    k->layers = malloc((size_t)t.layers * sizeof(int32_t));
    k->channels = malloc((size_t)t.dim * sizeof(int32_t));
    k->neurons = malloc((size_t)L * t.ffn * sizeof(int32_t));
    k->heads = malloc((size_t)L * t.heads * sizeof(int32_t));
    k->groups = malloc((size_t)L * t.kv * sizeof(int32_t));
    double *group = malloc((size_t)of.kv * sizeof(double));
    int ok = k->layers && k->channels && k->neurons && k->heads && k->groups && group;
    ok = ok && top_k(imp->block, L, t.layers, k->layers) && top_k(imp->channel, of.dim, t.dim, k->channels);
    for (int32_t l = 0; ok && l < L; l++) {
        ok = top_k(imp->neuron + (size_t)l * of.ffn, of.ffn, t.ffn, k->neurons + (size_t)l * t.ffn);
        const double *hi = imp->head + (size_t)l * of.heads;
        for (int32_t gi = 0; gi < of.kv; gi++) {
            group[gi] = 0;
            for (int32_t j = 0; j < q_of; j++) group[gi] += hi[gi * q_of + j];
        }
        int32_t *groups = k->groups + (size_t)l * t.kv, *heads = k->heads + (size_t)l * t.heads;
        ok = ok && top_k(group, of.kv, t.kv, groups);
        for (int32_t gi = 0; ok && gi < t.kv; gi++) { /* the group's own most important query heads */
            ok = top_k(hi + (size_t)groups[gi] * q_of, q_of, q_t, heads + (size_t)gi * q_t);
            for (int32_t j = 0; j < q_t; j++) heads[gi * q_t + j] += groups[gi] * q_of;
        }
    }
    free(group);
    if (!ok) {
        mt_keep_free(k);
        return h->error_set(err, MOPT_E_NOMEM, "prune.minitron", "out of memory");
    }
    return MOPT_OK;
}
