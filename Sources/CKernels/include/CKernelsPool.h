#ifndef BONETRIAGE_CKERNELS_POOL_H
#define BONETRIAGE_CKERNELS_POOL_H

#ifdef __cplusplus
extern "C" {
#endif

/// A fixed set of worker threads that spin briefly between jobs before sleeping: a forward pass
/// hands out about a hundred short parallel jobs, and waking a sleeping thread (or a GCD worker)
/// costs tens of microseconds each time.
typedef struct bt_pool bt_pool;

/// `worker` is which of the pool's threads runs it (0 the caller, 1 ..< threads the workers): tasks
/// outnumber threads, so per-thread scratch is indexed by worker, never by task.
typedef void (*bt_pool_task)(void *context, int index, int worker);

/// A pool whose jobs run on the calling thread plus `threads - 1` workers. NULL if threads could not be started.
bt_pool *bt_pool_create(int threads);

/// Runs task(context, i, worker) for every i in [0, count), the caller taking part, and returns when
/// all are done. Tasks are claimed one at a time, so a thread that is held up (its core taken by
/// another process or VM) leaves its unclaimed tasks to the others.
/// Not reentrant: one caller at a time.
void bt_pool_run(bt_pool *pool, int count, bt_pool_task task, void *context);

/// Stops and joins the workers.
void bt_pool_destroy(bt_pool *pool);

#ifdef __cplusplus
}
#endif

#endif
