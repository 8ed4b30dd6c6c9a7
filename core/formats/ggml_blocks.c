/* ggml block formats (layouts in mopt/ggml.h). The quantizers compute what
 * ggml's reference ones (quantize_row_*_ref) compute, the k-quants with ggml's
 * scale searches (ggml_search.c), so the bytes equal llama-quantize's. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "mopt/formats.h"
#include "mopt/quant.h"
#include "tensor_impl.h"
#include "ggml.h"

int64_t mopt_ggml_block_size(int32_t type) {
    switch (type) {
    case MOPT_GGML_F32:
    case MOPT_GGML_F16:
    case MOPT_GGML_BF16: return 1;
    case MOPT_GGML_Q4_0:
    case MOPT_GGML_Q4_1:
    case MOPT_GGML_Q5_0:
    case MOPT_GGML_Q5_1:
    case MOPT_GGML_Q8_0:
    case MOPT_GGML_IQ4_NL: return 32;
    case MOPT_GGML_Q2_K:
    case MOPT_GGML_Q3_K:
    case MOPT_GGML_Q4_K:
    case MOPT_GGML_Q5_K:
    case MOPT_GGML_Q6_K: return 256;
    default: return 0;
    }
}

int64_t mopt_ggml_block_bytes(int32_t type) {
    switch (type) {
    case MOPT_GGML_F32: return 4;
    case MOPT_GGML_F16:
    case MOPT_GGML_BF16: return 2;
    case MOPT_GGML_Q4_0:
    case MOPT_GGML_IQ4_NL: return 18;
    case MOPT_GGML_Q4_1: return 20;
    case MOPT_GGML_Q5_0: return 22;
    case MOPT_GGML_Q5_1: return 24;
    case MOPT_GGML_Q8_0: return 34;
    case MOPT_GGML_Q2_K: return 84;
    case MOPT_GGML_Q3_K: return 110;
    case MOPT_GGML_Q4_K: return 144;
    case MOPT_GGML_Q5_K: return 176;
    case MOPT_GGML_Q6_K: return 210;
    default: return 0;
    }
}

const char *mopt_ggml_type_name(int32_t type) {
    switch (type) {
    case MOPT_GGML_F32: return "f32";
    case MOPT_GGML_F16: return "f16";
    case MOPT_GGML_BF16: return "bf16";
    case MOPT_GGML_Q4_0: return "q4_0";
    case MOPT_GGML_Q4_1: return "q4_1";
    case MOPT_GGML_Q5_0: return "q5_0";
    case MOPT_GGML_Q5_1: return "q5_1";
    case MOPT_GGML_Q8_0: return "q8_0";
    case MOPT_GGML_Q2_K: return "q2_k";
    case MOPT_GGML_Q3_K: return "q3_k";
    case MOPT_GGML_Q4_K: return "q4_k";
    case MOPT_GGML_Q5_K: return "q5_k";
    case MOPT_GGML_Q6_K: return "q6_k";
    case MOPT_GGML_IQ4_NL: return "iq4_nl";
    default: return NULL;
    }
}

int64_t mopt_ggml_row_bytes(int32_t type, int64_t n) {
    const int64_t bs = mopt_ggml_block_size(type);
    if (!bs || n < 0 || n % bs) return -1;
    return n / bs * mopt_ggml_block_bytes(type);
}

static void put16(uint8_t *p, float f) {
    uint16_t h = mopt_f32_to_f16(f);
    memcpy(p, &h, 2);
}

/* --- 32-value blocks -------------------------------------------------------- */

/* ggml's reference quantizers: the symmetric kinds scale by the value of
 * largest magnitude (its sign kept), the kinds with a minimum by the range */
static float signed_absmax(const float *x) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; j++)
        if (amax < fabsf(x[j])) amax = fabsf(x[j]), max = x[j];
    return max;
}

static void min_max(const float *x, float *min, float *max) {
    *min = *max = x[0];
    for (int j = 1; j < 32; j++) *min = fminf(*min, x[j]), *max = fmaxf(*max, x[j]);
}

static int clamp_level(int q, int top) { return q < top ? q : top; }

/* values j and j + 16 as the low and high nibble of byte j; 5-bit kinds keep
 * their fifth bits in qh (bit j and bit j + 16) */
static void put_pair(uint8_t *nibbles, uint32_t *qh, int j, int a, int b) {
    nibbles[j] = (uint8_t)((a & 15) | (b & 15) << 4);
    if (qh) *qh |= (uint32_t)((a & 0x10) >> 4) << j | (uint32_t)((b & 0x10) >> 4) << (j + 16);
}

/* IQ4_NL's levels (ggml's kvalues_iq4nl): denser near 0, as a trained weight's values are */
static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

/* The level nearest v; a tie takes the upper one, as ggml's best_index_int8. */
static int iq4nl_nearest(float v) {
    if (v <= iq4nl_values[0]) return 0;
    if (v >= iq4nl_values[15]) return 15;
    int lo = 0, hi = 15;
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (v < iq4nl_values[mid]) hi = mid;
        else lo = mid;
    }
    return v - iq4nl_values[hi - 1] < iq4nl_values[hi] - v ? hi - 1 : hi;
}

/* The weighted least-squares scale sum(w q x) / sum(w q^2) of x's levels at 1/id, in *sqx and *sq2. */
static void iq4nl_fit(const float *x, const float *w, float id, float *sqx, float *sq2) {
    float a = 0, b = 0;
    for (int j = 0; j < 32; j++) {
        const float q = iq4nl_values[iq4nl_nearest(id * x[j])];
        a += w[j] * q * x[j];
        b += w[j] * q * q;
    }
    *sqx = a, *sq2 = b;
}

/* IQ4_NL, as llama.cpp's quantize_iq4_nl: error weights qw sqrt(sigma^2 + x^2) (sigma^2 twice the block's mean
 * x^2) or x^2; the scale fitted from d = max / 127, then from each of 15 trial scales (itry - 127) / max, kept when
 * its fit explains more; the levels nearest x / d for the d kept. */
