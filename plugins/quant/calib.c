/* Calibration data and the layer-by-layer runner (see calib.h). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "calib.h"

void calib_free(calib *c) {
    if (c->s) c->h->session_free(c->s);
    free(c->tokens);
    free(c->x);
    free(c->x_next);
    free(c->first);
    free(c->last);
    free(c->in_value);
    free(c->out_value);
    free(c->live);
    memset(c, 0, sizeof *c);
    c->cut = c->cut_layer = -1;
}

void calib_tick(calib *c) { c->h->progress(c->ctx, ++c->done, c->total); }

mopt_status calib_windows(const mopt_host_api *h, mopt_pass_ctx *ctx, const mopt_graph *g, const mopt_options *o, int32_t **tokens,
                          int32_t *N, int32_t *L, mopt_error *err) {
    const mopt_arch *a = h->graph_arch(g);
    *tokens = NULL;
    *N = (int32_t)h->opt_int(o, "calib_samples");
    *L = (int32_t)h->opt_int(o, "calib_len");
    const char *path = h->opt_string(o, "calib");
    if (*L > a->max_ctx)
        return h->error_set(err, MOPT_E_INVALID, "calib", "calib_len %d exceeds the model's context of %d", *L, a->max_ctx);
    mopt_model *m = h->ctx_model(ctx);
    const mopt_tokenizer *tok = m ? h->model_tokenizer(m) : NULL;
    if (!tok) return h->error_set(err, MOPT_E_INVALID, "calib", "calibration needs the model's tokenizer");
    int32_t *ids = NULL;
    size_t n = 0;
    mopt_status st = h->tokenizer_encode_file(tok, path, 0, &ids, &n, err);
    if (st) return st;
    if ((int64_t)n < *L) {
        free(ids);
        return h->error_set(err, MOPT_E_INVALID, "calib",
                            "%s holds %zu tokens, fewer than one calibration window of %d (lower calib_len or give more text)",
                            path, n, *L);
    }
    if (!(*tokens = malloc((size_t)*N * (size_t)*L * sizeof(int32_t)))) {
        free(ids);
        return h->error_set(err, MOPT_E_NOMEM, "calib", "out of memory for %d x %d calibration tokens", *N, *L);
    }
    /* windows: seeded starts anywhere in the text */
    uint64_t rs = 0x9E3779B97F4A7C15ull ^ ((uint64_t)h->opt_int(o, "seed") * 0xBF58476D1CE4E5B9ull + 1);
    const uint64_t span = (uint64_t)n - (uint64_t)*L + 1;
    for (int32_t i = 0; i < *N; i++) {
        uint64_t start = mopt_rand(&rs) % span;
        memcpy(*tokens + (size_t)i * *L, ids + start, (size_t)*L * sizeof(int32_t));
    }
    free(ids);
    return MOPT_OK;
}

mopt_status calib_init(calib *c, const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                       int64_t progress_total, mopt_error *err) {
    return calib_init_first(c, h, ctx, g, o, progress_total, INT32_MAX, err);
}

