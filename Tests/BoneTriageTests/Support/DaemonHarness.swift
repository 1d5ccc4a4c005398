import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A `bonetriage serve` process on a free loopback port with a temporary configuration, folders,
/// worklist and a small synthetic model; stopped (SIGTERM) or killed (SIGKILL) by the test.
final class DaemonHarness {
    let dir: TemporaryDirectory
    var extraConfig: String
    /// `keep`, `archive` or `delete`: [storage] after_triage.
    var afterTriage = "keep"
    var quietPeriod: Double
    /// [dicom] acse_timeout_seconds, and further [dicom] lines (`extraConfig` lands in [triage]).
    var acseTimeout = 3
    var dicomConfig = ""
    private(set) var process: Process?
    private(set) var port: Int = 0
    private var logHandle: FileHandle?
    private var runs = 0

    static var toolsAvailable: Bool { ["storescu", "dcmsend", "echoscu", "img2dcm"].allSatisfy { DicomTools.find($0) != nil } }

    var root: String { dir.url.path }
    /// A PostgreSQL worklist (a connection URI) instead of the SQLite file in the test's folder.
    var postgresWorklist: String?
    /// `[worklist] node`: the name this daemon goes by in a shared worklist (nil: the host name).
    var worklistNode: String?
    /// The body of a `[worklist.postgresql]` table for the daemon (host, port, ...) instead of `[worklist] database`;
    /// the CLI still reads `postgresWorklist`.
    var postgresTable: String?
    var database: String { postgresWorklist ?? dir.path("worklist.sqlite") }
    var dropFolder: String { dir.path("drop") }
    var spool: String { dir.path("spool") }
    var archive: String { dir.path("archive") }
    var quarantine: String { dir.path("quarantine") }
    var configPath: String { dir.path("bonetriage.toml") }
    var statusFile: String { dir.path("status") }
    var logPath: String { dir.path("daemon-\(runs).log") }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    var allLogs: String { (1...max(runs, 1)).map { (try? String(contentsOfFile: dir.path("daemon-\($0).log"), encoding: .utf8)) ?? "" }.joined() }

    init(quietPeriod: Double = 1, inputSize: Int = 75, extraConfig: String = "") throws {
        dir = try TemporaryDirectory()
        self.quietPeriod = quietPeriod
        self.extraConfig = extraConfig
        try Self.writeModel(to: dir.path("model.safetensors"), inputSize: inputSize)
    }

