/* The device context: GPU selection with a clear error when there is none,
 * one stream and cuBLAS handle, device memory, copies and event timing. */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_impl.h"

mopt_status cuda_fail(mopt_error *err, cudaError_t e, const char *what) {
    return mopt_error_set(err, MOPT_E_BACKEND, "cuda", "%s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

mopt_status blas_fail(mopt_error *err, cublasStatus_t s, const char *what) {
    return mopt_error_set(err, MOPT_E_BACKEND, "cuda", "%s: cuBLAS status %d", what, (int)s);
}

mopt_status mopt_cuda_open(int32_t device, mopt_cuda **out, mopt_error *err) {
    *out = NULL;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e == cudaErrorInsufficientDriver)
        return mopt_error_set(err, MOPT_E_BACKEND, "cuda",
                              "no usable CUDA driver: none is installed, or it is older than the CUDA runtime mopt was built with "
                              "(run on the CPU: leave out --device cuda)");
    if (e == cudaErrorNoDevice || (e == cudaSuccess && n == 0))
        return mopt_error_set(err, MOPT_E_BACKEND, "cuda", "no CUDA GPU found on this machine (run on the CPU: leave out --device cuda)");
    if (e != cudaSuccess)
        return mopt_error_set(err, MOPT_E_BACKEND, "cuda", "the CUDA driver cannot be used: %s (run on the CPU: leave out --device cuda)",
                              cudaGetErrorString(e));
    if (device < 0) device = 0;
    if (device >= n) return mopt_error_set(err, MOPT_E_INVALID, "cuda", "cuda:%d asked for, but this machine has %d GPU(s)", device, n);
    CU(cudaSetDevice(device), "cudaSetDevice");
    cudaDeviceProp p;
    CU(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties");
    mopt_cuda *c = (mopt_cuda *)calloc(1, sizeof *c);
    if (!c) return mopt_error_set(err, MOPT_E_NOMEM, "cuda", "out of memory");
    c->device = device;
    snprintf(c->name, sizeof c->name, "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor, p.multiProcessorCount,
             (double)p.totalGlobalMem / (1 << 30));
    mopt_status st = MOPT_OK;
    if ((e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) st = cuda_fail(err, e, "cudaStreamCreate");
    cublasStatus_t b = CUBLAS_STATUS_SUCCESS;
    if (!st && (b = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS) st = blas_fail(err, b, "cublasCreate");
    if (!st && (b = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS) st = blas_fail(err, b, "cublasSetStream");
    /* A workspace of our own, so that cuBLAS allocates nothing while a CUDA graph is being captured. */
    if (!st && (e = cudaMalloc(&c->blas_ws, CUDA_BLAS_WORKSPACE)) != cudaSuccess) st = cuda_fail(err, e, "cudaMalloc (cuBLAS workspace)");
    if (!st && (b = cublasSetWorkspace(c->blas, c->blas_ws, CUDA_BLAS_WORKSPACE)) != CUBLAS_STATUS_SUCCESS)
        st = blas_fail(err, b, "cublasSetWorkspace");
    if (st) {
        mopt_cuda_close(c);
        return st;
    }
    *out = c;
    return MOPT_OK;
}

void mopt_cuda_close(mopt_cuda *c) {
    if (!c) return;
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->blas) cublasDestroy(c->blas);
    cudaFree(c->blas_ws);
    cudaFree(c->scratch);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

const char *mopt_cuda_name(const mopt_cuda *c) { return c->name; }

mopt_status mopt_cuda_alloc(mopt_cuda *c, size_t bytes, void **out, mopt_error *err) {
    (void)c;
    *out = NULL;
    cudaError_t e = cudaMalloc(out, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        *out = NULL;
        return mopt_error_set(err, MOPT_E_NOMEM, "cuda", "cannot allocate %.1f MiB on the GPU: %s", (double)bytes / (1 << 20),
                              cudaGetErrorString(e));
    }
    return MOPT_OK;
}

void mopt_cuda_free(void *p) { cudaFree(p); }

mopt_status mopt_cuda_copy(mopt_cuda *c, void *dst, const void *src, size_t bytes, int kind, mopt_error *err) {
    const cudaMemcpyKind k = kind == 0 ? cudaMemcpyHostToDevice : kind == 1 ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
    CU(cudaMemcpyAsync(dst, src, bytes, k, c->stream), "cudaMemcpyAsync");
    return MOPT_OK;
}

mopt_status mopt_cuda_sync(mopt_cuda *c, mopt_error *err) {
    CU(cudaStreamSynchronize(c->stream), "the GPU's work");
    return MOPT_OK;
}

/* Grows the context's scratch to at least `bytes` (never inside a graph capture: the first run sizes it). */
mopt_status cuda_scratch(mopt_cuda *c, size_t bytes, void **out, mopt_error *err) {
    if (bytes > c->scratch_bytes) {
        CU(cudaStreamSynchronize(c->stream), "the GPU's work");
        cudaFree(c->scratch);
        c->scratch = NULL;
        c->scratch_bytes = 0;
        CU(cudaMalloc(&c->scratch, bytes), "cudaMalloc (scratch)");
        c->scratch_bytes = bytes;
    }
    *out = c->scratch;
    return MOPT_OK;
}

mopt_status mopt_cuda_time(mopt_cuda *c, mopt_status (*fn)(void *user, mopt_error *err), void *user, int32_t reps, int as_graph,
                           double *ms, mopt_error *err) {
    *ms = 0;
    if (reps < 1) reps = 1;
    mopt_status st = fn(user, err); /* warm-up, and sizes the scratch before any capture */
    if (st) return st;
    CU(cudaStreamSynchronize(c->stream), "the GPU's work");
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    cudaError_t e = cudaSuccess;
    float t = 0;
    if (as_graph) {
        CU(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
        st = fn(user, err);
        e = cudaStreamEndCapture(c->stream, &graph);
        if (st) goto done;
        if (e != cudaSuccess) {
            st = cuda_fail(err, e, "cudaStreamEndCapture");
            goto done;
        }
        if ((e = cudaGraphInstantiate(&exec, graph, 0)) != cudaSuccess) {
            st = cuda_fail(err, e, "cudaGraphInstantiate");
            goto done;
        }
        if ((e = cudaGraphLaunch(exec, c->stream)) != cudaSuccess) {
            st = cuda_fail(err, e, "cudaGraphLaunch");
            goto done;
        }
    }
    if ((e = cudaEventCreate(&e0)) != cudaSuccess || (e = cudaEventCreate(&e1)) != cudaSuccess ||
        (e = cudaEventRecord(e0, c->stream)) != cudaSuccess) {
        st = cuda_fail(err, e, "cudaEvent");
        goto done;
    }
    for (int32_t r = 0; r < reps && !st; r++) {
        if (exec) {
            if ((e = cudaGraphLaunch(exec, c->stream)) != cudaSuccess) st = cuda_fail(err, e, "cudaGraphLaunch");
        } else {
            st = fn(user, err);
        }
    }
    if (st) goto done;
    if ((e = cudaEventRecord(e1, c->stream)) != cudaSuccess || (e = cudaEventSynchronize(e1)) != cudaSuccess) {
        st = cuda_fail(err, e, "the timed work");
        goto done;
    }
    if ((e = cudaEventElapsedTime(&t, e0, e1)) != cudaSuccess) {
        st = cuda_fail(err, e, "cudaEventElapsedTime");
        goto done;
    }
    *ms = (double)t / reps;
done:
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    return st;
}
