/* Running a graph: a session holds the KV caches and scratch buffers for one
 * sequence. Prefill many tokens with one call, then decode one at a time; the
 * cache can be rolled back to any earlier length. */
#ifndef MOPT_EXECUTOR_H
#define MOPT_EXECUTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mopt/error.h"
#include "mopt/export.h"
#include "mopt/graph.h"

MOPT_EXTERN_C_BEGIN

typedef struct mopt_session mopt_session;

typedef struct mopt_session_opts {
    uint32_t struct_size; /* sizeof(mopt_session_opts) */
    int32_t n_threads;    /* <= 0: all online cores */
    int32_t max_ctx;      /* <= 0: the architecture's context length */
    int32_t max_batch;    /* tokens per forward call; <= 0: max_ctx */
    /* "cpu", "cuda" or "cuda:N": where the session runs. NULL: $MOPT_DEVICE, else the CPU. On a GPU the
     * linears run there through libmopt-cuda (mopt/cuda.h), the other ops on the CPU. */
    const char *device;
    /* The cache of the layers a graph leaves in float (quant.kv's fp8 and int8 layers keep theirs): "f32" (fp32,
     * exact) or "f16" (IEEE half: half the memory and the bytes a decode step reads at long contexts; each K and V
     * value rounded to nearest even, as llama.cpp's default cache). NULL: $MOPT_KV_CACHE, else "f32". */
    const char *kv_cache;
} mopt_session_opts;

MOPT_API void mopt_session_opts_default(mopt_session_opts *o);

/* The graph must outlive the session and not change while it exists. */
MOPT_API mopt_session *mopt_session_new(const mopt_graph *g, const mopt_session_opts *opts, mopt_error *err);
MOPT_API void mopt_session_free(mopt_session *s);

/* Runs n tokens at positions pos..pos+n-1 (pos = current length), appending
 * their keys/values to the cache. With all_logits the logits of every token
 * are returned ([n, vocab] row-major), else only the last token's ([vocab]).
 * The pointer stays valid until the next call. */
MOPT_API mopt_status mopt_session_forward(mopt_session *s, const int32_t *tokens, int32_t n, bool all_logits,
                                          const float **logits, mopt_error *err);
/* Tokens currently in the cache. */
MOPT_API int32_t mopt_session_length(const mopt_session *s);
/* Drops cached positions >= n (n <= length). */
MOPT_API mopt_status mopt_session_truncate(mopt_session *s, int32_t n, mopt_error *err);
MOPT_API int32_t mopt_session_n_threads(const mopt_session *s);
/* "cpu", or "cuda:N" for a session whose linears run on GPU N. */
MOPT_API const char *mopt_session_device(const mopt_session *s);
/* fn(user, task, thread) for every task in [0, n_tasks) on the session's
 * threads (thread < mopt_session_n_threads), the caller joining in; returns
 * when all have run (s NULL: in order on the caller's thread). For a pass's
 * own heavy loops between runs of the graph (not from inside a node observer
 * of a batched forward). */
typedef void (*mopt_parallel_fn)(void *user, int64_t task, int32_t thread);
MOPT_API void mopt_session_parallel_for(mopt_session *s, int64_t n_tasks, mopt_parallel_fn fn, void *user);
/* Width of a logits row. */
MOPT_API int32_t mopt_session_vocab_size(const mopt_session *s);
/* --- several sequences in one forward (continuous batching) ----------------- */

/* A sequence's own KV cache, for mopt_session_forward_batch. It belongs to
 * the session's graph and holds max_ctx positions (<= 0 or beyond the
 * session's: the session's). */
typedef struct mopt_seq mopt_seq;
MOPT_API mopt_seq *mopt_seq_new(const mopt_session *s, int32_t max_ctx, mopt_error *err);
MOPT_API void mopt_seq_free(mopt_seq *q);
MOPT_API int32_t mopt_seq_length(const mopt_seq *q);
MOPT_API int32_t mopt_seq_max_ctx(const mopt_seq *q);
/* Bytes of the cache. */
MOPT_API size_t mopt_seq_bytes(const mopt_seq *q);
/* The cache bytes one position takes (every layer's K and V) in a session of g with this kv_cache choice
 * (mopt_session_opts.kv_cache; NULL: $MOPT_KV_CACHE); -1 with err set when it names no cache format. */
