/* Scalar kernels: the portable fallback and the oracle for the SIMD sets. */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "mopt/quant.h"
#include "mopt/tensor.h"
#include "tensor_impl.h"

static float dot_f32(const float *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += mopt_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += mopt_bf16_to_f32(w[i]) * x[i];
    return s;
}

#define REF_DOTS(NAME, DOT, T)                                                                                  \
    static void NAME(const T *w, const float *x, int64_t xs, int32_t nt, int64_t n, float *out) {              \
        for (int32_t t = 0; t < nt; t++) out[t] = DOT(w, x + (size_t)t * (size_t)xs, n);                       \
    }
REF_DOTS(dots_f32, dot_f32, float)
REF_DOTS(dots_f16, dot_f16, uint16_t)
REF_DOTS(dots_bf16, dot_bf16, uint16_t)
#define REF_DOTS_ROWS(NAME, DOT, T)                                                                             \
    static void NAME(const T *w, int64_t nrows, const float *x, int64_t xs, int32_t nt, int64_t n, float *y,    \
                     int64_t ys) {                                                                              \
        for (int64_t r = 0; r < nrows; r++)                                                                     \
            for (int32_t t = 0; t < nt; t++)                                                                    \
                y[(size_t)t * (size_t)ys + r] = DOT(w + (size_t)r * (size_t)n, x + (size_t)t * (size_t)xs, n);  \
    }
REF_DOTS_ROWS(dots_rows_f32, dot_f32, float)
REF_DOTS_ROWS(dots_rows_f16, dot_f16, uint16_t)
REF_DOTS_ROWS(dots_rows_bf16, dot_bf16, uint16_t)

static void cvt_f16(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = mopt_f16_to_f32(src[i]);
}

static void cvt_bf16(const uint16_t *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = mopt_bf16_to_f32(src[i]);
}

