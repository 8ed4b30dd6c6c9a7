/* After GPTQ's sweep over a GGUF block grid: descent on the layer's own loss f = (w - w0)^T H (w - w0) of each row,
 * over what the block layout leaves free. GPTQ's sweep visits each column once, seeing only the errors of the
 * columns before it; these go back over the whole row. Each round takes every row's gradient g = H (w - w0) afresh
 * from one GEMM, then per row three steps, none of which raises f:
 *   - levels (CDQuant, Nair & Suggala 2024, on integer grids): the level nearest a value's own optimum
 *     w_i - g_i / H_ii is that coordinate's best;
 *   - a k-quant sub-block's stored scale and min, with its levels kept: f's change is a quadratic in the two;
 *   - each block's d and dmin: a block decodes linearly in them, so with the rest kept the row's best ones solve
 *     one small least-squares system (1 or 2 unknowns per block), taken where f falls after f16 rounding. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "block_refine.h"

/* One sweep over the row's columns: each value to the level nearest its own optimum given the others. */
static void level_sweep(const mopt_host_api *h, const float *H, int64_t in, int32_t type, int64_t bs, int64_t bb, uint8_t *row,
                        float *w, float *g) {
    for (int64_t i = 0; i < in; i++) {
        const double hii = H[i * in + i];
        if (hii <= 0) continue;
        uint8_t *blk = row + (i / bs) * bb;
        const float now = w[i], target = (float)(now - g[i] / hii);
        const float v = h->ggml_block_requantize(type, blk, (int32_t)(i % bs), target);
        const double dl = (double)v - now;
        if (dl == 0) continue;
        if (2 * dl * g[i] + dl * dl * hii >= 0) { /* a tie or rounding: keep the old level */
            h->ggml_block_requantize(type, blk, (int32_t)(i % bs), now);
            continue;
        }
        w[i] = v;
        const float *Hi = H + i * in, d = (float)dl; /* H is symmetric: column i is row i */
        for (int64_t j = 0; j < in; j++) g[j] += d * Hi[j];
    }
}

/* Solves A x = b (A [n, n] symmetric positive definite, overwritten) by Cholesky; 0 when A is not. */
static int spd_solve(const mopt_host_api *h, double *A, int64_t n, const double *b, double *x) {
    if (!h->chol_f64(A, n)) return 0; /* L in the lower triangle */
    for (int64_t i = 0; i < n; i++) {
        double s = b[i];
        for (int64_t k = 0; k < i; k++) s -= A[i * n + k] * x[k];
        x[i] = s / A[i * n + i];
    }
    for (int64_t i = n - 1; i >= 0; i--) {
        double s = x[i];
        for (int64_t k = i + 1; k < n; k++) s -= A[k * n + i] * x[k];
        x[i] = s / A[i * n + i];
    }
    return 1;
}

typedef struct {
    int64_t in, bs, bb, nb;
    float *phi;              /* [2 in + 3 * 256]: the row's bases per d and per dmin, then a block's scratch */
    float *theta0;           /* [2 nb] the stored d (and dmin) */
    double *G, *A, *A0, *pg, *x; /* G [2][in][nb]; A, A0 [K, K], pg, x [K]; K = nb * bases */
    float *w, *g;            /* [in]: the row as it decodes, and H (w - w0) */
} work;

/* w: the row as its blocks decode */
static void decode_row(const mopt_host_api *h, work *k, int32_t type, const uint8_t *row, float *w) {
    for (int64_t b = 0; b < k->nb; b++) {
        float sc[2];
        const int P = h->ggml_block_basis(type, row + b * k->bb, k->phi + b * k->bs, k->phi + k->in + b * k->bs, sc);
        for (int64_t j = 0; j < k->bs; j++)
            w[b * k->bs + j] = sc[0] * k->phi[b * k->bs + j] + (P > 1 ? sc[1] * k->phi[k->in + b * k->bs + j] : 0.0f);
    }
}

