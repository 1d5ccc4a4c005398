import Foundation
import TOMLKit

/// A configuration that cannot be used, with every problem found (key, value, why).
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let problems: [String]

    public var description: String {
        "configuration \(path) cannot be used:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}

/// A peer allowed to send: its calling AE title, and the addresses it may call from (none: any address).
public struct AllowedCaller: Sendable, Equatable {
    public var aeTitle: String
    public var hosts: [IPv4Range]

    public init(aeTitle: String, hosts: [IPv4Range] = []) {
        self.aeTitle = aeTitle
        self.hosts = hosts
    }

    public func admits(aeTitle title: String, from address: String) -> Bool {
        guard title == aeTitle else { return false }
        guard !hosts.isEmpty else { return true }
        guard let ip = IPv4Range.parseAddress(address) else { return false }
        return hosts.contains { $0.contains(ip) }
    }
}

/// An IPv4 address or CIDR block ("10.1.2.3", "10.1.0.0/16").
public struct IPv4Range: Sendable, Equatable, CustomStringConvertible {
    public let network: UInt32
    public let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let address = Self.parseAddress(String(parts[0])) else { return nil }
        let prefix = parts.count == 2 ? Int(parts[1]) : 32
        guard let prefix, (0...32).contains(prefix) else { return nil }
        self.prefix = prefix
        network = address & Self.mask(prefix)
    }

    static func mask(_ prefix: Int) -> UInt32 { prefix == 0 ? 0 : ~UInt32(0) << (32 - prefix) }

    public static func parseAddress(_ text: String) -> UInt32? {
        let octets = text.split(separator: ".", omittingEmptySubsequences: false)
        guard octets.count == 4 else { return nil }
        var value: UInt32 = 0
        for octet in octets {
            guard !octet.isEmpty, octet.count <= 3, octet.allSatisfy(\.isASCII), let n = UInt32(octet), n <= 255 else { return nil }
            value = value << 8 | n
        }
        return value
    }

    public func contains(_ address: UInt32) -> Bool { address & Self.mask(prefix) == network }

    public var description: String {
        let octets = [24, 16, 8, 0].map { String((network >> UInt32($0)) & 0xFF) }.joined(separator: ".")
        return prefix == 32 ? octets : "\(octets)/\(prefix)"
    }
}

/// What happens to a study's files once its triage is recorded.
public enum PostTriageAction: String, Sendable, CaseIterable {
    /// Leave them in the spool.
    case keep
    /// Move them under the archive folder (the worklist follows them).
    case archive
    /// Delete them; a later instance of the same study re-uses the recorded per-image probabilities.
    case delete
}

/// A size limit for a folder: a share of its file system, or a number of bytes.
public enum StorageLimit: Sendable, Equatable, CustomStringConvertible {
    case none
    case percentOfFileSystem(Double)
    case bytes(UInt64)

    /// "25%", "40 GB", "500 MiB", "1.5 TB", or "0" / "none" for no limit. Units: kB MB GB TB (powers of
    /// 1000) and KiB MiB GiB TiB (powers of 1024).
    public init?(_ text: String) {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t == "0" || t.lowercased() == "none" { self = .none; return }
        if t.hasSuffix("%") {
            guard let p = Double(t.dropLast().trimmingCharacters(in: .whitespaces)), p > 0, p <= 100 else { return nil }
            self = .percentOfFileSystem(p)
            return
        }
        let units: [(String, Double)] = [("KiB", 1024), ("MiB", 1_048_576), ("GiB", 1_073_741_824), ("TiB", 1_099_511_627_776),
                                         ("kB", 1e3), ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)]
        for (unit, scale) in units where t.hasSuffix(unit) {
            guard let n = Double(t.dropLast(unit.count).trimmingCharacters(in: .whitespaces)), n > 0, n * scale < 1e18 else { return nil }
            self = .bytes(UInt64(n * scale))
            return
        }
        return nil
    }

    /// The limit in bytes for a file system of `fileSystemBytes`; nil for no limit.
    public func bytes(ofFileSystem fileSystemBytes: UInt64) -> UInt64? {
        switch self {
        case .none: return nil
        case let .percentOfFileSystem(p): return UInt64(Double(fileSystemBytes) * p / 100)
        case let .bytes(b): return b
        }
    }

    public var description: String {
        switch self {
        case .none: return "none"
        case let .percentOfFileSystem(p): return String(format: "%g%% of its file system", p)
        case let .bytes(b): return "\(b / 1_000_000) MB"
        }
    }
}

