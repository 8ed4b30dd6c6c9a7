/* A growable string (strbuf.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

/* room for n more bytes and a NUL; 0 (and oom set) when it cannot be had */
static int reserve(sbuf *b, size_t n) {
    if (b->oom) return 0;
    if (b->s && b->n + n < b->cap) return 1;
    size_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc <= b->n + n) nc *= 2;
    char *p = realloc(b->s, nc);
    if (!p) {
        b->oom = 1;
        return 0;
    }
    b->s = p;
    b->cap = nc;
    return 1;
}

void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0 || !reserve(b, (size_t)k)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

void sb_html(sbuf *b, const char *t) {
    for (; t && *t; t++) {
        if (*t == '<') sb_printf(b, "&lt;");
        else if (*t == '>') sb_printf(b, "&gt;");
        else if (*t == '&') sb_printf(b, "&amp;");
        else if (*t == '"') sb_printf(b, "&quot;");
        else sb_printf(b, "%c", *t);
    }
}

void sb_put(sbuf *b, const void *d, size_t n) {
    if (!reserve(b, n)) return;
    if (n) memcpy(b->s + b->n, d, n);
    b->n += n;
    b->s[b->n] = 0;
}
