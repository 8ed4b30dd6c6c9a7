/* Pass options: raw key=value settings, and their validation against a
 * pass's schema (types, ranges, choices, required, defaults). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "pass_ctx.h"
#include "mopt/pass.h"

typedef struct opt_val {
    char *key;
    uint32_t type; /* raw: the source type; validated: the spec's type */
    int set;
    int64_t i;
    double f;
    char *s;
    char **items;
    int32_t n_items;
} opt_val;

struct mopt_options {
    opt_val *v;
    int32_t n;
    size_t cap;
    const mopt_pass_desc *pass; /* NULL for raw settings */
};

const char *mopt_opt_type_name(mopt_opt_type t) {
    static const char *const names[] = {"bool", "int", "float", "string", "enum", "list", "model", "dataset"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

const char *mopt_pass_kind_name(mopt_pass_kind k) {
    static const char *const names[] = {"transform", "analysis", "export"};
    return (unsigned)k < 3 ? names[k] : "?";
}

mopt_options *mopt_options_new(void) { return calloc(1, sizeof(mopt_options)); }

static void val_clear(opt_val *v) {
    free(v->key);
    free(v->s);
    for (int32_t k = 0; k < v->n_items; k++) free(v->items[k]);
    free(v->items);
}

void mopt_options_free(mopt_options *o) {
    if (!o) return;
    for (int32_t i = 0; i < o->n; i++) val_clear(&o->v[i]);
    free(o->v);
    free(o);
}

static opt_val *find(const mopt_options *o, const char *key) {
    for (int32_t i = 0; o && i < o->n; i++)
        if (strcmp(o->v[i].key, key) == 0) return &o->v[i];
    return NULL;
}

static opt_val *slot(mopt_options *o, const char *key) {
    opt_val *v = find(o, key);
    if (v) {
        free(v->s);
        v->s = NULL;
        return v;
    }
    if (!mopt_grow((void **)&o->v, &o->cap, (size_t)o->n + 1, sizeof *o->v)) return NULL;
    v = &o->v[o->n];
    memset(v, 0, sizeof *v);
    v->key = strdup(key);
    if (!v->key) return NULL;
    o->n++;
    return v;
}

mopt_status mopt_options_set_typed(mopt_options *o, const char *key, mopt_opt_type type, int64_t i, double f,
                                   const char *s, mopt_error *err) {
    if (!key || !*key) return MOPT_FAIL(err, MOPT_E_INVALID, "option with an empty name");
    opt_val *v = slot(o, key);
    if (!v) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    v->type = type;
    v->set = 1;
    v->i = i;
    v->f = f;
    if (s && !(v->s = strdup(s))) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    return MOPT_OK;
}

mopt_status mopt_options_set(mopt_options *o, const char *key, const char *value, mopt_error *err) {
    return mopt_options_set_typed(o, key, MOPT_OPT_STRING, 0, 0, value ? value : "", err);
}

/* --- validation --------------------------------------------------------------- */

static int parse_bool(const char *s, int64_t *out) {
    static const char *const t[] = {"true", "1", "yes", "on"}, *const f[] = {"false", "0", "no", "off"};
    for (int k = 0; k < 4; k++) {
        if (!strcasecmp(s, t[k])) return (*out = 1), 1;
        if (!strcasecmp(s, f[k])) return (*out = 0), 1;
    }
    return 0;
}

static int parse_int(const char *s, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno) return 0;
    *out = v;
    return 1;
}

static int parse_float(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v)) return 0;
    *out = v;
    return 1;
}

static mopt_status split_list(opt_val *d, const char *s, mopt_error *err) {
    for (const char *p = s; *p;) {
        const char *c = strchr(p, ',');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        char **ni = realloc(d->items, (size_t)(d->n_items + 1) * sizeof *ni);
        if (!ni) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        d->items = ni;
        if (!(d->items[d->n_items] = strndup(p, n))) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        d->n_items++;
        p += n + (c ? 1 : 0);
        if (!c) break;
    }
    return MOPT_OK;
}

