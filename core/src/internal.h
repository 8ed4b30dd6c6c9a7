/* Internal helpers shared by the core sources; never installed. */
#ifndef MOPT_INTERNAL_H
#define MOPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/fileio.h"
#include "mopt/interrupt.h"
#include "mopt/tensor.h"

#define MOPT_FAIL(err, code, ...) mopt_error_set((err), (code), __func__, __VA_ARGS__)

/* Prefixes "path: " to a failure's message unless it already names path, so
 * every error about a file's contents says which file. */
void mopt_error_name_file(mopt_error *err, const char *path);

/* --- files ------------------------------------------------------------------ */

/* Reads a whole file into a NUL-terminated malloc'd buffer. */
mopt_status mopt_read_file(const char *path, char **data, size_t *len, mopt_error *err);

/* Maps a file read-only into a new buffer (refcount 1). */
mopt_buffer *mopt_buffer_mmap(const char *path, mopt_error *err);
/* Allocates a zeroed, 64-byte aligned heap buffer (refcount 1). */
mopt_buffer *mopt_buffer_heap(size_t size, mopt_error *err);
void mopt_buffer_retain(mopt_buffer *b);
void mopt_buffer_release(mopt_buffer *b);

/* Creates a tensor viewing `data` inside buffer b (takes a new reference).
 * dims are in PyTorch order. */
mopt_tensor *mopt_tensor_view(mopt_buffer *b, void *data, const char *name, mopt_dtype dtype, int32_t ndim,
                              const int64_t *dims, mopt_error *err);

/* OK when writing `path` stays inside the directory `root`: its parent
 * resolves (links included) to root or below, and it is not a link itself. */
mopt_status mopt_path_check_within(const char *root, const char *path, mopt_error *err);

int mopt_file_exists(const char *path);
int mopt_dir_exists(const char *path);
/* Joins dir and name into out (cap bytes); returns out or NULL when too long. */
char *mopt_path_join(char *out, size_t cap, const char *dir, const char *name);

/* --- plugins --------------------------------------------------------------- */

#define MOPT_MAX_PASS_OPTS 256
struct mopt_pass_desc;
/* Checks a pass descriptor's kind and option schema (names, types, choices,
 * defaults) before anything uses it. */
mopt_status mopt_pass_desc_check(const struct mopt_pass_desc *pass, mopt_error *err);

/* Checked multiply for sizes; returns 0 on overflow. */
int mopt_mul_overflows(uint64_t a, uint64_t b, uint64_t *out);

#endif
