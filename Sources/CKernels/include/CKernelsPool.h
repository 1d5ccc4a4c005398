#ifndef BONETRIAGE_CKERNELS_POOL_H
#define BONETRIAGE_CKERNELS_POOL_H

#ifdef __cplusplus
extern "C" {
#endif

/// A fixed set of worker threads that spin briefly between jobs before sleeping: a forward pass
/// hands out about a hundred short parallel jobs, and waking a sleeping thread (or a GCD worker)
/// costs tens of microseconds each time.
typedef struct bt_pool bt_pool;

typedef void (*bt_pool_task)(void *context, int index);

/// A pool whose jobs run on the calling thread plus `threads - 1` workers. NULL if threads could not be started.
bt_pool *bt_pool_create(int threads);

/// Runs task(context, i) for every i in [0, count), the caller taking part, and returns when all are done.
/// Not reentrant: one caller at a time.
void bt_pool_run(bt_pool *pool, int count, bt_pool_task task, void *context);

/// Stops and joins the workers.
void bt_pool_destroy(bt_pool *pool);

#ifdef __cplusplus
}
#endif

#endif
