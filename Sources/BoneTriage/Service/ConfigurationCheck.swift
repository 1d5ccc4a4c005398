import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `serve --check-config` finds beyond the file's syntax: settings that will not work on this
/// machine (failures: the daemon would not start, or would not triage) and settings that are likely
/// wrong (warnings). Each finding names its section and key, as in the file.
public struct ConfigurationCheck: Sendable {
    public struct Finding: Sendable, Equatable, CustomStringConvertible {
        public enum Severity: Sendable, Equatable { case failure, warning }
        public var severity: Severity
        /// "[model] path"
        public var setting: String
        public var problem: String

        public var description: String { "\(setting): \(problem)" }
    }

    /// The cores the triage threads share (this machine's, by default).
    public var cores: Int
    /// The default model's path when `[model] path` is not set.
    public var defaultModelPath: @Sendable () -> String
    /// The daemon's environment ($BONETRIAGE_KERNELS).
    public var environment: [String: String]

    public init(cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                defaultModelPath: @escaping @Sendable () -> String = { DefaultModel.path() },
                environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.cores = cores
        self.defaultModelPath = defaultModelPath
        self.environment = environment
    }

    public func findings(_ c: BoneTriageConfiguration) -> [Finding] {
        var found: [Finding] = []
        func fail(_ setting: String, _ problem: String) { found.append(Finding(severity: .failure, setting: setting, problem: problem)) }
        func warn(_ setting: String, _ problem: String) { found.append(Finding(severity: .warning, setting: setting, problem: problem)) }

        // [model]
        if let path = c.modelPath {
            if let problem = Self.unreadableFile(path) { fail("[model] path", "\(path) \(problem)") }
        } else {
            let path = defaultModelPath()
            if let problem = Self.unreadableFile(path) {
                fail("[model] path", "not set, and the default model \(path) \(problem); set it to a model file made by `bonetriage model join` (or run make install)")
            }
        }
        // [dicom]
        if let problem = Self.bindProblem(c.bindAddress) {
            fail("[dicom] bind_address", "\(c.bindAddress) \(problem)")
        }
        if c.allowedCallers.isEmpty {
            warn("[dicom] allowed_callers", "none, so every association is refused and nothing can be stored over DICOM; add your PACS's AE title and address")
        }
        // Folders the daemon writes (it creates missing ones).
        var folders = [("[storage] spool", c.spoolFolder, ""), ("[storage] quarantine", c.quarantineFolder, "")]
        if c.postgresConnection == nil {
            folders.insert(("[worklist] database", (c.databasePath as NSString).deletingLastPathComponent, "the database's folder "), at: 0)
        }
        if let file = c.postgresSettings?.passwordFile {
            // libpq ignores, with only a warning, a password file that others may read.
            if let problem = Self.unreadableFile(file) {
                fail("[worklist.postgresql] password_file", "\(file) \(problem); create it in ~/.pgpass format (host:port:database:user:password), "
                     + "owned by the daemon's user, mode 0600")
            } else if let mode = Self.permissions(file), mode & 0o077 != 0 {
                fail("[worklist.postgresql] password_file", "\(file) has mode \(String(mode, radix: 8)): others may read it, and libpq ignores such a "
                     + "file; run chmod 600 \(file)")
            }
        }
        if !c.resultDestinations.isEmpty { folders.append(("[storage] results", c.resultsFolder, "")) }
        if c.afterTriage == .archive { folders.append(("[storage] archive", c.archiveFolder, "")) }
        if let drop = c.dropFolder { folders.append(("[drop_folder] path", drop, "")) }
        for (setting, folder, what) in folders {
            if let problem = Self.unwritableFolder(folder) { fail(setting, "\(what)\(folder) \(problem)") }
        }
        // [triage]
        let perWorker = c.engineThreads > 0 ? c.engineThreads : cores
        let threads = c.workers * perWorker
        if threads > cores {
            let engine = c.engineThreads > 0 ? "engine_threads = \(c.engineThreads)" : "engine_threads = 0 (one thread per core)"
            warn("[triage] workers", "\(c.workers) worker(s) with \(engine) make \(threads) triage threads on \(cores) core(s): they slow each other down; "
                + "keep workers x engine_threads at most \(cores)")
        }
        if c.precision.format == .bfloat16 {
            warn("[triage] precision", "bfloat16 moves each probability by up to about 0.01 from float32 (MURA humerus: 0.0089), and the model's "
                + "threshold was chosen in float32, so a study near it may change verdict (1 of 592 there); check it on this site's labelled "
                + "studies with `bonetriage model precision --data FOLDER` before relying on it")
        }
        if c.kernels == nil, let named = environment[KernelFamily.environmentVariable] {
            do { _ = try KernelFamily.named(named) } catch {
                fail("[triage] kernels", "auto, and $\(KernelFamily.environmentVariable) = \"\(named)\" would stop every triage: \(error)")
            }
        }
        return found
    }

