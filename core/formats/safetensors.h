/* safetensors reader: every offset and size is checked against the file. */
#ifndef MOPT_SAFETENSORS_H
#define MOPT_SAFETENSORS_H

#include "mopt/error.h"
#include "mopt/tensor.h"

/* Maps `path` and returns its tensors as views into the mapping (one
 * malloc'd array of *n tensor pointers; the caller owns both the array and
 * the tensors). Tensors whose data is misaligned for their dtype are copied
 * to the heap. Fails with MOPT_E_FORMAT naming the file and the problem. */
mopt_status mopt_safetensors_read(const char *path, mopt_tensor ***tensors, int32_t *n, mopt_error *err);

#endif
