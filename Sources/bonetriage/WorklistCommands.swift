import ArgumentParser
import BoneTriage
import Foundation

struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "The worklist, one page at a time: changed after review, then flagged by day, then the rest (--sort).",
        discussion: """
            A '!' marks a flagged study (abnormal, not yet reviewed), a '#' beside it a study with pictures (heatmaps of where \
            the model looked: show STUDY --images DIR); a '*' after the finding marks the radiologist's own label \
            (an override). IDs are the shortest unique prefix (at least 8 characters): show, confirm and override accept them, \
            a Study Instance UID or an accession number. The last column, P, is the delivery of the study's results to the PACS: \
            + delivered, ~ on its way, x refused or not buildable (see `bonetriage outbox`). On a terminal the table shows one screen; --all shows everything \
            through a pager ($BONETRIAGE_PAGER, else $PAGER, else less -FRX). JSON and CSV list every study unless --limit.
            """)

    @OptionGroup var location: WorklistLocationOptions
    @OptionGroup var filters: WorklistFilterOptions
    @Option(help: "table (fits 80 columns), json or csv.")
    var format: OutputFormat = .table
    @Flag(help: "Every study, not one page (through a pager on a terminal).")
    var all = false
    @Flag(help: "Write to the terminal directly, without a pager.")
    var noPager = false

    func validate() throws {
        if all && filters.limit != nil { throw ValidationError("--all and --limit contradict each other: give one") }
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let store = try location.open()
        var filter = try filters.filter()
        do {
            switch format {
            case .table:
                if !all { filter.limit = filter.limit ?? Terminal.pageSize }
                let pager = all && !noPager && isatty(STDOUT_FILENO) != 0 ? Pager.start() : nil
                defer { pager?.finish() }
                try WorklistListing.table(store, filter, colour: Terminal.wantsColour, to: OutputWriter(fd: pager?.fd ?? STDOUT_FILENO))
            case .json: try WorklistListing.json(store, filter, to: OutputWriter(fd: STDOUT_FILENO))
            case .csv: try WorklistListing.csv(store, filter, to: OutputWriter(fd: STDOUT_FILENO))
            }
        } catch is OutputClosed {
            return
        }
    }
}

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write the worklist as RFC 4180 CSV (or MURA's path,label form with --mura), streamed.",
        discussion: """
            Cells that would start with =, +, -, @, tab or carriage return get a leading apostrophe so spreadsheets never run them. \
            The file holds patient data: it is created with mode 0600, written whole under a temporary name in the same folder, \
            then renamed; an existing file is replaced only with --force.
            """)

    @OptionGroup var location: WorklistLocationOptions
    @OptionGroup var filters: WorklistFilterOptions
    @Option(help: "The file to write, or - for standard output.")
    var out: String
    @Flag(help: "MURA's path,label form (XR_<PART>/patient<ID>/study<N>_<positive|negative>/, 1 = abnormal) from the radiologists' labels, for reviewed drop-folder studies in MURA layout; standard error says which studies were left out and why.")
    var mura = false
    @Flag(help: "Replace --out if it exists.")
    var force = false

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        let store = try location.open()
        let filter = try filters.filter()
        var written = 0
        var report: MuraExport.Report?
        func body(_ writer: OutputWriter) throws {
            if mura {
                report = try WorklistListing.mura(store, filter, to: writer)
            } else {
                written = try WorklistListing.csv(store, filter, to: writer)
            }
        }
        do {
            if out == "-" {
                try body(OutputWriter(fd: STDOUT_FILENO))
            } else {
                try ExportFile.write(to: out, force: force, body)
            }
        } catch is OutputClosed {
            return
        }
        if let report {
            FileHandle.standardError.write(Data((report.text(destination: out == "-" ? nil : out) + "\n").utf8))
        } else if out != "-" {
            FileHandle.standardError.write(Data("wrote \(written) studies to \(out)\n".utf8))
        }
    }
}
