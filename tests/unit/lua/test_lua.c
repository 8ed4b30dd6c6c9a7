/* The Lua binding and `mopt run`: classes, options from tables, errors with
 * file:line and the pass name, and the perplexity script agreeing with `mopt eval`. */
#include <sys/wait.h>

#include "testutil.h"
#include "mopt/lua.h"

static mopt_status run_script(const char *body, int n_args, char *const *args, mopt_error *err, char **tb) {
    static int k = 0;
    char dir[1024], path[1200];
    test_tmpdir(dir, sizeof dir, "lua");
    snprintf(path, sizeof path, "%s/script%d.lua", dir, k++);
    write_file(path, body, strlen(body));
    mopt_error e = {0};
    mopt_registry *r = mopt_registry_new(MOPT_FIXTURES "/good", &e);
    assert_non_null(r);
    mopt_status st = mopt_lua_run_file(path, n_args, args, r, 1, 0, tb, NULL, err);
    mopt_registry_free(r);
    return st;
}

static void test_module_classes_and_registry(void **s) {
    REQUIRE_SHARED();
    char script[4096];
    snprintf(script, sizeof script,
             "local m <close> = mopt.load('%s/models/lit-gpt2-1m')\n"
             "assert(tostring(m):find('mopt.Model', 1, true))\n"
             "assert(m:info().family == 'gpt2' and m:info().n_layers == 4)\n"
             "local ids = m:tokenize('ROMEO:\\nBut soft')\n"
             "assert(#ids == 6 and ids[1] == 1576)\n"
             "assert(m:decode(ids) == 'ROMEO:\\nBut soft')\n"
             "local names = {}\n"
             "for _, p in ipairs(mopt.passes()) do names[p.name] = p.plugin end\n"
             "assert(names['eval.perplexity'] == 'eval' and names['good.types'] == 'good')\n"
             "assert(mopt.describe('good.types'):find('count', 1, true))\n"
             "local ds = mopt.dataset.text('%s/data/lit-val.txt', {tokenizer = m, seq_len = 256})\n"
             "assert(ds.n_tokens == 115006, ds.n_tokens)\n"
             "local rep = mopt.pipeline{ {'good.types', {count = 3, flag = true, scale = 0.25, tags = {'x', 'y', 'z'}}},\n"
             "                           'good.types<count=4;mode=exact>' }:run(m)\n"
             "assert(rep.ok and rep.metrics.count == 4 and rep.metrics.tags == 2)\n"
             "assert(rep.passes[1].metrics.scale == 0.25 and rep.passes[1].metrics.tags == 3)\n"
             "assert(rep:json():find('\"status\": \"ok\"', 1, true))\n"
             "assert(args.answer == '42' and args.name == 'a=b')\n",
             test_shared_dir(), test_shared_dir());
    char *argv[] = {"answer=42", "name=a=b"};
    mopt_error err = {0};
    char *tb = NULL;
    mopt_status st = run_script(script, 2, argv, &err, &tb);
    if (st) fprintf(stderr, "%s\n%s\n", err.msg, tb ? tb : "");
    assert_int_equal(st, MOPT_OK);
    free(tb);
}

static void test_error_inside_a_pass_reaches_lua_with_pass_name(void **s) {
    REQUIRE_SHARED();
    char script[2048], dir[1024], empty[1100];
    test_tmpdir(dir, sizeof dir, "lua-empty");
    snprintf(empty, sizeof empty, "%s/empty.txt", dir);
    write_file(empty, "", 0);
    snprintf(script, sizeof script,
             "local m = mopt.load('%s/models/lit-gpt2-1m')\n"
             "local p = mopt.pipeline{ {'eval.perplexity', {data = '%s'}} }\n"
             "local r, msg = p:try_run(m)\n"
             "assert(r == nil and msg:find('empty data file', 1, true))\n"
             "p:run(m)\n",
             test_shared_dir(), empty);
    mopt_error err = {0};
    char *tb = NULL;
    assert_int_equal(run_script(script, 0, NULL, &err, &tb), MOPT_E_RUNTIME);
    CHECK_ERR(err, MOPT_E_RUNTIME, ":5: eval.perplexity: ");
    assert_non_null(strstr(err.msg, "empty data file"));
    assert_non_null(tb);
    assert_non_null(strstr(tb, "stack traceback"));
    free(tb);
}

