/* Linears on the GPU over weights in their stored form (layouts in mopt/quant.h).
 *
 * Decode (T <= MOPT_CUDA_GEMV_MAX_T):
 *  - f32/f16/bf16: one warp per row, 16-byte loads of the row, fp32 sums.
 *  - QINT 4 and 8 bits in whole groups of whole blocks (every real model's):
 *    the CPU's integer form. x is quantized per 32 values to int8 (scale
 *    max|x| / 127, levels rounded to nearest even: exactly the CPU's
 *    quantize_i8_with), each block's dot is exact in int32 (dp4a), and
 *    y = sum over blocks of s * xd * (levels . xq - z * sum xq).
 *  - other QINT (act-order g_idx, 2 and 3 bits, partial blocks or groups):
 *    each value widened to (q - z) * s in fp32, one warp per row.
 *  - W8A8: x to int8 per token, dp4a, the CPU's scaling (bit for bit).
 * Prefill: cuBLAS (mopt/cuda.h says how each dtype goes in). */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"
#include "mopt/quant.h"

struct mopt_cuda_linear {
    mopt_dtype dtype;
    int64_t out, in;
    int32_t bits, group_size; /* QINT */
    int64_t ng, row_bytes;
    int int_path;  /* QINT rows the integer decode kernel takes */
    void *w;       /* the stored weight */
    __half *scale; /* QINT: [out, ng] */
    float *row_scale; /* W8A8: [out] */
    uint8_t *zero; /* QINT: [out, ng] or NULL (symmetric) */
    int32_t *g_idx;
    int zsym;
    int64_t bytes;
};

#define WARPS 8 /* warps per block of the GEMV kernels */

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* ---- dense GEMV ---- */

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

/* The values of one 16-byte load in fp32. */
__device__ __forceinline__ void widen16(uint4 v, float *f, const float *) {
    f[0] = __uint_as_float(v.x), f[1] = __uint_as_float(v.y), f[2] = __uint_as_float(v.z), f[3] = __uint_as_float(v.w);
}
__device__ __forceinline__ void widen16(uint4 v, float *f, const __nv_bfloat16 *) {
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) f[2 * i] = __uint_as_float(u[i] << 16), f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
}
__device__ __forceinline__ void widen16(uint4 v, float *f, const __half *) {
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 h;
        memcpy(&h, &u[i], 4);
        const float2 p = __half22float2(h);
        f[2 * i] = p.x, f[2 * i + 1] = p.y;
    }
}

/* y[t, row] = w[row] . x[t] for NT tokens; vec: rows start 16-byte aligned and in % 4 == 0. */
template <typename W, int NT>
__global__ void __launch_bounds__(WARPS * 32) gemv_dense(const W *__restrict__ w, int64_t out, int64_t in, int vec,
                                                          const float *__restrict__ x, float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (row >= out) return;
    const W *wr = w + row * in;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0;
    constexpr int PER = 16 / sizeof(W);
    int64_t k0 = 0;
    if (vec) {
        const uint4 *w4 = (const uint4 *)wr;
        const int64_t nc = in / PER;
        constexpr int U = 4; /* loads in flight per lane */
        int64_t c = lane;
        for (; c + (U - 1) * 32 < nc; c += U * 32) {
            uint4 v[U];
#pragma unroll
            for (int u = 0; u < U; u++) v[u] = __ldcs(w4 + c + u * 32);
#pragma unroll
            for (int u = 0; u < U; u++) {
                float f[PER];
                widen16(v[u], f, (const W *)nullptr);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    const float4 *xp = (const float4 *)(x + t * in + (c + u * 32) * PER);
#pragma unroll
                    for (int q = 0; q < PER / 4; q++) {
                        const float4 xv = __ldg(xp + q);
                        acc[t] += f[4 * q] * xv.x + f[4 * q + 1] * xv.y + f[4 * q + 2] * xv.z + f[4 * q + 3] * xv.w;
                    }
                }
            }
        }
        for (; c < nc; c += 32) {
            float f[PER];
            widen16(__ldcs(w4 + c), f, (const W *)nullptr);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const float4 *xp = (const float4 *)(x + t * in + c * PER);
#pragma unroll
                for (int q = 0; q < PER / 4; q++) {
                    const float4 xv = __ldg(xp + q);
                    acc[t] += f[4 * q] * xv.x + f[4 * q + 1] * xv.y + f[4 * q + 2] * xv.z + f[4 * q + 3] * xv.w;
                }
            }
        }
        k0 = nc * PER;
    }
    for (int64_t k = k0 + lane; k < in; k += 32) { /* rows that are not 16-byte aligned, and the tail */
        const float wv = to_f32(wr[k]);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += wv * x[t * in + k];
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) y[t * out + row] = s;
    }
}

/* ---- QINT: levels, the integer decode kernel, the generic one and widening ---- */

