import Foundation

/// What computing the convolutions in a reduced precision would cost in accuracy (issue 15), before any such
/// path ships: the same labelled images through the float32 engine and the reduced one, compared as the
/// daemon reads them (each image's probability with the model's own head, mirrored too when the model
/// says so) and as heads are chosen (patient-grouped cross-validated study AUROC, the same folds as
/// `HeadTrainer`, each fold's heads fitted on float32 features and scoring both).
public struct PrecisionStudy {
    /// The bar a reduced-precision path must clear to be worth offering (issue 15).
    public static let imageTolerance = 0.01
    public static let aurocTolerance = 0.002

    public struct Report: Sendable {
        public var arithmetic: ConvolutionArithmetic
        public var modelID: String
        public var images: Int
        public var studies: Int
        /// |p(reduced) - p(float32)| of each image, with the model's own head as the daemon reads images.
        public var imageDifferences: [Double]
        /// The same for each study's probability (the mean of its images').
        public var studyDifferences: [Double]
        /// Images and studies whose verdict at the model's threshold differs between the two.
        public var imageVerdictChanges: Int
        public var studyVerdictChanges: Int
        public var folds: Int
        /// The regularisation with the best cross-validated float32 study AUROC, and both AUROCs at it.
        public var lambda: Double
        public var float32AUROC: Double
        public var reducedAUROC: Double
        /// The largest |AUROC difference| over every regularisation tried.
        public var largestAUROCDifference: Double
        /// Wall time of each feature pass (plain and mirrored, decoding included); the emulation is no faster than float32.
        public var float32Seconds: Double
        public var reducedSeconds: Double

        public var maximumImageDifference: Double { imageDifferences.max() ?? 0 }
        public var meanImageDifference: Double { imageDifferences.isEmpty ? 0 : imageDifferences.reduce(0, +) / Double(imageDifferences.count) }
        public var imageDifference99: Double { Self.percentile(imageDifferences, 0.99) }
        public var imagesOverTolerance: Int { imageDifferences.filter { $0 > PrecisionStudy.imageTolerance }.count }
        public var maximumStudyDifference: Double { studyDifferences.max() ?? 0 }
        public var aurocDifference: Double { reducedAUROC - float32AUROC }
        /// Both bars of issue 15 met: every image within 0.01, the cross-validated study AUROC within 0.002.
        public var withinTolerance: Bool {
            maximumImageDifference <= PrecisionStudy.imageTolerance && abs(aurocDifference) <= PrecisionStudy.aurocTolerance
        }

