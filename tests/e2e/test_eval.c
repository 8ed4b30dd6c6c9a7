/* Validation and A/B passes: compare (KL, agreement, bootstrap interval),
 * generate_match, ab, bench and gates, and the reports they write. */
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "testutil.h"

static char data[1100];

static int setup(void **s) {
    if (test_registry_setup(s)) return -1;
    /* 40 KB of lit-val.txt: 61 windows of 256 tokens for the lit tokenizer */
    char src[1024], dir[1024];
    size_t n;
    snprintf(src, sizeof src, "%s/data/lit-val.txt", test_shared_dir());
    char *text = read_whole(src, &n);
    if (!text) return 0;
    test_tmpdir(dir, sizeof dir, "eval");
    snprintf(data, sizeof data, "%s/val-head.txt", dir);
    FILE *f = fopen(data, "wb");
    fwrite(text, 1, 40000, f);
    fclose(f);
    free(text);
    return 0;
}
static int teardown(void **s) { return test_registry_teardown(s); }

static mopt_report *run(const char *model_rel, const char *text) {
    mopt_model *m = test_load_model(model_rel);
    mopt_report *r = test_run_pipeline(m, text);
    mopt_model_free(m);
    return r;
}

#define MET(r, k) mopt_report_get_metric(r, k)

static void test_compare_with_itself_is_identical(void **s) {
    REQUIRE_SHARED();
    char text[4096];
    snprintf(text, sizeof text, "eval.compare<baseline=%s/models/lit-llama-7m;data=%s>", test_shared_dir(), data);
    mopt_report *r = run("models/lit-llama-7m", text);
    fprintf(stderr, "self: kl_mean %.3g top1 %.4f ratio %.6f\n", MET(r, "kl_mean"), MET(r, "top1_agree"), MET(r, "ppl_ratio"));
    assert_true(MET(r, "kl_mean") < 1e-9);
    assert_true(MET(r, "top1_agree") == 1.0);
    assert_true(MET(r, "ppl_ratio") == 1.0);
    mopt_report_free(r);
}

static void test_compare_against_another_model_differs(void **s) {
    REQUIRE_SHARED();
    char text[4096];
    snprintf(text, sizeof text, "eval.compare<baseline=%s/models/lit-gpt2-1m;data=%s>", test_shared_dir(), data);
    mopt_report *r = run("models/lit-llama-7m", text);
    fprintf(stderr, "llama vs gpt2: kl_mean %.3f top1 %.4f\n", MET(r, "kl_mean"), MET(r, "top1_agree"));
    assert_true(MET(r, "kl_mean") > 0.1);
    assert_true(MET(r, "top1_agree") < 0.9);
    assert_true(MET(r, "kl_p99") >= MET(r, "kl_mean"));
    mopt_report_free(r);
}

static void test_bootstrap_interval_separates_int4_from_int8(void **s) {
    REQUIRE_SHARED();
    char text[4096];
    snprintf(text, sizeof text, "quant.rtn<bits=4;group_size=128>,eval.compare<baseline=%s/models/lit-llama-7m;data=%s>",
             test_shared_dir(), data);
    mopt_report *r4 = run("models/lit-llama-7m", text);
    snprintf(text, sizeof text, "quant.rtn<bits=8;group_size=-1;sym=true>,eval.compare<baseline=%s/models/lit-llama-7m;data=%s>",
             test_shared_dir(), data);
    mopt_report *r8 = run("models/lit-llama-7m", text);
    double lo4 = MET(r4, "ppl_ratio_ci95_lo"), hi4 = MET(r4, "ppl_ratio_ci95_hi");
    double lo8 = MET(r8, "ppl_ratio_ci95_lo"), hi8 = MET(r8, "ppl_ratio_ci95_hi");
    fprintf(stderr, "int4: ratio %.5f [%.5f, %.5f]; int8: ratio %.5f [%.5f, %.5f]\n", MET(r4, "ppl_ratio"), lo4, hi4,
            MET(r8, "ppl_ratio"), lo8, hi8);
    assert_true(lo4 > 1.0);                                                    /* excludes 1 */
    assert_true((lo8 <= 1.0 && hi8 >= 1.0) || fabs(MET(r8, "ppl_ratio") - 1) < 1e-3); /* includes 1 or within 0.1% */
    mopt_report_free(r4);
    mopt_report_free(r8);
}

