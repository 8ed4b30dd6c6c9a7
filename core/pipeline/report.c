/* Reports: one JSON section per pass, plus an overall status. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "report_impl.h"

struct mopt_report {
    json_t *root;    /* {"status", "passes": [...], "failed_pass"?, "error"?} */
    json_t *current; /* borrowed: the open section, or NULL */
};

mopt_report *mopt_report_new(void) {
    mopt_report *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->root = json_pack("{s:s, s:[]}", "status", "ok", "passes");
    if (!r->root) {
        free(r);
        return NULL;
    }
    return r;
}

const json_t *mopt_report_tree(const mopt_report *r) { return r->root; }

void mopt_report_free(mopt_report *r) {
    if (!r) return;
    json_decref(r->root);
    free(r);
}

static json_t *section(mopt_report *r) {
    if (!r->current) mopt_report_begin(r, "user", "analysis", ""); /* values set outside any pass */
    return r->current;
}

mopt_status mopt_report_begin(mopt_report *r, const char *pass, const char *kind, const char *options) {
    json_t *s = json_pack("{s:s, s:s, s:s, s:s, s:{}, s:{}, s:[]}", "name", pass, "kind", kind, "options", options,
                          "status", "running", "metrics", "strings", "artifacts");
    if (!s) return MOPT_E_NOMEM;
    json_array_append_new(json_object_get(r->root, "passes"), s);
    r->current = s;
    return MOPT_OK;
}

void mopt_report_end(mopt_report *r, mopt_status status, double seconds, const char *error) {
    json_t *s = r->current;
    if (!s) return;
    json_object_set_new(s, "seconds", json_real(seconds));
    if (status == MOPT_OK) {
        json_object_set_new(s, "status", json_string("ok"));
    } else {
        /* nothing the failed pass produced may look like a result */
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(s, "artifacts"), i, a) {
            const char *path = json_string_value(json_object_get(a, "path"));
            if (path) unlink(path);
        }
        json_object_set_new(s, "metrics", json_object());
        json_object_set_new(s, "strings", json_object());
        json_object_set_new(s, "artifacts", json_array());
        json_object_set_new(s, "status", json_string("failed"));
        json_object_set_new(s, "error", json_string(error ? error : ""));
        json_object_set_new(r->root, "status", json_string("failed"));
        json_object_set(r->root, "failed_pass", json_object_get(s, "name"));
        json_object_set_new(r->root, "error", json_string(error ? error : ""));
    }
    r->current = NULL;
}

mopt_status mopt_report_metric(mopt_report *r, const char *key, double value) {
    json_t *s = section(r);
    if (!s) return MOPT_E_NOMEM;
    /* JSON has no NaN/inf: record them as null */
    return json_object_set_new(json_object_get(s, "metrics"), key, isfinite(value) ? json_real(value) : json_null())
               ? MOPT_E_NOMEM
               : MOPT_OK;
}

mopt_status mopt_report_string(mopt_report *r, const char *key, const char *value) {
    json_t *s = section(r);
    if (!s) return MOPT_E_NOMEM;
    return json_object_set_new(json_object_get(s, "strings"), key, json_string(value ? value : "")) ? MOPT_E_NOMEM
                                                                                                   : MOPT_OK;
}

mopt_status mopt_report_artifact(mopt_report *r, const char *kind, const char *path) {
    json_t *s = section(r);
    if (!s) return MOPT_E_NOMEM;
    return json_array_append_new(json_object_get(s, "artifacts"), json_pack("{s:s, s:s}", "kind", kind, "path", path))
               ? MOPT_E_NOMEM
               : MOPT_OK;
}

mopt_status mopt_report_series(mopt_report *r, const char *key, const double *v, int64_t n) {
    json_t *s = section(r);
    if (!s) return MOPT_E_NOMEM;
    json_t *series = json_object_get(s, "series");
    if (!series) {
        series = json_object();
        json_object_set_new(s, "series", series);
    }
    json_t *arr = json_array();
    for (int64_t i = 0; arr && i < n; i++) json_array_append_new(arr, isfinite(v[i]) ? json_real(v[i]) : json_null());
    return arr && !json_object_set_new(series, key, arr) ? MOPT_OK : MOPT_E_NOMEM;
}

mopt_status mopt_report_gate(mopt_report *r, const char *metric, const char *op, double threshold, double value,
                             int32_t passed) {
    json_t *gates = json_object_get(r->root, "gates");
    if (!gates) {
        gates = json_array();
        json_object_set_new(r->root, "gates", gates);
    }
    json_t *g = json_pack("{s:s, s:s, s:f, s:o, s:b}", "metric", metric, "op", op, "threshold", threshold, "value",
                          isfinite(value) ? json_real(value) : json_null(), "passed", passed);
    if (!g || json_array_append_new(gates, g)) return MOPT_E_NOMEM;
    if (!passed) json_object_set_new(r->root, "gates_status", json_string("failed"));
    else if (!json_object_get(r->root, "gates_status")) json_object_set_new(r->root, "gates_status", json_string("ok"));
    return MOPT_OK;
}

int32_t mopt_report_gates_ok(const mopt_report *r) {
    json_t *g = json_object_get(r->root, "gates_status");
    return !g || strcmp(json_string_value(g), "failed") != 0;
}

json_t *mopt_report_root(const mopt_report *r) { return r->root; }

double mopt_report_get_metric(const mopt_report *r, const char *key) {
    json_t *passes = json_object_get(r->root, "passes");
    for (size_t i = json_array_size(passes); i-- > 0;) {
        json_t *s = json_array_get(passes, i);
        if (strcmp(json_string_value(json_object_get(s, "status")), "failed") == 0) continue;
        json_t *v = json_object_get(json_object_get(s, "metrics"), key);
        if (json_is_number(v)) return json_number_value(v);
    }
    return NAN;
}

int32_t mopt_report_ok(const mopt_report *r) {
    return strcmp(json_string_value(json_object_get(r->root, "status")), "ok") == 0;
}

char *mopt_report_json(const mopt_report *r) {
    return json_dumps(r->root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
}
