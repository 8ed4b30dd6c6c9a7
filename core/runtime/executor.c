/* The executor: walks the graph's nodes in order for a batch of tokens,
 * handing each to the backend with its input/output buffers and KV cache.
 * Activation buffers are shared between values whose lifetimes do not
 * overlap, so memory follows the widest few live values, not the depth. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "base.h"
#include "graph_impl.h"
#include "kernels.h"
#include "mopt/executor.h"
#include "threadpool.h"

/* One sequence's KV cache: a session has its own, and a batched forward runs
 * several of these side by side. */
struct mopt_seq {
    const mopt_graph *g;
    int32_t max_ctx, len;
    int32_t n_kv;
    void **k_cache, **v_cache; /* per kv slot: [max_ctx, kv_dim] floats, or bytes in a quantized format */
    mopt_kv_quant *kv;         /* per kv slot: its format, with the scales copied (the graph's may change) */
    size_t *cache_bytes;       /* per kv slot: the bytes of its K cache, and of its V cache (mopt_alloc_zeroed) */
    size_t bytes;              /* cache memory */
};

/* A run of rows of the batch that belong to one sequence. */
typedef struct seg {
    mopt_seq *q;
    int32_t row0, T;
} seg;

struct mopt_session {
    const mopt_graph *g;
    const mopt_backend_i *be;
    void *be_ctx;
    char device[16]; /* "cpu" or "cuda:N" */
    int32_t kv_f16;  /* the float layers' caches in halves (mopt_session_opts.kv_cache) */
    int32_t max_ctx, max_batch;
    int32_t n_slots;
    float **slots;       /* [n_slots] each max_batch x slot width */
    int32_t *value_slot; /* value -> slot */
    mopt_seq own;        /* the cache mopt_session_forward uses */
    /* a batched forward's sequences, kept between calls so a decode step allocates nothing */
    seg *segs;
    mopt_op_args *seg_args; /* per sequence: its rows of a per-sequence op */
    int32_t seg_cap;
    int32_t *flat;          /* [max_batch] every sequence's tokens in a row, once a batched forward ran */
    float *logits;
    size_t logits_cap;   /* floats */
    int32_t lm_head;     /* node index */
};


void mopt_session_opts_default(mopt_session_opts *o) {
    memset(o, 0, sizeof *o);
    o->struct_size = sizeof *o;
}

const char *mopt_cpu_kernels_name(void) { return mopt_kernels_get()->name; }

static void seq_release(mopt_seq *q) {
    for (int32_t i = 0; i < q->n_kv; i++) { /* a failed seq_init may have left any of them NULL */
        if (q->k_cache && q->cache_bytes) mopt_free_zeroed(q->k_cache[i], q->cache_bytes[i]); /* caches come after sizes */
        if (q->v_cache && q->cache_bytes) mopt_free_zeroed(q->v_cache[i], q->cache_bytes[i]);
        if (q->kv) free((void *)q->kv[i].k_scale);
    }
    free(q->cache_bytes);
    free(q->k_cache);
    free(q->v_cache);
    free(q->kv);
    memset(q, 0, sizeof *q);
}

/* "f32" (or nothing): 0; "f16": 1. NULL reads $MOPT_KV_CACHE. */
static mopt_status parse_kv_cache(const char *k, int32_t *f16, mopt_error *err) {
    const char *src = k ? "kv_cache" : "KV cache (--kv-cache or MOPT_KV_CACHE)";
    if (!k) k = getenv("MOPT_KV_CACHE");
    *f16 = k && strcmp(k, "f16") == 0;
    if (k && *k && !*f16 && strcmp(k, "f32") != 0) return MOPT_FAIL(err, MOPT_E_INVALID, "%s '%s': expected f32 or f16", src, k);
    return MOPT_OK;
}

int64_t mopt_kv_bytes_per_position(const mopt_graph *g, const char *kv_cache, mopt_error *err) {
    int32_t f16 = 0;
    if (parse_kv_cache(kv_cache, &f16, err)) return -1;
    return mopt_graph_kv_bytes_in_session(g, f16);
}

int64_t mopt_session_kv_bytes_per_position(const mopt_session *s) { return mopt_graph_kv_bytes_in_session(s->g, s->kv_f16); }

