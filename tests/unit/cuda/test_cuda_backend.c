/* Whole models in sessions on the GPU (device "cuda": the linears there, the
 * other ops on the CPU) against the transformers reference logits and against
 * the same models on the CPU: logits, perplexity, greedy text. Without a GPU
 * every test skips with the reason; MOPT_CUDA_REQUIRE=1 makes that a failure. */
#include <math.h>

#include "testutil.h"

static mopt_error no_gpu; /* why there is no GPU session, once known */

static mopt_session *session_on(mopt_model *m, const char *device) {
    mopt_session_opts o;
    mopt_session_opts_default(&o);
    o.device = device;
    mopt_error err = {0};
    mopt_session *s = mopt_session_new(mopt_model_graph(m), &o, &err);
    if (!s) fail_msg("%s session: %s", device, err.msg);
    assert_string_equal(mopt_session_device(s), strcmp(device, "cpu") ? "cuda:0" : "cpu");
    return s;
}

#define REQUIRE_GPU()                                       \
    do {                                                    \
        REQUIRE_SHARED();                                   \
        if (no_gpu.code) TEST_SKIP_WITHOUT_GPU(no_gpu.msg); \
    } while (0)

static int probe_gpu(void **state) {
    if (test_registry_setup(state)) return -1;
    if (access(test_shared_dir(), R_OK) != 0) return 0;
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    mopt_session_opts o;
    mopt_session_opts_default(&o);
    o.device = "cuda";
    mopt_session *s = mopt_session_new(mopt_model_graph(m), &o, &no_gpu);
    if (s) mopt_error_clear(&no_gpu);
    mopt_session_free(s);
    mopt_model_free(m);
    return 0;
}

static int32_t *val_tokens(mopt_model *m, size_t *n) {
    char path[1200];
    int32_t *ids = NULL;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode_file(mopt_model_tokenizer(m), test_shared_path(path, sizeof path, "data/lit-val.txt"), 0, &ids, n, &err),
                     MOPT_OK);
    return ids;
}

static double ppl_on(mopt_model *m, const char *device, const int32_t *ids, int64_t n) {
    mopt_session *s = session_on(m, device);
    mopt_ppl_result pr;
    mopt_error err = {0};
    if (mopt_perplexity(s, ids, n, 256, NULL, NULL, &pr, &err)) fail_msg("%s", err.msg);
    mopt_session_free(s);
    return pr.ppl;
}

/* Every linear's weight re-stored as dtype (the fixtures store bf16, which widens to f32 exactly). */
static void to_dtype(mopt_model *m, mopt_dtype dtype) {
    mopt_graph *g = mopt_model_graph(m);
    for (int32_t i = 0; i < mopt_graph_n_nodes(g); i++) {
        const mopt_node *n = mopt_graph_node(g, i);
        if ((n->op != MOPT_OP_LINEAR && n->op != MOPT_OP_LM_HEAD) || !n->weight || n->weight->dtype == dtype) continue;
        const int64_t ne = mopt_tensor_nelements(n->weight), dims[2] = {n->weight->ne[1], n->weight->ne[0]};
        float *v = malloc((size_t)ne * sizeof *v);
        mopt_error err = {0};
        assert_int_equal(mopt_tensor_read_f32(n->weight, 0, ne, v, &err), MOPT_OK);
        mopt_tensor *t = mopt_tensor_from_f32(n->weight->name, dtype, 2, dims, v, &err);
        free(v);
        assert_non_null(t);
        assert_int_equal(mopt_graph_replace_tensor(g, t, &err), MOPT_OK);
    }
}

/* lit-llama-7m's logits on the GPU for ids, as one prefill and token by token: every one within 1e-3 of
 * transformers' (test_logits holds the CPU to the same bound). */
