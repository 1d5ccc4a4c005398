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
        guard n > 1, let pool else {
            for i in 0..<max(n, 0) { body(i) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            var closure = escapable
            withUnsafeMutablePointer(to: &closure) { context in
                bt_pool_run(pool, Int32(n), { context, index in
                    guard let context else { return }
                    context.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(index))
                }, context)
            }
        }
    }
}
