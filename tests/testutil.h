/* Shared helpers for the cmocka tests. */
#ifndef MOPT_TESTUTIL_H
#define MOPT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "mopt/mopt.h"
#include "mopt/pipeline.h"

/* ../shared relative to the project root, or $MOPT_SHARED. */
static inline const char *test_shared_dir(void) {
    const char *env = getenv("MOPT_SHARED");
    return env && *env ? env : MOPT_SOURCE_DIR "/../shared";
}

static inline char *test_shared_path(char *buf, size_t cap, const char *rel) {
    snprintf(buf, cap, "%s/%s", test_shared_dir(), rel);
    return buf;
}

/* Fixtures are required when present; tests skip (with a message) only when
 * the whole shared folder is absent. */
#define REQUIRE_SHARED()                                                                                           \
    do {                                                                                                           \
        if (access(test_shared_dir(), R_OK) != 0) {                                                                \
            fprintf(stderr, "skipping: fixtures folder %s not present\n", test_shared_dir());                      \
            skip();                                                                                                \
        }                                                                                                          \
    } while (0)

/* A GPU test without a GPU: skips, saying why, or fails where MOPT_CUDA_REQUIRE=1 (scripts/gpu-check.sh) says
 * a GPU must be there. */
#define TEST_SKIP_WITHOUT_GPU(why)                                                \
    do {                                                                          \
        const char *req_ = getenv("MOPT_CUDA_REQUIRE");                           \
        fprintf(stderr, "skipping: %s\n", (why));                                 \
        if (req_ && *req_ == '1') fail_msg("MOPT_CUDA_REQUIRE=1 and no GPU");     \
        skip();                                                                   \
    } while (0)

/* Asserts that a call failed with `code` and that its message contains `substr`. */
#define CHECK_ERR(err, expect_code, substr)                                                                        \
    do {                                                                                                           \
        assert_int_equal((err).code, (expect_code));                                                               \
        if (!strstr((err).msg, (substr))) {                                                                        \
            fprintf(stderr, "message \"%s\" lacks \"%s\"\n", (err).msg, (substr));                                 \
            fail();                                                                                                \
        }                                                                                                          \
        assert_null(strchr((err).msg, '\n'));                                                                      \
    } while (0)

/* --- scratch directories ---------------------------------------------------------- */

/* The scratch directories this process made, so that each goes when the test
 * that made it ends (those a group setup made, when the group ends): the suite
 * then needs one test's disk, not the sum of all, which a CI machine with a
 * small disk did not have. MOPT_KEEP_TMP=1 keeps them to look at. */
#define TEST_TMPDIRS_MAX 64
static char test_tmpdirs[TEST_TMPDIRS_MAX][4096];
static int test_ntmpdirs, test_ngroup_tmpdirs;

/* Removes the scratch directories made after the first `keep` (rm -rf does not
 * follow symbolic links). */
static inline void test_tmpdirs_remove(int keep) {
    const char *k = getenv("MOPT_KEEP_TMP");
    for (int i = test_ntmpdirs - 1; i >= keep; i--) {
        if (k && *k && strcmp(k, "0")) continue;
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_tmpdirs[i]);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", test_tmpdirs[i]);
    }
    if (test_ntmpdirs > keep) test_ntmpdirs = keep;
}

/* The path of test_tmpdir(name), without touching it (to read what a helper wrote there). */
static inline char *test_tmpdir_path(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/tmp-%s-%ld", MOPT_BINARY_DIR, name, (long)getpid());
    return buf;
}

/* A scratch directory under the build tree, unique per test process, emptied
 * now and removed when the test ends (see test_run_tests). */
static inline char *test_tmpdir(char *buf, size_t cap, const char *name) {
    test_tmpdir_path(buf, cap, name);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", buf, buf);
    if (system(cmd) != 0) return NULL;
    int known = 0;
    for (int i = 0; i < test_ntmpdirs; i++) known |= !strcmp(test_tmpdirs[i], buf);
    if (!known && test_ntmpdirs < TEST_TMPDIRS_MAX) snprintf(test_tmpdirs[test_ntmpdirs++], sizeof test_tmpdirs[0], "%s", buf);
    return buf;
}