__device__ __forceinline__ int qint_level(const uint8_t *block, int bits, int j) {
    switch (bits) {
    case 8: return block[j];
    case 4: return j < 16 ? block[j] & 15 : block[j - 16] >> 4;
    case 2: return (block[j & 7] >> (2 * (j >> 3))) & 3;
    default: return ((block[j & 7] >> (2 * (j >> 3))) & 3) | ((block[8 + (j >> 3)] >> (j & 7)) & 1) << 2; /* 3 bits */
    }
}

/* w[row, col] = (q - z) * s of any QINT layout */
__device__ __forceinline__ float qint_value(const mopt_cuda_linear &l, const uint8_t *w, const __half *scale, const uint8_t *zero,
                                            const int32_t *g_idx, int64_t row, int64_t col) {
    const int bb = l.bits * 4;
    const int q = qint_level(w + row * l.row_bytes + (col >> 5) * bb, l.bits, (int)(col & 31));
    const int64_t g = g_idx ? g_idx[col] : l.group_size > 0 ? col / l.group_size : 0;
    const int z = zero ? zero[row * l.ng + g] : l.zsym;
    return (float)(q - z) * __half2float(scale[row * l.ng + g]);
}

template <int NT>
__global__ void __launch_bounds__(WARPS * 32) gemv_qint_any(mopt_cuda_linear l, const float *__restrict__ x, float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (row >= l.out) return;
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0;
    for (int64_t k = lane; k < l.in; k += 32) {
        const float wv = qint_value(l, (const uint8_t *)l.w, l.scale, l.zero, l.g_idx, row, k);
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += wv * x[t * l.in + k];
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) y[t * l.out + row] = s;
    }
}

/* x [T, in] to int8 per 32 values: one warp per block, lane i the block's value i. As the CPU's
 * quantize_token_i8: s = max|x| / 127 (1 for a block of zeros), level = x / s clamped to +-127 and
 * rounded to nearest even. xs: the block's sum of levels. */
__global__ void quantize_x8(const float *__restrict__ x, int64_t nblocks, int8_t *__restrict__ xq, float *__restrict__ xd,
                            int32_t *__restrict__ xs) {
    const int64_t b = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (b >= nblocks) return;
    const int lane = threadIdx.x & 31;
    const float v = x[b * 32 + lane];
    float m = fabsf(v);
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    const float s = m > 0 ? m / 127.0f : 1.0f;
    float q = v / s;
    q = q >= -127.f ? (q <= 127.f ? q : 127.f) : -127.f;
    q = rintf(q);
    xq[b * 32 + lane] = (int8_t)q;
    int sum = (int)q;
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) xd[b] = s, xs[b] = sum;
}

/* a (4 unsigned bytes) . b (4 signed bytes) + c */
__device__ __forceinline__ int dp4a_us(uint32_t a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

/* A block's levels for R rows with their group's scale and zero-point, loaded together so that every load is
 * in flight before the first use. */
template <int BITS, int R>
struct q8_rows {
    uint4 q[R][BITS / 4];
    float s[R];
    int z[R];
};

template <int BITS, int R>
__device__ __forceinline__ void q8_load(q8_rows<BITS, R> &d, const mopt_cuda_linear &l, const int64_t (&rows)[R], int64_t b, int64_t g) {
    const uint8_t *w = (const uint8_t *)l.w;
#pragma unroll
    for (int r = 0; r < R; r++) {
#pragma unroll
        for (int k = 0; k < BITS / 4; k++) d.q[r][k] = __ldcs((const uint4 *)(w + rows[r] * l.row_bytes + b * (BITS * 4)) + k);
        d.s[r] = __half2float(l.scale[rows[r] * l.ng + g]);
        d.z[r] = l.zero ? l.zero[rows[r] * l.ng + g] : l.zsym;
    }
}

/* One block b of R rows (loaded by q8_load) against NT tokens' int8 x, into acc. */
template <int BITS, int R, int NT>
__device__ __forceinline__ void q8_block(const q8_rows<BITS, R> &d, int64_t b, const mopt_cuda_linear &l, const int8_t *__restrict__ xq,
                                         const float *__restrict__ xd, const int32_t *__restrict__ xs, int64_t nb, float (&acc)[R][NT]) {
    constexpr int W4 = BITS / 4;
    const auto &q = d.q;
    const auto &s = d.s;
    const auto &z = d.z;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const int4 *xp = (const int4 *)(xq + t * l.in + b * 32);
        const int4 xa = __ldg(xp), xb = __ldg(xp + 1);
        const int xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
        const float dx = xd[t * nb + b]; /* the block's x scale */
        const int sq = xs[t * nb + b];
#pragma unroll
        for (int r = 0; r < R; r++) {
            int dot = 0;
            if (BITS == 4) {
                const uint32_t u[4] = {q[r][0].x, q[r][0].y, q[r][0].z, q[r][0].w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    dot = __dp4a((int)(u[i] & 0x0f0f0f0fu), xv[i], dot);          /* values 4i..4i+3 */
                    dot = __dp4a((int)((u[i] >> 4) & 0x0f0f0f0fu), xv[4 + i], dot); /* values 16+4i.. */
                }
            } else {
#pragma unroll
                for (int k = 0; k < W4; k++) {
                    const uint32_t u[4] = {q[r][k].x, q[r][k].y, q[r][k].z, q[r][k].w};
#pragma unroll
                    for (int i = 0; i < 4; i++) dot = dp4a_us(u[i], xv[4 * k + i], dot);
                }
            }
            acc[r][t] += s[r] * dx * (float)(dot - z[r] * sq);
        }
    }
}