/* Converts raw value r (or the default text) into d for spec sp. */
static mopt_status convert(const mopt_pass_desc *pass, const mopt_opt_spec *sp, const opt_val *r, const char *text,
                           opt_val *d, mopt_error *err) {
    const char *what = mopt_opt_type_name((mopt_opt_type)sp->type);
    char shown[128];
    if (text)
        snprintf(shown, sizeof shown, "'%s'", text);
    else if (r->type == MOPT_OPT_BOOL)
        snprintf(shown, sizeof shown, "%s", r->i ? "true" : "false");
    else if (r->type == MOPT_OPT_INT)
        snprintf(shown, sizeof shown, "%lld", (long long)r->i);
    else
        snprintf(shown, sizeof shown, "%g", r->f);
    d->type = sp->type;
    d->set = 1;
    switch (sp->type) {
    case MOPT_OPT_BOOL:
        if (text ? !parse_bool(text, &d->i) : !(r->type == MOPT_OPT_BOOL || (r->type == MOPT_OPT_INT && (r->i == 0 || r->i == 1))))
            return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' expects a bool, got %s", pass->name, sp->name, shown);
        if (!text) d->i = r->i;
        return MOPT_OK;
    case MOPT_OPT_INT:
        if (text) {
            if (!parse_int(text, &d->i))
                return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' expects an int, got %s", pass->name, sp->name, shown);
        } else if (r->type == MOPT_OPT_INT) {
            d->i = r->i;
        } else if (r->type == MOPT_OPT_FLOAT && r->f == floor(r->f) && fabs(r->f) < 9e18) {
            d->i = (int64_t)r->f;
        } else {
            return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' expects an int, got %s", pass->name, sp->name, shown);
        }
        if (sp->min <= sp->max && (d->i < sp->min || d->i > sp->max))
            return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' = %lld is out of range [%g, %g]", pass->name,
                             sp->name, (long long)d->i, sp->min, sp->max);
        d->f = (double)d->i;
        return MOPT_OK;
    case MOPT_OPT_FLOAT:
        if (text) {
            if (!parse_float(text, &d->f))
                return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' expects a float, got %s", pass->name, sp->name, shown);
        } else if (r->type == MOPT_OPT_INT || r->type == MOPT_OPT_FLOAT) {
            d->f = r->type == MOPT_OPT_INT ? (double)r->i : r->f;
        } else {
            return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' expects a float, got %s", pass->name, sp->name, shown);
        }
        if (sp->min <= sp->max && (d->f < sp->min || d->f > sp->max))
            return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' = %g is out of range [%g, %g]", pass->name,
                             sp->name, d->f, sp->min, sp->max);
        return MOPT_OK;
    default:
        break;
    }
    /* string-like types take text only */
    if (!text)
        return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' expects a %s, got %s", pass->name, sp->name, what, shown);
    if (sp->type == MOPT_OPT_ENUM) {
        int ok = 0;
        char list[256] = "";
        for (const char *const *c = sp->choices; c && *c; c++) {
            ok |= strcmp(*c, text) == 0;
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", c == sp->choices ? "" : ", ", *c);
        }
        if (!ok)
            return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' must be one of {%s}, got %s", pass->name,
                             sp->name, list, shown);
    }
    if (sp->type == MOPT_OPT_LIST) {
        mopt_status st = split_list(d, text, err);
        if (st) return st;
    }
    if ((sp->type == MOPT_OPT_MODEL || sp->type == MOPT_OPT_DATASET) && !*text)
        return MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: option '%s' needs a path", pass->name, sp->name);
    if (!(d->s = strdup(text))) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    return MOPT_OK;
}

/* A plugin's schema is data from a shared object: every field is checked once,
 * when the plugin loads, so option handling never meets a NULL or a bad count. */
mopt_status mopt_pass_desc_check(const mopt_pass_desc *pass, mopt_error *err) {
    if (pass->kind > MOPT_PASS_EXPORT) return MOPT_FAIL(err, MOPT_E_ABI, "pass %s: kind %u is not transform, analysis or export", pass->name, pass->kind);
    if (pass->n_opts && !pass->opts) return MOPT_FAIL(err, MOPT_E_ABI, "pass %s: n_opts is %u but opts is NULL", pass->name, pass->n_opts);
    if (pass->n_opts > MOPT_MAX_PASS_OPTS) return MOPT_FAIL(err, MOPT_E_ABI, "pass %s: %u options (at most %d)", pass->name, pass->n_opts, MOPT_MAX_PASS_OPTS);
    for (uint32_t k = 0; k < pass->n_opts; k++) {
        const mopt_opt_spec *sp = &pass->opts[k];
        if (!sp->name || !*sp->name || strlen(sp->name) > 64)
            return MOPT_FAIL(err, MOPT_E_ABI, "pass %s: option %u has no name (or one over 64 bytes)", pass->name, k);
        for (uint32_t j = 0; j < k; j++)
            if (!strcmp(pass->opts[j].name, sp->name)) return MOPT_FAIL(err, MOPT_E_ABI, "pass %s: option '%s' is declared twice", pass->name, sp->name);
        if (sp->type > MOPT_OPT_DATASET) return MOPT_FAIL(err, MOPT_E_ABI, "pass %s: option '%s' has unknown type %u", pass->name, sp->name, sp->type);
        if (sp->type == MOPT_OPT_ENUM) {
            int n = 0;
            for (const char *const *c = sp->choices; c && *c && n <= 64; c++) n++;
            if (n == 0 || n > 64) return MOPT_FAIL(err, MOPT_E_ABI, "pass %s: enum option '%s' needs 1..64 choices", pass->name, sp->name);
        }
        if (sp->default_value) { /* a default the schema itself rejects would fail every run */
            opt_val d = {0};
            mopt_error e = {0};
            mopt_status st = convert(pass, sp, NULL, sp->default_value, &d, &e);
            val_clear(&d);
            if (st) return MOPT_FAIL(err, MOPT_E_ABI, "%s (its own default)", e.msg);
        }
    }
    return MOPT_OK;
}

