/* A linear's squared output error over calibration inputs X [ntok, in], from their Gram matrix G = X^T X = L L^T:
 * |(W - T) X^T|^2 = sum_r d_r G d_r^T = |d L|^2 with d = W - T, out x in^2 / 2 multiply-adds (L is triangular) where
 * running the tokens through takes ntok x out x in. AWQ judges its scale candidates with it (judge=linear, and a
 * group whose inspected module is its one linear). */
#ifndef MOPT_GRAM_H
#define MOPT_GRAM_H

#include "mopt/plugin.h"

/* L [n, n], lower triangular with zeros above, L L^T = X^T X: the Gram matrix on the session's threads (the GPTQ
 * Hessian's panels), factored in double. A singular one (fewer tokens than channels, a channel never used) is
 * damped by 1e-7 x its mean diagonal, ten times more on each retry: that adds 1e-7 of |d|^2 x mean x^2, far below
 * the differences between candidates. NULL and err set when out of memory. */
float *gram_factor_of_inputs(const mopt_host_api *h, mopt_session *se, const float *x, int64_t ntok, int64_t n, mopt_error *err);

/* *err_sq = |(W - T) X^T|^2 for W and T [out, in], from L [in, in]. Rows go over the session's threads in fixed
 * blocks summed in order, so the result does not depend on the thread count. */
mopt_status gram_output_error(const mopt_host_api *h, mopt_session *se, const float *W, const float *T, int64_t out, int64_t in,
                              const float *L, double *err_sq, mopt_error *err);

#endif
