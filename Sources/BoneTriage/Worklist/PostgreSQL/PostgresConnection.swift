import CLibPQ
import Foundation
import Synchronization

/// What PostgreSQL (or libpq) said went wrong: the SQLSTATE when the server sent one, and whether the
/// connection is gone (so that a caller can tell "the database is away" from "the statement was refused").
public struct PostgresError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The five-character SQLSTATE (e.g. 23505 unique violation, 40001 serialization failure); nil when
    /// the server sent none (the connection failed or broke).
    public var sqlState: String?
    /// The server's or libpq's message, without the connection string.
    public var message: String
    /// The connection could not be made or was lost: the server is down, unreachable, restarting or shutting down.
    public var connectionLost: Bool
    /// The connection broke while COMMIT was on its way: the transaction may or may not have been recorded.
    public var duringCommit = false

    public init(sqlState: String?, message: String, connectionLost: Bool) {
        self.sqlState = sqlState
        self.message = message
        self.connectionLost = connectionLost
    }

    /// A serialization failure or a deadlock: the transaction was rolled back and may simply be run again.
    public var isTransient: Bool { sqlState == "40001" || sqlState == "40P01" }

    public var description: String { message + (sqlState.map { " (SQLSTATE \($0))" } ?? "") }

    /// SQLSTATE classes that mean the server went away: 08 connection exception, 57P01-57P03 shutdown or
    /// not accepting connections yet; and 25006 (read_only_sql_transaction): the connection reached a
    /// server that cannot write (a standby after a failover, or one with default_transaction_read_only),
    /// so it is as good as lost for a writer: dropped, and the work tried on another connection.
    static func meansConnectionLost(_ state: String?) -> Bool {
        guard let state else { return false }
        return state.hasPrefix("08") || ["57P01", "57P02", "57P03", readOnlyServer].contains(state)
    }

    /// read_only_sql_transaction: a write on a server (or session) that only reads.
    static let readOnlyServer = "25006"
}

/// One parameter of a statement, sent as text (PostgreSQL parses it as the column's type; no value is
/// ever put into SQL text).
public protocol PostgresParameter {
    var postgresText: String { get }
}

extension String: PostgresParameter { public var postgresText: String { self } }
extension Int: PostgresParameter { public var postgresText: String { String(self) } }
extension Int64: PostgresParameter { public var postgresText: String { String(self) } }
extension Double: PostgresParameter {
    /// Swift's shortest representation that reads back to the same value; PostgreSQL reads "inf" and "nan" too.
    public var postgresText: String { String(self) }
}
extension Bool: PostgresParameter { public var postgresText: String { self ? "true" : "false" } }
extension Date: PostgresParameter { public var postgresText: String { PostgresTime.text(self) } }
extension Data: PostgresParameter {
    /// bytea's hex input form.
    public var postgresText: String { "\\x" + map { String(format: "%02x", $0) }.joined() }
}

/// A query's rows, each value as PostgreSQL's text form (nil for NULL), read by column position.
public struct PostgresRows: Sendable {
    public var rows: [PostgresRow]
    /// Rows changed by an INSERT, UPDATE or DELETE.
    public var affected: Int
    public var first: PostgresRow? { rows.first }
}

/// One row of a result: text values by position, decoded to Swift types on request.
public struct PostgresRow: Sendable, StoredValues {
    public var values: [String?]

    public func text(_ i: Int) -> String? { i < values.count ? values[i] : nil }

    public func integer(_ i: Int) throws -> Int? {
        guard let t = text(i) else { return nil }
        guard let v = Int(t) else { throw StoredValueError(column: "#\(i)", value: t) }
        return v
    }

    public func double(_ i: Int) throws -> Double? {
        guard let t = text(i) else { return nil }
        guard let v = Double(t) else { throw StoredValueError(column: "#\(i)", value: t) }
        return v
    }

    public func bool(_ i: Int) throws -> Bool? {
        guard let t = text(i) else { return nil }
        switch t {
        case "t": return true
        case "f": return false
        default: throw StoredValueError(column: "#\(i)", value: t)
        }
    }

    public func date(_ i: Int) throws -> Date? {
        guard let t = text(i) else { return nil }
        guard let d = PostgresTime.date(t) else { throw StoredValueError(column: "#\(i)", value: t) }
        return d
    }

