/* Tokenizers against what HF tokenizers itself gives (reference/tokenizers.json
 * and lit.json tokenizer_cases), on all three tokenizer.json families, plus the
 * llama2.c tokenizer and malformed tokenizer files. */
#include <jansson.h>
#include <pthread.h>

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

/* One tokenizer, four threads encoding lit.json's cases at once (as a server's connections do): every encoding
 * still gives Hugging Face's ids. The regex splits once shared their match data, and one thread's match moved
 * another's piece past the end of its text. */
typedef struct {
    const mopt_tokenizer *tok;
    json_t *cases;
    int bad;
} enc_job;

static void *encode_cases_repeatedly(void *p) {
    enc_job *j = p;
    for (int round = 0; round < 200; round++) {
        size_t i;
        json_t *c;
        json_array_foreach(j->cases, i, c) {
            json_t *text = json_object_get(c, "text"), *want = json_object_get(c, "ids");
            int32_t *ids = NULL;
            size_t n = 0;
            if (mopt_tokenizer_encode(j->tok, json_string_value(text), json_string_length(text), MOPT_TOK_ADD_SPECIAL, &ids, &n, NULL))
                j->bad++;
            else if (n != json_array_size(want))
                j->bad++;
            else
                for (size_t k = 0; k < n; k++) j->bad += ids[k] != json_integer_value(json_array_get(want, k));
            free(ids);
        }
    }
    return NULL;
}

static void test_one_tokenizer_encodes_on_many_threads_at_once(void **s) {
    REQUIRE_SHARED();
    json_t *root = load_json("reference/lit.json");
    mopt_tokenizer *tok = load_tok("models/lit-llama-7m/tokenizer.json");
    json_t *cases = json_object_get(root, "tokenizer_cases");
    assert_true(json_array_size(cases) >= 3);
    pthread_t th[4];
    enc_job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t] = (enc_job){tok, cases, 0};
        assert_int_equal(pthread_create(&th[t], NULL, encode_cases_repeatedly, &jobs[t]), 0);
    }
    int bad = 0;
    for (int t = 0; t < 4; t++) {
        pthread_join(th[t], NULL);
        bad += jobs[t].bad;
    }
    assert_int_equal(bad, 0);
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

/* run.c's encode, written out here from llama2.c (read the file, quadratic merge
 * loop) as the reference for the tokenizer's heap-based merges. */
static size_t run_c_encode(const char *file, const char *text, int32_t *out) {
    size_t fn;
    unsigned char *d = read_whole(file, &fn);
    assert_non_null(d);
    char *vocab[512];
    float score[512];
    size_t off = 4;
    for (int i = 0; i < 512; i++) {
        int32_t len;
        memcpy(&score[i], d + off, 4);
        memcpy(&len, d + off + 4, 4);
        vocab[i] = calloc((size_t)len + 1, 1);
        memcpy(vocab[i], d + off + 8, (size_t)len);
        off += 8 + (size_t)len;
    }
#define LOOKUP(str) ({ int f_ = -1; for (int k_ = 0; k_ < 512 && f_ < 0; k_++) if (!strcmp(vocab[k_], (str))) f_ = k_; f_; })
    size_t n = 0;
    out[n++] = 1; /* BOS */
    if (*text) out[n++] = LOOKUP(" ");
    char buf[64];
    for (const char *c = text; *c;) {
        size_t cl = 1;
        while (((unsigned char)c[cl] & 0xc0) == 0x80 && cl < 4) cl++;
        memcpy(buf, c, cl);
        buf[cl] = 0;
        int id = LOOKUP(buf);
        if (id >= 0) out[n++] = id;
        else
            for (size_t k = 0; k < cl; k++) out[n++] = (unsigned char)c[k] + 3;
        c += cl;
    }
    for (;;) { /* the pair with the highest merged score, leftmost on ties */
        float best = -1e10f;
        int best_id = -1;
        size_t best_i = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            snprintf(buf, sizeof buf, "%s%s", vocab[out[i]], vocab[out[i + 1]]);
            int id = LOOKUP(buf);
            if (id >= 0 && score[id] > best) best = score[id], best_id = id, best_i = i;
        }
        if (best_id < 0) break;
        out[best_i] = best_id;
        memmove(&out[best_i + 1], &out[best_i + 2], (n - best_i - 2) * sizeof *out);
        n--;
    }
#undef LOOKUP
    for (int i = 0; i < 512; i++) free(vocab[i]);
    free(d);
    return n;
}

