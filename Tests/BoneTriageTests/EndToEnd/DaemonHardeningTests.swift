import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Defects a real hospital flow found (issue 11): odd UIDs, reloads, who may write the worklist, memory
/// across reloads, and a spool that must not fill the disk. Each runs its own daemon.
@Suite("daemon hardening", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs the built bonetriage and DCMTK's storescu, dcmsend, echoscu, img2dcm (Debian package dcmtk; `make test` installs it)"))
struct DaemonHardeningTests {
    @Test("a study whose Study Instance UID is short or not a plain UID is triaged like any other, and found by its UID")
    func oddStudyUIDs() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let short = "1.2", odd = "1.2.840.113619.2.55.3_alpha-7"
        try RadiographFactory.make(at: files.path("short.dcm"), study: short, seed: 1)
        try RadiographFactory.make(at: files.path("odd.dcm"), study: odd, seed: 2)
        let sent = try daemon.storescu([files.path("short.dcm"), files.path("odd.dcm")])
        #expect(sent.status == 0, "\(sent.output)")
        let studies = try daemon.waitForTriage([short, odd], timeout: 60)
        for uid in [short, odd] {
            #expect(studies[uid]?["state"] as? String == "triaged", "\(uid): \(studies[uid] ?? [:])\n\(daemon.log)")
        }
        #expect(!daemon.log.contains("is not a study ID"), "\(daemon.log)")
        // A radiologist can give the whole UID, whatever it holds.
        #expect(try daemon.show(odd).study["study_instance_uid"] as? String == odd)
    }

    @Test("a reload whose model does not load changes nothing, not even the allowed callers; a good one applies both and logs what changed")
    func reloadIsAllOrNothing() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        #expect(try daemon.echo(callingAE: "NEWPACS").status != 0, "NEWPACS is not an allowed caller yet")

        // A new caller and a model file that is not there: nothing of it may take effect.
        let good = try String(contentsOfFile: daemon.configPath, encoding: .utf8)
        let withCaller = good.replacingOccurrences(of: #"{ ae_title = "DCMSEND" }"#, with: #"{ ae_title = "DCMSEND" }, { ae_title = "NEWPACS", hosts = ["127.0.0.1"] }"#)
        #expect(withCaller != good)
        try withCaller.replacingOccurrences(of: "model.safetensors", with: "missing.safetensors")
            .write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        try daemon.waitFor("the refused reload", timeout: 20) { daemon.log.contains("reload refused") }
        #expect(daemon.log.contains("the model did not load"), "\(daemon.log)")
        #expect(try daemon.echo(callingAE: "NEWPACS").status != 0, "a failed reload applied the new allowed callers:\n\(daemon.log)")
        #expect(try daemon.echo().status == 0)

        // The model is back: the reload applies the callers and says what changed.
        try withCaller.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        try daemon.waitFor("the reload", timeout: 20) { daemon.log.contains("reloaded") }
        #expect(daemon.log.contains("allowed callers changed"), "\(daemon.log)")
        #expect(daemon.log.contains("NEWPACS@127.0.0.1"), "\(daemon.log)")
        #expect(try daemon.echo(callingAE: "NEWPACS").status == 0, "\(daemon.log)")
    }

    @Test("the worklist the daemon creates is group-writable: a radiologist of its group (another uid) can confirm a study",
          .enabled(if: getuid() == 0 && DicomTools.find("setpriv") != nil, "skipped: needs root and setpriv (util-linux) to act as a second user"))
    func radiologistInTheGroupCanReview() throws {
        let daemon = try DaemonHarness()
        try daemon.writeConfig()
        // A state folder as the unit makes it (2770, the service's group), owned by a group the second
        // user is in; the temporary folder above it only traversable.
        let group: gid_t = 64_123, reviewer: uid_t = 65_534
        let state = daemon.dir.path("state")
        #expect(mkdir(state, 0o700) == 0)
        #expect(chown(state, 0, group) == 0 && chmod(state, 0o2770) == 0)
        #expect(chmod(daemon.root, 0o711) == 0)
        let database = state + "/worklist.sqlite"
        let config = try String(contentsOfFile: daemon.configPath, encoding: .utf8)
            .replacingOccurrences(of: "database = \"\(daemon.database)\"", with: "database = \"\(database)\"")
        try config.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        try daemon.start(keepConfig: true)
        defer { _ = try? daemon.stop() }

        var info = stat()
        #expect(stat(database, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o660, "worklist created with mode \(String(info.st_mode & 0o777, radix: 8))")
        #expect(info.st_gid == group)

        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.11.10"
        try RadiographFactory.make(at: files.path("a.dcm"), study: study)
        #expect(try daemon.storescu([files.path("a.dcm")]).status == 0)
        try daemon.waitFor("triage", timeout: 60) {
            let r = try Executable.run(["list", "--db", database, "--format", "json"])
            return r.stdout.contains("\"triaged\"")
        }
        // The binary where the second user can run it.
        let bin = daemon.dir.path("bin")
        try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: false)
        #expect(chmod(bin, 0o755) == 0)
        let executable = try #require(Executable.url).path
        try FileManager.default.copyItem(atPath: executable, toPath: bin + "/bonetriage")
        #expect(chmod(bin + "/bonetriage", 0o755) == 0)
        let confirm = try DaemonHarness.run("setpriv", ["--reuid", "\(reviewer)", "--regid", "\(reviewer)", "--groups", "\(group)",
                                                       bin + "/bonetriage", "confirm", study, "--db", database])
        #expect(confirm.status == 0, "\(confirm.output)")
        let r = try Executable.run(["show", study, "--db", database, "--format", "json"])
        #expect(r.stdout.contains("\"confirm\""), "\(r.stdout)")
    }

    /// The daemon's resident memory, in kB.
    static func residentKB(_ pid: pid_t) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }
        return line.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") }
    }

    @Test("ten reloads leave the daemon's resident memory within 10 MB of what it was before the first")
    func reloadsDoNotAccumulateMemory() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let pid = try #require(daemon.process?.processIdentifier)
        // The worker builds its engine after "listening": wait until the memory settles.
        func settled() throws -> Int {
            var last = 0, stable = 0
            try daemon.waitFor("memory to settle", timeout: 60) {
                let now = Self.residentKB(pid) ?? 0
                stable = abs(now - last) < 1024 ? stable + 1 : 0
                last = now
                return stable >= 5
            }
            return last
        }
        usleep(500_000)
        let before = try settled()
        // The daemon maps blocks of 256 KiB or more on their own (bt_memory_return_large_blocks), so a
        // replaced model and engine leave nothing behind: measured within 1 MB over 30 reloads, idle or with
        // both cores busy. (With glibc's dynamic threshold it wandered by +-18 MB from reload to reload.)
        // The least of the last three reloads is the level.
        var last: [Int] = []
        for round in 1...10 {
            daemon.signal(SIGHUP)
            try daemon.waitFor("reload \(round)", timeout: 30) {
                daemon.log.components(separatedBy: "engine rebuilt for the reloaded model").count - 1 >= round
            }
            if round > 7 { last.append(try settled()) }
        }
        let after = last.min() ?? 0
        #expect(after - before <= 10 * 1024, "resident memory \(before / 1024) MB before the reloads, \(last.map { $0 / 1024 }) MB after reloads 8, 9 and 10")
    }

    @Test("over its size limit, the spool loses the files of finished studies, oldest first; a study still receiving keeps its files")
    func retentionKeepsTheSpoolBounded() throws {
        // A long quiet period: a study is complete only when its announced instances are all there.
        let daemon = try DaemonHarness(quietPeriod: 600)
        try daemon.writeConfig()
        let config = try String(contentsOfFile: daemon.configPath, encoding: .utf8).replacingOccurrences(
            of: "minimum_free_space_mb = 1", with: "minimum_free_space_mb = 1\nspool_limit = \"1 KiB\"\nretention_interval_seconds = 1")
        try config.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        try daemon.start(keepConfig: true)
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let a = "1.2.826.0.1.3680043.10.13.1", b = "1.2.826.0.1.3680043.10.13.2", waiting = "1.2.826.0.1.3680043.10.13.3"
        for (uid, count) in [(a, 2), (b, 2)] {
            for i in 0..<count { try RadiographFactory.make(at: files.path("\(uid)-\(i).dcm"), study: uid, seed: i, expectedInstances: count) }
        }
        // Announces three instances and sends one: it stays receiving.
        try RadiographFactory.make(at: files.path("w.dcm"), study: waiting, seed: 9, expectedInstances: 3)
        #expect(try daemon.storescu([files.path("w.dcm")]).status == 0)
        #expect(try daemon.storescu([files.path("\(a)-0.dcm"), files.path("\(a)-1.dcm")]).status == 0)
        _ = try daemon.waitForTriage([a], timeout: 60)
        #expect(try daemon.storescu([files.path("\(b)-0.dcm"), files.path("\(b)-1.dcm")]).status == 0)
        _ = try daemon.waitForTriage([b], timeout: 60)

        try daemon.waitFor("retention of both finished studies; log:\n\(daemon.log)", timeout: 30) {
            try daemon.show(a).images.allSatisfy { $0["file_removed_at"] is String }
                && daemon.show(b).images.allSatisfy { $0["file_removed_at"] is String }
        }
        let spooled = try FileManager.default.subpathsOfDirectory(atPath: daemon.spool).filter { $0.hasSuffix(".dcm") }
        #expect(spooled.count == 1, "only the receiving study's file stays: \(spooled)")
        #expect(try daemon.study(uid: waiting)?["state"] as? String == "receiving")
        #expect(daemon.log.contains("storage retention removed the files of"), "\(daemon.log)")
        #expect(daemon.log.contains(Study.shortID(for: a)), "the log names what was removed")
        // The results stay in the worklist.
        #expect(try daemon.study(uid: a)?["state"] as? String == "triaged")
    }
}
