/* The x86 kernels whose AVX2 and AVX-512 forms differ only in vector width,
 * written once. The including file (compiled with its own -m flags) defines
 *   VBITS                      256 or 512: the intrinsics' prefix _mm256_ / _mm512_
 *   V_HSUM(v)                  the sum of a vector's lanes
 *   F32_TAIL(w, x, i, n, acc)  what dot_f32 does with the last n - i < VW values in
 *                              vector code (and sets i = n), or nothing
 *   LOAD_U8(p)                 VW bytes widened to floats
 *   Q4_BLOCK(b, x, a0, a1)     one Q4 block (16 bytes, 32 values) into two accumulators
 *   V_ROUND(v)                 each lane rounded to the nearest integer, ties to even
 *   V_AS_FLOAT(vi)             an integer vector's bits as floats
 *   V_HMAX(v)                  the largest lane
 *   V_HSUM4(a, b, c, d)        an __m128 of the four vectors' lane sums
 *   V_HSUM8(v0, .., v7, s)     (512 bits only) s[k] = V_HSUM(vk) for eight vectors, bit for bit
 *   V_STORE_I8(p, vi)          an int32 vector's lanes (each within int8) stored as VW bytes
 * and the functions load_f16(p) / load_bf16(p) (VW halves widened to floats) and
 * load_e4m3(p) (VW E4M3 bytes as f16 values 2^-8 times theirs, widened),
 * and writes dot_i8 itself, which uses each width's own integer dot product. */
#ifndef MOPT_KERNELS_SIMD_H
#define MOPT_KERNELS_SIMD_H

#define SIMD_CAT_(a, b, c) a##b##c
#define SIMD_CAT(a, b, c) SIMD_CAT_(a, b, c)
#define V SIMD_CAT(__m, VBITS, )
#define VW (VBITS / 32)
#define VOP(op) SIMD_CAT(_mm, VBITS, _##op)
#define V_ZERO VOP(setzero_ps)
#define V_LOADU VOP(loadu_ps)
#define V_STOREU VOP(storeu_ps)
#define V_FMA VOP(fmadd_ps)
#define V_ADD VOP(add_ps)
#define V_SET1 VOP(set1_ps)
#define VI SIMD_CAT(__m, VBITS, i)
#define NO_TAIL(w, x, i, n, acc) ((void)0)

/* Rows longer than a 4 KiB page ask for their weights DOT_AHEAD bytes on: the hardware's prefetchers kept a bf16
 * decode of 5632-long rows (a 1B model's down_proj, 11 KiB) at 83% of the read bandwidth, this at 92-93%; rows
 * of one page (2048 bf16) read at the bandwidth without it, and were 5-8% slower with it. The prefetches go per
 * 64-byte line, an address and not a load (past the end is harmless); the sums are the same either way. */
#define DOT_AHEAD 8192
#define DOT_STEP(w, x, i, LOAD)                                                                                \
    a0 = V_FMA(LOAD(w + i), V_LOADU(x + i), a0);                                                               \
    a1 = V_FMA(LOAD(w + i + VW), V_LOADU(x + i + VW), a1);
/* w . x: two accumulators over 2*VW, one over VW, the width's tail, then scalars */
#define DOT_FN(NAME, T, LOAD, TO_F32, TAIL)                                                                    \
    static float NAME(const T *w, const float *x, int64_t n) {                                                 \
        V a0 = V_ZERO(), a1 = V_ZERO();                                                                        \
        int64_t i = 0;                                                                                         \
        if (n * (int64_t)sizeof(T) > 4096)                                                                     \
            for (; i + 2 * VW <= n; i += 2 * VW) {                                                             \
                for (size_t l = 0; l < 2 * VW * sizeof(T); l += 64)                                            \
                    _mm_prefetch((const char *)((uintptr_t)(w + i) + DOT_AHEAD + l), _MM_HINT_T0);             \
                DOT_STEP(w, x, i, LOAD)                                                                        \
            }                                                                                                  \
        for (; i + 2 * VW <= n; i += 2 * VW) {                                                                 \
            DOT_STEP(w, x, i, LOAD)                                                                            \
        }                                                                                                      \
        for (; i + VW <= n; i += VW) a0 = V_FMA(LOAD(w + i), V_LOADU(x + i), a0);                              \
        TAIL(w, x, i, n, a1);                                                                                  \
        float s = V_HSUM(V_ADD(a0, a1));                                                                       \
        for (; i < n; i++) s += TO_F32(w[i]) * x[i];                                                           \
        return s;                                                                                              \
    }
#define AS_F32(v) (v)
DOT_FN(dot_f32, float, V_LOADU, AS_F32, F32_TAIL)
DOT_FN(dot_bf16, uint16_t, load_bf16, mopt_bf16_to_f32, NO_TAIL)
DOT_FN(dot_f16, uint16_t, load_f16, mopt_f16_to_f32, NO_TAIL)

/* The same dot for nt token rows of x (xs floats apart) at once: four tokens
 * share each weight vector's load, and every token's sum is formed in DOT's
 * own order, so a batch of tokens gets bit for bit the values DOT gives each. */
