/* Resumable training: the parameters, the AdamW moments and step count, and the
 * loop's own vectors in one safetensors file ("param/NAME", "adam_m/NAME",
 * "adam_v/NAME", "extra/NAME", "trainer/adam_steps"), written atomically so
 * that an interrupted save leaves the previous state whole. A state is loaded
 * only into a trainer of the same model: every parameter's name and shape is
 * checked before anything changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base.h"
#include "mopt/fileio.h"
#include "mopt/formats.h"
#include "safetensors.h"
#include "trainer_impl.h"

static mopt_status add_vec(mopt_st_list *l, const char *prefix, const char *name, const char *dtype, const void *src, int64_t n,
                           size_t es, mopt_error *err) {
    char key[MOPT_MAX_NAME];
    if (snprintf(key, sizeof key, "%s%s", prefix, name) >= (int)sizeof key)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s: name too long for a training state", name);
    void *d = malloc((size_t)n * es + 1);
    if (d && n) memcpy(d, src, (size_t)n * es);
    const int64_t shape[1] = {n};
    return mopt_st_list_add(l, key, dtype, 1, shape, d, (size_t)n * es, err);
}

static const mopt_tensor *find(mopt_tensor *const *ts, int32_t n, const char *prefix, const char *name) {
    const size_t pl = strlen(prefix);
    for (int32_t i = 0; i < n; i++)
        if (!strncmp(ts[i]->name, prefix, pl) && !strcmp(ts[i]->name + pl, name)) return ts[i];
    return NULL;
}

/* A path the save may replace: nothing there yet, or a training state (which
 * mopt wrote). Anything else is the user's file and stays untouched. */
static mopt_status check_replaceable(const char *path, mopt_error *err) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return MOPT_OK;
    if (!S_ISREG(sb.st_mode))
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s exists and is not a file mopt wrote; choose another checkpoint path", path);
    mopt_tensor **ts = NULL;
    int32_t nt = 0;
    mopt_error e2 = {0};
    int is_state = mopt_safetensors_read(path, &ts, &nt, &e2) == MOPT_OK && find(ts, nt, "trainer/", "adam_steps") != NULL;
    for (int32_t i = 0; i < nt; i++) mopt_tensor_free(ts[i]);
    free(ts);
    if (!is_state)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s exists and is not a mopt training state; choose another checkpoint path or remove it",
                         path);
    return MOPT_OK;
}

mopt_status mopt_trainer_save(const mopt_trainer *tr, const char *path, const mopt_train_extra *x, int32_t nx, mopt_error *err) {
    mopt_st_list l = {0};
    mopt_status st = check_replaceable(path, err);
    for (int32_t i = 0; i < tr->n_params && !st; i++) {
        const param *p = &tr->params[i];
        st = add_vec(&l, "param/", p->name, "F32", p->w, p->n, sizeof(float), err);
        if (!st && tr->m) st = add_vec(&l, "adam_m/", p->name, "F32", tr->m[i], p->n, sizeof(float), err);
        if (!st && tr->v) st = add_vec(&l, "adam_v/", p->name, "F32", tr->v[i], p->n, sizeof(float), err);
    }
    const int64_t steps = tr->adam_steps;
    if (!st) st = add_vec(&l, "trainer/", "adam_steps", "I64", &steps, 1, sizeof steps, err);
    for (int32_t k = 0; k < nx && !st; k++)
        if (x[k].data && x[k].n >= 0)
            st = add_vec(&l, "extra/", x[k].name, x[k].is_int ? "I64" : "F32", x[k].data, x[k].n, x[k].is_int ? sizeof(int64_t) : sizeof(float), err);
    static const char *const meta[] = {"mopt", "training state", NULL};
    char *bytes = NULL;
    size_t len = 0;
    if (!st) st = mopt_safetensors_encode_meta(l.e, l.n, meta, &bytes, &len, err);
    if (!st) st = mopt_file_write_atomic(path, bytes, len, err);
    free(bytes);
    mopt_st_list_free(&l);
    return st;
}


/* The tensor prefix+name as n values of dtype, or an error naming the file. */
static mopt_status want(const char *path, mopt_tensor *const *ts, int32_t nt, const char *prefix, const char *name, mopt_dtype dt,
                        int64_t n, const mopt_tensor **out, mopt_error *err) {
    const mopt_tensor *t = find(ts, nt, prefix, name);
    if (!t) return MOPT_FAIL(err, MOPT_E_INVALID, "%s: a training state of another model: it has no %s%s", path, prefix, name);
    if (t->dtype != dt || t->ndim != 1 || t->ne[0] != n)
        return MOPT_FAIL(err, MOPT_E_INVALID, "%s: a training state of another model: %s%s holds %lld values, this model %lld", path,
                         prefix, name, (long long)mopt_tensor_nelements(t), (long long)n);
    *out = t;
    return MOPT_OK;
}

