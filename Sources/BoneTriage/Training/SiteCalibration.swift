import Foundation

/// One labelled study scored through the daemon's path.
public struct ScoredStudy: Sendable, Equatable {
    /// The study folder, relative to the data folder (or to the labels CSV's folder).
    public var identifier: String
    public var bodyPart: String
    /// 1 = abnormal.
    public var label: Int
    /// The mean of its eligible images' probabilities (uncalibrated), as the daemon computes it.
    public var probability: Double
    public var images: Int

    public init(identifier: String, bodyPart: String, label: Int, probability: Double, images: Int) {
        self.identifier = identifier
        self.bodyPart = bodyPart
        self.label = label
        self.probability = probability
        self.images = images
    }
}

public enum SiteCalibrationError: Error, CustomStringConvertible, Equatable {
    case targetOutOfRange(Double)
    case tooFewStudies(abnormal: Int, normal: Int, minimum: Int)
    case intervalTooWide(lower: Double, upper: Double, abnormal: Int, maximumWidth: Double)
    case bodyPartsNotCovered(found: [String: Int], covered: [String])
    case doesNotRank(slope: Double)
    case unreadable(path: String, reason: String)
    case sameFile(String)

    public var description: String {
        switch self {
        case let .targetOutOfRange(s):
            return "the target sensitivity must be between 0 and 1 (exclusive), not \(s); for example --target-sensitivity 0.9"
        case let .tooFewStudies(abnormal, normal, minimum):
            return "too few studies to calibrate on: \(abnormal) abnormal and \(normal) normal; at least \(minimum) of each are needed "
                + "for the sensitivity's and specificity's confidence intervals to mean anything; add labelled studies (e.g. `bonetriage export --mura` of reviewed studies)"
        case let .intervalTooWide(lower, upper, abnormal, maximumWidth):
            return String(format: "the sensitivity reached is too uncertain: its 95%% confidence interval (Wilson) is %.3f-%.3f, wider than %.2f, on %d abnormal studies; ",
                          lower, upper, maximumWidth, abnormal)
                + "add abnormal studies, or choose a higher target sensitivity"
        case let .bodyPartsNotCovered(found, covered):
            let list = found.sorted { $0.key < $1.key }.map { "\($0.value) of \($0.key)" }.joined(separator: ", ")
            return "the data holds studies of body parts the model does not cover (\(list)); the model covers \(covered.joined(separator: ", ")): "
                + "calibrate only on studies of those (remove the others from the folder or the labels CSV)"
        case let .doesNotRank(slope):
            return String(format: "the model does not rank these studies (Platt slope %.3f <= 0: higher probabilities are not more often abnormal); ", slope)
                + "check the labels (1 = abnormal) and that the studies are of the model's body part; do not use this model at this site"
        case let .unreadable(path, reason):
            return "\(path): \(reason); fix or remove the file, or leave its study out of the labels"
        case let .sameFile(path):
            return "--out \(path) is the input model: write the calibrated model to a new file (the input is left unchanged)"
        }
    }
}

/// Labelled studies scored as the daemon scores them: each image through `StudyClassifier` (decoding,
/// eligibility, rendering, the engine and the head), the study's probability the mean of its eligible
/// images' probabilities; ineligible images are left out, a study with none is left out.
public enum LabelledStudyScoring {
    public struct Result: Sendable {
        public var studies: [ScoredStudy]
        /// The eligible images and their probabilities (for image-level figures).
        public var images: [LabelledImage]
        public var imageProbabilities: [Double]
        /// Studies left out: identifier and why.
        public var leftOut: [(study: String, reason: String)]
    }

    /// The study's identifier: its folder relative to `base` when inside it.
    public static func identifier(_ study: String, base: String?) -> String {
        guard let base, study.hasPrefix("/") else { return study }
        let prefix = URL(fileURLWithPath: base).standardizedFileURL.path + "/"
        let path = URL(fileURLWithPath: study).standardizedFileURL.path
        return path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
    }