static void iq4_nl(const float *x, const float *qw, uint8_t *y) {
    float w[32], sigma2 = 0, amax = 0, max = 0, d = 0;
    for (int j = 0; j < 32; j++) sigma2 += x[j] * x[j];
    sigma2 *= 2.f / 32;
    for (int j = 0; j < 32; j++) {
        w[j] = qw ? qw[j] * sqrtf(sigma2 + x[j] * x[j]) : x[j] * x[j];
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    }
    if (amax >= 1e-15f) {
        float sqx, sq2;
        d = -max / iq4nl_values[0];
        iq4nl_fit(x, w, 1 / d, &sqx, &sq2);
        d = sqx / sq2;
        float best = d * sqx;
        for (int itry = -7; itry <= 7; itry++) {
            iq4nl_fit(x, w, (itry + iq4nl_values[0]) / max, &sqx, &sq2);
            if (sq2 > 0 && sqx * sqx > best * sq2) d = sqx / sq2, best = d * sqx;
        }
    }
    put16(y, d);
    const float id = d ? 1 / d : 0.f;
    for (int j = 0; j < 16; j++) y[2 + j] = (uint8_t)(iq4nl_nearest(id * x[j]) | iq4nl_nearest(id * x[j + 16]) << 4);
}

/* Q4_0 / Q5_0: d = the signed absmax / -2^(b-1), x = d (q - 2^(b-1)) */
static void q_sym(const float *x, uint8_t *y, int bits) {
    const int half = 1 << (bits - 1), top = 2 * half - 1;
    const float d = signed_absmax(x) / (float)-half, id = d ? 1.0f / d : 0.0f, off = (float)half + 0.5f;
    uint32_t qh = 0;
    put16(y, d);
    for (int j = 0; j < 16; j++)
        put_pair(y + (bits == 5 ? 6 : 2), bits == 5 ? &qh : NULL, j, clamp_level((int8_t)(x[j] * id + off), top),
                 clamp_level((int8_t)(x[j + 16] * id + off), top));
    if (bits == 5) memcpy(y + 2, &qh, 4);
}

/* Q4_1 / Q5_1: d = range / (2^b - 1), m = min, x = d q + m (ggml clamps only the 4-bit kind) */
static void q_min(const float *x, uint8_t *y, int bits) {
    const int top = (1 << bits) - 1;
    float min, max;
    min_max(x, &min, &max);
    const float d = (max - min) / (float)top, id = d ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    put16(y, d);
    put16(y + 2, min);
    for (int j = 0; j < 16; j++) {
        const int a = (int8_t)((x[j] - min) * id + 0.5f), b = (int8_t)((x[j + 16] - min) * id + 0.5f);
        put_pair(y + (bits == 5 ? 8 : 4), bits == 5 ? &qh : NULL, j, bits == 4 ? clamp_level(a, top) : a, bits == 4 ? clamp_level(b, top) : b);
    }
    if (bits == 5) memcpy(y + 4, &qh, 4);
}

/* The importance-weighted 32-value kinds (llama.cpp's quantize_row_q4_0_impl and kin): error weights
 * qw * sqrt(sigma^2 + x^2), sigma^2 the row's mean x^2; Q4_0 / Q5_0 by the symmetric search (levels around 8 or
 * 16), Q4_1 / Q5_1 by the asymmetric one with its minimum. */
static void q_weighted(const float *x, const float *qw, float sigma2, uint8_t *y, int bits, int with_min) {
    float w[32];
    for (int j = 0; j < 32; j++) w[j] = qw[j] * sqrtf(sigma2 + x[j] * x[j]);
    uint8_t L[32], Laux[32];
    const int top = (1 << bits) - 1;
    uint32_t qh = 0;
    if (with_min) {
        float min;
        put16(y, mopt_ggml_qkx2_search(32, top, x, w, L, &min, Laux, -0.9f, 0.05f, 36, 0));
        put16(y + 2, -min);
    } else {
        int8_t Ls[32];
        put16(y, mopt_ggml_qx_search(32, 1 << (bits - 1), x, Ls, 1, w));
        for (int j = 0; j < 32; j++) L[j] = (uint8_t)Ls[j];
    }
    uint8_t *nib = y + (with_min ? 4 : 2) + (bits == 5 ? 4 : 0);
    for (int j = 0; j < 16; j++) put_pair(nib, bits == 5 ? &qh : NULL, j, L[j], L[j + 16]);
    if (bits == 5) memcpy(y + (with_min ? 4 : 2), &qh, 4);
}

static void q8_0(const float *x, uint8_t *y) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127, id = d ? 1.0f / d : 0.0f;
    put16(y, d);
    for (int j = 0; j < 32; j++) y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
}

static void dq_32(int32_t type, const uint8_t *b, float *y) {
    const float d = mopt_f16_at(b);
    uint32_t qh;
    switch (type) {
    case MOPT_GGML_Q4_0:
        for (int j = 0; j < 16; j++) y[j] = d * ((b[2 + j] & 15) - 8), y[j + 16] = d * ((b[2 + j] >> 4) - 8);
        break;
    case MOPT_GGML_Q4_1: {
        const float m = mopt_f16_at(b + 2);
        for (int j = 0; j < 16; j++) y[j] = d * (b[4 + j] & 15) + m, y[j + 16] = d * (b[4 + j] >> 4) + m;
        break;
    }
    case MOPT_GGML_Q5_0:
        memcpy(&qh, b + 2, 4);
        for (int j = 0; j < 16; j++) {
            y[j] = d * ((int)((b[6 + j] & 15) | ((qh >> j) << 4 & 0x10)) - 16);
            y[j + 16] = d * ((int)((b[6 + j] >> 4) | ((qh >> (j + 12)) & 0x10)) - 16);
        }
        break;
    case MOPT_GGML_Q5_1: {
        const float m = mopt_f16_at(b + 2);
        memcpy(&qh, b + 4, 4);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((b[8 + j] & 15) | ((qh >> j) << 4 & 0x10)) + m;
            y[j + 16] = d * (float)((b[8 + j] >> 4) | ((qh >> (j + 12)) & 0x10)) + m;
        }
        break;
    }
    case MOPT_GGML_Q8_0:
        for (int j = 0; j < 32; j++) y[j] = d * (int8_t)b[2 + j];
        break;
    case MOPT_GGML_IQ4_NL:
        for (int j = 0; j < 16; j++) y[j] = d * iq4nl_values[b[2 + j] & 15], y[j + 16] = d * iq4nl_values[b[2 + j] >> 4];
        break;
    }
}