#define DOTS_FN(NAME, DOT, T, LOAD, TO_F32, TAIL)                                                              \
    static void NAME(const T *w, const float *x, int64_t xs, int32_t nt, int64_t n, float *out) {             \
        int32_t t0 = 0;                                                                                        \
        for (; t0 + 4 <= nt; t0 += 4) {                                                                        \
            const float *x0 = x + (size_t)t0 * (size_t)xs, *x1 = x0 + xs, *x2 = x1 + xs, *x3 = x2 + xs;        \
            V a0 = V_ZERO(), a1 = V_ZERO(), b0 = V_ZERO(), b1 = V_ZERO();                                      \
            V c0 = V_ZERO(), c1 = V_ZERO(), d0 = V_ZERO(), d1 = V_ZERO();                                      \
            int64_t i = 0;                                                                                     \
            for (; i + 2 * VW <= n; i += 2 * VW) {                                                             \
                const V w0 = LOAD(w + i), w1 = LOAD(w + i + VW);                                               \
                a0 = V_FMA(w0, V_LOADU(x0 + i), a0);                                                           \
                a1 = V_FMA(w1, V_LOADU(x0 + i + VW), a1);                                                      \
                b0 = V_FMA(w0, V_LOADU(x1 + i), b0);                                                           \
                b1 = V_FMA(w1, V_LOADU(x1 + i + VW), b1);                                                      \
                c0 = V_FMA(w0, V_LOADU(x2 + i), c0);                                                           \
                c1 = V_FMA(w1, V_LOADU(x2 + i + VW), c1);                                                      \
                d0 = V_FMA(w0, V_LOADU(x3 + i), d0);                                                           \
                d1 = V_FMA(w1, V_LOADU(x3 + i + VW), d1);                                                      \
            }                                                                                                  \
            for (; i + VW <= n; i += VW) {                                                                     \
                const V w0 = LOAD(w + i);                                                                      \
                a0 = V_FMA(w0, V_LOADU(x0 + i), a0);                                                           \
                b0 = V_FMA(w0, V_LOADU(x1 + i), b0);                                                           \
                c0 = V_FMA(w0, V_LOADU(x2 + i), c0);                                                           \
                d0 = V_FMA(w0, V_LOADU(x3 + i), d0);                                                           \
            }                                                                                                  \
            const int64_t iv = i;                                                                              \
            TAIL(w, x0, i, n, a1);                                                                             \
            i = iv;                                                                                            \
            TAIL(w, x1, i, n, b1);                                                                             \
            i = iv;                                                                                            \
            TAIL(w, x2, i, n, c1);                                                                             \
            i = iv;                                                                                            \
            TAIL(w, x3, i, n, d1);                                                                             \
            float s0 = V_HSUM(V_ADD(a0, a1)), s1 = V_HSUM(V_ADD(b0, b1));                                      \
            float s2 = V_HSUM(V_ADD(c0, c1)), s3 = V_HSUM(V_ADD(d0, d1));                                      \
            for (; i < n; i++) {                                                                               \
                const float wf = TO_F32(w[i]);                                                                 \
                s0 += wf * x0[i];                                                                              \
                s1 += wf * x1[i];                                                                              \
                s2 += wf * x2[i];                                                                              \
                s3 += wf * x3[i];                                                                              \
            }                                                                                                  \
            out[t0] = s0, out[t0 + 1] = s1, out[t0 + 2] = s2, out[t0 + 3] = s3;                                \
        }                                                                                                      \
        for (; t0 < nt; t0++) out[t0] = DOT(w, x + (size_t)t0 * (size_t)xs, n);                                \
    }
DOTS_FN(dots_f32, dot_f32, float, V_LOADU, AS_F32, F32_TAIL)
DOTS_FN(dots_bf16, dot_bf16, uint16_t, load_bf16, mopt_bf16_to_f32, NO_TAIL)
DOTS_FN(dots_f16, dot_f16, uint16_t, load_f16, mopt_f16_to_f32, NO_TAIL)

/* nrows consecutive weight rows (n values each) against nt <= 8 token rows:
 * y[t * ys + r] is bit for bit DOT of row r with token t. With 512-bit
 * vectors two rows share each x load (16 accumulators fit the registers; the
 * empty asm keeps the compiler from folding one load into each FMA), so a step
 * does 16 FMAs for 12 loads instead of 8 for 10: 1.5x the FLOP/s of the one-row
 * form on Zen 5; the eight sums are then reduced together (V_HSUM8), which
 * made rows of 256 15-20% faster. Otherwise row by row. */
#if VBITS == 512
#define DR_ACC(k) V a0##k = V_ZERO(), a1##k = V_ZERO(), b0##k = V_ZERO(), b1##k = V_ZERO()
#define DR_STEP2(k, xk)                                                                                        \
    {                                                                                                          \
        V u0 = V_LOADU(xk + i), u1 = V_LOADU(xk + i + VW);                                                     \
        __asm__("" : "+v"(u0), "+v"(u1)); /* one load each for both rows, not one per FMA */                   \
        a0##k = V_FMA(wa0, u0, a0##k), a1##k = V_FMA(wa1, u1, a1##k);                                          \
        b0##k = V_FMA(wb0, u0, b0##k), b1##k = V_FMA(wb1, u1, b1##k);                                          \
    }
#define DR_STEP1(k, xk)                                                                                        \
    {                                                                                                          \
        V u0 = V_LOADU(xk + i);                                                                                \
        __asm__("" : "+v"(u0));                                                                                \
        a0##k = V_FMA(wa0, u0, a0##k), b0##k = V_FMA(wb0, u0, b0##k);                                          \
    }
