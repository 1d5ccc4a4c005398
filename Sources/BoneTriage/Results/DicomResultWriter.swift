import CDCMTK
import Foundation

/// A result object that could not be written: what is wrong and what to do.
public struct ResultObjectError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var reason: String

    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String { "cannot write the result object \(path): \(reason)" }
}

/// The codes a triage report uses: standard ones (DCM, SCT, UCUM) where they fit, else BoneTriage's
/// private coding scheme `99BTRG`, which every report declares in its Coding Scheme Identification Sequence.
public enum TriageReportCode {
    public struct Code: Sendable, Equatable {
        public var value: String
        public var scheme: String
        public var meaning: String
    }

    public static let privateScheme = "99BTRG"
    public static let privateSchemeName = "BoneTriage triage result codes"
    public static let privateSchemeOrganization = "BoneTriage"

    private static func local(_ value: String, _ meaning: String) -> Code { Code(value: value, scheme: privateScheme, meaning: meaning) }

    public static let report = local("TRIAGE", "Musculoskeletal radiograph triage")
    public static let disclaimer = local("DISCLAIMER", "Disclaimer")
    public static let verdict = local("VERDICT", "Triage verdict")
    public static let studyProbability = local("STUDYPROB", "Study probability of abnormality")
    public static let threshold = local("THRESHOLD", "Abnormality threshold")
    public static let operatingPoint = local("OPERATINGPOINT", "Operating point")
    public static let triagedAt = local("TRIAGEDAT", "Triaged at")
    public static let imageResult = local("IMAGERESULT", "Image triage result")
    public static let imageProbability = local("IMAGEPROB", "Image probability of abnormality")
    public static let notClassified = local("NOTCLASSIFIED", "Reason image not classified")
    public static let review = local("REVIEW", "Radiologist review")
    public static let reviewLabel = local("REVIEWLABEL", "Radiologist label")
    public static let reviewAction = local("REVIEWACTION", "Review action")
    public static let confirmed = local("CONFIRMED", "Verdict confirmed")
    public static let overridden = local("OVERRIDDEN", "Verdict overridden")
    public static let reviewer = local("REVIEWER", "Reviewer")
    public static let reviewerLogin = local("REVIEWERLOGIN", "Reviewer login")
    public static let reviewedAt = local("REVIEWEDAT", "Reviewed at")

    /// DICOM (PS3.16): Algorithm Name, Algorithm Version, Source of Measurement, Comment.
    public static let algorithmName = Code(value: "111001", scheme: "DCM", meaning: "Algorithm Name")
    public static let algorithmVersion = Code(value: "111003", scheme: "DCM", meaning: "Algorithm Version")
    public static let sourceOfMeasurement = Code(value: "121112", scheme: "DCM", meaning: "Source of Measurement")
    public static let comment = Code(value: "121106", scheme: "DCM", meaning: "Comment")
    /// SNOMED CT qualifier values for the verdict and the label.
    public static let abnormal = Code(value: "263654008", scheme: "SCT", meaning: "Abnormal")
    public static let normal = Code(value: "17621005", scheme: "SCT", meaning: "Normal")
    /// UCUM "no units": probabilities and the threshold are fractions from 0 to 1.
    public static let noUnits = Code(value: "1", scheme: "UCUM", meaning: "no units")

    public static func finding(_ f: Finding) -> Code { f == .abnormal ? abnormal : normal }
}

