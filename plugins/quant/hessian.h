/* The Hessian of a linear's layer-wise loss, H = 2/N sum x x^T over its
 * calibration inputs, and the upper Cholesky factor of its inverse that GPTQ
 * and SparseGPT both sweep with (as the reference implementations compute it). */
#ifndef MOPT_HESSIAN_H
#define MOPT_HESSIAN_H

#include "calib.h"

/* An observer (calib_obs) that adds X^T X of node `node`'s input to H. */
typedef struct hess_acc {
    const mopt_host_api *h;
    int32_t node;
    int64_t in;
    float *H; /* [in, in], its upper triangle */
    int64_t count;
    mopt_session *s; /* its threads share the work (NULL: the caller's thread alone, session_parallel_for's rule) */
} hess_acc;
void hess_accumulate(void *user, int32_t sample, int32_t node, const float *const *in, const int32_t *in_w, const float *out,
                     int32_t out_w, int32_t T);

/* H (from the upper triangle of Hf) in double, scaled by 2/count, dead columns (zero diagonal) set to 1 and
 * flagged in dead[in]; NULL when out of memory. */
double *hess_scaled(const float *Hf, int64_t count, int64_t in, uint8_t *dead);
/* U [in, in]: the upper Cholesky factor of (H + damp)^-1 (H^-1 = U^T U), the
 * factor torch's cholesky, cholesky_inverse, cholesky(upper=True) give, from one
 * factorization of H reversed and a triangular inverse; damp = percdamp x
 * mean(diag H), ten times more on each of three retries if H + damp is not
 * positive definite. H (symmetric) is overwritten: no copy of it is made,
 * since it is the largest thing a 1B-class model's GPTQ holds. */
mopt_status hess_inverse_factor(const mopt_host_api *h, double *H, int64_t in, double percdamp, float *U, const char *pass,
                                mopt_error *err);

/* A = L L^T in place (L in the lower triangle) for the symmetric A its upper triangle holds, with diag + damp on the
 * diagonal: first_damp, then retry_damp, ten times more on each further attempt, `tries` attempts in all. The upper
 * triangle is kept, and the lower one is restored from it before each attempt (before the first too unless
 * lower_ready). 0 when no attempt factors. */
int hess_chol_damped(const mopt_host_api *h, double *A, const double *diag, int64_t n, double first_damp, double retry_damp, int tries,
                     int lower_ready);

#endif
