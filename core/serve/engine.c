/* Continuous batching for one model: a thread admits queued requests into
 * sequence slots (each with its own KV cache), and every step runs one
 * batched forward that carries a token for each decoding sequence plus chunks
 * of new prompts, then samples each sequence that has seen its whole input.
 * A request joins and leaves the batch between any two steps. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

typedef struct slot {
    srv_request *r; /* NULL: free */
    mopt_seq *q;
    mopt_sampler smp;
    int32_t *ids;   /* prompt, then the generated tokens */
    int32_t n_ids, fed; /* fed: tokens of ids already in the cache */
} slot;

struct srv_engine {
    mopt_model *m;
    const mopt_tokenizer *tok;
    int32_t vocab, eos, ctx, max_batch;
    int arm;
    mopt_session *s;
    slot *slots;
    int32_t n_slots, n_active;
    srv_request **queue; /* ring */
    int32_t q_head, q_len, q_cap;
    pthread_t th;
    bool started, stop;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_metrics *met;
    srv_monitor *mon;
    float *scratch;
    float *penalized;  /* [vocab]: a row with a request's penalties taken off */
    uint32_t *counts;  /* [vocab]: srv_penalize's, zero between calls */
    mopt_seq **bq;
    const int32_t **bt;
    int32_t *bn, *bslot;
};

int32_t srv_engine_ctx(const srv_engine *e) { return e->ctx; }
int32_t srv_engine_slots(const srv_engine *e) { return e->n_slots; }
const mopt_tokenizer *srv_engine_tokenizer(const srv_engine *e) { return e->tok; }

static void set_gauges(srv_engine *e) { /* e->mu held */
    pthread_mutex_lock(&e->met->mu);
    e->met->arm[e->arm].queue_depth = e->q_len;
    e->met->arm[e->arm].active = e->n_active;
    pthread_mutex_unlock(&e->met->mu);
}

/* Counts a finished request in the metrics and tells the monitor; r->mu held. */
static void account(srv_engine *e, srv_request *r) {
    if (r->shadow) return; /* not traffic */
    srv_arm_metrics *x = &e->met->arm[e->arm];
    if (e->mon && r->finish != SRV_CANCELLED)
        srv_monitor_request(e->mon, e->arm, r->finish == SRV_STOP || r->finish == SRV_LENGTH,
                            (r->t_done - r->t_submit) / (r->n_generated > 0 ? r->n_generated : 1));
    pthread_mutex_lock(&e->met->mu);
    if (r->finish == SRV_STOP || r->finish == SRV_LENGTH) {
        x->requests_ok++;
        srv_hist_add(&x->latency, r->t_done - r->t_submit);
    } else if (r->finish == SRV_CANCELLED) {
        x->requests_cancelled++;
    } else {
        x->requests_failed++;
    }
    pthread_mutex_unlock(&e->met->mu);
}

static void finish(srv_engine *e, srv_request *r, srv_finish why, const char *msg) {
    pthread_mutex_lock(&r->mu);
    const bool first = r->finish == SRV_RUNNING;
    srv_request_finish(r, why, msg);
    if (first) account(e, r);
    pthread_mutex_unlock(&r->mu);
    if (first && r->on_done) r->on_done(r->on_done_user);
}

static void release(srv_engine *e, slot *sl) {
    srv_request_unref(sl->r);
    sl->r = NULL;
    free(sl->ids);
    sl->ids = NULL;
    pthread_mutex_lock(&e->mu);
    e->n_active--;
    set_gauges(e);
    pthread_mutex_unlock(&e->mu);
}

