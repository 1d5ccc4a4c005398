import BoneTriage
import Foundation
import Testing

@Suite("site calibration: threshold, Platt, intervals, fingerprint, refusals")
struct SiteCalibrationTests {
    @Test("the threshold is the largest one whose sensitivity reaches the target")
    func thresholdChoice() {
        let scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.65, 0.3, 0.2], labels = [1, 1, 1, 1, 1, 0, 0, 0]
        #expect(Metrics.threshold(forSensitivity: 0.8, scores: scores, labels: labels) == 0.6)
        #expect(Metrics.threshold(forSensitivity: 0.81, scores: scores, labels: labels) == 0.5)
        #expect(Metrics.threshold(forSensitivity: 0.2, scores: scores, labels: labels) == 0.9)
        let counts = ConfusionCounts(scores: scores, labels: labels, threshold: 0.6)
        #expect(counts.truePositives == 4 && counts.falseNegatives == 1 && counts.falsePositives == 1 && counts.trueNegatives == 2)
    }

    @Test("Wilson score intervals match published values")
    func wilson() {
        func close(_ i: ProportionInterval, _ lo: Double, _ hi: Double) -> Bool { abs(i.lower - lo) < 1e-4 && abs(i.upper - hi) < 1e-4 }
        #expect(close(Intervals.wilson(successes: 8, trials: 10), 0.4902, 0.9433))
        #expect(close(Intervals.wilson(successes: 0, trials: 10), 0, 0.2775))
        #expect(close(Intervals.wilson(successes: 27, trials: 30), 0.7438, 0.9654))
        #expect(close(Intervals.wilson(successes: 10, trials: 10), 0.7225, 1))
    }

    @Test("DeLong's AUROC interval, with a tie")
    func delong() throws {
        let pos = [0.9, 0.8, 0.55, 0.4], neg = [0.7, 0.5, 0.3, 0.2, 0.1, 0.4]
        let d = try #require(Intervals.delong(scores: pos + neg, labels: pos.map { _ in 1 } + neg.map { _ in 0 }))
        #expect(abs(d.auroc - 0.8541667) < 1e-6)
        #expect(abs(d.standardError - 0.1279739) < 1e-6)
        #expect(abs(d.interval.lower - 0.6033425) < 1e-6 && d.interval.upper == 1)
        #expect(abs(d.auroc - Metrics.auroc(scores: pos + neg, labels: pos.map { _ in 1 } + neg.map { _ in 0 })) < 1e-12)
        #expect(Intervals.delong(scores: [0.2, 0.4, 0.5], labels: [1, 0, 0]) == nil)
    }

    @Test("Platt scaling: the maximum-likelihood a, b on smoothed targets")
    func platt() throws {
        let ps = [0.2, 0.3, 0.35, 0.5, 0.6, 0.45, 0.7, 0.8, 0.9, 0.65], ys = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
        let c = try #require(PlattScaling.fit(probabilities: ps, labels: ys))
        #expect(abs(c.a - 1.2797600) < 1e-5 && abs(c.b - -0.2747121) < 1e-5 && c.studies == 10)
        // The calibration keeps the order and maps 0.5 to sigmoid(b).
        #expect(c.calibrated(0.3) < c.calibrated(0.6))
        #expect(abs(c.calibrated(0.5) - 1 / (1 + exp(-c.b))) < 1e-12)
        #expect(PlattScaling.fit(probabilities: [0.2, 0.3], labels: [1, 1]) == nil)
    }

    @Test("expected calibration error over 10 bins and the Brier score")
    func calibrationError() {
        let ps = [0.05, 0.15, 0.12, 0.55, 0.95, 1.0, 0.45], ys = [0, 0, 1, 1, 1, 1, 0]
        #expect(abs(CalibrationMeasures.expected(probabilities: ps, labels: ys) - 0.2471429) < 1e-6)
        #expect(abs(CalibrationMeasures.brier(probabilities: ps, labels: ys) - 0.1724143) < 1e-6)
        let bins = CalibrationMeasures.bins(probabilities: ps, labels: ys)
        #expect(bins.count == 10 && bins[9].count == 2 && bins[1].count == 2 && bins[2].count == 0)
    }

    @Test("the data fingerprint: order-independent, changes with a label, a known value")
    func fingerprint() {
        let ids = ["XR_HUMERUS/patient2/study1_positive", "XR_HUMERUS/patient1/study1_negative"]
        let f = StudyDataFingerprint.of(identifiers: ids, labels: [1, 0])
        #expect(f == "sha256:d30cd72fb1f32ac6f94094abbf8979a9b5e3f998f4446bf85c437f5b42607ec2")
        #expect(StudyDataFingerprint.of(identifiers: ids.reversed(), labels: [0, 1]) == f)
        #expect(StudyDataFingerprint.of(identifiers: ids, labels: [1, 1]) != f)
    }

    /// `abnormal` abnormal studies scored 0.5...0.99 and `normal` normal ones 0.01...0.6 (overlapping).
    static func studies(abnormal: Int, normal: Int) -> [ScoredStudy] {
        (0..<abnormal).map { ScoredStudy(identifier: "a\($0)", bodyPart: "HUMERUS", label: 1, probability: 0.5 + 0.49 * Double($0) / Double(max(1, abnormal - 1)), images: 1) }
            + (0..<normal).map { ScoredStudy(identifier: "n\($0)", bodyPart: "HUMERUS", label: 0, probability: 0.01 + 0.59 * Double($0) / Double(max(1, normal - 1)), images: 1) }
    }

    @Test("calibrate: the operating point's threshold, counts, intervals, calibration")
    func calibrate() throws {
        let studies = Self.studies(abnormal: 40, normal: 40)
        let point = try SiteCalibration().calibrate(studies, targetSensitivity: 0.9, data: "test", setAt: "now")
        #expect(point.source == .site && point.targetSensitivity == 0.9)
        #expect(point.abnormalStudies == 40 && point.normalStudies == 40)
        // 36 of 40 abnormal studies reached: the 36th highest abnormal score.
        #expect(point.threshold == studies[4].probability && abs(point.sensitivity - 0.9) < 1e-12)
        let specificity = Double(studies.filter { $0.label == 0 && $0.probability < point.threshold }.count) / 40
        #expect(point.specificity == specificity)
        #expect(point.sensitivityInterval == Intervals.wilson(successes: 36, trials: 40))
        let calibration = try #require(point.calibration)
        #expect(calibration.a > 0 && calibration.studies == 80)
        #expect(point.calibratedThreshold == calibration.calibrated(point.threshold))
        #expect(point.dataFingerprint == StudyDataFingerprint.of(identifiers: studies.map(\.identifier), labels: studies.map(\.label)))
    }

    @Test("calibrate refuses too few studies of a class, a too wide interval, a target outside (0, 1), a model that does not rank, other body parts")
    func refusals() throws {
        let c = SiteCalibration()
        #expect(throws: SiteCalibrationError.tooFewStudies(abnormal: 40, normal: 29, minimum: 30)) {
            try c.calibrate(Self.studies(abnormal: 40, normal: 29), targetSensitivity: 0.9, data: "", setAt: "")
        }
        #expect(throws: SiteCalibrationError.tooFewStudies(abnormal: 12, normal: 60, minimum: 30)) {
            try c.calibrate(Self.studies(abnormal: 12, normal: 60), targetSensitivity: 0.9, data: "", setAt: "")
        }
        // 30 abnormal studies: at target 0.5 the sensitivity's interval is 0.33 wide (refused); at 0.9, 0.22 (accepted).
        do {
            _ = try c.calibrate(Self.studies(abnormal: 30, normal: 30), targetSensitivity: 0.5, data: "", setAt: "")
            Issue.record("a sensitivity interval 0.33 wide was accepted")
        } catch let SiteCalibrationError.intervalTooWide(lower, upper, abnormal, width) {
            #expect(abnormal == 30 && width == 0.30 && upper - lower > 0.30)
            #expect("\(SiteCalibrationError.intervalTooWide(lower: lower, upper: upper, abnormal: abnormal, maximumWidth: width))".contains("add abnormal studies"))
        }
        #expect(throws: Never.self) { try c.calibrate(Self.studies(abnormal: 30, normal: 30), targetSensitivity: 0.9, data: "", setAt: "") }
        for bad in [0.0, 1.0, -0.2, 1.5, Double.nan] {
            #expect(throws: SiteCalibrationError.self) { try c.calibrate(Self.studies(abnormal: 40, normal: 40), targetSensitivity: bad, data: "", setAt: "") }
        }
        // Labels swapped: abnormal studies score lower.
        let swapped = Self.studies(abnormal: 40, normal: 40).map { s -> ScoredStudy in var t = s; t.label = 1 - s.label; return t }
        let notRanking = #expect(throws: SiteCalibrationError.self) { try c.calibrate(swapped, targetSensitivity: 0.9, data: "", setAt: "") }
        if case .doesNotRank = notRanking {} else { Issue.record("expected doesNotRank, got \(String(describing: notRanking))") }
        #expect("\(String(describing: notRanking))".contains("check the labels"))
        #expect(throws: SiteCalibrationError.bodyPartsNotCovered(found: ["FOOT": 1], covered: ["HUMERUS"])) {
            try SiteCalibration.checkBodyParts([("a", "HUMERUS"), ("b", "FOOT"), ("c", "humerus")], covered: ["HUMERUS"])
        }
        #expect(throws: Never.self) { try SiteCalibration.checkBodyParts([("a", "HUMERUS")], covered: ["HUMERUS"]) }
    }

    @Test("an operating point survives the model file; old files read as the default's; show says to calibrate")
    func modelFile() throws {
        let dir = try TemporaryDirectory()
        try DaemonHarness.writeModel(to: dir.path("old.safetensors"), inputSize: 75)
        let old = try TriageModel.load(path: dir.path("old.safetensors"))
        #expect(old.head.description.operatingPoint == nil && old.head.description.threshold == 0.5)
        let oldText = OperatingPoint.describe(old.head.description).joined(separator: "\n")
        #expect(oldText.contains("operating point: default (none recorded") && oldText.contains("sites should calibrate before use"))

        let point = try SiteCalibration().calibrate(Self.studies(abnormal: 40, normal: 40), targetSensitivity: 0.9, data: "folder site", setAt: "2026-11-30")
        let calibrated = try SiteCalibration.applying(point, to: old)
        try calibrated.file.write(path: dir.path("site.safetensors"))
        let read = try TriageModel.load(path: dir.path("site.safetensors"))
        #expect(read.head.description.operatingPoint == point && read.head.description.threshold == point.threshold)
        #expect(read.head.head == old.head.head)
        let text = OperatingPoint.describe(read.head.description).joined(separator: "\n")
        #expect(text.contains("operating point: site") && text.contains("80 (40 abnormal, 40 normal): folder site"))
        #expect(text.contains("Wilson score") && text.contains("Platt scaling a ") && text.contains(point.dataFingerprint))
        #expect(!text.contains("sites should calibrate"))

        var defaultPoint = point
        defaultPoint.source = .default
        defaultPoint.calibration = nil
        #expect(OperatingPoint.describe(HeadDescription(
            modelID: "m", backboneVariant: .keras, backboneSHA256: "x", inputSize: 75, inputRange: -1...1, resizeFilter: .area, threshold: point.threshold,
            targetSensitivity: 0.9, bodyParts: [], trainingData: "", trainedAt: "", crossValidation: "{}", operatingPoint: defaultPoint))
            .joined(separator: "\n").contains("cross-validated on the training split"))

        // A damaged operating point is refused, with the reason.
        var file = try SafeTensorsFile.read(path: dir.path("site.safetensors"))
        file.metadata["operating_point"] = "{\"source\": \"site\"}"
        try file.write(path: dir.path("bad.safetensors"))
        #expect(throws: ModelFileError.self) { try TriageModel.load(path: dir.path("bad.safetensors")) }
    }

    @Test("the study evaluation: AUROC with DeLong's interval, Wilson intervals at the threshold, ECE on calibrated probabilities")
    func evaluation() throws {
        let studies = Self.studies(abnormal: 40, normal: 40)
        let dir = try TemporaryDirectory()
        try DaemonHarness.writeModel(to: dir.path("m.safetensors"), inputSize: 75)
        let model = try TriageModel.load(path: dir.path("m.safetensors"))
        let e = StudyEvaluation(studies: studies, model: model.head.description)
        let labels = studies.map(\.label), scores = studies.map(\.probability)
        #expect(abs(e.auroc - Metrics.auroc(scores: scores, labels: labels)) < 1e-12 && e.aurocInterval != nil)
        #expect(e.threshold == 0.5 && e.sensitivity == 1 && e.sensitivityInterval == Intervals.wilson(successes: 40, trials: 40))
        #expect(!e.calibrated && e.brier == CalibrationMeasures.brier(probabilities: scores, labels: labels))
        #expect(e.roc.first?.fpr == 0 && e.roc.last?.tpr == 1)

        let point = try SiteCalibration().calibrate(studies, targetSensitivity: 0.9, data: "", setAt: "")
        let site = try SiteCalibration.applying(point, to: model)
        let c = StudyEvaluation(studies: studies, model: site.head.description)
        let calibration = try #require(point.calibration)
        #expect(c.calibrated && c.threshold == point.threshold && abs(c.sensitivity - 0.9) < 1e-12)
        #expect(c.brier == CalibrationMeasures.brier(probabilities: scores.map { calibration.calibrated($0) }, labels: labels))
        #expect(c.brier < e.brier, "Platt scaling fitted on these studies lowers their Brier score")
    }
}