/// Writes BoneTriage's result objects with DCMTK: the triage report as a Comprehensive SR (dcmsr) and
/// each picture as a Secondary Capture image, both Part 10 in explicit VR little endian, placed in the
/// study of `placement` with the identity the outbox gave them.
///
/// The report's content tree (value type, relationship, concept; `99BTRG` is BoneTriage's private scheme):
///
///     CONTAINER (root)  99BTRG TRIAGE "Musculoskeletal radiograph triage", continuity SEPARATE
///       CONTAINS TEXT      99BTRG DISCLAIMER "Disclaimer" = "BoneTriage triage aid, not a diagnosis"
///       CONTAINS CODE      99BTRG VERDICT "Triage verdict" = SCT 263654008 "Abnormal" | SCT 17621005 "Normal"
///       CONTAINS NUM       99BTRG STUDYPROB "Study probability of abnormality" = p, UCUM "1"
///       CONTAINS NUM       99BTRG THRESHOLD "Abnormality threshold" = t, UCUM "1"
///       CONTAINS TEXT      99BTRG OPERATINGPOINT "Operating point" = where t came from (default or site-calibrated, its target)
///       CONTAINS TEXT      DCM 111001 "Algorithm Name" = the model ID
///       CONTAINS TEXT      DCM 111003 "Algorithm Version" = the model's fingerprint
///       CONTAINS DATETIME  99BTRG TRIAGEDAT "Triaged at"
///       CONTAINS CONTAINER 99BTRG IMAGERESULT "Image triage result"         (one per source image)
///         CONTAINS IMAGE   DCM 121112 "Source of Measurement" = SOP Class/Instance UID of the image
///         CONTAINS NUM     99BTRG IMAGEPROB "Image probability of abnormality" = p, UCUM "1"  (classified)
///         CONTAINS TEXT    99BTRG NOTCLASSIFIED "Reason image not classified"                  (not classified)
///       CONTAINS CONTAINER 99BTRG REVIEW "Radiologist review"               (after a review)
///         CONTAINS CODE    99BTRG REVIEWLABEL "Radiologist label" = SCT Abnormal | Normal
///         CONTAINS CODE    99BTRG REVIEWACTION "Review action" = 99BTRG CONFIRMED | OVERRIDDEN
///         CONTAINS PNAME   99BTRG REVIEWER "Reviewer" = the stated reviewer, else the login
///         CONTAINS TEXT    99BTRG REVIEWERLOGIN "Reviewer login" = the login of the audit trail
///         CONTAINS DATETIME 99BTRG REVIEWEDAT "Reviewed at"
///         CONTAINS TEXT    DCM 121106 "Comment" = the review's note                             (if any)
///
/// Completion Flag is always COMPLETE: the report says everything BoneTriage will say about the study,
/// an image that could not be classified included (with its reason); PARTIAL would claim more is coming,
/// and a PARTIAL report cannot be verified. Verification Flag is VERIFIED (Verifying Observer = the
/// reviewer) after a review, else UNVERIFIED. Every referenced image is listed in the Current Requested
/// Procedure Evidence Sequence; a review's report lists the report it replaces in the Predecessor
/// Documents Sequence. After writing, dcmsr reads the file back and checks it (`check(reportAt:)`);
/// a report it finds any fault with is an error, never a file to send.
public struct DicomResultWriter: ResultObjectWriting {
    /// Verifying Organization (0040,A027) of a reviewed report.
    public var verifyingOrganization: String
    public var manufacturer = "BoneTriage"
    public var softwareVersion = BoneTriageVersion.number
    public static let reportSeriesDescription = "BoneTriage triage report (triage aid)"
    public static let derivationDescription =
        "BoneTriage: the source radiograph rendered to 8 bits with the model's heatmap and the triage aid band burned in"

    public init(verifyingOrganization: String = "BoneTriage reviewer") {
        self.verifyingOrganization = verifyingOrganization
    }

