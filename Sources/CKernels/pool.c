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
/// A guarded job's part that a worker has held this long past the caller's typical part time is taken
/// over by the caller (bt_pool_run_guarded): at least TAKEOVER_MIN_NS, else TAKEOVER_FACTOR times the mean
/// time of the caller's own parts of the job (TAKEOVER_DEFAULT_NS when the caller ran none).
#define TAKEOVER_MIN_NS 40000LL
#define TAKEOVER_FACTOR 2
#define TAKEOVER_DEFAULT_NS 200000LL

// A guarded part's state: (generation << 8) | one of these.
// STARTING: a worker has the part and is about to note the time it started (then RUNNING).
enum { PART_UNCLAIMED = 0, PART_STARTING = 1, PART_RUNNING = 2, PART_COMMITTING = 3, PART_DONE = 4, PART_TAKEN = 5 };

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
    // Job description, published by the release store of `claim`. Atomic (relaxed) because a worker
    // reads them before claiming a part (see take_tasks), when a newer job may already be writing them.
    _Atomic(bt_pool_task) task;
    _Atomic(bt_pool_task) commit;
    _Atomic(void *) context;
    atomic_int guarded;
    // Per part of a guarded job: its state, and when a worker started it (CLOCK_MONOTONIC ns).
    _Atomic unsigned long long part_state[BT_POOL_MAX_GUARDED_PARTS];
    _Atomic long long part_started[BT_POOL_MAX_GUARDED_PARTS];
    // The guarded job's context each worker is inside (NULL when none): what it may still read.
    _Atomic(void *) *active;
    atomic_long takeovers;
    // Test hook: every stall_every-th part a worker runs of a guarded job sleeps stall_ns, alternately
    // before it marks the part as its own and after.
    atomic_long stall_ns;
    atomic_long stall_every;
    atomic_long stall_counter;
    // generation (24 bits) | task count (20 bits) | next index (20 bits). A worker claims an index with
    // a compare-exchange, which fails once the word belongs to a newer job, so a worker can never start a
    // task of a job whose caller has already returned (only finish one of a guarded job, see above).
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

static unsigned long long part_tag(unsigned generation) { return (unsigned long long)generation << 8; }

static void sleep_ns(long ns) {
    struct timespec t = {ns / 1000000000L, ns % 1000000000L};
    while (nanosleep(&t, &t) != 0) {}
}

/// Claims the next part of job `generation`: its index, or -1 once every part is claimed or a newer job
/// owns the claim word.
static int claim_part(bt_pool *pool, unsigned generation) {
    unsigned long long v = atomic_load_explicit(&pool->claim, memory_order_acquire);
    for (;;) {
        if ((v >> (2 * FIELD_BITS)) != (generation & GENERATION_MASK)) return -1;
        const unsigned count = (unsigned)((v >> FIELD_BITS) & FIELD_MASK), i = (unsigned)(v & FIELD_MASK);
        if (i >= count) return -1;
        if (atomic_compare_exchange_weak_explicit(&pool->claim, &v, v + 1, memory_order_seq_cst, memory_order_acquire))
            return (int)i;
    }
}

/// The test hook (bt_pool_inject_stalls): sleeps if the worker's `stall`-th guarded part is to stall at `phase`
/// (0 before it marks the part as its own, 1 after).
static void injected_stall(bt_pool *pool, long every, long stall, int phase) {
    if (every > 0 && stall % every == 0 && (stall / every) % 2 == phase)
        sleep_ns(atomic_load_explicit(&pool->stall_ns, memory_order_relaxed));
}

