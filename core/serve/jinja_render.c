/* Rendering a parsed Jinja template: values are jansson values with Python's
 * meaning (truthiness, str(), ==, +, slices by character), NULL is jinja2's
 * Undefined, and a loop body gets its own scope as in jinja2 (use a
 * namespace() to carry values out). Work and output are bounded, since the
 * template comes from a downloaded checkpoint. */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jinja_impl.h"
#include "strbuf.h"

enum { MAX_SCOPES = 128, MAX_NAMESPACES = 64, MAX_MACROS = 64, MAX_RANGE = 100000, MAX_VALUE_DEPTH = 64 };
static const long MAX_STEPS = 2 * 1000 * 1000; /* a chat of 1024 messages takes some 50,000 */
static const size_t MAX_OUTPUT = 16u << 20;

typedef struct rctx {
    const json_t *vars;
    json_t *scopes[MAX_SCOPES];
    int nscopes;
    int base; /* inside a macro, its own scope: the caller's scopes below it are hidden, the template's (0) is not */
    struct {
        const char *name;
        const js *def;
        int level; /* the scope it was defined in: it goes when that scope does */
    } macros[MAX_MACROS];
    int nmacros;
    json_t *ns[MAX_NAMESPACES]; /* namespace() objects: the only ones `set x.y` may change */
    int nns;
    sbuf out;
    char *msg;
    size_t cap;
    bool failed;
    long steps;
    int ctl; /* 1: break, 2: continue */
} rctx;

static json_t *rerr(rctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static json_t *rerr(rctx *c, int line, const char *fmt, ...) {
    if (c->failed) return NULL;
    c->failed = true;
    int k = snprintf(c->msg, c->cap, "chat template line %d: ", line);
    if (k < 0 || (size_t)k >= c->cap) return NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg + k, c->cap - (size_t)k, fmt, ap);
    va_end(ap);
    for (char *m = c->msg; *m; m++)
        if ((unsigned char)*m < 0x20) *m = ' '; /* one line, whatever the template raised */
    return NULL;
}

/* ---- Python semantics ----------------------------------------------------- */

static bool truthy(const json_t *v) {
    if (!v) return false;
    switch (json_typeof(v)) {
    case JSON_OBJECT: return json_object_size(v) > 0;
    case JSON_ARRAY: return json_array_size(v) > 0;
    case JSON_STRING: return json_string_length(v) > 0;
    case JSON_INTEGER: return json_integer_value(v) != 0;
    case JSON_REAL: return json_real_value(v) != 0;
    case JSON_TRUE: return true;
    default: return false;
    }
}

static const char *type_name(const json_t *v) {
    if (!v) return "undefined";
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "dict";
    case JSON_ARRAY: return "list";
    case JSON_STRING: return "str";
    case JSON_INTEGER: return "int";
    case JSON_REAL: return "float";
    case JSON_TRUE:
    case JSON_FALSE: return "bool";
    default: return "NoneType";
    }
}

static bool is_num(const json_t *v) { return v && (json_is_integer(v) || json_is_real(v) || json_is_boolean(v)); }
static double num(const json_t *v) { return json_is_boolean(v) ? json_is_true(v) : json_number_value(v); }
static bool is_int(const json_t *v) { return v && (json_is_integer(v) || json_is_boolean(v)); }
static long long int_of(const json_t *v) { return json_is_boolean(v) ? json_is_true(v) : json_integer_value(v); }

/* Python's repr of a float: the shortest digits that read back the same. */
static void put_float(sbuf *b, double x) {
    if (isnan(x)) return sb_printf(b, "nan");
    if (isinf(x)) return sb_printf(b, x > 0 ? "inf" : "-inf");
    char buf[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    const bool exp = strchr(buf, 'e') != NULL;
    if (exp) { /* Python writes 1e-05 and 1e+16 as C does, but with at least two exponent digits, as C does too */
        sb_printf(b, "%s", buf);
    } else {
        sb_printf(b, "%s%s", buf, strchr(buf, '.') || strstr(buf, "inf") ? "" : ".0");
    }
}

static void put_repr(sbuf *b, const json_t *v);

static void put_str(sbuf *b, const json_t *v) {
    if (!v) return;
    switch (json_typeof(v)) {
    case JSON_STRING: sb_put(b, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: sb_printf(b, "%lld", (long long)json_integer_value(v)); break;
    case JSON_REAL: put_float(b, json_real_value(v)); break;
    case JSON_TRUE: sb_printf(b, "True"); break;
    case JSON_FALSE: sb_printf(b, "False"); break;
    case JSON_NULL: sb_printf(b, "None"); break;
    default: put_repr(b, v); break;
    }
}

static void put_repr(sbuf *b, const json_t *v) {
    if (!v) return;
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        const size_t n = json_string_length(v);
        const char q = memchr(s, '\'', n) && !memchr(s, '"', n) ? '"' : '\'';
        sb_put(b, &q, 1);
        for (size_t i = 0; i < n; i++) {
            const unsigned char ch = (unsigned char)s[i];
            if (ch == '\\' || ch == (unsigned char)q) sb_printf(b, "\\%c", ch);
            else if (ch == '\n') sb_printf(b, "\\n");
            else if (ch == '\t') sb_printf(b, "\\t");
            else if (ch == '\r') sb_printf(b, "\\r");
            else if (ch < 0x20 || ch == 0x7f) sb_printf(b, "\\x%02x", ch);
            else sb_put(b, &s[i], 1);
        }
        sb_put(b, &q, 1);
    } else if (json_is_array(v)) {
        sb_printf(b, "[");
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) sb_printf(b, ", ");
            put_repr(b, json_array_get(v, i));
        }
        sb_printf(b, "]");
    } else if (json_is_object(v)) {
        sb_printf(b, "{");
        const char *k;
        json_t *x;
        size_t i = 0;
        json_object_foreach((json_t *)v, k, x) {
            if (i++) sb_printf(b, ", ");
            json_t *ks = json_string(k);
            put_repr(b, ks);
            json_decref(ks);
            sb_printf(b, ": ");
            put_repr(b, x);
        }
        sb_printf(b, "}");
    } else {
        put_str(b, v);
    }
}

/* str(v) as a new string value. */
static json_t *to_string(const json_t *v) {
    if (v && json_is_string(v)) return json_incref((json_t *)v);
    sbuf b = {0};
    put_str(&b, v);
    json_t *s = b.oom ? NULL : json_stringn_nocheck(b.s ? b.s : "", b.n);
    free(b.s);
    return s;
}

static bool equal(const json_t *a, const json_t *b) {
    if (!a || !b) return !a && !b;
    if (is_num(a) && is_num(b)) return num(a) == num(b);
    return json_equal((json_t *)a, (json_t *)b);
}

/* How many bytes str() or tojson of v may write (an upper bound, about), and
 * how deep it nests: a template can build values of values in a loop, so
 * every use that walks a value is bounded first. The walk is charged to the
 * step budget; it stops early once over `limit` bytes or MAX_VALUE_DEPTH. */
