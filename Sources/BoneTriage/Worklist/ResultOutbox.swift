import Foundation

// The outbox: the result objects BoneTriage makes for a study (a triage report, a Secondary Capture
// series) and their delivery to each configured destination. Queued in the transaction that records a
// verdict or a review, built once (so a resend is the same object, with the same SOP Instance UID), sent
// until each destination has it. Plain values, as the rest of the worklist's.

/// Where one result object stands with one destination.
public enum DeliveryState: String, Sendable, Codable, CaseIterable {
    /// Not delivered yet: waiting for its file, or for its next attempt.
    case pending
    /// The destination stored it.
    case delivered
    /// The destination refused it for good; `bonetriage outbox retry` puts it back to pending.
    case refused
    /// Stopped for good by a user (`bonetriage outbox drop`); kept, with who and when.
    case dropped
}

/// One result object and its deliveries.
public struct ResultObject: Sendable, Equatable {
    public var studyInstanceUID: String
    public var shortID: String
    public var kind: ResultKind
    /// Assigned when queued, never changed: a resend after a crash is the same instance.
    public var sopInstanceUID: String
    public var seriesInstanceUID: String
    public var seriesNumber: Int
    public var instanceNumber: Int
    /// The image a Secondary Capture shows (nil for a report).
    public var sourceSOPInstanceUID: String?
    /// The review an updated report carries (nil for the model's own report and for captures).
    public var review: Review?
    /// The report this one replaces (the study's previous report).
    public var replaces: ReportedObject?
    /// When it was queued: the verdict's or the review's time, its Content Date/Time.
    public var queuedAt: Date
    /// Its DICOM file, once built.
    public var filePath: String?
    public var builtAt: Date?
    /// Why its file could not be built (it is never tried again).
    public var buildProblem: String?
    /// When retention removed its file.
    public var fileRemovedAt: Date?
    /// The node that builds and delivers it (its file is on that node's disk): the node that queued it or
    /// took it over unbuilt with a re-triage, then the node that built it. Nil: the study's triage node
    /// (queued before objects had a node).
    public var node: String?
    public var deliveries: [OutboxEntry]

    /// Queued, neither built nor given up.
    public var awaitsBuild: Bool { filePath == nil && buildProblem == nil }

    public init(studyInstanceUID: String, shortID: String, kind: ResultKind, sopInstanceUID: String, seriesInstanceUID: String,
                seriesNumber: Int, instanceNumber: Int, queuedAt: Date) {
        self.studyInstanceUID = studyInstanceUID
        self.shortID = shortID
        self.kind = kind
        self.sopInstanceUID = sopInstanceUID
        self.seriesInstanceUID = seriesInstanceUID
        self.seriesNumber = seriesNumber
        self.instanceNumber = instanceNumber
        self.queuedAt = queuedAt
        deliveries = []
    }

    /// The object as a later report refers to it.
    public var reported: ReportedObject {
        ReportedObject(sopClassUID: kind.sopClassUID, sopInstanceUID: sopInstanceUID, seriesInstanceUID: seriesInstanceUID)
    }
}

/// One entry of the outbox: a result object for one destination.
public struct OutboxEntry: Sendable, Equatable {
    /// A short stable handle (10 hex digits from the object's SOP Instance UID and the destination).
    public var entryID: String
    public var studyInstanceUID: String
    public var shortID: String
    public var kind: ResultKind
    public var objectSOPInstanceUID: String
    /// The `[[results]]` entry's name.
    public var destination: String
    public var state: DeliveryState
    /// Sending attempts made so far.
    public var attempts: Int
    /// When it is sent next (pending only).
    public var nextAttemptAt: Date?
    /// Why the last attempt did not deliver it (or the destination's warning when it did).
    public var lastError: String?
    public var deliveredAt: Date?
    public var droppedBy: String?
    public var droppedAt: Date?
    public var queuedAt: Date
    /// The object's file once built, or why it could not be.
    public var filePath: String?
    public var buildProblem: String?

    public init(entryID: String, studyInstanceUID: String, shortID: String, kind: ResultKind, objectSOPInstanceUID: String,
                destination: String, state: DeliveryState, attempts: Int, queuedAt: Date) {
        self.entryID = entryID
        self.studyInstanceUID = studyInstanceUID
        self.shortID = shortID
        self.kind = kind
        self.objectSOPInstanceUID = objectSOPInstanceUID
        self.destination = destination
        self.state = state
        self.attempts = attempts
        self.queuedAt = queuedAt
    }

    /// The entry's handle: the first 10 hex digits of SHA-256 over the object's UID and the destination.
    public static func entryID(objectSOPInstanceUID: String, destination: String) -> String {
        String(SHA256Digest.hex(Data("\(objectSOPInstanceUID)\n\(destination)".utf8)).prefix(10))
    }

    /// What a listing shows as its state: waiting for its file, not buildable, or its delivery state.
    public var shownState: String {
        if state == .pending, buildProblem != nil { return "not built" }
        if state == .pending, filePath == nil { return "building" }
        return state.rawValue
    }
}

/// A study's delivery as `list` marks it.
public enum DeliveryMark: String, Sendable, Codable, CaseIterable {
    /// Every result object delivered (or dropped) everywhere.
    case sent
    /// Some still on their way.
    case pending
    /// Some refused, or not buildable: someone must look (`bonetriage outbox`).
    case failed

    /// The one-character mark of the table.
    public var symbol: String {
        switch self {
        case .sent: return "+"
        case .pending: return "~"
        case .failed: return "x"
        }
    }

    /// The study's mark from its entries (nil: nothing queued).
    public static func of(_ entries: [OutboxEntry]) -> DeliveryMark? {
        guard !entries.isEmpty else { return nil }
        if entries.contains(where: { $0.state == .refused || ($0.state == .pending && $0.buildProblem != nil) }) { return .failed }
        if entries.contains(where: { $0.state == .pending }) { return .pending }
        return .sent
    }
}
