/* Plugin loading, option schemas and pipelines: every error path with its message. */
#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "gram.h"
#include "hessian.h"
#include "mopt/plugin.h"
#include "testutil.h"

static mopt_registry *registry(const char *dirs) {
    mopt_error err = {0};
    mopt_registry *r = mopt_registry_new(dirs, &err);
    assert_non_null(r);
    return r;
}

static int has_problem(const mopt_registry *r, const char *a, const char *b) {
    for (int32_t i = 0; i < mopt_registry_n_problems(r); i++) {
        const char *p = mopt_registry_problem(r, i);
        if (strstr(p, a) && (!b || strstr(p, b))) return 1;
    }
    for (int32_t i = 0; i < mopt_registry_n_problems(r); i++) fprintf(stderr, "  problem: %s\n", mopt_registry_problem(r, i));
    return 0;
}

extern const mopt_host_api mopt_host; /* the table every plugin gets */

/* The textbook lower Cholesky factor of A [n, n] into L (zeros above the diagonal). */
static void chol_ref(const double *A, double *L, int n) {
    memset(L, 0, sizeof(double) * (size_t)n * (size_t)n);
    for (int j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (int k = 0; k < j; k++) d -= L[j * n + k] * L[j * n + k];
        L[j * n + j] = sqrt(d);
        for (int i = j + 1; i < n; i++) {
            double t = A[i * n + j];
            for (int k = 0; k < j; k++) t -= L[i * n + k] * L[j * n + k];
            L[i * n + j] = t / L[j * n + j];
        }
    }
}

/* n values uniform in [-0.5, 0.5), seeded */
static void fill_uniform(double *v, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) v[i] = (double)((seed = seed * 6364136223846793005ull + 1442695040888963407ull) >> 11) / 9007199254740992.0 - 0.5;
}

/* The host's LAPACK factorizations, against a plain float64 Cholesky and the
 * identity A A^-1 = I, on a matrix large enough for LAPACK's blocked paths. */
static void test_host_cholesky_and_inverse_match_a_float64_reference(void **s) {
    (void)s;
    enum { N = 301 };
    double *B = malloc(sizeof(double) * N * N), *A = malloc(sizeof(double) * N * N), *L = calloc(N * N, sizeof(double)),
           *W = malloc(sizeof(double) * N * N);
    fill_uniform(B, N * N, 12345);
    for (int i = 0; i < N; i++) /* A = B B^T + I: symmetric positive definite */
        for (int j = 0; j < N; j++) {
            double d = i == j;
            for (int k = 0; k < N; k++) d += B[i * N + k] * B[j * N + k];
            A[i * N + j] = d;
        }
    chol_ref(A, L, N);
    memcpy(W, A, sizeof(double) * N * N);
    assert_int_equal(mopt_host.chol_f64(W, N), 1);
    double worst = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j <= i; j++) worst = fmax(worst, fabs(W[i * N + j] - L[i * N + j]) / fabs(L[j * N + j]));
    assert_true(worst < 1e-12);
    assert_int_equal(mopt_host.chol_inverse_f64(W, N), 1);
    worst = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double d = 0;
            for (int k = 0; k < N; k++) d += A[i * N + k] * W[k * N + j];
            worst = fmax(worst, fabs(d - (i == j)));
        }
    fprintf(stderr, "max |A A^-1 - I| = %.3g\n", worst);
    assert_true(worst < 1e-9);
    memcpy(W, L, sizeof(double) * N * N); /* the triangular inverse: L^-1 L = I, the upper triangle untouched */
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) W[i * N + j] = 7;
    assert_int_equal(mopt_host.tri_inverse_f64(W, N), 1);
    worst = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double d = 0;
            for (int k = j; k <= i; k++) d += W[i * N + k] * L[k * N + j];
            worst = fmax(worst, fabs(d - (i == j)));
            if (j > i) assert_true(W[i * N + j] == 7);
        }
    fprintf(stderr, "max |L^-1 L - I| = %.3g\n", worst);
    assert_true(worst < 1e-12);
    A[5 * N + 5] = -1; /* not positive definite */
    assert_int_equal(mopt_host.chol_f64(A, N), 0);
    free(A), free(B), free(L), free(W);
}

