/* GGUF reader: every length, count and offset is checked against the mapping
 * before anything is stored, and string arrays get an offset table so element
 * access is O(1) and in bounds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tensor_impl.h"
#include "ggml.h"

#define GGUF_MAX_KV (1 << 20)
#define GGUF_MAX_TENSORS (1 << 20)

typedef struct gguf_kv {
    const char *key;
    uint64_t key_len;
    int32_t type;            /* value type */
    const uint8_t *val;      /* scalar value, string (u64 len + bytes), or first array element */
    int32_t arr_type;
    uint64_t arr_n;
    const uint8_t **str_at;  /* string arrays: element i (u64 len + bytes) */
} gguf_kv;

struct gguf_file {
    mopt_buffer *buf;
    gguf_kv *kv;
    int64_t n_kv;
    gguf_tensor *t;
    int64_t n_t;
};

typedef struct {
    const uint8_t *p, *end;
    const char *path;
    mopt_error *err;
} rd;

static bool need(rd *r, uint64_t n, const char *what) {
    if ((uint64_t)(r->end - r->p) >= n) return true;
    MOPT_FAIL(r->err, MOPT_E_FORMAT, "%s: truncated GGUF file: %s runs past the end (%llu bytes needed)", r->path, what,
              (unsigned long long)n);
    return false;
}

static bool u32(rd *r, uint32_t *v, const char *what) {
    if (!need(r, 4, what)) return false;
    memcpy(v, r->p, 4);
    r->p += 4;
    return true;
}
static bool u64(rd *r, uint64_t *v, const char *what) {
    if (!need(r, 8, what)) return false;
    memcpy(v, r->p, 8);
    r->p += 8;
    return true;
}
static bool str(rd *r, const char **s, uint64_t *len, const char *what) {
    if (!u64(r, len, what) || !need(r, *len, what)) return false;
    *s = (const char *)r->p;
    r->p += *len;
    return true;
}

static uint64_t scalar_size(int32_t t) {
    static const uint64_t sz[GGUF_N_TYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t >= 0 && t < GGUF_N_TYPES ? sz[t] : 0;
}

static bool value(rd *r, gguf_kv *kv) {
    char what[160];
    snprintf(what, sizeof what, "the value of \"%.*s\"", (int)(kv->key_len < 100 ? kv->key_len : 100), kv->key);
    kv->val = r->p;
    if (kv->type == GGUF_STRING) {
        const char *s;
        uint64_t n;
        return str(r, &s, &n, what);
    }
    if (kv->type == GGUF_ARRAY) {
        uint32_t at;
        if (!u32(r, &at, what) || !u64(r, &kv->arr_n, what)) return false;
        kv->arr_type = (int32_t)at;
        kv->val = r->p;
        if (at == GGUF_STRING) {
            if (kv->arr_n > (uint64_t)(r->end - r->p) / 8) return need(r, UINT64_MAX, what);
            kv->str_at = malloc((size_t)(kv->arr_n ? kv->arr_n : 1) * sizeof *kv->str_at);
            if (!kv->str_at) {
                MOPT_FAIL(r->err, MOPT_E_NOMEM, "out of memory");
                return false;
            }
            for (uint64_t i = 0; i < kv->arr_n; i++) {
                const char *s;
                uint64_t n;
                kv->str_at[i] = r->p;
                if (!str(r, &s, &n, what)) return false;
            }
            return true;
        }
        const uint64_t es = scalar_size((int32_t)at);
        if (!es) {
            MOPT_FAIL(r->err, MOPT_E_FORMAT, "%s: %s: array element type %u is not supported", r->path, what, at);
            return false;
        }
        if (kv->arr_n > (uint64_t)(r->end - r->p) / es) return need(r, UINT64_MAX, what);
        r->p += kv->arr_n * es;
        return true;
    }
    const uint64_t es = scalar_size(kv->type);
    if (!es) {
        MOPT_FAIL(r->err, MOPT_E_FORMAT, "%s: %s has unknown type %d", r->path, what, kv->type);
        return false;
    }
    if (!need(r, es, what)) return false;
    r->p += es;
    return true;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n_kv; i++) free(f->kv[i].str_at);
    free(f->kv);
    free(f->t);
    mopt_buffer_release(f->buf);
    free(f);
}

mopt_buffer *gguf_buffer(const gguf_file *f) { return f->buf; }