/* Allocates the caches of every attention node of g for max_ctx positions. */
static mopt_status seq_init(mopt_seq *q, const mopt_graph *g, int32_t max_ctx, int32_t kv_f16, mopt_error *err) {
    memset(q, 0, sizeof *q);
    q->g = g;
    q->max_ctx = max_ctx;
    const int32_t nn = mopt_graph_n_nodes(g);
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->op == MOPT_OP_ATTENTION && n->kv_slot + 1 > q->n_kv) q->n_kv = n->kv_slot + 1;
    }
    q->k_cache = calloc((size_t)(q->n_kv ? q->n_kv : 1), sizeof *q->k_cache);
    q->v_cache = calloc((size_t)(q->n_kv ? q->n_kv : 1), sizeof *q->v_cache);
    q->kv = calloc((size_t)(q->n_kv ? q->n_kv : 1), sizeof *q->kv);
    q->cache_bytes = calloc((size_t)(q->n_kv ? q->n_kv : 1), sizeof *q->cache_bytes);
    if (!q->k_cache || !q->v_cache || !q->kv || !q->cache_bytes) goto nomem;
    for (int32_t i = 0; i < nn; i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if (n->op != MOPT_OP_ATTENTION) continue;
        size_t kvd = (size_t)n->n_kv_heads * (size_t)n->head_dim;
        if (q->k_cache[n->kv_slot]) {
            MOPT_FAIL(err, MOPT_E_INVALID, "two attention nodes share KV slot %d", n->kv_slot);
            seq_release(q);
            return MOPT_E_INVALID;
        }
        const mopt_kv_quant kq = mopt_graph_kv_in_session(g, n->layer, kv_f16);
        if (kq.format == MOPT_KV_F16) {
            q->kv[n->kv_slot] = kq;
        } else if (kq.format != MOPT_KV_FLOAT) {
            float *sc = malloc(2 * (size_t)kq.n_scales * sizeof *sc);
            if (!sc) goto nomem;
            memcpy(sc, kq.k_scale, (size_t)kq.n_scales * sizeof *sc);
            memcpy(sc + kq.n_scales, kq.v_scale, (size_t)kq.n_scales * sizeof *sc);
            q->kv[n->kv_slot] = (mopt_kv_quant){kq.format, kq.n_scales, sc, sc + kq.n_scales};
        }
        q->cache_bytes[n->kv_slot] = (size_t)max_ctx * kvd * mopt_kv_value_bytes(kq.format);
        q->k_cache[n->kv_slot] = mopt_alloc_zeroed(q->cache_bytes[n->kv_slot]);
        q->v_cache[n->kv_slot] = mopt_alloc_zeroed(q->cache_bytes[n->kv_slot]);
        if (!q->k_cache[n->kv_slot] || !q->v_cache[n->kv_slot]) goto nomem;
        q->bytes += 2 * q->cache_bytes[n->kv_slot];
    }
    return MOPT_OK;
nomem:
    seq_release(q);
    return MOPT_FAIL(err, MOPT_E_NOMEM, "cannot allocate the KV cache for %d positions", max_ctx);
}

/* Room for n sequences in a batched forward (one for a plain one). */
static mopt_status ensure_segs(mopt_session *s, int32_t n, mopt_error *err) {
    if (n <= s->seg_cap) return MOPT_OK;
    seg *sg = realloc(s->segs, (size_t)n * sizeof *sg);
    if (sg) s->segs = sg;
    mopt_op_args *a = sg ? realloc(s->seg_args, (size_t)n * sizeof *a) : NULL;
    if (!a) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    s->seg_args = a;
    s->seg_cap = n;
    return MOPT_OK;
}

