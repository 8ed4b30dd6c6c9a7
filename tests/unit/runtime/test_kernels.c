/* Every kernel set the CPU supports against a float64 reference, on lengths
 * that are not multiples of the SIMD width (stories260K's FFN is 172), and the
 * scalar f16/bf16 conversions against their definitions. */
#include <math.h>

#include "kernels.h"
#include "testutil.h"

static uint32_t rng = 2463534242u;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return (float)((double)rng / 4294967296.0 * 2.0 - 1.0);
}
static uint32_t urand(void) {
    frand();
    return rng;
}

static const mopt_kernels *sets[] = {&mopt_kernels_ref, &mopt_kernels_avx2, &mopt_kernels_avx512};
static const int64_t lengths[] = {1, 7, 8, 15, 16, 17, 31, 33, 64, 172, 256, 768, 1001};
/* the dots' also past 4 KiB a row, where they prefetch (DOT_AHEAD): in f32, then in halves too */
static const int64_t dot_lengths[] = {1, 7, 8, 15, 16, 17, 31, 33, 64, 172, 256, 768, 1001, 1031, 2081};

static void test_dot_kernels_match_float64_reference(void **s) {
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) {
            fprintf(stderr, "kernel set %s not supported on this CPU\n", sets[k]->name);
            continue;
        }
        for (size_t li = 0; li < sizeof dot_lengths / sizeof *dot_lengths; li++) {
            int64_t n = dot_lengths[li];
            float *w = malloc((size_t)n * 4), *x = malloc((size_t)n * 4);
            uint16_t *wh = malloc((size_t)n * 2), *wb = malloc((size_t)n * 2);
            double r32 = 0, r16 = 0, rb = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) {
                w[i] = frand();
                x[i] = frand();
                wh[i] = mopt_f32_to_f16(w[i]);
                wb[i] = mopt_f32_to_bf16(w[i]);
                r32 += (double)w[i] * x[i];
                r16 += (double)mopt_f16_to_f32(wh[i]) * x[i];
                rb += (double)mopt_bf16_to_f32(wb[i]) * x[i];
                mag += fabs((double)w[i] * x[i]);
            }
            /* fp32 accumulation error bound: n * eps * sum|w x| */
            double tol = 1e-6 + (double)n * 6e-8 * mag;
            assert_true(fabs(sets[k]->dot_f32(w, x, n) - r32) <= tol);
            assert_true(fabs(sets[k]->dot_f16(wh, x, n) - r16) <= tol);
            assert_true(fabs(sets[k]->dot_bf16(wb, x, n) - rb) <= tol);
            float *out = malloc((size_t)n * 4);
            sets[k]->cvt_bf16(wb, out, n);
            for (int64_t i = 0; i < n; i++) assert_true(out[i] == mopt_bf16_to_f32(wb[i]));
            sets[k]->cvt_f16(wh, out, n);
            for (int64_t i = 0; i < n; i++) assert_true(out[i] == mopt_f16_to_f32(wh[i]));
            free(out);
            free(w);
            free(x);
            free(wh);
            free(wb);
        }
    }
}

/* The 2:4 row kernels (fp32, bf16 and int8 values) over every pair of kept positions (byte k: group 2k in the
 * low nibble, i0 | i1 << 2), against a float64 sum written from the layout. */
static void test_sp24_dot_matches_float64_on_every_position_pair(void **s) {
    static const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
    static const int64_t widths[] = {8, 16, 24, 40, 256, 768, 1000};
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++) {
            const int64_t n = widths[wi];
            float *v = malloc((size_t)n / 2 * 4), *x = malloc((size_t)n * 4);
            uint16_t *vb = malloc((size_t)n / 2 * 2);
            uint8_t *pos = calloc((size_t)n / 8, 1);
            double ref = 0, mag = 0;
            for (int64_t i = 0; i < n; i++) x[i] = frand();
            for (int64_t g = 0; g < n / 4; g++) {
                const int *p = pairs[(g * 7 + wi) % 6];
                pos[g / 2] |= (uint8_t)((p[0] | p[1] << 2) << (4 * (g % 2)));
                for (int j = 0; j < 2; j++) {
                    vb[2 * g + j] = mopt_f32_to_bf16(frand()); /* bf16-exact values serve both kernels */
                    v[2 * g + j] = mopt_bf16_to_f32(vb[2 * g + j]);
                    ref += (double)v[2 * g + j] * x[4 * g + p[j]];
                    mag += fabs((double)v[2 * g + j] * x[4 * g + p[j]]);
                }
            }
            const double got = sets[k]->dot_sp24(v, pos, x, n);
            if (fabs(got - ref) > 1e-6 + (double)n * 6e-8 * mag)
                fprintf(stderr, "%s dot_sp24 n=%lld: %.9g vs %.9g\n", sets[k]->name, (long long)n, got, ref);
            assert_true(fabs(got - ref) <= 1e-6 + (double)n * 6e-8 * mag);
            assert_true(fabs(sets[k]->dot_sp24_bf16(vb, pos, x, n) - ref) <= 1e-6 + (double)n * 6e-8 * mag);
            /* int8 values with int8 levels as x: every product and partial sum is an integer below 2^24, so exact */
            int8_t *vi = malloc((size_t)n / 2);
            float *xi = malloc((size_t)n * 4);
            double refi = 0;
            for (int64_t i = 0; i < n; i++) xi[i] = (float)((i * 37 + wi) % 255 - 127);
            for (int64_t g = 0; g < n / 4; g++)
                for (int j = 0; j < 2; j++) {
                    vi[2 * g + j] = (int8_t)((g * 11 + j * 5 + wi) % 256 - 128); /* -128..127, both ends */
                    refi += (double)vi[2 * g + j] * xi[4 * g + pairs[(g * 7 + wi) % 6][j]];
                }
            assert_true(sets[k]->dot_sp24_i8(vi, pos, xi, n) == refi);
            free(vi), free(xi);
            free(v), free(vb), free(x), free(pos);
        }
    }
}