static CMFixtureFunction test_user_group_setup, test_user_group_teardown;
static inline int test_group_setup(void **state) {
    int rc = test_user_group_setup ? test_user_group_setup(state) : 0;
    test_ngroup_tmpdirs = test_ntmpdirs;
    return rc;
}
static inline int test_group_teardown(void **state) {
    int rc = test_user_group_teardown ? test_user_group_teardown(state) : 0;
    test_tmpdirs_remove(0);
    return rc;
}
static inline int test_tmpdirs_teardown(void **state) {
    (void)state;
    test_tmpdirs_remove(test_ngroup_tmpdirs);
    return 0;
}

/* cmocka_run_group_tests, with each test's scratch directories removed after it. */
#define test_run_tests(tests, setup, teardown) test_run_group(#tests, tests, sizeof(tests) / sizeof((tests)[0]), setup, teardown)
static inline int test_run_group(const char *name, const struct CMUnitTest *tests, size_t n, CMFixtureFunction setup,
                                 CMFixtureFunction teardown) {
    struct CMUnitTest *t = malloc(n * sizeof *t);
    if (!t) return 1;
    memcpy(t, tests, n * sizeof *t);
    for (size_t i = 0; i < n; i++)
        if (!t[i].teardown_func) t[i].teardown_func = test_tmpdirs_teardown;
    test_user_group_setup = setup;
    test_user_group_teardown = teardown;
    if (getenv("MOPT_TEST_FILTER")) cmocka_set_test_filter(getenv("MOPT_TEST_FILTER")); /* e.g. 'test_a_loaded*' */
    int rc = _cmocka_run_group_tests(name, t, n, test_group_setup, test_group_teardown);
    free(t);
    return rc;
}

/* Bytes of `path`'s mappings resident in this process (/proc/self/smaps' Rss), -1 when none is mapped. */
static inline long long test_mapped_rss(const char *path) {
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[2048];
    long long rss = -1, kb;
    int ours = 0;
    const size_t n = strlen(path);
    while (fgets(line, sizeof line, f)) {
        const size_t l = strlen(line);
        if (strchr(line, '-') && strchr(line, '-') < strchr(line, ' ')) /* a mapping's first line: does it name path? */
            ours = l > n && strncmp(line + l - n - 1, path, n) == 0;
        else if (ours && sscanf(line, "Rss: %lld kB", &kb) == 1)
            rss = (rss < 0 ? 0 : rss) + kb * 1024;
    }
    fclose(f);
    return rss;
}

