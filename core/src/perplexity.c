/* Perplexity over non-overlapping windows (the lit.json protocol). */
#include <math.h>

#include "internal.h"
#include "mopt/eval.h"

mopt_status mopt_perplexity(mopt_session *s, const int32_t *tokens, int64_t n_tokens, int32_t ctx,
                            mopt_progress_fn progress, void *user, mopt_ppl_result *out, mopt_error *err) {
    if (ctx < 2) return MOPT_FAIL(err, MOPT_E_INVALID, "context %d is too short to score (need at least 2)", ctx);
    const int64_t windows = n_tokens / ctx;
    if (windows == 0)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%lld tokens are fewer than one window of %d", (long long)n_tokens, ctx);
    double nll = 0;
    int64_t scored = 0, done = 0;
    for (int64_t w = 0; w < windows; w++) {
        const int32_t *win = tokens + w * ctx;
        const float *logits;
        mopt_status st = mopt_session_truncate(s, 0, err);
        if (!st) st = mopt_session_forward(s, win, ctx, true, &logits, err);
        if (st) return st;
        const int32_t vocab = mopt_session_vocab_size(s);
        for (int32_t p = 0; p + 1 < ctx; p++) {
            const float *row = logits + (size_t)p * vocab;
            float mx = row[0];
            for (int32_t i = 1; i < vocab; i++)
                if (row[i] > mx) mx = row[i];
            double z = 0;
            for (int32_t i = 0; i < vocab; i++) z += exp((double)row[i] - mx);
            nll += log(z) + mx - row[win[p + 1]];
            scored++;
        }
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
