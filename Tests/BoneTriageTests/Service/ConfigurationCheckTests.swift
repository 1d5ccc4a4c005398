import BoneTriage
import Foundation
import Testing

@Suite("serve --check-config: what will not work, what is likely wrong")
struct ConfigurationCheckTests {
    /// A configuration that passes every check, in a temporary folder.
    static func usable(_ dir: TemporaryDirectory) throws -> BoneTriageConfiguration {
        var c = BoneTriageConfiguration()
        let model = dir.path("model.safetensors")
        try Data("m".utf8).write(to: URL(fileURLWithPath: model))
        c.modelPath = model
        c.bindAddress = "127.0.0.1"
        c.allowedCallers = [AllowedCaller(aeTitle: "PACS")]
        c.databasePath = dir.path("state/worklist.sqlite")
        c.spoolFolder = dir.path("state/spool")
        c.archiveFolder = dir.path("state/archive")
        c.quarantineFolder = dir.path("state/quarantine")
        c.dropFolder = dir.path("drop")
        c.workers = 1
        c.engineThreads = 0
        return c
    }

    let check = ConfigurationCheck(cores: 4, defaultModelPath: { "/nonexistent/default/humerus.safetensors" })

    @Test("a usable configuration has no finding; missing folders are fine when they can be created")
    func usable() throws {
        let dir = try TemporaryDirectory()
        #expect(check.findings(try Self.usable(dir)) == [])
        var everywhere = try Self.usable(dir)
        everywhere.bindAddress = "0.0.0.0"
        #expect(check.findings(everywhere) == [])
    }

    @Test("a model file that does not exist, or none set and no default model")
    func model() throws {
        let dir = try TemporaryDirectory()
        var c = try Self.usable(dir)
        c.modelPath = dir.path("missing.safetensors")
        #expect(check.findings(c).map(\.description) == ["[model] path: \(dir.path("missing.safetensors")) does not exist"])
        #expect(check.findings(c).first?.severity == .failure)
        c.modelPath = dir.path("state")
        try FileManager.default.createDirectory(atPath: dir.path("state"), withIntermediateDirectories: true)
        #expect(check.findings(c).map(\.description) == ["[model] path: \(dir.path("state")) is not a regular file"])
        c.modelPath = nil
        let none = check.findings(c).map(\.description)
        #expect(none.count == 1 && none[0].hasPrefix("[model] path: not set, and the default model /nonexistent/default/humerus.safetensors does not exist"), "\(none)")
    }

    @Test("a bind address that is not this machine's")
    func bindAddress() throws {
        let dir = try TemporaryDirectory()
        var c = try Self.usable(dir)
        c.bindAddress = "192.0.2.77"  // TEST-NET-1: never assigned to a host
        let found = check.findings(c)
        #expect(found.count == 1 && found[0].severity == .failure)
        #expect(found[0].description.hasPrefix("[dicom] bind_address: 192.0.2.77 is not an address of this machine"), "\(found)")
    }

    @Test("unwritable folders: the database's, the spool, the quarantine, the archive when used, the drop folder; a file in a folder's place")
    func folders() throws {
        let dir = try TemporaryDirectory()
        try Data("f".utf8).write(to: URL(fileURLWithPath: dir.path("plain-file")))
        var c = try Self.usable(dir)
        // /proc takes no new file, even from root (the tests may run as root, for whom modes do not count).
        c.databasePath = "/proc/bonetriage/worklist.sqlite"
        c.spoolFolder = dir.path("plain-file/spool")
        c.quarantineFolder = dir.path("plain-file")
        c.dropFolder = "/proc/drop"
        c.afterTriage = .archive
        c.archiveFolder = "/proc/sys/archive"
        let found = check.findings(c)
        #expect(found.allSatisfy { $0.severity == .failure })
        let text = found.map(\.description)
        #expect(text.contains { $0.hasPrefix("[worklist] database: the database's folder /proc/bonetriage cannot be created: /proc is not writable") }, "\(text)")
        #expect(text.contains("[storage] spool: \(dir.path("plain-file/spool")) cannot be created: \(dir.path("plain-file")) is a file, not a folder"), "\(text)")
        #expect(text.contains("[storage] quarantine: \(dir.path("plain-file")) is a file, not a folder"), "\(text)")
        #expect(text.contains { $0.hasPrefix("[storage] archive: /proc/sys/archive cannot be created") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("[drop_folder] path: /proc/drop cannot be created") }, "\(text)")
        #expect(found.count == 5, "\(text)")
        // The archive only matters when studies go there.
        c.afterTriage = .keep
        #expect(!check.findings(c).contains { $0.setting == "[storage] archive" })
    }

