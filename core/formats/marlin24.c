/* compressed-tensors' marlin-24 layout (vLLM's W4A16 2:4 Marlin kernel) for
 * 2:4 weights with int4 values (MOPT_DTYPE_SP24, MOPT_QUANT_VALUES_I4), both
 * ways. The layout is the one compressed-tensors' Marlin24Compressor writes,
 * for a linear W [n = out, k = in] of symmetric int4 levels q in [-8, 8):
 *
 *  - CUTLASS's 2:4 compression: each group of four inputs keeps the values at
 *    positions i0 < i1 chosen from its non-zeros by the encoding in
 *    sparse_semi_structured_from_dense_cutlass (below, cutlass_pair), giving
 *    values V [n, k/2] and a 4-bit nibble i0 | i1 << 2 per group, four groups
 *    per int16 metadata element M [n, k/16] (group 4c + t in bits 4t..4t+3),
 *    scattered to the offsets of CUTLASS's reorder_meta (meta_offset).
 *  - V transposed to [k/2, n], level + 8, cut into 16 x 16 tiles laid out one
 *    k-tile per row ([k/32, 16n]: tile (a, c) element (b, d) at column
 *    256c + 16b + d), every 1024 columns permuted by get_permutations_24(4)
 *    and packed eight nibbles to an int32 (element 8j + i in bits 4i..4i+3).
 *  - F16 scales transposed to [groups, n]; with more than one group every 64
 *    consecutive values are permuted by the 2:4 scale permutation. (The
 *    compressor decides "more than one group" against k/2 where vLLM's own
 *    reference, marlin_permute_scales, uses k; they differ only for k <= 256,
 *    and mopt follows the kernel's reference.)
 *
 * Tensors: P.weight_packed I32 [k/32, 2n], P.meta I16 [k/32, 2n] (the
 * reordered metadata buffer as is), P.scale_packed F16 [groups, n] and
 * P.weight_shape I64 [2] = {n, k}, the parameter vLLM's scheme registers. */
#include <stdlib.h>
#include <string.h>

#include "hf_quant.h"
#include "mopt/quant.h"
#include "tensor_impl.h"

#define PERM_N 1024

