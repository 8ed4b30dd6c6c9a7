/* Importance matrices in llama.cpp's legacy imatrix.dat layout (what
 * llama-imatrix writes and llama-quantize --imatrix reads), little-endian:
 *   int32 n_entries, then per entry: int32 name length, the name (a GGUF
 *   tensor name), int32 ncall, int32 nval, float values[nval] (the sum over
 *   ncall calls of each input column's mean x^2);
 *   then, optionally, int32 chunk count, int32 length and the dataset's name.
 * Reading divides each value by ncall in float, as llama-quantize does, so the
 * weights are the ones it would use. Every count and length is checked
 * against the file's size before it is used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "mopt/fileio.h"
#include "mopt/formats.h"

typedef struct {
    const uint8_t *p;
    size_t n, at;
} cursor;

static int take(cursor *c, void *out, size_t k) {
    if (k > c->n - c->at) return 0;
    memcpy(out, c->p + c->at, k);
    c->at += k;
    return 1;
}

void mopt_imatrix_free(mopt_imatrix *m) {
    if (!m) return;
    for (int32_t i = 0; i < m->n; i++) free(m->e[i].mean);
    free(m->e);
    free(m);
}

mopt_status mopt_imatrix_read(const char *path, mopt_imatrix **out, mopt_error *err) {
    *out = NULL;
    char *data;
    size_t len;
    mopt_status st = mopt_read_file(path, &data, &len, err);
    if (st) return st;
    cursor c = {(const uint8_t *)data, len, 0};
    mopt_imatrix *m = calloc(1, sizeof *m);
    int32_t n = 0;
    if (!m) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    else if (!take(&c, &n, 4) || n < 1 || (size_t)n > len / 12)
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: not an importance matrix (imatrix.dat): %d entries in %zu bytes", path, n, len);
    else if (!(m->e = calloc((size_t)n, sizeof *m->e)))
        st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < n && !st; i++) {
        mopt_imatrix_entry *e = &m->e[i];
        int32_t nl = 0, ncall = 0, nval = 0;
        if (!take(&c, &nl, 4) || nl < 1 || nl >= MOPT_MAX_NAME || !take(&c, e->name, (size_t)nl)) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: entry %d: bad name length %d (at most %d bytes, within the file)", path, i, nl,
                           MOPT_MAX_NAME - 1);
            break;
        }
        e->name[nl] = 0;
        if (memchr(e->name, 0, (size_t)nl)) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: entry %d: the name holds a NUL byte", path, i);
            break;
        }
        if (!take(&c, &ncall, 4) || !take(&c, &nval, 4) || nval < 1 || (size_t)nval > (c.n - c.at) / 4) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s: %d values do not fit in the file", path, e->name, nval);
            break;
        }
        m->n = i + 1;
        e->n = nval;
        e->ncall = ncall;
        if (!(e->mean = malloc((size_t)nval * sizeof *e->mean))) {
            st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            break;
        }
        take(&c, e->mean, (size_t)nval * 4);
        for (int32_t k = 0; k < nval; k++) {
            if (!(e->mean[k] >= 0) || e->mean[k] > 3.4e38f) {
                st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s: value %d is %g; an importance is a finite sum of squares", path, e->name, k,
                               (double)e->mean[k]);
                break;
            }
            if (ncall > 0) e->mean[k] /= (float)ncall;
        }
        for (int32_t j = 0; j < i && !st; j++)
            if (!strcmp(m->e[j].name, e->name)) st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s appears twice", path, e->name);
    }
    int32_t dl = 0;
    if (!st && c.at < c.n) { /* chunk count and dataset name, when the writer kept them */
        if (!take(&c, &m->chunks, 4) || !take(&c, &dl, 4) || dl < 0 || (size_t)dl > c.n - c.at)
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: the trailer (chunk count, dataset name) is cut short", path);
        else
            snprintf(m->dataset, sizeof m->dataset, "%.*s", dl < (int32_t)sizeof m->dataset ? dl : (int32_t)sizeof m->dataset - 1,
                     (const char *)c.p + c.at);
    }
    free(data);
    if (st) {
        mopt_imatrix_free(m);
        return st;
    }
    *out = m;
    return MOPT_OK;
}

mopt_status mopt_imatrix_write(const char *path, const mopt_imatrix *m, mopt_error *err) {
    size_t len = 4 + 8 + strlen(m->dataset);
    for (int32_t i = 0; i < m->n; i++) len += 12 + strlen(m->e[i].name) + (size_t)m->e[i].n * 4;
    uint8_t *b = malloc(len), *p = b;
    if (!b) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
#define PUT(src, k) (memcpy(p, (src), (k)), p += (k))
    PUT(&m->n, 4);
    for (int32_t i = 0; i < m->n; i++) {
        const mopt_imatrix_entry *e = &m->e[i];
        const int32_t nl = (int32_t)strlen(e->name), ncall = e->ncall > 0 ? e->ncall : 1;
        PUT(&nl, 4);
        PUT(e->name, (size_t)nl);
        PUT(&ncall, 4);
        PUT(&e->n, 4);
        for (int32_t k = 0; k < e->n; k++) { /* stored as sums over the calls, as llama-imatrix stores them */
            const float v = e->mean[k] * (float)ncall;
            PUT(&v, 4);
        }
    }
    const int32_t dl = (int32_t)strlen(m->dataset);
    PUT(&m->chunks, 4);
    PUT(&dl, 4);
    PUT(m->dataset, (size_t)dl);
#undef PUT
    mopt_status st = mopt_file_write_atomic(path, b, len, err);
    free(b);
    return st;
}

const float *mopt_imatrix_find(const mopt_imatrix *m, const char *name) {
    for (int32_t i = 0; m && i < m->n; i++)
        if (!strcmp(m->e[i].name, name)) return m->e[i].mean;
    return NULL;
}

int64_t mopt_imatrix_len(const mopt_imatrix *m, const char *name) {
    for (int32_t i = 0; m && i < m->n; i++)
        if (!strcmp(m->e[i].name, name)) return m->e[i].n;
    return 0;
}
