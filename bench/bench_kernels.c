/* mopt-bench-kernels: the CPU linear kernels alone, on weights far larger than
 * the caches, against the machine's read bandwidth measured in the same run.
 * A decode step is a GEMV per linear that reads every weight byte once, so
 * each format's GB/s over its stored bytes says how close its kernel comes to
 * the memory's limit; with --tokens > 8 the same weights go through the
 * prefill path and the figure is multiply-adds per second, also as a multiple
 * of bf16's.
 *
 *   mopt-bench-kernels [--threads N] [--mib M] [--in K] [--tokens T] [--runs R] [--warm W] [--only NAME]
 *
 * Prints, per format, the median over R runs (after a warm-up) with min-max. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "bench_util.h"
#include "mopt/executor.h"
#include "mopt/quant.h"
#include "mopt/tensor.h"

static uint32_t rng = 2463534242u;
static uint32_t urand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}
static float frand(void) { return (float)((double)urand() / 4294967296.0 * 2.0 - 1.0); }

/* A weight of the named format with `out` rows of `in` random values. */
static mopt_tensor *make_weight(const char *fmt, int64_t out, int64_t in, mopt_error *err) {
    const size_t n = (size_t)(out * in);
    mopt_tensor *t = NULL;
    if (!strcmp(fmt, "bf16") || !strcmp(fmt, "f16") || !strcmp(fmt, "f32")) {
        const mopt_dtype dt = !strcmp(fmt, "bf16") ? MOPT_DTYPE_BF16 : !strcmp(fmt, "f16") ? MOPT_DTYPE_F16 : MOPT_DTYPE_F32;
        float *w = malloc(n * sizeof *w);
        if (!w) return NULL;
        for (size_t i = 0; i < n; i++) w[i] = 0.02f * frand();
        t = mopt_tensor_from_f32("w", dt, 2, (const int64_t[]){out, in}, w, err);
        free(w);
    } else if (!strcmp(fmt, "int4-g128") || !strcmp(fmt, "int8-row") || !strcmp(fmt, "q4_0") || !strcmp(fmt, "q8_0")) {
        /* q4_0 / q8_0: symmetric groups of 32, the QINT form of GGUF's blocks (what mopt runs a GGUF file as) */
        const int bits = strchr(fmt, '4') ? 4 : 8, gguf = fmt[0] == 'q';
        const int32_t gs = gguf ? 32 : bits == 4 ? 128 : -1;
        const int64_t ng = mopt_qint_n_groups(in, gs);
        uint8_t *q = malloc(n), *z = malloc((size_t)(out * ng));
        float *s = malloc((size_t)(out * ng) * sizeof *s);
        if (q && z && s) {
            for (size_t i = 0; i < n; i++) q[i] = (uint8_t)(urand() % (1u << bits));
            for (int64_t i = 0; i < out * ng; i++) s[i] = 0.001f + 0.01f * fabsf(frand()), z[i] = (uint8_t)(urand() % (1u << bits));
            t = mopt_qint_pack("w", out, in, bits, gs, q, s, bits == 4 && !gguf ? z : NULL, NULL, err);
        }
        free(q), free(z), free(s);
    } else if (!strcmp(fmt, "w8a8")) {
        int8_t *q = malloc(n);
        float *s = malloc((size_t)out * sizeof *s);
        if (q && s) {
            for (size_t i = 0; i < n; i++) q[i] = (int8_t)((int)(urand() % 255u) - 127);
            for (int64_t i = 0; i < out; i++) s[i] = 0.0001f;
            t = mopt_w8a8_pack("w", out, in, q, s, err);
        }
        free(q), free(s);
    } else if (fmt[0] == 'q' && fmt[2] == '_' && fmt[3] == 'k') { /* random GGUF k-quant blocks with small f16 scales */
        const int bits = fmt[1] - '0';
        const size_t bb = (size_t)mopt_kquant_block_bytes(bits), nblk = n / MOPT_KQ_BLOCK;
        const size_t at = bits == 2 ? 80 : bits == 3 ? 108 : bits == 6 ? 208 : 0; /* d, then dmin where there is one */
        uint8_t *b = malloc(nblk * bb);
        if (b) {
            for (size_t i = 0; i < nblk * bb; i++) b[i] = (uint8_t)urand();
            const uint16_t d = mopt_f32_to_f16(0.0005f);
            for (size_t k = 0; k < nblk; k++) {
                memcpy(b + k * bb + at, &d, 2);
                if (bits != 3 && bits != 6) memcpy(b + k * bb + at + 2, &d, 2);
            }
            t = mopt_kquant_pack("w", out, in, bits, b, err);
        }
        free(b);
    } else if (!strcmp(fmt, "fp8")) {
        uint8_t *q = malloc(n);
        float *s = malloc((size_t)out * sizeof *s);
        if (q && s) {
            for (size_t i = 0; i < n; i++) q[i] = mopt_f32_to_e4m3(100.0f * frand());
            for (int64_t i = 0; i < out; i++) s[i] = 0.0002f;
            t = mopt_fp8_pack("w", out, in, q, s, out, 0, 0.0f, err);
        }
        free(q), free(s);
    }
    return t;
}

