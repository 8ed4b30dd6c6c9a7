/* What the benchmark programs share: a monotonic clock and a summary of runs. */
#ifndef MOPT_BENCH_UTIL_H
#define MOPT_BENCH_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static inline int bench_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The median of n sorted values. */
static inline double bench_median(const double *v, int n) { return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]); }

/* Sorts v and prints its median, min and max as tokens/s. */
static inline void bench_stats(const char *label, double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp);
    double med = bench_median(v, n);
    printf("  %-14s median %10.1f tok/s   (min %.1f, max %.1f over %d runs)\n", label, med, v[0], v[n - 1], n);
}

#endif
