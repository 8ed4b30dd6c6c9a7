/* safetensors reader: every offset and size is checked against the file. */
#ifndef MOPT_SAFETENSORS_H
#define MOPT_SAFETENSORS_H

#include "mopt/error.h"
#include "mopt/formats.h"
#include "mopt/tensor.h"

/* Maps `path` and returns its tensors as views into the mapping (one
 * malloc'd array of *n tensor pointers; the caller owns both the array and
 * the tensors). Tensors whose data is misaligned for their dtype are copied
 * to the heap. Fails with MOPT_E_FORMAT naming the file and the problem. */
mopt_status mopt_safetensors_read(const char *path, mopt_tensor ***tensors, int32_t *n, mopt_error *err);

/* Stores v as element i of an array of safetensors dtype "F32", "F16" or "BF16"
 * (round to nearest even; NaN stays NaN). */
void mopt_st_store_float(const char *dtype, void *dst, int64_t i, float v);
/* The safetensors float dtype a float tensor keeps ("F32", "BF16", else "F16"). */
const char *mopt_st_float_dtype(const mopt_tensor *t);

#endif
