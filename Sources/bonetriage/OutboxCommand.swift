import ArgumentParser
import BoneTriage
import Foundation

struct OutboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox",
        abstract: "The result objects on their way to the PACS: list them, retry or drop an entry.",
        discussion: """
            Each entry is one result object (a report, SR, or a Secondary Capture image, SC) for one [[results]] destination. \
            States: building (its file is not made yet), not built (it cannot be: the reason is shown), pending (sent at NEXT), \
            refused (the destination refused it for good: fix the cause, then `outbox retry`), delivered, dropped. \
            The daemon sends; these commands only change the worklist.
            """,
        subcommands: [OutboxListCommand.self, OutboxRetryCommand.self, OutboxDropCommand.self],
        defaultSubcommand: OutboxListCommand.self)
}

struct OutboxListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "Entries not yet delivered (--all: every entry).")

    @OptionGroup var location: WorklistLocationOptions
    @Flag(help: "Delivered and dropped entries too.")
    var all = false
    @Option(help: "table, json or csv.")
    var format: OutputFormat = .table

    func run() throws {
        let entries = try location.open().outboxEntries(includeDelivered: all)
        switch format {
        case .table: print(OutboxListing.table(entries))
        case .json: print(OutboxListing.json(entries))
        case .csv: FileHandle.standardOutput.write(Data(OutboxListing.csv(entries).utf8))
        }
    }
}

struct OutboxRetryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "retry", abstract: "Send entries again now (pending or refused ones).")

    @OptionGroup var location: WorklistLocationOptions
    @Argument(help: "Entry IDs from `bonetriage outbox` (or unique prefixes, at least 4 characters).")
    var entries: [String] = []
    @Flag(help: "Every refused entry.")
    var allRefused = false

    func validate() throws {
        if entries.isEmpty && !allRefused { throw ValidationError("give entry IDs from `bonetriage outbox`, or --all-refused") }
        if !entries.isEmpty && allRefused { throw ValidationError("give entry IDs or --all-refused, not both") }
    }

    func run() throws {
        let worklist = try location.open(role: .recordingReviews)
        let retried = try allRefused ? worklist.retryRefusedDeliveries(at: Date()) : worklist.retryDeliveries(entryIDs: entries, at: Date())
        if retried.isEmpty { print("no refused entry") }
        for e in retried { print("\(e.entryID) (\(e.kind.rawValue) of study \(e.shortID.prefix(8)) to \(e.destination)): pending, sent at the daemon's next pass") }
    }
}

struct OutboxDropCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drop", abstract: "Stop entries for good (kept in the outbox as dropped, with who and when).")

    @OptionGroup var location: WorklistLocationOptions
    @Argument(help: "Entry IDs from `bonetriage outbox` (or unique prefixes, at least 4 characters).")
    var entries: [String]

    func run() throws {
        let worklist = try location.open(role: .recordingReviews)
        let who = try ReviewerIdentity.current(statedName: nil).login
        for e in try worklist.dropDeliveries(entryIDs: entries, by: who, at: Date()) {
            print("\(e.entryID) (\(e.kind.rawValue) of study \(e.shortID.prefix(8)) to \(e.destination)): dropped by \(who)")
        }
    }
}