    public static func score(_ images: [LabelledImage], model: TriageModel, identifierBase: String?, chunk: Int = 32,
                             progress: ((Int, Int) -> Void)? = nil) throws -> Result {
        // The model's own float32 probabilities, whatever $BONETRIAGE_PRECISION says: the threshold is the model's.
        let classifier = try StudyClassifier(model: model, precision: .float32)
        var probabilities = [Double?](repeating: nil, count: images.count)
        var start = 0
        while start < images.count {
            let end = min(images.count, start + chunk)
            let outcomes = classifier.outcomes(paths: images[start..<end].map(\.path))
            for (k, outcome) in outcomes.enumerated() {
                switch outcome {
                case let .probability(p): probabilities[start + k] = p
                case .notApplicable: break
                case let .unreadable(error):
                    throw SiteCalibrationError.unreadable(path: images[start + k].path, reason: "\(error)")
                }
            }
            start = end
            progress?(start, images.count)
        }
        var byStudy: [String: (sum: Double, count: Int, label: Int, part: String, all: Int)] = [:]
        var eligible: [LabelledImage] = [], eligibleProbabilities: [Double] = []
        for (image, p) in zip(images, probabilities) {
            var s = byStudy[image.study] ?? (0, 0, image.label, image.bodyPart, 0)
            s.all += 1
            if let p {
                s.sum += p; s.count += 1
                eligible.append(image); eligibleProbabilities.append(p)
            }
            byStudy[image.study] = s
        }
        var studies: [ScoredStudy] = [], leftOut: [(String, String)] = []
        for key in byStudy.keys.sorted() {
            guard let s = byStudy[key] else { continue }
            let id = identifier(key, base: identifierBase)
            guard s.count > 0 else { leftOut.append((id, "none of its \(s.all) images is an eligible radiograph")); continue }
            studies.append(ScoredStudy(identifier: id, bodyPart: s.part, label: s.label, probability: s.sum / Double(s.count), images: s.count))
        }
        return Result(studies: studies, images: eligible, imageProbabilities: eligibleProbabilities, leftOut: leftOut)
    }
}

/// Site calibration: the threshold reaching a target sensitivity on the site's studies, a Platt
/// calibration, and the operating point's figures with their confidence intervals.
public struct SiteCalibration: Sendable {
    /// At least this many abnormal and this many normal studies.
    public var minimumStudiesPerClass = 30
    /// The Wilson 95% interval of the sensitivity reached may be at most this wide.
    public var maximumSensitivityIntervalWidth = 0.30

    public init() {}

    /// Refuses studies of body parts `covered` does not list (case-insensitive; nothing is refused when
    /// the model lists none). A study with no recorded body part counts as "UNKNOWN".
    public static func checkBodyParts(_ studies: [(identifier: String, bodyPart: String)], covered: [String]) throws {
        guard !covered.isEmpty else { return }
        let known = Set(covered.map { $0.uppercased() })
        var outside: [String: Int] = [:]
        for s in studies where !known.contains(s.bodyPart.uppercased()) { outside[s.bodyPart.isEmpty ? "UNKNOWN" : s.bodyPart, default: 0] += 1 }
        guard outside.isEmpty else { throw SiteCalibrationError.bodyPartsNotCovered(found: outside, covered: covered) }
    }

    public static func checkTarget(_ s: Double) throws {
        guard s.isFinite, s > 0, s < 1 else { throw SiteCalibrationError.targetOutOfRange(s) }
    }

    /// The operating point for `targetSensitivity` on these studies: the largest threshold on the
    /// (uncalibrated) study probability whose sensitivity is at least the target, the sensitivity and
    /// specificity there with Wilson 95% intervals, and a Platt calibration of the study probabilities.
    public func calibrate(_ studies: [ScoredStudy], targetSensitivity: Double, data: String, setAt: String) throws -> OperatingPoint {
        try Self.checkTarget(targetSensitivity)
        let scores = studies.map(\.probability), labels = studies.map(\.label)
        let abnormal = labels.filter { $0 == 1 }.count, normal = labels.count - abnormal
        guard abnormal >= minimumStudiesPerClass, normal >= minimumStudiesPerClass else {
            throw SiteCalibrationError.tooFewStudies(abnormal: abnormal, normal: normal, minimum: minimumStudiesPerClass)
        }
        let threshold = Metrics.threshold(forSensitivity: targetSensitivity, scores: scores, labels: labels)
        let counts = ConfusionCounts(scores: scores, labels: labels, threshold: threshold)
        let interval = Intervals.wilson(successes: counts.truePositives, trials: counts.abnormal)
        guard interval.width <= maximumSensitivityIntervalWidth else {
            throw SiteCalibrationError.intervalTooWide(lower: interval.lower, upper: interval.upper, abnormal: abnormal,
                                                       maximumWidth: maximumSensitivityIntervalWidth)
        }
        guard let calibration = PlattScaling.fit(probabilities: scores, labels: labels), calibration.a > 0 else {
            throw SiteCalibrationError.doesNotRank(slope: PlattScaling.fit(probabilities: scores, labels: labels)?.a ?? 0)
        }
        return OperatingPoint.measured(source: .site, targetSensitivity: targetSensitivity, threshold: threshold, scores: scores, labels: labels,
                                       identifiers: studies.map(\.identifier), data: data, calibration: calibration, setAt: setAt)
    }

