import Foundation

/// Errors of the worklist, each saying what to do next.
public enum WorklistError: Error, CustomStringConvertible, Equatable {
    case databaseNotFound(path: String)
    case databaseUnusable(path: String, reason: String)
    /// The PostgreSQL server (host:port/database) could not be reached, or the connection was lost; the
    /// SQLSTATE when the server sent one (57P01: it is shutting down). Nothing of the failed call was recorded.
    case databaseUnreachable(server: String, reason: String, sqlState: String?)
    /// The PostgreSQL server refused this login what it asked (SQLSTATE 42501: its roles do not allow it).
    case databaseRefused(server: String, reason: String)
    case newerSchema(path: String, unknownMigrations: [String])
    case studyNotFound(handle: String)
    case ambiguousStudy(handle: String, candidates: [String])
    /// Several studies carry this accession number.
    case ambiguousAccession(accession: String, candidates: [String])
    case nothingToConfirm(shortID: String, state: StudyState)
    case invalidHandle(String)
    /// Instances arrived while the study was being triaged: the result was not recorded, and the study
    /// is triaged again with them.
    case triageSuperseded(shortID: String, classified: Int, now: Int)
    /// `StudyLifecycle` does not allow the change (e.g. a study already triaged put back in the queue).
    case transitionRefused(shortID: String, from: StudyState, to: StudyState)
    /// A confirm of a study already reviewed (and not changed since), or an override to the label it
    /// already has: nothing is recorded. `previous` is the review it has.
    case alreadyReviewed(shortID: String, requested: ReviewAction, previous: Review)
    /// A review command by a user who may not write the worklist (`path`: the file found not writable).
    case reviewNotAllowed(path: String, group: String, groupMayWrite: Bool)
    /// The database is of an older schema and this user may not write it to upgrade it.
    case olderSchema(path: String, missingMigrations: [String])
    /// No outbox entry has this ID (or prefix).
    case outboxEntryNotFound(entry: String)
    case ambiguousOutboxEntry(entry: String, candidates: [String])
    /// The entry is delivered or dropped: nothing more can be done with it.
    case outboxEntryFinished(entry: String, state: DeliveryState)

