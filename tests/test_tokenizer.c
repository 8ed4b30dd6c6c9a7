/* Tokenizers against what HF tokenizers itself gives (reference/tokenizers.json
 * and lit.json tokenizer_cases), on all three tokenizer.json families, plus the
 * llama2.c tokenizer and malformed tokenizer files. */
#include <jansson.h>

#include "sha256.h"
#include "testutil.h"

static json_t *load_json(const char *rel) {
    char path[1024];
    json_error_t je;
    json_t *j = json_load_file(test_shared_path(path, sizeof path, rel), 0, &je);
    if (!j) fprintf(stderr, "%s: %s\n", path, je.text);
    assert_non_null(j);
    return j;
}

static mopt_tokenizer *load_tok(const char *rel) {
    char path[1024];
    mopt_error err = {0};
    mopt_tokenizer *t = mopt_tokenizer_load_hf(test_shared_path(path, sizeof path, rel), &err);
    if (!t) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(t);
    return t;
}

static void expect_ids(const mopt_tokenizer *tok, const char *text, size_t len, uint32_t flags, json_t *ids,
                       const char *label) {
    int32_t *got;
    size_t n;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode(tok, text, len, flags, &got, &n, &err), MOPT_OK);
    int ok = n == json_array_size(ids);
    for (size_t i = 0; ok && i < n; i++) ok = got[i] == json_integer_value(json_array_get(ids, i));
    if (!ok) {
        fprintf(stderr, "%s: ids differ for %s\n  got:", label, text);
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", got[i]);
        fprintf(stderr, "\n");
    }
    free(got);
    assert_true(ok);
}

static void check_family(const char *key, const char *tok_rel) {
    REQUIRE_SHARED();
    json_t *root = load_json("reference/tokenizers.json");
    json_t *fam = json_object_get(root, key);
    assert_non_null(fam);
    mopt_tokenizer *tok = load_tok(tok_rel);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(fam, "cases"), i, c) {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        expect_ids(tok, text, len, MOPT_TOK_ADD_SPECIAL, json_object_get(c, "ids"), key);
        expect_ids(tok, text, len, 0, json_object_get(c, "ids_no_special"), key);
        /* decode(ids) with special tokens skipped */
        json_t *ids = json_object_get(c, "ids");
        size_t n = json_array_size(ids);
        int32_t *v = malloc((n + 1) * sizeof *v);
        for (size_t k = 0; k < n; k++) v[k] = (int32_t)json_integer_value(json_array_get(ids, k));
        char *out;
        size_t out_len;
        mopt_error err = {0};
        assert_int_equal(mopt_tokenizer_decode(tok, v, n, MOPT_TOK_SKIP_SPECIAL, &out, &out_len, &err), MOPT_OK);
        const char *want = json_string_value(json_object_get(c, "decoded"));
        if (strcmp(out, want) != 0) fprintf(stderr, "%s: decoded \"%s\", want \"%s\"\n", key, out, want);
        assert_string_equal(out, want);
        free(out);
        free(v);
    }

    /* all of lit-val.txt: count, digest, first 64, round trip */
    json_t *lv = json_object_get(fam, "lit_val");
    char path[1024];
    size_t len;
    char *text = read_whole(test_shared_path(path, sizeof path, "data/lit-val.txt"), &len);
    assert_non_null(text);
    int32_t *ids;
    size_t n;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode(tok, text, len, 0, &ids, &n, &err), MOPT_OK);
    assert_int_equal(n, json_integer_value(json_object_get(lv, "n_tokens")));
    for (size_t k = 0; k < 64; k++) assert_int_equal(ids[k], json_integer_value(json_array_get(json_object_get(lv, "first_64"), k)));
    sha256_ctx sc;
    sha256_init(&sc);
    for (size_t k = 0; k < n; k++) {
        char num[16];
        int m = snprintf(num, sizeof num, k ? ",%d" : "%d", ids[k]);
        sha256_update(&sc, num, (size_t)m);
    }
    char hex[65];
    sha256_hex(&sc, hex);
    assert_string_equal(hex, json_string_value(json_object_get(lv, "sha256_of_comma_joined_ids")));
    char *back;
    size_t back_len;
    assert_int_equal(mopt_tokenizer_decode(tok, ids, n, MOPT_TOK_SKIP_SPECIAL, &back, &back_len, &err), MOPT_OK);
    assert_int_equal(back_len, len);
    assert_memory_equal(back, text, len);
    free(back);
    free(ids);
    free(text);
    mopt_tokenizer_free(tok);
    json_decref(root);
}

static void test_bytelevel_bpe_matches_hf_tokenizers(void **s) {
    check_family("lit (lit-llama-7m/tokenizer.json)", "models/lit-llama-7m/tokenizer.json");
}

static void test_llama3_style_split_regex_and_ignore_merges_match_hf(void **s) {
    check_family("llama3-style", "models/tokenizers/llama3-style/tokenizer.json");
}

static void test_sentencepiece_bpe_with_byte_fallback_matches_hf(void **s) {
    check_family("llama2-style", "models/tokenizers/llama2-style/tokenizer.json");
}

