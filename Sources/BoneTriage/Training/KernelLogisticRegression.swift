import COpenBLAS
import Foundation

/// L2-regularised logistic regression solved in the span of the training rows: the weights are
/// `A^T alpha` (A the standardised rows), so each Newton step solves an (n + 1) x (n + 1) system instead
/// of a (d + 1) x (d + 1) one. Its optimum is `LogisticRegression.fit`'s (same loss, same penalty on the
/// standardised weights, free intercept); it is the cheaper way when the features outnumber the images,
/// as the pooled outputs of several blocks (6,144 values) do. The Gram matrix is computed once and
/// serves every regularisation.
public struct KernelLogisticProblem {
    public let count: Int
    public let dimensions: Int
    let labels: [Int]
    let mean: [Double]
    let std: [Double]
    /// Standardised rows, n x d row-major.
    let rows: [Double]
    /// A A^T, n x n.
    let gram: [Double]

    /// A fitted head: weights on the standardised features (`A^T alpha`) and the intercept.
    public struct Fit: Sendable {
        public let standardisedWeights: [Double]
        public let bias: Double
        let mean: [Double]
        let std: [Double]

        /// Margins (logits) of the given rows of `x` (row-major, d columns, the original feature space).
        public func margins(_ x: [Float], rows selected: [Int]) -> [Double] {
            let d = mean.count
            var folded = [Double](repeating: 0, count: d), b = bias
            for j in 0..<d {
                folded[j] = standardisedWeights[j] / std[j]
                b -= standardisedWeights[j] * mean[j] / std[j]
            }
            return selected.map { i in
                var z = b
                for j in 0..<d { z += folded[j] * Double(x[i * d + j]) }
                return z
            }
        }

        /// The head on the original features (the standardisation folded in), as `LogisticRegression` returns it.
        public var head: LogisticHead {
            var b = bias
            var weights = [Float](repeating: 0, count: mean.count)
            for j in 0..<mean.count {
                weights[j] = Float(standardisedWeights[j] / std[j])
                b -= standardisedWeights[j] * mean[j] / std[j]
            }
            return LogisticHead(weights: weights, bias: Float(b))
        }
    }

    /// `x` is n x d row-major, `y` in {0, 1}.
    public init(x: [Float], y: [Int], dimensions d: Int) throws {
        let n = y.count
        let (mean, std) = try LogisticRegression.standardisation(x: x, y: y, dimensions: d)
        var rows = [Double](repeating: 0, count: n * d)
        for i in 0..<n { for j in 0..<d { rows[i * d + j] = (Double(x[i * d + j]) - mean[j]) / std[j] } }
        var gram = [Double](repeating: 0, count: n * n)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, Int32(n), Int32(d), 1, rows, Int32(d), 0, &gram, Int32(n))
        for i in 0..<n { for j in 0..<i { gram[i * n + j] = gram[j * n + i] } }
        count = n
        dimensions = d
        labels = y
        self.mean = mean
        self.std = std
        self.rows = rows
        self.gram = gram
    }

    /// Newton's method on (alpha, intercept): the primal Newton step restricted to the rows' span.
    public func fit(lambda: Double, maxIterations: Int = 50) throws -> Fit {
        guard lambda > 0 else { throw TrainingError.solverFailed("the kernel form needs a positive regularisation, not \(lambda)") }
        let n = count, m = n + 1
        var alpha = [Double](repeating: 0, count: n)
        var bias = 0.0
        var margins = [Double](repeating: 0, count: n)
        var system = [Double](repeating: 0, count: m * m)
        var pivots = [Int32](repeating: 0, count: m)
        for _ in 0..<maxIterations {
            var w = [Double](repeating: 0, count: n), rhs = [Double](repeating: 0, count: m)
            for i in 0..<n {
                let p = 1 / (1 + exp(-margins[i]))
                w[i] = max(p * (1 - p), 1e-10)
                let r = p - Double(labels[i])
                rhs[i] = r + lambda * alpha[i]
                rhs[n] += r
            }
            // Column-major for LAPACK: G[i, j] = w_i K_ij + lambda [i == j], G[i, n] = w_i,
            // G[n, j] = sum_i w_i K_ij, G[n, n] = sum_i w_i.
            var total = 0.0
            for j in 0..<n {
                var column = 0.0
                for i in 0..<n {
                    let v = w[i] * gram[i * n + j]
                    system[j * m + i] = v
                    column += v
                }
                system[j * m + j] += lambda
                system[j * m + n] = column
                system[n * m + j] = w[j]
                total += w[j]
            }
            system[n * m + n] = total
            var size = Int32(m), one: Int32 = 1, lda = Int32(m), info: Int32 = 0
            dgesv_(&size, &one, &system, &lda, &pivots, &rhs, &lda, &info)
            guard info == 0 else { throw TrainingError.solverFailed("the Newton system is singular (LAPACK info \(info)); raise the regularisation") }
            var delta = Array(rhs[0..<n])
            var change = [Double](repeating: 0, count: n)
            cblas_dsymv(CblasRowMajor, CblasUpper, Int32(n), 1, gram, Int32(n), delta, 1, 0, &change, 1)
            var largest = 0.0
            for i in 0..<n {
                alpha[i] -= delta[i]
                margins[i] -= change[i] + rhs[n]
                largest = max(largest, abs(change[i] + rhs[n]))
            }
            bias -= rhs[n]
            delta.removeAll()
            if largest < 1e-9 { break }
        }
        var weights = [Double](repeating: 0, count: dimensions)
        cblas_dgemv(CblasRowMajor, CblasTrans, Int32(n), Int32(dimensions), 1, rows, Int32(dimensions), alpha, 1, 0, &weights, 1)
        return Fit(standardisedWeights: weights, bias: bias, mean: mean, std: std)
    }
}