void mopt_session_free(mopt_session *s) {
    if (!s) return;
    if (s->be && s->be_ctx) s->be->free(s->be_ctx);
    for (int32_t i = 0; i < s->n_slots; i++) free(s->slots[i]);
    seq_release(&s->own);
    free(s->segs);
    free(s->seg_args);
    free(s->flat);
    free(s->slots);
    free(s->value_slot);
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

/* "cpu" (or nothing): -1; "cuda": 0; "cuda:N": N. NULL reads $MOPT_DEVICE. */
static mopt_status parse_device(const char *d, int32_t *gpu, mopt_error *err) {
    const char *src = d ? "device" : "device (--device or MOPT_DEVICE)";
    if (!d) d = getenv("MOPT_DEVICE");
    *gpu = -1;
    if (!d || !*d || strcmp(d, "cpu") == 0) return MOPT_OK;
    if (strcmp(d, "cuda") == 0) {
        *gpu = 0;
        return MOPT_OK;
    }
    char *end = NULL;
    const long n = strncmp(d, "cuda:", 5) == 0 && d[5] >= '0' && d[5] <= '9' ? strtol(d + 5, &end, 10) : -1;
    if (n < 0 || n > 1023 || !end || *end)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s '%s': expected cpu, cuda or cuda:N", src, d);
    *gpu = (int32_t)n;
    return MOPT_OK;
}

const char *mopt_session_device(const mopt_session *s) { return s->device; }

mopt_session *mopt_session_new(const mopt_graph *g, const mopt_session_opts *opts, mopt_error *err) {
    mopt_session_opts o;
    mopt_session_opts_default(&o);
    mopt_opts_over(&o, sizeof o, opts);
    const mopt_arch *a = mopt_graph_arch(g);
    mopt_session *s = calloc(1, sizeof *s);
    if (!s) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    s->g = g;
    s->be = &mopt_backend_cpu;
    int32_t gpu = -1;
    if (parse_device(o.device, &gpu, err) || parse_kv_cache(o.kv_cache, &s->kv_f16, err)) goto fail;
    if (gpu >= 0) {
        s->be = &mopt_backend_cuda;
        snprintf(s->device, sizeof s->device, "cuda:%d", gpu);
    } else {
        snprintf(s->device, sizeof s->device, "cpu");
    }
    s->max_ctx = o.max_ctx > 0 && o.max_ctx < a->max_ctx ? o.max_ctx : a->max_ctx;
    s->max_batch = o.max_batch > 0 && o.max_batch < s->max_ctx ? o.max_batch : s->max_ctx;
    s->lm_head = -1;
    int32_t nn = mopt_graph_n_nodes(g);
    for (int32_t i = 0; i < nn; i++)
        if (mopt_graph_node(g, i)->op == MOPT_OP_LM_HEAD) s->lm_head = i;
    if (s->lm_head != nn - 1 || nn == 0) {
        MOPT_FAIL(err, MOPT_E_INVALID, "graph must end with an lm_head node");
        goto fail;
    }
    if (plan_slots(s, err)) goto fail;
    if (seq_init(&s->own, g, s->max_ctx, s->kv_f16, err)) goto fail;
    if (ensure_segs(s, 1, err)) goto fail;
    if (s->be->init(&s->be_ctx, g, o.n_threads, s->max_ctx, gpu, err)) goto fail;
    return s;
fail:
    mopt_session_free(s);
    return NULL;
}

int32_t mopt_session_length(const mopt_session *s) { return s->own.len; }
int32_t mopt_session_n_threads(const mopt_session *s) { return s->be->n_threads(s->be_ctx); }
void mopt_session_parallel_for(mopt_session *s, int64_t n_tasks, mopt_parallel_fn fn, void *user) {
    if (s && s->be->parallel_for) {
        s->be->parallel_for(s->be_ctx, n_tasks, fn, user);
        return;
    }
    for (int64_t t = 0; t < n_tasks; t++) fn(user, t, 0);
}
int32_t mopt_session_vocab_size(const mopt_session *s) { return mopt_graph_arch(s->g)->vocab_size; }

mopt_status mopt_session_truncate(mopt_session *s, int32_t n, mopt_error *err) { return mopt_seq_truncate(&s->own, n, err); }

mopt_seq *mopt_seq_new(const mopt_session *s, int32_t max_ctx, mopt_error *err) {
    mopt_seq *q = malloc(sizeof *q);
    if (!q) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    if (seq_init(q, s->g, max_ctx > 0 && max_ctx < s->max_ctx ? max_ctx : s->max_ctx, s->kv_f16, err)) {
        free(q);
        return NULL;
    }
    return q;
}

void mopt_seq_free(mopt_seq *q) {
    if (!q) return;
    seq_release(q);
    free(q);
}

int32_t mopt_seq_length(const mopt_seq *q) { return q->len; }
int32_t mopt_seq_max_ctx(const mopt_seq *q) { return q->max_ctx; }
size_t mopt_seq_bytes(const mopt_seq *q) { return q->bytes; }

mopt_status mopt_seq_truncate(mopt_seq *q, int32_t n, mopt_error *err) {
    if (n < 0 || n > q->len)
        return MOPT_FAIL(err, MOPT_E_INVALID, "cannot truncate a %d-token cache to %d", q->len, n);
    q->len = n; /* later positions are overwritten before they are read */
    return MOPT_OK;
}

/* Ops whose result depends on the position or the sequence: they run once
 * per segment, on its rows, with its cache. The rest run once over all rows. */
static bool per_sequence(mopt_op op) {
    return op == MOPT_OP_POS_EMBEDDING || op == MOPT_OP_ROPE || op == MOPT_OP_ATTENTION;
}

/* Runs nodes [first, last) over the rows of n_segs segments (T rows in all),
 * each at its sequence's current length. The lm_head computes every row
 * (all_logits, one segment), or the last row of each segment into
 * logits [n_segs, vocab]. */
static mopt_status run_nodes(mopt_session *s, int32_t first, int32_t last, const int32_t *tokens, int32_t T,
                             const seg *segs, int32_t n_segs, bool all_logits, float *logits, mopt_node_observer obs,
                             void *user, mopt_error *err) {
    const mopt_graph *g = s->g;
    for (int32_t i = first; i < last; i++) {
        if (mopt_interrupted()) /* between nodes: the cache keeps its length, nothing half-written counts */
            return MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted");
        const mopt_node *n = mopt_graph_node(g, i);
        mopt_op_args a = {0};
        a.node = n;
        a.T = T;
        a.pos = segs[0].q->len;
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
            if (n_segs > 1) { /* gather each sequence's last row to the front, then one GEMM */
                float *x = (float *)a.in[0];
                const size_t w = (size_t)a.in_width[0];
                for (int32_t k = 0; k < n_segs; k++)
                    memmove(x + (size_t)k * w, x + (size_t)(segs[k].row0 + segs[k].T - 1) * w, w * sizeof *x);
                a.row0 = 0;
                a.rows = n_segs;
            }
        } else {
            a.out = s->slots[s->value_slot[n->output]];
        }
        if (n->op == MOPT_OP_EMBEDDING && !tokens)
            return MOPT_FAIL(err, MOPT_E_INVALID, "node %s needs tokens", n->name);
        if (n->op == MOPT_OP_LINEAR && !obs) { /* the linears after it that read the same input go with it */
            mopt_op_args grp[MOPT_MAX_LINEAR_GROUP];
            int32_t ng = 0;
            grp[ng++] = a;
            while (ng < MOPT_MAX_LINEAR_GROUP && i + 1 < last) {
                const mopt_node *m = mopt_graph_node(g, i + 1);
                if (m->op != MOPT_OP_LINEAR || m->inputs[0] != n->inputs[0]) break;
                bool own_slot = true; /* an output nobody reads may share a slot with the next one: not at once, then */
                for (int32_t k = 0; k < ng; k++)
                    if (s->value_slot[grp[k].node->output] == s->value_slot[m->output]) own_slot = false;
                if (!own_slot) break;
                grp[ng] = a;
                grp[ng].node = m;
                grp[ng].out = s->slots[s->value_slot[m->output]];
                grp[ng++].out_width = mopt_graph_value_width(g, m->output);
                i++;
            }
            if (ng > 1) a.group = grp, a.n_group = ng;
            mopt_status st = s->be->forward(s->be_ctx, &a, err);
            if (st) return st;
        } else if (!per_sequence(n->op)) {
            mopt_status st = s->be->forward(s->be_ctx, &a, err);
            if (st) return st;
        } else {
            for (int32_t k = 0; k < n_segs; k++) {
                mopt_op_args *b = &s->seg_args[k];
                const seg *sg = &segs[k];
                *b = a;
                b->T = sg->T;
                b->pos = sg->q->len;
                for (int j = 0; j < n->n_inputs; j++) b->in[j] = a.in[j] + (size_t)sg->row0 * (size_t)a.in_width[j];
                b->out = a.out + (size_t)sg->row0 * (size_t)a.out_width;
                if (n->op == MOPT_OP_ATTENTION) {
                    b->k_cache = sg->q->k_cache[n->kv_slot];
                    b->v_cache = sg->q->v_cache[n->kv_slot];
                    b->kv = sg->q->kv[n->kv_slot];
                }
            }
            if (n->op == MOPT_OP_ATTENTION && n_segs > 1) { /* one call, so the backend can spread every sequence's heads at once */
                a.seqs = s->seg_args;
                a.n_seqs = n_segs;
                mopt_status st = s->be->forward(s->be_ctx, &a, err);
                if (st) return st;
            } else {
                for (int32_t k = 0; k < n_segs; k++) {
                    mopt_status st = s->be->forward(s->be_ctx, &s->seg_args[k], err);
                    if (st) return st;
                }
            }
        }
        if (obs) obs(user, i, a.in, a.in_width, n->n_inputs, a.out, a.out_width, n->op == MOPT_OP_LM_HEAD ? a.rows : T);
    }
    return MOPT_OK;
}

