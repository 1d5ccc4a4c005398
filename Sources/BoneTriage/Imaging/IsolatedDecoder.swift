import CSystem
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Decodes in a child process (`bonetriage decode-worker`), so that a file that crashes or hangs a
/// decoder (DCMTK, OpenJPEG, libpng: C and C++ reading bytes from the network) costs that one image,
/// not the daemon and its open associations. The child lives as long as this object and is started
/// again after it dies; it cannot outlive the daemon (it is killed when the parent dies).
///
/// Start and use it from one long-lived thread (a triage worker's): the kernel kills the child when
/// the thread that started it ends (PR_SET_PDEATHSIG follows the thread, not the process).
///
/// One request at a time over a socket and a pipe: a JSON line naming the file and the model's input, answered
/// by a JSON line and, for an image, the raw float32 inputs of its frames. Not thread-safe: one per
/// triage worker.
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
        let request = DecodeRequest(path: path, size: spec.size, low: spec.range.lowerBound, high: spec.range.upperBound,
                                    filter: spec.filter.rawValue, maximumPixels: maximumPixels)
        // A child that died after its last answer (or was never started) is noticed when the request
        // cannot be written: start one and send it again, once.
        for attempt in 0..<2 {
            let current: Child
            do {
                current = try child ?? Child.start(executable: executable, arguments: arguments, environment: environment)
                child = current
            } catch {
                onEvent?("the decoder process could not start (\(error)); this file is decoded inside the daemon")
                return InProcessDecoder.decode(path: path, spec: spec, maximumPixels: maximumPixels)
            }
            var line = (try? JSONEncoder().encode(request)) ?? Data()
            line.append(0x0A)
            guard current.write(line) else {
                let status = current.close()
                child = nil
                if attempt == 0 { onEvent?("the decoder process had ended (\(status)); started again"); continue }
                return .unreadable(.decoderFailed(path: path, reason: "could not be handed to the decoder process (\(status))"))
            }
            return read(answerFor: path, spec: spec, from: current)
        }
        return .unreadable(.decoderFailed(path: path, reason: "could not be handed to the decoder process"))
    }

    private func read(answerFor path: String, spec: ModelInputSpec, from current: Child) -> DecodedImage {
        let deadline = Date().addingTimeInterval(timeout)
        func failed(_ reason: String) -> DecodedImage {
            child = nil
            onEvent?("the decoder process \(reason) while decoding a file; started again for the next one")
            return .unreadable(.decoderFailed(path: path, reason: reason))
        }
        let header: Data
        switch current.readLine(until: deadline) {
        case let .data(data): header = data
        case .timedOut:
            current.kill()
            return failed("took longer than \(Self.format(timeout)) s ([triage] decode_timeout_seconds)")
        case .ended:
            return failed("crashed the decoder process (\(current.close()))")
        }
        guard let answer = try? JSONDecoder().decode(DecodeAnswer.self, from: header) else {
            current.kill()
            return failed("got an answer the daemon does not understand from the decoder process")
        }
        switch answer.outcome {
        case .notApplicable:
            return .notApplicable(reason: answer.reason ?? "not a radiograph")
        case .unreadable:
            return .unreadable(ImagingError(kind: answer.kind ?? "", path: answer.path ?? path, reason: answer.reason ?? "unknown"))
        case .inputs:
            let count = spec.size * spec.size * 3
            var inputs: [[Float]] = []
            for _ in 0..<max(0, answer.frames ?? 0) {
                var values = [Float](repeating: 0, count: count)
                let result = values.withUnsafeMutableBytes { current.read(into: $0, until: deadline) }
                switch result {
                case .data: inputs.append(values)
                case .timedOut:
                    current.kill()
                    return failed("took longer than \(Self.format(timeout)) s ([triage] decode_timeout_seconds)")
                case .ended:
                    return failed("crashed the decoder process (\(current.close()))")
                }
            }
            return inputs.isEmpty ? .unreadable(.undecodable(path: path, reason: "the image has no frame")) : .inputs(inputs)
        }
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.1f", seconds)
    }

    /// Starts the child ahead of the first file (otherwise the first file starts it).
    public func start() {
        guard child == nil else { return }
        do { child = try Child.start(executable: executable, arguments: arguments, environment: environment) } catch {
            onEvent?("the decoder process could not start (\(error)); files are decoded inside the daemon until it can")
        }
    }

    /// Ends the child (it exits when its input closes) and waits for it.
    public func close() {
        child?.close()
        child = nil
    }
}