/* One sweep over the row's k-quant sub-blocks: each one's stored scale and min moved by up to +-6 with its levels
 * kept, to the pair that lowers f most. Its values are affine in the two (v = v0 + ds a + dm c), so f's change is a
 * quadratic in (ds, dm) from a^T g, c^T g, a^T H a, a^T H c, c^T H c. */
static void subscale_sweep(const mopt_host_api *h, work *k, const float *H, int32_t type, uint8_t *row, float *g) {
    const int64_t in = k->in, bs = k->bs, n = h->ggml_type_sub_block(type);
    if (!n) return;
    float *v0 = k->phi + 2 * in, *a = v0 + bs, *c = a + bs, sc[2];
    for (int64_t b = 0; b < k->nb; b++) {
        uint8_t *blk = row + b * k->bb;
        for (int64_t j = 0; j < bs / n; j++) {
            int sm0[2], sm[2];
            h->ggml_block_sub_get(type, blk, (int32_t)j, sm0);
            /* a and c: the sub-block's values per unit of scale and of min (a step down where up is out of range) */
            float *dir[2] = {a, c};
            for (int p = 0; p < 2; p++) {
                memset(dir[p], 0, (size_t)bs * sizeof *a);
                for (int step = 1; step >= -1; step -= 2) {
                    sm[0] = sm0[0] + (p == 0 ? step : 0), sm[1] = sm0[1] + (p == 1 ? step : 0);
                    if (!h->ggml_block_sub_set(type, blk, (int32_t)j, sm)) continue;
                    const int P = h->ggml_block_basis(type, blk, v0, k->phi + in, sc);
                    for (int64_t i = j * n; i < (j + 1) * n; i++)
                        dir[p][i] = ((sc[0] * v0[i] + (P > 1 ? sc[1] * k->phi[in + i] : 0.0f)) - k->w[b * bs + i]) * (float)step;
                    break;
                }
                h->ggml_block_sub_set(type, blk, (int32_t)j, sm0);
            }
            const float *Hs = H + (b * bs + j * n) * in + b * bs + j * n; /* H's [n, n] diagonal block of this sub-block */
            double ag = 0, cg = 0, aHa = 0, aHc = 0, cHc = 0;
            for (int64_t x = 0; x < n; x++) {
                const int64_t ix = j * n + x;
                ag += a[ix] * g[b * bs + ix], cg += c[ix] * g[b * bs + ix];
                double Ha = 0, Hc = 0;
                for (int64_t y = 0; y < n; y++) Ha += Hs[x * in + y] * a[j * n + y], Hc += Hs[x * in + y] * c[j * n + y];
                aHa += a[ix] * Ha, aHc += a[ix] * Hc, cHc += c[ix] * Hc;
            }
            double best = 0;
            int bds = 0, bdm = 0;
            for (int ds = -6; ds <= 6; ds++)
                for (int dm = -6; dm <= 6; dm++) {
                    const double df = 2 * (ds * ag + dm * cg) + ds * ds * aHa + 2 * ds * dm * aHc + dm * dm * cHc;
                    sm[0] = sm0[0] + ds, sm[1] = sm0[1] + dm;
                    if (df < best && h->ggml_block_sub_set(type, blk, (int32_t)j, sm)) {
                        h->ggml_block_sub_set(type, blk, (int32_t)j, sm0);
                        best = df, bds = ds, bdm = dm;
                    }
                }
            if (!bds && !bdm) continue;
            sm[0] = sm0[0] + bds, sm[1] = sm0[1] + bdm;
            h->ggml_block_sub_set(type, blk, (int32_t)j, sm);
            /* the values as the block now decodes, and g for them */
            const int P = h->ggml_block_basis(type, blk, v0, k->phi + in, sc);
            for (int64_t x = 0; x < n; x++) {
                const int64_t i = b * bs + j * n + x;
                const float v = sc[0] * v0[j * n + x] + (P > 1 ? sc[1] * k->phi[in + j * n + x] : 0.0f);
                const double dl = (double)v - k->w[i];
                if (dl == 0) continue;
                k->w[i] = v;
                const float *Hi = H + i * in, d = (float)dl;
                for (int64_t y = 0; y < in; y++) g[y] += d * Hi[y];
            }
        }
    }
}

