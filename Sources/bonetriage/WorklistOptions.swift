import ArgumentParser
import BoneTriage
import Foundation

/// Where the worklist is: --db, else the config's [worklist] database.
struct WorklistLocationOptions: ParsableArguments {
    @Option(help: ArgumentHelp("The worklist (overrides the config): a SQLite file, or a PostgreSQL URI such as postgresql://db.example/bonetriage.",
                               discussion: "For PostgreSQL, what the URI leaves out comes from the PG* environment variables, and the password from ~/.pgpass, as for psql; `postgresql://` alone takes everything from them."))
    var db: String?
    @Option(help: "The configuration file.")
    var config: String?

    func location() throws -> WorklistLocation {
        if let db { return WorklistLocation(db) }
        if let config { return try BoneTriageConfiguration.load(path: config).worklistLocation }
        if FileManager.default.fileExists(atPath: BoneTriageConfiguration.defaultPath) {
            return try BoneTriageConfiguration.load(path: BoneTriageConfiguration.defaultPath).worklistLocation
        }
        return .sqlite(path: BoneTriageConfiguration.defaultDatabasePath)
    }

    func open(role: WorklistRole = .reviewer) throws -> any WorklistStore { try Worklist.open(location(), role: role) }
}

/// The filters `list` and `export` share.
struct WorklistFilterOptions: ParsableArguments {
    @Flag(help: "Only flagged studies: abnormal and not yet reviewed (or changed after review).")
    var flagged = false
    @Option(help: "Only studies in this state (receiving, pending, triaged, not_applicable, failed); repeatable.")
    var state: [StudyState] = []
    @Option(help: "Only studies with this review state (unreviewed, confirmed, overridden).")
    var review: ReviewState?
    @Option(help: "Only studies that arrived at or after this time: today, yesterday, a span back from now (90m, 2h, 3d, 2w), a local date (2026-11-30) or time (2026-11-30T08:00), or ISO 8601 with a zone.")
    var since: String?
    @Option(help: "Only studies that arrived before this time (a date or today/yesterday: before its end); as --since.")
    var until: String?
    @Option(help: "Only this body part (e.g. HUMERUS; case does not matter).")
    var bodyPart: String?
    @Option(help: "Only the studies with exactly this accession number.")
    var accession: String?
    @Option(help: "Only this patient: exactly this patient ID, or a patient name beginning with this text (DOE^J; case does not matter).")
    var patient: String?
    @Option(help: "priority (changed after review, then flagged by arrival day, newest first, most probable first within a day, then the rest newest first), arrival (newest first) or probability (highest first).")
    var sort: WorklistSort = .priority
    @Option(help: "At most this many studies (the table's page: the terminal's height, else 40).")
    var limit: Int?

    func filter(now: Date = Date()) throws -> WorklistFilter {
        var f = WorklistFilter()
        f.flaggedOnly = flagged
        f.states = state
        f.review = review
        do {
            f.since = try since.map { try TimeExpression.parse($0, option: "--since", endOfDay: false, now: now) }
            f.until = try until.map { try TimeExpression.parse($0, option: "--until", endOfDay: true, now: now) }
        } catch let error as TimeExpression.Invalid {
            throw ValidationError(error.description)
        }
        f.bodyPart = bodyPart
        f.accession = accession
        f.patient = patient.flatMap { $0.trimmingCharacters(in: .whitespaces).isEmpty ? nil : $0.trimmingCharacters(in: .whitespaces) }
        f.sort = sort
        if let limit {
            guard limit > 0 else { throw ValidationError("--limit must be a positive number, not \(limit)") }
            f.limit = limit
        }
        return f
    }
}

extension WorklistSort: ExpressibleByArgument {}
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

    /// The table's page on a terminal: its height less the header, the summary and the prompt; else 40.
    static var pageSize: Int {
        var size = winsize()
        let measured = withUnsafeMutablePointer(to: &size) { ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), $0) }
        guard isatty(STDOUT_FILENO) != 0, measured == 0, size.ws_row > 0 else {
            return WorklistListing.defaultPageSize
        }
        return max(5, Int(size.ws_row) - 3)
    }
}