static size_t value_size(rctx *c, const json_t *v, int depth, size_t limit, bool *too_deep) {
    c->steps++;
    if (depth > MAX_VALUE_DEPTH) {
        *too_deep = true;
        return limit + 1;
    }
    if (!v) return 0;
    if (json_is_string(v)) return 2 * json_string_length(v) + 2; /* escapes at most double it */
    if (!json_is_array(v) && !json_is_object(v)) return 32;
    size_t n = 2;
    const char *k;
    json_t *x;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v) && n <= limit; i++) n += 2 + value_size(c, json_array_get(v, i), depth + 1, limit, too_deep);
    } else {
        json_object_foreach((json_t *)v, k, x) {
            n += 4 + 2 * strlen(k) + value_size(c, x, depth + 1, limit, too_deep);
            if (n > limit) break;
        }
    }
    return n;
}

/* NULL when v may be written out (str, repr, tojson) or nested in another value; else the reason. */
static const char *too_big(rctx *c, const json_t *v) {
    bool deep = false;
    if (!v || (!json_is_array(v) && !json_is_object(v))) return NULL;
    const size_t n = value_size(c, v, 1, MAX_OUTPUT, &deep);
    return deep ? "values nested too deeply" : n > MAX_OUTPUT ? "a value too large to write out" : NULL;
}

/* ---- UTF-8: strings index and slice by character, as Python's do ---------- */

static size_t utf8_len(const char *s, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += ((unsigned char)s[i] & 0xc0) != 0x80;
    return k;
}

/* Byte offset of character `ch` (ch <= length). */
static size_t utf8_offset(const char *s, size_t n, size_t ch) {
    size_t i = 0;
    for (size_t k = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xc0) != 0x80 && k++ == ch) return i;
    }
    return n;
}

/* A string's characters as a list of strings. */
static json_t *chars_of(const json_t *v) {
    json_t *out = json_array();
    const char *p = json_string_value(v);
    const size_t n = json_string_length(v);
    for (size_t i = 0, j; out && i < n; i = j) {
        for (j = i + 1; j < n && ((unsigned char)p[j] & 0xc0) == 0x80;) j++;
        json_array_append_new(out, json_stringn_nocheck(p + i, j - i));
    }
    return out;
}

/* ---- scopes --------------------------------------------------------------- */

static json_t *lookup(rctx *c, const char *name) {
    for (int i = c->nscopes - 1; i >= c->base; i--) {
        json_t *v = json_object_get(c->scopes[i], name);
        if (v) return json_incref(v);
    }
    json_t *v = c->base > 0 ? json_object_get(c->scopes[0], name) : NULL;
    if (!v) v = json_object_get(c->vars, name);
    return v ? json_incref(v) : NULL;
}

static bool push_scope(rctx *c, int line) {
    if (c->nscopes == MAX_SCOPES) return rerr(c, line, "loops or macro calls nested too deeply"), false;
    if (!(c->scopes[c->nscopes] = json_object())) return rerr(c, line, "out of memory"), false;
    c->nscopes++;
    return true;
}

static void pop_scope(rctx *c) {
    json_decref(c->scopes[--c->nscopes]);
    while (c->nmacros && c->macros[c->nmacros - 1].level >= c->nscopes) c->nmacros--;
}

/* The macro a call names: the latest defined in a scope still open. */
static const js *find_macro(const rctx *c, const char *name) {
    for (int i = c->nmacros - 1; i >= 0; i--)
        if (!strcmp(c->macros[i].name, name)) return c->macros[i].def;
    return NULL;
}

static bool is_namespace(const rctx *c, const json_t *v) {
    for (int i = 0; i < c->nns; i++)
        if (c->ns[i] == v) return true;
    return false;
}

/* ---- expressions ---------------------------------------------------------- */

static json_t *eval(rctx *c, const jx *x);

/* Evaluated arguments: positional first; keyword ones looked up by name. */
typedef struct args {
    json_t *v[8];
    const char *kw[8];
    int n;
} args;

static bool eval_args(rctx *c, const jx *x, args *a) {
    a->n = 0;
    if (x->nargs > 8) return rerr(c, x->line, "too many arguments"), false;
    for (int i = 0; i < x->nargs; i++) {
        a->v[i] = eval(c, x->args[i]);
        a->kw[i] = x->kw ? x->kw[i] : NULL;
        a->n = i + 1;
        if (c->failed) return false;
    }
    return true;
}

static void free_args(args *a) {
    for (int i = 0; i < a->n; i++) json_decref(a->v[i]);
    a->n = 0;
}

/* Positional argument i (-1: none), or the keyword argument `kw`; NULL when absent. */
static json_t *arg(const args *a, int i, const char *kw) {
    for (int k = 0; kw && k < a->n; k++)
        if (a->kw[k] && !strcmp(a->kw[k], kw)) return a->v[k];
    int pos = 0;
    for (int k = 0; k < a->n; k++)
        if (!a->kw[k] && pos++ == i) return a->v[k];
    return NULL;
}

static json_t *new_str(rctx *c, int line, const char *s, size_t n) {
    json_t *v = json_stringn_nocheck(s, n);
    return v ? v : rerr(c, line, "out of memory");
}

/* strip/lstrip/rstrip: Python's whitespace, or the characters given. */
static json_t *strip(rctx *c, int line, const json_t *s, const json_t *chars, bool left, bool right) {
    const char *p = json_string_value(s), *set = chars && json_is_string(chars) ? json_string_value(chars) : NULL;
    size_t a = 0, b = json_string_length(s);
    if (chars && !json_is_string(chars) && !json_is_null(chars)) return rerr(c, line, "strip takes a string");
#define STRIPPABLE(ch) (set ? strchr(set, (ch)) != NULL && (ch) != 0 : strchr(" \t\n\r\f\v", (ch)) != NULL && (ch) != 0)
    while (left && a < b && STRIPPABLE(p[a])) a++;
    while (right && b > a && STRIPPABLE(p[b - 1])) b--;
#undef STRIPPABLE
    return new_str(c, line, p + a, b - a);
}