    public var description: String {
        switch self {
        case let .databaseNotFound(path):
            return "no worklist database at \(path); check --db or [worklist] database in the config (the daemon creates it when it first starts)"
        case let .databaseUnusable(path, reason):
            return "cannot use the worklist database \(path): \(reason)"
        case let .databaseUnreachable(server, reason, _):
            return "cannot reach the worklist database \(server): \(reason); check that PostgreSQL runs there and accepts this "
                + "host (pg_isready -h HOST -p PORT), and the connection in --db or [worklist] database (a password belongs in ~/.pgpass, "
                + "not in the config)"
        case let .databaseRefused(server, reason):
            return "the worklist database \(server) refused: \(reason); this login's roles do not allow it: a radiologist who records reviews "
                + "needs bonetriage_reviewer, one who only lists, shows and exports bonetriage_reader (the administrator runs: GRANT bonetriage_reviewer TO "
                + "\"login\"; see \"A shared PostgreSQL worklist\" in the README)"
        case let .newerSchema(path, unknown):
            return "the worklist database \(path) was written by a newer BoneTriage (schema \(unknown.joined(separator: ", "))); upgrade this bonetriage binary, never edit the database by hand"
        case let .studyNotFound(handle):
            return "no study matches '\(handle)'; run `bonetriage list` to see study IDs"
        case let .ambiguousStudy(handle, candidates):
            return "'\(handle)' matches \(candidates.count) studies (\(candidates.prefix(5).joined(separator: ", "))\(candidates.count > 5 ? ", ..." : "")); type more characters of the ID"
        case let .ambiguousAccession(accession, candidates):
            return "accession number '\(accession)' belongs to \(candidates.count) studies (\(candidates.prefix(10).joined(separator: ", "))\(candidates.count > 10 ? ", ..." : "")); give one of their IDs instead"
        case let .nothingToConfirm(id, state):
            return "study \(id) has no model verdict to confirm (state: \(state.rawValue)); record a label with `bonetriage override \(id) --label normal|abnormal`"
        case let .triageSuperseded(id, classified, now):
            return "study \(id) now has \(now) images, \(classified) when its triage started; it is triaged again"
        case let .transitionRefused(id, from, to):
            return "study \(id) is \(from.rawValue) and cannot become \(to.rawValue); it is left as it is"
        case let .alreadyReviewed(id, requested, previous):
            let other: Finding = previous.label == .abnormal ? .normal : .abnormal
            let done = previous.action == .confirm ? "confirmed as \(previous.label.rawValue)" : "overridden to \(previous.label.rawValue)"
            let what = requested == .confirm ? "study \(id) is already reviewed" : "study \(id) already has the label \(previous.label.rawValue)"
            return "\(what): \(done) by \(previous.attribution) on \(WorklistError.localTime(previous.reviewedAt)); nothing recorded. "
                + "To change its label: bonetriage override \(id) --label \(other.rawValue)"
        case let .reviewNotAllowed(path, group, groupMayWrite):
            if groupMayWrite {
                return "you may read the worklist but not record reviews: \(path) is not writable by you; ask the administrator to add "
                    + "your account to group \(group) (the group of \(path)), then log in again"
            }
            return "you may read the worklist but not record reviews: \(path) is not writable by you, and not even by its group \(group) "
                + "(the daemon creates it with mode 0660); ask the administrator to make it group-writable and to add your account to group \(group)"
        case let .olderSchema(path, missing):
            return "the worklist database \(path) has an older schema (without \(missing.joined(separator: ", "))) and you may not write it; "
                + "the daemon upgrades it when it starts (systemctl restart bonetriage), then try again"
        case let .outboxEntryNotFound(entry):
            return "no outbox entry matches '\(entry)'; run `bonetriage outbox --all` to see entry IDs (at least 4 hexadecimal characters)"
        case let .ambiguousOutboxEntry(entry, candidates):
            return "'\(entry)' matches \(candidates.count) outbox entries (\(candidates.prefix(5).joined(separator: ", "))); type more characters of the entry ID"
        case let .outboxEntryFinished(entry, state):
            return "outbox entry \(entry) is \(state.rawValue): nothing more is done with it"
                + (state == .delivered ? " (the destination has it)" : " (dropped for good; a new review queues a new report)")
        case let .invalidHandle(handle):
            return "'\(handle)' is not a study ID, Study Instance UID or accession number: IDs are hexadecimal (0-9, a-f), at least 4 characters of the ID shown by `bonetriage list`; a whole or partial Study Instance UID (digits and dots) or an exact accession number is accepted too"
        }
    }
}

/// What the daemon knows about one arriving instance (DICOM or PNG).
public struct InstanceArrival: Sendable {
    public var studyInstanceUID: String
    public var sopInstanceUID: String
    public var seriesInstanceUID: String?
    public var filePath: String
    public var receivedAt: Date
    public var eligible: Bool
    public var eligibilityReason: String?
    public var patientID: String?
    public var patientName: String?
    public var accessionNumber: String?
    public var studyDate: String?
    public var modality: String?
    public var bodyPart: String?
    public var studyDescription: String?
    public var source: StudySource
    public var callingAETitle: String?
    public var peerAddress: String?
    /// Why some of the text above is kept as received instead of converted to UTF-8 (see DicomMetadata).
    public var characterSetNote: String?
    /// Where the image is in the PACS (Series and Instance Number), its view and laterality, and the
    /// name it had in the drop folder: kept with the image (see StudyImage).
    public var seriesNumber: Int?
    public var instanceNumber: Int?
    public var viewPosition: String?
    public var laterality: String?
    public var fileName: String?
    /// SOP Class UID (0008,0016) of a DICOM instance; nil for a PNG.
    public var sopClassUID: String?

