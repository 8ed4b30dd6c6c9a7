/* Token sampling: greedy, temperature, top-p; seeded and reproducible. */
#ifndef MOPT_SAMPLER_H
#define MOPT_SAMPLER_H

#include <stdint.h>

#include "mopt/export.h"

MOPT_EXTERN_C_BEGIN

typedef struct mopt_sampler {
    float temperature; /* 0: greedy */
    float top_p;       /* 1: off */
    uint64_t state;    /* RNG state */
} mopt_sampler;

MOPT_API void mopt_sampler_init(mopt_sampler *s, float temperature, float top_p, uint64_t seed);
/* Picks a token from n logits; `scratch` holds 2*n floats (probabilities and
 * an index buffer) or is NULL to allocate internally. Returns -1 on failure. */
MOPT_API int32_t mopt_sampler_sample(mopt_sampler *s, const float *logits, int32_t n, float *scratch);
/* Index of the largest logit (the first on ties). */
MOPT_API int32_t mopt_argmax(const float *x, int32_t n);
/* Uniform double in [0, 1) from the sampler's generator. */
MOPT_API double mopt_sampler_uniform(mopt_sampler *s);

MOPT_EXTERN_C_END

#endif
