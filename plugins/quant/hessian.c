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

mopt_status hess_inverse_factor(const mopt_host_api *h, double *H, int64_t in, double percdamp, float *U, const char *pass,
                                mopt_error *err) {
    double mean = 0, *diag = malloc((size_t)in * sizeof *diag);
    if (!diag) return h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    for (int64_t j = 0; j < in; j++) mean += diag[j] = H[j * in + j];
    mean /= (double)in;
    int factored = 0;
    for (int attempt = 0; attempt < 4 && !factored; attempt++) { /* 1% damping; if H is still not positive definite, damp harder */
        if (attempt) /* a failed factorization wrote only the lower triangle: restore it from the upper one */
            for (int64_t i = 1; i < in; i++)
                for (int64_t j = 0; j < i; j++) H[i * in + j] = H[j * in + i];
        const double damp = percdamp * mean * pow(10.0, attempt);
        for (int64_t j = 0; j < in; j++) H[j * in + j] = diag[j] + damp;
        factored = h->chol_f64(H, in);
    }
    free(diag);
    if (!factored)
        return h->error_set(err, MOPT_E_RUNTIME, pass, "Hessian of a %lld-column input is not positive definite even after damping",
                            (long long)in);
    if (!h->chol_inverse_f64(H, in) || !h->chol_f64(H, in))
        return h->error_set(err, MOPT_E_RUNTIME, pass, "the inverse Hessian of a %lld-column input lost positive definiteness in rounding",
                            (long long)in);
    for (int64_t i = 0; i < in; i++)
        for (int64_t j = 0; j < in; j++) U[i * in + j] = j >= i ? (float)H[j * in + i] : 0.0f; /* U = L^T */
    return MOPT_OK;
}
