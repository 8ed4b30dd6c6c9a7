/* The mopt binary end to end: the acceptance commands, exit codes, and the
 * one-line error for each kind of bad input. */
#include <jansson.h>
#include <sys/wait.h>

#include "testutil.h"

typedef struct {
    int code;
    char *out, *err;
} run_result;

static run_result run(const char *args) {
    char dir[1024], cmd[8192], op[1100], ep[1100];
    static int k = 0;
    snprintf(dir, sizeof dir, "%s", MOPT_BINARY_DIR);
    snprintf(op, sizeof op, "%s/cli-%ld-%d.out", dir, (long)getpid(), k);
    snprintf(ep, sizeof ep, "%s/cli-%ld-%d.err", dir, (long)getpid(), k++);
    snprintf(cmd, sizeof cmd, "%s %s >'%s' 2>'%s' </dev/null", MOPT_CLI, args, op, ep);
    int st = system(cmd);
    run_result r = {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), NULL, NULL};
    size_t n;
    r.out = read_whole(op, &n);
    r.err = read_whole(ep, &n);
    unlink(op);
    unlink(ep);
    return r;
}

static void run_free(run_result *r) {
    free(r->out);
    free(r->err);
}

static void expect_usage_error(const char *args, const char *substr) { test_cli_refuses(args, 2, substr, NULL); }

static void test_generate_stories260k_prints_llama2c_sample(void **s) {
    REQUIRE_SHARED();
    char args[2048], path[1024];
    snprintf(args, sizeof args, "generate '%s/models/stories260K/stories260K.bin' --temp 0 -n 256", test_shared_dir());
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    size_t n;
    char *readme = read_whole(test_shared_path(path, sizeof path, "README.md"), &n);
    char *start = strstr(readme, "```\nOnce upon a time") + 4;
    *strstr(start, "```") = '\0';
    assert_string_equal(r.out, start);
    assert_non_null(strstr(r.err, "tok/s"));
    free(readme);
    run_free(&r);
}

static void test_generate_lit_models_greedy(void **s) {
    REQUIRE_SHARED();
    char args[2048], path[1024];
    json_error_t je;
    json_t *lit = json_load_file(test_shared_path(path, sizeof path, "reference/lit.json"), 0, &je);
    snprintf(args, sizeof args, "generate '%s/models/lit-llama-7m' --prompt 'KING HENRY:\nWhat news' -n 64 --temp 0",
             test_shared_dir());
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    const char *want = json_string_value(json_object_get(json_object_get(json_object_get(lit, "target"), "greedy"), "text"));
    size_t wl = strlen(want);
    assert_int_equal(strlen(r.out), wl + 1); /* the text and a final newline */
    assert_memory_equal(r.out, want, wl);
    run_free(&r);
    json_decref(lit);
}

static void test_tokenize_json_and_eval_json(void **s) {
    REQUIRE_SHARED();
    char args[8192], out[1200];
    snprintf(args, sizeof args, "tokenize '%s/models/lit-llama-7m' --text 'ROMEO:\nBut soft' --json", test_shared_dir());
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "[1576, 26, 199, 649, 380, 1122]\n");
    run_free(&r);
    /* eval on a short file writes the JSON report atomically */
    char dir[1024];
    test_tmpdir(dir, sizeof dir, "cli-eval");
    char data[1100];
    snprintf(data, sizeof data, "%s/short.txt", dir);
    size_t n;
    char src[1024];
    char *text = read_whole(test_shared_path(src, sizeof src, "data/lit-val.txt"), &n);
    write_file(data, text, 6000);
    free(text);
    snprintf(out, sizeof out, "%s/r.json", dir);
    snprintf(args, sizeof args, "eval '%s/models/lit-gpt2-1m' --data '%s' --ctx 64 --json '%s' --quiet", test_shared_dir(),
             data, out);
    r = run(args);
    assert_int_equal(r.code, 0);
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    assert_non_null(j);
    const char *keys[] = {"ppl", "nll", "tokens_scored", "ctx", "seconds"};
    for (int i = 0; i < 5; i++) assert_non_null(json_object_get(j, keys[i]));
    assert_int_equal(json_integer_value(json_object_get(j, "ctx")), 64);
    assert_int_equal(json_integer_value(json_object_get(j, "tokens_scored")) % 63, 0);
    json_decref(j);
    run_free(&r);
}

