import Foundation

/// How a study's image probabilities become the study's.
public enum StudyCombination: String, Sendable, CaseIterable, Codable {
    /// The mean of the images' probabilities (what the daemon does).
    case meanProbability = "mean-probability"
    /// The sigmoid of the mean of the images' logits.
    case meanLogit = "mean-logit"
    /// Each image weighted by its own probability (sum p^2 / sum p): leans towards the most abnormal view.
    case probabilityWeighted = "probability-weighted"
    /// The largest image probability.
    case maximum

    public func combine(_ probabilities: [Double]) -> Double {
        guard !probabilities.isEmpty else { return .nan }
        switch self {
        case .meanProbability:
            return probabilities.reduce(0, +) / Double(probabilities.count)
        case .meanLogit:
            let logits = probabilities.map { p -> Double in let q = min(max(p, 1e-12), 1 - 1e-12); return log(q / (1 - q)) }
            return 1 / (1 + exp(-logits.reduce(0, +) / Double(logits.count)))
        case .probabilityWeighted:
            let total = probabilities.reduce(0, +)
            return total > 0 ? probabilities.reduce(0) { $0 + $1 * $1 } / total : 0
        case .maximum:
            return probabilities.max() ?? .nan
        }
    }
}

/// How the horizontal flip is used.
public enum FlipUse: String, Sendable, CaseIterable, Codable {
    case none
    /// Each image's probability is the mean of its own and its mirror image's.
    case testTime = "test-time"
    /// Mirror images are also training rows, and probabilities are averaged as for `testTime`.
    case trainingAndTestTime = "training-and-test-time"
}

/// Pooled features of one set of images, several blocks side by side, for each input variant.
public struct FeatureBank: Sendable {
    public struct Variant: Hashable, Sendable {
        public var filter: ResizeFilter
        public var mirrored: Bool
        public init(filter: ResizeFilter, mirrored: Bool) { self.filter = filter; self.mirrored = mirrored }
    }
    /// The blocks in each row, in order, with their channel counts.
    public let blocks: [(name: String, width: Int)]
    public let rows: Int
    public private(set) var features: [Variant: [Float]] = [:]

    public init(blocks: [(name: String, width: Int)], rows: Int) {
        self.blocks = blocks
        self.rows = rows
    }

    public var width: Int { blocks.reduce(0) { $0 + $1.width } }

    public mutating func add(_ variant: Variant, features values: [Float]) throws {
        guard values.count == rows * width else {
            throw TrainingError.noData("\(values.count) feature values for \(rows) rows of \(width)")
        }
        features[variant] = values
    }

    /// The columns of the named blocks, row-major (rows x their widths).
    public func columns(_ variant: Variant, blocks selected: [String]) throws -> (values: [Float], width: Int) {
        guard let all = features[variant] else {
            throw TrainingError.noData("no features for the \(variant.filter.rawValue) filter\(variant.mirrored ? ", mirrored" : "")")
        }
        var offsets: [String: Range<Int>] = [:], offset = 0
        for block in blocks { offsets[block.name] = offset..<(offset + block.width); offset += block.width }
        let ranges = try selected.map { name -> Range<Int> in
            guard let range = offsets[name] else {
                throw TrainingError.noData("no block \(name) among \(blocks.map(\.name).joined(separator: ", "))")
            }
            return range
        }
        let d = ranges.reduce(0) { $0 + $1.count }, total = width
        if ranges.count == 1, let only = ranges.first, only == 0..<total { return (all, total) }
        var out = [Float]()
        out.reserveCapacity(rows * d)
        for i in 0..<rows { for r in ranges { out += all[(i * total + r.lowerBound)..<(i * total + r.upperBound)] } }
        return (out, d)
    }
}

extension FeatureBank {
    /// The variants these designs need.
    public static func variants(for configurations: [HeadConfiguration]) -> [Variant] {
        var out: [Variant] = []
        for c in configurations {
            for v in [Variant(filter: c.filter, mirrored: false)] + (c.flip == .none ? [] : [Variant(filter: c.filter, mirrored: true)])
            where !out.contains(v) { out.append(v) }
        }
        return out
    }

    /// Extracts (or reads from the feature cache) the pooled outputs of `blocks` for every variant.
    /// `progress` gets the variant's name and (done, total).
    public static func extract(paths: [String], network: InceptionV3Network, fingerprint: String, size: Int,
                               range: ClosedRange<Float>, variants: [Variant], blocks: [String], cacheRoot: String?,
                               progress: ((String, Int, Int) -> Void)? = nil) throws -> FeatureBank {
        let widths = Dictionary(network.architecture.blocks.map { ($0.name, $0.outputChannels) }, uniquingKeysWith: { a, _ in a })
        var bank = FeatureBank(blocks: blocks.map { ($0, widths[$0] ?? 0) }, rows: paths.count)
        for variant in variants {
            let extractor = try FeatureExtractor(network: network, fingerprint: fingerprint,
                                                 spec: ModelInputSpec(size: size, range: range, filter: variant.filter),
                                                 cacheRoot: cacheRoot, blocks: blocks, mirrored: variant.mirrored)
            let name = variant.filter.rawValue + (variant.mirrored ? ", mirrored" : "")
            try bank.add(variant, features: extractor.features(of: paths) { progress?(name, $0, $1) })
        }
        return bank
    }
}

