/* mopt synth: the presets have the parameter counts the published models'
 * cards give; a written checkpoint loads and runs with logits at unit scale
 * and linears of standard deviation 1/sqrt(fan_in); the same seed gives the
 * same bytes; GPT-2 takes a fixture's tokenizer; a GGUF export pads a short
 * tokenizer to the vocabulary; bad input gets one line and
 * exit 2 with nothing written. */
#include <math.h>
#include <sys/stat.h>

#include "sha256.h"
#include "testutil.h"

/* Runs `mopt ARGS` and returns its first stdout line (static buffer). */
static const char *cli_line(const char *args) {
    static char line[1024];
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s 2>/dev/null", MOPT_CLI, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    line[0] = 0;
    if (!fgets(line, sizeof line, p)) line[0] = 0;
    assert_int_equal(pclose(p), 0);
    return line;
}

static void test_presets_have_the_published_parameter_counts(void **s) {
    static const struct {
        const char *shape, *count;
    } cards[] = {
        {"llama-3b", " 3212749824 parameters"},  /* Llama-3.2-3B */
        {"llama-8b", " 8030261248 parameters"},  /* Llama-3.1-8B */
        {"gpt2-124m", " 124439808 parameters"},  /* GPT-2 small */
    };
    char args[256];
    for (size_t i = 0; i < sizeof cards / sizeof *cards; i++) {
        snprintf(args, sizeof args, "synth --shape %s --dry-run", cards[i].shape);
        const char *l = cli_line(args);
        if (!strstr(l, cards[i].count)) fprintf(stderr, "%s: %s", cards[i].shape, l);
        assert_non_null(strstr(l, cards[i].count));
    }
    /* the 1B-class shape, counted here from its dimensions */
    const double D = 2048, F = 5632, V = 32000, KV = 8 * 64;
    const double params = 2 * V * D + 16 * (2 * D * D + 2 * D * KV + 3 * D * F + 2 * D) + D;
    snprintf(args, sizeof args, " %.0f parameters", params);
    assert_non_null(strstr(cli_line("synth --shape llama-1b --dry-run"), args));
}

static double tensor_std(const mopt_graph *g, const char *name) {
    const mopt_tensor *t = mopt_graph_find_tensor(g, name);
    assert_non_null(t);
    const int64_t n = mopt_tensor_nelements(t);
    float *v = malloc((size_t)n * sizeof *v);
    mopt_error err = {0};
    assert_int_equal(mopt_tensor_read_f32(t, 0, n, v, &err), MOPT_OK);
    double ss = 0, sum = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)v[i] * v[i], sum += v[i];
    free(v);
    return sqrt(ss / (double)n - (sum / (double)n) * (sum / (double)n));
}

static char *file_sha(const char *path) {
    size_t n;
    uint8_t *d = read_whole(path, &n);
    assert_non_null(d);
    sha256_ctx c;
    sha256_init(&c);
    sha256_update(&c, d, n);
    static char hex[3][65];
    static int k;
    k = (k + 1) % 3;
    sha256_hex(&c, hex[k]);
    free(d);
    return hex[k];
}

