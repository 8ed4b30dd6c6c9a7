/* Packed linears against references on every kernel set the CPU runs, with one
 * and two threads, for the kernel tests. */
#ifndef MOPT_TEST_LINEAR_CHECK_H
#define MOPT_TEST_LINEAR_CHECK_H

#include <math.h>

#include "backend_impl.h"
#include "kernels.h"
#include "testutil.h"

static const mopt_kernels *const kernel_sets[] = {&mopt_kernels_ref, &mopt_kernels_avx2, &mopt_kernels_avx512};

/* Runs packed linear w on x [T, in] through kernel set k (skipped where the CPU lacks it) on 1 and 2 threads and
 * compares y with ref [T, out]: |y - ref| <= tol (1 + |ref|). */
static void check_linear_in(int k, const mopt_tensor *w, const float *x, int T, const double *ref, double tol, const char *what) {
    if (!mopt_kernels_supported(kernel_sets[k])) return;
    const int64_t out = w->ne[1];
    float *y = malloc((size_t)T * out * sizeof *y);
    for (int threads = 1; threads <= 2; threads++) {
        mopt_error err = {0};
        assert_int_equal(mopt_cpu_linear_once(threads, kernel_sets[k], w, NULL, x, T, y, &err), MOPT_OK);
        for (int64_t i = 0; i < T * out; i++) {
            double e = fabs(y[i] - ref[i]);
            if (e > tol * (1 + fabs(ref[i]))) {
                fprintf(stderr, "%s [%s, %d threads, T=%d]: y[%lld] = %g, reference %g\n", what, kernel_sets[k]->name, threads, T,
                        (long long)i, y[i], ref[i]);
                fail();
            }
        }
    }
    free(y);
}

/* The same in every set */
static void check_linear(const mopt_tensor *w, const float *x, int T, const double *ref, double tol, const char *what) {
    for (int k = 0; k < 3; k++) check_linear_in(k, w, x, T, ref, tol, what);
}

#endif