    public func writeReport(_ report: TriageReport, to path: String) throws {
        let strings = CStringArena()
        var items: [bt_sr_item] = []
        func add(_ depth: Int, _ relationship: Int32, _ type: Int32, _ concept: TriageReportCode.Code, text: String? = nil,
                 code: TriageReportCode.Code? = nil, image: ReportedImage? = nil) {
            var item = bt_sr_item()
            item.depth = Int32(depth)
            item.relationship = relationship
            item.value_type = type
            item.concept = strings.code(concept)
            item.text = strings(text)
            if let code { item.code = strings.code(code) }
            item.sop_class_uid = strings(image?.sopClassUID)
            item.sop_instance_uid = strings(image?.sopInstanceUID)
            items.append(item)
        }
        func decimal(_ value: Double, _ what: String) throws -> String {
            guard value.isFinite else { throw ResultObjectError(path: path, reason: "the \(what) is \(value), not a number the report can hold") }
            return String(format: "%.6f", value)
        }
        let contains = Int32(BT_SR_CONTAINS)
        add(0, Int32(BT_SR_ROOT), Int32(BT_SR_CONTAINER), TriageReportCode.report)
        add(1, contains, Int32(BT_SR_TEXT), TriageReportCode.disclaimer, text: TriageDisclaimer.text)
        add(1, contains, Int32(BT_SR_CODE), TriageReportCode.verdict, code: TriageReportCode.finding(report.verdict))
        add(1, contains, Int32(BT_SR_NUM), TriageReportCode.studyProbability, text: try decimal(report.probability, "study probability"),
            code: TriageReportCode.noUnits)
        add(1, contains, Int32(BT_SR_NUM), TriageReportCode.threshold, text: try decimal(report.threshold, "threshold"), code: TriageReportCode.noUnits)
        if let point = report.operatingPoint, !point.isEmpty { add(1, contains, Int32(BT_SR_TEXT), TriageReportCode.operatingPoint, text: point) }
        add(1, contains, Int32(BT_SR_TEXT), TriageReportCode.algorithmName, text: report.modelID)
        add(1, contains, Int32(BT_SR_TEXT), TriageReportCode.algorithmVersion, text: report.modelFingerprint)
        add(1, contains, Int32(BT_SR_DATETIME), TriageReportCode.triagedAt, text: DicomDateTime.dateTime(report.triagedAt))
        var evidence: [bt_instance_reference] = []
        for image in report.images {
            add(1, contains, Int32(BT_SR_CONTAINER), TriageReportCode.imageResult)
            add(2, contains, Int32(BT_SR_IMAGE), TriageReportCode.sourceOfMeasurement, image: image)
            if let probability = image.probability {
                add(2, contains, Int32(BT_SR_NUM), TriageReportCode.imageProbability,
                    text: try decimal(probability, "probability of image \(image.sopInstanceUID)"), code: TriageReportCode.noUnits)
            }
            if image.probability == nil || image.problem != nil {
                add(2, contains, Int32(BT_SR_TEXT), TriageReportCode.notClassified, text: image.problem ?? "not classified (no reason recorded)")
            }
            guard let series = image.seriesInstanceUID, !series.isEmpty else {
                throw ResultObjectError(path: path, reason: "image \(image.sopInstanceUID) has no Series Instance UID, which the report's evidence "
                                            + "(Current Requested Procedure Evidence Sequence) needs; record the image's series first")
            }
            evidence.append(bt_instance_reference(series_instance_uid: strings(series), sop_class_uid: strings(image.sopClassUID),
                                                  sop_instance_uid: strings(image.sopInstanceUID)))
        }
        if let review = report.review {
            add(1, contains, Int32(BT_SR_CONTAINER), TriageReportCode.review)
            add(2, contains, Int32(BT_SR_CODE), TriageReportCode.reviewLabel, code: TriageReportCode.finding(review.label))
            add(2, contains, Int32(BT_SR_CODE), TriageReportCode.reviewAction,
                code: review.action == .confirm ? TriageReportCode.confirmed : TriageReportCode.overridden)
            add(2, contains, Int32(BT_SR_PNAME), TriageReportCode.reviewer, text: Self.personName(review.statedReviewer ?? review.reviewer))
            add(2, contains, Int32(BT_SR_TEXT), TriageReportCode.reviewerLogin, text: review.reviewer)
            add(2, contains, Int32(BT_SR_DATETIME), TriageReportCode.reviewedAt, text: DicomDateTime.dateTime(review.reviewedAt))
            if let note = review.note, !note.isEmpty { add(2, contains, Int32(BT_SR_TEXT), TriageReportCode.comment, text: note) }
        }

        var spec = bt_sr_spec()
        spec.header = header(report.placement, seriesDescription: Self.reportSeriesDescription, strings)
        spec.private_scheme = strings(TriageReportCode.privateScheme)
        spec.private_scheme_name = strings(TriageReportCode.privateSchemeName)
        spec.private_scheme_organization = strings(TriageReportCode.privateSchemeOrganization)
        if let review = report.review {
            spec.verifying_observer = strings(Self.personName(review.statedReviewer ?? review.reviewer))
            spec.verifying_organization = strings(verifyingOrganization)
            spec.verification_datetime = strings(DicomDateTime.dateTime(review.reviewedAt))
        }
        let predecessor = report.predecessor.map {
            bt_instance_reference(series_instance_uid: strings($0.seriesInstanceUID), sop_class_uid: strings($0.sopClassUID),
                                  sop_instance_uid: strings($0.sopInstanceUID))
        }
        var error = [CChar](repeating: 0, count: 1024)
        let status = items.withUnsafeBufferPointer { itemBuffer in
            evidence.withUnsafeBufferPointer { evidenceBuffer in
                withOptionalPointer(predecessor) { (predecessorPointer: UnsafePointer<bt_instance_reference>?) -> Int32 in
                    spec.items = itemBuffer.baseAddress
                    spec.item_count = itemBuffer.count
                    spec.evidence = evidenceBuffer.baseAddress
                    spec.evidence_count = evidenceBuffer.count
                    spec.predecessor = predecessorPointer
                    return bt_write_report(&spec, path, &error, error.count)
                }
            }
        }
        guard status == 0 else { throw ResultObjectError(path: path, reason: DicomReader.message(error)) }
        if let problems = Self.check(reportAt: path) {
            try? FileManager.default.removeItem(atPath: path)
            throw ResultObjectError(path: path, reason: "dcmsr's checks refused the report written: \(problems)")
        }
    }

