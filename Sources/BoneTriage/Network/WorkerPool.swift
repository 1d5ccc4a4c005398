import Foundation
import CKernels

/// The engine's threads: the caller plus `threads - 1` workers that spin briefly between jobs.
/// A forward pass runs about a hundred parallel loops of tens of microseconds each, and handing one
/// to GCD's `concurrentPerform` costs ~40 us of wake-up every time; see CKernelsPool.h.
final class WorkerPool {
    let threads: Int
    private let pool: OpaquePointer?
    /// Guarded jobs a late worker may still be inside (see `runGuarded`), kept alive until it has left.
    private var guardedJobs: [GuardedJob] = []
    /// The workers' scratch for guarded parts; a larger one replaces it when a job needs more, the old one
    /// living on in the jobs that still hold it.
    private var partScratch: PartScratch?

    init(threads: Int) {
        self.threads = max(1, threads)
        // Without a pool (a single thread, or threads could not be started) `run` works serially.
        pool = self.threads > 1 ? bt_pool_create(Int32(self.threads)) : nil
    }

    deinit {
        if let pool {
            bt_pool_quiesce(pool)
            bt_pool_destroy(pool)
        }
    }

    /// Runs `body(i)` for i in 0..<n across the pool and returns when all are done.
    ///
    /// The engine's callers hand each iteration a disjoint range of one output buffer and read shared
    /// inputs only, so the non-Sendable closure (it captures raw buffer pointers) is safe to run
    /// concurrently; the pool does not keep it past this call.
    func run(_ n: Int, _ body: (Int) -> Void) {
        runOnWorkers(n) { index, _ in body(index) }
    }

