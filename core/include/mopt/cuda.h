/* The CUDA backend's linears: the API of libmopt-cuda.so, built only where
 * CMake finds the CUDA toolkit. libmopt loads it at run time for sessions on
 * a GPU (mopt_session_opts.device); a program may also link it and call it
 * directly. A weight is uploaded once in its stored form, packed
 * levels, scales and zero-points as mopt/quant.h lays them out, and run by
 * kernels that read that form.
 *
 * Decode (T <= MOPT_CUDA_GEMV_MAX_T tokens) runs GEMV kernels in fp32: the
 * weight widened in registers, x as given, so y matches the CPU's fp32 dot
 * up to summation order (QINT 4- and 8-bit rows in whole groups: against x
 * quantized to int8 per 32 values, exactly as the CPU does). Prefill runs
 * cuBLAS with fp32 accumulation: bf16/f16 weights as stored against x split
 * into two 16-bit halves (two GEMMs: fp32 activations' accuracy), QINT weights
 * widened to bf16 in a scratch buffer against x rounded to bf16, f32 weights
 * in fp32 SGEMM (no TF32). W8A8 runs in integers in both (see
 * mopt_cuda_upload).
 *
 * Every call returns MOPT_OK or fails with one line in err; nothing here exits. */
#ifndef MOPT_CUDA_H
#define MOPT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MOPT_CUDA_GEMV_MAX_T 8

typedef struct mopt_cuda mopt_cuda;
typedef struct mopt_cuda_linear mopt_cuda_linear;

/* Opens GPU `device` (-1: 0) with its own stream and cuBLAS handle. Without a
 * driver or a GPU it fails with MOPT_E_BACKEND and a line saying which. */
mopt_status mopt_cuda_open(int32_t device, mopt_cuda **out, mopt_error *err);
void mopt_cuda_close(mopt_cuda *c);
/* "NVIDIA H200 (sm_90, 132 SMs, 140.4 GiB)" */
const char *mopt_cuda_name(const mopt_cuda *c);

/* Device memory and copies on the context's stream (kind: 0 host to device,
 * 1 device to host, 2 device to device). */
mopt_status mopt_cuda_alloc(mopt_cuda *c, size_t bytes, void **out, mopt_error *err);
void mopt_cuda_free(void *p);
mopt_status mopt_cuda_copy(mopt_cuda *c, void *dst, const void *src, size_t bytes, int kind, mopt_error *err);
mopt_status mopt_cuda_sync(mopt_cuda *c, mopt_error *err);

/* Uploads weight w [out, in]: F32, F16, BF16, QINT of 2, 3, 4 or 8 bits
 * (groups, zero-points or symmetric, act-order g_idx), or W8A8 (x quantized
 * per token on the GPU as on the CPU; decode by dp4a, prefill by cuBLAS's int8
 * GEMM; every output the CPU's bit for bit). Other dtypes, and QINT with FP8
 * activations or weights (W4A8), fail with MOPT_E_UNSUPPORTED. */
mopt_status mopt_cuda_upload(mopt_cuda *c, const mopt_tensor *w, mopt_cuda_linear **out, mopt_error *err);
void mopt_cuda_linear_free(mopt_cuda_linear *l);
/* Device bytes of the stored weight (levels, scales, zeros, g_idx), what a decode step reads. */
int64_t mopt_cuda_linear_bytes(const mopt_cuda_linear *l);
int64_t mopt_cuda_linear_out(const mopt_cuda_linear *l);
int64_t mopt_cuda_linear_in(const mopt_cuda_linear *l);

/* y [T, out] = x [T, in] @ w^T, x and y fp32 in device memory, queued on the
 * context's stream (no synchronization). */
mopt_status mopt_cuda_linear_run(mopt_cuda *c, const mopt_cuda_linear *l, const float *x, int32_t T, float *y, mopt_error *err);

/* Times fn(user) run `reps` times on the stream with CUDA events, after one
 * untimed run; as_graph: captured once into a CUDA graph and the graph
 * launched, so launch gaps are not counted. ms: milliseconds per run. */
mopt_status mopt_cuda_time(mopt_cuda *c, mopt_status (*fn)(void *user, mopt_error *err), void *user, int32_t reps, int as_graph,
                           double *ms, mopt_error *err);

#ifdef __cplusplus
}
#endif

#endif
