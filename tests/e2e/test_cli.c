/* The mopt binary end to end: the acceptance commands, exit codes, and the
 * one-line error for each kind of bad input. */
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "safetensors.h"
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

/* expect_usage_error for "CMD 'SHARED/models/MODEL' REST" (a model among the shared fixtures) */
static void expect_usage_error_on(const char *cmd, const char *model, const char *rest, const char *substr) {
    char args[4096];
    snprintf(args, sizeof args, "%s '%s/models/%s' %s", cmd, test_shared_dir(), model, rest);
    expect_usage_error(args, substr);
}

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

/* --version names mopt's kernel set and the GEMM library's, as the library reports them in this environment */
static void test_version_names_the_kernels_and_the_gemm(void **s) {
    (void)s;
    run_result r = run("--version");
    assert_int_equal(r.code, 0);
    char want[512];
    snprintf(want, sizeof want, "mopt %s (kernels: %s; GEMM: %s)\n", MOPT_VERSION_STRING, mopt_cpu_kernels_name(), mopt_cpu_gemm_name());
    assert_string_equal(r.out, want);
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
    expect_usage_error_on("generate", "lit-gpt2-1m", "-n abc", "-n expects");
    expect_usage_error_on("eval", "lit-gpt2-1m", "", "--data FILE is required");
    /* getopt's own complaint is off: one line naming the option, whatever went wrong with it */
    expect_usage_error_on("generate", "lit-gpt2-1m", "--max-tokens 3", "unknown option '--max-tokens'");
    expect_usage_error_on("generate", "lit-gpt2-1m", "-z", "unknown option '-z'");
    expect_usage_error_on("generate", "lit-gpt2-1m", "-n", "-n needs a value");
    expect_usage_error_on("bench", "lit-gpt2-1m", "--runs", "--runs needs a value");
    expect_usage_error_on("bench", "lit-gpt2-1m", "--run", "--runs needs a value"); /* an abbreviation */
    expect_usage_error_on("bench", "lit-gpt2-1m", "--runs 0", "--runs expects 1..10000");
    expect_usage_error_on("info", "lit-gpt2-1m", "--json=1", "--json takes no value");
    expect_usage_error_on("quantize", "lit-gpt2-1m", "--ca x", "'--ca' is ambiguous");
    /* a newline in what the user typed is not echoed as one: the error stays one line */
    snprintf(args, sizeof args, "generate '%s/no\nsuch'", dir);
    expect_usage_error(args, "no?such");
    expect_usage_error_on("quantize", "lit-llama-7m", "--method rtn --bits '4\nx'", "--bits expects an integer, got '4?x'");
    expect_usage_error("'fro\nb'", "unknown command 'fro?b'");
    expect_usage_error_on("quantize", "lit-llama-7m", "--method awq", "--method awq calibrates: give --calib FILE");
    expect_usage_error_on("quantize", "lit-llama-7m", "--method fp8 --act static", "--act static calibrates the activations' scale: give --calib FILE");
    expect_usage_error_on("quantize", "lit-llama-7m", "--method awq --embeddings", "--embeddings goes with --method rtn");
    expect_usage_error_on("quantize", "lit-llama-7m", "--method gptq --judge linear", "--judge goes with --method awq");
    expect_usage_error_on("quantize", "lit-llama-7m", "--method gptq --search-samples 8", "--search-samples goes with --method awq");
    expect_usage_error_on("quantize", "lit-llama-7m", "--method awq --search-samples 0", "--search-samples expects 1..4096");
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

/* Small gaps a new user meets: a tokenizer alone tokenizes; rtn ignores --calib with a note. */
static void test_tokenizer_alone_and_calibration_notes(void **s) {
    REQUIRE_SHARED();
    char args[4096];
    snprintf(args, sizeof args, "tokenize '%s/models/tokenizers/llama3-style' --text 'Hello world' --json", test_shared_dir());
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.out[0], '[');
    run_free(&r);
    snprintf(args, sizeof args, "tokenize '%s/models/lit-gpt2-1m/tokenizer.json' --text 'ROMEO:' --json", test_shared_dir());
    r = run(args);
    assert_int_equal(r.code, 0);
    assert_string_equal(r.out, "[1576, 26]\n");
    run_free(&r);
    snprintf(args, sizeof args, "quantize '%s/models/stories260K/stories260K.bin' --method rtn --group 32 --calib '%s/data/lit-train.txt'",
             test_shared_dir(), test_shared_dir());
    r = run(args);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.err, "note: --method rtn needs no calibration"));
    run_free(&r);
}