/// BoneTriage's settings, read from one TOML file (`etc/bonetriage.toml` is the commented example).
/// Every key has a documented default, so an empty file is a valid configuration.
public struct BoneTriageConfiguration: Sendable, Equatable {
    public static let defaultPath = "/etc/bonetriage/bonetriage.toml"
    public static let stateDirectory = "/var/lib/bonetriage"
    public static let defaultDatabasePath = stateDirectory + "/worklist.sqlite"

    // [dicom]
    public var aeTitle = "BONETRIAGE"
    public var bindAddress = "0.0.0.0"
    public var port = 11112
    public var allowedCallers: [AllowedCaller] = []
    public var maxAssociations = 8
    /// TCP connections accepted but still waiting for their A-ASSOCIATE-RQ (at most acse_timeout each):
    /// in all, and from one IPv4 address. A connection beyond either limit is closed at once; one from an
    /// address in an allowed caller's hosts is held to the per-address limit only.
    public var maxPendingConnections = 64
    public var maxPendingConnectionsPerAddress = 8
    public var acseTimeout = 10
    public var dimseTimeout = 60
    public var maxPDU = 65536
    // [drop_folder]
    public var dropFolder: String? = stateDirectory + "/drop"
    /// Seconds between retries of dropped files that could not be stored (disk full, worklist locked).
    public var dropRetryInterval: Double = 30
    /// Seconds a drop-folder folder must stay empty and unchanged before it is removed (with its inotify watch).
    public var dropRemoveEmptyFoldersAfter: Double = 120
    // [storage]
    public var spoolFolder = stateDirectory + "/spool"
    public var archiveFolder = stateDirectory + "/archive"
    public var quarantineFolder = stateDirectory + "/quarantine"
    public var afterTriage = PostTriageAction.keep
    public var minimumFreeSpaceMB = 512
    /// Files of finished studies (triaged, not applicable, failed) are removed from the spool and the
    /// archive this many days after they finished; 0 keeps them whatever their age.
    public var retentionDays: Double = 30
    /// Beyond these sizes, the files of the oldest finished studies are removed first.
    public var spoolLimit = StorageLimit.percentOfFileSystem(25)
    public var archiveLimit = StorageLimit.percentOfFileSystem(25)
    /// Seconds between two retention passes (one also runs at start).
    public var retentionInterval: Double = 300
    /// Where result objects (SR, SC) are made before they are sent.
    public var resultsFolder = stateDirectory + "/results"
    // [[results]]
    /// Where results go; none: nothing is queued or sent.
    public var resultDestinations: [ResultDestination] = []
    // [delivery]
    public var delivery = DeliveryPolicy()
    // [worklist]
    /// The SQLite worklist (when no PostgreSQL worklist is configured).
    public var databasePath: String = defaultDatabasePath
    /// A PostgreSQL worklist: a libpq connection string or URI (`[worklist] database = "postgresql://..."`,
    /// or built from `[worklist.postgresql]`). Nil: the SQLite worklist at `databasePath`.
    public var postgresConnection: String?
    /// `[worklist.postgresql]` as given (nil when absent): `postgresConnection` is made from it.
    public var postgresSettings: PostgresSettings?
    /// The name this daemon goes by in a shared worklist (`[worklist] node`): the holder of the files it
    /// records and the owner of its triage claims. Stable across restarts (its open claims are its own).
    public var worklistNode: String = WorklistNode.local
    /// How long a study whose images are spread over several nodes, none holding all, waits for one that
    /// does before a node triages the images it holds (`[worklist] split_study_wait_seconds`).
    public var splitStudyWait: Double = 120
    /// The worklist these settings name.
    public var worklistLocation: WorklistLocation {
        postgresConnection.map { .postgresql(connection: $0) } ?? .sqlite(path: databasePath)
    }
    // [model]
    /// Nil: the default model's search path (`$BONETRIAGE_MODEL`, then the state directory, then the checkout).
    public var modelPath: String?
    // [triage]
    public var quietPeriod: Double = 30
    public var workers = 1
    /// Threads per worker's engine; 0 means every core.
    public var engineThreads = 0
    /// The engine's kernel family; nil ("auto") is $BONETRIAGE_KERNELS when set, else the CPU's best.
    public var kernels: KernelFamily?
    /// The convolutions' precision: float32, or bfloat16 on CPUs with AVX512-BF16 (opt-in; see the README's "Reduced precision").
    public var precision = ConvolutionArithmetic.float32
    public var coveredBodyParts: [String] = ["HUMERUS", "ARM"]
    public var triageUnknownBodyPart = false
    public var maximumMegapixels = 256
    /// Read headers and decode images in child processes (`bonetriage decode-worker`), so that a file
    /// that crashes or hangs a decoder costs that file, not the daemon.
    public var isolateDecoder = true
    public var decodeTimeout: Double = 60
    /// Decoder processes per triage worker: a study's images are decoded this many at a time.
    public var decodersPerWorker = 2
    // [heatmaps]
    /// Which triaged studies get heatmaps (where the model looked), made after the verdict is recorded
    /// while no study waits for triage.
    public var heatmapScope = HeatmapScope.flagged
    // [service]
    /// The running daemon's counts for `bonetriage status` (systemd's RuntimeDirectory=, removed at stop).
    public var statusFile = defaultStatusFile

