/* mopt-bench-attention: decode attention's kernels alone (scores, softmax, values of one token against every KV
 * head's cache) over caches far larger than the caches of the CPU, as a decode step at a long context reads them:
 * fp32 and f16 caches, on 4 KiB pages (malloc) and on huge pages (mopt_alloc_zeroed, as sessions now take them).
 *
 *   mopt-bench-attention [--ctx N] [--layers L] [--kv-heads K] [--group G] [--head-dim D] [--runs R]
 *
 * One thread; the layout is the executor's ([position][kv head][head dim]). Prints the median over R runs of the
 * time a token's attention over all layers takes and the cache GB/s that makes (K and V as stored). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "bench_util.h"
#include "kernels.h"
#include "mopt/tensor.h"

static uint32_t rng = 2463534242u;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return (float)((double)rng / 4294967296.0 - 0.5);
}

int main(int argc, char **argv) {
    int32_t ctx = 1536, layers = 64, kvh = 8, group = 4, hd = 64, runs = 5;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: mopt-bench-attention [--ctx N] [--layers L] [--kv-heads K] [--group G] [--head-dim D] [--runs R]\n");
            return 2;
        }
        if (!strcmp(a, "--ctx")) ctx = atoi(v);
        else if (!strcmp(a, "--layers")) layers = atoi(v);
        else if (!strcmp(a, "--kv-heads")) kvh = atoi(v);
        else if (!strcmp(a, "--group")) group = atoi(v);
        else if (!strcmp(a, "--head-dim")) hd = atoi(v);
        else if (!strcmp(a, "--runs")) runs = atoi(v);
        else {
            fprintf(stderr, "mopt-bench-attention: unknown option %s\n", a);
            return 2;
        }
    }
    if (ctx < 1 || ctx > 1 << 20 || layers < 1 || layers > 4096 || kvh < 1 || kvh > 256 || group < 1 || group > 64 || hd < 1 ||
        hd > 1024 || runs < 1 || runs > 1000) {
        fprintf(stderr, "mopt-bench-attention: need ctx, layers, kv-heads, group, head-dim and runs within sense\n");
        return 2;
    }
    const mopt_kernels *k = mopt_kernels_get();
    const int64_t kvd = (int64_t)kvh * hd;
    const size_t n = (size_t)layers * (size_t)ctx * (size_t)kvd; /* values per cache (K or V) */
    float *q = malloc((size_t)group * (size_t)hd * sizeof *q), *out = malloc((size_t)group * (size_t)hd * sizeof *out);
    float *S = malloc((size_t)group * (size_t)ctx * sizeof *S), *src = malloc(n * sizeof *src);
    double *t = malloc((size_t)runs * sizeof *t);
    if (!q || !out || !S || !src || !t) return 1;
    for (int32_t i = 0; i < group * hd; i++) q[i] = frand();
    for (size_t i = 0; i < n; i++) src[i] = frand();
    printf("%s kernels, 1 thread: %d layers x %d KV heads x %d query heads each, head dim %d, %d positions; "
           "median of %d runs\n", k->name, layers, kvh, group, hd, ctx, runs);
    for (int half = 0; half < 2; half++)
        for (int huge = 0; huge < 2; huge++) {
            const size_t bytes = n * (half ? 2 : 4);
            void *K = huge ? mopt_alloc_zeroed(bytes) : malloc(bytes), *V = huge ? mopt_alloc_zeroed(bytes) : malloc(bytes);
            if (!K || !V) return 1;
            for (size_t i = 0; i < n; i++) {
                if (half) ((uint16_t *)K)[i] = mopt_f32_to_f16(src[i]), ((uint16_t *)V)[i] = mopt_f32_to_f16(src[n - 1 - i]);
                else ((float *)K)[i] = src[i], ((float *)V)[i] = src[n - 1 - i];
            }
            for (int r = 0; r < runs; r++) {
                const double t0 = bench_now();
                for (int32_t l = 0; l < layers; l++)
                    for (int32_t h = 0; h < kvh; h++) {
                        const size_t at = (size_t)l * (size_t)ctx * (size_t)kvd + (size_t)h * (size_t)hd;
                        if (half) k->att_scores_f16(q, group, (const uint16_t *)K + at, kvd, ctx, hd, 0.125f, S);
                        else k->att_scores(q, group, (const float *)K + at, kvd, ctx, hd, 0.125f, S);
                        for (int32_t g = 0; g < group; g++) k->softmax(S + (size_t)g * ctx, ctx);
                        if (half) k->att_values_f16(S, group, (const uint16_t *)V + at, kvd, ctx, hd, out);
                        else k->att_values(S, group, (const float *)V + at, kvd, ctx, hd, out);
                    }
                t[r] = bench_now() - t0;
            }
            qsort(t, (size_t)runs, sizeof *t, bench_cmp);
            const double med = bench_median(t, runs);
            printf("  %s cache, %s: %8.2f ms (%.2f-%.2f)  %6.1f GB/s of K and V\n", half ? "f16" : "f32",
                   huge ? "huge pages" : "4 KiB pages", 1e3 * med, 1e3 * t[0], 1e3 * t[runs - 1], 2.0 * (double)bytes / med / 1e9);
            if (huge) mopt_free_zeroed(K, bytes), mopt_free_zeroed(V, bytes);
            else free(K), free(V);
        }
    free(q), free(out), free(S), free(src), free(t);
    return 0;
}
