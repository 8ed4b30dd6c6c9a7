/* The CUDA linears against the CPU's kernels and float64 references, on odd
 * shapes. Without a GPU every test that needs one skips with the reason;
 * MOPT_CUDA_REQUIRE=1 (scripts/gpu-check.sh) turns that into a failure. */
#include <math.h>

#include "backend_impl.h"
#include "kernels.h"
#include "mopt/quant.h"
#include "mopt/cuda.h"
#include "testutil.h"

static mopt_cuda *gpu;
static mopt_error open_err;

static int open_gpu(void **state) {
    (void)state;
    if (mopt_cuda_open(-1, &gpu, &open_err) == MOPT_OK) fprintf(stderr, "GPU: %s\n", mopt_cuda_name(gpu));
    return 0;
}

static int close_gpu(void **state) {
    (void)state;
    mopt_cuda_close(gpu);
    return 0;
}

#define REQUIRE_GPU()                                   \
    do {                                                \
        if (!gpu) TEST_SKIP_WITHOUT_GPU(open_err.msg);  \
    } while (0)

static uint64_t rng = 88172645463325252ull;
static float uniform(void) { /* [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1 << 23)) - 1.0);
}

/* y [T, out] from the GPU for x [T, in] on the host */
static void run_gpu(const mopt_cuda_linear *l, const float *x, int T, float *y) {
    const size_t in = (size_t)mopt_cuda_linear_in(l), out = (size_t)mopt_cuda_linear_out(l);
    void *dx = NULL, *dy = NULL;
    mopt_error err = {0};
    assert_int_equal(mopt_cuda_alloc(gpu, (size_t)T * in * sizeof(float), &dx, &err), MOPT_OK);
    assert_int_equal(mopt_cuda_alloc(gpu, (size_t)T * out * sizeof(float), &dy, &err), MOPT_OK);
    assert_int_equal(mopt_cuda_copy(gpu, dx, x, (size_t)T * in * sizeof(float), 0, &err), MOPT_OK);
    if (mopt_cuda_linear_run(gpu, l, dx, T, dy, &err) != MOPT_OK) fail_msg("%s", err.msg);
    assert_int_equal(mopt_cuda_copy(gpu, y, dy, (size_t)T * out * sizeof(float), 1, &err), MOPT_OK);
    if (mopt_cuda_sync(gpu, &err) != MOPT_OK) fail_msg("%s", err.msg);
    mopt_cuda_free(dx);
    mopt_cuda_free(dy);
}

/* float64 y = x . w over the weight's values as mopt_weight_row_f32 gives them, and mag = sum |w x| */
static void reference(const mopt_tensor *w, const float *x, int T, double *ref, double *mag) {
    const int64_t in = w->ne[0], out = w->ne[1];
    float *row = malloc((size_t)in * sizeof *row);
    mopt_error err = {0};
    for (int64_t r = 0; r < out; r++) {
        assert_int_equal(mopt_weight_row_f32(w, r, row, &err), MOPT_OK);
        for (int t = 0; t < T; t++) {
            double s = 0, m = 0;
            for (int64_t k = 0; k < in; k++) {
                s += (double)row[k] * x[t * in + k];
                m += fabs((double)row[k] * x[t * in + k]);
            }
            ref[t * out + r] = s;
            mag[t * out + r] = m;
        }
    }
    free(row);
}

/* |y - want| <= rel * mag + 1e-6 for every output */
static void check_close(const float *y, const double *want, const double *mag, int64_t n, double rel, const char *what, int T) {
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(y[i] - want[i]) <= rel * mag[i] + 1e-6))
            fail_msg("%s, T=%d: y[%lld] = %.9g, expected %.9g (bound %.3g)", what, T, (long long)i, y[i], want[i], rel * mag[i] + 1e-6);
}

static float *random_x(int T, int64_t in) {
    float *x = malloc((size_t)T * (size_t)in * sizeof *x);
    for (int64_t i = 0; i < T * in; i++) x[i] = uniform();
    return x;
}

/* Decode sums in fp32 in another order than float64: 1e-5 of sum |w x| is far above that (in <= 1024 values:
 * at most ~40 roundings of 2^-24 on any path) and far below one wrong value. Prefill on 16-bit weights splits x
 * into two 16-bit halves, which hold it to 2^-18 (bf16): 3e-5 of sum |w x|, where one half alone (2^-9) fails.
 * QINT prefill rounds the weights and x to bf16: at most 2^-9 each, so 2^-8 plus the fp32 sums. */
