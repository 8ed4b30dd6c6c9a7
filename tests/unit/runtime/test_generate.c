/* Generation through the library: greedy decoding reproduces llama2.c's own
 * stories260K sample and transformers' lit-llama-7m continuation; sampling is
 * seeded, reproducible and follows the softmax it claims to. */
#include <jansson.h>
#include <math.h>

#include "testutil.h"

/* Greedy-decodes n tokens after ids[0..n_prompt) and returns the new ids (malloc). */
static int32_t *greedy(mopt_model *m, const int32_t *prompt, size_t n_prompt, int n) {
    mopt_error err = {0};
    mopt_session *s = mopt_session_new(mopt_model_graph(m), NULL, &err);
    assert_non_null(s);
    int32_t *out = malloc((size_t)n * sizeof *out);
    const float *logits;
    assert_int_equal(mopt_session_forward(s, prompt, (int32_t)n_prompt, false, &logits, &err), MOPT_OK);
    const int32_t V = mopt_model_arch(m)->vocab_size;
    for (int i = 0; i < n; i++) {
        out[i] = mopt_argmax(logits, V);
        if (i + 1 < n) assert_int_equal(mopt_session_forward(s, &out[i], 1, false, &logits, &err), MOPT_OK);
    }
    mopt_session_free(s);
    return out;
}

static void test_stories260k_greedy_matches_llama2c_sample(void **st) {
    REQUIRE_SHARED();
    char path[1024];
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(path, sizeof path, "models/stories260K/stories260K.bin"), NULL, &err);
    assert_non_null(m);
    size_t n;
    char *readme = read_whole(test_shared_path(path, sizeof path, "README.md"), &n);
    char *start = strstr(readme, "```\nOnce upon a time");
    assert_non_null(start);
    start += 4;
    char *end = strstr(start, "```");
    *end = '\0';
    const mopt_tokenizer *tok = mopt_model_tokenizer(m);
    int32_t bos = mopt_tokenizer_bos_id(tok);
    /* llama2.c's default run: 256 steps from BOS, i.e. 256 sampled tokens */
    int32_t *ids = greedy(m, &bos, 1, 256);
    int32_t all[257];
    all[0] = bos;
    memcpy(all + 1, ids, sizeof(int32_t) * 256);
    char text[8192];
    size_t len = 0;
    for (int i = 0; i < 256; i++) {
        int64_t k = mopt_tokenizer_decode_next(tok, all, (size_t)i + 1, ids[i], text + len, sizeof text - len);
        assert_true(k >= 0);
        len += (size_t)k;
    }
    text[len++] = '\n';
    text[len] = '\0';
    assert_string_equal(text, start);
    free(ids);
    free(readme);
    mopt_model_free(m);
}

static void test_lit_llama_greedy_matches_transformers(void **st) {
    REQUIRE_SHARED();
    char path[1024];
    json_error_t je;
    json_t *lit = json_load_file(test_shared_path(path, sizeof path, "reference/lit.json"), 0, &je);
    assert_non_null(lit);
    json_t *g = json_object_get(json_object_get(lit, "target"), "greedy");
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(test_shared_path(path, sizeof path, "models/lit-llama-7m"), NULL, &err);
    assert_non_null(m);
    const char *prompt = json_string_value(json_object_get(g, "prompt"));
    int32_t *pids;
    size_t np;
    assert_int_equal(mopt_tokenizer_encode(mopt_model_tokenizer(m), prompt, strlen(prompt), MOPT_TOK_ADD_SPECIAL, &pids,
                                           &np, &err),
                     MOPT_OK);
    json_t *want = json_object_get(g, "new_ids");
    int n = (int)json_array_size(want);
    int32_t *ids = greedy(m, pids, np, n);
    for (int i = 0; i < n; i++) assert_int_equal(ids[i], json_integer_value(json_array_get(want, i)));
    char *text;
    size_t len;
    assert_int_equal(mopt_tokenizer_decode(mopt_model_tokenizer(m), ids, (size_t)n, MOPT_TOK_SKIP_SPECIAL, &text, &len, &err),
                     MOPT_OK);
    assert_string_equal(text, json_string_value(json_object_get(g, "text")));
    free(text);
    free(ids);
    free(pids);
    mopt_model_free(m);
    json_decref(lit);
}

static void test_sampling_is_seeded_and_reproducible(void **st) {
    float logits[6] = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 0.0f};
    mopt_sampler a, b, c;
    mopt_sampler_init(&a, 0.8f, 0.95f, 42);
    mopt_sampler_init(&b, 0.8f, 0.95f, 42);
    mopt_sampler_init(&c, 0.8f, 0.95f, 43);
    int same_c = 1;
    for (int i = 0; i < 200; i++) {
        int32_t x = mopt_sampler_sample(&a, logits, 6, NULL), y = mopt_sampler_sample(&b, logits, 6, NULL);
        assert_int_equal(x, y);
        same_c &= mopt_sampler_sample(&c, logits, 6, NULL) == x;
    }
    assert_false(same_c);
    mopt_sampler_init(&a, 0.0f, 1.0f, 1);
    assert_int_equal(mopt_sampler_sample(&a, logits, 6, NULL), 4); /* temperature 0 is argmax */
}

static void test_sampling_follows_softmax_and_top_p(void **st) {
    /* temperature 1: empirical frequencies within 4 standard errors of softmax */
    float logits[5] = {0.0f, 1.0f, 2.0f, -1.0f, 0.5f};
    double p[5], z = 0;
    for (int i = 0; i < 5; i++) z += (p[i] = exp(logits[i]));
    for (int i = 0; i < 5; i++) p[i] /= z;
    const int N = 200000;
    int counts[5] = {0};
    mopt_sampler s;
    mopt_sampler_init(&s, 1.0f, 1.0f, 7);
    for (int i = 0; i < N; i++) counts[mopt_sampler_sample(&s, logits, 5, NULL)]++;
    for (int i = 0; i < 5; i++) {
        double se = sqrt(p[i] * (1 - p[i]) / N);
        assert_true(fabs((double)counts[i] / N - p[i]) < 4 * se);
    }
    /* top-p 0.7 keeps {2, 1} (0.61 + 0.22 >= 0.7): nothing else is ever drawn, renormalized */
    memset(counts, 0, sizeof counts);
    mopt_sampler_init(&s, 1.0f, 0.7f, 9);
    for (int i = 0; i < N; i++) counts[mopt_sampler_sample(&s, logits, 5, NULL)]++;
    assert_int_equal(counts[0] + counts[3] + counts[4], 0);
    double q2 = p[2] / (p[1] + p[2]);
    assert_true(fabs((double)counts[2] / N - q2) < 4 * sqrt(q2 * (1 - q2) / N));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories260k_greedy_matches_llama2c_sample),
        cmocka_unit_test(test_lit_llama_greedy_matches_transformers),
        cmocka_unit_test(test_sampling_is_seeded_and_reproducible),
        cmocka_unit_test(test_sampling_follows_softmax_and_top_p),
    };
    return test_run_tests(tests, NULL, NULL);
}
