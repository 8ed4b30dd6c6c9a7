/* The prefill GEMM tiles (kernels.h: gemm_q4_q8, gemm_s8_q8, gemm_s8_rows),
 * written once for the AVX2 and AVX-512 VNNI sets: tiles of 8 tokens in the
 * lanes of 256-bit vectors, TILE_R rows at a time. The including file (compiled
 * with its own -m flags) defines
 *   TILE_LINKAGE, TILE_FN(name)  the GEMMs' linkage and names
 *   TILE_R                       rows per tile: as many as the registers hold, so that enough
 *                                independent chains of integer dots hide their latency
 *   Q4_STEP(a, w4, xv)           a += 4 unsigned levels (the int32 w4) times every token's 4 bytes of xv
 *                                (levels up to 255 where the set's u8_levels, else up to 15)
 *   Q4_START(z)                  a block's accumulator at its start, given its int32 start z
 *   Q4_BLOCK_SUM(a, z)           the 8 int32 token sums of a block from a (and z)
 *   S8_STEP(a, wa4, xs)          a (int32 lanes) + 4 magnitudes (wa4, broadcast) times every token's 4 bytes
 *                                with the weights' signs (xs) */
#ifndef MOPT_KERNELS_TILES_H
#define MOPT_KERNELS_TILES_H

/* Lane l of each of R row results to y[l * y_stride + r], for the tile's real tokens. */
static inline __attribute__((always_inline)) void store_tile(const __m256 *acc, float *y, int64_t y_stride, int32_t ntok, const int R) {
    for (int r = 0; r < R; r++) {
        float v[8];
        _mm256_storeu_ps(v, acc[r]);
        for (int32_t l = 0; l < ntok; l++) y[l * y_stride + r] = v[l];
    }
}

/* 4 signed weights (their magnitudes wa) times every token's 4 bytes, added to the int32 lanes of acc */
static inline __attribute__((always_inline)) __m256i s8_step(const int8_t *w, const uint8_t *wa, __m256i xv, __m256i acc) {
    int32_t w4, a4;
    memcpy(&w4, w, 4);
    memcpy(&a4, wa, 4);
    return S8_STEP(acc, _mm256_set1_epi32(a4), _mm256_sign_epi8(xv, _mm256_set1_epi32(w4)));
}

/* R rows against one tile of 8 tokens, the tokens in the vector lanes: each
 * step broadcasts 4 levels of a row and multiplies them with the 4 matching
 * bytes of every token: unsigned levels (Q4_STEP: 4-bit, and 8-bit where the
 * set's u8_levels) from the block's start (xzt: -o x its sum of x, o = 8 or
 * 128), so that a block's int32 sums are of (level - o) x and a symmetric row
 * needs no zero-point term; signed 8-bit levels (s8: their magnitudes wa and
 * the signs moved onto x) from 0. With one
 * block per group (one: GGUF's Q4_0 and Q8_0, Q4_K) each block's sums are
 * scaled by the tokens' block scales times the row's scale at once; otherwise
 * summed per group, then scaled by the row's. An asymmetric row's rest, zs
 * times the group's x sums, comes off per group. */
static inline __attribute__((always_inline)) void int_tile(const uint8_t *wl, const uint8_t *wa, int64_t in, const float *s,
                                                            const float *zs, const int8_t *xi, const int32_t *xzt, const float *xdt,
                                                            const float *xst, int64_t ng, int64_t bpg, float *y,
                                                            int64_t y_stride, int32_t ntok, const int R, const int one, const int s8,
                                                            const int bs) {
    __m256 acc[TILE_R], gacc[TILE_R];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t g = 0, b = 0; g < ng; g++) {
        for (int r = 0; r < R; r++) gacc[r] = _mm256_setzero_ps();
        for (; b < (g + 1) * bpg; b++) {
            const __m256i z0 = s8 ? _mm256_setzero_si256() : _mm256_loadu_si256((const __m256i *)(xzt + 8 * b));
            __m256i a[TILE_R];
            for (int r = 0; r < R; r++) a[r] = s8 ? z0 : Q4_START(z0);
            const int8_t *xb = xi + 8 * bs * b;
#pragma GCC unroll 8 /* unrolled, the chains' register copies go */
            for (int c = 0; c < bs / 4; c++) {
                const __m256i xv = _mm256_loadu_si256((const __m256i *)(xb + 32 * c));
                for (int r = 0; r < R; r++) {
                    const int64_t o = r * in + bs * b + 4 * c;
                    if (s8) {
                        a[r] = s8_step((const int8_t *)wl + o, wa + o, xv, a[r]);
                    } else {
                        int32_t w4;
                        memcpy(&w4, wl + o, 4);
                        Q4_STEP(a[r], w4, xv);
                    }
                }
            }
            const __m256 xd = _mm256_loadu_ps(xdt + 8 * b);
            for (int r = 0; r < R; r++) {
                const __m256 v = _mm256_cvtepi32_ps(s8 ? a[r] : Q4_BLOCK_SUM(a[r], z0));
                if (one) acc[r] = _mm256_fmadd_ps(v, _mm256_mul_ps(xd, _mm256_set1_ps(s[r * ng + g])), acc[r]);
                else gacc[r] = _mm256_fmadd_ps(v, xd, gacc[r]);
            }
        }
        for (int r = 0; !one && r < R; r++) acc[r] = _mm256_fmadd_ps(gacc[r], _mm256_set1_ps(s[r * ng + g]), acc[r]);
        if (zs) {
            const __m256 xs = _mm256_loadu_ps(xst + 8 * g);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fnmadd_ps(xs, _mm256_set1_ps(zs[r * ng + g]), acc[r]);
        }
    }
    store_tile(acc, y, y_stride, ntok, R);
}