/* GPTQ's U (the upper Cholesky factor of H^-1, from H reversed) against the textbook path in float64: H^-1 from
 * the factor's forward and back substitutions, then chol(H^-1)^T. U is float: within 5e-7 of the diagonal. */
static void test_hessian_inverse_factor_matches_the_textbook_path(void **s) {
    (void)s;
    enum { N = 203 };
    double *B = malloc(sizeof(double) * N * N), *H = malloc(sizeof(double) * N * N), *L = malloc(sizeof(double) * N * N),
           *Hi = calloc(N * N, sizeof(double)), *L2 = malloc(sizeof(double) * N * N), *y = malloc(sizeof(double) * N);
    float *U = malloc(sizeof(float) * N * N);
    fill_uniform(B, N * N, 777);
    for (int i = 0; i < N; i++) /* H = B B^T + 0.1 I, an uneven spectrum as calibration inputs give */
        for (int j = 0; j < N; j++) {
            double d = 0.1 * (i == j);
            for (int k = 0; k < N; k++) d += B[i * N + k] * B[j * N + k] * (1 + (k % 7));
            H[i * N + j] = d;
        }
    chol_ref(H, L, N);
    for (int c = 0; c < N; c++) { /* column c of H^-1: L y = e_c, L^T x = y */
        for (int i = 0; i < N; i++) {
            double t = i == c;
            for (int k = 0; k < i; k++) t -= L[i * N + k] * y[k];
            y[i] = t / L[i * N + i];
        }
        for (int i = N - 1; i >= 0; i--) {
            double t = y[i];
            for (int k = i + 1; k < N; k++) t -= L[k * N + i] * Hi[k * N + c];
            Hi[i * N + c] = t / L[i * N + i];
        }
    }
    chol_ref(Hi, L2, N); /* H^-1 = L2 L2^T, U = L2^T */
    mopt_error err = {0};
    assert_int_equal(hess_inverse_factor(&mopt_host, H, N, 0.0, U, "test", &err), MOPT_OK);
    double worst = 0;
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            const double ref = j >= i ? L2[j * N + i] : 0;
            worst = fmax(worst, fabs(U[i * N + j] - ref) / fabs(L2[i * N + i]));
        }
    fprintf(stderr, "max |U - U_ref| / U_ref[i][i] = %.3g\n", worst);
    assert_true(worst < 5e-7);
    free(B), free(H), free(L), free(Hi), free(L2), free(y), free(U);
}

/* AWQ's judge=linear: a trial weight's squared output error over the inputs, |d L|^2 with L L^T their Gram matrix,
 * against running every token through d = W - T in float64. Shapes that are no multiple of the row blocks, the
 * column panels or the Gram panels; inputs with uneven channel scales, as activations have. Float L and GEMMs: within
 * 1e-5 relative. Then fewer tokens than channels (a singular Gram matrix, damped): within 1e-4. */
