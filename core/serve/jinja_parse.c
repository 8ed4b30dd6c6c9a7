/* Jinja source to statements and expressions: the lexer applies jinja2's
 * whitespace rules (newlines normalized, one trailing newline dropped, `-`
 * on a tag strips the whitespace beside it, trim_blocks drops the newline
 * after a block or comment tag, lstrip_blocks drops the blanks before one on
 * its line) and a recursive-descent parser follows jinja2's precedence. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_impl.h"

enum { MAX_SOURCE = 1 << 20, MAX_DEPTH = 96 };

/* ---- arena ---------------------------------------------------------------- */

struct jarena_chunk {
    jarena_chunk *next;
    size_t used, cap;
    max_align_t data[];
};

static void *arena_alloc(jinja_template *t, size_t n) {
    n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    jarena_chunk *c = t->chunks;
    if (!c || c->cap - c->used < n) {
        const size_t cap = n > 16384 ? n : 16384;
        c = malloc(sizeof *c + cap);
        if (!c) return NULL;
        c->next = t->chunks, c->used = 0, c->cap = cap;
        t->chunks = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void jinja_free(jinja_template *t) {
    if (!t) return;
    for (int i = 0; i < t->nlits; i++) json_decref(t->lits[i]);
    free(t->lits);
    for (jarena_chunk *c = t->chunks, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(t);
}

/* ---- tokens --------------------------------------------------------------- */

typedef enum ttype { T_TEXT, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STR, T_NUM, T_OP, T_EOF } ttype;

typedef struct tok {
    ttype t;
    int line;
    const char *s; /* T_TEXT, T_NAME, T_OP: into the source; T_STR: decoded (arena) */
    size_t n;
    json_t *num;   /* T_NUM (held by the template) */
} tok;

typedef struct parser {
    jinja_template *t;
    char *src; /* normalized source */
    size_t n;
    tok *toks;
    int ntok, cap, pos, depth;
    char *msg;
    size_t msgcap;
    bool failed;
} parser;

static void *perr(parser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void *perr(parser *p, int line, const char *fmt, ...) {
    if (p->failed) return NULL;
    p->failed = true;
    int k = snprintf(p->msg, p->msgcap, "chat template line %d: ", line);
    if (k < 0 || (size_t)k >= p->msgcap) return NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg + k, p->msgcap - (size_t)k, fmt, ap);
    va_end(ap);
    return NULL;
}

static bool keep_lit(jinja_template *t, json_t *v) {
    if (!v) return false;
    if (t->nlits == t->caplits) {
        const int cap = t->caplits ? 2 * t->caplits : 32;
        json_t **l = realloc(t->lits, (size_t)cap * sizeof *l);
        if (!l) {
            json_decref(v);
            return false;
        }
        t->lits = l, t->caplits = cap;
    }
    t->lits[t->nlits++] = v;
    return true;
}

static bool push_tok(parser *p, tok k) {
    if (p->ntok == p->cap) {
        const int cap = p->cap ? 2 * p->cap : 256;
        tok *v = realloc(p->toks, (size_t)cap * sizeof *v);
        if (!v) return perr(p, k.line, "out of memory"), false;
        p->toks = v, p->cap = cap;
    }
    p->toks[p->ntok++] = k;
    return true;
}

/* Source with \r\n, \r and the other line breaks Python's splitlines knows
 * turned into \n, and one trailing newline dropped (keep_trailing_newline off). */
static char *normalize(jinja_template *t, const char *s, size_t n, size_t *out_n) {
    char *o = arena_alloc(t, n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        if (c == '\r') {
            if (i + 1 < n && s[i + 1] == '\n') i++;
            o[k++] = '\n';
        } else if (c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) {
            o[k++] = '\n';
        } else if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] == 0x85) {
            o[k++] = '\n', i++;
        } else if (c == 0xe2 && i + 2 < n && (unsigned char)s[i + 1] == 0x80 &&
                   ((unsigned char)s[i + 2] == 0xa8 || (unsigned char)s[i + 2] == 0xa9)) {
            o[k++] = '\n', i += 2;
        } else {
            o[k++] = (char)c;
        }
    }
    if (k && o[k - 1] == '\n') k--;
    o[k] = 0;
    *out_n = k;
    return o;
}

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
static bool is_ident0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int count_lines(const char *s, size_t n) {
    int k = 0;
    for (size_t i = 0; i < n; i++) k += s[i] == '\n';
    return k;
}

static void put_utf8(char *o, size_t *k, unsigned long cp) {
    if (cp < 0x80) {
        o[(*k)++] = (char)cp;
    } else if (cp < 0x800) {
        o[(*k)++] = (char)(0xc0 | cp >> 6), o[(*k)++] = (char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        o[(*k)++] = (char)(0xe0 | cp >> 12), o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[(*k)++] = (char)(0x80 | (cp & 0x3f));
    } else {
        o[(*k)++] = (char)(0xf0 | cp >> 18), o[(*k)++] = (char)(0x80 | ((cp >> 12) & 0x3f));
        o[(*k)++] = (char)(0x80 | ((cp >> 6) & 0x3f)), o[(*k)++] = (char)(0x80 | (cp & 0x3f));
    }
}

static int hexval(char c) {
    if (is_digit(c)) return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string literal's body with Python's escapes decoded (unknown ones kept). */
static char *unescape(parser *p, const char *s, size_t n, size_t *out_n) {
    char *o = arena_alloc(p->t, n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            o[k++] = s[i];
            continue;
        }
        const char e = s[++i];
        const char *simple = strchr("n\nt\tr\r\\\\''\"\"a\ab\bf\fv\v", e);
        if (e && simple && (simple - "n\nt\tr\r\\\\''\"\"a\ab\bf\fv\v") % 2 == 0) {
            o[k++] = simple[1];
        } else if (e == 'x' || e == 'u' || e == 'U') {
            const int len = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            unsigned long cp = 0;
            int j = 0;
            for (; j < len && i + 1 + j < n && hexval(s[i + 1 + j]) >= 0; j++) cp = cp * 16 + (unsigned long)hexval(s[i + 1 + j]);
            if (j < len || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
                o[k++] = '\\', o[k++] = e; /* Python refuses these; keep them visible */
                continue;
            }
            if (k + 4 > n + 1) return NULL; /* cannot happen: an escape is longer than its bytes */
            put_utf8(o, &k, cp);
            i += (size_t)len;
        } else if (e >= '0' && e <= '7') {
            unsigned cp = 0;
            int j = 0;
            for (; j < 3 && i + j < n && s[i + j] >= '0' && s[i + j] <= '7'; j++) cp = cp * 8 + (unsigned)(s[i + j] - '0');
            put_utf8(o, &k, cp);
            i += (size_t)j - 1;
        } else {
            o[k++] = '\\', o[k++] = e;
        }
    }
    o[k] = 0;
    *out_n = k;
    return o;
}

/* Past a tag's end at *i: "-" there strips every blank that follows; else a
 * block or comment tag (trim_blocks) drops one newline. Counts lines. */
static void after_tag(const char *s, size_t n, size_t *i, int *line, bool dash, bool trim) {
    if (dash) {
        while (*i < n && is_space(s[*i])) *line += s[(*i)++] == '\n';
    } else if (trim && *i < n && s[*i] == '\n') {
        (*i)++, (*line)++;
    }
}

static const char *const OPS[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")",
                                  "[",  "]",  "{",  "}",  ".",  ",",  ":", "|", "="};

/* The tokens inside one tag, up to and including its end; *i is past the tag's start. */
static bool lex_tag(parser *p, size_t *i, int *line, bool block, bool *line_starting) {
    const char *s = p->src;
    const size_t n = p->n;
    const char *end = block ? "%}" : "}}";
    int parens = 0;
    for (;;) {
        while (*i < n && is_space(s[*i])) *line += s[(*i)++] == '\n';
        if (*i >= n) return perr(p, *line, "a tag is not closed (missing '%s')", end), false;
        const bool dash = s[*i] == '-' && *i + 2 < n && !strncmp(s + *i + 1, end, 2);
        if (parens == 0 && (dash || !strncmp(s + *i, end, 2))) {
            *i += dash ? 3 : 2;
            after_tag(s, n, i, line, dash, block);
            *line_starting = s[*i - 1] == '\n';
            return push_tok(p, (tok){block ? T_BLOCK_END : T_VAR_END, *line, NULL, 0, NULL});
        }
        const char c = s[*i];
        if (is_ident0(c)) {
            size_t j = *i;
            while (j < n && (is_ident0(s[j]) || is_digit(s[j]))) j++;
            if (!push_tok(p, (tok){T_NAME, *line, s + *i, j - *i, NULL})) return false;
            *i = j;
        } else if (is_digit(c)) {
            size_t j = *i;
            while (j < n && is_digit(s[j])) j++;
            bool real = j + 1 < n && s[j] == '.' && is_digit(s[j + 1]);
            if (real)
                for (j++; j < n && is_digit(s[j]);) j++;
            if (j + 1 < n && (s[j] == 'e' || s[j] == 'E')) { /* 1e3, 2.5e-4 */
                size_t e = j + 1 + (s[j + 1] == '+' || s[j + 1] == '-');
                if (e < n && is_digit(s[e])) {
                    for (j = e; j < n && is_digit(s[j]);) j++;
                    real = true;
                }
            }
            char buf[64];
            if (j - *i >= sizeof buf) return perr(p, *line, "a number is too long"), false;
            memcpy(buf, s + *i, j - *i), buf[j - *i] = 0;
            errno = 0;
            json_t *v = real ? json_real(strtod(buf, NULL)) : json_integer(strtoll(buf, NULL, 10));
            if (!real && errno == ERANGE) {
                json_decref(v);
                return perr(p, *line, "the integer %s does not fit in 64 bits", buf), false;
            }
            if (!keep_lit(p->t, v)) return perr(p, *line, "out of memory"), false;
            if (!push_tok(p, (tok){T_NUM, *line, NULL, 0, v})) return false;
            *i = j;
        } else if (c == '\'' || c == '"') {
            size_t j = *i + 1;
            while (j < n && s[j] != c) j += s[j] == '\\' ? 2 : 1;
            if (j >= n) return perr(p, *line, "a string is not closed"), false;
            size_t len;
            const char *str = unescape(p, s + *i + 1, j - *i - 1, &len);
            if (!str) return perr(p, *line, "out of memory"), false;
            if (!push_tok(p, (tok){T_STR, *line, str, len, NULL})) return false;
            *line += count_lines(s + *i, j - *i);
            *i = j + 1;
        } else {
            size_t k = 0;
            while (k < sizeof OPS / sizeof *OPS && strncmp(s + *i, OPS[k], strlen(OPS[k]))) k++;
            if (k == sizeof OPS / sizeof *OPS) return perr(p, *line, "unexpected character '%c'", c), false;
            const size_t len = strlen(OPS[k]);
            parens += strchr("([{", c) ? 1 : strchr(")]}", c) && parens > 0 ? -1 : 0;
            if (!push_tok(p, (tok){T_OP, *line, s + *i, len, NULL})) return false;
            *i += len;
        }
    }
}

/* At "raw %}" or "endraw %}" (after "{%" and its sign, blanks allowed): the
 * position past the tag's end and whether it ends with "-%}"; 0 when not. */
static size_t raw_tag_end(const char *s, size_t n, size_t i, const char *word, bool *dash) {
    while (i < n && is_space(s[i])) i++;
    const size_t w = strlen(word);
    if (i + w > n || memcmp(s + i, word, w) || (i + w < n && (is_ident0(s[i + w]) || is_digit(s[i + w])))) return 0;
    for (i += w; i < n && is_space(s[i]);) i++;
    *dash = i < n && s[i] == '-';
    i += *dash;
    return i + 1 < n && s[i] == '%' && s[i + 1] == '}' ? i + 2 : 0;
}

/* {% raw %}...{% endraw %}: the text between goes out as it is. *i is past
 * "{%" and its sign; 1 when this was a raw block (*i then past endraw's tag,
 * its text pushed), 0 when not, -1 on error. */
static int raw_block(parser *p, size_t *i, int *line) {
    const char *s = p->src;
    const size_t n = p->n;
    bool dash;
    size_t at = raw_tag_end(s, n, *i, "raw", &dash);
    if (!at) return 0;
    if (dash)
        while (at < n && is_space(s[at])) at++;
    for (size_t q = at; q + 1 < n; q++) {
        if (s[q] != '{' || s[q + 1] != '%') continue;
        const bool strip = q + 2 < n && s[q + 2] == '-';
        bool end_dash;
        size_t past = raw_tag_end(s, n, q + 2 + (q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+')), "endraw", &end_dash);
        if (!past) continue;
        size_t text_end = q;
        if (strip)
            while (text_end > at && is_space(s[text_end - 1])) text_end--;
        if (text_end > at && !push_tok(p, (tok){T_TEXT, *line, s + at, text_end - at, NULL})) return -1;
        *line += count_lines(s + *i, past - *i);
        after_tag(s, n, &past, line, end_dash, true);
        *i = past;
        return 1;
    }
    return perr(p, *line, "a raw block is not closed (missing '{%% endraw %%}')"), -1;
}

static bool lex(parser *p) {
    const char *s = p->src;
    const size_t n = p->n;
    size_t i = 0;
    int line = 1;
    bool line_starting = true;
    while (i < n || i == 0) {
        size_t q = i;
        while (q + 1 < n && !(s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#'))) q++;
        if (q + 1 >= n) q = n;
        size_t text_end = q;
        if (q < n) {
            const char kind = s[q + 1], sign = q + 2 < n ? s[q + 2] : 0;
            if (sign == '-') {
                while (text_end > i && is_space(s[text_end - 1])) text_end--;
            } else if (sign != '+' && kind != '{') { /* lstrip_blocks */
                size_t l = text_end;
                while (l > i && (s[l - 1] == ' ' || s[l - 1] == '\t')) l--;
                if ((l > i && s[l - 1] == '\n') || (l == i && line_starting)) text_end = l;
            }
        }
        if (text_end > i && !push_tok(p, (tok){T_TEXT, line, s + i, text_end - i, NULL})) return false;
        line += count_lines(s + i, q - i);
        if (q >= n) break;
        const char kind = s[q + 1];
        i = q + 2 + (q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+'));
        if (kind == '#') {
            size_t e = i;
            while (e + 1 < n && !(s[e] == '#' && s[e + 1] == '}')) e++;
            if (e + 1 >= n) return perr(p, line, "a comment is not closed (missing '#}')"), false;
            line += count_lines(s + i, e - i);
            const bool dash = e > i && s[e - 1] == '-';
            i = e + 2;
            after_tag(s, n, &i, &line, dash, true);
            line_starting = s[i - 1] == '\n';
            continue;
        }
        if (kind == '%') {
            const int raw = raw_block(p, &i, &line);
            if (raw < 0) return false;
            if (raw) {
                line_starting = s[i - 1] == '\n';
                continue;
            }
        }
        if (!push_tok(p, (tok){kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, line, NULL, 0, NULL})) return false;
        if (!lex_tag(p, &i, &line, kind == '%', &line_starting)) return false;
        if (i >= n) break;
    }
    return push_tok(p, (tok){T_EOF, line, NULL, 0, NULL});
}

/* ---- expressions ---------------------------------------------------------- */

static tok *peek(parser *p) { return &p->toks[p->pos]; }
static tok *next(parser *p) {
    tok *k = &p->toks[p->pos];
    if (k->t != T_EOF) p->pos++;
    return k;
}
static bool is_op(const tok *k, const char *op) { return k->t == T_OP && k->n == strlen(op) && !memcmp(k->s, op, k->n); }
static bool is_name(const tok *k, const char *w) { return k->t == T_NAME && k->n == strlen(w) && !memcmp(k->s, w, k->n); }
static bool accept_op(parser *p, const char *op) { return is_op(peek(p), op) ? (next(p), true) : false; }
static bool accept_name(parser *p, const char *w) { return is_name(peek(p), w) ? (next(p), true) : false; }

static const char *describe(const tok *k, char *buf, size_t cap) {
    switch (k->t) {
    case T_NAME:
    case T_OP: snprintf(buf, cap, "'%.*s'", (int)(k->n > 40 ? 40 : k->n), k->s); break;
    case T_STR: snprintf(buf, cap, "a string"); break;
    case T_NUM: snprintf(buf, cap, "a number"); break;
    case T_VAR_END: snprintf(buf, cap, "'}}'"); break;
    case T_BLOCK_END: snprintf(buf, cap, "'%%}'"); break;
    case T_EOF: snprintf(buf, cap, "the end of the template"); break;
    default: snprintf(buf, cap, "text"); break;
    }
    return buf;
}

static bool expect_op(parser *p, const char *op) {
    if (accept_op(p, op)) return true;
    char b[64];
    return perr(p, peek(p)->line, "expected '%s', found %s", op, describe(peek(p), b, sizeof b)), false;
}

static char *name_dup(parser *p, const tok *k) {
    char *s = arena_alloc(p->t, k->n + 1);
    if (s) memcpy(s, k->s, k->n);
    else perr(p, k->line, "out of memory");
    return s;
}

static jx *node(parser *p, jx_kind kind, int line) {
    jx *x = arena_alloc(p->t, sizeof *x);
    if (!x) return perr(p, line, "out of memory");
    x->kind = kind, x->line = line;
    return x;
}

static const char *RESERVED[] = {"and", "or", "not", "in", "is", "if", "else", "elif", "endif", "for", "endfor", "set", NULL};

static jx *expr(parser *p);
static jx *or_expr(parser *p);
static jx *unary(parser *p, bool with_filter);

/* (args) after the '(' of a call, a filter or a test. */
static bool call_args(parser *p, jx *x) {
    int cap = 0;
    while (!accept_op(p, ")")) {
        if (x->nargs && !expect_op(p, ",")) return false;
        if (x->nargs && accept_op(p, ")")) break;
        const char *kw = NULL;
        if (peek(p)->t == T_NAME && is_op(&p->toks[p->pos + 1], "=")) {
            kw = name_dup(p, next(p));
            next(p);
        }
        jx *a = expr(p);
        if (!a) return false;
        if (x->nargs == cap) {
            cap = cap ? 2 * cap : 4;
            jx **args = arena_alloc(p->t, (size_t)cap * sizeof *args);
            const char **kws = arena_alloc(p->t, (size_t)cap * sizeof *kws);
            if (!args || !kws) return perr(p, a->line, "out of memory"), false;
            if (x->nargs) memcpy(args, x->args, (size_t)x->nargs * sizeof *args), memcpy(kws, x->kw, (size_t)x->nargs * sizeof *kws);
            x->args = args, x->kw = kws;
        }
        x->args[x->nargs] = a, x->kw[x->nargs++] = kw;
    }
    return true;
}

static bool add_arg(parser *p, jx *x, jx *a, int *cap) {
    if (x->nargs == *cap) {
        *cap = *cap ? 2 * *cap : 4;
        jx **args = arena_alloc(p->t, (size_t)*cap * sizeof *args);
        if (!args) return perr(p, a->line, "out of memory"), false;
        if (x->nargs) memcpy(args, x->args, (size_t)x->nargs * sizeof *args);
        x->args = args;
    }
    x->args[x->nargs++] = a;
    return true;
}

static jx *primary(parser *p) {
    tok *k = next(p);
    char b[64];
    if (k->t == T_STR) {
        /* adjacent strings join, as in Python */
        size_t len = k->n;
        int j = p->pos;
        while (p->toks[j].t == T_STR) len += p->toks[j++].n;
        char *s = arena_alloc(p->t, len + 1);
        if (!s) return perr(p, k->line, "out of memory");
        memcpy(s, k->s, k->n);
        for (size_t o = k->n; peek(p)->t == T_STR; o += p->toks[p->pos - 1].n) {
            const tok *m = next(p);
            memcpy(s + o, m->s, m->n);
        }
        jx *x = node(p, X_LIT, k->line);
        if (!x) return NULL;
        x->lit = json_stringn_nocheck(s, len);
        if (!keep_lit(p->t, x->lit)) return perr(p, k->line, "out of memory");
        return x;
    }
    if (k->t == T_NUM) {
        jx *x = node(p, X_LIT, k->line);
        if (x) x->lit = k->num;
        return x;
    }
    if (k->t == T_NAME) {
        json_t *lit = NULL;
        if (is_name(k, "true") || is_name(k, "True")) lit = json_true();
        else if (is_name(k, "false") || is_name(k, "False")) lit = json_false();
        else if (is_name(k, "none") || is_name(k, "None")) lit = json_null();
        jx *x = node(p, lit ? X_LIT : X_NAME, k->line);
        if (!x) return NULL;
        if (lit) {
            x->lit = lit;
            return x;
        }
        for (int i = 0; RESERVED[i]; i++)
            if (is_name(k, RESERVED[i])) return perr(p, k->line, "unexpected '%s'", RESERVED[i]);
        x->name = name_dup(p, k);
        return x->name ? x : NULL;
    }
    if (is_op(k, "(")) {
        jx *x = expr(p);
        if (!x) return NULL;
        if (is_op(peek(p), ",")) { /* a tuple: a list will do */
            jx *l = node(p, X_LIST, k->line);
            int cap = 0;
            if (!l || !add_arg(p, l, x, &cap)) return NULL;
            while (accept_op(p, ",") && !is_op(peek(p), ")")) {
                jx *a = expr(p);
                if (!a || !add_arg(p, l, a, &cap)) return NULL;
            }
            x = l;
        }
        return expect_op(p, ")") ? x : NULL;
    }
    if (is_op(k, "[") || is_op(k, "{")) {
        const bool dict = is_op(k, "{");
        jx *x = node(p, dict ? X_DICT : X_LIST, k->line);
        int cap = 0;
        if (!x) return NULL;
        while (!accept_op(p, dict ? "}" : "]")) {
            if (x->nargs && !expect_op(p, ",")) return NULL;
            if (x->nargs && accept_op(p, dict ? "}" : "]")) break;
            jx *a = expr(p);
            if (!a || !add_arg(p, x, a, &cap)) return NULL;
            if (dict) {
                if (!expect_op(p, ":")) return NULL;
                jx *v = expr(p);
                if (!v || !add_arg(p, x, v, &cap)) return NULL;
            }
        }
        return x;
    }
    return perr(p, k->line, "unexpected %s", describe(k, b, sizeof b));
}

static jx *postfix(parser *p, jx *x) {
    while (x) {
        tok *k = peek(p);
        if (is_op(k, ".")) {
            next(p);
            tok *nm = next(p);
            if (nm->t != T_NAME && nm->t != T_NUM) return perr(p, nm->line, "expected a name after '.'");
            jx *a;
            if (nm->t == T_NUM) {
                a = node(p, X_INDEX, nm->line);
                jx *i = node(p, X_LIT, nm->line);
                if (!a || !i) return NULL;
                i->lit = nm->num, a->b = i;
            } else {
                a = node(p, X_ATTR, nm->line);
                if (!a || !(a->name = name_dup(p, nm))) return NULL;
            }
            a->a = x, x = a;
        } else if (is_op(k, "[")) {
            next(p);
            jx *parts[3] = {NULL, NULL, NULL};
            int colons = 0;
            for (;;) {
                if (is_op(peek(p), "]")) break;
                if (accept_op(p, ":")) {
                    if (++colons > 2) return perr(p, k->line, "a slice has at most two ':'");
                    continue;
                }
                if (parts[colons]) return perr(p, k->line, "expected ':' or ']' in a subscript");
                if (!(parts[colons] = expr(p))) return NULL;
            }
            next(p);
            jx *a = node(p, colons ? X_SLICE : X_INDEX, k->line);
            if (!a) return NULL;
            if (!colons && !parts[0]) return perr(p, k->line, "an empty subscript");
            a->a = x;
            if (colons) memcpy(a->s, parts, sizeof parts);
            else a->b = parts[0];
            x = a;
        } else if (is_op(k, "(")) {
            next(p);
            jx *c = node(p, X_CALL, k->line);
            if (!c) return NULL;
            c->a = x;
            if (!call_args(p, c)) return NULL;
            x = c;
        } else {
            break;
        }
    }
    return x;
}

/* | filter(args) and `is [not] test(args)` after an operand. */
static jx *filters(parser *p, jx *x) {
    while (x) {
        tok *k = peek(p);
        const bool filter = is_op(k, "|"), test = is_name(k, "is");
        if (!filter && !test) break;
        next(p);
        jx *f = node(p, filter ? X_FILTER : X_TEST, k->line);
        if (!f) return NULL;
        if (test) f->negate = accept_name(p, "not");
        tok *nm = next(p);
        if (nm->t != T_NAME) return perr(p, nm->line, "expected a %s name", filter ? "filter" : "test");
        if (!(f->name = name_dup(p, nm))) return NULL;
        f->a = x;
        if (accept_op(p, "(")) {
            if (!call_args(p, f)) return NULL;
        } else if (test && (peek(p)->t == T_STR || peek(p)->t == T_NUM ||
                            (peek(p)->t == T_NAME && !is_name(peek(p), "and") && !is_name(peek(p), "or") &&
                             !is_name(peek(p), "if") && !is_name(peek(p), "else") && !is_name(peek(p), "in") &&
                             !is_name(peek(p), "is") && !is_name(peek(p), "not")))) {
            int cap = 0; /* `is sameas false`, `is divisibleby 3`: one argument without parentheses */
            jx *a = postfix(p, primary(p));
            if (!a || !add_arg(p, f, a, &cap)) return NULL;
            f->kw = arena_alloc(p->t, sizeof *f->kw);
            if (!f->kw) return perr(p, k->line, "out of memory");
        }
        x = postfix(p, f);
    }
    return x;
}

static jx *unary(parser *p, bool with_filter) {
    if (++p->depth > MAX_DEPTH) return perr(p, peek(p)->line, "expressions nested too deeply");
    tok *k = peek(p);
    jx *x;
    if (is_op(k, "-") || is_op(k, "+")) {
        next(p);
        jx *a = unary(p, false);
        if (!a) return NULL;
        if (is_op(k, "+")) {
            x = a;
        } else if (!(x = node(p, X_NEG, k->line))) {
            return NULL;
        } else {
            x->a = a;
        }
    } else {
        x = postfix(p, primary(p));
    }
    if (x && with_filter) x = filters(p, x);
    p->depth--;
    return x;
}

static jx *binary(parser *p, int level);

/* Operators by precedence, loosest first (jinja2's parse_math1, concat, math2, pow). */
static const char *const LEVELS[][5] = {{"+", "-"}, {"~"}, {"*", "/", "//", "%"}, {"**"}};
enum { NLEVELS = 4 };

static jx *binary(parser *p, int level) {
    if (level == NLEVELS) return unary(p, true);
    jx *x = binary(p, level + 1);
    while (x) {
        const tok *k = peek(p);
        const char *op = NULL;
        for (int i = 0; i < 5 && LEVELS[level][i]; i++)
            if (is_op(k, LEVELS[level][i])) op = LEVELS[level][i];
        if (!op) break;
        next(p);
        jx *b = binary(p, level + 1);
        jx *n = b ? node(p, X_BIN, k->line) : NULL;
        if (!n) return NULL;
        n->name = op, n->a = x, n->b = b, x = n;
    }
    return x;
}

/* Comparisons chain as in Python: a < b < c is (a < b) and (b < c). */
static jx *compare(parser *p) {
    jx *x = binary(p, 0), *last = x;
    bool chained = false;
    static const char *const CMP[] = {"==", "!=", "<=", ">=", "<", ">"};
    while (x) {
        const tok *k = peek(p);
        const char *op = NULL;
        for (size_t i = 0; i < sizeof CMP / sizeof *CMP; i++)
            if (is_op(k, CMP[i])) op = CMP[i];
        if (!op && is_name(k, "in")) op = "in";
        if (!op && is_name(k, "not") && is_name(&p->toks[p->pos + 1], "in")) op = "not in", next(p);
        if (!op) break;
        next(p);
        jx *b = binary(p, 0);
        jx *n = b ? node(p, X_BIN, k->line) : NULL;
        if (!n) return NULL;
        n->name = op, n->a = last, n->b = b;
        if (chained) {
            jx *both = node(p, X_AND, k->line);
            if (!both) return NULL;
            both->a = x, both->b = n, x = both;
        } else {
            x = n;
        }
        last = b, chained = true;
    }
    return x;
}

static jx *not_expr(parser *p) {
    const tok *k = peek(p);
    if (!is_name(k, "not")) return compare(p);
    next(p);
    if (++p->depth > MAX_DEPTH) return perr(p, k->line, "expressions nested too deeply");
    jx *a = not_expr(p);
    p->depth--;
    jx *x = a ? node(p, X_NOT, k->line) : NULL;
    if (x) x->a = a;
    return x;
}

static jx *and_expr(parser *p) {
    jx *x = not_expr(p);
    while (x && is_name(peek(p), "and")) {
        const int line = next(p)->line;
        jx *b = not_expr(p), *n = b ? node(p, X_AND, line) : NULL;
        if (!n) return NULL;
        n->a = x, n->b = b, x = n;
    }
    return x;
}

static jx *or_expr(parser *p) {
    jx *x = and_expr(p);
    while (x && is_name(peek(p), "or")) {
        const int line = next(p)->line;
        jx *b = and_expr(p), *n = b ? node(p, X_OR, line) : NULL;
        if (!n) return NULL;
        n->a = x, n->b = b, x = n;
    }
    return x;
}

static jx *expr(parser *p) {
    if (++p->depth > MAX_DEPTH) return perr(p, peek(p)->line, "expressions nested too deeply");
    jx *x = or_expr(p);
    while (x && is_name(peek(p), "if")) {
        const int line = next(p)->line;
        jx *cond = or_expr(p), *n = cond ? node(p, X_COND, line) : NULL;
        if (!n) return NULL;
        n->a = x, n->b = cond;
        if (accept_name(p, "else") && !(n->c = expr(p))) return NULL;
        x = n;
    }
    p->depth--;
    return x;
}

/* ---- statements ----------------------------------------------------------- */

static bool add_stmt(parser *p, jbody *b, js *s) {
    if (b->n == b->cap) {
        const int cap = b->cap ? 2 * b->cap : 8;
        js **v = arena_alloc(p->t, (size_t)cap * sizeof *v);
        if (!v) return perr(p, s->line, "out of memory"), false;
        if (b->n) memcpy(v, b->v, (size_t)b->n * sizeof *v);
        b->v = v, b->cap = cap;
    }
    b->v[b->n++] = s;
    return true;
}

static js *stmt_node(parser *p, js_kind kind, int line) {
    js *s = arena_alloc(p->t, sizeof *s);
    if (!s) return perr(p, line, "out of memory");
    s->kind = kind, s->line = line;
    return s;
}

static bool block_end(parser *p) {
    if (peek(p)->t == T_BLOCK_END) return next(p), true;
    char b[64];
    return perr(p, peek(p)->line, "expected '%%}', found %s", describe(peek(p), b, sizeof b)), false;
}

static bool body(parser *p, jbody *b, const char *const *ends, const char **ended, int loops);

static bool parse_if(parser *p, js *s, int loops) {
    int cap = 0;
    for (const char *ended = "if";;) {
        jx *cond = NULL;
        if (strcmp(ended, "else") && !(cond = expr(p))) return false;
        if (!block_end(p)) return false;
        if (s->n == cap) {
            cap = cap ? 2 * cap : 2;
            jx **c = arena_alloc(p->t, (size_t)cap * sizeof *c);
            jbody *bd = arena_alloc(p->t, (size_t)cap * sizeof *bd);
            if (!c || !bd) return perr(p, s->line, "out of memory"), false;
            if (s->n) memcpy(c, s->conds, (size_t)s->n * sizeof *c), memcpy(bd, s->bodies, (size_t)s->n * sizeof *bd);
            s->conds = c, s->bodies = bd;
        }
        s->conds[s->n] = cond;
        const bool was_else = !strcmp(ended, "else");
        static const char *const ends[] = {"elif", "else", "endif", NULL}, *const end_only[] = {"endif", NULL};
        if (!body(p, &s->bodies[s->n++], was_else ? end_only : ends, &ended, loops)) return false;
        if (!strcmp(ended, "endif")) return block_end(p);
    }
}

static bool parse_for(parser *p, js *s, int loops) {
    do {
        tok *v = next(p);
        if (v->t != T_NAME || s->nvar == 2) return perr(p, v->line, "expected one or two loop variable names"), false;
        if (!(s->var[s->nvar++] = name_dup(p, v))) return false;
    } while (accept_op(p, ","));
    if (!accept_name(p, "in")) return perr(p, s->line, "expected 'in' in a for loop"), false;
    if (!(s->x = or_expr(p))) return false;
    if (accept_name(p, "if") && !(s->filter = or_expr(p))) return false;
    if (accept_name(p, "recursive")) return perr(p, s->line, "recursive loops are not supported"), false;
    if (!block_end(p)) return false;
    static const char *const ends[] = {"else", "endfor", NULL}, *const end_only[] = {"endfor", NULL};
    const char *ended;
    if (!body(p, &s->body, ends, &ended, loops + 1)) return false;
    if (!strcmp(ended, "else")) {
        if (!block_end(p) || !body(p, &s->else_body, end_only, &ended, loops)) return false;
    }
    return block_end(p);
}

static bool parse_set(parser *p, js *s, int loops) {
    tok *v = next(p);
    if (v->t != T_NAME) return perr(p, v->line, "expected a name after 'set'"), false;
    if (!(s->target = name_dup(p, v))) return false;
    if (accept_op(p, ".")) {
        tok *a = next(p);
        if (a->t != T_NAME) return perr(p, a->line, "expected an attribute name after '.'"), false;
        if (!(s->attr = name_dup(p, a))) return false;
    }
    if (accept_op(p, "=")) {
        if (!(s->x = expr(p))) return false;
        if (is_op(peek(p), ",")) return perr(p, s->line, "unpacking in 'set' is not supported"), false;
        return block_end(p);
    }
    if (s->attr) return perr(p, s->line, "expected '=' after 'set %s.%s'", s->target, s->attr), false;
    static const char *const ends[] = {"endset", NULL};
    const char *ended;
    return block_end(p) && body(p, &s->body, ends, &ended, loops) && block_end(p);
}

/* {% macro name(a, b=default) %}: the parameters parse as a call's arguments, names first, then names with
 * defaults (as jinja2's signature); the body may not break out of an enclosing loop. */
static bool parse_macro(parser *p, js *s) {
    tok *v = next(p);
    if (v->t != T_NAME) return perr(p, v->line, "expected a name after 'macro'"), false;
    if (!(s->target = name_dup(p, v)) || !(s->x = node(p, X_CALL, v->line)) || !expect_op(p, "(") || !call_args(p, s->x))
        return false;
    for (int i = 0; i < s->x->nargs; i++) {
        if (!s->x->kw[i] && s->x->args[i]->kind != X_NAME)
            return perr(p, s->line, "macro %s's parameters must be names, or name=default", s->target), false;
        if (!s->x->kw[i] && i && s->x->kw[i - 1])
            return perr(p, s->line, "macro %s: a parameter without a default follows one with a default", s->target), false;
        for (int k = 0; k < i; k++)
            if (!strcmp(s->x->kw[i] ? s->x->kw[i] : s->x->args[i]->name, s->x->kw[k] ? s->x->kw[k] : s->x->args[k]->name))
                return perr(p, s->line, "macro %s names a parameter twice", s->target), false;
    }
    static const char *const ends[] = {"endmacro", NULL};
    const char *ended;
    return block_end(p) && body(p, &s->body, ends, &ended, 0) && block_end(p);
}

/* Statements up to one of `ends` (its name is left in *ended, its '%}' unread). */
static bool body(parser *p, jbody *b, const char *const *ends, const char **ended, int loops) {
    if (++p->depth > MAX_DEPTH) return perr(p, peek(p)->line, "blocks nested too deeply"), false;
    for (;;) {
        tok *k = next(p);
        if (k->t == T_EOF) {
            if (!ends) break;
            int last = 0;
            while (ends[last + 1]) last++;
            return perr(p, k->line, "the template ended inside a block (missing '{%% %s %%}')", ends[last]), false;
        }
        if (k->t == T_TEXT) {
            js *s = stmt_node(p, S_TEXT, k->line);
            if (!s) return false;
            s->text = k->s, s->len = k->n;
            if (!add_stmt(p, b, s)) return false;
            continue;
        }
        if (k->t == T_VAR_BEGIN) {
            js *s = stmt_node(p, S_OUT, k->line);
            if (!s || !(s->x = expr(p))) return false;
            if (peek(p)->t != T_VAR_END) {
                char d[64];
                return perr(p, peek(p)->line, "expected '}}', found %s", describe(peek(p), d, sizeof d)), false;
            }
            next(p);
            if (!add_stmt(p, b, s)) return false;
            continue;
        }
        if (k->t != T_BLOCK_BEGIN) return perr(p, k->line, "unexpected token"), false;
        tok *kw = next(p);
        if (kw->t != T_NAME) return perr(p, kw->line, "expected a statement name after '{%%'"), false;
        for (int i = 0; ends && ends[i]; i++)
            if (is_name(kw, ends[i])) {
                *ended = ends[i];
                p->depth--;
                return true;
            }
        js *s = NULL;
        if (is_name(kw, "if")) {
            if (!(s = stmt_node(p, S_IF, kw->line)) || !parse_if(p, s, loops)) return false;
        } else if (is_name(kw, "for")) {
            if (!(s = stmt_node(p, S_FOR, kw->line)) || !parse_for(p, s, loops)) return false;
        } else if (is_name(kw, "set")) {
            if (!(s = stmt_node(p, S_SET, kw->line)) || !parse_set(p, s, loops)) return false;
        } else if (is_name(kw, "macro")) {
            if (!(s = stmt_node(p, S_MACRO, kw->line)) || !parse_macro(p, s)) return false;
        } else if (is_name(kw, "break") || is_name(kw, "continue")) {
            if (!loops) return perr(p, kw->line, "'%.*s' outside a loop", (int)kw->n, kw->s), false;
            if (!(s = stmt_node(p, is_name(kw, "break") ? S_BREAK : S_CONTINUE, kw->line)) || !block_end(p)) return false;
        } else if (is_name(kw, "generation")) {
            /* transformers' assistant-mask marker: its body renders in place */
            static const char *const gen_end[] = {"endgeneration", NULL};
            const char *e;
            if (!block_end(p) || !body(p, b, gen_end, &e, loops) || !block_end(p)) return false;
            continue;
        } else {
            return perr(p, kw->line, "'%.*s' is not a statement mopt's chat templates support", (int)(kw->n > 40 ? 40 : kw->n),
                        kw->s),
                   false;
        }
        if (!add_stmt(p, b, s)) return false;
    }
    p->depth--;
    return true;
}

jinja_template *jinja_parse(const char *src, size_t n, char *msg, size_t cap) {
    if (n > MAX_SOURCE) {
        snprintf(msg, cap, "chat template: %zu bytes is more than the 1 MiB a template may have", n);
        return NULL;
    }
    parser p = {.msg = msg, .msgcap = cap};
    p.t = calloc(1, sizeof *p.t);
    if (!p.t || !(p.src = normalize(p.t, src, n, &p.n))) { /* the source lives in the arena: text statements point into it */
        snprintf(msg, cap, "chat template: out of memory");
        jinja_free(p.t);
        return NULL;
    }
    const bool ok = lex(&p) && body(&p, &p.t->top, NULL, NULL, 0);
    free(p.toks);
    if (!ok) {
        jinja_free(p.t);
        return NULL;
    }
    return p.t;
}
