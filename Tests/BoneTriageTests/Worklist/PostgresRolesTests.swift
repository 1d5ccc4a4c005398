import BoneTriage
import Foundation
import Testing

/// The roles of a shared PostgreSQL worklist, enforced by the server: the daemon's login owns and
/// writes; a radiologist's login in bonetriage_reviewer reads and records reviews (recorded under that
/// login, changing only the review columns); one in bonetriage_reader only reads.
@Suite("PostgreSQL worklist: roles", .serialized, .enabled(if: PostgresCluster.isInstalled, "skipped: PostgreSQL 15 is not installed (apt-get install postgresql-15)"))
struct PostgresRolesTests {
    /// The group roles (once per cluster) and two logins of this test: a radiologist and a viewer.
    static func logins(_ cluster: PostgresCluster) throws -> (reviewer: String, reader: String) {
        let admin = try PostgresConnection(cluster.conninfo(database: "postgres"))
        try admin.execute("""
            DO $$ BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bonetriage_reviewer') THEN CREATE ROLE bonetriage_reviewer NOLOGIN; END IF;
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bonetriage_reader') THEN CREATE ROLE bonetriage_reader NOLOGIN; END IF;
            END $$
            """)
        let suffix = UUID().uuidString.prefix(8).lowercased()
        let reviewer = "dr_\(suffix)", reader = "viewer_\(suffix)"
        try admin.execute("CREATE ROLE \(reviewer) LOGIN IN ROLE bonetriage_reviewer")
        try admin.execute("CREATE ROLE \(reader) LOGIN IN ROLE bonetriage_reader")
        return (reviewer, reader)
    }

    /// The same database as another login.
    static func connection(_ conninfo: String, as login: String) -> String {
        conninfo.replacingOccurrences(of: "user=postgres", with: "user=\(login)")
    }

    static let destination = ResultDestination(name: "PACS", aeTitle: "PACS", host: "10.0.0.5", port: 104, callingAETitle: "BONETRIAGE",
                                               kinds: [.structuredReport], verdicts: .all)

