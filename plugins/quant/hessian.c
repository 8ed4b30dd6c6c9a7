/* The layer-wise Hessian and the factor of its inverse GPTQ and SparseGPT sweep
 * with: H = 2/N X^T X, dead columns set to 1, damping, U = chol(H^-1) upper,
 * in double (LAPACK's blocked factorization and triangular inverse, through the host). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hessian.h"

/* H's upper triangle in row panels of equal area, a fixed number of them whatever the thread count, so that every
 * element's sum comes out the same on any machine */
#define HESS_PANELS 8

typedef struct {
    const hess_acc *a;
    const float *x;
    int32_t ldx, T;
    int64_t b[HESS_PANELS + 1];
} panel_job;

/* panel p: H[i0:i1, i0:i1] += X[:, i0:i1]^T X[:, i0:i1] (upper), H[i0:i1, i1:] += X[:, i0:i1]^T X[:, i1:] */
static void hess_panel(void *user, int64_t p, int32_t thread) {
    (void)thread;
    const panel_job *j = user;
    const hess_acc *a = j->a;
    const int64_t i0 = j->b[p], i1 = j->b[p + 1], n = a->in;
    if (i1 <= i0) return;
    a->h->ssyrk_tn((int32_t)(i1 - i0), j->T, 1.0f, j->x + i0, j->ldx, 1.0f, a->H + i0 * n + i0, (int32_t)n);
    if (i1 < n)
        a->h->sgemm(1, 0, (int32_t)(i1 - i0), (int32_t)(n - i1), j->T, 1.0f, j->x + i0, j->ldx, j->x + i1, j->ldx, 1.0f,
                    a->H + i0 * n + i1, (int32_t)n);
}

void hess_accumulate(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                     int32_t out_w, int32_t T) {
    (void)sample, (void)out, (void)out_w;
    hess_acc *a = user;
    if (node != a->node) return;
    /* H += X^T X for this sample's T tokens, the upper triangle (H is symmetric); rows [0, b) of it hold
     * b (n - (b - 1) / 2) elements, so panel p ends near n (1 - sqrt(1 - p / P)) */
    panel_job j = {a, in[0], in_w[0], T, {0}};
    const int64_t n = a->in;
    for (int p = 1; p < HESS_PANELS; p++) {
        const int64_t b = (int64_t)((double)n * (1.0 - sqrt(1.0 - (double)p / HESS_PANELS))) / 16 * 16;
        j.b[p] = b > j.b[p - 1] ? (b < n ? b : n) : j.b[p - 1];
    }
    j.b[HESS_PANELS] = n;
    a->h->session_parallel_for(a->s, HESS_PANELS, hess_panel, &j);
    a->count += T;
}

double *hess_scaled(const float *Hf, int64_t count, int64_t in, uint8_t *dead) {
    double *H = malloc((size_t)(in * in) * sizeof *H);
    if (!H) return NULL;
    const double scale = 2.0 / (double)(count > 0 ? count : 1);
    /* Hf holds the upper triangle: each 64 x 64 tile of it goes to its place and, mirrored, to the lower one, so
     * that the mirrored writes stay within a few pages (row by row they would miss the cache at every element) */
    enum { TILE = 64 };
    for (int64_t i0 = 0; i0 < in; i0 += TILE)
        for (int64_t j0 = i0; j0 < in; j0 += TILE) {
            const int64_t i1 = i0 + TILE < in ? i0 + TILE : in, j1 = j0 + TILE < in ? j0 + TILE : in;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0 > i ? j0 : i; j < j1; j++) H[i * in + j] = H[j * in + i] = Hf[i * in + j] * scale;
        }
    for (int64_t j = 0; j < in; j++)
        if (H[j * in + j] == 0) {
            H[j * in + j] = 1;
            dead[j] = 1;
        }
    return H;
}

int hess_chol_damped(const mopt_host_api *h, double *A, const double *diag, int64_t n, double first_damp, double retry_damp, int tries,
                     int lower_ready) {
    int factored = 0;
    for (int attempt = 0; attempt < tries && !factored; attempt++) {
        if (attempt || !lower_ready) /* a failed factorization wrote only the lower triangle: restore it from the upper one */
            for (int64_t i = 1; i < n; i++)
                for (int64_t j = 0; j < i; j++) A[i * n + j] = A[j * n + i];
        const double damp = attempt ? retry_damp * pow(10.0, attempt - 1) : first_damp;
        for (int64_t j = 0; j < n; j++) A[j * n + j] = diag[j] + damp;
        factored = h->chol_f64(A, n);
    }
    return factored;
}

/* U = chol(H^-1) upper without forming H^-1: with J the exchange matrix, J H J = L L^T gives H = R R^T for the upper
 * R = J L J, so H^-1 = (R^-1)^T R^-1 and U = R^-1 = J L^-1 J. One factorization and one triangular inverse (2/3 n^3)
 * where the inverse and a second factorization took 4/3 n^3; and J H J is H's array reversed. */
mopt_status hess_inverse_factor(const mopt_host_api *h, double *H, int64_t in, double percdamp, float *U, const char *pass,
                                mopt_error *err) {
    double mean = 0, *diag = malloc((size_t)in * sizeof *diag);
    if (!diag) return h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    const int64_t nn = in * in;
    for (int64_t k = 0; k < nn / 2; k++) { /* H <- J H J */
        const double t = H[k];
        H[k] = H[nn - 1 - k];
        H[nn - 1 - k] = t;
    }
    for (int64_t j = 0; j < in; j++) mean += diag[j] = H[j * in + j];
    mean /= (double)in;
    /* 1% damping; if H is still not positive definite, damp harder (H's lower triangle is its upper one already) */
    const int factored = hess_chol_damped(h, H, diag, in, percdamp * mean, percdamp * mean * 10, 4, 1);
    free(diag);
    if (!factored)
        return h->error_set(err, MOPT_E_RUNTIME, pass, "Hessian of a %lld-column input is not positive definite even after damping",
                            (long long)in);
    if (!h->tri_inverse_f64(H, in)) /* a factor with a positive diagonal is never singular; kept as a guard */
        return h->error_set(err, MOPT_E_RUNTIME, pass, "the Cholesky factor of a %lld-column Hessian is singular", (long long)in);
    for (int64_t i = 0; i < in; i++) /* U[i][j] = L^-1[n-1-i][n-1-j], which for j >= i is in L^-1's lower triangle */
        for (int64_t j = 0; j < in; j++) U[i * in + j] = j >= i ? (float)H[nn - 1 - (i * in + j)] : 0.0f;
    return MOPT_OK;
}