mopt_status gguf_open(const char *path, gguf_file **out, mopt_error *err) {
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    f->buf = mopt_buffer_mmap(path, err);
    if (!f->buf) {
        free(f);
        return err ? (mopt_status)err->code : MOPT_E_IO;
    }
    mopt_status st = MOPT_E_FORMAT;
    if (f->buf->size == 0) { /* an empty mapping has no base to point into */
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: empty file, not a GGUF file", path);
        gguf_close(f);
        return MOPT_E_FORMAT;
    }
    rd r = {f->buf->base, (const uint8_t *)f->buf->base + f->buf->size, path, err};
    uint32_t magic, version;
    uint64_t n_t, n_kv;
    if (!u32(&r, &magic, "the header")) goto fail;
    if (memcmp(&magic, "GGUF", 4)) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: not a GGUF file (magic bytes are not \"GGUF\")", path);
        goto fail;
    }
    if (!u32(&r, &version, "the header") || !u64(&r, &n_t, "the header") || !u64(&r, &n_kv, "the header")) goto fail;
    if (version != 2 && version != 3) {
        MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: GGUF version %u (supported: 2, 3)", path, version);
        goto fail;
    }
    if (n_kv > GGUF_MAX_KV || n_t > GGUF_MAX_TENSORS) {
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: impossible GGUF header: %llu tensors, %llu key/values", path,
                  (unsigned long long)n_t, (unsigned long long)n_kv);
        goto fail;
    }
    f->kv = calloc((size_t)(n_kv ? n_kv : 1), sizeof *f->kv);
    f->t = calloc((size_t)(n_t ? n_t : 1), sizeof *f->t);
    if (!f->kv || !f->t) {
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        goto fail;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &f->kv[f->n_kv++];
        uint32_t type;
        if (!str(&r, &kv->key, &kv->key_len, "a key") || !u32(&r, &type, "a key's type")) goto fail;
        kv->type = (int32_t)type;
        if (!value(&r, kv)) {
            st = err && err->code ? (mopt_status)err->code : MOPT_E_FORMAT;
            goto fail;
        }
    }
    uint64_t align = 32;
    int64_t a;
    if (gguf_get_int(f, "general.alignment", &a)) {
        if (a <= 0 || a > 65536 || (a & (a - 1))) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: general.alignment %lld is not a power of two", path, (long long)a);
            goto fail;
        }
        align = (uint64_t)a;
    }
    uint64_t *offs = calloc((size_t)(n_t ? n_t : 1), sizeof *offs);
    if (!offs) {
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        goto fail;
    }
    for (uint64_t i = 0; i < n_t; i++) {
        gguf_tensor *t = &f->t[i];
        const char *name;
        uint64_t len;
        uint32_t nd, type;
        if (!str(&r, &name, &len, "a tensor name") || !u32(&r, &nd, "a tensor's dimensions")) goto fail_offs;
        if (len >= sizeof t->name || nd < 1 || nd > 4) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %llu: name of %llu bytes or %u dimensions (at most 95 bytes, 1..4)", path,
                      (unsigned long long)i, (unsigned long long)len, nd);
            goto fail_offs;
        }
        memcpy(t->name, name, len);
        t->ndim = (int32_t)nd;
        uint64_t count = 1;
        for (int k = 0; k < 4; k++) t->ne[k] = 1;
        for (uint32_t k = 0; k < nd; k++) {
            uint64_t d;
            if (!u64(&r, &d, "a tensor's shape")) goto fail_offs;
            if (d == 0 || d > ((uint64_t)1 << 40) || mopt_mul_overflows(count, d, &count)) {
                MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: impossible dimension %llu", path, t->name, (unsigned long long)d);
                goto fail_offs;
            }
            t->ne[k] = (int64_t)d;
        }
        if (!u32(&r, &type, "a tensor's type") || !u64(&r, &offs[i], "a tensor's offset")) goto fail_offs;
        t->type = (int32_t)type;
        const int64_t rb = mopt_ggml_row_bytes(t->type, t->ne[0]);
        if (!mopt_ggml_block_size(t->type)) {
            MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: tensor %s: ggml type %d is not supported (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q2_k ... q6_k, iq4_nl)",
                      path, t->name, t->type);
            st = MOPT_E_UNSUPPORTED;
            goto fail_offs;
        }
        if (rb < 0) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: row of %lld values is not whole %s blocks", path, t->name,
                      (long long)t->ne[0], mopt_ggml_type_name(t->type));
            goto fail_offs;
        }
        if (mopt_mul_overflows((uint64_t)rb, count / (uint64_t)t->ne[0], &t->nbytes)) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: size overflows", path, t->name);
            goto fail_offs;
        }
        if (offs[i] % align) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: offset %llu is not a multiple of the alignment %llu", path, t->name,
                      (unsigned long long)offs[i], (unsigned long long)align);
            goto fail_offs;
        }
        f->n_t++;
    }
    const uint64_t hdr = (uint64_t)(r.p - (const uint8_t *)f->buf->base), data0 = (hdr + align - 1) / align * align;
    const uint64_t size = f->buf->size;
    uint64_t expect = 0; /* as ggml's reader: tensors lie back to back, each padded to the alignment */
    for (int64_t i = 0; i < f->n_t; i++) {
        gguf_tensor *t = &f->t[i];
        if (offs[i] != expect) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: offset %llu, expected %llu after the %s tensor before it (a wrong type, shape or offset)",
                      path, t->name, (unsigned long long)offs[i], (unsigned long long)expect, i ? f->t[i - 1].name : "(none)");
            goto fail_offs;
        }
        if (t->nbytes > UINT64_MAX - align || (expect += (t->nbytes + align - 1) / align * align) < offs[i]) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: size overflows", path, t->name);
            goto fail_offs;
        }
        if (data0 > size || offs[i] > size - data0 || t->nbytes > size - data0 - offs[i]) {
            MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: data (offset %llu, %llu bytes) runs past the end of the file", path,
                      t->name, (unsigned long long)offs[i], (unsigned long long)t->nbytes);
            goto fail_offs;
        }
        t->data = (const uint8_t *)f->buf->base + data0 + offs[i];
    }
    free(offs);
    *out = f;
    return MOPT_OK;