static json_t *case_map(rctx *c, int line, const json_t *s, int how) { /* 0 lower, 1 upper, 2 capitalize, 3 title */
    const size_t n = json_string_length(s);
    char *o = malloc(n + 1);
    if (!o) return rerr(c, line, "out of memory");
    memcpy(o, json_string_value(s), n);
    bool start = true;
    for (size_t i = 0; i < n; i++) { /* ASCII letters only: enough for role names and the like */
        const char ch = o[i];
        const bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
        const bool up = how == 1 || ((how == 2 && i == 0) || (how == 3 && start));
        if (alpha) o[i] = up ? (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch) : (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        start = how == 3 ? !alpha && !(ch & 0x80) : false;
    }
    json_t *v = new_str(c, line, o, n);
    free(o);
    return v;
}

static json_t *replace(rctx *c, int line, const json_t *s, const json_t *from, const json_t *to, const json_t *count) {
    if (!from || !to || !json_is_string(from) || !json_is_string(to)) return rerr(c, line, "replace takes two strings");
    const char *p = json_string_value(s), *f = json_string_value(from);
    const size_t n = json_string_length(s), fn = json_string_length(from);
    long long left = count && is_int(count) ? int_of(count) : -1;
    sbuf b = {0};
    size_t i = 0;
    for (;;) {
        const char *hit = NULL; /* an empty `from` matches before every character and at the end, as in Python */
        if (left != 0) hit = fn ? (i < n ? memmem(p + i, n - i, f, fn) : NULL) : (i <= n ? p + i : NULL);
        if (!hit) break;
        sb_put(&b, p + i, (size_t)(hit - (p + i)));
        sb_put(&b, json_string_value(to), json_string_length(to));
        if (left > 0) left--;
        if (!fn) {
            if (hit < p + n) sb_put(&b, hit, 1);
            i = (size_t)(hit - p) + 1;
        } else {
            i = (size_t)(hit - p) + fn;
        }
        if (b.n > MAX_OUTPUT) break;
    }
    if (i < n) sb_put(&b, p + i, n - i);
    json_t *v = b.oom || b.n > MAX_OUTPUT ? rerr(c, line, "replace made too long a string") : new_str(c, line, b.s ? b.s : "", b.n);
    free(b.s);
    return v;
}

static json_t *split(rctx *c, int line, const json_t *s, const json_t *sep) {
    json_t *out = json_array();
    if (!out) return rerr(c, line, "out of memory");
    const char *p = json_string_value(s);
    const size_t n = json_string_length(s);
    if (sep && !json_is_null(sep)) {
        if (!json_is_string(sep) || !json_string_length(sep)) return json_decref(out), rerr(c, line, "split takes a non-empty string");
        const char *f = json_string_value(sep);
        const size_t fn = json_string_length(sep);
        size_t i = 0;
        for (const char *hit; (hit = memmem(p + i, n - i, f, fn)); i = (size_t)(hit - p) + fn)
            json_array_append_new(out, json_stringn_nocheck(p + i, (size_t)(hit - p) - i));
        json_array_append_new(out, json_stringn_nocheck(p + i, n - i));
    } else {
        for (size_t i = 0; i < n;) {
            while (i < n && strchr(" \t\n\r\f\v", p[i])) i++;
            size_t j = i;
            while (j < n && !strchr(" \t\n\r\f\v", p[j])) j++;
            if (j > i) json_array_append_new(out, json_stringn_nocheck(p + i, j - i));
            i = j;
        }
    }
    return out;
}

static json_t *tojson(rctx *c, int line, const json_t *v, const json_t *indent) {
    if (!v) return rerr(c, line, "tojson of an undefined value");
    if (too_big(c, v)) return rerr(c, line, "%s", too_big(c, v));
    size_t flags = JSON_ENCODE_ANY | JSON_PRESERVE_ORDER;
    if (indent && is_int(indent) && int_of(indent) > 0) flags |= JSON_INDENT(int_of(indent) > 31 ? 31 : int_of(indent));
    char *s = json_dumps(v, flags);
    if (!s) return rerr(c, line, "out of memory");
    json_t *r = new_str(c, line, s, strlen(s));
    free(s);
    return r;
}

/* A method of a string or a dict: v.name(args). */
static json_t *method(rctx *c, const jx *x, json_t *self, const char *name, const args *a) {
    const int line = x->line;
    if (self && json_is_string(self)) {
        if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip"))
            return strip(c, line, self, arg(a, 0, "chars"), name[0] != 'r', name[0] != 'l');
        if (!strcmp(name, "lower")) return case_map(c, line, self, 0);
        if (!strcmp(name, "upper")) return case_map(c, line, self, 1);
        if (!strcmp(name, "capitalize")) return case_map(c, line, self, 2);
        if (!strcmp(name, "title")) return case_map(c, line, self, 3);
        if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
            json_t *p = arg(a, 0, NULL);
            if (!p || (!json_is_string(p) && !json_is_array(p))) return rerr(c, line, "%s takes a string", name);
            const size_t n = json_string_length(self);
            for (size_t i = 0; i < (json_is_array(p) ? json_array_size(p) : 1); i++) {
                const json_t *q = json_is_array(p) ? json_array_get(p, i) : p;
                if (!json_is_string(q)) return rerr(c, line, "%s takes strings", name);
                const size_t m = json_string_length(q);
                const char *s = json_string_value(self);
                if (m <= n && !memcmp(name[0] == 's' ? s : s + n - m, json_string_value(q), m)) return json_true();
            }
            return json_false();
        }
        if (!strcmp(name, "split")) return split(c, line, self, arg(a, 0, "sep"));
        if (!strcmp(name, "replace")) return replace(c, line, self, arg(a, 0, NULL), arg(a, 1, NULL), arg(a, 2, NULL));
        if (!strcmp(name, "join")) {
            json_t *l = arg(a, 0, NULL);
            if (!l || !json_is_array(l)) return rerr(c, line, "join takes a list");
            if (too_big(c, l)) return rerr(c, line, "%s", too_big(c, l));
            sbuf b = {0};
            for (size_t i = 0; i < json_array_size(l); i++) {
                if (i) sb_put(&b, json_string_value(self), json_string_length(self));
                put_str(&b, json_array_get(l, i));
            }
            json_t *v = b.oom ? rerr(c, line, "out of memory") : new_str(c, line, b.s ? b.s : "", b.n);
            free(b.s);
            return v;
        }
    }
    if (self && json_is_object(self)) {
        if (too_big(c, self)) return rerr(c, line, "%s", too_big(c, self));
        if (!strcmp(name, "get")) {
            json_t *k = arg(a, 0, NULL), *d = arg(a, 1, NULL);
            json_t *v = k && json_is_string(k) ? json_object_get(self, json_string_value(k)) : NULL;
            return json_incref(v ? v : d ? d : json_null());
        }
        if (!strcmp(name, "items") || !strcmp(name, "keys") || !strcmp(name, "values")) {
            json_t *out = json_array();
            const char *k;
            json_t *v;
            json_object_foreach(self, k, v) {
                json_t *key = json_string(k);
                if (name[0] == 'k') json_array_append_new(out, key);
                else if (name[0] == 'v') json_array_append(out, v), json_decref(key);
                else json_array_append_new(out, json_pack("[oO]", key, v));
            }
            return out;
        }
    }
    return rerr(c, line, "%s has no method '%s' that mopt's chat templates support", type_name(self), name);
}

/* A global function: name(args). */
static json_t *call_global(rctx *c, const jx *x, const char *name, const args *a) {
    const int line = x->line;
    if (!strcmp(name, "raise_exception")) {
        json_t *m = arg(a, 0, NULL);
        sbuf b = {0};
        put_str(&b, m);
        rerr(c, line, "%s", b.s ? b.s : "raise_exception()");
        free(b.s);
        return NULL;
    }
    if (!strcmp(name, "namespace") || !strcmp(name, "dict")) {
        json_t *o = json_object();
        if (!o) return rerr(c, line, "out of memory");
        for (int i = 0; i < a->n; i++) {
            if (!a->kw[i]) return json_decref(o), rerr(c, line, "%s() takes keyword arguments", name);
            if (too_big(c, a->v[i])) return json_decref(o), rerr(c, line, "%s", too_big(c, a->v[i]));
            json_object_set(o, a->kw[i], a->v[i] ? a->v[i] : json_null());
        }
        if (name[0] == 'n') {
            if (c->nns == MAX_NAMESPACES) return json_decref(o), rerr(c, line, "too many namespaces");
            c->ns[c->nns++] = json_incref(o);
        }
        return o;
    }
    if (!strcmp(name, "range")) {
        long long lo = 0, hi, step = 1;
        for (int i = 0; i < a->n; i++)
            if (!is_int(a->v[i])) return rerr(c, line, "range takes integers");
        if (a->n == 1) hi = int_of(a->v[0]);
        else if (a->n == 2 || a->n == 3) lo = int_of(a->v[0]), hi = int_of(a->v[1]), step = a->n == 3 ? int_of(a->v[2]) : 1;
        else return rerr(c, line, "range takes 1 to 3 arguments");
        if (step == 0) return rerr(c, line, "range's step must not be zero");
        json_t *out = json_array();
        for (long long i = lo; step > 0 ? i < hi : i > hi;) {
            if (json_array_size(out) >= MAX_RANGE) return json_decref(out), rerr(c, line, "range of more than %d numbers", MAX_RANGE);
            json_array_append_new(out, json_integer(i));
            if (__builtin_add_overflow(i, step, &i)) break; /* past the end of 64 bits is past hi */
        }
        return out;
    }
    if (!strcmp(name, "strftime_now")) {
        json_t *f = arg(a, 0, NULL);
        if (!f || !json_is_string(f)) return rerr(c, line, "strftime_now takes a format string");
        char buf[256];
        const time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        const size_t n = strftime(buf, sizeof buf, json_string_value(f), &tm);
        return new_str(c, line, buf, n);
    }
    return rerr(c, line, "'%s' is not a function mopt's chat templates support", name);
}

