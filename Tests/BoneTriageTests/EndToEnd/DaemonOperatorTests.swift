import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What an administrator sees of a running daemon: its log lines under journald and `bonetriage status`.
@Suite("daemon: the operator's view", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs the built bonetriage and DCMTK's storescu, img2dcm (Debian package dcmtk; `make test` installs it)"))
struct DaemonOperatorTests {
    @Test("under journald: a line per complete study with its instances and source, the triage line names the source, no program name, no patient data")
    func journalLines() throws {
        let daemon = try DaemonHarness()
        try FileManager.default.createDirectory(atPath: daemon.dropFolder, withIntermediateDirectories: true)
        try daemon.start(environment: ["JOURNAL_STREAM": "8:12345"])
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let sent = "1.2.826.0.1.3680043.10.77.1", dropped = "1.2.826.0.1.3680043.10.77.2"
        for i in 0..<2 { try RadiographFactory.make(at: files.path("s\(i).dcm"), study: sent, seed: i) }
        let run = try daemon.storescu([files.path("s0.dcm"), files.path("s1.dcm")])
        #expect(run.status == 0, "\(run.output)")
        // Dropped under a folder, written elsewhere and moved in whole; a MURA-style patient folder is a
        // patient ID, which the log masks.
        try RadiographFactory.make(at: files.path("d.dcm"), study: dropped, seed: 5)
        try FileManager.default.createDirectory(atPath: daemon.dropFolder + "/ward3/patient00042/tuesday", withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: files.path("d.dcm"), toPath: daemon.dropFolder + "/ward3/patient00042/tuesday/d.dcm")
        _ = try daemon.waitForTriage([sent, dropped])
        try daemon.waitFor("both triage lines; log:\n\(daemon.log)", timeout: 30) {
            daemon.log.components(separatedBy: "\n").filter { $0.contains("study triaged") }.count == 2
        }
        let lines = daemon.log.split(separator: "\n").map(String.init)
        let sentID = Study.shortID(for: sent), droppedID = Study.shortID(for: dropped)
        let cstore = #"source="C-STORE from STORESCU at 127.0.0.1""#, drop = #"source="drop folder ward3/patient*/tuesday""#

        let complete = lines.filter { $0.contains("study complete") }
        #expect(complete.contains { $0.hasPrefix("<6>") && $0.contains("study=\(sentID)") && $0.contains("instances=2") && $0.contains(cstore) },
                "\(daemon.log)")
        #expect(complete.contains { $0.contains("study=\(droppedID)") && $0.contains("instances=1") && $0.contains(drop) }, "\(daemon.log)")
        let triaged = lines.filter { $0.contains("study triaged") }
        #expect(triaged.contains { $0.contains("study=\(sentID)") && $0.contains(cstore) }, "\(daemon.log)")
        #expect(triaged.contains { $0.contains("study=\(droppedID)") && $0.contains(drop) }, "\(daemon.log)")

        // journald prints "bonetriage[pid]:" itself: each line is "<priority>message", without the name again.
        for line in lines where !line.isEmpty {
            #expect(line.range(of: #"^<[0-7]>"#, options: .regularExpression) != nil, "no priority: \(line)")
            #expect(!line.hasPrefix("<6>bonetriage:") && !line.contains(">bonetriage: "), "program name repeated: \(line)")
        }
        // RadiographFactory's patient: Test^Patient, ID TEST-<6 hex>.
        #expect(!daemon.log.contains("Test^Patient") && !daemon.log.contains("TEST-") && !daemon.log.contains("patient00042"), "\(daemon.log)")
    }

    @Test("bonetriage status: the running daemon's counts with their age and pid; exit 3 once it stopped, and after a crash")
    func status() throws {
        let daemon = try DaemonHarness()
        let status = ["status", "--config", daemon.configPath]
        try daemon.writeConfig()
        let before = try Executable.run(status)
        #expect(before.status == 3 && before.stdout.contains("bonetriage is not running: no status file \(daemon.statusFile)"), "\(before)")

        try daemon.start()
        let pid = try #require(daemon.process?.processIdentifier)
        try daemon.waitFor("the status file", timeout: 30) { FileManager.default.fileExists(atPath: daemon.statusFile) }
        let running = try Executable.run(status)
        #expect(running.status == 0, "\(running)")
        #expect(running.stdout.contains("is running: pid \(pid), node \(WorklistNode.local),") && running.stdout.contains("received 0"), "\(running.stdout)")
        #expect(running.stdout.contains("model synthetic-daemon-test") && running.stdout.contains("workers 1"), "\(running.stdout)")

        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.77.3"
        try RadiographFactory.make(at: files.path("a.dcm"), study: study)
        #expect(try daemon.storescu([files.path("a.dcm")]).status == 0)
        _ = try daemon.waitForTriage([study])
        var shown = ""
        try daemon.waitFor("the counts to reach the status file", timeout: 30) {
            shown = try Executable.run(status).stdout
            return shown.contains("received 1") && shown.contains("done 1")
        }
        #expect(shown.contains("status ") && shown.contains(" s old"), "\(shown)")

        #expect(try daemon.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: daemon.statusFile))
        let stopped = try Executable.run(status)
        #expect(stopped.status == 3 && stopped.stdout.contains("not running"), "\(stopped)")

        // Killed: the file stays, the pid is gone.
        try daemon.start(keepConfig: true)
        try daemon.waitFor("the status file", timeout: 30) { FileManager.default.fileExists(atPath: daemon.statusFile) }
        daemon.kill9()
        let crashed = try Executable.run(status)
        #expect(crashed.status == 3, "\(crashed)")
        #expect(crashed.stdout.contains("has ended without a clean stop") && crashed.stdout.contains("received 0"), "\(crashed.stdout)")
    }
}
