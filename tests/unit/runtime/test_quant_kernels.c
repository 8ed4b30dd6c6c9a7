/* Packed weight formats and the CPU kernels that read them, against float64
 * references on shapes that are not multiples of the block, group or SIMD
 * width (stories260K's FFN is 172), for every kernel set the CPU runs. */
#include <math.h>

#include "backend_impl.h"
#include "kernels.h"
#include "mopt/quant.h"
#include "testutil.h"

static uint32_t rng = 88172645u;
static uint32_t urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}
static float frand(void) { return (float)((double)urand() / 4294967296.0 * 2.0 - 1.0); }

static const mopt_kernels *sets[] = {&mopt_kernels_ref, &mopt_kernels_avx2, &mopt_kernels_avx512};

/* Runs the packed linear with every supported kernel set and compares to ref[T, out]. */
static void check_linear(const mopt_tensor *w, const float *x, int T, const double *ref, double tol, const char *what) {
    const int64_t out = w->ne[1];
    float *y = malloc((size_t)T * out * sizeof *y);
    for (int k = 0; k < 3; k++) {
        if (!mopt_kernels_supported(sets[k])) continue;
        for (int threads = 1; threads <= 2; threads++) {
            mopt_error err = {0};
            assert_int_equal(mopt_cpu_linear_once(threads, sets[k], w, NULL, x, T, y, &err), MOPT_OK);
            for (int64_t i = 0; i < T * out; i++) {
                double e = fabs(y[i] - ref[i]);
                if (e > tol * (1 + fabs(ref[i]))) {
                    fprintf(stderr, "%s [%s, %d threads, T=%d]: y[%lld] = %g, reference %g\n", what, sets[k]->name,
                            threads, T, (long long)i, y[i], ref[i]);
                    fail();
                }
            }
        }
    }
    free(y);
}

static void test_qint_pack_roundtrips_levels(void **s) {
    const int bits[] = {2, 3, 4, 8};
    for (int bi = 0; bi < 4; bi++) {
        const int64_t out = 3, in = 172;
        uint8_t *q = malloc((size_t)(out * in));
        for (int64_t i = 0; i < out * in; i++) q[i] = (uint8_t)(urand() % (1u << bits[bi]));
        float sc[3 * 6];
        uint8_t z[3 * 6];
        for (int i = 0; i < 18; i++) sc[i] = 0.01f * (float)(i + 1), z[i] = (uint8_t)(i % (1 << bits[bi]));
        mopt_error err = {0};
        mopt_tensor *t = mopt_qint_pack("w", out, in, bits[bi], 32, q, sc, z, NULL, &err);
        assert_non_null(t);
        for (int64_t r = 0; r < out; r++)
            for (int64_t c = 0; c < in; c++) assert_int_equal(mopt_qint_get(t, r, c), q[r * in + c]);
        /* storage: packed bits plus f16 scales and u8 zeros, nothing else */
        int64_t nblk = (in + 31) / 32;
        assert_int_equal(mopt_weight_storage_bytes(t), out * nblk * mopt_qint_block_bytes(bits[bi]) + out * 6 * 3);
        float row[172];
        assert_int_equal(mopt_weight_row_f32(t, 1, row, &err), MOPT_OK);
        for (int64_t c = 0; c < in; c++) {
            int64_t g = c / 32;
            float want = ((float)q[in + c] - z[6 + g]) * mopt_f16_to_f32(mopt_f32_to_f16(sc[6 + g]));
            assert_true(row[c] == want);
        }
        mopt_tensor_free(t);
        free(q);
    }
}