/* Sequence index i (negative from the end) into [0, n], clamped as a slice bound. */
static long long clamp_bound(long long i, long long n, long long lo, long long hi) {
    if (i < 0) i += n;
    return i < lo ? lo : i > hi ? hi : i;
}

static json_t *slice(rctx *c, const jx *x, json_t *v) {
    long long b[3] = {0, 0, 1};
    bool given[3] = {false, false, false};
    for (int i = 0; i < 3; i++) {
        if (!x->s[i]) continue;
        json_t *e = eval(c, x->s[i]);
        if (c->failed) return NULL;
        if (e && !json_is_null(e)) {
            if (!is_int(e)) return json_decref(e), rerr(c, x->line, "slice indices must be integers");
            b[i] = int_of(e), given[i] = true;
        }
        json_decref(e);
    }
    if (b[2] == 0) return rerr(c, x->line, "slice step cannot be zero");
    const bool str = json_is_string(v);
    if (!str && !json_is_array(v)) return rerr(c, x->line, "cannot slice a %s", type_name(v));
    const long long n = str ? (long long)utf8_len(json_string_value(v), json_string_length(v)) : (long long)json_array_size(v);
    long long lo, hi;
    if (b[2] > 0) {
        lo = given[0] ? clamp_bound(b[0], n, 0, n) : 0;
        hi = given[1] ? clamp_bound(b[1], n, 0, n) : n;
    } else {
        lo = given[0] ? clamp_bound(b[0], n, -1, n - 1) : n - 1;
        hi = given[1] ? clamp_bound(b[1], n, -1, n - 1) : -1;
    }
    if (str && b[2] == 1) {
        const char *s = json_string_value(v);
        const size_t bytes = json_string_length(v);
        if (hi < lo) hi = lo;
        const size_t o0 = utf8_offset(s, bytes, (size_t)lo), o1 = utf8_offset(s, bytes, (size_t)hi);
        return new_str(c, x->line, s + o0, o1 - o0);
    }
    json_t *out = str ? NULL : json_array();
    sbuf sb = {0};
    for (long long i = lo; b[2] > 0 ? i < hi : i > hi; i += b[2]) {
        if (str) {
            const char *s = json_string_value(v);
            const size_t bytes = json_string_length(v);
            const size_t o0 = utf8_offset(s, bytes, (size_t)i), o1 = utf8_offset(s, bytes, (size_t)i + 1);
            sb_put(&sb, s + o0, o1 - o0);
        } else {
            json_array_append(out, json_array_get(v, (size_t)i));
        }
    }
    if (str) {
        out = new_str(c, x->line, sb.s ? sb.s : "", sb.n);
        free(sb.s);
    }
    return out;
}

static json_t *subscript(rctx *c, int line, json_t *v, json_t *k) {
    if (!v) return rerr(c, line, "a subscript of an undefined value");
    if (json_is_object(v)) {
        if (!k || !json_is_string(k)) return NULL;
        json_t *r = json_object_get(v, json_string_value(k));
        return r ? json_incref(r) : NULL;
    }
    if (json_is_array(v) || json_is_string(v)) {
        if (!is_int(k)) return rerr(c, line, "%s indices must be integers", type_name(v));
        const bool str = json_is_string(v);
        const long long n = str ? (long long)utf8_len(json_string_value(v), json_string_length(v)) : (long long)json_array_size(v);
        long long i = int_of(k);
        if (i < 0) i += n;
        if (i < 0 || i >= n) return NULL; /* undefined, as jinja2's sandbox makes it */
        if (!str) return json_incref(json_array_get(v, (size_t)i));
        const char *s = json_string_value(v);
        const size_t o0 = utf8_offset(s, json_string_length(v), (size_t)i), o1 = utf8_offset(s, json_string_length(v), (size_t)i + 1);
        return new_str(c, line, s + o0, o1 - o0);
    }
    return NULL; /* None and numbers have no items: undefined, as in jinja2 */
}

static json_t *length_of(rctx *c, int line, const json_t *v) {
    if (v && json_is_string(v)) return json_integer((json_int_t)utf8_len(json_string_value(v), json_string_length(v)));
    if (v && json_is_array(v)) return json_integer((json_int_t)json_array_size(v));
    if (v && json_is_object(v)) return json_integer((json_int_t)json_object_size(v));
    return rerr(c, line, "object of type '%s' has no length", type_name(v));
}

/* Python's `v in o` for a list or a mapping. */
static bool contains(const json_t *o, const json_t *v) {
    if (o && json_is_array(o)) {
        for (size_t i = 0; i < json_array_size(o); i++)
            if (equal(v, json_array_get(o, i))) return true;
        return false;
    }
    return o && json_is_object(o) && v && json_is_string(v) && json_object_get(o, json_string_value(v));
}

static bool apply_test(rctx *c, const jx *x, const char *name, const json_t *v, const args *a, bool *out) {
    const json_t *o = arg(a, 0, NULL);
    if (!strcmp(name, "defined")) *out = v != NULL;
    else if (!strcmp(name, "undefined")) *out = v == NULL;
    else if (!strcmp(name, "none")) *out = v && json_is_null(v);
    else if (!strcmp(name, "string")) *out = v && json_is_string(v);
    else if (!strcmp(name, "number")) *out = v && (json_is_number(v));
    else if (!strcmp(name, "integer")) *out = v && json_is_integer(v);
    else if (!strcmp(name, "float")) *out = v && json_is_real(v);
    else if (!strcmp(name, "boolean")) *out = v && json_is_boolean(v);
    else if (!strcmp(name, "true")) *out = v && json_is_true(v);
    else if (!strcmp(name, "false")) *out = v && json_is_false(v);
    else if (!strcmp(name, "mapping")) *out = v && json_is_object(v);
    else if (!strcmp(name, "sequence")) *out = v && (json_is_array(v) || json_is_string(v) || json_is_object(v));
    else if (!strcmp(name, "iterable")) *out = v && (json_is_array(v) || json_is_string(v) || json_is_object(v));
    else if (!strcmp(name, "odd") || !strcmp(name, "even")) {
        if (!is_int(v)) return rerr(c, x->line, "'%s' tests an integer", name), false;
        *out = (int_of(v) % 2 != 0) == (name[0] == 'o');
    } else if (!strcmp(name, "divisibleby")) {
        if (!is_int(v) || !is_int(o) || !int_of(o)) return rerr(c, x->line, "'divisibleby' tests integers"), false;
        *out = int_of(v) % int_of(o) == 0;
    } else if (!strcmp(name, "equalto") || !strcmp(name, "eq") || !strcmp(name, "==")) *out = equal(v, o);
    else if (!strcmp(name, "ne") || !strcmp(name, "!=")) *out = !equal(v, o);
    else if (!strcmp(name, "sameas")) /* Python's `is`: singletons, and the small integers it caches */
        *out = v && o &&
               (v == o || (json_typeof(v) == json_typeof(o) && (json_is_boolean(v) || json_is_null(v))) ||
                (json_is_integer(v) && json_is_integer(o) && json_integer_value(v) == json_integer_value(o) &&
                 json_integer_value(v) >= -5 && json_integer_value(v) <= 256));
    else if (!strcmp(name, "in")) *out = contains(o, v);
    else return rerr(c, x->line, "'%s' is not a test mopt's chat templates support", name), false;
    return true;
}

