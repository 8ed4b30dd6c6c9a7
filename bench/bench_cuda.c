/* mopt-bench-cuda: the CUDA linears on the layers of a 1B-class shape
 * (random weights of the right shapes), timed with CUDA events.
 *
 * - copy: a device-to-device copy of 1 GiB, bytes read plus written per second:
 *   the ceiling a memory-bound kernel is held against.
 * - decode: every linear of every layer once at T = 1 (one token's weight
 *   stream), queued on the stream and as one CUDA graph; GB/s is the stored
 *   weight bytes read (levels, scales, zeros) over the time.
 * - kernel: the largest linear alone, its copies in turn (one per layer, so
 *   the L2 does not hold them), launched from a graph; beside it, copies of
 *   the same bytes the same way, the ceiling at that size.
 * - prefill: every linear at T = --prompt tokens; tok/s counts the linears only.
 * Prints medians of --runs timings, each the mean of --reps repetitions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mopt/mopt.h"
#include "mopt/quant.h"
#include "mopt/cuda.h"

typedef struct opts {
    int64_t hidden, ffn, kv;
    int layers, prompt, reps, runs;
} opts;

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 40) * (1.0 / (1 << 23)) - 1.0);
}

/* One linear's weight in format f: 0 bf16, 1 int8 g128, 2 int4 g128 (asymmetric, as AWQ/GPTQ write them), 3 W8A8. */
static mopt_tensor *make_weight(int f, int64_t out, int64_t in, mopt_error *err) {
    mopt_tensor *t = NULL;
    if (f == 3) {
        int8_t *q = malloc((size_t)(out * in));
        float *s = malloc((size_t)out * sizeof *s);
        if (q && s) {
            for (int64_t i = 0; i < out * in; i++) q[i] = (int8_t)(100 * uniform());
            for (int64_t i = 0; i < out; i++) s[i] = 0.001f * (2 + uniform());
            t = mopt_w8a8_pack("w", out, in, q, s, err);
        }
        free(q), free(s);
        return t;
    }
    if (f == 0) {
        float *w = malloc((size_t)(out * in) * sizeof *w);
        if (!w) return NULL;
        for (int64_t i = 0; i < out * in; i++) w[i] = 0.02f * uniform();
        int64_t dims[2] = {out, in};
        t = mopt_tensor_from_f32("w", MOPT_DTYPE_BF16, 2, dims, w, err);
        free(w);
        return t;
    }
    const int bits = f == 1 ? 8 : 4;
    const int64_t ng = mopt_qint_n_groups(in, 128);
    uint8_t *q = malloc((size_t)(out * in)), *z = malloc((size_t)(out * ng));
    float *s = malloc((size_t)(out * ng) * sizeof *s);
    if (q && z && s) {
        for (int64_t i = 0; i < out * in; i++) q[i] = (uint8_t)(rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17, rng >> 56) & ((1 << bits) - 1);
        for (int64_t i = 0; i < out * ng; i++) s[i] = 0.001f * (2 + uniform()), z[i] = (uint8_t)(1 << (bits - 1));
        t = mopt_qint_pack("w", out, in, bits, 128, q, s, z, NULL, err);
    }
    free(q), free(z), free(s);
    return t;
}

typedef struct run_set {
    mopt_cuda *c;
    mopt_cuda_linear **l;
    int n, T;
    const float *x;
    float *y;
} run_set;

static mopt_status run_all(void *user, mopt_error *err) {
    run_set *r = user;
    for (int i = 0; i < r->n; i++) {
        mopt_status st = mopt_cuda_linear_run(r->c, r->l[i], r->x, r->T, r->y, err);
        if (st) return st;
    }
    return MOPT_OK;
}

typedef struct copy_job {
    mopt_cuda *c;
    void *dst, *src;
    size_t bytes;
} copy_job;

static mopt_status run_copy(void *user, mopt_error *err) {
    copy_job *j = user;
    return mopt_cuda_copy(j->c, j->dst, j->src, j->bytes, 2, err);
}

/* n copies of `bytes` each from consecutive chunks: a copy the size of one linear, from memory the L2 does not hold */
typedef struct copies_job {
    mopt_cuda *c;
    char *dst, *src;
    size_t bytes;
    int n;
} copies_job;