    public static let defaultStatusFile = "/run/bonetriage/status"

    public init() {}

    public static func load(path: String) throws -> BoneTriageConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: path) ? "it is not readable UTF-8 text" : "the file does not exist"
            throw ConfigurationError(path: path, problems: ["\(reason); give --config PATH or install the example from etc/bonetriage.toml"])
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String) throws -> BoneTriageConfiguration {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(path: path, problems: ["TOML syntax error at line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)"])
        }
        var reader = ConfigurationReader(root: table)
        var c = BoneTriageConfiguration()
        reader.knownSections(["dicom", "drop_folder", "storage", "worklist", "model", "triage", "heatmaps", "service", "results", "delivery"])

        reader.section("dicom", keys: ["ae_title", "bind_address", "port", "allowed_callers", "max_associations",
                                       "max_pending_connections", "max_pending_connections_per_address",
                                       "acse_timeout_seconds", "dimse_timeout_seconds", "max_pdu"]) { r in
            r.string("ae_title", into: &c.aeTitle, rule: "1 to 16 characters of printable ASCII without backslash, e.g. \"BONETRIAGE\"") { Self.isAETitle($0) }
            r.string("bind_address", into: &c.bindAddress, rule: "an IPv4 address: \"0.0.0.0\" for every interface, \"127.0.0.1\" for this machine only") {
                IPv4Range.parseAddress($0) != nil
            }
            r.integer("port", into: &c.port, range: 0...65535, rule: "a TCP port (104 needs CAP_NET_BIND_SERVICE; 11112 does not; 0 picks a free one, for tests)")
            r.integer("max_associations", into: &c.maxAssociations, range: 1...256)
            r.integer("max_pending_connections", into: &c.maxPendingConnections, range: 1...4096)
            r.integer("max_pending_connections_per_address", into: &c.maxPendingConnectionsPerAddress, range: 1...4096)
            r.integer("acse_timeout_seconds", into: &c.acseTimeout, range: 1...600)
            r.integer("dimse_timeout_seconds", into: &c.dimseTimeout, range: 1...3600)
            r.integer("max_pdu", into: &c.maxPDU, range: 4096...131_072, rule: "bytes, between 4096 and 131072")
            c.allowedCallers = r.callers("allowed_callers")
        }
        reader.section("drop_folder", keys: ["path", "retry_seconds", "remove_empty_folders_after_seconds"]) { r in
            var path = c.dropFolder ?? ""
            r.string("path", into: &path, rule: "an absolute path, or \"\" to turn the drop folder off") { $0.isEmpty || $0.hasPrefix("/") }
            c.dropFolder = path.isEmpty ? nil : path
            r.number("retry_seconds", into: &c.dropRetryInterval, range: 1...86_400)
            r.number("remove_empty_folders_after_seconds", into: &c.dropRemoveEmptyFoldersAfter, range: 0...86_400)
        }
        reader.section("storage", keys: ["spool", "archive", "quarantine", "after_triage", "minimum_free_space_mb",
                                         "retention_days", "spool_limit", "archive_limit", "retention_interval_seconds", "results"]) { r in
            r.absolutePath("spool", into: &c.spoolFolder)
            r.absolutePath("archive", into: &c.archiveFolder)
            r.absolutePath("quarantine", into: &c.quarantineFolder)
            var action = c.afterTriage.rawValue
            r.string("after_triage", into: &action, rule: "one of \"keep\", \"archive\", \"delete\"") { PostTriageAction(rawValue: $0) != nil }
            c.afterTriage = PostTriageAction(rawValue: action) ?? c.afterTriage
            r.integer("minimum_free_space_mb", into: &c.minimumFreeSpaceMB, range: 0...1_000_000)
            r.number("retention_days", into: &c.retentionDays, range: 0...36_500, rule: "a number of days (0 keeps files whatever their age)")
            r.limit("spool_limit", into: &c.spoolLimit)
            r.limit("archive_limit", into: &c.archiveLimit)
            r.number("retention_interval_seconds", into: &c.retentionInterval, range: 1...86_400)
            r.absolutePath("results", into: &c.resultsFolder)
        }
        reader.section("worklist", keys: ["database", "postgresql", "node", "split_study_wait_seconds"]) { r in
            r.string("node", into: &c.worklistNode, rule: "a name of 1 to 63 letters, digits, dots, dashes or underscores, e.g. \"triage-1\"") {
                (1...63).contains($0.count) && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
            }
            r.number("split_study_wait_seconds", into: &c.splitStudyWait, range: 0...86_400)
            var database = c.databasePath
            r.string("database", into: &database, rule: "an absolute path in quotes (a SQLite file), e.g. \"\(defaultDatabasePath)\", "
                     + "or a PostgreSQL URI, e.g. \"postgresql://bonetriage@db.example/bonetriage?sslmode=verify-full\"") {
                ($0.hasPrefix("/") && $0.count > 1) || PostgresSettings.isURI($0)
            }
            if PostgresSettings.isURI(database) {
                if PostgresSettings.uriHasPassword(database) {
                    r.problems.append("[worklist] database: the URI holds a password; leave it out and put it in a password file "
                                      + "([worklist.postgresql] password_file, or ~/.pgpass of the daemon's user), which only the daemon may read")
                }
                c.postgresConnection = database
            } else {
                c.databasePath = database
            }
            if let settings = r.postgresSettings("postgresql") {
                if c.postgresConnection != nil {
                    r.problems.append("[worklist] database is a PostgreSQL URI and [worklist.postgresql] is set too: use one of them")
                }
                c.postgresConnection = settings.connectionString
                c.postgresSettings = settings
            }
        }
        reader.section("model", keys: ["path"]) { r in
            var path = c.modelPath ?? ""
            r.string("path", into: &path, rule: "an absolute path to a model file made by `bonetriage model join`") { $0.hasPrefix("/") }
            c.modelPath = path.isEmpty ? nil : path
        }
        reader.section("triage", keys: ["quiet_period_seconds", "workers", "engine_threads", "kernels", "precision", "covered_body_parts",
                                        "triage_unknown_body_part", "maximum_megapixels", "isolate_decoder",
                                        "decode_timeout_seconds", "decoders_per_worker"]) { r in
            r.number("quiet_period_seconds", into: &c.quietPeriod, range: 0...86_400)
            r.integer("workers", into: &c.workers, range: 1...64)
            r.integer("engine_threads", into: &c.engineThreads, range: 0...256, rule: "0 (every core) or a thread count")
            var kernels = c.kernels?.rawValue ?? "auto"
            let runnable = KernelFamily.selectable.filter(\.isSupported).map(\.rawValue)
            func normalised(_ name: String) -> String { name.trimmingCharacters(in: .whitespaces).lowercased() }
            r.string("kernels", into: &kernels, rule: "\"auto\" or a kernel family this CPU (\(CPUInfo.modelName)) runs: "
                     + runnable.map { "\"\($0)\"" }.joined(separator: ", ")) { normalised($0) == "auto" || runnable.contains(normalised($0)) }
            c.kernels = normalised(kernels) == "auto" ? nil : KernelFamily(rawValue: normalised(kernels))
            var precision = c.precision.name
            let runnablePrecisions = ConvolutionArithmetic.selectable.filter(\.isSupported).map(\.name)
            r.string("precision", into: &precision, rule: "\"float32\" or \"bfloat16\"; this CPU (\(CPUInfo.modelName)) runs "
                     + runnablePrecisions.map { "\"\($0)\"" }.joined(separator: ", ")
                     + (runnablePrecisions.contains("bfloat16") ? "" : " only (bfloat16 needs AVX512-BF16)")) {
                ConvolutionArithmetic.named($0).map(\.isSupported) ?? false
            }
            c.precision = ConvolutionArithmetic.named(precision) ?? .float32
            r.strings("covered_body_parts", into: &c.coveredBodyParts, rule: "a list of Body Part Examined values, e.g. [\"HUMERUS\", \"ARM\"]")
            c.coveredBodyParts = c.coveredBodyParts.map { $0.uppercased() }
            r.bool("triage_unknown_body_part", into: &c.triageUnknownBodyPart)
            r.integer("maximum_megapixels", into: &c.maximumMegapixels, range: 1...4096)
            r.bool("isolate_decoder", into: &c.isolateDecoder)
            r.number("decode_timeout_seconds", into: &c.decodeTimeout, range: 1...3600)
            r.integer("decoders_per_worker", into: &c.decodersPerWorker, range: 1...16)
        }
        reader.section("heatmaps", keys: ["compute"]) { r in
            var scope = c.heatmapScope.rawValue
            r.string("compute", into: &scope, rule: "one of \"flagged\", \"all\", \"none\"") { HeatmapScope(rawValue: $0) != nil }
            c.heatmapScope = HeatmapScope(rawValue: scope) ?? c.heatmapScope
        }
        reader.section("service", keys: ["status_file"]) { r in
            r.absolutePath("status_file", into: &c.statusFile, example: defaultStatusFile)
        }
        reader.section("delivery", keys: ["first_retry_seconds", "maximum_retry_seconds", "batch_size"]) { r in
            r.number("first_retry_seconds", into: &c.delivery.firstRetry, range: 1...86_400)
            r.number("maximum_retry_seconds", into: &c.delivery.maximumRetry, range: 1...86_400)
            r.integer("batch_size", into: &c.delivery.batchSize, range: 1...1000)
        }
        if c.delivery.maximumRetry < c.delivery.firstRetry {
            reader.problems.append("[delivery] maximum_retry_seconds = \(c.delivery.maximumRetry): must be at least first_retry_seconds (\(c.delivery.firstRetry))")
        }
        c.resultDestinations = reader.destinations("results", defaultCallingAETitle: c.aeTitle)
        let folders = [("storage.spool", c.spoolFolder), ("storage.archive", c.archiveFolder), ("storage.quarantine", c.quarantineFolder),
                       ("storage.results", c.resultsFolder)]
            + (c.dropFolder.map { [("drop_folder.path", $0)] } ?? [])
        for (i, a) in folders.enumerated() {
            for b in folders[(i + 1)...] where Self.overlaps(a.1, b.1) {
                reader.problems.append("\(a.0) = \"\(a.1)\" and \(b.0) = \"\(b.1)\": must be separate folders, neither inside the other")
            }
        }
        guard reader.problems.isEmpty else { throw ConfigurationError(path: path, problems: reader.problems) }
        return c
    }

    /// The names of the settings that differ between two configurations (for the reload's log line).
    public static func differingSettings(_ a: BoneTriageConfiguration, _ b: BoneTriageConfiguration) -> [String] {
        zip(Mirror(reflecting: a).children, Mirror(reflecting: b).children).compactMap { x, y in
            guard let name = x.label, String(describing: x.value) != String(describing: y.value) else { return nil }
            return name
        }
    }

    static func isAETitle(_ s: String) -> Bool {
        let t = s.trimmingCharacters(in: .whitespaces)
        return !t.isEmpty && s.count <= 16 && s.allSatisfy { $0.isASCII && $0 != "\\" && ($0.asciiValue ?? 0) >= 0x20 && ($0.asciiValue ?? 0) < 0x7F }
    }

    /// An IPv4 address, or a DNS host name (letters, digits, hyphens between dots).
    static func isHost(_ s: String) -> Bool {
        guard !s.isEmpty, s.count <= 253 else { return false }
        if IPv4Range.parseAddress(s) != nil { return true }
        if s.allSatisfy({ $0.isNumber || $0 == "." }) { return false }
        return s.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.count <= 63 && label.first != "-" && label.last != "-"
                && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
        }
    }

    static func overlaps(_ a: String, _ b: String) -> Bool {
        let x = a.hasSuffix("/") ? a : a + "/", y = b.hasSuffix("/") ? b : b + "/"
        return x.hasPrefix(y) || y.hasPrefix(x)
    }
}

