/* Perplexity over windows of the token stream (the lit.json protocol when the
 * stride equals the window). */
#include <math.h>

#include "base.h"
#include "mopt/eval.h"

int64_t mopt_perplexity_windows(int64_t n_tokens, int32_t ctx, int32_t stride) {
    if (ctx < 2 || stride < 1 || stride > ctx || n_tokens < ctx) return 0;
    return (n_tokens - ctx) / stride + 1;
}

mopt_status mopt_perplexity_strided(mopt_session *s, const int32_t *tokens, int64_t n_tokens, int32_t ctx,
                                    int32_t stride, double *window_nll, mopt_progress_fn progress, void *user,
                                    mopt_ppl_result *out, mopt_error *err) {
    if (ctx < 2) return MOPT_FAIL(err, MOPT_E_INVALID, "context %d is too short to score (need at least 2)", ctx);
    if (stride < 1 || stride > ctx)
        return MOPT_FAIL(err, MOPT_E_INVALID, "stride %d must be between 1 and the context %d", stride, ctx);
    const int64_t windows = mopt_perplexity_windows(n_tokens, ctx, stride);
    if (windows == 0)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%lld tokens are fewer than one window of %d", (long long)n_tokens, ctx);
    const int32_t vocab = mopt_session_vocab_size(s);
    double nll = 0;
    int64_t scored = 0, done = 0;
    for (int64_t w = 0; w < windows; w++) {
        if (mopt_interrupted()) return MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted after %lld of %lld windows", (long long)w, (long long)windows);
        const int32_t *win = tokens + w * stride;
        const float *logits;
        mopt_status st = mopt_session_truncate(s, 0, err);
        if (!st) st = mopt_session_forward(s, win, ctx, true, &logits, err);
        if (st) return st;
        /* row p predicts token p + 1; later windows score only their last `stride` targets */
        const int32_t first = w == 0 || stride >= ctx - 1 ? 0 : ctx - 1 - stride;
        double wn = 0;
        for (int32_t p = first; p + 1 < ctx; p++) {
            const float *row = logits + (size_t)p * vocab;
            float mx = row[0];
            for (int32_t i = 1; i < vocab; i++)
                if (row[i] > mx) mx = row[i];
            double z = 0;
            for (int32_t i = 0; i < vocab; i++) z += exp((double)row[i] - mx);
            wn += log(z) + mx - row[win[p + 1]];
        }
        if (!isfinite(wn)) /* a NaN perplexity is never a result: weights or kernels broke */
            return MOPT_FAIL(err, MOPT_E_RUNTIME, "window %lld (tokens %lld..%lld): the model's logits are not finite (NLL %g)",
                             (long long)w, (long long)(w * stride), (long long)(w * stride + ctx - 1), wn);
        nll += wn;
        scored += ctx - 1 - first;
        if (window_nll) window_nll[w] = wn / (double)(ctx - 1 - first);
        done = w + 1;
        if (progress && progress(user, done, windows)) break;
    }
    out->nll = nll / (double)scored;
    out->ppl = exp(out->nll);
    out->tokens_scored = scored;
    out->windows = done;
    out->ctx = ctx;
    return MOPT_OK;
}

mopt_status mopt_perplexity(mopt_session *s, const int32_t *tokens, int64_t n_tokens, int32_t ctx,
                            mopt_progress_fn progress, void *user, mopt_ppl_result *out, mopt_error *err) {
    return mopt_perplexity_strided(s, tokens, n_tokens, ctx, ctx, NULL, progress, user, out, err);
}