    public init(studyInstanceUID: String, sopInstanceUID: String, seriesInstanceUID: String? = nil, filePath: String,
                receivedAt: Date = Date(), eligible: Bool, eligibilityReason: String? = nil, source: StudySource) {
        self.studyInstanceUID = studyInstanceUID
        self.sopInstanceUID = sopInstanceUID
        self.seriesInstanceUID = seriesInstanceUID
        self.filePath = filePath
        self.receivedAt = receivedAt
        self.eligible = eligible
        self.eligibilityReason = eligibilityReason
        self.source = source
    }
}

public enum ArrivalOutcome: Equatable, Sendable {
    case newStudy, addedToStudy
    /// The SOP Instance UID was already stored on this node: nothing changed.
    case duplicate
    /// Another node (a shared worklist) recorded this instance first: this node's file is recorded as its
    /// own copy, so that it can triage the study from its own disk if the claim falls to it.
    case copyKept
}

/// What `beginTriage` found when a node went to claim a study.
public enum TriageClaim: Equatable, Sendable {
    /// This node triages it now; `attempts` counts the claims it opened without closing, this one
    /// included (more than one: this node died during the earlier ones).
    case claimed(attempts: Int)
    /// Another node claimed it at `since` and has not finished: it is left to that node (a node that
    /// died with it resumes it when it starts again).
    case heldBy(node: String, since: Date)
    /// It was triaged (or found not applicable, or failed) and nothing arrived since: nothing to do.
    case alreadyDone(state: StudyState)
}

/// A triage claimed and not yet ended: being run now, or left by a node that stopped during it.
public struct TriageInProgress: Sendable, Equatable {
    public var node: String
    public var startedAt: Date
    /// Claims opened without closing, the open one included (more than one: the node died during triage).
    public var attempts: Int

    public init(node: String, startedAt: Date, attempts: Int) {
        self.node = node
        self.startedAt = startedAt
        self.attempts = attempts
    }
}

/// The name a node goes by in a shared worklist (`[worklist] node`): by default the host's name.
public enum WorklistNode {
    public static var local: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let bytes = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
        let name = String(decoding: bytes, as: UTF8.self)
        return name.isEmpty ? "localhost" : name
    }
}

/// A triage result for one study: per-image probabilities and the model that made them.
public struct TriageResult: Sendable {
    public var studyInstanceUID: String
    public var imageProbabilities: [String: Double]
    public var threshold: Double
    public var modelID: String
    public var modelHash: String
    public var triagedAt: Date
    /// The study's image count when the triage read it; when set and the study has more images by the
    /// time the result is recorded, the result is refused as superseded.
    public var imageCount: Int?
    /// Eligible images that could not be classified (SOP Instance UID: why); recorded with the image.
    public var imageProblems: [String: String]
    /// Where the threshold came from (`OperatingPoint.verdictSource`), kept with the verdict.
    public var operatingPoint: String?
    /// Where results go (`[[results]]`, as the daemon queues them): the store queues, with the verdict,
    /// the result objects these destinations take. Empty: nothing is queued.
    public var resultDestinations: [ResultDestination] = []

    public init(studyInstanceUID: String, imageProbabilities: [String: Double], threshold: Double,
                modelID: String, modelHash: String, triagedAt: Date = Date(), imageCount: Int? = nil, imageProblems: [String: String] = [:]) {
        self.imageCount = imageCount
        self.imageProblems = imageProblems
        self.studyInstanceUID = studyInstanceUID
        self.imageProbabilities = imageProbabilities
        self.threshold = threshold
        self.modelID = modelID
        self.modelHash = modelHash
        self.triagedAt = triagedAt
    }
}

