/* The executor: walks the graph's nodes in order for a batch of tokens,
 * handing each to the backend with its input/output buffers and KV cache.
 * Activation buffers are shared between values whose lifetimes do not
 * overlap, so memory follows the widest few live values, not the depth. */
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "base.h"
#include "kernels.h"
#include "mopt/executor.h"
#include "threadpool.h"

struct mopt_session {
    const mopt_graph *g;
    const mopt_backend_i *be;
    void *be_ctx;
    int32_t max_ctx, max_batch, len;
    int32_t n_slots;
    float **slots;       /* [n_slots] each max_batch x slot width */
    int32_t *value_slot; /* value -> slot */
    int32_t n_kv;
    void **k_cache, **v_cache; /* per kv slot: [max_ctx, kv_dim] floats, or bytes in a quantized format */
    mopt_kv_quant *kv;         /* per kv slot: its format, with the scales copied (the graph's may change) */
    float *logits;
    size_t logits_cap;   /* floats */
    int32_t lm_head;     /* node index */
};

void mopt_session_opts_default(mopt_session_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

const char *mopt_cpu_kernels_name(void) { return mopt_kernels_get()->name; }

void mopt_session_free(mopt_session *s) {
    if (!s) return;
    if (s->be && s->be_ctx) s->be->free(s->be_ctx);
    for (int32_t i = 0; i < s->n_slots; i++) free(s->slots[i]);
    for (int32_t i = 0; i < s->n_kv; i++) { /* a failed mopt_session_new may have left any of them NULL */
        if (s->k_cache) free(s->k_cache[i]);
        if (s->v_cache) free(s->v_cache[i]);
        if (s->kv) free((void *)s->kv[i].k_scale);
    }
    free(s->slots);
    free(s->value_slot);
    free(s->k_cache);
    free(s->v_cache);
    free(s->kv);
    free(s->logits);
    free(s);
}

/* Assigns each value a buffer slot; a slot is reused once every reader of
 * its previous value has run. */
static mopt_status plan_slots(mopt_session *s, mopt_error *err) {
    const mopt_graph *g = s->g;
    const int32_t nv = mopt_graph_n_values(g), nn = mopt_graph_n_nodes(g);
    int32_t *last_use = malloc((size_t)(nv ? nv : 1) * sizeof *last_use);
    int32_t *slot_width = calloc((size_t)(nv ? nv : 1), sizeof *slot_width);
    int32_t *slot_busy = calloc((size_t)(nv ? nv : 1), sizeof *slot_busy);
    s->value_slot = malloc((size_t)(nv ? nv : 1) * sizeof *s->value_slot);
    if (!last_use || !slot_width || !slot_busy || !s->value_slot) {
        free(last_use);
        free(slot_width);
        free(slot_busy);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    for (int32_t v = 0; v < nv; v++) {
        last_use[v] = -1;
        s->value_slot[v] = -1;
    }
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        for (int k = 0; k < n->n_inputs; k++) last_use[n->inputs[k]] = i;
    }
    int32_t n_slots = 0;
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->op != MOPT_OP_LM_HEAD) { /* lm_head writes the logits buffer */
            int32_t w = mopt_graph_value_width(g, n->output), pick = -1;
            for (int32_t k = 0; k < n_slots && pick < 0; k++)
                if (!slot_busy[k]) pick = k;
            if (pick < 0) pick = n_slots++;
            if (slot_width[pick] < w) slot_width[pick] = w;
            slot_busy[pick] = 1;
            s->value_slot[n->output] = pick;
            if (last_use[n->output] < 0) slot_busy[pick] = 0; /* never read */
        }
        for (int k = 0; k < n->n_inputs; k++) {
            int32_t v = n->inputs[k];
            if (last_use[v] == i && s->value_slot[v] >= 0) slot_busy[s->value_slot[v]] = 0;
        }
    }
    mopt_status st = MOPT_OK;
    s->slots = calloc((size_t)(n_slots ? n_slots : 1), sizeof *s->slots);
    if (!s->slots) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t k = 0; st == MOPT_OK && k < n_slots; k++) {
        s->slots[k] = calloc((size_t)s->max_batch * (size_t)slot_width[k], sizeof(float));
        if (!s->slots[k]) st = MOPT_FAIL(err, MOPT_E_NOMEM, "cannot allocate activation buffers");
        s->n_slots = k + 1;
    }
    free(last_use);
    free(slot_width);
    free(slot_busy);
    return st;
}

