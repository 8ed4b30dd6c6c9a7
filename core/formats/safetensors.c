/* safetensors: 8-byte little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the data region that the offsets index: whole, without holes or
 * overlaps, each tensor at a multiple of its element size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor_impl.h"
#include "json_util.h"
#include "safetensors.h"

#define ST_MAX_HEADER (100u << 20) /* the reference reader's own limit */

static int parse_dtype(const char *s, mopt_dtype *out) {
    static const struct {
        const char *name;
        mopt_dtype dtype;
    } table[] = {{"F32", MOPT_DTYPE_F32}, {"F16", MOPT_DTYPE_F16}, {"BF16", MOPT_DTYPE_BF16},
                 {"I8", MOPT_DTYPE_I8},   {"I32", MOPT_DTYPE_I32}, {"U8", MOPT_DTYPE_U8},
                 {"I64", MOPT_DTYPE_I64}, {"F8_E4M3", MOPT_DTYPE_F8E4M3}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(s, table[i].name) == 0) {
            *out = table[i].dtype;
            return 1;
        }
    return 0;
}

static void free_list(mopt_tensor **list, int32_t n) {
    for (int32_t i = 0; i < n; i++) mopt_tensor_free(list[i]);
    free(list);
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : x->end < y->end ? -1 : x->end > y->end;
}

/* As the reference reader: the data region is indexed entirely and once, with
 * no holes (a hole or an overlap lets two readers see different files). */
static mopt_status check_spans(const char *path, span *sp, size_t n, uint64_t data_size, mopt_error *err) {
    qsort(sp, n, sizeof *sp, cmp_span);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (sp[i].begin < at)
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s's", path, sp[i].name,
                             (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end, sp[i - 1].name);
        if (sp[i].begin > at)
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: data_offsets start at %llu, leaving bytes %llu..%llu unindexed", path,
                             sp[i].name, (unsigned long long)sp[i].begin, (unsigned long long)at, (unsigned long long)sp[i].begin);
        at = sp[i].end;
    }
    if (at != data_size)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: the tensors index %llu data bytes but the file holds %llu after the header", path,
                         (unsigned long long)at, (unsigned long long)data_size);
    return MOPT_OK;
}

static mopt_status parse_entry(const char *path, const char *name, json_t *info, mopt_buffer *buf,
                               const uint8_t *data, uint64_t data_size, mopt_tensor **out, span *where, mopt_error *err) {
    *out = NULL;
    if (!json_is_object(info)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: entry is not an object", path, name);
    json_t *jd = json_object_get(info, "dtype");
    json_t *js = json_object_get(info, "shape");
    json_t *jo = json_object_get(info, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) || json_array_size(jo) != 2)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: needs \"dtype\", \"shape\" and two \"data_offsets\"",
                         path, name);
    mopt_dtype dtype;
    if (!parse_dtype(json_string_value(jd), &dtype))
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: tensor %s: unknown dtype \"%s\" (supported: F32, F16, BF16, I8, I32, U8, I64, F8_E4M3)",
                         path, name, json_string_value(jd));
    size_t ndim = json_array_size(js);
    if (ndim > MOPT_MAX_DIMS)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: tensor %s: %zu dimensions (at most %d)", path, name, ndim,
                         MOPT_MAX_DIMS);
    int64_t dims[MOPT_MAX_DIMS] = {1, 1, 1, 1};
    uint64_t bytes = mopt_dtype_size(dtype);
    for (size_t i = 0; i < ndim; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: shape[%zu] is not a non-negative integer", path, name, i);
        dims[i] = json_integer_value(d);
        if (mopt_mul_overflows(bytes, (uint64_t)dims[i], &bytes))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: shape overflows", path, name);
    }
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < json_integer_value(jb))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: data_offsets must be [begin, end] with 0 <= begin <= end",
                         path, name);
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    if (end > data_size)
        return MOPT_FAIL(err, MOPT_E_FORMAT,
                         "%s: tensor %s: data runs past the end of the file (bytes %llu..%llu, data region holds %llu)",
                         path, name, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)data_size);
    if (end - begin != bytes)
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: %llu data bytes but shape and dtype need %llu", path, name,
                         (unsigned long long)(end - begin), (unsigned long long)bytes);
    if (begin % mopt_dtype_size(dtype))
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: tensor %s: data offset %llu is not a multiple of its %zu-byte elements", path, name,
                         (unsigned long long)begin, mopt_dtype_size(dtype));
    *where = (span){begin, end, NULL};
    int32_t nd = ndim ? (int32_t)ndim : 1; /* a scalar becomes shape [1] */
    const uint8_t *p = data + begin;
    if (((uintptr_t)p) % mopt_dtype_size(dtype) != 0) {
        /* Kernels load whole elements; copy rather than read misaligned. */
        mopt_tensor *t = mopt_tensor_new(name, dtype, nd, dims, err);
        if (!t) return err ? (mopt_status)err->code : MOPT_E_NOMEM;
        memcpy(t->data, p, (size_t)bytes);
        *out = t;
        return MOPT_OK;
    }
    *out = mopt_tensor_view(buf, (void *)p, name, dtype, nd, dims, err);
    return *out ? MOPT_OK : MOPT_E_NOMEM;
}