static void test_bad_packing_is_refused(void **s) {
    uint8_t q[64] = {0};
    float sc[2] = {1, 1};
    mopt_error err = {0};
    assert_null(mopt_qint_pack("w", 1, 64, 5, 32, q, sc, NULL, NULL, &err));
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "5-bit packing is not supported");
    assert_null(mopt_qint_pack("w", 1, 64, 4, 48, q, sc, NULL, NULL, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "group size 48 must be a multiple of 32");
    q[3] = 16;
    assert_null(mopt_qint_pack("w", 1, 64, 4, 32, q, sc, NULL, NULL, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "exceeds 15");
}

/* x rounded to int8 per 32 values as the 4-bit decode kernels take it: scale
 * d = max|x| / 127 (1 for an all-zero block), levels round(x / d) to nearest
 * even, each level times d back in float. */
static float *q8_blocks(const float *x, int64_t n) {
    float *r = malloc((size_t)n * sizeof *r);
    for (int64_t b = 0; b < n; b += 32) {
        float mx = 0;
        for (int i = 0; i < 32; i++) mx = fmaxf(mx, fabsf(x[b + i]));
        const float d = mx > 0 ? mx / 127.0f : 1.0f, inv = 1.0f / d;
        for (int i = 0; i < 32; i++) r[b + i] = rintf(fmaxf(-127.0f, fminf(127.0f, x[b + i] * inv))) * d;
    }
    return r;
}

/* Every bit width, group size and shape against float64; 4- and 8-bit rows that are
 * whole groups of whole blocks against x as int8 per 32 values (llama.cpp's Q8_0
 * activations), and within that rounding's bound of the float result. */
static void test_qint_linear_matches_float64(void **s) {
    const int bits[] = {2, 3, 4, 8};
    const int64_t ins[] = {32, 96, 172, 256, 300};
    const int32_t groups[] = {32, 64, 128, -1};
    const int Ts[] = {1, 2, 5, 19}; /* decode (up to 8 tokens) and prefill */
    for (int bi = 0; bi < 4; bi++)
        for (int ii = 0; ii < 5; ii++)
            for (int gi = 0; gi < 4; gi++)
                for (int sym = 0; sym < 2; sym++) {
                    const int64_t out = 37, in = ins[ii];
                    const int32_t gs = groups[gi];
                    const int64_t ng = mopt_qint_n_groups(in, gs);
                    uint8_t *q = malloc((size_t)(out * in)), *z = malloc((size_t)(out * ng));
                    float *sc = malloc((size_t)(out * ng) * sizeof *sc);
                    for (int64_t i = 0; i < out * in; i++) q[i] = (uint8_t)(urand() % (1u << bits[bi]));
                    for (int64_t i = 0; i < out * ng; i++) {
                        sc[i] = 0.001f + 0.05f * fabsf(frand());
                        z[i] = (uint8_t)(urand() % (1u << bits[bi]));
                    }
                    mopt_error err = {0};
                    mopt_tensor *w = mopt_qint_pack("w", out, in, bits[bi], gs, q, sc, sym ? NULL : z, NULL, &err);
                    assert_non_null(w);
                    for (int ti = 0; ti < 4; ti++) {
                        int T = Ts[ti];
                        float *x = malloc((size_t)(T * in) * sizeof *x);
                        double *ref = malloc((size_t)(T * out) * sizeof *ref);
                        for (int64_t i = 0; i < T * in; i++) x[i] = frand();
                        /* 4- and 8-bit rows of whole groups of whole blocks run against x as int8 per 32 values */
                        const int a8 = (bits[bi] == 4 || bits[bi] == 8) && in % 32 == 0 && in % (gs > 0 ? gs : in) == 0;
                        float *xa = a8 ? q8_blocks(x, T * in) : x;
                        double *bound = calloc((size_t)(T * out), sizeof *bound);
                        for (int t = 0; t < T; t++)
                            for (int64_t o = 0; o < out; o++) {
                                double acc = 0;
                                for (int64_t c = 0; c < in; c++) {
                                    int64_t g = gs > 0 ? c / gs : 0;
                                    double zz = sym ? (double)(1 << (bits[bi] - 1)) : z[o * ng + g];
                                    double ss = mopt_f16_to_f32(mopt_f32_to_f16(sc[o * ng + g]));
                                    acc += ((double)q[o * in + c] - zz) * ss * xa[t * in + c];
                                    bound[t * out + o] += fabs(((double)q[o * in + c] - zz) * ss * (xa[t * in + c] - x[t * in + c]));
                                }
                                ref[t * out + o] = acc;
                            }
                        char what[64];
                        snprintf(what, sizeof what, "int%d g%d %s in=%lld", bits[bi], gs, sym ? "sym" : "asym", (long long)in);
                        check_linear(w, x, T, ref, 1e-4, what);
                        if (a8) { /* and the int8 rounding of x moves y by no more than its own size */
                            float *y = malloc((size_t)(T * out) * sizeof *y);
                            mopt_error err = {0};
                            assert_int_equal(mopt_cpu_linear_once(2, NULL, w, NULL, x, T, y, &err), MOPT_OK);
                            for (int t = 0; t < T; t++)
                                for (int64_t o = 0; o < out; o++) {
                                    double exact = 0;
                                    for (int64_t c = 0; c < in; c++) {
                                        int64_t g = gs > 0 ? c / gs : 0;
                                        double zz = sym ? (double)(1 << (bits[bi] - 1)) : z[o * ng + g];
                                        exact += ((double)q[o * in + c] - zz) * mopt_f16_to_f32(mopt_f32_to_f16(sc[o * ng + g])) * x[t * in + c];
                                    }
                                    assert_true(fabs(y[t * out + o] - exact) <= bound[t * out + o] + 1e-4 * (1 + fabs(exact)));
                                }
                            free(y);
                            free(xa);
                        }
                        free(bound);
                        free(x);
                        free(ref);
                    }
                    mopt_tensor_free(w);
                    free(q);
                    free(z);
                    free(sc);
                }
}

static void test_act_order_g_idx_linear(void **s) {
    const int64_t out = 9, in = 128;
    uint8_t q[9 * 128], z[9 * 4];
    float sc[9 * 4];
    int32_t gidx[128];
    for (int64_t i = 0; i < out * in; i++) q[i] = (uint8_t)(urand() % 16);
    for (int i = 0; i < 36; i++) sc[i] = 0.01f * (float)(1 + i % 7), z[i] = (uint8_t)(urand() % 16);
    for (int c = 0; c < in; c++) gidx[c] = (int32_t)(urand() % 4); /* non-monotonic, as act-order makes it */
    mopt_error err = {0};
    mopt_tensor *w = mopt_qint_pack("w", out, in, 4, 32, q, sc, z, gidx, &err);
    assert_non_null(w);
    float x[3 * 128];
    double ref[3 * 9];
    for (int i = 0; i < 3 * 128; i++) x[i] = frand();
    for (int T = 1; T <= 3; T += 2) {
        for (int t = 0; t < T; t++)
            for (int o = 0; o < out; o++) {
                double acc = 0;
                for (int c = 0; c < in; c++)
                    acc += ((double)q[o * in + c] - z[o * 4 + gidx[c]]) * mopt_f16_to_f32(mopt_f32_to_f16(sc[o * 4 + gidx[c]])) * x[t * in + c];
                ref[t * out + o] = acc;
            }
        check_linear(w, x, T, ref, 1e-4, "int4 act-order");
    }
    mopt_tensor_free(w);
}

static void test_w8a8_linear_matches_int_reference(void **s) {
    const int64_t ins[] = {7, 64, 172, 300};
    for (int ii = 0; ii < 4; ii++) {
        const int64_t out = 21, in = ins[ii];
        int8_t *q = malloc((size_t)(out * in));
        float *sc = malloc((size_t)out * sizeof *sc);
        for (int64_t i = 0; i < out * in; i++) q[i] = (int8_t)((int)(urand() % 255) - 127);
        for (int64_t o = 0; o < out; o++) sc[o] = 0.001f + 0.01f * fabsf(frand());
        mopt_error err = {0};
        mopt_tensor *w = mopt_w8a8_pack("w", out, in, q, sc, &err);
        assert_non_null(w);
        for (int ti = 0; ti < 3; ti++) {
            const int T = (int[]){1, 4, 13}[ti]; /* decode, and prefill's integer GEMM where in is whole blocks */
            float *x = malloc((size_t)(T * in) * sizeof *x);
            double *ref = malloc((size_t)(T * out) * sizeof *ref);
            for (int64_t i = 0; i < T * in; i++) x[i] = 3 * frand();
            for (int t = 0; t < T; t++) {
                double mx = 0;
                for (int64_t i = 0; i < in; i++) mx = fmax(mx, fabs(x[t * in + i]));
                double sx = (float)(mx / 127.0);
                for (int64_t o = 0; o < out; o++) {
                    int64_t acc = 0;
                    for (int64_t i = 0; i < in; i++) acc += (int64_t)q[o * in + i] * lrint(x[t * in + i] / sx);
                    ref[t * out + o] = (double)acc * sc[o] * sx;
                }
            }
            check_linear(w, x, T, ref, 1e-4, "w8a8");
            free(x);
            free(ref);
        }
        mopt_tensor_free(w);
        free(q);
        free(sc);
    }
}

static void test_e4m3_conversion(void **s) {
    assert_int_equal(mopt_f32_to_e4m3(1.0f), 0x38);
    assert_int_equal(mopt_f32_to_e4m3(448.0f), 0x7e);
    assert_int_equal(mopt_f32_to_e4m3(1e6f), 0x7e);   /* saturates */
    assert_int_equal(mopt_f32_to_e4m3(-2.0f), 0xc0);
    assert_int_equal(mopt_f32_to_e4m3(ldexpf(1, -9)), 0x01); /* smallest subnormal */
    assert_int_equal(mopt_f32_to_e4m3(1.0625f), 0x38); /* tie to even mantissa 0 */
    assert_int_equal(mopt_f32_to_e4m3(1.1875f), 0x3a); /* tie to even mantissa 2 */
    assert_true(mopt_e4m3_to_f32(0x7e) == 448.0f);
    assert_true(isnan(mopt_e4m3_to_f32(0x7f)));
    for (int b = 0; b < 256; b++) {
        if ((b & 0x7f) == 0x7f) continue;
        float f = mopt_e4m3_to_f32((uint8_t)b);
        if (b == 0x80) continue; /* -0 -> 0x80 as well, but signbit of -0 is kept */
        assert_int_equal(mopt_f32_to_e4m3(f), b);
    }
}

static void test_fp8_linear_matches_float64(void **s) {
    const int64_t out = 13, in = 172;
    uint8_t *q = malloc((size_t)(out * in));
    float sc[13];
    for (int64_t i = 0; i < out * in; i++) {
        q[i] = (uint8_t)(urand() & 0xff);
        if ((q[i] & 0x7f) == 0x7f) q[i] = 0x10;
    }
    for (int o = 0; o < out; o++) sc[o] = 0.001f * (float)(o + 1);
    const uint32_t modes[] = {0, MOPT_QUANT_ACT_PER_TOKEN, MOPT_QUANT_ACT_STATIC};
    for (int mi = 0; mi < 3; mi++) {
        mopt_error err = {0};
        mopt_tensor *w = mopt_fp8_pack("w", out, in, q, sc, out, modes[mi], 0.01f, &err);
        assert_non_null(w);
        for (int T = 1; T <= 4; T += 3) {
            float x[4 * 172];
            double ref[4 * 13];
            for (int i = 0; i < T * in; i++) x[i] = frand();
            for (int t = 0; t < T; t++) {
                double mx = 0;
                for (int i = 0; i < in; i++) mx = fmax(mx, fabs(x[t * in + i]));
                float as = modes[mi] == MOPT_QUANT_ACT_STATIC ? 0.01f : (float)(mx / 448.0);
                for (int o = 0; o < out; o++) {
                    double acc = 0;
                    for (int i = 0; i < in; i++) {
                        double xv = modes[mi] ? mopt_e4m3_to_f32(mopt_f32_to_e4m3(x[t * in + i] / as)) * as : x[t * in + i];
                        acc += mopt_e4m3_to_f32(q[o * in + i]) * (double)sc[o] * xv;
                    }
                    ref[t * out + o] = acc;
                }
            }
            check_linear(w, x, T, ref, 1e-4, "fp8");
        }
        mopt_tensor_free(w);
    }
    free(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qint_pack_roundtrips_levels),
        cmocka_unit_test(test_bad_packing_is_refused),
        cmocka_unit_test(test_qint_linear_matches_float64),
        cmocka_unit_test(test_act_order_g_idx_linear),
        cmocka_unit_test(test_w8a8_linear_matches_int_reference),
        cmocka_unit_test(test_e4m3_conversion),
        cmocka_unit_test(test_fp8_linear_matches_float64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
