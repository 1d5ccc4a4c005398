import Foundation

/// What `list` and `export` write, streamed from the store's cursor into an `OutputWriter`: no array of
/// studies and no whole output is ever held, whatever the worklist's size.
public enum WorklistListing {
    /// The table's first page is this long when the output is not a terminal.
    public static let defaultPageSize = 40
    /// The table's IDs are at least this long (more where two studies share as many characters).
    public static let idLength = 8

    /// The table: the header, one line per study (IDs as their shortest unique prefix, at least 8
    /// characters), then the summary line. The filter's limit is the page (nil: every study).
    @discardableResult
    public static func table(_ store: any WorklistStore, _ filter: WorklistFilter, colour: Bool, to out: OutputWriter) throws -> Int {
        let counts = try store.counts(matching: filter)
        try out.line(WorklistPresentation.tableHeader())
        var shown = 0
        if let page = filter.limit, page <= 1000 {
            // A page: read it, then look up its IDs' neighbours.
            var studies: [Study] = []
            try store.forEachStudy(matching: filter) { studies.append($0) }
            let prefixes = try store.shortIDPrefixes(of: studies.map(\.shortID), minimumLength: idLength)
            for s in studies { try out.line(WorklistPresentation.tableLine(s, id: prefixes.prefix(of: s.shortID), colour: colour)) }
            shown = studies.count
        } else {
            let prefixes = try store.shortIDPrefixes(of: nil, minimumLength: idLength)
            try store.forEachStudy(matching: filter) { s in
                try out.line(WorklistPresentation.tableLine(s, id: prefixes.prefix(of: s.shortID), colour: colour))
                shown += 1
            }
        }
        if shown == 0 { try out.line("  (no studies match)") }
        try out.line(WorklistPresentation.summary(counts, shown: shown))
        try out.flush()
        return shown
    }

    /// One JSON array with one object per line (the keys of `WorklistPresentation.jsonObject`).
    @discardableResult
    public static func json(_ store: any WorklistStore, _ filter: WorklistFilter, to out: OutputWriter) throws -> Int {
        var n = 0
        try out.write("[")
        try store.forEachStudy(matching: filter) { s in
            try out.write((n == 0 ? "\n" : ",\n") + WorklistPresentation.jsonLine(s))
            n += 1
        }
        try out.write(n == 0 ? "]\n" : "\n]\n")
        try out.flush()
        return n
    }

    /// RFC 4180 CSV with the header (`WorklistPresentation.csvHeader`).
    @discardableResult
    public static func csv(_ store: any WorklistStore, _ filter: WorklistFilter, to out: OutputWriter) throws -> Int {
        var n = 0
        try out.write(WorklistPresentation.csvRecord(WorklistPresentation.csvHeader))
        try store.forEachStudy(matching: filter) { s in
            try out.write(WorklistPresentation.csvRecord(WorklistPresentation.csvFields(s)))
            n += 1
        }
        try out.flush()
        return n
    }

    /// MURA's `path,label` form (`MuraExport`), with what was left out and why.
    public static func mura(_ store: any WorklistStore, _ filter: WorklistFilter, to out: OutputWriter) throws -> MuraExport.Report {
        var report = MuraExport.Report()
        try store.forEachStudy(matching: filter) { s in
            switch MuraExport.record(s) {
            case let .success(line):
                try out.write(line)
                report.wrote()
            case let .failure(why):
                report.omit(s, why)
            }
        }
        try out.flush()
        return report
    }
}