    @Test("warnings: no allowed callers, more triage threads than cores")
    func warnings() throws {
        let dir = try TemporaryDirectory()
        var c = try Self.usable(dir)
        c.allowedCallers = []
        let callers = check.findings(c)
        #expect(callers.count == 1 && callers[0].severity == .warning && callers[0].setting == "[dicom] allowed_callers", "\(callers)")
        #expect(callers[0].problem.contains("every association is refused"))

        c = try Self.usable(dir)
        c.workers = 2  // engine_threads 0: one thread per core each, 8 on 4 cores
        let threads = check.findings(c)
        #expect(threads.map(\.description) == ["[triage] workers: 2 worker(s) with engine_threads = 0 (one thread per core) make 8 triage threads on 4 core(s): "
            + "they slow each other down; keep workers x engine_threads at most 4"])
        #expect(threads.first?.severity == .warning)
        c.engineThreads = 2
        #expect(check.findings(c) == [])
        c.workers = 5
        c.engineThreads = 1
        #expect(check.findings(c).map(\.setting) == ["[triage] workers"])
    }

    @Test("[triage] precision bfloat16 is a warning that says what it costs and how to check it; float32 is nothing")
    func precision() throws {
        let dir = try TemporaryDirectory()
        var c = try Self.usable(dir)
        c.precision = .bfloat16
        let found = check.findings(c)
        #expect(found.count == 1 && found.first?.setting == "[triage] precision" && found.first?.severity == .warning, "\(found)")
        #expect(found.first?.problem.contains("`bonetriage model precision --data FOLDER`") == true)
        c.precision = .float32
        #expect(check.findings(c) == [])
    }

    @Test("[triage] kernels auto with a $BONETRIAGE_KERNELS this CPU cannot run, or that names nothing, is a failure")
    func kernelsFromEnvironment() throws {
        let c = BoneTriageConfiguration()
        func kernelFindings(_ environment: [String: String]) -> [ConfigurationCheck.Finding] {
            ConfigurationCheck(cores: 2, defaultModelPath: { "/nonexistent" }, environment: environment).findings(c)
                .filter { $0.setting == "[triage] kernels" }
        }
        #expect(kernelFindings([:]).isEmpty)
        #expect(kernelFindings(["BONETRIAGE_KERNELS": "portable"]).isEmpty)
        let bad = kernelFindings(["BONETRIAGE_KERNELS": "turbo"])
        #expect(bad.count == 1 && bad.first?.severity == .failure)
        #expect(bad.first?.problem.contains("'turbo' is not a kernel family") == true, "\(bad)")
        if !KernelFamily.avx512.isSupported {
            #expect(kernelFindings(["BONETRIAGE_KERNELS": "avx512"]).first?.problem.contains("cannot run on this CPU") == true)
        }
        // A family named in the file wins over the environment.
        var pinned = c
        pinned.kernels = .portable
        #expect(ConfigurationCheck(cores: 2, defaultModelPath: { "/nonexistent" }, environment: ["BONETRIAGE_KERNELS": "turbo"]).findings(pinned)
            .filter { $0.setting == "[triage] kernels" }.isEmpty)
    }
}