static void check_logits(mopt_model *m, const int32_t *ids, const float *expect, const char *what) {
    const int32_t V = mopt_model_arch(m)->vocab_size;
    mopt_session *s = session_on(m, "cuda");
    const float *logits;
    mopt_error err = {0};
    assert_int_equal(mopt_session_forward(s, ids, 32, true, &logits, &err), MOPT_OK);
    double worst = 0;
    for (size_t i = 0; i < (size_t)32 * V; i++) worst = fmax(worst, fabs((double)logits[i] - expect[i]));
    fprintf(stderr, "GPU prefill, %s: max |logit - transformers| = %.3g\n", what, worst);
    assert_true(worst < 1e-3);
    assert_int_equal(mopt_session_truncate(s, 0, &err), MOPT_OK);
    worst = 0;
    for (int t = 0; t < 32; t++) {
        assert_int_equal(mopt_session_forward(s, &ids[t], 1, false, &logits, &err), MOPT_OK);
        for (int32_t i = 0; i < V; i++) worst = fmax(worst, fabs((double)logits[i] - expect[(size_t)t * V + i]));
    }
    fprintf(stderr, "GPU decode, %s: max |logit - transformers| = %.3g\n", what, worst);
    assert_true(worst < 1e-3);
    mopt_session_free(s);
}

/* The first 32 tokens of lit-val (ids from lit.json), with the weights as stored (bf16: tensor cores in prefill)
 * and widened to f32 (SGEMM). */
static void test_llama_logits_on_the_gpu_match_transformers(void **state) {
    (void)state;
    REQUIRE_GPU();
    char path[1024];
    size_t n;
    char *lit = read_whole(test_shared_path(path, sizeof path, "reference/lit.json"), &n);
    assert_non_null(lit);
    char *p = strstr(strstr(strstr(lit, "\"target\""), "\"input_ids\""), "[") + 1;
    int32_t ids[32];
    for (int i = 0; i < 32; i++) ids[i] = (int32_t)strtol(p, &p, 10), p++;
    free(lit);
    float *expect = read_whole(test_shared_path(path, sizeof path, "reference/lit-llama-7m.val32.logits.f32"), &n);
    assert_non_null(expect);
    for (int f32 = 0; f32 < 2; f32++) {
        mopt_model *m = test_load_model("models/lit-llama-7m");
        assert_int_equal(n, (size_t)32 * mopt_model_arch(m)->vocab_size * sizeof(float));
        if (f32) to_dtype(m, MOPT_DTYPE_F32);
        check_logits(m, ids, expect, f32 ? "f32 weights" : "bf16 weights");
        mopt_model_free(m);
    }
    free(expect);
}

/* Perplexity on 8192 tokens of lit-val, windows of 256: the GPU's within 1e-4 (relative) of the CPU's, for both
 * models with fp32 weights and with bf16 ones. */
static void test_perplexity_on_the_gpu_matches_the_cpu(void **state) {
    (void)state;
    REQUIRE_GPU();
    const char *models[] = {"models/lit-llama-7m", "models/lit-gpt2-1m"};
    for (int mi = 0; mi < 2; mi++)
        for (int bf16 = 0; bf16 < 2; bf16++) {
            mopt_model *m = test_load_model(models[mi]);
            to_dtype(m, bf16 ? MOPT_DTYPE_BF16 : MOPT_DTYPE_F32);
            size_t n;
            int32_t *ids = val_tokens(m, &n);
            const int64_t use = n < 8192 ? (int64_t)n : 8192;
            const double cpu = ppl_on(m, "cpu", ids, use), gpu = ppl_on(m, "cuda", ids, use);
            fprintf(stderr, "%s %s: ppl CPU %.6f, GPU %.6f (%+.2e)\n", models[mi], bf16 ? "bf16" : "f32", cpu, gpu, gpu / cpu - 1);
            assert_true(fabs(gpu / cpu - 1) <= 1e-4);
            free(ids);
            mopt_model_free(m);
        }
}