/* Moves queued requests into free slots; e->mu held. */
static void admit(srv_engine *e) {
    for (int32_t i = 0; i < e->n_slots && e->q_len > 0; i++) {
        slot *sl = &e->slots[i];
        if (sl->r) continue;
        srv_request *r = e->queue[e->q_head];
        e->q_head = (e->q_head + 1) % e->q_cap;
        e->q_len--;
        sl->ids = malloc(((size_t)r->n_prompt + (size_t)r->max_tokens + 1) * sizeof *sl->ids);
        pthread_mutex_lock(&r->mu);
        const bool gone = srv_request_gone(r);
        pthread_mutex_unlock(&r->mu);
        if (gone || !sl->ids) {
            free(sl->ids);
            sl->ids = NULL;
            finish(e, r, gone ? SRV_CANCELLED : SRV_FAILED, gone ? NULL : "out of memory");
            srv_request_unref(r);
            i--; /* the slot is still free */
            continue;
        }
        memcpy(sl->ids, r->prompt, (size_t)r->n_prompt * sizeof *sl->ids);
        sl->n_ids = r->n_prompt;
        sl->fed = 0;
        mopt_seq_truncate(sl->q, 0, NULL);
        mopt_sampler_init(&sl->smp, r->temperature, r->top_p, r->seed);
        sl->r = r;
        e->n_active++;
    }
    set_gauges(e);
}

void srv_penalize(const float *logits, int32_t vocab, const int32_t *gen, int32_t n_gen, float presence, float frequency,
                  uint32_t *counts, float *out) {
    memcpy(out, logits, (size_t)vocab * sizeof *out);
    for (int32_t i = 0; i < n_gen; i++)
        if (gen[i] >= 0 && gen[i] < vocab) counts[gen[i]]++;
    for (int32_t i = 0; i < n_gen; i++) { /* each token once, as the formula has it: mu - c f - p */
        const int32_t t = gen[i];
        if (t < 0 || t >= vocab || !counts[t]) continue;
        out[t] = logits[t] - (float)counts[t] * frequency - presence;
        counts[t] = 0;
    }
}

/* {token, logprob, bytes} of one token's text (not UTF-8 on its own, a byte of a character: U+FFFD as the token,
 * the bytes as they are); -inf and NaN as OpenAI's -9999 */
static json_t *token_json(const char *s, size_t n, double lp) {
    json_t *bytes = json_array();
    for (size_t i = 0; bytes && i < n; i++) json_array_append_new(bytes, json_integer((unsigned char)s[i]));
    return json_pack("{s:o,s:f,s:o}", "token", srv_json_text(s, n), "logprob", isfinite(lp) ? lp : -9999.0, "bytes", bytes);
}

/* The chosen token's log-probability under the model's own distribution (log-softmax of the raw logits, before
 * penalties and temperature, as vLLM reports them) and the `top` most likely tokens', each as its text would
 * continue the slot's tokens. */
static json_t *logprob_entry(const srv_engine *e, const slot *sl, const float *raw, int32_t next, const char *piece, size_t n,
                             int32_t top) {
    double mx = -INFINITY, sum = 0;
    for (int32_t v = 0; v < e->vocab; v++) mx = raw[v] > mx ? raw[v] : mx;
    for (int32_t v = 0; v < e->vocab; v++) sum += exp((double)raw[v] - mx);
    const double lse = mx + log(sum);
    int32_t best[20], nb = 0; /* the largest logits, in descending order (the lower id first among equals) */
    for (int32_t v = 0; v < e->vocab && top > 0; v++) {
        if (nb == top && !(raw[v] > raw[best[nb - 1]])) continue;
        int32_t j = nb < top ? nb++ : nb - 1;
        for (; j > 0 && raw[v] > raw[best[j - 1]]; j--) best[j] = best[j - 1];
        best[j] = v;
    }
    json_t *entry = token_json(piece, n, (double)raw[next] - lse), *alts = json_array();
    for (int32_t i = 0; i < nb && entry && alts; i++) {
        char buf[1024];
        const int64_t k = mopt_tokenizer_decode_next(e->tok, sl->ids, (size_t)sl->n_ids, best[i], buf, sizeof buf);
        json_array_append_new(alts, token_json(buf, k > 0 ? (size_t)k : 0, (double)raw[best[i]] - lse));
    }
    if (!entry || !alts || json_object_set_new(entry, "top_logprobs", alts)) {
        json_decref(entry);
        return NULL;
    }
    return entry;
}

/* Samples the next token of a slot whose input is all in the cache; false when
 * the request is finished. */