/* --- k-quants: ggml's reference quantizers ------------------------------------ */

/* 2-bit levels L[256] into Q2_K / Q3_K's 64 bytes: per 128 values, value 32k + l in bits 2k..2k+1 of byte l */
static void put_2bit(const uint8_t *L, uint8_t *qs) {
    for (int j = 0; j < 256; j += 128)
        for (int l = 0; l < 32; l++) qs[j / 4 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 2 | L[j + l + 64] << 4 | L[j + l + 96] << 6);
}

/* Q2_K: 16 sub-blocks of 16, each a scale and min from ggml's asymmetric search on levels 0..3 (error weights |x|,
 * absolute error); the scales and mins as 4-bit multiples of the f16 d and dmin, then every value rounded again
 * against the stored pair. With importance weights qw: error weights qw * sqrt(sigma^2 + x^2), sigma^2 = sum x^2 /
 * 256, the search wider and finer under squared error, and d and dmin from ggml's weighted search over the 16
 * scales and mins (quantize_row_q2_K_impl). */
static void q2_k(const float *x, const float *qw, uint8_t *y) {
    uint8_t L[256], Laux[16], Ls[16], Lm[16];
    float scales[16], mins[16], w[16], sw[16] = {0}, max_scale = 0, max_min = 0, sigma2 = 0;
    if (qw) {
        for (int i = 0; i < 256; i++) sigma2 += x[i] * x[i];
        sigma2 = sigma2 / 256;
    }
    for (int j = 0; j < 16; j++) {
        const float *v = x + 16 * j;
        if (qw) {
            for (int i = 0; i < 16; i++) w[i] = qw[16 * j + i] * sqrtf(sigma2 + v[i] * v[i]);
            for (int i = 0; i < 16; i++) sw[j] += w[i];
            scales[j] = mopt_ggml_qkx2_search(16, 3, v, w, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
        } else {
            for (int i = 0; i < 16; i++) w[i] = fabsf(v[i]);
            scales[j] = mopt_ggml_qkx2_search(16, 3, v, w, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 1);
        }
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    uint8_t *sc = y;
    memset(sc, 0, 16);
    if (qw) {
        const float dm = mopt_ggml_qp_search(16, 15, scales, Ls, sw), mm = mopt_ggml_qp_search(16, 15, mins, Lm, sw);
        for (int j = 0; j < 16; j++) sc[j] = (uint8_t)(Ls[j] | Lm[j] << 4);
        put16(y + 80, dm);
        put16(y + 82, mm);
    } else {
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int j = 0; j < 16; j++) sc[j] = (uint8_t)mopt_ggml_nearest(iscale * scales[j]);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int j = 0; j < 16; j++) sc[j] |= (uint8_t)(mopt_ggml_nearest(iscale * mins[j]) << 4);
        }
        put16(y + 80, max_scale > 0 ? max_scale / 15.f : 0.f);
        put16(y + 82, max_min > 0 ? max_min / 15.f : 0.f);
    }
    const float d0 = mopt_f16_at(y + 80), m0 = mopt_f16_at(y + 82);
    for (int j = 0; j < 16; j++) {
        const float d = d0 * (sc[j] & 0xF);
        if (!d) continue;
        const float dm = m0 * (sc[j] >> 4);
        for (int i = 0; i < 16; i++) L[16 * j + i] = (uint8_t)mopt_ggml_clamp(mopt_ggml_nearest((x[16 * j + i] + dm) / d), 0, 3);
    }
    put_2bit(L, y + 16);
}

/* Q3_K: 16 sub-blocks of 16, each scale from ggml's symmetric search on levels -4..3 (make_q3_quants; with
 * importance weights make_qx_quants under qw * sqrt(sigma^2 + x^2), sigma^2 = 2 sum x^2 / 256); the scales as
 * signed 6-bit multiples of the f16 d (with weights: d from ggml's symmetric search over them); every value
 * rounded again against the stored scale; the levels' high bits go to hmask */