MOPT_API int64_t mopt_kv_bytes_per_position(const mopt_graph *g, const char *kv_cache, mopt_error *err);
/* The same for a session's own choice: what a decode step reads from the cache per position of context. */
MOPT_API int64_t mopt_session_kv_bytes_per_position(const mopt_session *s);
MOPT_API mopt_status mopt_seq_truncate(mopt_seq *q, int32_t n, mopt_error *err);
/* Tokens one forward call may carry in all. */
MOPT_API int32_t mopt_session_max_batch(const mopt_session *s);

/* Runs n[i] tokens of each of n_seqs distinct sequences in one pass: every
 * linear is one GEMM over all the rows, attention reads each sequence's own
 * cache. The sum of n must not exceed the session's max_batch. logits gets
 * [n_seqs, vocab]: the last token's row of each sequence, valid until the
 * next call. On failure no sequence's length changes. */
MOPT_API mopt_status mopt_session_forward_batch(mopt_session *s, mopt_seq *const *seqs, const int32_t *const *tokens,
                                                const int32_t *n, int32_t n_seqs, const float **logits, mopt_error *err);

/* --- running part of the graph (calibration, module-level searches) --------- */

/* Called after node `node` ran, with its inputs and output ([T, width] each). */
typedef void (*mopt_node_observer)(void *user, int32_t node, const float *const *inputs, const int32_t *in_widths,
                                   int32_t n_inputs, const float *output, int32_t out_width, int32_t T);

/* Copies data [T, width] into value `value`, as an input for mopt_session_run_range. */
MOPT_API mopt_status mopt_session_set_value(mopt_session *s, int32_t value, const float *data, int32_t T,
                                            mopt_error *err);
/* Runs nodes [first, last) on T tokens at positions 0..T-1 (one sequence; the
 * KV cache is overwritten). Values the range reads but does not write must be
 * set first. tokens (may be NULL) feeds an embedding node in the range. The
 * lm_head, if in the range, computes the last row only. */
MOPT_API mopt_status mopt_session_run_range(mopt_session *s, int32_t first, int32_t last, const int32_t *tokens,
                                            int32_t T, mopt_node_observer observer, void *user, mopt_error *err);
/* The buffer of a value after a run ([T, width] row-major); valid until the next run. */
MOPT_API const float *mopt_session_value(const mopt_session *s, int32_t value);

/* Name of the SIMD kernel set picked for this CPU ("avx512", "avx2", "ref"). */
MOPT_API const char *mopt_cpu_kernels_name(void);
/* The GEMM library prefill runs on and the kernels it runs, e.g. "OpenBLAS Cooperlake", with " (set by
 * OPENBLAS_CORETYPE)" where that variable chose them rather than OpenBLAS (it then runs those whatever the CPU
 * has: on the Zen 5 host in docs/BENCHMARKS.md, Haswell's AVX2 SGEMM ran at about half the rate of the AVX-512
 * one OpenBLAS picks itself). The string stays valid until the thread's next call. */
MOPT_API const char *mopt_cpu_gemm_name(void);
/* This machine's read bandwidth in GB/s (1e9 bytes/s) on n_threads threads: the
 * median of `runs` passes over a `bytes` buffer (make it far larger than the
 * caches), each thread summing its own slice, as a decode step streams its
 * weights. -1 when the buffer cannot be had or an argument is out of range. */
MOPT_API double mopt_read_bandwidth(int32_t n_threads, size_t bytes, int32_t runs);
/* The same on the session's own threads (mopt_session_parallel_for), the ones its decode steps run on, so the
 * limit is measured as the weights are read; its n_threads is the session's. */
MOPT_API double mopt_session_read_bandwidth(mopt_session *s, size_t bytes, int32_t runs);

MOPT_EXTERN_C_END

#endif
