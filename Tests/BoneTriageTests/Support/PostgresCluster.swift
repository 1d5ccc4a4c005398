import BoneTriage
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// One throwaway PostgreSQL 15 cluster for the whole test process, started on first use: `initdb` into a
/// fresh folder under the temporary directory and `pg_ctl start` on a free loopback port, its Unix socket
/// in that folder; as the `postgres` user (`runuser`) when the tests run as root, which PostgreSQL
/// refuses. Stopped when the process exits; clusters left by a killed run are stopped and removed at the
/// next start. Each test takes a database of its own (`freshDatabase`).
final class PostgresCluster: Sendable {
    static let binaries = "/usr/lib/postgresql/15/bin"
    /// The folders this process's and earlier runs' clusters live in start with this.
    static let folderPrefix = "bonetriage-pg-"

    /// Whether PostgreSQL 15's server programs are installed (Debian's postgresql-15); without them the
    /// PostgreSQL backend is left out of the contract suites, and that is said once.
    static let isInstalled: Bool = {
        let found = FileManager.default.isExecutableFile(atPath: binaries + "/initdb") && FileManager.default.isExecutableFile(atPath: binaries + "/pg_ctl")
        if !found {
            FileHandle.standardError.write(Data("note: PostgreSQL 15 is not installed (\(binaries)/initdb): the PostgreSQL worklist is not tested; apt-get install postgresql-15\n".utf8))
        }
        return found
    }()

    /// The cluster, started at the first call (an error if it could not be started: that fails the tests that need it).
    static func shared() throws -> PostgresCluster { try started.get() }
    /// A cluster of the caller's own, for a test that stops and starts its server (stopped at exit too).
    static func dedicated() throws -> PostgresCluster { try PostgresCluster() }
    /// A streaming standby of `primary` (a cluster of its own, on its own port): `pg_basebackup -R` from
    /// the primary over TCP, started, and waited for until it streams.
    static func standby(of primary: PostgresCluster) throws -> PostgresCluster {
        let standby = try PostgresCluster(standbyOf: primary)
        try standby.waitUntilStreaming()
        return standby
    }
    private static let started: Result<PostgresCluster, Error> = Result { try PostgresCluster() }

    let folder: String
    let port: Int
    /// The superuser the tests connect as (the cluster trusts local connections).
    let user = "postgres"
    private let created = Mutex(0)

    /// The data folders of the clusters to stop when the process exits.
    private static let running = Mutex<[String]>([])

    private init(standbyOf primary: PostgresCluster? = nil) throws {
        Self.removeStale()
        let base = FileManager.default.temporaryDirectory.path + "/" + Self.folderPrefix + "\(getpid())-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        folder = base
        // The owner's process ID, so that a later run can tell a cluster whose run was killed.
        try Data("\(getpid())".utf8).write(to: URL(fileURLWithPath: base + "/owner.pid"))
        if getuid() == 0 {
            guard let account = getpwnam("postgres") else { throw ClusterError("the tests run as root and there is no postgres user to run PostgreSQL as") }
            chown(base, account.pointee.pw_uid, account.pointee.pw_gid)
        }
        port = try Self.freePort()
        if let primary {
            // initdb's pg_hba.conf (-A trust) lets replication connections in from 127.0.0.1; -R writes
            // primary_conninfo and standby.signal.
            try Self.run(Self.binaries + "/pg_basebackup", ["-D", base + "/data", "-R", "-h", "127.0.0.1", "-p", "\(primary.port)", "-U", "postgres",
                                                             "-X", "stream", "-c", "fast", "--no-sync"])
        } else {
            try Self.run(Self.binaries + "/initdb", ["-D", base + "/data", "-A", "trust", "--auth-local=trust", "-U", "postgres", "-E", "UTF8",
                                                      "--locale=C.UTF-8", "--no-sync"])
        }
        let first = Self.running.withLock { running in
            running.append(base + "/data")
            return running.count == 1
        }
        if first { atexit { PostgresCluster.stopAtExit() } }
        try start()
    }

    /// Starts the server (again).
    func start() throws {
        let options = "-p \(port) -k \(folder) -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            + "-c wal_level=replica -c max_wal_senders=5 -c hot_standby=on"
        try Self.run(Self.binaries + "/pg_ctl", ["-D", folder + "/data", "-o", options, "-l", folder + "/server.log", "-w", "-t", "60", "start"])
    }

    /// Stops the server as an administrator would (fast: open sessions are ended).
    func stop() throws {
        try Self.run(Self.binaries + "/pg_ctl", ["-D", folder + "/data", "-m", "fast", "-w", "stop"])
    }

    /// Stops the server as a crash would (no shutdown checkpoint, sessions cut).
    func stopImmediately() throws {
        try Self.run(Self.binaries + "/pg_ctl", ["-D", folder + "/data", "-m", "immediate", "-w", "stop"])
    }

    /// Makes a standby the primary (`pg_ctl promote`, waiting until it accepts writes).
    func promote() throws {
        try Self.run(Self.binaries + "/pg_ctl", ["-D", folder + "/data", "-w", "-t", "60", "promote"])
    }