mopt_status calib_init_first(calib *c, const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o,
                             int64_t progress_total, int32_t max_windows, mopt_error *err) {
    memset(c, 0, sizeof *c);
    c->h = h;
    c->ctx = ctx;
    c->g = g;
    c->total = progress_total;
    c->kept_layer = -1;
    c->cut = c->cut_layer = -1;
    const mopt_arch *a = h->graph_arch(g);
    c->D = a->dim;
    c->n_layers = a->n_layers;
    mopt_status st = calib_windows(h, ctx, g, o, &c->tokens, &c->N, &c->L, err);
    if (st) return st;
    if (c->N > max_windows) c->N = max_windows; /* windows are drawn in order: the first ones are a smaller draw's */
    /* layer node ranges and their input/output values, read from the graph */
    c->first = malloc((size_t)c->n_layers * sizeof(int32_t));
    c->last = malloc((size_t)c->n_layers * sizeof(int32_t));
    c->in_value = malloc((size_t)c->n_layers * sizeof(int32_t));
    c->out_value = malloc((size_t)c->n_layers * sizeof(int32_t));
    c->x = malloc((size_t)c->N * (size_t)c->L * (size_t)c->D * sizeof(float));
    c->x_next = malloc((size_t)c->N * (size_t)c->L * (size_t)c->D * sizeof(float));
    if (!c->first || !c->last || !c->in_value || !c->out_value || !c->x || !c->x_next) {
        calib_free(c);
        return h->error_set(err, MOPT_E_NOMEM, "calib", "out of memory for %d x %d calibration activations", c->N, c->L);
    }
    for (int32_t l = 0; l < c->n_layers; l++) c->first[l] = -1;
    for (int32_t i = 0; i < h->graph_n_nodes(g); i++) {
        const mopt_node *nd = h->graph_node(g, i);
        if (nd->layer < 0 || nd->layer >= c->n_layers) continue;
        if (c->first[nd->layer] < 0) {
            c->first[nd->layer] = i;
            c->in_value[nd->layer] = nd->inputs[0]; /* the residual stream entering the block */
        }
        c->last[nd->layer] = i + 1;
        c->out_value[nd->layer] = nd->output;
    }
    mopt_session_opts so = {0};
    so.struct_size = sizeof so;
    so.n_threads = h->ctx_n_threads(ctx);
    so.max_ctx = c->L;
    c->s = h->session_new(g, &so, err);
    if (!c->s) {
        calib_free(c);
        return err ? (mopt_status)err->code : MOPT_E_NOMEM;
    }
    /* layer 0's input: everything before the first block (embeddings) */
    for (int32_t i = 0; i < c->N; i++) {
        st = h->session_run_range(c->s, 0, c->first[0], c->tokens + (size_t)i * c->L, c->L, NULL, NULL, err);
        if (st) {
            calib_free(c);
            return st;
        }
        memcpy(c->x + (size_t)i * c->L * c->D, h->session_value(c->s, c->in_value[0]), (size_t)c->L * c->D * sizeof(float));
    }
    return MOPT_OK;
}

typedef struct {
    calib_obs obs;
    void *user;
    int32_t sample;
} obs_link;

static void relay(void *user, int32_t node, const float *const *in, const int32_t *in_w, int32_t n_in, const float *out,
                  int32_t out_w, int32_t T) {
    obs_link *k = user;
    k->obs(k->user, k->sample, node, in, in_w, out, out_w, T);
}

#define CALIB_MAX_LIVE 16

/* The values nodes [cut, last) of layer l read that nodes [first, cut) write: with the layer's input (held in x),
 * all a run resumed at cut needs. Returns their count (-1: more than cap), *width their floats per token. */
static int32_t live_at(const calib *c, int32_t l, int32_t cut, int32_t *vals, int32_t cap, int64_t *width) {
    const mopt_host_api *h = c->h;
    int32_t n = 0;
    *width = 0;
    for (int32_t p = c->first[l]; p < cut; p++) {
        const int32_t v = h->graph_node(c->g, p)->output;
        int read = 0, seen = 0;
        for (int32_t i = cut; i < c->last[l] && !read; i++) {
            const mopt_node *nd = h->graph_node(c->g, i);
            for (int32_t k = 0; k < nd->n_inputs; k++) read |= nd->inputs[k] == v;
        }
        for (int32_t k = 0; k < n; k++) seen |= vals[k] == v;
        if (!read || seen) continue;
        if (n == cap) return -1;
        vals[n++] = v;
        *width += h->graph_value_width(c->g, v);
    }
    return n;
}

void calib_keep_live(calib *c, int64_t max_bytes) {
    const int64_t tokens = (int64_t)c->N * c->L, budget_w = max_bytes / (tokens * (int64_t)sizeof(float));
    int64_t w = 0;
    for (int32_t l = 0; l < c->n_layers; l++)
        for (int32_t i = c->first[l]; i < c->last[l]; i++) {
            int32_t vals[CALIB_MAX_LIVE];
            int64_t wi;
            if (!c->h->graph_node(c->g, i)->weight || live_at(c, l, i, vals, CALIB_MAX_LIVE, &wi) < 0) continue;
            if (wi <= budget_w && wi > w) w = wi; /* the widest cut that fits: narrower ones share its slots */
        }
    free(c->live);
    c->live = NULL;
    c->live_w = 0;
    if (w && !(c->live = malloc((size_t)(tokens * w) * sizeof(float)))) { /* a speed-up only: run without it */
        c->h->log(c->ctx, "no memory for %lld MB of kept activations: each group's inputs come from its block's start (slower)",
                  (long long)(tokens * w * (int64_t)sizeof(float) >> 20));
        w = 0;
    }
    c->live_w = w;
    c->cut = c->cut_layer = -1;
}