    /// A PostgreSQL worklist, checked by connecting to it (nothing is changed): a server that does not
    /// answer, a read-only one, a schema newer than this BoneTriage, or a login that may neither own nor
    /// create the schema is a failure; `summary` says what was found (nil for a SQLite worklist).
    public func worklistFindings(_ c: BoneTriageConfiguration) -> (findings: [Finding], summary: String?) {
        guard let conninfo = c.postgresConnection else { return ([], nil) }
        let setting = c.postgresSettings == nil ? "[worklist] database" : "[worklist.postgresql]"
        do {
            let probe = try PostgresWorklistProbe.probe(connection: conninfo)
            let found = probe.problem.map { [Finding(severity: .failure, setting: setting, problem: $0)] } ?? []
            return (found, probe.summary)
        } catch {
            let problem: String
            if case let WorklistError.databaseUnreachable(server, reason, _) = error {
                problem = "cannot reach the worklist database \(server): \(reason); the daemon would wait for it at start and receive nothing "
                    + "(check that PostgreSQL runs there and accepts this host: pg_isready -h HOST -p PORT; a password belongs in password_file or ~/.pgpass)"
            } else {
                problem = "\(error)"
            }
            return ([Finding(severity: .failure, setting: setting, problem: problem)], nil)
        }
    }

    /// The permission bits of a file, nil when it cannot be seen.
    static func permissions(_ path: String) -> mode_t? {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mode & 0o7777 : nil
    }

    /// Nil when `path` is a readable regular file; otherwise what is wrong with it.
    static func unreadableFile(_ path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return errno == ENOENT || errno == ENOTDIR ? "does not exist" : "cannot be read: \(Self.errorText())" }
        guard st.st_mode & S_IFMT == S_IFREG else { return "is not a regular file" }
        guard access(path, R_OK) == 0 else { return "is not readable by this user (\(Self.errorText()))" }
        return nil
    }

    /// Nil when this machine can listen on `address` (tried on port 0, so a running daemon does not matter).
    static func bindProblem(_ address: String) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return "cannot be tried: socket: \(errorText())" }
        defer { close(fd) }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = 0
        guard inet_pton(AF_INET, address, &sin.sin_addr) == 1 else { return "is not an IPv4 address" }
        let result = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard result != 0 else { return nil }
        if errno == EADDRNOTAVAIL {
            return "is not an address of this machine (\(errorText())); use \"0.0.0.0\" for every interface or one of `ip -4 addr`'s addresses"
        }
        return "cannot be listened on: \(errorText())"
    }

    /// Nil when the daemon can write in `folder`: it is a writable folder, or it is missing and the
    /// nearest existing folder above it is writable (the daemon creates the rest). Tried by creating
    /// and removing a file, so that a read-only file system counts too.
    static func unwritableFolder(_ folder: String) -> String? {
        var path = folder
        var missing = false
        var st = stat()
        while stat(path, &st) != 0 {
            // ENOTDIR: a file stands where a folder above it should be; found on the way up.
            guard errno == ENOENT || errno == ENOTDIR else { return "cannot be checked: \(errorText())" }
            missing = true
            let parent = (path as NSString).deletingLastPathComponent
            if parent == path || parent.isEmpty { return "cannot be created: no folder above it exists" }
            path = parent
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            return missing ? "cannot be created: \(path) is a file, not a folder" : "is a file, not a folder"
        }
        var template = Array((path == "/" ? "/" : path + "/").utf8CString.dropLast()) + Array(".bonetriage-check-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { buffer in buffer.baseAddress.map { mkstemp($0) } ?? -1 }
        guard fd >= 0 else {
            let reason = errorText()
            return missing ? "cannot be created: \(path) is not writable by this user (\(reason))" : "is not writable by this user (\(reason))"
        }
        close(fd)
        template.withUnsafeBufferPointer { buffer in _ = buffer.baseAddress.map { unlink($0) } }
        return nil
    }

    static func errorText() -> String { String(cString: strerror(errno)) }
}