/* Packed weights (the GPU reads them as stored): perplexity within 0.05% of the CPU's. */
static void test_quantized_perplexity_on_the_gpu_matches_the_cpu(void **state) {
    (void)state;
    REQUIRE_GPU();
    const char *pipes[] = {"quant.rtn<bits=4;group_size=128>", "quant.rtn<bits=8;group_size=-1;sym=true>", "quant.rtn<bits=4;group_size=32>",
                           "quant.rtn<bits=3;group_size=64>", "quant.smoothquant<smooth=false>"};
    for (size_t k = 0; k < sizeof pipes / sizeof *pipes; k++) {
        mopt_model *m = test_load_model("models/lit-llama-7m");
        mopt_report_free(test_run_pipeline(m, pipes[k]));
        size_t n;
        int32_t *ids = val_tokens(m, &n);
        const int64_t use = n < 8192 ? (int64_t)n : 8192;
        const double cpu = ppl_on(m, "cpu", ids, use), gpu = ppl_on(m, "cuda", ids, use);
        fprintf(stderr, "%s: ppl CPU %.6f, GPU %.6f (%+.2e)\n", pipes[k], cpu, gpu, gpu / cpu - 1);
        assert_true(fabs(gpu / cpu - 1) <= 5e-4);
        free(ids);
        mopt_model_free(m);
    }
}

/* 48 greedy tokens after the first 16 of lit-val: the same ids on the GPU as on the CPU. */
static void test_greedy_text_on_the_gpu_is_the_cpus(void **state) {
    (void)state;
    REQUIRE_GPU();
    const char *models[] = {"models/lit-llama-7m", "models/lit-gpt2-1m"};
    for (int mi = 0; mi < 2; mi++) {
        mopt_model *m = test_load_model(models[mi]);
        size_t n;
        int32_t *ids = val_tokens(m, &n), out[2][48];
        const int32_t V = mopt_model_arch(m)->vocab_size;
        for (int d = 0; d < 2; d++) {
            mopt_session *s = session_on(m, d ? "cuda" : "cpu");
            const float *logits;
            mopt_error err = {0};
            assert_int_equal(mopt_session_forward(s, ids, 16, false, &logits, &err), MOPT_OK);
            for (int t = 0; t < 48; t++) {
                int32_t best = 0;
                for (int32_t i = 1; i < V; i++) best = logits[i] > logits[best] ? i : best;
                out[d][t] = best;
                assert_int_equal(mopt_session_forward(s, &best, 1, false, &logits, &err), MOPT_OK);
            }
            mopt_session_free(s);
        }
        for (int t = 0; t < 48; t++)
            if (out[0][t] != out[1][t]) fail_msg("%s: greedy token %d is %d on the CPU, %d on the GPU", models[mi], t, out[0][t], out[1][t]);
        free(ids);
        mopt_model_free(m);
    }
}

/* Runs everywhere: a device the session cannot use fails in one line naming it. */
static void test_a_bad_device_is_named_in_one_line(void **state) {
    (void)state;
    REQUIRE_SHARED();
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    mopt_session_opts o;
    mopt_session_opts_default(&o);
    o.device = "gpu0";
    mopt_error err = {0};
    assert_null(mopt_session_new(mopt_model_graph(m), &o, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "device 'gpu0': expected cpu, cuda or cuda:N");
    if (no_gpu.code) { /* without a GPU (or without libmopt-cuda) a cuda session says why */
        o.device = "cuda:0";
        assert_null(mopt_session_new(mopt_model_graph(m), &o, &err));
        CHECK_ERR(err, MOPT_E_BACKEND, no_gpu.msg);
    }
    mopt_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_bad_device_is_named_in_one_line),
        cmocka_unit_test(test_llama_logits_on_the_gpu_match_transformers),
        cmocka_unit_test(test_perplexity_on_the_gpu_matches_the_cpu),
        cmocka_unit_test(test_quantized_perplexity_on_the_gpu_matches_the_cpu),
        cmocka_unit_test(test_greedy_text_on_the_gpu_is_the_cpus),
    };
    return cmocka_run_group_tests(tests, probe_gpu, test_registry_teardown);
}
