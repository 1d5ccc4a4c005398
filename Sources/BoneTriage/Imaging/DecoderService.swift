import CSystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The child's side: `bonetriage decode-worker` reads requests on stdin until it closes.
public enum DecoderService {
    /// Test hook: `BONETRIAGE_DECODER_FAULT=crash:TEXT` (or `hang:TEXT`) makes the decoder process crash
    /// (or hang) on any file whose path contains TEXT, to exercise the daemon's recovery end to end;
    /// `crash-radiograph:TEXT` (`hang-radiograph:TEXT`) only when it renders such a file for a picture.
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
        let fault = ProcessInfo.processInfo.environment[faultVariable].flatMap { value -> (mode: String, task: String?, text: String)? in
            let parts = value.split(separator: ":", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[1].isEmpty else { return nil }
            let mode = parts[0].split(separator: "-", maxSplits: 1).map(String.init)
            return (mode[0], mode.count == 2 ? mode[1] : nil, parts[1])
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
                guard send(answer, .none, to: channel) else { return 0 }
                continue
            }
            if let (mode, task, text) = fault, request.path.contains(text), task == nil || task == request.task.rawValue {
                // A real invalid write, as a decoder bug would make (raise() could return from a handler).
                if mode == "crash", let address = UnsafeMutablePointer<UInt8>(bitPattern: 16) { address.pointee = 1 }
                if mode == "hang" { while true { sleep(60) } }
            }
            let (answer, payload) = serve(request)
            holdingFreedMemory = true
            guard send(answer, payload, to: channel) else { return 0 }
        }
    }

    /// What follows an answer line: the model inputs of each frame (float32), or a picture's radiograph (bytes).
    private enum Payload {
        case none
        case inputs([[Float]])
        case pixels([UInt8])
    }

    private static func serve(_ request: DecodeRequest) -> (DecodeAnswer, Payload) {
        switch request.task {
        case .modelInput:
            guard let spec = request.spec else {
                return (.failure(.undecodable(path: request.path, reason: "the decoder process got no usable model input size")), .none)
            }
            let threads = min(64, max(1, request.threads ?? 1))
            switch InProcessDecoder.decode(path: request.path, spec: spec, maximumPixels: request.maximumPixels, threads: threads) {
            case let .inputs(frames): return (DecodeAnswer(outcome: .inputs, frames: frames.count), .inputs(frames))
            case let .notApplicable(reason): return (DecodeAnswer(outcome: .notApplicable, reason: reason), .none)
            case let .unreadable(error): return (.failure(error), .none)
            }
        case .dicomHeader:
            do throws(ImagingError) {
                return (DecodeAnswer(outcome: .header, metadata: try InProcessHeaderReader().metadata(path: request.path)), .none)
            } catch { return (.failure(error), .none) }
        case .pngCheck:
            do throws(ImagingError) {
                try InProcessHeaderReader().checkPNG(path: request.path, maximumPixels: request.maximumPixels)
                return (DecodeAnswer(outcome: .checked), .none)
            } catch { return (.failure(error), .none) }
        case .radiograph:
            do {
                let image = try TriagePictures.radiograph(path: request.path, maximumPixels: request.maximumPixels)
                var answer = DecodeAnswer(outcome: .radiograph)
                answer.width = image.width
                answer.height = image.height
                answer.channels = image.channels
                return (answer, .pixels(image.pixels))
            } catch let error as ImagingError {
                return (.failure(error), .none)
            } catch {
                return (.failure(.undecodable(path: request.path, reason: "\(error)")), .none)
            }
        }
    }

    private static func send(_ answer: DecodeAnswer, _ payload: Payload, to channel: Int32) -> Bool {
        var line = (try? JSONEncoder().encode(answer)) ?? Data()
        line.append(0x0A)
        guard line.withUnsafeBytes({ writeAll($0, to: channel) }) else { return false }
        switch payload {
        case .none: return true
        case let .inputs(inputs): return inputs.allSatisfy { input in input.withUnsafeBytes { writeAll($0, to: channel) } }
        case let .pixels(pixels): return pixels.withUnsafeBytes { writeAll($0, to: channel) }
        }
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