static void test_bad_options_from_lua_are_errors_with_line(void **s) {
    mopt_error err = {0};
    char *tb = NULL;
    assert_int_equal(run_script("local x = 1\nmopt.pipeline{ {'good.types', {count = 'lots'}} }\n", 0, NULL, &err, &tb),
                     MOPT_E_RUNTIME);
    CHECK_ERR(err, MOPT_E_RUNTIME, ":2: mopt.pipeline: pass good.types: option 'count' expects an int, got 'lots'");
    free(tb);
    tb = NULL;
    assert_int_equal(run_script("mopt.pipeline{ {'good.types', {count = 1, colour = 'red'}} }\n", 0, NULL, &err, &tb),
                     MOPT_E_RUNTIME);
    CHECK_ERR(err, MOPT_E_RUNTIME, "unknown option 'colour'");
    free(tb);
    tb = NULL;
    assert_int_equal(run_script("mopt.pipeline{ {'good.types', {}} }\n", 0, NULL, &err, &tb), MOPT_E_RUNTIME);
    CHECK_ERR(err, MOPT_E_RUNTIME, "missing required option 'count'");
    free(tb);
    tb = NULL; /* a {recipe = JSON} step goes to the recipe reader (mopt_pipeline_add_recipe, tested with the quant passes) */
    assert_int_equal(run_script("\nmopt.pipeline{ {recipe = '{\"*mlp*\": 4}'} }\n", 0, NULL, &err, &tb), MOPT_E_RUNTIME);
    CHECK_ERR(err, MOPT_E_RUNTIME, ":2: mopt.pipeline: recipe: \"*mlp*\" must map to a quant pass");
    free(tb);
}

static void test_syntax_error_reports_file_and_line(void **s) {
    mopt_error err = {0};
    assert_int_equal(run_script("local a = 1\nlocal b = = 2\n", 0, NULL, &err, NULL), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, ".lua:2:");
    char *bad[] = {"novalue"};
    assert_int_equal(run_script("return\n", 1, bad, &err, NULL), MOPT_E_INVALID);
    CHECK_ERR(err, MOPT_E_INVALID, "not key=value");
}

static char *capture(const char *cmd, int *code) {
    char path[1100];
    snprintf(path, sizeof path, "%s/capture-%ld.txt", MOPT_BINARY_DIR, (long)getpid());
    char full[8192];
    snprintf(full, sizeof full, "%s > '%s' 2>/dev/null", cmd, path);
    int st = system(full);
    *code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    size_t n;
    char *out = read_whole(path, &n);
    unlink(path);
    return out;
}

static void test_run_script_prints_same_ppl_as_eval(void **s) {
    REQUIRE_SHARED();
    char dir[1024], data[1100], cmd[4096], src[1024];
    test_tmpdir(dir, sizeof dir, "lua-ppl");
    snprintf(data, sizeof data, "%s/val-head.txt", dir);
    size_t n;
    char *text = read_whole(test_shared_path(src, sizeof src, "data/lit-val.txt"), &n);
    write_file(data, text, 40000);
    free(text);
    int c1, c2;
    snprintf(cmd, sizeof cmd, "%s eval '%s/models/lit-llama-7m' --data '%s' --quiet", MOPT_CLI, test_shared_dir(), data);
    char *a = capture(cmd, &c1);
    snprintf(cmd, sizeof cmd, "MOPT_QUIET=1 %s run '%s/scripts/perplexity.lua' model='%s/models/lit-llama-7m' data='%s'",
             MOPT_CLI, MOPT_SOURCE_DIR, test_shared_dir(), data);
    char *b = capture(cmd, &c2);
    assert_int_equal(c1, 0);
    assert_int_equal(c2, 0);
    fprintf(stderr, "eval: %sscript: %s", a, b);
    /* "ppl X  (nll Y over N tokens, W windows of 256..." agree up to the timing */
    assert_memory_equal(a, b, (size_t)(strstr(a, "windows of") - a));
    free(a);
    free(b);
}

/* Runs body sandboxed with dir as the output directory; returns the status. */
static mopt_status run_sandboxed(const char *dir, const char *body, mopt_error *err) {
    char path[1200];
    snprintf(path, sizeof path, "%s/recipe.lua", dir);
    write_file(path, body, strlen(body));
    mopt_error e = {0};
    mopt_registry *r = mopt_registry_new(NULL, &e);
    assert_non_null(r);
    mopt_lua_opts o;
    mopt_lua_opts_default(&o);
    o.quiet = 1;
    o.sandbox = 1;
    o.write_root = dir;
    char *tb = NULL;
    mopt_status st = mopt_lua_run(path, 0, NULL, r, &o, &tb, NULL, err);
    if (st) fprintf(stderr, "  sandboxed: %s\n", err->msg);
    free(tb);
    mopt_registry_free(r);
    return st;
}

