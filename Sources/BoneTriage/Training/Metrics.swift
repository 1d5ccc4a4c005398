/// The figures the MURA paper reports, for one set of predictions.
public struct ClassificationFigures: Sendable, Equatable, Codable {
    public var count: Int
    public var accuracy: Double
    public var auroc: Double
    public var kappa: Double
    public var sensitivity: Double
    public var specificity: Double
}

public enum Metrics {
    /// Area under the ROC curve (Mann-Whitney U with average ranks, so ties count one half).
    public static func auroc(scores: [Double], labels: [Int]) -> Double {
        let positives = labels.filter { $0 == 1 }.count, negatives = labels.count - positives
        guard positives > 0, negatives > 0 else { return .nan }
        let order = scores.indices.sorted { scores[$0] < scores[$1] }
        var ranks = [Double](repeating: 0, count: scores.count)
        var i = 0
        while i < order.count {
            var j = i
            while j + 1 < order.count && scores[order[j + 1]] == scores[order[i]] { j += 1 }
            let average = Double(i + j) / 2 + 1
            for k in i...j { ranks[order[k]] = average }
            i = j + 1
        }
        let rankSum = zip(ranks, labels).filter { $0.1 == 1 }.map(\.0).reduce(0, +)
        return (rankSum - Double(positives * (positives + 1)) / 2) / Double(positives * negatives)
    }

    /// Accuracy, Cohen's kappa, sensitivity and specificity at `threshold` (score >= threshold is abnormal).
    public static func figures(scores: [Double], labels: [Int], threshold: Double) -> ClassificationFigures {
        var tp = 0, tn = 0, fp = 0, fn = 0
        for (s, l) in zip(scores, labels) {
            switch (s >= threshold, l == 1) {
            case (true, true): tp += 1
            case (false, false): tn += 1
            case (true, false): fp += 1
            case (false, true): fn += 1
            }
        }
        let n = Double(scores.count)
        let observed = Double(tp + tn) / n
        let expected = (Double(tp + fp) * Double(tp + fn) + Double(tn + fn) * Double(tn + fp)) / (n * n)
        return ClassificationFigures(
            count: scores.count, accuracy: observed, auroc: auroc(scores: scores, labels: labels),
            kappa: expected < 1 ? (observed - expected) / (1 - expected) : 0,
            sensitivity: tp + fn > 0 ? Double(tp) / Double(tp + fn) : .nan,
            specificity: tn + fp > 0 ? Double(tn) / Double(tn + fp) : .nan)
    }

    /// The highest threshold whose sensitivity reaches `target` on these scores.
    public static func threshold(forSensitivity target: Double, scores: [Double], labels: [Int]) -> Double {
        let positives = zip(scores, labels).filter { $0.1 == 1 }.map(\.0).sorted(by: >)
        guard !positives.isEmpty else { return 0.5 }
        let needed = Int((target * Double(positives.count)).rounded(.up))
        return positives[max(0, min(positives.count, needed) - 1)]
    }
}