void mopt_qblock_levels(const uint8_t *b, int32_t bits, float *out) {
    switch (bits) {
    case 8:
        for (int j = 0; j < 32; j++) out[j] = b[j];
        break;
    case 4:
        for (int j = 0; j < 16; j++) {
            out[j] = (float)(b[j] & 15);
            out[j + 16] = (float)(b[j] >> 4);
        }
        break;
    case 2:
    case 3: {
        uint32_t mask = bits == 3 ? (uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24 : 0;
        for (int j = 0; j < 32; j++) out[j] = (float)(((b[j & 7] >> (2 * (j >> 3))) & 3) | ((mask >> j) & 1) << 2);
        break;
    }
    default:
        for (int j = 0; j < 32; j++) out[j] = 0;
    }
}

float mopt_qblock_dot(const uint8_t *block, int32_t bits, const float *x, int32_t n) {
    float v[32], s = 0;
    mopt_qblock_levels(block, bits, v);
    for (int32_t j = 0; j < n; j++) s += v[j] * x[j];
    return s;
}

static void dequant_u8(const uint8_t *lv, int64_t n, float z, float s, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = ((float)lv[i] - z) * s;
}

static void dequant_e4m3(const uint8_t *q, int64_t n, float s, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = mopt_e4m3_to_f32(q[i]) * s;
}

static float dot_e4m3(const uint8_t *q, const float *x, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += mopt_e4m3_to_f32(q[i]) * x[i];
    return s;
}

static void quantize_i8_blocks(const float *x, int64_t n, int64_t bs, int8_t *q, float *d) {
    for (int64_t b = 0; b < n / bs; b++, x += bs, q += bs) {
        float mx = 0;
        for (int64_t i = 0; i < bs; i++) mx = fabsf(x[i]) > mx ? fabsf(x[i]) : mx; /* NaN passes by */
        const float s = d[b] = mx > 0 ? mx / 127.0f : 1.0f;
        for (int64_t i = 0; i < bs; i++) q[i] = (int8_t)mopt_i8_level(x[i], s);
    }
}

static void round_e4m3(const float *x, int64_t n, float s, float *out) {
    for (int64_t i = 0; i < n; i++) out[i] = mopt_e4m3_to_f32(mopt_f32_to_e4m3(x[i] / s)) * s;
}

static void silu_mul(const float *g, const float *u, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void att_scores(const float *q, int32_t g, const float *K, int64_t ld, int32_t n, int32_t hd, float scale, float *s) {
    for (int32_t r = 0; r < g; r++)
        for (int32_t p = 0; p < n; p++) {
            float d = 0;
            for (int32_t i = 0; i < hd; i++) d += q[(size_t)r * hd + i] * K[(size_t)p * ld + i];
            s[(size_t)r * n + p] = scale * d;
        }
}

static void att_values(const float *P, int32_t g, const float *V, int64_t ld, int32_t n, int32_t hd, float *out) {
    for (int32_t r = 0; r < g; r++)
        for (int32_t i = 0; i < hd; i++) {
            float a = 0;
            for (int32_t p = 0; p < n; p++) a += P[(size_t)r * n + p] * V[(size_t)p * ld + i];
            out[(size_t)r * hd + i] = a;
        }
}

static void att_scores_f16(const float *q, int32_t g, const uint16_t *K, int64_t ld, int32_t n, int32_t hd, float scale, float *s) {
    for (int32_t r = 0; r < g; r++)
        for (int32_t p = 0; p < n; p++) {
            float d = 0;
            for (int32_t i = 0; i < hd; i++) d += q[(size_t)r * hd + i] * mopt_f16_to_f32(K[(size_t)p * ld + i]);
            s[(size_t)r * n + p] = scale * d;
        }
}

static void att_values_f16(const float *P, int32_t g, const uint16_t *V, int64_t ld, int32_t n, int32_t hd, float *out) {
    for (int32_t r = 0; r < g; r++)
        for (int32_t i = 0; i < hd; i++) {
            float a = 0;
            for (int32_t p = 0; p < n; p++) a += P[(size_t)r * n + p] * mopt_f16_to_f32(V[(size_t)p * ld + i]);
            out[(size_t)r * hd + i] = a;
        }
}

static uint64_t sum_u64(const uint64_t *w, size_t n) {
    uint64_t a = 0, b = 0, c = 0, d = 0; /* four chains so the loads, not the adds, set the pace */
    size_t i = 0;
    for (; i + 4 <= n; i += 4) a += w[i], b += w[i + 1], c += w[i + 2], d += w[i + 3];
    for (; i < n; i++) a += w[i];
    return a + b + c + d;
}

static void softmax(float *x, int64_t n) {
    float mx = -INFINITY, sum = 0;
    for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int64_t i = 0; i < n; i++) sum += (x[i] = expf(x[i] - mx));
    const float inv = 1.0f / sum;
    for (int64_t i = 0; i < n; i++) x[i] *= inv;
}

static float dot_q4(const uint8_t *b, const float *x, int64_t nb) {
    float s = 0;
    for (int64_t k = 0; k < nb; k++) s += mopt_qblock_dot(b + 16 * k, 4, x + 32 * k, 32);
    return s;
}

static float dot_q4_lut(const uint8_t *b, const float *lut, const float *x, int64_t nb) {
    float s = 0;
    for (int64_t k = 0; k < nb; k++, b += 16, x += 32)
        for (int j = 0; j < 16; j++) s += lut[b[j] & 15] * x[j] + lut[b[j] >> 4] * x[j + 16];
    return s;
}

static float dot_q8(const uint8_t *b, const float *x, int64_t nb) {
    float s = 0;
    for (int64_t i = 0; i < nb * 32; i++) s += (float)b[i] * x[i];
    return s;
}

static int32_t dot_i8(const int8_t *a, const int8_t *b, int64_t n) {
    int32_t s = 0;
    for (int64_t i = 0; i < n; i++) s += (int32_t)a[i] * b[i];
    return s;
}

#define F16 mopt_f16_to_f32

/* y[r] for 4- or 8-bit rows against int8 x (kernels.h, gemv_q4_q8) */
static void gemv_qx_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                       const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y, int bits) {
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *row = w + (size_t)r * row_bytes;
        float acc = 0;
        for (int64_t g = 0; g < ng; g++) {
            float gacc = 0;
            for (int64_t b = g * bpg; b < (g + 1) * bpg; b++) {
                int32_t d = 0;
                if (bits == 8)
                    for (int i = 0; i < 32; i++) d += row[32 * b + i] * xq[32 * b + i];
                else
                    for (int i = 0; i < 16; i++) /* byte i: value i in the low nibble, value 16 + i in the high */
                        d += (row[16 * b + i] & 15) * xq[32 * b + i] + (row[16 * b + i] >> 4) * xq[32 * b + 16 + i];
                gacc += xd[b] * (float)d;
            }
            acc += F16(s[r * ng + g]) * (gacc - (z ? (float)z[r * ng + g] : zsym) * xsum[g]);
        }
        y[r] = acc;
    }
}

