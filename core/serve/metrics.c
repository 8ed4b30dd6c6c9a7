/* Server figures, kept under one mutex and written out in the Prometheus text
 * exposition format (version 0.0.4): counters, gauges and histograms with
 * cumulative buckets, labelled by arm. */
#include <string.h>

#include "serve.h"

static const double LATENCY_S[SRV_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                                   2.5,   5,    10,    20,   30,  60,   120,  300};
static const double GAP_S[SRV_HIST_BUCKETS] = {0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064,
                                               0.128,  0.256, 0.512, 1,     2,     4,     8,     16};
static const double COUNT[SRV_HIST_BUCKETS] = {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256, 512, 1024, 2048};

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    m->window_agreement = m->window_kl = -1;
    pthread_mutex_init(&m->mu, NULL);
    for (int a = 0; a < SRV_ARMS; a++) {
        srv_arm_metrics *x = &m->arm[a];
        x->latency.bounds = LATENCY_S;
        x->ttft.bounds = LATENCY_S;
        x->inter_token.bounds = GAP_S;
        x->batch_seqs.bounds = COUNT;
        x->batch_tokens.bounds = COUNT;
    }
}

void srv_metrics_free(srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

void srv_hist_add(srv_hist *h, double v) {
    int b = 0;
    while (b < SRV_HIST_BUCKETS && v > h->bounds[b]) b++;
    h->counts[b]++;
    h->sum += v;
    h->n++;
}

static const char *const ERROR_KINDS[SRV_ERR_KINDS] = {"bad_request", "too_large",   "not_found", "method_not_allowed",
                                                       "overloaded",  "unavailable", "forbidden", "internal"};

void srv_metrics_error(srv_metrics *m, srv_error_kind kind) {
    pthread_mutex_lock(&m->mu);
    m->errors[kind < SRV_ERR_KINDS ? kind : SRV_ERR_INTERNAL]++;
    pthread_mutex_unlock(&m->mu);
}

static void head(sbuf *o, const char *name, const char *type, const char *help) {
    sb_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist(sbuf *o, const char *name, const char *arm, const srv_hist *h) {
    uint64_t cum = 0;
    for (int b = 0; b < SRV_HIST_BUCKETS; b++) {
        cum += h->counts[b];
        sb_printf(o, "%s_bucket{arm=\"%s\",le=\"%g\"} %llu\n", name, arm, h->bounds[b], (unsigned long long)cum);
    }
    cum += h->counts[SRV_HIST_BUCKETS];
    sb_printf(o, "%s_bucket{arm=\"%s\",le=\"+Inf\"} %llu\n", name, arm, (unsigned long long)cum);
    sb_printf(o, "%s_sum{arm=\"%s\"} %.9g\n%s_count{arm=\"%s\"} %llu\n", name, arm, h->sum, name, arm,
              (unsigned long long)h->n);
}

void srv_metrics_render(srv_metrics *m, const char *const arm_names[SRV_ARMS], sbuf *o) {
    pthread_mutex_lock(&m->mu);
#define EACH_ARM for (int a = 0; a < SRV_ARMS; a++) if (arm_names[a])
    head(o, "mopt_requests_total", "counter", "Finished requests by arm and outcome.");
    EACH_ARM {
        sb_printf(o, "mopt_requests_total{arm=\"%s\",outcome=\"ok\"} %llu\n", arm_names[a],
                  (unsigned long long)m->arm[a].requests_ok);
        sb_printf(o, "mopt_requests_total{arm=\"%s\",outcome=\"error\"} %llu\n", arm_names[a],
                  (unsigned long long)m->arm[a].requests_failed);
        sb_printf(o, "mopt_requests_total{arm=\"%s\",outcome=\"cancelled\"} %llu\n", arm_names[a],
                  (unsigned long long)m->arm[a].requests_cancelled);
    }
    head(o, "mopt_routed_requests_total", "counter", "Requests the router sent to each arm.");
    EACH_ARM sb_printf(o, "mopt_routed_requests_total{arm=\"%s\"} %llu\n", arm_names[a], (unsigned long long)m->arm[a].routed);
    head(o, "mopt_prompt_tokens_total", "counter", "Prompt tokens processed.");
    EACH_ARM sb_printf(o, "mopt_prompt_tokens_total{arm=\"%s\"} %llu\n", arm_names[a], (unsigned long long)m->arm[a].prompt_tokens);
    head(o, "mopt_generated_tokens_total", "counter", "Tokens generated.");
    EACH_ARM sb_printf(o, "mopt_generated_tokens_total{arm=\"%s\"} %llu\n", arm_names[a],
                       (unsigned long long)m->arm[a].generated_tokens);
    head(o, "mopt_forward_steps_total", "counter", "Batched forward passes.");
    EACH_ARM sb_printf(o, "mopt_forward_steps_total{arm=\"%s\"} %llu\n", arm_names[a], (unsigned long long)m->arm[a].steps);
    head(o, "mopt_request_duration_seconds", "histogram", "Time from arrival to the last token.");
    EACH_ARM hist(o, "mopt_request_duration_seconds", arm_names[a], &m->arm[a].latency);
    head(o, "mopt_time_to_first_token_seconds", "histogram", "Time from arrival to the first generated token.");
    EACH_ARM hist(o, "mopt_time_to_first_token_seconds", arm_names[a], &m->arm[a].ttft);
    head(o, "mopt_inter_token_seconds", "histogram", "Time between consecutive generated tokens of a request.");
    EACH_ARM hist(o, "mopt_inter_token_seconds", arm_names[a], &m->arm[a].inter_token);
    head(o, "mopt_batch_sequences", "histogram", "Sequences in each forward pass.");
    EACH_ARM hist(o, "mopt_batch_sequences", arm_names[a], &m->arm[a].batch_seqs);
    head(o, "mopt_batch_tokens", "histogram", "Tokens (prefill and decode) in each forward pass.");
    EACH_ARM hist(o, "mopt_batch_tokens", arm_names[a], &m->arm[a].batch_tokens);
    head(o, "mopt_queue_depth", "gauge", "Requests waiting for a sequence slot.");
    EACH_ARM sb_printf(o, "mopt_queue_depth{arm=\"%s\"} %lld\n", arm_names[a], (long long)m->arm[a].queue_depth);
    head(o, "mopt_active_sequences", "gauge", "Sequences being generated.");
    EACH_ARM sb_printf(o, "mopt_active_sequences{arm=\"%s\"} %lld\n", arm_names[a], (long long)m->arm[a].active);
    head(o, "mopt_kv_cache_bytes", "gauge", "Memory of the KV caches of all sequence slots.");
    EACH_ARM sb_printf(o, "mopt_kv_cache_bytes{arm=\"%s\"} %lld\n", arm_names[a], (long long)m->arm[a].kv_bytes);
    head(o, "mopt_model_bytes", "gauge", "Bytes of the model's weights as stored (packed formats at their size).");
    EACH_ARM sb_printf(o, "mopt_model_bytes{arm=\"%s\"} %lld\n", arm_names[a], (long long)m->arm[a].model_bytes);
#undef EACH_ARM
    head(o, "mopt_errors_total", "counter", "Requests answered with an HTTP error, by kind.");
    for (int k = 0; k < SRV_ERR_KINDS; k++)
        sb_printf(o, "mopt_errors_total{kind=\"%s\"} %llu\n", ERROR_KINDS[k], (unsigned long long)m->errors[k]);
    head(o, "mopt_ab_split", "gauge", "Fraction of requests routed to the candidate.");
    sb_printf(o, "mopt_ab_split %.6g\n", m->split);
    head(o, "mopt_rollbacks_total", "counter", "Times the candidate failed a gate and traffic went back to the baseline.");
    sb_printf(o, "mopt_rollbacks_total %llu\n", (unsigned long long)m->rollbacks);
    head(o, "mopt_candidate_rolled_back", "gauge", "1 while the candidate is rolled back after failing a gate.");
    sb_printf(o, "mopt_candidate_rolled_back %d\n", m->rolled_back ? 1 : 0);
    head(o, "mopt_shadow_requests_total", "counter", "Requests whose prompt was also compared on both arms in shadow mode.");
    sb_printf(o, "mopt_shadow_requests_total %llu\n", (unsigned long long)m->shadow_requests);
    head(o, "mopt_shadow_token_agreement", "gauge", "Fraction of shadowed greedy tokens both arms agree on.");
    sb_printf(o, "mopt_shadow_token_agreement %.6g\n",
              m->shadow_tokens ? (double)m->shadow_matches / (double)m->shadow_tokens : 1.0);
    head(o, "mopt_shadow_kl_mean", "gauge", "Mean KL(baseline || candidate) of the first token over all shadowed requests.");
    sb_printf(o, "mopt_shadow_kl_mean %.6g\n", m->shadow_requests ? m->shadow_kl_sum / (double)m->shadow_requests : 0.0);
    head(o, "mopt_gate_window_agreement", "gauge", "Shadow agreement over the gate's current window (-1: not full yet).");
    sb_printf(o, "mopt_gate_window_agreement %.6g\n", m->window_agreement);
    head(o, "mopt_gate_window_kl", "gauge", "Shadow first-token KL over the gate's current window (-1: not full yet).");
    sb_printf(o, "mopt_gate_window_kl %.6g\n", m->window_kl);
    pthread_mutex_unlock(&m->mu);
}