/// One request to the decoder process.
struct DecodeRequest: Codable {
    var path: String
    var size: Int
    var low: Float
    var high: Float
    var filter: String
    var maximumPixels: UInt64

    var spec: ModelInputSpec? {
        guard size > 0, size <= 4096, low < high, let filter = ResizeFilter(rawValue: filter) else { return nil }
        return ModelInputSpec(size: size, range: low...high, filter: filter)
    }
}

/// The decoder process's answer line; `frames` inputs of size x size x 3 float32 follow it.
struct DecodeAnswer: Codable {
    enum Outcome: String, Codable { case inputs, notApplicable = "not_applicable", unreadable }
    var outcome: Outcome
    var frames: Int?
    var reason: String?
    var kind: String?
    var path: String?
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

    static func start(executable: String, arguments: [String], environment: [String: String]) throws -> Child {
        var pid: pid_t = 0, input: Int32 = -1, output: Int32 = -1
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        let code = bt_spawn_piped(executable, argv, envp, &input, &output, &pid)
        guard code == 0 else { throw SpawnError(executable: executable, code: code) }
        return Child(pid: pid, input: input, output: output)
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

    /// The next line (without its newline).
    func readLine(until deadline: Date) -> ReadResult {
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
    func read(into target: UnsafeMutableRawBufferPointer, until deadline: Date) -> ReadResult {
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

    private func fill(until deadline: Date) -> ReadResult {
        while true {
            let remaining = deadline.timeIntervalSinceNow
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

/// The child's side: `bonetriage decode-worker` reads requests on stdin until it closes.
public enum DecoderService {
    /// Test hook: `BONETRIAGE_DECODER_FAULT=crash:TEXT` (or `hang:TEXT`) makes the decoder process crash
    /// (or hang) on any file whose path contains TEXT, to exercise the daemon's recovery end to end.
    public static let faultVariable = "BONETRIAGE_DECODER_FAULT"

    public static func run() -> Int32 {
        bt_ignore_stop_signals()
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
            let answer: DecodedImage
            if let request = try? JSONDecoder().decode(DecodeRequest.self, from: line), let spec = request.spec {
                if let (mode, text) = fault, request.path.contains(text) {
                    // A real invalid write, as a decoder bug would make (raise() could return from a handler).
                    if mode == "crash", let address = UnsafeMutablePointer<UInt8>(bitPattern: 16) { address.pointee = 1 }
                    if mode == "hang" { while true { sleep(60) } }
                }
                answer = InProcessDecoder.decode(path: request.path, spec: spec, maximumPixels: request.maximumPixels)
            } else {
                answer = .unreadable(.undecodable(path: "?", reason: "the decoder process got a request it does not understand"))
            }
            guard send(answer) else { return 0 }
        }
    }

    private static func send(_ decoded: DecodedImage) -> Bool {
        var header: DecodeAnswer
        var inputs: [[Float]] = []
        switch decoded {
        case let .inputs(frames):
            header = DecodeAnswer(outcome: .inputs, frames: frames.count)
            inputs = frames
        case let .notApplicable(reason):
            header = DecodeAnswer(outcome: .notApplicable, reason: reason)
        case let .unreadable(error):
            let parts = error.parts
            header = DecodeAnswer(outcome: .unreadable, reason: parts.reason, kind: parts.kind, path: parts.path)
        }
        var line = (try? JSONEncoder().encode(header)) ?? Data()
        line.append(0x0A)
        guard line.withUnsafeBytes({ writeAll($0) }) else { return false }
        for input in inputs {
            guard input.withUnsafeBytes({ writeAll($0) }) else { return false }
        }
        return true
    }

    private static func writeAll(_ raw: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < raw.count {
            let n = Glibc.write(1, raw.baseAddress?.advanced(by: offset), raw.count - offset)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            offset += n
        }
        return true
    }
}
