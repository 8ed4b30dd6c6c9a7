/* The plugin registry and pipelines: ordered lists of pass instances, run in
 * order with no hidden dependency resolution. The same pipeline can be built
 * from C, from Lua, or from the one-line text form
 *   quant.rtn<bits=4;group_size=128>,eval.perplexity<data=val.txt> */
#ifndef MOPT_PIPELINE_H
#define MOPT_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/log.h"
#include "mopt/model.h"
#include "mopt/pass.h"

MOPT_EXTERN_C_BEGIN

typedef struct mopt_registry mopt_registry;
typedef struct mopt_pipeline mopt_pipeline;

typedef struct mopt_plugin_info {
    const char *name, *version, *license, *description, *path;
    uint32_t abi_version;
    int32_t n_passes;
} mopt_plugin_info;

/* Loads every plugin found on $MOPT_PLUGIN_PATH (colon-separated), then in the
 * plugin folder beside the library (build/lib/mopt, <prefix>/lib/mopt: the
 * built-in plugins). `extra_dirs` (colon-separated, may be NULL) is searched
 * first. Plugins that fail to load are skipped and their errors kept
 * (mopt_registry_problem). Only regular files that are not world-writable and
 * are owned by the user or root are loaded. A plugin or pass that has the name
 * of a built-in one is an error naming both files (NULL is returned), unless
 * flags has MOPT_REGISTRY_ALLOW_OVERRIDE: then it replaces the built-in one
 * and a problem line says so. */
enum { MOPT_REGISTRY_ALLOW_OVERRIDE = 1u << 0 };
MOPT_API mopt_registry *mopt_registry_open(const char *extra_dirs, uint32_t flags, mopt_error *err);
/* mopt_registry_open(extra_dirs, 0, err) */
MOPT_API mopt_registry *mopt_registry_new(const char *extra_dirs, mopt_error *err);
/* Calls each plugin's fini and unloads it. Free pipelines and reports first. */
MOPT_API void mopt_registry_free(mopt_registry *r);
/* Loads one plugin file now. */
MOPT_API mopt_status mopt_registry_load(mopt_registry *r, const char *path, mopt_error *err);

MOPT_API int32_t mopt_registry_n_plugins(const mopt_registry *r);
MOPT_API mopt_plugin_info mopt_registry_plugin(const mopt_registry *r, int32_t i);
MOPT_API int32_t mopt_registry_n_passes(const mopt_registry *r);
MOPT_API const mopt_pass_desc *mopt_registry_pass(const mopt_registry *r, int32_t i);
/* The plugin that provides pass i. */
MOPT_API const char *mopt_registry_pass_plugin(const mopt_registry *r, int32_t i);
MOPT_API const mopt_pass_desc *mopt_registry_find(const mopt_registry *r, const char *pass_name);
/* Problems met while loading (one line each). */
MOPT_API int32_t mopt_registry_n_problems(const mopt_registry *r);
MOPT_API const char *mopt_registry_problem(const mopt_registry *r, int32_t i);
/* The schema of a pass as help text (malloc'd). */
MOPT_API char *mopt_registry_describe(const mopt_registry *r, const char *pass_name, mopt_error *err);

/* --- pipelines ---------------------------------------------------------------- */

typedef struct mopt_run_opts {
    uint32_t struct_size;
    int32_t n_threads; /* <= 0: all cores */
    int32_t quiet;     /* no progress lines */
    /* optional hooks around each pass (timing, logging) */
    void (*before)(void *user, int32_t index, const char *pass, const char *options);
    void (*after)(void *user, int32_t index, const char *pass, mopt_status status, double seconds);
    void *user;
    /* appended: when set, passes write files only inside this directory (the
     * sandbox of `mopt run --sandbox`); built-in exporters check it */
    const char *write_root;
    /* appended: where progress bars and pass lines go (NULL: mopt_log_stderr) */
    mopt_log_fn log;
    void *log_user;
} mopt_run_opts;

MOPT_API void mopt_run_opts_default(mopt_run_opts *o);

MOPT_API mopt_pipeline *mopt_pipeline_new(const mopt_registry *reg);
MOPT_API void mopt_pipeline_free(mopt_pipeline *p);
/* Appends a pass; its options are validated now (unknown keys, types, ranges,
 * required ones). `raw` may be NULL; it is copied. */
MOPT_API mopt_status mopt_pipeline_add(mopt_pipeline *p, const char *pass_name, const mopt_options *raw,
                                       mopt_error *err);
/* Parses the text form and appends its passes. */
MOPT_API mopt_status mopt_pipeline_parse(mopt_pipeline *p, const char *text, mopt_error *err);
/* Appends a per-layer quantization recipe: json_text is an object from name
 * globs (matched against node and weight names; several joined by '|' in one
 * key, e.g. "layers.0.q|layers.3.down") and "default" to a quant pass
 * in the text form ("quant.rtn<bits=4;group_size=128>") or "keep". Each
 * decoder linear takes the last entry whose glob matches it, else the
 * default, else it is kept. One pass is appended per entry (its `only` the
 * glob, its `exclude` every later glob); a glob that matches no linear fails
 * when the pipeline runs, naming the linears. `source` names the recipe in
 * messages (JSON errors give its line and column). */
MOPT_API mopt_status mopt_pipeline_add_recipe(mopt_pipeline *p, const char *json_text, const char *source, mopt_error *err);
MOPT_API int32_t mopt_pipeline_length(const mopt_pipeline *p);
/* Runs every pass in order on the model. Stops at the first failure: that
 * pass's metrics and artifacts are discarded, the report is marked failed and
 * names the pass; err carries "PASS: message". `report` receives the results
 * (pass a fresh one). */
MOPT_API mopt_status mopt_pipeline_run(const mopt_pipeline *p, mopt_model *model, const mopt_run_opts *opts,
                                       mopt_report *report, mopt_error *err);

MOPT_EXTERN_C_END

#endif