    /// A bytea in its hex output form (`\x0a1b...`).
    public func data(_ i: Int) throws -> Data? {
        guard let t = text(i) else { return nil }
        let bytes = Array(t.utf8)
        guard bytes.count >= 2, bytes[0] == UInt8(ascii: "\\"), bytes[1] == UInt8(ascii: "x"), bytes.count % 2 == 0 else {
            throw StoredValueError(column: "#\(i)", value: String(t.prefix(16)))
        }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out = Data(capacity: (bytes.count - 2) / 2)
        var k = 2
        while k < bytes.count {
            guard let hi = nibble(bytes[k]), let lo = nibble(bytes[k + 1]) else { throw StoredValueError(column: "#\(i)", value: String(t.prefix(16))) }
            out.append(hi << 4 | lo)
            k += 2
        }
        return out
    }
}

/// `timestamptz` as text, in the session's zone (UTC, ISO: `2026-11-18 08:26:40.123456+00`), to and from `Date`
/// at PostgreSQL's microsecond precision.
enum PostgresTime {
    static func text(_ date: Date) -> String {
        let micros = Int64((date.timeIntervalSince1970 * 1_000_000).rounded())
        var seconds = micros / 1_000_000, fraction = micros % 1_000_000
        if fraction < 0 { fraction += 1_000_000; seconds -= 1 }
        var days = seconds / 86_400, second = seconds % 86_400
        if second < 0 { second += 86_400; days -= 1 }
        let (y, m, d) = civil(days)
        return String(format: "%04lld-%02lld-%02lld %02lld:%02lld:%02lld.%06lld+00", y, m, d, second / 3600, second / 60 % 60, second % 60, fraction)
    }