/* --search-samples sets how many of the calibration windows AWQ judges with (its default, 64, would take all 6 here) */
static void test_quantize_search_samples_reach_awq(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[4096], rp[1100];
    test_tmpdir(dir, sizeof dir, "cli-search-samples");
    snprintf(rp, sizeof rp, "%s/report.json", dir);
    snprintf(args, sizeof args,
             "quantize '%s/models/lit-llama-7m' --method awq --judge linear --calib '%s/data/lit-train.txt' --calib-samples 6 "
             "--calib-len 64 --search-samples 3 --report '%s' --quiet",
             test_shared_dir(), test_shared_dir(), rp);
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    run_free(&r);
    json_error_t je;
    json_t *j = json_load_file(rp, 0, &je);
    assert_non_null(j);
    json_t *pass = json_array_get(json_object_get(json_object_get(j, "pipeline"), "passes"), 0);
    assert_string_equal(json_string_value(json_object_get(pass, "name")), "quant.awq");
    assert_int_equal((int)json_number_value(json_object_get(json_object_get(pass, "metrics"), "search_samples")), 3);
    json_decref(j);
}

/* --- stopping on a signal ----------------------------------------------------------- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static pid_t spawn(const char *cmd) {
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Waits up to `limit` seconds for pid; returns its exit status (-1 if still running, then killed). */
static int wait_for(pid_t pid, double limit, double *took) {
    const double t0 = now_s();
    int status;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_s() - t0 > limit) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        usleep(10 * 1000);
    }
    *took = now_s() - t0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int temporaries_in(const char *dir) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -q 'mopt-tmp'", dir);
    return system(cmd) == 0;
}

/* SIGINT (or SIGTERM) stops long work at its next safe point: exit 130 (143),
 * temporary directories removed, nothing half-written at the target. The
 * bound is generous (this is no timing test); the latency is printed. */
static void interrupt_case(const char *what, const char *cmd, double after, int sig, const char *dir, const char *target) {
    pid_t pid = spawn(cmd);
    usleep((useconds_t)(after * 1e6));
    kill(pid, sig);
    double took = -1;
    int rc = wait_for(pid, 10.0, &took);
    fprintf(stderr, "  %s: exit %d %.3f s after signal %d\n", what, rc, took, sig);
    assert_int_equal(rc, 128 + sig);
    if (dir) assert_false(temporaries_in(dir));
    struct stat st;
    if (target) assert_int_not_equal(lstat(target, &st), 0);
}