#define DECODE_REL 1e-5
#define PREFILL_REL_SPLIT 3e-5
#define PREFILL_REL_16 (1.0 / 256 + 1e-4)

/* w on the GPU (l) for T random tokens against float64 (the CPU's kernels with against_cpu): |y - want| <= rel *
 * sum |w x| + 1e-6. */
static void check_gpu(const mopt_tensor *w, const mopt_cuda_linear *l, int T, int against_cpu, double rel, const char *what) {
    const int64_t in = w->ne[0], out = w->ne[1];
    float *x = random_x(T, in), *y = malloc((size_t)T * out * sizeof *y);
    double *ref = malloc((size_t)T * out * sizeof *ref), *mag = malloc((size_t)T * out * sizeof *mag);
    reference(w, x, T, ref, mag);
    if (against_cpu) {
        mopt_error err = {0};
        assert_int_equal(mopt_cpu_linear_once(1, &mopt_kernels_ref, w, NULL, x, T, y, &err), MOPT_OK);
        for (int64_t i = 0; i < T * out; i++) ref[i] = y[i];
    }
    run_gpu(l, x, T, y);
    check_close(y, ref, mag, T * out, rel, what, T);
    free(x), free(y), free(ref), free(mag);
}

static void test_dense_linears_match_float64_in_decode_and_prefill(void **state) {
    (void)state;
    REQUIRE_GPU();
    const mopt_dtype types[] = {MOPT_DTYPE_F32, MOPT_DTYPE_F16, MOPT_DTYPE_BF16};
    const int64_t shapes[][2] = {{37, 203}, {130, 1024}, {9, 8}};
    const int Ts[] = {1, 3, 8, 19};
    for (int si = 0; si < 3; si++) {
        const int64_t out = shapes[si][0], in = shapes[si][1];
        float *wf = random_x((int)out, in);
        for (int ti = 0; ti < 3; ti++) {
            int64_t dims[2] = {out, in};
            mopt_error err = {0};
            mopt_tensor *w = mopt_tensor_from_f32("w", types[ti], 2, dims, wf, &err);
            assert_non_null(w);
            mopt_cuda_linear *l = NULL;
            if (mopt_cuda_upload(gpu, w, &l, &err) != MOPT_OK) fail_msg("%s", err.msg);
            assert_int_equal(mopt_cuda_linear_bytes(l), (int64_t)mopt_tensor_nbytes(w));
            char what[96];
            snprintf(what, sizeof what, "%s [%lld, %lld]", mopt_dtype_name(types[ti]), (long long)out, (long long)in);
            for (int k = 0; k < 4; k++)
                check_gpu(w, l, Ts[k], 0, Ts[k] <= MOPT_CUDA_GEMV_MAX_T || types[ti] == MOPT_DTYPE_F32 ? DECODE_REL : PREFILL_REL_SPLIT, what);
            mopt_cuda_linear_free(l);
            mopt_tensor_free(w);
        }
        free(wf);
    }
}

/* A QINT weight of random levels, scales in [0.01, 0.03), zero-points (asymmetric) and g_idx as asked. */
static mopt_tensor *random_qint(int64_t out, int64_t in, int bits, int gs, int asym, int act_order) {
    const int64_t ng = mopt_qint_n_groups(in, gs);
    uint8_t *q = malloc((size_t)(out * in)), *z = malloc((size_t)(out * ng));
    float *s = malloc((size_t)(out * ng) * sizeof *s);
    int32_t *g = malloc((size_t)in * sizeof *g);
    for (int64_t i = 0; i < out * in; i++) q[i] = (uint8_t)((uniform() + 1) * 0.5f * (1 << bits)) & ((1 << bits) - 1);
    for (int64_t i = 0; i < out * ng; i++) {
        s[i] = 0.02f + 0.01f * uniform();
        z[i] = (uint8_t)((uniform() + 1) * 0.5f * (1 << bits)) & ((1 << bits) - 1);
    }
    for (int64_t c = 0; c < in; c++) g[c] = (int32_t)((c * 7 + 3) % ng); /* every group used, columns scattered */
    mopt_error err = {0};
    mopt_tensor *t = mopt_qint_pack("w", out, in, bits, gs, q, s, asym ? z : NULL, act_order ? g : NULL, &err);
    if (!t) fail_msg("%s", err.msg);
    free(q), free(z), free(s), free(g);
    return t;
}

