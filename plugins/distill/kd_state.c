/* Saving and resuming the training loop: the trainer's own state (parameters,
 * AdamW moments) plus the loop's as extras: counters, loss curves and the best
 * parameters so far. A resumed run draws the same windows and takes the same
 * steps as one that was never stopped. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_run.h"

enum { KD_STATE_VERSION = 1, N_COUNTERS = 8 };

static void free_extras(mopt_train_extra *x, int32_t n);

/* Extras: counters, train_loss, val_loss, val_step, then best/NAME per
 * parameter (names malloc'd; free_extras). NULL when out of memory. */
static mopt_train_extra *extras(const mopt_host_api *h, const kd_run *k, int64_t *counters, float *curves[3], int32_t *n) {
    const int32_t np = k->best ? k->n_best : 0;
    mopt_train_extra *x = calloc((size_t)(4 + np), sizeof *x);
    if (!x) return NULL;
    x[0] = (mopt_train_extra){"counters", 1, counters, N_COUNTERS};
    x[1] = (mopt_train_extra){"train_loss", 0, curves[0], k->steps};
    x[2] = (mopt_train_extra){"val_loss", 0, curves[1], k->vcap};
    x[3] = (mopt_train_extra){"val_step", 0, curves[2], k->vcap};
    for (int32_t i = 0; i < np; i++) {
        const char *pname = h->trainer_param_name(k->tr, i);
        const size_t len = strlen(pname) + 6;
        char *name = malloc(len);
        if (!name) {
            free_extras(x, 4 + i);
            return NULL;
        }
        snprintf(name, len, "best/%s", pname);
        x[4 + i] = (mopt_train_extra){name, 0, k->best[i], h->trainer_param_size(k->tr, i)};
    }
    *n = 4 + np;
    return x;
}

static void free_extras(mopt_train_extra *x, int32_t n) {
    for (int32_t i = 4; x && i < n; i++) free((void *)x[i].name);
    free(x);
}

mopt_status kd_save(const mopt_host_api *h, const kd_run *k, const char *path, mopt_error *err) {
    int64_t c[N_COUNTERS] = {KD_STATE_VERSION, k->step, (int64_t)k->seed, k->steps, k->ctx, k->batch, k->nv, 0};
    memcpy(&c[7], &k->best_val, sizeof c[7]);
    float *curves[3] = {malloc((size_t)k->steps * sizeof(float) + 1), malloc((size_t)k->vcap * sizeof(float) + 1),
                        malloc((size_t)k->vcap * sizeof(float) + 1)};
    int32_t nx = 0;
    mopt_train_extra *x = curves[0] && curves[1] && curves[2] ? extras(h, k, c, curves, &nx) : NULL;
    mopt_status st = MOPT_OK;
    if (!x) st = h->error_set(err, MOPT_E_NOMEM, "training state", "out of memory");
    if (!st) {
        for (int64_t i = 0; i < k->step; i++) curves[0][i] = (float)k->curve[i];
        for (int64_t i = 0; i < k->nv; i++) curves[1][i] = (float)k->vcurve[i], curves[2][i] = (float)k->vstep[i];
        x[1].n = k->step;
        x[2].n = x[3].n = k->nv;
        st = h->trainer_save(k->tr, path, x, nx, err);
    }
    free_extras(x, nx);
    for (int i = 0; i < 3; i++) free(curves[i]);
    return st;
}

mopt_status kd_resume(const mopt_host_api *h, kd_run *k, const char *path, const char *pass, mopt_error *err) {
    if (!kd_keep_best(h, k, 0)) return h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    int64_t c[N_COUNTERS] = {0};
    float *curves[3] = {malloc((size_t)k->steps * sizeof(float) + 1), malloc((size_t)k->vcap * sizeof(float) + 1),
                        malloc((size_t)k->vcap * sizeof(float) + 1)};
    int32_t nx = 0;
    mopt_train_extra *x = curves[0] && curves[1] && curves[2] ? extras(h, k, c, curves, &nx) : NULL;
    mopt_status st = MOPT_OK;
    if (!x) st = h->error_set(err, MOPT_E_NOMEM, pass, "out of memory");
    if (!st) st = h->trainer_load(k->tr, path, x, nx, err);
    if (!st && (x[0].n != N_COUNTERS || c[0] != KD_STATE_VERSION))
        st = h->error_set(err, MOPT_E_INVALID, pass, "%s was not written by a %s run (no loop counters of version %d)", path, pass,
                          KD_STATE_VERSION);
    if (!st && (c[3] != k->steps || c[4] != k->ctx || c[5] != k->batch))
        st = h->error_set(err, MOPT_E_INVALID, pass,
                          "%s was saved by a run of %lld steps of %lld x %lld tokens; this one has %lld of %d x %d (give the same tokens, batch and ctx)",
                          path, (long long)c[3], (long long)c[5], (long long)c[4], (long long)k->steps, k->batch, k->ctx);
    if (!st && (c[1] < 0 || c[1] > k->steps || c[6] < 0 || c[6] > k->vcap || x[1].n != c[1] || x[2].n != c[6] || x[3].n != c[6]))
        st = h->error_set(err, MOPT_E_INVALID, pass, "%s: inconsistent loop counters (step %lld, %lld validations)", path,
                          (long long)c[1], (long long)c[6]);
    if (!st) {
        k->step = c[1];
        k->seed = (uint64_t)c[2];
        k->nv = c[6];
        memcpy(&k->best_val, &c[7], sizeof k->best_val);
        for (int64_t i = 0; i < k->step; i++) k->curve[i] = curves[0][i];
        for (int64_t i = 0; i < k->nv; i++) k->vcurve[i] = curves[1][i], k->vstep[i] = curves[2][i];
        for (int32_t i = 4; i < nx; i++) /* no best parameters saved: the resumed ones are the best so far */
            if (x[i].n != h->trainer_param_size(k->tr, i - 4))
                memcpy(k->best[i - 4], h->trainer_param(k->tr, i - 4), (size_t)h->trainer_param_size(k->tr, i - 4) * sizeof(float));
    }
    free_extras(x, nx);
    for (int i = 0; i < 3; i++) free(curves[i]);
    return st;
}