static void test_llama2c_merges_match_run_c_on_real_text(void **s) {
    REQUIRE_SHARED();
    char path[1024], val[1024];
    test_shared_path(path, sizeof path, "models/stories260K/tok512.bin");
    mopt_error err = {0};
    mopt_tokenizer *tok = mopt_tokenizer_load_llama2c(path, 512, &err);
    assert_non_null(tok);
    size_t vn;
    char *text = read_whole(test_shared_path(val, sizeof val, "data/lit-val.txt"), &vn);
    const char *extra[] = {"Once upon a time, there was a little girl named Lily.", "a  b\t\tc\n\n d", "\xe2\x9c\x93 caf\xc3\xa9 \xf0\x9f\x98\x80!"};
    for (int c = 0; c < 4; c++) {
        char *t = c < 3 ? strdup(extra[c]) : strndup(text, 3000);
        int32_t *ref = malloc((strlen(t) * 4 + 8) * sizeof *ref), *ids;
        size_t nr = run_c_encode(path, t, ref), n;
        assert_int_equal(mopt_tokenizer_encode(tok, t, strlen(t), MOPT_TOK_ADD_SPECIAL, &ids, &n, &err), MOPT_OK);
        assert_int_equal(n, nr);
        assert_memory_equal(ids, ref, n * sizeof *ids);
        free(ids);
        free(ref);
        free(t);
    }
    free(text);
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

/* tokenizer_config.json beside tokenizer.json gives the chat template: a
 * string, or the "default" of a list; none without it; a broken config or a
 * template of the wrong type is refused with the file's name. */
static void test_the_chat_template_comes_from_tokenizer_config(void **s) {
    REQUIRE_SHARED();
    char dir[1024], path[1100], cfg[1100], src[1024];
    test_tmpdir(dir, sizeof dir, "chat-tok");
    size_t n;
    char *json = read_whole(test_shared_path(src, sizeof src, "models/lit-llama-7m/tokenizer.json"), &n);
    assert_non_null(json);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    write_file(path, json, n);
    free(json);
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
    static const struct {
        const char *config, *want, *error;
    } cases[] = {
        {NULL, NULL, NULL},
        {"{\"eos_token\": \"</s>\", \"model_max_length\": 1000000000000000019884624838656}", NULL, NULL},
        {"{\"chat_template\": \"{{ bos_token }}{{ messages[0].content }}\"}", "{{ bos_token }}{{ messages[0].content }}", NULL},
        {"{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", \"template\": \"D\"}]}", "D", NULL},
        {"{\"chat_template\": null}", NULL, NULL},
        {"{\"chat_template\": 5}", NULL, "chat_template must be a string"},
        {"{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}]}", NULL, "a list with a \"default\""},
        {"[1]", NULL, "not a JSON object"},
        {"{\"chat_template\": \"x\",", NULL, "tokenizer_config.json:1:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        unlink(cfg);
        if (cases[i].config) write_file(cfg, cases[i].config, strlen(cases[i].config));
        mopt_error err = {0};
        mopt_tokenizer *t = mopt_tokenizer_load_hf(path, &err);
        if (cases[i].error) {
            assert_null(t);
            CHECK_ERR(err, MOPT_E_FORMAT, cases[i].error);
            assert_non_null(strstr(err.msg, "tokenizer_config.json"));
            continue;
        }
        assert_non_null(t);
        if (cases[i].want) assert_string_equal(mopt_tokenizer_chat_template(t), cases[i].want);
        else assert_null(mopt_tokenizer_chat_template(t));
        mopt_tokenizer_free(t);
    }
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
        cmocka_unit_test(test_one_tokenizer_encodes_on_many_threads_at_once),
        cmocka_unit_test(test_llama2c_tokenizer_encodes_like_run_c),
        cmocka_unit_test(test_llama2c_merges_match_run_c_on_real_text),
        cmocka_unit_test(test_malformed_tokenizer_json_reports_line_and_column),
        cmocka_unit_test(test_unknown_tokenizer_model_is_refused_by_name),
        cmocka_unit_test(test_merge_with_unknown_token_is_refused),
        cmocka_unit_test(test_the_chat_template_comes_from_tokenizer_config),
        cmocka_unit_test(test_truncated_llama2c_tokenizer_is_refused),
        cmocka_unit_test(test_invalid_utf8_text_is_refused),
    };
    return test_run_tests(tests, NULL, NULL);
}
