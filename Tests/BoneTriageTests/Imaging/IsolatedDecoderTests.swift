import BoneTriage
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The daemon decodes in a child process (`bonetriage decode-worker`): same inputs, and a file that
/// crashes or hangs the decoder costs that file only.
@Suite("Isolated decoder")
struct IsolatedDecoderTests {
    static let spec = ModelInputSpec(size: 75, range: -1...1, filter: .area)
    static let limit = DicomReader.defaultMaximumPixels

    static var ready: Bool { Executable.url != nil && DaemonHarness.toolsAvailable }

    /// A CR, a PNG, a CT (not applicable), junk, an empty file, a missing file and a .png that is not one.
    static func sampleFiles(in dir: TemporaryDirectory) throws -> [String] {
        let cr = dir.path("cr.dcm"), ct = dir.path("ct.dcm"), png = dir.path("image.png")
        try RadiographFactory.make(at: cr, study: "1.2.826.0.1.3680043.8.498.77", seed: 3, size: 120)
        try RadiographFactory.make(at: ct, study: "1.2.826.0.1.3680043.8.498.77", modality: "CT", seed: 4)
        try PNGReader.write(Radiograph(width: 64, height: 48, channels: 1, pixels: SyntheticWeights.testImage(size: 64, seed: 5).prefix(64 * 48).map { $0 }),
                            to: png)
        try Data(repeating: 0x41, count: 4096).write(to: URL(fileURLWithPath: dir.path("junk.dcm")))
        try Data().write(to: URL(fileURLWithPath: dir.path("empty.dcm")))
        try Data("not a png".utf8).write(to: URL(fileURLWithPath: dir.path("fake.png")))
        return [cr, png, ct, dir.path("junk.dcm"), dir.path("empty.dcm"), dir.path("missing.dcm"), dir.path("fake.png")]
    }

    /// A short description (the inputs themselves are too long for a test report).
    static func summary(_ d: DecodedImage) -> String {
        switch d {
        case let .inputs(frames): return "\(frames.count) input(s)"
        case let .notApplicable(reason): return "not applicable: \(reason)"
        case let .unreadable(error): return "unreadable: \(error)"
        }
    }

    static func same(_ a: DecodedImage, _ b: DecodedImage) -> Bool {
        switch (a, b) {
        case let (.inputs(x), .inputs(y)): return x == y
        case let (.notApplicable(x), .notApplicable(y)): return x == y
        case let (.unreadable(x), .unreadable(y)): return x == y
        default: return false
        }
    }