/* select/reject/selectattr/rejectattr and map(attribute=...). */
static json_t *apply_filter(rctx *c, const jx *x, const char *name, json_t *v, const args *a);

/* map('filter', args...): the filter applied to each item. */
static json_t *map_filter(rctx *c, const jx *x, json_t *v, const args *a) {
    const json_t *fname = arg(a, 0, NULL);
    if (!fname || !json_is_string(fname)) return rerr(c, x->line, "'map' needs attribute= or a filter name");
    args rest = {0};
    for (int i = 0, pos = 0; i < a->n && rest.n < 8; i++) /* the filter's own arguments: all but its name */
        if (a->kw[i] || pos++ > 0) rest.v[rest.n] = a->v[i], rest.kw[rest.n++] = a->kw[i];
    json_t *out = json_array();
    for (size_t i = 0; out && i < json_array_size(v); i++) {
        json_t *r = apply_filter(c, x, json_string_value(fname), json_array_get(v, i), &rest);
        if (c->failed) return json_decref(out), NULL;
        json_array_append_new(out, r ? r : json_null());
    }
    return out ? out : rerr(c, x->line, "out of memory");
}

static json_t *filter_seq(rctx *c, const jx *x, const char *name, json_t *v, const args *a) {
    if (!v || !json_is_array(v)) return rerr(c, x->line, "'%s' filters a list", name);
    if (!strcmp(name, "map") && !arg(a, -1, "attribute")) return map_filter(c, x, v, a);
    const bool attr = strstr(name, "attr") != NULL, map = !strcmp(name, "map"), reject = name[0] == 'r';
    json_t *out = json_array();
    args targs = {0};
    const json_t *test = arg(a, attr ? 1 : 0, NULL);
    const json_t *key = map ? arg(a, -1, "attribute") : attr ? arg(a, 0, NULL) : NULL;
    if ((attr || map) && (!key || !json_is_string(key))) return json_decref(out), rerr(c, x->line, "'%s' needs an attribute name", name);
    if (test && !json_is_string(test)) return json_decref(out), rerr(c, x->line, "'%s' takes a test name", name);
    for (int i = attr ? 2 : 1, k = 0; i < a->n && k < 8; i++)
        if (!a->kw[i]) targs.v[k] = a->v[i], targs.n = ++k;
    for (size_t i = 0; i < json_array_size(v); i++) {
        json_t *item = json_array_get(v, i);
        json_t *val = key ? (json_is_object(item) ? json_object_get(item, json_string_value(key)) : NULL) : item;
        if (map) {
            json_t *d = arg(a, -1, "default");
            json_array_append(out, val ? val : d ? d : json_null());
            continue;
        }
        bool keep;
        if (test) {
            if (!apply_test(c, x, json_string_value(test), val, &targs, &keep)) return json_decref(out), NULL;
        } else {
            keep = truthy(val);
        }
        if (keep != reject) json_array_append(out, item);
    }
    return out;
}

static json_t *apply_filter(rctx *c, const jx *x, const char *name, json_t *v, const args *a) {
    const int line = x->line;
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        json_t *d = arg(a, 0, "default_value"), *b = arg(a, 1, "boolean");
        const bool use = !v || (truthy(b) && !truthy(v));
        return use ? (d ? json_incref(d) : json_string("")) : json_incref(v);
    }
    if (!strcmp(name, "tojson")) return tojson(c, line, v, arg(a, 0, "indent"));
    if (too_big(c, v)) return rerr(c, line, "%s", too_big(c, v)); /* every filter below may copy or nest v */
    if (!strcmp(name, "string")) return to_string(v);
    if (!strcmp(name, "length") || !strcmp(name, "count")) return length_of(c, line, v);
    if (!strcmp(name, "list")) {
        if (v && json_is_array(v)) return json_incref(v);
        if (v && json_is_string(v)) return chars_of(v);
        if (v && json_is_object(v)) {
            args none = {0};
            return method(c, x, v, "keys", &none);
        }
        return rerr(c, line, "'%s' cannot be made a list", type_name(v));
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        if (!v || !json_is_array(v)) return rerr(c, line, "'%s' takes a list", name);
        const size_t n = json_array_size(v);
        return n ? json_incref(json_array_get(v, name[0] == 'f' ? 0 : n - 1)) : NULL;
    }
    if (!strcmp(name, "reverse")) {
        if (!v || (!json_is_array(v) && !json_is_string(v))) return rerr(c, line, "'reverse' takes a list or a string");
        jx minus = {.kind = X_LIT, .line = line}, rev = {.kind = X_SLICE, .line = line};
        minus.lit = json_integer(-1);
        rev.s[2] = &minus;
        json_t *r = slice(c, &rev, v);
        json_decref(minus.lit);
        return r;
    }
    if (!strcmp(name, "join")) {
        if (!v || !json_is_array(v)) return rerr(c, line, "'join' takes a list");
        json_t *sep = arg(a, 0, "d");
        json_t *self = sep && json_is_string(sep) ? json_incref(sep) : json_string("");
        json_t *key = arg(a, 1, "attribute");
        json_t *items = v;
        if (key) {
            args m = {.v = {key}, .kw = {"attribute"}, .n = 1};
            items = filter_seq(c, x, "map", v, &m);
            if (!items) return json_decref(self), NULL;
        } else {
            json_incref(items);
        }
        args one = {.v = {items}, .n = 1};
        json_t *r = method(c, x, self, "join", &one);
        json_decref(items);
        json_decref(self);
        return r;
    }
    if (!strcmp(name, "int")) {
        if (is_int(v)) return json_integer(int_of(v));
        if (is_num(v) && fabs(num(v)) < 9.2e18) return json_integer((json_int_t)num(v));
        if (v && json_is_string(v)) return json_integer(strtoll(json_string_value(v), NULL, 10)); /* saturates */
        json_t *d = arg(a, 0, "default");
        return d ? json_incref(d) : json_integer(0);
    }
    if (!strcmp(name, "abs")) {
        if (!is_num(v)) return rerr(c, line, "'abs' takes a number");
        if (json_is_real(v)) return json_real(fabs(num(v)));
        return int_of(v) == LLONG_MIN ? rerr(c, line, "integer overflow in abs") : json_integer(llabs(int_of(v)));
    }
    if (!strcmp(name, "select") || !strcmp(name, "reject") || !strcmp(name, "selectattr") || !strcmp(name, "rejectattr") ||
        !strcmp(name, "map"))
        return filter_seq(c, x, name, v, a);
    if (!strcmp(name, "items")) {
        if (!v || !json_is_object(v)) return rerr(c, line, "'items' takes a mapping");
        return method(c, x, v, "items", a);
    }
    if (v && json_is_string(v)) {
        if (!strcmp(name, "trim")) return strip(c, line, v, arg(a, 0, "chars"), true, true);
        if (!strcmp(name, "lower")) return case_map(c, line, v, 0);
        if (!strcmp(name, "upper")) return case_map(c, line, v, 1);
        if (!strcmp(name, "capitalize")) return case_map(c, line, v, 2);
        if (!strcmp(name, "title")) return case_map(c, line, v, 3);
        if (!strcmp(name, "replace")) return replace(c, line, v, arg(a, 0, NULL), arg(a, 1, NULL), arg(a, 2, "count"));
    }
    return rerr(c, line, "filter '%s' on a %s is not something mopt's chat templates support", name, type_name(v));
}