/* The integer GEMV's shape, settable at build time for tuning: on an H200 two rows per warp, two blocks per lane
 * and no occupancy floor measured best of the nine tried (docs/BENCHMARKS.md, issue 16). */
#ifndef Q8_ROWS
#define Q8_ROWS 2 /* rows per warp */
#endif
#ifndef Q8_BLOCKS
#define Q8_BLOCKS 2 /* blocks per lane loaded before the first is used */
#endif
#ifndef Q8_MIN_CTAS
#define Q8_MIN_CTAS 1 /* CTAs per SM the register budget must allow */
#endif

/* 4- or 8-bit rows of whole groups of whole blocks against int8 x: Q8_ROWS rows per warp, each lane Q8_BLOCKS
 * blocks at a time (16 or 32 bytes of levels per row each, all loaded before the first is used), every block's
 * dot exact in int32. */
template <int BITS, int NT>
__global__ void __launch_bounds__(WARPS * 32, Q8_MIN_CTAS) gemv_qint_q8(mopt_cuda_linear l, int64_t bpg, const int8_t *__restrict__ xq,
                                                            const float *__restrict__ xd, const int32_t *__restrict__ xs,
                                                            float *__restrict__ y) {
    constexpr int R = Q8_ROWS, U = Q8_BLOCKS;
    const int lane = threadIdx.x & 31;
    const int64_t row0 = ((int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5)) * R;
    if (row0 >= l.out) return;
    const int64_t nb = l.in / 32;
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[r][t] = 0;
    int64_t rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = row0 + r < l.out ? row0 + r : l.out - 1; /* a missing row repeats the last, unwritten */
    for (int64_t b0 = lane; b0 < nb; b0 += 32 * U) {
        q8_rows<BITS, R> d[U];
#pragma unroll
        for (int u = 0; u < U; u++) { /* past the row: b0 again, loaded but not used */
            const int64_t b = b0 + 32 * u < nb ? b0 + 32 * u : b0;
            q8_load(d[u], l, rows, b, b / bpg);
        }
#pragma unroll
        for (int u = 0; u < U; u++)
            if (b0 + 32 * u < nb) q8_block<BITS, R, NT>(d[u], b0 + 32 * u, l, xq, xd, xs, nb, acc);
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float v = warp_sum(acc[r][t]);
            if (lane == 0 && row0 + r < l.out) y[t * l.out + row0 + r] = v;
        }
}

/* dst [out, in] = the QINT weight widened to bf16, for prefill GEMMs: a thread per 32-value block, its
 * values written 8 at a time where rows are 16-byte aligned */
__global__ void widen_qint(mopt_cuda_linear l, int64_t nbr, __nv_bfloat16 *__restrict__ dst) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= l.out * nbr) return;
    const int64_t row = i / nbr, c0 = (i - row * nbr) * 32;
    const uint8_t *blk = (const uint8_t *)l.w + row * l.row_bytes + (c0 / 32) * (l.bits * 4);
    __nv_bfloat16 *d = dst + row * l.in + c0;
    if (l.in % 8 == 0 && c0 + 32 <= l.in && !l.g_idx) {
        const int64_t g = l.group_size > 0 ? c0 / l.group_size : 0;
        const int z = l.zero ? l.zero[row * l.ng + g] : l.zsym;
        const float s = __half2float(l.scale[row * l.ng + g]);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            __nv_bfloat16 v[8];
#pragma unroll
            for (int j = 0; j < 8; j++) v[j] = __float2bfloat16_rn((float)(qint_level(blk, l.bits, 8 * k + j) - z) * s);
            uint4 u;
            memcpy(&u, v, 16);
            ((uint4 *)d)[k] = u;
        }
        return;
    }
    for (int j = 0; j < 32 && c0 + j < l.in; j++)
        d[j] = __float2bfloat16_rn(qint_value(l, (const uint8_t *)l.w, l.scale, l.zero, l.g_idx, row, c0 + j));
}

/* x fp32 as hi + lo in the weight's 16-bit type, each rounded to nearest even: hi alone is x to 2^-9 (bf16),
 * hi + lo to about 2^-17, so two GEMMs, one on each, keep fp32 activations' accuracy on 16-bit tensor cores.
 * lo NULL: hi only. */
