/* Logits of the first 32 tokens of lit-val.txt against the transformers
 * reference files (max abs error below 1e-3), and the same logits whether the
 * sequence is run as one prefill or token by token through the KV cache. */
#include <math.h>

#include "testutil.h"

static void check_model(const char *model_rel, const char *ref_rel, const char *key) {
    REQUIRE_SHARED();
    char path[1024], ref[1024], json[1024];
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(path, sizeof path, model_rel), NULL, &err);
    if (!m) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(m);
    /* input ids from lit.json, cross-checked against our own tokenizer */
    size_t n;
    char *lit = read_whole(test_shared_path(json, sizeof json, "reference/lit.json"), &n);
    assert_non_null(lit);
    char *p = strstr(lit, key);
    assert_non_null(p);
    p = strstr(p, "\"input_ids\"");
    assert_non_null(p);
    p = strchr(p, '[') + 1;
    int32_t ids[32];
    for (int i = 0; i < 32; i++) ids[i] = (int32_t)strtol(p, &p, 10), p++;
    free(lit);

    size_t nref;
    float *expect = read_whole(test_shared_path(ref, sizeof ref, ref_rel), &nref);
    assert_non_null(expect);
    const int32_t V = mopt_model_arch(m)->vocab_size;
    assert_int_equal(nref, (size_t)32 * V * sizeof(float));

    mopt_session *s = mopt_session_new(mopt_model_graph(m), NULL, &err);
    assert_non_null(s);
    const float *logits;
    assert_int_equal(mopt_session_forward(s, ids, 32, true, &logits, &err), MOPT_OK);
    double max_err = 0;
    for (size_t i = 0; i < (size_t)32 * V; i++) max_err = fmax(max_err, fabs((double)logits[i] - expect[i]));
    fprintf(stderr, "%s: prefill max |logit - reference| = %.3g\n", model_rel, max_err);
    assert_true(max_err < 1e-3);

    /* token by token through the cache */
    assert_int_equal(mopt_session_truncate(s, 0, &err), MOPT_OK);
    max_err = 0;
    for (int t = 0; t < 32; t++) {
        assert_int_equal(mopt_session_forward(s, &ids[t], 1, false, &logits, &err), MOPT_OK);
        for (int32_t i = 0; i < V; i++) max_err = fmax(max_err, fabs((double)logits[i] - expect[(size_t)t * V + i]));
    }
    fprintf(stderr, "%s: decode max |logit - reference| = %.3g\n", model_rel, max_err);
    assert_true(max_err < 1e-3);
    free(expect);
    mopt_session_free(s);
    mopt_model_free(m);
}

static void test_llama_logits_match_transformers(void **state) {
    check_model("models/lit-llama-7m", "reference/lit-llama-7m.val32.logits.f32", "\"target\"");
}

static void test_gpt2_logits_match_transformers(void **state) {
    check_model("models/lit-gpt2-1m", "reference/lit-gpt2-1m.val32.logits.f32", "\"draft\"");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama_logits_match_transformers),
        cmocka_unit_test(test_gpt2_logits_match_transformers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