/* The int4 2:4 kernel reads the packed row in place (kept value k in byte k / 32 * 16 + k % 16, the high nibble
 * for k % 32 >= 16, level - 8) and scales each group of gs inputs: against a float64 sum written from the layout,
 * for groups of 64, 128 and the whole row, every level 0..15 and every position pair. */
static void test_sp24_int4_dot_matches_float64(void **s) {
    static const int pairs[6][2] = {{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}};
    static const int64_t widths[] = {64, 256, 768, 1024};
    static const int64_t groups[] = {64, 128, -1};
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (size_t wi = 0; wi < sizeof widths / sizeof *widths; wi++)
            for (size_t gi = 0; gi < 3; gi++) {
                const int64_t n = widths[wi], gs = groups[gi] > 0 ? groups[gi] : n;
                if (n % gs) continue;
                uint8_t *v = calloc((size_t)n / 4, 1), *pos = calloc((size_t)n / 8, 1);
                uint16_t *sc = malloc((size_t)(n / gs) * 2);
                float *x = malloc((size_t)n * 4);
                for (int64_t i = 0; i < n; i++) x[i] = frand();
                for (int64_t g = 0; g < n / gs; g++) sc[g] = mopt_f32_to_f16(0.01f + 0.02f * (float)g);
                double ref = 0, mag = 0;
                for (int64_t g = 0; g < n / 4; g++) {
                    const int *p = pairs[(g * 5 + wi + gi) % 6];
                    pos[g / 2] |= (uint8_t)((p[0] | p[1] << 2) << (4 * (g % 2)));
                    for (int j = 0; j < 2; j++) {
                        const int64_t kk = 2 * g + j;
                        const int u = (int)((kk * 7 + wi) % 16);
                        v[kk / 32 * 16 + kk % 16] |= (uint8_t)(u << (kk % 32 >= 16 ? 4 : 0));
                        const double w = (double)(u - 8) * mopt_f16_to_f32(sc[4 * g / gs]);
                        ref += w * x[4 * g + p[j]];
                        mag += fabs(w * x[4 * g + p[j]]);
                    }
                }
                const double got = sets[k]->dot_sp24_i4(v, sc, gs, pos, x, n);
                if (fabs(got - ref) > 1e-6 + (double)n * 6e-8 * mag)
                    fprintf(stderr, "%s dot_sp24_i4 n=%lld gs=%lld: %.9g vs %.9g\n", sets[k]->name, (long long)n, (long long)gs, got, ref);
                assert_true(fabs(got - ref) <= 1e-6 + (double)n * 6e-8 * mag);
                free(v), free(pos), free(sc), free(x);
            }
    }
}

/* FP8 rows widen exactly: every E4M3 byte (sign, 4 exponent bits of bias 7, 3 mantissa bits; subnormals below
 * exponent 1; 0x7f / 0xff NaN, no infinities) times the row scale, computed here from the bit fields in float64,
 * at lengths that leave vector tails; read in place, their dot products match float64. */
static void test_e4m3_rows_widen_exactly_and_dot_in_place(void **s) {
    static const int64_t lengths[] = {256, 300, 7};
    static const float scales[] = {1.0f, 0.0173f, 3.5e-5f};
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (size_t li = 0; li < 3; li++)
            for (size_t si = 0; si < 3; si++) {
                const int64_t n = lengths[li];
                uint8_t *q = malloc((size_t)n);
                float *out = malloc((size_t)n * 4);
                for (int64_t i = 0; i < n; i++) q[i] = (uint8_t)((i * 97 + li) % 256);
                sets[k]->dequant_e4m3(q, n, scales[si], out);
                for (int64_t i = 0; i < n; i++) {
                    const int e = q[i] >> 3 & 15, m = q[i] & 7;
                    if (e == 15 && m == 7) {
                        assert_true(isnan(out[i]));
                        continue;
                    }
                    const double v = (q[i] & 0x80 ? -1.0 : 1.0) * (e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6));
                    assert_true(out[i] == (float)((float)v * scales[si]));
                }
                /* the row read in place: its dot with x within fp32 accumulation error, NaN bytes avoided */
                float *x = malloc((size_t)n * 4);
                double ref = 0, mag = 0;
                for (int64_t i = 0; i < n; i++) {
                    if ((q[i] & 0x7f) == 0x7f) q[i] = 0x7e;
                    x[i] = frand();
                    ref += (double)mopt_e4m3_to_f32(q[i]) * x[i];
                    mag += fabs((double)mopt_e4m3_to_f32(q[i]) * x[i]);
                }
                assert_true(fabs(sets[k]->dot_e4m3(q, x, n) - ref) <= 1e-6 + (double)n * 6e-8 * mag);
                free(q), free(out), free(x);
            }
    }
}

/* FP8 activations round exactly as the scalar conversion does: mopt_f32_to_e4m3 then back, times the scale. The
 * values cover every grid point and every midpoint between neighbours (ties go to the even code), both sides of
 * the subnormal boundary 2^-6, the saturation tie 464, beyond 448, zeros of both signs, infinities and NaN. */
