import Foundation

/// A time given to `--since` or `--until`: `today`, `yesterday`, a span back from now (`90m`, `2h`,
/// `3d`, `2w`), a local date (`2026-11-30`), a local time without a zone (`2026-11-30T08:00`), or an ISO
/// 8601 time with one (`2026-11-30T08:00:00Z`). A day given to `--until` means its end.
public enum TimeExpression {
    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let option: String
        public let text: String

        public init(option: String, text: String) {
            self.option = option
            self.text = text
        }
        public var description: String {
            "\(option) '\(text)' is not a time: use today, yesterday, a span back from now (90m, 2h, 3d, 2w), "
                + "a local date YYYY-MM-DD (2026-11-30), a local time (2026-11-30T08:00), or an ISO 8601 time with a zone (2026-11-30T08:00:00Z)"
        }
    }

    /// The time `text` names; `endOfDay` (for --until) turns a day into the start of the next one.
    public static func parse(_ text: String, option: String, endOfDay: Bool, now: Date = Date(), timeZone: TimeZone = .current) throws -> Date {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        let value = text.trimmingCharacters(in: .whitespaces).lowercased()
        func day(_ start: Date) -> Date { endOfDay ? calendar.date(byAdding: .day, value: 1, to: start) ?? start : start }
        let today = calendar.startOfDay(for: now)
        switch value {
        case "today": return day(today)
        case "yesterday": return day(calendar.date(byAdding: .day, value: -1, to: today) ?? today)
        default: break
        }
        if let unit = value.last, let amount = Int(value.dropLast()), amount >= 0 {
            let seconds: [Character: Double] = ["m": 60, "h": 3600, "d": 86_400, "w": 604_800]
            if let size = seconds[unit] { return now.addingTimeInterval(-Double(amount) * size) }
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = timeZone
        formatter.isLenient = false
        formatter.dateFormat = "yyyy-MM-dd"
        if value.count == 10, let d = formatter.date(from: value) { return day(d) }
        let local = value.replacingOccurrences(of: " ", with: "t").uppercased()
        for format in ["yyyy-MM-dd'T'HH:mm", "yyyy-MM-dd'T'HH:mm:ss"] {
            formatter.dateFormat = format
            if let t = formatter.date(from: local) { return t }
        }
        if let t = try? Date(text.trimmingCharacters(in: .whitespaces), strategy: .iso8601) { return t }
        throw Invalid(option: option, text: text)
    }
}
