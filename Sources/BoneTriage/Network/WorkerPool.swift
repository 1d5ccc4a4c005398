import Foundation
import CKernels

/// The engine's threads: the caller plus `threads - 1` workers that spin briefly between jobs.
/// A forward pass runs about a hundred parallel loops of tens of microseconds each, and handing one
/// to GCD's `concurrentPerform` costs ~40 us of wake-up every time; see CKernelsPool.h.
final class WorkerPool {
    let threads: Int
    private let pool: OpaquePointer?

    init(threads: Int) {
        self.threads = max(1, threads)
        // Without a pool (a single thread, or threads could not be started) `run` works serially.
        pool = self.threads > 1 ? bt_pool_create(Int32(self.threads)) : nil
    }

    deinit {
        if let pool { bt_pool_destroy(pool) }
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