#define DR_TAILS(k, xk, TAIL)                                                                                  \
    i = iv;                                                                                                    \
    TAIL(wa, xk, i, n, a1##k);                                                                                 \
    i = iv;                                                                                                    \
    TAIL(wb, xk, i, n, b1##k);
#define DR_SUMS(k) float sa##k = sums[k], sb##k = sums[4 + k];
#define DR_SCALAR(k, xk) sa##k += fa * xk[j], sb##k += fb * xk[j];
#define DR_STORE(k)                                                                                            \
    if (tb + k < nt) y[(size_t)(tb + k) * (size_t)ys + r] = sa##k, y[(size_t)(tb + k) * (size_t)ys + r + 1] = sb##k;
/* The first pass over a pair of rows asks for the weights 8 KB further on, so its FMAs overlap the reads from L3
 * or memory (lit-llama-7m's 8-sequence decode 19% faster in an hour when this host's memory was slow, the same
 * when it was quick) */
#define DR_AHEAD 8192
/* Tokens go four at a time; a last group of fewer starts earlier and redoes
 * some (the same bits again), and fewer than four tokens repeat the last. */
#define DR_X(k) (x + (size_t)(tb + k < nt ? tb + k : nt - 1) * (size_t)xs)
#define TWO_ROWS(DOT, T, LOAD, TO_F32, TAIL)                                                                   \
    for (; nt >= 2 && r + 2 <= nrows; r += 2) {                                                                \
        const T *wa = w + (size_t)r * (size_t)n, *wb = wa + n;                                                 \
        for (int32_t t0 = 0; t0 < nt; t0 += 4) {                                                               \
            const int32_t tb = nt < 4 ? 0 : t0 + 4 <= nt ? t0 : nt - 4;                                        \
            const float *x0 = DR_X(0), *x1 = DR_X(1), *x2 = DR_X(2), *x3 = DR_X(3);                            \
            DR_ACC(0);                                                                                         \
            DR_ACC(1);                                                                                         \
            DR_ACC(2);                                                                                         \
            DR_ACC(3);                                                                                         \
            int64_t i = 0;                                                                                     \
            for (; i + 2 * VW <= n; i += 2 * VW) {                                                             \
                if (t0 == 0) { /* the rows DR_AHEAD bytes on; an address, not a load: past the end is harmless */ \
                    _mm_prefetch((const char *)((uintptr_t)(wa + i) + DR_AHEAD), _MM_HINT_T0);                       \
                    _mm_prefetch((const char *)((uintptr_t)(wb + i) + DR_AHEAD), _MM_HINT_T0);                       \
                }                                                                                                  \
                const V wa0 = LOAD(wa + i), wa1 = LOAD(wa + i + VW), wb0 = LOAD(wb + i), wb1 = LOAD(wb + i + VW); \
                DR_STEP2(0, x0) DR_STEP2(1, x1) DR_STEP2(2, x2) DR_STEP2(3, x3)                                \
            }                                                                                                  \
            for (; i + VW <= n; i += VW) {                                                                     \
                const V wa0 = LOAD(wa + i), wb0 = LOAD(wb + i);                                                \
                DR_STEP1(0, x0) DR_STEP1(1, x1) DR_STEP1(2, x2) DR_STEP1(3, x3)                                \
            }                                                                                                  \
            const int64_t iv = i;                                                                              \
            DR_TAILS(0, x0, TAIL) DR_TAILS(1, x1, TAIL) DR_TAILS(2, x2, TAIL) DR_TAILS(3, x3, TAIL)            \
            float sums[8];                                                                                     \
            V_HSUM8(V_ADD(a00, a10), V_ADD(a01, a11), V_ADD(a02, a12), V_ADD(a03, a13), V_ADD(b00, b10),       \
                    V_ADD(b01, b11), V_ADD(b02, b12), V_ADD(b03, b13), sums);                                  \
            DR_SUMS(0) DR_SUMS(1) DR_SUMS(2) DR_SUMS(3)                                                        \
            for (int64_t j = i; j < n; j++) {                                                                  \
                const float fa = TO_F32(wa[j]), fb = TO_F32(wb[j]);                                            \
                DR_SCALAR(0, x0) DR_SCALAR(1, x1) DR_SCALAR(2, x2) DR_SCALAR(3, x3)                            \
            }                                                                                                  \
            DR_STORE(0) DR_STORE(1) DR_STORE(2) DR_STORE(3)                                                    \
        }                                                                                                      \
    }
/* Four rows by four tokens in two passes: DOT's first accumulator (the even VW chunks, ascending) for all 16
 * pairs, then its second (the odd ones), so each x load feeds four FMAs, 8 loads per 16 FMAs against TWO_ROWS'
 * 12; the first pass's sums wait in memory meanwhile. Then as DOT: tail into the second, the lane sums of
 * their sum, the scalar rest. Rows of 256-1024 (lit-llama-7m's 256 and 768) went 25-30% faster on Zen 5 with
 * 8 tokens; at 2048 slower (each pass walks the four rows and four tokens again, 48 KB, Zen 5's whole L1),
 * so longer rows keep TWO_ROWS. */
#define FR_MAX_N 1024
#define FR_ZERO(k) V a0##k = V_ZERO(), a1##k = V_ZERO(), a2##k = V_ZERO(), a3##k = V_ZERO()
#define FR_RESET(k) a0##k = V_ZERO(), a1##k = V_ZERO(), a2##k = V_ZERO(), a3##k = V_ZERO()
#define FR_STEP(k, xk)                                                                                         \
    {                                                                                                          \
        V u = V_LOADU(xk + i);                                                                                 \
        __asm__("" : "+v"(u));                                                                                 \
        a0##k = V_FMA(v0, u, a0##k), a1##k = V_FMA(v1, u, a1##k);                                              \
        a2##k = V_FMA(v2, u, a2##k), a3##k = V_FMA(v3, u, a3##k);                                              \
    }
#define FR_PASS(LOAD, first, AHEAD)                                                                            \
    for (i = first; i + VW <= n; i += 2 * VW) {                                                                \
        if (AHEAD) {                                                                                           \
            _mm_prefetch((const char *)((uintptr_t)(w0 + i) + DR_AHEAD), _MM_HINT_T0);                         \
            _mm_prefetch((const char *)((uintptr_t)(w1 + i) + DR_AHEAD), _MM_HINT_T0);                         \
            _mm_prefetch((const char *)((uintptr_t)(w2 + i) + DR_AHEAD), _MM_HINT_T0);                         \
            _mm_prefetch((const char *)((uintptr_t)(w3 + i) + DR_AHEAD), _MM_HINT_T0);                         \
        }                                                                                                      \
        const V v0 = LOAD(w0 + i), v1 = LOAD(w1 + i), v2 = LOAD(w2 + i), v3 = LOAD(w3 + i);                    \
        FR_STEP(0, x0) FR_STEP(1, x1) FR_STEP(2, x2) FR_STEP(3, x3)                                            \
    }
#define FR_KEEP(k) e[k] = a0##k, e[4 + k] = a1##k, e[8 + k] = a2##k, e[12 + k] = a3##k;
#define FR_TAILS(k, xk, TAIL)                                                                                  \
    i = iv;                                                                                                    \
    TAIL(w0, xk, i, n, a0##k);                                                                                 \
    i = iv;                                                                                                    \
    TAIL(w1, xk, i, n, a1##k);                                                                                 \
    i = iv;                                                                                                    \
    TAIL(w2, xk, i, n, a2##k);                                                                                 \
    i = iv;                                                                                                    \
    TAIL(w3, xk, i, n, a3##k);
#define FR_STORE(k)                                                                                            \
    if (tb + k < nt)                                                                                           \
        for (int q = 0; q < 4; q++) y[(size_t)(tb + k) * (size_t)ys + r + q] = s[4 * q + k];
#define FOUR_ROWS(T, LOAD, TO_F32, TAIL)                                                                       \
    for (; n <= FR_MAX_N && nt >= 4 && r + 4 <= nrows; r += 4) {                                               \
        const T *w0 = w + (size_t)r * (size_t)n, *w1 = w0 + n, *w2 = w1 + n, *w3 = w2 + n;                     \
        for (int32_t t0 = 0; t0 < nt; t0 += 4) {                                                               \
            const int32_t tb = t0 + 4 <= nt ? t0 : nt - 4;                                                     \
            const float *x0 = DR_X(0), *x1 = DR_X(1), *x2 = DR_X(2), *x3 = DR_X(3);                            \
            V e[16]; /* the first pass's sums, [row * 4 + token] */                                            \
            FR_ZERO(0);                                                                                        \
            FR_ZERO(1);                                                                                        \
            FR_ZERO(2);                                                                                        \
            FR_ZERO(3);                                                                                        \
            int64_t i;                                                                                         \
            FR_PASS(LOAD, 0, t0 == 0)                                                                          \
            FR_KEEP(0) FR_KEEP(1) FR_KEEP(2) FR_KEEP(3)                                                        \
            FR_RESET(0), FR_RESET(1), FR_RESET(2), FR_RESET(3);                                                \
            FR_PASS(LOAD, VW, 0)                                                                               \
            const int64_t iv = n / VW * VW;                                                                    \
            FR_TAILS(0, x0, TAIL) FR_TAILS(1, x1, TAIL) FR_TAILS(2, x2, TAIL) FR_TAILS(3, x3, TAIL)            \
            float s[16];                                                                                       \
            V_HSUM8(V_ADD(e[0], a00), V_ADD(e[1], a01), V_ADD(e[2], a02), V_ADD(e[3], a03), V_ADD(e[4], a10),  \
                    V_ADD(e[5], a11), V_ADD(e[6], a12), V_ADD(e[7], a13), s);                                  \
            V_HSUM8(V_ADD(e[8], a20), V_ADD(e[9], a21), V_ADD(e[10], a22), V_ADD(e[11], a23),                  \
                    V_ADD(e[12], a30), V_ADD(e[13], a31), V_ADD(e[14], a32), V_ADD(e[15], a33), s + 8);        \
            for (int64_t j = i; j < n; j++) {                                                                  \
                const float f0 = TO_F32(w0[j]), f1 = TO_F32(w1[j]), f2 = TO_F32(w2[j]), f3 = TO_F32(w3[j]);    \
                for (int k = 0; k < 4; k++) {                                                                  \
                    const float xv = (k == 0 ? x0 : k == 1 ? x1 : k == 2 ? x2 : x3)[j];                        \
                    s[k] += f0 * xv, s[4 + k] += f1 * xv, s[8 + k] += f2 * xv, s[12 + k] += f3 * xv;           \
                }                                                                                              \
            }                                                                                                  \
            FR_STORE(0) FR_STORE(1) FR_STORE(2) FR_STORE(3)                                                    \
        }                                                                                                      \
    }
#else
#define TWO_ROWS(DOT, T, LOAD, TO_F32, TAIL)
#define FOUR_ROWS(T, LOAD, TO_F32, TAIL)
#endif
#define DOTS_ROWS_FN(NAME, DOT, DOTS, T, LOAD, TO_F32, TAIL)                                                   \
    static void NAME(const T *w, int64_t nrows, const float *x, int64_t xs, int32_t nt, int64_t n, float *y,   \
                     int64_t ys) {                                                                             \
        int64_t r = 0;                                                                                         \
        FOUR_ROWS(T, LOAD, TO_F32, TAIL)                                                                       \
        TWO_ROWS(DOT, T, LOAD, TO_F32, TAIL)                                                                   \
        for (; r < nrows; r++) {                                                                               \
            float d[8];                                                                                        \
            DOTS(w + (size_t)r * (size_t)n, x, xs, nt, n, d);                                                  \
            for (int32_t t = 0; t < nt; t++) y[(size_t)t * (size_t)ys + r] = d[t];                             \
        }                                                                                                      \
    }
DOTS_ROWS_FN(dots_rows_f32, dot_f32, dots_f32, float, V_LOADU, AS_F32, F32_TAIL)
DOTS_ROWS_FN(dots_rows_bf16, dot_bf16, dots_bf16, uint16_t, load_bf16, mopt_bf16_to_f32, NO_TAIL)
DOTS_ROWS_FN(dots_rows_f16, dot_f16, dots_f16, uint16_t, load_f16, mopt_f16_to_f32, NO_TAIL)

#define CVT_HALF_FN(NAME, LOAD, TO_F32)                                                                        \
    static void NAME(const uint16_t *src, float *dst, int64_t n) {                                             \
        int64_t i = 0;                                                                                         \
        for (; i + VW <= n; i += VW) V_STOREU(dst + i, LOAD(src + i));                                         \
        for (; i < n; i++) dst[i] = TO_F32(src[i]);                                                            \
    }
CVT_HALF_FN(cvt_bf16, load_bf16, mopt_bf16_to_f32)
CVT_HALF_FN(cvt_f16, load_f16, mopt_f16_to_f32)

static void dequant_u8(const uint8_t *lv, int64_t n, float z, float s, float *dst) {
    const V vz = V_SET1(z), vs = V_SET1(s);
    int64_t i = 0;
    for (; i + VW <= n; i += VW) V_STOREU(dst + i, VOP(mul_ps)(VOP(sub_ps)(LOAD_U8(lv + i), vz), vs));
    for (; i < n; i++) dst[i] = ((float)lv[i] - z) * s;
}

/* E4M3 through the f16 converter: load_e4m3 reads (b & 0x7f) << 7 with b's sign as f16, which is the E4M3 value
 * times 2^-8 (exponent bias 15 against 7) for normals and subnormals alike, NaN where E4M3 has it; the 2^8 goes
 * into the scale, which is exact. */
static void dequant_e4m3(const uint8_t *q, int64_t n, float s, float *dst) {
    const V vs = V_SET1(s * 256.0f);
    int64_t i = 0;
    for (; i + VW <= n; i += VW) V_STOREU(dst + i, VOP(mul_ps)(load_e4m3(q + i), vs));
    for (; i < n; i++) dst[i] = mopt_e4m3_to_f32(q[i]) * s;
}

/* FP8 rows read in place: the vector part sums 2^-8 times each value (load_e4m3), the tail the same, then x 2^8 */
static inline float e4m3_over_256(uint8_t b) { return mopt_e4m3_to_f32(b) * (1.0f / 256.0f); }
DOT_FN(dot_e4m3_over_256, uint8_t, load_e4m3, e4m3_over_256, NO_TAIL)
static float dot_e4m3(const uint8_t *q, const float *x, int64_t n) { return dot_e4m3_over_256(q, x, n) * 256.0f; }

/* e^x in every lane: x = n ln2 + r with ln2 in two parts (Cody and Waite), e^r by Cephes' expf polynomial on
 * |r| <= ln2 / 2, and 2^n applied in two halves so that n may run from -150 (zero below) to 128 (infinity
 * above) without leaving the exponent field; NaN stays NaN. */
static inline V v_exp(V x) {
    x = VOP(min_ps)(V_SET1(88.8f), VOP(max_ps)(V_SET1(-104.0f), x)); /* min and max pass a NaN second operand on */
    const V n = V_ROUND(VOP(mul_ps)(x, V_SET1(1.44269504088896341f)));
    V r = V_FMA(n, V_SET1(-0.693359375f), x);
    r = V_FMA(n, V_SET1(2.12194440e-4f), r);
    V p = V_SET1(1.9875691500e-4f);
    p = V_FMA(p, r, V_SET1(1.3981999507e-3f));
    p = V_FMA(p, r, V_SET1(8.3334519073e-3f));
    p = V_FMA(p, r, V_SET1(4.1665795894e-2f));
    p = V_FMA(p, r, V_SET1(1.6666665459e-1f));
    p = V_FMA(p, r, V_SET1(5.0000001201e-1f));
    p = V_FMA(p, VOP(mul_ps)(r, r), V_ADD(r, V_SET1(1.0f)));
    const VI ni = VOP(cvtps_epi32)(n), n1 = VOP(srai_epi32)(ni, 1), bias = VOP(set1_epi32)(127);
    const V s1 = V_AS_FLOAT(VOP(slli_epi32)(VOP(add_epi32)(n1, bias), 23));
    const V s2 = V_AS_FLOAT(VOP(slli_epi32)(VOP(add_epi32)(VOP(sub_epi32)(ni, n1), bias), 23));
    return VOP(mul_ps)(VOP(mul_ps)(p, s1), s2);
}

static inline V silu_mul_v(V g, V u) {
    return VOP(mul_ps)(VOP(div_ps)(g, V_ADD(V_SET1(1.0f), v_exp(VOP(sub_ps)(V_ZERO(), g)))), u);
}

/* x as int8 per block of bs (a multiple of VW) values, the reference's arithmetic lane for lane: max ignores a NaN
 * (maxps returns its second operand then), so does the clamp's, which sends it to -127; x / s divided, not multiplied
 * by 1 / s; 1.5 x 2^23 added and taken off rounds to nearest even. */
static void quantize_i8_blocks(const float *x, int64_t n, int64_t bs, int8_t *q, float *d) {
    const V sign_off = V_AS_FLOAT(VOP(set1_epi32)(0x7fffffff)), lo = V_SET1(-127.0f), hi = V_SET1(127.0f), big = V_SET1(12582912.0f);
    for (int64_t b = 0; b < n / bs; b++, x += bs, q += bs) {
        V mx = V_ZERO();
        for (int64_t i = 0; i < bs; i += VW) mx = VOP(max_ps)(VOP(and_ps)(V_LOADU(x + i), sign_off), mx);
        const float m = V_HMAX(mx), s = d[b] = m > 0 ? m / 127.0f : 1.0f;
        const V vs = V_SET1(s);
        for (int64_t i = 0; i < bs; i += VW) {
            const V v = VOP(min_ps)(VOP(max_ps)(VOP(div_ps)(V_LOADU(x + i), vs), lo), hi);
            V_STORE_I8(q + i, VOP(cvttps_epi32)(VOP(sub_ps)(V_ADD(v, big), big)));
        }
    }
}

/* SwiGLU; the last n % VW values through the same vector code, so every value gets the same e^x */
static void silu_mul(const float *g, const float *u, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + VW <= n; i += VW) V_STOREU(y + i, silu_mul_v(V_LOADU(g + i), V_LOADU(u + i)));
    if (i < n) {
        float gt[VW] = {0}, ut[VW] = {0}, yt[VW];
        memcpy(gt, g + i, (size_t)(n - i) * sizeof *gt);
        memcpy(ut, u + i, (size_t)(n - i) * sizeof *ut);
        V_STOREU(yt, silu_mul_v(V_LOADU(gt), V_LOADU(ut)));
        memcpy(y + i, yt, (size_t)(n - i) * sizeof *yt);
    }
}

/* Decode attention (kernels.h), over a cache of fp32 or of IEEE halves (half: widened as loaded). At long contexts
 * the cache comes from memory (at 1,536 positions a 1B-class model's K and V are 6 MB a layer in fp32): att_scores
 * prefetches the K rows ATT_AHEAD positions on (K read 5-10% faster from memory; att_values measured slower with
 * it, 1 line in 8 of its loads being a prefetch). */
#define ATT_AHEAD 32
#define AV_COLS (VBITS == 512 ? 4 : 2) /* vectors of a V row a pass: 4 query heads x AV_COLS sums stay in registers */
#define AS_HEADS (VBITS == 512 ? 4 : 2) /* query heads a pass over K: NH x 4 sums, NH q and 4 K vectors in registers */

/* row p of a cache of fp32 or halves, ld values a row */
static inline const void *att_row(const void *base, int64_t p, int64_t ld, const int half) {
    return half ? (const void *)((const uint16_t *)base + (size_t)p * ld) : (const void *)((const float *)base + (size_t)p * ld);
}
static inline V att_load(const void *row, int32_t i, const int half) {
    return half ? load_f16((const uint16_t *)row + i) : V_LOADU((const float *)row + i);
}
static inline float att_at(const void *row, int32_t i, const int half) {
    return half ? mopt_f16_to_f32(((const uint16_t *)row)[i]) : ((const float *)row)[i];
}

/* NH query heads against four positions' K rows: the dot products summed across lanes together (V_HSUM4), each K
 * load serving every head. */
static inline __attribute__((always_inline)) void att_scores_tile(const float *q, int32_t hd, const void *K, int64_t ld, int32_t p,
                                                                  int32_t n, float scale, float *s, const int half, const int NH) {
    const void *k0 = att_row(K, p, ld, half), *k1 = att_row(K, p + 1, ld, half), *k2 = att_row(K, p + 2, ld, half),
               *k3 = att_row(K, p + 3, ld, half);
    for (int32_t a = 0; a < 4 && p + ATT_AHEAD + a < n; a++) {
        const char *r = att_row(K, p + ATT_AHEAD + a, ld, half);
        for (int32_t l = 0; l < hd * (half ? 2 : 4); l += 64) _mm_prefetch(r + l, _MM_HINT_T0);
    }
    V acc[AS_HEADS][4];
    for (int h = 0; h < NH; h++) acc[h][0] = acc[h][1] = acc[h][2] = acc[h][3] = V_ZERO();
    for (int32_t i = 0; i < hd; i += VW) {
        const V u0 = att_load(k0, i, half), u1 = att_load(k1, i, half), u2 = att_load(k2, i, half), u3 = att_load(k3, i, half);
        for (int h = 0; h < NH; h++) {
            const V x = V_LOADU(q + (size_t)h * hd + i);
            acc[h][0] = V_FMA(x, u0, acc[h][0]), acc[h][1] = V_FMA(x, u1, acc[h][1]);
            acc[h][2] = V_FMA(x, u2, acc[h][2]), acc[h][3] = V_FMA(x, u3, acc[h][3]);
        }
    }
    for (int h = 0; h < NH; h++) _mm_storeu_ps(s + (size_t)h * n + p, _mm_mul_ps(V_HSUM4(acc[h][0], acc[h][1], acc[h][2], acc[h][3]), _mm_set1_ps(scale)));
}

/* att_scores: AS_HEADS query heads (then 2, 1) of the group sharing a KV head a pass over K, four positions at a
 * time; every sum keeps the one-head order, so the values are the same however the heads go. Positions past the
 * last four, and head sizes that are not a multiple of VW, in scalar loops. */
static inline __attribute__((always_inline)) void att_scores_any(const float *q, int32_t g, const void *K, int64_t ld, int32_t n,
                                                                 int32_t hd, float scale, float *s, const int half) {
    const int32_t n4 = hd % VW == 0 ? n / 4 * 4 : 0;
    for (int32_t r = 0; r < g;) {
        const int32_t nh = g - r >= AS_HEADS ? AS_HEADS : g - r >= 2 ? 2 : 1;
        for (int32_t p = 0; p < n4; p += 4) {
            if (nh == AS_HEADS) att_scores_tile(q + (size_t)r * hd, hd, K, ld, p, n, scale, s + (size_t)r * n, half, AS_HEADS);
            else if (nh == 2) att_scores_tile(q + (size_t)r * hd, hd, K, ld, p, n, scale, s + (size_t)r * n, half, 2);
            else att_scores_tile(q + (size_t)r * hd, hd, K, ld, p, n, scale, s + (size_t)r * n, half, 1);
        }
        r += nh;
    }
    for (int32_t r = 0; r < g; r++)
        for (int32_t p = n4; p < n; p++) {
            const void *kp = att_row(K, p, ld, half);
            const float *qr = q + (size_t)r * hd;
            float d = 0;
            for (int32_t i = 0; i < hd; i++) d += qr[i] * att_at(kp, i, half);
            s[(size_t)r * n + p] = scale * d;
        }
}

/* NH query heads (P's rows, n apart) against NC vectors of V's columns from i: one pass over the positions, each V
 * load serving every head, NH x NC independent sums (the old loop's two heads x two vectors waited on the FMA's
 * latency). Each sum runs over the positions in order, as the one-head loop's. */
static inline __attribute__((always_inline)) void att_values_tile(const float *P, int32_t n, const void *Vr, int64_t ld, int32_t i,
                                                                  float *out, int32_t hd, const int half, const int NH, const int NC) {
    V acc[4][AV_COLS];
    for (int h = 0; h < NH; h++)
        for (int c = 0; c < NC; c++) acc[h][c] = V_ZERO();
    for (int32_t p = 0; p < n; p++) {
        const void *v = att_row(Vr, p, ld, half);
        V vv[AV_COLS];
        for (int c = 0; c < NC; c++) vv[c] = att_load(v, i + c * VW, half);
        for (int h = 0; h < NH; h++) {
            const V w = V_SET1(P[(size_t)h * n + p]);
            for (int c = 0; c < NC; c++) acc[h][c] = V_FMA(w, vv[c], acc[h][c]);
        }
    }
    for (int h = 0; h < NH; h++)
        for (int c = 0; c < NC; c++) V_STOREU(out + (size_t)h * hd + i + c * VW, acc[h][c]);
}

/* att_values: query heads 4 (then 2, 1) at a time over AV_COLS vectors of columns (then 2, 1); columns past the
 * last whole vector in scalar loops. */
static inline __attribute__((always_inline)) void att_values_any(const float *P, int32_t g, const void *Vr, int64_t ld, int32_t n,
                                                                 int32_t hd, float *out, const int half) {
    const int32_t vec = hd / VW * VW;
    for (int32_t i = 0; i < vec;) {
        const int32_t left = (vec - i) / VW, nc = left >= AV_COLS ? AV_COLS : left >= 2 ? 2 : 1;
        for (int32_t r = 0; r < g;) {
            const int32_t nh = g - r >= 4 ? 4 : g - r >= 2 ? 2 : 1;
            const float *pr = P + (size_t)r * n;
            float *o = out + (size_t)r * hd;
#define AV_TILE(NH, NC) att_values_tile(pr, n, Vr, ld, i, o, hd, half, NH, NC)
            if (nc == AV_COLS) nh == 4 ? AV_TILE(4, AV_COLS) : nh == 2 ? AV_TILE(2, AV_COLS) : AV_TILE(1, AV_COLS);
            else if (nc == 2) nh == 4 ? AV_TILE(4, 2) : nh == 2 ? AV_TILE(2, 2) : AV_TILE(1, 2);
            else nh == 4 ? AV_TILE(4, 1) : nh == 2 ? AV_TILE(2, 1) : AV_TILE(1, 1);
#undef AV_TILE
            r += nh;
        }
        i += nc * VW;
    }
    for (int32_t r = 0; r < g; r++)
        for (int32_t i = vec; i < hd; i++) {
            float a = 0;
            for (int32_t p = 0; p < n; p++) a += P[(size_t)r * n + p] * att_at(att_row(Vr, p, ld, half), i, half);
            out[(size_t)r * hd + i] = a;
        }
}

static void att_scores(const float *q, int32_t g, const float *K, int64_t ld, int32_t n, int32_t hd, float scale, float *s) {
    att_scores_any(q, g, K, ld, n, hd, scale, s, 0);
}
static void att_scores_f16(const float *q, int32_t g, const uint16_t *K, int64_t ld, int32_t n, int32_t hd, float scale, float *s) {
    att_scores_any(q, g, K, ld, n, hd, scale, s, 1);
}
static void att_values(const float *P, int32_t g, const float *Vr, int64_t ld, int32_t n, int32_t hd, float *out) {
    att_values_any(P, g, Vr, ld, n, hd, out, 0);
}
static void att_values_f16(const float *P, int32_t g, const uint16_t *Vr, int64_t ld, int32_t n, int32_t hd, float *out) {
    att_values_any(P, g, Vr, ld, n, hd, out, 1);
}

/* four vector chains, so the loads, not the adds, set the pace */
static uint64_t sum_u64(const uint64_t *w, size_t n) {
#if VBITS == 512
#define VI_ZERO() _mm512_setzero_si512()
#define VI_LOADU(p) _mm512_loadu_si512(p)
#define VI_STOREU(p, v) _mm512_storeu_si512(p, v)
#else
#define VI_ZERO() _mm256_setzero_si256()
#define VI_LOADU(p) _mm256_loadu_si256((const __m256i *)(p))
#define VI_STOREU(p, v) _mm256_storeu_si256((__m256i *)(p), v)
#endif
    const size_t per = VBITS / 64; /* words a vector */
    VI a = VI_ZERO(), b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 4 * per <= n; i += 4 * per) {
        a = VOP(add_epi64)(a, VI_LOADU(w + i)), b = VOP(add_epi64)(b, VI_LOADU(w + i + per));
        c = VOP(add_epi64)(c, VI_LOADU(w + i + 2 * per)), d = VOP(add_epi64)(d, VI_LOADU(w + i + 3 * per));
    }
    uint64_t lanes[VBITS / 64], s = 0;
    VI_STOREU(lanes, VOP(add_epi64)(VOP(add_epi64)(a, b), VOP(add_epi64)(c, d)));
#undef VI_ZERO
#undef VI_LOADU
#undef VI_STOREU
    for (size_t k = 0; k < per; k++) s += lanes[k];
    for (; i < n; i++) s += w[i];
    return s;
}

static void softmax(float *x, int64_t n) {
    int64_t i = 0;
    V m = V_SET1(-INFINITY);
    for (; i + VW <= n; i += VW) m = VOP(max_ps)(m, V_LOADU(x + i));
    float mx = V_HMAX(m);
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    const V vm = V_SET1(mx);
    V sv = V_ZERO();
    for (i = 0; i + VW <= n; i += VW) {
        const V e = v_exp(VOP(sub_ps)(V_LOADU(x + i), vm));
        V_STOREU(x + i, e);
        sv = V_ADD(sv, e);
    }
    float sum = V_HSUM(sv);
    if (i < n) { /* the tail through the same e^x */
        const int64_t i0 = i;
        float t[VW];
        for (int64_t k = 0; k < VW; k++) t[k] = i0 + k < n ? x[i0 + k] : -INFINITY;
        V_STOREU(t, v_exp(VOP(sub_ps)(V_LOADU(t), vm)));
        for (; i < n; i++) sum += (x[i] = t[i - i0]);
    }
    const float inv = 1.0f / sum;
    for (i = 0; i + VW <= n; i += VW) V_STOREU(x + i, VOP(mul_ps)(V_LOADU(x + i), V_SET1(inv)));
    for (; i < n; i++) x[i] *= inv;
}

/* Q4 / Q8 (one byte per value) blocks of 32 against x */
static float dot_q4(const uint8_t *b, const float *x, int64_t nb) {
    V a0 = V_ZERO(), a1 = V_ZERO();
    for (int64_t k = 0; k < nb; k++, b += 16, x += 32) Q4_BLOCK(b, x, a0, a1);
    return V_HSUM(V_ADD(a0, a1));
}

static float dot_q8(const uint8_t *b, const float *x, int64_t nb) {
    V a0 = V_ZERO(), a1 = V_ZERO();
    for (int64_t i = 0; i < nb * 32; i += 2 * VW) {
        a0 = V_FMA(LOAD_U8(b + i), V_LOADU(x + i), a0);
        a1 = V_FMA(LOAD_U8(b + i + VW), V_LOADU(x + i + VW), a1);
    }
    return V_HSUM(V_ADD(a0, a1));
}

#endif
