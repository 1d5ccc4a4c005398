import Foundation

/// Decides when a study is complete: no instance for the quiet period, or, sooner, the number of
/// instances the study announced (Number of Study Related Instances) has arrived. A study that gets
/// instances after it was released is released again (a re-triage), after its own quiet period.
public struct StudyAssembler: Sendable {
    public let quietPeriod: TimeInterval

    struct Pending: Sendable {
        var lastArrival: Date
        var instances: Set<String>
        var expected: Int?
    }
    private var pending: [String: Pending] = [:]

    public init(quietPeriod: TimeInterval) {
        self.quietPeriod = quietPeriod
    }

    /// Records an instance; repeats of the same SOP Instance UID do not count twice.
    public mutating func arrived(study: String, instance: String, at time: Date, expectedInstances: Int? = nil) {
        var entry = pending[study] ?? Pending(lastArrival: time, instances: [], expected: nil)
        entry.lastArrival = max(entry.lastArrival, time)
        entry.instances.insert(instance)
        if let expected = expectedInstances, expected > 0 { entry.expected = expected }
        pending[study] = entry
    }

    /// A study to release again after a quiet period from `time`, unless it is already pending (then its
    /// own arrivals decide).
    public mutating func recheck(study: String, at time: Date) {
        if pending[study] == nil { pending[study] = Pending(lastArrival: time, instances: [], expected: nil) }
    }

    /// Studies complete at `now`, oldest first; they leave the assembler.
    public mutating func release(at now: Date) -> [String] {
        let ready = pending.filter { _, p in isComplete(p, at: now) }.sorted { ($0.value.lastArrival, $0.key) < ($1.value.lastArrival, $1.key) }.map(\.key)
        for study in ready { pending[study] = nil }
        return ready
    }

    /// Whether a study is complete at `now` (`release` would give it).
    public func hasComplete(at now: Date) -> Bool { pending.values.contains { isComplete($0, at: now) } }

    private func isComplete(_ p: Pending, at now: Date) -> Bool {
        now.timeIntervalSince(p.lastArrival) >= quietPeriod || (p.expected.map { p.instances.count >= $0 } ?? false)
    }

    /// When the next study's quiet period ends (nil when nothing is pending).
    public var nextDeadline: Date? { pending.values.map { $0.lastArrival.addingTimeInterval(quietPeriod) }.min() }

    public var pendingStudies: Int { pending.count }

    /// Whether the study is waiting for its quiet period here.
    public func holds(_ study: String) -> Bool { pending[study] != nil }
}
