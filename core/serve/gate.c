/* Live gates: sliding windows of the candidate's shadow agreement, latency
 * and errors, judged against eval.gate-style thresholds after every sample.
 * A candidate that fails one loses its traffic (split 0) at once; the server
 * keeps answering from the baseline, and the rollback is logged and counted. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve.h"

bool srv_gate_parse(const char *spec, srv_gate *g, char *msg, size_t cap) {
    static const char *const names[] = {"min_top1_agree", "max_kl_mean", "max_p95_ratio", "max_error_rate"};
    double *slots[] = {&g->min_top1_agree, &g->max_kl_mean, &g->max_p95_ratio, &g->max_error_rate};
    for (const char *p = spec; *p;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        int k = -1;
        for (int i = 0; eq && i < 4; i++)
            if ((size_t)(eq - p) == strlen(names[i]) && !strncmp(p, names[i], (size_t)(eq - p))) k = i;
        char *num_end = NULL;
        const double v = eq ? strtod(eq + 1, &num_end) : -1;
        if (k < 0 || num_end != end || eq + 1 == end || !(v >= 0) || (k == 0 && v > 1)) {
            snprintf(msg, cap, "--gate: '%.*s' is not one of min_top1_agree=F (0..1), max_kl_mean=F, max_p95_ratio=F, "
                               "max_error_rate=F", (int)(end - p), p);
            return false;
        }
        *slots[k] = v;
        p = *end ? end + 1 : end;
    }
    return true;
}

static void push(srv_window *w, double v) {
    w->v[(w->head + w->n) % w->cap] = v;
    if (w->n < w->cap) w->n++;
    else w->head = (w->head + 1) % w->cap;
}

static bool full(const srv_window *w) { return w->n == w->cap; }

static double mean(const srv_window *w) {
    double s = 0;
    for (int i = 0; i < w->n; i++) s += w->v[(w->head + i) % w->cap];
    return w->n ? s / w->n : 0;
}

static double p95(const srv_window *w) {
    double v[1024];
    for (int i = 0; i < w->n; i++) v[i] = w->v[(w->head + i) % w->cap];
    return w->n ? mopt_quantile(v, w->n, 0.95) : 0;
}

void srv_monitor_init(srv_monitor *m, const srv_gate *g, srv_router *router, srv_metrics *met) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->gate = *g;
    if (m->gate.window < 1) m->gate.window = 1;
    if (m->gate.window > 1024) m->gate.window = 1024;
    m->router = router;
    m->met = met;
    srv_window *all[] = {&m->latency[0], &m->latency[1], &m->errors[0], &m->errors[1], &m->agree, &m->kl};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) all[i]->cap = m->gate.window;
}

void srv_monitor_free(srv_monitor *m) { pthread_mutex_destroy(&m->mu); }

/* Judges the full windows; m->mu held. */
static void judge(srv_monitor *m) {
    pthread_mutex_lock(&m->met->mu);
    m->met->window_agreement = full(&m->agree) ? mean(&m->agree) : -1;
    m->met->window_kl = full(&m->kl) ? mean(&m->kl) : -1;
    pthread_mutex_unlock(&m->met->mu);
    if (m->rolled_back || srv_router_split(m->router) <= 0) return;
    const srv_gate *g = &m->gate;
    char why[256] = "";
    if (g->min_top1_agree >= 0 && full(&m->agree) && mean(&m->agree) < g->min_top1_agree)
        snprintf(why, sizeof why, "shadow agreement %.3f < min_top1_agree %.3f", mean(&m->agree), g->min_top1_agree);
    else if (g->max_kl_mean >= 0 && full(&m->kl) && mean(&m->kl) > g->max_kl_mean)
        snprintf(why, sizeof why, "shadow KL %.4f > max_kl_mean %.4f", mean(&m->kl), g->max_kl_mean);
    else if (g->max_p95_ratio >= 0 && full(&m->latency[SRV_CANDIDATE]) && full(&m->latency[SRV_BASELINE]) &&
             p95(&m->latency[SRV_BASELINE]) > 0 &&
             p95(&m->latency[SRV_CANDIDATE]) / p95(&m->latency[SRV_BASELINE]) > g->max_p95_ratio)
        snprintf(why, sizeof why, "p95 latency per token %.2fx the baseline's > max_p95_ratio %.2f",
                 p95(&m->latency[SRV_CANDIDATE]) / p95(&m->latency[SRV_BASELINE]), g->max_p95_ratio);
    else if (g->max_error_rate >= 0 && full(&m->errors[SRV_CANDIDATE]) && mean(&m->errors[SRV_CANDIDATE]) > g->max_error_rate)
        snprintf(why, sizeof why, "error rate %.3f > max_error_rate %.3f", mean(&m->errors[SRV_CANDIDATE]), g->max_error_rate);
    if (!why[0]) return;
    m->rolled_back = true;
    srv_router_set_split(m->router, 0);
    pthread_mutex_lock(&m->met->mu);
    m->met->split = 0;
    m->met->rollbacks++;
    m->met->rolled_back = true;
    pthread_mutex_unlock(&m->met->mu);
    srv_log(false, "rollback: the candidate failed a gate over the last %d samples (%s); all traffic goes to the baseline",
            g->window, why);
}

void srv_monitor_request(srv_monitor *m, int arm, bool ok, double per_token_s) {
    pthread_mutex_lock(&m->mu);
    push(&m->errors[arm], ok ? 0.0 : 1.0);
    if (ok) push(&m->latency[arm], per_token_s);
    judge(m);
    pthread_mutex_unlock(&m->mu);
}

void srv_monitor_shadow(srv_monitor *m, double agree, double kl) {
    pthread_mutex_lock(&m->mu);
    push(&m->agree, agree);
    push(&m->kl, kl);
    judge(m);
    pthread_mutex_unlock(&m->mu);
}

void srv_monitor_reset(srv_monitor *m) {
    pthread_mutex_lock(&m->mu);
    srv_window *all[] = {&m->latency[0], &m->latency[1], &m->errors[0], &m->errors[1], &m->agree, &m->kl};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) all[i]->n = all[i]->head = 0;
    m->rolled_back = false;
    pthread_mutex_lock(&m->met->mu);
    m->met->rolled_back = false;
    pthread_mutex_unlock(&m->met->mu);
    pthread_mutex_unlock(&m->mu);
}