static void test_gram_output_error_matches_running_the_tokens(void **s) {
    (void)s;
    enum { NTOK = 301, IN = 275, OUT = 523 };
    double *x = malloc(sizeof(double) * NTOK * IN), *w = malloc(sizeof(double) * OUT * IN), *dt = malloc(sizeof(double) * OUT * IN);
    float *xf = malloc(sizeof(float) * NTOK * IN), *W = malloc(sizeof(float) * OUT * IN), *T = malloc(sizeof(float) * OUT * IN);
    fill_uniform(x, NTOK * IN, 11);
    fill_uniform(w, OUT * IN, 12);
    fill_uniform(dt, OUT * IN, 13);
    for (int i = 0; i < NTOK * IN; i++) xf[i] = (float)(x[i] * (1 + (i % IN) % 9)); /* channel scales 1..9 */
    for (int i = 0; i < OUT * IN; i++) {
        W[i] = (float)w[i];
        T[i] = W[i] + (float)(0.01 * dt[i]); /* a quantization-sized difference */
    }
    const int ntoks[2] = {NTOK, 100};
    for (int c = 0; c < 2; c++) {
        const int nt = ntoks[c];
        double want = 0;
        for (int t = 0; t < nt; t++)
            for (int r = 0; r < OUT; r++) {
                double y = 0;
                for (int j = 0; j < IN; j++) y += ((double)W[r * IN + j] - T[r * IN + j]) * xf[t * IN + j];
                want += y * y;
            }
        mopt_error err = {0};
        float *L = gram_factor_of_inputs(&mopt_host, NULL, xf, nt, IN, &err);
        assert_non_null(L);
        for (int i = 0; i < IN && c == 0; i++) /* L L^T = X^T X, L lower triangular */
            for (int j = 0; j < IN; j++) {
                double g = 0, ll = 0;
                for (int t = 0; t < nt; t++) g += (double)xf[t * IN + i] * xf[t * IN + j];
                for (int k = 0; k < IN; k++) ll += (double)L[i * IN + k] * L[j * IN + k];
                if (j > i) assert_true(L[i * IN + j] == 0.0f);
                assert_true(fabs(ll - g) <= 1e-5 * sqrt(fabs((double)L[i * IN + i] * L[i * IN + i] * L[j * IN + j] * L[j * IN + j])) + 1e-4);
            }
        double got = -1;
        assert_int_equal(gram_output_error(&mopt_host, NULL, W, T, OUT, IN, L, &got, &err), MOPT_OK);
        fprintf(stderr, "%d tokens: output error from the Gram matrix %.10g, running the tokens %.10g (%.2g relative)\n", nt, got, want,
                fabs(got / want - 1));
        assert_true(fabs(got / want - 1) < (c == 0 ? 1e-5 : 1e-4));
        free(L);
    }
    free(x), free(w), free(dt), free(xf), free(W), free(T);
}

/* hess_scaled: the accumulated upper triangle (the lower one holds garbage) becomes the whole symmetric H times
 * 2 / count in double, with a dead column's zero diagonal set to 1 and flagged; a size that is no multiple of the
 * copy's tiles. */
static void test_hessian_scaled_mirrors_the_upper_triangle(void **s) {
    (void)s;
    enum { N = 150 };
    float *Hf = malloc(sizeof(float) * N * N);
    uint8_t dead[N] = {0};
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) Hf[i * N + j] = j >= i ? (float)(1 + i + 1000 * j) : -1.0f;
    for (int j = 0; j < N; j++) Hf[3 * N + j] = Hf[j * N + 3] = 0; /* input 3 never fired */
    double *H = hess_scaled(Hf, 8, N, dead);
    assert_non_null(H);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            const int a = i < j ? i : j, b = i < j ? j : i;
            const double want = a == 3 || b == 3 ? (i == j) : (1 + a + 1000.0 * b) * 0.25;
            if (H[i * N + j] != want) fail_msg("H[%d][%d] = %g, want %g", i, j, H[i * N + j], want);
        }
    for (int j = 0; j < N; j++) assert_int_equal(dead[j], j == 3);
    free(H);
    free(Hf);
}

static void test_valid_plugin_loads_with_its_passes(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/good");
    assert_non_null(mopt_registry_find(r, "good.types"));
    assert_non_null(mopt_registry_find(r, "good.fail_halfway"));
    assert_non_null(mopt_registry_find(r, "eval.perplexity")); /* the in-tree plugin folder too */
    int found = 0;
    for (int32_t i = 0; i < mopt_registry_n_plugins(r); i++) {
        mopt_plugin_info p = mopt_registry_plugin(r, i);
        if (!strcmp(p.name, "good")) {
            found = 1;
            assert_int_equal(p.n_passes, 2);
            assert_int_equal(p.abi_version, MOPT_PLUGIN_ABI_VERSION);
            assert_non_null(strstr(p.path, "libmopt-good.so"));
        }
    }
    assert_true(found);
    mopt_registry_free(r);
}

static void test_wrong_abi_is_refused_and_others_still_load(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/oldabi:" MOPT_FIXTURES "/good");
    char want[96];
    snprintf(want, sizeof want, "libmopt-oldabi.so: ABI 999, host %u", MOPT_PLUGIN_ABI_VERSION);
    assert_true(has_problem(r, want, NULL));
    assert_non_null(mopt_registry_find(r, "good.types"));
    mopt_registry_free(r);
}