static void test_generate_match_and_ab_against_itself(void **s) {
    REQUIRE_SHARED();
    char dir[1024], prompts[1100], text[4096];
    test_tmpdir(dir, sizeof dir, "eval-prompts");
    snprintf(prompts, sizeof prompts, "%s/prompts.txt", dir);
    const char *p = "KING HENRY:\nROMEO:\nEmma Woodhouse, handsome, clever\nThe state of the Union\n";
    write_file(prompts, p, strlen(p));
    snprintf(text, sizeof text, "eval.generate_match<baseline=%s/models/lit-gpt2-1m;prompts=%s;n=16>", test_shared_dir(), prompts);
    mopt_report *r = run("models/lit-gpt2-1m", text);
    assert_true(MET(r, "prompts") == 4);
    assert_true(MET(r, "exact_match") == 1.0);
    assert_true(MET(r, "mean_first_divergence") == 16);
    mopt_report_free(r);
    snprintf(text, sizeof text, "eval.generate_match<baseline=%s/models/lit-llama-7m;prompts=%s;n=16>", test_shared_dir(), prompts);
    r = run("models/lit-gpt2-1m", text);
    assert_true(MET(r, "mean_first_divergence") < 16);
    mopt_report_free(r);
    snprintf(text, sizeof text, "eval.ab<candidate=%s/models/lit-gpt2-1m;data=%s;requests=24;gen=8;prompt_tokens=32;seed=3>",
             test_shared_dir(), data);
    r = run("models/lit-gpt2-1m", text);
    fprintf(stderr, "ab self: a %g b %g requests, nll diff %g, agree %g\n", MET(r, "a_requests"), MET(r, "b_requests"),
            MET(r, "nll_diff"), MET(r, "b_agree_with_a"));
    assert_true(MET(r, "a_requests") + MET(r, "b_requests") == 24);
    assert_true(MET(r, "a_requests") > 0 && MET(r, "b_requests") > 0);
    /* the same model on both arms: outputs agree, and the NLL difference (different requests per arm) is not significant */
    assert_true(MET(r, "b_agree_with_a") == 1.0);
    assert_true(MET(r, "nll_diff_ci95_lo") <= 0 && MET(r, "nll_diff_ci95_hi") >= 0);
    assert_true(MET(r, "nll_diff_significant") == 0);
    mopt_report_free(r);
}

