/* Seeded mutation fuzzing of every parser on real inputs: safetensors (header
 * and data offsets), config.json, tokenizer.json, llama2.c checkpoints and
 * tokenizer files. Each mutant must load or fail with a one-line message;
 * never crash, hang or touch memory it does not own (run it under ASan). */
#include "testutil.h"

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

/* One mutation: flip bytes, overwrite with interesting values, or truncate. */
static size_t mutate(unsigned char *d, size_t n, size_t hot) {
    int kind = (int)(next() % 4);
    size_t span = hot && hot < n ? hot : n;
    if (kind == 0) return (size_t)(next() % (n ? n : 1)); /* truncate */
    int k = 1 + (int)(next() % 4);
    for (int i = 0; i < k; i++) {
        size_t at = (size_t)(next() % span);
        static const unsigned char vals[] = {0, 0xff, '"', '{', '}', '[', ']', ',', ':', '9', '-', 0x7f, 0x80};
        d[at] = kind == 1 ? (unsigned char)(d[at] ^ (1u << (next() % 8))) : vals[next() % sizeof vals];
    }
    return n;
}

static void check_error(const mopt_error *err) {
    assert_true(err->code != MOPT_OK);
    assert_true(err->msg[0] != '\0');
    assert_null(strchr(err->msg, '\n'));
}

/* Copies the model folder's files, then mutates `victim` `rounds` times and loads each mutant. */
static void fuzz_hf(const char *model_rel, const char *victim, size_t hot, int rounds) {
    REQUIRE_SHARED();
    char dir[1024], src[1024], cmd[4096], path[1200];
    test_tmpdir(dir, sizeof dir, "fuzz");
    test_shared_path(src, sizeof src, model_rel);
    snprintf(cmd, sizeof cmd, "cp '%s'/* '%s'/", src, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/%s", dir, victim);
    size_t n;
    unsigned char *orig = read_whole(path, &n);
    assert_non_null(orig);
    unsigned char *buf = malloc(n + 1);
    int loaded = 0;
    for (int r = 0; r < rounds; r++) {
        memcpy(buf, orig, n);
        size_t m = mutate(buf, n, hot);
        write_file(path, buf, m);
        mopt_error err = {0};
        mopt_model *mm = mopt_model_load(dir, NULL, &err);
        if (mm) {
            loaded++;
            mopt_model_free(mm);
        } else {
            check_error(&err);
        }
    }
    fprintf(stderr, "%s/%s: %d of %d mutants still loaded, the rest failed cleanly\n", model_rel, victim, loaded, rounds);
    write_file(path, orig, n);
    free(buf);
    free(orig);
}

static void test_safetensors_header_mutations(void **s) { fuzz_hf("models/lit-gpt2-1m", "model.safetensors", 5048, 300); }
static void test_config_json_mutations(void **s) { fuzz_hf("models/lit-gpt2-1m", "config.json", 0, 300); }
static void test_tokenizer_json_mutations(void **s) { fuzz_hf("models/lit-gpt2-1m", "tokenizer.json", 4000, 120); }

static void test_llama2c_mutations(void **s) {
    REQUIRE_SHARED();
    char dir[1024], src[1024], path[1200], tpath[1200];
    test_tmpdir(dir, sizeof dir, "fuzz-l2c");
    size_t n, tn;
    unsigned char *model = read_whole(test_shared_path(src, sizeof src, "models/stories260K/stories260K.bin"), &n);
    unsigned char *tok = read_whole(test_shared_path(src, sizeof src, "models/stories260K/tok512.bin"), &tn);
    snprintf(path, sizeof path, "%s/model.bin", dir);
    snprintf(tpath, sizeof tpath, "%s/tok512.bin", dir);
    unsigned char *buf = malloc(n > tn ? n : tn);
    for (int r = 0; r < 200; r++) {
        int which = r % 2;
        memcpy(buf, which ? tok : model, which ? tn : n);
        size_t m = mutate(buf, which ? tn : n, which ? 2000 : 28);
        write_file(path, which ? model : buf, which ? n : m);
        write_file(tpath, which ? buf : tok, which ? m : tn);
        mopt_error err = {0};
        mopt_model *mm = mopt_model_load(path, NULL, &err);
        if (mm) {
            /* a loaded tokenizer must still encode and decode */
            const mopt_tokenizer *t = mopt_model_tokenizer(mm);
            int32_t *ids;
            size_t k;
            if (t && mopt_tokenizer_encode(t, "Once upon a time", 16, MOPT_TOK_ADD_SPECIAL, &ids, &k, &err) == MOPT_OK) {
                char *txt;
                size_t tl;
                if (mopt_tokenizer_decode(t, ids, k, 0, &txt, &tl, &err) == MOPT_OK) free(txt);
                free(ids);
            }
            mopt_model_free(mm);
        } else {
            check_error(&err);
        }
    }
    free(buf);
    free(model);
    free(tok);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_safetensors_header_mutations),
        cmocka_unit_test(test_config_json_mutations),
        cmocka_unit_test(test_tokenizer_json_mutations),
        cmocka_unit_test(test_llama2c_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
