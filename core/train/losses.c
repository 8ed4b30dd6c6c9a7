/* Losses on logits and their gradients: the cross-entropy of the perplexity
 * protocol, and distillation's KL between softened distributions (Hinton et
 * al., 2015: scaled by tau^2 so its gradient keeps its size across tau). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mopt/train.h"

double mopt_cross_entropy(const float *logits, float *dlogits, const int32_t *tokens, int32_t T, int32_t V, double weight) {
    const double scale = 1.0 / (T - 1);
    double loss = 0;
    for (int32_t p = 0; p + 1 < T; p++) {
        const float *row = logits + (size_t)p * V;
        float mx = row[0];
        for (int32_t i = 1; i < V; i++) mx = fmaxf(mx, row[i]);
        double z = 0;
        for (int32_t i = 0; i < V; i++) z += exp((double)row[i] - mx);
        loss += log(z) + mx - row[tokens[p + 1]];
        if (!dlogits) continue;
        float *d = dlogits + (size_t)p * V;
        for (int32_t i = 0; i < V; i++) d[i] += (float)(exp((double)row[i] - mx) / z * scale * weight);
        d[tokens[p + 1]] -= (float)(scale * weight);
    }
    return loss * scale;
}

/* softmax of row / tau, in double */
static void softmax_t(const float *row, int32_t V, double tau, double *out) {
    double mx = row[0];
    for (int32_t i = 1; i < V; i++) mx = fmax(mx, row[i]);
    double z = 0;
    for (int32_t i = 0; i < V; i++) z += (out[i] = exp((row[i] - mx) / tau));
    for (int32_t i = 0; i < V; i++) out[i] /= z;
}

static int by_desc(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Keeps the k largest of p (ties at the cut: the first ones), renormalized. */
static void keep_top_k(double *p, int32_t V, int32_t k, double *scratch) {
    if (k <= 0 || k >= V) return;
    memcpy(scratch, p, (size_t)V * sizeof *scratch);
    qsort(scratch, (size_t)V, sizeof *scratch, by_desc);
    const double cut = scratch[k - 1];
    int32_t above = 0;
    for (int32_t i = 0; i < V; i++) above += p[i] > cut;
    int32_t ties = k - above;
    double z = 0;
    for (int32_t i = 0; i < V; i++) {
        if (p[i] > cut || (p[i] == cut && ties-- > 0)) z += p[i];
        else p[i] = 0;
    }
    for (int32_t i = 0; i < V; i++) p[i] /= z;
}

double mopt_distill_kl(const float *student, const float *teacher, float *dstudent, int32_t n, int32_t V, double tau,
                       int32_t kind, int32_t top_k, double weight) {
    double *ps = malloc((size_t)V * sizeof *ps), *pt = malloc((size_t)V * sizeof *pt), *scratch = malloc((size_t)V * sizeof *scratch);
    if (!ps || !pt || !scratch) {
        free(ps);
        free(pt);
        free(scratch);
        return NAN;
    }
    const double g = weight * tau / n; /* d(tau^2 KL)/ds = tau * (...) */
    double total = 0;
    for (int32_t r = 0; r < n; r++) {
        softmax_t(student + (size_t)r * V, V, tau, ps);
        softmax_t(teacher + (size_t)r * V, V, tau, pt);
        float *d = dstudent ? dstudent + (size_t)r * V : NULL;
        double kl = 0;
        if (kind == MOPT_KL_REVERSE) { /* KL(ps || pt); dKL/dz_i = ps_i (log ps_i - log pt_i - KL), z = s / tau */
            for (int32_t i = 0; i < V; i++)
                if (ps[i] > 0) kl += ps[i] * (log(ps[i]) - log(fmax(pt[i], 1e-300)));
            for (int32_t i = 0; d && i < V; i++)
                if (ps[i] > 0) d[i] += (float)(g * ps[i] * (log(ps[i]) - log(fmax(pt[i], 1e-300)) - kl));
        } else { /* KL(pt || ps); dKL/dz_i = ps_i - pt_i */
            keep_top_k(pt, V, top_k, scratch);
            for (int32_t i = 0; i < V; i++) {
                if (pt[i] > 0) kl += pt[i] * (log(pt[i]) - log(fmax(ps[i], 1e-300)));
                if (d) d[i] += (float)(g * (ps[i] - pt[i]));
            }
        }
        total += kl;
    }
    free(ps);
    free(pt);
    free(scratch);
    return total * tau * tau / n;
}