    /// A triaged abnormal study, written by the daemon's store.
    static func triagedStudy(_ store: any WorklistStore, _ uid: String) throws {
        var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: uid + ".1", filePath: "/spool/\(uid)/1.dcm", eligible: true, source: .cstore)
        a.bodyPart = "HUMERUS"
        a.sopClassUID = "1.2.840.10008.5.1.4.1.1.1"
        _ = try store.recordArrival(a)
        var r = TriageResult(studyInstanceUID: uid, imageProbabilities: [uid + ".1": 0.9], threshold: 0.5, modelID: "m", modelHash: "h")
        r.resultDestinations = [destination]
        try store.recordTriage(r)
    }

    @Test("a reviewer login reads, and records reviews under its own name (whatever the client sends) with the updated report queued; it cannot change what the model found nor the trail")
    func reviewer() throws {
        let cluster = try PostgresCluster.shared()
        let (reviewerLogin, _) = try Self.logins(cluster)
        let database = try cluster.freshDatabase()
        let daemon = try Worklist.open(.postgresql(connection: database), role: .daemon)
        try Self.triagedStudy(daemon, "1.2.970")
        let asReviewer = Self.connection(database, as: reviewerLogin)
        let radiologist = try Worklist.open(.postgresql(connection: asReviewer), role: .recordingReviews)
        #expect(try radiologist.studies(matching: WorklistFilter()).count == 1)
        let review = try radiologist.recordReview(studyInstanceUID: "1.2.970", by: ReviewerIdentity(login: "someone-else", statedName: "Dr. Jane Smith"),
                                                  action: .confirm, label: nil, note: nil, at: Date())
        #expect(review.reviewer == reviewerLogin && review.statedReviewer == "Dr. Jane Smith")
        let trail = try daemon.reviews(ofStudy: "1.2.970")
        #expect(trail.map(\.reviewer) == [reviewerLogin], "the database records its login")
        #expect(try daemon.study(studyInstanceUID: "1.2.970").reviewState == .confirmed)
        #expect(try daemon.resultObjects(ofStudy: "1.2.970").count == 2, "the review queued the updated report")

        let raw = try PostgresConnection(asReviewer)
        for statement in ["UPDATE study SET probability = 0.1, verdict = 'normal'", "UPDATE review SET label = 'normal'", "DELETE FROM review",
                          "DELETE FROM study", "UPDATE resultDelivery SET state = 'dropped'", "INSERT INTO heatmap (imageID, modelHash, madeAt) VALUES (1, 'x', now())"] {
            do {
                try raw.execute(statement)
                Issue.record("the reviewer's login could run: \(statement)")
            } catch let error as PostgresError {
                #expect(error.sqlState == "42501", "\(statement): \(error)")
            }
        }
        #expect(try daemon.study(studyInstanceUID: "1.2.970").probability == 0.9)
    }

    @Test("a reader login lists and shows; recording a review is refused by the database with the role to ask for")
    func reader() throws {
        let cluster = try PostgresCluster.shared()
        let (_, readerLogin) = try Self.logins(cluster)
        let database = try cluster.freshDatabase()
        let daemon = try Worklist.open(.postgresql(connection: database), role: .daemon)
        try Self.triagedStudy(daemon, "1.2.971")
        let viewer = try Worklist.open(.postgresql(connection: Self.connection(database, as: readerLogin)), role: .reviewer)
        #expect(try viewer.studies(matching: WorklistFilter()).map(\.studyInstanceUID) == ["1.2.971"])
        #expect(try viewer.images(ofStudy: "1.2.971").count == 1)
        do {
            _ = try viewer.recordReview(studyInstanceUID: "1.2.971", by: ReviewerIdentity(login: readerLogin), action: .confirm, label: nil, note: nil, at: Date())
            Issue.record("a reader recorded a review")
        } catch let error as WorklistError {
            guard case .databaseRefused = error else { Issue.record("\(error)"); return }
            #expect(error.description.contains("bonetriage_reviewer"), "\(error)")
        }
        #expect(try daemon.reviews(ofStudy: "1.2.971").isEmpty)
    }

    @Test("the CLI on a PostgreSQL worklist: list with --db, confirm as a reviewer login, refused with the reason as a reader",
          .enabled(if: Executable.url != nil, "skipped: needs the built bonetriage executable"))
    func commandLine() throws {
        let cluster = try PostgresCluster.shared()
        let (reviewerLogin, readerLogin) = try Self.logins(cluster)
        let database = try cluster.freshDatabase()
        let daemon = try Worklist.open(.postgresql(connection: database), role: .daemon)
        try Self.triagedStudy(daemon, "1.2.972")
        let listed = try Executable.run(["list", "--format", "csv", "--db", Self.connection(database, as: readerLogin)])
        #expect(listed.status == 0 && listed.stdout.contains("1.2.972"), "\(listed.stdout)\(listed.stderr)")
        let refused = try Executable.run(["confirm", "1.2.972", "--db", Self.connection(database, as: readerLogin)])
        #expect(refused.status == 1 && refused.stderr.contains("bonetriage_reviewer"), "\(refused.stderr)")
        let confirmed = try Executable.run(["confirm", "1.2.972", "--db", Self.connection(database, as: reviewerLogin)])
        #expect(confirmed.status == 0, "\(confirmed.stderr)")
        #expect(try daemon.reviews(ofStudy: "1.2.972").map(\.reviewer) == [reviewerLogin])
        let migrated = try Executable.run(["worklist", "migrate", "--db", database])
        #expect(migrated.status == 0 && migrated.stdout.contains("has the current schema") && migrated.stdout.contains(Worklist.schemaMigrations.last ?? "?"),
                "\(migrated.stdout)\(migrated.stderr)")
    }
}
