/* Safetensors files written one file tensor at a time, for exporters whose
 * tensors are encoded from the graph's: a first walk encodes each to learn its
 * entries (names, dtypes, shapes, sizes) and keeps none of the bytes; then each
 * file is written by the core's mopt_st_writer, every file tensor encoded
 * again and its bytes put in place. The mapped pages of each source are let go
 * after it is read, so an export holds about one tensor however large the model. */
#ifndef MOPT_ST_STREAM_H
#define MOPT_ST_STREAM_H

#include "mopt/plugin.h"

/* Appends the entries of file tensor i to l. Must give the same entries each time. */
typedef mopt_status (*st_encode_fn)(void *user, int32_t i, mopt_st_list *l, mopt_error *err);

typedef struct st_plan {
    mopt_st_entry *e; /* data NULL */
    int32_t *from;    /* the file tensor each entry comes from; one tensor's entries are consecutive */
    int32_t n;
} st_plan;

/* Encodes file tensors [0, n) once; fts[i]'s sources lose their mapped pages after. */
mopt_status st_plan_make(const mopt_host_api *h, const mopt_file_tensor *fts, int32_t n, st_encode_fn enc, void *user, st_plan *p,
                         mopt_error *err);
/* Writes plan entries [first, last) as the safetensors file `path`. */
mopt_status st_plan_write(const mopt_host_api *h, const mopt_file_tensor *fts, const st_plan *p, int32_t first, int32_t last,
                          st_encode_fn enc, void *user, const char *path, mopt_error *err);
void st_plan_free(st_plan *p);

#endif
