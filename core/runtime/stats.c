/* Order statistics for measured figures (latency percentiles). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mopt/eval.h"

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double mopt_quantile(const double *v, int64_t n, double q) {
    if (n <= 0) return NAN;
    double *c = malloc((size_t)n * sizeof *c);
    if (!c) return NAN;
    memcpy(c, v, (size_t)n * sizeof *c);
    qsort(c, (size_t)n, sizeof *c, cmp_double);
    const double pos = q * (double)(n - 1);
    const int64_t i = (int64_t)floor(pos);
    const double f = pos - (double)i, r = i + 1 < n ? c[i] + f * (c[i + 1] - c[i]) : c[i];
    free(c);
    return r;
}
