import BoneTriage
import Foundation
import GRDB
import Testing

/// A user who may read the worklist but not write it (not in its group, as `nobody` here): `list`,
/// `show` and `export` work, a review command says which group to join, and an older schema is left
/// for the daemon to upgrade. Run as a real unprivileged user through setpriv (util-linux).
@Suite("A reader who may not write the worklist", .serialized,
       .enabled(if: getuid() == 0 && DicomTools.find("setpriv") != nil && Executable.url != nil,
                "skipped: needs root (to act as nobody through setpriv, util-linux) and the built bonetriage binary"))
struct ReviewerAccessTests {
    let dir: TemporaryDirectory
    let state: String
    let db: String
    let executable: String

    /// A state folder that nobody may enter and read through group nogroup but not write, and the
    /// binary where nobody can run it; the temporary folder above them only traversable.
    init() throws {
        dir = try TemporaryDirectory()
        #expect(chmod(dir.url.path, 0o711) == 0)
        state = dir.path("state")
        db = state + "/worklist.sqlite"
        let bin = dir.path("bin")
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: false)
        #expect(chmod(bin, 0o755) == 0)
        executable = bin + "/bonetriage"
        try FileManager.default.copyItem(atPath: try #require(Executable.url).path, toPath: executable)
        #expect(chmod(executable, 0o755) == 0)
    }

    static let nogroup: gid_t = 65_534

    /// The state folder and the worklist's files as the daemon leaves them, but owned by a group of
    /// readers (nogroup) with mode 0640: readable by nobody, not writable.
    func readOnlyForNobody() throws {
        #expect(chown(state, 0, Self.nogroup) == 0 && chmod(state, 0o750) == 0)
        for file in [db, db + "-wal", db + "-shm"] where FileManager.default.fileExists(atPath: file) {
            #expect(chown(file, 0, Self.nogroup) == 0 && chmod(file, 0o640) == 0)
        }
    }

    func asNobody(_ args: [String]) throws -> DaemonHarness.Run {
        try DaemonHarness.run("setpriv", ["--reuid=nobody", "--regid=nogroup", "--clear-groups", executable] + args + ["--db", db])
    }

    @Test("list, show and export work without write access, while the daemon has the worklist open and after it closed it; confirm and override fail first, naming the group and the file")
    func readerCanReadNotReview() throws {
        let uid = WorklistFixture.uids.flagged
        do {
            let daemon = try Worklist.open(path: db, role: .daemon)
            try WorklistFixture.seed(daemon)
            try readOnlyForNobody()
            #expect(FileManager.default.fileExists(atPath: db + "-wal"), "the daemon's WAL is there while it runs")
            try checkReads(uid)
            let confirm = try asNobody(["confirm", String(Study.shortID(for: uid).prefix(8))])
            #expect(confirm.status == 1, "\(confirm.output)")
            #expect(confirm.output.contains("group nogroup") && confirm.output.contains(db), "\(confirm.output)")
            let unknownToo = try asNobody(["override", "ffffffff", "--label", "normal"])
            #expect(unknownToo.status == 1 && unknownToo.output.contains("group nogroup"),
                    "the access check comes before the study is looked up: \(unknownToo.output)")
            #expect(try daemon.reviews(ofStudy: uid).isEmpty)
        }
        // The daemon stopped: its WAL files are gone, and the folder does not let nobody create them.
        #expect(!FileManager.default.fileExists(atPath: db + "-wal"))
        try checkReads(uid)
        let override = try asNobody(["override", String(Study.shortID(for: uid).prefix(8)), "--label", "normal"])
        #expect(override.status == 1 && override.output.contains("group nogroup"), "\(override.output)")
    }

    func checkReads(_ uid: String) throws {
        let list = try asNobody(["list"])
        #expect(list.status == 0 && list.output.contains(String(Study.shortID(for: uid).prefix(8))), "\(list.output)")
        let show = try asNobody(["show", uid])
        #expect(show.status == 0 && show.output.contains("ABNORMAL"), "\(show.output)")
        let export = try asNobody(["export", "--out", "-"])
        #expect(export.status == 0 && export.output.contains(uid), "\(export.output)")
    }

    @Test("an older schema is not upgraded by a reader who may not write it: the error says the daemon upgrades it when it starts")
    func olderSchemaLeftToTheDaemon() throws {
        #expect(mkdir(state, 0o750) == 0)
        let old = try DatabaseQueue(path: db)
        try WorklistSchema.migrator.migrate(old, upTo: "v5-character-set-note")
        try old.close()
        try readOnlyForNobody()
        let list = try asNobody(["list"])
        #expect(list.status == 1 && list.output.contains("the daemon upgrades it when it starts"), "\(list.output)")
        let applied = try DatabaseQueue(path: db).read { try WorklistSchema.migrator.appliedIdentifiers($0) }
        #expect(!applied.contains("v7-image-details-and-stated-reviewer"), "left untouched")
    }
}