/* get_permutations_24(4): the weight permutation and its inverse. */
static void weight_perm(int32_t *perm, int32_t *inv) {
    static const int interleave[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    int32_t raw[PERM_N], n = 0;
    for (int i = 0; i < 32; i++) {
        const int col = i / 4, col_o = col / 2, rows[4] = {2 * (i % 4), 2 * (i % 4) + 1, 2 * (i % 4 + 4), 2 * (i % 4 + 4) + 1};
        int32_t p1[8], m = 0;
        for (int block = 0; block < 2; block++)
            for (int r = 0; r < 4; r++) p1[m++] = 16 * rows[r] + col_o * 256 + 8 * (col % 2) + 4 * block;
        for (int j = 0; j < 4; j++)
            for (int q = 0; q < 8; q++) raw[n++] = p1[q] + j;
    }
    for (int p = 0; p < PERM_N; p++) perm[p] = raw[p / 8 * 8 + interleave[p % 8]];
    for (int p = 0; p < PERM_N; p++) inv[perm[p]] = p;
}

/* Where kept value k2 (of k/2) of output row r lands among the nibbles of weight_packed (row-major). */
static int64_t value_nibble(int64_t k2, int64_t r, int64_t n, const int32_t *inv) {
    const int64_t col = r / 16 * 256 + k2 % 16 * 16 + r % 16;
    return k2 / 16 * (16 * n) + col / PERM_N * PERM_N + inv[col % PERM_N];
}

/* CUTLASS's reorder_meta scatter offset of metadata element (i, j) of an [m, cols] int16 matrix (m a multiple of 64). */
static int64_t meta_offset(int64_t i, int64_t j, int64_t m) {
    int64_t r = i / 64 * 64 + i % 2 * 2 + i % 8 / 4 + i % 32 % 4 / 2 * 32 + i % 64 / 8 * 4, c = j;
    const int64_t d = (r % 2 == 0 && c % 2 == 1) - (r % 2 == 1 && c % 2 == 0);
    r += d, c -= d;
    return c / 2 * m * 2 + r * 2 + c % 2;
}

/* 2:4 scale permutation (get_permutations_24's scale_perm) of 64 values. */
static int32_t scale_perm(int p) {
    static const int s[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    return p / 8 * 8 + s[p % 8];
}

/* The positions CUTLASS keeps for a group with non-zero flags m0..m3 (its Espresso-minimized encoding). */
static void cutlass_pair(int m0, int m1, int m3, int *i0, int *i1) {
    const int e0 = m0 && m1, e1 = !m0 && m1, e2 = !m0 && !m1;
    *i0 = e1 | e2 << 1;
    *i1 = (e0 || e2 || m3) | (e1 || !m1) << 1;
}

const char *mopt_marlin24_refuses(const mopt_tensor *t) {
    const int64_t n = t->ne[1], k = t->ne[0];
    if (!(t->quant->flags & MOPT_QUANT_VALUES_I4)) return "marlin-24 holds 2:4 weights with int4 values";
    if (n % 64 || k % 128) return "marlin-24 needs outputs divisible by 64 and inputs by 128";
    if (t->quant->group_size != -1 && t->quant->group_size != 128) return "marlin-24 holds groups of 128 inputs or one scale per row";
    return NULL;
}

static mopt_status add(mopt_st_list *l, const char *p, const char *part, const char *dt, int32_t nd, int64_t d0, int64_t d1, void *data,
                       size_t bytes, mopt_error *err) {
    char name[MOPT_MAX_NAME + 32];
    snprintf(name, sizeof name, "%s.%s", p, part);
    const int64_t shape[2] = {d0, d1};
    return mopt_st_list_add(l, name, dt, nd, shape, data, bytes, err);
}

mopt_status mopt_marlin24_write(mopt_st_list *l, const char *p, const mopt_tensor *t, const int64_t *perm, mopt_error *err) {
    const char *why = mopt_marlin24_refuses(t);
    if (why) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %s", t->name, why);
    const int64_t n = t->ne[1], k = t->ne[0], ng = t->quant->scale->ne[0];
    int32_t wp[PERM_N], inv[PERM_N];
    weight_perm(wp, inv);
    uint32_t *qw = calloc((size_t)(k * n / 16), 4); /* n k/2 kept values, eight per word */
    uint16_t *meta = calloc((size_t)(k * n / 16), 2), *sc = malloc((size_t)(ng * n) * 2);
    float *dense = malloc((size_t)k * sizeof *dense);
    int64_t *shape = malloc(2 * sizeof *shape);
    if (!qw || !meta || !sc || !dense || !shape) {
        free(qw), free(meta), free(sc), free(dense), free(shape);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    const uint16_t *ts = (const uint16_t *)t->quant->scale->data;
    for (int64_t r = 0; r < n; r++) {
        const int64_t src = perm ? perm[r] : r;
        mopt_sp24_levels(t, src, dense); /* the row's signed levels, dense */
        for (int64_t g = 0; g < k / 4; g++) {
            const float *q = dense + 4 * g;
            int i[2];
            cutlass_pair(q[0] != 0, q[1] != 0, q[3] != 0, &i[0], &i[1]);
            for (int h = 0; h < 2; h++) {
                const int64_t at = value_nibble(2 * g + h, r, n, inv);
                qw[at / 8] |= (uint32_t)((int)q[i[h]] + 8) << (4 * (at % 8));
            }
            meta[meta_offset(r, g / 4, n)] |= (uint16_t)((i[0] | i[1] << 2) << (4 * (g % 4)));
        }
    }
    free(dense);
    for (int64_t f = 0; f < ng * n; f++) { /* [groups, n] flat; with groups, position p of every 64 holds scale_perm(p) */
        const int64_t o = ng > 1 ? f / 64 * 64 + scale_perm((int)(f % 64)) : f, r = o % n;
        sc[f] = ts[(perm ? perm[r] : r) * ng + o / n];
    }
    shape[0] = n, shape[1] = k;
    mopt_status st = add(l, p, "weight_packed", "I32", 2, k / 32, 2 * n, qw, (size_t)(k * n / 16) * 4, err);
    if (st) {
        free(meta), free(sc), free(shape);
        return st;
    }
    if ((st = add(l, p, "meta", "I16", 2, k / 32, 2 * n, meta, (size_t)(k * n / 16) * 2, err))) {
        free(sc), free(shape);
        return st;
    }
    if ((st = add(l, p, "scale_packed", "F16", 2, ng, n, sc, (size_t)(ng * n) * 2, err))) {
        free(shape);
        return st;
    }
    return add(l, p, "weight_shape", "I64", 1, 2, 0, shape, 2 * sizeof *shape, err);
}

mopt_tensor *mopt_marlin24_read(const char *name, int64_t n, int64_t k, int32_t group_size, const uint32_t *qw, const uint16_t *meta,
                                const uint16_t *sc, mopt_error *err) {
    const int64_t ng = group_size > 0 ? k / group_size : 1;
    int32_t wp[PERM_N], inv[PERM_N];
    weight_perm(wp, inv);
    uint8_t *u = malloc((size_t)(n * k));
    float *scales = malloc((size_t)(n * ng) * sizeof *scales);
    if (!u || !scales) {
        free(u), free(scales);
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    memset(u, 8, (size_t)(n * k));
    for (int64_t r = 0; r < n; r++)
        for (int64_t g = 0; g < k / 4; g++) {
            const int nib = meta[meta_offset(r, g / 4, n)] >> (4 * (g % 4)) & 15, i[2] = {nib & 3, nib >> 2};
            if (i[0] >= i[1]) {
                free(u), free(scales);
                MOPT_FAIL(err, MOPT_E_FORMAT, "%s: marlin-24 metadata of row %lld, inputs %lld..%lld is not a 2:4 encoding", name,
                          (long long)r, (long long)(4 * g), (long long)(4 * g + 3));
                return NULL;
            }
            for (int h = 0; h < 2; h++) {
                const int64_t at = value_nibble(2 * g + h, r, n, inv);
                u[r * k + 4 * g + i[h]] = (uint8_t)(qw[at / 8] >> (4 * (at % 8)) & 15);
            }
        }
    for (int64_t f = 0; f < ng * n; f++) {
        const int64_t o = ng > 1 ? f / 64 * 64 + scale_perm((int)(f % 64)) : f;
        scales[o % n * ng + o / n] = mopt_f16_to_f32(sc[f]);
    }
    mopt_tensor *t = mopt_sp24_pack_i4(name, n, k, group_size, u, scales, err);
    free(u), free(scales);
    return t;
}