/* 4 and 8 bits in whole groups: the GPU's integer kernel against the CPU's scalar kernels, which quantize x
 * to int8 per 32 values the same way; only the order of the float sums differs. */
static void test_qint_integer_decode_matches_the_cpu_kernels(void **state) {
    (void)state;
    REQUIRE_GPU();
    const int bits[] = {4, 8}, gss[] = {32, 128, -1}, Ts[] = {1, 2, 5, 8, 20};
    const int64_t shapes[][2] = {{71, 256}, {33, 1024}};
    for (int bi = 0; bi < 2; bi++)
        for (int gi = 0; gi < 3; gi++)
            for (int asym = 0; asym < 2; asym++)
                for (int si = 0; si < 2; si++) {
                    const int64_t out = shapes[si][0], in = shapes[si][1];
                    mopt_tensor *w = random_qint(out, in, bits[bi], gss[gi], asym, 0);
                    mopt_cuda_linear *l = NULL;
                    mopt_error err = {0};
                    if (mopt_cuda_upload(gpu, w, &l, &err) != MOPT_OK) fail_msg("%s", err.msg);
                    assert_int_equal(mopt_cuda_linear_bytes(l), mopt_weight_storage_bytes(w));
                    char what[96];
                    snprintf(what, sizeof what, "int%d g%d %s [%lld, %lld]", bits[bi], gss[gi], asym ? "asym" : "sym", (long long)out,
                             (long long)in);
                    for (int k = 0; k < 5; k++) { /* prefill (bf16 widening): against float64 */
                        const int decode = Ts[k] <= MOPT_CUDA_GEMV_MAX_T;
                        check_gpu(w, l, Ts[k], decode, decode ? DECODE_REL : PREFILL_REL_16, what);
                    }
                    mopt_cuda_linear_free(l);
                    mopt_tensor_free(w);
                }
}

/* Act-order, 2 and 3 bits, partial blocks and groups: the fp32 kernel in decode, bf16 widening in prefill. */
static void test_qint_other_layouts_match_float64(void **state) {
    (void)state;
    REQUIRE_GPU();
    const struct {
        int64_t out, in;
        int bits, gs, asym, act_order;
    } cases[] = {{45, 256, 4, 32, 1, 1}, {40, 320, 8, 64, 0, 1}, {29, 192, 2, 64, 1, 0}, {31, 160, 3, -1, 1, 0},
                 {27, 200, 4, 64, 1, 0}, {26, 96, 8, 64, 0, 0}};
    const int Ts[] = {1, 3, 12};
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        mopt_tensor *w = random_qint(cases[ci].out, cases[ci].in, cases[ci].bits, cases[ci].gs, cases[ci].asym, cases[ci].act_order);
        mopt_cuda_linear *l = NULL;
        mopt_error err = {0};
        if (mopt_cuda_upload(gpu, w, &l, &err) != MOPT_OK) fail_msg("%s", err.msg);
        const int64_t out = cases[ci].out, in = cases[ci].in;
        char what[96];
        snprintf(what, sizeof what, "case %zu: int%d g%d%s [%lld, %lld]", ci, cases[ci].bits, cases[ci].gs,
                 cases[ci].act_order ? " act-order" : "", (long long)out, (long long)in);
        for (int k = 0; k < 3; k++) check_gpu(w, l, Ts[k], 0, Ts[k] <= MOPT_CUDA_GEMV_MAX_T ? DECODE_REL : PREFILL_REL_16, what);
        mopt_cuda_linear_free(l);
        mopt_tensor_free(w);
    }
}

/* W8A8: x quantized per token as the CPU does it, int32 sums exact in any order, each scaled by the CPU's
 * expression: every output equal to the CPU's, in decode (the GEMV) and prefill (cuBLAS's int8 GEMM; the GEMV
 * where the shape is not a multiple of 4). */
