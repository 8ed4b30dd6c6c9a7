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

/* Writes entries to `name` inside the export directory. */
mopt_status st_write_file(const mopt_host_api *h, const atomic_dir *d, const char *name, st_entry *e, int32_t n,
                          mopt_error *err);

#endif