static void q3_k(const float *x, const float *qw, uint8_t *y) {
    int8_t L[256], Ls[16];
    float scales[16], w[16], sw[16], d_block = 0, sigma2 = 0;
    uint8_t *sc = y + 96;
    memset(sc, 0, 12);
    if (qw) {
        for (int i = 0; i < 256; i++) sigma2 += x[i] * x[i];
        sigma2 = 2 * sigma2 / 256;
        for (int j = 0; j < 16; j++) {
            float sumw = 0;
            for (int i = 0; i < 16; i++) w[i] = qw[16 * j + i] * sqrtf(sigma2 + x[16 * j + i] * x[16 * j + i]);
            for (int i = 0; i < 16; i++) sumw += w[i];
            sw[j] = sumw;
            scales[j] = mopt_ggml_qx_search(16, 4, x + 16 * j, L + 16 * j, 1, w);
        }
        d_block = mopt_ggml_qx_search(16, 32, scales, Ls, 1, sw); /* Ls: levels + 32 */
    } else {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = mopt_ggml_q3_search(16, 4, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > amax) amax = fabsf(scales[j]), max_scale = scales[j];
        }
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) Ls[j] = (int8_t)(mopt_ggml_clamp((int8_t)mopt_ggml_nearest(iscale * scales[j]), -32, 31) + 32);
            d_block = 1 / iscale;
        }
    }
    if (qw || d_block)
        for (int j = 0; j < 16; j++) {
            const int l = Ls[j];
            sc[j % 8] |= (uint8_t)((l & 0xF) << (j < 8 ? 0 : 4));
            sc[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
        }
    put16(y + 108, d_block);
    const float d0 = mopt_f16_at(y + 108);
    for (int j = 0; j < 16; j++) {
        const int s = mopt_q3k_scale(sc, j) - 32;
        const float d = d0 * (float)(int8_t)s;
        if (!d) continue;
        for (int i = 0; i < 16; i++) L[16 * j + i] = (int8_t)(mopt_ggml_clamp(mopt_ggml_nearest(x[16 * j + i] / d), -4, 3) + 4);
    }
    uint8_t *hmask = y, Lu[256];
    memset(hmask, 0, 32);
    for (int v = 0; v < 256; v++) {
        int l = L[v];
        if (l > 3) hmask[v % 32] |= (uint8_t)(1u << (v / 32)), l -= 4;
        Lu[v] = (uint8_t)l;
    }
    put_2bit(Lu, y + 32);
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): each 32 values' scale and min from ggml's search, weighted by the
 * sub-block's rms + |x|; the eight scales and mins as 6-bit multiples of the f16 d and dmin; then every value
 * rounded again against the stored scales. L keeps the search's levels where a sub-block's scale stored as 0.
 * With importance weights qw (the super-block's 256), each sub-block's error weights are qw * sqrt(sigma^2 +
 * x^2), sigma^2 = 2 sum x^2 / 256, its search wider and finer, and d and dmin come from ggml's weighted search
 * over the eight scales and mins (weights: each sub-block's summed error weight). */
static void k_scales_mins(const float *x, const float *qw, uint8_t *y, int nmax, uint8_t *L) {
    float scales[8], mins[8], w[32], sw[8], max_scale = 0, max_min = 0, sigma2 = 0;
    uint8_t Laux[32], Ls[8], Lm[8];
    if (qw) {
        for (int i = 0; i < 256; i++) sigma2 += x[i] * x[i];
        sigma2 = 2 * sigma2 / 256;
    }
    for (int j = 0; j < 8; j++) {
        const float *v = x + 32 * j;
        if (qw) {
            for (int i = 0; i < 32; i++) w[i] = qw[32 * j + i] * sqrtf(sigma2 + v[i] * v[i]);
            sw[j] = 0;
            for (int i = 0; i < 32; i++) sw[j] += w[i];
            scales[j] = mopt_ggml_qkx2_search(32, nmax, v, w, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36, 0);
        } else {
            float sum_x2 = 0;
            for (int i = 0; i < 32; i++) sum_x2 += v[i] * v[i];
            const float av_x = sqrtf(sum_x2 / 32);
            for (int i = 0; i < 32; i++) w[i] = av_x + fabsf(v[i]);
            scales[j] = nmax == 15 ? mopt_ggml_qkx2_search(32, 15, v, w, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, 0)
                                   : mopt_ggml_qkx2_search(32, 31, v, w, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, 0);
        }
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    float d_block = max_scale / 63.f, m_block = max_min / 63.f;
    if (qw) {
        d_block = mopt_ggml_qp_search(8, 63, scales, Ls, sw);
        m_block = mopt_ggml_qp_search(8, 63, mins, Lm, sw);
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f, inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    uint8_t *sc = y + 4;
    memset(sc, 0, 12);
    for (int j = 0; j < 8; j++) {
        int ls = qw ? Ls[j] : (uint8_t)mopt_ggml_nearest(inv_scale * scales[j]), lm = qw ? Lm[j] : (uint8_t)mopt_ggml_nearest(inv_min * mins[j]);
        ls = ls > 63 ? 63 : ls, lm = lm > 63 ? 63 : lm;
        if (j < 4) {
            sc[j] = (uint8_t)ls;
            sc[j + 4] = (uint8_t)lm;
        } else {
            sc[j + 4] = (uint8_t)((ls & 0xF) | ((lm & 0xF) << 4));
            sc[j - 4] |= (uint8_t)((ls >> 4) << 6);
            sc[j] |= (uint8_t)((lm >> 4) << 6);
        }
    }
    put16(y, d_block);
    put16(y + 2, m_block);
    const float d = mopt_f16_at(y), dmin = mopt_f16_at(y + 2);
    uint8_t s[8], m[8];
    mopt_kquant_scales_mins(sc, s, m);
    for (int j = 0; j < 8; j++) {
        const float dd = d * s[j];
        if (!dd) continue;
        const float dm = dmin * m[j];
        for (int i = 0; i < 32; i++) {
            const int l = mopt_ggml_nearest((x[32 * j + i] + dm) / dd);
            L[32 * j + i] = (uint8_t)mopt_ggml_clamp(l, 0, nmax);
        }
    }
}

static void q4_k(const float *x, const float *qw, uint8_t *y) {
    uint8_t L[256];
    k_scales_mins(x, qw, y, 15, L);
    uint8_t *q = y + 16;
    for (int j = 0; j < 256; j += 64, q += 32)
        for (int l = 0; l < 32; l++) q[l] = (uint8_t)(L[j + l] | (L[j + l + 32] << 4));
}

static void q5_k(const float *x, const float *qw, uint8_t *y) {
    uint8_t L[256];
    k_scales_mins(x, qw, y, 31, L);
    uint8_t *qh = y + 16, *ql = y + 48, m1 = 1, m2 = 2;
    memset(qh, 0, 32);
    for (int n = 0; n < 256; n += 64, m1 <<= 2, m2 <<= 2, ql += 32)
        for (int j = 0; j < 32; j++) {
            int l1 = L[n + j], l2 = L[n + j + 32];
            if (l1 > 15) l1 -= 16, qh[j] |= m1;
            if (l2 > 15) l2 -= 16, qh[j] |= m2;
            ql[j] = (uint8_t)(l1 | (l2 << 4));
        }
}

/* Q6_K: 16 sub-blocks of 16, each scale from ggml's symmetric search (error weights x^2), stored as int8
 * multiples of the f16 d; every value rounded again against the stored scale (signed 6-bit levels + 32) */
static void q6_k(const float *x, const float *qw, uint8_t *y) {
    float scales[16], max_scale = 0, max_abs_scale = 0;
    int8_t L[256];
    for (int ib = 0; ib < 16; ib++) {
        scales[ib] = mopt_ggml_qx_search(16, 32, x + 16 * ib, L + 16 * ib, 1, qw ? qw + 16 * ib : NULL); /* qw alone, as ggml */
        if (fabsf(scales[ib]) > max_abs_scale) max_abs_scale = fabsf(scales[ib]), max_scale = scales[ib];
    }
    memset(y, 0, 210);
    if (max_abs_scale < MOPT_GGML_ALL_ZERO) return; /* ggml's all-zero block: d = 0 */
    uint8_t *ql = y, *qh = y + 128;
    int8_t *sc = (int8_t *)(y + 192);
    const float iscale = -128.f / max_scale;
    put16(y + 208, 1 / iscale);
    for (int ib = 0; ib < 16; ib++) {
        const int v = mopt_ggml_nearest(iscale * scales[ib]);
        sc[ib] = (int8_t)(v > 127 ? 127 : v);
    }
    const float d0 = mopt_f16_at(y + 208);
    for (int j = 0; j < 16; j++) {
        const float d = d0 * sc[j];
        if (!d) continue;
        for (int i = 0; i < 16; i++) {
            const int l = mopt_ggml_nearest(x[16 * j + i] / d);
            L[16 * j + i] = (int8_t)(mopt_ggml_clamp(l, -32, 31) + 32);
        }
    }
    for (int j = 0; j < 256; j += 128, ql += 64, qh += 32)
        for (int l = 0; l < 32; l++) {
            ql[l] = (uint8_t)((L[j + l] & 0xF) | ((L[j + l + 64] & 0xF) << 4));
            ql[l + 32] = (uint8_t)((L[j + l + 32] & 0xF) | ((L[j + l + 96] & 0xF) << 4));
            qh[l] = (uint8_t)((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
        }
}

/* --- one value of a block, against the block's stored scales (GPTQ) ------------------------------------ */

float mopt_ggml_block_requantize(int32_t type, uint8_t *b, int32_t v, float w) {
    switch (type) {
    case MOPT_GGML_Q4_K:
    case MOPT_GGML_Q5_K: { /* d sc_j l - dmin m_j, l in [0, 15] or [0, 31] */
        const int nmax = type == MOPT_GGML_Q4_K ? 15 : 31, j = v / 32, n = v / 64, hi = (v % 64) >= 32, k = v % 32;
        uint8_t sc[8], m[8];
        mopt_kquant_scales_mins(b + 4, sc, m);
        const float dd = mopt_f16_at(b) * sc[j], dm = mopt_f16_at(b + 2) * m[j];
        const int l = dd ? mopt_ggml_clamp(mopt_ggml_nearest((w + dm) / dd), 0, nmax) : 0;
        uint8_t *q = b + (type == MOPT_GGML_Q4_K ? 16 : 48) + n * 32 + k;
        *q = (uint8_t)(hi ? (*q & 0x0f) | (l & 15) << 4 : (*q & 0xf0) | (l & 15));
        if (type == MOPT_GGML_Q5_K) {
            const uint8_t bit = (uint8_t)(1u << (2 * n + hi));
            b[16 + k] = (uint8_t)((b[16 + k] & ~bit) | (l > 15 ? bit : 0));
        }
        return dd * l - dm;
    }
    case MOPT_GGML_Q2_K:
    case MOPT_GGML_Q3_K: { /* Q2_K: d sc_j l - dmin m_j, l in [0, 3]; Q3_K: d (sc_j - 32) (l - 4), l in [0, 7] */
        const int j = v / 16, k = (v % 128) / 32;
        uint8_t *q = b + (type == MOPT_GGML_Q2_K ? 16 : 32) + 32 * (v / 128) + v % 32;
        float dd, dm = 0;
        int l;
        if (type == MOPT_GGML_Q2_K) {
            dd = mopt_f16_at(b + 80) * (b[j] & 0xF), dm = mopt_f16_at(b + 82) * (b[j] >> 4);
            l = dd ? mopt_ggml_clamp(mopt_ggml_nearest((w + dm) / dd), 0, 3) : 0;
        } else {
            const uint8_t *sc = b + 96;
            const int s = mopt_q3k_scale(sc, j) - 32;
            dd = mopt_f16_at(b + 108) * (float)s;
            l = dd ? mopt_ggml_clamp(mopt_ggml_nearest(w / dd), -4, 3) + 4 : 4;
            const uint8_t bit = (uint8_t)(1u << (v / 32));
            b[v % 32] = (uint8_t)((b[v % 32] & ~bit) | (l > 3 ? bit : 0));
        }
        *q = (uint8_t)((*q & ~(3u << (2 * k))) | (unsigned)(l & 3) << (2 * k));
        return type == MOPT_GGML_Q2_K ? dd * l - dm : dd * (l - 4);
    }
    case MOPT_GGML_Q6_K: { /* d sc_j (l - 32), l in [0, 63] */
        const int half = v / 128, r = v % 128, quarter = r / 32, k = r % 32;
        const float d = mopt_f16_at(b + 208) * (int8_t)b[192 + v / 16];
        const int l = d ? mopt_ggml_clamp(mopt_ggml_nearest(w / d), -32, 31) + 32 : 32;
        uint8_t *ql = b + half * 64 + k + (quarter & 1 ? 32 : 0), *qh = b + 128 + half * 32 + k;
        *ql = (uint8_t)(quarter >= 2 ? (*ql & 0x0f) | (l & 15) << 4 : (*ql & 0xf0) | (l & 15));
        *qh = (uint8_t)((*qh & ~(3u << (2 * quarter))) | (unsigned)(l >> 4) << (2 * quarter));
        return d * (l - 32);
    }
    case MOPT_GGML_Q4_0: { /* d (l - 8) */
        const float d = mopt_f16_at(b);
        const int l = d ? mopt_ggml_clamp(mopt_ggml_nearest(w / d) + 8, 0, 15) : 8;
        uint8_t *q = b + 2 + v % 16;
        *q = (uint8_t)(v >= 16 ? (*q & 0x0f) | l << 4 : (*q & 0xf0) | l);
        return d * (l - 8);
    }
    case MOPT_GGML_Q8_0: {
        const float d = mopt_f16_at(b);
        const int l = d ? mopt_ggml_clamp(mopt_ggml_nearest(w / d), -127, 127) : 0;
        b[2 + v] = (uint8_t)(int8_t)l;
        return d * l;
    }
    default: return w;
    }
}

/* --- one sub-block's scale (and min) again, under the block's d and dmin (GPTQ) ------------------------- */

/* the stored scale and min of sub-block j (Q2_K, Q4_K, Q5_K: unsigned with a min; Q3_K, Q6_K: signed, no min) */
static void sub_get(int32_t type, const uint8_t *b, int j, int *s, int *m) {
    uint8_t sc[8], mn[8];
    *m = 0;
    switch (type) {
    case MOPT_GGML_Q2_K: *s = b[j] & 0xF, *m = b[j] >> 4; break;
    case MOPT_GGML_Q3_K: *s = mopt_q3k_scale(b + 96, j) - 32; break;
    case MOPT_GGML_Q6_K: *s = (int8_t)b[192 + j]; break;
    default: mopt_kquant_scales_mins(b + 4, sc, mn), *s = sc[j], *m = mn[j]; break;
    }
}

static void sub_set(int32_t type, uint8_t *b, int j, int s, int m) {
    uint8_t *q = b + 4;
    switch (type) {
    case MOPT_GGML_Q2_K: b[j] = (uint8_t)(s | m << 4); break;
    case MOPT_GGML_Q3_K: {
        uint8_t *sc = b + 96;
        s += 32;
        sc[j % 8] = (uint8_t)((sc[j % 8] & (j < 8 ? 0xF0 : 0x0F)) | (s & 15) << (j < 8 ? 0 : 4));
        sc[8 + j % 4] = (uint8_t)((sc[8 + j % 4] & ~(3u << (2 * (j / 4)))) | (unsigned)(s >> 4) << (2 * (j / 4)));
        break;
    }
    case MOPT_GGML_Q6_K: b[192 + j] = (uint8_t)(int8_t)s; break;
    default: /* the 6-bit pairs as mopt_kquant_scales_mins reads them */
        if (j < 4) {
            q[j] = (uint8_t)((q[j] & 0xC0) | s), q[j + 4] = (uint8_t)((q[j + 4] & 0xC0) | m);
        } else {
            q[j + 4] = (uint8_t)((s & 0xF) | (m & 0xF) << 4);
            q[j - 4] = (uint8_t)((q[j - 4] & 0x3F) | (s >> 4) << 6);
            q[j] = (uint8_t)((q[j] & 0x3F) | (m >> 4) << 6);
        }
        break;
    }
}

int mopt_ggml_type_sub_block(int32_t type) {
    return type == MOPT_GGML_Q2_K || type == MOPT_GGML_Q3_K || type == MOPT_GGML_Q6_K ? 16 : type == MOPT_GGML_Q4_K || type == MOPT_GGML_Q5_K ? 32 : 0;
}

/* where each type keeps its f16 d and dmin (-1: none) */
static void scale_offsets(int32_t type, int *d, int *dmin) {
    *dmin = -1;
    switch (type) {
    case MOPT_GGML_Q4_0:
    case MOPT_GGML_Q8_0: *d = 0; break;
    case MOPT_GGML_Q2_K: *d = 80, *dmin = 82; break;
    case MOPT_GGML_Q3_K: *d = 108; break;
    case MOPT_GGML_Q4_K:
    case MOPT_GGML_Q5_K: *d = 0, *dmin = 2; break;
    case MOPT_GGML_Q6_K: *d = 208; break;
    default: *d = -1; break;
    }
}

/* the range of a stored sub-block scale (a min, where the type has one, runs 0 .. smax) */
static int sub_range(int32_t type, int *smin, int *smax) {
    *smin = type == MOPT_GGML_Q3_K ? -32 : type == MOPT_GGML_Q6_K ? -128 : 0;
    *smax = type == MOPT_GGML_Q2_K ? 15 : type == MOPT_GGML_Q3_K ? 31 : type == MOPT_GGML_Q6_K ? 127 : 63;
    return type == MOPT_GGML_Q2_K || type == MOPT_GGML_Q4_K || type == MOPT_GGML_Q5_K;
}

void mopt_ggml_block_sub_get(int32_t type, const uint8_t *b, int32_t j, int sm[2]) {
    const int n = mopt_ggml_type_sub_block(type);
    sm[0] = sm[1] = 0;
    if (n && j >= 0 && j < 256 / n) sub_get(type, b, j, &sm[0], &sm[1]);
}

int mopt_ggml_block_sub_set(int32_t type, uint8_t *b, int32_t j, const int sm[2]) {
    const int n = mopt_ggml_type_sub_block(type);
    int smin, smax;
    const int with_min = sub_range(type, &smin, &smax);
    if (!n || j < 0 || j >= 256 / n || sm[0] < smin || sm[0] > smax || sm[1] < 0 || sm[1] > (with_min ? smax : 0)) return 0;
    sub_set(type, b, j, sm[0], sm[1]);
    return 1;
}

int mopt_ggml_block_refit_sub(int32_t type, uint8_t *b, int32_t j, const float *x, const float *w) {
    const int n = mopt_ggml_type_sub_block(type);
    if (!n || j < 0 || j >= 256 / n) return 0;
    int s0, m0;
    sub_get(type, b, j, &s0, &m0);
    /* ranges of the stored scale and min, the levels, and d, dmin as each type keeps them */
    int smin, smax;
    const int with_min = sub_range(type, &smin, &smax);
    const int lmin = type == MOPT_GGML_Q3_K ? -4 : type == MOPT_GGML_Q6_K ? -32 : 0,
              lmax = type == MOPT_GGML_Q2_K || type == MOPT_GGML_Q3_K ? 3 : type == MOPT_GGML_Q4_K ? 15 : 31;
    int od, om;
    scale_offsets(type, &od, &om);
    const float d = mopt_f16_at(b + od), dmin = om >= 0 ? mopt_f16_at(b + om) : 0;
    int best_s = s0, best_m = m0;
    double best = -1;
    for (int s = s0 - 6; s <= s0 + 6; s++)
        for (int m = with_min ? m0 - 6 : 0; m <= (with_min ? m0 + 6 : 0); m++) {
            if (s < smin || s > smax || m < 0 || m > smax) continue;
            const float dd = d * (float)s, dm = dmin * (float)m;
            double e = 0;
            for (int i = 0; i < n; i++) {
                const float v = dd ? dd * (float)mopt_ggml_clamp(mopt_ggml_nearest((x[i] + dm) / dd), lmin, lmax) - dm : -dm;
                e += (double)w[i] * (x[i] - v) * (x[i] - v);
            }
            if (best < 0 || e < best) best = e, best_s = s, best_m = m;
        }
    if (best_s == s0 && best_m == m0) return 0;
    sub_set(type, b, j, best_s, best_m);
    return 1;
}

/* --- a block's d and dmin as free parameters (GPTQ's scale refit) --------------------------------------- */

int mopt_ggml_block_basis(int32_t type, const uint8_t *b, float *per_d, float *per_dmin, float scales[2]) {
    int od, om;
    scale_offsets(type, &od, &om);
    const int64_t n = mopt_ggml_type_block(type);
    if (od < 0 || !n) return 0;
    scales[0] = mopt_f16_at(b + od), scales[1] = om >= 0 ? mopt_f16_at(b + om) : 0;
    /* every type decodes linearly in d and dmin: decode with (1, 0), then with (0, 1) */
    uint8_t t[256];
    memcpy(t, b, (size_t)mopt_ggml_block_bytes(type));
    put16(t + od, 1.0f);
    if (om >= 0) put16(t + om, 0.0f);
    mopt_ggml_dequantize_row(type, t, n, per_d, NULL);
    if (om < 0) return 1;
    put16(t + od, 0.0f);
    put16(t + om, 1.0f);
    mopt_ggml_dequantize_row(type, t, n, per_dmin, NULL);
    return 2;
}

void mopt_ggml_block_set_scales(int32_t type, uint8_t *b, float d, float dmin) {
    int od, om;
    scale_offsets(type, &od, &om);
    if (od >= 0) put16(b + od, d);
    if (om >= 0) put16(b + om, dmin);
}

/* --- rows ------------------------------------------------------------------- */

mopt_status mopt_ggml_quantize_row(int32_t type, const float *x, int64_t n, void *dst, mopt_error *err) {
    return mopt_ggml_quantize_row_weighted(type, x, n, NULL, dst, err);
}

mopt_status mopt_ggml_quantize_row_weighted(int32_t type, const float *x, int64_t n, const float *qw, void *dst, mopt_error *err) {
    const int64_t bs = mopt_ggml_block_size(type), bb = mopt_ggml_block_bytes(type);
    if (mopt_ggml_row_bytes(type, n) < 0)
        return MOPT_FAIL(err, MOPT_E_INVALID, "ggml type %s: a row of %lld values is not a whole number of %lld-value blocks",
                         mopt_ggml_type_name(type) ? mopt_ggml_type_name(type) : "?", (long long)n, (long long)bs);
    float sigma2 = 0; /* the 32-value kinds weigh by the whole row's mean x^2 */
    if (qw && bs == 32) {
        for (int64_t j = 0; j < n; j++) sigma2 += x[j] * x[j];
        sigma2 = sigma2 / (float)n;
    }
    uint8_t *y = dst;
    for (int64_t b = 0; b < n / bs; b++, y += bb) {
        const float *v = x + b * bs, *w = qw ? qw + b * bs : NULL;
        if (w && (type == MOPT_GGML_Q4_0 || type == MOPT_GGML_Q4_1 || type == MOPT_GGML_Q5_0 || type == MOPT_GGML_Q5_1)) {
            q_weighted(v, w, sigma2, y, type == MOPT_GGML_Q4_0 || type == MOPT_GGML_Q4_1 ? 4 : 5, type == MOPT_GGML_Q4_1 || type == MOPT_GGML_Q5_1);
            continue;
        }
        switch (type) {
        case MOPT_GGML_F32: memcpy(y, v, 4); break;
        case MOPT_GGML_F16: put16(y, *v); break;
        case MOPT_GGML_BF16: {
            uint16_t h = mopt_f32_to_bf16(*v);
            memcpy(y, &h, 2);
            break;
        }
        case MOPT_GGML_Q4_0: q_sym(v, y, 4); break;
        case MOPT_GGML_Q4_1: q_min(v, y, 4); break;
        case MOPT_GGML_Q5_0: q_sym(v, y, 5); break;
        case MOPT_GGML_Q5_1: q_min(v, y, 5); break;
        case MOPT_GGML_Q8_0: q8_0(v, y); break;
        case MOPT_GGML_Q2_K: q2_k(v, w, y); break;
        case MOPT_GGML_Q3_K: q3_k(v, w, y); break;
        case MOPT_GGML_Q4_K: q4_k(v, w, y); break;
        case MOPT_GGML_Q5_K: q5_k(v, w, y); break;
        case MOPT_GGML_Q6_K: q6_k(v, w, y); break;
        case MOPT_GGML_IQ4_NL: iq4_nl(v, w, y); break;
        }
    }
    return MOPT_OK;
}

mopt_status mopt_ggml_dequantize_row(int32_t type, const void *src, int64_t n, float *y, mopt_error *err) {
    const int64_t bs = mopt_ggml_block_size(type), bb = mopt_ggml_block_bytes(type);
    if (mopt_ggml_row_bytes(type, n) < 0)
        return MOPT_FAIL(err, MOPT_E_INVALID, "ggml type %d: a row of %lld values is not a whole number of blocks", type,
                         (long long)n);
    const uint8_t *b = src;
    for (int64_t k = 0; k < n / bs; k++, b += bb, y += bs) {
        switch (type) {
        case MOPT_GGML_F32: memcpy(y, b, 4); break;
        case MOPT_GGML_F16: *y = mopt_f16_at(b); break;
        case MOPT_GGML_BF16: {
            uint16_t h;
            memcpy(&h, b, 2);
            *y = mopt_bf16_to_f32(h);
            break;
        }
        case MOPT_GGML_Q2_K:
        case MOPT_GGML_Q3_K:
        case MOPT_GGML_Q4_K:
        case MOPT_GGML_Q5_K:
        case MOPT_GGML_Q6_K: mopt_kquant_block_f32(mopt_ggml_kquant_bits(type), b, y); break;
        default: dq_32(type, b, y); break;
        }
    }
    return MOPT_OK;
}

void mopt_ggml_block_to_levels(int32_t type, const uint8_t *blk, uint8_t q[32], uint16_t *d) {
    memcpy(d, blk, 2);
    for (int j = 0; j < (type == MOPT_GGML_Q4_0 ? 16 : 32); j++) {
        if (type == MOPT_GGML_Q4_0) q[j] = blk[2 + j] & 15, q[j + 16] = blk[2 + j] >> 4;
        else q[j] = (uint8_t)((int8_t)blk[2 + j] + 128);
    }
}

void mopt_ggml_block_from_levels(int32_t type, const uint8_t q[32], uint16_t d, uint8_t *blk) {
    memcpy(blk, &d, 2);
    for (int j = 0; j < (type == MOPT_GGML_Q4_0 ? 16 : 32); j++) {
        if (type == MOPT_GGML_Q4_0) blk[2 + j] = (uint8_t)(q[j] | q[j + 16] << 4);
        else blk[2 + j] = (uint8_t)(int8_t)(q[j] - 128);
    }
}

int64_t mopt_ggml_type_block(int32_t type) { return mopt_ggml_block_size(type) > 1 ? mopt_ggml_block_size(type) : 0; }
int64_t mopt_ggml_type_block_bytes(int32_t type) { return mopt_ggml_block_bytes(type); }

mopt_status mopt_ggml_quantize_block(int32_t type, const float *x, const float *qw, uint8_t *block, mopt_error *err) {
    const int64_t n = mopt_ggml_type_block(type);
    if (!n) return MOPT_FAIL(err, MOPT_E_INVALID, "ggml type %d is not a block type", type);
    return mopt_ggml_quantize_row_weighted(type, x, n, qw, block, err);
}

mopt_status mopt_ggml_quantize_block_direct(int32_t type, const float *x, const float *w, uint8_t *block, mopt_error *err) {
    const int64_t n = mopt_ggml_type_block(type);
    if (!n) return MOPT_FAIL(err, MOPT_E_INVALID, "ggml type %d is not a block type", type);
    /* the weighted quantizers take qw * sqrt(sigma^2 + x^2) as error weights (Q6_K: qw; Q8_0: none); sigma^2 as each
     * takes it over the values it sees (a block here): Q2_K sum x^2 / 256, Q3_K ... Q5_K twice that, the 32-value
     * kinds the block's mean x^2. Dividing that factor out leaves w. */
    float qw[256], sum = 0;
    for (int64_t i = 0; i < n; i++) sum += x[i] * x[i];
    const float sigma2 = type == MOPT_GGML_Q3_K || type == MOPT_GGML_Q4_K || type == MOPT_GGML_Q5_K ? 2 * sum / 256 : sum / (float)n;
    for (int64_t i = 0; i < n; i++) {
        const float f = type == MOPT_GGML_Q6_K || type == MOPT_GGML_Q8_0 ? 1.0f : sqrtf(sigma2 + x[i] * x[i]);
        qw[i] = f > 0 ? w[i] / f : w[i];
    }
    return mopt_ggml_quantize_row_weighted(type, x, n, qw, block, err);
}

mopt_tensor *mopt_ggml_blocks_tensor(const char *name, int32_t type, int64_t rows, int64_t cols, const uint8_t *blocks, mopt_error *err) {
    const int64_t rb = mopt_ggml_row_bytes(type, cols);
    if (rows <= 0 || rb <= 0 || !(type == MOPT_GGML_Q4_0 || type == MOPT_GGML_Q8_0 || mopt_ggml_kquant_bits(type))) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: %lld x %lld values as ggml type %d: not whole Q4_0, Q8_0 or k-quant blocks", name, (long long)rows,
                  (long long)cols, type);
        return NULL;
    }
    if (mopt_ggml_kquant_bits(type)) return mopt_kquant_pack(name, rows, cols, mopt_ggml_kquant_bits(type), blocks, err);
    /* Q4_0 / Q8_0: QINT symmetric groups of 32 hold their levels and f16 scales exactly */
    const int q4 = type == MOPT_GGML_Q4_0;
    const int64_t nblk = cols / 32;
    uint8_t *q = malloc((size_t)(rows * cols));
    float *s = malloc((size_t)(rows * nblk) * sizeof *s);
    mopt_tensor *o = NULL;
    if (!q || !s) {
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    } else {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t b = 0; b < nblk; b++) {
                uint16_t h;
                mopt_ggml_block_to_levels(type, blocks + r * rb + b * mopt_ggml_block_bytes(type), q + r * cols + b * 32, &h);
                s[r * nblk + b] = mopt_f16_to_f32(h);
            }
        o = mopt_qint_pack(name, rows, cols, q4 ? 4 : 8, 32, q, s, NULL, NULL, err);
    }
    free(q);
    free(s);
    return o;
}
