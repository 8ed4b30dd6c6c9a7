/* Importance matrices in llama.cpp's two layouts, little-endian.
 * The legacy imatrix.dat (llama-imatrix --output-format dat; older releases
 * write only it):
 *   int32 n_entries, then per entry: int32 name length, the name (a GGUF
 *   tensor name), int32 ncall, int32 nval, float values[nval] (the sum over
 *   ncall calls of each input column's mean x^2);
 *   then, optionally, int32 chunk count, int32 length and the dataset's name.
 * The GGUF imatrix (llama-imatrix's default output in newer releases): keys
 *   general.type = "imatrix", imatrix.datasets (strings), imatrix.chunk_count
 *   and imatrix.chunk_size (u32); per weight, by name, "<name>.in_sum2" f32
 *   [nval, n_mat] (sums of x^2 over the tokens seen) and "<name>.counts" f32
 *   [1, n_mat] (those tokens), sometimes "<name>.in_sum" (ignored here).
 * Reading divides by ncall (by counts) in float, as llama-quantize does, so the
 * weights are the ones it would use. Every count and length is checked
 * against the file's size before it is used. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base.h"
#include "ggml.h"
#include "gguf.h"
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

/* an importance is a finite sum of squares */
static mopt_status check_value(const char *path, const mopt_imatrix_entry *e, int32_t k, float v, mopt_error *err) {
    if (v >= 0 && v <= 3.4e38f) return MOPT_OK;
    return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s: value %d is %g; an importance is a finite sum of squares", path, e->name, k, (double)v);
}

static const gguf_tensor *f32_tensor(const gguf_file *f, const char *base, const char *suffix) {
    char name[MOPT_MAX_NAME + 16];
    snprintf(name, sizeof name, "%s%s", base, suffix);
    const gguf_tensor *t = gguf_find_tensor(f, name);
    return t && t->type == MOPT_GGML_F32 ? t : NULL;
}

static mopt_status read_gguf(const char *path, mopt_imatrix *m, mopt_error *err) {
    gguf_file *f;
    mopt_status st = gguf_open(path, &f, err);
    if (st) return st;
    uint64_t tl = 0;
    const char *type = gguf_get_str(f, "general.type", &tl);
    if (!type || tl != 7 || memcmp(type, "imatrix", 7)) { /* the message reads the mapping: close after */
        MOPT_FAIL(err, MOPT_E_FORMAT, "%s: a GGUF file but not an importance matrix (general.type is \"%.*s\", not \"imatrix\")", path,
                  type ? (int)(tl < 64 ? tl : 64) : 0, type ? type : "");
        gguf_close(f);
        return MOPT_E_FORMAT;
    }
    int64_t v;
    if (gguf_get_int(f, "imatrix.chunk_count", &v) && v >= 0 && v <= INT32_MAX) m->chunks = (int32_t)v;
    if (gguf_get_int(f, "imatrix.chunk_size", &v) && v >= 0 && v <= INT32_MAX) m->chunk_size = (int32_t)v;
    int32_t at;
    uint64_t nd, dl;
    if (gguf_get_arr(f, "imatrix.datasets", &at, &nd) && at == GGUF_STRING && nd > 0) { /* the last, as llama-imatrix keeps it */
        const char *d = gguf_arr_str(f, "imatrix.datasets", nd - 1, &dl);
        if (d) snprintf(m->dataset, sizeof m->dataset, "%.*s", (int)(dl < sizeof m->dataset ? dl : sizeof m->dataset - 1), d);
    }
    const int64_t nt = gguf_n_tensors(f);
    if (!(m->e = calloc((size_t)(nt > 0 ? nt : 1), sizeof *m->e))) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int64_t i = 0; i < nt && !st; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        const size_t nl = strlen(t->name), sl = strlen(".in_sum2");
        if (nl <= sl || strcmp(t->name + nl - sl, ".in_sum2")) continue; /* counts and in_sum go with their in_sum2 */
        mopt_imatrix_entry *e = &m->e[m->n];
        snprintf(e->name, sizeof e->name, "%.*s", (int)(nl - sl), t->name);
        const gguf_tensor *c = f32_tensor(f, e->name, ".counts");
        if (t->type != MOPT_GGML_F32 || !c || t->ne[0] > INT32_MAX) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s: in_sum2 must be f32 with an f32 %s.counts beside it", path, e->name, e->name);
            break;
        }
        if (t->ne[1] * t->ne[2] * t->ne[3] != 1 || c->ne[0] * c->ne[1] * c->ne[2] * c->ne[3] != 1) {
            st = MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %s holds %lld matrices (a mixture of experts'); mopt's models have one per weight",
                           path, e->name, (long long)(t->ne[1] * t->ne[2] * t->ne[3]));
            break;
        }
        float count;
        memcpy(&count, c->data, 4);
        if (!(count >= 0 && count <= 3.4e38f)) {
            st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s: a count of %g tokens", path, e->name, (double)count);
            break;
        }
        e->n = (int32_t)t->ne[0];
        /* the calls llama-imatrix's own legacy writer would give it: the chunks, rounded up */
        const double calls = m->chunk_size > 0 ? ceil((double)count / m->chunk_size) : 1;
        e->ncall = calls < 1 ? 1 : calls > INT32_MAX ? INT32_MAX : (int32_t)calls;
        if (!(e->mean = malloc((size_t)e->n * sizeof *e->mean))) {
            st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            break;
        }
        m->n++;
        memcpy(e->mean, t->data, (size_t)e->n * 4);
        for (int32_t k = 0; k < e->n && !st; k++) { /* the sum and the mean (a count below 1 can overflow it) */
            st = check_value(path, e, k, e->mean[k], err);
            e->mean[k] = count > 0 ? e->mean[k] / count : 1; /* no tokens: llama-quantize takes 1 */
            if (!st) st = check_value(path, e, k, e->mean[k], err);
        }
        for (int32_t j = 0; j < m->n - 1 && !st; j++)
            if (!strcmp(m->e[j].name, e->name)) st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s appears twice", path, e->name);
    }
    if (!st && !m->n) st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: an importance matrix without a single <name>.in_sum2 tensor", path);
    gguf_close(f);
    return st;
}

mopt_status mopt_imatrix_read(const char *path, mopt_imatrix **out, mopt_error *err) {
    *out = NULL;
    char *data;
    size_t len;
    mopt_status st = mopt_read_file(path, &data, &len, err);
    if (st) return st;
    if (len >= 4 && !memcmp(data, "GGUF", 4)) {
        free(data);
        mopt_imatrix *m = calloc(1, sizeof *m);
        if (!m) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        if ((st = read_gguf(path, m, err))) {
            mopt_imatrix_free(m);
            return st;
        }
        *out = m;
        return MOPT_OK;
    }
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
        for (int32_t k = 0; k < nval && !st; k++) {
            st = check_value(path, e, k, e->mean[k], err);
            if (ncall > 0) e->mean[k] /= (float)ncall;
        }
        if (st) break;
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
    const size_t pl = strlen(path);
    if (pl > 5 && !strcmp(path + pl - 5, ".gguf")) return gguf_write_imatrix(path, m, err);
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
            if (!(v <= 3.4e38f)) {
                free(b);
                return MOPT_FAIL(err, MOPT_E_INVALID, "%s: %s: importance %g over %d calls does not fit a float sum", path, e->name,
                                 (double)e->mean[k], ncall);
            }
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