static int run_cli(const char *args) {
    char cmd[8400];
    snprintf(cmd, sizeof cmd, "%s %s > /dev/null 2>&1", MOPT_CLI, args);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int by_value(const void *x, const void *y) {
    const double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

static void test_bench_json_has_speed_latency_spread_and_bandwidth(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[4096], out[1100];
    test_tmpdir(dir, sizeof dir, "eval-bench");
    snprintf(out, sizeof out, "%s/bench.json", dir);
    snprintf(args, sizeof args, "bench '%s/models/lit-gpt2-1m' --prompt-len 32,64 --gen 16 --runs 3 --bandwidth-mib 64 --json '%s' --quiet",
             test_shared_dir(), out);
    assert_int_equal(run_cli(args), 0);
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    assert_non_null(j);
    assert_true(json_number_value(json_object_get(j, "prefill_tok_s")) > 0);
    assert_true(json_number_value(json_object_get(j, "decode_tok_s")) > 0);
    json_t *lat = json_object_get(j, "latency_ms");
    assert_true(json_number_value(json_object_get(lat, "p50")) > 0);
    assert_true(json_number_value(json_object_get(lat, "p99")) >= json_number_value(json_object_get(lat, "p95")));
    assert_true(json_number_value(json_object_get(lat, "p95")) >= json_number_value(json_object_get(lat, "p50")));
    assert_true(json_number_value(json_object_get(j, "ttft_ms")) > 0);
    assert_true(json_integer_value(json_object_get(j, "peak_rss_bytes")) > 0);
    assert_non_null(json_object_get(json_object_get(j, "spread"), "decode_tok_s_stdev"));
    /* what the figures ran on: mopt's kernel set and the GEMM library's, as this process (its environment) sees them */
    assert_string_equal(json_string_value(json_object_get(j, "kernels")), mopt_cpu_kernels_name());
    assert_string_equal(json_string_value(json_object_get(j, "gemm")), mopt_cpu_gemm_name());
    /* bytes per decoded token: GPT-2's tied wte is read whole as lm_head, its position table one row at a time */
    mopt_model *m = test_load_model("models/lit-gpt2-1m");
    const mopt_graph *g = mopt_model_graph(m);
    int64_t want = 0;
    for (int32_t i = 0; i < mopt_graph_n_tensors(g); i++) {
        const mopt_tensor *t = mopt_graph_tensor(g, i);
        want += strcmp(t->name, "transformer.wpe.weight") ? (int64_t)mopt_tensor_nbytes(t) : (int64_t)mopt_tensor_nbytes(t) / t->ne[1];
    }
    /* and the cache: every layer's K and V in fp32 at each position, decode step k of 15 attending to 32 + k of them */
    const mopt_arch *a = mopt_graph_arch(g);
    const double kv_want = (double)a->n_layers * 2 * a->n_kv_heads * a->head_dim * sizeof(float) * (32 + 16 / 2.0);
    mopt_model_free(m);
    const double per = (double)json_integer_value(json_object_get(j, "weight_bytes_per_token"));
    const double kv = (double)json_integer_value(json_object_get(j, "kv_bytes_per_token"));
    assert_true(per == (double)want);
    assert_true(kv == kv_want);
    const double dec = json_number_value(json_object_get(j, "decode_tok_s")), gbs = json_number_value(json_object_get(j, "decode_gb_s"));
    assert_true(fabs(gbs - dec * (per + kv) / 1e9) <= 1e-9 * gbs);
    /* the bandwidth measured before the first run and after each; each run's decode against the two beside it */
    json_t *runs = json_object_get(j, "decode_tok_s_runs"), *probes = json_object_get(j, "read_gb_s_probes");
    assert_int_equal(json_array_size(runs), 3);
    assert_int_equal(json_array_size(probes), 4);
    double f[3], fw[3], p[4];
    for (int k = 0; k < 4; k++) assert_true((p[k] = json_number_value(json_array_get(probes, k))) > 0);
    for (int r = 0; r < 3; r++) {
        const double d = json_number_value(json_array_get(runs, r)), bw = (p[r] + p[r + 1]) / 2;
        f[r] = d * (per + kv) / 1e9 / bw, fw[r] = d * per / 1e9 / bw;
    }
    qsort(f, 3, sizeof *f, by_value), qsort(fw, 3, sizeof *fw, by_value), qsort(p, 4, sizeof *p, by_value);
    assert_true(fabs(json_number_value(json_object_get(j, "read_gb_s")) - (p[1] + p[2]) / 2) <= 1e-9 * p[3]);
    assert_true(fabs(json_number_value(json_object_get(j, "decode_bandwidth_fraction")) - f[1]) <= 1e-9 * f[1]);
    assert_true(fabs(json_number_value(json_object_get(json_object_get(j, "spread"), "decode_bandwidth_fraction_min")) - f[0]) <= 1e-9 * f[0]);
    assert_true(fabs(json_number_value(json_object_get(json_object_get(j, "spread"), "decode_bandwidth_fraction_max")) - f[2]) <= 1e-9 * f[2]);
    assert_true(fabs(json_number_value(json_object_get(j, "decode_weight_bandwidth_fraction")) - fw[1]) <= 1e-9 * fw[1]);
    /* the median run is the decode_tok_s reported */
    double d[3];
    for (int r = 0; r < 3; r++) d[r] = json_number_value(json_array_get(runs, r));
    qsort(d, 3, sizeof *d, by_value);
    assert_true(d[1] == dec);
    json_decref(j);
    /* an f16 cache reads half the bytes */
    snprintf(args, sizeof args, "bench '%s/models/lit-gpt2-1m' --prompt-len 32 --gen 16 --runs 1 --warmup 0 --kv-cache f16 --json '%s' --quiet",
             test_shared_dir(), out);
    assert_int_equal(run_cli(args), 0);
    assert_non_null(j = json_load_file(out, 0, &je));
    assert_true((double)json_integer_value(json_object_get(j, "kv_bytes_per_token")) == kv_want / 2);
    json_decref(j);
}

/* The bench pass names the device its session ran on (and on the CPU its kernels); the host's read bandwidth is measured
 * for a CPU session. */
static void test_bench_report_names_the_device(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[4096], out[1100];
    test_tmpdir(dir, sizeof dir, "eval-bench-device");
    snprintf(out, sizeof out, "%s/report.json", dir);
    snprintf(args, sizeof args, "pipeline 'eval.bench<prompt_len=16;gen=4;runs=1;bandwidth_mib=16>' '%s/models/lit-gpt2-1m' --device cpu --json '%s' --quiet",
             test_shared_dir(), out);
    assert_int_equal(run_cli(args), 0);
    json_error_t je;
    json_t *j = json_load_file(out, 0, &je);
    assert_non_null(j);
    json_t *pass = json_array_get(json_object_get(j, "passes"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(pass, "strings"), "device")), "cpu");
    assert_true(json_number_value(json_object_get(json_object_get(pass, "metrics"), "read_gb_s")) > 0);
    /* and, on the CPU, the kernels the figures ran on, for a pipeline's report as for mopt bench's JSON */
    assert_string_equal(json_string_value(json_object_get(json_object_get(pass, "strings"), "kernels")), mopt_cpu_kernels_name());
    assert_string_equal(json_string_value(json_object_get(json_object_get(pass, "strings"), "gemm")), mopt_cpu_gemm_name());
    json_decref(j);
}

static int exists(const char *dir, const char *name) {
    char p[1200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0 && st.st_size > 0;
}

static void test_gates_exit_3_and_still_write_reports(void **s) {
    REQUIRE_SHARED();
    char dir[1024], rep[1100], args[8192];
    test_tmpdir(dir, sizeof dir, "eval-gate");
    /* a gate that fails: int4 RTN cannot stay within 0.01% of the baseline */
    snprintf(rep, sizeof rep, "%s/fail", dir);
    snprintf(args, sizeof args,
             "pipeline 'quant.rtn<bits=4;group_size=128>,eval.compare<baseline=%s/models/lit-llama-7m;data=%s>,"
             "eval.gate<max_ppl_increase=0.0001;min_top1_agree=0.5>' '%s/models/lit-llama-7m' --report-dir '%s' --quiet",
             test_shared_dir(), data, test_shared_dir(), rep);
    assert_int_equal(run_cli(args), 3);
    assert_true(exists(rep, "report.json") && exists(rep, "report.md") && exists(rep, "report.html"));
    char path[1200];
    snprintf(path, sizeof path, "%s/report.md", rep);
    size_t n;
    char *md = read_whole(path, &n);
    assert_non_null(strstr(md, "| ppl_increase | <= 0.0001 |"));
    assert_non_null(strstr(md, "**FAIL**"));
    free(md);
    /* gates that pass */
    snprintf(rep, sizeof rep, "%s/pass", dir);
    snprintf(args, sizeof args,
             "pipeline 'quant.rtn<bits=8;group_size=-1;sym=true>,eval.compare<baseline=%s/models/lit-llama-7m;data=%s>,"
             "eval.gate<max_ppl_increase=0.01;min_top1_agree=0.9;checks=kl_mean:max:0.01>' '%s/models/lit-llama-7m' --report-dir '%s' --quiet",
             test_shared_dir(), data, test_shared_dir(), rep);
    assert_int_equal(run_cli(args), 0);
    assert_true(exists(rep, "report.html"));
    /* a gate on a metric no pass produced is an error (2), not a silent pass */
    snprintf(args, sizeof args, "pipeline 'eval.gate<min_speedup=2>' '%s/models/lit-gpt2-1m' --quiet", test_shared_dir());
    assert_int_equal(run_cli(args), 2);
}

static void test_ci_regression_script_exits_3_on_a_failed_gate(void **s) {
    REQUIRE_SHARED();
    char dir[1024], args[8192];
    test_tmpdir(dir, sizeof dir, "eval-ci");
    snprintf(args, sizeof args,
             "run '%s/scripts/ci-regression.lua' model='%s/models/lit-gpt2-1m' data='%s' out='%s/reports' "
             "max_ppl_increase=0.00001 bits=3 max_p95_ms=1e9", /* gate on quality only: no timing in tests */
             MOPT_SOURCE_DIR, test_shared_dir(), data, dir);
    assert_int_equal(run_cli(args), 3);
    char rep[1100];
    snprintf(rep, sizeof rep, "%s/reports", dir);
    assert_true(exists(rep, "report.json") && exists(rep, "report.md") && exists(rep, "report.html"));
    snprintf(args, sizeof args,
             "run '%s/scripts/ci-regression.lua' model='%s/models/lit-gpt2-1m' data='%s' out='%s/reports2' "
             "max_ppl_increase=0.5 bits=8 max_p95_ms=1e9",
             MOPT_SOURCE_DIR, test_shared_dir(), data, dir);
    assert_int_equal(run_cli(args), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compare_with_itself_is_identical),
        cmocka_unit_test(test_compare_against_another_model_differs),
        cmocka_unit_test(test_bootstrap_interval_separates_int4_from_int8),
        cmocka_unit_test(test_generate_match_and_ab_against_itself),
        cmocka_unit_test(test_bench_json_has_speed_latency_spread_and_bandwidth),
        cmocka_unit_test(test_bench_report_names_the_device),
        cmocka_unit_test(test_gates_exit_3_and_still_write_reports),
        cmocka_unit_test(test_ci_regression_script_exits_3_on_a_failed_gate),
    };
    return test_run_tests(tests, setup, teardown);
}