static json_t *binop(rctx *c, const jx *x, json_t *a, json_t *b) {
    const char *op = x->name;
    const int line = x->line;
    const char *why = too_big(c, a) ? too_big(c, a) : too_big(c, b);
    if (why) return rerr(c, line, "%s", why);
    if ((!strcmp(op, "~") || !strcmp(op, "+")) && a && b && json_is_string(a) && json_is_string(b)) {
        const size_t n = json_string_length(a) + json_string_length(b);
        c->steps += (long)(n / 64); /* copying is work too */
        if (n > MAX_OUTPUT) return rerr(c, line, "a string longer than 16 MiB");
    }
    if (!strcmp(op, "~")) {
        sbuf s = {0};
        put_str(&s, a);
        put_str(&s, b);
        json_t *r = s.oom ? rerr(c, line, "out of memory") : new_str(c, line, s.s ? s.s : "", s.n);
        free(s.s);
        return r;
    }
    if (!strcmp(op, "==")) return json_boolean(equal(a, b));
    if (!strcmp(op, "!=")) return json_boolean(!equal(a, b));
    if (!strcmp(op, "in") || !strcmp(op, "not in")) {
        bool found = false;
        if (b && json_is_string(b)) {
            if (!a || !json_is_string(a)) return rerr(c, line, "'in <string>' needs a string on the left");
            found = memmem(json_string_value(b), json_string_length(b), json_string_value(a), json_string_length(a)) != NULL ||
                    json_string_length(a) == 0;
        } else if (b && (json_is_array(b) || json_is_object(b))) {
            found = contains(b, a);
        } else if (b) {
            return rerr(c, line, "argument of type '%s' is not iterable", type_name(b));
        }
        return json_boolean(found != (op[0] == 'n'));
    }
    if (!a || !b) return rerr(c, line, "'%s' on an undefined value", op);
    if (op[0] == '<' || op[0] == '>') {
        int cmp;
        if (is_num(a) && is_num(b)) cmp = num(a) < num(b) ? -1 : num(a) > num(b);
        else if (json_is_string(a) && json_is_string(b)) cmp = strcmp(json_string_value(a), json_string_value(b));
        else return rerr(c, line, "'%s' not supported between '%s' and '%s'", op, type_name(a), type_name(b));
        const bool r = op[0] == '<' ? (op[1] ? cmp <= 0 : cmp < 0) : (op[1] ? cmp >= 0 : cmp > 0);
        return json_boolean(r);
    }
    if (!strcmp(op, "+") && json_is_string(a) && json_is_string(b)) {
        sbuf s = {0};
        sb_put(&s, json_string_value(a), json_string_length(a));
        sb_put(&s, json_string_value(b), json_string_length(b));
        json_t *r = s.oom ? rerr(c, line, "out of memory") : new_str(c, line, s.s ? s.s : "", s.n);
        free(s.s);
        return r;
    }
    if (!strcmp(op, "+") && json_is_array(a) && json_is_array(b)) {
        c->steps += (long)(json_array_size(a) + json_array_size(b));
        if (json_array_size(a) + json_array_size(b) > MAX_RANGE * 10) return rerr(c, line, "a list of more than a million items");
        json_t *r = json_copy(a);
        json_array_extend(r, b);
        return r;
    }
    if (!is_num(a) || !is_num(b))
        return rerr(c, line, "unsupported operand types for %s: '%s' and '%s'", op, type_name(a), type_name(b));
    const bool ints = is_int(a) && is_int(b);
    const long long i = int_of(a), j = int_of(b);
    const double p = num(a), q = num(b);
    long long r; /* Python's integers do not overflow; these are 64 bits and say so */
    if (ints && (!strcmp(op, "+") || !strcmp(op, "-") || !strcmp(op, "*"))) {
        const bool over = op[0] == '+' ? __builtin_add_overflow(i, j, &r) : op[0] == '-' ? __builtin_sub_overflow(i, j, &r)
                                                                                       : __builtin_mul_overflow(i, j, &r);
        return over ? rerr(c, line, "integer overflow in %s", op) : json_integer(r);
    }
    if (!strcmp(op, "+")) return json_real(p + q);
    if (!strcmp(op, "-")) return json_real(p - q);
    if (!strcmp(op, "*")) return json_real(p * q);
    if (!strcmp(op, "**")) {
        if (!ints || j < 0) return json_real(pow(p, q));
        const double x = pow((double)i, (double)j);
        if (!(fabs(x) < 9.2e18)) return rerr(c, line, "integer overflow in **");
        return json_integer((json_int_t)llround(x));
    }
    if (q == 0) return rerr(c, line, "division by zero");
    if (ints && i == LLONG_MIN && j == -1) return rerr(c, line, "integer overflow in %s", op);
    if (!strcmp(op, "/")) return json_real(p / q);
    if (!strcmp(op, "//")) {
        if (!ints) return json_real(floor(p / q));
        long long d = i / j;
        if ((i % j != 0) && ((i < 0) != (j < 0))) d--;
        return json_integer(d);
    }
    if (!strcmp(op, "%")) {
        if (!ints) return json_real(p - q * floor(p / q));
        long long m = i % j;
        if (m != 0 && ((m < 0) != (j < 0))) m += j;
        return json_integer(m);
    }
    return rerr(c, line, "unknown operator '%s'", op);
}

static json_t *call_macro(rctx *c, const jx *x, const js *m, const args *a);

