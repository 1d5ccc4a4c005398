import CSystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Decodes in a child process (`bonetriage decode-worker`), so that a file that crashes or hangs a
/// decoder (DCMTK, OpenJPEG, libpng: C and C++ reading bytes from the network) costs that one file,
/// not the daemon and its open associations. The child lives as long as this object and is started
/// again after it dies; it cannot outlive the daemon (it is killed when the daemon dies).
///
/// Four tasks: a file's model inputs (a triage worker), a DICOM header, a full PNG check (the intake,
/// before a file is accepted), and the radiograph a picture is made from (the result builder). One
/// request at a time over a socket and a pipe: a JSON line, answered by a JSON line and, for model
/// inputs, the raw float32 inputs of each frame, for a radiograph its 8-bit pixels. Not thread-safe:
/// one per triage worker, or behind a lock (`IsolatedHeaderReader`, `IsolatedRadiographs`).
public final class IsolatedDecoder: ImageDecoder {
    public let executable: String
    public let arguments: [String]
    public let environment: [String: String]
    /// A file whose decoding takes longer is given up (the child is killed and started again).
    public let timeout: Double
    /// Where `timeout` comes from, for the reason given when it fires.
    public let timeoutSetting: String
    /// Called with a line for the log when the child must be started again, and why.
    public var onEvent: (@Sendable (String) -> Void)?

    /// OpenJPEG threads the child uses per image (1: its one thread).
    public var decodeThreads = 1

    private var child: DecoderProcess?

    /// `executable` is a `bonetriage` binary; the daemon passes its own (`/proc/self/exe`).
    public init(executable: String, timeout: Double, timeoutSetting: String = "[triage] decode_timeout_seconds",
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.executable = executable
        self.arguments = ["bonetriage", "decode-worker"]
        self.timeout = timeout
        self.timeoutSetting = timeoutSetting
        self.environment = environment
    }

    deinit { child?.close() }

    /// The running child's process ID, if one runs (for the log and the tests).
    public var childProcessID: pid_t? { child?.pid }

    public func decode(path: String, spec: ModelInputSpec, maximumPixels: UInt64) -> DecodedImage {
        var request = DecodeRequest(task: .modelInput, path: path, maximumPixels: maximumPixels)
        request.size = spec.size
        request.low = spec.range.lowerBound
        request.high = spec.range.upperBound
        request.filter = spec.filter.rawValue
        request.threads = decodeThreads
        switch exchange(request, frameValues: spec.size * spec.size * 3) {
        case .unavailable:
            return InProcessDecoder.decode(path: path, spec: spec, maximumPixels: maximumPixels, threads: decodeThreads)
        case let .failed(error):
            return .unreadable(error)
        case let .answered(answer, frames, _):
            switch answer.outcome {
            case .notApplicable: return .notApplicable(reason: answer.reason ?? "not a radiograph")
            case .inputs where !frames.isEmpty: return .inputs(frames)
            case .inputs: return .unreadable(.undecodable(path: path, reason: "the image has no frame"))
            default: return .unreadable(answer.error(path: path))
            }
        }
    }

    /// The header of a DICOM file (without its pixels), read in the child.
    public func header(path: String) throws(ImagingError) -> DicomMetadata {
        switch exchange(DecodeRequest(task: .dicomHeader, path: path, maximumPixels: 0), frameValues: 0) {
        case .unavailable: return try InProcessHeaderReader().metadata(path: path)
        case let .failed(error): throw error
        case let .answered(answer, _, _):
            guard answer.outcome == .header, let metadata = answer.metadata else { throw answer.error(path: path) }
            return metadata
        }
    }

    /// Decodes a PNG file whole in the child, to accept only files that decode.
    public func checkPNG(path: String, maximumPixels: UInt64) throws(ImagingError) {
        switch exchange(DecodeRequest(task: .pngCheck, path: path, maximumPixels: maximumPixels), frameValues: 0) {
        case .unavailable: try InProcessHeaderReader().checkPNG(path: path, maximumPixels: maximumPixels)
        case let .failed(error): throw error
        case let .answered(answer, _, _):
            guard answer.outcome == .checked else { throw answer.error(path: path) }
        }
    }

