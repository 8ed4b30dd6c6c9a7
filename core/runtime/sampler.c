/* Sampling: greedy, temperature and nucleus (top-p), with a seeded
 * xorshift64* generator so a seed reproduces a run exactly. */
#include <math.h>
#include <stdlib.h>

#include "mopt/sampler.h"

static uint64_t next_u64(mopt_sampler *s) {
    uint64_t x = s->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

void mopt_sampler_init(mopt_sampler *s, float temperature, float top_p, uint64_t seed) {
    s->temperature = temperature;
    s->top_p = top_p;
    /* splitmix64 of the seed, so seed 0 is fine and nearby seeds diverge */
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    s->state = (z ^ (z >> 31)) | 1;
}

double mopt_sampler_uniform(mopt_sampler *s) { return (double)(next_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

int32_t mopt_argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

typedef struct {
    float p;
    int32_t i;
} prob_idx;

static int cmp_desc(const void *a, const void *b) {
    float x = ((const prob_idx *)a)->p, y = ((const prob_idx *)b)->p;
    if (x != y) return x < y ? 1 : -1;
    return ((const prob_idx *)a)->i - ((const prob_idx *)b)->i;
}

int32_t mopt_sampler_sample(mopt_sampler *s, const float *logits, int32_t n, float *scratch) {
    if (n <= 0) return -1;
    if (s->temperature <= 0.0f) return mopt_argmax(logits, n);
    prob_idx *pi = scratch ? (prob_idx *)scratch : malloc((size_t)n * sizeof *pi);
    if (!pi) return -1;
    float mx = logits[mopt_argmax(logits, n)];
    double sum = 0;
    for (int32_t i = 0; i < n; i++) {
        pi[i].p = expf((logits[i] - mx) / s->temperature);
        pi[i].i = i;
        sum += pi[i].p;
    }
    int32_t m = n;
    double total = sum;
    if (s->top_p > 0.0f && s->top_p < 1.0f) {
        /* smallest set of most likely tokens whose mass reaches top_p */
        qsort(pi, (size_t)n, sizeof *pi, cmp_desc);
        double c = 0;
        for (m = 0; m < n;) {
            c += pi[m++].p;
            if (c >= s->top_p * sum) break;
        }
        total = c;
    }
    double r = mopt_sampler_uniform(s) * total, c = 0;
    int32_t pick = pi[m - 1].i;
    for (int32_t k = 0; k < m; k++) {
        c += pi[k].p;
        if (r < c) {
            pick = pi[k].i;
            break;
        }
    }
    if (!scratch) free(pi);
    return pick;
}