/* The row's d and dmin by least squares with its levels kept. w = sum of theta phi, so with g = H (w - w0) at the
 * stored theta0, A theta = phi^T H w0 = A theta0 - phi^T g, and f changes by D^T A D + 2 D^T phi^T g for
 * D = theta - theta0: the new ones are kept where that is negative as stored (f16). */
static void scale_solve(const mopt_host_api *h, work *k, const float *H, int32_t type, uint8_t *row) {
    const int64_t in = k->in, bs = k->bs, nb = k->nb;
    int P = 1;
    for (int64_t b = 0; b < nb; b++) {
        float sc[2];
        P = h->ggml_block_basis(type, row + b * k->bb, k->phi + b * bs, k->phi + in + b * bs, sc);
        for (int p = 0; p < P; p++) k->theta0[b * P + p] = sc[p];
    }
    const int64_t K = nb * P;
    for (int p = 0; p < P; p++) /* G[p][i][b] = sum over block b's columns j of H_ij phi_p(j) */
        for (int64_t i = 0; i < in; i++)
            for (int64_t b = 0; b < nb; b++) {
                const float *Hi = H + i * in + b * bs, *ph = k->phi + p * in + b * bs;
                float s = 0;
                for (int64_t j = 0; j < bs; j++) s += Hi[j] * ph[j];
                k->G[(p * in + i) * nb + b] = s;
            }
    double tr = 0;
    for (int64_t b = 0; b < nb; b++)
        for (int p = 0; p < P; p++) {
            const int64_t r = b * P + p;
            const float *ph = k->phi + p * in + b * bs;
            double pg = 0;
            for (int64_t c = 0; c < nb; c++)
                for (int q = 0; q < P; q++) {
                    double s = 0;
                    for (int64_t j = 0; j < bs; j++) s += ph[j] * k->G[(q * in + b * bs + j) * nb + c];
                    k->A0[r * K + c * P + q] = s;
                }
            for (int64_t j = 0; j < bs; j++) pg += ph[j] * k->g[b * bs + j];
            k->pg[r] = pg;
            tr += k->A0[r * K + r];
        }
    for (int64_t r = 0; r < K; r++) { /* the right side, into x; A = A0 plus a ridge (a block of dead columns has phi = 0) */
        double s = -k->pg[r];
        for (int64_t c = 0; c < K; c++) s += k->A0[r * K + c] * k->theta0[c], k->A[r * K + c] = k->A0[r * K + c];
        k->x[r] = s;
        k->A[r * K + r] += 1e-9 * tr / (double)K;
    }
    if (!spd_solve(h, k->A, K, k->x, k->x)) return;
    for (int64_t b = 0; b < nb; b++) { /* a d that moves more than 2x is no refit of GPTQ's grid: keep that block's */
        const double d0 = k->theta0[b * P], ratio = d0 != 0 ? k->x[b * P] / d0 : 1;
        int ok = isfinite(ratio) && ratio >= 0.5 && ratio <= 2;
        for (int p = 0; p < P; p++) ok = ok && isfinite(k->x[b * P + p]);
        for (int p = 0; p < P; p++) k->x[b * P + p] = ok ? k->x[b * P + p] : k->theta0[b * P + p];
    }
    uint8_t *saved = (uint8_t *)k->A; /* A is spent: room for the row's blocks as they were */
    memcpy(saved, row, (size_t)(nb * k->bb));
    for (int64_t b = 0; b < nb; b++) {
        float sc[2];
        h->ggml_block_set_scales(type, row + b * k->bb, (float)k->x[b * P], P > 1 ? (float)k->x[b * P + 1] : 0.0f);
        h->ggml_block_basis(type, row + b * k->bb, k->phi + b * bs, k->phi + in + b * bs, sc);
        for (int p = 0; p < P; p++) k->x[b * P + p] = (double)sc[p] - k->theta0[b * P + p]; /* D as stored */
    }
    double df = 0;
    for (int64_t r = 0; r < K; r++) {
        double s = 2 * k->pg[r];
        for (int64_t c = 0; c < K; c++) s += k->A0[r * K + c] * k->x[c];
        df += k->x[r] * s;
    }
    if (!(df < 0)) memcpy(row, saved, (size_t)(nb * k->bb)); /* f16 rounding ate the gain */
}