__device__ __forceinline__ void round16(float v, __nv_bfloat16 *d) { *d = __float2bfloat16_rn(v); }
__device__ __forceinline__ void round16(float v, __half *d) { *d = __float2half_rn(v); }

template <typename H>
__global__ void split_x(const float *__restrict__ x, int64_t n, H *__restrict__ hi, H *__restrict__ lo) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    H h;
    round16(x[i], &h);
    hi[i] = h;
    if (lo) round16(x[i] - to_f32(h), &lo[i]);
}

/* ---- W8A8: int8 weights with a scale per row, x quantized per token ---- */

/* x [T, in] to int8 per token, as the CPU's quantize_token_i8: s = max|x| / 127 (1 for a token of zeros), level =
 * x / s clamped to +-127 and rounded to nearest even. One CTA per token. */
__global__ void __launch_bounds__(256) quantize_tokens(const float *__restrict__ x, int64_t in, int8_t *__restrict__ xq,
                                                       float *__restrict__ xs) {
    __shared__ float part[8];
    const int64_t t = blockIdx.x;
    const float *xt = x + t * in;
    float m = 0;
    for (int64_t i = threadIdx.x; i < in; i += 256) m = fmaxf(m, fabsf(xt[i]));
    for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = m;
    __syncthreads();
    m = part[0];
    for (int k = 1; k < 8; k++) m = fmaxf(m, part[k]);
    const float s = m > 0 ? m / 127.0f : 1.0f;
    for (int64_t i = threadIdx.x; i < in; i += 256) {
        float q = xt[i] / s;
        q = q >= -127.f ? (q <= 127.f ? q : 127.f) : -127.f;
        xq[t * in + i] = (int8_t)rintf(q);
    }
    if (threadIdx.x == 0) xs[t] = s;
}

/* y = (float)(w . xq) * s[row] * xs[t], the CPU's expression, so every value is the CPU's bit for bit (the int32
 * sum is exact in any order). One warp per row; vec: rows and x rows 16-byte aligned (in % 16 == 0). */
template <int NT>
__global__ void __launch_bounds__(WARPS * 32) gemv_w8a8(const int8_t *__restrict__ w, const float *__restrict__ ws, int64_t out, int64_t in,
                                                         int vec, const int8_t *__restrict__ xq, const float *__restrict__ xs,
                                                         float *__restrict__ y) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (row >= out) return;
    const int8_t *wr = w + row * in;
    int acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0;
    int64_t k0 = 0;
    if (vec) {
        const int64_t nc = in / 16;
        for (int64_t c = lane; c < nc; c += 32) {
            const int4 v = __ldcs((const int4 *)wr + c);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                const int4 xv = __ldg((const int4 *)(xq + t * in) + c);
                acc[t] = __dp4a(v.x, xv.x, acc[t]);
                acc[t] = __dp4a(v.y, xv.y, acc[t]);
                acc[t] = __dp4a(v.z, xv.z, acc[t]);
                acc[t] = __dp4a(v.w, xv.w, acc[t]);
            }
        }
        k0 = nc * 16;
    }
    for (int64_t k = k0 + lane; k < in; k += 32)
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += (int)wr[k] * (int)xq[t * in + k];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int v = acc[t];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) y[t * out + row] = (float)v * ws[row] * xs[t];
    }
}

/* y [T, out] = (float)sums * s[row] * xs[t] after cuBLAS's int32 GEMM */
__global__ void scale_w8a8(const int32_t *__restrict__ sums, const float *__restrict__ ws, const float *__restrict__ xs, int64_t out,
                           int64_t n, float *__restrict__ y) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = (float)sums[i] * ws[i % out] * xs[i / out];
}

/* ---- upload ---- */

extern "C" void mopt_cuda_linear_free(mopt_cuda_linear *l) {
    if (!l) return;
    cudaFree(l->w);
    cudaFree(l->scale);
    cudaFree(l->row_scale);
    cudaFree(l->zero);
    cudaFree(l->g_idx);
    free(l);
}

extern "C" int64_t mopt_cuda_linear_bytes(const mopt_cuda_linear *l) { return l->bytes; }
extern "C" int64_t mopt_cuda_linear_out(const mopt_cuda_linear *l) { return l->out; }
extern "C" int64_t mopt_cuda_linear_in(const mopt_cuda_linear *l) { return l->in; }