fail_offs:
    free(offs);
fail:
    gguf_close(f);
    return st == MOPT_E_FORMAT && err && err->code ? (mopt_status)err->code : st;
}

int64_t gguf_n_tensors(const gguf_file *f) { return f->n_t; }
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int64_t i) { return i >= 0 && i < f->n_t ? &f->t[i] : NULL; }
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (int64_t i = 0; i < f->n_t; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

static const gguf_kv *find(const gguf_file *f, const char *key) {
    const size_t n = strlen(key);
    for (int64_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key_len == n && !memcmp(f->kv[i].key, key, n)) return &f->kv[i];
    return NULL;
}

/* a scalar of type t at p as int (ok = 0 for non-integers) */
static int64_t as_int(int32_t t, const uint8_t *p, int *ok) {
    *ok = 1;
    switch (t) {
    case GGUF_U8: return *p;
    case GGUF_I8: return (int8_t)*p;
    case GGUF_U16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case GGUF_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case GGUF_U32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case GGUF_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case GGUF_U64: { uint64_t v; memcpy(&v, p, 8); return v > INT64_MAX ? (*ok = 0) : (int64_t)v; }
    case GGUF_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    default: *ok = 0; return 0;
    }
}

static bool as_num(int32_t t, const uint8_t *p, double *out) {
    if (t == GGUF_F32) {
        float v;
        memcpy(&v, p, 4);
        *out = v;
        return true;
    }
    if (t == GGUF_F64) {
        memcpy(out, p, 8);
        return true;
    }
    int ok;
    int64_t v = as_int(t, p, &ok);
    *out = (double)v;
    return ok;
}

bool gguf_get_int(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = find(f, key);
    int ok = 0;
    if (kv) *out = as_int(kv->type, kv->val, &ok);
    return ok;
}

bool gguf_get_num(const gguf_file *f, const char *key, double *out) {
    const gguf_kv *kv = find(f, key);
    return kv && as_num(kv->type, kv->val, out);
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = find(f, key);
    if (!kv || kv->type != GGUF_BOOL) return false;
    *out = *kv->val != 0;
    return true;
}

const char *gguf_get_str(const gguf_file *f, const char *key, uint64_t *len) {
    const gguf_kv *kv = find(f, key);
    if (!kv || kv->type != GGUF_STRING) return NULL;
    memcpy(len, kv->val, 8);
    return (const char *)kv->val + 8;
}

bool gguf_get_arr(const gguf_file *f, const char *key, int32_t *type, uint64_t *n) {
    const gguf_kv *kv = find(f, key);
    if (!kv || kv->type != GGUF_ARRAY) return false;
    *type = kv->arr_type;
    *n = kv->arr_n;
    return true;
}

const char *gguf_arr_str(const gguf_file *f, const char *key, uint64_t i, uint64_t *len) {
    const gguf_kv *kv = find(f, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING || i >= kv->arr_n) return NULL;
    memcpy(len, kv->str_at[i], 8);
    return (const char *)kv->str_at[i] + 8;
}

bool gguf_arr_num(const gguf_file *f, const char *key, uint64_t i, double *out) {
    const gguf_kv *kv = find(f, key);
    if (!kv || kv->type != GGUF_ARRAY || kv->arr_type == GGUF_STRING || i >= kv->arr_n) return false;
    return as_num(kv->arr_type, kv->val + i * scalar_size(kv->arr_type), out);
}
