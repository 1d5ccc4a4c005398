import Foundation
import Logging

/// One line per event on stderr. Under journald (`JOURNAL_STREAM` set) each line starts with its syslog
/// priority (`<6>`) so `journalctl -p warning` works, and carries no timestamp (journald adds one);
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

    static func priority(_ level: Logger.Level) -> Int {
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
        var merged = metadata
        if let extra = event.metadata { merged.merge(extra) { _, new in new } }
        let fields = merged.keys.sorted().map { key -> String in
            let value = "\(merged[key].map { "\($0)" } ?? "")"
            return value.contains(" ") ? "\(key)=\"\(value)\"" : "\(key)=\(value)"
        }
        // Control characters from peers or files must not forge log lines.
        let text = "\(event.message)".map { $0.isNewline || ($0.asciiValue.map { $0 < 0x20 } ?? false) ? " " : String($0) }.joined()
        let body = "\(label): \(text)" + (fields.isEmpty ? "" : " " + fields.joined(separator: " "))
        let line: String
        if journald {
            line = "<\(Self.priority(event.level))>\(body)\n"
        } else {
            let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: .current, formatOptions: [.withInternetDateTime])
            line = "\(stamp) \(event.level.rawValue.uppercased()) \(body)\n"
        }
        FileHandle.standardError.write(Data(line.utf8))
    }
}
