/* Block-scaled float weights (NVFP4, MXFP4, MXFP8): the codes and scales
 * mopt stores against a float64 quantizer written from the formats'
 * definitions (tests/mxfp_ref64.h), and the linears that read them, with and
 * without activations rounded onto the format, for every kernel set. */
#include <math.h>

#include "linear_check.h"
#include "mopt/quant.h"
#include "mxfp_ref64.h"
#include "tensor_impl.h"

static uint32_t rng = 2463534242u;
static uint32_t urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}
static float frand(void) { return (float)((double)urand() / 4294967296.0 * 2.0 - 1.0); }

static const mopt_mxfp_kind kinds[] = {MOPT_MXFP_NVFP4, MOPT_MXFP_MXFP4, MOPT_MXFP_MXFP8};

static void test_e2m1_rounds_to_nearest_even_and_saturates(void **s) {
    static const float grid[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
    for (int c = 0; c < 16; c++) assert_true(mopt_e2m1_to_f32((uint8_t)c) == (c & 8 ? -grid[c & 7] : grid[c & 7]));
    /* every step of 1/64 from -8 to 8 (the grid points, the ties between them and the values around them) */
    for (int i = -512; i <= 512; i++) {
        const float v = (float)i / 64.0f;
        const int want = ref64_nearest(v, 0), got = mopt_f32_to_e2m1(v);
        if (want != got) fprintf(stderr, "e2m1(%g): %d, reference %d\n", v, got, want);
        assert_int_equal(got, want);
    }
    assert_int_equal(mopt_f32_to_e2m1(0.25f), 0);   /* tie: to 0, not 0.5 */
    assert_int_equal(mopt_f32_to_e2m1(0.75f), 2);   /* tie: to 1 */
    assert_int_equal(mopt_f32_to_e2m1(5.0f), 6);    /* tie: to 4 */
    assert_int_equal(mopt_f32_to_e2m1(1e30f), 7);   /* saturates at 6 */
    assert_int_equal(mopt_f32_to_e2m1(-INFINITY), 15);
    assert_int_equal(mopt_f32_to_e2m1(NAN), 0);
}

/* A matrix whose blocks span magnitudes: random blocks scaled from 1e-3 to 10, a block of zeros, a block with
 * one outlier, values on the grid and on ties. */
static float *test_matrix(int64_t out, int64_t in) {
    float *W = malloc((size_t)(out * in) * sizeof *W);
    for (int64_t r = 0; r < out; r++)
        for (int64_t c = 0; c < in; c++) {
            const double mag = pow(10.0, (double)((r * 7 + c / 16) % 5) - 3.0);
            W[r * in + c] = (float)(frand() * mag);
        }
    memset(W + in, 0, 32 * sizeof *W);            /* row 1, first 32: zeros */
    W[2 * in + 5] = 40.0f;                         /* row 2: an outlier in its first block */
    for (int i = 0; i < 32; i++) W[3 * in + i] = (float)(i % 13) * 0.25f; /* grid points and ties under any power-of-two scale */
    for (int i = 32; i < 48; i++) W[3 * in + i] = 1e-9f * frand();   /* an NVFP4 block whose scale is clamped up to 2^-9 */
    return W;
}

/* What mopt stores (scale bytes, codes) equals the float64 quantizer's, and rows read back its values. */
static void test_quantized_codes_and_scales_match_the_float64_definition(void **s) {
    const int64_t out = 6, in = 160;
    float *W = test_matrix(out, in), *row = malloc((size_t)in * sizeof *row);
    double *Wq = malloc((size_t)(out * in) * sizeof *Wq);
    for (int ki = 0; ki < 3; ki++) {
        const mopt_mxfp_kind k = kinds[ki];
        const int B = mopt_mxfp_block(k), fp8 = k == MOPT_MXFP_MXFP8;
        mopt_error err = {0};
        mopt_tensor *t = mopt_mxfp_quantize("w", k, out, in, W, 0, 0, &err);
        assert_non_null(t);
        assert_int_equal(mopt_mxfp_kind_of(t), k);
        const double G = ref64_mx_matrix(k, W, out, in, Wq);
        double wmax = 0; /* NVFP4: G = max|W| / (6 * 448) */
        for (int64_t i = 0; i < out * in; i++) wmax = fmax(wmax, fabs((double)W[i]));
        /* G is stored within two ulps of max|W| / 2688, as a float whose reciprocal reads back exactly */
        assert_true(fabs(t->quant->global_scale - G) <= 2.5e-7 * G);
        assert_true(1.0f / mopt_exact_reciprocal(t->quant->global_scale) == t->quant->global_scale);
        const uint8_t *sc = t->quant->scale->data;
        int codes[32];
        double vals[32];
        for (int64_t r = 0; r < out; r++) {
            const uint8_t *q = (const uint8_t *)t->data + r * t->nb[1];
            for (int64_t b = 0; b < in / B; b++) {
                const int sb = ref64_mx_block(k, W + r * in + b * B, B, k == MOPT_MXFP_NVFP4 ? wmax : 1.0, k == MOPT_MXFP_NVFP4 ? 6.0 * 448.0 : 1.0, codes, vals);
                if (sc[r * (in / B) + b] != sb) fprintf(stderr, "%s row %lld block %lld: scale %d, reference %d\n",
                                                        mopt_mxfp_kind_name(k), (long long)r, (long long)b, sc[r * (in / B) + b], sb);
                assert_int_equal(sc[r * (in / B) + b], sb);
                for (int i = 0; i < B; i++) {
                    const int64_t c = b * B + i;
                    const int got = fp8 ? q[c] : (q[c / 2] >> (4 * (c & 1))) & 15;
                    if ((got & (fp8 ? 0x7f : 7)) == 0) continue; /* zero: the sign of -0 is free */
                    assert_int_equal(got, codes[i]);
                }
            }
            assert_int_equal(mopt_weight_row_f32(t, r, row, &err), MOPT_OK);
            for (int64_t c = 0; c < in; c++) assert_true(fabs(row[c] - Wq[r * in + c]) <= 1e-6 * fabs(Wq[r * in + c]));
        }
        /* storage: 4 or 8 bits a value, a byte a block, NVFP4's f32 global scale */
        const int64_t bytes = out * in * (fp8 ? 8 : 4) / 8 + out * in / B + (k == MOPT_MXFP_NVFP4 ? 4 : 0);
        assert_int_equal(mopt_weight_storage_bytes(t), bytes);
        mopt_tensor_free(t);
    }
    free(W);
    free(Wq);
    free(row);
}

/* A linear over each format matches float64 with the reference's weights, decode (1 token) and prefill (12), with
 * activations in float, rounded per token (NVFP4's global scale from each token's max) or with a calibrated
 * NVFP4 global scale. */
static void test_mxfp_linear_matches_float64(void **s) {
    const int64_t out = 11, in = 192;
    float *W = test_matrix(out, in), *x = malloc(12 * (size_t)in * sizeof *x);
    float *xr = malloc((size_t)in * sizeof *xr);
    double *Wq = malloc((size_t)(out * in) * sizeof *Wq), *xq = malloc(12 * (size_t)in * sizeof *xq), *ref = malloc(12 * (size_t)out * sizeof *ref);
    for (int64_t i = 0; i < 12 * in; i++) x[i] = frand() * (i % 37 == 0 ? 8.0f : 1.0f);
    for (int ki = 0; ki < 3; ki++)
        for (int mode = 0; mode < 3; mode++) { /* 0: float activations, 1: per token, 2: calibrated (NVFP4) */
            const mopt_mxfp_kind k = kinds[ki];
            if (mode == 2 && k != MOPT_MXFP_NVFP4) continue;
            const float act_scale = mode == 2 ? 9.0f / (6.0f * 448.0f) : 0.0f;
            mopt_error err = {0};
            const uint32_t flags = mode == 2 ? MOPT_QUANT_ACT_STATIC : mode ? MOPT_QUANT_ACT_PER_TOKEN : 0;
            mopt_tensor *t = mopt_mxfp_quantize("w", k, out, in, W, flags, act_scale, &err);
            assert_non_null(t);
            ref64_mx_matrix(k, W, out, in, Wq);
            const int B = mopt_mxfp_block(k);
            for (int T = 1; T <= 12; T += 11) {
                for (int tk = 0; tk < T; tk++) {
                    double amax = 0, gnum = 1, gden = 1; /* NVFP4's G: calibrated, or max|x| / (6 * 448) of the token */
                    int codes[32];
                    for (int64_t i = 0; i < in; i++) amax = fmax(amax, fabs((double)x[tk * in + i]));
                    if (k == MOPT_MXFP_NVFP4) gnum = mode == 2 ? act_scale : amax, gden = mode == 2 ? 1.0 : 6.0 * 448.0;
                    for (int64_t b = 0; b < in; b += B) {
                        if (mode) ref64_mx_block(k, x + tk * in + b, B, gnum, gden, codes, xq + tk * in + b);
                        else
                            for (int i = 0; i < B; i++) xq[tk * in + b + i] = x[tk * in + b + i];
                    }
                    if (mode) { /* the host's activation rounding gives the reference's values */
                        memcpy(xr, x + tk * in, (size_t)in * sizeof *xr);
                        mopt_mxfp_round(k, xr, in, act_scale);
                        for (int64_t i = 0; i < in; i++) assert_true(fabs(xr[i] - xq[tk * in + i]) <= 1e-6 * fabs(xq[tk * in + i]));
                    }
                    for (int64_t o = 0; o < out; o++) {
                        double acc = 0;
                        for (int64_t i = 0; i < in; i++) acc += Wq[o * in + i] * xq[tk * in + i];
                        ref[tk * out + o] = acc;
                    }
                }
                char what[64];
                snprintf(what, sizeof what, "%s mode %d", mopt_mxfp_kind_name(k), mode);
                check_linear(t, x, T, ref, 1e-4, what);
            }
            mopt_tensor_free(t);
        }
    free(W);
    free(x);
    free(xr);
    free(Wq);
    free(xq);
    free(ref);
}

/* The kernels' block products and widening equal the scalar definitions on every kernel set. */
static void test_fp4_and_e4m3_block_kernels_agree_with_the_scalar_set(void **s) {
    const int64_t n = 256;
    uint8_t q[256], q8[256];
    float x[256], bs[16], dst[256];
    for (int i = 0; i < 256; i++) {
        q[i] = (uint8_t)urand(), q8[i] = (uint8_t)(urand() & 0xff), x[i] = frand();
        if ((q8[i] & 0x7f) == 0x7f) q8[i] = 0x31;
    }
    for (int b = 0; b < 16; b++) bs[b] = ldexpf(1.0f + frand() * 0.5f, b - 8);
    for (int gs = 16; gs <= 32; gs += 16) {
        double dot4 = 0, dot8 = 0;
        for (int64_t i = 0; i < n; i++) {
            dot4 += mopt_e2m1_to_f32((uint8_t)(q[i / 2] >> (4 * (i & 1)) & 15)) * (double)bs[i / gs] * x[i];
            dot8 += mopt_e4m3_to_f32(q8[i]) * (double)bs[i / gs] * x[i];
        }
        for (int ks = 0; ks < 3; ks++) {
            if (!mopt_kernels_supported(kernel_sets[ks])) continue;
            const mopt_kernels *k = kernel_sets[ks];
            assert_true(fabs(k->dot_fp4(q, bs, gs, x, n) - dot4) <= 1e-5 * (1 + fabs(dot4)));
            assert_true(fabs(k->dot_e4m3_blocks(q8, bs, gs, x, n) - dot8) <= 1e-5 * (1 + fabs(dot8)));
            k->dequant_fp4(q, bs, gs, n, dst);
            for (int64_t i = 0; i < n; i++) /* exact: a code times its block's scale, one rounding */
                assert_true(dst[i] == mopt_e2m1_to_f32((uint8_t)(q[i / 2] >> (4 * (i & 1)) & 15)) * bs[i / gs]);
        }
    }
}

/* A global scale shared by a fused group (mopt_mxfp_quantize_shared): G comes from the group's max|w|, the
 * blocks are quantized against it as the float64 definition says, and a max below the tensor's own is refused. */
static void test_nvfp4_takes_a_shared_global_scale(void **s) {
    const int64_t out = 4, in = 64;
    float *W = test_matrix(out, in), *row = malloc((size_t)in * sizeof *row);
    double *Wq = malloc((size_t)(out * in) * sizeof *Wq), wmax = 0;
    for (int64_t i = 0; i < out * in; i++) wmax = fmax(wmax, fabs((double)W[i]));
    mopt_error err = {0};
    const float shared = (float)(wmax * 3.7); /* a sibling with larger weights */
    mopt_tensor *t = mopt_mxfp_quantize_shared("w", MOPT_MXFP_NVFP4, out, in, W, shared, 0, 0, &err);
    assert_non_null(t);
    const double G = ref64_mx_matrix_shared(1, W, out, in, shared, Wq);
    assert_true(fabs(G - shared / (6.0 * 448.0)) <= 1e-12 * G);
    assert_true(fabs(t->quant->global_scale - G) <= 2.5e-7 * G);
    for (int64_t r = 0; r < out; r++) {
        assert_int_equal(mopt_weight_row_f32(t, r, row, &err), MOPT_OK);
        for (int64_t c = 0; c < in; c++) assert_true(fabs(row[c] - Wq[r * in + c]) <= 1e-6 * fabs(Wq[r * in + c]));
    }
    mopt_tensor_free(t);
    assert_null(mopt_mxfp_quantize_shared("w", MOPT_MXFP_NVFP4, out, in, W, (float)(wmax * 0.5), 0, 0, &err));
    assert_non_null(strstr(err.msg, "below the tensor's own"));
    free(W);
    free(row);
    free(Wq);
}

static void test_bad_shapes_and_scales_are_refused(void **s) {
    float W[64] = {0};
    uint8_t v[64] = {0}, sc[4] = {0};
    mopt_error err = {0};
    assert_null(mopt_mxfp_quantize("w", MOPT_MXFP_NVFP4, 1, 48, W, 0, 0, &err)); /* not whole blocks of 32 */
    assert_non_null(strstr(err.msg, "blocks of 32"));
    W[3] = NAN;
    assert_null(mopt_mxfp_quantize("w", MOPT_MXFP_MXFP4, 1, 64, W, 0, 0, &err));
    assert_non_null(strstr(err.msg, "not finite"));
    W[3] = 0;
    assert_null(mopt_mxfp_quantize("w", (mopt_mxfp_kind)7, 1, 64, W, 0, 0, &err));
    assert_non_null(strstr(err.msg, "unknown"));
    assert_null(mopt_mxfp_pack("w", MOPT_MXFP_NVFP4, 1, 64, v, sc, 0.0f, 0, 0, &err)); /* NVFP4 needs a global scale > 0 */
    assert_null(mopt_mxfp_pack("w", MOPT_MXFP_NVFP4, 1, 64, v, sc, INFINITY, 0, 0, &err));
    assert_null(mopt_mxfp_pack("w", MOPT_MXFP_MXFP8, 1, 64, v, sc, 1.0f, MOPT_QUANT_ACT_STATIC, 0.1f, &err)); /* MX: no global */
    assert_null(mopt_mxfp_pack("w", MOPT_MXFP_NVFP4, 1, 64, v, sc, 1.0f, MOPT_QUANT_ACT_STATIC, 0.0f, &err)); /* static needs a scale */
    assert_null(mopt_mxfp_pack("w", MOPT_MXFP_NVFP4, 1, 64, v, sc, 1.0f, MOPT_QUANT_PER_TENSOR, 0, &err)); /* not an MXFP flag */
    mopt_tensor *t = mopt_mxfp_pack("w", MOPT_MXFP_MXFP8, 1, 64, v, sc, 0.0f, 0, 0, &err); /* MX: the global scale is 1 */
    assert_non_null(t);
    assert_true(t->quant->global_scale == 1.0f);
    mopt_tensor_free(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_e2m1_rounds_to_nearest_even_and_saturates),
        cmocka_unit_test(test_quantized_codes_and_scales_match_the_float64_definition),
        cmocka_unit_test(test_mxfp_linear_matches_float64),
        cmocka_unit_test(test_fp4_and_e4m3_block_kernels_agree_with_the_scalar_set),
        cmocka_unit_test(test_nvfp4_takes_a_shared_global_scale),
        cmocka_unit_test(test_bad_shapes_and_scales_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