static void test_missing_entry_symbol_is_refused(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/noentry");
    assert_true(has_problem(r, "libmopt-noentry.so: no mopt_plugin_entry symbol", NULL));
    mopt_registry_free(r);
}

static void test_failing_init_is_refused_with_its_reason(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/initfails");
    assert_true(has_problem(r, "initialization failed", "needs a GPU that is not here"));
    mopt_registry_free(r);
}

static void test_same_plugin_twice_keeps_the_first(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/good:" MOPT_FIXTURES "/good2");
    assert_true(has_problem(r, "plugin good found twice", "using the first"));
    int n = 0;
    for (int32_t i = 0; i < mopt_registry_n_plugins(r); i++) n += !strcmp(mopt_registry_plugin(r, i).name, "good");
    assert_int_equal(n, 1);
    mopt_registry_free(r);
}

static void test_unloadable_file_names_ldd(void **s) {
    char dir[1024], path[1100];
    test_tmpdir(dir, sizeof dir, "badso");
    snprintf(path, sizeof path, "%s/libmopt-broken.so", dir);
    write_file(path, "not an ELF file", 15);
    mopt_registry *r = registry(dir);
    assert_true(has_problem(r, "libmopt-broken.so: cannot load", "ldd"));
    mopt_registry_free(r);
}

static void test_bad_descriptor_fields_are_refused_one_by_one(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/baddesc");
    assert_true(has_problem(r, "baddesc.null_opts: n_opts is 1000 but opts is NULL", "skipped"));
    assert_true(has_problem(r, "baddesc.no_choices: enum option 'mode' needs 1..64 choices", NULL));
    assert_true(has_problem(r, "baddesc.bad_default: option 'count' expects an int, got 'many' (its own default)", NULL));
    assert_true(has_problem(r, "baddesc.nameless: option 0 has no name", NULL));
    assert_true(has_problem(r, "baddesc.bad_type: option 't' has unknown type 77", NULL));
    assert_true(has_problem(r, "baddesc.bad_kind: kind 9", NULL));
    assert_true(has_problem(r, "pass descriptor 6 is incomplete", NULL));
    for (const char *const *n = (const char *const[]){"baddesc.null_opts", "baddesc.no_choices", "baddesc.bad_default",
                                                       "baddesc.nameless", "baddesc.bad_type", "baddesc.bad_kind", NULL};
         *n; n++)
        assert_null(mopt_registry_find(r, *n));
    /* the sound pass still loads, and describe/pipeline work on every pass that loaded */
    assert_non_null(mopt_registry_find(r, "baddesc.ok"));
    for (int32_t i = 0; i < mopt_registry_n_passes(r); i++) {
        mopt_error err = {0};
        char *t = mopt_registry_describe(r, mopt_registry_pass(r, i)->name, &err);
        assert_non_null(t);
        free(t);
    }
    mopt_pipeline *p = mopt_pipeline_new(r);
    mopt_error err = {0};
    assert_int_equal(mopt_pipeline_parse(p, "baddesc.ok<x=3>", &err), MOPT_OK);
    mopt_pipeline_free(p);
    mopt_registry_free(r);
}

/* Runs `mopt plugins` with MOPT_PLUGIN_PATH=dir under a time limit; returns its exit status. */
static int plugins_cli(const char *dir, const char *extra, char *out, size_t cap) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "MOPT_PLUGIN_PATH='%s' timeout 20 '%s' plugins %s 2>&1", dir, MOPT_CLI, extra);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_fifo_in_plugin_folder_is_skipped_without_hanging(void **s) {
    char dir[1024], path[1200], out[8192];
    test_tmpdir(dir, sizeof dir, "fifo");
    snprintf(path, sizeof path, "%s/libmopt-x.so", dir);
    assert_int_equal(mkfifo(path, 0644), 0);
    assert_int_equal(plugins_cli(dir, "", out, sizeof out), 0); /* 124 would be the timeout */
    assert_non_null(strstr(out, "libmopt-x.so: not a regular file"));
}

static void copy_plugin(const char *from, const char *dir, const char *name, char *path, size_t cap) {
    char cmd[4096];
    snprintf(path, cap, "%s/%s", dir, name);
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, path);
    assert_int_equal(system(cmd), 0);
}

