import CSystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The child's side: `bonetriage decode-worker` reads requests on stdin until it closes.
public enum DecoderService {
    /// Test hook: `BONETRIAGE_DECODER_FAULT=crash:TEXT` (or `hang:TEXT`) makes the decoder process crash
    /// (or hang) on any file whose path contains TEXT, to exercise the daemon's recovery end to end.
    public static let faultVariable = "BONETRIAGE_DECODER_FAULT"

    /// Freed memory kept for the next image is returned to the system after this long without a request.
    static let idleReleaseMilliseconds: Int32 = 1000

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
        // A study's images come one after another: reuse the heap between them, and give it back
        // once no request has come for `idleRelease` (between studies).
        _ = bt_memory_reuse_freed()
        var pending: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        var holdingFreedMemory = false
        while true {
            guard let newline = pending.firstIndex(of: 0x0A) else {
                if holdingFreedMemory {
                    var request = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
                    let ready = poll(&request, 1, idleReleaseMilliseconds)
                    if ready < 0 && errno == EINTR { continue }
                    if ready == 0 {
                        _ = bt_memory_release_free()
                        holdingFreedMemory = false
                    }
                }
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
            holdingFreedMemory = true
            guard send(answer, inputs: inputs, to: channel) else { return 0 }
        }
    }

    private static func serve(_ request: DecodeRequest) -> (DecodeAnswer, [[Float]]) {
        switch request.task {
        case .modelInput:
            guard let spec = request.spec else {
                return (.failure(.undecodable(path: request.path, reason: "the decoder process got no usable model input size")), [])
            }
            let threads = min(64, max(1, request.threads ?? 1))
            switch InProcessDecoder.decode(path: request.path, spec: spec, maximumPixels: request.maximumPixels, threads: threads) {
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