static json_t *eval(rctx *c, const jx *x) {
    if (c->failed) return NULL;
    if (++c->steps > MAX_STEPS) return rerr(c, x->line, "the template ran for too long");
    switch (x->kind) {
    case X_LIT: return json_incref(x->lit);
    case X_NAME: return lookup(c, x->name);
    case X_ATTR: {
        json_t *v = eval(c, x->a);
        if (c->failed) return NULL;
        if (!v) return rerr(c, x->line, "'%s' of an undefined value", x->name);
        json_t *r = json_is_object(v) ? json_object_get(v, x->name) : NULL;
        if (r) json_incref(r);
        json_decref(v);
        return r;
    }
    case X_INDEX: {
        json_t *v = eval(c, x->a), *k = v ? eval(c, x->b) : NULL;
        json_t *r = c->failed ? NULL : subscript(c, x->line, v, k);
        json_decref(v);
        json_decref(k);
        return r;
    }
    case X_SLICE: {
        json_t *v = eval(c, x->a);
        json_t *r = c->failed ? NULL : v ? slice(c, x, v) : rerr(c, x->line, "a slice of an undefined value");
        json_decref(v);
        return r;
    }
    case X_CALL: {
        args a = {0};
        json_t *self = NULL, *r = NULL;
        if (x->a->kind == X_ATTR) {
            self = eval(c, x->a->a);
            if (!c->failed && eval_args(c, x, &a)) r = method(c, x, self, x->a->name, &a);
            free_args(&a);
            json_decref(self);
            return r;
        }
        if (x->a->kind != X_NAME) return rerr(c, x->line, "only functions and methods can be called");
        const js *m = find_macro(c, x->a->name);
        if (eval_args(c, x, &a)) r = m ? call_macro(c, x, m, &a) : call_global(c, x, x->a->name, &a);
        free_args(&a);
        return r;
    }
    case X_FILTER:
    case X_TEST: {
        json_t *v = eval(c, x->a), *r = NULL;
        args a = {0};
        if (!c->failed && eval_args(c, x, &a)) {
            if (x->kind == X_FILTER) {
                r = apply_filter(c, x, x->name, v, &a);
            } else {
                bool t;
                if (apply_test(c, x, x->name, v, &a, &t)) r = json_boolean(t != x->negate);
            }
        }
        free_args(&a);
        json_decref(v);
        return r;
    }
    case X_NOT: {
        json_t *v = eval(c, x->a);
        const bool t = truthy(v);
        json_decref(v);
        return c->failed ? NULL : json_boolean(!t);
    }
    case X_NEG: {
        json_t *v = eval(c, x->a);
        json_t *r = c->failed ? NULL
                    : !is_num(v) ? rerr(c, x->line, "bad operand type for unary -: '%s'", type_name(v))
                    : is_int(v) && int_of(v) == LLONG_MIN ? rerr(c, x->line, "integer overflow in -")
                    : is_int(v)  ? json_integer(-int_of(v))
                                 : json_real(-num(v));
        json_decref(v);
        return r;
    }
    case X_AND:
    case X_OR: {
        json_t *a = eval(c, x->a);
        if (c->failed) return NULL;
        if (truthy(a) == (x->kind == X_OR)) return a;
        json_decref(a);
        return eval(c, x->b);
    }
    case X_BIN: {
        json_t *a = eval(c, x->a), *b = c->failed ? NULL : eval(c, x->b);
        json_t *r = c->failed ? NULL : binop(c, x, a, b);
        json_decref(a);
        json_decref(b);
        return r;
    }
    case X_COND: {
        json_t *cond = eval(c, x->b);
        const bool t = truthy(cond);
        json_decref(cond);
        if (c->failed) return NULL;
        return t ? eval(c, x->a) : x->c ? eval(c, x->c) : NULL;
    }
    case X_LIST:
    case X_DICT: {
        json_t *out = x->kind == X_LIST ? json_array() : json_object();
        if (!out) return rerr(c, x->line, "out of memory");
        for (int i = 0; i < x->nargs; i += x->kind == X_LIST ? 1 : 2) {
            json_t *k = eval(c, x->args[i]), *v = x->kind == X_DICT && !c->failed ? eval(c, x->args[i + 1]) : NULL;
            if (c->failed) {
                json_decref(k), json_decref(v), json_decref(out);
                return NULL;
            }
            const char *why = too_big(c, k) ? too_big(c, k) : too_big(c, v);
            if (why) {
                json_decref(k), json_decref(v), json_decref(out);
                return rerr(c, x->line, "%s", why);
            }
            if (x->kind == X_LIST) {
                json_array_append_new(out, k ? k : json_null());
            } else {
                if (!k || !json_is_string(k)) {
                    json_decref(k), json_decref(v), json_decref(out);
                    return rerr(c, x->line, "dict keys must be strings");
                }
                json_object_set_new(out, json_string_value(k), v ? v : json_null());
                json_decref(k);
            }
        }
        return out;
    }
    }
    return rerr(c, x->line, "unknown expression");
}

/* ---- statements ----------------------------------------------------------- */

static bool run(rctx *c, const jbody *b);

static bool emit(rctx *c, int line, const char *s, size_t n) {
    sb_put(&c->out, s, n);
    if (c->out.oom) return rerr(c, line, "out of memory"), false;
    if (c->out.n > MAX_OUTPUT) return rerr(c, line, "the template wrote more than 16 MiB"), false;
    return true;
}

static bool assign(rctx *c, const char *name, json_t *v) {
    return json_object_set_new(c->scopes[c->nscopes - 1], name, v ? v : json_null()) == 0;
}

/* The loop variables of one item, in a new scope (jinja2 gives every iteration its own). */
static bool bind_item(rctx *c, const js *s, json_t *item) {
    if (!push_scope(c, s->line)) return false;
    if (s->nvar == 1) return assign(c, s->var[0], json_incref(item));
    if (!json_is_array(item) || json_array_size(item) != 2)
        return rerr(c, s->line, "cannot unpack a %s into two loop variables", type_name(item)), false;
    return assign(c, s->var[0], json_incref(json_array_get(item, 0))) && assign(c, s->var[1], json_incref(json_array_get(item, 1)));
}

static bool run_for(rctx *c, const js *s) {
    json_t *seq = eval(c, s->x);
    if (c->failed) return false;
    json_t *items;
    if (!seq) {
        items = json_array(); /* iterating an undefined value gives nothing, as in jinja2 */
    } else if (json_is_array(seq)) {
        items = json_incref(seq);
    } else if (json_is_object(seq)) {
        args none = {0};
        items = method(c, &(jx){.line = s->line}, seq, "keys", &none);
    } else if (json_is_string(seq)) {
        items = chars_of(seq);
    } else {
        rerr(c, s->line, "'%s' object is not iterable", type_name(seq));
        json_decref(seq);
        return false;
    }
    json_decref(seq);
    if (!items) return rerr(c, s->line, "out of memory"), false;
    bool ok = true;
    if (s->filter) { /* `for x in xs if cond`: loop.* counts what passed */
        json_t *kept = json_array();
        for (size_t i = 0; ok && kept && i < json_array_size(items); i++) {
            json_t *item = json_array_get(items, i);
            const int depth = c->nscopes;
            json_t *t = bind_item(c, s, item) ? eval(c, s->filter) : NULL;
            while (c->nscopes > depth) pop_scope(c);
            if (c->failed) ok = false;
            else if (truthy(t)) json_array_append(kept, item);
            json_decref(t);
        }
        json_decref(items);
        if (!(items = kept)) return rerr(c, s->line, "out of memory"), false;
    }
    const size_t n = json_array_size(items);
    for (size_t i = 0; ok && i < n; i++) {
        const int depth = c->nscopes;
        json_t *loop = json_pack("{sIsIsIsIsbsbsIsOsO}", "index", (json_int_t)i + 1, "index0", (json_int_t)i, "revindex",
                                 (json_int_t)(n - i), "revindex0", (json_int_t)(n - i - 1), "first", i == 0, "last", i + 1 == n,
                                 "length", (json_int_t)n, "previtem", i ? json_array_get(items, i - 1) : json_null(),
                                 "nextitem", i + 1 < n ? json_array_get(items, i + 1) : json_null());
        if (!loop) ok = (rerr(c, s->line, "out of memory"), false);
        else if (!bind_item(c, s, json_array_get(items, i))) ok = (json_decref(loop), false);
        else if (!assign(c, "loop", loop)) ok = (rerr(c, s->line, "out of memory"), false);
        else if (++c->steps > MAX_STEPS) ok = (rerr(c, s->line, "the template ran for too long"), false);
        else ok = run(c, &s->body);
        while (c->nscopes > depth) pop_scope(c);
        const int ctl = c->ctl;
        c->ctl = 0;
        if (ctl == 1) break;
    }
    if (ok && n == 0 && s->else_body.n) ok = run(c, &s->else_body);
    json_decref(items);
    return ok && !c->failed;
}