/* dst = a device copy of bytes at src */
static mopt_status upload_bytes(mopt_cuda *c, const void *src, size_t bytes, void **dst, int64_t *total, mopt_error *err) {
    CU(cudaMalloc(dst, bytes ? bytes : 1), "cudaMalloc (weights)");
    CU(cudaMemcpyAsync(*dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "cudaMemcpy (weights)");
    *total += (int64_t)bytes;
    return MOPT_OK;
}

/* Checks a QINT tensor's side data against its shape before anything is read. */
static mopt_status check_qint(const mopt_tensor *w, mopt_error *err) {
    const mopt_quant_info *q = w->quant;
    const int64_t out = w->ne[1], in = w->ne[0];
    const int32_t bb = q ? mopt_qint_block_bytes(q->bits) : 0;
    if (!q || !bb) return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: QINT weight without a supported bit width", w->name);
    if (q->flags & (MOPT_QUANT_ACT_PER_TOKEN | MOPT_QUANT_ACT_STATIC | MOPT_QUANT_W_FP8))
        return mopt_error_set(err, MOPT_E_UNSUPPORTED, "cuda", "%s: QINT with FP8 activations or weights (W4A8) does not run on the GPU yet",
                              w->name);
    if (q->group_size != -1 && (q->group_size <= 0 || q->group_size % 32))
        return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: group size %d is not a multiple of 32", w->name, q->group_size);
    const int64_t ng = mopt_qint_n_groups(in, q->group_size);
    if (w->nb[1] != (size_t)((in + 31) / 32 * bb))
        return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: rows of %zu bytes, %lld expected", w->name, w->nb[1],
                              (long long)((in + 31) / 32 * bb));
    const mopt_tensor *s = q->scale, *z = q->zero, *g = q->g_idx;
    if (!s || s->dtype != MOPT_DTYPE_F16 || s->ne[0] != ng || s->ne[1] != out)
        return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: scales are not F16 [%lld, %lld]", w->name, (long long)out, (long long)ng);
    if (z && (z->dtype != MOPT_DTYPE_U8 || z->ne[0] != ng || z->ne[1] != out))
        return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: zero-points are not U8 [%lld, %lld]", w->name, (long long)out, (long long)ng);
    if (g) {
        if (g->dtype != MOPT_DTYPE_I32 || mopt_tensor_nelements(g) != in)
            return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: g_idx is not I32 [%lld]", w->name, (long long)in);
        const int32_t *gi = (const int32_t *)g->data;
        for (int64_t i = 0; i < in; i++)
            if (gi[i] < 0 || gi[i] >= ng)
                return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: g_idx[%lld] = %d is outside [0, %lld)", w->name, (long long)i, gi[i],
                                      (long long)ng);
    }
    return MOPT_OK;
}

/* W8A8: rows of `in` int8 values, one F32 scale per row. */
static mopt_status check_w8a8(const mopt_tensor *w, mopt_error *err) {
    const mopt_tensor *s = w->quant ? w->quant->scale : NULL;
    if (w->nb[1] != (size_t)w->ne[0])
        return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: w8a8 rows of %zu bytes, %lld expected", w->name, w->nb[1], (long long)w->ne[0]);
    if (!s || s->dtype != MOPT_DTYPE_F32 || mopt_tensor_nelements(s) != w->ne[1])
        return mopt_error_set(err, MOPT_E_FORMAT, "cuda", "%s: w8a8 scales are not F32 [%lld]", w->name, (long long)w->ne[1]);
    return MOPT_OK;
}

extern "C" mopt_status mopt_cuda_upload(mopt_cuda *c, const mopt_tensor *w, mopt_cuda_linear **out, mopt_error *err) {
    *out = NULL;
    const int dense = w->dtype == MOPT_DTYPE_F32 || w->dtype == MOPT_DTYPE_F16 || w->dtype == MOPT_DTYPE_BF16;
    if (!dense && w->dtype != MOPT_DTYPE_QINT && w->dtype != MOPT_DTYPE_W8A8)
        return mopt_error_set(err, MOPT_E_UNSUPPORTED, "cuda", "%s: %s weights do not run on the GPU yet (f32, f16, bf16, QINT and w8a8 do)",
                              w->name, mopt_dtype_name(w->dtype));
    if (w->ne[0] <= 0 || w->ne[1] <= 0 || w->ne[2] != 1 || w->ne[3] != 1)
        return mopt_error_set(err, MOPT_E_INVALID, "cuda", "%s: a linear's weight must be [out, in]", w->name);
    if (dense && !mopt_tensor_is_contiguous(w))
        return mopt_error_set(err, MOPT_E_INVALID, "cuda", "%s: the weight is not contiguous", w->name);
    mopt_status st = w->dtype == MOPT_DTYPE_QINT ? check_qint(w, err) : w->dtype == MOPT_DTYPE_W8A8 ? check_w8a8(w, err) : MOPT_OK;
    if (st) return st;
    mopt_cuda_linear *l = (mopt_cuda_linear *)calloc(1, sizeof *l);
    if (!l) return mopt_error_set(err, MOPT_E_NOMEM, "cuda", "out of memory");
    l->dtype = w->dtype;
    l->out = w->ne[1];
    l->in = w->ne[0];
    if (dense) {
        st = upload_bytes(c, w->data, mopt_tensor_nbytes(w), &l->w, &l->bytes, err);
    } else if (w->dtype == MOPT_DTYPE_W8A8) {
        st = upload_bytes(c, w->data, (size_t)(l->out * l->in), &l->w, &l->bytes, err);
        if (!st) st = upload_bytes(c, w->quant->scale->data, (size_t)l->out * sizeof(float), (void **)&l->row_scale, &l->bytes, err);
    } else {
        const mopt_quant_info *q = w->quant;
        l->bits = q->bits;
        l->group_size = q->group_size;
        l->ng = mopt_qint_n_groups(l->in, q->group_size);
        l->row_bytes = (int64_t)w->nb[1];
        l->zsym = 1 << (q->bits - 1);
        const int64_t gs = q->group_size > 0 ? q->group_size : l->in;
        l->int_path = !q->g_idx && (q->bits == 4 || q->bits == 8) && l->in % 32 == 0 && l->in % gs == 0;
        st = upload_bytes(c, w->data, (size_t)(l->out * l->row_bytes), &l->w, &l->bytes, err);
        if (!st) st = upload_bytes(c, q->scale->data, mopt_tensor_nbytes(q->scale), (void **)&l->scale, &l->bytes, err);
        if (!st && q->zero) st = upload_bytes(c, q->zero->data, mopt_tensor_nbytes(q->zero), (void **)&l->zero, &l->bytes, err);
        if (!st && q->g_idx) st = upload_bytes(c, q->g_idx->data, mopt_tensor_nbytes(q->g_idx), (void **)&l->g_idx, &l->bytes, err);
    }
    if (!st) { /* the host's tensor may go once this returns */
        cudaError_t e = cudaStreamSynchronize(c->stream);
        if (e != cudaSuccess) st = cuda_fail(err, e, "uploading the weights");
    }
    if (st) {
        mopt_cuda_linear_free(l);
        return st;
    }
    *out = l;
    return MOPT_OK;
}