static void test_e4m3_activation_rounding_matches_the_scalar_conversion(void **s) {
    enum { N = 4 * 256 + 64 };
    float x[N], out[N];
    int64_t n = 0;
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7f) == 0x7f) continue;
        const float v = mopt_e4m3_to_f32((uint8_t)b), next = (b & 0x7f) == 0x7e ? v : mopt_e4m3_to_f32((uint8_t)(b + 1));
        x[n++] = v;                       /* on the grid */
        x[n++] = 0.5f * (v + next);       /* the tie with the next code */
        x[n++] = nextafterf(0.5f * (v + next), 0.0f);
        x[n++] = v * 1.0001f + 1e-9f;
    }
    const float specials[] = {0.0f, -0.0f, 0.015625f, nextafterf(0.015625f, 0.0f), 0.0146484375f, 464.0f, nextafterf(464.0f, 0.0f),
                              -464.0f, 500.0f, -1e30f, INFINITY, -INFINITY, NAN, 1e-30f, -3e-3f, 447.9f};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) x[n++] = specials[i];
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        const float scales[] = {1.0f, 0.37f};
        for (int si = 0; si < 2; si++) {
            float xs[N];
            for (int64_t i = 0; i < n; i++) xs[i] = x[i] * scales[si];
            sets[k]->round_e4m3(xs, n, scales[si], out);
            for (int64_t i = 0; i < n; i++) {
                const float want = mopt_e4m3_to_f32(mopt_f32_to_e4m3(xs[i] / scales[si])) * scales[si];
                if (isnan(want)) assert_true(isnan(out[i]));
                else {
                    if (memcmp(&want, &out[i], 4)) fprintf(stderr, "%s: x = %a -> %a, want %a\n", sets[k]->name, (double)xs[i], (double)out[i], (double)want);
                    assert_memory_equal(&want, &out[i], 4); /* the same bits: signed zeros too */
                }
            }
        }
    }
}

/* x as int8 per block, against its definition with libm's rintf (nearest even) instead of the kernels' 1.5 x 2^23:
 * d = max|x| / 127 (1 for a block of zeros), q = round(x / d) within +-127, NaN to -127. Blocks of 32 and 256: ties
 * at every half from -127.5 to 127.5, random values over eight decades, zeros, NaN, infinities, subnormals. */
static void test_int8_block_quantization_rounds_as_defined(void **s) {
    (void)s;
    enum { N = 256 * 12 };
    static float x[N], d[N / 32];
    static int8_t q[N];
    int64_t n = 0;
    for (int k = -255; k <= 255 && n < N; k += 2) x[n++] = 0.5f * (float)k; /* the ties, max 127.5: d = 127.5 / 127 */
    while (n % 256) x[n++] = 127.0f;
    for (; n < 256 * 10; n++) x[n] = frand() * powf(10.0f, (float)(n / 256 % 8) - 4.0f);
    for (int i = 0; i < 32; i++) x[n++] = 0.0f;
    for (int i = 0; i < 32; i++) x[n++] = i == 5 ? NAN : frand();
    for (int i = 0; i < 32; i++) x[n++] = i == 7 ? INFINITY : i == 9 ? -INFINITY : frand();
    for (int i = 0; i < 32; i++) x[n++] = i % 2 ? 1e-40f : -3e-39f;
    while (n < N) x[n++] = frand();
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (int64_t bs = 32; bs <= 256; bs += 224) {
            sets[k]->quantize_i8_blocks(x, N, bs, q, d);
            for (int64_t b = 0; b < N / bs; b++) {
                float mx = 0;
                for (int64_t i = b * bs; i < (b + 1) * bs; i++)
                    if (fabsf(x[i]) > mx) mx = fabsf(x[i]);
                const float want_d = mx > 0 ? mx / 127.0f : 1.0f;
                assert_memory_equal(&d[b], &want_d, 4);
                for (int64_t i = b * bs; i < (b + 1) * bs; i++) {
                    const float v = x[i] / want_d;
                    const int want = isnan(v) ? -127 : v > 127 ? 127 : v < -127 ? -127 : (int)rintf(v);
                    if (q[i] != want) fprintf(stderr, "%s bs %lld: x = %a, d = %a -> %d, want %d\n", sets[k]->name, (long long)bs, (double)x[i], (double)want_d, q[i], want);
                    assert_int_equal(q[i], want);
                }
            }
        }
    }
}

/* SwiGLU's g / (1 + e^-g) * u against float64 over g in [-110, 110] (both sides of where e^-g overflows and
 * vanishes in float), the tails of every length, and zeros, infinities and NaN: within 4 ulp of the float64 value,
 * or 1e-36 where float's e^-g has overflowed and float64's has not. */
static void test_swiglu_matches_float64_within_4_ulp(void **s) {
    enum { N = 44001 + 16 };
    static float g[N], u[N], y[N];
    int64_t n = 0;
    for (int i = 0; i <= 44000; i++) {
        g[n] = (float)(i - 22000) * 0.005f;
        u[n++] = i % 3 ? frand() * 2.0f : 1.0f;
    }
    const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 88.72f, -88.72f, 88.73f, -88.73f, -87.34f,
                              103.9f, -103.9f, 1e-30f, -1e-30f, 1e-40f, 20.0f};
    for (size_t i = 0; i < sizeof specials / sizeof *specials; i++) g[n] = specials[i], u[n++] = 1.0f;
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        double worst = 0;
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) { /* the tails: the first values again */
            sets[k]->silu_mul(g + 21000, u + 21000, y, lengths[li]);
            for (int64_t i = 0; i < lengths[li]; i++) {
                const float want = (float)((double)g[21000 + i] / (1.0 + exp(-(double)g[21000 + i])) * u[21000 + i]);
                assert_true(fabsf(y[i] - want) <= 4 * (nextafterf(fabsf(want), INFINITY) - fabsf(want)));
            }
        }
        sets[k]->silu_mul(g, u, y, n);
        for (int64_t i = 0; i < n; i++) {
            const double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
            if (isnan(ref)) {
                assert_true(isnan(y[i]));
                continue;
            }
            if (isinf(ref)) {
                assert_true(y[i] == (float)ref);
                continue;
            }
            const double ulp = nextafterf((float)fabs(ref), INFINITY) - (float)fabs(ref), err = fabs((double)y[i] - ref);
            if (err / ulp > worst && fabs(ref) > 1e-30) worst = err / ulp;
            if (!(err <= 4 * ulp || err <= 1e-36))
                fprintf(stderr, "%s: g = %a u = %a: %a, want %a\n", sets[k]->name, (double)g[i], (double)u[i], (double)y[i], ref);
            assert_true(err <= 4 * ulp || err <= 1e-36);
        }
        fprintf(stderr, "%s: SwiGLU within %.2f ulp of float64\n", sets[k]->name, worst);
    }
}

