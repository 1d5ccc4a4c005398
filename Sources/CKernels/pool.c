#define _GNU_SOURCE
#include "CKernelsPool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/// How long an idle worker spins before sleeping: long enough to bridge the serial gaps of a
/// forward pass and back-to-back passes, short enough to cost nothing when the engine is idle.
#define SPIN_NANOSECONDS 2000000L
/// Spins after which a waiting thread yields its core on each further spin: when the machine is
/// busy, the thread it waits for may need exactly that core.
#define SPINS_BEFORE_YIELD 4096

struct bt_worker {
    struct bt_pool *pool;
    int index;
};

struct bt_pool {
    int threads;
    pthread_t *workers;
    struct bt_worker *identities;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    // Job description, published by the release store of `claim`.
    bt_pool_task task;
    void *context;
    // generation (24 bits) | task count (20 bits) | next index (20 bits). A worker claims an index with
    // a compare-exchange, which fails once the word belongs to a newer job, so a late worker can never
    // run a task of a job whose caller has already returned.
    _Atomic unsigned long long claim;
    atomic_int done;
    atomic_uint generation;
    atomic_int stop;
};

static long long monotonic_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

#define FIELD_BITS 20
#define FIELD_MASK ((1ULL << FIELD_BITS) - 1)
#define GENERATION_MASK 0xFFFFFFULL

static void take_tasks(bt_pool *pool, unsigned generation, int worker) {
    unsigned long long v = atomic_load_explicit(&pool->claim, memory_order_acquire);
    for (;;) {
        if ((v >> (2 * FIELD_BITS)) != (generation & GENERATION_MASK)) return;
        const unsigned count = (unsigned)((v >> FIELD_BITS) & FIELD_MASK), i = (unsigned)(v & FIELD_MASK);
        if (i >= count) return;
        if (atomic_compare_exchange_weak_explicit(&pool->claim, &v, v + 1, memory_order_acquire, memory_order_acquire)) {
            pool->task(pool->context, (int)i, worker);
            atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
            v = atomic_load_explicit(&pool->claim, memory_order_acquire);
        }
    }
}

static void *worker_main(void *arg) {
    const struct bt_worker *self = arg;
    bt_pool *pool = self->pool;
    unsigned seen = atomic_load_explicit(&pool->generation, memory_order_acquire);
    for (;;) {
        long long deadline = monotonic_ns() + SPIN_NANOSECONDS;
        unsigned now = seen;
        for (int spins = 0;; spins++) {
            now = atomic_load_explicit(&pool->generation, memory_order_acquire);
            if (now != seen || atomic_load_explicit(&pool->stop, memory_order_relaxed)) break;
            if (spins < SPINS_BEFORE_YIELD) CPU_RELAX(); else sched_yield();
            if ((spins & 255) == 255 && monotonic_ns() > deadline) {
                pthread_mutex_lock(&pool->lock);
                while ((now = atomic_load_explicit(&pool->generation, memory_order_acquire)) == seen &&
                       !atomic_load_explicit(&pool->stop, memory_order_relaxed))
                    pthread_cond_wait(&pool->wake, &pool->lock);
                pthread_mutex_unlock(&pool->lock);
                break;
            }
        }
        if (atomic_load_explicit(&pool->stop, memory_order_relaxed)) return NULL;
        seen = now;
        take_tasks(pool, now, self->index);
    }
}

bt_pool *bt_pool_create(int threads) {
    if (threads < 1) threads = 1;
    bt_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->threads = threads;
    pool->workers = calloc((size_t)threads, sizeof(pthread_t));
    pool->identities = calloc((size_t)threads, sizeof(struct bt_worker));
    if (!pool->workers || !pool->identities) { free(pool->workers); free(pool->identities); free(pool); return NULL; }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    for (int i = 1; i < threads; i++) {
        pool->identities[i] = (struct bt_worker){pool, i};
        if (pthread_create(&pool->workers[i], NULL, worker_main, &pool->identities[i]) != 0) {
            pool->threads = i;
            bt_pool_destroy(pool);
            return NULL;
        }
    }
    return pool;
}

void bt_pool_run(bt_pool *pool, int count, bt_pool_task task, void *context) {
    if (count <= 0) return;
    if (count == 1 || pool->threads == 1 || (unsigned long long)count > FIELD_MASK) {
        for (int i = 0; i < count; i++) task(context, i, 0);
        return;
    }
    const unsigned generation = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
    pool->task = task;
    pool->context = context;
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->claim,
                          ((unsigned long long)(generation & GENERATION_MASK) << (2 * FIELD_BITS)) |
                              ((unsigned long long)count << FIELD_BITS),
                          memory_order_release);
    // The mutex orders this against a worker about to sleep, so no wake-up is lost.
    pthread_mutex_lock(&pool->lock);
    atomic_store_explicit(&pool->generation, generation, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    take_tasks(pool, generation, 0);
    for (int spins = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < count; spins++) {
        if (spins < SPINS_BEFORE_YIELD) CPU_RELAX(); else sched_yield();
    }
}

void bt_pool_destroy(bt_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    atomic_store_explicit(&pool->stop, 1, memory_order_relaxed);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; i < pool->threads; i++) pthread_join(pool->workers[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool->workers);
    free(pool->identities);
    free(pool);
}
