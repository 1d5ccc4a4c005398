import Foundation
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Makes each queued result object's DICOM file, once, into `[storage] results`: from the worklist's
/// data and a file of the study to copy its patient and study from (a source image, else an earlier
/// result object). Runs on its own thread in the daemon, off the triage path. An object that cannot be
/// built (no file of the study left, a picture that cannot be made, a writer error) is recorded with the
/// reason, shown by `show` and `outbox`, and never tried again; a Secondary Capture waits while its
/// image's heatmap is not settled.
public final class ResultBuildStage: Sendable {
    public enum Outcome: Sendable, Equatable {
        case built(path: String)
        /// Not yet: its image's heatmap is not settled.
        case waiting
        /// Recorded as not buildable, with the reason.
        case notBuilt(reason: String)
        /// Another node's now: a re-triage there took it over, or it recorded its own file first (this
        /// node's copy, if any, is removed).
        case elsewhere
    }

    let worklist: any WorklistStore
    let components: ResultsComponents
    let folder: String
    let afterTriage: PostTriageAction
    let spoolFolder: String
    let logger: Logger

    public init(worklist: any WorklistStore, components: ResultsComponents, folder: String, afterTriage: PostTriageAction,
                spoolFolder: String, logger: Logger) {
        self.worklist = worklist
        self.components = components
        self.folder = (folder as NSString).standardizingPath
        self.afterTriage = afterTriage
        self.spoolFolder = (spoolFolder as NSString).standardizingPath
        self.logger = logger
    }

    /// The series description of BoneTriage's Secondary Capture series.
    public static let captureSeriesDescription = "BoneTriage triage aid: heatmap (not a diagnosis)"

    /// One pass over every object waiting to be built; returns how many were built or given up.
    @discardableResult
    public func runOnce(now: Date = Date(), isStopping: () -> Bool = { false }) -> Int {
        let waiting: [ResultObject]
        do { waiting = try worklist.resultObjectsAwaitingBuild(limit: 500) } catch {
            logger.error("result objects could not be read from the worklist: \(error); tried again shortly")
            return 0
        }
        var done = 0
        var studies = Set<String>()
        for object in waiting where !isStopping() {
            do {
                switch try build(object, now: now) {
                case let .built(path):
                    done += 1
                    studies.insert(object.studyInstanceUID)
                    logger.debug("result object built", metadata: ["study": "\(object.shortID)", "kind": "\(object.kind.rawValue)", "path": "\(path)"])
                case let .notBuilt(reason):
                    done += 1
                    studies.insert(object.studyInstanceUID)
                    logger.error("result object could not be built: \(reason)", metadata: ["study": "\(object.shortID)", "kind": "\(object.kind.rawValue)"])
                case .waiting:
                    continue
                case .elsewhere:
                    logger.debug("result object taken over by another node", metadata: ["study": "\(object.shortID)", "kind": "\(object.kind.rawValue)"])
                }
            } catch {
                logger.error("the worklist could not be read or written for a result object: \(error); tried again shortly",
                             metadata: ["study": "\(object.shortID)"])
            }
        }
        if afterTriage == .delete {
            for study in studies.sorted() { deleteSourcesIfDone(study) }
        }
        return done
    }

    /// Builds that may be cut short (the daemon killed, or crashed by a file in DCMTK) before an object
    /// is given up. (With `[triage] isolate_decoder`, a picture's radiograph is rendered in a decoder
    /// process: a file that crashes it costs the picture, and the daemon is not stopped.)
    public static let maximumInterruptedBuilds = 3

    /// Why an object is given up instead of being built again, when `attempts` builds (this one included)
    /// started without ending; nil while it may still be tried.
    public static func giveUpReason(interruptedBuilds attempts: Int) -> String? {
        guard attempts > maximumInterruptedBuilds else { return nil }
        return "the daemon stopped \(attempts - 1) times while building this object (a file of the study may crash the DICOM writer); "
            + "not tried again; the study's other results are not affected"
    }

    /// Builds one object and records the outcome (throws when the worklist cannot be read or written:
    /// the object is tried again at the next pass).
    public func build(_ object: ResultObject, now: Date = Date()) throws -> Outcome {
        let outcome = try make(object)
        switch outcome {
        case let .built(path):
            guard try worklist.recordResultBuilt(sopInstanceUID: object.sopInstanceUID, filePath: path, at: now) else {
                try? FileManager.default.removeItem(atPath: path)
                return .elsewhere
            }
        case let .notBuilt(reason): try worklist.recordResultBuildProblem(sopInstanceUID: object.sopInstanceUID, reason: reason, at: now)
        case .waiting, .elsewhere: break
        }
        return outcome
    }

    private func make(_ object: ResultObject) throws -> Outcome {
        let study = try worklist.study(studyInstanceUID: object.studyInstanceUID)
        let images = try worklist.images(ofStudy: object.studyInstanceUID)
        let earlier = try worklist.resultObjects(ofStudy: object.studyInstanceUID)
        // The list of objects to build was read a while ago: a re-triage on another node may have taken this one over since.
        if let current = earlier.first(where: { $0.sopInstanceUID == object.sopInstanceUID }),
           current.filePath != nil || current.buildProblem != nil || (current.node.map { $0 != worklist.node } ?? false) {
            return .elsewhere
        }
        let source = object.sourceSOPInstanceUID.flatMap { sop in images.first { $0.sopInstanceUID == sop } }
        if object.kind == .secondaryCapture, let source, let settled = components.heatmapSettled, !settled(source) { return .waiting }
        let attempts = try worklist.beginResultBuild(sopInstanceUID: object.sopInstanceUID)
        defer { try? worklist.endResultBuild(sopInstanceUID: object.sopInstanceUID) }
        if let reason = Self.giveUpReason(interruptedBuilds: attempts) { return .notBuilt(reason: reason) }
        logger.debug("building a result object", metadata: ["study": "\(object.shortID)", "kind": "\(object.kind.rawValue)",
                                                            "object": "\(object.sopInstanceUID)"])
        return make(object, study: study, images: images, earlier: earlier, source: source)
    }

