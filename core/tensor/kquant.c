/* ggml k-quant weights kept as GGUF files store them (MOPT_DTYPE_KQUANT,
 * layout in mopt/quant.h): packing the blocks and reading them back as fp32,
 * exactly as ggml's dequantize_row_q{2,3,4,5,6}_K. The GGUF reader and writer use
 * the same block decoding. */
#include <string.h>

#include "mopt/quant.h"
#include "tensor_impl.h"

int32_t mopt_kquant_block_bytes(int32_t bits) {
    switch (bits) {
    case 2: return 84;
    case 3: return 110;
    case 4: return 144;
    case 5: return 176;
    case 6: return 210;
    default: return 0;
    }
}

mopt_tensor *mopt_kquant_pack(const char *name, int64_t out, int64_t in, int32_t bits, const void *blocks, mopt_error *err) {
    const int32_t bb = mopt_kquant_block_bytes(bits);
    if (!bb) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: k-quant blocks have 2 to 6 bits (Q2_K ... Q6_K), not %d", name, bits);
        return NULL;
    }
    if (out <= 0 || in <= 0 || in % MOPT_KQ_BLOCK) {
        MOPT_FAIL(err, MOPT_E_INVALID, "%s: k-quant rows are whole %d-value blocks (got [%lld, %lld])", name, MOPT_KQ_BLOCK,
                  (long long)out, (long long)in);
        return NULL;
    }
    const size_t row_bytes = (size_t)(in / MOPT_KQ_BLOCK) * (size_t)bb;
    mopt_tensor *t = mopt_packed_new(name, MOPT_DTYPE_KQUANT, out, in, row_bytes, err);
    if (!t) return NULL;
    t->quant->bits = bits;
    t->quant->group_size = bits == 4 || bits == 5 ? 32 : 16; /* the sub-block a scale covers */
    memcpy(t->data, blocks, row_bytes * (size_t)out);
    return t;
}

/* Q2_K / Q3_K: per 128 values, bits 2k..2k+1 of byte l hold value 32k + l; sub-blocks of 16 with their own
 * scale (Q2_K: and min), Q3_K's high bit (set: level >= 4) in bit k of hmask byte l of each 32 */
static void q23k_f32(const uint8_t *b, int three, float *y) {
    const uint8_t *q = b + (three ? 32 : 16);
    int sc[16], mn[16] = {0};
    float d, dmin = 0;
    if (three) {
        d = mopt_f16_at(b + 108);
        const uint8_t *s = b + 96;
        for (int j = 0; j < 16; j++) sc[j] = mopt_q3k_scale(s, j) - 32;
    } else {
        d = mopt_f16_at(b + 80), dmin = mopt_f16_at(b + 82);
        for (int j = 0; j < 16; j++) sc[j] = b[j] & 0xF, mn[j] = b[j] >> 4;
    }
    for (int v = 0; v < 256; v++) {
        const int n = v / 128, k = (v % 128) / 32, l = v % 32, j = v / 16;
        int lv = (q[32 * n + l] >> (2 * k)) & 3;
        if (three) lv -= (b[l] >> (4 * n + k) & 1) ? 0 : 4;
        y[v] = d * (float)sc[j] * (float)lv - dmin * (float)mn[j];
    }
}

/* Q4_K / Q5_K: sub-blocks 2i and 2i+1 share 32 bytes of nibbles (low, high) and, for Q5_K, bits 2i and 2i+1 of qh */
static void q45k_f32(const uint8_t *b, int five, float *y) {
    const float d = mopt_f16_at(b), dmin = mopt_f16_at(b + 2);
    const uint8_t *qh = b + 16, *q = b + (five ? 48 : 16);
    uint8_t sc[8], mn[8];
    mopt_kquant_scales_mins(b + 4, sc, mn);
    for (int i = 0; i < 4; i++, q += 32)
        for (int h = 0; h < 2; h++) {
            const float ds = d * sc[2 * i + h], dm = dmin * mn[2 * i + h];
            for (int l = 0; l < 32; l++) {
                const int v = (h ? q[l] >> 4 : q[l] & 0xF) + (five && (qh[l] >> (2 * i + h) & 1) ? 16 : 0);
                *y++ = ds * (float)v - dm;
            }
        }
}

/* Q6_K: 128 values at a time from 64 bytes of low nibbles and 32 of high bit pairs */
static void q6k_f32(const uint8_t *b, float *y) {
    const float d = mopt_f16_at(b + 208);
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    for (int n = 0; n < 2; n++, y += 128, ql += 64, qh += 32, sc += 8)
        for (int l = 0; l < 32; l++) {
            const int is = l / 16;
            y[l] = d * sc[is] * (float)((int)((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
            y[l + 32] = d * sc[is + 2] * (float)((int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
            y[l + 64] = d * sc[is + 4] * (float)((int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            y[l + 96] = d * sc[is + 6] * (float)((int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
}

void mopt_kquant_block_f32(int32_t bits, const uint8_t *block, float *y) {
    if (bits == 6) q6k_f32(block, y);
    else if (bits <= 3) q23k_f32(block, bits == 3, y);
    else q45k_f32(block, bits == 5, y);
}

void mopt_kquant_row_f32(const mopt_tensor *t, int64_t row, float *out) {
    const uint8_t *p = (const uint8_t *)t->data + (size_t)row * t->nb[1];
    const int32_t bits = t->quant->bits, bb = mopt_kquant_block_bytes(bits);
    for (int64_t k = 0; k < t->ne[0] / MOPT_KQ_BLOCK; k++) mopt_kquant_block_f32(bits, p + k * bb, out + k * MOPT_KQ_BLOCK);
}
