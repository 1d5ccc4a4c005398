import Foundation

/// Where a model's operating point came from.
public enum OperatingPointSource: String, Sendable, Codable, Equatable {
    /// Cross-validated on the training split when the head was trained (`bonetriage train`).
    case `default`
    /// Calibrated on a site's own labelled studies (`bonetriage model calibrate`).
    case site
}

/// A two-sided 95% confidence interval of a proportion.
public struct ProportionInterval: Sendable, Codable, Equatable {
    public var lower: Double
    public var upper: Double
    public init(lower: Double, upper: Double) {
        self.lower = lower
        self.upper = upper
    }
    public var width: Double { upper - lower }
}

/// Platt scaling of a study probability: calibrated = 1 / (1 + exp(-(a * logit(p) + b))), fitted on a
/// site's studies. `a` > 0, so it keeps the studies' order.
public struct ProbabilityCalibration: Sendable, Codable, Equatable {
    public var method: String
    public var a: Double
    public var b: Double
    /// How many studies it was fitted on.
    public var studies: Int

    public init(a: Double, b: Double, studies: Int) {
        method = "platt"
        self.a = a
        self.b = b
        self.studies = studies
    }

    /// Probabilities are held within [1e-9, 1 - 1e-9] before the logit, so 0 and 1 stay finite.
    public static func logit(_ p: Double) -> Double {
        let q = min(max(p, 1e-9), 1 - 1e-9)
        return log(q / (1 - q))
    }

    public func calibrated(_ p: Double) -> Double { 1 / (1 + exp(-(a * Self.logit(p) + b))) }
}

/// The operating point a model's verdicts come from, with the evidence for it.
///
/// `threshold` applies to the study probability the daemon computes (the mean of the study's eligible
/// images' probabilities, before any calibration): it is the model file's `threshold`, and the daemon,
/// the worklist and the results compare that probability with it. With a calibration, `calibrated_threshold`
/// is the same cut on the calibrated scale (calibration keeps the order, so the verdicts are the same):
/// `classify` and `evaluate` report calibrated probabilities against it.
public struct OperatingPoint: Sendable, Codable, Equatable {
    public var source: OperatingPointSource
    public var targetSensitivity: Double?
    public var threshold: Double
    public var calibratedThreshold: Double?
    public var abnormalStudies: Int
    public var normalStudies: Int
    /// "sha256:" and the SHA-256 over the sorted lines "study identifier<TAB>label<LF>".
    public var dataFingerprint: String
    /// What the studies were (a folder or a labels CSV).
    public var data: String
    public var sensitivity: Double
    public var sensitivityInterval: ProportionInterval
    public var specificity: Double
    public var specificityInterval: ProportionInterval
    /// How the intervals were computed: "wilson-score-95".
    public var intervalMethod: String
    public var calibration: ProbabilityCalibration?
    public var setAt: String

    enum CodingKeys: String, CodingKey {
        case source, threshold, data, sensitivity, specificity, calibration
        case targetSensitivity = "target_sensitivity", calibratedThreshold = "calibrated_threshold"
        case abnormalStudies = "abnormal_studies", normalStudies = "normal_studies", dataFingerprint = "data_fingerprint"
        case sensitivityInterval = "sensitivity_ci", specificityInterval = "specificity_ci", intervalMethod = "interval_method"
        case setAt = "set_at"
    }

    public init(source: OperatingPointSource, targetSensitivity: Double?, threshold: Double, abnormalStudies: Int, normalStudies: Int,
                dataFingerprint: String, data: String, sensitivity: Double, sensitivityInterval: ProportionInterval, specificity: Double,
                specificityInterval: ProportionInterval, calibration: ProbabilityCalibration?, setAt: String) {
        self.source = source
        self.targetSensitivity = targetSensitivity
        self.threshold = threshold
        self.calibratedThreshold = calibration?.calibrated(threshold)
        self.abnormalStudies = abnormalStudies
        self.normalStudies = normalStudies
        self.dataFingerprint = dataFingerprint
        self.data = data
        self.sensitivity = sensitivity
        self.sensitivityInterval = sensitivityInterval
        self.specificity = specificity
        self.specificityInterval = specificityInterval
        self.intervalMethod = "wilson-score-95"
        self.calibration = calibration
        self.setAt = setAt
    }

    /// The operating point measured on these studies at `threshold` (uncalibrated study probabilities).
    public static func measured(source: OperatingPointSource, targetSensitivity: Double?, threshold: Double, scores: [Double], labels: [Int],
                                identifiers: [String], data: String, calibration: ProbabilityCalibration?, setAt: String) -> OperatingPoint {
        let counts = ConfusionCounts(scores: scores, labels: labels, threshold: threshold)
        return OperatingPoint(
            source: source, targetSensitivity: targetSensitivity, threshold: threshold, abnormalStudies: counts.abnormal, normalStudies: counts.normal,
            dataFingerprint: StudyDataFingerprint.of(identifiers: identifiers, labels: labels), data: data,
            sensitivity: counts.sensitivity, sensitivityInterval: Intervals.wilson(successes: counts.truePositives, trials: counts.abnormal),
            specificity: counts.specificity, specificityInterval: Intervals.wilson(successes: counts.trueNegatives, trials: counts.normal),
            calibration: calibration, setAt: setAt)
    }

    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    static func parse(_ text: String) throws -> OperatingPoint { try JSONDecoder().decode(OperatingPoint.self, from: Data(text.utf8)) }