        static func percentile(_ values: [Double], _ q: Double) -> Double {
            guard !values.isEmpty else { return 0 }
            let sorted = values.sorted()
            return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * q).rounded()))]
        }

        public var text: String {
            func f(_ v: Double, _ digits: Int = 4) -> String { String(format: "%.\(digits)f", v) }
            return """
            Reduced-precision study: \(arithmetic.name) against float32, model \(modelID)
              images:   \(images) in \(studies) studies
              image probability |difference| (the model's own head): max \(f(maximumImageDifference)), mean \(f(meanImageDifference)), 99th percentile \(f(imageDifference99)); \(imagesOverTolerance) over \(PrecisionStudy.imageTolerance)
              study probability |difference|: max \(f(maximumStudyDifference))
              verdicts changed at the model's threshold: \(imageVerdictChanges) image(s), \(studyVerdictChanges) study(ies)
              cross-validated study AUROC (\(folds) folds by patient, heads fitted on float32 features, lambda \(String(format: "%g", lambda))): float32 \(f(float32AUROC)), \(arithmetic.name) \(f(reducedAUROC)), difference \(String(format: "%+.4f", aurocDifference)) (largest over the regularisation path \(f(largestAUROCDifference)))
              bar (every image within \(PrecisionStudy.imageTolerance), AUROC within \(PrecisionStudy.aurocTolerance)): \(withinTolerance ? "met" : "missed")
              feature passes: float32 \(f(float32Seconds, 1)) s, \(arithmetic.name) \(f(reducedSeconds, 1)) s\(arithmetic.format == .bfloat16Emulated ? " (emulated with float32 kernels: not a speed figure)" : " (decoding included)")
            """
        }

        public var json: String {
            func r(_ v: Double) -> Double { (v * 1_000_000).rounded() / 1_000_000 }
            let object: [String: Any] = [
                "arithmetic": arithmetic.format.rawValue, "float32_blocks": arithmetic.float32Blocks, "model_id": modelID, "images": images, "studies": studies,
                "image_difference_max": r(maximumImageDifference), "image_difference_mean": r(meanImageDifference),
                "image_difference_p99": r(imageDifference99), "images_over_tolerance": imagesOverTolerance,
                "study_difference_max": r(maximumStudyDifference),
                "image_verdict_changes": imageVerdictChanges, "study_verdict_changes": studyVerdictChanges,
                "folds": folds, "lambda": lambda, "auroc_float32": r(float32AUROC), "auroc_reduced": r(reducedAUROC),
                "auroc_difference": r(aurocDifference), "auroc_difference_largest": r(largestAUROCDifference),
                "within_tolerance": withinTolerance, "seconds_float32": r(float32Seconds), "seconds_reduced": r(reducedSeconds),
            ]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
            return String(decoding: data, as: UTF8.self)
        }
    }

    public var folds = 5
    public var lambdas = HeadTrainer().lambdas

    public init() {}

    /// `progress` gets the arithmetic being run, files done and files in all.
    public func run(model: TriageModel, images: [LabelledImage], arithmetic: ConvolutionArithmetic = .bfloat16Emulated,
                    progress: @escaping (String, Int, Int) -> Void = { _, _, _ in }) throws -> Report {
        guard !images.isEmpty else { throw TrainingError.noData("no images to compare") }
        let reading = model.head.description.reading
        let head = model.head.head
        let paths = images.map(\.path)
        func pass(_ arithmetic: ConvolutionArithmetic) throws -> (plain: [Float], mirrored: [Float]?, seconds: Double) {
            let network = InceptionV3Network(weights: model.backbone, arithmetic: arithmetic)
            let start = Date()
            func extract(mirrored: Bool) throws -> [Float] {
                try FeatureExtractor(network: network, fingerprint: model.head.description.backboneSHA256, spec: model.spec, cacheRoot: nil,
                                     blocks: reading.blocks, mirrored: mirrored)
                    .features(of: paths) { progress(arithmetic.name + (mirrored ? ", mirrored" : ""), $0, $1) }
            }
            let plain = try extract(mirrored: false)
            let mirrored = reading.testTimeFlip ? try extract(mirrored: true) : nil
            return (plain, mirrored, Date().timeIntervalSince(start))
        }
        let reference = try pass(.float32), reduced = try pass(arithmetic)
        let d = head.weights.count
        guard reference.plain.count == images.count * d else {
            throw ModelFileError.notAModel(path: "<head>", reason: "the head has \(d) weights for \(reference.plain.count / images.count) pooled features")
        }
        // Each image's probability as the daemon gives it: mirrored too when the model says so.
        func probabilities(_ f: (plain: [Float], mirrored: [Float]?, seconds: Double)) -> [Double] {
            head.probabilities(f.plain, mirrored: f.mirrored, count: images.count)
        }
        let p32 = probabilities(reference), pReduced = probabilities(reduced)
        let s32 = StudyScores.aggregate(images, probabilities: p32), sReduced = StudyScores.aggregate(images, probabilities: pReduced)
        let threshold = model.head.description.threshold
        func changed(_ a: Double, _ b: Double) -> Bool {
            StudyRules.verdict(probability: a, threshold: threshold) != StudyRules.verdict(probability: b, threshold: threshold)
        }
        // A model file records the test-time flip only; the default head (and `train`'s flip) also trains on mirror images.
        let flip: FlipUse = reading.testTimeFlip ? .trainingAndTestTime : .none
        let oof = try HeadTrainer.outOfFold(images: images, features: reference.plain, mirrored: reference.mirrored, flip: flip,
                                            lambdas: lambdas, folds: folds,
                                            scoring: [(reference.plain, reference.mirrored), (reduced.plain, reduced.mirrored)])
        func auroc(_ probabilities: [Double]) -> Double {
            let s = StudyScores.aggregate(images, probabilities: probabilities)
            return Metrics.auroc(scores: s.scores, labels: s.labels)
        }
        let path = lambdas.indices.map { (float32: auroc(oof[0][$0]), reduced: auroc(oof[1][$0])) }
        guard let best = path.indices.filter({ !path[$0].float32.isNaN }).max(by: { path[$0].float32 < path[$1].float32 }) else {
            throw TrainingError.noData("no regularisation was tried")
        }
        return Report(arithmetic: arithmetic, modelID: model.head.description.modelID, images: images.count, studies: s32.studies.count,
                      imageDifferences: zip(p32, pReduced).map { abs($0 - $1) },
                      studyDifferences: zip(s32.scores, sReduced.scores).map { abs($0 - $1) },
                      imageVerdictChanges: zip(p32, pReduced).filter { changed($0, $1) }.count,
                      studyVerdictChanges: zip(s32.scores, sReduced.scores).filter { changed($0, $1) }.count,
                      folds: folds, lambda: lambdas[best], float32AUROC: path[best].float32, reducedAUROC: path[best].reduced,
                      largestAUROCDifference: path.map { abs($0.reduced - $0.float32) }.max() ?? 0,
                      float32Seconds: reference.seconds, reducedSeconds: reduced.seconds)
    }
}
