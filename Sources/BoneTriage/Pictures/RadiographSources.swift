import Foundation
import Synchronization

/// Where a picture's radiograph comes from (`TriagePictures.radiograph`: the first frame, rendered as
/// people see it, at most `TriagePictures.sourceLongestSide` on its longest side).
public protocol RadiographSource: Sendable {
    func radiograph(path: String, maximumPixels: UInt64) throws -> Radiograph
}

/// Renders in this process: the CLI's pictures (`show --images`, `classify --pictures`).
public struct InProcessRadiographs: RadiographSource {
    public init() {}

    public func radiograph(path: String, maximumPixels: UInt64) throws -> Radiograph {
        try TriagePictures.radiograph(path: path, maximumPixels: maximumPixels)
    }
}

/// Renders in a decoder process of its own (`bonetriage decode-worker`): the daemon's Secondary
/// Captures. A file that crashes or hangs a decoder costs its picture (the object is recorded as not
/// buildable, with the reason), not the daemon. One picture at a time.
public final class IsolatedRadiographs: RadiographSource {
    private let decoder: Mutex<IsolatedDecoder>

    /// `executable`: the `bonetriage` binary (the daemon's own); `timeout`: `[triage] decode_timeout_seconds`.
    public init(executable: String, timeout: Double, environment: [String: String] = ProcessInfo.processInfo.environment,
                onEvent: (@Sendable (String) -> Void)? = nil) {
        let decoder = IsolatedDecoder(executable: executable, timeout: timeout, environment: environment)
        if let onEvent { decoder.onEvent = { event in onEvent("pictures: " + event) } }
        self.decoder = Mutex(decoder)
    }

    public func radiograph(path: String, maximumPixels: UInt64) throws -> Radiograph {
        guard FileManager.default.fileExists(atPath: path) else { throw PictureError.fileGone(path: path) }
        return try decoder.withLock { try $0.radiograph(path: path, maximumPixels: maximumPixels) }
    }

    /// Ends the decoder process (it is started again by the next picture).
    public func close() { decoder.withLock { $0.close() } }
}