static void test_lit_json_tokenizer_cases(void **s) {
    REQUIRE_SHARED();
    json_t *root = load_json("reference/lit.json");
    mopt_tokenizer *tok = load_tok("models/lit-llama-7m/tokenizer.json");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(root, "tokenizer_cases"), i, c) {
        expect_ids(tok, json_string_value(json_object_get(c, "text")), json_string_length(json_object_get(c, "text")),
                   MOPT_TOK_ADD_SPECIAL, json_object_get(c, "ids"), "lit.json");
    }
    /* the greedy prompts too */
    const char *keys[] = {"target", "draft"};
    for (int k = 0; k < 2; k++) {
        json_t *g = json_object_get(json_object_get(root, keys[k]), "greedy");
        const char *p = json_string_value(json_object_get(g, "prompt"));
        expect_ids(tok, p, strlen(p), MOPT_TOK_ADD_SPECIAL, json_object_get(g, "prompt_ids"), "greedy prompt");
    }
    mopt_tokenizer_free(tok);
    json_decref(root);
}

static void test_llama2c_tokenizer_encodes_like_run_c(void **s) {
    REQUIRE_SHARED();
    char path[1024];
    mopt_error err = {0};
    mopt_tokenizer *tok =
        mopt_tokenizer_load_llama2c(test_shared_path(path, sizeof path, "models/stories260K/tok512.bin"), 512, &err);
    assert_non_null(tok);
    int32_t *ids;
    size_t n;
    /* An empty prompt is BOS alone (run.c adds no dummy prefix to empty text). */
    assert_int_equal(mopt_tokenizer_encode(tok, "", 0, MOPT_TOK_ADD_SPECIAL, &ids, &n, &err), MOPT_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], 1);
    free(ids);
    /* Round trip of a sentence, and byte fallback for a code point outside the vocabulary. */
    const char *text = "Once upon a time, Lily saw a big red ball. \xe2\x9c\x93";
    assert_int_equal(mopt_tokenizer_encode(tok, text, strlen(text), MOPT_TOK_ADD_SPECIAL, &ids, &n, &err), MOPT_OK);
    assert_int_equal(ids[0], 1);
    char *out;
    size_t len;
    assert_int_equal(mopt_tokenizer_decode(tok, ids, n, MOPT_TOK_SKIP_SPECIAL, &out, &len, &err), MOPT_OK);
    assert_string_equal(out, text); /* the dummy-prefix space is dropped after BOS */
    int byte_tokens = 0;
    for (size_t i = 0; i < n; i++) byte_tokens += ids[i] >= 3 && ids[i] < 3 + 256;
    assert_true(byte_tokens >= 3); /* ✓ is three UTF-8 bytes */
    free(out);
    free(ids);
    mopt_tokenizer_free(tok);
}

static void write_and_load(const char *json, int expect_code, const char *substr) {
    char dir[1024], path[1100];
    assert_non_null(test_tmpdir(dir, sizeof dir, "tok"));
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, json, strlen(json));
    mopt_error err = {0};
    mopt_tokenizer *t = mopt_tokenizer_load_hf(path, &err);
    assert_null(t);
    CHECK_ERR(err, expect_code, substr);
}

static void test_malformed_tokenizer_json_reports_line_and_column(void **s) {
    write_and_load("{\n  \"model\": {\"type\": \"BPE\",\n    \"vocab\": {\"a\": 0,}\n}", MOPT_E_FORMAT, ":3:");
}

static void test_unknown_tokenizer_model_is_refused_by_name(void **s) {
    write_and_load("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", MOPT_E_UNSUPPORTED, "Unigram");
}

static void test_merge_with_unknown_token_is_refused(void **s) {
    write_and_load("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
                   MOPT_E_FORMAT, "merges[0]");
}

static void test_truncated_llama2c_tokenizer_is_refused(void **s) {
    REQUIRE_SHARED();
    char dir[1024], path[1100], src[1024];
    size_t n;
    char *data = read_whole(test_shared_path(src, sizeof src, "models/stories260K/tok512.bin"), &n);
    assert_non_null(data);
    assert_non_null(test_tmpdir(dir, sizeof dir, "tok2c"));
    snprintf(path, sizeof path, "%s/tok.bin", dir);
    write_file(path, data, n / 2);
    mopt_error err = {0};
    assert_null(mopt_tokenizer_load_llama2c(path, 512, &err));
    CHECK_ERR(err, MOPT_E_FORMAT, "truncated");
    free(data);
}

static void test_invalid_utf8_text_is_refused(void **s) {
    REQUIRE_SHARED();
    mopt_tokenizer *tok = load_tok("models/lit-llama-7m/tokenizer.json");
    int32_t *ids;
    size_t n;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode(tok, "ab\xff\xfe", 4, 0, &ids, &n, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "UTF-8");
    mopt_tokenizer_free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytelevel_bpe_matches_hf_tokenizers),
        cmocka_unit_test(test_llama3_style_split_regex_and_ignore_merges_match_hf),
        cmocka_unit_test(test_sentencepiece_bpe_with_byte_fallback_matches_hf),
        cmocka_unit_test(test_lit_json_tokenizer_cases),
        cmocka_unit_test(test_llama2c_tokenizer_encodes_like_run_c),
        cmocka_unit_test(test_malformed_tokenizer_json_reports_line_and_column),
        cmocka_unit_test(test_unknown_tokenizer_model_is_refused_by_name),
        cmocka_unit_test(test_merge_with_unknown_token_is_refused),
        cmocka_unit_test(test_truncated_llama2c_tokenizer_is_refused),
        cmocka_unit_test(test_invalid_utf8_text_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
