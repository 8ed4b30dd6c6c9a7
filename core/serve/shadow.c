/* Shadow mode: a sampled request's prompt also runs greedily on both arms,
 * beside the real answer and without touching it. When both shadows finish,
 * their agreement goes to the monitor: the fraction of the first n greedy
 * tokens that are equal position by position, and KL(baseline || candidate)
 * of the first token's distribution (both arms see the same prompt there). */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

typedef struct shadow_pair {
    srv_request *r[SRV_ARMS];
    atomic_int pending;
    int32_t n_tokens;
    srv_monitor *mon;
    srv_metrics *met;
} shadow_pair;

/* KL(p || q) of the softmaxes of two logit rows, in double. */
static double kl_logits(const float *p, const float *q, int32_t n) {
    double mp = -INFINITY, mq = -INFINITY, zp = 0, zq = 0, kl = 0;
    for (int32_t i = 0; i < n; i++) {
        if (p[i] > mp) mp = p[i];
        if (q[i] > mq) mq = q[i];
    }
    for (int32_t i = 0; i < n; i++) {
        zp += exp(p[i] - mp);
        zq += exp(q[i] - mq);
    }
    const double lzp = log(zp) + mp, lzq = log(zq) + mq;
    for (int32_t i = 0; i < n; i++) {
        const double lp = p[i] - lzp, lq = q[i] - lzq;
        kl += exp(lp) * (lp - lq);
    }
    return kl > 0 ? kl : 0;
}

static void compare(shadow_pair *sp) {
    srv_request *b = sp->r[SRV_BASELINE], *c = sp->r[SRV_CANDIDATE];
    const bool ok = (b->finish == SRV_STOP || b->finish == SRV_LENGTH) && (c->finish == SRV_STOP || c->finish == SRV_LENGTH) &&
                    b->first_logits && c->first_logits && b->vocab == c->vocab;
    if (!ok) return; /* a failed or cancelled shadow (server stopping, queue trouble) says nothing of quality */
    int32_t match = 0;
    for (int32_t i = 0; i < sp->n_tokens; i++)
        match += i < b->n_kept && i < c->n_kept && b->kept_ids[i] == c->kept_ids[i];
    const double agree = (double)match / sp->n_tokens, kl = kl_logits(b->first_logits, c->first_logits, b->vocab);
    pthread_mutex_lock(&sp->met->mu);
    sp->met->shadow_requests++;
    sp->met->shadow_tokens += (uint64_t)sp->n_tokens;
    sp->met->shadow_matches += (uint64_t)match;
    sp->met->shadow_kl_sum += kl;
    pthread_mutex_unlock(&sp->met->mu);
    if (sp->mon) srv_monitor_shadow(sp->mon, agree, kl);
}

static void shadow_done(void *user) {
    shadow_pair *sp = user;
    if (atomic_fetch_sub(&sp->pending, 1) != 1) return; /* the other arm is still running */
    compare(sp);
    srv_request_unref(sp->r[0]);
    srv_request_unref(sp->r[1]);
    free(sp);
}

void srv_shadow_start(srv_engine *const eng[SRV_ARMS], const int32_t *prompt, int32_t n_prompt, int32_t n_tokens,
                      srv_monitor *mon, srv_metrics *met) {
    shadow_pair *sp = calloc(1, sizeof *sp);
    if (!sp) return;
    sp->n_tokens = n_tokens;
    sp->mon = mon;
    sp->met = met;
    for (int a = 0; a < SRV_ARMS; a++) {
        srv_request *r = sp->r[a] = srv_request_new();
        if (!r) goto fail;
        r->prompt = malloc((size_t)n_prompt * sizeof *r->prompt);
        r->kept_ids = malloc((size_t)n_tokens * sizeof *r->kept_ids);
        if (!r->prompt || !r->kept_ids) goto fail;
        memcpy(r->prompt, prompt, (size_t)n_prompt * sizeof *r->prompt);
        r->n_prompt = n_prompt;
        r->max_tokens = n_tokens;
        r->temperature = 0;
        r->shadow = true;
        r->on_done = shadow_done;
        r->on_done_user = sp;
    }
    atomic_store(&sp->pending, SRV_ARMS);
    /* Each arm's on_done runs once, whether it was queued or refused. */
    for (int a = 0; a < SRV_ARMS; a++)
        if (srv_engine_submit(eng[a], sp->r[a]) != SRV_QUEUED) shadow_done(sp);
    return;
fail:
    for (int a = 0; a < SRV_ARMS; a++) srv_request_unref(sp->r[a]);
    free(sp);
}