/// Reads typed values out of a TOML table and collects every problem instead of stopping at the first.
struct ConfigurationReader {
    let root: TOMLTable
    var problems: [String] = []
    private var sectionName = ""
    private var table = TOMLTable()

    init(root: TOMLTable) { self.root = root }

    mutating func knownSections(_ names: [String]) {
        for key in root.keys.sorted() where !names.contains(key) {
            problems.append("[\(key)]: unknown section (known: \(names.joined(separator: ", ")))")
        }
    }

    mutating func section(_ name: String, keys: [String], _ body: (inout ConfigurationReader) -> Void) {
        guard let value = root[name] else { return }
        guard let t = value.table else {
            problems.append("\(name) = \(value): must be a table ([\(name)])")
            return
        }
        sectionName = name
        table = t
        for key in t.keys.sorted() where !keys.contains(key) {
            problems.append("[\(name)] \(key): unknown key (known: \(keys.joined(separator: ", ")))")
        }
        body(&self)
    }

    private mutating func complain(_ key: String, _ value: TOMLValueConvertible, _ rule: String) {
        problems.append("[\(sectionName)] \(key) = \(value): must be \(rule)")
    }

    mutating func string(_ key: String, into target: inout String, rule: String, valid: (String) -> Bool) {
        guard let value = table[key] else { return }
        if let s = value.string, valid(s) { target = s } else { complain(key, value, rule) }
    }