mopt_status mopt_trainer_load(mopt_trainer *tr, const char *path, mopt_train_extra *x, int32_t nx, mopt_error *err) {
    mopt_tensor **ts = NULL;
    int32_t nt = 0;
    mopt_status st = mopt_safetensors_read(path, &ts, &nt, err);
    if (st) return st;
    const mopt_tensor *steps = find(ts, nt, "trainer/", "adam_steps");
    int64_t n_steps = -1;
    if (steps && steps->dtype == MOPT_DTYPE_I64 && mopt_tensor_nelements(steps) == 1) memcpy(&n_steps, steps->data, sizeof n_steps);
    if (n_steps < 0)
        st = MOPT_FAIL(err, MOPT_E_INVALID, "%s is not a mopt training state (no trainer/adam_steps)", path);
    int32_t n_param_tensors = 0, has_m = 0;
    for (int32_t i = 0; i < nt; i++) {
        n_param_tensors += !strncmp(ts[i]->name, "param/", 6);
        has_m |= !strncmp(ts[i]->name, "adam_m/", 7);
    }
    if (!st && n_param_tensors != tr->n_params)
        st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: a training state of another model: %d parameters, this model has %d", path,
                       n_param_tensors, tr->n_params);
    /* check everything first: a refused file changes nothing */
    const mopt_tensor **src = calloc((size_t)tr->n_params * 3 + 1, sizeof *src);
    if (!st && !src) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    for (int32_t i = 0; i < tr->n_params && !st; i++) {
        const param *p = &tr->params[i];
        st = want(path, ts, nt, "param/", p->name, MOPT_DTYPE_F32, p->n, &src[3 * i], err);
        if (!st && has_m) st = want(path, ts, nt, "adam_m/", p->name, MOPT_DTYPE_F32, p->n, &src[3 * i + 1], err);
        if (!st && has_m) st = want(path, ts, nt, "adam_v/", p->name, MOPT_DTYPE_F32, p->n, &src[3 * i + 2], err);
    }
    for (int32_t k = 0; k < nx && !st; k++) {
        const mopt_tensor *t = find(ts, nt, "extra/", x[k].name);
        if (t && (t->dtype != (x[k].is_int ? MOPT_DTYPE_I64 : MOPT_DTYPE_F32) || t->ndim != 1))
            st = MOPT_FAIL(err, MOPT_E_INVALID, "%s: extra/%s is not a vector of %s", path, x[k].name, x[k].is_int ? "I64" : "F32");
    }
    if (!st && has_m && !tr->m) {
        tr->m = calloc((size_t)tr->n_params, sizeof *tr->m);
        tr->v = calloc((size_t)tr->n_params, sizeof *tr->v);
        for (int32_t i = 0; tr->m && tr->v && i < tr->n_params; i++)
            if (!(tr->m[i] = malloc((size_t)tr->params[i].n * sizeof(float))) || !(tr->v[i] = malloc((size_t)tr->params[i].n * sizeof(float))))
                break;
        for (int32_t i = 0; !st && i < tr->n_params; i++)
            if (!tr->m || !tr->v || !tr->m[i] || !tr->v[i]) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory for the optimizer state");
    }
    for (int32_t i = 0; i < tr->n_params && !st; i++) {
        param *p = &tr->params[i];
        memcpy(p->w, src[3 * i]->data, (size_t)p->n * sizeof(float));
        if (has_m) {
            memcpy(tr->m[i], src[3 * i + 1]->data, (size_t)p->n * sizeof(float));
            memcpy(tr->v[i], src[3 * i + 2]->data, (size_t)p->n * sizeof(float));
        } else if (tr->m) {
            memset(tr->m[i], 0, (size_t)p->n * sizeof(float));
            memset(tr->v[i], 0, (size_t)p->n * sizeof(float));
        }
    }
    if (!st) {
        tr->adam_steps = n_steps;
        for (int32_t k = 0; k < nx; k++) {
            const mopt_tensor *t = find(ts, nt, "extra/", x[k].name);
            if (!t) {
                x[k].n = -1;
                continue;
            }
            if (t->ne[0] <= x[k].n) memcpy(x[k].data, t->data, (size_t)t->ne[0] * (x[k].is_int ? sizeof(int64_t) : sizeof(float)));
            x[k].n = t->ne[0]; /* more than the room: left out, the caller sees the count */
        }
    }
    free(src);
    for (int32_t i = 0; i < nt; i++) mopt_tensor_free(ts[i]);
    free(ts);
    return st;
}