    /// Reads `YYYY-MM-DD HH:MM:SS[.ffffff]+00` (the session runs in UTC); nil for anything else.
    static func date(_ text: String) -> Date? {
        let b = Array(text.utf8)
        func number(_ from: Int, _ count: Int) -> Int64? {
            guard from + count <= b.count else { return nil }
            var v: Int64 = 0
            for c in b[from..<(from + count)] {
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int64(c - 48)
            }
            return v
        }
        guard b.count >= 22, b[4] == 45, b[7] == 45, b[10] == 32, b[13] == 58, b[16] == 58,
              let y = number(0, 4), let mo = number(5, 2), let d = number(8, 2), let h = number(11, 2), let mi = number(14, 2), let s = number(17, 2)
        else { return nil }
        var k = 19
        var micros: Int64 = 0
        if k < b.count, b[k] == 46 {
            k += 1
            var digits = 0
            while k < b.count, b[k] >= 48 && b[k] <= 57 {
                if digits < 6 { micros = micros * 10 + Int64(b[k] - 48); digits += 1 }
                k += 1
            }
            for _ in digits..<6 { micros *= 10 }
        }
        guard text.utf8.count == k + 3, b[k] == 43, b[k + 1] == 48, b[k + 2] == 48 else { return nil }  // "+00"
        let days = daysFromCivil(y, mo, d)
        let total = (days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000 + micros
        return Date(timeIntervalSince1970: Double(total) / 1_000_000)
    }

    /// Howard Hinnant's days-from-civil and its inverse (proleptic Gregorian calendar, day 0 = 1970-01-01).
    static func daysFromCivil(_ y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(_ z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }
}

/// One libpq connection (`PGconn`). Not for two threads at once: the pool hands it to one borrower at
/// a time, which is what makes the `@unchecked Sendable` safe.
public final class PostgresConnection: @unchecked Sendable {
    private let connection: OpaquePointer
    /// host:port/database, for messages (never the password).
    public let server: String
    /// Statements that succeeded on this connection: a borrower that got none through may run again elsewhere.
    private(set) var completedStatements = 0
    /// A write was refused because the server (or session) is read-only (SQLSTATE 25006): the connection
    /// never goes back to the pool.
    private(set) var refusedWrite = false

    /// Connects with a libpq connection string (`host=... dbname=...`) or URI (`postgresql://...`); libpq
    /// adds what it is not given from the `PG*` environment variables, `~/.pgpass` and service files.
    /// The session runs in UTC with ISO dates (how `Date`s are read and written) and without notices on stderr.
    public init(_ conninfo: String) throws {
        guard let c = PQconnectdb(conninfo) else {
            throw PostgresError(sqlState: nil, message: "libpq could not allocate a connection", connectionLost: true)
        }
        connection = c
        server = Self.serverName(c)
        guard PQstatus(c) == CONNECTION_OK else {
            let message = Self.errorText(c)
            throw PostgresError(sqlState: nil, message: message, connectionLost: true)
        }
        try execute("SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'; SET extra_float_digits TO 3; SET client_min_messages TO warning")
    }

    deinit { PQfinish(connection) }

    /// Whether the connection is still up as far as libpq knows (a server that went away is noticed on the next statement).
    public var isUsable: Bool { PQstatus(connection) == CONNECTION_OK }

    /// Whether no transaction is open (the connection may go back to the pool).
    var isIdle: Bool { PQtransactionStatus(connection) == PQTRANS_IDLE }

    /// host:port/database of a connection (made or failed), as libpq resolved them.
    static func serverName(_ c: OpaquePointer) -> String {
        func text(_ p: UnsafeMutablePointer<CChar>?) -> String? { p.flatMap { String(validatingCString: $0) }.flatMap { $0.isEmpty ? nil : $0 } }
        let host = text(PQhost(c)) ?? "localhost"
        let port = text(PQport(c)) ?? "5432"
        let db = text(PQdb(c)) ?? "?"
        return "\(host):\(port)/\(db)"
    }

    private static func errorText(_ c: OpaquePointer) -> String {
        let raw = PQerrorMessage(c).flatMap { String(validatingCString: $0) } ?? ""
        let text = raw.trimmingCharacters(in: .whitespacesAndNewlines).replacingOccurrences(of: "\n", with: "; ")
        return text.isEmpty ? "no answer from the server" : text
    }

    /// Runs one statement with text parameters (`$1`, `$2`, ...; nil is NULL) and returns its rows.
    @discardableResult
    public func execute(_ sql: String, _ parameters: [(any PostgresParameter)?] = []) throws -> PostgresRows {
        let texts = parameters.map { $0.map { strdup($0.postgresText) } ?? nil }
        defer { for t in texts { free(t) } }
        let result: OpaquePointer? = texts.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                if parameters.isEmpty { return PQexec(connection, sql) }
                return PQexecParams(connection, sql, Int32(parameters.count), nil, values.baseAddress, nil, nil, 0)
            }
        }
        guard let result else { throw lost(Self.errorText(connection)) }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).flatMap { String(validatingCString: $0) }
            let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).flatMap { String(validatingCString: $0) }
            let detail = PQresultErrorField(result, Int32(UInt8(ascii: "D"))).flatMap { String(validatingCString: $0) }
            var message = primary.map { $0 + (detail.map { ". \($0)" } ?? "") } ?? Self.errorText(connection)
            if state == PostgresError.readOnlyServer {
                refusedWrite = true
                message += " (the server \(server) is read-only: a standby, or default_transaction_read_only is on; list the primary's host "
                    + "too, with target_session_attrs=read-write)"
            }
            let gone = PQstatus(connection) != CONNECTION_OK || PostgresError.meansConnectionLost(state)
            throw PostgresError(sqlState: state, message: message, connectionLost: gone)
        }
        let rowCount = Int(PQntuples(result)), columnCount = Int(PQnfields(result))
        var rows: [PostgresRow] = []
        rows.reserveCapacity(rowCount)
        for r in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for c in 0..<columnCount {
                if PQgetisnull(result, Int32(r), Int32(c)) != 0 { values.append(nil); continue }
                values.append(PQgetvalue(result, Int32(r), Int32(c)).flatMap { String(validatingCString: $0) })
            }
            rows.append(PostgresRow(values: values))
        }
        let affected = PQcmdTuples(result).flatMap { String(validatingCString: $0) }.flatMap { Int($0) } ?? 0
        completedStatements += 1
        return PostgresRows(rows: rows, affected: affected)
    }

    private func lost(_ message: String) -> PostgresError {
        PostgresError(sqlState: nil, message: message, connectionLost: true)
    }

    /// How a transaction reads: the default for writes (each statement sees what is committed when it
    /// starts; rows locked with `FOR UPDATE` are the writers' meeting points), or one snapshot for a
    /// reader that runs several statements.
    public enum Isolation: String, Sendable {
        case readCommitted = "BEGIN ISOLATION LEVEL READ COMMITTED"
        case snapshot = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws. A serialization
    /// failure or deadlock (SQLSTATE 40001, 40P01) rolls back and runs the whole body again (up to
    /// `attempts` times), so a body must do nothing outside the database that cannot be done twice.
    public func transaction<T>(_ isolation: Isolation = .readCommitted, attempts: Int = 5, _ body: (PostgresConnection) throws -> T) throws -> T {
        var attempt = 1
        while true {
            try execute(isolation.rawValue)
            let value: T
            do {
                value = try body(self)
            } catch {
                if isUsable && !isIdle { _ = try? execute("ROLLBACK") }
                if let e = error as? PostgresError, e.isTransient, attempt < attempts {
                    attempt += 1
                    continue
                }
                throw error
            }
            do {
                try execute("COMMIT")
            } catch var e as PostgresError {
                if e.isTransient, attempt < attempts {
                    attempt += 1
                    continue
                }
                if e.connectionLost { e.duringCommit = true }
                throw e
            }
            return value
        }
    }
}