/// A study whose triage is over, with its recorded files in one folder: what storage retention may remove.
public struct FinishedStudyFiles: Sendable, Equatable {
    public var studyInstanceUID: String
    public var shortID: String
    /// The later of its last arrival and its last triage.
    public var finishedAt: Date
    public var paths: [String]

    public init(studyInstanceUID: String, shortID: String, finishedAt: Date, paths: [String]) {
        self.studyInstanceUID = studyInstanceUID
        self.shortID = shortID
        self.finishedAt = finishedAt
        self.paths = paths
    }
}

/// The worklist's documented orders, each served by an index.
public enum WorklistSort: String, Sendable, CaseIterable {
    /// First the studies changed after review (any verdict), then flagged studies by local arrival day,
    /// newest day first, most probable first within a day, then all others newest first (`StudyRules.tier`).
    case priority
    /// Newest arrival first.
    case arrival
    /// Highest probability first (studies without one last), then newest first.
    case probability
}

/// Which studies a listing or export shows, and in which order.
public struct WorklistFilter: Sendable, Equatable {
    public var flaggedOnly = false
    public var states: [StudyState] = []
    public var review: ReviewState?
    /// Arrived at or after this time.
    public var since: Date?
    /// Arrived before this time.
    public var until: Date?
    public var bodyPart: String?
    /// Exactly this accession number.
    public var accession: String?
    /// Exactly this patient ID, or a patient name beginning with this text (case-insensitive).
    public var patient: String?
    public var sort: WorklistSort = .priority
    public var limit: Int?

    public init() {}
}

/// How many studies a filter selects (its limit aside): flagged ones and the others.
public struct WorklistCounts: Sendable, Equatable {
    public var flagged: Int
    public var others: Int
    public var total: Int { flagged + others }

    public init(flagged: Int, others: Int) {
        self.flagged = flagged
        self.others = others
    }
}

/// The shortest prefix of each short ID that no other study shares, at least `minimumLength` long (like
/// git's abbreviated hashes), so an ID copied from the table is never ambiguous.
public struct ShortIDPrefixes: Sendable, Equatable {
    public var minimumLength: Int
    /// The short IDs that need more than `minimumLength` characters, with the length they need.
    public var longer: [String: Int]

    public init(minimumLength: Int, longer: [String: Int]) {
        self.minimumLength = minimumLength
        self.longer = longer
    }

    public func prefix(of shortID: String) -> String { String(shortID.prefix(longer[shortID] ?? minimumLength)) }

    /// From the sorted short IDs' neighbours: each needs one character more than it shares with either.
    public static func length(of shortID: String, previous: String?, next: String?, minimumLength: Int) -> Int {
        func shared(_ other: String?) -> Int {
            guard let other else { return 0 }
            return zip(shortID, other).prefix(while: { pair in pair.0 == pair.1 }).count
        }
        return min(shortID.count, max(minimumLength, max(shared(previous), shared(next)) + 1))
    }
}