static void test_a_small_llama_loads_runs_at_unit_scale_and_repeats_by_seed(void **s) {
    char dir[1024], a[1200], b[1200], c[1200], args[4096], fa[1300], fb[1300], fc[1300];
    test_tmpdir(dir, sizeof dir, "synth");
    snprintf(a, sizeof a, "%s/a", dir), snprintf(b, sizeof b, "%s/b", dir), snprintf(c, sizeof c, "%s/c", dir);
    const char *shape = "--hidden 256 --layers 4 --heads 8 --kv-heads 2 --ffn 512 --vocab 1000 --quiet";
    snprintf(args, sizeof args, "%s synth %s -o '%s' > /dev/null && %s synth %s -o '%s' > /dev/null && %s synth %s --seed 2 -o '%s' > /dev/null",
             MOPT_CLI, shape, a, MOPT_CLI, shape, b, MOPT_CLI, shape, c);
    assert_int_equal(system(args), 0);
    snprintf(fa, sizeof fa, "%s/model.safetensors", a), snprintf(fb, sizeof fb, "%s/model.safetensors", b);
    snprintf(fc, sizeof fc, "%s/model.safetensors", c);
    assert_string_equal(file_sha(fa), file_sha(fb));
    assert_string_not_equal(file_sha(fa), file_sha(fc));
    mopt_model *m = test_load_model(a);
    const mopt_arch *ar = mopt_model_arch(m);
    assert_int_equal(ar->dim, 256), assert_int_equal(ar->n_layers, 4), assert_int_equal(ar->n_heads, 8);
    assert_int_equal(ar->n_kv_heads, 2), assert_int_equal(ar->ffn_dim, 512), assert_int_equal(ar->vocab_size, 1000);
    const mopt_graph *g = mopt_model_graph(m);
    const double sq = tensor_std(g, "model.layers.1.self_attn.q_proj.weight"), sd = tensor_std(g, "model.layers.3.mlp.down_proj.weight");
    fprintf(stderr, "q_proj std %.5f (1/sqrt(256) = %.5f), down_proj std %.5f (1/sqrt(512) = %.5f)\n", sq, 1 / 16.0, sd, 1 / sqrt(512.0));
    assert_true(fabs(sq * 16 - 1) < 0.02 && fabs(sd * sqrt(512.0) - 1) < 0.02);
    /* a forward pass: logits finite, their spread over the vocabulary near unit scale */
    mopt_error err = {0};
    mopt_session *ses = mopt_session_new(g, NULL, &err);
    assert_non_null(ses);
    int32_t ids[64];
    for (int t = 0; t < 64; t++) ids[t] = (t * 37 + 3) % 1000;
    const float *lg;
    assert_int_equal(mopt_session_forward(ses, ids, 64, true, &lg, &err), MOPT_OK);
    double ss = 0;
    for (int64_t i = 0; i < 64 * 1000; i++) {
        assert_true(isfinite(lg[i]));
        ss += (double)lg[i] * lg[i];
    }
    const double rms = sqrt(ss / (64 * 1000.0));
    fprintf(stderr, "synthetic llama: logits rms %.3f\n", rms);
    assert_true(rms > 0.3 && rms < 3.0);
    mopt_session_free(ses);
    /* the generated byte-level tokenizer round-trips text */
    int32_t *tok = NULL;
    size_t n = 0;
    assert_int_equal(mopt_tokenizer_encode(mopt_model_tokenizer(m), "Caf\xc3\xa9 au lait, 1 + 1 = 2", 24, 0, &tok, &n, &err), MOPT_OK);
    assert_int_equal(n, 24); /* one token per byte, no merges */
    free(tok);
    mopt_model_free(m);
}

