/* Passes: named units of work (transform / analysis / export) with an option
 * schema the core validates before the pass runs, writing their results into
 * a structured report. */
#ifndef MOPT_PASS_H
#define MOPT_PASS_H

#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/graph.h"

MOPT_EXTERN_C_BEGIN

typedef enum mopt_pass_kind {
    MOPT_PASS_TRANSFORM = 0, /* changes the graph */
    MOPT_PASS_ANALYSIS = 1,  /* reads the graph, writes metrics */
    MOPT_PASS_EXPORT = 2     /* writes files */
} mopt_pass_kind;

typedef enum mopt_opt_type {
    MOPT_OPT_BOOL = 0,
    MOPT_OPT_INT = 1,
    MOPT_OPT_FLOAT = 2,
    MOPT_OPT_STRING = 3,
    MOPT_OPT_ENUM = 4,    /* one of `choices` */
    MOPT_OPT_LIST = 5,    /* comma-separated strings */
    MOPT_OPT_MODEL = 6,   /* path of a model to load */
    MOPT_OPT_DATASET = 7  /* path of a text file */
} mopt_opt_type;

enum { MOPT_OPT_REQUIRED = 1u << 0 };

/* One option of a pass's schema. Everything is static data. */
typedef struct mopt_opt_spec {
    const char *name;              /* snake_case */
    uint32_t type;                 /* mopt_opt_type */
    uint32_t flags;                /* MOPT_OPT_REQUIRED */
    const char *doc;               /* one line */
    const char *default_value;     /* as text ("4", "0.5", "true", "a,b"); NULL: no default */
    double min, max;               /* INT/FLOAT range; ignored when min > max */
    const char *const *choices;    /* ENUM: NULL-terminated */
} mopt_opt_spec;

typedef struct mopt_options mopt_options; /* validated option values */
typedef struct mopt_report mopt_report;
typedef struct mopt_pass_ctx mopt_pass_ctx;
struct mopt_host_api;

typedef struct mopt_pass_desc {
    uint32_t struct_size; /* sizeof(mopt_pass_desc) */
    uint32_t kind;        /* mopt_pass_kind */
    const char *name;     /* dotted: "quant.rtn", "eval.perplexity" */
    const char *summary;  /* one line */
    const mopt_opt_spec *opts;
    uint32_t n_opts;
    uint32_t reserved0;
    /* Runs the pass. Options are already validated and defaulted. Results go
     * into `report` through the host table; on failure set err and return it. */
    mopt_status (*run)(const struct mopt_host_api *host, mopt_pass_ctx *ctx, mopt_graph *graph,
                       const mopt_options *opts, mopt_report *report, mopt_error *err);
    /* (optional) checks that span options (bits against formats, ...) when the
     * pass is added to a pipeline, before anything runs. */
    mopt_status (*check)(const struct mopt_host_api *host, const mopt_options *opts, mopt_error *err);
    void *reserved[3];
} mopt_pass_desc;

/* --- options ------------------------------------------------------------------ */

/* An empty set of raw key=value settings for a pass; validated by mopt_options_validate. */
MOPT_API mopt_options *mopt_options_new(void);
MOPT_API void mopt_options_free(mopt_options *o);
/* Sets a raw value given as text (as on the command line). */
MOPT_API mopt_status mopt_options_set(mopt_options *o, const char *key, const char *value, mopt_error *err);
/* Sets a raw value with its type already known (from Lua); `type` is the
 * source type: MOPT_OPT_BOOL, INT, FLOAT or STRING. */
MOPT_API mopt_status mopt_options_set_typed(mopt_options *o, const char *key, mopt_opt_type type, int64_t i, double f,
                                            const char *s, mopt_error *err);
/* Checks raw values against the schema: rejects unknown keys (listing the
 * valid ones), converts and range-checks, fills defaults, requires required
 * options. Returns a new validated set (free with mopt_options_free). */
MOPT_API mopt_options *mopt_options_validate(const mopt_pass_desc *pass, const mopt_options *raw, mopt_error *err);

MOPT_API int64_t mopt_options_int(const mopt_options *o, const char *name);
MOPT_API double mopt_options_float(const mopt_options *o, const char *name);
MOPT_API int32_t mopt_options_bool(const mopt_options *o, const char *name);
/* STRING, ENUM, MODEL, DATASET and LIST (comma-joined); NULL when unset. */
MOPT_API const char *mopt_options_string(const mopt_options *o, const char *name);
MOPT_API int32_t mopt_options_list_len(const mopt_options *o, const char *name);
MOPT_API const char *mopt_options_list_item(const mopt_options *o, const char *name, int32_t i);
MOPT_API int32_t mopt_options_is_set(const mopt_options *o, const char *name);
/* "bits=4;group_size=128" (every value, defaults included) into buf. */
MOPT_API const char *mopt_options_str(const mopt_options *o, char *buf, size_t cap);

MOPT_API const char *mopt_opt_type_name(mopt_opt_type t);
MOPT_API const char *mopt_pass_kind_name(mopt_pass_kind k);

/* --- report ------------------------------------------------------------------- */

/* A report holds one section per pass run (name, kind, options, seconds,
 * status, metrics, strings, artifacts) and an overall status. */
MOPT_API mopt_report *mopt_report_new(void);
MOPT_API void mopt_report_free(mopt_report *r);
MOPT_API mopt_status mopt_report_metric(mopt_report *r, const char *key, double value);
MOPT_API mopt_status mopt_report_string(mopt_report *r, const char *key, const char *value);
/* Records a file the pass wrote; removed again if the pass fails. */
MOPT_API mopt_status mopt_report_artifact(mopt_report *r, const char *kind, const char *path);
/* A series of numbers (per-window NLL, latencies, ...) for tables and charts. */
MOPT_API mopt_status mopt_report_series(mopt_report *r, const char *key, const double *v, int64_t n);
/* Records a gate: metric `op` ("<=" or ">=") threshold, checked on value.
 * A failed gate marks the report's gates failed (not the passes). */
MOPT_API mopt_status mopt_report_gate(mopt_report *r, const char *metric, const char *op, double threshold,
                                      double value, int32_t passed);
/* 1 when no recorded gate failed. */
MOPT_API int32_t mopt_report_gates_ok(const mopt_report *r);
/* Writes report.json, report.md and report.html (self-contained, inline SVG
 * charts) into dir, each atomically; creates dir if needed. */
MOPT_API mopt_status mopt_report_write(const mopt_report *r, const char *dir, const char *title, mopt_error *err);
/* The latest value of a metric from any successful pass; NaN if none. */
MOPT_API double mopt_report_get_metric(const mopt_report *r, const char *key);
/* 1 when every pass succeeded. */
MOPT_API int32_t mopt_report_ok(const mopt_report *r);
/* The report as JSON text (malloc'd; free()). */
MOPT_API char *mopt_report_json(const mopt_report *r);
/* The report as the JSON tree it is kept in: {"status", "passes": [{"name",
 * "kind", "status", "metrics", "strings", "artifacts", ...}], ...}. Borrowed
 * (jansson's json_t), valid until the report changes; for readers that want
 * fields without serializing (the Lua binding). */
MOPT_API const struct json_t *mopt_report_tree(const mopt_report *r);

MOPT_EXTERN_C_END

#endif