/* Tiles of TILE_R rows, one with one block per group and one with more, then single rows. */
static inline __attribute__((always_inline)) void int_tiles(const uint8_t *wl, const uint8_t *wa, int64_t in, int64_t nrows,
                                                             const float *s, const float *zs, const int8_t *xi, const int32_t *xzt,
                                                             const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                                                             int64_t y_stride, int32_t ntok, const int s8, const int bs) {
    int64_t r = 0;
    for (; r + TILE_R <= nrows; r += TILE_R) {
        const uint8_t *war = s8 ? wa + r * in : NULL;
        const float *zr = zs ? zs + r * ng : NULL;
        if (bpg == 1) int_tile(wl + r * in, war, in, s + r * ng, zr, xi, xzt, xdt, xst, ng, bpg, y + r, y_stride, ntok, TILE_R, 1, s8, bs);
        else int_tile(wl + r * in, war, in, s + r * ng, zr, xi, xzt, xdt, xst, ng, bpg, y + r, y_stride, ntok, TILE_R, 0, s8, bs);
    }
    for (; r < nrows; r++)
        int_tile(wl + r * in, s8 ? wa + r * in : NULL, in, s + r * ng, zs ? zs + r * ng : NULL, xi, xzt, xdt, xst, ng, bpg, y + r,
                 y_stride, ntok, 1, bpg == 1, s8, bs);
}

TILE_LINKAGE void TILE_FN(gemm_q4_q8)(const uint8_t *wl, int64_t in, int64_t nrows, const float *s, const float *zs, const int8_t *xi,
                          const int32_t *xzt, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                          int64_t y_stride, int32_t ntok) {
    int_tiles(wl, NULL, in, nrows, s, zs, xi, xzt, xdt, xst, ng, bpg, y, y_stride, ntok, 0, 32);
}

#ifdef TILE_B16 /* blocks of 16, for sets whose steps go straight to int32: AVX2's int16 sums (Q4_STEP) overflow with 6-bit levels */
TILE_LINKAGE void TILE_FN(gemm_q4_q8_b16)(const uint8_t *wl, int64_t in, int64_t nrows, const float *s, const float *zs,
                                          const int8_t *xi, const int32_t *xzt, const float *xdt, const float *xst, int64_t ng,
                                          int64_t bpg, float *y, int64_t y_stride, int32_t ntok) {
    int_tiles(wl, NULL, in, nrows, s, zs, xi, xzt, xdt, xst, ng, bpg, y, y_stride, ntok, 0, 16);
}
#endif

TILE_LINKAGE void TILE_FN(gemm_s8_q8)(const int8_t *w, const uint8_t *wa, int64_t in, int64_t nrows, const float *s, const float *zs,
                          const int8_t *xi, const float *xdt, const float *xst, int64_t ng, int64_t bpg, float *y,
                          int64_t y_stride, int32_t ntok) {
    int_tiles((const uint8_t *)w, wa, in, nrows, s, zs, xi, NULL, xdt, xst, ng, bpg, y, y_stride, ntok, 1, 32);
}

/* W8A8: one int32 sum per row and token over the whole row (|sum| < 2^31 for
 * rows under 2^17 inputs), scaled as the decode path scales dot_i8's sum. */
static inline __attribute__((always_inline)) void s8rows_tile(const int8_t *w, const uint8_t *wa, int64_t in, const float *s,
                                                               const int8_t *xi, const float *xs, float *y, int64_t y_stride,
                                                               int32_t ntok, const int R) {
    __m256i a32[TILE_R];
    for (int r = 0; r < R; r++) a32[r] = _mm256_setzero_si256();
    for (int64_t c = 0; c < in / 4; c++) {
        const __m256i xv = _mm256_loadu_si256((const __m256i *)(xi + 32 * c));
        for (int r = 0; r < R; r++) a32[r] = s8_step(w + r * in + 4 * c, wa + r * in + 4 * c, xv, a32[r]);
    }
    const __m256 xsv = _mm256_loadu_ps(xs);
    __m256 acc[TILE_R];
    for (int r = 0; r < R; r++) acc[r] = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(a32[r]), _mm256_set1_ps(s[r])), xsv);
    store_tile(acc, y, y_stride, ntok, R);
}

TILE_LINKAGE void TILE_FN(gemm_s8_rows)(const int8_t *w, const uint8_t *wa, int64_t in, int64_t nrows, const float *s, const int8_t *xi,
                            const float *xs, float *y, int64_t y_stride, int32_t ntok) {
    int64_t r = 0;
    for (; r + TILE_R <= nrows; r += TILE_R) s8rows_tile(w + r * in, wa + r * in, in, s + r, xi, xs, y + r, y_stride, ntok, TILE_R);
    for (; r < nrows; r++) s8rows_tile(w + r * in, wa + r * in, in, s + r, xi, xs, y + r, y_stride, ntok, 1);
}

#endif