/* Decode attention's scores sc and output out (att_scores, att_values) against float64 sums over K and V (rows 160
 * floats apart): each within the float roundings of its terms' magnitudes */
static void check_attention(const float *q, const float *K, const float *Vv, const float *P, const float *sc, const float *out,
                            int32_t g, int32_t n, int32_t hd, float scale) {
    enum { LD = 160 };
    for (int32_t r = 0; r < g; r++) {
        for (int32_t p = 0; p < n; p++) {
            double d = 0, mag = 0;
            for (int32_t i = 0; i < hd; i++) {
                d += (double)q[r * hd + i] * K[p * LD + i];
                mag += fabs((double)q[r * hd + i] * K[p * LD + i]);
            }
            assert_true(fabs(sc[r * n + p] - scale * d) <= (double)hd * 6e-8 * mag * scale + 1e-7);
        }
        for (int32_t i = 0; i < hd; i++) {
            double a = 0, mag = 0;
            for (int32_t p = 0; p < n; p++) {
                a += (double)P[r * n + p] * Vv[p * LD + i];
                mag += fabs((double)P[r * n + p] * Vv[p * LD + i]);
            }
            assert_true(fabs(out[r * hd + i] - a) <= (double)n * 6e-8 * mag + 1e-7);
        }
    }
}

/* Decode attention's kernels against float64 on head sizes that are and are not multiples of either vector width,
 * query groups of 1 to 5, 1 to 131 positions and rows wider than the head, over an fp32 cache and over an f16 one
 * (against the values its halves hold); then softmax, with large spreads and -inf entries (masked positions),
 * summing to 1. */
static void test_attention_kernels_match_float64(void **s) {
    enum { MAXN = 131, MAXHD = 136, LD = 160, MAXG = 5 };
    static float q[MAXG * MAXHD], K[MAXN * LD], Vv[MAXN * LD], P[MAXG * MAXN], sc[MAXG * MAXN], out[MAXG * MAXHD];
    for (int i = 0; i < MAXG * MAXHD; i++) q[i] = frand();
    for (int i = 0; i < MAXN * LD; i++) K[i] = frand(), Vv[i] = frand();
    for (int i = 0; i < MAXG * MAXN; i++) P[i] = 0.5f * (frand() + 1.0f);
    static uint16_t Kh[MAXN * LD], Vh[MAXN * LD]; /* an f16 cache, and the values its halves hold */
    static float Kw[MAXN * LD], Vw[MAXN * LD];
    for (int i = 0; i < MAXN * LD; i++) {
        Kh[i] = mopt_f32_to_f16(K[i]), Vh[i] = mopt_f32_to_f16(Vv[i]);
        Kw[i] = mopt_f16_to_f32(Kh[i]), Vw[i] = mopt_f16_to_f32(Vh[i]);
    }
    const int32_t hds[] = {8, 24, 32, 48, 64, 72, 128, 136}, ns[] = {1, 3, 4, 5, 17, 64, 131}, gs[] = {1, 2, 5};
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (size_t hi = 0; hi < sizeof hds / sizeof *hds; hi++)
            for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
                for (size_t gi = 0; gi < sizeof gs / sizeof *gs; gi++) {
                    const int32_t hd = hds[hi], n = ns[ni], g = gs[gi];
                    const float scale = 1.0f / sqrtf((float)hd);
                    sets[k]->att_scores(q, g, K, LD, n, hd, scale, sc);
                    sets[k]->att_values(P, g, Vv, LD, n, hd, out);
                    check_attention(q, K, Vv, P, sc, out, g, n, hd, scale);
                    sets[k]->att_scores_f16(q, g, Kh, LD, n, hd, scale, sc);
                    sets[k]->att_values_f16(P, g, Vh, LD, n, hd, out);
                    check_attention(q, Kw, Vw, P, sc, out, g, n, hd, scale);
                }
        for (size_t li = 0; li < sizeof lengths / sizeof *lengths; li++) {
            const int64_t n = lengths[li];
            float x[1001];
            double ref[1001], mx = -INFINITY, sum = 0;
            for (int64_t i = 0; i < n; i++) x[i] = 30.0f * frand();
            if (n > 3) x[1] = x[n - 1] = -INFINITY;
            for (int64_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
            for (int64_t i = 0; i < n; i++) sum += (ref[i] = exp((double)x[i] - mx));
            sets[k]->softmax(x, n);
            double total = 0;
            for (int64_t i = 0; i < n; i++) {
                /* e^x within 4 ulp, the float sum within n roundings, two more for 1 / sum and the product */
                if (!(fabs(x[i] - ref[i] / sum) <= (6.0 + (double)n) * 6e-8 * ref[i] / sum + 1e-12))
                    fprintf(stderr, "%s softmax n=%lld [%lld]: %.9g, want %.9g\n", sets[k]->name, (long long)n, (long long)i, x[i], ref[i] / sum);
                assert_true(fabs(x[i] - ref[i] / sum) <= (6.0 + (double)n) * 6e-8 * ref[i] / sum + 1e-12);
                total += x[i];
            }
            assert_true(fabs(total - 1.0) <= (double)n * 1.2e-7);
        }
    }
}

