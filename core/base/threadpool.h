/* A persistent pthread pool: one parallel-for at a time, the caller joins in. */
#ifndef MOPT_THREADPOOL_H
#define MOPT_THREADPOOL_H

#include <stdint.h>

typedef struct mopt_pool mopt_pool;

/* fn(ctx, task, thread) runs for every task in [0, n_tasks); `thread` is in
 * [0, n_threads) and indexes per-thread scratch. */
typedef void (*mopt_task_fn)(void *ctx, int64_t task, int32_t thread);

mopt_pool *mopt_pool_new(int32_t n_threads);
void mopt_pool_free(mopt_pool *p);
int32_t mopt_pool_size(const mopt_pool *p);
void mopt_pool_run(mopt_pool *p, int64_t n_tasks, mopt_task_fn fn, void *ctx);
/* Number of online CPUs (at least 1). */
int32_t mopt_cpu_count(void);

#endif
