/* Writes safetensors files for tests (so bad inputs can be built byte by byte). */
#ifndef MOPT_TEST_ST_WRITER_H
#define MOPT_TEST_ST_WRITER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_item {
    const char *name;
    const char *dtype; /* "F32", "BF16", ... as written in the header */
    int ndim;
    int64_t shape[4];
    const void *data;
    size_t nbytes;
} st_item;

/* Writes items to path; extra_header (may be NULL) is appended inside the JSON object. */
static void st_write(const char *path, const st_item *items, int n, const char *extra_header) {
    size_t cap = 4096 + (size_t)n * 256, len = 0;
    char *h = malloc(cap);
    len += (size_t)snprintf(h + len, cap - len, "{");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "",
                                items[i].name, items[i].dtype);
        for (int d = 0; d < items[i].ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)items[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off, off + items[i].nbytes);
        off += items[i].nbytes;
    }
    if (extra_header) len += (size_t)snprintf(h + len, cap - len, "%s%s", n ? "," : "", extra_header);
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8) h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    uint64_t hl = len;
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, len, f);
    for (int i = 0; i < n; i++) fwrite(items[i].data, 1, items[i].nbytes, f);
    fclose(f);
    free(h);
}

#endif