static void test_half_conversions_follow_ieee(void **s) {
    /* exact values */
    assert_true(mopt_f16_to_f32(0x3c00) == 1.0f);
    assert_true(mopt_f16_to_f32(0xc000) == -2.0f);
    assert_true(mopt_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(mopt_f16_to_f32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    assert_true(isinf(mopt_f16_to_f32(0x7c00)));
    assert_true(isnan(mopt_f16_to_f32(0x7e00)));
    assert_true(mopt_bf16_to_f32(0x3f80) == 1.0f);
    /* every f16 value round-trips, and f32 -> f16 rounds to nearest even */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = mopt_f16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        assert_int_equal(mopt_f32_to_f16(f), h);
    }
    assert_int_equal(mopt_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00); /* tie -> even */
    assert_int_equal(mopt_f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)), 0x3c02);
    assert_int_equal(mopt_f32_to_f16(65520.0f), 0x7c00);                 /* overflows to inf */
    assert_int_equal(mopt_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80); /* tie -> even */
    assert_int_equal(mopt_f32_to_bf16(1.0f + 3 * ldexpf(1.0f, -8)), 0x3f82);
    for (uint32_t h = 0; h < 65536; h++) {
        float f = mopt_bf16_to_f32((uint16_t)h);
        if (isnan(f)) continue;
        assert_int_equal(mopt_f32_to_bf16(f), h);
    }
}

/* A batch of tokens against one weight row (batched decode) gives each token
 * exactly the bits of its own dot, for every token count up to 8 and every
 * length, so a sequence's logits do not depend on what it is batched with. */
static void test_batched_dots_equal_each_tokens_own_dot_bit_for_bit(void **s) {
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (size_t li = 0; li < sizeof dot_lengths / sizeof *dot_lengths; li++) {
            const int64_t n = dot_lengths[li], xs = n + 3; /* token rows further apart than n */
            float *w = malloc((size_t)n * 4), *x = malloc((size_t)(8 * xs) * 4), got[8];
            uint16_t *wh = malloc((size_t)n * 2), *wb = malloc((size_t)n * 2);
            for (int64_t i = 0; i < n; i++) {
                w[i] = frand();
                wh[i] = mopt_f32_to_f16(w[i]);
                wb[i] = mopt_f32_to_bf16(w[i]);
            }
            for (int64_t i = 0; i < 8 * xs; i++) x[i] = frand() * 3.0f;
            for (int32_t nt = 1; nt <= 8; nt++) {
                sets[k]->dots_f32(w, x, xs, nt, n, got);
                for (int32_t t = 0; t < nt; t++) assert_memory_equal(&got[t], &(float){sets[k]->dot_f32(w, x + t * xs, n)}, 4);
                sets[k]->dots_f16(wh, x, xs, nt, n, got);
                for (int32_t t = 0; t < nt; t++) assert_memory_equal(&got[t], &(float){sets[k]->dot_f16(wh, x + t * xs, n)}, 4);
                sets[k]->dots_bf16(wb, x, xs, nt, n, got);
                for (int32_t t = 0; t < nt; t++) assert_memory_equal(&got[t], &(float){sets[k]->dot_bf16(wb, x + t * xs, n)}, 4);
            }
            free(w);
            free(x);
            free(wh);
            free(wb);
        }
    }
}

/* The 4- and 8-bit GEMVs against several tokens at once (batched decode) give each token the bits of the one-token
 * kernel run for it alone: random bytes as levels, scales and zero-points (symmetric too), rows of 1-5, 1-8 tokens,
 * groups of an even number of blocks (pairs), of one (Q4_0's) or three, rows of an odd number of blocks (the last
 * one alone), and rows longer than the batched buffers (4096 inputs). */
static void test_int_gemv_of_several_tokens_equals_each_token_alone_bit_for_bit(void **s) {
    (void)s;
    enum { R = 5, NT = 8 };
    static const int64_t ins[] = {64, 96, 256, 768, 800, 4096, 4160};
    static const int64_t bpgs[] = {1, 2, 3, 4, 0}; /* 0: one group per row */
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k]) || !sets[k]->gemvs_q4_q8 || !sets[k]->gemvs_q8_q8) continue;
        for (int bits = 4; bits <= 8; bits += 4)
            for (size_t ii = 0; ii < sizeof ins / sizeof *ins; ii++)
                for (size_t bi = 0; bi < sizeof bpgs / sizeof *bpgs; bi++)
                    for (int sym = 0; sym < 2; sym++) {
                        const int64_t in = ins[ii], nb = in / 32, bpg = bpgs[bi] ? bpgs[bi] : nb;
                        if (nb % bpg) continue;
                        const int64_t ng = nb / bpg, rb = nb * 4 * bits, ys = R + 3;
                        uint8_t *w = malloc((size_t)(R * rb)), *z = malloc((size_t)(R * ng));
                        uint16_t *sc = malloc((size_t)(R * ng) * sizeof *sc);
                        int8_t *xq = malloc((size_t)(NT * in));
                        float *xd = malloc((size_t)(NT * nb) * sizeof *xd), *xs = malloc((size_t)(NT * ng) * sizeof *xs);
                        float *y = malloc((size_t)(NT * ys) * sizeof *y), *one = malloc(R * sizeof *one);
                        for (int64_t i = 0; i < R * rb; i++) w[i] = (uint8_t)(urand() & 0xFF);
                        for (int64_t i = 0; i < R * ng; i++) sc[i] = mopt_f32_to_f16(0.001f + 0.05f * fabsf(frand())), z[i] = (uint8_t)(urand() % (1u << bits));
                        for (int64_t i = 0; i < NT * in; i++) xq[i] = (int8_t)(urand() % 255 - 127);
                        for (int64_t i = 0; i < NT * nb; i++) xd[i] = 0.01f * fabsf(frand());
                        for (int64_t i = 0; i < NT * ng; i++) xs[i] = frand();
                        for (int32_t nr = 1; nr <= R; nr++)
                            for (int32_t nt = 1; nt <= NT; nt++) {
                                (bits == 4 ? sets[k]->gemvs_q4_q8 : sets[k]->gemvs_q8_q8)(w, (size_t)rb, nr, sc, sym ? NULL : z, (float)(1 << (bits - 1)),
                                                                                          xq, xd, xs, ng, bpg, nt, y, ys);
                                for (int32_t t = 0; t < nt; t++) {
                                    (bits == 4 ? sets[k]->gemv_q4_q8 : sets[k]->gemv_q8_q8)(w, (size_t)rb, nr, sc, sym ? NULL : z, (float)(1 << (bits - 1)),
                                                                                            xq + t * in, xd + t * nb, xs + t * ng, ng, bpg, one);
                                    for (int32_t r = 0; r < nr; r++) assert_memory_equal(&y[t * ys + r], &one[r], 4);
                                }
                            }
                        free(w), free(z), free(sc), free(xq), free(xd), free(xs), free(y), free(one);
                    }
    }
}

