/* Helpers the eval passes share. */
#ifndef MOPT_EVAL_UTIL_H
#define MOPT_EVAL_UTIL_H

#include <stdint.h>

#include "mopt/plugin_util.h"

typedef struct {
    const mopt_host_api *host;
    mopt_pass_ctx *ctx;
} eval_progress;
int eval_on_progress(void *user, int64_t done, int64_t total);

/* Reads and tokenizes a text file (no special tokens); limit > 0 keeps the first limit tokens. */
mopt_status eval_tokens(const mopt_host_api *h, const mopt_model *m, const char *path, int64_t limit, int32_t **ids,
                        size_t *n, mopt_error *err);
/* A session over a graph for up to max_ctx tokens. */
mopt_session *eval_session(const mopt_host_api *h, mopt_pass_ctx *ctx, const mopt_graph *g, int32_t max_ctx,
                           mopt_error *err);
/* Fails unless both tokenizers have the same size and the same token strings. */
mopt_status eval_same_tokenizer(const mopt_host_api *h, const mopt_model *a, const mopt_model *b, const char *pass,
                                mopt_error *err);
double eval_mean(const double *v, int64_t n);
double eval_stdev(const double *v, int64_t n);
/* log-softmax of a logits row in double */
void eval_log_softmax(const float *row, int32_t V, double *out);
/* Greedy continuation: n_new tokens after prompt[n_prompt] into out; per-token
 * decode latencies (ms) into lat (may be NULL); *ttft_ms (may be NULL) is the
 * prefill time. Resets the session first. */
mopt_status eval_greedy(const mopt_host_api *h, mopt_session *s, int32_t vocab, const int32_t *prompt, int32_t n_prompt,
                        int32_t n_new, int32_t *out, double *lat, double *ttft_ms, mopt_error *err);


#endif
