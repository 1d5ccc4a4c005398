import COpenBLAS
import Foundation

/// A linear classifier on pooled features: p = sigmoid(w . x + b).
public struct LogisticHead: Sendable, Equatable {
    public var weights: [Float]
    public var bias: Float

    public init(weights: [Float], bias: Float) {
        self.weights = weights
        self.bias = bias
    }

    public func probability(_ features: ArraySlice<Float>) -> Double {
        var z = Double(bias)
        for (w, x) in zip(weights, features) { z += Double(w) * Double(x) }
        return 1 / (1 + exp(-z))
    }

    /// The probability of each of `count` images from their pooled features (one image's `weights.count` values
    /// after another), averaged with its mirror image's when `mirrored` holds those (the test-time flip).
    public func probabilities(_ features: [Float], mirrored: [Float]?, count: Int) -> [Double] {
        let d = weights.count
        precondition(features.count >= count * d && (mirrored?.count ?? count * d) >= count * d, "fewer pooled features than \(count) images need")
        return (0..<count).map { i in
            let p = probability(features[(i * d)..<((i + 1) * d)])
            guard let mirrored else { return p }
            return (p + probability(mirrored[(i * d)..<((i + 1) * d)])) / 2
        }
    }
}

public enum TrainingError: Error, CustomStringConvertible, Equatable {
    case noData(String)
    case singleClass(String)
    case solverFailed(String)
    case badLayout(path: String, reason: String)

    public var description: String {
        switch self {
        case let .noData(why): return "nothing to train on: \(why)"
        case let .singleClass(why): return "both normal and abnormal examples are needed: \(why)"
        case let .solverFailed(why): return "the logistic regression did not converge: \(why)"
        case let .badLayout(path, reason): return "\(path): \(reason)"
        }
    }
}

/// L2-regularised logistic regression fitted by Newton's method (Cholesky solves in LAPACK), on
/// standardised features; the standardisation is folded into the returned weights.
public enum LogisticRegression {
    /// Checks the rows and labels, and gives each feature's mean and standard deviation (constant
    /// features keep 1), for z = (x - mean) / std.
    static func standardisation(x: [Float], y: [Int], dimensions d: Int) throws -> (mean: [Double], std: [Double]) {
        let n = y.count
        guard n > 0, d > 0, x.count == n * d else { throw TrainingError.noData("\(n) labels for \(x.count / max(d, 1)) feature rows") }
        guard Set(y).count == 2 else { throw TrainingError.singleClass("all \(n) examples have label \(y.first ?? 0)") }
        var mean = [Double](repeating: 0, count: d), std = [Double](repeating: 0, count: d)
        for i in 0..<n { for j in 0..<d { mean[j] += Double(x[i * d + j]) } }
        for j in 0..<d { mean[j] /= Double(n) }
        for i in 0..<n { for j in 0..<d { let v = Double(x[i * d + j]) - mean[j]; std[j] += v * v } }
        for j in 0..<d { std[j] = (std[j] / Double(n)).squareRoot(); if std[j] < 1e-12 { std[j] = 1 } }
        return (mean, std)
    }

    /// `x` is n x d row-major, `y` in {0, 1}. `lambda` penalises the squared norm of the standardised
    /// weights (the intercept is free).
    public static func fit(x: [Float], y: [Int], dimensions d: Int, lambda: Double, maxIterations: Int = 50) throws -> LogisticHead {
        let n = y.count
        let (mean, std) = try standardisation(x: x, y: y, dimensions: d)
        // Design matrix with a leading column of ones: n x (d + 1).
        let p = d + 1
        var a = [Double](repeating: 0, count: n * p)
        for i in 0..<n {
            a[i * p] = 1
            for j in 0..<d { a[i * p + 1 + j] = (Double(x[i * d + j]) - mean[j]) / std[j] }
        }
        var beta = [Double](repeating: 0, count: p)
        var weighted = [Double](repeating: 0, count: n * p)
        var hessian = [Double](repeating: 0, count: p * p)
        for _ in 0..<maxIterations {
            var gradient = [Double](repeating: 0, count: p)
            var margins = [Double](repeating: 0, count: n)
            cblas_dgemv(CblasRowMajor, CblasNoTrans, Int32(n), Int32(p), 1, a, Int32(p), beta, 1, 0, &margins, 1)
            for i in 0..<n {
                let prob = 1 / (1 + exp(-margins[i]))
                let w = max(prob * (1 - prob), 1e-10)
                let residual = prob - Double(y[i])
                let rowW = w.squareRoot()
                for j in 0..<p {
                    gradient[j] += residual * a[i * p + j]
                    weighted[i * p + j] = a[i * p + j] * rowW
                }
            }
            for j in 1..<p { gradient[j] += lambda * beta[j] }
            // H = A^T W A + lambda I (not on the intercept)
            cblas_dsyrk(CblasColMajor, CblasUpper, CblasNoTrans, Int32(p), Int32(n), 1, weighted, Int32(p), 0, &hessian, Int32(p))
            for j in 1..<p { hessian[j * p + j] += lambda }
            hessian[0] += 1e-9
            var step = gradient
            var info: Int32 = 0
            var np = Int32(p), one: Int32 = 1, lda = Int32(p)
            dposv_("U", &np, &one, &hessian, &lda, &step, &lda, &info)
            guard info == 0 else { throw TrainingError.solverFailed("the Hessian is not positive definite (LAPACK info \(info)); raise the regularisation") }
            var largest = 0.0
            for j in 0..<p { beta[j] -= step[j]; largest = max(largest, abs(step[j])) }
            if largest < 1e-8 { break }
        }
        // Fold the standardisation back: w_j = beta_j / std_j, b = beta_0 - sum beta_j mean_j / std_j.
        var bias = beta[0]
        var weights = [Float](repeating: 0, count: d)
        for j in 0..<d {
            weights[j] = Float(beta[j + 1] / std[j])
            bias -= beta[j + 1] * mean[j] / std[j]
        }
        return LogisticHead(weights: weights, bias: Float(bias))
    }
}