static void gemv_q4_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                       const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y) {
    gemv_qx_q8(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, y, 4);
}

static void gemv_q8_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const uint16_t *s, const uint8_t *z, float zsym,
                       const int8_t *xq, const float *xd, const float *xsum, int64_t ng, int64_t bpg, float *y) {
    gemv_qx_q8(w, row_bytes, nrows, s, z, zsym, xq, xd, xsum, ng, bpg, y, 8);
}

/* Q4_K / Q5_K: w = d sc q - dmin m per sub-block j of 32, so a super-block's dot is
 * xd (d sum_j sc_j (q . xq)_j - dmin sum_j m_j sum(xq)_j), the sums in integers; Q5_K's fifth bit of value l of
 * sub-block j is bit j of qh[l] */
static void gemv_q45k_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                         int64_t nsb, float *y, int five) {
    const size_t bb = five ? 176 : 144;
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        float acc = 0;
        for (int64_t k = 0; k < nsb; k++, b += bb) {
            uint8_t sc[8], m[8];
            mopt_kquant_scales_mins(b + 4, sc, m);
            int32_t dots = 0, mins = 0;
            for (int j = 0; j < 8; j++) {
                const uint8_t *q = b + (five ? 48 : 16) + 32 * (j / 2), *qh = b + 16;
                const int8_t *x = xq + 256 * k + 32 * j;
                int32_t dot = 0;
                for (int l = 0; l < 32; l++) dot += ((j & 1 ? q[l] >> 4 : q[l] & 15) | (five ? ((qh[l] >> j) & 1) << 4 : 0)) * x[l];
                dots += sc[j] * dot;
                mins += m[j] * (xs16[16 * k + 2 * j] + xs16[16 * k + 2 * j + 1]);
            }
            acc += xd[k] * (mopt_f16_at(b) * (float)dots - mopt_f16_at(b + 2) * (float)mins);
        }
        y[r] = acc;
    }
}

static void gemv_q4k_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y) {
    gemv_q45k_q8(w, row_bytes, nrows, xq, xd, xs16, nsb, y, 0);
}

static void gemv_q5k_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y) {
    gemv_q45k_q8(w, row_bytes, nrows, xq, xd, xs16, nsb, y, 1);
}

/* Q6_K: w = d sc (q - 32) per sub-block of 16 */
static void gemv_q6k_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y) {
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        float acc = 0;
        for (int64_t k = 0; k < nsb; k++, b += 210) {
            const int8_t *sc = (const int8_t *)(b + 192);
            int32_t isum = 0;
            for (int j = 0; j < 8; j++) { /* values 32j..32j+31: quarter j % 4 of half j / 4 */
                const int n = j / 4, kq = j % 4;
                const uint8_t *ql = b + 64 * n + 32 * (kq & 1), *qh = b + 128 + 32 * n;
                const int8_t *x = xq + 256 * k + 32 * j;
                for (int h = 0; h < 2; h++) {
                    int32_t dot = 0;
                    for (int l = 16 * h; l < 16 * h + 16; l++)
                        dot += (((ql[l] >> (kq < 2 ? 0 : 4)) & 15) | ((qh[l] >> (2 * kq)) & 3) << 4) * x[l];
                    isum += sc[2 * j + h] * (dot - 32 * xs16[16 * k + 2 * j + h]);
                }
            }
            acc += xd[k] * mopt_f16_at(b + 208) * (float)isum;
        }
        y[r] = acc;
    }
}

