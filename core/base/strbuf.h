/* A growable string for messages, help text and rendered reports, and a byte
 * buffer for file headers. */
#ifndef MOPT_STRBUF_H
#define MOPT_STRBUF_H

#include <stddef.h>

typedef struct sbuf {
    char *s;     /* NUL-terminated once anything was appended; malloc'd */
    size_t n, cap;
    int oom;     /* an allocation failed: later appends are dropped */
} sbuf;

/* Appends printf-style text (never truncates; on allocation failure sets oom). */
void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends text with <, >, & and " escaped for HTML. */
void sb_html(sbuf *b, const char *t);

/* Appends n bytes (which may hold NULs). */
void sb_put(sbuf *b, const void *d, size_t n);

#endif