/// A few connections to one database, made when first needed and shared by the threads that use a
/// store (the C-STORE receiver's, the triage workers', the delivery thread). A connection found broken,
/// or on a server that refuses writes (a standby after a failover), is closed and a new one is made on
/// the next use. Borrowers beyond `maximumIdle` get a connection of their own, closed when they are
/// done, so a call made from inside another (a listing's body) never waits.
public final class PostgresPool: Sendable {
    public let conninfo: String
    public let maximumIdle: Int
    private let idle = Mutex<[PostgresConnection]>([])
    private let faults = Atomic<Int>(0)

    public init(conninfo: String, maximumIdle: Int = 4) {
        self.conninfo = conninfo
        self.maximumIdle = maximumIdle
    }

    /// How many times a connection was found lost, could not be made, or reached a read-only server: when
    /// it moves, the server may have changed (a failover) or restarted, and what was committed just before
    /// may be missing there (asynchronous replication), so a writer checks what it holds against the database.
    public var connectionFaults: Int { faults.load(ordering: .relaxed) }

    /// Lends a connection for `body`. When a connection taken from the pool turns out to have been lost
    /// while it waited there (the server restarted, a failover), so that not even `body`'s first statement
    /// went through, or reached a server that refused a write (a former primary now a standby; the
    /// transaction was rolled back), `body` runs once more on a new connection. A connection lost later
    /// is an error: what `body` did with the rows it had (a listing printed) is not done twice.
    public func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let pooled = idle.withLock { list in list.popLast() }
        if let connection = pooled {
            let before = connection.completedStatements
            do {
                let value = try body(connection)
                giveBack(connection)
                return value
            } catch let e as PostgresError where e.connectionLost && (connection.completedStatements == before || connection.refusedWrite) {
                // A stale connection, or one on a server that cannot write: try once on a fresh one (below).
                faults.add(1, ordering: .relaxed)
            } catch {
                noteFault(error)
                giveBack(connection)
                throw error
            }
        }
        let connection: PostgresConnection
        do { connection = try PostgresConnection(conninfo) } catch {
            noteFault(error)
            throw error
        }
        let value: T
        do { value = try body(connection) } catch {
            noteFault(error)
            giveBack(connection)
            throw error
        }
        giveBack(connection)
        return value
    }

    private func noteFault(_ error: any Error) {
        if let e = error as? PostgresError, e.connectionLost { faults.add(1, ordering: .relaxed) }
    }

    private func giveBack(_ connection: PostgresConnection) {
        guard connection.isUsable, connection.isIdle, !connection.refusedWrite else { return }
        idle.withLock { list in
            if list.count < maximumIdle { list.append(connection) }
        }
    }

    /// How many connections wait in the pool.
    public var idleCount: Int { idle.withLock { $0.count } }

    /// Closes the idle connections (new ones are made when needed).
    public func closeIdle() {
        idle.withLock { list in list.removeAll() }
    }
}

/// What a libpq connection string or URI names, read by libpq itself, for messages: never its password.
enum PostgresConnectionString {
    /// The options libpq reads from `conninfo` (nil when it cannot be read).
    static func options(_ conninfo: String) -> [String: String]? {
        var error: UnsafeMutablePointer<CChar>?
        guard let parsed = PQconninfoParse(conninfo, &error) else {
            if let error { PQfreemem(error) }
            return nil
        }
        defer { PQconninfoFree(parsed) }
        var options: [String: String] = [:]
        var option = parsed
        while let keyword = option.pointee.keyword {
            if let key = String(validatingCString: keyword), let value = option.pointee.val.flatMap({ String(validatingCString: $0) }), !value.isEmpty {
                options[key] = value
            }
            option += 1
        }
        return options
    }

    /// host:port/database (several hosts as host1:port1,host2:port2/database), with what libpq would take
    /// from `PGHOST`, `PGPORT` and `PGDATABASE` when the string does not say; a socket folder stands for a local host.
    static func server(_ conninfo: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        guard let options = options(conninfo) else { return "PostgreSQL (a connection string libpq cannot read)" }
        func value(_ key: String, _ variable: String) -> String? { options[key] ?? environment[variable].flatMap { $0.isEmpty ? nil : $0 } }
        let hosts = (value("host", "PGHOST") ?? value("hostaddr", "PGHOSTADDR") ?? "localhost").split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let ports = (value("port", "PGPORT") ?? "5432").split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let database = value("dbname", "PGDATABASE") ?? value("user", "PGUSER") ?? "postgres"
        let servers = hosts.enumerated().map { n, host in
            let port = ports.count == hosts.count ? ports[n] : (ports.first ?? "5432")
            return "\(host.isEmpty ? "localhost" : host):\(port.isEmpty ? "5432" : port)"
        }
        return servers.joined(separator: ",") + "/" + database
    }
}