static mopt_status run_copies(void *user, mopt_error *err) {
    copies_job *j = user;
    for (int i = 0; i < j->n; i++) {
        mopt_status st = mopt_cuda_copy(j->c, j->dst + (size_t)i * j->bytes, j->src + (size_t)i * j->bytes, j->bytes, 2, err);
        if (st) return st;
    }
    return MOPT_OK;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* median over runs of mopt_cuda_time */
static mopt_status median_ms(mopt_cuda *c, mopt_status (*fn)(void *, mopt_error *), void *user, const opts *o, int reps, int graph,
                             double *ms, mopt_error *err) {
    double t[64];
    const int runs = o->runs < 64 ? o->runs : 64;
    for (int i = 0; i < runs; i++) {
        mopt_status st = mopt_cuda_time(c, fn, user, reps, graph, &t[i], err);
        if (st) return st;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    *ms = t[runs / 2];
    return MOPT_OK;
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--hidden 2048] [--ffn 5632] [--kv 512] [--layers 16] [--prompt 512] [--reps 20] [--runs 5]\n"
            "  times the CUDA linears of a model of that shape (llama-1b by default); see the file's comment\n",
            argv0);
    return 2;
}

int main(int argc, char **argv) {
    opts o = {2048, 5632, 512, 16, 512, 20, 5};
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) return usage(argv[0]);
        const char *k = argv[i];
        const long v = strtol(argv[++i], NULL, 10);
        if (v <= 0 || v > 1 << 20) return usage(argv[0]);
        if (!strcmp(k, "--hidden")) o.hidden = v;
        else if (!strcmp(k, "--ffn")) o.ffn = v;
        else if (!strcmp(k, "--kv")) o.kv = v;
        else if (!strcmp(k, "--layers")) o.layers = (int)v;
        else if (!strcmp(k, "--prompt")) o.prompt = (int)v;
        else if (!strcmp(k, "--reps")) o.reps = (int)v;
        else if (!strcmp(k, "--runs")) o.runs = (int)v;
        else return usage(argv[0]);
    }
    mopt_error err = {0};
    mopt_cuda *c = NULL;
    if (mopt_cuda_open(-1, &c, &err)) {
        fprintf(stderr, "mopt-bench-cuda: %s\n", err.msg);
        return 1;
    }
    printf("GPU: %s\nshape: hidden %lld, ffn %lld, kv %lld, %d layers; prompt %d; medians of %d runs\n", mopt_cuda_name(c),
           (long long)o.hidden, (long long)o.ffn, (long long)o.kv, o.layers, o.prompt, o.runs);
    int rc = 1;
    /* the copy ceiling */
    copy_job cj = {c, NULL, NULL, (size_t)1 << 30};
    double copy_ms = 0;
    if (mopt_cuda_alloc(c, cj.bytes, &cj.dst, &err) || mopt_cuda_alloc(c, cj.bytes, &cj.src, &err) || median_ms(c, run_copy, &cj, &o, 10, 0, &copy_ms, &err)) {
        fprintf(stderr, "mopt-bench-cuda: %s\n", err.msg);
        return 1;
    }
    mopt_cuda_free(cj.dst), mopt_cuda_free(cj.src);
    const double copy_gbs = 2.0 * (double)cj.bytes / (copy_ms * 1e6);
    printf("copy: %.0f GB/s (read + written)\n\n", copy_gbs);

    const int64_t H = o.hidden, F = o.ffn, KV = o.kv;
    const int64_t shapes[7][2] = {{H, H}, {KV, H}, {KV, H}, {H, H}, {F, H}, {F, H}, {H, F}}; /* q k v o gate up down */
    const int n = 7 * o.layers;
    mopt_cuda_linear **l = calloc((size_t)n, sizeof *l);
    const int64_t width = (H > F ? H : F) * o.prompt;
    float *hx = malloc((size_t)width * sizeof *hx);
    void *dx = NULL, *dy = NULL;
    if (!l || !hx || mopt_cuda_alloc(c, (size_t)width * sizeof(float), &dx, &err) || mopt_cuda_alloc(c, (size_t)width * sizeof(float), &dy, &err)) {
        fprintf(stderr, "mopt-bench-cuda: %s\n", err.msg[0] ? err.msg : "out of memory");
        return 1;
    }
    for (int64_t i = 0; i < width; i++) hx[i] = uniform();
    if (mopt_cuda_copy(c, dx, hx, (size_t)width * sizeof(float), 0, &err) || mopt_cuda_sync(c, &err)) goto fail;

    printf("| weights | bytes/token | decode ms (stream) | decode ms (graph) | GB/s (graph) | of copy | largest linear | kernel GB/s |"
           " of copy | copy of its size GB/s | prefill ms | prefill tok/s | TFLOP/s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    const char *names[4] = {"bf16", "int8 g128", "int4 g128", "w8a8"};
    for (int f = 0; f < 4; f++) {
        int64_t bytes = 0, params = 0;
        for (int k = 0; k < 7; k++) {
            mopt_tensor *w = make_weight(f, shapes[k][0], shapes[k][1], &err);
            if (!w) goto fail;
            for (int layer = 0; layer < o.layers; layer++) {
                if (mopt_cuda_upload(c, w, &l[layer * 7 + k], &err)) {
                    mopt_tensor_free(w);
                    goto fail;
                }
                bytes += mopt_cuda_linear_bytes(l[layer * 7 + k]);
                params += shapes[k][0] * shapes[k][1];
            }
            mopt_tensor_free(w);
        }
        run_set all = {c, l, n, 1, dx, dy};
        double dec_s = 0, dec_g = 0, ker = 0, pre = 0;
        /* the largest linear (gate) alone, one copy per layer in turn */
        mopt_cuda_linear **gate = malloc((size_t)o.layers * sizeof *gate);
        if (!gate) goto fail;
        for (int layer = 0; layer < o.layers; layer++) gate[layer] = l[layer * 7 + 4];
        run_set one = {c, gate, o.layers, 1, dx, dy};
        mopt_status st = median_ms(c, run_all, &all, &o, o.reps, 0, &dec_s, &err);
        if (!st) st = median_ms(c, run_all, &all, &o, o.reps, 1, &dec_g, &err);
        if (!st) st = median_ms(c, run_all, &one, &o, o.reps, 1, &ker, &err);
        all.T = o.prompt;
        if (!st) st = median_ms(c, run_all, &all, &o, 3, 0, &pre, &err);
        const double gate_bytes = (double)mopt_cuda_linear_bytes(gate[0]) * o.layers;
        free(gate);
        /* the ceiling at that size: copies of the same bytes, also from a graph */
        copies_job cs = {c, NULL, NULL, (size_t)mopt_cuda_linear_bytes(l[4]), o.layers};
        double cms = 0;
        if (!st) st = mopt_cuda_alloc(c, cs.bytes * (size_t)cs.n, (void **)&cs.dst, &err);
        if (!st) st = mopt_cuda_alloc(c, cs.bytes * (size_t)cs.n, (void **)&cs.src, &err);
        if (!st) st = median_ms(c, run_copies, &cs, &o, o.reps, 1, &cms, &err);
        mopt_cuda_free(cs.dst), mopt_cuda_free(cs.src);
        if (st) goto fail;
        const double cgbs = 2.0 * gate_bytes / (cms * 1e6);
        const double gbs = (double)bytes / (dec_g * 1e6), kgbs = gate_bytes / (ker * 1e6);
        printf("| %s | %.1f MB | %.3f | %.3f | %.0f | %.0f%% | %.1f MB | %.0f | %.0f%% | %.0f | %.2f | %.0f | %.0f |\n", names[f],
               (double)bytes / 1e6, dec_s, dec_g, gbs, 100 * gbs / copy_gbs, (double)cs.bytes / 1e6, kgbs, 100 * kgbs / copy_gbs, cgbs, pre,
               o.prompt / (pre / 1e3),
               2.0 * (double)params * o.prompt / (pre * 1e9));
        fflush(stdout);
        for (int i = 0; i < n; i++) mopt_cuda_linear_free(l[i]), l[i] = NULL;
    }
    rc = 0;
fail:
    if (rc) fprintf(stderr, "mopt-bench-cuda: %s\n", err.msg);
    for (int i = 0; i < n; i++) mopt_cuda_linear_free(l[i]);
    free(l), free(hx);
    mopt_cuda_free(dx), mopt_cuda_free(dy);
    mopt_cuda_close(c);
    return rc;
}