/// A worker's part of a guarded job: computed into the worker's scratch, then committed (copied to the
/// output) only if the caller has not taken the part over meanwhile; a late worker's work is dropped.
static void run_guarded_part(bt_pool *pool, unsigned generation, int i, int worker, bt_pool_task task, bt_pool_task commit,
                             void *context) {
    const unsigned long long tag = part_tag(generation);
    const long every = atomic_load_explicit(&pool->stall_every, memory_order_relaxed);
    const long stall = every > 0 ? atomic_fetch_add_explicit(&pool->stall_counter, 1, memory_order_relaxed) : 1;
    injected_stall(pool, every, stall, 0);
    unsigned long long expected = tag | PART_UNCLAIMED;
    if (!atomic_compare_exchange_strong_explicit(&pool->part_state[i], &expected, tag | PART_STARTING, memory_order_acq_rel,
                                                 memory_order_acquire))
        return;  // taken over before this worker got to it (or a newer job owns the slot)
    // Only the part's owner writes its start time, so a late worker of an older job cannot move it.
    atomic_store_explicit(&pool->part_started[i], monotonic_ns(), memory_order_relaxed);
    expected = tag | PART_STARTING;
    if (!atomic_compare_exchange_strong_explicit(&pool->part_state[i], &expected, tag | PART_RUNNING, memory_order_acq_rel,
                                                 memory_order_acquire))
        return;  // taken over while starting
    injected_stall(pool, every, stall, 1);
    task(context, i, worker);
    expected = tag | PART_RUNNING;
    if (atomic_compare_exchange_strong_explicit(&pool->part_state[i], &expected, tag | PART_COMMITTING, memory_order_acq_rel,
                                                memory_order_acquire)) {
        commit(context, i, worker);
        atomic_store_explicit(&pool->part_state[i], tag | PART_DONE, memory_order_release);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
    }
}

