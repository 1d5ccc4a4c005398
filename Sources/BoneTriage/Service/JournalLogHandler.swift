import Foundation
import Logging

/// One line per event on stderr. Under journald (`JOURNAL_STREAM` set) each line starts with its syslog
/// priority (`<6>`) so `journalctl -p warning` works, and carries neither a timestamp nor the program's
/// name (journald adds both: `bonetriage[pid]:`);
/// on a terminal or in a file it starts with an ISO 8601 timestamp and the level.
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let journald: Bool

    public init(label: String, level: Logger.Level = .info, environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.label = label
        logLevel = level
        journald = environment["JOURNAL_STREAM"].map { !$0.isEmpty } ?? false
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public static func priority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: return 7
        case .info: return 6
        case .notice: return 5
        case .warning: return 4
        case .error: return 3
        case .critical: return 2
        }
    }

    public func log(event: LogEvent) {
        FileHandle.standardError.write(Data(line(level: event.level, message: "\(event.message)", metadata: event.metadata).utf8))
    }

    /// The line written for one event, newline included.
    public func line(level: Logger.Level, message: String, metadata extra: Logger.Metadata?, at date: Date = Date()) -> String {
        var merged = metadata
        if let extra { merged.merge(extra) { _, new in new } }
        let fields = merged.keys.sorted().map { key -> String in
            let value = Self.oneLine("\(merged[key].map { "\($0)" } ?? "")")
            return value.contains(" ") ? "\(key)=\"\(value)\"" : "\(key)=\(value)"
        }
        let body = Self.oneLine(message) + (fields.isEmpty ? "" : " " + fields.joined(separator: " "))
        // journald already starts the line with `bonetriage[pid]:`; the label would say it twice.
        if journald { return "<\(Self.priority(level))>\(body)\n" }
        let stamp = ISO8601DateFormatter.string(from: date, timeZone: .current, formatOptions: [.withInternetDateTime])
        return "\(stamp) \(level.rawValue.uppercased()) \(label): \(body)\n"
    }

    /// Control characters from peers or files must not forge log lines.
    static func oneLine(_ text: String) -> String {
        String(text.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : Character($0) })
    }
}