    /// Where a verdict's threshold came from, in one line, as the worklist keeps it with each triage and
    /// `show` and the triage report (SR) say it: the model's operating point, or that it has none.
    public static func verdictSource(_ h: HeadDescription) -> String {
        func f(_ v: Double) -> String { String(format: "%.2f", v) }
        guard let op = h.operatingPoint else {
            return "default threshold \(h.threshold)" + (h.targetSensitivity.map { " for sensitivity \(f($0)) in cross-validation" } ?? "")
                + " (no operating point recorded in the model; sites should calibrate)"
        }
        let target = op.targetSensitivity.map { "for sensitivity \(f($0))" } ?? "at threshold \(String(format: "%.4f", op.threshold))"
        let measured = "sensitivity \(f(op.sensitivity)) (95% CI \(f(op.sensitivityInterval.lower))-\(f(op.sensitivityInterval.upper))), "
            + "specificity \(f(op.specificity)) on \(op.abnormalStudies + op.normalStudies) studies"
        switch op.source {
        case .site: return "site-calibrated \(target): \(measured), set \(op.setAt.prefix(10))"
        case .default: return "default \(target), cross-validated on the training split: \(measured); sites should calibrate"
        }
    }

    /// `model show`'s lines for a head: its operating point, or that it has none recorded (the default's,
    /// as before operating points were recorded), and whether the site should calibrate.
    public static func describe(_ h: HeadDescription) -> [String] {
        func f(_ v: Double) -> String { String(format: "%.4f", v) }
        func ci(_ i: ProportionInterval) -> String { "95% CI \(f(i.lower))-\(f(i.upper))" }
        let advice = "sites should calibrate before use: bonetriage model calibrate --data DIR [--labels CSV] --target-sensitivity S --out MODEL"
        guard let op = h.operatingPoint else {
            return ["operating point: default (none recorded in this file: threshold \(h.threshold)"
                        + (h.targetSensitivity.map { " for study sensitivity \($0) in cross-validation" } ?? "") + ", set when the head was trained)",
                    "                 \(advice)"]
        }
        var lines: [String] = []
        switch op.source {
        case .default: lines.append("operating point: default (cross-validated on the training split)")
        case .site: lines.append("operating point: site (calibrated on the site's own studies)")
        }
        lines.append("  target sensitivity: " + (op.targetSensitivity.map { String($0) } ?? "none (threshold 0.5)"))
        lines.append("  threshold:          \(f(op.threshold)) on the study probability (mean of its eligible images' probabilities, uncalibrated)")
        if let c = op.calibratedThreshold { lines.append("                      \(f(c)) on the calibrated study probability (the same cut)") }
        lines.append("  studies:            \(op.abnormalStudies + op.normalStudies) (\(op.abnormalStudies) abnormal, \(op.normalStudies) normal): \(op.data)")
        lines.append("  data fingerprint:   \(op.dataFingerprint)")
        lines.append("  sensitivity:        \(f(op.sensitivity)) (\(ci(op.sensitivityInterval)), Wilson score)")
        lines.append("  specificity:        \(f(op.specificity)) (\(ci(op.specificityInterval)), Wilson score)")
        if let cal = op.calibration {
            lines.append("  calibration:        Platt scaling a \(f(cal.a)), b \(f(cal.b)) on study logits, fitted on \(cal.studies) studies")
        } else {
            lines.append("  calibration:        none (probabilities are the model's own)")
        }
        lines.append("  set at:             \(op.setAt)")
        if op.source == .default { lines.append("  \(advice)") }
        return lines
    }
}

/// True/false positives and negatives at a threshold (score >= threshold is abnormal).
public struct ConfusionCounts: Sendable, Equatable {
    public var truePositives = 0, falseNegatives = 0, trueNegatives = 0, falsePositives = 0

    public init(scores: [Double], labels: [Int], threshold: Double) {
        for (s, l) in zip(scores, labels) {
            switch (s >= threshold, l == 1) {
            case (true, true): truePositives += 1
            case (false, true): falseNegatives += 1
            case (false, false): trueNegatives += 1
            case (true, false): falsePositives += 1
            }
        }
    }
    public var abnormal: Int { truePositives + falseNegatives }
    public var normal: Int { trueNegatives + falsePositives }
    public var sensitivity: Double { abnormal > 0 ? Double(truePositives) / Double(abnormal) : .nan }
    public var specificity: Double { normal > 0 ? Double(trueNegatives) / Double(normal) : .nan }
}

/// The identity of a set of labelled studies: "sha256:" and the SHA-256 over the sorted lines
/// "identifier<TAB>label<LF>" (the same whatever order the studies were read in).
public enum StudyDataFingerprint {
    public static func of(identifiers: [String], labels: [Int]) -> String {
        let lines = zip(identifiers, labels).map { "\($0.0)\t\($0.1)\n" }.sorted()
        return "sha256:" + SHA256Digest.hex(Data(lines.joined().utf8))
    }
}
