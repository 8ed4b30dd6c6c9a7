/* Fixture plugins for test_plugins, one source built several ways:
 *   FIXTURE_GOOD        a valid plugin "good" with passes good.types and good.fail_halfway
 *   FIXTURE_WRONG_ABI   declares ABI 999
 *   FIXTURE_NO_ENTRY    exports no mopt_plugin_entry
 *   FIXTURE_INIT_FAILS  entry returns NULL with a reason
 *   FIXTURE_BAD_DESC    "baddesc": pass descriptors with NULL opts, bad types, defaults, kinds
 *   FIXTURE_SHADOW      "shadow": declares eval.perplexity, which a built-in plugin provides */
#include <stdio.h>
#include <string.h>

#include "mopt/plugin.h"

#if defined(FIXTURE_GOOD)
static mopt_status run_types(const mopt_host_api *host, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o,
                             mopt_report *report, mopt_error *err) {
    host->report_metric(report, "count", (double)host->opt_int(o, "count"));
    host->report_metric(report, "scale", host->opt_float(o, "scale"));
    host->report_metric(report, "flag", host->opt_bool(o, "flag"));
    host->report_string(report, "mode", host->opt_string(o, "mode"));
    host->report_metric(report, "tags", host->opt_list_len(o, "tags"));
    host->report_string(report, "name", host->opt_is_set(o, "name") ? host->opt_string(o, "name") : "(unset)");
    return MOPT_OK;
}

/* Writes a metric and an artifact file, then fails: none of it may survive. */
static mopt_status run_fail(const mopt_host_api *host, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o,
                            mopt_report *report, mopt_error *err) {
    const char *path = host->opt_string(o, "out");
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("half written\n", f);
        fclose(f);
    }
    host->report_artifact(report, "file", path);
    host->report_metric(report, "partial", 1.0);
    return host->error_set(err, MOPT_E_RUNTIME, "good.fail_halfway", "gave up halfway through on purpose");
}

static const char *const modes[] = {"fast", "exact", NULL};
static const mopt_opt_spec types_opts[] = {
    {"count", MOPT_OPT_INT, MOPT_OPT_REQUIRED, "how many", NULL, 1, 10, NULL},
    {"scale", MOPT_OPT_FLOAT, 0, "a factor", "0.5", 0, 1, NULL},
    {"flag", MOPT_OPT_BOOL, 0, "a switch", "false", 0, -1, NULL},
    {"mode", MOPT_OPT_ENUM, 0, "a choice", "fast", 0, -1, modes},
    {"tags", MOPT_OPT_LIST, 0, "a list", "a,b", 0, -1, NULL},
    {"name", MOPT_OPT_STRING, 0, "optional text", NULL, 0, -1, NULL},
};
static const mopt_opt_spec fail_opts[] = {
    {"out", MOPT_OPT_STRING, MOPT_OPT_REQUIRED, "file to half-write", NULL, 0, -1, NULL},
};
static const mopt_pass_desc types_pass = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "good.types",
                                          "echoes its options", types_opts, 6, 0, run_types, NULL, {0}};
static const mopt_pass_desc fail_pass = {sizeof(mopt_pass_desc), MOPT_PASS_EXPORT, "good.fail_halfway",
                                         "fails after writing", fail_opts, 1, 0, run_fail, NULL, {0}};