/* Whether `target` is v or inside it (a reference cycle, which reference
 * counting never frees); deeper than values may nest counts as yes. */
static bool reaches(rctx *c, const json_t *v, const json_t *target, int depth) {
    c->steps++;
    if (!v) return false;
    if (v == target || depth > MAX_VALUE_DEPTH) return true;
    const char *k;
    json_t *x;
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            if (reaches(c, json_array_get(v, i), target, depth + 1)) return true;
    } else if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, x) if (reaches(c, x, target, depth + 1)) return true;
    }
    return false;
}

static bool run_set(rctx *c, const js *s) {
    json_t *v;
    if (s->x) {
        v = eval(c, s->x);
    } else { /* {% set name %}...{% endset %}: the body's text */
        sbuf saved = c->out;
        c->out = (sbuf){0};
        const bool ok = run(c, &s->body);
        v = ok ? json_stringn_nocheck(c->out.s ? c->out.s : "", c->out.n) : NULL;
        free(c->out.s);
        c->out = saved;
    }
    if (c->failed) return json_decref(v), false;
    if (!s->attr) return assign(c, s->target, v) ? true : (rerr(c, s->line, "out of memory"), false);
    json_t *ns = lookup(c, s->target);
    const bool ok = ns && is_namespace(c, ns), cycle = ok && reaches(c, v, ns, 0);
    if (ok && !cycle) json_object_set_new(ns, s->attr, v ? v : json_null());
    else json_decref(v);
    json_decref(ns);
    if (cycle) return rerr(c, s->line, "'set %s.%s' would make the namespace hold itself", s->target, s->attr), false;
    return ok ? true : (rerr(c, s->line, "'%s' is not a namespace(): 'set %s.%s' cannot change it", s->target, s->target, s->attr), false);
}

/* A macro's parameter j's name (a parameter with a default has it in kw, the default in args). */
static const char *param_name(const js *m, int j) { return m->x->kw[j] ? m->x->kw[j] : m->x->args[j]->name; }

/* name(args) of a {% macro %}: the text its body renders, in a scope of its own that sees its parameters, the
 * template's top-level names and the variables, not the caller's loop variables (as jinja2). A parameter neither
 * given nor defaulted is left unset, so it reads as a top-level name of the same name would (jinja2: undefined). */
static json_t *call_macro(rctx *c, const jx *x, const js *m, const args *a) {
    const int np = m->x->nargs;
    int npos = 0;
    for (int i = 0; i < a->n; i++) npos += !a->kw[i];
    if (npos > np) return rerr(c, x->line, "macro '%s' takes not more than %d argument(s)", m->target, np);
    for (int i = 0; i < a->n; i++) {
        if (!a->kw[i]) continue;
        int j = 0;
        while (j < np && strcmp(param_name(m, j), a->kw[i])) j++;
        if (j == np) return rerr(c, x->line, "macro '%s' takes no keyword argument '%s'", m->target, a->kw[i]);
        if (j < npos) return rerr(c, x->line, "macro '%s' got multiple values for argument '%s'", m->target, a->kw[i]);
    }
    const int base = c->base, depth = c->nscopes;
    if (!push_scope(c, x->line)) return NULL;
    c->base = c->nscopes - 1;
    bool ok = true;
    for (int j = 0; ok && j < np; j++) {
        json_t *v = j < npos ? json_incref(arg(a, j, NULL)) : json_incref(arg(a, -1, param_name(m, j)));
        const bool given = j < npos || v;
        if (!given && m->x->kw[j]) v = eval(c, m->x->args[j]);
        if (c->failed) ok = (json_decref(v), false);
        else if ((given || m->x->kw[j]) && !assign(c, param_name(m, j), v)) ok = (rerr(c, x->line, "out of memory"), false);
    }
    sbuf saved = c->out;
    c->out = (sbuf){0};
    ok = ok && run(c, &m->body);
    json_t *r = ok ? json_stringn_nocheck(c->out.s ? c->out.s : "", c->out.n) : NULL;
    free(c->out.s);
    c->out = saved;
    while (c->nscopes > depth) pop_scope(c);
    c->base = base;
    return r || c->failed ? r : rerr(c, x->line, "out of memory");
}

static bool run(rctx *c, const jbody *b) {
    for (int i = 0; i < b->n && !c->ctl; i++) {
        const js *s = b->v[i];
        if (++c->steps > MAX_STEPS) return rerr(c, s->line, "the template ran for too long"), false;
        switch (s->kind) {
        case S_TEXT:
            if (!emit(c, s->line, s->text, s->len)) return false;
            break;
        case S_OUT: {
            json_t *v = eval(c, s->x);
            if (c->failed) return false;
            const char *why = too_big(c, v);
            if (why) {
                json_decref(v);
                return rerr(c, s->line, "%s", why), false;
            }
            sbuf t = {0};
            put_str(&t, v);
            json_decref(v);
            const bool ok = !t.oom && emit(c, s->line, t.s ? t.s : "", t.n);
            free(t.s);
            if (!ok) return rerr(c, s->line, "out of memory"), false;
            break;
        }
        case S_IF:
            for (int k = 0; k < s->n; k++) {
                bool take = true;
                if (s->conds[k]) {
                    json_t *v = eval(c, s->conds[k]);
                    if (c->failed) return false;
                    take = truthy(v);
                    json_decref(v);
                }
                if (take) {
                    if (!run(c, &s->bodies[k])) return false;
                    break;
                }
            }
            break;
        case S_FOR:
            if (!run_for(c, s)) return false;
            break;
        case S_SET:
            if (!run_set(c, s)) return false;
            break;
        case S_MACRO: /* defined in the current scope; calls take the latest of a name (one defined again right after
                       * itself takes its entry's place) */
            if (c->nmacros && c->macros[c->nmacros - 1].level == c->nscopes - 1 && !strcmp(c->macros[c->nmacros - 1].name, s->target))
                c->nmacros--;
            if (c->nmacros == MAX_MACROS) return rerr(c, s->line, "more than %d macros", MAX_MACROS), false;
            c->macros[c->nmacros].name = s->target, c->macros[c->nmacros].def = s, c->macros[c->nmacros++].level = c->nscopes - 1;
            break;
        case S_BREAK: c->ctl = 1; break;
        case S_CONTINUE: c->ctl = 2; break;
        }
    }
    return !c->failed;
}

char *jinja_render(const jinja_template *t, const json_t *vars, char *msg, size_t cap) {
    rctx c = {.vars = vars, .msg = msg, .cap = cap};
    bool ok = push_scope(&c, 1) && run(&c, &t->top);
    while (c.nscopes) pop_scope(&c);
    for (int i = 0; i < c.nns; i++) json_decref(c.ns[i]);
    if (ok && c.out.oom) ok = (rerr(&c, 1, "out of memory"), false);
    if (!ok) {
        free(c.out.s);
        return NULL;
    }
    if (!c.out.s) return strdup("");
    return c.out.s;
}
