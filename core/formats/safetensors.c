/* safetensors: 8-byte little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
 * then the data region that the offsets index: whole, without holes or
 * overlaps, each tensor at a multiple of its element size. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tensor_impl.h"
#include "json_util.h"
#include "mopt/quant.h"
#include "safetensors.h"

#define ST_MAX_HEADER (100u << 20) /* the reference reader's own limit */

static int parse_dtype(const char *s, mopt_dtype *out) {
    static const struct {
        const char *name;
        mopt_dtype dtype;
    } table[] = {{"F32", MOPT_DTYPE_F32}, {"F16", MOPT_DTYPE_F16}, {"BF16", MOPT_DTYPE_BF16},
                 {"I8", MOPT_DTYPE_I8},   {"I32", MOPT_DTYPE_I32}, {"U8", MOPT_DTYPE_U8},
                 {"I64", MOPT_DTYPE_I64}, {"F8_E4M3", MOPT_DTYPE_F8E4M3},
                 {"I16", MOPT_DTYPE_I16}};
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

/* --- writing ---------------------------------------------------------------------- */

static size_t st_elem_size(const char *dtype) {
    mopt_dtype dt;
    return parse_dtype(dtype, &dt) ? mopt_dtype_size(dt) : 1;
}

/* wider elements first, then by name, as the reference writer orders them:
 * every tensor then starts at a multiple of its element size */
static int by_alignment(const void *a, const void *b) {
    const mopt_st_entry *x = a, *y = b;
    const size_t ex = st_elem_size(x->dtype), ey = st_elem_size(y->dtype);
    return ex != ey ? (ex > ey ? -1 : 1) : strcmp(x->name, y->name);
}

mopt_status mopt_safetensors_encode(mopt_st_entry *e, int32_t n, char **out, size_t *len, mopt_error *err) {
    return mopt_safetensors_encode_meta(e, n, NULL, out, len, err);
}

/* The header of a file holding the entries (sorted in place as the file
 * holds them): its text padded with spaces to a multiple of 8 bytes, the
 * length of that text and the size of the data region after it. */
static char *st_header(mopt_st_entry *e, int32_t n, const char *const *meta, size_t *padded, size_t *data_len) {
    qsort(e, (size_t)n, sizeof *e, by_alignment);
    json_t *hdr = json_object(), *md = json_pack("{s:s}", "format", "pt");
    for (int32_t i = 0; meta && meta[i] && meta[i + 1]; i += 2) json_object_set_new(md, meta[i], json_string(meta[i + 1]));
    json_object_set_new(hdr, "__metadata__", md);
    size_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int32_t k = 0; k < e[i].ndim; k++) json_array_append_new(shape, json_integer(e[i].shape[k]));
        json_object_set_new(hdr, e[i].name, json_pack("{s:s, s:o, s:[I, I]}", "dtype", e[i].dtype, "shape", shape, "data_offsets",
                                                       (json_int_t)off, (json_int_t)(off + e[i].nbytes)));
        off += e[i].nbytes;
    }
    char *text = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    if (!text) return NULL;
    const size_t hl = strlen(text), pl = (hl + 7) & ~(size_t)7;
    char *out = realloc(text, pl + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    memset(out + hl, ' ', pl - hl);
    out[pl] = 0;
    *padded = pl;
    *data_len = off;
    return out;
}

mopt_status mopt_safetensors_encode_meta(mopt_st_entry *e, int32_t n, const char *const *meta, char **out, size_t *len,
                                         mopt_error *err) {
    *out = NULL;
    *len = 0;
    size_t padded, off;
    char *text = st_header(e, n, meta, &padded, &off);
    if (!text) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    char *buf = malloc(8 + padded + off);
    if (!buf) {
        free(text);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory for a %zu-byte safetensors file", 8 + padded + off);
    }
    for (int k = 0; k < 8; k++) buf[k] = (char)((uint64_t)padded >> (8 * k));
    memcpy(buf + 8, text, padded);
    size_t pos = 8 + padded;
    for (int32_t i = 0; i < n; i++) {
        memcpy(buf + pos, e[i].data, e[i].nbytes);
        pos += e[i].nbytes;
    }
    free(text);
    *out = buf;
    *len = pos;
    return MOPT_OK;
}

/* --- writing tensor by tensor ------------------------------------------------------ */

struct mopt_st_writer {
    int fd;
    char path[4096];
    int32_t n;
    mopt_st_entry *e;  /* the entries as the file holds them (no data) */
    uint64_t *at;      /* file offset of each entry's bytes */
    uint8_t *written;
};

static mopt_status write_at(mopt_st_writer *w, const void *data, size_t n, uint64_t off, mopt_error *err) {
    const int e = mopt_write_all(w->fd, data, n, (int64_t)off);
    return e ? MOPT_FAIL(err, MOPT_E_IO, "%s: write failed: %s", w->path, strerror(e)) : MOPT_OK;
}

mopt_st_writer *mopt_st_writer_open(const char *path, const mopt_st_entry *e, int32_t n, const char *const *meta, mopt_error *err) {
    mopt_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->e = malloc((size_t)(n > 0 ? n : 1) * sizeof *w->e)) || !(w->at = malloc((size_t)(n > 0 ? n : 1) * sizeof *w->at)) ||
        !(w->written = calloc((size_t)(n > 0 ? n : 1), 1))) {
        if (w) free(w->e), free(w->at);
        free(w);
        MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        return NULL;
    }
    w->n = n;
    snprintf(w->path, sizeof w->path, "%s", path);
    if (n > 0) memcpy(w->e, e, (size_t)n * sizeof *e);
    size_t padded = 0, data_len = 0;
    char *text = st_header(w->e, n, meta, &padded, &data_len);
    w->fd = text ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644) : -1;
    mopt_status st = !text ? MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory")
                     : w->fd < 0 ? MOPT_FAIL(err, MOPT_E_IO, "%s: cannot write: %s", path, strerror(errno))
                                 : MOPT_OK;
    uint8_t len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (uint8_t)((uint64_t)padded >> (8 * k));
    if (!st) st = write_at(w, len8, 8, 0, err);
    if (!st) st = write_at(w, text, padded, 8, err);
    free(text);
    uint64_t off = 8 + padded;
    for (int32_t i = 0; i < n; i++) w->at[i] = off, off += w->e[i].nbytes;
    if (st) {
        mopt_st_writer_close(w, 0, NULL);
        return NULL;
    }
    return w;
}

