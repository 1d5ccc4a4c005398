import ArgumentParser
import BoneTriage
import Foundation

/// Where the worklist is: --db, else the config's [worklist] database.
struct WorklistLocationOptions: ParsableArguments {
    @Option(help: "The worklist database (overrides the config).")
    var db: String?
    @Option(help: "The configuration file.")
    var config: String?

    func databasePath() throws -> String {
        if let db { return db }
        if let config { return try BoneTriageConfiguration.load(path: config).databasePath }
        if FileManager.default.fileExists(atPath: BoneTriageConfiguration.defaultPath) {
            return try BoneTriageConfiguration.load(path: BoneTriageConfiguration.defaultPath).databasePath
        }
        return BoneTriageConfiguration.defaultDatabasePath
    }

    func open() throws -> any WorklistStore { try Worklist.open(path: databasePath(), role: .reviewer) }
}

/// The filters `list` and `export` share.
struct WorklistFilterOptions: ParsableArguments {
    @Flag(help: "Only flagged studies: abnormal and not yet reviewed (or changed after review).")
    var flagged = false
    @Option(help: "Only studies in this state (receiving, pending, triaged, not_applicable, failed); repeatable.")
    var state: [StudyState] = []
    @Option(help: "Only studies with this review state (unreviewed, confirmed, overridden).")
    var review: ReviewState?
    @Option(help: "Only studies that arrived on or after this date (YYYY-MM-DD, local) or time (ISO 8601).")
    var since: String?
    @Option(help: "Only studies that arrived before the end of this date (YYYY-MM-DD, local) or before this time (ISO 8601).")
    var until: String?
    @Option(help: "Only this body part (e.g. HUMERUS; case does not matter).")
    var bodyPart: String?
    @Option(help: "At most this many studies.")
    var limit: Int?

    func filter() throws -> WorklistFilter {
        var f = WorklistFilter()
        f.flaggedOnly = flagged
        f.states = state
        f.review = review
        f.since = try since.map { try Self.date($0, option: "--since", endOfDay: false) }
        f.until = try until.map { try Self.date($0, option: "--until", endOfDay: true) }
        f.bodyPart = bodyPart
        if let limit {
            guard limit > 0 else { throw ValidationError("--limit must be a positive number, not \(limit)") }
            f.limit = limit
        }
        return f
    }

    static func date(_ text: String, option: String, endOfDay: Bool) throws -> Date {
        let day = DateFormatter()
        day.locale = Locale(identifier: "en_US_POSIX")
        day.timeZone = .current
        day.dateFormat = "yyyy-MM-dd"
        day.isLenient = false
        if text.count == 10, let d = day.date(from: text) {
            return endOfDay ? Calendar.current.date(byAdding: .day, value: 1, to: d) ?? d : d
        }
        if let t = try? Date(text, strategy: .iso8601) { return t }
        throw ValidationError("\(option) '\(text)' is not a date; use YYYY-MM-DD or an ISO 8601 time such as 2026-11-26T14:00:00Z")
    }
}

extension StudyState: ExpressibleByArgument {}
extension ReviewState: ExpressibleByArgument {}
extension Finding: ExpressibleByArgument {}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, csv
}

enum Terminal {
    /// Colour only for a person at a terminal that wants it.
    static var wantsColour: Bool {
        let env = ProcessInfo.processInfo.environment
        return isatty(STDOUT_FILENO) != 0 && env["NO_COLOR"] == nil && env["TERM"] != "dumb"
    }
}