/* Q2_K: w = d sc q - dmin m per sub-block j of 16, q in 0..3; the 2-bit level of value 32 kq + l of each 128 (n) in
 * bits 2 kq of byte 32 n + l */
static void gemv_q2k_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y) {
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        float acc = 0;
        for (int64_t k = 0; k < nsb; k++, b += 84) {
            int32_t dots = 0, mins = 0;
            for (int v0 = 0; v0 < 256; v0 += 16) {
                const int j = v0 / 16, n = v0 / 128, kq = (v0 % 128) / 32;
                int32_t dot = 0;
                for (int l = v0 % 32; l < v0 % 32 + 16; l++) dot += ((b[16 + 32 * n + l] >> (2 * kq)) & 3) * xq[256 * k + 128 * n + 32 * kq + l];
                dots += (b[j] & 15) * dot;
                mins += (b[j] >> 4) * xs16[16 * k + j];
            }
            acc += xd[k] * (mopt_f16_at(b + 80) * (float)dots - mopt_f16_at(b + 82) * (float)mins);
        }
        y[r] = acc;
    }
}

/* Q3_K: w = d (sc - 32) (q - 4) per sub-block of 16, q = the 2-bit level as Q2_K's | the hmask bit (bit 4 n + kq of
 * byte l) << 2 */
static void gemv_q3k_q8(const uint8_t *w, size_t row_bytes, int64_t nrows, const int8_t *xq, const float *xd, const int16_t *xs16,
                        int64_t nsb, float *y) {
    for (int64_t r = 0; r < nrows; r++) {
        const uint8_t *b = w + (size_t)r * row_bytes;
        float acc = 0;
        for (int64_t k = 0; k < nsb; k++, b += 110) {
            const uint8_t *s = b + 96;
            int32_t isum = 0;
            for (int v0 = 0; v0 < 256; v0 += 16) {
                const int j = v0 / 16, n = v0 / 128, kq = (v0 % 128) / 32;
                const int sc = mopt_q3k_scale(s, j) - 32;
                int32_t dot = 0;
                for (int l = v0 % 32; l < v0 % 32 + 16; l++)
                    dot += (((b[32 + 32 * n + l] >> (2 * kq)) & 3) | ((b[l] >> (4 * n + kq)) & 1) << 2) * xq[256 * k + 128 * n + 32 * kq + l];
                isum += sc * (dot - 4 * xs16[16 * k + j]);
            }
            acc += xd[k] * mopt_f16_at(b + 108) * (float)isum;
        }
        y[r] = acc;
    }
}

static void dequant_kquant(const uint8_t *blocks, int32_t bits, int64_t nsb, float *dst) {
    for (int64_t k = 0; k < nsb; k++) mopt_kquant_block_f32(bits, blocks + k * mopt_kquant_block_bytes(bits), dst + 256 * k);
}


static int32_t tile_dot(const uint8_t *w, int sgn, const int8_t *xi, int64_t i0, int64_t i1, int32_t l) {
    int32_t d = 0;
    for (int64_t i = i0; i < i1; i++) d += (sgn ? (int8_t)w[i] : w[i]) * xi[(i / 4 * 8 + l) * 4 + i % 4];
    return d;
}

