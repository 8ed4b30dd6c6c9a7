/* Internals of libmopt-cuda shared by its files. */
#ifndef MOPT_CUDA_IMPL_H
#define MOPT_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "mopt/cuda.h"

#define CUDA_BLAS_WORKSPACE ((size_t)32 << 20)

struct mopt_cuda {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;
    void *scratch; /* x in 16 bits or int8, widened weights for prefill */
    size_t scratch_bytes;
    char name[320];
};

/* On failure of a CUDA runtime call: one line in err naming what failed, and return. */
#define CU(call, what)                                  \
    do {                                                \
        cudaError_t e_ = (call);                        \
        if (e_ != cudaSuccess) return cuda_fail(err, e_, what); \
    } while (0)

mopt_status cuda_fail(mopt_error *err, cudaError_t e, const char *what);
mopt_status blas_fail(mopt_error *err, cublasStatus_t s, const char *what);
mopt_status cuda_scratch(mopt_cuda *c, size_t bytes, void **out, mopt_error *err);

#endif
