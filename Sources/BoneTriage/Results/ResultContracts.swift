import Foundation

// The seams between the parts of "results in the PACS": the pictures (Pictures/), the DICOM objects and
// their sending (Results/), and the durable outbox in the worklist that drives them (Worklist/, Service/).
// Plain Sendable values; each part implements or uses these, and tests replace a part by its own.

/// A picture in 8-bit RGB: `height` rows of `width` pixels, top to bottom, 3 bytes (R, G, B) per pixel.
public struct RGBPicture: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "an RGB picture has 3 bytes per pixel")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// What BoneTriage sends back to a PACS for a triaged study.
public enum ResultKind: String, Sendable, Codable, CaseIterable {
    /// A Comprehensive SR with the verdict, probabilities, model and disclaimer (updated after each review).
    case structuredReport = "sr"
    /// A Secondary Capture series: one picture per classified image, the heatmap and a band burned in.
    case secondaryCapture = "sc"

    public var sopClassUID: String {
        switch self {
        case .structuredReport: return "1.2.840.10008.5.1.4.1.1.88.33"  // Comprehensive SR Storage
        case .secondaryCapture: return "1.2.840.10008.5.1.4.1.1.7"  // Secondary Capture Image Storage
        }
    }
}

/// Which triaged studies a destination receives results for.
public enum ResultVerdicts: String, Sendable, Codable, CaseIterable {
    /// Studies whose verdict is abnormal (and their later reviews).
    case abnormal
    /// Every triaged study.
    case all
}

/// A `[[results]]` entry of the configuration: a PACS (or any Storage SCP) that receives results.
public struct ResultDestination: Sendable, Equatable, Codable {
    /// How the outbox, the logs and `bonetriage outbox` name it: "AE@host:port" unless configured.
    public var name: String
    public var aeTitle: String
    public var host: String
    public var port: Int
    /// The AE title BoneTriage calls with (by default its own, [dicom] ae_title).
    public var callingAETitle: String
    public var kinds: Set<ResultKind>
    public var verdicts: ResultVerdicts
    /// Seconds to wait for the peer (connect, association, each response).
    public var timeoutSeconds: Double

    public init(name: String? = nil, aeTitle: String, host: String, port: Int, callingAETitle: String,
                kinds: Set<ResultKind> = Set(ResultKind.allCases), verdicts: ResultVerdicts = .abnormal, timeoutSeconds: Double = 30) {
        self.name = name ?? "\(aeTitle)@\(host):\(port)"
        self.aeTitle = aeTitle
        self.host = host
        self.port = port
        self.callingAETitle = callingAETitle
        self.kinds = kinds
        self.verdicts = verdicts
        self.timeoutSeconds = timeoutSeconds
    }
}

/// The words every result object carries.
public enum TriageDisclaimer {
    public static let text = "BoneTriage triage aid, not a diagnosis"
}

/// A source image as a result object refers to it.
public struct ReportedImage: Sendable, Equatable {
    public var sopClassUID: String
    public var sopInstanceUID: String
    public var seriesInstanceUID: String?
    /// The model's probability of abnormality for this image; nil when it was not classified.
    public var probability: Double?
    /// Why it was not classified (nil when it was).
    public var problem: String?

    public init(sopClassUID: String, sopInstanceUID: String, seriesInstanceUID: String?, probability: Double?, problem: String? = nil) {
        self.sopClassUID = sopClassUID
        self.sopInstanceUID = sopInstanceUID
        self.seriesInstanceUID = seriesInstanceUID
        self.probability = probability
        self.problem = problem
    }
}

/// A radiologist's review, as an updated report carries it.
public struct ReportedReview: Sendable, Equatable {
    /// The login recorded in the audit trail, and the name stated beside it (`--reviewer`), if any.
    public var reviewer: String
    public var statedReviewer: String?
    public var action: ReviewAction
    public var label: Finding
    public var reviewedAt: Date
    public var note: String?

    public init(reviewer: String, statedReviewer: String?, action: ReviewAction, label: Finding, reviewedAt: Date, note: String?) {
        self.reviewer = reviewer
        self.statedReviewer = statedReviewer
        self.action = action
        self.label = label
        self.reviewedAt = reviewedAt
        self.note = note
    }
}

/// A result object already made, which a new one replaces.
public struct ReportedObject: Sendable, Equatable {
    public var sopClassUID: String
    public var sopInstanceUID: String
    public var seriesInstanceUID: String

    public init(sopClassUID: String, sopInstanceUID: String, seriesInstanceUID: String) {
        self.sopClassUID = sopClassUID
        self.sopInstanceUID = sopInstanceUID
        self.seriesInstanceUID = seriesInstanceUID
    }
}

