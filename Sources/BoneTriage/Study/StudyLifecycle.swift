import Foundation

// One place for a study's life and rules. Stores (SQLite today, PostgreSQL later) persist what these
// types decide; the daemon and the CLI change a study only through a store, and so only through them.

/// Where a study is in its life:
///
///     receiving --quiet period--> pending --(triaging)--> triaged | not_applicable | failed
///         ^                                                   |
///         +---------------- a late instance arrives ----------+
///
/// "Triaging" is not kept as a state: it is a triage attempt, opened by `beginTriage` and closed by
/// `endTriage`; an attempt left open means the process died during it (see
/// `StudyLifecycle.maximumInterruptedAttempts`).
public enum StudyState: String, Codable, Sendable, CaseIterable {
    case receiving, pending, triaged
    case notApplicable = "not_applicable"
    case failed
}

/// The model's call on a study, or a radiologist's label.
public enum Finding: String, Codable, Sendable, CaseIterable {
    case abnormal, normal
}

/// A study's review: none yet, the model's verdict confirmed, or a radiologist's own label. A study
/// triaged again after its review keeps its review and is marked changed after review.
public enum ReviewState: String, Codable, Sendable, CaseIterable {
    case unreviewed, confirmed, overridden
}

public enum ReviewAction: String, Codable, Sendable {
    case confirm, override
}

/// The transitions a study may make.
public enum StudyLifecycle {
    /// Triages that may be cut short (kill -9, a crash in a decoder) before a study is set aside.
    public static let maximumInterruptedAttempts = 3

    /// Whether a study in state `from` may move to `to`:
    /// - to receiving from any state: an instance arrived (a late one reopens a finished study);
    /// - to pending only from receiving (or pending): its instances stopped coming and it waits for a worker;
    /// - to triaged, not applicable or failed from any state: what a triage found, or why the study was set aside.
    public static func allows(_ from: StudyState, _ to: StudyState) -> Bool {
        switch to {
        case .receiving, .triaged, .notApplicable, .failed: return true
        case .pending: return from == .receiving || from == .pending
        }
    }

    /// Why a study is set aside instead of being triaged again, when `attempts` triages (this one
    /// included) started without finishing; nil while it may still be tried.
    public static func setAsideReason(interruptedAttempts attempts: Int) -> String? {
        guard attempts > maximumInterruptedAttempts else { return nil }
        return "the daemon died \(attempts - 1) times while triaging this study (a file may crash the decoder); "
            + "its files stay in the spool for inspection (see the log for the last file read)"
    }
}

/// Where a study stands in the worklist's priority order (`StudyRules.tier`): lower comes first.
public enum WorklistTier: Int, Sendable, Comparable, CaseIterable {
    /// Triaged again after its review (any verdict): the radiologist must look again.
    case changedAfterReview = 0
    /// Abnormal and not yet reviewed.
    case flagged = 1
    case other = 2

    public static func < (a: WorklistTier, b: WorklistTier) -> Bool { a.rawValue < b.rawValue }
}

/// The study's rules, stated once. Stores persist what they decide (flagged, tier, rank within a day,
/// arrival day) with each study so that their indexes can serve the worklist's orders.
public enum StudyRules {
    /// A study's probability: the mean of its classified images' probabilities; nil when none was classified.
    public static func studyProbability(_ imageProbabilities: [Double]) -> Double? {
        imageProbabilities.isEmpty ? nil : imageProbabilities.reduce(0, +) / Double(imageProbabilities.count)
    }

    /// Abnormal at or above the threshold.
    public static func verdict(probability: Double, threshold: Double) -> Finding {
        probability >= threshold ? .abnormal : .normal
    }

    /// The worklist's order among flagged (and among other) studies: the probability in thousandths.
    public static func priority(probability: Double) -> Int { Int((probability * 1000).rounded()) }

    /// Abnormal and not yet reviewed (or triaged again since its review): what the worklist puts first.
    public static func isFlagged(verdict: Finding?, reviewState: ReviewState, changedAfterReview: Bool) -> Bool {
        verdict == .abnormal && (reviewState == .unreviewed || changedAfterReview)
    }

    /// The priority order's tiers: first the studies changed after review, then flagged studies, then the others.
    public static func tier(verdict: Finding?, reviewState: ReviewState, changedAfterReview: Bool) -> WorklistTier {
        if changedAfterReview { return .changedAfterReview }
        return isFlagged(verdict: verdict, reviewState: reviewState, changedAfterReview: false) ? .flagged : .other
    }

    /// The order within a tier and an arrival day, highest first: the priority (most probable first) in the
    /// first two tiers; 0 for the others, which are simply newest first.
    public static func rankWithinDay(tier: WorklistTier, priority: Int) -> Int { tier == .other ? 0 : priority }

    /// The local day a study arrived, as the number yyyymmdd (2026-11-30 is 20261130): in the priority
    /// order, a newer day comes first, so today's studies are never buried under older, more probable ones.
    public static func arrivalDay(_ date: Date, timeZone: TimeZone = .current) -> Int {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let c = calendar.dateComponents([.year, .month, .day], from: date)
        return (c.year ?? 0) * 10_000 + (c.month ?? 0) * 100 + (c.day ?? 0)
    }
}

extension Study {
    /// Abnormal and not yet reviewed (or triaged again since its review): `StudyRules.isFlagged`.
    public var isFlagged: Bool { StudyRules.isFlagged(verdict: verdict, reviewState: reviewState, changedAfterReview: changedAfterReview) }

    /// Its tier in the priority order: `StudyRules.tier`.
    public var tier: WorklistTier { StudyRules.tier(verdict: verdict, reviewState: reviewState, changedAfterReview: changedAfterReview) }

