/* An experiment, not part of the build: can a 2:4 prefill kernel that skips
 * the zeros beat OpenBLAS's dense SGEMM on AVX2? The kernel holds 16 or 32
 * tokens per vector set, x transposed into tiles ([inputs][tokens], 64-byte
 * aligned) and blocked over KC inputs so a tile stays in L1; every kept value
 * is broadcast against its input's row of the tile. It does half the dense
 * multiply-adds but needs one 256-bit load of x per FMA, where a register-
 * blocked SGEMM needs about one per four, so on Zen 3 it lands near dense
 * speed (results in docs/BENCHMARKS.md). mopt's 2:4 prefill therefore widens
 * rows for OpenBLAS.
 *
 * gcc -O2 -mavx2 -mfma bench/sp24_spmm_experiment.c -o /tmp/spmm -lopenblas
 * OPENBLAS_NUM_THREADS=1 /tmp/spmm OUT IN T TILE KC      (TILE 16 or 32)
 * prints the medians of 15 runs of both, in dense-equivalent GMAC/s. */
#include <immintrin.h>
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* n inputs (a multiple of 8) of one 2:4 row against TILE tokens: y[t] = sum of kept v * xt[i][t]. */
static void spmm16(const float *vals, const uint8_t *pos, int64_t n, const float *xt, float *y) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
    for (int64_t k = 0; k < n / 8; k++) { /* one position byte: two groups of four, four kept values */
        const unsigned p = pos[k];
        const float *x = xt + k * 128, *v = vals + 4 * k;
        const float *x0 = x + (p & 3) * 16, *x1 = x + (p >> 2 & 3) * 16, *x2 = x + (4 + (p >> 4 & 3)) * 16, *x3 = x + (4 + (p >> 6)) * 16;
        const __m256 w0 = _mm256_broadcast_ss(v), w1 = _mm256_broadcast_ss(v + 1), w2 = _mm256_broadcast_ss(v + 2), w3 = _mm256_broadcast_ss(v + 3);
        a0 = _mm256_fmadd_ps(w0, _mm256_load_ps(x0), a0), a1 = _mm256_fmadd_ps(w0, _mm256_load_ps(x0 + 8), a1);
        b0 = _mm256_fmadd_ps(w1, _mm256_load_ps(x1), b0), b1 = _mm256_fmadd_ps(w1, _mm256_load_ps(x1 + 8), b1);
        c0 = _mm256_fmadd_ps(w2, _mm256_load_ps(x2), c0), c1 = _mm256_fmadd_ps(w2, _mm256_load_ps(x2 + 8), c1);
        d0 = _mm256_fmadd_ps(w3, _mm256_load_ps(x3), d0), d1 = _mm256_fmadd_ps(w3, _mm256_load_ps(x3 + 8), d1);
    }
    _mm256_storeu_ps(y, _mm256_add_ps(_mm256_add_ps(a0, b0), _mm256_add_ps(c0, d0)));
    _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_add_ps(a1, b1), _mm256_add_ps(c1, d1)));
}

