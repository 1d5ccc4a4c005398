import Foundation
import Logging
import Synchronization

/// Sends built result objects to their destinations: per pass, one association (one `send`) per
/// destination for the entries due, then each outcome recorded in the worklist: stored (delivered),
/// refused for good (refused, shown by `bonetriage outbox`), or not this time (pending again, the next
/// attempt after `DeliveryPolicy.retryDelay`). The file, and so the SOP Instance UID, is the one built
/// when it was queued: a resend (after a failure, a restart, a kill -9) sends the same object. The entries
/// due are this node's (the worklist's `node`: it built their files); one whose file is not on this
/// node's disk is not sent, and is refused with a message that says so.
public final class ResultDeliveryStage: Sendable {
    let worklist: any WorklistStore
    let sender: any ResultSending
    let destinations: [String: ResultDestination]
    let policy: DeliveryPolicy
    let logger: Logger
    private let warnedUnknown = Mutex<Set<String>>([])

    public init(worklist: any WorklistStore, sender: any ResultSending, destinations: [ResultDestination], policy: DeliveryPolicy, logger: Logger) {
        self.worklist = worklist
        self.sender = sender
        self.destinations = Dictionary(destinations.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.policy = policy
        self.logger = logger
    }

    /// One pass; returns how many entries were tried.
    @discardableResult
    public func runOnce(now: Date = Date(), isStopping: () -> Bool = { false }) -> Int {
        let due: [OutboxEntry]
        do { due = try worklist.deliveriesDue(at: now, limit: 10_000) } catch {
            logger.error("the outbox could not be read from the worklist: \(error); tried again shortly")
            return 0
        }
        var tried = 0
        for (name, entries) in Dictionary(grouping: due, by: \.destination).sorted(by: { $0.key < $1.key }) where !isStopping() {
            guard let destination = destinations[name] else {
                if warnedUnknown.withLock({ $0.insert(name).inserted }) {
                    logger.warning("\(entries.count) result object(s) wait for destination \"\(name)\", which is not configured: add it back to [[results]], or drop them with `bonetriage outbox drop`",
                                   metadata: ["destination": "\(name)"])
                }
                continue
            }
            var batch = Array(entries.prefix(policy.batchSize))
            let missing = batch.filter { $0.filePath.map { !FileManager.default.fileExists(atPath: $0) } ?? false }
            for entry in missing {
                let path = entry.filePath ?? "?"
                // <results>/<study UID>/<object>.dcm: when <results> itself is gone, the folder is not mounted (yet):
                // nothing is refused, every entry waits for it.
                let results = ((path as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
                if FileManager.default.fileExists(atPath: results) {
                    recordMissingFile(entry, at: max(now, Date()))
                } else {
                    record(entry, .retryLater(reason: "the results folder \(results) is not there (not mounted?): \(path) is sent when it is back"),
                           destination: destination, at: max(now, Date()))
                }
                tried += 1
            }
            batch.removeAll { entry in missing.contains { $0.entryID == entry.entryID } }
            let paths = batch.compactMap(\.filePath)
            guard !batch.isEmpty, paths.count == batch.count else { continue }
            let outcomes = sender.send(paths, to: destination)
            let finished = max(now, Date())
            for (n, entry) in batch.enumerated() {
                let outcome = n < outcomes.count ? outcomes[n] : .retryLater(reason: "the sender gave no outcome for this file")
                record(entry, outcome, destination: destination, at: finished)
                tried += 1
            }
        }
        return tried
    }

    /// Why an entry of this node is not sent: its file is not on this node's disk, though its results folder is.
    public static func missingFileReason(path: String, node: String) -> String {
        "its file \(path) is missing on node \(node), whose entry it is (removed or moved outside BoneTriage): not sent; "
            + "put the file back and `bonetriage outbox retry` it, or `bonetriage outbox drop` it"
    }

    private func recordMissingFile(_ entry: OutboxEntry, at: Date) {
        let reason = Self.missingFileReason(path: entry.filePath ?? "?", node: worklist.node)
        let named: Logger.Metadata = ["destination": "\(entry.destination)", "study": "\(entry.shortID)", "kind": "\(entry.kind.rawValue)",
                                      "entry": "\(entry.entryID)"]
        do {
            try worklist.recordDeliveryAttempt(entryID: entry.entryID, state: .refused, message: reason, nextAttemptAt: nil, at: at)
            logger.error("result not sent: \(reason)", metadata: named)
        } catch {
            logger.error("result not sent: \(reason); and this could not be recorded: \(error)", metadata: named)
        }
    }

    private func record(_ entry: OutboxEntry, _ outcome: StoreOutcome, destination: ResultDestination, at: Date) {
        let named: Logger.Metadata = ["destination": "\(destination.name)", "study": "\(entry.shortID)", "kind": "\(entry.kind.rawValue)",
                                      "entry": "\(entry.entryID)"]
        do {
            switch outcome {
            case let .stored(warning):
                try worklist.recordDeliveryAttempt(entryID: entry.entryID, state: .delivered, message: warning, nextAttemptAt: nil, at: at)
                if let warning {
                    logger.warning("result delivered with a warning: \(warning)", metadata: named)
                } else {
                    logger.info("result delivered", metadata: named)
                }
            case let .refused(reason):
                try worklist.recordDeliveryAttempt(entryID: entry.entryID, state: .refused, message: reason, nextAttemptAt: nil, at: at)
                logger.error("result refused by the destination: \(reason); see `bonetriage outbox`, then retry or drop it", metadata: named)
            case let .retryLater(reason):
                let delay = policy.retryDelay(afterFailures: entry.attempts + 1)
                try worklist.recordDeliveryAttempt(entryID: entry.entryID, state: .pending, message: reason,
                                                   nextAttemptAt: at.addingTimeInterval(delay), at: at)
                logger.warning("result not delivered: \(reason); next attempt in \(Int(delay)) s", metadata: named)
            }
        } catch {
            logger.error("the delivery could not be recorded: \(error); the object is sent again (same instance)", metadata: named)
        }
    }
}