    mutating func absolutePath(_ key: String, into target: inout String, example: String? = nil) {
        string(key, into: &target, rule: "an absolute path in quotes, e.g. \"\(example ?? target)\"") { $0.hasPrefix("/") && $0.count > 1 }
    }

    mutating func integer(_ key: String, into target: inout Int, range: ClosedRange<Int>, rule: String? = nil) {
        guard let value = table[key] else { return }
        if let n = value.int, range.contains(n) { target = n } else {
            complain(key, value, rule ?? "a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
    }

    mutating func number(_ key: String, into target: inout Double, range: ClosedRange<Double>, rule: String? = nil) {
        guard let value = table[key] else { return }
        if let n = value.double ?? value.int.map(Double.init), range.contains(n) { target = n } else {
            complain(key, value, (rule ?? "a number of seconds") + " from \(Int(range.lowerBound)) to \(Int(range.upperBound))")
        }
    }

    mutating func limit(_ key: String, into target: inout StorageLimit) {
        guard let value = table[key] else { return }
        if let text = value.string, let limit = StorageLimit(text) { target = limit } else {
            complain(key, value, "a size in quotes: a share of the file system (\"25%\"), a size (\"40 GB\", \"500 MiB\"), or \"0\" for no limit")
        }
    }

    mutating func bool(_ key: String, into target: inout Bool) {
        guard let value = table[key] else { return }
        if let b = value.bool { target = b } else { complain(key, value, "true or false") }
    }

    mutating func strings(_ key: String, into target: inout [String], rule: String) {
        guard let value = table[key] else { return }
        guard let array = value.array else { return complain(key, value, rule) }
        let items = array.map { $0.string?.trimmingCharacters(in: .whitespaces) }
        guard items.allSatisfy({ $0.map { !$0.isEmpty } ?? false }) else { return complain(key, value, rule) }
        target = items.compactMap { $0 }
    }

    /// `[worklist.postgresql]` (a table inside the current section): nil when absent.
    mutating func postgresSettings(_ key: String) -> PostgresSettings? {
        guard let value = table[key] else { return nil }
        let place = "[\(sectionName).\(key)]"
        guard let t = value.table else {
            problems.append("\(sectionName).\(key) = \(value): must be a table (\(place))")
            return nil
        }
        let known = ["host", "port", "database", "user", "sslmode", "sslrootcert", "password_file", "connect_timeout_seconds", "target_session_attrs"]
        for k in t.keys.sorted() where !known.contains(k) {
            problems.append(k == "password"
                ? "\(place) password: a password does not go in the configuration; put it in a password file (password_file, in ~/.pgpass format: "
                    + "host:port:database:user:password, mode 0600, owned by the daemon's user)"
                : "\(place) \(k): unknown key (known: \(known.joined(separator: ", ")))")
        }
        var settings = PostgresSettings()
        func text(_ k: String, rule: String, valid: (String) -> Bool = { !$0.isEmpty }) -> String? {
            guard let v = t[k] else { return nil }
            if let s = v.string, valid(s) { return s }
            problems.append("\(place) \(k) = \(v): must be \(rule)")
            return nil
        }
        settings.host = text("host", rule: "a host name or address, several separated by commas for failover, or a socket folder")
        settings.database = text("database", rule: "a database name")
        settings.user = text("user", rule: "a database role name")
        settings.sslMode = text("sslmode", rule: "one of " + PostgresSettings.sslModes.map { "\"\($0)\"" }.joined(separator: ", ")) {
            PostgresSettings.sslModes.contains($0)
        }
        settings.sslRootCertificate = text("sslrootcert", rule: "an absolute path to the CA certificate") { $0.hasPrefix("/") }
        settings.passwordFile = text("password_file", rule: "an absolute path to a file in ~/.pgpass format") { $0.hasPrefix("/") }
        if let attributes = text("target_session_attrs", rule: "one of " + PostgresSettings.sessionAttributes.map { "\"\($0)\"" }.joined(separator: ", "),
                                 valid: { PostgresSettings.sessionAttributes.contains($0) }) {
            settings.targetSessionAttributes = attributes
        }
        if let v = t["port"] {
            // 5432, "5432,5433" or [5432, 5433]: one port for every host, or one per host.
            let items: [String]? = v.int.map { [String($0)] } ?? v.string.map { $0.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            } } ?? v.array.map { $0.map { $0.int.map(String.init) ?? "" } }
            let ports = (items ?? []).map { Int($0) ?? 0 }
            let hosts = settings.host.map { $0.split(separator: ",", omittingEmptySubsequences: false).count } ?? 1
            if ports.isEmpty || !ports.allSatisfy({ (1...65535).contains($0) }) {
                problems.append("\(place) port = \(v): must be a TCP port from 1 to 65535, or one per host (\"5432,5433\" or [5432, 5433])")
            } else if ports.count > 1 && ports.count != hosts {
                problems.append("\(place) port = \(v): \(ports.count) ports for \(hosts) host(s); give one port for every host, or one per host in the order of host")
            } else {
                settings.ports = ports
            }
        }
        if let v = t["connect_timeout_seconds"] {
            if let n = v.int, (2...600).contains(n) { settings.connectTimeout = n } else {
                problems.append("\(place) connect_timeout_seconds = \(v): must be a whole number of seconds from 2 to 600")
            }
        }
        return settings
    }

    /// `allowed_callers = [{ ae_title = "PACS", hosts = ["10.0.0.5", "10.1.0.0/16"] }, ...]`
    mutating func callers(_ key: String) -> [AllowedCaller] {
        guard let value = table[key] else { return [] }
        let rule = "a list of tables like { ae_title = \"PACS\", hosts = [\"10.0.0.5\"] } (hosts optional: any address)"
        guard let array = value.array else {
            complain(key, value, rule)
            return []
        }
        var callers: [AllowedCaller] = []
        for (i, item) in array.enumerated() {
            let place = "[\(sectionName)] \(key)[\(i)]"
            guard let entry = item.table else {
                problems.append("\(place) = \(item): must be \(rule)")
                continue
            }
            for k in entry.keys.sorted() where !["ae_title", "hosts"].contains(k) {
                problems.append("\(place) \(k): unknown key (known: ae_title, hosts)")
            }
            guard let title = entry["ae_title"]?.string, BoneTriageConfiguration.isAETitle(title) else {
                problems.append("\(place) ae_title: must be the caller's AE title, 1 to 16 printable ASCII characters")
                continue
            }
            var hosts: [IPv4Range] = []
            if let list = entry["hosts"] {
                guard let items = list.array else {
                    problems.append("\(place) hosts = \(list): must be a list of IPv4 addresses or CIDR blocks")
                    continue
                }
                for host in items {
                    if let text = host.string, let range = IPv4Range(text) { hosts.append(range) } else {
                        problems.append("\(place) hosts: \(host) is not an IPv4 address or CIDR block (e.g. \"10.0.0.5\" or \"10.1.0.0/16\")")
                    }
                }
            }
            callers.append(AllowedCaller(aeTitle: title.trimmingCharacters(in: .whitespaces), hosts: hosts))
        }
        return callers
    }

    /// `[[results]]` entries: the destinations of result objects. Names (given, or "AE@host:port") must be unique.
    mutating func destinations(_ key: String, defaultCallingAETitle: String) -> [ResultDestination] {
        guard let value = root[key] else { return [] }
        let known = ["name", "ae_title", "host", "port", "calling_ae_title", "send", "verdicts", "timeout_seconds"]
        guard let array = value.array, array.allSatisfy({ $0.table != nil }) else {
            problems.append("\(key) = \(value): must be [[results]] tables, one per destination, e.g. [[results]] ae_title = \"PACS\" host = \"10.0.0.5\" port = 104")
            return []
        }
        var found: [ResultDestination] = [], entryNumbers: [Int] = []
        for (i, item) in array.enumerated() {
            guard let entry = item.table else { continue }
            let place = "[[results]] entry \(i + 1)"
            var ok = true
            func complain(_ k: String, _ why: String) {
                problems.append("\(place) \(k)\(entry[k].map { " = \($0)" } ?? ""): \(why)")
                ok = false
            }
            for k in entry.keys.sorted() where !known.contains(k) {
                problems.append("\(place) \(k): unknown key (known: \(known.joined(separator: ", ")))")
                ok = false
            }
            let aeTitle = entry["ae_title"]?.string ?? ""
            if !BoneTriageConfiguration.isAETitle(aeTitle) { complain("ae_title", "must be the destination's AE title, 1 to 16 printable ASCII characters without backslash (required)") }
            let host = entry["host"]?.string ?? ""
            if !BoneTriageConfiguration.isHost(host) { complain("host", "must be the destination's IPv4 address or host name, e.g. \"10.0.0.5\" or \"pacs.example.org\" (required)") }
            let port = entry["port"]?.int ?? 0
            if !(1...65535).contains(port) { complain("port", "must be the destination's TCP port, 1 to 65535 (required)") }
            var calling = defaultCallingAETitle
            if let c = entry["calling_ae_title"] {
                if let s = c.string, BoneTriageConfiguration.isAETitle(s) { calling = s } else {
                    complain("calling_ae_title", "must be an AE title, 1 to 16 printable ASCII characters (default: [dicom] ae_title)")
                }
            }
            var kinds = Set(ResultKind.allCases)
            if let s = entry["send"] {
                let items = s.array?.map { $0.string.flatMap(ResultKind.init(rawValue:)) }
                if let items, !items.isEmpty, items.allSatisfy({ $0 != nil }) { kinds = Set(items.compactMap { $0 }) } else {
                    complain("send", "must be a non-empty list of \"sr\" (the triage report) and \"sc\" (the heatmap pictures), e.g. [\"sr\", \"sc\"]")
                }
            }
            var verdicts = ResultVerdicts.abnormal
            if let v = entry["verdicts"] {
                if let s = v.string, let parsed = ResultVerdicts(rawValue: s) { verdicts = parsed } else {
                    complain("verdicts", "must be \"abnormal\" (abnormal studies and their reviews) or \"all\" (every triaged study)")
                }
            }
            var timeout = 30.0
            if let t = entry["timeout_seconds"] {
                if let n = t.double ?? t.int.map(Double.init), (1...600).contains(n) { timeout = n } else {
                    complain("timeout_seconds", "must be a number of seconds from 1 to 600")
                }
            }
            var name: String?
            if let n = entry["name"] {
                if let s = n.string?.trimmingCharacters(in: .whitespaces), !s.isEmpty, s.count <= 64, s.allSatisfy({ !$0.isNewline && ($0.asciiValue.map { $0 >= 0x20 } ?? true) }) {
                    name = s
                } else {
                    complain("name", "must be a name of 1 to 64 characters for the logs and `bonetriage outbox` (default: AE@host:port)")
                }
            }
            guard ok else { continue }
            let destination = ResultDestination(name: name, aeTitle: aeTitle, host: host, port: port, callingAETitle: calling, kinds: kinds,
                                                verdicts: verdicts, timeoutSeconds: timeout)
            if let other = found.firstIndex(where: { $0.name == destination.name }) {
                problems.append("\(place) name: \"\(destination.name)\" is already the name of entry \(entryNumbers[other]); give each destination its own name (the outbox keeps deliveries by name)")
                continue
            }
            found.append(destination)
            entryNumbers.append(i + 1)
        }
        return found
    }
}
