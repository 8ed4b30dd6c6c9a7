/* GGUF (version 2 and 3) reading: the whole header is validated against the
 * file size when the file is opened, so the accessors never read out of bounds.
 * Layout (ggml docs/gguf.md): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
 * the key/values, the tensor infos, padding to general.alignment, the data. */
#ifndef MOPT_GGUF_H
#define MOPT_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/tensor.h"

enum {
    GGUF_U8 = 0, GGUF_I8, GGUF_U16, GGUF_I16, GGUF_U32, GGUF_I32, GGUF_F32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY,
    GGUF_U64, GGUF_I64, GGUF_F64, GGUF_N_TYPES
};

typedef struct gguf_tensor {
    char name[MOPT_MAX_NAME];
    int32_t ndim;
    int64_t ne[4];   /* ggml order: ne[0] is the row length */
    int32_t type;    /* ggml type */
    const uint8_t *data;
    uint64_t nbytes;
} gguf_tensor;

typedef struct gguf_file gguf_file;

mopt_status gguf_open(const char *path, gguf_file **out, mopt_error *err);
void gguf_close(gguf_file *f);
/* The mapping the tensors point into (for views; the file keeps its reference). */
mopt_buffer *gguf_buffer(const gguf_file *f);

int64_t gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Scalars: false when the key is absent or of another kind (any integer type
 * reads as an integer, f32/f64 and integers as a number). */
bool gguf_get_int(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_num(const gguf_file *f, const char *key, double *out);
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
/* A string value (not NUL-terminated). */
const char *gguf_get_str(const gguf_file *f, const char *key, uint64_t *len);
/* Arrays: element type and count; false when absent or not an array. */
bool gguf_get_arr(const gguf_file *f, const char *key, int32_t *type, uint64_t *n);
/* Element i of a string array, of a numeric array as a number. */
const char *gguf_arr_str(const gguf_file *f, const char *key, uint64_t i, uint64_t *len);
bool gguf_arr_num(const gguf_file *f, const char *key, uint64_t i, double *out);

/* Writing (gguf_write.c): an importance matrix as llama-imatrix's GGUF
 * layout (imatrix.c documents it), atomically. */
struct mopt_imatrix;
mopt_status gguf_write_imatrix(const char *path, const struct mopt_imatrix *m, mopt_error *err);

#endif
