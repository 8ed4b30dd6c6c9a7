/* Perplexity on lit-val.txt with the lit.json protocol (ctx 256) within 0.05%
 * of transformers' ppl_ctx256, for both lit models, and the protocol's edge cases. */
#include <jansson.h>
#include <math.h>

#include "testutil.h"

static void check_ppl(const char *model_rel, const char *key) {
    REQUIRE_SHARED();
    char path[1024];
    json_error_t je;
    json_t *lit = json_load_file(test_shared_path(path, sizeof path, "reference/lit.json"), 0, &je);
    assert_non_null(lit);
    double want = json_real_value(json_object_get(json_object_get(lit, key), "ppl_ctx256"));
    json_int_t want_tokens = json_integer_value(json_object_get(json_object_get(lit, key), "val_tokens"));
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(path, sizeof path, model_rel), NULL, &err);
    assert_non_null(m);
    size_t len;
    char *text = read_whole(test_shared_path(path, sizeof path, "data/lit-val.txt"), &len);
    int32_t *ids;
    size_t n;
    assert_int_equal(mopt_tokenizer_encode(mopt_model_tokenizer(m), text, len, 0, &ids, &n, &err), MOPT_OK);
    assert_int_equal((json_int_t)n, want_tokens);
    mopt_session_opts o;
    mopt_session_opts_default(&o);
    o.max_ctx = 256;
    mopt_session *s = mopt_session_new(mopt_model_graph(m), &o, &err);
    mopt_ppl_result r;
    assert_int_equal(mopt_perplexity(s, ids, (int64_t)n, 256, NULL, NULL, &r, &err), MOPT_OK);
    fprintf(stderr, "%s: ppl %.5f, reference %.5f (rel %.2e)\n", model_rel, r.ppl, want, fabs(r.ppl / want - 1));
    assert_int_equal(r.windows, (int64_t)n / 256);
    assert_int_equal(r.tokens_scored, r.windows * 255);
    assert_true(fabs(r.ppl / want - 1) < 5e-4);
    free(ids);
    free(text);
    mopt_session_free(s);
    mopt_model_free(m);
    json_decref(lit);
}

static void test_lit_llama_ppl_matches_reference(void **st) { check_ppl("models/lit-llama-7m", "target"); }
static void test_lit_gpt2_ppl_matches_reference(void **st) { check_ppl("models/lit-gpt2-1m", "draft"); }