/// One head design to compare.
public struct HeadConfiguration: Sendable, Hashable {
    public var name: String
    public var filter: ResizeFilter
    public var blocks: [String]
    public var flip: FlipUse
    public var combination: StudyCombination
    /// The design its gain is measured against (by name); nil: the first design of the study.
    public var reference: String?

    public init(name: String, filter: ResizeFilter = .area, blocks: [String] = ["mixed10"], flip: FlipUse = .none,
                combination: StudyCombination = .meanProbability, reference: String? = nil) {
        self.name = name
        self.reference = reference
        self.filter = filter
        self.blocks = blocks
        self.flip = flip
        self.combination = combination
    }

    /// The committed head's design, and the other designs the issue asks about, each changed one at a
    /// time from it.
    public static let standardSet: [HeadConfiguration] = [
        HeadConfiguration(name: "baseline: mixed10, area, no flip, mean of probabilities"),
        HeadConfiguration(name: "flip averaged at test time", flip: .testTime),
        HeadConfiguration(name: "flip in training and at test time", flip: .trainingAndTestTime),
        HeadConfiguration(name: "mixed9 + mixed10", blocks: ["mixed9", "mixed10"]),
        HeadConfiguration(name: "mixed8 to mixed10", blocks: ["mixed8", "mixed9", "mixed10"]),
        HeadConfiguration(name: "mixed7 to mixed10", blocks: mixed7to10),
        HeadConfiguration(name: "mixed7 alone", blocks: ["mixed7"]),
        HeadConfiguration(name: "study = mean of logits", combination: .meanLogit),
        HeadConfiguration(name: "study = probability-weighted mean", combination: .probabilityWeighted),
        HeadConfiguration(name: "study = maximum", combination: .maximum),
        HeadConfiguration(name: "nearest-neighbour resize", filter: .nearest),
        // The flip on top of the best blocks: does it still add?
        HeadConfiguration(name: "mixed7 to mixed10, flip at test time", blocks: mixed7to10, flip: .testTime, reference: "mixed7 to mixed10"),
        HeadConfiguration(name: "mixed7 to mixed10, flip in training and at test time", blocks: mixed7to10, flip: .trainingAndTestTime,
                          reference: "mixed7 to mixed10"),
    ]

    static let mixed7to10 = ["mixed7", "mixed8", "mixed9", "mixed10"]
}

/// One configuration's cross-validated result.
public struct HeadStudyRow: Sendable {
    public var configuration: HeadConfiguration
    /// Pooled out-of-fold study AUROC at each regularisation.
    public var path: [(lambda: Double, auroc: Double)]
    public var lambda: Double
    /// Study AUROC of all out-of-fold study probabilities together, at `lambda`.
    public var pooledAUROC: Double
    /// Study AUROC within each fold, at `lambda`.
    public var foldAUROCs: [Double]
    /// Paired with the reference design (the baseline unless the design names another), fold by fold
    /// (nil for the baseline itself).
    public var difference: (mean: Double, standardError: Double)?
    /// The design the difference is measured against.
    public var reference: String?

    public var meanAUROC: Double { foldAUROCs.reduce(0, +) / Double(max(1, foldAUROCs.count)) }
    public var standardError: Double { HeadStudy.standardError(foldAUROCs) }

    /// The rule for keeping a change: the paired gain over the baseline is at least twice its standard
    /// error across folds, and at least 0.005 of AUROC.
    public var clearlyHelps: Bool {
        guard let difference else { return false }
        return difference.mean >= 0.005 && difference.mean >= 2 * difference.standardError
    }
}

/// Patient-grouped cross-validation of head designs on one feature bank (the same folds as `HeadTrainer`),
/// each design with its own regularisation path.
public struct HeadStudy {
    public var folds = 5
    public var lambdas: [Double] = [30, 100, 300, 1000, 3000, 10000, 30000, 100000, 300000, 1_000_000]

    public init() {}