static void test_w8a8_matches_the_cpu_bit_for_bit(void **state) {
    (void)state;
    REQUIRE_GPU();
    const int64_t shapes[][2] = {{37, 203}, {130, 1024}, {64, 96}, {36, 40}};
    const int Ts[] = {1, 3, 8, 19, 64};
    for (int si = 0; si < 4; si++) {
        const int64_t out = shapes[si][0], in = shapes[si][1];
        int8_t *q = malloc((size_t)(out * in));
        float *sc = malloc((size_t)out * sizeof *sc);
        for (int64_t i = 0; i < out * in; i++) q[i] = (int8_t)(127 * uniform());
        for (int64_t i = 0; i < out; i++) sc[i] = 0.01f + 0.005f * uniform();
        mopt_error err = {0};
        mopt_tensor *w = mopt_w8a8_pack("w", out, in, q, sc, &err);
        assert_non_null(w);
        mopt_cuda_linear *l = NULL;
        if (mopt_cuda_upload(gpu, w, &l, &err) != MOPT_OK) fail_msg("%s", err.msg);
        assert_int_equal(mopt_cuda_linear_bytes(l), out * in + out * (int64_t)sizeof(float));
        for (int k = 0; k < 5; k++) {
            const int T = Ts[k];
            float *x = random_x(T, in), *y = malloc((size_t)T * out * sizeof *y), *cpu = malloc((size_t)T * out * sizeof *cpu);
            assert_int_equal(mopt_cpu_linear_once(1, &mopt_kernels_ref, w, NULL, x, T, cpu, &err), MOPT_OK);
            run_gpu(l, x, T, y);
            for (int64_t i = 0; i < T * out; i++)
                if (y[i] != cpu[i]) fail_msg("w8a8 [%lld, %lld], T=%d: y[%lld] = %.9g on the GPU, %.9g on the CPU", (long long)out, (long long)in, T,
                                             (long long)i, y[i], cpu[i]);
            free(x), free(y), free(cpu);
        }
        mopt_cuda_linear_free(l);
        mopt_tensor_free(w);
        free(q), free(sc);
    }
}

static void test_weights_the_gpu_cannot_run_fail_with_one_line(void **state) {
    (void)state;
    REQUIRE_GPU();
    mopt_error err = {0};
    uint8_t q[64] = {1};
    float s[1] = {0.5f};
    mopt_tensor *w = mopt_fp8_pack("w8", 1, 64, q, s, 1, 0, 0, &err);
    assert_non_null(w);
    mopt_cuda_linear *l = NULL;
    assert_int_equal(mopt_cuda_upload(gpu, w, &l, &err), MOPT_E_UNSUPPORTED);
    CHECK_ERR(err, MOPT_E_UNSUPPORTED, "fp8_e4m3");
    assert_null(l);
    mopt_tensor_free(w);
    /* a g_idx naming a group the scales do not have is refused before anything reads it */
    w = random_qint(4, 64, 4, 32, 1, 1);
    ((int32_t *)w->quant->g_idx->data)[5] = 2;
    assert_int_equal(mopt_cuda_upload(gpu, w, &l, &err), MOPT_E_FORMAT);
    CHECK_ERR(err, MOPT_E_FORMAT, "g_idx[5] = 2");
    assert_null(l);
    mopt_tensor_free(w);
}

/* Runs with or without a GPU: without one, opening says why in one line; with one, a device number past the last
 * is named. */
static void test_opening_a_missing_gpu_says_why_in_one_line(void **state) {
    (void)state;
    mopt_error err = {0};
    mopt_cuda *c = NULL;
    if (!gpu) {
        assert_int_equal(open_err.code, MOPT_E_BACKEND);
        assert_true(strstr(open_err.msg, "GPU") || strstr(open_err.msg, "driver"));
        assert_null(strchr(open_err.msg, '\n'));
        return;
    }
    assert_int_equal(mopt_cuda_open(999, &c, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "cuda:999");
    assert_null(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opening_a_missing_gpu_says_why_in_one_line),
        cmocka_unit_test(test_dense_linears_match_float64_in_decode_and_prefill),
        cmocka_unit_test(test_qint_integer_decode_matches_the_cpu_kernels),
        cmocka_unit_test(test_qint_other_layouts_match_float64),
        cmocka_unit_test(test_w8a8_matches_the_cpu_bit_for_bit),
        cmocka_unit_test(test_weights_the_gpu_cannot_run_fail_with_one_line),
    };
    return cmocka_run_group_tests(tests, open_gpu, close_gpu);
}