/* ---- run ---- */

static int blocks_for(int64_t n, int per) { return (int)((n + per - 1) / per); }

/* The GEMV kernels are built for 1, 2, 4 and 8 tokens: the largest that fits in what is left. */
static int32_t token_chunk(int32_t left) { return left >= 8 ? 8 : left >= 4 ? 4 : left >= 2 ? 2 : 1; }

template <typename W>
static void launch_dense(const mopt_cuda_linear *l, cudaStream_t s, const float *x, int32_t T, float *y) {
    const int vec = l->in % (16 / (int)sizeof(W)) == 0 && l->in % 4 == 0;
    const int grid = blocks_for(l->out, WARPS);
    for (int32_t t0 = 0; t0 < T;) {
        const int32_t n = token_chunk(T - t0);
        const float *xt = x + (int64_t)t0 * l->in;
        float *yt = y + (int64_t)t0 * l->out;
        const W *w = (const W *)l->w;
        if (n == 8) gemv_dense<W, 8><<<grid, WARPS * 32, 0, s>>>(w, l->out, l->in, vec, xt, yt);
        else if (n == 4) gemv_dense<W, 4><<<grid, WARPS * 32, 0, s>>>(w, l->out, l->in, vec, xt, yt);
        else if (n == 2) gemv_dense<W, 2><<<grid, WARPS * 32, 0, s>>>(w, l->out, l->in, vec, xt, yt);
        else gemv_dense<W, 1><<<grid, WARPS * 32, 0, s>>>(w, l->out, l->in, vec, xt, yt);
        t0 += n;
    }
}

template <int BITS>
static void launch_qint_q8(const mopt_cuda_linear *l, cudaStream_t s, int64_t bpg, const int8_t *xq, const float *xd,
                           const int32_t *xs, int32_t T, float *y) {
    const int grid = blocks_for(l->out, WARPS * Q8_ROWS);
    const int64_t nb = l->in / 32;
    for (int32_t t0 = 0; t0 < T;) {
        const int32_t n = token_chunk(T - t0);
        const int8_t *q = xq + (int64_t)t0 * l->in;
        const float *d = xd + (int64_t)t0 * nb;
        const int32_t *sm = xs + (int64_t)t0 * nb;
        float *yt = y + (int64_t)t0 * l->out;
        if (n == 8) gemv_qint_q8<BITS, 8><<<grid, WARPS * 32, 0, s>>>(*l, bpg, q, d, sm, yt);
        else if (n == 4) gemv_qint_q8<BITS, 4><<<grid, WARPS * 32, 0, s>>>(*l, bpg, q, d, sm, yt);
        else if (n == 2) gemv_qint_q8<BITS, 2><<<grid, WARPS * 32, 0, s>>>(*l, bpg, q, d, sm, yt);
        else gemv_qint_q8<BITS, 1><<<grid, WARPS * 32, 0, s>>>(*l, bpg, q, d, sm, yt);
        t0 += n;
    }
}

