/* A safetensors writer: header JSON (sorted names, __metadata__), data in order. */
#ifndef MOPT_ST_WRITER_H
#define MOPT_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "atomic_dir.h"

typedef struct st_entry {
    char name[MOPT_MAX_NAME];
    const char *dtype; /* "F32", "F16", "BF16", "I32", "U8", ... */
    int32_t ndim;
    int64_t shape[4];  /* PyTorch order */
    void *data;        /* owned (malloc) */
    size_t nbytes;
} st_entry;

/* A growing list of entries that owns their data. */
typedef struct st_list {
    st_entry *e;
    int32_t n, cap;
} st_list;

/* Appends a tensor; takes ownership of data (malloc'd), freeing it on failure.
 * shape is in PyTorch order. */
mopt_status st_list_add(const mopt_host_api *h, st_list *l, const char *name, const char *dtype, int32_t ndim,
                        const int64_t *shape, void *data, size_t nbytes, mopt_error *err);
void st_list_free(st_list *l);

/* Stores v as element i of an array of safetensors dtype "F32", "F16" or "BF16"
 * (round to nearest even; NaN stays NaN). */
void st_store_float(const mopt_host_api *h, const char *dtype, void *dst, int64_t i, float v);

/* Writes entries to `name` inside the export directory. */
mopt_status st_write_file(const mopt_host_api *h, const atomic_dir *d, const char *name, st_entry *e, int32_t n,
                          mopt_error *err);

#endif
