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

/// Parts a guarded job may have (bt_pool_run_guarded runs larger ones on the caller alone).
#define BT_POOL_MAX_GUARDED_PARTS 1024

/// Like bt_pool_run, for parts that can be taken over. A worker runs task(context, i, worker) with
/// worker >= 1 into its own scratch, never into the output, then commit(context, i, worker) copies that
/// scratch into the output. The caller runs its parts (worker 0) straight into the output. Once every
/// part is claimed, a part a worker has held far longer than the caller's own parts took (its core taken
/// by another process or VM) is taken over: the caller runs it itself, and the worker's late result is
/// dropped without a commit. So the call returns without waiting for a stalled worker, which may then
/// still be running task(context, ...) after the call returns: `context` and everything it points to must
/// stay valid until bt_pool_context_in_use(pool, context) answers 0 (bt_pool_quiesce waits for all).
/// Not reentrant, as bt_pool_run.
void bt_pool_run_guarded(bt_pool *pool, int count, bt_pool_task task, bt_pool_task commit, void *context);

/// 1 while a worker may still be inside a guarded job's task for `context` (see bt_pool_run_guarded).
int bt_pool_context_in_use(const bt_pool *pool, const void *context);

/// Returns once no worker is inside any guarded job: before freeing what such jobs read.
void bt_pool_quiesce(bt_pool *pool);

/// Guarded parts the callers have taken over since the pool was created.
long bt_pool_takeovers(const bt_pool *pool);

/// For tests: every `every`-th part a worker runs of a guarded job sleeps `nanoseconds`, as if the worker had
/// lost its core there: alternately after claiming the part but before marking it as its own, and after
/// marking it, before computing it. 0 turns it off.
void bt_pool_inject_stalls(bt_pool *pool, long every, long nanoseconds);

/// Stops and joins the workers.
void bt_pool_destroy(bt_pool *pool);

#ifdef __cplusplus
}
#endif

#endif