static void test_signals_stop_work_and_leave_no_temporaries(void **s) {
    REQUIRE_SHARED();
    char dir[1024], cmd[8192], out[1100], script[1100];
    test_tmpdir(dir, sizeof dir, "cli-sig");
    const char *sh = test_shared_dir();
    /* a whole-file perplexity (tens of seconds) */
    snprintf(cmd, sizeof cmd, "exec '%s' eval '%s/models/lit-llama-7m' --data '%s/data/lit-val.txt' --quiet", MOPT_CLI, sh, sh);
    interrupt_case("eval", cmd, 1.0, SIGINT, NULL, NULL);
    /* quantize -o: AWQ's calibration, then the export never starts */
    snprintf(out, sizeof out, "%s/awq", dir);
    snprintf(cmd, sizeof cmd, "exec '%s' quantize '%s/models/lit-llama-7m' --method awq --calib '%s/data/lit-train.txt' -o '%s' --quiet",
             MOPT_CLI, sh, sh, out);
    interrupt_case("quantize -o", cmd, 2.0, SIGTERM, dir, out);
    /* an export halfway through its shards */
    snprintf(out, sizeof out, "%s/hf", dir);
    snprintf(cmd, sizeof cmd, "exec '%s' pipeline 'export.hf<out=%s;max_shard_size=2000000;pause_ms=300>' '%s/models/lit-llama-7m' --quiet",
             MOPT_CLI, out, sh);
    interrupt_case("export", cmd, 1.0, SIGINT, dir, out);
    /* a Lua loop that never calls into mopt */
    snprintf(script, sizeof script, "%s/loop.lua", dir);
    write_file(script, "while true do end\n", 18);
    snprintf(cmd, sizeof cmd, "exec '%s' run '%s'", MOPT_CLI, script);
    interrupt_case("lua loop", cmd, 0.5, SIGINT, NULL, NULL);
    /* a script that swallows the stop: the second signal leaves at once */
    write_file(script, "while true do pcall(function() while true do end end) end\n", 58);
    pid_t pid = spawn(cmd);
    usleep(500 * 1000);
    kill(pid, SIGINT);
    usleep(300 * 1000);
    kill(pid, SIGINT);
    double took;
    assert_int_equal(wait_for(pid, 10.0, &took), 130);
    /* --timeout */
    write_file(script, "while true do end\n", 18);
    snprintf(cmd, sizeof cmd, "run --timeout 1 '%s'", script);
    test_cli_refuses(cmd, 124, "timed out after 1 s", NULL);
}

/* mopt grad: every weight's gradient under the checkpoint's own name and
 * shape, the loss in the metadata equal to eval's NLL of the same window. */
static void test_grad_writes_every_weight_under_its_checkpoint_name(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[4096], out[1200], ckpt[1200];
    test_tmpdir(dir, sizeof dir, "grad");
    snprintf(out, sizeof out, "%s/g.safetensors", dir);
    snprintf(args, sizeof args, "grad '%s/models/lit-gpt2-1m' --data '%s/data/lit-val.txt' --ctx 64 --offset 100 -o '%s'",
             test_shared_dir(), test_shared_dir(), out);
    run_result r = run(args);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr(r.out, "over 63 tokens"));
    run_free(&r);
    mopt_tensor **got = NULL, **want = NULL;
    int32_t ng = 0, nw = 0;
    mopt_error err = {0};
    assert_int_equal(mopt_safetensors_read(out, &got, &ng, &err), MOPT_OK);
    assert_int_equal(mopt_safetensors_read(test_shared_path(ckpt, sizeof ckpt, "models/lit-gpt2-1m/model.safetensors"), &want, &nw, &err), MOPT_OK);
    assert_int_equal(ng, nw);
    for (int32_t i = 0; i < nw; i++) {
        const mopt_tensor *g = NULL;
        for (int32_t k = 0; k < ng && !g; k++)
            if (!strcmp(got[k]->name, want[i]->name)) g = got[k];
        if (!g) fprintf(stderr, "no gradient for %s\n", want[i]->name);
        assert_non_null(g);
        assert_int_equal(g->dtype, MOPT_DTYPE_F32);
        assert_memory_equal(g->ne, want[i]->ne, sizeof g->ne);
    }
    for (int32_t k = 0; k < ng; k++) mopt_tensor_free(got[k]);
    for (int32_t k = 0; k < nw; k++) mopt_tensor_free(want[k]);
    free(got);
    free(want);
    /* the window's loss, as eval scores tokens 100..163 */
    size_t n;
    unsigned char *bytes = read_whole(out, &n);
    uint64_t hl = 0;
    for (int k = 0; k < 8; k++) hl |= (uint64_t)bytes[k] << (8 * k);
    json_t *hdr = json_loadb((const char *)bytes + 8, hl, 0, NULL);
    assert_non_null(hdr);
    const double loss = atof(json_string_value(json_object_get(json_object_get(hdr, "__metadata__"), "loss")));
    json_decref(hdr);
    free(bytes);
    snprintf(args, sizeof args, "tokenize '%s/models/lit-gpt2-1m' --file '%s/data/lit-val.txt' --no-special --json",
             test_shared_dir(), test_shared_dir());
    r = run(args);
    assert_int_equal(r.code, 0);
    json_t *ids = json_loads(r.out, 0, NULL);
    run_free(&r);
    assert_non_null(ids);
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    int32_t win[64];
    for (int k = 0; k < 64; k++) win[k] = (int32_t)json_integer_value(json_array_get(ids, 100 + k));
    json_decref(ids);
    mopt_session *se = mopt_session_new(mopt_model_graph(m), NULL, &err);
    mopt_ppl_result pr;
    assert_int_equal(mopt_perplexity(se, win, 64, 64, NULL, NULL, &pr, &err), MOPT_OK);
    assert_true(fabs(pr.nll - loss) <= 1e-5 * pr.nll);
    mopt_session_free(se);
    mopt_model_free(m);
}