/* Loads window i's input into the session for a run of layer l from node `from`: the layer's input, and when from
 * is the kept cut, the values live there. */
static mopt_status enter_window(calib *c, int32_t l, int32_t from, const int32_t *vals, int32_t n, int32_t i, mopt_error *err) {
    const mopt_host_api *h = c->h;
    mopt_status st = h->session_set_value(c->s, c->in_value[l], c->x + (size_t)i * c->L * c->D, c->L, err);
    const float *p = c->live + (size_t)i * (size_t)c->L * (size_t)c->live_w;
    for (int32_t k = 0; k < n && !st && from == c->cut; k++) {
        st = h->session_set_value(c->s, vals[k], p, c->L, err);
        p += (size_t)c->L * (size_t)h->graph_value_width(c->g, vals[k]);
    }
    return st;
}

/* Window i's values live at a cut into its slot. */
static void keep_window(calib *c, const int32_t *vals, int32_t n, int32_t i) {
    float *p = c->live + (size_t)i * (size_t)c->L * (size_t)c->live_w;
    for (int32_t k = 0; k < n; k++) {
        const size_t len = (size_t)c->L * (size_t)c->h->graph_value_width(c->g, vals[k]);
        memcpy(p, c->h->session_value(c->s, vals[k]), len * sizeof(float));
        p += len;
    }
}

/* Where a run of layer l that must reach node `upto` (exclusive) starts: the kept cut when there is one before it. */
static int32_t resume_from(const calib *c, int32_t l, int32_t upto, int32_t *vals, int32_t *n) {
    int64_t w;
    *n = 0;
    if (c->cut_layer != l || c->cut < c->first[l] || c->cut > upto) return c->first[l];
    *n = live_at(c, l, c->cut, vals, CALIB_MAX_LIVE, &w);
    return c->cut;
}

mopt_status calib_run_layer(calib *c, int32_t l, int32_t upto, calib_obs obs, void *user, int keep_output,
                            mopt_error *err) {
    const mopt_host_api *h = c->h;
    int32_t last = upto < 0 ? c->last[l] : upto + 1, vals[CALIB_MAX_LIVE] = {0}, n = 0;
    /* an observer is owed every node of the layer: only a run without one resumes */
    const int32_t from = obs ? c->first[l] : resume_from(c, l, last, vals, &n);
    for (int32_t i = 0; i < c->N; i++) {
        mopt_status st = enter_window(c, l, from, vals, n, i, err);
        obs_link link = {obs, user, i};
        if (!st) st = h->session_run_range(c->s, from, last, NULL, c->L, obs ? relay : NULL, &link, err);
        if (st) return st;
        if (keep_output && last == c->last[l]) {
            c->kept_layer = l;
            memcpy(c->x_next + (size_t)i * c->L * c->D, h->session_value(c->s, c->out_value[l]),
                   (size_t)c->L * c->D * sizeof(float));
        }
    }
    return MOPT_OK;
}

mopt_status calib_observe_input(calib *c, int32_t l, int32_t node, calib_obs obs, void *user, mopt_error *err) {
    const mopt_host_api *h = c->h;
    const mopt_node *nd = h->graph_node(c->g, node);
    const int32_t w = (int32_t)nd->weight->ne[0]; /* a linear's input width */
    int32_t vals[CALIB_MAX_LIVE] = {0}, n, keep[CALIB_MAX_LIVE], nk = -1;
    const int32_t from = resume_from(c, l, node, vals, &n);
    int64_t kw = 0;
    if (c->live_w) nk = live_at(c, l, node, keep, CALIB_MAX_LIVE, &kw);
    if (kw > c->live_w) nk = -1; /* too wide for the budget: the next run starts from the layer's input */
    for (int32_t i = 0; i < c->N; i++) {
        mopt_status st = enter_window(c, l, from, vals, n, i, err);
        if (!st) st = h->session_run_range(c->s, from, node, NULL, c->L, NULL, NULL, err);
        if (st) {
            c->cut = -1; /* the slots hold two cuts' values now */
            return st;
        }
        const float *in = h->session_value(c->s, nd->inputs[0]); /* still live: its reader has not run */
        obs(user, i, node, &in, &w, NULL, 0, c->L);
        if (nk >= 0) keep_window(c, keep, nk, i); /* after enter_window read the slot's old values */
    }
    c->cut = nk >= 0 ? node : -1;
    c->cut_layer = l;
    return MOPT_OK;
}

