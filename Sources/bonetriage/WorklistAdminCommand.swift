import ArgumentParser
import BoneTriage
import Foundation

struct WorklistAdminCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worklist",
        abstract: "Administer the worklist database.",
        subcommands: [WorklistMigrateCommand.self])
}

struct WorklistMigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Create or upgrade the worklist's schema now (bonetriage serve does it when it starts).",
        discussion: """
            Run it as the daemon's user (SQLite) or with the daemon's database login (PostgreSQL), for example before \
            starting several nodes on a new PostgreSQL worklist. A worklist written by a newer BoneTriage is refused, \
            untouched. For PostgreSQL it also grants the group roles bonetriage_reviewer and bonetriage_reader, where \
            they exist, what they may do (see "A shared PostgreSQL worklist" in the README).
            """)

    @OptionGroup var location: WorklistLocationOptions

    func run() throws {
        let worklist = try location.location()
        _ = try Worklist.open(worklist, role: .daemon)
        print("the worklist \(worklist) has the current schema (\(Worklist.schemaMigrations.count) migrations, the last \(Worklist.schemaMigrations.last ?? "none"))")
    }
}