    /// Its place within its tier and arrival day: `StudyRules.rankWithinDay`.
    public var rankWithinDay: Int { StudyRules.rankWithinDay(tier: tier, priority: priority) }

    /// An instance arrived: its metadata fills what the study lacks (the first non-empty value wins,
    /// so a late instance never blanks a field; a note on text kept as received comes with the first
    /// instance whose text the study takes), and the study is receiving again.
    public mutating func take(_ a: InstanceArrival) {
        let takesText = (patientID == nil && a.patientID != nil) || (patientName == nil && a.patientName != nil)
            || (accessionNumber == nil && a.accessionNumber != nil) || (studyDescription == nil && a.studyDescription != nil)
        if takesText, characterSetNote == nil { characterSetNote = a.characterSetNote }
        patientID = patientID ?? a.patientID
        patientName = patientName ?? a.patientName
        accessionNumber = accessionNumber ?? a.accessionNumber
        studyDate = studyDate ?? a.studyDate
        modality = modality ?? a.modality
        bodyPart = bodyPart ?? a.bodyPart
        studyDescription = studyDescription ?? a.studyDescription
        callingAETitle = callingAETitle ?? a.callingAETitle
        peerAddress = peerAddress ?? a.peerAddress
        if a.receivedAt < firstReceivedAt {
            firstReceivedAt = a.receivedAt
            arrivalDay = StudyRules.arrivalDay(a.receivedAt)
        }
        lastReceivedAt = max(lastReceivedAt, a.receivedAt)
        imageCount += 1
        eligibleImageCount += a.eligible ? 1 : 0
        if state != .receiving { state = .receiving; stateReason = nil }
    }

    /// Moves to `state` (pending, not applicable, failed) with its reason, if `StudyLifecycle` allows it.
    public mutating func move(to newState: StudyState, reason: String?) throws {
        guard StudyLifecycle.allows(state, newState) else {
            throw WorklistError.transitionRefused(shortID: shortID, from: state, to: newState)
        }
        state = newState
        stateReason = reason
    }

    /// A triage result is recorded only for the images it read: refused when instances arrived since.
    public func checkCurrent(_ result: TriageResult) throws {
        if let count = result.imageCount, count != imageCount {
            throw WorklistError.triageSuperseded(shortID: shortID, classified: count, now: imageCount)
        }
    }

    /// A triage's outcome from the probabilities of its eligible images (as recorded on them): the
    /// study's probability, verdict and priority, or not applicable when none was classified. A study
    /// already reviewed keeps its review and is marked changed after review.
    public mutating func recordTriage(_ result: TriageResult, imageProbabilities: [Double]) {
        guard let mean = StudyRules.studyProbability(imageProbabilities) else {
            state = .notApplicable
            stateReason = "no eligible image was classified"
            return
        }
        probability = mean
        verdict = StudyRules.verdict(probability: mean, threshold: result.threshold)
        threshold = result.threshold
        operatingPoint = result.operatingPoint
        modelID = result.modelID
        modelHash = result.modelHash
        triagedAt = result.triagedAt
        state = .triaged
        stateReason = nil
        priority = StudyRules.priority(probability: mean)
        if reviewState != .unreviewed { changedAfterReview = true }
    }

    /// Whether the study has a review that still stands: reviewed, and not triaged again since.
    public var hasStandingReview: Bool { reviewState != .unreviewed && !changedAfterReview }

    /// A radiologist's review: confirming needs a verdict (one from an earlier triage may be confirmed
    /// while late images arrive; the next triage then marks the study changed after review), overriding
    /// needs a label. A study whose review still stands is not confirmed again, nor overridden to the
    /// label it has: `previous` (its last audit-trail entry) says who reviewed it, when, and how.
    /// Returns the audit-trail entry to append.
    public mutating func review(by reviewer: ReviewerIdentity, action: ReviewAction, label: Finding?, note: String?, at date: Date,
                                previous: Review?) throws -> Review {
        if hasStandingReview, let current = reviewLabel, action == .confirm || label == current {
            let earlier = previous ?? Review(studyInstanceUID: studyInstanceUID, reviewer: "(not in the audit trail)", reviewedAt: reviewedAt ?? date,
                                             action: reviewState == .confirmed ? .confirm : .override, fromVerdict: verdict, label: current, note: nil)
            throw WorklistError.alreadyReviewed(shortID: shortID, requested: action, previous: earlier)
        }
        let finalLabel: Finding
        switch action {
        case .confirm:
            guard let verdict else { throw WorklistError.nothingToConfirm(shortID: shortID, state: state) }
            finalLabel = verdict
        case .override:
            guard let label else { throw WorklistError.invalidHandle("override needs a label") }
            finalLabel = label
        }
        let entry = Review(studyInstanceUID: studyInstanceUID, reviewer: reviewer.login, reviewedAt: date, action: action,
                           fromVerdict: verdict, label: finalLabel, note: note, statedReviewer: reviewer.statedName)
        reviewState = action == .confirm ? .confirmed : .overridden
        reviewLabel = finalLabel
        reviewedAt = date
        changedAfterReview = false
        return entry
    }
}

extension StudyImage {
    /// What an arrival says of where the image is: series and instance numbers, view, laterality, file name.
    public mutating func take(details a: InstanceArrival) {
        seriesNumber = a.seriesNumber
        instanceNumber = a.instanceNumber
        viewPosition = a.viewPosition
        laterality = a.laterality
        fileName = a.fileName
        sopClassUID = a.sopClassUID
    }

    /// A triage's result for this image: a probability only when eligible, and why an eligible one
    /// could not be classified.
    public mutating func take(_ result: TriageResult) {
        probability = eligible ? result.imageProbabilities[sopInstanceUID] : nil
        if eligible { eligibilityReason = result.imageProblems[sopInstanceUID] }
    }
}