int main(int argc, char **argv) {
    int32_t threads = 2, T = 1, runs = 7, warm = 0;
    int64_t mib = 256, in = 2048;
    const char *only = NULL;
    for (int i = 1; i < argc; i += 2) { /* options and their values in pairs */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: mopt-bench-kernels [--threads N] [--mib M] [--in K] [--tokens T] [--runs R] [--warm W] [--only FORMAT]\n");
            return 2;
        }
        if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--mib")) mib = atoll(v);
        else if (!strcmp(a, "--in")) in = atoll(v);
        else if (!strcmp(a, "--tokens")) T = atoi(v);
        else if (!strcmp(a, "--runs")) runs = atoi(v);
        else if (!strcmp(a, "--warm")) warm = atoi(v);
        else if (!strcmp(a, "--only")) only = v;
        else {
            fprintf(stderr, "mopt-bench-kernels: unknown option %s\n", a);
            return 2;
        }
    }
    if (threads < 1 || T < 1 || runs < 1 || runs > 1000 || warm < 0 || warm > 100000 || mib < 1 || in < 32 || in % 128) {
        fprintf(stderr, "mopt-bench-kernels: need threads, tokens, runs, mib >= 1, --warm >= 0 and --in a multiple of 128\n");
        return 2;
    }
    printf("weights of about %lld MiB per format, in = %lld, %d token(s), %d threads; %d rounds after a warm-up, each\n"
           "timing every format once beside a read of a %lld MiB buffer (noisy machines drift, so each figure is set\n"
           "against the bandwidth measured in its own round)\n", (long long)mib, (long long)in, T, threads, runs, (long long)mib);
    if (warm)
        printf("--warm %d: each round times %d calls back to back after an untimed one, so weights that fit the caches are\n"
               "read from them: the kernels' arithmetic speed rather than memory's\n", warm, warm);
    enum { NF = 13 };
    const char *fmts[NF] = {"bf16", "f16", "int8-row", "int4-g128", "q8_0", "q4_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "w8a8", "fp8"};
    const double bytes_per_value[NF] = {2, 2, 1, 0.5, 1, 0.5, 84.0 / 256, 110.0 / 256, 144.0 / 256, 176.0 / 256, 210.0 / 256, 1, 1};
    mopt_tensor *w[NF] = {0};
    float *y[NF] = {0};
    float *x = malloc((size_t)T * (size_t)in * sizeof *x);
    double *gbs = calloc((size_t)NF * (size_t)runs, sizeof *gbs), *frac = calloc((size_t)NF * (size_t)runs, sizeof *frac);
    double *bw = calloc((size_t)runs, sizeof *bw);
    if (!x || !gbs || !frac || !bw) return 1;
    for (int64_t i = 0; i < T * in; i++) x[i] = frand();
    for (int f = 0; f < NF; f++) {
        if ((only && strcmp(only, fmts[f])) || (fmts[f][2] == 'k' && in % MOPT_KQ_BLOCK)) continue; /* k-quants: whole super-blocks */
        const int64_t out = (int64_t)((double)(mib << 20) / ((double)in * bytes_per_value[f]));
        mopt_error err = {0};
        w[f] = make_weight(fmts[f], out, in, &err);
        y[f] = malloc((size_t)T * (size_t)out * sizeof *y[f]);
        if (!w[f] || !y[f]) {
            fprintf(stderr, "mopt-bench-kernels: %s: %s\n", fmts[f], err.msg[0] ? err.msg : "out of memory");
            return 1;
        }
    }
    for (int r = -1; r < runs; r++) {
        const double b = mopt_read_bandwidth(threads, (size_t)mib << 20, 1);
        if (r >= 0) bw[r] = b;
        for (int f = 0; f < NF; f++) {
            if (!w[f]) continue;
            mopt_error err = {0};
            double t0 = 0;
            for (int k = warm ? -1 : 0; k < (warm ? warm : 1); k++) {
                if (k == 0) t0 = bench_now();
                if (mopt_cpu_linear_once(threads, NULL, w[f], NULL, x, T, y[f], &err) != MOPT_OK) {
                    fprintf(stderr, "mopt-bench-kernels: %s: %s\n", fmts[f], err.msg);
                    return 1;
                }
            }
            const double g = (double)mopt_weight_storage_bytes(w[f]) * (warm ? warm : 1) / (bench_now() - t0) / 1e9;
            if (r >= 0) gbs[f * runs + r] = g, frac[f * runs + r] = g / b;
        }
    }
    qsort(bw, (size_t)runs, sizeof *bw, bench_cmp);
    printf("read bandwidth: median %.2f GB/s (min %.2f, max %.2f)\n", bench_median(bw, runs), bw[0], bw[runs - 1]);
    double bf16_macs = 0;
    for (int f = 0; f < NF; f++) {
        if (!w[f]) continue;
        double *g = gbs + f * runs, *fr = frac + f * runs;
        qsort(g, (size_t)runs, sizeof *g, bench_cmp);
        qsort(fr, (size_t)runs, sizeof *fr, bench_cmp);
        const double bytes = (double)mopt_weight_storage_bytes(w[f]), med = bench_median(g, runs);
        /* multiply-adds per second: every weight meets every token */
        const double macs = med * 1e9 / bytes * (double)T * (double)(w[f]->ne[0] * w[f]->ne[1]) / 1e9;
        if (f == 0) bf16_macs = macs;
        if (T <= 8 && warm) /* decode from the caches: weights per second */
            printf("  %-10s %7.1f MB  %6.2f GB/s (%.2f-%.2f)  %.1f G weights/s\n", fmts[f], bytes / 1e6, med, g[0], g[runs - 1],
                   macs / T);
        else if (T <= 8) /* decode: the weights' bytes set the pace */
            printf("  %-10s %7.1f MB  %6.2f GB/s (%.2f-%.2f)  %5.1f%% of its round's read bandwidth (%.0f-%.0f%%)\n", fmts[f],
                   bytes / 1e6, med, g[0], g[runs - 1], 100 * bench_median(fr, runs), 100 * fr[0], 100 * fr[runs - 1]);
        else if (bf16_macs > 0) /* prefill: the arithmetic does */
            printf("  %-10s %7.1f MB  %6.1f G multiply-adds/s (%.1f-%.1f)  %.2fx bf16\n", fmts[f], bytes / 1e6, macs,
                   macs * g[0] / med, macs * g[runs - 1] / med, macs / bf16_macs);
        else
            printf("  %-10s %7.1f MB  %6.1f G multiply-adds/s (%.1f-%.1f)\n", fmts[f], bytes / 1e6, macs, macs * g[0] / med,
                   macs * g[runs - 1] / med);
        mopt_tensor_free(w[f]);
        free(y[f]);
    }
    free(gbs), free(frac), free(bw);
    free(x);
    return 0;
}
