/* The machine's read bandwidth, measured the way a decode step reads its
 * weights: every thread streams its own slice of a buffer far larger than the
 * caches (STREAM's read-only kernel, a sum over 64-bit words) with the kernel
 * set's widest loads, from an aligned buffer in slices of whole lines. On a
 * session's own threads (mopt_session_read_bandwidth) it reads as its decode
 * steps do; mopt_read_bandwidth starts a pool of its own for callers with none.
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

/* Runs a pass's n tasks on some set of threads: a pool of its own, or a session's */
typedef struct {
    mopt_pool *pool;
    mopt_session *session;
} bw_threads;

static void run_pass(const bw_threads *th, int32_t n, bw_job *j) {
    if (th->pool)
        mopt_pool_run(th->pool, n, read_slice, j);
    else
        mopt_session_parallel_for(th->session, n, read_slice, j);
}

/* The median of `runs` timed passes after a warm-up one, in GB/s; -1 when the buffer cannot be had */
static double measure(const bw_threads *th, int32_t n_threads, size_t bytes, int32_t runs) {
    bytes &= ~(size_t)4095;
    uint64_t *w = mopt_alloc_zeroed(bytes); /* on the pages weights get (aligned: no load split across two lines) */
    double *t = malloc((size_t)runs * sizeof *t);
    if (!w || !t) {
        mopt_free_zeroed(w, bytes), free(t);
        return -1;
    }
    memset(w, 1, bytes); /* every page mapped before timing */
    bw_job j = {w, bytes / 8, n_threads, mopt_kernels_get()->sum_u64, {0}};
    run_pass(th, n_threads, &j); /* warm-up */
    for (int32_t r = 0; r < runs; r++) {
        const double t0 = mopt_now();
        run_pass(th, n_threads, &j);
        t[r] = mopt_now() - t0;
    }
    qsort(t, (size_t)runs, sizeof *t, by_value);
    const double med = t[runs / 2];
    mopt_free_zeroed(w, bytes), free(t);
    return (double)(bytes / 8 * 8) / med / 1e9; /* the sums went to j, which the threads saw: the reads stay */
}

static bool bad_args(int32_t n_threads, size_t bytes, int32_t runs) {
    return n_threads < 1 || n_threads > 256 || bytes < 4096 || runs < 1 || runs > 1000;
}

double mopt_read_bandwidth(int32_t n_threads, size_t bytes, int32_t runs) {
    if (bad_args(n_threads, bytes, runs)) return -1;
    bw_threads th = {mopt_pool_new(n_threads), NULL};
    if (!th.pool) return -1;
    const double r = measure(&th, n_threads, bytes, runs);
    mopt_pool_free(th.pool);
    return r;
}

double mopt_session_read_bandwidth(mopt_session *s, size_t bytes, int32_t runs) {
    const int32_t n = s ? mopt_session_n_threads(s) : 0;
    if (bad_args(n, bytes, runs)) return -1;
    const bw_threads th = {NULL, s};
    return measure(&th, n, bytes, runs);
}
