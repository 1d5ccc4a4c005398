import Foundation

/// Confidence intervals of proportions and of the AUROC.
public enum Intervals {
    /// The 97.5th percentile of the standard normal distribution.
    public static let z95 = 1.959963984540054

    /// Wilson score interval (95%) of `successes` out of `trials`; (0, 1) when there is no trial.
    public static func wilson(successes: Int, trials: Int, z: Double = z95) -> ProportionInterval {
        guard trials > 0 else { return ProportionInterval(lower: 0, upper: 1) }
        let n = Double(trials), p = Double(successes) / n
        let denominator = 1 + z * z / n
        let centre = (p + z * z / (2 * n)) / denominator
        let half = z * (p * (1 - p) / n + z * z / (4 * n * n)).squareRoot() / denominator
        return ProportionInterval(lower: max(0, centre - half), upper: min(1, centre + half))
    }

    /// DeLong's variance of the AUROC (DeLong, DeLong & Clarke-Pearson 1988) and the 95% normal interval
    /// around it, clipped to [0, 1]. Ties count one half. Needs at least two studies of each class.
    public static func delong(scores: [Double], labels: [Int]) -> (auroc: Double, standardError: Double, interval: ProportionInterval)? {
        let positives = zip(scores, labels).filter { $0.1 == 1 }.map(\.0), negatives = zip(scores, labels).filter { $0.1 != 1 }.map(\.0)
        let m = positives.count, n = negatives.count
        guard m >= 2, n >= 2 else { return nil }
        func psi(_ x: Double, _ y: Double) -> Double { x > y ? 1 : (x == y ? 0.5 : 0) }
        var v10 = [Double](repeating: 0, count: m), v01 = [Double](repeating: 0, count: n)
        for i in 0..<m {
            for j in 0..<n {
                let s = psi(positives[i], negatives[j])
                v10[i] += s
                v01[j] += s
            }
        }
        for i in 0..<m { v10[i] /= Double(n) }
        for j in 0..<n { v01[j] /= Double(m) }
        let auroc = v10.reduce(0, +) / Double(m)
        let s10 = v10.reduce(0) { $0 + ($1 - auroc) * ($1 - auroc) } / Double(m - 1)
        let s01 = v01.reduce(0) { $0 + ($1 - auroc) * ($1 - auroc) } / Double(n - 1)
        let se = (s10 / Double(m) + s01 / Double(n)).squareRoot()
        return (auroc, se, ProportionInterval(lower: max(0, auroc - z95 * se), upper: min(1, auroc + z95 * se)))
    }
}

public enum PlattScaling {
    /// Fits calibrated = sigmoid(a * logit(p) + b) to the labels by maximum likelihood (Newton's method
    /// with step halving), on Platt's smoothed targets ((N+ + 1)/(N+ + 2) for abnormal, 1/(N- + 2) for
    /// normal; Platt 1999), which keep a and b finite when the classes separate. Nil without both classes.
    public static func fit(probabilities: [Double], labels: [Int], maxIterations: Int = 100) -> ProbabilityCalibration? {
        let positives = labels.filter { $0 == 1 }.count, negatives = labels.count - positives
        guard positives > 0, negatives > 0, probabilities.count == labels.count else { return nil }
        let x = probabilities.map(ProbabilityCalibration.logit)
        let hi = (Double(positives) + 1) / (Double(positives) + 2), lo = 1 / (Double(negatives) + 2)
        let t = labels.map { $0 == 1 ? hi : lo }
        func loss(_ a: Double, _ b: Double) -> Double {
            var total = 0.0
            for i in x.indices {
                let z = a * x[i] + b
                // -[t log s(z) + (1 - t) log(1 - s(z))] = log(1 + e^z) - t z, computed stably
                total += (z > 0 ? z + log1p(exp(-z)) : log1p(exp(z))) - t[i] * z
            }
            return total
        }
        var a = 0.0, b = log((Double(negatives) + 1) / (Double(positives) + 1)) * -1
        var current = loss(a, b)
        for _ in 0..<maxIterations {
            var ga = 0.0, gb = 0.0, haa = 1e-12, hab = 0.0, hbb = 1e-12
            for i in x.indices {
                let p = 1 / (1 + exp(-(a * x[i] + b)))
                let r = p - t[i], w = p * (1 - p)
                ga += r * x[i]; gb += r
                haa += w * x[i] * x[i]; hab += w * x[i]; hbb += w
            }
            let det = haa * hbb - hab * hab
            guard det > 0 else { break }
            let da = (hbb * ga - hab * gb) / det, db = (haa * gb - hab * ga) / det
            var step = 1.0
            var accepted = false
            while step > 1e-10 {
                let na = a - step * da, nb = b - step * db
                let l = loss(na, nb)
                if l <= current + 1e-12 {
                    a = na; b = nb; current = l; accepted = true
                    break
                }
                step /= 2
            }
            if !accepted || max(abs(step * da), abs(step * db)) < 1e-10 { break }
        }
        return ProbabilityCalibration(a: a, b: b, studies: labels.count)
    }
}

