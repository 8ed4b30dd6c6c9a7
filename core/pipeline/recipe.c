/* Per-layer quantization recipes (mopt_pipeline_add_recipe in
 * mopt/pipeline.h): a JSON object from name globs (several joined by '|') to a quant pass or "keep",
 * turned into one pass per entry whose `only` is the entry's glob and whose
 * `exclude` holds every later glob, so each linear takes the last entry that
 * matches it, as ModelOpt's quant_cfg does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "json_util.h"
#include "mopt/pipeline.h"
#include "strbuf.h"

/* A key is one glob or several joined by '|'; it must not hold the pipeline text's own separators. */
static int glob_ok(const char *g) { return *g && !strpbrk(g, ";,<>=") && g[0] != '|' && g[strlen(g) - 1] != '|' && !strstr(g, "||"); }

/* Appends key's globs as a list option value: '|' becomes the list's ','. */
static void put_globs(sbuf *b, const char *key) {
    for (const char *k = key; *k; k++) sb_printf(b, "%c", *k == '|' ? ',' : *k);
}

/* Appends the pass `spec` ("quant.NAME" or "quant.NAME<k=v;...>") with only=`only` (NULL: every linear) and
 * exclude= the globs of entries[from..n). */
static mopt_status add_entry(mopt_pipeline *p, const char *source, const char *key, const char *spec, const char *only,
                             const char *const *globs, size_t from, size_t n, mopt_error *err) {
    if (strncmp(spec, "quant.", 6) || strstr(spec, "only=") || strstr(spec, "exclude="))
        return MOPT_FAIL(err, MOPT_E_INVALID,
                         "%s: \"%s\": \"%s\" is not a quant pass or \"keep\" (e.g. \"quant.rtn<bits=4;group_size=128>\"; the "
                         "recipe sets only and exclude itself)",
                         source, key, spec);
    sbuf b = {0};
    const char *lt = strchr(spec, '<');
    const size_t name_len = lt ? (size_t)(lt - spec) : strlen(spec);
    sb_printf(&b, "%.*s<", (int)name_len, spec);
    if (lt) {
        const size_t inner = strlen(lt + 1);
        if (!inner || lt[inner] != '>') {
            free(b.s);
            return MOPT_FAIL(err, MOPT_E_INVALID, "%s: \"%s\": \"%s\" has no closing '>'", source, key, spec);
        }
        if (inner > 1) sb_printf(&b, "%.*s;", (int)(inner - 1), lt + 1);
    }
    if (only) {
        sb_printf(&b, "only=");
        put_globs(&b, only);
        sb_printf(&b, ";");
    }
    sb_printf(&b, "exclude=");
    for (size_t i = from; i < n; i++) {
        if (i > from) sb_printf(&b, ",");
        put_globs(&b, globs[i]);
    }
    sb_printf(&b, ">");
    mopt_status st = b.oom ? MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory") : mopt_pipeline_parse(p, b.s, err);
    free(b.s);
    return st;
}

mopt_status mopt_pipeline_add_recipe(mopt_pipeline *p, const char *json_text, const char *source, mopt_error *err) {
    if (!source) source = "recipe";
    json_t *j = mopt_json_load_buffer(source, json_text, strlen(json_text), err);
    if (!j) return err ? (mopt_status)err->code : MOPT_E_FORMAT;
    mopt_status st = MOPT_OK;
    const size_t n = json_is_object(j) ? json_object_size(j) : 0;
    const char **globs = calloc(n + 1, sizeof *globs), **specs = calloc(n + 1, sizeof *specs);
    const char *dflt = NULL, *key;
    size_t ng = 0;
    json_t *v;
    if (!json_is_object(j) || !n)
        st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: a recipe is a JSON object from name globs (and \"default\") to a quant pass or \"keep\"",
                       source);
    else if (!globs || !specs)
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    json_object_foreach(j, key, v) {
        if (st) break;
        if (!json_is_string(v)) {
            st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: \"%s\" must map to a quant pass (\"quant.NAME<...>\") or \"keep\"", source, key);
        } else if (!strcmp(key, "default")) {
            dflt = json_string_value(v);
        } else if (!glob_ok(key)) {
            st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: \"%s\" is not a usable glob (no ; , < > = in names; join several with |)", source, key);
        } else {
            globs[ng] = key;
            specs[ng++] = json_string_value(v);
        }
    }
    /* the default first (every linear no glob matches), then the entries in order, each minus the later ones */
    if (!st && dflt && strcmp(dflt, "keep")) st = add_entry(p, source, "default", dflt, NULL, globs, 0, ng, err);
    for (size_t i = 0; i < ng && !st; i++)
        if (strcmp(specs[i], "keep")) st = add_entry(p, source, globs[i], specs[i], globs[i], globs, i + 1, ng, err);
    free(globs);
    free(specs);
    json_decref(j);
    return st;
}