static void test_grad_refuses_bad_input_and_writes_nothing(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[4096], shortf[1200], out[1200];
    test_tmpdir(dir, sizeof dir, "grad-bad");
    snprintf(shortf, sizeof shortf, "%s/short.txt", dir);
    write_file(shortf, "ROMEO: hi", 9);
    snprintf(out, sizeof out, "%s/g.safetensors", dir);
    const char *model = "models/lit-llama-7m";
    snprintf(args, sizeof args, "grad '%s/%s' --data '%s' --ctx 64 -o '%s'", test_shared_dir(), model, shortf, out);
    test_cli_refuses(args, 2, "a window of 64 at offset 0 needs 64", NULL);
    assert_int_not_equal(access(out, F_OK), 0);
    snprintf(args, sizeof args, "grad '%s/%s' --data '%s' --ctx 1 -o '%s'", test_shared_dir(), model, shortf, out);
    test_cli_refuses(args, 2, "--ctx expects an integer >= 2", NULL);
    snprintf(args, sizeof args, "grad '%s/%s' --data '%s' --offset -3 -o '%s'", test_shared_dir(), model, shortf, out);
    test_cli_refuses(args, 2, "--offset", NULL);
    snprintf(args, sizeof args, "grad '%s/%s' --data '%s' --ctx 100000 -o '%s'", test_shared_dir(), model, shortf, out);
    test_cli_refuses(args, 2, "exceeds the model's context", NULL);
    snprintf(args, sizeof args, "grad '%s/%s' --data '%s/missing.txt' -o '%s'", test_shared_dir(), model, dir, out);
    test_cli_refuses(args, 2, "missing.txt", NULL);
    write_file(out, "keep", 4);
    snprintf(args, sizeof args, "grad '%s/%s' --data '%s' -o '%s'", test_shared_dir(), model, shortf, out);
    test_cli_refuses(args, 2, "exists; pass --force", NULL);
    size_t n;
    char *kept = read_whole(out, &n);
    assert_int_equal(n, 4);
    assert_memory_equal(kept, "keep", 4);
    free(kept);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_stories260k_prints_llama2c_sample),
        cmocka_unit_test(test_generate_lit_models_greedy),
        cmocka_unit_test(test_tokenize_json_and_eval_json),
        cmocka_unit_test(test_info_json_reports_parameters),
        cmocka_unit_test(test_version_names_the_kernels_and_the_gemm),
        cmocka_unit_test(test_bad_inputs_exit_2_with_one_line),
        cmocka_unit_test(test_threads_above_the_cores_are_capped_with_a_warning),
        cmocka_unit_test(test_signals_stop_work_and_leave_no_temporaries),
        cmocka_unit_test(test_tokenizer_alone_and_calibration_notes),
        cmocka_unit_test(test_quantize_search_samples_reach_awq),
        cmocka_unit_test(test_grad_writes_every_weight_under_its_checkpoint_name),
        cmocka_unit_test(test_grad_refuses_bad_input_and_writes_nothing),
    };
    return test_run_tests(tests, NULL, NULL);
}