/* x as set k's k-quant kernels for `bits` read it (kquant_x_order; value order without one) */
static void kquant_x_for(size_t k, int bits, const int8_t *xq, int64_t n, int8_t *out) {
    if (sets[k]->kquant_x_order) sets[k]->kquant_x_order(bits, xq, n, out);
    else memcpy(out, xq, (size_t)n);
}

/* The k-quant GEMVs (Q2_K ... Q6_K) against several tokens at once (batched decode) give each token the bits of the
 * one-token kernel run for it alone: random bytes as blocks (finite d and dmin), rows of 1-5, 1-8 tokens, rows of 1 and
 * 3 super-blocks. */
static void test_kquant_gemv_of_several_tokens_equals_each_token_alone_bit_for_bit(void **s) {
    (void)s;
    enum { R = 5, NT = 8 };
    static const int64_t nsbs[] = {1, 3};
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k]) || !sets[k]->gemvs_q2k_q8) continue; /* a set has all five or none */
        for (int bits = 2; bits <= 6; bits++)
            for (size_t ni = 0; ni < sizeof nsbs / sizeof *nsbs; ni++) {
                const int64_t nsb = nsbs[ni], in = 256 * nsb, bb = mopt_kquant_block_bytes(bits), rb = nsb * bb, ys = R + 3;
                uint8_t *w = malloc((size_t)(R * rb));
                int8_t *xq = malloc((size_t)(NT * in)), *xo = malloc((size_t)(NT * in));
                int16_t *xs16 = malloc((size_t)(NT * in / 16) * sizeof *xs16);
                float *xd = malloc((size_t)(NT * nsb) * sizeof *xd), *y = malloc((size_t)(NT * ys) * sizeof *y), *one = malloc(R * sizeof *one);
                assert_true(w && xq && xo && xs16 && xd && y && one);
                for (int64_t i = 0; i < R * rb; i++) w[i] = (uint8_t)(urand() & 0xFF);
                for (int64_t b = 0; b < R * nsb; b++) {
                    const uint16_t d = mopt_f32_to_f16(0.005f + 0.01f * fabsf(frand())), dm = mopt_f32_to_f16(0.01f * fabsf(frand()));
                    const int at = bits == 2 ? 80 : bits == 3 ? 108 : bits == 6 ? 208 : 0;
                    memcpy(w + b * bb + at, &d, 2);
                    if (bits != 3 && bits != 6) memcpy(w + b * bb + at + 2, &dm, 2);
                }
                for (int64_t i = 0; i < NT * in; i++) xq[i] = (int8_t)(urand() % 255 - 127);
                for (int64_t i = 0; i < NT * in / 16; i++) {
                    xs16[i] = 0;
                    for (int l = 0; l < 16; l++) xs16[i] = (int16_t)(xs16[i] + xq[16 * i + l]);
                }
                for (int64_t i = 0; i < NT * nsb; i++) xd[i] = 0.01f * fabsf(frand());
                kquant_x_for(k, bits, xq, NT * in, xo);
                for (int32_t nr = 1; nr <= R; nr++)
                    for (int32_t nt = 1; nt <= NT; nt++) {
                        const mopt_kernels *ks = sets[k];
                        (bits == 2 ? ks->gemvs_q2k_q8 : bits == 3 ? ks->gemvs_q3k_q8 : bits == 4 ? ks->gemvs_q4k_q8 : bits == 5 ? ks->gemvs_q5k_q8
                                                                                                                 : ks->gemvs_q6k_q8)(
                            w, (size_t)rb, nr, xo, xd, xs16, nsb, nt, y, ys);
                        for (int32_t t = 0; t < nt; t++) {
                            (bits == 2 ? ks->gemv_q2k_q8 : bits == 3 ? ks->gemv_q3k_q8 : bits == 4 ? ks->gemv_q4k_q8 : bits == 5 ? ks->gemv_q5k_q8
                                                                                                                : ks->gemv_q6k_q8)(
                                w, (size_t)rb, nr, xo + t * in, xd + t * nsb, xs16 + t * in / 16, nsb, one);
                            for (int32_t r = 0; r < nr; r++) assert_memory_equal(&y[t * ys + r], &one[r], 4);
                        }
                    }
                free(w), free(xq), free(xo), free(xs16), free(xd), free(y), free(one);
            }
    }
}

/* Consecutive rows against up to 8 tokens (the decode task's form): each
 * output is the bits of that row's own dot with that token, for every row
 * count up to 7 (the four-row block, then the two-row one, then a leftover
 * row), every token count and length. */
