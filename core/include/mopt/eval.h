/* Perplexity with the protocol of shared/reference/lit.json: non-overlapping
 * windows of ctx tokens from the start, the last partial window dropped, each
 * window scored on its positions 1..ctx-1 from the tokens before it in the same
 * window; ppl = exp(mean NLL). */
#ifndef MOPT_EVAL_H
#define MOPT_EVAL_H

#include <stdint.h>

#include "mopt/error.h"
#include "mopt/executor.h"
#include "mopt/export.h"

MOPT_EXTERN_C_BEGIN

typedef struct mopt_ppl_result {
    double ppl;
    double nll; /* mean negative log-likelihood (nats) per scored token */
    int64_t tokens_scored;
    int64_t windows;
    int32_t ctx;
} mopt_ppl_result;

/* Called after each window; return non-zero to stop early. */
typedef int (*mopt_progress_fn)(void *user, int64_t done, int64_t total);

MOPT_API mopt_status mopt_perplexity(mopt_session *s, const int32_t *tokens, int64_t n_tokens, int32_t ctx,
                                     mopt_progress_fn progress, void *user, mopt_ppl_result *out,
                                     mopt_error *err);

/* The same with windows starting every `stride` tokens (stride <= ctx; equal to
 * ctx is the protocol above). The first window scores positions 1..ctx-1, later
 * ones only their last `stride` positions, so no token is scored twice.
 * window_nll (may be NULL) receives each window's mean NLL; it must hold
 * mopt_perplexity_windows(n_tokens, ctx, stride) values. */
MOPT_API int64_t mopt_perplexity_windows(int64_t n_tokens, int32_t ctx, int32_t stride);
MOPT_API mopt_status mopt_perplexity_strided(mopt_session *s, const int32_t *tokens, int64_t n_tokens, int32_t ctx,
                                             int32_t stride, double *window_nll, mopt_progress_fn progress,
                                             void *user, mopt_ppl_result *out, mopt_error *err);

/* The q-quantile of v[0..n) with linear interpolation between order statistics
 * (numpy's default, eval.bench's percentiles); NAN when n <= 0. v is not changed. */
MOPT_API double mopt_quantile(const double *v, int64_t n, double q);

MOPT_EXTERN_C_END

#endif