static void launch_qint_any(const mopt_cuda_linear *l, cudaStream_t s, const float *x, int32_t T, float *y) {
    const int grid = blocks_for(l->out, WARPS);
    for (int32_t t0 = 0; t0 < T;) {
        const int32_t n = token_chunk(T - t0);
        const float *xt = x + (int64_t)t0 * l->in;
        float *yt = y + (int64_t)t0 * l->out;
        if (n == 8) gemv_qint_any<8><<<grid, WARPS * 32, 0, s>>>(*l, xt, yt);
        else if (n == 4) gemv_qint_any<4><<<grid, WARPS * 32, 0, s>>>(*l, xt, yt);
        else if (n == 2) gemv_qint_any<2><<<grid, WARPS * 32, 0, s>>>(*l, xt, yt);
        else gemv_qint_any<1><<<grid, WARPS * 32, 0, s>>>(*l, xt, yt);
        t0 += n;
    }
}

static size_t align256(size_t n) { return (n + 255) & ~(size_t)255; }

static mopt_status run_decode(mopt_cuda *c, const mopt_cuda_linear *l, const float *x, int32_t T, float *y, mopt_error *err) {
    switch (l->dtype) {
    case MOPT_DTYPE_F32: launch_dense<float>(l, c->stream, x, T, y); break;
    case MOPT_DTYPE_F16: launch_dense<__half>(l, c->stream, x, T, y); break;
    case MOPT_DTYPE_BF16: launch_dense<__nv_bfloat16>(l, c->stream, x, T, y); break;
    default:
        if (!l->int_path) {
            launch_qint_any(l, c->stream, x, T, y);
            break;
        }
        {
            const int64_t nb = (int64_t)T * (l->in / 32);
            void *sc = NULL;
            mopt_status st = cuda_scratch(c, align256((size_t)nb * 32) + 2 * align256((size_t)nb * 4), &sc, err);
            if (st) return st;
            int8_t *xq = (int8_t *)sc;
            float *xd = (float *)((char *)sc + align256((size_t)nb * 32));
            int32_t *xs = (int32_t *)((char *)xd + align256((size_t)nb * 4));
            quantize_x8<<<blocks_for(nb, WARPS), WARPS * 32, 0, c->stream>>>(x, nb, xq, xd, xs);
            const int64_t bpg = (l->group_size > 0 ? l->group_size : l->in) / 32;
            if (l->bits == 4) launch_qint_q8<4>(l, c->stream, bpg, xq, xd, xs, T, y);
            else launch_qint_q8<8>(l, c->stream, bpg, xq, xd, xs, T, y);
        }
    }
    CU(cudaGetLastError(), "a GEMV kernel's launch");
    return MOPT_OK;
}

/* y^T [out, T] (column-major) = W [out, in] (row-major: A^T of a column-major [in, out]) times x^T */
static mopt_status run_prefill(mopt_cuda *c, const mopt_cuda_linear *l, const float *x, int32_t T, float *y, mopt_error *err) {
    const float one = 1.0f, zero = 0.0f;
    const int m = (int)l->out, n = T, k = (int)l->in;
    cublasStatus_t b;
    if (l->dtype == MOPT_DTYPE_F32) {
        b = cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, (const float *)l->w, k, x, k, &zero, y, m);
        return b == CUBLAS_STATUS_SUCCESS ? MOPT_OK : blas_fail(err, b, "cublasSgemm");
    }
    /* 16-bit weights as stored are exact, so x goes in as hi + lo (two GEMMs) and y is as accurate as the CPU's fp32
     * prefill (logits within 1e-3 of transformers'); QINT weights widened to bf16 are rounded already, and x
     * goes in once, rounded. */
    const int f16 = l->dtype == MOPT_DTYPE_F16, split = l->dtype != MOPT_DTYPE_QINT;
    const size_t xbytes = align256((size_t)T * (size_t)k * 2);
    const size_t wbytes = l->dtype == MOPT_DTYPE_QINT ? (size_t)m * (size_t)k * 2 : 0;
    void *sc = NULL;
    mopt_status st = cuda_scratch(c, (split ? 2 : 1) * xbytes + wbytes, &sc, err);
    if (st) return st;
    const int64_t nx = (int64_t)T * k;
    char *hi = (char *)sc, *lo = split ? hi + xbytes : NULL;
    if (f16) split_x<__half><<<blocks_for(nx, 256), 256, 0, c->stream>>>(x, nx, (__half *)hi, (__half *)lo);
    else split_x<__nv_bfloat16><<<blocks_for(nx, 256), 256, 0, c->stream>>>(x, nx, (__nv_bfloat16 *)hi, (__nv_bfloat16 *)lo);
    const void *wd = l->w;
    if (l->dtype == MOPT_DTYPE_QINT) {
        __nv_bfloat16 *wide = (__nv_bfloat16 *)(hi + xbytes);
        const int64_t nbr = (k + 31) / 32;
        widen_qint<<<blocks_for((int64_t)m * nbr, 128), 128, 0, c->stream>>>(*l, nbr, wide);
        wd = wide;
    }
    CU(cudaGetLastError(), "a prefill kernel's launch");
    const cudaDataType_t ty = f16 ? CUDA_R_16F : CUDA_R_16BF;
    b = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, wd, ty, k, hi, ty, k, &zero, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                     CUBLAS_GEMM_DEFAULT);
    if (b == CUBLAS_STATUS_SUCCESS && split)
        b = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, wd, ty, k, lo, ty, k, &one, y, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT);
    return b == CUBLAS_STATUS_SUCCESS ? MOPT_OK : blas_fail(err, b, "cublasGemmEx");
}

