/* The machine's read bandwidth, measured the way a decode step reads its
 * weights: every thread streams its own slice of a buffer far larger than the
 * caches (STREAM's read-only kernel, a sum over 64-bit words) with the kernel
 * set's widest loads, from an aligned buffer in slices of whole lines.
 * The compiler's 16-byte loads from malloc's buffer read 5-28% slower on the
 * Zen 5 host than this, and a bf16 decode kernel measured up to 105% of that
 * "limit". */
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "kernels.h"
#include "mopt/executor.h"
#include "threadpool.h"

typedef struct {
    const uint64_t *w;
    size_t n_words;
    int32_t parts;
    uint64_t (*sum)(const uint64_t *w, size_t n);
    uint64_t sums[256];
} bw_job;

static void read_slice(void *p, int64_t task, int32_t thread) {
    bw_job *j = p;
    const size_t per = j->n_words / (size_t)j->parts & ~(size_t)7; /* whole lines: every slice starts on one */
    const size_t lo = (size_t)task * per, hi = task + 1 == j->parts ? j->n_words : lo + per;
    j->sums[task & 255] = j->sum(j->w + lo, hi - lo);
}

static int by_value(const void *x, const void *y) {
    const double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

double mopt_read_bandwidth(int32_t n_threads, size_t bytes, int32_t runs) {
    if (n_threads < 1 || n_threads > 256 || bytes < 4096 || runs < 1 || runs > 1000) return -1;
    bytes &= ~(size_t)4095;
    uint64_t *w = mopt_alloc_streamed(bytes); /* on the pages weights get (aligned: no load split across two lines) */
    double *t = malloc((size_t)runs * sizeof *t);
    mopt_pool *pool = w && t ? mopt_pool_new(n_threads) : NULL;
    if (!pool) {
        free(w), free(t);
        return -1;
    }
    memset(w, 1, bytes); /* every page mapped before timing */
    bw_job j = {w, bytes / 8, n_threads, mopt_kernels_get()->sum_u64, {0}};
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
