/* jansson wrappers with file/line/column errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "json_util.h"

json_t *mopt_json_load_buffer(const char *what, const char *data, size_t len, mopt_error *err) {
    json_error_t je;
    json_t *j = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!j) MOPT_FAIL(err, MOPT_E_FORMAT, "%s:%d:%d: malformed JSON: %s", what, je.line, je.column, je.text);
    return j;
}

json_t *mopt_json_load_file(const char *path, mopt_error *err) {
    char *data;
    size_t len;
    if (mopt_read_file(path, &data, &len, err) != MOPT_OK) return NULL;
    json_t *j = mopt_json_load_buffer(path, data, len, err);
    free(data);
    return j;
}

bool mopt_json_get_int_opt(const json_t *obj, const char *key, int64_t *out, const char *file, mopt_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return true;
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    /* transformers sometimes writes integral values as 1.0 */
    if (json_is_real(v) && json_real_value(v) == (double)(int64_t)json_real_value(v)) {
        *out = (int64_t)json_real_value(v);
        return true;
    }
    MOPT_FAIL(err, MOPT_E_FORMAT, "%s: key \"%s\" must be an integer", file, key);
    return false;
}

bool mopt_json_get_int(const json_t *obj, const char *key, int64_t *out, const char *file, mopt_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing key \"%s\"", file, key);
        return false;
    }
    return mopt_json_get_int_opt(obj, key, out, file, err);
}

static bool wrong_type(const char *file, const char *key, const char *what, mopt_error *err) {
    MOPT_FAIL(err, MOPT_E_FORMAT, "%s: key \"%s\" must be %s", file, key, what);
    return false;
}

/* absent or null keeps *out; a value of another type is an error */
bool mopt_json_get_num_opt(const json_t *obj, const char *key, double *out, const char *file, mopt_error *err) {
    json_t *v = json_object_get(obj, key);
    if (json_is_number(v)) *out = json_number_value(v);
    return !v || json_is_null(v) || json_is_number(v) || wrong_type(file, key, "a number", err);
}

bool mopt_json_get_bool_opt(const json_t *obj, const char *key, bool *out, const char *file, mopt_error *err) {
    json_t *v = json_object_get(obj, key);
    if (json_is_boolean(v)) *out = json_is_true(v);
    return !v || json_is_null(v) || json_is_boolean(v) || wrong_type(file, key, "true or false", err);
}

bool mopt_json_get_str_opt(const json_t *obj, const char *key, const char **out, const char *file, mopt_error *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return true; /* *out keeps its default, as the other _opt getters */
    if (!json_is_string(v)) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: key \"%s\" must be a string", file, key);
        return false;
    }
    *out = json_string_value(v);
    return true;
}

char *mopt_json_dump_text(const json_t *j, int newline) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    if (!text || !newline) return text;
    const size_t n = strlen(text);
    char *t = realloc(text, n + 2);
    if (!t) {
        free(text);
        return NULL;
    }
    t[n] = '\n';
    t[n + 1] = 0;
    return t;
}