    /// The first frame of an image file as a picture shows it (`TriagePictures.radiograph`), rendered in the child.
    public func radiograph(path: String, maximumPixels: UInt64) throws -> Radiograph {
        switch exchange(DecodeRequest(task: .radiograph, path: path, maximumPixels: maximumPixels), frameValues: 0) {
        case .unavailable: return try TriagePictures.radiograph(path: path, maximumPixels: maximumPixels)
        case let .failed(error): throw error
        case let .answered(answer, _, pixels):
            guard answer.outcome == .radiograph, let width = answer.width, let height = answer.height, let channels = answer.channels,
                  pixels.count == width * height * channels else { throw answer.error(path: path) }
            return Radiograph(width: width, height: height, channels: channels, pixels: pixels)
        }
    }

    private enum Exchange {
        /// The child could not be started: the caller does the work in this process.
        case unavailable
        /// The child crashed, hung or could not be reached on this file.
        case failed(ImagingError)
        case answered(DecodeAnswer, frames: [[Float]], pixels: [UInt8] = [])
    }

    private func exchange(_ request: DecodeRequest, frameValues: Int) -> Exchange {
        let path = request.path
        var handedOver = false, crashed: String?
        // A child that died after its last answer (or was never started) is noticed when the request
        // cannot be written: start one and send it again, once. A crash is blamed on a file only when a
        // fresh child crashes on it too (heap damage from an earlier file can crash a later one).
        for _ in 0..<3 {
            guard let current = startChild() else { return .unavailable }
            var line = (try? JSONEncoder().encode(request)) ?? Data()
            line.append(0x0A)
            guard current.write(line) else {
                let status = current.close()
                child = nil
                if !handedOver { handedOver = true; onEvent?("the decoder process had ended (\(status)); started again"); continue }
                return .failed(.decoderFailed(path: path, reason: "could not be handed to the decoder process (\(status))"))
            }
            handedOver = true
            switch read(answerFor: path, frameValues: frameValues, from: current) {
            case let .crashed(status):
                child = nil
                if let first = crashed {
                    onEvent?("the decoder process crashed twice on the same file (\(first); \(status)); started again for the next one")
                    return .failed(.decoderFailed(path: path, reason: "crashed the decoder process twice (\(status))"))
                }
                crashed = status
                onEvent?("the decoder process crashed (\(status)); the file is tried once more in a new one")
            case let .refused(reason):
                child = nil
                onEvent?("the decoder process \(reason) while reading a file; started again for the next one")
                return .failed(.decoderFailed(path: path, reason: reason))
            case let .answered(answer, frames, pixels):
                if current.hasUnreadBytes {
                    current.kill()
                    child = nil
                    onEvent?("the decoder process answered more than it was asked; started again")
                    return .failed(.decoderFailed(path: path, reason: "got a garbled answer from the decoder process"))
                }
                return .answered(answer, frames: frames, pixels: pixels)
            }
        }
        return .failed(.decoderFailed(path: path, reason: "could not be handed to the decoder process"))
    }

    private enum Reading {
        case answered(DecodeAnswer, frames: [[Float]], pixels: [UInt8] = [])
        /// The child died (how) before it answered.
        case crashed(String)
        /// The child was killed: too slow, or an answer the daemon does not accept.
        case refused(String)
    }

    /// Frames per file that BoneTriage classifies at most; an answer with more is refused.
    public static let maximumFrames = 1024