mopt_session *mopt_session_new(const mopt_graph *g, const mopt_session_opts *opts, mopt_error *err) {
    mopt_session_opts o;
    mopt_session_opts_default(&o);
    if (opts) memcpy(&o, opts, opts->struct_size < sizeof o ? opts->struct_size : sizeof o);
    const mopt_arch *a = mopt_graph_arch(g);
    mopt_session *s = calloc(1, sizeof *s);
    if (!s) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    s->g = g;
    s->be = &mopt_backend_cpu;
    s->max_ctx = o.max_ctx > 0 && o.max_ctx < a->max_ctx ? o.max_ctx : a->max_ctx;
    s->max_batch = o.max_batch > 0 && o.max_batch < s->max_ctx ? o.max_batch : s->max_ctx;
    s->lm_head = -1;
    int32_t nn = mopt_graph_n_nodes(g);
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->op == MOPT_OP_LM_HEAD) s->lm_head = i;
        if (n->op == MOPT_OP_ATTENTION && n->kv_slot + 1 > s->n_kv) s->n_kv = n->kv_slot + 1;
    }
    if (s->lm_head != nn - 1 || nn == 0) {
        MOPT_FAIL(err, MOPT_E_INVALID, "graph must end with an lm_head node");
        goto fail;
    }
    if (plan_slots(s, err)) goto fail;
    s->k_cache = calloc((size_t)(s->n_kv ? s->n_kv : 1), sizeof *s->k_cache);
    s->v_cache = calloc((size_t)(s->n_kv ? s->n_kv : 1), sizeof *s->v_cache);
    s->kv = calloc((size_t)(s->n_kv ? s->n_kv : 1), sizeof *s->kv);
    if (!s->k_cache || !s->v_cache || !s->kv) goto nomem;
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->op != MOPT_OP_ATTENTION) continue;
        size_t kvd = (size_t)n->n_kv_heads * (size_t)n->head_dim;
        if (s->k_cache[n->kv_slot]) {
            MOPT_FAIL(err, MOPT_E_INVALID, "two attention nodes share KV slot %d", n->kv_slot);
            goto fail;
        }
        const mopt_kv_quant q = mopt_graph_kv_quant(g, n->layer);
        if (q.format != MOPT_KV_FLOAT) {
            float *sc = malloc(2 * (size_t)q.n_scales * sizeof *sc);
            if (!sc) goto nomem;
            memcpy(sc, q.k_scale, (size_t)q.n_scales * sizeof *sc);
            memcpy(sc + q.n_scales, q.v_scale, (size_t)q.n_scales * sizeof *sc);
            s->kv[n->kv_slot] = (mopt_kv_quant){q.format, q.n_scales, sc, sc + q.n_scales};
        }
        const size_t elem = q.format == MOPT_KV_FLOAT ? sizeof(float) : 1;
        s->k_cache[n->kv_slot] = calloc((size_t)s->max_ctx * kvd, elem);
        s->v_cache[n->kv_slot] = calloc((size_t)s->max_ctx * kvd, elem);
        if (!s->k_cache[n->kv_slot] || !s->v_cache[n->kv_slot]) goto nomem;
    }
    if (s->be->init(&s->be_ctx, g, o.n_threads, s->max_ctx, err)) goto fail;
    return s;
nomem:
    MOPT_FAIL(err, MOPT_E_NOMEM, "cannot allocate the KV cache for %d positions", s->max_ctx);
fail:
    mopt_session_free(s);
    return NULL;
}

int32_t mopt_session_length(const mopt_session *s) { return s->len; }
int32_t mopt_session_n_threads(const mopt_session *s) { return s->be->n_threads(s->be_ctx); }
int32_t mopt_session_vocab_size(const mopt_session *s) { return mopt_graph_arch(s->g)->vocab_size; }

mopt_status mopt_session_truncate(mopt_session *s, int32_t n, mopt_error *err) {
    if (n < 0 || n > s->len)
        return MOPT_FAIL(err, MOPT_E_INVALID, "cannot truncate a %d-token cache to %d", s->len, n);
    s->len = n; /* later positions are overwritten before they are read */
    return MOPT_OK;
}

/* Runs nodes [first, last) for T tokens starting at position s->len. */
static mopt_status run_nodes(mopt_session *s, int32_t first, int32_t last, const int32_t *tokens, int32_t T,
                             bool all_logits, float *logits, mopt_node_observer obs, void *user, mopt_error *err) {
    const mopt_graph *g = s->g;
    for (int32_t i = first; i < last; i++) {
        if (mopt_interrupted()) /* between nodes: the cache keeps its length, nothing half-written counts */
            return MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted");
        const mopt_node *n = mopt_graph_node(g, i);
        mopt_op_args a = {0};
        a.node = n;
        a.T = T;
        a.pos = s->len;
        a.tokens = tokens;
        for (int k = 0; k < n->n_inputs; k++) {
            a.in[k] = s->slots[s->value_slot[n->inputs[k]]];
            a.in_width[k] = mopt_graph_value_width(g, n->inputs[k]);
        }
        a.out_width = mopt_graph_value_width(g, n->output);
        if (n->op == MOPT_OP_LM_HEAD) {
            a.out = logits;
            a.row0 = all_logits ? 0 : T - 1;
            a.rows = all_logits ? T : 1;
        } else {
            a.out = s->slots[s->value_slot[n->output]];
        }
        if (n->op == MOPT_OP_ATTENTION) {
            a.k_cache = s->k_cache[n->kv_slot];
            a.v_cache = s->v_cache[n->kv_slot];
            a.kv = s->kv[n->kv_slot];
        }
        if (n->op == MOPT_OP_EMBEDDING && !tokens)
            return MOPT_FAIL(err, MOPT_E_INVALID, "node %s needs tokens", n->name);
        mopt_status st = s->be->forward(s->be_ctx, &a, err);
        if (st) return st;
        if (obs) obs(user, i, a.in, a.in_width, n->n_inputs, a.out, a.out_width, n->op == MOPT_OP_LM_HEAD ? a.rows : T);
    }
    return MOPT_OK;
}