static void spmm32(const float *vals, const uint8_t *pos, int64_t n, const float *xt, float *y) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int64_t k = 0; k < n / 8; k++) { /* two chains per lane: kept values 0 and 2 into a, 1 and 3 into b */
        const unsigned p = pos[k];
        const float *x = xt + k * 256, *v = vals + 4 * k;
        const float *x0 = x + (p & 3) * 32, *x1 = x + (p >> 2 & 3) * 32, *x2 = x + (4 + (p >> 4 & 3)) * 32, *x3 = x + (4 + (p >> 6)) * 32;
        __m256 w = _mm256_broadcast_ss(v);
        a0 = _mm256_fmadd_ps(w, _mm256_load_ps(x0), a0), a1 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 8), a1);
        a2 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 16), a2), a3 = _mm256_fmadd_ps(w, _mm256_load_ps(x0 + 24), a3);
        w = _mm256_broadcast_ss(v + 1);
        b0 = _mm256_fmadd_ps(w, _mm256_load_ps(x1), b0), b1 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 8), b1);
        b2 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 16), b2), b3 = _mm256_fmadd_ps(w, _mm256_load_ps(x1 + 24), b3);
        w = _mm256_broadcast_ss(v + 2);
        a0 = _mm256_fmadd_ps(w, _mm256_load_ps(x2), a0), a1 = _mm256_fmadd_ps(w, _mm256_load_ps(x2 + 8), a1);
        a2 = _mm256_fmadd_ps(w, _mm256_load_ps(x2 + 16), a2), a3 = _mm256_fmadd_ps(w, _mm256_load_ps(x2 + 24), a3);
        w = _mm256_broadcast_ss(v + 3);
        b0 = _mm256_fmadd_ps(w, _mm256_load_ps(x3), b0), b1 = _mm256_fmadd_ps(w, _mm256_load_ps(x3 + 8), b1);
        b2 = _mm256_fmadd_ps(w, _mm256_load_ps(x3 + 16), b2), b3 = _mm256_fmadd_ps(w, _mm256_load_ps(x3 + 24), b3);
    }
    _mm256_storeu_ps(y, _mm256_add_ps(a0, b0)), _mm256_storeu_ps(y + 8, _mm256_add_ps(a1, b1));
    _mm256_storeu_ps(y + 16, _mm256_add_ps(a2, b2)), _mm256_storeu_ps(y + 24, _mm256_add_ps(a3, b3));
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int by_value(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s OUT IN T TILE KC\n", argv[0]);
        return 2;
    }
    const int out = atoi(argv[1]), in = atoi(argv[2]), T = atoi(argv[3]), tile = atoi(argv[4]), kc = atoi(argv[5]);
    if (out < 1 || in < 8 || in % 8 || T < tile || T % tile || (tile != 16 && tile != 32) || kc < 8 || kc % 8) {
        fprintf(stderr, "OUT >= 1, IN a multiple of 8, T a multiple of TILE (16 or 32), KC a multiple of 8\n");
        return 2;
    }
    float *vals = malloc(sizeof(float) * (size_t)out * in / 2), *W = malloc(sizeof(float) * (size_t)out * in);
    float *x = malloc(sizeof(float) * (size_t)T * in), *y = malloc(sizeof(float) * (size_t)T * out);
    float *xt = aligned_alloc(64, sizeof(float) * (size_t)T * in), *yb = malloc(sizeof(float) * 64 * (size_t)tile);
    uint8_t *pos = malloc((size_t)out * in / 8);
    if (!vals || !W || !x || !y || !xt || !yb || !pos) return 1;
    srand(1);
    for (long i = 0; i < (long)out * in / 2; i++) vals[i] = (float)rand() / RAND_MAX;
    for (long i = 0; i < (long)out * in / 8; i++) pos[i] = (uint8_t)(rand() % 6 ? 0x4 | 0x40 : 0xE | 0xE0); /* (0,1) or (2,3) pairs */
    for (long i = 0; i < (long)T * in; i++) xt[i] = x[i] = (float)rand() / RAND_MAX;
    for (long i = 0; i < (long)out * in; i++) W[i] = (float)rand() / RAND_MAX;
    enum { RUNS = 15 };
    double ts[RUNS], tg[RUNS];
    for (int rep = 0; rep < RUNS; rep++) {
        const double t0 = now();
        for (int t0i = 0; t0i < T; t0i += tile)
            for (int ob = 0; ob < out; ob += 64) {
                for (int i = 0; i < 64 * tile; i++) yb[i] = 0;
                for (int k0 = 0; k0 < in; k0 += kc) {
                    const int n = in - k0 < kc ? in - k0 : kc;
                    for (int o = ob; o < ob + 64 && o < out; o++) {
                        float acc[32];
                        (tile == 16 ? spmm16 : spmm32)(vals + (long)o * in / 2 + k0 / 2, pos + (long)o * in / 8 + k0 / 8, n,
                                                         xt + (long)t0i * in + (long)k0 * tile, acc);
                        for (int t = 0; t < tile; t++) yb[(o - ob) * tile + t] += acc[t];
                    }
                }
                for (int o = ob; o < ob + 64 && o < out; o++)
                    for (int t = 0; t < tile; t++) y[(long)(t0i + t) * out + o] = yb[(o - ob) * tile + t];
            }
        const double t1 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, out, in, 1.0f, x, in, W, in, 0.0f, y, out);
        ts[rep] = t1 - t0, tg[rep] = now() - t1;
    }
    qsort(ts, RUNS, sizeof *ts, by_value);
    qsort(tg, RUNS, sizeof *tg, by_value);
    const double mac = (double)out * in * T;
    printf("out %d in %d T %d tile %d kc %d: 2:4 spmm %.3f ms (%.1f dense-equivalent GMAC/s), dense sgemm %.3f ms (%.1f GMAC/s)\n", out, in, T,
           tile, kc, ts[RUNS / 2] * 1e3, mac / ts[RUNS / 2] / 1e9, tg[RUNS / 2] * 1e3, mac / tg[RUNS / 2] / 1e9);
    return 0;
}