static bool advance(srv_engine *e, slot *sl, const float *row) {
    srv_request *r = sl->r;
    if (r->kept_ids && r->n_generated == 0 && !r->first_logits) { /* a shadow: keep what its first token came from */
        r->first_logits = malloc((size_t)e->vocab * sizeof *r->first_logits);
        if (r->first_logits) memcpy(r->first_logits, row, (size_t)e->vocab * sizeof *row);
        r->vocab = e->vocab;
    }
    const float *raw = row;
    if (r->presence_penalty != 0 || r->frequency_penalty != 0) {
        srv_penalize(row, e->vocab, sl->ids + r->n_prompt, sl->n_ids - r->n_prompt, r->presence_penalty, r->frequency_penalty,
                     e->counts, e->penalized);
        row = e->penalized;
    }
    const int32_t next = mopt_sampler_sample(&sl->smp, row, e->vocab, e->scratch);
    if (r->kept_ids && next >= 0 && r->n_kept < r->max_tokens) r->kept_ids[r->n_kept++] = next;
    if (next < 0 || next == e->eos) {
        finish(e, r, next < 0 ? SRV_FAILED : SRV_STOP, next < 0 ? "sampling failed" : NULL);
        return false;
    }
    char piece[1024];
    int64_t k = mopt_tokenizer_decode_next(e->tok, sl->ids, (size_t)sl->n_ids, next, piece, sizeof piece);
    json_t *lp = r->top_logprobs >= 0 ? logprob_entry(e, sl, raw, next, piece, k > 0 ? (size_t)k : 0, r->top_logprobs) : NULL;
    sl->ids[sl->n_ids++] = next;
    const double now = srv_now();
    pthread_mutex_lock(&r->mu);
    srv_arm_metrics *x = &e->met->arm[e->arm];
    if (!r->shadow) {
        pthread_mutex_lock(&e->met->mu);
        if (r->n_generated == 0) srv_hist_add(&x->ttft, now - r->t_submit);
        else srv_hist_add(&x->inter_token, now - r->t_last);
        x->generated_tokens++;
        pthread_mutex_unlock(&e->met->mu);
    }
    r->t_last = now;
    r->n_generated++;
    if (r->top_logprobs >= 0) { /* its text ends where this piece will */
        const size_t i = json_array_size(r->lp);
        if (lp && i < (size_t)r->max_tokens && !json_array_append_new(r->lp, lp)) {
            r->lp_end[i] = r->text.n + (k > 0 ? (size_t)k : 0);
        } else {
            if (lp && i >= (size_t)r->max_tokens) json_decref(lp); /* (appending takes it over, failing too) */
            srv_request_finish(r, SRV_FAILED, "out of memory");
        }
    }
    bool done = r->finish != SRV_RUNNING || srv_request_append(r, piece, k > 0 ? (size_t)k : 0);
    if (!done && (r->n_generated >= r->max_tokens || sl->n_ids >= mopt_seq_max_ctx(sl->q))) {
        srv_request_finish(r, SRV_LENGTH, NULL);
        done = true;
    }
    if (done) account(e, r);
    pthread_mutex_unlock(&r->mu);
    if (done && r->on_done) r->on_done(r->on_done_user);
    return !done;
}

/* One forward over every active slot: decode tokens first, then prompt chunks in what is left of max_batch. */
static void step(srv_engine *e) {
    int32_t nb = 0, budget = e->max_batch;
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = 0; i < e->n_slots && budget > 0; i++) {
            slot *sl = &e->slots[i];
            if (!sl->r) continue;
            const int32_t want = sl->n_ids - sl->fed;
            if ((pass == 0) != (want == 1)) continue;
            const int32_t take = want < budget ? want : budget;
            e->bq[nb] = sl->q;
            e->bt[nb] = sl->ids + sl->fed;
            e->bn[nb] = take;
            e->bslot[nb++] = i;
            budget -= take;
        }
    if (!nb) return;
    const float *logits = NULL;
    mopt_error err = {0};
    const mopt_status st = mopt_session_forward_batch(e->s, e->bq, e->bt, e->bn, nb, &logits, &err);
    pthread_mutex_lock(&e->met->mu);
    srv_arm_metrics *x = &e->met->arm[e->arm];
    x->steps++;
    srv_hist_add(&x->batch_seqs, nb);
    srv_hist_add(&x->batch_tokens, e->max_batch - budget);
    for (int32_t b = 0; !st && b < nb; b++)
        if (e->bn[b] > 1 || e->slots[e->bslot[b]].fed < e->slots[e->bslot[b]].r->n_prompt)
            x->prompt_tokens += (uint64_t)e->bn[b];
    pthread_mutex_unlock(&e->met->mu);
    for (int32_t b = 0; b < nb; b++) {
        slot *sl = &e->slots[e->bslot[b]];
        if (st) {
            finish(e, sl->r, SRV_FAILED, err.msg[0] ? err.msg : "forward failed");
            release(e, sl);
            continue;
        }
        sl->fed += e->bn[b];
        if (sl->fed < sl->n_ids) continue; /* more of the prompt to go */
        if (!advance(e, sl, logits + (size_t)b * (size_t)e->vocab)) release(e, sl);
    }
}

