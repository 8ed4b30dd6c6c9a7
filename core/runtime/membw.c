/* The machine's read bandwidth, measured the way a decode step reads its
 * weights: every thread streams its own slice of a buffer far larger than the
 * caches (STREAM's read-only kernel, a sum over 64-bit words). */
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "mopt/executor.h"
#include "threadpool.h"

typedef struct {
    const uint64_t *w;
    size_t n_words;
    int32_t parts;
    uint64_t sums[256];
} bw_job;

static void read_slice(void *p, int64_t task, int32_t thread) {
    bw_job *j = p;
    const size_t per = j->n_words / (size_t)j->parts, lo = (size_t)task * per, hi = task + 1 == j->parts ? j->n_words : lo + per;
    uint64_t a = 0, b = 0, c = 0, d = 0; /* four chains so the loads, not the adds, set the pace */
    size_t i = lo;
    for (; i + 4 <= hi; i += 4) a += j->w[i], b += j->w[i + 1], c += j->w[i + 2], d += j->w[i + 3];
    for (; i < hi; i++) a += j->w[i];
    j->sums[task & 255] = a + b + c + d;
}

static int by_value(const void *x, const void *y) {
    const double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

double mopt_read_bandwidth(int32_t n_threads, size_t bytes, int32_t runs) {
    if (n_threads < 1 || n_threads > 256 || bytes < 4096 || runs < 1 || runs > 1000) return -1;
    uint64_t *w = malloc(bytes);
    double *t = malloc((size_t)runs * sizeof *t);
    mopt_pool *pool = w && t ? mopt_pool_new(n_threads) : NULL;
    if (!pool) {
        free(w), free(t);
        return -1;
    }
    memset(w, 1, bytes); /* every page mapped before timing */
    bw_job j = {w, bytes / 8, n_threads, {0}};
    mopt_pool_run(pool, n_threads, read_slice, &j); /* warm-up */
    for (int32_t r = 0; r < runs; r++) {
        const double t0 = mopt_now();
        mopt_pool_run(pool, n_threads, read_slice, &j);
        t[r] = mopt_now() - t0;
    }
    qsort(t, (size_t)runs, sizeof *t, by_value);
    const double med = t[runs / 2];
    mopt_pool_free(pool);
    free(w), free(t);
    return (double)(bytes / 8 * 8) / med / 1e9; /* the sums went to j, which the pool's threads saw: the reads stay */
}
