/* Q/K row orders of RoPE models, per head of hd rows: Meta / llama2.c / GGUF
 * interleave the rotated pairs (rows 2i, 2i+1), Hugging Face and TensorRT-LLM
 * rotate halves (rows i, i + hd/2). These map a row of one order to the row of
 * the other that holds the same weights. */
#ifndef MOPT_ROPE_ORDER_H
#define MOPT_ROPE_ORDER_H

#include <stdint.h>

/* rotate-half row r is interleaved row ... */
static inline int64_t rope_half_to_interleaved(int64_t r, int64_t hd) {
    const int64_t h0 = r / hd * hd, w = r % hd;
    return h0 + 2 * (w % (hd / 2)) + w / (hd / 2);
}

/* interleaved row r is rotate-half row ... */
static inline int64_t rope_interleaved_to_half(int64_t r, int64_t hd) {
    const int64_t h0 = r / hd * hd, w = r % hd;
    return h0 + (w % 2) * (hd / 2) + w / 2;
}

#endif