static void gemm_q4_q8_bs(const uint8_t *wl, int64_t in, int64_t nrows, const float *s, const float *zs, const int8_t *xi,
                          const int32_t *xzt, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                          int64_t y_stride, int32_t ntok, int bs) {
    for (int64_t r = 0; r < nrows; r++)
        for (int32_t l = 0; l < ntok; l++) {
            float acc = 0;
            for (int64_t g = 0; g < ng; g++) {
                float gacc = 0;
                for (int64_t b = g * bpg; b < (g + 1) * bpg; b++)
                    gacc += xdt[b * 8 + l] * (float)(xzt[b * 8 + l] + tile_dot(wl + r * in, 0, xi, bs * b, bs * b + bs, l));
                acc += s[r * ng + g] * gacc - (zs ? zs[r * ng + g] * xst[g * 8 + l] : 0.0f);
            }
            y[l * y_stride + r] = acc;
        }
}

static void gemm_q4_q8(const uint8_t *wl, int64_t in, int64_t nrows, const float *s, const float *zs, const int8_t *xi,
                       const int32_t *xzt, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                       int64_t y_stride, int32_t ntok) {
    gemm_q4_q8_bs(wl, in, nrows, s, zs, xi, xzt, xdt, xst, ng, bpg, y, y_stride, ntok, 32);
}

static void gemm_q4_q8_b16(const uint8_t *wl, int64_t in, int64_t nrows, const float *s, const float *zs, const int8_t *xi,
                           const int32_t *xzt, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                           int64_t y_stride, int32_t ntok) {
    gemm_q4_q8_bs(wl, in, nrows, s, zs, xi, xzt, xdt, xst, ng, bpg, y, y_stride, ntok, 16);
}

/* A k-quant super-block's 256 levels in value order. Q2_K / Q3_K: value 128 n + 32 kq + l is bits 2 kq..+1 of
 * qs[32 n + l], Q3_K's third bit bit 4 n + kq of hmask[l]; Q4_K / Q5_K: value 64 i + l (+ 32) the low (high) nibble of
 * qs[32 i + l], Q5_K's fifth bit bit 2 i (2 i + 1) of qh[l]; Q6_K: value 128 n + 32 kq + l the low (kq < 2) or high
 * nibble of ql[64 n + 32 (kq & 1) + l] under bits 2 kq..+1 of qh[32 n + l]. */
static void kquant_levels(const uint8_t *b, int32_t bits, uint8_t *lv) {
    for (int v = 0; v < 256; v++) {
        const int n = v / 128, kq = v % 128 / 32, l = v % 32, i = v / 64, hi = v % 64 >= 32;
        if (bits == 2 || bits == 3) {
            const int q = (b[(bits == 3 ? 32 : 16) + 32 * n + l] >> (2 * kq)) & 3;
            lv[v] = (uint8_t)(bits == 3 ? q | ((b[l] >> (4 * n + kq)) & 1) << 2 : q);
        } else if (bits == 4 || bits == 5) {
            const int q = b[(bits == 5 ? 48 : 16) + 32 * i + l];
            lv[v] = (uint8_t)((hi ? q >> 4 : q & 15) | (bits == 5 ? ((b[16 + l] >> (2 * i + hi)) & 1) << 4 : 0));
        } else {
            const uint8_t q = b[64 * n + 32 * (kq & 1) + l], h = b[128 + 32 * n + l];
            lv[v] = (uint8_t)((kq < 2 ? q & 15 : q >> 4) | ((h >> (2 * kq)) & 3) << 4);
        }
    }
}

void mopt_unpack_kquant_ref(const uint8_t *blocks, int32_t bits, int64_t nsb, uint8_t *levels) {
    for (int64_t k = 0; k < nsb; k++) kquant_levels(blocks + k * mopt_kquant_block_bytes(bits), bits, levels + 256 * k);
}