static const mopt_pass_desc *const passes[] = {&types_pass, &fail_pass, NULL};
#define NAME "good"
#define ABI MOPT_PLUGIN_ABI_VERSION
#elif defined(FIXTURE_BAD_DESC)
/* Descriptors a careless (or hostile) plugin might ship: each is refused at load. */
static mopt_status run_nothing(const mopt_host_api *host, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o,
                               mopt_report *report, mopt_error *err) {
    return MOPT_OK;
}
static const mopt_opt_spec one_opt[] = {{"x", MOPT_OPT_INT, 0, "an int", "1", 0, 10, NULL}};
static const mopt_opt_spec enum_without_choices[] = {{"mode", MOPT_OPT_ENUM, 0, "a choice", "fast", 0, -1, NULL}};
static const mopt_opt_spec bad_default[] = {{"count", MOPT_OPT_INT, 0, "an int", "many", 0, 10, NULL}};
static const mopt_opt_spec nameless[] = {{NULL, MOPT_OPT_INT, 0, "no name", "1", 0, 10, NULL}};
static const mopt_opt_spec bad_type[] = {{"t", 77, 0, "unknown type", NULL, 0, -1, NULL}};
static const mopt_pass_desc null_opts = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "baddesc.null_opts", "opts NULL, n_opts 1000", NULL, 1000, 0, run_nothing, NULL, {0}};
static const mopt_pass_desc no_choices = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "baddesc.no_choices", "enum without choices", enum_without_choices, 1, 0, run_nothing, NULL, {0}};
static const mopt_pass_desc bad_def = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "baddesc.bad_default", "default not an int", bad_default, 1, 0, run_nothing, NULL, {0}};
static const mopt_pass_desc no_name = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "baddesc.nameless", "option without a name", nameless, 1, 0, run_nothing, NULL, {0}};
static const mopt_pass_desc bad_ty = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "baddesc.bad_type", "option type 77", bad_type, 1, 0, run_nothing, NULL, {0}};
static const mopt_pass_desc bad_kind = {sizeof(mopt_pass_desc), 9, "baddesc.bad_kind", "kind 9", one_opt, 1, 0, run_nothing, NULL, {0}};
static const mopt_pass_desc no_run = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "baddesc.no_run", "run NULL", one_opt, 1, 0, NULL, NULL, {0}};
static const mopt_pass_desc ok_pass = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "baddesc.ok", "the one sound pass", one_opt, 1, 0, run_nothing, NULL, {0}};
static const mopt_pass_desc *const passes[] = {&null_opts, &no_choices, &bad_def, &no_name, &bad_ty, &bad_kind, &no_run, &ok_pass, NULL};
#define NAME "baddesc"
#define ABI MOPT_PLUGIN_ABI_VERSION
#elif defined(FIXTURE_SHADOW)
/* A plugin that declares a pass a built-in plugin provides (eval.perplexity). */
static mopt_status run_shadow(const mopt_host_api *host, mopt_pass_ctx *ctx, mopt_graph *graph, const mopt_options *o,
                              mopt_report *report, mopt_error *err) {
    host->report_metric(report, "shadow", 1);
    return MOPT_OK;
}
static const mopt_pass_desc shadow_pass = {sizeof(mopt_pass_desc), MOPT_PASS_ANALYSIS, "eval.perplexity", "not the real one", NULL, 0, 0, run_shadow, NULL, {0}};
static const mopt_pass_desc *const passes[] = {&shadow_pass, NULL};
#define NAME "shadow"
#define ABI MOPT_PLUGIN_ABI_VERSION
#elif defined(FIXTURE_WRONG_ABI)
static const mopt_pass_desc *const passes[] = {NULL};
#define NAME "oldabi"
#define ABI 999u
#elif defined(FIXTURE_INIT_FAILS)
static const mopt_pass_desc *const passes[] = {NULL};
#define NAME "initfails"
#define ABI MOPT_PLUGIN_ABI_VERSION
#endif

#if !defined(FIXTURE_NO_ENTRY)
static const mopt_plugin_desc desc = {
    .abi_version = ABI,
    .struct_size = sizeof(mopt_plugin_desc),
    .name = NAME,
    .version = "1.0",
    .license = "MIT",
    .description = "test fixture",
    .passes = passes,
};

MOPT_PLUGIN_ENTRY {
#if defined(FIXTURE_INIT_FAILS)
    (void)desc;
    host->error_set(err, MOPT_E_RUNTIME, "init", "needs a GPU that is not here");
    return NULL;
#else
    (void)host;
    (void)err;
    return &desc;
#endif
}
#else
__attribute__((visibility("default"))) int not_a_plugin = 1;
#endif