static inline void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static inline void *read_whole(const char *path, size_t *n) {
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc((size_t)sz + 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    if (p) ((char *)p)[sz] = 0;
    fclose(f);
    *n = (size_t)sz;
    return p;
}

/* --- plugins and pipelines ------------------------------------------------------ */

/* The registry the pipeline tests share: the in-tree plugin folder. */
static mopt_registry *test_reg;
static inline int test_registry_setup(void **state) {
    mopt_error err = {0};
    test_reg = mopt_registry_new(NULL, &err);
    return test_reg ? 0 : -1;
}
static inline int test_registry_teardown(void **state) {
    mopt_registry_free(test_reg);
    return 0;
}

/* Runs a pipeline text on m quietly and returns its report (caller frees);
 * the test fails unless every pass succeeded. */
static inline mopt_report *test_run_pipeline(mopt_model *m, const char *text) {
    mopt_pipeline *p = mopt_pipeline_new(test_reg);
    mopt_error err = {0};
    if (mopt_pipeline_parse(p, text, &err)) fprintf(stderr, "%s\n", err.msg);
    mopt_report *r = mopt_report_new();
    mopt_run_opts o;
    mopt_run_opts_default(&o);
    o.quiet = 1;
    if (mopt_pipeline_run(p, m, &o, r, &err)) fprintf(stderr, "%s: %s\n", text, err.msg);
    assert_true(mopt_report_ok(r));
    mopt_pipeline_free(p);
    return r;
}

/* Loads a model from a path relative to the fixtures folder (or absolute). */
static inline mopt_model *test_load_model(const char *rel) {
    char path[4096];
    mopt_error err = {0};
    mopt_model *m = mopt_model_load(rel[0] == '/' ? rel : test_shared_path(path, sizeof path, rel), NULL, &err);
    if (!m) fprintf(stderr, "%s\n", err.msg);
    assert_non_null(m);
    return m;
}

/* Mean NLL of the first n tokens of lit-val in windows of ctx (the perplexity protocol). */
static inline double test_val_nll(mopt_model *m, int64_t n, int32_t ctx) {
    char val[1200];
    int32_t *ids = NULL;
    size_t nt = 0;
    mopt_error err = {0};
    assert_int_equal(mopt_tokenizer_encode_file(mopt_model_tokenizer(m), test_shared_path(val, sizeof val, "data/lit-val.txt"), 0, &ids,
                                                &nt, &err),
                     MOPT_OK);
    mopt_session *se = mopt_session_new(mopt_model_graph(m), NULL, &err);
    mopt_ppl_result pr;
    assert_int_equal(mopt_perplexity(se, ids, n, ctx, NULL, NULL, &pr, &err), MOPT_OK);
    mopt_session_free(se);
    free(ids);
    return pr.nll;
}

/* Runs a pipeline text on a freshly loaded model and asserts that it fails
 * with a one-line message containing msg. */
static inline void test_pipeline_fails(const char *model_rel, const char *text, const char *msg) {
    mopt_model *m = test_load_model(model_rel);
    mopt_pipeline *p = mopt_pipeline_new(test_reg);
    mopt_error err = {0};
    assert_int_equal(mopt_pipeline_parse(p, text, &err), MOPT_OK);
    mopt_report *r = mopt_report_new();
    mopt_run_opts o;
    mopt_run_opts_default(&o);
    o.quiet = 1;
    assert_int_not_equal(mopt_pipeline_run(p, m, &o, r, &err), MOPT_OK);
    if (!strstr(err.msg, msg)) fprintf(stderr, "message \"%s\" lacks \"%s\"\n", err.msg, msg);
    assert_non_null(strstr(err.msg, msg));
    assert_null(strchr(err.msg, '\n'));
    mopt_report_free(r);
    mopt_pipeline_free(p);
    mopt_model_free(m);
}

#ifdef MOPT_CLI
/* Runs `mopt ARGS` (ARGS already shell-quoted) and asserts what bad input must
 * give: exit status `code` and exactly one line on stderr that contains
 * `expect` (and `expect2` when not NULL). */
static inline void test_cli_refuses(const char *args, int code, const char *expect, const char *expect2) {
    char cmd[8400], errf[64];
    snprintf(errf, sizeof errf, "/tmp/mopt-cli-err-%ld", (long)getpid());
    snprintf(cmd, sizeof cmd, "timeout 300 %s %s >/dev/null 2>%s </dev/null", MOPT_CLI, args, errf);
    int st = system(cmd);
    size_t n;
    char *e = read_whole(errf, &n);
    unlink(errf);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (rc != code || !e || !strstr(e, expect) || (expect2 && !strstr(e, expect2)) || !n || strchr(e, '\n') != e + n - 1)
        fprintf(stderr, "mopt %s\n  exit %d (want %d), stderr: %s\n", args, rc, code, e ? e : "(none)");
    assert_int_equal(rc, code);
    assert_non_null(e);
    assert_non_null(strstr(e, expect));
    if (expect2) assert_non_null(strstr(e, expect2));
    assert_true(n > 0 && strchr(e, '\n') == e + n - 1); /* one line */
    free(e);
}
#endif

/* Largest |logit difference| between two models over the same 16 tokens. */
static inline double test_max_logit_diff(mopt_model *a, mopt_model *b) {
    const int32_t ids[16] = {1, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160};
    mopt_error err = {0};
    mopt_session *sa = mopt_session_new(mopt_model_graph(a), NULL, &err), *sb = mopt_session_new(mopt_model_graph(b), NULL, &err);
    assert_non_null(sa);
    assert_non_null(sb);
    const int32_t V = mopt_model_arch(a)->vocab_size;
    const float *la, *lb;
    assert_int_equal(mopt_session_forward(sa, ids, 16, true, &la, &err), MOPT_OK);
    float *copy = malloc((size_t)16 * V * sizeof *copy);
    memcpy(copy, la, (size_t)16 * V * sizeof *copy);
    assert_int_equal(mopt_session_forward(sb, ids, 16, true, &lb, &err), MOPT_OK);
    double d = 0;
    for (int64_t i = 0; i < (int64_t)16 * V; i++) {
        double x = copy[i] - lb[i];
        x = x < 0 ? -x : x;
        d = x > d || x != x ? x : d;
    }
    free(copy);
    mopt_session_free(sa);
    mopt_session_free(sb);
    return d;
}

#endif