/// The one door to the worklist: nothing outside `Worklist/` writes SQL. SQLite is the first
/// implementation; a shared PostgreSQL worklist would be another. Its values are plain `Sendable`
/// records identified by UIDs: no database type or row id leaves an implementation.
public protocol WorklistStore: Sendable {
    func recordArrival(_ arrival: InstanceArrival) throws -> ArrivalOutcome
    func markPending(studyInstanceUID: String) throws
    @discardableResult func recordTriage(_ result: TriageResult) throws -> Study
    func markNotApplicable(studyInstanceUID: String, reason: String) throws
    func markFailed(studyInstanceUID: String, reason: String) throws
    /// Why eligible images could not be classified (SOP Instance UID: why), kept with each image.
    func recordImageProblems(_ problems: [String: String]) throws
    /// The node this store writes as (`[worklist] node`): the holder of the files it records, and the
    /// owner of the triages it claims.
    var node: String { get }
    /// Claims the study for this node's triage, in one transaction on the study: refused while another
    /// node holds it, and when its last outcome stands (nothing arrived since). A claim this node left
    /// open (it died during the triage) is taken up again and counted.
    func beginTriage(studyInstanceUID: String) throws -> TriageClaim
    /// The triage ended (with any outcome): this node's claim is closed.
    func endTriage(studyInstanceUID: String) throws
    /// The study's open triage claim, if any (`show`): which node holds it and since when.
    func triageInProgress(ofStudy studyInstanceUID: String) throws -> TriageInProgress?
    /// Where a study's files are now (after the post-triage move to the archive), by SOP Instance UID.
    func updateImagePaths(_ paths: [String: String]) throws
    /// Where the recorded file of an instance is, if the instance is recorded.
    func imagePath(sopInstanceUID: String) throws -> String?
    /// The recorded file paths that start with `folder` + "/" (to find spool files without a row).
    func imagePaths(under folder: String) throws -> Set<String>
    /// Studies triaged, not applicable or failed (never one receiving or waiting for triage), oldest
    /// `finishedAt` first, with their files under `folder` + "/" that retention has not removed yet.
    func finishedStudyFiles(under folder: String) throws -> [FinishedStudyFiles]
    /// Notes that retention removed these files (the rows stay).
    func markFilesRemoved(_ paths: [String], at: Date) throws
    /// The same as `recordArrival` for each, in one transaction (a bulk import, the benchmark's worklist).
    func recordArrivals(_ arrivals: [InstanceArrival]) throws -> [ArrivalOutcome]
    func studies(matching filter: WorklistFilter) throws -> [Study]
    /// The studies a filter selects, in its order, one at a time from a cursor: nothing is held for all of
    /// them, so a listing of 100,000 studies starts at once and takes little memory.
    func forEachStudy(matching filter: WorklistFilter, _ body: (Study) throws -> Void) throws
    /// How many studies the filter selects (its limit and order aside), flagged and others.
    func counts(matching filter: WorklistFilter) throws -> WorklistCounts
    /// The shortest unique prefixes (at least `minimumLength` characters) of these short IDs (a page), or of
    /// every study's (nil: a whole listing).
    func shortIDPrefixes(of shortIDs: [String]?, minimumLength: Int) throws -> ShortIDPrefixes
    /// A radiologist's handle: the whole Study Instance UID, then an exact accession number, then a prefix
    /// of the short ID (hexadecimal) or of the Study Instance UID (digits and dots).
    func study(handle: String) throws -> Study
    /// The study with exactly this Study Instance UID, whatever characters it has (the daemon's lookup).
    func study(studyInstanceUID: String) throws -> Study
    /// The study's images, in order of arrival.
    func images(ofStudy studyInstanceUID: String) throws -> [StudyImage]
    /// The study's audit trail, oldest first.
    func reviews(ofStudy studyInstanceUID: String) throws -> [Review]
    /// Reviews studies by Study Instance UID (a radiologist's handles are resolved with `study(handle:)`
    /// first): one audit-trail entry per study, in the order given, all in one transaction; a study
    /// unknown or refused by `Study.review` (nothing to confirm, already reviewed) and nothing is recorded.
    @discardableResult func recordReviews(studyInstanceUIDs: [String], by reviewer: ReviewerIdentity, action: ReviewAction,
                                          label: Finding?, note: String?, at: Date) throws -> [Review]
    /// An image's heatmap, or why none could be made, replacing any earlier one; the study's count of
    /// images with a heatmap of its current model (`Study.heatmapCount`) follows.
    func recordHeatmap(sopInstanceUID: String, _ outcome: HeatmapOutcome, at: Date) throws
    /// What is recorded for an image (whatever model it was made with; compare `modelFingerprint`).
    func heatmap(sopInstanceUID: String) throws -> StoredHeatmap?
    /// The next images to make heatmaps for: classified images of triaged studies (for `.flagged`, those
    /// the model found abnormal) whose current model is `modelFingerprint`, with nothing recorded for that
    /// model yet; most recently triaged study first. Empty for `.none`.
    func heatmapWork(scope: HeatmapScope, modelFingerprint: String, limit: Int) throws -> [HeatmapWork]

