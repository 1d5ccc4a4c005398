import BoneTriage
import Foundation
import Testing

/// `bonetriage bench worklist` builds the synthetic worklist that Benchmarks/worklist_scale.py times the
/// CLI on; with `--out postgresql://...` it builds it in a PostgreSQL database (issue 14's benchmark),
/// through the same store API, and never adds to a database that already holds studies.
@Suite("bonetriage bench worklist on PostgreSQL", .serialized,
       .enabled(if: Executable.url != nil && PostgresCluster.isInstalled,
                "skipped: needs the bonetriage executable next to the tests and PostgreSQL 15 (apt-get install postgresql-15)"))
struct BenchWorklistCommandTests {
    func counts(_ conninfo: String) throws -> (studies: Int, flagged: Int) {
        let store = try Worklist.open(WorklistLocation(conninfo), role: .reviewer)
        let counts = try store.counts(matching: WorklistFilter())
        return (counts.total, counts.flagged)
    }

    @Test("--out postgresql://... builds the worklist in that database, as for a SQLite file")
    func buildsInPostgres() throws {
        let database = try PostgresCluster.shared().freshDatabase()
        let run = try Executable.run(["bench", "worklist", "--studies", "120", "--out", database])
        #expect(run.status == 0, "\(run.stderr)")
        let built = try counts(database)
        #expect(built.studies == 120)

        // The same worklist as in a SQLite file: the generator is deterministic.
        let dir = try TemporaryDirectory()
        let file = dir.path("worklist.sqlite")
        let sqlite = try Executable.run(["bench", "worklist", "--studies", "120", "--out", file])
        #expect(sqlite.status == 0, "\(sqlite.stderr)")
        let inFile = try Worklist.open(path: file, role: .reviewer).counts(matching: WorklistFilter())
        #expect(built.studies == inFile.total && built.flagged == inFile.flagged)
        #expect(run.stdout.contains("120 studies") && !run.stdout.contains("password"))
    }

    @Test("a PostgreSQL database that already holds studies is refused, untouched, even with --force")
    func refusesAFilledDatabase() throws {
        let database = try PostgresCluster.shared().freshDatabase()
        let first = try Executable.run(["bench", "worklist", "--studies", "30", "--out", database])
        #expect(first.status == 0, "\(first.stderr)")
        for extra in [[], ["--force"]] {
            let again = try Executable.run(["bench", "worklist", "--studies", "30", "--out", database] + extra)
            #expect(again.status != 0)
            #expect(again.stderr.contains("already holds 30 studies") && again.stderr.contains("empty database"), "\(again.stderr)")
        }
        #expect(try counts(database).studies == 30)
    }
}
