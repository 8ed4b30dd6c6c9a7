/* The tensor layer's internals: buffers and views. Never installed. */
#ifndef MOPT_TENSOR_IMPL_H
#define MOPT_TENSOR_IMPL_H

#include "base.h"
#include "mopt/tensor.h"

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

/* Columns [col0, col0 + n) of a 2-D float tensor [R, C], transposed into a new
 * heap tensor [n, R] of the same dtype named `name`: out[i][j] = t[j][col0 + i]
 * (a Conv1D weight [in, out] becomes a linear [out, in]). */
mopt_tensor *mopt_tensor_transpose2d(const mopt_tensor *t, const char *name, int64_t col0, int64_t n, mopt_error *err);

#endif
