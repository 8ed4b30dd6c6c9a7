/* jansson wrappers that turn parse failures and missing keys into one-line
 * errors naming the file, line and column or the key. */
#ifndef MOPT_JSON_UTIL_H
#define MOPT_JSON_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "mopt/error.h"

/* Parses a JSON file; returns a new reference or NULL with err set. */
json_t *mopt_json_load_file(const char *path, mopt_error *err);
/* Parses len bytes of JSON; `what` names the source in messages. */
json_t *mopt_json_load_buffer(const char *what, const char *data, size_t len, mopt_error *err);

/* Typed getters: return false (and set err, naming file and key) when the key
 * is missing or has the wrong type. The _opt variants keep *out untouched and
 * return true when the key is absent or null. */
bool mopt_json_get_int(const json_t *obj, const char *key, int64_t *out, const char *file, mopt_error *err);
bool mopt_json_get_int_opt(const json_t *obj, const char *key, int64_t *out, const char *file, mopt_error *err);
bool mopt_json_get_num_opt(const json_t *obj, const char *key, double *out, const char *file, mopt_error *err);
bool mopt_json_get_bool_opt(const json_t *obj, const char *key, bool *out, const char *file, mopt_error *err);
/* Borrowed string; *out untouched when absent or null (give it a default or
 * NULL first); sets err and returns false on a non-string. */
bool mopt_json_get_str_opt(const json_t *obj, const char *key, const char **out, const char *file, mopt_error *err);

/* j as the JSON files mopt writes hold it: two-space indents, keys in insertion
 * order, 10 significant digits; with a final newline when asked (malloc'd). */
char *mopt_json_dump_text(const json_t *j, int newline);

#endif