static void test_sandbox_removes_escapes_and_confines_writes(void **s) {
    REQUIRE_SHARED();
    char root[1024], outside[1024], script[16384], victim[1200];
    test_tmpdir(root, sizeof root, "sandbox");
    test_tmpdir(outside, sizeof outside, "sandbox-outside");
    snprintf(victim, sizeof victim, "%s/victim.txt", outside);
    mopt_error err = {0};
    /* what the sandbox takes away, and what it keeps */
    snprintf(script, sizeof script,
             "assert(os.execute == nil and io.popen == nil and io.tmpfile == nil and package.loadlib == nil and debug == nil)\n"
             "assert(package.cpath == '')\n"
             "assert(not pcall(require, 'lfs'))\n"
             "local bin = string.dump(function() return 1 end)\n"
             "local f, e = load(bin)\n"
             "assert(f == nil and e:find('binary', 1, true), e)\n"
             "assert(load('return 2')() == 2)\n"
             "local ok, e2 = pcall(io.open, '%s', 'w')\n"
             "assert(not ok and e2:find('outside', 1, true), e2)\n"
             "assert(not pcall(io.open, '%s/../escape.txt', 'a'))\n"
             "assert(not pcall(os.remove, '%s'))\n"
             "local w = assert(io.open('%s/inside.txt', 'w'))\n"
             "w:write('ok') w:close()\n"
             "assert(io.open('%s/data/lit-val.txt', 'r')):close()\n"
             "local m <close> = mopt.load('%s/models/stories260K/stories260K.bin')\n"
             "local rep = mopt.pipeline('eval.perplexity<data=%s/data/lit-val.txt;limit_tokens=600>'):run(m)\n"
             "assert(not pcall(m.stream_to, m, '%s'))\n"
             "assert(m:stream_to('%s') == m)\n"
             "assert(not pcall(rep.write, rep, '%s/reports'))\n"
             "rep:write('%s/reports')\n"
             "local r2, e3 = mopt.pipeline('export.gguf<out=%s/x.gguf;type=f32>'):try_run(m)\n"
             "assert(r2 == nil and e3:find('not allowed in the sandbox', 1, true), e3)\n"
             "mopt.pipeline('export.gguf<out=%s/x.gguf;type=f32>'):run(m)\n",
             victim, root, victim, root, test_shared_dir(), test_shared_dir(), test_shared_dir(), outside, root, outside, root, outside,
             root);
    write_file(victim, "mine", 4);
    assert_int_equal(run_sandboxed(root, script, &err), MOPT_OK);
    char path[1300];
    size_t n;
    char *v = read_whole(victim, &n);
    assert_string_equal(v, "mine");
    free(v);
    snprintf(path, sizeof path, "%s/reports/report.json", root);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/x.gguf", root);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/x.gguf", outside);
    assert_int_not_equal(access(path, F_OK), 0);
    /* a link inside the root pointing out is no way out either */
    char link[1300];
    snprintf(link, sizeof link, "%s/out", root);
    assert_int_equal(symlink(outside, link), 0);
    snprintf(script, sizeof script, "io.open('%s/out/x.txt', 'w')\n", root);
    assert_int_equal(run_sandboxed(root, script, &err), MOPT_E_RUNTIME);
    assert_non_null(strstr(err.msg, "not allowed in the sandbox"));
    /* a precompiled script is refused outright */
    snprintf(path, sizeof path, "%s/compiled.lua", root);
    snprintf(script, sizeof script, "local f = io.open('%s', 'wb') f:write(string.dump(function() end)) f:close()\n", path);
    assert_int_equal(run_sandboxed(root, script, &err), MOPT_OK);
    snprintf(script, sizeof script, "dofile('%s')\n", path);
    assert_int_equal(run_sandboxed(root, script, &err), MOPT_E_RUNTIME);
    assert_non_null(strstr(err.msg, "binary"));
}

static void test_unsandboxed_scripts_are_trusted_code(void **s) {
    mopt_error err = {0};
    char *tb = NULL;
    assert_int_equal(run_script("assert(os.execute('true'))\nassert(io.popen and package.loadlib and debug)\n", 0, NULL, &err, &tb),
                     MOPT_OK);
    free(tb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_module_classes_and_registry),
        cmocka_unit_test(test_error_inside_a_pass_reaches_lua_with_pass_name),
        cmocka_unit_test(test_bad_options_from_lua_are_errors_with_line),
        cmocka_unit_test(test_syntax_error_reports_file_and_line),
        cmocka_unit_test(test_run_script_prints_same_ppl_as_eval),
        cmocka_unit_test(test_sandbox_removes_escapes_and_confines_writes),
        cmocka_unit_test(test_unsandboxed_scripts_are_trusted_code),
    };
    return test_run_tests(tests, NULL, NULL);
}