static void test_world_writable_or_foreign_plugin_is_refused(void **s) {
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "perms");
    copy_plugin(MOPT_FIXTURES "/good/libmopt-good.so", dir, "libmopt-good.so", path, sizeof path);
    assert_int_equal(chmod(path, 0666), 0);
    mopt_registry *r = registry(dir);
    assert_true(has_problem(r, "libmopt-good.so: refused: it is world-writable", NULL));
    assert_null(mopt_registry_find(r, "good.types"));
    mopt_registry_free(r);
    assert_int_equal(chmod(path, 0755), 0);
    if (geteuid() == 0) { /* only root can give a file away */
        assert_int_equal(chown(path, 65534, 65534), 0);
        r = registry(dir);
        assert_true(has_problem(r, "refused: it is owned by uid 65534", NULL));
        assert_null(mopt_registry_find(r, "good.types"));
        mopt_registry_free(r);
    } else {
        fprintf(stderr, "note: not root, so the foreign-owner case is not exercised\n");
    }
}

static void test_plugin_hiding_a_builtin_is_an_error_unless_overridden(void **s) {
    char dir[1024], path[1200], out[8192];
    test_tmpdir(dir, sizeof dir, "shadow");
    /* a second copy of the built-in eval plugin: a clash by plugin name */
    copy_plugin(MOPT_BINARY_DIR "/../lib/mopt/libmopt-eval.so", dir, "libmopt-eval.so", path, sizeof path);
    mopt_error err = {0};
    assert_null(mopt_registry_new(dir, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "plugin eval from ");
    assert_non_null(strstr(err.msg, path));
    assert_non_null(strstr(err.msg, "lib/mopt/libmopt-eval.so"));
    assert_non_null(strstr(err.msg, "--allow-override"));
    mopt_registry *r = mopt_registry_open(dir, MOPT_REGISTRY_ALLOW_OVERRIDE, &err);
    assert_non_null(r);
    assert_true(has_problem(r, "plugin eval from", "overrides the built-in one"));
    for (int32_t i = 0; i < mopt_registry_n_plugins(r); i++)
        if (!strcmp(mopt_registry_plugin(r, i).name, "eval")) assert_string_equal(mopt_registry_plugin(r, i).path, path);
    mopt_registry_free(r);
    /* a plugin of another name declaring a built-in pass: the same, through the CLI */
    assert_int_equal(plugins_cli(MOPT_FIXTURES "/shadow", "", out, sizeof out), 2);
    assert_non_null(strstr(out, "pass eval.perplexity from " MOPT_FIXTURES "/shadow/libmopt-shadow.so clashes with the built-in one"));
    assert_null(strchr(strchr(out, '\n') + 1, '\n')); /* one line */
    assert_int_equal(plugins_cli(MOPT_FIXTURES "/shadow", "--allow-override", out, sizeof out), 0);
    assert_non_null(strstr(out, "overrides the built-in one"));
}

/* --- options ------------------------------------------------------------------- */

static mopt_status add_with(mopt_pipeline *p, const char *pass, const char *k1, const char *v1, const char *k2,
                            const char *v2, mopt_error *err) {
    mopt_options *o = mopt_options_new();
    if (k1) mopt_options_set(o, k1, v1, err);
    if (k2) mopt_options_set(o, k2, v2, err);
    mopt_status st = mopt_pipeline_add(p, pass, o, err);
    mopt_options_free(o);
    return st;
}

static void test_option_errors_name_pass_and_key(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/good");
    mopt_pipeline *p = mopt_pipeline_new(r);
    mopt_error err = {0};
    assert_int_equal(add_with(p, "good.types", "count", "three", NULL, NULL, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "pass good.types: option 'count' expects an int, got 'three'");
    assert_int_equal(add_with(p, "good.types", "count", "2", "cuont", "1", &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "unknown option 'cuont' (valid: count, scale, flag, mode, tags, name)");
    assert_int_equal(add_with(p, "good.types", "scale", "0.1", NULL, NULL, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "missing required option 'count'");
    assert_int_equal(add_with(p, "good.types", "count", "11", NULL, NULL, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "'count' = 11 is out of range [1, 10]");
    assert_int_equal(add_with(p, "good.types", "count", "1", "mode", "slow", &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "'mode' must be one of {fast, exact}");
    assert_int_equal(add_with(p, "good.types", "count", "1", "flag", "maybe", &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "'flag' expects a bool");
    assert_int_equal(add_with(p, "no.such_pass", NULL, NULL, NULL, NULL, &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "no pass named 'no.such_pass'");
    assert_int_equal(mopt_pipeline_length(p), 0);
    mopt_pipeline_free(p);
    mopt_registry_free(r);
}

static void test_typed_options_from_lua_style_values(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/good");
    const mopt_pass_desc *d = mopt_registry_find(r, "good.types");
    mopt_options *raw = mopt_options_new();
    mopt_error err = {0};
    mopt_options_set_typed(raw, "count", MOPT_OPT_FLOAT, 0, 2.5, NULL, &err); /* not integral */
    assert_null(mopt_options_validate(d, raw, &err));
    CHECK_ERR(err, MOPT_E_INVALID, "'count' expects an int, got 2.5");
    mopt_options_set_typed(raw, "count", MOPT_OPT_INT, 3, 0, NULL, &err);
    mopt_options_set_typed(raw, "flag", MOPT_OPT_BOOL, 1, 0, NULL, &err);
    mopt_options_set_typed(raw, "scale", MOPT_OPT_INT, 1, 0, NULL, &err); /* ints widen to floats */
    mopt_options *v = mopt_options_validate(d, raw, &err);
    assert_non_null(v);
    assert_int_equal(mopt_options_int(v, "count"), 3);
    assert_true(mopt_options_float(v, "scale") == 1.0);
    assert_int_equal(mopt_options_bool(v, "flag"), 1);
    assert_string_equal(mopt_options_string(v, "mode"), "fast"); /* default */
    assert_int_equal(mopt_options_list_len(v, "tags"), 2);
    assert_string_equal(mopt_options_list_item(v, "tags", 1), "b");
    assert_false(mopt_options_is_set(v, "name"));
    char buf[256];
    assert_string_equal(mopt_options_str(v, buf, sizeof buf), "count=3;scale=1;flag=true;mode=fast;tags=a,b");
    mopt_options_free(v);
    mopt_options_free(raw);
    mopt_registry_free(r);
}

/* --- pipelines ----------------------------------------------------------------- */

static void test_text_pipeline_parses_and_runs_in_order(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/good");
    mopt_pipeline *p = mopt_pipeline_new(r);
    mopt_error err = {0};
    assert_int_equal(mopt_pipeline_parse(p, " good.types<count=2; tags=x,y,z ;mode=exact> , good.types<count=5>", &err),
                     MOPT_OK);
    assert_int_equal(mopt_pipeline_length(p), 2);
    mopt_report *rep = mopt_report_new();
    mopt_run_opts o;
    mopt_run_opts_default(&o);
    o.quiet = 1;
    assert_int_equal(mopt_pipeline_run(p, NULL, &o, rep, &err), MOPT_OK);
    assert_true(mopt_report_ok(rep));
    assert_true(mopt_report_get_metric(rep, "count") == 5); /* later passes win */
    assert_true(mopt_report_get_metric(rep, "tags") == 2); /* the second pass uses the default "a,b" */
    char *json = mopt_report_json(rep);
    assert_non_null(strstr(json, "\"mode\": \"exact\""));
    free(json);
    mopt_report_free(rep);
    /* malformed text */
    mopt_pipeline *q = mopt_pipeline_new(r);
    assert_int_equal(mopt_pipeline_parse(q, "good.types<count=2", &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "without a closing '>'");
    assert_int_equal(mopt_pipeline_parse(q, "good.types<count>", &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "needs a value");
    assert_int_equal(mopt_pipeline_parse(q, "good.types<count=1>,,good.types<count=1>", &err), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "empty item");
    mopt_pipeline_free(q);
    mopt_pipeline_free(p);
    mopt_registry_free(r);
}

typedef struct {
    int before, after;
} hook_count;
static void before(void *u, int32_t i, const char *pass, const char *opts) { ((hook_count *)u)->before++; }
static void after(void *u, int32_t i, const char *pass, mopt_status st, double secs) { ((hook_count *)u)->after++; }

static void test_pass_failing_halfway_leaves_nothing_behind(void **s) {
    mopt_registry *r = registry(MOPT_FIXTURES "/good");
    mopt_pipeline *p = mopt_pipeline_new(r);
    char dir[1024], text[2048], out[1100];
    test_tmpdir(dir, sizeof dir, "halfway");
    snprintf(out, sizeof out, "%s/export.bin", dir);
    snprintf(text, sizeof text, "good.types<count=1>,good.fail_halfway<out=%s>,good.types<count=9>", out);
    mopt_error err = {0};
    assert_int_equal(mopt_pipeline_parse(p, text, &err), MOPT_OK);
    mopt_report *rep = mopt_report_new();
    hook_count hc = {0, 0};
    mopt_run_opts o;
    mopt_run_opts_default(&o);
    o.quiet = 1;
    o.before = before;
    o.after = after;
    o.user = &hc;
    assert_int_equal(mopt_pipeline_run(p, NULL, &o, rep, &err), MOPT_E_RUNTIME);
    CHECK_ERR(err, MOPT_E_RUNTIME, "good.fail_halfway: gave up halfway through on purpose");
    assert_int_equal(hc.before, 2); /* the third pass never ran */
    assert_int_equal(hc.after, 2);
    assert_false(mopt_report_ok(rep));
    assert_true(isnan(mopt_report_get_metric(rep, "partial")));
    assert_true(mopt_report_get_metric(rep, "count") == 1);
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0); /* the half-written file is gone */
    char *json = mopt_report_json(rep);
    assert_non_null(strstr(json, "\"failed_pass\": \"good.fail_halfway\""));
    free(json);
    mopt_report_free(rep);
    mopt_pipeline_free(p);
    mopt_registry_free(r);
}

static void test_describe_prints_the_schema(void **s) {
    mopt_registry *r = registry(NULL);
    mopt_error err = {0};
    char *t = mopt_registry_describe(r, "eval.perplexity", &err);
    assert_non_null(t);
    assert_non_null(strstr(t, "data"));
    assert_non_null(strstr(t, "dataset  required"));
    assert_non_null(strstr(t, "default 256"));
    free(t);
    assert_null(mopt_registry_describe(r, "eval.nope", &err));
    CHECK_ERR(err, MOPT_E_INVALID, "no pass named 'eval.nope'");
    mopt_registry_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hessian_inverse_factor_matches_the_textbook_path),
        cmocka_unit_test(test_hessian_scaled_mirrors_the_upper_triangle),
        cmocka_unit_test(test_gram_output_error_matches_running_the_tokens),
        cmocka_unit_test(test_valid_plugin_loads_with_its_passes),
        cmocka_unit_test(test_wrong_abi_is_refused_and_others_still_load),
        cmocka_unit_test(test_missing_entry_symbol_is_refused),
        cmocka_unit_test(test_failing_init_is_refused_with_its_reason),
        cmocka_unit_test(test_same_plugin_twice_keeps_the_first),
        cmocka_unit_test(test_unloadable_file_names_ldd),
        cmocka_unit_test(test_bad_descriptor_fields_are_refused_one_by_one),
        cmocka_unit_test(test_fifo_in_plugin_folder_is_skipped_without_hanging),
        cmocka_unit_test(test_world_writable_or_foreign_plugin_is_refused),
        cmocka_unit_test(test_plugin_hiding_a_builtin_is_an_error_unless_overridden),
        cmocka_unit_test(test_option_errors_name_pass_and_key),
        cmocka_unit_test(test_typed_options_from_lua_style_values),
        cmocka_unit_test(test_text_pipeline_parses_and_runs_in_order),
        cmocka_unit_test(test_pass_failing_halfway_leaves_nothing_behind),
        cmocka_unit_test(test_describe_prints_the_schema),
        cmocka_unit_test(test_host_cholesky_and_inverse_match_a_float64_reference),
    };
    return test_run_tests(tests, NULL, NULL);
}
