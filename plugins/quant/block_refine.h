/* Descent on a linear's layer loss over a GGUF block grid, after GPTQ (block_refine.c). */
#ifndef MOPT_BLOCK_REFINE_H
#define MOPT_BLOCK_REFINE_H

#include "passes.h"

/* blocks [out, in / block] of `type`, quantized from W0 [out, in]; H [in, in] symmetric: `rounds` times, a sweep
 * moving each value to its best level, then each row's d and dmin by least squares. f never rises. */
mopt_status block_refine(const mopt_host_api *h, const float *H, int64_t in, const float *W0, int64_t out, int32_t type,
                         uint8_t *blocks, int rounds, mopt_error *err);

#endif
