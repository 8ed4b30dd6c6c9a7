/* The layer-wise Hessian and the factor of its inverse GPTQ and SparseGPT sweep
 * with: H = 2/N X^T X, dead columns set to 1, damping, U = chol(H^-1) upper,
 * all in double (LAPACK's blocked factorizations, through the host). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hessian.h"

void hess_accumulate(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                     int32_t out_w, int32_t T) {
    (void)sample, (void)out, (void)out_w;
    hess_acc *a = user;
    if (node != a->node) return;
    /* H += X^T X for this sample's T tokens, the upper triangle (H is symmetric) */
    a->h->ssyrk_tn((int32_t)a->in, T, 1.0f, in[0], in_w[0], 1.0f, a->H, (int32_t)a->in);
    a->count += T;
}

/* U: upper Cholesky factor of H^-1 (H^-1 = U^T U), from H (overwritten), as
 * torch computes it: cholesky, cholesky_inverse, cholesky(upper=True). */
static int hinv_upper(const mopt_host_api *h, double *H, int64_t n, float *U) {
    if (!h->chol_f64(H, n) || !h->chol_inverse_f64(H, n) || !h->chol_f64(H, n)) return 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) U[i * n + j] = j >= i ? (float)H[j * n + i] : 0.0f; /* U = L^T */
    return 1;
}

double *hess_scaled(const float *Hf, int64_t count, int64_t in, uint8_t *dead) {
    double *H = malloc((size_t)(in * in) * sizeof *H);
    if (!H) return NULL;
    const double scale = 2.0 / (double)(count > 0 ? count : 1);
    for (int64_t i = 0; i < in; i++) /* Hf holds the upper triangle */
        for (int64_t j = 0; j < in; j++) H[i * in + j] = Hf[(i < j ? i : j) * in + (i < j ? j : i)] * scale;
    for (int64_t j = 0; j < in; j++)
        if (H[j * in + j] == 0) {
            H[j * in + j] = 1;
            dead[j] = 1;
        }
    return H;
}

mopt_status hess_inverse_factor(const mopt_host_api *h, const double *H, int64_t in, double percdamp, float *U, const char *pass,
                                mopt_error *err) {
    double mean = 0;
    for (int64_t j = 0; j < in; j++) mean += H[j * in + j];
    mean /= (double)in;
    double *H0 = malloc((size_t)(in * in) * sizeof *H0);
    if (!H0) return h->error_set(err, MOPT_E_NOMEM, pass, "out of memory for a %lld-column Hessian", (long long)in);
    int ok = 0;
    for (int attempt = 0; attempt < 4 && !ok; attempt++) { /* 1% damping; if H is still not positive definite, damp harder */
        memcpy(H0, H, (size_t)(in * in) * sizeof *H0);
        const double damp = percdamp * mean * pow(10.0, attempt);
        for (int64_t j = 0; j < in; j++) H0[j * in + j] += damp;
        ok = hinv_upper(h, H0, in, U);
    }
    free(H0);
    return ok ? MOPT_OK
              : h->error_set(err, MOPT_E_RUNTIME, pass, "Hessian of a %lld-column input is not positive definite even after damping",
                             (long long)in);
}