mopt_status block_refine(const mopt_host_api *h, const float *H, int64_t in, const float *W0, int64_t out, int32_t type,
                         uint8_t *blocks, int rounds, mopt_error *err) {
    work k = {0};
    k.in = in, k.bs = h->ggml_type_block(type), k.bb = h->ggml_type_block_bytes(type);
    if (rounds <= 0 || !k.bs || in % k.bs) return MOPT_OK;
    k.nb = in / k.bs;
    const int64_t K = 2 * k.nb, rb = k.nb * k.bb;
    k.phi = malloc((size_t)(2 * in + 3 * 256) * sizeof *k.phi);
    k.theta0 = malloc((size_t)K * sizeof *k.theta0);
    k.G = malloc((size_t)(2 * in * k.nb) * sizeof *k.G);
    k.A = malloc((size_t)(K * K) * sizeof *k.A > (size_t)rb ? (size_t)(K * K) * sizeof *k.A : (size_t)rb);
    k.A0 = malloc((size_t)(K * K) * sizeof *k.A0);
    k.pg = malloc((size_t)K * sizeof *k.pg);
    k.x = malloc((size_t)K * sizeof *k.x);
    float *Wq = malloc((size_t)(out * in) * sizeof *Wq), *E = malloc((size_t)(out * in) * sizeof *E),
          *Gm = malloc((size_t)(out * in) * sizeof *Gm); /* [out, in] each: the rows as they decode, W - W0, H (W - W0) */
    mopt_status st = MOPT_OK;
    if (!k.phi || !k.theta0 || !k.G || !k.A || !k.A0 || !k.pg || !k.x || !Wq || !E || !Gm) {
        st = h->error_set(err, MOPT_E_NOMEM, "quant.gptq", "out of memory for the descent on a %lld x %lld linear", (long long)out, (long long)in);
    } else {
        for (int t = 0; t < rounds; t++) {
            /* every row's gradient afresh (no drift from the sweeps' updates): E = W - W0, then H E per row in one GEMM */
            for (int64_t r = 0; r < out; r++) {
                decode_row(h, &k, type, blocks + r * rb, Wq + r * in);
                for (int64_t i = 0; i < in; i++) E[r * in + i] = Wq[r * in + i] - W0[r * in + i];
            }
            h->sgemm(0, 0, (int32_t)out, (int32_t)in, (int32_t)in, 1.0f, E, (int32_t)in, H, (int32_t)in, 0.0f, Gm, (int32_t)in);
            for (int64_t r = 0; r < out; r++) {
                uint8_t *row = blocks + r * rb;
                k.w = Wq + r * in, k.g = Gm + r * in;
                level_sweep(h, H, in, type, k.bs, k.bb, row, k.w, k.g);
                subscale_sweep(h, &k, H, type, row, k.g);
                scale_solve(h, &k, H, type, row);
            }
        }
    }
    free(Wq);
    free(E);
    free(Gm);
    free(k.phi);
    free(k.theta0);
    free(k.G);
    free(k.A);
    free(k.A0);
    free(k.pg);
    free(k.x);
    return st;
}
