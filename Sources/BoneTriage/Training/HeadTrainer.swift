import Foundation

/// Chooses the regularisation by cross-validation grouped by patient (a patient's images never sit on
/// both sides), optimising study AUROC, then fits the head on everything.
public struct HeadTrainer {
    public struct Result: Sendable {
        public var head: LogisticHead
        public var lambda: Double
        public var threshold: Double
        /// Cross-validated study figures at the chosen regularisation and threshold.
        public var studyFigures: ClassificationFigures
        public var imageFigures: ClassificationFigures
        /// Mean study AUROC over folds for each regularisation tried.
        public var search: [(lambda: Double, studyAUROC: Double)]
        /// Each study's cross-validated (out-of-fold) probability at the chosen regularisation.
        public var crossValidatedStudies: [ScoredStudy]
    }

    public var folds = 5
    public var lambdas: [Double] = [10, 100, 300, 1000, 3000, 10000, 30000, 100000, 300000]

    public init() {}

    /// Fold of a patient: a stable hash, so the split is the same on every machine and run.
    static func fold(_ patient: String, of folds: Int) -> Int {
        let digest = SHA256Digest.hex(Data(patient.utf8))
        return Int(UInt64(digest.prefix(8), radix: 16) ?? 0) % folds
    }

    /// The training problem of these rows: their features (and, with the flip in training, their mirror
    /// images' as more rows with the same labels).
    static func problem(rows: [Int], labels: [Int], features: [Float], mirrored: [Float]?, flip: FlipUse) throws -> KernelLogisticProblem {
        let d = features.count / max(1, labels.count)
        var x = [Float](), y = [Int]()
        for i in rows { x += features[(i * d)..<((i + 1) * d)]; y.append(labels[i]) }
        if flip == .trainingAndTestTime, let mirrored {
            for i in rows { x += mirrored[(i * d)..<((i + 1) * d)]; y.append(labels[i]) }
        }
        return try KernelLogisticProblem(x: x, y: y, dimensions: d)
    }

    /// Each image's out-of-fold probability at each regularisation (folds grouped by patient): the fold's
    /// head fitted on the other folds, the probability averaged with the mirror image's when `mirrored`
    /// is given and the flip is used.
    static func outOfFold(images: [LabelledImage], features: [Float], mirrored: [Float]?, flip: FlipUse, lambdas: [Double],
                          folds: Int) throws -> [[Double]] {
        try outOfFold(images: images, features: features, mirrored: mirrored, flip: flip, lambdas: lambdas, folds: folds,
                      scoring: [(features, mirrored)])[0]
    }

    /// The same, each fold's heads (fitted on `features`) also scoring other features of the same images:
    /// one result per entry of `scoring` (e.g. the same images through float32 and reduced-precision arithmetic).
    static func outOfFold(images: [LabelledImage], features: [Float], mirrored: [Float]?, flip: FlipUse, lambdas: [Double],
                          folds: Int, scoring: [(features: [Float], mirrored: [Float]?)]) throws -> [[[Double]]] {
        let labels = images.map(\.label)
        let foldOf = images.map { fold($0.patient, of: folds) }
        let mirrored = flip == .none ? nil : mirrored
        var oof = [[[Double]]](repeating: [[Double]](repeating: [Double](repeating: .nan, count: images.count), count: lambdas.count),
                               count: scoring.count)
        for k in 0..<folds {
            let trainIdx = images.indices.filter { foldOf[$0] != k }, testIdx = images.indices.filter { foldOf[$0] == k }
            guard !testIdx.isEmpty else { continue }
            let problem = try problem(rows: trainIdx, labels: labels, features: features, mirrored: mirrored, flip: flip)
            for (l, lambda) in lambdas.enumerated() {
                let fit = try problem.fit(lambda: lambda)
                for (s, test) in scoring.enumerated() {
                    let plain = fit.margins(test.features, rows: testIdx).map { 1 / (1 + exp(-$0)) }
                    let testMirrored = flip == .none ? nil : test.mirrored
                    let probabilities = testMirrored.map { zip(plain, fit.margins($0, rows: testIdx)).map { ($0 + 1 / (1 + exp(-$1))) / 2 } } ?? plain
                    for (i, p) in zip(testIdx, probabilities) { oof[s][l][i] = p }
                }
            }
        }
        return oof
    }