    /// A test that failed half-way must not leave its daemon running (and loading the machine).
    deinit {
        if let p = process, p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
        }
    }

    /// A deterministic synthetic model (the daemon's behaviour, not the network's accuracy, is under test).
    /// `weightScale` and `bias` shape its head (a large bias: every study abnormal, flagged).
    static func writeModel(to path: String, inputSize: Int, modelID: String = "synthetic-daemon-test", weightScale: Float = 0.01,
                           bias: Float = 0, trainedAt: String = "2026-11-26T00:00:00Z") throws {
        let backbone = SyntheticWeights.backbone(variant: .keras, inputSize: inputSize)
        let description = HeadDescription(
            modelID: modelID, backboneVariant: .keras, backboneSHA256: BackboneFingerprint.of(backbone), inputSize: inputSize,
            inputRange: -1...1, resizeFilter: .area, threshold: 0.5, targetSensitivity: nil, bodyParts: ["HUMERUS"],
            trainingData: "none", trainedAt: trainedAt, crossValidation: "{}")
        let weights = (0..<2048).map { Float(sin(Double($0))) * weightScale }
        let model = try TriageModel(backbone: backbone, head: HeadFile(description: description, head: LogisticHead(weights: weights, bias: bias)))
        try model.file.write(path: path)
    }

    func writeConfig(port: Int = 0, callers: String = #"[{ ae_title = "STORESCU", hosts = ["127.0.0.1"] }, { ae_title = "DCMSEND" }, { ae_title = "ORTHANC", hosts = ["127.0.0.0/8"] }]"#) throws {
        let text = """
            [dicom]
            ae_title = "BONETRIAGE"
            bind_address = "127.0.0.1"
            port = \(port)
            allowed_callers = \(callers)
            acse_timeout_seconds = \(acseTimeout)
            \(dicomConfig)
            [drop_folder]
            path = "\(dropFolder)"
            [storage]
            spool = "\(spool)"
            archive = "\(dir.path("archive"))"
            quarantine = "\(quarantine)"
            results = "\(dir.path("results"))"
            after_triage = "\(afterTriage)"
            minimum_free_space_mb = 1
            [worklist]
            \(worklistNode.map { "node = \"\($0)\"" } ?? "")
            \(postgresTable.map { "[worklist.postgresql]\n" + $0 } ?? "database = \"\(database)\"")
            [model]
            path = "\(dir.path("model.safetensors"))"
            [service]
            status_file = "\(statusFile)"
            [triage]
            quiet_period_seconds = \(quietPeriod)
            engine_threads = 1
            \(extraConfig)
            """
        try text.write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Starts the daemon (writing the configuration first unless `keepConfig`) and waits until it listens.
    func start(keepConfig: Bool = false, logLevel: String = "info", environment: [String: String] = [:]) throws {
        if !keepConfig { try writeConfig(port: port) }
        runs += 1
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        let p = Process()
        guard let executable = Executable.url else { throw HarnessError.didNotStart("no bonetriage executable") }
        p.executableURL = executable
        p.arguments = ["serve", "--config", configPath, "--log-level", logLevel]
        if !environment.isEmpty { p.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new } }
        p.standardError = handle
        p.standardOutput = handle
        try p.run()
        process = p
        logHandle = handle
        let listening = try waitFor("listening", timeout: 30) { self.log.contains("listening") || !p.isRunning }
        guard listening, p.isRunning else { throw HarnessError.didNotStart(log) }
        if let range = log.range(of: #"address=127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
            port = Int(log[range].split(separator: ":").last ?? "") ?? 0
        }
    }

    enum HarnessError: Error, CustomStringConvertible {
        case didNotStart(String)
        case timeout(String)
        var description: String {
            switch self {
            case let .didNotStart(log): return "the daemon did not start:\n\(log)"
            case let .timeout(what): return "timed out waiting for \(what)"
            }
        }
    }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult
    func stop(timeout: Double = 30) throws -> Int32 {
        guard let p = process else { return 0 }
        p.terminate()
        _ = try waitFor("exit", timeout: timeout) { !p.isRunning }
        process = nil
        try? logHandle?.close()
        return p.terminationStatus
    }

    func kill9() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
        try? logHandle?.close()
    }

    func signal(_ number: Int32) {
        if let p = process { kill(p.processIdentifier, number) }
    }

    var isRunning: Bool { process?.isRunning ?? false }

    /// The daemon's isolated decoder processes (its children running `bonetriage decode-worker`).
    var decoderProcesses: [pid_t] {
        guard let pid = process?.processIdentifier else { return [] }
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        let children = tasks.flatMap { task in
            ((try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/children", encoding: .utf8)) ?? "").split(separator: " ").compactMap { pid_t($0) }
        }
        return children.filter { Self.isDecoder($0) }
    }

    static func isDecoder(_ pid: pid_t) -> Bool {
        guard let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
        return String(decoding: cmdline, as: UTF8.self).contains("decode-worker")
    }

    @discardableResult
    func waitFor(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return true }
            usleep(50_000)
        }
        throw HarnessError.timeout(what)
    }

    // MARK: The worklist, through the CLI as a radiologist sees it

    func studies() throws -> [[String: Any]] {
        guard postgresWorklist != nil || FileManager.default.fileExists(atPath: database) else { return [] }
        let r = try Executable.run(["list", "--db", database, "--format", "json"])
        guard r.status == 0 else { throw HarnessError.timeout("list: \(r.stderr)") }
        return (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]]) ?? []
    }

    /// `bonetriage show --format json` for one study: its row, its images and its review trail.
    func show(_ uid: String) throws -> (study: [String: Any], images: [[String: Any]], reviews: [[String: Any]]) {
        let r = try Executable.run(["show", uid, "--db", database, "--format", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        return (try #require(object["study"] as? [String: Any]), try #require(object["images"] as? [[String: Any]]),
                try #require(object["reviews"] as? [[String: Any]]))
    }

    func study(uid: String) throws -> [String: Any]? {
        try studies().first { $0["study_instance_uid"] as? String == uid }
    }

    /// Waits until every given study has left the receiving/pending states; returns them by UID.
    func waitForTriage(_ uids: [String], timeout: Double = 60) throws -> [String: [String: Any]] {
        var found: [String: [String: Any]] = [:]
        try waitFor("triage of \(uids.count) studies; log:\n\(allLogs)", timeout: timeout) {
            let all = try studies()
            found = Dictionary(all.compactMap { s in (s["study_instance_uid"] as? String).map { ($0, s) } }, uniquingKeysWith: { a, _ in a })
            return uids.allSatisfy { uid in
                guard let state = found[uid]?["state"] as? String else { return false }
                return state != "receiving" && state != "pending"
            }
        }
        return found
    }

    // MARK: Senders

    struct Run: Sendable {
        let status: Int32
        let output: String
    }

    /// Runs a tool found on PATH (or given by its path), stdout and stderr together.
    static func run(_ tool: String, _ arguments: [String]) throws -> Run {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool.hasPrefix("/") ? tool : try #require(DicomTools.find(tool)))
        p.arguments = arguments
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
    }

    func storescu(_ files: [String], callingAE: String = "STORESCU", calledAE: String = "BONETRIAGE", extra: [String] = []) throws -> Run {
        try Self.run("storescu", ["-aet", callingAE, "-aec", calledAE] + extra + ["127.0.0.1", "\(port)"] + files)
    }

    func dcmsend(_ files: [String], callingAE: String = "DCMSEND") throws -> Run {
        try Self.run("dcmsend", ["-aet", callingAE, "-aec", "BONETRIAGE", "127.0.0.1", "\(port)"] + files)
    }

    func echo(callingAE: String = "STORESCU") throws -> Run {
        try Self.run("echoscu", ["-aet", callingAE, "-aec", "BONETRIAGE", "127.0.0.1", "\(port)"])
    }
}

/// Small self-made radiographs: an 8-bit test pattern made into DICOM by DCMTK's img2dcm, with the
/// study, body part and patient the test chooses.
enum RadiographFactory {
    static func make(at path: String, study: String, modality: String = "CR", bodyPart: String? = "HUMERUS", seed: Int = 0,
                     expectedInstances: Int? = nil, size: Int = 96, sopInstanceUID: String? = nil) throws {
        let bmp = path + ".bmp"
        let gray = SyntheticWeights.testImage(size: size, seed: seed)
        try DicomTools.writeBMP(Radiograph(width: size, height: size, channels: 1, pixels: gray), to: bmp)
        var keys = ["-k", "0020,000d=\(study)", "-k", "0008,0060=\(modality)", "-k", "0010,0010=Test^Patient", "-k", "0010,0020=TEST-\(Study.shortID(for: study).prefix(6))"]
        if let bodyPart { keys += ["-k", "0018,0015=\(bodyPart)"] }
        if let expectedInstances { keys += ["-k", "0020,1208=\(expectedInstances)"] }
        if let sopInstanceUID { keys += ["-k", "0008,0018=\(sopInstanceUID)"] }
        try DicomTools.run("img2dcm", ["-i", "BMP"] + keys + [bmp, path])
        unlink(bmp)
    }

    /// `count` images of one study in `folder`, named `<prefix><n>.dcm`.
    static func makeStudy(in folder: TemporaryDirectory, prefix: String, study: String, count: Int, size: Int = 96) throws -> [String] {
        try (0..<count).map { i in
            let path = folder.path("\(prefix)\(i).dcm")
            try make(at: path, study: study, seed: i, size: size)
            return path
        }
    }

    /// The SOP Instance UID img2dcm gave a file.
    static func sopInstanceUID(_ path: String) throws -> String {
        try #require(try DicomReader.metadata(path: path).sopInstanceUID)
    }
}
