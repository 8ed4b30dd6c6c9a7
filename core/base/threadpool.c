/* Persistent worker threads. Workers spin briefly on the job counter before
 * sleeping on a condition variable, so back-to-back small jobs (decode) do
 * not pay a wake-up each. Tasks are claimed with an atomic counter. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "threadpool.h"

struct mopt_pool {
    int32_t n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* current job */
    mopt_task_fn fn;
    void *ctx;
    int64_t n_tasks;
    atomic_llong next;     /* next task to claim */
    atomic_int active;     /* workers still inside the current job */
    atomic_uint generation;/* bumped for every job */
    atomic_int stop;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

typedef struct {
    mopt_pool *p;
    int32_t id;
} worker_arg;

static void drain(mopt_pool *p, int32_t thread) {
    for (;;) {
        int64_t t = atomic_fetch_add(&p->next, 1);
        if (t >= p->n_tasks) break;
        p->fn(p->ctx, t, thread);
    }
}

static void *worker(void *arg) {
    worker_arg a = *(worker_arg *)arg;
    free(arg);
    mopt_pool *p = a.p;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop) && spins < 20000) {
            spins++;
            if ((spins & 255) == 0) sched_yield();
            else cpu_relax();
        }
        if (g == seen && !atomic_load(&p->stop)) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        drain(p, a.id);
        atomic_fetch_sub(&p->active, 1);
    }
}

int32_t mopt_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int32_t)n : 1;
}

mopt_pool *mopt_pool_new(int32_t n_threads) {
    if (n_threads <= 0) n_threads = mopt_cpu_count();
    mopt_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return NULL;
    }
    for (int32_t i = 1; i < n_threads; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a || pthread_create(&p->threads[i], NULL, worker, (a->p = p, a->id = i, a)) != 0) {
            free(a);
            p->n = i; /* run with the threads we got */
            break;
        }
    }
    return p;
}

void mopt_pool_free(mopt_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int32_t i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int32_t mopt_pool_size(const mopt_pool *p) { return p->n; }

void mopt_pool_run(mopt_pool *p, int64_t n_tasks, mopt_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (p->n == 1 || n_tasks == 1) {
        for (int64_t t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store(&p->next, 0);
    atomic_store(&p->active, p->n - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    drain(p, 0);
    /* The others finish within microseconds unless preempted: spin with a
     * pause, and give the core away only now and then (a yield is a system
     * call, dear in a virtual machine, and most waits are shorter than one). */
    for (int spins = 1; atomic_load(&p->active) > 0; spins++) {
        if ((spins & 63) == 0) sched_yield();
        else cpu_relax();
    }
}