/* One chunk of at most max_batch tokens of the session's own sequence. */
static mopt_status forward_chunk(mopt_session *s, const int32_t *tokens, int32_t T, bool all_logits, float *logits,
                                 mopt_error *err) {
    const seg one = {&s->own, 0, T};
    mopt_status st = run_nodes(s, 0, mopt_graph_n_nodes(s->g), tokens, T, &one, 1, all_logits, logits, NULL, NULL, err);
    if (st) return st;
    s->own.len += T;
    return MOPT_OK;
}

static mopt_status ensure_logits(mopt_session *s, size_t rows, mopt_error *err) {
    const size_t need = rows * (size_t)mopt_graph_arch(s->g)->vocab_size;
    if (need <= s->logits_cap) return MOPT_OK;
    float *p = realloc(s->logits, need * sizeof(float));
    if (!p) return MOPT_FAIL(err, MOPT_E_NOMEM, "cannot allocate logits for %zu rows", rows);
    s->logits = p;
    s->logits_cap = need;
    return MOPT_OK;
}

static mopt_status check_tokens(const mopt_arch *a, const int32_t *tokens, int32_t n, mopt_error *err) {
    for (int32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= a->vocab_size)
            return MOPT_FAIL(err, MOPT_E_INVALID, "token id %d at position %d is outside the vocabulary (0..%d)",
                             tokens[i], i, a->vocab_size - 1);
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
    if (ensure_logits(s, 1, err)) return MOPT_E_NOMEM;
    s->own.len = 0;
    const seg one = {&s->own, 0, T};
    mopt_status st = run_nodes(s, first, last, tokens, T, &one, 1, false, s->logits, observer, user, err);
    s->own.len = 0; /* the cache holds this sequence only partially: treat it as empty */
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
    if (s->own.len + n > s->max_ctx)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%d tokens after %d cached exceed the context of %d", n, s->own.len,
                         s->max_ctx);
    mopt_status st = check_tokens(a, tokens, n, err);
    if (!st) st = ensure_logits(s, all_logits ? (size_t)n : 1, err);
    if (st) return st;
    for (int32_t done = 0; done < n;) {
        int32_t T = n - done < s->max_batch ? n - done : s->max_batch;
        float *dst = all_logits ? s->logits + (size_t)done * a->vocab_size : s->logits;
        /* Without all_logits each chunk writes its last row; the final one wins. */
        st = forward_chunk(s, tokens + done, T, all_logits, dst, err);
        if (st) return st;
        done += T;
    }
    if (logits) *logits = s->logits;
    return MOPT_OK;
}