static void test_too_few_tokens_for_a_window_is_an_error(void **st) {
    REQUIRE_SHARED();
    char path[1024];
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(path, sizeof path, "models/lit-gpt2-1m"), NULL, &err);
    mopt_session *s = mopt_session_new(mopt_model_graph(m), NULL, &err);
    int32_t ids[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
    mopt_ppl_result r;
    assert_int_equal(mopt_perplexity(s, ids, 10, 256, NULL, NULL, &r, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "fewer than one window");
    /* two windows of 5: exactly 8 scored tokens, the partial tail dropped */
    assert_int_equal(mopt_perplexity(s, ids, 10, 5, NULL, NULL, &r, &err), MOPT_OK);
    assert_int_equal(r.tokens_scored, 8);
    assert_true(r.ppl > 1 && isfinite(r.ppl));
    mopt_session_free(s);
    mopt_model_free(m);
}

/* Weights with NaNs: the perplexity is an error, never a printed "nan" with exit 0. */
static void test_non_finite_logits_make_perplexity_an_error(void **st) {
    REQUIRE_SHARED();
    char dir[1024], cmd[4096], path[1200];
    test_tmpdir(dir, sizeof dir, "nan");
    snprintf(cmd, sizeof cmd, "cp '%s/models/lit-gpt2-1m/'* '%s/'", test_shared_dir(), dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    size_t n;
    unsigned char *d = read_whole(path, &n);
    uint64_t hl;
    memcpy(&hl, d, 8);
    for (size_t at = 8 + hl; at + 2 <= n; at += 4096) d[at] = 0xc0, d[at + 1] = 0x7f; /* bf16 NaN in every tensor's span */
    write_file(path, d, n);
    free(d);
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(dir, NULL, &err);
    assert_non_null(m);
    mopt_session *s = mopt_session_new(mopt_model_graph(m), NULL, &err);
    int32_t ids[16];
    for (int i = 0; i < 16; i++) ids[i] = 100 + i;
    mopt_ppl_result r;
    assert_int_equal(mopt_perplexity(s, ids, 16, 8, NULL, NULL, &r, &err), MOPT_E_RUNTIME);
    CHECK_ERR(err, MOPT_E_RUNTIME, "window 0 (tokens 0..7): the model's logits are not finite");
    mopt_session_free(s);
    mopt_model_free(m);
    char args[4096];
    snprintf(args, sizeof args, "eval '%s' --data '%s/data/lit-val.txt' --limit-tokens 1024", dir, test_shared_dir());
    test_cli_refuses(args, 1, "logits are not finite", NULL);
}

static void test_strided_windows_score_each_token_once(void **st) {
    REQUIRE_SHARED();
    char path[1024];
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(path, sizeof path, "models/lit-gpt2-1m"), NULL, &err);
    mopt_session *s = mopt_session_new(mopt_model_graph(m), NULL, &err);
    size_t len;
    char *text = read_whole(test_shared_path(path, sizeof path, "data/lit-val.txt"), &len);
    int32_t *ids;
    size_t n;
    assert_int_equal(mopt_tokenizer_encode(mopt_model_tokenizer(m), text, 20000, 0, &ids, &n, &err), MOPT_OK);
    const int64_t nw = mopt_perplexity_windows((int64_t)n, 256, 128);
    assert_int_equal(nw, ((int64_t)n - 256) / 128 + 1);
    double *wn = malloc((size_t)nw * sizeof *wn);
    mopt_ppl_result r, plain;
    assert_int_equal(mopt_perplexity_strided(s, ids, (int64_t)n, 256, 128, wn, NULL, NULL, &r, &err), MOPT_OK);
    /* the first window scores 255 targets, each later one its last 128 */
    assert_int_equal(r.tokens_scored, 255 + (nw - 1) * 128);
    for (int64_t w = 0; w < nw; w++) assert_true(isfinite(wn[w]) && wn[w] > 0);
    /* more context per scored token: strided perplexity is no worse than the non-overlapping one */
    assert_int_equal(mopt_perplexity(s, ids, (int64_t)n, 256, NULL, NULL, &plain, &err), MOPT_OK);
    fprintf(stderr, "stride 128: ppl %.4f over %lld tokens; non-overlapping %.4f\n", r.ppl, (long long)r.tokens_scored, plain.ppl);
    assert_true(r.ppl < plain.ppl * 1.02);
    free(wn);
    free(ids);
    free(text);
    mopt_session_free(s);
    mopt_model_free(m);
}

/* Percentiles interpolate between order statistics (numpy's default): for
 * 1..5 the 0.95 quantile sits at position 3.8 of the sorted values, 4.8. */
static void test_quantiles_interpolate_between_sorted_values(void **state) {
    (void)state;
    const double v[5] = {5, 1, 4, 2, 3};
    assert_true(mopt_quantile(v, 5, 0.0) == 1.0);
    assert_true(mopt_quantile(v, 5, 0.5) == 3.0);
    assert_true(fabs(mopt_quantile(v, 5, 0.95) - 4.8) < 1e-12);
    assert_true(mopt_quantile(v, 5, 1.0) == 5.0);
    assert_true(mopt_quantile(v, 1, 0.95) == 5.0);
    assert_true(isnan(mopt_quantile(v, 0, 0.5)));
    assert_true(v[0] == 5 && v[1] == 1); /* the input keeps its order */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantiles_interpolate_between_sorted_values),
        cmocka_unit_test(test_lit_llama_ppl_matches_reference),
        cmocka_unit_test(test_lit_gpt2_ppl_matches_reference),
        cmocka_unit_test(test_too_few_tokens_for_a_window_is_an_error),
        cmocka_unit_test(test_strided_windows_score_each_token_once),
        cmocka_unit_test(test_non_finite_logits_make_perplexity_an_error),
    };
    return test_run_tests(tests, NULL, NULL);
}