/// Where a result object goes in the study, with the identity the outbox gave it when it was queued
/// (a resend after a crash reuses it, so the PACS never gets two different objects for one result).
public struct ResultPlacement: Sendable, Equatable {
    /// A DICOM file of the study (a source image, or an earlier result object) whose Patient, General
    /// Study and Patient Study module attributes are copied, so that the PACS files the object with the study.
    public var studyTemplatePath: String
    public var studyInstanceUID: String
    public var seriesInstanceUID: String
    public var seriesNumber: Int
    public var sopInstanceUID: String
    public var instanceNumber: Int
    /// Content Date/Time (and Instance Creation): when the result was recorded, not when the file was made.
    public var contentDateTime: Date

    public init(studyTemplatePath: String, studyInstanceUID: String, seriesInstanceUID: String, seriesNumber: Int,
                sopInstanceUID: String, instanceNumber: Int, contentDateTime: Date) {
        self.studyTemplatePath = studyTemplatePath
        self.studyInstanceUID = studyInstanceUID
        self.seriesInstanceUID = seriesInstanceUID
        self.seriesNumber = seriesNumber
        self.sopInstanceUID = sopInstanceUID
        self.instanceNumber = instanceNumber
        self.contentDateTime = contentDateTime
    }
}

/// The content of a triage report (a Comprehensive SR): the model's verdict, and after a review the
/// radiologist's label, with a reference to the report it replaces.
public struct TriageReport: Sendable, Equatable {
    public var placement: ResultPlacement
    public var verdict: Finding
    public var probability: Double
    public var threshold: Double
    /// Where the threshold came from (`OperatingPoint.verdictSource`); nil when the worklist does not know.
    public var operatingPoint: String?
    public var modelID: String
    /// The model's fingerprint (SHA-256 over the head, naming the backbone's).
    public var modelFingerprint: String
    public var triagedAt: Date
    public var images: [ReportedImage]
    public var review: ReportedReview?
    public var predecessor: ReportedObject?

    public init(placement: ResultPlacement, verdict: Finding, probability: Double, threshold: Double, modelID: String,
                modelFingerprint: String, triagedAt: Date, images: [ReportedImage], review: ReportedReview? = nil,
                predecessor: ReportedObject? = nil) {
        self.placement = placement
        self.verdict = verdict
        self.probability = probability
        self.threshold = threshold
        self.modelID = modelID
        self.modelFingerprint = modelFingerprint
        self.triagedAt = triagedAt
        self.images = images
        self.review = review
        self.predecessor = predecessor
    }
}

/// One Secondary Capture image: the picture of one classified image, with what it was derived from.
public struct TriageCapture: Sendable, Equatable {
    public var placement: ResultPlacement
    public var seriesDescription: String
    public var picture: RGBPicture
    public var source: ReportedImage

    public init(placement: ResultPlacement, seriesDescription: String, picture: RGBPicture, source: ReportedImage) {
        self.placement = placement
        self.seriesDescription = seriesDescription
        self.picture = picture
        self.source = source
    }
}

/// Writes result objects as DICOM files (Part 10, Explicit VR Little Endian).
public protocol ResultObjectWriting: Sendable {
    func writeReport(_ report: TriageReport, to path: String) throws
    func writeCapture(_ capture: TriageCapture, to path: String) throws
}

/// What became of one file sent to a destination.
public enum StoreOutcome: Sendable, Equatable {
    /// The peer stored it (status 0x0000, or a warning 0xB000/0xB006/0xB007, kept in `warning`).
    case stored(warning: String?)
    /// The peer refused it for good (e.g. 0xA900 data set does not match SOP class, 0xC000 cannot
    /// understand, SOP class not accepted): sending it again cannot help.
    case refused(reason: String)
    /// Not stored this time (no connection, association rejected, timeout, 0xA7xx out of resources):
    /// try again later.
    case retryLater(reason: String)
}

/// Sends files with C-STORE: one association per call, one outcome per file in order.
public protocol ResultSending: Sendable {
    func send(_ paths: [String], to destination: ResultDestination) -> [StoreOutcome]
}

/// Makes the picture a Secondary Capture carries for one classified image: the radiograph rendered
/// (longest side at most 1024 px) with its heatmap overlaid and the disclaimer band.
public protocol TriagePictureMaking: Sendable {
    func picture(of image: StudyImage, in study: Study) throws -> RGBPicture
}

/// New DICOM UIDs under the 2.25 root (ISO/IEC 9834-8), from a random UUID.
public enum DicomUID {
    public static func make() -> String {
        let u = UUID().uuid
        let bytes = [u.0, u.1, u.2, u.3, u.4, u.5, u.6, u.7, u.8, u.9, u.10, u.11, u.12, u.13, u.14, u.15]
        let value = bytes.reduce(UInt128(0)) { ($0 << 8) | UInt128($1) }
        return "2.25.\(value)"
    }
}