void calib_advance(calib *c) {
    c->cut = -1;
    /* the finished layer's weights are not read again: mapped pages (the
     * original's, or spilled packed ones) can go back to the kernel */
    if (c->kept_layer >= 0)
        for (int32_t i = c->first[c->kept_layer]; i < c->last[c->kept_layer]; i++) {
            const mopt_node *nd = c->h->graph_node(c->g, i);
            c->h->tensor_drop_pages(nd->weight);
            c->h->tensor_drop_pages(nd->bias);
        }
    float *t = c->x;
    c->x = c->x_next;
    c->x_next = t;
}

typedef struct {
    const qlinear *ls;
    int32_t n;
    float *amax;
} amax_stats;

static void track_amax(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                       int32_t out_w, int32_t T) {
    amax_stats *s = user;
    for (int32_t i = 0; i < s->n; i++) {
        if (s->ls[i].node != node) continue;
        for (int64_t k = 0; k < (int64_t)T * in_w[0]; k++) s->amax[i] = fmaxf(s->amax[i], fabsf(in[0][k]));
    }
}

mopt_status calib_observe_model(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, calib_obs obs,
                                void *user, int32_t *n_samples, int32_t *len, mopt_error *err) {
    const mopt_arch *a = h->graph_arch(g);
    calib c;
    mopt_status st = calib_init(&c, h, ctx, g, o, a->n_layers, err); /* it cleans up when it fails */
    if (st) return st;
    if (n_samples) *n_samples = c.N;
    if (len) *len = c.L;
    for (int32_t l = 0; l < a->n_layers && !st; l++) {
        st = calib_run_layer(&c, l, -1, obs, user, 1, err);
        calib_advance(&c);
        calib_tick(&c);
    }
    calib_free(&c);
    return st;
}

mopt_status calib_input_amax(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, const qlinear *ls,
                             int32_t n, float *amax, mopt_error *err) {
    amax_stats stats = {ls, n, amax};
    return calib_observe_model(h, ctx, g, o, track_amax, &stats, NULL, NULL, err);
}

mopt_status calib_w4a8_static(const mopt_host_api *h, mopt_pass_ctx *ctx, mopt_graph *g, const mopt_options *o, const qlinear *ls,
                              int32_t n, mopt_error *err) {
    float *own = calloc((size_t)n * 3 + 1, sizeof *own), *shared = own + n, *amax = own + 2 * n;
    if (!own) return h->error_set(err, MOPT_E_NOMEM, "quant", "out of memory");
    mopt_status st = MOPT_OK;
    for (int32_t i = 0; i < n && !st; i++) st = q_weight_amax(h, g, &ls[i], &own[i], err); /* the int values, dequantized */
    if (!st) q_shared_input_amax(h, g, ls, n, own, shared);
    for (int32_t i = 0; i < n && !st; i++) {
        mopt_tensor *t = h->graph_find_tensor(g, ls[i].wname);
        if (!t || t->dtype != MOPT_DTYPE_QINT) {
            st = h->error_set(err, MOPT_E_INVALID, "quant", "%s is not packed integers; activations=fp8_static needs them", ls[i].wname);
            break;
        }
        t->quant->global_scale = shared[i] > 0 ? shared[i] / 448.0f : 1.0f;
        t->quant->flags |= MOPT_QUANT_W_FP8;
    }
    if (!st) st = calib_input_amax(h, ctx, g, o, ls, n, amax, err);
    for (int32_t i = 0; i < n && !st; i++) {
        mopt_tensor *t = h->graph_find_tensor(g, ls[i].wname);
        t->quant->act_scale = amax[i] > 0 ? amax[i] / 448.0f : 1.0f;
        t->quant->flags |= MOPT_QUANT_ACT_STATIC;
    }
    free(own);
    return st;
}