static void *engine_main(void *p) {
    srv_engine *e = p;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (!e->stop) admit(e);
        while (!e->stop && e->n_active == 0 && e->q_len == 0) pthread_cond_wait(&e->cv, &e->mu);
        const bool stop = e->stop;
        if (!stop && e->n_active == 0) admit(e);
        pthread_mutex_unlock(&e->mu);
        if (stop) break;
        for (int32_t i = 0; i < e->n_slots; i++) { /* clients that went away */
            slot *sl = &e->slots[i];
            if (!sl->r) continue;
            pthread_mutex_lock(&sl->r->mu);
            const bool gone = srv_request_gone(sl->r);
            pthread_mutex_unlock(&sl->r->mu);
            if (gone) {
                finish(e, sl->r, SRV_CANCELLED, NULL);
                release(e, sl);
            }
        }
        step(e);
    }
    /* stopping: everything still here fails */
    for (int32_t i = 0; i < e->n_slots; i++)
        if (e->slots[i].r) {
            finish(e, e->slots[i].r, SRV_FAILED, "the server is stopping");
            release(e, &e->slots[i]);
        }
    pthread_mutex_lock(&e->mu);
    while (e->q_len > 0) {
        srv_request *r = e->queue[e->q_head];
        e->q_head = (e->q_head + 1) % e->q_cap;
        e->q_len--;
        finish(e, r, SRV_FAILED, "the server is stopping");
        srv_request_unref(r);
    }
    set_gauges(e);
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

srv_submit srv_engine_submit(srv_engine *e, srv_request *r) {
    pthread_mutex_lock(&e->mu);
    srv_submit res = SRV_QUEUED;
    if (e->stop) res = SRV_STOPPING;
    else if (e->q_len >= e->q_cap) res = SRV_QUEUE_FULL;
    else {
        srv_request_ref(r);
        r->t_submit = srv_now();
        e->queue[(e->q_head + e->q_len) % e->q_cap] = r;
        e->q_len++;
        set_gauges(e);
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    return res;
}

void srv_engine_stop(srv_engine *e) {
    if (!e || !e->started) return;
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->th, NULL);
    e->started = false;
}