mopt_options *mopt_options_validate(const mopt_pass_desc *pass, const mopt_options *raw, mopt_error *err) {
    /* unknown keys first, listing the valid ones */
    for (int32_t i = 0; raw && i < raw->n; i++) {
        int known = 0;
        for (uint32_t k = 0; k < pass->n_opts; k++) known |= strcmp(pass->opts[k].name, raw->v[i].key) == 0;
        if (!known) {
            char list[400] = "";
            for (uint32_t k = 0; k < pass->n_opts; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", pass->opts[k].name);
            MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: unknown option '%s' (valid: %s)", pass->name, raw->v[i].key,
                      pass->n_opts ? list : "none");
            return NULL;
        }
    }
    mopt_options *o = calloc(1, sizeof *o);
    if (!o || !(o->v = calloc(pass->n_opts ? pass->n_opts : 1, sizeof *o->v))) {
        free(o);
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    o->pass = pass;
    o->cap = (int32_t)pass->n_opts;
    for (uint32_t k = 0; k < pass->n_opts; k++) {
        const mopt_opt_spec *sp = &pass->opts[k];
        opt_val *d = &o->v[o->n++];
        d->key = strdup(sp->name);
        d->type = sp->type;
        if (!d->key) {
            MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            goto fail;
        }
        const opt_val *r = find(raw, sp->name);
        mopt_status st = MOPT_OK;
        if (r) {
            const char *text = (r->type == MOPT_OPT_STRING) ? r->s : NULL;
            char num[64];
            /* numbers given for string-like options become their text */
            if (!text && sp->type != MOPT_OPT_BOOL && sp->type != MOPT_OPT_INT && sp->type != MOPT_OPT_FLOAT) {
                if (r->type == MOPT_OPT_INT) snprintf(num, sizeof num, "%lld", (long long)r->i);
                else if (r->type == MOPT_OPT_FLOAT) snprintf(num, sizeof num, "%.17g", r->f);
                else snprintf(num, sizeof num, "%s", r->i ? "true" : "false");
                text = num;
            }
            st = convert(pass, sp, r, text, d, err);
        } else if (sp->default_value) {
            st = convert(pass, sp, NULL, sp->default_value, d, err);
        } else if (sp->flags & MOPT_OPT_REQUIRED) {
            MOPT_FAIL(err, MOPT_E_INVALID, "pass %s: missing required option '%s' (%s)", pass->name, sp->name,
                      sp->doc ? sp->doc : mopt_opt_type_name((mopt_opt_type)sp->type));
            goto fail;
        } else {
            d->set = 0;
        }
        if (st) goto fail;
    }
    return o;
fail:
    mopt_options_free(o);
    return NULL;
}

/* --- getters ------------------------------------------------------------------ */

int64_t mopt_options_int(const mopt_options *o, const char *name) {
    const opt_val *v = find(o, name);
    return v && v->set ? v->i : 0;
}

double mopt_options_float(const mopt_options *o, const char *name) {
    const opt_val *v = find(o, name);
    return v && v->set ? v->f : 0.0;
}

int32_t mopt_options_bool(const mopt_options *o, const char *name) {
    const opt_val *v = find(o, name);
    return v && v->set ? (int32_t)v->i : 0;
}

const char *mopt_options_string(const mopt_options *o, const char *name) {
    const opt_val *v = find(o, name);
    return v && v->set ? v->s : NULL;
}

int32_t mopt_options_list_len(const mopt_options *o, const char *name) {
    const opt_val *v = find(o, name);
    return v && v->set ? v->n_items : 0;
}

const char *mopt_options_list_item(const mopt_options *o, const char *name, int32_t i) {
    const opt_val *v = find(o, name);
    return v && v->set && i >= 0 && i < v->n_items ? v->items[i] : NULL;
}

int32_t mopt_options_is_set(const mopt_options *o, const char *name) {
    const opt_val *v = find(o, name);
    return v && v->set;
}

const char *mopt_options_str(const mopt_options *o, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (int32_t i = 0; o && i < o->n && n < cap; i++) {
        const opt_val *v = &o->v[i];
        if (!v->set) continue;
        const char *sep = n ? ";" : "";
        int w;
        switch (v->type) {
        case MOPT_OPT_BOOL: w = snprintf(buf + n, cap - n, "%s%s=%s", sep, v->key, v->i ? "true" : "false"); break;
        case MOPT_OPT_INT: w = snprintf(buf + n, cap - n, "%s%s=%lld", sep, v->key, (long long)v->i); break;
        case MOPT_OPT_FLOAT: w = snprintf(buf + n, cap - n, "%s%s=%g", sep, v->key, v->f); break;
        default: w = snprintf(buf + n, cap - n, "%s%s=%s", sep, v->key, v->s ? v->s : ""); break;
        }
        if (w < 0) break;
        n += (size_t)w;
    }
    return buf;
}