static void test_info_json_reports_parameters(void **s) {
    REQUIRE_SHARED();
    char args[2048];
    snprintf(args, sizeof args, "info '%s/models/lit-gpt2-1m' --json", test_shared_dir());
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    json_error_t je;
    json_t *j = json_loads(r.out, 0, &je);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "arch"), "family")), "gpt2");
    /* wte 2048x128 + wpe 512x128 + 4 blocks x (12*128*128 + 13*128... ) counted from the file */
    assert_true(json_integer_value(json_object_get(j, "n_params")) > 1000000);
    assert_int_equal(json_integer_value(json_object_get(j, "weight_bytes")),
                     2 * json_integer_value(json_object_get(j, "n_params")));
    json_decref(j);
    run_free(&r);
}

static void test_bad_inputs_exit_2_with_one_line(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[4096], path[1200];
    test_tmpdir(dir, sizeof dir, "cli-bad");
    expect_usage_error("frobnicate", "unknown command");
    expect_usage_error("generate", "expected exactly one MODEL");
    snprintf(args, sizeof args, "generate '%s/nope'", dir);
    expect_usage_error(args, "no such file or directory");
    snprintf(args, sizeof args, "generate '%s/models/lit-gpt2-1m' -n abc", test_shared_dir());
    expect_usage_error(args, "-n expects");
    snprintf(args, sizeof args, "eval '%s/models/lit-gpt2-1m'", test_shared_dir());
    expect_usage_error(args, "--data FILE is required");
    /* empty data file */
    snprintf(path, sizeof path, "%s/empty.txt", dir);
    write_file(path, "", 0);
    snprintf(args, sizeof args, "eval '%s/models/lit-gpt2-1m' --data '%s'", test_shared_dir(), path);
    expect_usage_error(args, "empty data file");
    /* a truncated safetensors in an otherwise valid directory */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp '%s/models/lit-gpt2-1m/config.json' '%s/models/lit-gpt2-1m/tokenizer.json' '%s/' && head -c 5000 "
             "'%s/models/lit-gpt2-1m/model.safetensors' > '%s/model.safetensors'",
             test_shared_dir(), test_shared_dir(), dir, test_shared_dir(), dir);
    assert_int_equal(system(cmd), 0);
    snprintf(args, sizeof args, "info '%s'", dir);
    expect_usage_error(args, "runs past the end of the file");
    /* a llama2.c file with an impossible header */
    snprintf(path, sizeof path, "%s/bad.bin", dir);
    int32_t hdr[7] = {-5, 1, 1, 1, 1, 1, 1};
    write_file(path, hdr, sizeof hdr);
    snprintf(args, sizeof args, "info '%s'", path);
    expect_usage_error(args, "impossible llama2.c header");
}

static void test_threads_above_the_cores_are_capped_with_a_warning(void **s) {
    REQUIRE_SHARED();
    char args[4096];
    snprintf(args, sizeof args, "eval '%s/models/lit-gpt2-1m' --data '%s/data/lit-val.txt' --limit-tokens 600 --threads 100000 --quiet",
             test_shared_dir(), test_shared_dir());
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.err, "warning: --threads 100000 exceeds the"));
    assert_non_null(strstr(r.out, "ppl "));
    run_free(&r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_stories260k_prints_llama2c_sample),
        cmocka_unit_test(test_generate_lit_models_greedy),
        cmocka_unit_test(test_tokenize_json_and_eval_json),
        cmocka_unit_test(test_info_json_reports_parameters),
        cmocka_unit_test(test_bad_inputs_exit_2_with_one_line),
        cmocka_unit_test(test_threads_above_the_cores_are_capped_with_a_warning),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
