/* Speculative decoding: a draft (a smaller model, or n-gram lookup in the
 * context) proposes k tokens, the target scores them all in one forward over
 * k+1 positions, accepted tokens are kept and the first rejected one replaced.
 * Greedy: accept while the target's argmax equals the proposal. Sampling:
 * Leviathan et al. — accept with probability min(1, p/q), on rejection sample
 * from norm(max(0, p - q)), one bonus token from p when all are accepted — so
 * the output distribution is exactly the target's. Rejected tokens leave no
 * trace: both caches are truncated back to the accepted context. */
#ifndef MOPT_SPEC_H
#define MOPT_SPEC_H

#include <stdint.h>

#include "mopt/plugin_util.h"

typedef struct spec_stats {
    int64_t rounds;       /* target forward calls */
    int64_t proposed, accepted;
    int64_t generated;
    double draft_s, target_s, wall_s;
} spec_stats;

typedef struct spec_cfg {
    int32_t k;          /* tokens proposed per round (the start value when adaptive) */
    int32_t adaptive;   /* grow k on full acceptance, shrink on early rejection */
    int32_t lookup_n;   /* > 0: prompt-lookup with this n-gram instead of a draft model */
    int32_t uniform;    /* diagnostic: a draft that proposes uniformly random tokens (q = 1/V) */
    float temperature;  /* 0: greedy */
    float top_p;
    uint64_t seed;
} spec_cfg;

/* Generates n_new tokens after prompt[np] with the target session and the
 * draft session (NULL for lookup or for plain decoding when k == 0). out gets
 * the new tokens; eos (< 0: none) stops early. */
mopt_status spec_generate(const mopt_host_api *h, mopt_session *target, mopt_session *draft, int32_t V,
                          const int32_t *prompt, int32_t np, int32_t n_new, int32_t eos, const spec_cfg *cfg,
                          int32_t *out, int32_t *n_out, spec_stats *stats, mopt_error *err);

/* Fails unless the two models have identical tokenizers (size and every token string). */
mopt_status spec_same_tokenizer(const mopt_host_api *h, const mopt_model *a, const mopt_model *b, mopt_error *err);

#endif