    /// A standby: waits until its WAL receiver streams from the primary.
    func waitUntilStreaming(timeout: Double = 60) throws {
        try poll("the standby on port \(port) to stream from its primary", timeout: timeout) {
            let c = try PostgresConnection(conninfo(database: "postgres"))
            return try c.execute("SELECT status FROM pg_stat_wal_receiver").first?.text(0) == "streaming"
        }
    }

    /// A standby: waits until it has replayed everything `primary` has written so far.
    func waitUntilReplayed(from primary: PostgresCluster, timeout: Double = 60) throws {
        let lsn = try #require(try PostgresConnection(primary.conninfo(database: "postgres")).execute("SELECT pg_current_wal_lsn()::text").first?.text(0))
        try poll("the standby on port \(port) to replay up to \(lsn)", timeout: timeout) {
            let c = try PostgresConnection(conninfo(database: "postgres"))
            return try c.execute("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", [lsn]).first?.bool(0) == true
        }
    }

    /// A standby: stops receiving from its primary (primary_conninfo removed, server restarted), so that
    /// what the primary commits from now on is missing here, as with a primary that dies before its last
    /// transactions are replicated.
    func detachFromPrimary() throws {
        try stop()
        let settings = folder + "/data/postgresql.auto.conf"
        let kept = try String(contentsOfFile: settings, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("primary_conninfo") }.joined(separator: "\n")
        // Written in place: the file keeps its owner (postgres).
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: settings))
        try handle.truncate(atOffset: 0)
        try handle.write(contentsOf: Data(kept.utf8))
        try handle.close()
        try start()
    }

    private func poll(_ what: String, timeout: Double, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        var last: (any Error)?
        while Date() < deadline {
            do {
                if try condition() { return }
            } catch { last = error }
            usleep(100_000)
        }
        throw ClusterError("timed out waiting for \(what)" + (last.map { " (last error: \($0))" } ?? ""))
    }

    struct ClusterError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// A connection string to `database` over the cluster's Unix socket.
    func conninfo(database: String) -> String {
        let socket = folder.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? folder
        return "postgresql:///\(database)?host=\(socket)&port=\(port)&user=\(user)"
    }

    /// The same database over TCP on the loopback address.
    func tcpConninfo(database: String) -> String { "postgresql://\(user)@127.0.0.1:\(port)/\(database)" }

    /// A database's name in one of its connection strings (`freshDatabase`'s).
    static func databaseName(_ conninfo: String) throws -> String {
        let path = try #require(URLComponents(string: conninfo)?.path)
        return String(path.drop { $0 == "/" })
    }

    /// A new, empty database, and its connection string.
    func freshDatabase() throws -> String {
        let n = created.withLock { count in count += 1; return count }
        let name = "bt_\(getpid())_\(n)_" + UUID().uuidString.prefix(6).lowercased()
        let admin = try PostgresConnection(conninfo(database: "postgres"))
        try admin.execute("CREATE DATABASE \(name)")
        return conninfo(database: name)
    }

    /// Runs a PostgreSQL program (as the postgres user when this is root) and fails with its output.
    /// (posix_spawn and waitpid: Foundation's Process could wait forever for a `pg_ctl start` whose server
    /// outlives it.)
    static func run(_ program: String, _ arguments: [String]) throws {
        let argv = getuid() == 0 ? ["/usr/sbin/runuser", "-u", "postgres", "--", program] + arguments : [program] + arguments
        let log = FileManager.default.temporaryDirectory.path + "/\(folderPrefix)run-\(getpid())-\(UUID().uuidString.prefix(8)).log"
        defer { unlink(log) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArguments = argv.map { strdup($0) } + [nil]
        defer { for a in cArguments { free(a) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, argv[0], &actions, nil, cArguments, environ)
        guard spawned == 0 else { throw ClusterError("cannot start \(argv[0]): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw ClusterError("waitpid: \(String(cString: strerror(errno)))") }
        }
        // Exited normally (the low 7 bits are 0) with status 0.
        guard status & 0x7f == 0, (status >> 8) & 0xff == 0 else {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw ClusterError("\((program as NSString).lastPathComponent) \(arguments.joined(separator: " ")) failed (wait status \(status)): \(output)")
        }
    }

    static func stopAtExit() {
        for data in running.withLock({ $0 }) {
            try? run(binaries + "/pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"])
            try? FileManager.default.removeItem(atPath: (data as NSString).deletingLastPathComponent)
        }
    }

    /// Stops and removes clusters of earlier runs whose process is gone (a run killed before its atexit).
    static func removeStale() {
        let temporary = FileManager.default.temporaryDirectory.path
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? [] where name.hasPrefix(folderPrefix) {
            let folder = temporary + "/" + name
            guard let text = try? String(contentsOfFile: folder + "/owner.pid", encoding: .utf8),
                  let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid != getpid(),
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            if FileManager.default.fileExists(atPath: folder + "/data/postmaster.pid") {
                try? run(binaries + "/pg_ctl", ["-D", folder + "/data", "-m", "immediate", "-w", "stop"])
            }
            try? FileManager.default.removeItem(atPath: folder)
        }
    }

    /// A loopback port nobody listens on now (the kernel's choice for a socket bound to port 0).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ClusterError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw ClusterError("bind: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