    /// Like `run`, with the index of the thread that runs each iteration (0 ..< threads), for
    /// per-thread scratch: iterations may outnumber threads, and any thread may run any of them.
    func runOnWorkers(_ n: Int, _ body: (_ index: Int, _ worker: Int) -> Void) {
        guard n > 1, let pool else {
            for i in 0..<max(n, 0) { body(i, 0) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            var closure = escapable
            withUnsafeMutablePointer(to: &closure) { context in
                bt_pool_run(pool, Int32(n), { context, index, worker in
                    guard let context else { return }
                    context.assumingMemoryBound(to: ((Int, Int) -> Void).self).pointee(Int(index), Int(worker))
                }, context)
            }
        }
    }

    /// Runs `part(i, worker, scratch)` for i in 0..<n across the pool, where a part that a stalled worker holds
    /// up is taken over by the caller instead of waited for (bt_pool_run_guarded).
    ///
    /// - `worker` is the running thread (0 the caller), for per-thread scratch of the part's own.
    /// - `part(i, _, nil)` writes part i's results to their place in the output; `part(i, _, scratch)` writes them
    ///   to `scratch` (at least `scratchFloats` floats, the worker's own) instead, and `commit(i, scratch)`
    ///   then copies them to the output, unless the part was taken over meanwhile.
    /// - A worker that lost its core may still be running `part` after this returns, on inputs that later
    ///   layers have overwritten: harmless, since it writes only its scratch, and its commit never comes.
    ///   So the closures are escaping and must hold (or point into memory that outlives the pool's next
    ///   `quiesce`) everything they read: the engine quiesces the pool before freeing its buffers.
    func runGuarded(_ n: Int, scratchFloats: Int,
                    part: @escaping (_ index: Int, _ worker: Int, _ scratch: UnsafeMutablePointer<Float>?) -> Void,
                    commit: @escaping (_ index: Int, _ scratch: UnsafeMutablePointer<Float>) -> Void) {
        guard n > 1, let pool, Self.takeOverStalledParts, n <= Int(BT_POOL_MAX_GUARDED_PARTS) else {
            runOnWorkers(n) { part($0, $1, nil) }
            return
        }
        guardedJobs.removeAll { !isInUse($0, pool: pool) }
        let scratch: PartScratch
        if let current = partScratch, current.floatsPerWorker >= scratchFloats {
            scratch = current
        } else {
            scratch = PartScratch(workers: threads, floatsPerWorker: max(scratchFloats, 2 * (partScratch?.floatsPerWorker ?? 0)))
            partScratch = scratch
        }
        let job = GuardedJob(part: part, commit: commit, scratch: scratch)
        guardedJobs.append(job)
        bt_pool_run_guarded(pool, Int32(n), { context, index, worker in
            // The pool keeps the job alive while any thread may be in it: no retain per part (from every thread,
            // on one shared count) is needed.
            guard let context else { return }
            Unmanaged<GuardedJob>.fromOpaque(context)._withUnsafeGuaranteedRef { job in
                job.part(Int(index), Int(worker), worker == 0 ? nil : job.scratch.worker(Int(worker)))
            }
        }, { context, index, worker in
            guard let context else { return }
            Unmanaged<GuardedJob>.fromOpaque(context)._withUnsafeGuaranteedRef { job in
                job.commit(Int(index), job.scratch.worker(Int(worker)))
            }
        }, Unmanaged.passUnretained(job).toOpaque())
    }

    private func isInUse(_ job: GuardedJob, pool: OpaquePointer) -> Bool {
        bt_pool_context_in_use(pool, Unmanaged.passUnretained(job).toOpaque()) != 0
    }

    /// Returns once no worker is still inside a guarded part: before anything such a part reads is freed.
    func quiesce() {
        if let pool { bt_pool_quiesce(pool) }
        guardedJobs.removeAll()
    }

    /// Guarded parts taken over from a stalled worker since the pool was made.
    var takeovers: Int { pool.map { Int(bt_pool_takeovers($0)) } ?? 0 }

    /// For tests: every `every`-th guarded part a worker runs starts with a sleep, as if it lost its core.
    func injectStalls(every: Int, nanoseconds: Int) {
        if let pool { bt_pool_inject_stalls(pool, every, nanoseconds) }
    }

    /// Whether guarded jobs may take parts over; $BONETRIAGE_TAKEOVER=0 runs them as plain jobs that wait
    /// for every worker, for measuring what the takeover costs and brings
    /// (`BONETRIAGE_TAKEOVER=0 make bench-compare ...`, README "Performance").
    static let takeOverStalledParts: Bool = ProcessInfo.processInfo.environment["BONETRIAGE_TAKEOVER"] != "0"

    /// How many parts to cut `count` units of work into: several per thread (`tasksPerThread`), so a
    /// thread whose core is taken away for a while (a busy neighbour VM, the decoder on the other core)
    /// holds up only its current part while the others take the rest; never parts of fewer than
    /// `minimumUnits` units, nor more parts than units.
    func parts(_ count: Int, minimumUnits: Int = 1) -> Int {
        guard threads > 1, count > 0 else { return 1 }
        return max(1, min(threads * WorkerPool.tasksPerThread, count / max(1, minimumUnits), count))
    }

    /// Parts per thread for `parts`: 1 is the static split (each thread one contiguous share).
    /// $BONETRIAGE_TASKS_PER_THREAD overrides it for measurements (Benchmarks/compare_frameworks.py).
    static let tasksPerThread: Int = {
        if let v = ProcessInfo.processInfo.environment["BONETRIAGE_TASKS_PER_THREAD"].flatMap(Int.init), (1...64).contains(v) { return v }
        return 4
    }()
}

/// A guarded job's closures and the scratch its workers write, retained while a worker may be inside.
private final class GuardedJob {
    let part: (Int, Int, UnsafeMutablePointer<Float>?) -> Void
    let commit: (Int, UnsafeMutablePointer<Float>) -> Void
    let scratch: PartScratch

    init(part: @escaping (Int, Int, UnsafeMutablePointer<Float>?) -> Void, commit: @escaping (Int, UnsafeMutablePointer<Float>) -> Void,
         scratch: PartScratch) {
        self.part = part
        self.commit = commit
        self.scratch = scratch
    }
}

/// One region of floats per worker (worker 0, the caller, writes outputs directly and gets none).
private final class PartScratch {
    let floatsPerWorker: Int
    private let storage: UnsafeMutablePointer<Float>

    init(workers: Int, floatsPerWorker: Int) {
        // Rounded to whole cache lines, so that two workers' regions never share one.
        self.floatsPerWorker = (max(floatsPerWorker, 1) + 15) / 16 * 16
        storage = EngineMemory.allocateFloats(self.floatsPerWorker * max(workers - 1, 1))
    }

    deinit { storage.deallocate() }

    func worker(_ index: Int) -> UnsafeMutablePointer<Float> { storage + (index - 1) * floatsPerWorker }
}
