/* Hash maps for the vocabulary and the merge table, and the BPE merge loop. */
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "mopt/interrupt.h"
#include "tok_impl.h"

int id_vec_push(id_vec *a, int32_t x) {
    if (!mopt_grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v)) return 0;
    a->v[a->n++] = x;
    return 1;
}

uint32_t tok_hash(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t pow2_at_least(uint32_t n) {
    uint32_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

int str_map_build(str_map *m, char *const *keys, const uint32_t *lens, int32_t n) {
    m->cap = pow2_at_least((uint32_t)n * 2 + 1);
    m->slots = malloc(m->cap * sizeof *m->slots);
    if (!m->slots) return 0;
    memset(m->slots, 0xff, m->cap * sizeof *m->slots);
    m->keys = keys;
    m->key_len = lens;
    for (int32_t id = 0; id < n; id++) {
        if (!keys[id]) continue;
        uint32_t i = tok_hash(keys[id], lens[id]) & (m->cap - 1);
        int dup = 0;
        while (m->slots[i] >= 0) {
            int32_t o = m->slots[i];
            if (lens[o] == lens[id] && memcmp(keys[o], keys[id], lens[id]) == 0) {
                dup = 1; /* first id wins, as in a vocab dict */
                break;
            }
            i = (i + 1) & (m->cap - 1);
        }
        if (!dup) m->slots[i] = id;
    }
    return 1;
}

int32_t str_map_get(const str_map *m, const char *s, size_t n) {
    if (!m->slots) return -1;
    uint32_t i = tok_hash(s, n) & (m->cap - 1);
    while (m->slots[i] >= 0) {
        int32_t id = m->slots[i];
        if (m->key_len[id] == n && memcmp(m->keys[id], s, n) == 0) return id;
        i = (i + 1) & (m->cap - 1);
    }
    return -1;
}

void str_map_free(str_map *m) {
    free(m->slots);
    m->slots = NULL;
}

static uint32_t pair_hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return (uint32_t)k;
}

int pair_map_init(pair_map *m, uint32_t n) {
    m->cap = pow2_at_least(n * 2 + 1);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->rank = malloc(m->cap * sizeof *m->rank);
    m->merged = malloc(m->cap * sizeof *m->merged);
    return m->keys && m->rank && m->merged;
}

int pair_map_put(pair_map *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t i = pair_hash(k) & (m->cap - 1);
    while (m->keys[i] && m->keys[i] != k) i = (i + 1) & (m->cap - 1);
    if (m->keys[i]) return 0; /* duplicate merge: keep the first (lowest rank) */
    m->keys[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
    return 1;
}

int pair_map_get(const pair_map *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged) {
    if (!m->keys) return 0;
    uint64_t k = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t i = pair_hash(k) & (m->cap - 1);
    while (m->keys[i]) {
        if (m->keys[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return 1;
        }
        i = (i + 1) & (m->cap - 1);
    }
    return 0;
}

void pair_map_free(pair_map *m) {
    free(m->keys);
    free(m->rank);
    free(m->merged);
    m->keys = NULL;
}

/* --- merge loop ------------------------------------------------------------- */

typedef struct {
    int32_t rank, pos, merged;
} cand;

static int cand_less(cand a, cand b) { return a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos; }

typedef struct {
    cand *v;
    size_t n, cap;
} heap;

static int heap_push(heap *h, cand c) {
    if (!mopt_grow((void **)&h->v, &h->cap, h->n + 1, sizeof *h->v)) return 0;
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(c, h->v[parent])) break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = c;
    return 1;
}

static cand heap_pop(heap *h) {
    cand top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        cand best = last;
        if (l < h->n && cand_less(h->v[l], best)) {
            m = l;
            best = h->v[l];
        }
        if (r < h->n && cand_less(h->v[r], best)) m = r;
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

int tok_bpe_merge(const mopt_tokenizer *tok, const int32_t *syms, size_t n, id_vec *out) {
    if (n == 0) return 1;
    if (n == 1) return id_vec_push(out, syms[0]);
    int32_t *id = malloc(n * sizeof *id);
    int32_t *prev = malloc(n * sizeof *prev);
    int32_t *next = malloc(n * sizeof *next);
    heap h = {0};
    int ok = id && prev && next;
    for (size_t i = 0; ok && i < n; i++) {
        id[i] = syms[i];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    int32_t rank, merged;
    for (size_t i = 0; ok && i + 1 < n; i++)
        if (pair_map_get(&tok->merges, id[i], id[i + 1], &rank, &merged))
            ok = heap_push(&h, (cand){rank, (int32_t)i, merged});
    for (uint32_t step = 0; ok && h.n; step++) {
        if (!(step & 0xffff) && mopt_interrupted()) { /* one merge over a whole llama2.c text can be long */
            ok = 0;
            break;
        }
        cand c = heap_pop(&h);
        if (id[c.pos] < 0) continue; /* merged away */
        int32_t nx = next[c.pos];
        if (nx < 0) continue;
        if (!pair_map_get(&tok->merges, id[c.pos], id[nx], &rank, &merged) || merged != c.merged) continue;
        id[c.pos] = merged;
        id[nx] = -1;
        next[c.pos] = next[nx];
        if (next[nx] >= 0) prev[next[nx]] = c.pos;
        if (prev[c.pos] >= 0 && pair_map_get(&tok->merges, id[prev[c.pos]], merged, &rank, &merged))
            ok = heap_push(&h, (cand){rank, prev[c.pos], merged});
        if (ok && next[c.pos] >= 0 && pair_map_get(&tok->merges, id[c.pos], id[next[c.pos]], &rank, &merged))
            ok = heap_push(&h, (cand){rank, c.pos, merged});
    }
    for (int32_t i = 0; ok && i >= 0; i = next[i]) ok = id_vec_push(out, id[i]);
    free(id);
    free(prev);
    free(next);
    free(h.v);
    return ok;
}