static void test_gpt2_takes_a_fixture_tokenizer_and_runs(void **s) {
    REQUIRE_SHARED();
    char dir[1024], out[1200], args[4096];
    test_tmpdir(dir, sizeof dir, "synth-gpt2");
    snprintf(out, sizeof out, "%s/g", dir);
    snprintf(args, sizeof args, "%s synth --arch gpt2 --hidden 128 --layers 2 --heads 4 --ffn 512 --vocab 2048 --dtype f32 --tokenizer '%s/models/lit-gpt2-1m' -o '%s' --quiet > /dev/null",
             MOPT_CLI, test_shared_dir(), out);
    assert_int_equal(system(args), 0);
    mopt_model *m = test_load_model(out), *fix = test_load_model("models/lit-gpt2-1m");
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    mopt_error err = {0};
    const char *text = "Once upon a time there was a little house.";
    assert_int_equal(mopt_tokenizer_encode(mopt_model_tokenizer(m), text, strlen(text), 0, &a, &na, &err), MOPT_OK);
    assert_int_equal(mopt_tokenizer_encode(mopt_model_tokenizer(fix), text, strlen(text), 0, &b, &nb, &err), MOPT_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    assert_true(test_max_logit_diff(m, m) == 0); /* runs, deterministically */
    free(a), free(b);
    mopt_model_free(m), mopt_model_free(fix);
}

static void test_synth_refuses_bad_input(void **s) {
    char dir[1024], out[1200], args[4096];
    test_tmpdir(dir, sizeof dir, "synth-bad");
    snprintf(out, sizeof out, "%s/o", dir);
    snprintf(args, sizeof args, "synth --hidden 100 --layers 2 --heads 3 --ffn 64 --vocab 300 -o '%s'", out);
    test_cli_refuses(args, 2, "--hidden 100 is not a multiple of --heads 3", NULL);
    snprintf(args, sizeof args, "synth --hidden 96 --layers 2 --heads 6 --kv-heads 4 --ffn 64 --vocab 300 -o '%s'", out);
    test_cli_refuses(args, 2, "do not divide into --kv-heads 4", NULL);
    snprintf(args, sizeof args, "synth --arch gpt2 --hidden 96 --layers 2 --heads 6 --kv-heads 2 --ffn 64 --vocab 300 -o '%s'", out);
    test_cli_refuses(args, 2, "--kv-heads must equal --heads", NULL);
    snprintf(args, sizeof args, "synth --hidden 96 --layers 2 --heads 6 --ffn 64 --vocab 100 -o '%s'", out);
    test_cli_refuses(args, 2, "below the generated byte-level tokenizer's 257 tokens", NULL);
    snprintf(args, sizeof args, "synth --shape llama-1b --dtype int4 -o '%s'", out);
    test_cli_refuses(args, 2, "--dtype int4: expected bf16, f16 or f32", NULL);
    snprintf(args, sizeof args, "synth --shape llama-9b -o '%s'", out);
    test_cli_refuses(args, 2, "--shape llama-9b", NULL);
    snprintf(args, sizeof args, "synth --hidden 96 --layers 0 --heads 6 --ffn 64 --vocab 300 -o '%s'", out);
    test_cli_refuses(args, 2, "--layers expects an integer", NULL);
    if (access(test_shared_dir(), R_OK) == 0) {
        snprintf(args, sizeof args, "synth --hidden 96 --layers 2 --heads 6 --ffn 64 --vocab 1000 --tokenizer '%s/models/lit-llama-7m' -o '%s'",
                 test_shared_dir(), out);
        test_cli_refuses(args, 2, "beyond --vocab 1000", NULL);
    }
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0); /* nothing written */
    /* an existing directory is left alone */
    assert_int_equal(mkdir(out, 0755), 0);
    snprintf(args, sizeof args, "synth --hidden 96 --layers 2 --heads 6 --ffn 64 --vocab 300 -o '%s'", out);
    test_cli_refuses(args, 2, "already exists", NULL);
    char probe[1300];
    snprintf(probe, sizeof probe, "%s/config.json", out);
    assert_int_not_equal(access(probe, F_OK), 0);
}
/* llama.cpp sizes the vocabulary by the GGUF token list and checks the
 * embedding against it, so a model whose tokenizer is shorter than its
 * embedding (synth's 257 byte-level tokens under a 300-row embedding) is
 * exported with unused "[PAD<id>]" tokens up to the embedding, as
 * convert_hf_to_gguf.py pads, and reads back with the same logits (to float
 * order). */
static void test_gguf_export_pads_a_short_tokenizer_to_the_vocabulary(void **s) {
    char dir[1024], out[1200], gguf[1300], args[4096];
    test_tmpdir(dir, sizeof dir, "synth-pad");
    snprintf(out, sizeof out, "%s/m", dir);
    snprintf(gguf, sizeof gguf, "%s/m.gguf", dir);
    snprintf(args, sizeof args, "%s synth --arch llama --hidden 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --vocab 300 --dtype f32 -o '%s' --quiet > /dev/null && %s export '%s' --format gguf --type f32 -o '%s' > /dev/null 2>&1",
             MOPT_CLI, out, MOPT_CLI, out, gguf);
    assert_int_equal(system(args), 0);
    mopt_model *m = test_load_model(out), *g = test_load_model(gguf);
    const mopt_tokenizer *tm = mopt_model_tokenizer(m), *tg = mopt_model_tokenizer(g);
    assert_int_equal(mopt_tokenizer_vocab_size(tm), 257);
    assert_int_equal(mopt_tokenizer_vocab_size(tg), 300);
    assert_string_equal(mopt_tokenizer_token_str(tg, 256), mopt_tokenizer_token_str(tm, 256));
    assert_string_equal(mopt_tokenizer_token_str(tg, 257), "[PAD257]");
    assert_string_equal(mopt_tokenizer_token_str(tg, 299), "[PAD299]");
    const double d = test_max_logit_diff(m, g);
    fprintf(stderr, "GGUF with a padded token list vs the checkpoint: max |logit diff| %.3g\n", d);
    assert_true(d < 1e-5); /* the same f32 weights; GGUF's interleaved RoPE rows only reorder sums */
    mopt_model_free(m), mopt_model_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets_have_the_published_parameter_counts),
        cmocka_unit_test(test_a_small_llama_loads_runs_at_unit_scale_and_repeats_by_seed),
        cmocka_unit_test(test_gpt2_takes_a_fixture_tokenizer_and_runs),
        cmocka_unit_test(test_gguf_export_pads_a_short_tokenizer_to_the_vocabulary),
        cmocka_unit_test(test_synth_refuses_bad_input),
    };
    return test_run_tests(tests, NULL, NULL);
}