    public func writeCapture(_ capture: TriageCapture, to path: String) throws {
        let strings = CStringArena()
        var spec = bt_sc_spec()
        spec.header = header(capture.placement, seriesDescription: capture.seriesDescription, strings)
        spec.width = Int32(clamping: capture.picture.width)
        spec.height = Int32(clamping: capture.picture.height)
        spec.derivation_description = strings(Self.derivationDescription)
        spec.source_sop_class_uid = strings(capture.source.sopClassUID)
        spec.source_sop_instance_uid = strings(capture.source.sopInstanceUID)
        var error = [CChar](repeating: 0, count: 1024)
        let status = capture.picture.pixels.withUnsafeBufferPointer { (pixels: UnsafeBufferPointer<UInt8>) -> Int32 in
            spec.pixels = pixels.baseAddress
            return bt_write_capture(&spec, path, &error, error.count)
        }
        guard status == 0 else { throw ResultObjectError(path: path, reason: DicomReader.message(error)) }
    }

    /// dcmsr's own checks of an SR file (DSRDocument::read with every warning it logs, the tree's
    /// validity, the Comprehensive SR IOD's relationship constraints): nil when it passes, else the problems.
    public static func check(reportAt path: String) -> String? {
        var error = [CChar](repeating: 0, count: 4096)
        return bt_check_report(path, &error, error.count) == 0 ? nil : DicomReader.message(error)
    }

    /// A login or stated name as a Person Name: backslash (the value separator) and control
    /// characters become spaces.
    static func personName(_ name: String) -> String {
        String(name.map { $0 == "\\" || $0.isNewline || ($0.asciiValue.map { $0 < 0x20 } ?? false) ? " " : $0 })
    }

    private func header(_ placement: ResultPlacement, seriesDescription: String, _ strings: CStringArena) -> bt_result_header {
        var h = bt_result_header()
        h.template_path = strings(placement.studyTemplatePath)
        h.study_instance_uid = strings(placement.studyInstanceUID)
        h.series_instance_uid = strings(placement.seriesInstanceUID)
        h.sop_instance_uid = strings(placement.sopInstanceUID)
        h.series_number = Int32(clamping: placement.seriesNumber)
        h.instance_number = Int32(clamping: placement.instanceNumber)
        h.content_date = strings(DicomDateTime.date(placement.contentDateTime))
        h.content_time = strings(DicomDateTime.time(placement.contentDateTime))
        h.timezone_offset = strings(DicomDateTime.offset(placement.contentDateTime))
        h.series_description = strings(seriesDescription)
        h.manufacturer = strings(manufacturer)
        h.software_version = strings(softwareVersion)
        return h
    }
}

private func withOptionalPointer<T, R>(_ value: T?, _ body: (UnsafePointer<T>?) -> R) -> R {
    guard var value else { return body(nil) }
    return withUnsafePointer(to: &value) { body($0) }
}

/// DICOM DA, TM, DT and Timezone Offset From UTC, in the machine's time zone.
enum DicomDateTime {
    private static func components(_ date: Date) -> (DateComponents, Int) {
        let zone = TimeZone.current
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        return (calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date), zone.secondsFromGMT(for: date))
    }

    static func date(_ date: Date) -> String {
        let (c, _) = components(date)
        return String(format: "%04d%02d%02d", c.year ?? 0, c.month ?? 0, c.day ?? 0)
    }

    static func time(_ date: Date) -> String {
        let (c, _) = components(date)
        return String(format: "%02d%02d%02d", c.hour ?? 0, c.minute ?? 0, c.second ?? 0)
    }

    static func offset(_ date: Date) -> String {
        let seconds = components(date).1
        let minutes = abs(seconds) / 60
        return (seconds < 0 ? "-" : "+") + String(format: "%02d%02d", minutes / 60, minutes % 60)
    }

    /// Without a UTC offset: the instance's Timezone Offset From UTC (0008,0201) applies (DCMTK 3.6.7
    /// also refuses a DT ending in "+0000").
    static func dateTime(_ date: Date) -> String { Self.date(date) + Self.time(date) }
}

/// C strings that live as long as the arena (for the structs handed to the shim).
final class CStringArena {
    private var pointers: [UnsafeMutablePointer<CChar>] = []

    func callAsFunction(_ text: String?) -> UnsafePointer<CChar>? {
        guard let text, let copy = strdup(text) else { return nil }
        pointers.append(copy)
        return UnsafePointer(copy)
    }

    func code(_ code: TriageReportCode.Code) -> bt_code {
        bt_code(value: self(code.value), scheme: self(code.scheme), meaning: self(code.meaning))
    }

    deinit { pointers.forEach { free($0) } }
}
