/* What every fuzzer does with a model that loaded: a short forward pass and a
 * tokenizer round trip. `check` judges each failure (a one-line message). */
#ifndef MOPT_TEST_MODEL_EXERCISE_H
#define MOPT_TEST_MODEL_EXERCISE_H

#include <stdlib.h>

#include "mopt/mopt.h"

/* Returns 1 when the forward pass ran (with the fp32 KV cache; it runs again with an f16 one, whose rounding of
 * whatever K and V a mutated model makes must not crash either). */
static inline int exercise_model(mopt_model *m, int32_t max_tokens, void (*check)(const mopt_error *err)) {
    const mopt_arch *a = mopt_model_arch(m);
    mopt_session_opts so;
    mopt_session_opts_default(&so);
    so.n_threads = 1;
    so.max_ctx = a->max_ctx < max_tokens ? a->max_ctx : max_tokens;
    mopt_error err = {0};
    int ran = 0;
    static const char *const caches[] = {"f32", "f16"};
    for (int c = 0; c < 2; c++) {
        so.kv_cache = caches[c];
        mopt_session *s = mopt_session_new(mopt_model_graph(m), &so, &err);
        if (!s) {
            check(&err);
            break;
        }
        int32_t ids[64];
        for (int32_t i = 0; i < so.max_ctx && i < 64; i++) ids[i] = (int32_t)((37u * (uint32_t)i + 1) % (uint32_t)a->vocab_size);
        const float *logits;
        if (mopt_session_forward(s, ids, so.max_ctx < 64 ? so.max_ctx : 64, true, &logits, &err) == MOPT_OK) ran |= c == 0;
        else check(&err);
        mopt_session_free(s);
    }
    const mopt_tokenizer *t = mopt_model_tokenizer(m);
    int32_t *tok;
    size_t k;
    if (t && mopt_tokenizer_encode(t, "Once upon a time, ROMEO:\nBut soft", 33, MOPT_TOK_ADD_SPECIAL, &tok, &k, &err) == MOPT_OK) {
        char *txt;
        size_t tl;
        if (mopt_tokenizer_decode(t, tok, k, 0, &txt, &tl, &err) == MOPT_OK) free(txt);
        free(tok);
    }
    return ran;
}

#endif