    /// A copy of `model` whose verdicts come from `point`: the head's threshold and target set from it,
    /// the backbone and the head's weights untouched.
    public static func applying(_ point: OperatingPoint, to model: TriageModel) throws -> TriageModel {
        var head = model.head
        head.description.threshold = point.threshold
        head.description.targetSensitivity = point.targetSensitivity
        head.description.operatingPoint = point
        return try TriageModel(backbone: model.backbone, head: head)
    }
}

/// `evaluate`'s study-level figures with their uncertainty and the calibration error.
public struct StudyEvaluation: Sendable {
    public var studies: Int
    public var abnormal: Int
    public var normal: Int
    public var auroc: Double
    /// DeLong's 95% interval; nil with fewer than two studies of a class.
    public var aurocInterval: ProportionInterval?
    /// On the uncalibrated study probability (the model file's threshold).
    public var threshold: Double
    public var sensitivity: Double
    public var sensitivityInterval: ProportionInterval
    public var specificity: Double
    public var specificityInterval: ProportionInterval
    /// Over the probabilities the model reports: calibrated when it has a calibration.
    public var expectedCalibrationError: Double
    public var brier: Double
    public var calibrated: Bool
    public var reliability: [CalibrationMeasures.Bin]
    public var roc: [(fpr: Double, tpr: Double)]

    public init(studies scored: [ScoredStudy], model: HeadDescription) {
        let scores = scored.map(\.probability), labels = scored.map(\.label)
        let calibration = model.operatingPoint?.calibration
        let reported = calibration.map { c in scores.map { c.calibrated($0) } } ?? scores
        let counts = ConfusionCounts(scores: scores, labels: labels, threshold: model.threshold)
        studies = scored.count
        abnormal = counts.abnormal
        normal = counts.normal
        let delong = Intervals.delong(scores: scores, labels: labels)
        auroc = delong?.auroc ?? Metrics.auroc(scores: scores, labels: labels)
        aurocInterval = delong?.interval
        threshold = model.threshold
        sensitivity = counts.sensitivity
        sensitivityInterval = Intervals.wilson(successes: counts.truePositives, trials: counts.abnormal)
        specificity = counts.specificity
        specificityInterval = Intervals.wilson(successes: counts.trueNegatives, trials: counts.normal)
        expectedCalibrationError = CalibrationMeasures.expected(probabilities: reported, labels: labels)
        brier = CalibrationMeasures.brier(probabilities: reported, labels: labels)
        calibrated = calibration != nil
        reliability = CalibrationMeasures.bins(probabilities: reported, labels: labels)
        roc = ROCCurve.points(scores: scores, labels: labels)
    }

    static func r(_ v: Double) -> Any { v.isFinite ? (v * 10000).rounded() / 10000 : NSNull() }
    static func pair(_ i: ProportionInterval?) -> Any { i.map { [r($0.lower), r($0.upper)] } ?? NSNull() }

    /// The keys `evaluate --json` adds under "study_evaluation".
    public var object: [String: Any] {
        [
            "studies": studies, "abnormal_studies": abnormal, "normal_studies": normal, "study_auroc": Self.r(auroc),
            "study_auroc_ci": Self.pair(aurocInterval), "auroc_ci_method": "delong-95", "threshold": threshold,
            "sensitivity": Self.r(sensitivity), "sensitivity_ci": Self.pair(sensitivityInterval),
            "specificity": Self.r(specificity), "specificity_ci": Self.pair(specificityInterval), "proportion_ci_method": "wilson-score-95",
            "ece_10_bins": Self.r(expectedCalibrationError), "brier": Self.r(brier),
            "probabilities": calibrated ? "calibrated (Platt)" : "uncalibrated",
        ]
    }

    public var text: String {
        func f(_ v: Double) -> String { v.isFinite ? String(format: "%.3f", v) : "-" }
        func ci(_ i: ProportionInterval?) -> String { i.map { "95% CI \(f($0.lower))-\(f($0.upper))" } ?? "no CI: fewer than 2 studies of a class" }
        return [
            "studies: \(studies) (\(abnormal) abnormal, \(normal) normal); eligible images only, study probability = mean of its images'",
            "study AUROC \(f(auroc)) (\(ci(aurocInterval)), DeLong)",
            "at threshold \(String(format: "%.4f", threshold)) (the model's, on the uncalibrated study probability): sensitivity \(f(sensitivity)) (\(ci(sensitivityInterval)), Wilson), specificity \(f(specificity)) (\(ci(specificityInterval)), Wilson)",
            "calibration (\(calibrated ? "calibrated probabilities, Platt" : "the model's own probabilities")): "
                + "expected calibration error \(f(expectedCalibrationError)) (10 equal-width bins), Brier score \(f(brier))",
        ].joined(separator: "\n")
    }
}