/* W8A8: x to int8 per token, then the GEMV (decode) or cuBLAS's int8 GEMM with int32 sums (prefill; the GEMV in
 * chunks of 8 tokens where cuBLAS does not take the shape), each sum scaled as the CPU scales it. */
static mopt_status run_w8a8(mopt_cuda *c, const mopt_cuda_linear *l, const float *x, int32_t T, float *y, mopt_error *err) {
    const int64_t in = l->in, out = l->out;
    const size_t qbytes = align256((size_t)T * (size_t)in), sbytes = align256((size_t)T * sizeof(float));
    const size_t ibytes = T > MOPT_CUDA_GEMV_MAX_T ? (size_t)T * (size_t)out * sizeof(int32_t) : 0;
    void *sc = NULL;
    mopt_status st = cuda_scratch(c, qbytes + sbytes + ibytes, &sc, err);
    if (st) return st;
    int8_t *xq = (int8_t *)sc;
    float *xs = (float *)((char *)sc + qbytes);
    int32_t *sums = (int32_t *)((char *)sc + qbytes + sbytes);
    quantize_tokens<<<T, 256, 0, c->stream>>>(x, in, xq, xs);
    CU(cudaGetLastError(), "quantizing x");
    if (T > MOPT_CUDA_GEMV_MAX_T && in % 4 == 0 && out % 4 == 0) {
        const int32_t one = 1, zero = 0;
        const cublasStatus_t b = cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, T, (int)in, &one, l->w, CUDA_R_8I, (int)in, xq,
                                              CUDA_R_8I, (int)in, &zero, sums, CUDA_R_32I, (int)out, CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
        if (b == CUBLAS_STATUS_SUCCESS) {
            const int64_t n = (int64_t)T * out;
            scale_w8a8<<<blocks_for(n, 256), 256, 0, c->stream>>>(sums, l->row_scale, xs, out, n, y);
            CU(cudaGetLastError(), "scaling the int8 GEMM");
            return MOPT_OK;
        }
        if (b != CUBLAS_STATUS_NOT_SUPPORTED) return blas_fail(err, b, "cublasGemmEx (int8)");
    }
    const int vec = in % 16 == 0, grid = blocks_for(out, WARPS);
    const int8_t *w = (const int8_t *)l->w;
    for (int32_t t0 = 0; t0 < T;) {
        const int32_t n = token_chunk(T - t0);
        const int8_t *q = xq + (int64_t)t0 * in;
        float *yt = y + (int64_t)t0 * out;
        if (n == 8) gemv_w8a8<8><<<grid, WARPS * 32, 0, c->stream>>>(w, l->row_scale, out, in, vec, q, xs + t0, yt);
        else if (n == 4) gemv_w8a8<4><<<grid, WARPS * 32, 0, c->stream>>>(w, l->row_scale, out, in, vec, q, xs + t0, yt);
        else if (n == 2) gemv_w8a8<2><<<grid, WARPS * 32, 0, c->stream>>>(w, l->row_scale, out, in, vec, q, xs + t0, yt);
        else gemv_w8a8<1><<<grid, WARPS * 32, 0, c->stream>>>(w, l->row_scale, out, in, vec, q, xs + t0, yt);
        t0 += n;
    }
    CU(cudaGetLastError(), "a W8A8 GEMV's launch");
    return MOPT_OK;
}

extern "C" mopt_status mopt_cuda_linear_run(mopt_cuda *c, const mopt_cuda_linear *l, const float *x, int32_t T, float *y, mopt_error *err) {
    if (T <= 0) return mopt_error_set(err, MOPT_E_INVALID, "cuda", "a linear needs at least one token, got %d", T);
    CU(cudaSetDevice(c->device), "cudaSetDevice"); /* the calling thread may not be the one that opened the context */
    if (l->in > INT32_MAX || l->out > INT32_MAX)
        return mopt_error_set(err, MOPT_E_UNSUPPORTED, "cuda", "a linear of %lld x %lld is too large for cuBLAS", (long long)l->out, (long long)l->in);
    if (l->dtype == MOPT_DTYPE_W8A8) return run_w8a8(c, l, x, T, y, err);
    return T <= MOPT_CUDA_GEMV_MAX_T ? run_decode(c, l, x, T, y, err) : run_prefill(c, l, x, T, y, err);
}
