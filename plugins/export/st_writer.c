/* safetensors writer (layout: 8-byte little-endian header length, the JSON
 * header padded with spaces to 8 bytes, then the tensors back to back, each
 * aligned to its element size). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "st_writer.h"

static size_t elem_size(const char *dtype) {
    if (!strcmp(dtype, "I64") || !strcmp(dtype, "F64")) return 8;
    if (!strcmp(dtype, "F32") || !strcmp(dtype, "I32")) return 4;
    if (!strcmp(dtype, "F16") || !strcmp(dtype, "BF16")) return 2;
    return 1;
}

/* wider elements first, then by name, as the reference writer orders them:
 * every tensor then starts at a multiple of its element size */
static int by_alignment(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    const size_t ex = elem_size(x->dtype), ey = elem_size(y->dtype);
    return ex != ey ? (ex > ey ? -1 : 1) : strcmp(x->name, y->name);
}

mopt_status st_write_file(const mopt_host_api *h, const atomic_dir *d, const char *name, st_entry *e, int32_t n,
                          mopt_error *err) {
    qsort(e, (size_t)n, sizeof *e, by_alignment);
    json_t *hdr = json_object();
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "pt"));
    size_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int32_t k = 0; k < e[i].ndim; k++) json_array_append_new(shape, json_integer(e[i].shape[k]));
        json_object_set_new(hdr, e[i].name, json_pack("{s:s, s:o, s:[I, I]}", "dtype", e[i].dtype, "shape", shape,
                                                       "data_offsets", (json_int_t)off, (json_int_t)(off + e[i].nbytes)));
        off += e[i].nbytes;
    }
    char *text = json_dumps(hdr, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(hdr);
    if (!text) return h->error_set(err, MOPT_E_NOMEM, "export", "out of memory");
    size_t hl = strlen(text), padded = (hl + 7) & ~(size_t)7;
    char *buf = malloc(8 + padded + off);
    if (!buf) {
        free(text);
        return h->error_set(err, MOPT_E_NOMEM, "export", "out of memory for %s", name);
    }
    for (int k = 0; k < 8; k++) buf[k] = (char)((uint64_t)padded >> (8 * k));
    memcpy(buf + 8, text, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    size_t pos = 8 + padded;
    for (int32_t i = 0; i < n; i++) {
        memcpy(buf + pos, e[i].data, e[i].nbytes);
        pos += e[i].nbytes;
    }
    free(text);
    mopt_status st = atomic_dir_write(h, d, name, buf, pos, err);
    free(buf);
    return st;
}

mopt_status st_list_add(const mopt_host_api *h, st_list *l, const char *name, const char *dtype, int32_t ndim,
                        const int64_t *shape, void *data, size_t nbytes, mopt_error *err) {
    if (!data) return h->error_set(err, MOPT_E_NOMEM, "export", "out of memory for %s", name);
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 64;
        st_entry *p = realloc(l->e, (size_t)cap * sizeof *p);
        if (!p) {
            free(data);
            return h->error_set(err, MOPT_E_NOMEM, "export", "out of memory");
        }
        l->e = p;
        l->cap = cap;
    }
    st_entry *e = &l->e[l->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->dtype = dtype;
    e->ndim = ndim;
    for (int32_t k = 0; k < ndim && k < 4; k++) e->shape[k] = shape[k];
    e->data = data;
    e->nbytes = nbytes;
    return MOPT_OK;
}

void st_list_free(st_list *l) {
    for (int32_t i = 0; i < l->n; i++) free(l->e[i].data);
    free(l->e);
    l->e = NULL;
    l->n = l->cap = 0;
}

void st_store_float(const mopt_host_api *h, const char *dtype, void *dst, int64_t i, float v) {
    if (!strcmp(dtype, "F32")) ((float *)dst)[i] = v;
    else ((uint16_t *)dst)[i] = !strcmp(dtype, "BF16") ? h->f32_to_bf16(v) : h->f32_to_f16(v);
}