static void gemm_s8_q8(const int8_t *w, const uint8_t *wa, int64_t in, int64_t nrows, const float *s, const float *zs,
                       const int8_t *xi, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                       int64_t y_stride, int32_t ntok) {
    for (int64_t r = 0; r < nrows; r++)
        for (int32_t l = 0; l < ntok; l++) {
            float acc = 0;
            for (int64_t g = 0; g < ng; g++) {
                float gacc = 0;
                for (int64_t b = g * bpg; b < (g + 1) * bpg; b++)
                    gacc += xdt[b * 8 + l] * (float)tile_dot((const uint8_t *)w + r * in, 1, xi, 32 * b, 32 * b + 32, l);
                acc += s[r * ng + g] * gacc - (zs ? zs[r * ng + g] * xst[g * 8 + l] : 0.0f);
            }
            y[l * y_stride + r] = acc;
        }
}

static void gemm_s8_rows(const int8_t *w, const uint8_t *wa, int64_t in, int64_t nrows, const float *s, const int8_t *xi,
                         const float *xs, float *y, int64_t y_stride, int32_t ntok) {
    for (int64_t r = 0; r < nrows; r++)
        for (int32_t l = 0; l < ntok; l++)
            y[l * y_stride + r] = (float)tile_dot((const uint8_t *)w + r * in, 1, xi, 0, in, l) * s[r] * xs[l];
}

static void unpack_s8(const uint8_t *src, int64_t n, uint8_t flip, int8_t *w, uint8_t *wa) {
    for (int64_t i = 0; i < n; i++) {
        w[i] = (int8_t)(src[i] ^ flip);
        wa[i] = (uint8_t)(w[i] < 0 ? -(int)w[i] : w[i]);
    }
}

static void unpack_q4(const uint8_t *b, int64_t nb, uint8_t *levels) {
    for (int64_t k = 0; k < nb; k++)
        for (int i = 0; i < 16; i++) levels[32 * k + i] = b[16 * k + i] & 15, levels[32 * k + 16 + i] = b[16 * k + i] >> 4;
}

static float dot_sp24(const float *vals, const uint8_t *pos, const float *x, int64_t n) {
    float s = 0;
    for (int64_t g = 0; g < n / 4; g++) {
        const int nib = pos[g / 2] >> (4 * (g % 2)) & 15;
        s += vals[2 * g] * x[4 * g + (nib & 3)] + vals[2 * g + 1] * x[4 * g + (nib >> 2)];
    }
    return s;
}

static float dot_sp24_bf16(const uint16_t *vals, const uint8_t *pos, const float *x, int64_t n) {
    float s = 0;
    for (int64_t g = 0; g < n / 4; g++) {
        const int nib = pos[g / 2] >> (4 * (g % 2)) & 15;
        s += mopt_bf16_to_f32(vals[2 * g]) * x[4 * g + (nib & 3)] + mopt_bf16_to_f32(vals[2 * g + 1]) * x[4 * g + (nib >> 2)];
    }
    return s;
}

static float dot_sp24_i8(const int8_t *vals, const uint8_t *pos, const float *x, int64_t n) {
    float s = 0;
    for (int64_t g = 0; g < n / 4; g++) {
        const int nib = pos[g / 2] >> (4 * (g % 2)) & 15;
        s += (float)vals[2 * g] * x[4 * g + (nib & 3)] + (float)vals[2 * g + 1] * x[4 * g + (nib >> 2)];
    }
    return s;
}

static float dot_sp24_i4(const uint8_t *vals, const uint16_t *scales, int64_t gs, const uint8_t *pos, const float *x, int64_t n) {
    float s = 0;
    for (int64_t g0 = 0; g0 < n; g0 += gs) {
        float a = 0;
        for (int64_t g = g0 / 4; g < (g0 + gs) / 4 && g < n / 4; g++) {
            const int nib = pos[g / 2] >> (4 * (g % 2)) & 15;
            for (int h = 0; h < 2; h++) { /* kept value k: block k / 32, byte k % 16, high nibble for k % 32 >= 16 */
                const int64_t k = 2 * g + h;
                const uint8_t b = vals[k / 32 * 16 + k % 16];
                a += (float)((k % 32 >= 16 ? b >> 4 : b & 15) - 8) * x[4 * g + (h ? nib >> 2 : nib & 3)];
            }
        }
        s += a * mopt_f16_to_f32(scales[g0 / gs]);
    }
    return s;
}