    private func make(_ object: ResultObject, study: Study, images: [StudyImage], earlier: [ResultObject], source: StudyImage?) -> Outcome {
        guard let template = Self.template(images: images, earlier: earlier, excluding: object.sopInstanceUID) else {
            return .notBuilt(reason: "no DICOM file of the study is left to copy its patient and study from (its images were removed "
                             + "or deleted after triage, and it has no earlier result object)")
        }
        let placement = ResultPlacement(studyTemplatePath: template, studyInstanceUID: study.studyInstanceUID,
                                        seriesInstanceUID: object.seriesInstanceUID, seriesNumber: object.seriesNumber,
                                        sopInstanceUID: object.sopInstanceUID, instanceNumber: object.instanceNumber,
                                        contentDateTime: object.queuedAt)
        let target = folder + "/" + study.studyInstanceUID + "/" + object.sopInstanceUID + ".dcm"
        let partial = folder + "/" + study.studyInstanceUID + "/." + object.sopInstanceUID + ".part"
        do {
            try FileSystem.makeFolder(folder + "/" + study.studyInstanceUID)
        } catch {
            return .notBuilt(reason: "the results folder cannot be written: \(error); check [storage] results")
        }
        do {
            switch object.kind {
            case .structuredReport:
                guard let verdict = study.verdict, let probability = study.probability, let threshold = study.threshold else {
                    return .notBuilt(reason: "the study has no verdict to report (state \(study.state.rawValue))")
                }
                let reported = images.filter { $0.eligible && $0.sopClassUID != nil }.compactMap { i in
                    i.sopClassUID.map { ReportedImage(sopClassUID: $0, sopInstanceUID: i.sopInstanceUID, seriesInstanceUID: i.seriesInstanceUID,
                                                      probability: i.probability, problem: i.probability == nil ? (i.eligibilityReason ?? "not classified") : nil) }
                }
                let review = object.review.map {
                    ReportedReview(reviewer: $0.reviewer, statedReviewer: $0.statedReviewer, action: $0.action, label: $0.label,
                                   reviewedAt: $0.reviewedAt, note: $0.note)
                }
                var report = TriageReport(placement: placement, verdict: verdict, probability: probability, threshold: threshold,
                                          modelID: study.modelID ?? "unknown", modelFingerprint: study.modelHash ?? "unknown",
                                          triagedAt: study.triagedAt ?? object.queuedAt, images: reported, review: review,
                                          predecessor: object.replaces)
                report.operatingPoint = study.operatingPoint
                try components.writer.writeReport(report, to: partial)
            case .secondaryCapture:
                guard let source, let sopClass = source.sopClassUID else {
                    return .notBuilt(reason: "its source image \(object.sourceSOPInstanceUID ?? "?") is not a DICOM image of the study")
                }
                guard let pictures = components.pictures else {
                    return .notBuilt(reason: "this daemon has no picture maker, so it makes no Secondary Capture")
                }
                let picture: RGBPicture
                do { picture = try pictures.picture(of: source, in: study) } catch {
                    return .notBuilt(reason: "the picture of image \(source.sopInstanceUID) could not be made: \(error)")
                }
                let capture = TriageCapture(placement: placement, seriesDescription: Self.captureSeriesDescription, picture: picture,
                                            source: ReportedImage(sopClassUID: sopClass, sopInstanceUID: source.sopInstanceUID,
                                                                  seriesInstanceUID: source.seriesInstanceUID, probability: source.probability))
                try components.writer.writeCapture(capture, to: partial)
            }
            try FileSystem.moveDurably(partial, to: target)
        } catch {
            unlink(partial)
            return .notBuilt(reason: "the DICOM file could not be written: \(error)")
        }
        return .built(path: target)
    }

    /// A DICOM file of the study that is still there: a source image, else an earlier result object.
    static func template(images: [StudyImage], earlier: [ResultObject], excluding sop: String) -> String? {
        for image in images where image.sopClassUID != nil && image.fileRemovedAt == nil && FileManager.default.fileExists(atPath: image.filePath) {
            return image.filePath
        }
        for object in earlier.reversed() where object.sopInstanceUID != sop && object.fileRemovedAt == nil {
            if let path = object.filePath, FileManager.default.fileExists(atPath: path) { return path }
        }
        return nil
    }

    /// With `after_triage = "delete"`: once none of the study's result objects waits for its files, the
    /// study's files still in the spool go, as they would have right after its triage.
    private func deleteSourcesIfDone(_ study: String) {
        do {
            guard try !worklist.resultObjects(ofStudy: study).contains(where: \.awaitsBuild) else { return }
            guard try worklist.study(studyInstanceUID: study).state == .triaged else { return }
            for image in try worklist.images(ofStudy: study) where image.isHeld(by: worklist.node) && image.filePath.hasPrefix(spoolFolder + "/") {
                unlink(image.filePath)
            }
        } catch {
            logger.warning("the study's files could not be deleted after its results were built: \(error)", metadata: ["study": "\(Study.shortID(for: study))"])
        }
    }
}