/* One chunk of at most max_batch tokens. Logits rows go to `logits`. */
static mopt_status forward_chunk(mopt_session *s, const int32_t *tokens, int32_t T, bool all_logits, float *logits,
                                 mopt_error *err) {
    mopt_status st = run_nodes(s, 0, mopt_graph_n_nodes(s->g), tokens, T, all_logits, logits, NULL, NULL, err);
    if (st) return st;
    s->len += T;
    return MOPT_OK;
}

mopt_status mopt_session_set_value(mopt_session *s, int32_t value, const float *data, int32_t T, mopt_error *err) {
    if (value < 0 || value >= mopt_graph_n_values(s->g) || s->value_slot[value] < 0)
        return MOPT_FAIL(err, MOPT_E_INVALID, "value %d has no buffer", value);
    if (T <= 0 || T > s->max_batch) return MOPT_FAIL(err, MOPT_E_INVALID, "%d tokens exceed the batch of %d", T, s->max_batch);
    memcpy(s->slots[s->value_slot[value]], data, (size_t)T * (size_t)mopt_graph_value_width(s->g, value) * sizeof(float));
    return MOPT_OK;
}

mopt_status mopt_session_run_range(mopt_session *s, int32_t first, int32_t last, const int32_t *tokens, int32_t T,
                                   mopt_node_observer observer, void *user, mopt_error *err) {
    if (first < 0 || last > mopt_graph_n_nodes(s->g) || first > last)
        return MOPT_FAIL(err, MOPT_E_INVALID, "node range [%d, %d) is outside the graph", first, last);
    if (T <= 0 || T > s->max_batch || T > s->max_ctx)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%d tokens exceed the session's batch of %d", T, s->max_batch);
    if (s->logits_cap < (size_t)mopt_graph_arch(s->g)->vocab_size) {
        float *p = realloc(s->logits, (size_t)mopt_graph_arch(s->g)->vocab_size * sizeof(float));
        if (!p) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        s->logits = p;
        s->logits_cap = (size_t)mopt_graph_arch(s->g)->vocab_size;
    }
    s->len = 0;
    mopt_status st = run_nodes(s, first, last, tokens, T, false, s->logits, observer, user, err);
    s->len = 0; /* the cache holds this sequence only partially: treat it as empty */
    return st;
}

const float *mopt_session_value(const mopt_session *s, int32_t value) {
    if (value < 0 || value >= mopt_graph_n_values(s->g) || s->value_slot[value] < 0) return NULL;
    return s->slots[s->value_slot[value]];
}

mopt_status mopt_session_forward(mopt_session *s, const int32_t *tokens, int32_t n, bool all_logits,
                                 const float **logits, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(s->g);
    if (logits) *logits = NULL;
    if (n <= 0) return MOPT_FAIL(err, MOPT_E_INVALID, "forward needs at least one token");
    if (s->len + n > s->max_ctx)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%d tokens after %d cached exceed the context of %d", n, s->len,
                         s->max_ctx);
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= a->vocab_size)
            return MOPT_FAIL(err, MOPT_E_INVALID, "token id %d at position %d is outside the vocabulary (0..%d)",
                             tokens[i], i, a->vocab_size - 1);
    size_t need = (size_t)(all_logits ? n : 1) * (size_t)a->vocab_size;
    if (need > s->logits_cap) {
        float *p = realloc(s->logits, need * sizeof(float));
        if (!p) return MOPT_FAIL(err, MOPT_E_NOMEM, "cannot allocate logits for %d tokens", n);
        s->logits = p;
        s->logits_cap = need;
    }
    for (int32_t done = 0; done < n;) {
        int32_t T = n - done < s->max_batch ? n - done : s->max_batch;
        float *dst = all_logits ? s->logits + (size_t)done * a->vocab_size : s->logits;
        /* Without all_logits each chunk writes its last row; the final one wins. */
        mopt_status st = forward_chunk(s, tokens + done, T, all_logits, dst, err);
        if (st) return st;
        done += T;
    }
    if (logits) *logits = s->logits;
    return MOPT_OK;
}
