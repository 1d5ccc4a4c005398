import CSystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A running `bonetriage decode-worker`: its pid and the two pipe ends, with reads that give up at a
/// deadline.
final class DecoderProcess {
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

    static func start(executable: String, arguments: [String], environment: [String: String]) throws -> DecoderProcess {
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
        return DecoderProcess(pid: spawned.pid, input: spawned.input, output: spawned.output)
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
final class SpawnThread: Sendable {
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