int32_t mopt_session_max_batch(const mopt_session *s) { return s->max_batch; }

mopt_status mopt_session_forward_batch(mopt_session *s, mopt_seq *const *seqs, const int32_t *const *tokens,
                                       const int32_t *n, int32_t n_seqs, const float **logits, mopt_error *err) {
    const mopt_arch *a = mopt_graph_arch(s->g);
    if (logits) *logits = NULL;
    if (n_seqs <= 0) return MOPT_FAIL(err, MOPT_E_INVALID, "a batched forward needs at least one sequence");
    int64_t total = 0;
    for (int32_t i = 0; i < n_seqs; i++) {
        if (!seqs[i] || seqs[i]->g != s->g)
            return MOPT_FAIL(err, MOPT_E_INVALID, "sequence %d was not made for this session's graph", i);
        for (int32_t j = 0; j < i; j++)
            if (seqs[j] == seqs[i]) return MOPT_FAIL(err, MOPT_E_INVALID, "sequence %d appears twice in the batch", i);
        if (n[i] <= 0) return MOPT_FAIL(err, MOPT_E_INVALID, "sequence %d has no tokens", i);
        if (seqs[i]->len + n[i] > seqs[i]->max_ctx)
            return MOPT_FAIL(err, MOPT_E_INVALID, "sequence %d: %d tokens after %d cached exceed its context of %d", i,
                             n[i], seqs[i]->len, seqs[i]->max_ctx);
        mopt_status st = check_tokens(a, tokens[i], n[i], err);
        if (st) return st;
        total += n[i];
    }
    if (total > s->max_batch)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%lld tokens exceed the session's batch of %d", (long long)total,
                         s->max_batch);
    if (!s->flat && !(s->flat = malloc((size_t)s->max_batch * sizeof *s->flat)))
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    mopt_status st = ensure_segs(s, n_seqs, err);
    if (!st) st = ensure_logits(s, (size_t)n_seqs, err);
    if (st) return st;
    int32_t row = 0;
    for (int32_t i = 0; i < n_seqs; i++) {
        s->segs[i] = (seg){seqs[i], row, n[i]};
        memcpy(s->flat + row, tokens[i], (size_t)n[i] * sizeof *s->flat);
        row += n[i];
    }
    st = run_nodes(s, 0, mopt_graph_n_nodes(s->g), s->flat, row, s->segs, n_seqs, false, s->logits, NULL, NULL, err);
    for (int32_t i = 0; !st && i < n_seqs; i++) seqs[i]->len += n[i];
    if (!st && logits) *logits = s->logits;
    return st;
}