mopt_status mopt_safetensors_read(const char *path, mopt_tensor ***tensors, int32_t *n, mopt_error *err) {
    *tensors = NULL;
    *n = 0;
    mopt_buffer *buf = mopt_buffer_mmap(path, err);
    if (!buf) return err ? (mopt_status)err->code : MOPT_E_IO;
    mopt_status st = MOPT_OK;
    json_t *hdr = NULL;
    mopt_tensor **list = NULL;
    span *spans = NULL;
    int32_t count = 0;
    if (buf->size < 8) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: truncated safetensors file: %zu bytes, the header length alone needs 8",
                       path, buf->size);
        goto done;
    }
    const uint8_t *base = buf->base;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen > buf->size - 8) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)", path,
                       (unsigned long long)hlen, buf->size);
        goto done;
    }
    if (hlen > ST_MAX_HEADER) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: header length %llu exceeds the %u-byte limit", path,
                       (unsigned long long)hlen, ST_MAX_HEADER);
        goto done;
    }
    char what[300];
    snprintf(what, sizeof what, "%s (header)", path);
    hdr = mopt_json_load_buffer(what, (const char *)base + 8, (size_t)hlen, err);
    if (!hdr) {
        st = MOPT_E_FORMAT;
        goto done;
    }
    if (!json_is_object(hdr)) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: header is not a JSON object", path);
        goto done;
    }
    size_t cap = json_object_size(hdr);
    list = calloc(cap ? cap : 1, sizeof *list);
    spans = calloc(cap ? cap : 1, sizeof *spans);
    if (!list || !spans) {
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        goto done;
    }
    const uint8_t *data = base + 8 + hlen;
    uint64_t data_size = buf->size - 8 - hlen;
    const char *key;
    json_t *val;
    json_object_foreach(hdr, key, val) {
        if (strcmp(key, "__metadata__") == 0) continue;
        if (strlen(key) >= MOPT_MAX_NAME) {
            st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: tensor name longer than %d bytes: %.80s...", path,
                           MOPT_MAX_NAME - 1, key);
            goto done;
        }
        st = parse_entry(path, key, val, buf, data, data_size, &list[count], &spans[count], err);
        if (st != MOPT_OK) goto done;
        spans[count].name = list[count]->name;
        count++;
    }
    st = check_spans(path, spans, (size_t)count, data_size, err);
done:
    free(spans);
    json_decref(hdr);
    mopt_buffer_release(buf); /* tensors hold their own references */
    if (st != MOPT_OK) {
        free_list(list, count);
        return st;
    }
    *tensors = list;
    *n = count;
    return MOPT_OK;
}