    @Test("the decoder process gives bit-identical inputs, reasons and errors to decoding in this process",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func sameAsInProcess() throws {
        let dir = try TemporaryDirectory()
        let executable = try #require(Executable.url).path
        let decoder = IsolatedDecoder(executable: executable, timeout: 30)
        defer { decoder.close() }
        let files = try Self.sampleFiles(in: dir)
        var kinds: [String] = []
        var firstChild: pid_t?
        for path in files {
            let isolated = decoder.decode(path: path, spec: Self.spec, maximumPixels: Self.limit)
            let local = InProcessDecoder.decode(path: path, spec: Self.spec, maximumPixels: Self.limit)
            #expect(Self.same(isolated, local), "\(path): \(Self.summary(isolated)) vs \(Self.summary(local))")
            if firstChild == nil { firstChild = decoder.childProcessID }
            switch isolated {
            case let .inputs(frames):
                kinds.append("inputs")
                #expect(frames.count == 1 && frames[0].count == 75 * 75 * 3)
            case .notApplicable: kinds.append("n/a")
            case .unreadable: kinds.append("error")
            }
        }
        #expect(kinds == ["inputs", "inputs", "n/a", "error", "error", "error", "error"])
        // One child served every file, bad ones included.
        #expect(firstChild != nil && decoder.childProcessID == firstChild)
    }

    @Test("a file that crashes the decoder costs that file only: the next file gets a new decoder process",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func crashCostsOneFile() throws {
        let dir = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.8.498.78"
        let files = try RadiographFactory.makeStudy(in: dir, prefix: "image", study: study, count: 3)
        var environment = ProcessInfo.processInfo.environment
        environment[DecoderService.faultVariable] = "crash:image1.dcm"
        let decoder = IsolatedDecoder(executable: try #require(Executable.url).path, timeout: 30, environment: environment)
        defer { decoder.close() }
        let events = Mutex<[String]>([])
        decoder.onEvent = { line in events.withLock { $0.append(line) } }

        guard case .inputs = decoder.decode(path: files[0], spec: Self.spec, maximumPixels: Self.limit) else {
            Issue.record("the first file should decode")
            return
        }
        let first = try #require(decoder.childProcessID)
        let crashed = decoder.decode(path: files[1], spec: Self.spec, maximumPixels: Self.limit)
        guard case let .unreadable(error) = crashed, case let .decoderFailed(path, reason) = error else {
            Issue.record("expected a decoder failure, got \(Self.summary(crashed))")
            return
        }
        #expect(path == files[1])
        #expect(reason.contains("crashed the decoder process") && reason.contains("signal 11"), "\(reason)")
        // What became of the file is the caller's to say (left out of its study here, quarantined at intake).
        #expect(error.description.contains("reading this file crashed the decoder process") && !error.description.contains("stays where it is"))
        #expect(decoder.childProcessID == nil)
        // The crashed child was reaped, not left a zombie.
        #expect(kill(first, 0) != 0 && errno == ESRCH)

        guard case let .inputs(frames) = decoder.decode(path: files[2], spec: Self.spec, maximumPixels: Self.limit) else {
            Issue.record("the file after the crash should decode in a new decoder process")
            return
        }
        #expect(Self.same(.inputs(frames), InProcessDecoder.decode(path: files[2], spec: Self.spec, maximumPixels: Self.limit)))
        #expect(decoder.childProcessID != first)
        let lines = events.withLock { $0 }
        #expect(lines.contains { $0.contains("tried once more in a new one") } && lines.contains { $0.contains("crashed twice on the same file") }, "\(lines)")
    }

    @Test("a file that hangs the decoder is given up at decode_timeout_seconds; the next file decodes",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func hangIsKilled() throws {
        let dir = try TemporaryDirectory()
        let files = try RadiographFactory.makeStudy(in: dir, prefix: "image", study: "1.2.826.0.1.3680043.8.498.79", count: 2)
        var environment = ProcessInfo.processInfo.environment
        environment[DecoderService.faultVariable] = "hang:image0.dcm"
        let decoder = IsolatedDecoder(executable: try #require(Executable.url).path, timeout: 1, environment: environment)
        defer { decoder.close() }
        decoder.start()
        let hung = try #require(decoder.childProcessID)
        let outcome = decoder.decode(path: files[0], spec: Self.spec, maximumPixels: Self.limit)
        guard case let .unreadable(.decoderFailed(_, reason)) = outcome else {
            Issue.record("expected a time-out, got \(Self.summary(outcome))")
            return
        }
        #expect(reason.contains("took longer than 1 s") && reason.contains("decode_timeout_seconds"), "\(reason)")
        #expect(kill(hung, 0) != 0 && errno == ESRCH, "the hung decoder process is killed and reaped")
        guard case .inputs = decoder.decode(path: files[1], spec: Self.spec, maximumPixels: Self.limit) else {
            Issue.record("the next file should decode")
            return
        }
    }

    @Test("SIGTERM to the decoder process (systemd stopping the service) does not cut it short; closing its input ends it",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func stopSignalsAndClose() throws {
        let dir = try TemporaryDirectory()
        let files = try Self.sampleFiles(in: dir)
        let decoder = IsolatedDecoder(executable: try #require(Executable.url).path, timeout: 30)
        decoder.start()
        let pid = try #require(decoder.childProcessID)
        kill(pid, SIGTERM)
        kill(pid, SIGHUP)
        usleep(100_000)
        guard case .inputs = decoder.decode(path: files[0], spec: Self.spec, maximumPixels: Self.limit) else {
            Issue.record("the decoder process should have ignored SIGTERM and SIGHUP")
            return
        }
        #expect(decoder.childProcessID == pid)
        decoder.close()
        #expect(kill(pid, 0) != 0 && errno == ESRCH, "closed and reaped")
        #expect(decoder.childProcessID == nil)
    }

    @Test("headers and PNG checks in the decoder process give what this process gives; a crash refuses that file only",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func headersAndChecks() throws {
        let dir = try TemporaryDirectory()
        let files = try Self.sampleFiles(in: dir)
        var environment = ProcessInfo.processInfo.environment
        environment[DecoderService.faultVariable] = "crash:junk.dcm"
        let decoder = IsolatedDecoder(executable: try #require(Executable.url).path, timeout: 30, environment: environment)
        defer { decoder.close() }
        let local = InProcessHeaderReader()
        for path in files where !path.hasSuffix("junk.dcm") {
            let isolated = Result { () throws(ImagingError) in try decoder.header(path: path) }
            let here = Result { () throws(ImagingError) in try local.metadata(path: path) }
            #expect(isolated == here, "\(path)")
            let checkedThere = Result { () throws(ImagingError) in try decoder.checkPNG(path: path, maximumPixels: Self.limit); return true }
            let checkedHere = Result { () throws(ImagingError) in try local.checkPNG(path: path, maximumPixels: Self.limit); return true }
            #expect(checkedThere == checkedHere, "\(path)")
        }
        #expect(try decoder.header(path: files[0]).modality == "CR")
        #expect(throws: Never.self) { try decoder.checkPNG(path: files[1], maximumPixels: Self.limit) }
        do {
            _ = try decoder.header(path: files[3])
            Issue.record("the crashing file should be refused")
        } catch {
            guard case let .decoderFailed(path, reason) = error else {
                Issue.record("expected a decoder failure, got \(error)")
                return
            }
            #expect(path == files[3] && reason.contains("crashed the decoder process"))
        }
        #expect(try decoder.header(path: files[2]).modality == "CT", "the next file is read by a new decoder process")
    }

    @Test("the shared header reader serves many threads at once, and its process outlives the thread that started it",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func sharedHeaderReader() throws {
        let dir = try TemporaryDirectory()
        let files = try Self.sampleFiles(in: dir)
        let expected = try DicomReader.metadata(path: files[0])
        let started = Mutex<IsolatedHeaderReader?>(nil)
        let executable = try #require(Executable.url).path
        // Built on a thread that ends at once: the decoder process must not die with it.
        let thread = Thread { started.withLock { $0 = IsolatedHeaderReader(executable: executable, timeout: 30) } }
        thread.start()
        while started.withLock({ $0 }) == nil { usleep(10_000) }
        let reader = try #require(started.withLock { $0 })
        defer { reader.close() }
        let pids = reader.processIDs
        #expect(pids.count == 2)
        usleep(300_000)
        #expect(pids.allSatisfy { kill($0, 0) == 0 }, "the decoder processes are alive after the thread that started them ended")
        let wrong = Mutex(0)
        DispatchQueue.concurrentPerform(iterations: 40) { i in
            let result = Result { () throws(ImagingError) in try reader.metadata(path: files[i % 2 == 0 ? 0 : 2]) }
            let ok: Bool
            switch result {
            case let .success(m): ok = i % 2 == 0 ? m == expected : m.modality == "CT"
            case .failure: ok = false
            }
            if !ok { wrong.withLock { $0 += 1 } }
        }
        #expect(wrong.withLock { $0 } == 0)
        #expect(reader.processIDs == pids, "the same decoder processes served every thread")
    }

    @Test("a header that hangs one shared decoder process does not hold up the other senders",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func hungHeaderDoesNotBlock() throws {
        let dir = try TemporaryDirectory()
        let files = try Self.sampleFiles(in: dir)
        let hanging = dir.path("hang-me.dcm")
        try FileManager.default.copyItem(atPath: files[0], toPath: hanging)
        var environment = ProcessInfo.processInfo.environment
        environment[DecoderService.faultVariable] = "hang:hang-me.dcm"
        let reader = IsolatedHeaderReader(executable: try #require(Executable.url).path, timeout: 5, environment: environment)
        defer { reader.close() }
        let finished = Mutex<String?>(nil)
        let thread = Thread {
            let outcome = Result { () throws(ImagingError) in try reader.metadata(path: hanging) }
            finished.withLock { $0 = "\(outcome)" }
        }
        thread.start()
        usleep(500_000)
        #expect(try reader.metadata(path: files[0]).modality == "CR")
        #expect(finished.withLock { $0 } == nil, "the other read finished while the hanging one was still held")
        while finished.withLock({ $0 }) == nil { usleep(50_000) }
        #expect(finished.withLock { $0 }?.contains("took longer than 5 s") == true, "\(finished.withLock { $0 } ?? "")")
    }

    @Test("a decoder process that answers too many frames, garbage, or more than it was asked is refused and replaced",
          arguments: [("too many frames", "printf '{\"outcome\":\"inputs\",\"frames\":100000}\\n'; exec cat /dev/zero", "answered with 100000 frames"),
                      ("garbage", "echo 'this is not JSON'; sleep 30", "gave an answer the daemon does not understand"),
                      ("two answers", "printf '{\"outcome\":\"not_applicable\",\"reason\":\"x\"}\\n{\"outcome\":\"checked\"}\\n'; sleep 30",
                       "garbled answer")])
    func misbehavingChild(_ name: String, _ script: String, _ expected: String) throws {
        let dir = try TemporaryDirectory()
        let fake = dir.path("fake-decoder")
        try "#!/bin/sh\nread request\n\(script)\n".write(toFile: fake, atomically: true, encoding: .utf8)
        chmod(fake, 0o755)
        let decoder = IsolatedDecoder(executable: fake, timeout: 10)
        defer { decoder.close() }
        decoder.start()
        let pid = try #require(decoder.childProcessID)
        let outcome = decoder.decode(path: dir.path("any.dcm"), spec: Self.spec, maximumPixels: Self.limit)
        guard case let .unreadable(.decoderFailed(_, reason)) = outcome else {
            Issue.record("\(name): expected a refusal, got \(Self.summary(outcome))")
            return
        }
        #expect(reason.contains(expected), "\(name): \(reason)")
        #expect(decoder.childProcessID == nil && kill(pid, 0) != 0, "\(name): the child is killed and reaped")
    }

    @Test("a study decoded by two decoder processes at once gives the outcomes, in order, of one decoder in this process",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func parallelDecoding() throws {
        let dir = try TemporaryDirectory()
        let files = try Self.sampleFiles(in: dir)
            + RadiographFactory.makeStudy(in: dir, prefix: "p", study: "1.2.826.0.1.3680043.8.498.80", count: 5, size: 200)
        try DaemonHarness.writeModel(to: dir.path("model.safetensors"), inputSize: 75)
        let classifier = try StudyClassifier(model: try TriageModel.load(path: dir.path("model.safetensors")), threads: 1)
        let executable = try #require(Executable.url).path
        let pair = [IsolatedDecoder(executable: executable, timeout: 30), IsolatedDecoder(executable: executable, timeout: 30)]
        defer { pair.forEach { $0.close() } }
        func describe(_ outcomes: [StudyClassifier.ImageOutcome]) -> [String] {
            outcomes.map { outcome in
                switch outcome {
                case let .probability(p): return "p \(p)"
                case let .notApplicable(reason): return "n/a \(reason)"
                case let .unreadable(error): return "error \(error)"
                }
            }
        }
        let serial = describe(classifier.outcomes(paths: files))
        let parallel = describe(classifier.outcomes(paths: files, decoders: pair))
        #expect(parallel == serial)
        #expect(serial.filter { $0.hasPrefix("p ") }.count == 7)
    }

    @Test("a decoder binary that cannot start: files are decoded in this process, and the log is told why",
          .enabled(if: DaemonHarness.toolsAvailable, "needs DCMTK's img2dcm"))
    func fallsBackInProcess() throws {
        let dir = try TemporaryDirectory()
        let files = try Self.sampleFiles(in: dir)
        let decoder = IsolatedDecoder(executable: dir.path("no-such-bonetriage"), timeout: 30)
        let events = Mutex<[String]>([])
        decoder.onEvent = { line in events.withLock { $0.append(line) } }
        let outcome = decoder.decode(path: files[0], spec: Self.spec, maximumPixels: Self.limit)
        #expect(Self.same(outcome, InProcessDecoder.decode(path: files[0], spec: Self.spec, maximumPixels: Self.limit)))
        let lines = events.withLock { $0 }
        #expect(lines.count == 1 && lines[0].contains("could not start") && lines[0].contains("No such file or directory"), "\(lines)")
    }

    /// A radiograph, an error's text, or PictureError's, to compare what the two renderings give.
    static func picture(_ body: () throws -> Radiograph) -> String {
        do {
            let r = try body()
            return "\(r.width)x\(r.height)x\(r.channels) \(r.pixels.hashValue)"
        } catch { return "error \(error)" }
    }

    @Test("a picture's radiograph rendered in the decoder process is byte-identical to one rendered here, reduced to fit 2048 px; errors too",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func radiographSameAsInProcess() throws {
        let dir = try TemporaryDirectory()
        let large = dir.path("large.dcm")
        try RadiographFactory.make(at: large, study: "1.2.826.0.1.3680043.8.498.79", seed: 6, size: 2300)
        let files = [large] + (try Self.sampleFiles(in: dir))
        let isolated = IsolatedRadiographs(executable: try #require(Executable.url).path, timeout: 30)
        defer { isolated.close() }
        for path in files {
            let there = Self.picture { try isolated.radiograph(path: path, maximumPixels: Self.limit) }
            let here = Self.picture { try InProcessRadiographs().radiograph(path: path, maximumPixels: Self.limit) }
            #expect(there == here, "\(path)")
        }
        let reduced = try isolated.radiograph(path: large, maximumPixels: Self.limit)
        #expect(reduced.width == 2048 && reduced.height == 2048 && reduced.channels == 1)
        #expect(throws: PictureError.fileGone(path: dir.path("missing.dcm"))) {
            try isolated.radiograph(path: dir.path("missing.dcm"), maximumPixels: Self.limit)
        }
    }

    @Test("a file that crashes the decoder while its picture is rendered costs that picture: an error saying so, and the next picture renders",
          .enabled(if: ready, "needs the built bonetriage binary and DCMTK's img2dcm"))
    func radiographCrashCostsOnePicture() throws {
        let dir = try TemporaryDirectory()
        let files = try RadiographFactory.makeStudy(in: dir, prefix: "image", study: "1.2.826.0.1.3680043.8.498.80", count: 2)
        var environment = ProcessInfo.processInfo.environment
        environment[DecoderService.faultVariable] = "crash-radiograph:image0.dcm"
        let events = Mutex<[String]>([])
        let isolated = IsolatedRadiographs(executable: try #require(Executable.url).path, timeout: 30, environment: environment) { line in
            events.withLock { $0.append(line) }
        }
        defer { isolated.close() }
        do {
            _ = try isolated.radiograph(path: files[0], maximumPixels: Self.limit)
            Issue.record("the crash should be an error")
        } catch let error as ImagingError {
            guard case let .decoderFailed(path, reason) = error else { Issue.record("\(error)"); return }
            #expect(path == files[0] && reason.contains("crashed the decoder process twice"), "\(reason)")
        }
        #expect(events.withLock { $0 }.contains { $0.hasPrefix("pictures: ") && $0.contains("crashed") })
        #expect(try isolated.radiograph(path: files[1], maximumPixels: Self.limit) == InProcessRadiographs().radiograph(path: files[1], maximumPixels: Self.limit))
        // The fault is the picture task's only: the same file's model inputs decode.
        let decoder = IsolatedDecoder(executable: try #require(Executable.url).path, timeout: 30, environment: environment)
        defer { decoder.close() }
        guard case .inputs = decoder.decode(path: files[0], spec: Self.spec, maximumPixels: Self.limit) else {
            Issue.record("the model inputs of the file should decode")
            return
        }
    }
}