void srv_engine_free(srv_engine *e) {
    if (!e) return;
    srv_engine_stop(e);
    for (int32_t i = 0; e->slots && i < e->n_slots; i++) {
        mopt_seq_free(e->slots[i].q);
        free(e->slots[i].ids);
    }
    free(e->slots);
    free(e->queue);
    free(e->scratch);
    free(e->penalized);
    free(e->counts);
    free(e->bq);
    free(e->bt);
    free(e->bn);
    free(e->bslot);
    mopt_session_free(e->s);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

srv_engine *srv_engine_new(mopt_model *m, int arm, const srv_engine_opts *o, srv_metrics *metrics, srv_monitor *monitor,
                           mopt_error *err) {
    const mopt_arch *a = mopt_model_arch(m);
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    if (!tok) {
        mopt_error_set(err, MOPT_E_INVALID, "serve", "%s has no tokenizer", mopt_model_path(m));
        return NULL;
    }
    srv_engine *e = calloc(1, sizeof *e);
    if (!e) {
        mopt_error_set(err, MOPT_E_NOMEM, "serve", "out of memory");
        return NULL;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->m = m;
    e->tok = tok;
    e->arm = arm;
    e->met = metrics;
    e->mon = monitor;
    e->vocab = a->vocab_size;
    e->eos = a->eos_id >= 0 ? a->eos_id : mopt_tokenizer_eos_id(tok);
    e->ctx = o->ctx > 0 && o->ctx < a->max_ctx ? o->ctx : a->max_ctx;
    e->n_slots = o->max_seqs > 0 ? o->max_seqs : 1;
    const int64_t per_pos = mopt_kv_bytes_per_position(mopt_model_graph(m), NULL, err); /* NULL: --kv-cache's choice */
    if (per_pos < 0) goto fail;
    const int64_t per_seq = per_pos * (int64_t)e->ctx;
    if (o->kv_budget > 0 && per_seq > 0 && per_seq * e->n_slots > o->kv_budget) {
        if (per_seq > o->kv_budget) {
            mopt_error_set(err, MOPT_E_INVALID, "serve",
                           "%s: one sequence of %d positions needs %.1f MiB of KV cache, more than the budget of %.1f MiB; "
                           "raise --kv-memory or lower --ctx", mopt_model_path(m), e->ctx, per_seq / 1048576.0,
                           o->kv_budget / 1048576.0);
            goto fail;
        }
        e->n_slots = (int32_t)(o->kv_budget / per_seq);
        srv_log(false, "%s: the KV budget of %.1f MiB holds %d sequences of %d positions (%.1f MiB each), not %d",
                mopt_model_path(m), o->kv_budget / 1048576.0, e->n_slots, e->ctx, per_seq / 1048576.0, o->max_seqs);
    }
    e->max_batch = o->max_batch > e->n_slots ? o->max_batch : e->n_slots;
    e->q_cap = o->queue_cap > 0 ? o->queue_cap : 1;
    mopt_session_opts so;
    mopt_session_opts_default(&so);
    so.n_threads = o->n_threads;
    so.max_ctx = e->ctx;
    so.max_batch = e->max_batch;
    e->s = mopt_session_new(mopt_model_graph(m), &so, err);
    if (!e->s) goto fail;
    if (mopt_session_max_batch(e->s) < e->max_batch) e->max_batch = mopt_session_max_batch(e->s);
    if (e->max_batch < e->n_slots) {
        mopt_error_set(err, MOPT_E_INVALID, "serve", "%d sequences do not fit a batch of %d tokens", e->n_slots, e->max_batch);
        goto fail;
    }
    e->slots = calloc((size_t)e->n_slots, sizeof *e->slots);
    e->queue = calloc((size_t)e->q_cap, sizeof *e->queue);
    e->scratch = malloc(2 * (size_t)e->vocab * sizeof *e->scratch);
    e->penalized = malloc((size_t)e->vocab * sizeof *e->penalized);
    e->counts = calloc((size_t)e->vocab, sizeof *e->counts);
    e->bq = calloc((size_t)e->n_slots, sizeof *e->bq);
    e->bt = calloc((size_t)e->n_slots, sizeof *e->bt);
    e->bn = calloc((size_t)e->n_slots, sizeof *e->bn);
    e->bslot = calloc((size_t)e->n_slots, sizeof *e->bslot);
    if (!e->slots || !e->queue || !e->scratch || !e->penalized || !e->counts || !e->bq || !e->bt || !e->bn || !e->bslot) {
        mopt_error_set(err, MOPT_E_NOMEM, "serve", "out of memory");
        goto fail;
    }
    int64_t kv = 0;
    for (int32_t i = 0; i < e->n_slots; i++) {
        e->slots[i].q = mopt_seq_new(e->s, e->ctx, err);
        if (!e->slots[i].q) goto fail;
        kv += (int64_t)mopt_seq_bytes(e->slots[i].q);
    }
    pthread_mutex_lock(&metrics->mu);
    metrics->arm[arm].kv_bytes = kv;
    metrics->arm[arm].model_bytes = mopt_graph_weight_bytes(mopt_model_graph(m));
    pthread_mutex_unlock(&metrics->mu);
    if (pthread_create(&e->th, NULL, engine_main, e)) {
        mopt_error_set(err, MOPT_E_IO, "serve", "cannot start the engine thread");
        goto fail;
    }
    e->started = true;
    return e;
fail:
    srv_engine_free(e);
    return NULL;
}