/// How well probabilities match outcomes.
public enum CalibrationMeasures {
    public struct Bin: Sendable, Equatable {
        public var lower: Double, upper: Double
        public var count: Int
        public var meanProbability: Double
        public var observedFraction: Double
    }

    /// `count` equal-width bins over [0, 1] (1.0 goes into the last); empty bins have count 0.
    public static func bins(probabilities: [Double], labels: [Int], count: Int = 10) -> [Bin] {
        var sums = [(p: Double, y: Double, n: Int)](repeating: (0, 0, 0), count: count)
        for (p, y) in zip(probabilities, labels) {
            let k = min(count - 1, max(0, Int(p * Double(count))))
            sums[k].p += p; sums[k].y += Double(y); sums[k].n += 1
        }
        return sums.enumerated().map { k, s in
            Bin(lower: Double(k) / Double(count), upper: Double(k + 1) / Double(count), count: s.n,
                meanProbability: s.n > 0 ? s.p / Double(s.n) : .nan, observedFraction: s.n > 0 ? s.y / Double(s.n) : .nan)
        }
    }

    /// Expected calibration error: the bins' |mean probability - observed fraction|, weighted by their share of the studies.
    public static func expected(probabilities: [Double], labels: [Int], bins count: Int = 10) -> Double {
        guard !probabilities.isEmpty else { return .nan }
        return bins(probabilities: probabilities, labels: labels, count: count).filter { $0.count > 0 }
            .reduce(0) { $0 + Double($1.count) / Double(probabilities.count) * abs($1.meanProbability - $1.observedFraction) }
    }

    /// Mean squared difference between probability and outcome (0 or 1).
    public static func brier(probabilities: [Double], labels: [Int]) -> Double {
        guard !probabilities.isEmpty else { return .nan }
        return zip(probabilities, labels).reduce(0) { $0 + ($1.0 - Double($1.1)) * ($1.0 - Double($1.1)) } / Double(probabilities.count)
    }
}

public enum ROCCurve {
    /// (false positive rate, true positive rate) for every distinct threshold, from (0, 0) to (1, 1).
    public static func points(scores: [Double], labels: [Int]) -> [(fpr: Double, tpr: Double)] {
        let positives = Double(labels.filter { $0 == 1 }.count), negatives = Double(labels.count) - positives
        guard positives > 0, negatives > 0 else { return [] }
        let order = scores.indices.sorted { scores[$0] > scores[$1] }
        var points: [(Double, Double)] = [(0, 0)]
        var tp = 0.0, fp = 0.0, i = 0
        while i < order.count {
            let s = scores[order[i]]
            while i < order.count && scores[order[i]] == s {
                if labels[order[i]] == 1 { tp += 1 } else { fp += 1 }
                i += 1
            }
            points.append((fp / negatives, tp / positives))
        }
        return points
    }
}