static void test_row_blocks_against_token_batches_equal_each_dot_bit_for_bit(void **s) {
    enum { R = 7, NT = 8 };
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (size_t li = 0; li < sizeof dot_lengths / sizeof *dot_lengths; li++) {
            const int64_t n = dot_lengths[li], xs = n + 5, ys = R + 2;
            float *w = malloc((size_t)(R * n) * 4), *x = malloc((size_t)(NT * xs) * 4), y[NT * (R + 2)];
            uint16_t *wh = malloc((size_t)(R * n) * 2), *wb = malloc((size_t)(R * n) * 2);
            for (int64_t i = 0; i < R * n; i++) {
                w[i] = frand();
                wh[i] = mopt_f32_to_f16(w[i]);
                wb[i] = mopt_f32_to_bf16(w[i]);
            }
            for (int64_t i = 0; i < NT * xs; i++) x[i] = frand() * 2.0f;
            for (int32_t nr = 1; nr <= R; nr++)
                for (int32_t nt = 1; nt <= NT; nt++) {
                    sets[k]->dots_rows_f32(w, nr, x, xs, nt, n, y, ys);
                    for (int32_t t = 0; t < nt; t++)
                        for (int32_t r = 0; r < nr; r++)
                            assert_memory_equal(&y[t * ys + r], &(float){sets[k]->dot_f32(w + r * n, x + t * xs, n)}, 4);
                    sets[k]->dots_rows_f16(wh, nr, x, xs, nt, n, y, ys);
                    for (int32_t t = 0; t < nt; t++)
                        for (int32_t r = 0; r < nr; r++)
                            assert_memory_equal(&y[t * ys + r], &(float){sets[k]->dot_f16(wh + r * n, x + t * xs, n)}, 4);
                    sets[k]->dots_rows_bf16(wb, nr, x, xs, nt, n, y, ys);
                    for (int32_t t = 0; t < nt; t++)
                        for (int32_t r = 0; r < nr; r++)
                            assert_memory_equal(&y[t * ys + r], &(float){sets[k]->dot_bf16(wb + r * n, x + t * xs, n)}, 4);
                }
            free(w);
            free(x);
            free(wh);
            free(wb);
        }
    }
}

/* The k-quant decode kernels of every set (Q2_K ... Q6_K rows against int8 x per 256, as llama.cpp's
 * Q8_K) against float64 over the rows as mopt_weight_row_f32 decodes them, and each set's widening for prefill
 * bit for bit against those rows: random bytes are valid blocks once d and dmin are finite, so every scale, min
 * and level pattern occurs. */
static void check_kquant_kernels(const int ROWS, const int NSB) {
    static const int bits[] = {2, 3, 4, 5, 6};
    const int IN = 256 * NSB;
    int8_t *xq = malloc((size_t)IN), *xo = malloc((size_t)IN);
    int16_t *xs16 = malloc((size_t)IN / 16 * sizeof *xs16);
    float *xd = malloc((size_t)NSB * sizeof *xd), *row = malloc((size_t)IN * sizeof *row), *y = malloc((size_t)ROWS * sizeof *y);
    float *wide = malloc((size_t)IN * sizeof *wide);
    double *ref = malloc((size_t)ROWS * sizeof *ref), *mag = malloc((size_t)ROWS * sizeof *mag);
    assert_true(xq && xo && xs16 && xd && row && y && wide && ref && mag);
    for (int i = 0; i < IN; i++) xq[i] = (int8_t)(frand() * 127.5f);
    for (int i = 0; i < IN / 16; i++) {
        xs16[i] = 0;
        for (int l = 0; l < 16; l++) xs16[i] = (int16_t)(xs16[i] + xq[16 * i + l]);
    }
    for (int k = 0; k < NSB; k++) xd[k] = 0.01f + 0.02f * fabsf(frand());
    for (size_t bi = 0; bi < sizeof bits / sizeof *bits; bi++) {
        const int32_t bb = mopt_kquant_block_bytes(bits[bi]);
        uint8_t *blocks = malloc((size_t)ROWS * (size_t)NSB * (size_t)bb);
        assert_non_null(blocks);
        for (size_t i = 0; i < (size_t)ROWS * (size_t)NSB * (size_t)bb; i++) blocks[i] = (uint8_t)(frand() * 128.0f + 128.0f);
        for (int b = 0; b < ROWS * NSB; b++) { /* finite d (and dmin) near 0.01 */
            uint8_t *blk = blocks + (size_t)b * (size_t)bb;
            const uint16_t d = mopt_f32_to_f16(0.005f + 0.01f * fabsf(frand())), dm = mopt_f32_to_f16(0.01f * fabsf(frand()));
            const int at = bits[bi] == 2 ? 80 : bits[bi] == 3 ? 108 : bits[bi] == 6 ? 208 : 0;
            memcpy(blk + at, &d, 2);
            if (bits[bi] != 3 && bits[bi] != 6) memcpy(blk + at + 2, &dm, 2);
        }
        mopt_error err = {0};
        mopt_tensor *w = mopt_kquant_pack("w", ROWS, IN, bits[bi], blocks, &err);
        assert_non_null(w);
        for (int r = 0; r < ROWS; r++) {
            assert_int_equal(mopt_weight_row_f32(w, r, row, &err), MOPT_OK);
            ref[r] = mag[r] = 0;
            for (int i = 0; i < IN; i++) ref[r] += (double)row[i] * xq[i] * xd[i / 256], mag[r] += fabs((double)row[i] * xq[i] * xd[i / 256]);
        }
        for (size_t k = 0; k < 3; k++) {
            if (!mopt_kernels_supported(sets[k])) continue;
            void (*f)(const uint8_t *, size_t, int64_t, const int8_t *, const float *, const int16_t *, int64_t, float *) =
                bits[bi] == 2 ? sets[k]->gemv_q2k_q8 : bits[bi] == 3 ? sets[k]->gemv_q3k_q8 : bits[bi] == 4 ? sets[k]->gemv_q4k_q8
                : bits[bi] == 5 ? sets[k]->gemv_q5k_q8 : sets[k]->gemv_q6k_q8;
            kquant_x_for(k, bits[bi], xq, IN, xo);
            f(blocks, (size_t)NSB * (size_t)bb, ROWS, xo, xd, xs16, NSB, y);
            for (int r = 0; r < ROWS; r++) { /* the prefill's widening: the very floats the row decodes to */
                sets[k]->dequant_kquant(blocks + (size_t)r * (size_t)NSB * (size_t)bb, bits[bi], NSB, wide);
                assert_int_equal(mopt_weight_row_f32(w, r, row, &err), MOPT_OK);
                if (memcmp(wide, row, (size_t)IN * sizeof *row)) fprintf(stderr, "%s q%d_k row %d: widened values differ\n", sets[k]->name, bits[bi], r);
                assert_memory_equal(wide, row, (size_t)IN * sizeof *row);
            }
            for (int r = 0; r < ROWS; r++) {
                if (fabs(y[r] - ref[r]) > 1e-6 * mag[r] + 1e-6)
                    fprintf(stderr, "%s q%d_k row %d of %d super-blocks: %.9g against %.9g\n", sets[k]->name, bits[bi], r, NSB, y[r], ref[r]);
                assert_true(fabs(y[r] - ref[r]) <= 1e-6 * mag[r] + 1e-6);
            }
        }
        mopt_tensor_free(w);
        free(blocks);
    }
    free(xq), free(xo), free(xs16), free(xd), free(row), free(y), free(wide), free(ref), free(mag);
}

