/* Safetensors files written one file tensor at a time (see st_stream.h). */
#include <stdlib.h>
#include <string.h>

#include "st_stream.h"

static void drop_sources(const mopt_host_api *h, const mopt_file_tensor *ft) {
    for (int32_t s = 0; s < ft->n_src; s++) h->tensor_drop_pages(ft->src[s]);
}

mopt_status st_plan_make(const mopt_host_api *h, const mopt_file_tensor *fts, int32_t n, st_encode_fn enc, void *user, st_plan *p,
                         mopt_error *err) {
    mopt_status st = MOPT_OK;
    for (int32_t i = 0; i < n && !st; i++) {
        mopt_st_list l = {0};
        st = enc(user, i, &l, err);
        mopt_st_entry *e = st || !l.n ? NULL : realloc(p->e, (size_t)(p->n + l.n) * sizeof *e);
        if (e) p->e = e;
        int32_t *from = e ? realloc(p->from, (size_t)(p->n + l.n) * sizeof *from) : NULL;
        if (from) p->from = from;
        if (!st && l.n && !from) st = h->error_set(err, MOPT_E_NOMEM, "export", "out of memory");
        for (int32_t k = 0; k < l.n && !st; k++, p->n++) {
            p->e[p->n] = l.e[k];
            p->e[p->n].data = NULL;
            p->from[p->n] = i;
        }
        h->st_list_free(&l);
        drop_sources(h, &fts[i]);
    }
    return st;
}

mopt_status st_plan_write(const mopt_host_api *h, const mopt_file_tensor *fts, const st_plan *p, int32_t first, int32_t last,
                          st_encode_fn enc, void *user, const char *path, mopt_error *err) {
    mopt_st_writer *w = h->st_writer_open(path, p->e + first, last - first, NULL, err);
    if (!w) return err && err->code ? (mopt_status)err->code : MOPT_E_IO;
    mopt_status st = MOPT_OK;
    for (int32_t k = first; k < last && !st;) {
        const int32_t i = p->from[k];
        int32_t k0 = k; /* this file tensor's first entry (it may lie in an earlier file) */
        while (k0 > 0 && p->from[k0 - 1] == i) k0--;
        mopt_st_list l = {0};
        st = enc(user, i, &l, err);
        for (int32_t j = 0; j < l.n && !st; j++) {
            const int32_t at = k0 + j;
            if (at >= p->n || p->from[at] != i || strcmp(p->e[at].name, l.e[j].name))
                st = h->error_set(err, MOPT_E_RUNTIME, "export", "%s encoded differently the second time", fts[i].name);
            else if (at >= first && at < last)
                st = h->st_writer_put(w, l.e[j].name, l.e[j].data, l.e[j].nbytes, err);
        }
        h->st_list_free(&l);
        drop_sources(h, &fts[i]);
        while (k < last && p->from[k] == i) k++;
    }
    mopt_status cst = h->st_writer_close(w, !st, err);
    return st ? st : cst;
}

void st_plan_free(st_plan *p) {
    free(p->e);
    free(p->from);
    memset(p, 0, sizeof *p);
}
