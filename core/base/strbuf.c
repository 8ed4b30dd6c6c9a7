/* A growable string (strbuf.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "strbuf.h"

void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) return;
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)k;
        char *p = realloc(b->s, nc);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = nc;
    }
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
