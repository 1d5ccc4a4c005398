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
/// Three tasks: a file's model inputs (a triage worker), a DICOM header, and a full PNG check (the
/// intake, before a file is accepted). One request at a time over a socket and a pipe: a JSON line,
/// answered by a JSON line and, for model inputs, the raw float32 inputs of each frame. Not
/// thread-safe: one per triage worker, or behind a lock (`IsolatedHeaderReader`).
public final class IsolatedDecoder: ImageDecoder {
    public let executable: String
    public let arguments: [String]
    public let environment: [String: String]
    /// A file whose decoding takes longer is given up (the child is killed and started again).
    public let timeout: Double
    /// Called with a line for the log when the child must be started again, and why.
    public var onEvent: (@Sendable (String) -> Void)?

    private var child: Child?

    /// `executable` is a `bonetriage` binary; the daemon passes its own (`/proc/self/exe`).
    public init(executable: String, timeout: Double, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.executable = executable
        self.arguments = ["bonetriage", "decode-worker"]
        self.timeout = timeout
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
        switch exchange(request, frameValues: spec.size * spec.size * 3) {
        case .unavailable:
            return InProcessDecoder.decode(path: path, spec: spec, maximumPixels: maximumPixels)
        case let .failed(error):
            return .unreadable(error)
        case let .answered(answer, frames):
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
        case let .answered(answer, _):
            guard answer.outcome == .header, let metadata = answer.metadata else { throw answer.error(path: path) }
            return metadata
        }
    }

    /// Decodes a PNG file whole in the child, to accept only files that decode.
    public func checkPNG(path: String, maximumPixels: UInt64) throws(ImagingError) {
        switch exchange(DecodeRequest(task: .pngCheck, path: path, maximumPixels: maximumPixels), frameValues: 0) {
        case .unavailable: try InProcessHeaderReader().checkPNG(path: path, maximumPixels: maximumPixels)
        case let .failed(error): throw error
        case let .answered(answer, _):
            guard answer.outcome == .checked else { throw answer.error(path: path) }
        }
    }

