import Foundation

/// Between the intake and the triage workers: the study assembler decides when a study is complete;
/// complete studies wait in a queue, and one study is never triaged by two workers at once (a study
/// that gets late instances while it is being triaged is queued again and waits for the first triage
/// to end). Thread-safe; workers block in `next()`.
public final class TriageScheduler: @unchecked Sendable {
    public struct Counts: Sendable, Equatable {
        public var receiving = 0
        public var queued = 0
        public var triaging = 0
    }

    private let condition = NSCondition()
    private var assembler: StudyAssembler
    private var queue: [String] = []
    private var inFlight: Set<String> = []
    private var stopping = false
    /// Counts wake-ups, so that one that comes while a worker runs `whileIdle` is not missed.
    private var wakeups = 0
    private let clock: @Sendable () -> Date

    public init(quietPeriod: TimeInterval, clock: @escaping @Sendable () -> Date = Date.init) {
        assembler = StudyAssembler(quietPeriod: quietPeriod)
        self.clock = clock
    }

    public func arrived(_ notice: ArrivalNotice) {
        condition.withLock {
            assembler.arrived(study: notice.studyInstanceUID, instance: notice.sopInstanceUID, at: notice.receivedAt,
                              expectedInstances: notice.expectedInstances)
            signalAll()
        }
    }

    /// Studies left receiving or queued by a previous run: each is complete once its quiet period has
    /// passed since its last instance (usually at once).
    public func restore(study: String, instances: [String], lastArrival: Date) {
        condition.withLock {
            for instance in instances { assembler.arrived(study: study, instance: instance, at: lastArrival) }
            signalAll()
        }
    }

    /// A study the worklist shows receiving or pending that this scheduler does not hold (not waiting for
    /// its quiet period, queued or being triaged): its triage could not be recorded while the worklist was
    /// away, or a failover lost it. Taken as `restore` takes one; false when the study is already held.
    public func resumeIfNotHeld(study: String, instances: [String], lastArrival: Date) -> Bool {
        condition.withLock {
            guard !assembler.holds(study), !queue.contains(study), !inFlight.contains(study) else { return false }
            for instance in instances { assembler.arrived(study: study, instance: instance, at: lastArrival) }
            signalAll()
            return true
        }
    }

    /// The next complete study for a worker, and the studies that became complete meanwhile (for the
    /// worker to mark as queued); nil once stopping. While there is nothing to do, `whileIdle` is called
    /// (outside the lock) at least once a second, and after `wakeIdleWorkers()`.
    public func next(whileIdle: () -> Void = {}) -> (study: String, newlyQueued: [String])? {
        next(idleWork: { whileIdle(); return false })
    }

    /// As `next(whileIdle:)`, but `idleWork` returns true when it did one piece of background work (a
    /// heatmap) and has more: then the queue is looked at again at once and, while no study waits,
    /// `idleWork` runs again. A study that arrives waits at most for the piece in progress.
    public func next(idleWork: () -> Bool) -> (study: String, newlyQueued: [String])? {
        condition.lock()
        defer { condition.unlock() }
        var released: [String] = []
        while !stopping {
            for study in assembler.release(at: clock()) where !queue.contains(study) {
                queue.append(study)
                released.append(study)
            }
            if let index = queue.firstIndex(where: { !inFlight.contains($0) }) {
                let study = queue.remove(at: index)
                inFlight.insert(study)
                return (study, released)
            }
            let seen = wakeups
            condition.unlock()
            let more = idleWork()
            condition.lock()
            if wakeups != seen || more { continue }
            if let deadline = assembler.nextDeadline {
                _ = condition.wait(until: min(deadline, clock().addingTimeInterval(1)))
            } else {
                _ = condition.wait(until: clock().addingTimeInterval(1))
            }
        }
        return nil
    }

    /// Whether a study waits for a worker: queued and not being triaged, or complete (its quiet period
    /// over) and about to be queued. Background work (a heatmap) asks, to give way to it.
    public var hasStudyDue: Bool {
        condition.withLock {
            queue.contains { !inFlight.contains($0) } || assembler.hasComplete(at: clock())
        }
    }

    /// Looks at a study again once a quiet period has passed (unless it is already waiting): one another
    /// node holds, or whose images are on other nodes.
    public func recheck(_ study: String) {
        condition.withLock {
            assembler.recheck(study: study, at: clock())
            signalAll()
        }
    }

    /// Queues a study at once (one that waited for a model, after the model was reloaded).
    public func requeue(_ study: String) {
        condition.withLock {
            if !queue.contains(study) { queue.append(study) }
            signalAll()
        }
    }

    /// Wakes the idle workers so that they run their `whileIdle` at once (after a model reload).
    public func wakeIdleWorkers() {
        condition.withLock { signalAll() }
    }

    public func finished(_ study: String) {
        condition.withLock {
            inFlight.remove(study)
            signalAll()
        }
    }

    /// Wakes the workers and makes `next()` return nil; queued studies stay in the worklist as they are
    /// and are restored at the next start.
    public func stop() {
        condition.withLock {
            stopping = true
            signalAll()
        }
    }

    /// With the lock held.
    private func signalAll() {
        wakeups &+= 1
        condition.broadcast()
    }

    public var counts: Counts {
        condition.withLock { Counts(receiving: assembler.pendingStudies, queued: queue.count, triaging: inFlight.count) }
    }
}
