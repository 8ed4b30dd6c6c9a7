/* Packed weight formats and the CPU kernels that read them, against float64
 * references on shapes that are not multiples of the block, group or SIMD
 * width (stories260K's FFN is 172), for every kernel set the CPU runs. */
#include <math.h>

#include "linear_check.h"
#include "mopt/quant.h"

static uint32_t rng = 88172645u;
static uint32_t urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}
static float frand(void) { return (float)((double)urand() / 4294967296.0 * 2.0 - 1.0); }

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

/* x rounded to int8 per `bs` values as the integer decode kernels take it (32
 * for QINT, 256 for k-quants): scale d = max|x| / 127 (1 for an all-zero
 * block), levels round(x / d) to nearest even, each level times d back in float. */
static float *q8_blocks(const float *x, int64_t n, int bs) {
    float *r = malloc((size_t)n * sizeof *r);
    for (int64_t b = 0; b < n; b += bs) {
        float mx = 0;
        for (int i = 0; i < bs; i++) mx = fmaxf(mx, fabsf(x[b + i]));
        const float d = mx > 0 ? mx / 127.0f : 1.0f;
        for (int i = 0; i < bs; i++) r[b + i] = rintf(fmaxf(-127.0f, fminf(127.0f, x[b + i] / d))) * d; /* the float quotient */
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
                        float *xa = a8 ? q8_blocks(x, T * in, 32) : x;
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

/* A token's output does not depend on the tokens decoded beside it (a server's batch): 2-8 tokens through a
 * packed linear give each token the bits of that token run alone, for 4- and 8-bit rows of groups of 32, 128 and
 * whole rows, symmetric and not, and 2-bit rows (the float path). */
static void test_qint_linear_gives_each_token_of_a_batch_the_bits_it_gets_alone(void **s) {
    (void)s;
    const int bits[] = {2, 4, 8};
    const int32_t groups[] = {32, 128, -1};
    const int64_t out = 37, in = 768;
    for (int bi = 0; bi < 3; bi++)
        for (int gi = 0; gi < 3; gi++)
            for (int sym = 0; sym < 2; sym++) {
                const int64_t ng = mopt_qint_n_groups(in, groups[gi]);
                uint8_t *q = malloc((size_t)(out * in)), *z = malloc((size_t)(out * ng));
                float *sc = malloc((size_t)(out * ng) * sizeof *sc), *x = malloc((size_t)(8 * in) * sizeof *x);
                float y[8 * 37], one[37];
                for (int64_t i = 0; i < out * in; i++) q[i] = (uint8_t)(urand() % (1u << bits[bi]));
                for (int64_t i = 0; i < out * ng; i++) sc[i] = 0.001f + 0.05f * fabsf(frand()), z[i] = (uint8_t)(urand() % (1u << bits[bi]));
                for (int64_t i = 0; i < 8 * in; i++) x[i] = frand();
                mopt_error err = {0};
                mopt_tensor *w = mopt_qint_pack("w", out, in, bits[bi], groups[gi], q, sc, sym ? NULL : z, NULL, &err);
                assert_non_null(w);
                for (int32_t T = 2; T <= 8; T++) {
                    assert_int_equal(mopt_cpu_linear_once(2, NULL, w, NULL, x, T, y, &err), MOPT_OK);
                    for (int32_t t = 0; t < T; t++) {
                        assert_int_equal(mopt_cpu_linear_once(2, NULL, w, NULL, x + t * in, 1, one, &err), MOPT_OK);
                        assert_memory_equal(y + t * out, one, sizeof one);
                    }
                }
                mopt_tensor_free(w);
                free(q), free(z), free(sc), free(x);
            }
}

/* The k-quant linears (Q2_K ... Q6_K rows) against 1-8 tokens (a server's batch, speculative verification): each
 * token gets the bits it gets alone, and that is its dot with x as int8 per 256 values (llama.cpp's Q8_K) within
 * 1e-5 of the products' magnitude in float64. Random bytes are valid blocks once d and dmin are finite. */
static void test_kquant_linear_gives_each_token_of_a_batch_the_bits_it_gets_alone(void **s) {
    (void)s;
    const int64_t out = 21, in = 512;
    for (int bits = 2; bits <= 6; bits++) {
        const int32_t bb = mopt_kquant_block_bytes(bits);
        const int64_t nblk = out * (in / 256);
        uint8_t *blocks = malloc((size_t)(nblk * bb));
        for (int64_t i = 0; i < nblk * bb; i++) blocks[i] = (uint8_t)(urand() & 0xFF);
        for (int64_t b = 0; b < nblk; b++) {
            const uint16_t d = mopt_f32_to_f16(0.005f + 0.01f * fabsf(frand())), dm = mopt_f32_to_f16(0.01f * fabsf(frand()));
            const int at = bits == 2 ? 80 : bits == 3 ? 108 : bits == 6 ? 208 : 0;
            memcpy(blocks + b * bb + at, &d, 2);
            if (bits != 3 && bits != 6) memcpy(blocks + b * bb + at + 2, &dm, 2);
        }
        mopt_error err = {0};
        mopt_tensor *w = mopt_kquant_pack("w", out, in, bits, blocks, &err);
        assert_non_null(w);
        float *x = malloc((size_t)(8 * in) * sizeof *x), *row = malloc((size_t)in * sizeof *row);
        for (int64_t i = 0; i < 8 * in; i++) x[i] = frand();
        float *xa = q8_blocks(x, 8 * in, 256);
        float y[8 * 21], one[21];
        for (int32_t T = 1; T <= 8; T++) {
            assert_int_equal(mopt_cpu_linear_once(2, NULL, w, NULL, x, T, y, &err), MOPT_OK);
            for (int32_t t = 0; t < T; t++) {
                assert_int_equal(mopt_cpu_linear_once(2, NULL, w, NULL, x + t * in, 1, one, &err), MOPT_OK);
                assert_memory_equal(y + t * out, one, sizeof one);
                for (int64_t o = 0; o < out; o++) {
                    assert_int_equal(mopt_weight_row_f32(w, o, row, &err), MOPT_OK);
                    double ref = 0, mag = 0;
                    for (int64_t i = 0; i < in; i++) ref += (double)row[i] * xa[t * in + i], mag += fabs((double)row[i] * xa[t * in + i]);
                    if (fabs(one[o] - ref) > 1e-5 * mag) fprintf(stderr, "q%d_k row %ld token %d: %.9g against %.9g\n", bits, (long)o, t, one[o], ref);
                    assert_true(fabs(one[o] - ref) <= 1e-5 * mag);
                }
            }
        }
        mopt_tensor_free(w);
        free(blocks), free(x), free(row), free(xa);
    }
}

/* 4- and 8-bit rows longer than the GEMV's per-call buffers (x in lane order and the pairs' x scales, 1024 blocks)
 * take the path that goes pair by pair (4 bits: shuffling each pair's x where it is used): against float64 with x as
 * int8 per 32 values, for groups of 128 and of one block (Q4_0's and Q8_0's), symmetric and not, decode (one token)
 * and a few tokens. */
static void wide_rows_match_float64(int bits) {
    const int64_t out = 3;
    const int64_t ins[] = {1024 * 32, 1024 * 32 + 128}; /* the last that fits, and one group past it */
    const int32_t groups[] = {128, 32};
    for (int ii = 0; ii < 2; ii++)
        for (int gi = 0; gi < 2; gi++)
            for (int sym = 0; sym < 2; sym++) {
                const int64_t in = ins[ii], ng = in / groups[gi];
                uint8_t *q = malloc((size_t)(out * in)), *z = malloc((size_t)(out * ng));
                float *sc = malloc((size_t)(out * ng) * sizeof *sc);
                for (int64_t i = 0; i < out * in; i++) q[i] = (uint8_t)(urand() % (1u << bits));
                for (int64_t i = 0; i < out * ng; i++) {
                    sc[i] = 0.001f + 0.05f * fabsf(frand());
                    z[i] = (uint8_t)(urand() % (1u << bits));
                }
                mopt_error err = {0};
                mopt_tensor *w = mopt_qint_pack("w", out, in, bits, groups[gi], q, sc, sym ? NULL : z, NULL, &err);
                assert_non_null(w);
                const int T = 3;
                float *x = malloc((size_t)(T * in) * sizeof *x);
                for (int64_t i = 0; i < T * in; i++) x[i] = frand();
                float *xa = q8_blocks(x, T * in, 32);
                double *ref = malloc((size_t)(T * out) * sizeof *ref);
                for (int t = 0; t < T; t++)
                    for (int64_t o = 0; o < out; o++) {
                        double acc = 0;
                        for (int64_t c = 0; c < in; c++) {
                            const int64_t g = c / groups[gi];
                            const double zz = sym ? (double)(1 << (bits - 1)) : z[o * ng + g];
                            acc += ((double)q[o * in + c] - zz) * mopt_f16_to_f32(mopt_f32_to_f16(sc[o * ng + g])) * xa[t * in + c];
                        }
                        ref[t * out + o] = acc;
                    }
                char what[64];
                snprintf(what, sizeof what, "int%d g%d %s in=%lld", bits, groups[gi], sym ? "sym" : "asym", (long long)in);
                check_linear(w, x, 1, ref, 1e-4, what);
                check_linear(w, x, T, ref, 1e-4, what);
                mopt_tensor_free(w);
                free(q);
                free(z);
                free(sc);
                free(x);
                free(xa);
                free(ref);
            }
}

static void test_int4_int8_rows_past_the_gemv_buffers_match_float64(void **s) {
    (void)s;
    wide_rows_match_float64(4);
    wide_rows_match_float64(8);
}

/* E4M3 rounding with scale s, as the OCP FP8 definition gives it: the nearest of the grid's values (3 mantissa bits,
 * subnormals 2^-9 apart below 2^-6, largest 448) to v / s (the float quotient, as the kernels and torch form it),
 * ties to the even mantissa, times s; independent of mopt's conversion, which the kernels use. */
static double e4m3_ref(double v, double s) {
    const double a = fabs((double)((float)v / (float)s));
    const double step = a < 0x1p-6 ? 0x1p-9 : ldexp(1.0, ilogb(a) - 3);
    double r = nearbyint(a / step) * step; /* the default rounding mode: half to even */
    if (r > 448) r = 448;
    return copysign(r, v) * s;
}

/* W4A8: int4 rows with activations rounded to E4M3 per token (max|x| / 448) take the float path, decode and
 * prefill, against float64 with the reference's own E4M3 rounding of x. With W4A8_AWQ's flags (MOPT_QUANT_W_FP8 and
 * a static act_scale) each weight is rounded to E4M3 too, e4m3((q - 8) s / g) g, and x with the calibrated scale. */
static void test_w4a8_linear_rounds_activations_to_e4m3(void **s) {
    const int64_t out = 29, in = 256;
    const int32_t gs = 128;
    const int64_t ng = in / gs;
    uint8_t *q = malloc((size_t)(out * in));
    float sc[29 * 2];
    for (int64_t i = 0; i < out * in; i++) q[i] = (uint8_t)(urand() % 16);
    for (int64_t i = 0; i < out * ng; i++) sc[i] = 0.001f + 0.05f * fabsf(frand());
    for (int awq = 0; awq < 2; awq++) {
        mopt_error err = {0};
        mopt_tensor *w = mopt_qint_pack("w", out, in, 4, gs, q, sc, NULL, NULL, &err);
        assert_non_null(w);
        const float g = 8 * 0.051f / 448, act = 25.0f / 448; /* W4A8_AWQ: max|w| / 448 and the inputs' max / 448 */
        if (awq) {
            w->quant->flags |= MOPT_QUANT_W_FP8 | MOPT_QUANT_ACT_STATIC;
            w->quant->global_scale = g;
            w->quant->act_scale = act;
        } else {
            w->quant->flags |= MOPT_QUANT_ACT_PER_TOKEN;
        }
        for (int T = 1; T <= 12; T += 11) {
            float *x = malloc((size_t)(T * in) * sizeof *x);
            double *ref = malloc((size_t)(T * out) * sizeof *ref);
            for (int64_t i = 0; i < T * in; i++) x[i] = frand() * (i % 29 == 0 ? 20.0f : 1.0f);
            for (int t = 0; t < T; t++) {
                double mx = 0;
                for (int64_t c = 0; c < in; c++) mx = fmax(mx, fabs(x[t * in + c]));
                const float as = awq ? act : (float)(mx / 448.0);
                for (int64_t o = 0; o < out; o++) {
                    double acc = 0;
                    for (int64_t c = 0; c < in; c++) {
                        const double xq = e4m3_ref(x[t * in + c], as);
                        double wv = ((double)q[o * in + c] - 8) * mopt_f16_to_f32(mopt_f32_to_f16(sc[o * ng + c / gs]));
                        if (awq) wv = e4m3_ref((float)wv, g);
                        acc += wv * xq;
                    }
                    ref[t * out + o] = acc;
                }
            }
            check_linear(w, x, T, ref, 1e-4, awq ? "w4a8_awq" : "w4a8");
            /* and every row decodes to the same widened values */
            float *row = malloc((size_t)in * sizeof *row);
            for (int64_t o = 0; awq && o < out; o++) {
                assert_int_equal(mopt_weight_row_f32(w, o, row, &err), MOPT_OK);
                for (int64_t c = 0; c < in; c++)
                    assert_true(row[c] == (float)e4m3_ref((float)(((double)q[o * in + c] - 8) *
                                                                  mopt_f16_to_f32(mopt_f32_to_f16(sc[o * ng + c / gs]))),
                                                          g));
            }
            free(row);
            free(x);
            free(ref);
        }
        mopt_tensor_free(w);
    }
    free(q);
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
                float mx = 0;
                for (int64_t i = 0; i < in; i++) mx = fmaxf(mx, fabsf(x[t * in + i]));
                const float sx = mx / 127.0f; /* and x / sx rounded as a float quotient, as mopt/quant.h defines it */
                for (int64_t o = 0; o < out; o++) {
                    int64_t acc = 0;
                    for (int64_t i = 0; i < in; i++) acc += (int64_t)q[o * in + i] * lrintf(x[t * in + i] / sx);
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

/* 2:4 int8 and dense W8A8 holding the same levels and scales: the same bits out, in decode (both read the rows in
 * place) and in prefill (W8A8's integer GEMM; 2:4's rows widened to their levels for OpenBLAS, whose sums of integer
 * products are exact), since both scale each exact sum as sum * s * xs. */
static void test_sp24_int8_linear_equals_w8a8_to_the_bit(void **s) {
    const int64_t ins[] = {64, 256};
    for (int ii = 0; ii < 2; ii++) {
        const int64_t out = 37, in = ins[ii];
        int8_t *q = malloc((size_t)(out * in));
        float *sc = malloc((size_t)out * sizeof *sc);
        for (int64_t i = 0; i < out * in; i++) q[i] = (i % 4 == 1 || i % 4 == 2) ? 0 : (int8_t)((int)(urand() % 255) - 127);
        for (int64_t o = 0; o < out; o++) sc[o] = 0.001f + 0.01f * fabsf(frand());
        mopt_error err = {0};
        mopt_tensor *dense = mopt_w8a8_pack("w", out, in, q, sc, &err), *sparse = mopt_sp24_pack_i8("w", out, in, q, sc, &err);
        assert_non_null(dense);
        assert_non_null(sparse);
        for (int ti = 0; ti < 4; ti++) {
            const int T = (int[]){1, 4, 13, 40}[ti];
            float *x = malloc((size_t)(T * in) * sizeof *x), *yd = malloc((size_t)(T * out) * sizeof *yd), *ys = malloc((size_t)(T * out) * sizeof *ys);
            for (int64_t i = 0; i < T * in; i++) x[i] = 3 * frand();
            assert_int_equal(mopt_cpu_linear_once(2, NULL, dense, NULL, x, T, yd, &err), MOPT_OK);
            assert_int_equal(mopt_cpu_linear_once(2, NULL, sparse, NULL, x, T, ys, &err), MOPT_OK);
            assert_memory_equal(yd, ys, (size_t)(T * out) * sizeof *yd);
            free(x), free(yd), free(ys);
        }
        mopt_tensor_free(dense);
        mopt_tensor_free(sparse);
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

/* --- k-quants ---------------------------------------------------------------- */

/* One random k-quant super-block written from its parts as ggml's quantize_row_q{2,3,4,5,6}_K_ref lay them out, and
 * its 256 values in float64 from those parts (d and dmin rounded to f16 first, as stored). */
static void kquant_block(int bits, uint8_t *blk, double *val) {
    const double d = mopt_f16_to_f32(mopt_f32_to_f16(0.001f + 0.01f * fabsf(frand())));
    const double dmin = mopt_f16_to_f32(mopt_f32_to_f16(0.002f * fabsf(frand())));
    uint8_t L[256];
    if (bits <= 3) { /* Q2_K: scales[16] (scale | min << 4), qs[64], d, dmin; Q3_K: hmask[32], qs[64], scales[12], d */
        const int three = bits == 3;
        uint16_t hd = mopt_f32_to_f16((float)d), hm = mopt_f32_to_f16((float)dmin);
        int sc[16], m[16] = {0};
        memset(blk, 0, three ? 110 : 84);
        for (int j = 0; j < 16; j++) {
            if (three) { /* 6-bit scale, stored + 32: low nibble in byte j % 8 (high nibble for j >= 8), top bits in byte 8 + j % 4 */
                const int u = (int)(urand() % 64);
                sc[j] = u - 32;
                blk[96 + j % 8] |= (uint8_t)((u & 15) << (j < 8 ? 0 : 4));
                blk[104 + j % 4] |= (uint8_t)((u >> 4) << (2 * (j / 4)));
            } else {
                sc[j] = urand() % 8 ? (int)(urand() % 16) : 0, m[j] = (int)(urand() % 16); /* some scales 0: the min alone */
                blk[j] = (uint8_t)(sc[j] | m[j] << 4);
            }
        }
        uint8_t *qs = blk + (three ? 32 : 16);
        for (int i = 0; i < 256; i++) {
            L[i] = (uint8_t)(urand() % (three ? 8u : 4u));
            val[i] = three ? d * sc[i / 16] * (L[i] - 4) : d * sc[i / 16] * L[i] - dmin * m[i / 16];
            qs[32 * (i / 128) + i % 32] |= (uint8_t)((L[i] & 3) << (2 * ((i % 128) / 32)));
            if (three) blk[i % 32] |= (uint8_t)((L[i] >> 2) << (i / 32));
        }
        memcpy(blk + (three ? 108 : 80), &hd, 2);
        if (!three) memcpy(blk + 82, &hm, 2);
        return;
    }
    if (bits == 6) {
        int8_t sc[16];
        uint16_t h = mopt_f32_to_f16((float)d);
        memset(blk, 0, 210);
        for (int i = 0; i < 16; i++) sc[i] = (int8_t)(urand() % 256 - 128);
        for (int i = 0; i < 256; i++) L[i] = (uint8_t)(urand() % 64), val[i] = d * sc[i / 16] * (L[i] - 32);
        for (int n = 0; n < 256; n += 128) /* ggml: ql[l] = L[l] | L[l+64] << 4, ql[l+32] = L[l+32] | L[l+96] << 4 */
            for (int l = 0; l < 32; l++) {
                blk[n / 2 + l] = (uint8_t)((L[n + l] & 15) | (L[n + l + 64] & 15) << 4);
                blk[n / 2 + l + 32] = (uint8_t)((L[n + l + 32] & 15) | (L[n + l + 96] & 15) << 4);
                blk[128 + n / 4 + l] = (uint8_t)(L[n + l] >> 4 | (L[n + l + 32] >> 4) << 2 | (L[n + l + 64] >> 4) << 4 | (L[n + l + 96] >> 4) << 6);
            }
        memcpy(blk + 192, sc, 16);
        memcpy(blk + 208, &h, 2);
        return;
    }
    const int five = bits == 5, top = five ? 32 : 16;
    uint8_t sc[8], m[8];
    uint16_t hd = mopt_f32_to_f16((float)d), hm = mopt_f32_to_f16((float)dmin);
    memset(blk, 0, five ? 176 : 144);
    memcpy(blk, &hd, 2);
    memcpy(blk + 2, &hm, 2);
    for (int j = 0; j < 8; j++) { /* 6-bit scales and mins: the low 6 bits of bytes 0..7 for j < 4, split for j >= 4 */
        sc[j] = (uint8_t)(urand() % 8 ? urand() % 64 : 0), m[j] = (uint8_t)(urand() % 64); /* some scales 0: the mins alone */
        if (j < 4) {
            blk[4 + j] = sc[j];
            blk[4 + j + 4] = m[j];
        } else {
            blk[4 + j + 4] = (uint8_t)((sc[j] & 15) | (m[j] & 15) << 4);
            blk[4 + j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            blk[4 + j] |= (uint8_t)((m[j] >> 4) << 6);
        }
    }
    uint8_t *q = blk + (five ? 48 : 16), *qh = blk + 16;
    for (int i = 0; i < 256; i++) L[i] = (uint8_t)(urand() % (unsigned)top), val[i] = d * sc[i / 32] * L[i] - dmin * m[i / 32];
    for (int j = 0; j < 256; j += 64)
        for (int l = 0; l < 32; l++) {
            q[j / 2 + l] = (uint8_t)((L[j + l] & 15) | (L[j + l + 32] & 15) << 4);
            if (five) qh[l] |= (uint8_t)((L[j + l] >> 4) << (j / 32) | (L[j + l + 32] >> 4) << (j / 32 + 1));
        }
}

/* Q2_K ... Q6_K rows decode to their parts' values, and linears over them match float64: decode (up to 8 tokens)
 * against x as int8 per 256 values (Q8_K); prefill through the integer GEMM against x as int8 per sub-block (Q4_K
 * per 32 everywhere, Q5_K per 32 where the set takes 8-bit levels, Q2_K, Q3_K and Q6_K per 16 where it has the GEMM
 * over blocks of 16), else against x itself. Sub-blocks with a zero scale keep their mins. */
static void test_kquant_rows_decode_and_run_as_ggml_defines(void **s) {
    const int bits[] = {2, 3, 4, 5, 6};
    const int64_t ins[] = {256, 768};
    const int Ts[] = {1, 3, 19};
    for (int bi = 0; bi < 5; bi++)
        for (int ii = 0; ii < 2; ii++) {
            const int64_t out = 37, in = ins[ii], nsb = in / 256, bb = mopt_kquant_block_bytes(bits[bi]);
            uint8_t *blocks = malloc((size_t)(out * nsb * bb));
            double *wv = malloc((size_t)(out * in) * sizeof *wv);
            for (int64_t k = 0; k < out * nsb; k++) kquant_block(bits[bi], blocks + k * bb, wv + k * 256);
            mopt_error err = {0};
            mopt_tensor *w = mopt_kquant_pack("w", out, in, bits[bi], blocks, &err);
            assert_non_null(w);
            assert_int_equal(mopt_weight_storage_bytes(w), out * nsb * bb);
            float *row = malloc((size_t)in * sizeof *row);
            for (int64_t o = 0; o < out; o++) {
                assert_int_equal(mopt_weight_row_f32(w, o, row, &err), MOPT_OK);
                for (int64_t c = 0; c < in; c++) assert_true(fabs(row[c] - wv[o * in + c]) <= 1e-6 * (1e-3 + fabs(wv[o * in + c])));
            }
            for (int ti = 0; ti < 3; ti++) {
                const int T = Ts[ti];
                float *x = malloc((size_t)(T * in) * sizeof *x);
                double *ref = malloc((size_t)(T * out) * sizeof *ref);
                for (int64_t i = 0; i < T * in; i++) x[i] = frand();
                char what[64];
                snprintf(what, sizeof what, "q%d_k in=%lld", bits[bi], (long long)in);
                for (int k = 0; k < 3; k++) {
                    const int b32 = bits[bi] == 4 || (bits[bi] == 5 && kernel_sets[k]->u8_levels);
                    const int b16 = bits[bi] != 4 && bits[bi] != 5 && kernel_sets[k]->gemm_q4_q8_b16;
                    float *xa = T <= 8 ? q8_blocks(x, T * in, 256) : b32 ? q8_blocks(x, T * in, 32) : b16 ? q8_blocks(x, T * in, 16) : x;
                    for (int t = 0; t < T; t++)
                        for (int64_t o = 0; o < out; o++) {
                            double acc = 0;
                            for (int64_t c = 0; c < in; c++) acc += wv[o * in + c] * xa[t * in + c];
                            ref[t * out + o] = acc;
                        }
                    check_linear_in(k, w, x, T, ref, 1e-4, what);
                    if (xa != x) free(xa);
                }
                free(x);
                free(ref);
            }
            free(row);
            mopt_tensor_free(w);
            free(blocks);
            free(wv);
        }
    mopt_error err = {0};
    uint8_t blk[210] = {0};
    assert_null(mopt_kquant_pack("w", 2, 300, 4, blk, &err)); /* not whole super-blocks */
    assert_non_null(strstr(err.msg, "256"));
    assert_null(mopt_kquant_pack("w", 1, 256, 7, blk, &err));
    assert_non_null(strstr(err.msg, "2 to 6"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qint_pack_roundtrips_levels),
        cmocka_unit_test(test_bad_packing_is_refused),
        cmocka_unit_test(test_qint_linear_matches_float64),
        cmocka_unit_test(test_qint_linear_gives_each_token_of_a_batch_the_bits_it_gets_alone),
        cmocka_unit_test(test_kquant_linear_gives_each_token_of_a_batch_the_bits_it_gets_alone),
        cmocka_unit_test(test_int4_int8_rows_past_the_gemv_buffers_match_float64),
        cmocka_unit_test(test_act_order_g_idx_linear),
        cmocka_unit_test(test_w4a8_linear_rounds_activations_to_e4m3),
        cmocka_unit_test(test_w8a8_linear_matches_int_reference),
        cmocka_unit_test(test_sp24_int8_linear_equals_w8a8_to_the_bit),
        cmocka_unit_test(test_e4m3_conversion),
        cmocka_unit_test(test_fp8_linear_matches_float64),
        cmocka_unit_test(test_kquant_rows_decode_and_run_as_ggml_defines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