    static func standardError(_ values: [Double]) -> Double {
        guard values.count > 1 else { return .nan }
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count - 1)
        return (variance / Double(values.count)).squareRoot()
    }

    /// Study probabilities of the images' probabilities, combined per study; studies in sorted order.
    static func studies(_ images: [LabelledImage], _ probabilities: [Double], _ combination: StudyCombination,
                        only: Set<Int>? = nil) -> (scores: [Double], labels: [Int]) {
        var grouped: [String: (probabilities: [Double], label: Int)] = [:]
        for (i, image) in images.enumerated() where only?.contains(i) ?? true {
            grouped[image.study, default: ([], image.label)].probabilities.append(probabilities[i])
        }
        let keys = grouped.keys.sorted()
        return (keys.map { combination.combine(grouped[$0]?.probabilities ?? []) }, keys.map { grouped[$0]?.label ?? 0 })
    }

    public func run(images: [LabelledImage], bank: FeatureBank, configurations: [HeadConfiguration],
                    log: (String) -> Void = { _ in }) throws -> [HeadStudyRow] {
        guard images.count == bank.rows else { throw TrainingError.noData("\(images.count) images for \(bank.rows) feature rows") }
        let foldOf = images.map { HeadTrainer.fold($0.patient, of: folds) }
        var rows: [HeadStudyRow] = []
        for configuration in configurations {
            let start = Date()
            let plain = try bank.columns(.init(filter: configuration.filter, mirrored: false), blocks: configuration.blocks)
            let mirrored = configuration.flip == .none ? nil
                : try bank.columns(.init(filter: configuration.filter, mirrored: true), blocks: configuration.blocks).values
            let oof = try HeadTrainer.outOfFold(images: images, features: plain.values, mirrored: mirrored, flip: configuration.flip,
                                                lambdas: lambdas, folds: folds)
            var path: [(Double, Double)] = []
            var best: (index: Int, auroc: Double)?
            for (l, lambda) in lambdas.enumerated() {
                let s = Self.studies(images, oof[l], configuration.combination)
                let auroc = Metrics.auroc(scores: s.scores, labels: s.labels)
                path.append((lambda, auroc))
                if best == nil || auroc > (best?.auroc ?? 0) { best = (l, auroc) }
            }
            guard let best else { throw TrainingError.noData("no regularisation was tried") }
            let foldAUROCs = (0..<folds).map { k -> Double in
                let s = Self.studies(images, oof[best.index], configuration.combination, only: Set(images.indices.filter { foldOf[$0] == k }))
                return Metrics.auroc(scores: s.scores, labels: s.labels)
            }
            var row = HeadStudyRow(configuration: configuration, path: path, lambda: lambdas[best.index], pooledAUROC: best.auroc,
                                   foldAUROCs: foldAUROCs, difference: nil, reference: nil)
            if let first = rows.first {
                let referenceName = configuration.reference ?? first.configuration.name
                guard let reference = rows.first(where: { $0.configuration.name == referenceName }) else {
                    throw TrainingError.noData("design '\(configuration.name)' is compared with '\(referenceName)', which comes later or not at all")
                }
                let differences = zip(foldAUROCs, reference.foldAUROCs).map { $0 - $1 }
                row.difference = (differences.reduce(0, +) / Double(differences.count), Self.standardError(differences))
                row.reference = configuration.reference
            }
            rows.append(row)
            log(String(format: "  %@: lambda %g, pooled study AUROC %.4f, per fold %.4f ± %.4f (%.0f s)", configuration.name,
                       row.lambda, row.pooledAUROC, row.meanAUROC, row.standardError, Date().timeIntervalSince(start)))
        }
        return rows
    }

    /// The results as Markdown: the comparison, then each design's regularisation path.
    public static func markdown(_ rows: [HeadStudyRow], images: Int, studies: Int, patients: Int, folds: Int) -> String {
        func f(_ v: Double) -> String { v.isNaN ? "-" : String(format: "%.3f", v) }
        func signed(_ v: Double) -> String { v.isNaN ? "-" : String(format: "%+.3f", v) }
        var lines = [
            "Cross-validated on \(images) images, \(studies) studies, \(patients) patients; \(folds) folds grouped by patient (the folds `bonetriage train` uses).",
            "Study AUROC: pooled over all out-of-fold studies, and the mean over folds with its standard error. Gain: paired with the",
            "baseline (or the design named) fold by fold, mean ± standard error. Kept only when the gain is at least 0.005 and at least",
            "twice its standard error.",
            "",
            "| design | lambda | pooled study AUROC | per-fold mean ± s.e. | gain | kept |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for row in rows {
            let gain = row.difference.map { "\(signed($0.mean)) ± \(f($0.standardError))" + (row.reference.map { " over \($0)" } ?? "") } ?? "(baseline)"
            let kept = row.difference == nil ? "" : (row.clearlyHelps ? "**yes**" : "no")
            lines.append("| \(row.configuration.name) | \(String(format: "%g", row.lambda)) | \(f(row.pooledAUROC)) | \(f(row.meanAUROC)) ± \(f(row.standardError)) | \(gain) | \(kept) |")
        }
        guard let first = rows.first else { return lines.joined(separator: "\n") }
        lines += ["", "Regularisation path (pooled study AUROC at each lambda):", "",
                  "| design | " + first.path.map { String(format: "%g", $0.lambda) }.joined(separator: " | ") + " |",
                  "| --- |" + String(repeating: " --- |", count: first.path.count)]
        for row in rows { lines.append("| \(row.configuration.name) | " + row.path.map { f($0.auroc) }.joined(separator: " | ") + " |") }
        return lines.joined(separator: "\n")
    }
}

/// The design `bonetriage train` uses unless told otherwise: what the head study kept (models/README.md).
/// Pooled mixed7 to mixed10 gained 0.034 ± 0.006 of cross-validated study AUROC over mixed10 alone, and
/// the flip in training and at test time another 0.014 ± 0.004 on top; the other choices did not help.
public enum HeadDesign {
    public static let blocks = ["mixed7", "mixed8", "mixed9", "mixed10"]
    public static let flip = FlipUse.trainingAndTestTime
}