    // MARK: The results outbox (queued by recordTriage and recordReviews)

    /// The study's result objects, in the order they were queued, each with its deliveries.
    func resultObjects(ofStudy studyInstanceUID: String) throws -> [ResultObject]
    /// This node's objects neither built nor given up, oldest first (`ResultObject.node`; one without a
    /// node is its study's triage node's, or anyone's when no node triaged the study).
    func resultObjectsAwaitingBuild(limit: Int) throws -> [ResultObject]
    /// The object's file is made (once: its identity never changes), on this node's disk: the object is
    /// this node's to deliver.
    /// Returns false, changing nothing, when the object has a file already: another node built it first
    /// (a re-triage there passed it on while this node was building it); this node's copy is then not needed.
    @discardableResult
    func recordResultBuilt(sopInstanceUID: String, filePath: String, at: Date) throws -> Bool
    /// The object cannot be built, for this reason; it is never tried again.
    func recordResultBuildProblem(sopInstanceUID: String, reason: String, at: Date) throws
    /// Notes that a build of the object starts and returns how many started without ending, this one included.
    func beginResultBuild(sopInstanceUID: String) throws -> Int
    /// The build ended (with any outcome): the process did not die during it.
    func endResultBuild(sopInstanceUID: String) throws
    /// This node's pending entries (their object's file is on its disk) whose object is built and whose
    /// next attempt has come, by destination.
    func deliveriesDue(at now: Date, limit: Int) throws -> [OutboxEntry]
    /// One attempt's outcome for a pending entry: `state` pending (with the next attempt), delivered or refused.
    func recordDeliveryAttempt(entryID: String, state: DeliveryState, message: String?, nextAttemptAt: Date?, at: Date) throws
    /// The outbox: entries not delivered nor dropped (or every entry), oldest first.
    func outboxEntries(includeDelivered: Bool) throws -> [OutboxEntry]
    /// Pending or refused entries (IDs or unique prefixes) back to pending, due at `at`; all or none.
    @discardableResult func retryDeliveries(entryIDs: [String], at: Date) throws -> [OutboxEntry]
    /// Every refused entry back to pending, due at `at`.
    @discardableResult func retryRefusedDeliveries(at: Date) throws -> [OutboxEntry]
    /// Entries stopped for good (kept as dropped, with who and when); all or none.
    @discardableResult func dropDeliveries(entryIDs: [String], by user: String, at: Date) throws -> [OutboxEntry]
}

extension WorklistStore {
    /// Reviews one study: `recordReviews` for its UID alone.
    @discardableResult public func recordReview(studyInstanceUID: String, by reviewer: ReviewerIdentity, action: ReviewAction,
                                                label: Finding?, note: String?, at: Date) throws -> Review {
        let reviews = try recordReviews(studyInstanceUIDs: [studyInstanceUID], by: reviewer, action: action, label: label, note: note, at: at)
        guard let review = reviews.first else { throw WorklistError.studyNotFound(handle: studyInstanceUID) }
        return review
    }
}

extension WorklistError {
    /// The database could not be used or reached (rather than a study's rules refusing a change): what
    /// was asked can be tried again once the database is back.
    public var isDatabaseFault: Bool {
        switch self {
        case .databaseUnusable, .databaseUnreachable: return true
        default: return false
        }
    }

    /// A date as a radiologist reads it in a message: local, with the year and the zone (2026-11-18 at 14:05 CET).
    static func localTime(_ date: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = .current
        f.dateFormat = "yyyy-MM-dd 'at' HH:mm zzz"
        return f.string(from: date)
    }
}