    private func read(answerFor path: String, frameValues: Int, from current: DecoderProcess) -> Reading {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        let tooSlow = "took longer than \(Self.format(timeout)) s (\(timeoutSetting))"
        /// Nil when the read got its data; otherwise what became of the child (killed when too slow).
        func failure(_ result: DecoderProcess.ReadResult) -> Reading? {
            switch result {
            case .data: return nil
            case .timedOut:
                current.kill()
                return .refused(tooSlow)
            case .ended:
                return .crashed(current.close())
            }
        }
        let lineRead = current.readLine(until: deadline)
        if let failed = failure(lineRead) { return failed }
        guard case let .data(line) = lineRead, let answer = try? JSONDecoder().decode(DecodeAnswer.self, from: line) else {
            current.kill()
            return .refused("gave an answer the daemon does not understand")
        }
        if answer.outcome == .radiograph {
            let longest = TriagePictures.sourceLongestSide
            guard let width = answer.width, let height = answer.height, let channels = answer.channels,
                  (1...longest).contains(width), (1...longest).contains(height), channels == 1 || channels == 3 else {
                current.kill()
                return .refused("answered with a radiograph of a size the daemon does not accept")
            }
            var pixels = [UInt8](repeating: 0, count: width * height * channels)
            if let failed = failure(pixels.withUnsafeMutableBytes({ current.read(into: $0, until: deadline) })) { return failed }
            return .answered(answer, frames: [], pixels: pixels)
        }
        guard answer.outcome == .inputs else { return .answered(answer, frames: []) }
        let count = answer.frames ?? 0
        guard (1...Self.maximumFrames).contains(count) else {
            current.kill()
            return .refused("answered with \(count) frames (BoneTriage classifies 1 to \(Self.maximumFrames) per file)")
        }
        var frames: [[Float]] = []
        for _ in 0..<count {
            var values = [Float](repeating: 0, count: frameValues)
            if let failed = failure(values.withUnsafeMutableBytes({ current.read(into: $0, until: deadline) })) { return failed }
            frames.append(values)
        }
        return .answered(answer, frames: frames)
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.1f", seconds)
    }

    /// Starts the child ahead of the first file (otherwise the first file starts it).
    public func start() { _ = startChild() }

    /// The running child, or a new one; nil (and a line for the log) when none can start.
    private func startChild() -> DecoderProcess? {
        if let child { return child }
        do {
            child = try DecoderProcess.start(executable: executable, arguments: arguments, environment: environment)
        } catch {
            onEvent?("the decoder process could not start (\(error)); files are read inside the daemon until it can")
        }
        return child
    }

    /// Ends the child (it exits when its input closes) and waits for it.
    public func close() {
        child?.close()
        child = nil
    }
}

/// One request to the decoder process.
struct DecodeRequest: Codable {
    enum Task: String, Codable { case modelInput = "model_input", dicomHeader = "dicom_header", pngCheck = "png_check", radiograph }
    var task: Task
    var path: String
    var maximumPixels: UInt64
    // The model's input, for `modelInput`.
    var size: Int?
    var low: Float?
    var high: Float?
    var filter: String?
    /// OpenJPEG threads for `modelInput` (absent: 1).
    var threads: Int?

    var spec: ModelInputSpec? {
        guard let size, size > 0, size <= 4096, let low, let high, low < high, let filter = filter.flatMap(ResizeFilter.init(rawValue:)) else { return nil }
        return ModelInputSpec(size: size, range: low...high, filter: filter)
    }
}

/// The decoder process's answer line; for `inputs`, `frames` inputs of size x size x 3 float32 follow,
/// for `radiograph` its width x height x channels bytes.
struct DecodeAnswer: Codable {
    enum Outcome: String, Codable { case inputs, notApplicable = "not_applicable", unreadable, header, checked, radiograph }
    var outcome: Outcome
    var frames: Int?
    var width: Int?
    var height: Int?
    var channels: Int?
    var reason: String?
    var kind: String?
    var path: String?
    var metadata: DicomMetadata?

    func error(path fallback: String) -> ImagingError {
        ImagingError(kind: kind ?? "", path: path ?? fallback, reason: reason ?? "the decoder process gave no reason")
    }

    static func failure(_ error: ImagingError) -> DecodeAnswer {
        let parts = error.parts
        return DecodeAnswer(outcome: .unreadable, reason: parts.reason, kind: parts.kind, path: parts.path)
    }
}