static float dot_fp4(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n) {
    float s = 0;
    for (int64_t b0 = 0; b0 < n; b0 += gs) {
        float a = 0;
        for (int64_t i = b0; i < b0 + gs; i++) a += mopt_e2m1_to_f32((uint8_t)(q[i / 2] >> (4 * (i & 1)) & 15)) * x[i];
        s += a * bs[b0 / gs];
    }
    return s;
}

static void dequant_fp4(const uint8_t *q, const float *bs, int64_t gs, int64_t n, float *dst) {
    for (int64_t i = 0; i < n; i++) dst[i] = mopt_e2m1_to_f32((uint8_t)(q[i / 2] >> (4 * (i & 1)) & 15)) * bs[i / gs];
}

static float dot_e4m3_blocks(const uint8_t *q, const float *bs, int64_t gs, const float *x, int64_t n) {
    float s = 0;
    for (int64_t b0 = 0; b0 < n; b0 += gs) {
        float a = 0;
        for (int64_t i = b0; i < b0 + gs; i++) a += mopt_e4m3_to_f32(q[i]) * x[i];
        s += a * bs[b0 / gs];
    }
    return s;
}

const mopt_kernels mopt_kernels_ref = {
    .name = "ref",
    .dot_f32 = dot_f32,
    .dot_f16 = dot_f16,
    .dot_bf16 = dot_bf16,
    .dots_f32 = dots_f32,
    .dots_f16 = dots_f16,
    .dots_bf16 = dots_bf16,
    .dots_rows_f32 = dots_rows_f32,
    .dots_rows_f16 = dots_rows_f16,
    .dots_rows_bf16 = dots_rows_bf16,
    .cvt_f16 = cvt_f16,
    .cvt_bf16 = cvt_bf16,
    .dequant_u8 = dequant_u8,
    .dequant_e4m3 = dequant_e4m3,
    .dot_e4m3 = dot_e4m3,
    .round_e4m3 = round_e4m3,
    .quantize_i8_blocks = quantize_i8_blocks,
    .silu_mul = silu_mul,
    .att_scores = att_scores,
    .att_values = att_values,
    .att_scores_f16 = att_scores_f16,
    .att_values_f16 = att_values_f16,
    .softmax = softmax,
    .sum_u64 = sum_u64,
    .dot_q4 = dot_q4,
    .dot_q4_lut = dot_q4_lut,
    .dot_q8 = dot_q8,
    .gemv_q4_q8 = gemv_q4_q8,
    .gemv_q8_q8 = gemv_q8_q8,
    .gemv_q4k_q8 = gemv_q4k_q8,
    .gemv_q6k_q8 = gemv_q6k_q8,
    .gemv_q2k_q8 = gemv_q2k_q8,
    .gemv_q3k_q8 = gemv_q3k_q8,
    .gemv_q5k_q8 = gemv_q5k_q8,
    .dequant_kquant = dequant_kquant,
    .unpack_kquant = mopt_unpack_kquant_ref,
    .gemm_q4_q8_b16 = gemm_q4_q8_b16,
    .gemm_q4_q8 = gemm_q4_q8,
    .unpack_q4 = unpack_q4,
    .u8_levels = true,
    .gemm_s8_q8 = gemm_s8_q8,
    .gemm_s8_rows = gemm_s8_rows,
    .unpack_s8 = unpack_s8,
    .dot_i8 = dot_i8,
    .dot_sp24 = dot_sp24,
    .dot_sp24_bf16 = dot_sp24_bf16,
    .dot_sp24_i8 = dot_sp24_i8,
    .dot_sp24_i4 = dot_sp24_i4,
    .dot_fp4 = dot_fp4,
    .dequant_fp4 = dequant_fp4,
    .dot_e4m3_blocks = dot_e4m3_blocks,
};
