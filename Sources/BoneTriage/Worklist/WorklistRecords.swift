import Foundation

/// How a study reached BoneTriage.
public enum StudySource: String, Codable, Sendable {
    case cstore, dropFolder = "drop_folder"
}

/// One row of the worklist: a study with its metadata, triage result and current review, identified
/// by its Study Instance UID (a plain value: how a store keeps it is the store's business).
public struct Study: Codable, Sendable, Equatable {
    public var studyInstanceUID: String
    /// First 12 hex digits of the UID's SHA-256: the short handle the CLI prints and accepts.
    public var shortID: String
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
    public var firstReceivedAt: Date
    public var lastReceivedAt: Date
    public var imageCount: Int
    public var eligibleImageCount: Int
    public var state: StudyState
    public var stateReason: String?
    public var probability: Double?
    public var verdict: Finding?
    public var threshold: Double?
    public var modelID: String?
    public var modelHash: String?
    public var triagedAt: Date?
    public var priority: Int
    public var reviewState: ReviewState
    /// The radiologist's label: the verdict when confirmed, their own when overridden.
    public var reviewLabel: Finding?
    public var reviewedAt: Date?
    /// Set when a study is triaged again (late images, new model) after it was reviewed.
    public var changedAfterReview: Bool
    /// Why some of the study's text (patient name, IDs, description) is kept as received instead of
    /// converted to UTF-8: an unknown Specific Character Set (0008,0005), or bytes invalid in it.
    public var characterSetNote: String?
    /// The local day of its first arrival (yyyymmdd, `StudyRules.arrivalDay`), written when it arrives.
    public var arrivalDay: Int
    /// How many of its images have a heatmap made by its current model (pictures exist for them).
    public var heatmapCount = 0
    /// Where its result objects stand with their destinations (nil: none queued), kept by the store.
    public var deliveryMark: DeliveryMark?
    /// The node (`[worklist] node`) that recorded its last triage outcome, and so makes its heatmaps and
    /// builds and sends its results; nil before it has one (or when it was triaged before nodes were kept).
    public var triageNode: String?
    /// Where its verdict's threshold came from (`OperatingPoint.verdictSource`): default or site-calibrated,
    /// with its target; nil before it was triaged (or when triaged before this was kept).
    public var operatingPoint: String?

    /// A study as a store keeps it: its short ID and arrival day as stored, not derived again (a listing
    /// reads 100,000 of them).
    public init(studyInstanceUID: String, shortID: String, source: StudySource, receivedAt: Date, arrivalDay: Int) {
        self.init(studyInstanceUID: studyInstanceUID, source: source, receivedAt: receivedAt, shortID: shortID, arrivalDay: arrivalDay)
    }

    public static func shortID(for uid: String) -> String { String(SHA256Digest.hex(Data(uid.utf8)).prefix(12)) }

    public init(studyInstanceUID: String, source: StudySource, receivedAt: Date) {
        self.init(studyInstanceUID: studyInstanceUID, source: source, receivedAt: receivedAt, shortID: Study.shortID(for: studyInstanceUID),
                  arrivalDay: StudyRules.arrivalDay(receivedAt))
    }

    private init(studyInstanceUID: String, source: StudySource, receivedAt: Date, shortID: String, arrivalDay: Int) {
        self.studyInstanceUID = studyInstanceUID
        self.shortID = shortID
        self.source = source
        self.firstReceivedAt = receivedAt
        self.lastReceivedAt = receivedAt
        self.imageCount = 0
        self.eligibleImageCount = 0
        self.state = .receiving
        self.priority = 0
        self.reviewState = .unreviewed
        self.changedAfterReview = false
        self.arrivalDay = arrivalDay
    }
}

/// One image (DICOM instance or PNG file) of a study.
public struct StudyImage: Codable, Sendable, Equatable {
    /// The study the image belongs to.
    public var studyInstanceUID: String
    public var sopInstanceUID: String
    public var seriesInstanceUID: String?
    public var filePath: String
    public var receivedAt: Date
    public var eligible: Bool
    public var eligibilityReason: String?
    public var probability: Double?
    /// When storage retention removed the file (the row, its probability and the study's result stay).
    public var fileRemovedAt: Date?
    /// Series Number (0020,0011) and Instance Number (0020,0013): where a radiologist finds the image in the PACS.
    public var seriesNumber: Int?
    public var instanceNumber: Int?
    /// View Position (0018,5101), e.g. PA, and Image Laterality (0020,0062), else Laterality (0020,0060): L, R, B or U.
    public var viewPosition: String?
    public var laterality: String?
    /// The name the file had in the drop folder (PNG or DICOM); nil for an instance received over C-STORE.
    public var fileName: String?
    /// SOP Class UID (0008,0016) of a DICOM image (nil for a PNG): what a result object's references need.
    public var sopClassUID: String?
    /// The node whose disk holds `filePath` (`[worklist] node`): the one that recorded the image, or,
    /// when the store reading it kept a copy of its own, that store's node (and `filePath` is that copy).
    /// Nil for an image recorded before nodes were kept: a single node's, held wherever it is read.
    public var node: String?

    public init(studyInstanceUID: String, sopInstanceUID: String, seriesInstanceUID: String?, filePath: String, receivedAt: Date,
                eligible: Bool, eligibilityReason: String? = nil) {
        self.studyInstanceUID = studyInstanceUID
        self.sopInstanceUID = sopInstanceUID
        self.seriesInstanceUID = seriesInstanceUID
        self.filePath = filePath
        self.receivedAt = receivedAt
        self.eligible = eligible
        self.eligibilityReason = eligibilityReason
    }
}

/// One entry of the append-only audit trail.
public struct Review: Codable, Sendable, Equatable {
    /// The study reviewed.
    public var studyInstanceUID: String
    /// The login of the user who ran the review command (from the real uid).
    public var reviewer: String
    public var reviewedAt: Date
    public var action: ReviewAction
    /// The model's verdict at the time of the review (nil if the study had none).
    public var fromVerdict: Finding?
    public var label: Finding
    public var note: String?
    /// A name the reviewer stated beside their login (`--reviewer`), e.g. the radiologist they review for.
    public var statedReviewer: String?

    public init(studyInstanceUID: String, reviewer: String, reviewedAt: Date, action: ReviewAction, fromVerdict: Finding?,
                label: Finding, note: String?, statedReviewer: String? = nil) {
        self.studyInstanceUID = studyInstanceUID
        self.reviewer = reviewer
        self.statedReviewer = statedReviewer
        self.reviewedAt = reviewedAt
        self.action = action
        self.fromVerdict = fromVerdict
        self.label = label
        self.note = note
    }
}

extension StudyImage {
    /// Whether `filePath` is on the disk of `node` (a store's own node).
    public func isHeld(by node: String) -> Bool { self.node == nil || self.node == node }
}

extension Review {
    /// Who reviewed, as the history shows it: the login, and a stated name beside it ("alice (for Dr Smith)").
    public var attribution: String { reviewer + (statedReviewer.map { " (for \($0))" } ?? "") }
}