static void take_tasks(bt_pool *pool, unsigned generation, int worker) {
    const unsigned long long v = atomic_load_explicit(&pool->claim, memory_order_acquire);
    if ((v >> (2 * FIELD_BITS)) != (generation & GENERATION_MASK)) return;
    // The job's fields are read before claiming: in a guarded job the caller may take over a part this
    // thread has claimed, finish the job and write the next job's fields while this thread still runs it.
    // Had a newer job begun already, every claim below fails and what was read goes unused.
    const bt_pool_task task = atomic_load_explicit(&pool->task, memory_order_relaxed);
    const bt_pool_task commit = atomic_load_explicit(&pool->commit, memory_order_relaxed);
    void *const context = atomic_load_explicit(&pool->context, memory_order_relaxed);
    const int guarded = atomic_load_explicit(&pool->guarded, memory_order_relaxed);
    // Published before any claim (sequentially consistent with it), so a caller that has seen a part
    // claimed also sees that this thread may still be inside `context`.
    if (guarded) atomic_store_explicit(&pool->active[worker], context, memory_order_seq_cst);
    for (int i; (i = claim_part(pool, generation)) >= 0;) {
        if (guarded) {
            run_guarded_part(pool, generation, i, worker, task, commit, context);
        } else {
            task(context, i, worker);
            atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
        }
    }
    if (guarded) atomic_store_explicit(&pool->active[worker], NULL, memory_order_seq_cst);
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
    pool->active = calloc((size_t)threads, sizeof *pool->active);
    if (!pool->workers || !pool->identities || !pool->active) {
        free(pool->workers); free(pool->identities); free(pool->active); free(pool);
        return NULL;
    }
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

/// Publishes a job and wakes the workers; returns its generation.
static unsigned publish(bt_pool *pool, int count, bt_pool_task task, bt_pool_task commit, void *context, int guarded) {
    const unsigned generation = atomic_load_explicit(&pool->generation, memory_order_relaxed) + 1;
    atomic_store_explicit(&pool->task, task, memory_order_relaxed);
    atomic_store_explicit(&pool->commit, commit, memory_order_relaxed);
    atomic_store_explicit(&pool->context, context, memory_order_relaxed);
    atomic_store_explicit(&pool->guarded, guarded, memory_order_relaxed);
    if (guarded)
        for (int i = 0; i < count; i++)
            atomic_store_explicit(&pool->part_state[i], part_tag(generation) | PART_UNCLAIMED, memory_order_relaxed);
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
    return generation;
}

void bt_pool_run(bt_pool *pool, int count, bt_pool_task task, void *context) {
    if (count <= 0) return;
    if (count == 1 || pool->threads == 1 || (unsigned long long)count > FIELD_MASK) {
        for (int i = 0; i < count; i++) task(context, i, 0);
        return;
    }
    const unsigned generation = publish(pool, count, task, NULL, context, 0);
    take_tasks(pool, generation, 0);
    for (int spins = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < count; spins++) {
        if (spins < SPINS_BEFORE_YIELD) CPU_RELAX(); else sched_yield();
    }
}

/// The caller's part i, claimed from the claim word or taken over: written straight to the output.
static void run_caller_part(bt_pool *pool, bt_pool_task task, void *context, int i) {
    task(context, i, 0);
    atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
}

void bt_pool_run_guarded(bt_pool *pool, int count, bt_pool_task task, bt_pool_task commit, void *context) {
    if (count <= 0) return;
    if (count == 1 || pool->threads == 1 || count > BT_POOL_MAX_GUARDED_PARTS) {
        for (int i = 0; i < count; i++) task(context, i, 0);
        return;
    }
    const unsigned generation = publish(pool, count, task, commit, context, 1);
    const unsigned long long tag = part_tag(generation);
    // The caller's own claims: nobody takes a part over from the caller, so it writes the output directly.
    long long own_ns = 0;
    int own = 0;
    for (int i; (i = claim_part(pool, generation)) >= 0;) {
        const long long t0 = monotonic_ns();
        run_caller_part(pool, task, context, i);
        own_ns += monotonic_ns() - t0;
        own++;
        atomic_store_explicit(&pool->part_state[i], tag | PART_DONE, memory_order_relaxed);
    }
    // Every part is claimed now. A worker that holds one far longer than the caller's parts took has most
    // likely lost its core (another process, a neighbour VM): the caller takes the part over rather than
    // wait for that thread's next time slice, and the worker's result, if it comes, is dropped.
    long long threshold = own ? TAKEOVER_FACTOR * own_ns / own : TAKEOVER_DEFAULT_NS;
    if (threshold < TAKEOVER_MIN_NS) threshold = TAKEOVER_MIN_NS;
    const long long waiting_since = monotonic_ns();
    for (int spins = 0; atomic_load_explicit(&pool->done, memory_order_acquire) < count; spins++) {
        if (spins < SPINS_BEFORE_YIELD) CPU_RELAX(); else sched_yield();
        if ((spins & 63) != 63) continue;
        if (monotonic_ns() - waiting_since < threshold) continue;
        for (int i = 0; i < count; i++) {
            unsigned long long state = atomic_load_explicit(&pool->part_state[i], memory_order_acquire);
            if (state == (tag | PART_RUNNING)) {
                if (monotonic_ns() - atomic_load_explicit(&pool->part_started[i], memory_order_relaxed) < threshold) continue;
            } else if (state != (tag | PART_UNCLAIMED) && state != (tag | PART_STARTING)) {
                continue;  // done, or being committed (a copy: soon done)
            }
            if (atomic_compare_exchange_strong_explicit(&pool->part_state[i], &state, tag | PART_TAKEN, memory_order_acq_rel,
                                                        memory_order_relaxed)) {
                atomic_fetch_add_explicit(&pool->takeovers, 1, memory_order_relaxed);
                run_caller_part(pool, task, context, i);
            }
        }
    }
}

int bt_pool_context_in_use(const bt_pool *pool, const void *context) {
    for (int w = 1; w < pool->threads; w++)
        if (atomic_load_explicit((_Atomic(void *) *)&pool->active[w], memory_order_seq_cst) == context) return 1;
    return 0;
}

void bt_pool_quiesce(bt_pool *pool) {
    for (int w = 1; w < pool->threads; w++)
        for (int spins = 0; atomic_load_explicit(&pool->active[w], memory_order_seq_cst) != NULL; spins++) {
            if (spins < SPINS_BEFORE_YIELD) CPU_RELAX(); else sched_yield();
        }
}

long bt_pool_takeovers(const bt_pool *pool) {
    return atomic_load_explicit((atomic_long *)&pool->takeovers, memory_order_relaxed);
}

void bt_pool_inject_stalls(bt_pool *pool, long every, long nanoseconds) {
    atomic_store_explicit(&pool->stall_ns, nanoseconds, memory_order_relaxed);
    atomic_store_explicit(&pool->stall_every, every, memory_order_relaxed);
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
    free(pool->active);
    free(pool);
}