    private enum Exchange {
        /// The child could not be started: the caller does the work in this process.
        case unavailable
        /// The child crashed, hung or could not be reached on this file.
        case failed(ImagingError)
        case answered(DecodeAnswer, frames: [[Float]])
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
            case let .answered(answer, frames):
                if current.hasUnreadBytes {
                    current.kill()
                    child = nil
                    onEvent?("the decoder process answered more than it was asked; started again")
                    return .failed(.decoderFailed(path: path, reason: "got a garbled answer from the decoder process"))
                }
                return .answered(answer, frames: frames)
            }
        }
        return .failed(.decoderFailed(path: path, reason: "could not be handed to the decoder process"))
    }

    private enum Reading {
        case answered(DecodeAnswer, frames: [[Float]])
        /// The child died (how) before it answered.
        case crashed(String)
        /// The child was killed: too slow, or an answer the daemon does not accept.
        case refused(String)
    }

    /// Frames per file that BoneTriage classifies at most; an answer with more is refused.
    public static let maximumFrames = 1024

    private func read(answerFor path: String, frameValues: Int, from current: Child) -> Reading {
        let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
        let tooSlow = "took longer than \(Self.format(timeout)) s ([triage] decode_timeout_seconds)"
        let line: Data
        switch current.readLine(until: deadline) {
        case let .data(data): line = data
        case .timedOut:
            current.kill()
            return .refused(tooSlow)
        case .ended:
            return .crashed(current.close())
        }
        guard let answer = try? JSONDecoder().decode(DecodeAnswer.self, from: line) else {
            current.kill()
            return .refused("gave an answer the daemon does not understand")
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
            switch values.withUnsafeMutableBytes({ current.read(into: $0, until: deadline) }) {
            case .data: frames.append(values)
            case .timedOut:
                current.kill()
                return .refused(tooSlow)
            case .ended:
                return .crashed(current.close())
            }
        }
        return .answered(answer, frames: frames)
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.1f", seconds)
    }

    /// Starts the child ahead of the first file (otherwise the first file starts it).
    public func start() { _ = startChild() }

    /// The running child, or a new one; nil (and a line for the log) when none can start.
    private func startChild() -> Child? {
        if let child { return child }
        do {
            child = try Child.start(executable: executable, arguments: arguments, environment: environment)
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
    enum Task: String, Codable { case modelInput = "model_input", dicomHeader = "dicom_header", pngCheck = "png_check" }
    var task: Task
    var path: String
    var maximumPixels: UInt64
    // The model's input, for `modelInput`.
    var size: Int?
    var low: Float?
    var high: Float?
    var filter: String?

    var spec: ModelInputSpec? {
        guard let size, size > 0, size <= 4096, let low, let high, low < high, let filter = filter.flatMap(ResizeFilter.init(rawValue:)) else { return nil }
        return ModelInputSpec(size: size, range: low...high, filter: filter)
    }
}

/// The decoder process's answer line; for `inputs`, `frames` inputs of size x size x 3 float32 follow.
struct DecodeAnswer: Codable {
    enum Outcome: String, Codable { case inputs, notApplicable = "not_applicable", unreadable, header, checked }
    var outcome: Outcome
    var frames: Int?
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

/// A DICOM header reader and PNG checker that several threads share (the receiver's associations and
/// the drop-folder watcher).
public protocol HeaderReader: Sendable {
    func metadata(path: String) throws(ImagingError) -> DicomMetadata
    func checkPNG(path: String, maximumPixels: UInt64) throws(ImagingError)
    /// Lets go of the reader's processes, if it has any.
    func close()
}

extension HeaderReader {
    public func close() {}
}

/// Reads headers in this process.
public struct InProcessHeaderReader: HeaderReader {
    public init() {}

    public func metadata(path: String) throws(ImagingError) -> DicomMetadata {
        do { return try DicomReader.metadata(path: path) } catch let error as ImagingError { throw error } catch {
            throw .notDICOM(path: path, reason: "\(error)")
        }
    }

    public func checkPNG(path: String, maximumPixels: UInt64) throws(ImagingError) {
        do { _ = try PNGReader.read(path: path, maximumPixels: maximumPixels) } catch let error as ImagingError { throw error } catch {
            throw .notPNG(path: path, reason: "\(error)")
        }
    }
}

/// Reads headers in a few shared decoder processes, one file at a time each (a header takes about a
/// millisecond), so that a file that crashes the parser is refused instead of taking the daemon down,
/// and a file that hangs one process (for up to its time-out) leaves the others to the other senders.
public final class IsolatedHeaderReader: HeaderReader {
    private final class Slot: Sendable {
        let decoder: Mutex<IsolatedDecoder>
        init(_ decoder: sending IsolatedDecoder) { self.decoder = Mutex(decoder) }
    }

    private let slots: [Slot]
    private let next = Atomic<Int>(0)
    /// The longest a header read or PNG check may take: the receiver's associations wait for it.
    public static let maximumTimeout: Double = 10

    public init(executable: String, timeout: Double, processes: Int = 2,
                environment: [String: String] = ProcessInfo.processInfo.environment, onEvent: (@Sendable (String) -> Void)? = nil) {
        slots = (0..<max(1, processes)).map { _ in
            let decoder = IsolatedDecoder(executable: executable, timeout: timeout, environment: environment)
            decoder.onEvent = onEvent
            decoder.start()
            return Slot(decoder)
        }
    }

    /// Runs `body` on a free decoder process, or waits for the next one in turn when all are busy.
    private func withDecoder<T: Sendable>(_ body: @Sendable (IsolatedDecoder) throws(ImagingError) -> T) throws(ImagingError) -> T {
        for slot in slots {
            let free: Result<T, ImagingError>? = slot.decoder.withLockIfAvailable { decoder in
                do throws(ImagingError) { return .success(try body(decoder)) } catch { return .failure(error) }
            }
            if let free { return try free.get() }
        }
        let turn = next.wrappingAdd(1, ordering: .relaxed).oldValue % slots.count
        let result: Result<T, ImagingError> = slots[turn].decoder.withLock { decoder in
            do throws(ImagingError) { return .success(try body(decoder)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    public func metadata(path: String) throws(ImagingError) -> DicomMetadata {
        try withDecoder { decoder throws(ImagingError) in try decoder.header(path: path) }
    }

    public func checkPNG(path: String, maximumPixels: UInt64) throws(ImagingError) {
        try withDecoder { decoder throws(ImagingError) in try decoder.checkPNG(path: path, maximumPixels: maximumPixels) }
    }

    /// The decoder processes' IDs (those running).
    public var processIDs: [pid_t] { slots.compactMap { $0.decoder.withLock { $0.childProcessID } } }

    /// Ends the decoder processes.
    public func close() { slots.forEach { $0.decoder.withLock { $0.close() } } }
}

/// The running child: its pid and the two pipe ends, with reads that give up at a deadline.
private final class Child {
    let pid: pid_t
    private let input: Int32
    private let output: Int32
    private var buffer: [UInt8] = []
    private var closed = false

    private init(pid: pid_t, input: Int32, output: Int32) {
        self.pid = pid
        self.input = input
        self.output = output
    }

    struct SpawnError: Error, CustomStringConvertible {
        let executable: String
        let code: Int32
        var description: String { "\(executable): \(String(cString: strerror(code)))" }
    }

    private struct Spawned: Sendable {
        var code: Int32 = 0
        var pid: pid_t = 0
        var input: Int32 = -1
        var output: Int32 = -1
    }

    static func start(executable: String, arguments: [String], environment: [String: String]) throws -> Child {
        let spawned = SpawnThread.shared.perform { () -> Spawned in
            var result = Spawned()
            let argv = arguments.map { strdup($0) } + [nil]
            let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer {
                argv.forEach { free($0) }
                envp.forEach { free($0) }
            }
            result.code = bt_spawn_piped(executable, argv, envp, &result.input, &result.output, &result.pid)
            return result
        }
        guard spawned.code == 0 else { throw SpawnError(executable: executable, code: spawned.code) }
        return Child(pid: spawned.pid, input: spawned.input, output: spawned.output)
    }

    func write(_ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = send(input, raw.baseAddress?.advanced(by: offset), raw.count - offset, Int32(MSG_NOSIGNAL))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                offset += n
            }
            return true
        }
    }

    enum ReadResult { case data(Data), timedOut, ended }

    /// Bytes the child wrote beyond the answer just read.
    var hasUnreadBytes: Bool {
        guard buffer.isEmpty else { return true }
        var descriptor = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
        return poll(&descriptor, 1, 0) > 0 && descriptor.revents & Int16(POLLIN) != 0
    }

    /// The next line (without its newline).
    func readLine(until deadline: ContinuousClock.Instant) -> ReadResult {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = Data(buffer[..<newline])
                buffer.removeSubrange(...newline)
                return .data(line)
            }
            guard buffer.count < 1 << 20 else { return .ended }  // no answer line is this long
            switch fill(until: deadline) {
            case .data: continue
            case .timedOut: return .timedOut
            case .ended: return .ended
            }
        }
    }

    /// Exactly `target.count` bytes.
    func read(into target: UnsafeMutableRawBufferPointer, until deadline: ContinuousClock.Instant) -> ReadResult {
        var filled = 0
        while filled < target.count {
            if !buffer.isEmpty {
                let n = min(buffer.count, target.count - filled)
                buffer.withUnsafeBytes { source in
                    guard let from = source.baseAddress else { return }
                    target.baseAddress?.advanced(by: filled).copyMemory(from: from, byteCount: n)
                }
                buffer.removeFirst(n)
                filled += n
                continue
            }
            switch fill(until: deadline) {
            case .data: continue
            case .timedOut: return .timedOut
            case .ended: return .ended
            }
        }
        return .data(Data())
    }

    private func fill(until deadline: ContinuousClock.Instant) -> ReadResult {
        while true {
            let left = (deadline - ContinuousClock.now).components
            let remaining = Double(left.seconds) + Double(left.attoseconds) / 1e18
            guard remaining > 0 else { return .timedOut }
            var descriptor = pollfd(fd: output, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(min(remaining * 1000 + 1, 60_000)))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { if ready == 0 { continue }; return .ended }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            let n = chunk.withUnsafeMutableBytes { Glibc.read(output, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return .ended }
            buffer.append(contentsOf: chunk[..<n])
            return .data(Data())
        }
    }

    /// SIGKILL (a hung decoder) and reap.
    func kill() {
        guard !closed else { return }
        Glibc.kill(pid, SIGKILL)
        _ = close()
    }

    /// Closes the pipes, waits up to 2 s for the child to end on its own, then kills it; says how it ended.
    @discardableResult
    func close() -> String {
        guard !closed else { return "already ended" }
        closed = true
        Glibc.close(input)
        Glibc.close(output)
        var status: Int32 = 0
        for _ in 0..<200 {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid { return Self.describe(status) }
            if r < 0 && errno != EINTR { return "ended" }
            usleep(10_000)
        }
        Glibc.kill(pid, SIGKILL)
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return Self.describe(status)
    }

    static func describe(_ status: Int32) -> String {
        let signal = status & 0x7F
        if signal == 0 { return "exit status \((status >> 8) & 0xFF)" }
        let name = strsignal(signal).map { String(cString: $0) } ?? "signal"
        return "killed by signal \(signal), \(name)"
    }
}

/// Every decoder process is started from this one thread, which lives as long as the process: the
/// kernel sends the parent-death signal (PR_SET_PDEATHSIG) when the *thread* that forked the child
/// ends, so a child started from a receiver's association thread would die with its association.
private final class SpawnThread: Sendable {
    static let shared = SpawnThread()
    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let waiting = DispatchSemaphore(value: 0)

    private init() {
        let thread = Thread { [self] in
            while true {
                waiting.wait()
                let job = jobs.withLock { $0.isEmpty ? nil : $0.removeFirst() }
                job?()
            }
        }
        thread.name = "decoder-spawner"
        thread.start()
    }

    /// Runs `body` on the spawner thread and returns its result.
    func perform<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<T?>(nil)
        jobs.withLock {
            $0.append {
                let value = body()
                result.withLock { $0 = value }
                done.signal()
            }
        }
        waiting.signal()
        done.wait()
        guard let value = result.withLock({ $0 }) else {
            preconditionFailure("the spawner thread signalled without a result")
        }
        return value
    }
}

/// The child's side: `bonetriage decode-worker` reads requests on stdin until it closes.
public enum DecoderService {
    /// Test hook: `BONETRIAGE_DECODER_FAULT=crash:TEXT` (or `hang:TEXT`) makes the decoder process crash
    /// (or hang) on any file whose path contains TEXT, to exercise the daemon's recovery end to end.
    public static let faultVariable = "BONETRIAGE_DECODER_FAULT"

    public static func run() -> Int32 {
        bt_ignore_stop_signals()
        // The answers go through a private copy of stdout; whatever a library prints goes to stderr
        // (the journal) instead of into the answers.
        let channel = dup(1)
        guard channel >= 0, dup2(2, 1) == 1 else { return 1 }
        // Under memory pressure the kernel should end this process, not the daemon.
        _ = try? "1000".write(toFile: "/proc/self/oom_score_adj", atomically: false, encoding: .utf8)
        let fault = ProcessInfo.processInfo.environment[faultVariable].flatMap { value -> (String, String)? in
            let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
            return parts.count == 2 && !parts[1].isEmpty ? (parts[0], parts[1]) : nil
        }
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            guard let newline = pending.firstIndex(of: 0x0A) else {
                let n = chunk.withUnsafeMutableBytes { Glibc.read(0, $0.baseAddress, $0.count) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return 0 }  // the daemon closed the pipe: done
                pending.append(contentsOf: chunk[..<n])
                continue
            }
            let line = Data(pending[..<newline])
            pending.removeSubrange(...newline)
            guard let request = try? JSONDecoder().decode(DecodeRequest.self, from: line) else {
                let answer = DecodeAnswer.failure(.undecodable(path: "?", reason: "the decoder process got a request it does not understand"))
                guard send(answer, inputs: [], to: channel) else { return 0 }
                continue
            }
            if let (mode, text) = fault, request.path.contains(text) {
                // A real invalid write, as a decoder bug would make (raise() could return from a handler).
                if mode == "crash", let address = UnsafeMutablePointer<UInt8>(bitPattern: 16) { address.pointee = 1 }
                if mode == "hang" { while true { sleep(60) } }
            }
            let (answer, inputs) = serve(request)
            guard send(answer, inputs: inputs, to: channel) else { return 0 }
        }
    }

    private static func serve(_ request: DecodeRequest) -> (DecodeAnswer, [[Float]]) {
        switch request.task {
        case .modelInput:
            guard let spec = request.spec else {
                return (.failure(.undecodable(path: request.path, reason: "the decoder process got no usable model input size")), [])
            }
            switch InProcessDecoder.decode(path: request.path, spec: spec, maximumPixels: request.maximumPixels) {
            case let .inputs(frames): return (DecodeAnswer(outcome: .inputs, frames: frames.count), frames)
            case let .notApplicable(reason): return (DecodeAnswer(outcome: .notApplicable, reason: reason), [])
            case let .unreadable(error): return (.failure(error), [])
            }
        case .dicomHeader:
            do throws(ImagingError) {
                return (DecodeAnswer(outcome: .header, metadata: try InProcessHeaderReader().metadata(path: request.path)), [])
            } catch { return (.failure(error), []) }
        case .pngCheck:
            do throws(ImagingError) {
                try InProcessHeaderReader().checkPNG(path: request.path, maximumPixels: request.maximumPixels)
                return (DecodeAnswer(outcome: .checked), [])
            } catch { return (.failure(error), []) }
        }
    }

    private static func send(_ answer: DecodeAnswer, inputs: [[Float]], to channel: Int32) -> Bool {
        var line = (try? JSONEncoder().encode(answer)) ?? Data()
        line.append(0x0A)
        guard line.withUnsafeBytes({ writeAll($0, to: channel) }) else { return false }
        for input in inputs {
            guard input.withUnsafeBytes({ writeAll($0, to: channel) }) else { return false }
        }
        return true
    }

    private static func writeAll(_ raw: UnsafeRawBufferPointer, to channel: Int32) -> Bool {
        var offset = 0
        while offset < raw.count {
            let n = Glibc.write(channel, raw.baseAddress?.advanced(by: offset), raw.count - offset)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }
}
