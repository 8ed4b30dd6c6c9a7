/* ggml's scale searches for the k-quants (shared/docs/ALGORITHMS.md §11),
 * each sum and product taken in float in the order llama.cpp's reference
 * quantizers take them, with its rounding (half to even), so a block holds the
 * bytes llama-quantize writes for the same floats. The core builds without
 * -ffp-contract=fast, so no product is fused into an FMA behind our back. */
#include <limits.h>
#include <math.h>

#include "ggml.h"


int mopt_ggml_nearest(float f) { return (int)lrintf(f); }

/* the error weight of value i: the caller's, or one of ggml's rmse types (1: x^2, 2: 1, 3: |x|, 4: sqrt|x|) */
static float qx_weight(const float *x, const float *qw, int rmse_type, int i) {
    if (qw) return qw[i];
    switch (rmse_type) {
    case 1: return x[i] * x[i];
    case 2: return 1;
    case 3: return fabsf(x[i]);
    default: return sqrtf(fabsf(x[i]));
    }
}

/* The symmetric searches' start: the value of largest magnitude, sign kept; 0 with every level 0 for a group
 * below ggml's floor (GROUP_MAX_EPS) */
static float signed_max_or_zero(int n, const float *x, int8_t *L) {
    float max = 0, amax = 0;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    if (amax >= MOPT_GGML_ALL_ZERO) return max;
    for (int i = 0; i < n; i++) L[i] = 0;
    return 0.f;
}

float mopt_ggml_qx_search(int n, int nmax, const float *x, int8_t *L, int rmse_type, const float *qw) {
    const float max = signed_max_or_zero(n, x, L);
    if (!max) return 0.f;
    float iscale = -nmax / max; /* the extreme value lands on -nmax, the side with the extra level */
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = mopt_ggml_clamp(mopt_ggml_nearest(iscale * x[i]), -nmax, nmax - 1);
        const float w = qx_weight(x, qw, rmse_type, i);
        L[i] = (int8_t)(l + nmax);
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f, best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (!is) continue;
        iscale = -(nmax + 0.1f * is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = mopt_ggml_clamp(mopt_ggml_nearest(iscale * x[i]), -nmax, nmax - 1);
            const float w = qx_weight(x, qw, rmse_type, i);
            sumlx += w * x[i] * l;
            suml2 += w * l * l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) { /* (sum w x l)^2 / sum w l^2 grew: the error fell */
            for (int i = 0; i < n; i++) L[i] = (int8_t)(nmax + mopt_ggml_clamp(mopt_ggml_nearest(iscale * x[i]), -nmax, nmax - 1));
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

float mopt_ggml_qkx2_search(int n, int nmax, const float *x, const float *w, uint8_t *L, float *the_min, uint8_t *Laux, float rmin,
                            float rdelta, int nstep, int use_mad) {
    float min = x[0], max = x[0], sum_w = w[0], sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        for (int i = 0; i < n; i++) L[i] = 0;
        *the_min = -min;
        return 0.f;
    }
    float iscale = nmax / (max - min), scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)mopt_ggml_clamp(mopt_ggml_nearest(iscale * (x[i] - min)), 0, nmax);
        const float diff = scale * L[i] + min - x[i];
        best += w[i] * (use_mad ? fabsf(diff) : diff * diff);
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * is + nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            const int l = mopt_ggml_clamp(mopt_ggml_nearest(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * l;
            sum_l2 += w[i] * l * l;
            sum_xl += w[i] * l * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        /* weighted least squares of x ~ scale l + min over the fixed levels; a positive min is pinned to 0 */
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D, this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            const float diff = this_scale * Laux[i] + this_min - x[i];
            err += w[i] * (use_mad ? fabsf(diff) : diff * diff);
        }
        if (err < best) {
            for (int i = 0; i < n; i++) L[i] = Laux[i];
            best = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *the_min = -min;
    return scale;
}

float mopt_ggml_qp_search(int n, int nmax, const float *x, uint8_t *L, const float *w) {
    float max = 0;
    for (int i = 0; i < n; i++) max = max > x[i] ? max : x[i];
    if (!max) {
        for (int i = 0; i < n; i++) L[i] = 0;
        return 0.f;
    }
    float iscale = nmax / max, scale = 1 / iscale, best = 0;
    for (int i = 0; i < n; i++) {
        L[i] = (uint8_t)mopt_ggml_nearest(iscale * x[i]);
        const float diff = x[i] - scale * L[i];
        best += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; is++) { /* nine grids around nmax / max, by weighted squared error */
        if (!is) continue;
        const float iscale_is = (0.1f * is + nmax) / max, scale_is = 1 / iscale_is;
        float err = 0;
        for (int i = 0; i < n; i++) {
            const int l = mopt_ggml_clamp(mopt_ggml_nearest(iscale_is * x[i]), INT_MIN, nmax);
            const float diff = x[i] - scale_is * l;
            err += w[i] * diff * diff;
        }
        if (err < best) best = err, iscale = iscale_is;
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = mopt_ggml_clamp(mopt_ggml_nearest(iscale * x[i]), INT_MIN, nmax);
        L[i] = (uint8_t)l;
        sumlx += w[i] * x[i] * l;
        suml2 += w[i] * l * l;
    }
    for (int pass = 0; pass < 5; pass++) { /* coordinate descent: move one level while (sum w x l)^2 / sum w l^2 grows */
        int changed = 0;
        for (int i = 0; i < n; i++) {
            float slx = sumlx - w[i] * x[i] * L[i], sl2 = suml2 - w[i] * L[i] * L[i];
            if (!(slx > 0 && sl2 > 0)) continue;
            const int nl = mopt_ggml_clamp(mopt_ggml_nearest(x[i] * sl2 / slx), INT_MIN, nmax);
            if (nl == L[i]) continue;
            slx += w[i] * x[i] * nl;
            sl2 += w[i] * nl * nl;
            if (slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (uint8_t)nl;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed) break;
    }
    return sumlx / suml2;
}

float mopt_ggml_q3_search(int n, int nmax, const float *x, int8_t *L) {
    const float max = signed_max_or_zero(n, x, L);
    if (!max) return 0.f;
    const float iscale = -nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        const int l = mopt_ggml_clamp(mopt_ggml_nearest(iscale * x[i]), -nmax, nmax - 1);
        const float w = x[i] * x[i];
        L[i] = (int8_t)l;
        sumlx += w * x[i] * l;
        suml2 += w * l * l;
    }
    for (int pass = 0; pass < 5; pass++) { /* coordinate descent under error weights x^2, as make_qp_quants */
        int changed = 0;
        for (int i = 0; i < n; i++) {
            const float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * L[i];
            if (!(slx > 0)) continue;
            float sl2 = suml2 - w * L[i] * L[i];
            const int nl = mopt_ggml_clamp(mopt_ggml_nearest(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (nl == L[i]) continue;
            slx += w * x[i] * nl;
            sl2 += w * nl * nl;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)nl;
                sumlx = slx;
                suml2 = sl2;
                changed++;
            }
        }
        if (!changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return sumlx / suml2;
}
