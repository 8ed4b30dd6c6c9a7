/* A linear's output error from its inputs' Gram matrix (see gram.h). */
#include <stdint.h>
#include <stdlib.h>

#include "gram.h"
#include "hessian.h"

#define GRAM_TASK_ROWS 256 /* rows of W per task */
#define GRAM_PANEL 256     /* columns of L per GEMM: below the diagonal block, L's panel is all zeros */

typedef struct {
    const mopt_host_api *h;
    const float *W, *T, *L;
    int64_t out, in;
    float *scratch; /* per thread: GRAM_TASK_ROWS x (in + GRAM_PANEL) */
    double *part;   /* per task */
} gram_job;

/* A task's rows' share: d = W - T, then |d L|^2 a panel of columns at a time, each panel's GEMM over the rows of L
 * at and below it (the rest are zeros). */
static void gram_rows(void *user, int64_t task, int32_t thread) {
    const gram_job *j = user;
    const int64_t in = j->in, r0 = task * GRAM_TASK_ROWS, n = r0 + GRAM_TASK_ROWS < j->out ? GRAM_TASK_ROWS : j->out - r0;
    float *d = j->scratch + (size_t)thread * GRAM_TASK_ROWS * (size_t)(in + GRAM_PANEL), *dl = d + (size_t)GRAM_TASK_ROWS * (size_t)in;
    for (int64_t e = 0; e < n * in; e++) d[e] = j->W[r0 * in + e] - j->T[r0 * in + e];
    double sum = 0;
    for (int64_t c0 = 0; c0 < in; c0 += GRAM_PANEL) {
        const int64_t w = c0 + GRAM_PANEL < in ? GRAM_PANEL : in - c0;
        j->h->sgemm(0, 0, (int32_t)n, (int32_t)w, (int32_t)(in - c0), 1.0f, d + c0, (int32_t)in, j->L + c0 * in + c0, (int32_t)in,
                    0.0f, dl, (int32_t)w);
        for (int64_t e = 0; e < n * w; e++) sum += (double)dl[e] * dl[e];
    }
    j->part[task] = sum;
}

mopt_status gram_output_error(const mopt_host_api *h, mopt_session *se, const float *W, const float *T, int64_t out, int64_t in,
                              const float *L, double *err_sq, mopt_error *err) {
    const int64_t tasks = (out + GRAM_TASK_ROWS - 1) / GRAM_TASK_ROWS;
    const int32_t threads = se ? h->session_n_threads(se) : 1;
    double *part = malloc((size_t)tasks * sizeof *part);
    float *scratch = malloc((size_t)threads * GRAM_TASK_ROWS * (size_t)(in + GRAM_PANEL) * sizeof *scratch);
    if (!part || !scratch) {
        free(part);
        free(scratch);
        return h->error_set(err, MOPT_E_NOMEM, "gram", "out of memory for the output error of a %lld x %lld linear", (long long)out,
                            (long long)in);
    }
    gram_job j = {h, W, T, L, out, in, scratch, part};
    h->session_parallel_for(se, tasks, gram_rows, &j);
    *err_sq = 0;
    for (int64_t t = 0; t < tasks; t++) *err_sq += part[t];
    free(part);
    free(scratch);
    return MOPT_OK;
}

float *gram_factor_of_inputs(const mopt_host_api *h, mopt_session *se, const float *x, int64_t ntok, int64_t n, mopt_error *err) {
    float *G = calloc((size_t)(n * n), sizeof *G);
    double *A = malloc((size_t)(n * n) * sizeof *A), *diag = malloc((size_t)n * sizeof *diag);
    if (!G || !A || !diag || n <= 0) {
        free(G), free(A), free(diag);
        h->error_set(err, MOPT_E_NOMEM, "gram", "out of memory for the Gram matrix of a %lld-channel input", (long long)n);
        return NULL;
    }
    hess_acc acc = {h, 0, n, G, 0, se}; /* the upper triangle */
    const int32_t w = (int32_t)n;
    const int64_t chunk = INT32_MAX / n; /* tokens per call: its T is an int32 */
    for (int64_t t0 = 0; t0 < ntok; t0 += chunk) {
        const float *xt = x + t0 * n;
        hess_accumulate(&acc, 0, 0, &xt, &w, NULL, 0, (int32_t)(ntok - t0 < chunk ? ntok - t0 : chunk));
    }
    double mean = 0;
    for (int64_t i = 0; i < n; i++) mean += (diag[i] = G[i * n + i]) / (double)n;
    for (int64_t i = 0; i < n; i++)
        for (int64_t k = i; k < n; k++) A[i * n + k] = G[i * n + k]; /* the upper triangle the accumulation wrote */
    const int factored = hess_chol_damped(h, A, diag, n, 0, 1e-7 * (mean > 0 ? mean : 1), 8, 0);
    if (factored)
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < n; k++) G[i * n + k] = k <= i ? (float)A[i * n + k] : 0.0f;
    else {
        free(G);
        G = NULL;
        h->error_set(err, MOPT_E_RUNTIME, "gram", "the Gram matrix of a %lld-channel input is not positive definite even after damping",
                     (long long)n);
    }
    free(A), free(diag);
    return G;
}
