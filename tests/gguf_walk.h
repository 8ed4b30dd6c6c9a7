/* Finds fields of a GGUF file in memory, for tests that patch one field the
 * way a hostile or broken file would (layout: ggml docs/gguf.md). Trusts the
 * file: tests only walk files mopt wrote. */
#ifndef MOPT_TEST_GGUF_WALK_H
#define MOPT_TEST_GGUF_WALK_H

#include <stdint.h>
#include <string.h>

static inline uint64_t gw_u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* the size of a value of GGUF type t at p (arrays and strings included) */
static inline size_t gw_value_size(const unsigned char *p, uint32_t t) {
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    if (t == 8) return 8 + (size_t)gw_u64(p);
    if (t == 9) {
        uint32_t at;
        memcpy(&at, p, 4);
        uint64_t n = gw_u64(p + 4);
        size_t off = 12;
        for (uint64_t i = 0; i < n; i++) off += gw_value_size(p + off, at);
        return off;
    }
    return t < 13 ? sz[t] : 0;
}

/* Walks the key/values: returns the offset of `key`'s value (after its u32
 * type), or, with key NULL or absent, 0 and the end of the section in *end. */
static inline size_t gw_find_kv(const unsigned char *d, const char *key, size_t *end) {
    uint64_t n_kv = gw_u64(d + 16);
    size_t p = 24;
    for (uint64_t i = 0; i < n_kv; i++) {
        uint64_t len = gw_u64(d + p);
        int hit = key && len == strlen(key) && !memcmp(d + p + 8, key, len);
        p += 8 + (size_t)len;
        uint32_t t;
        memcpy(&t, d + p, 4);
        p += 4;
        if (hit) return p;
        p += gw_value_size(d + p, t);
    }
    if (end) *end = p;
    return 0;
}

static inline size_t gguf_kv_value_offset(const unsigned char *d, const char *key) { return gw_find_kv(d, key, NULL); }

/* Offset of tensor info `want` (by index) or of the one named `name`: its name
 * (u64 length, bytes) with by_name 0, its type field (u32, then the u64 data
 * offset) otherwise; 0 when there is none. */
static inline size_t gw_find_tensor(const unsigned char *d, uint64_t want, const char *name) {
    size_t p = 0;
    gw_find_kv(d, NULL, &p);
    for (uint64_t i = 0, n_t = gw_u64(d + 8); i < n_t; i++) {
        if (!name && i == want) return p;
        uint64_t len = gw_u64(d + p);
        int hit = name && len == strlen(name) && !memcmp(d + p + 8, name, len);
        p += 8 + (size_t)len;
        uint32_t nd;
        memcpy(&nd, d + p, 4);
        p += 4 + 8 * (size_t)nd;
        if (hit) return p;
        p += 12;
    }
    return 0;
}

/* Offset of the name (u64 length, then bytes) of tensor info i. */
static inline size_t gguf_tensor_name_offset(const unsigned char *d, uint64_t i) { return gw_find_tensor(d, i, NULL); }
/* Offset of the type field (u32, then the u64 data offset) of tensor `name`. */
static inline size_t gguf_tensor_type_offset(const unsigned char *d, const char *name) { return gw_find_tensor(d, 0, name); }

#endif
