/* The base layer: errors, files, JSON, threads, logging, time. Every other
 * layer builds on it; it depends on nothing of mopt's but the public error
 * and file headers. Never installed. */
#ifndef MOPT_BASE_H
#define MOPT_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mopt/error.h"
#include "mopt/fileio.h"
#include "mopt/interrupt.h"
#include "mopt/log.h"

#define MOPT_FAIL(err, code, ...) mopt_error_set((err), (code), __func__, __VA_ARGS__)

/* Prefixes "path: " to a failure's message unless it already names path, so
 * every error about a file's contents says which file. */
void mopt_error_name_file(mopt_error *err, const char *path);

/* --- files ------------------------------------------------------------------ */

/* Reads a whole file into a NUL-terminated malloc'd buffer. */
mopt_status mopt_read_file(const char *path, char **data, size_t *len, mopt_error *err);
/* Maps a regular file read-only: *base is NULL for an empty file. Unmap with mopt_unmap_file. */
mopt_status mopt_map_file(const char *path, void **base, size_t *size, mopt_error *err);
void mopt_unmap_file(void *base, size_t size);

/* Grows *arr (elements of elem bytes, room for *cap) to hold at least need
 * elements, doubling; 0 when out of memory (then *arr and *cap are unchanged). */
int mopt_grow(void **arr, size_t *cap, size_t need, size_t elem);

/* Whether path is a regular file whose first n (<= 16) bytes are magic (never blocks on a FIFO). */
int mopt_file_starts_with(const char *path, const void *magic, size_t n);
int mopt_file_exists(const char *path);
int mopt_dir_exists(const char *path);
/* Joins dir and name into out (cap bytes); returns out or NULL when too long. */
char *mopt_path_join(char *out, size_t cap, const char *dir, const char *name);

/* Checked multiply for sizes; returns 0 on overflow. */
int mopt_mul_overflows(uint64_t a, uint64_t b, uint64_t *out);
/* Writes all n bytes to fd, at offset off (pwrite) or, when off < 0, at the
 * file position; retries interrupted and short writes. 0 or an errno
 * (ENOSPC when the system writes nothing). */
int mopt_write_all(int fd, const void *data, size_t n, int64_t off);

/* --- memory ----------------------------------------------------------------- */

/* Lays a caller's options struct (a uint32_t struct_size first: the caller's sizeof) over dst, which holds the
 * defaults (size bytes): a struct from older headers is shorter, and the fields it lacks keep their defaults.
 * Returns the caller's struct_size (0 for no struct). */
static inline uint32_t mopt_opts_over(void *dst, size_t size, const void *src) {
    if (!src) return 0;
    uint32_t n;
    memcpy(&n, src, sizeof n);
    memcpy(dst, src, n < size ? n : size);
    return n;
}

/* Zeroed, 64-byte aligned memory for an array: weights (streamed front to back every decode step), KV caches
 * (filled as they go and read over and over), the bandwidth probe. From 2 MiB up, anonymous pages of a mapping of
 * its own, 2 MiB-aligned and advised onto transparent huge pages before anything touches them; the kernel zeroes
 * them on first touch, so what is never written costs nothing (a cache read a head at a time strides across pages:
 * on 4 KiB pages decode attention at 1,536 positions spent most of its time in TLB misses). NULL when out of memory;
 * free with mopt_free_zeroed(p, bytes). */
void *mopt_alloc_zeroed(size_t bytes);
void mopt_free_zeroed(void *p, size_t bytes);

/* Monotonic seconds. */
double mopt_now(void);
/* Whether n bytes are well-formed UTF-8 holding no NUL (no overlong forms, surrogates or code points past U+10FFFF). */
int mopt_utf8_text(const char *s, size_t n);

#endif
