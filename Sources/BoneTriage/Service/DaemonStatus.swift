import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The running daemon's counts, as in its systemd STATUS= line, kept in a small file (`[service]
/// status_file`) for `bonetriage status`: written atomically (a new file renamed over the old one)
/// when the counts change, at most every few seconds, and removed when the daemon stops cleanly.
/// It holds counts and the model's ID only, never patient data.
public struct DaemonStatus: Codable, Sendable, Equatable {
    public var pid: Int32
    public var version: String
    public var startedAt: Date
    public var updatedAt: Date
    /// The STATUS= line: "associations 0 · received 3 · ...".
    public var status: String
    /// The name the daemon goes by in its worklist (`[worklist] node`); nil in a file of an older daemon.
    public var node: String?

    public init(pid: Int32, version: String, startedAt: Date, updatedAt: Date, status: String, node: String? = nil) {
        self.node = node
        self.pid = pid
        self.version = version
        self.startedAt = startedAt
        self.updatedAt = updatedAt
        self.status = status
    }

    private static func encoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .iso8601
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        return e
    }

    /// Replaces the file at `path` in one step, mode 0644 (any user may run `bonetriage status`).
    public func write(to path: String) throws {
        let data = try Self.encoder().encode(self) + Data("\n".utf8)
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw DaemonStatusError.cannotWrite(path: path, reason: String(cString: strerror(errno))) }
        fchmod(fd, 0o644)
        let written = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        guard written == data.count, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw DaemonStatusError.cannotWrite(path: path, reason: reason)
        }
    }

    /// The status in the file at `path`; nil when there is none (no daemon running).
    public static func read(path: String) throws -> DaemonStatus? {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            if !FileManager.default.fileExists(atPath: path) { return nil }
            throw DaemonStatusError.cannotRead(path: path, reason: (error as NSError).localizedDescription)
        }
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        do {
            return try decoder.decode(DaemonStatus.self, from: data)
        } catch {
            throw DaemonStatusError.cannotRead(path: path, reason: "it is not a BoneTriage status file")
        }
    }

    /// Whether process `pid` exists (EPERM: it exists, as another user).
    public static func isAlive(pid: Int32) -> Bool {
        guard pid > 0 else { return false }
        return kill(pid, 0) == 0 || errno == EPERM
    }

    /// "4 s", "3 min", "2 h 5 min".
    public static func age(_ seconds: TimeInterval) -> String {
        let s = max(0, Int(seconds.rounded()))
        if s < 120 { return "\(s) s" }
        if s < 7200 { return "\(s / 60) min" }
        return "\(s / 3600) h \(s % 3600 / 60) min"
    }

    /// What `bonetriage status` prints for the file at `path`, and its exit code (0 running, 3 not
    /// running, as systemctl status).
    public static func report(path: String, now: Date = Date(), isAlive: (Int32) -> Bool = { DaemonStatus.isAlive(pid: $0) }) throws -> (text: String, exitCode: Int32) {
        guard let status = try read(path: path) else {
            return ("bonetriage is not running: no status file \(path) (the daemon writes it while it runs; see [service] status_file)", 3)
        }
        let age = Self.age(now.timeIntervalSince(status.updatedAt))
        let since = ISO8601DateFormatter.string(from: status.startedAt, timeZone: .current, formatOptions: [.withInternetDateTime])
        guard isAlive(status.pid) else {
            return ("bonetriage is not running: its process \(status.pid) has ended without a clean stop (see journalctl -u bonetriage); "
                + "its last status, \(age) old:\n  \(status.status)", 3)
        }
        let node = status.node.map { ", node \($0)" } ?? ""
        return ("bonetriage \(status.version) is running: pid \(status.pid)\(node), since \(since); status \(age) old:\n  \(status.status)", 0)
    }
}

public enum DaemonStatusError: Error, CustomStringConvertible {
    case cannotWrite(path: String, reason: String)
    case cannotRead(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotWrite(path, reason): return "the status file \(path) cannot be written: \(reason)"
        case let .cannotRead(path, reason): return "the status file \(path) cannot be read: \(reason)"
        }
    }
}
