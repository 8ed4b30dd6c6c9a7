/* Fixture plugins for test_plugins, one source built several ways:
 *   FIXTURE_GOOD        a valid plugin "good" with passes good.types and good.fail_halfway
 *   FIXTURE_WRONG_ABI   declares ABI 999
 *   FIXTURE_NO_ENTRY    exports no mopt_plugin_entry
 *   FIXTURE_INIT_FAILS  entry returns NULL with a reason */
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