    /// `features` holds one row per image (any width: 2048 for mixed10, 6144 for mixed7 to mixed10).
    /// With `mirrored` (the rows of the mirrored images), `flip` says how they are used: as more training
    /// rows and at test time, or at test time only. Every fit is the kernel form of the L2 logistic
    /// regression (`KernelLogisticProblem`), whose Gram matrix serves every regularisation of a fold.
    public func train(images: [LabelledImage], features: [Float], mirrored: [Float]? = nil, flip: FlipUse = .none,
                      targetSensitivity: Double?, log: (String) -> Void = { _ in }) throws -> Result {
        guard !images.isEmpty, features.count % images.count == 0 else {
            throw TrainingError.noData("\(features.count) feature values for \(images.count) images")
        }
        let mirrored = flip == .none ? nil : mirrored
        if flip != .none && mirrored?.count != features.count {
            throw TrainingError.noData("the \(flip.rawValue) flip needs the mirrored images' features, one row per image")
        }
        let labels = images.map(\.label)
        let oof = try Self.outOfFold(images: images, features: features, mirrored: mirrored, flip: flip, lambdas: lambdas, folds: folds)
        var best: (lambda: Double, auroc: Double, oof: [Double])?
        var search: [(Double, Double)] = []
        for (l, lambda) in lambdas.enumerated() {
            let studies = StudyScores.aggregate(images, probabilities: oof[l])
            let auroc = Metrics.auroc(scores: studies.scores, labels: studies.labels)
            search.append((lambda, auroc))
            log(String(format: "  lambda %-6g  cross-validated study AUROC %.4f", lambda, auroc))
            if best == nil || auroc > (best?.auroc ?? 0) { best = (lambda, auroc, oof[l]) }
        }
        guard let best else { throw TrainingError.noData("no regularisation was tried") }
        let studies = StudyScores.aggregate(images, probabilities: best.oof)
        let threshold = targetSensitivity.map { Metrics.threshold(forSensitivity: $0, scores: studies.scores, labels: studies.labels) } ?? 0.5
        let head = try Self.problem(rows: Array(images.indices), labels: labels, features: features, mirrored: mirrored, flip: flip)
            .fit(lambda: best.lambda).head
        var imageCounts: [String: Int] = [:]
        for image in images { imageCounts[image.study, default: 0] += 1 }
        return Result(head: head, lambda: best.lambda, threshold: threshold,
                      studyFigures: Metrics.figures(scores: studies.scores, labels: studies.labels, threshold: threshold),
                      imageFigures: Metrics.figures(scores: best.oof, labels: labels, threshold: threshold),
                      search: search,
                      crossValidatedStudies: studies.studies.indices.map { k in
                          ScoredStudy(identifier: studies.studies[k], bodyPart: studies.parts[k], label: studies.labels[k],
                                      probability: studies.scores[k], images: imageCounts[studies.studies[k], default: 0])
                      })
    }
}

/// `evaluate`'s report: per body part and overall, images and studies, like the MURA paper.
public struct EvaluationReport: Sendable {
    public struct Part: Sendable {
        public var images: ClassificationFigures
        public var studies: ClassificationFigures
    }
    public var overall: Part
    public var perBodyPart: [String: Part]
    public var threshold: Double

    public init(images: [LabelledImage], probabilities: [Double], threshold: Double) {
        func part(_ selected: [Int]) -> Part {
            let imgs = selected.map { images[$0] }, probs = selected.map { probabilities[$0] }
            let s = StudyScores.aggregate(imgs, probabilities: probs)
            return Part(images: Metrics.figures(scores: probs, labels: imgs.map(\.label), threshold: threshold),
                        studies: Metrics.figures(scores: s.scores, labels: s.labels, threshold: threshold))
        }
        overall = part(Array(images.indices))
        var parts: [String: Part] = [:]
        for bodyPart in Set(images.map(\.bodyPart)) { parts[bodyPart] = part(images.indices.filter { images[$0].bodyPart == bodyPart }) }
        perBodyPart = parts
        self.threshold = threshold
    }

    static func object(_ p: Part, threshold: Double) -> [String: Any] {
        func num(_ v: Double) -> Any { v.isNaN ? NSNull() : (v * 10000).rounded() / 10000 }
        return [
            "images": p.images.count, "studies": p.studies.count, "image_accuracy": num(p.images.accuracy),
            "image_auroc": num(p.images.auroc), "study_accuracy": num(p.studies.accuracy), "study_auroc": num(p.studies.auroc),
            "study_kappa": num(p.studies.kappa), "sensitivity": num(p.studies.sensitivity), "specificity": num(p.studies.specificity),
            "threshold": threshold,
        ]
    }

    public var json: String { json(adding: [:]) }

    /// The JSON object with these keys added at the top level.
    public func json(adding extra: [String: Any]) -> String {
        var top = Self.object(overall, threshold: threshold)
        top.merge(extra) { _, new in new }
        top["per_body_part"] = perBodyPart.mapValues { Self.object($0, threshold: threshold) }
        let data = (try? JSONSerialization.data(withJSONObject: top, options: [.sortedKeys, .prettyPrinted])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    public var text: String {
        func cell(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
        func f(_ v: Double) -> String { v.isNaN ? "-" : String(format: "%.3f", v) }
        let header = ["images", "studies", "img acc", "img AUROC", "study acc", "st AUROC", "kappa", "sens", "spec"]
        var lines = ["body part".padding(toLength: 12, withPad: " ", startingAt: 0) + header.map { cell($0, 10) }.joined()]
        func row(_ name: String, _ p: Part) -> String {
            let values = [String(p.images.count), String(p.studies.count), f(p.images.accuracy), f(p.images.auroc), f(p.studies.accuracy),
                          f(p.studies.auroc), f(p.studies.kappa), f(p.studies.sensitivity), f(p.studies.specificity)]
            return name.padding(toLength: 12, withPad: " ", startingAt: 0) + values.map { cell($0, 10) }.joined()
        }
        for (name, p) in perBodyPart.sorted(by: { $0.key < $1.key }) { lines.append(row(name, p)) }
        lines.append(row("overall", overall))
        lines.append("threshold \(threshold); study probability = mean of its images' probabilities")
        return lines.joined(separator: "\n")
    }
}