/* 5 rows of 3 super-blocks */
static void test_kquant_decode_kernels_match_float64_in_every_set(void **s) { check_kquant_kernels(5, 3); }

/* 3 rows of 130 super-blocks (33280 inputs, past a 70B model's FFN): x laid out over the whole row */
static void test_kquant_decode_kernels_take_rows_of_33280_inputs(void **s) { check_kquant_kernels(3, 130); }

/* The read-bandwidth probe's sum is exact in every set, whatever the length's remainder against the vector width */
static void test_word_sums_are_exact_in_every_set(void **s) {
    enum { N = 1001 };
    uint64_t *w = malloc(N * sizeof *w);
    assert_non_null(w);
    for (size_t i = 0; i < N; i++) { /* words that carry past 2^64 when summed */
        (void)frand();
        w[i] = ((uint64_t)rng << 32) ^ (0x9E3779B97F4A7C15ull * (i + 1));
    }
    for (size_t k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (size_t n = 0; n <= 67; n++) {
            uint64_t want = 0;
            for (size_t i = 0; i < n; i++) want += w[i];
            assert_true(sets[k]->sum_u64(w, n) == want);
        }
        uint64_t want = 0;
        for (size_t i = 3; i < N; i++) want += w[i];
        assert_true(sets[k]->sum_u64(w + 3, N - 3) == want); /* an unaligned start */
    }
    free(w);
}

static void test_dispatch_picks_a_supported_set(void **s) {
    const mopt_kernels *k = mopt_kernels_get();
    assert_non_null(k);
    assert_true(mopt_kernels_supported(k));
    assert_string_equal(mopt_cpu_kernels_name(), k->name);
}

extern char *openblas_get_corename(void);

/* The GEMM name is OpenBLAS's kernel set, and says when OPENBLAS_CORETYPE rather than OpenBLAS chose it */
static void test_gemm_name_says_who_chose_the_kernels(void **s) {
    (void)s;
    const char *env = getenv("OPENBLAS_CORETYPE");
    char was[128] = "", want[160];
    if (env) snprintf(was, sizeof was, "%s", env);
    snprintf(want, sizeof want, "OpenBLAS %s", openblas_get_corename());
    unsetenv("OPENBLAS_CORETYPE");
    assert_string_equal(mopt_cpu_gemm_name(), want);
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    strncat(want, " (set by OPENBLAS_CORETYPE)", sizeof want - strlen(want) - 1);
    assert_string_equal(mopt_cpu_gemm_name(), want);
    if (env) setenv("OPENBLAS_CORETYPE", was, 1);
    else unsetenv("OPENBLAS_CORETYPE");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_name_says_who_chose_the_kernels),
        cmocka_unit_test(test_dot_kernels_match_float64_reference),
        cmocka_unit_test(test_half_conversions_follow_ieee),
        cmocka_unit_test(test_sp24_dot_matches_float64_on_every_position_pair),
        cmocka_unit_test(test_sp24_int4_dot_matches_float64),
        cmocka_unit_test(test_e4m3_rows_widen_exactly_and_dot_in_place),
        cmocka_unit_test(test_e4m3_activation_rounding_matches_the_scalar_conversion),
        cmocka_unit_test(test_batched_dots_equal_each_tokens_own_dot_bit_for_bit),
        cmocka_unit_test(test_row_blocks_against_token_batches_equal_each_dot_bit_for_bit),
        cmocka_unit_test(test_int_gemv_of_several_tokens_equals_each_token_alone_bit_for_bit),
        cmocka_unit_test(test_kquant_gemv_of_several_tokens_equals_each_token_alone_bit_for_bit),
        cmocka_unit_test(test_int8_block_quantization_rounds_as_defined),
        cmocka_unit_test(test_kquant_decode_kernels_match_float64_in_every_set),
        cmocka_unit_test(test_kquant_decode_kernels_take_rows_of_33280_inputs),
        cmocka_unit_test(test_swiglu_matches_float64_within_4_ulp),
        cmocka_unit_test(test_attention_kernels_match_float64),
        cmocka_unit_test(test_word_sums_are_exact_in_every_set),
        cmocka_unit_test(test_dispatch_picks_a_supported_set),
    };
    return test_run_tests(tests, NULL, NULL);
}