mopt_status mopt_st_writer_put(mopt_st_writer *w, const char *name, const void *data, size_t nbytes, mopt_error *err) {
    for (int32_t i = 0; i < w->n; i++) {
        if (strcmp(w->e[i].name, name)) continue;
        if (w->written[i]) return MOPT_FAIL(err, MOPT_E_INVALID, "%s: tensor %s written twice", w->path, name);
        if (nbytes != w->e[i].nbytes)
            return MOPT_FAIL(err, MOPT_E_INVALID, "%s: tensor %s holds %zu bytes, its header entry %zu", w->path, name, nbytes,
                             w->e[i].nbytes);
        w->written[i] = 1;
        return write_at(w, data, nbytes, w->at[i], err);
    }
    return MOPT_FAIL(err, MOPT_E_INVALID, "%s: tensor %s has no header entry", w->path, name);
}

mopt_status mopt_st_writer_close(mopt_st_writer *w, int32_t complete, mopt_error *err) {
    if (!w) return MOPT_OK;
    mopt_status st = MOPT_OK;
    for (int32_t i = 0; i < w->n && complete; i++)
        if (!w->written[i]) {
            st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: tensor %s was never written", w->path, w->e[i].name);
            break;
        }
    if (w->fd >= 0) {
        if (!st && complete && fsync(w->fd) != 0) st = MOPT_FAIL(err, MOPT_E_IO, "%s: cannot flush: %s", w->path, strerror(errno));
        if (close(w->fd) != 0 && !st && complete) st = MOPT_FAIL(err, MOPT_E_IO, "%s: cannot close: %s", w->path, strerror(errno));
    }
    free(w->e);
    free(w->at);
    free(w->written);
    free(w);
    return st;
}

mopt_status mopt_st_list_add(mopt_st_list *l, const char *name, const char *dtype, int32_t ndim, const int64_t *shape, void *data,
                             size_t nbytes, mopt_error *err) {
    if (!data) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory for %s", name);
    if (!mopt_grow((void **)&l->e, &l->cap, (size_t)l->n + 1, sizeof *l->e)) {
        free(data);
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    mopt_st_entry *e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int32_t k = 0; k < ndim && k < 4; k++) e->shape[k] = shape[k];
    e->data = data;
    e->nbytes = nbytes;
    return MOPT_OK;
}

void mopt_st_list_free(mopt_st_list *l) {
    for (int32_t i = 0; i < l->n; i++) free(l->e[i].data);
    free(l->e);
    l->e = NULL;
    l->n = l->cap = 0;
}

void mopt_st_store_float(const char *dtype, void *dst, int64_t i, float v) {
    if (!strcmp(dtype, "F32")) ((float *)dst)[i] = v;
    else ((uint16_t *)dst)[i] = !strcmp(dtype, "BF16") ? mopt_f32_to_bf16(v) : mopt_f32_to_f16(v);
}

const char *mopt_st_float_dtype(const mopt_tensor *t) {
    return t->dtype == MOPT_DTYPE_F32 ? "F32" : t->dtype == MOPT_DTYPE_BF16 ? "BF16" : "F16";
}

mopt_status mopt_st_add_rows(mopt_st_list *l, const mopt_file_tensor *ft, const char *dtype, const int64_t *rows, int64_t n_rows,
                             int64_t c0, int64_t nc, mopt_error *err) {
    if (!rows) n_rows = ft->rows;
    if (!nc) nc = ft->cols - c0;
    const char *dt = dtype ? dtype : mopt_st_float_dtype(ft->src[0]);
    const size_t es = strcmp(dt, "F32") ? 2 : 4;
    void *d = malloc((size_t)(n_rows * nc) * es + 1);
    float *tmp = malloc((size_t)ft->cols * sizeof *tmp);
    mopt_status st = d && tmp ? MOPT_OK : MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory for %s", ft->name);
    for (int64_t r = 0; r < n_rows && !st; r++) {
        int64_t row;
        const mopt_tensor *t = mopt_file_tensor_row(ft, rows ? rows[r] : r, &row);
        if (!t) {
            st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: row %lld is outside the tensor", ft->name, (long long)(rows ? rows[r] : r));
            break;
        }
        st = ft->ndim == 1 ? mopt_tensor_read_f32(t, row, 1, tmp, err) : mopt_weight_row_f32(t, row, tmp, err);
        for (int64_t k = 0; k < (ft->ndim == 1 ? 1 : nc) && !st; k++) /* a transposed tensor: column-major */
            mopt_st_store_float(dt, d, ft->transposed ? k * n_rows + r : r * nc + k, tmp[ft->ndim == 1 ? 0 : c0 + k]);
    }
    free(tmp);
    if (st) {
        free(d);
        return st;
    }
    const int64_t shape[2] = {ft->transposed ? nc : n_rows, ft->transposed ? n_rows : nc};
    return mopt_st_list_add(l, ft->name, dt, ft->ndim, shape, d, (size_t)(n_rows * (ft->ndim == 1 ? 1 : nc)) * es, err);
}
