import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// kill -9 at the worst moments, then a restart: nothing acknowledged is lost, and each study ends with
/// one row, one row per instance, and one triage.
@Suite("daemon crash recovery", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs the built bonetriage and DCMTK's storescu and img2dcm (Debian package dcmtk; `make test` installs it)"))
struct CrashRecoveryTests {
    /// The SOP Instance UIDs storescu was told were stored (its verbose log pairs each file with a response).
    func acknowledged(_ output: String, uids: [String: String]) -> Set<String> {
        var result = Set<String>(), current: String?
        for line in output.split(separator: "\n") {
            if let range = line.range(of: "Sending file: ") { current = String(line[range.upperBound...]) }
            if line.contains("Received Store Response (Success)"), let file = current, let uid = uids[file] { result.insert(uid) }
        }
        return result
    }

    @Test("kill -9 during transfers: every acknowledged instance survives, and the sender's retry completes the study once")
    func killDuringTransfer() throws {
        let daemon = try DaemonHarness(quietPeriod: 1)
        try daemon.start()
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.6.1"
        var uids: [String: String] = [:]
        let paths = try (0..<16).map { i -> String in
            let path = files.path("k\(i).dcm")
            try RadiographFactory.make(at: path, study: study, seed: i, size: 512)
            uids[path] = try RadiographFactory.sopInstanceUID(path)
            return path
        }
        var ackedPerRound: [Int] = []
        for round in 0..<3 {
            let port = "\(daemon.port)"
            let sender = Process()
            sender.executableURL = URL(fileURLWithPath: try #require(DicomTools.find("storescu")))
            sender.arguments = ["-v", "-aet", "STORESCU", "-aec", "BONETRIAGE", "127.0.0.1", port] + paths
            let pipe = Pipe()
            sender.standardOutput = pipe
            sender.standardError = pipe
            // The kill lands after the 1st, 3rd and 5th acknowledgement, whatever the machine's load
            // (a fixed delay after starting the sender may come before the first answer on a busy machine).
            let killAfter = 1 + 2 * round
            let output = Locked(Data())
            let reader = Thread {
                while case let chunk = pipe.fileHandleForReading.availableData, !chunk.isEmpty { output.withLock { $0.append(chunk) } }
            }
            try sender.run()
            reader.start()
            func successes() -> Int {
                output.withLock { String(decoding: $0, as: UTF8.self) }.components(separatedBy: "Received Store Response (Success)").count - 1
            }
            try daemon.waitFor("\(killAfter) acknowledgements before the kill", timeout: 60) { successes() >= killAfter || !sender.isRunning }
            daemon.kill9()
            sender.waitUntilExit()
            while reader.isExecuting { usleep(10_000) }
            let acked = acknowledged(output.withLock { String(decoding: $0, as: UTF8.self) }, uids: uids)
            ackedPerRound.append(acked.count)
            try daemon.start()
            if !acked.isEmpty {
                let stored = Set(try daemon.show(study).images.compactMap { $0["sop_instance_uid"] as? String })
                #expect(acked.isSubset(of: stored), "round \(round): acknowledged but lost: \(acked.subtracting(stored))")
            }
        }
        print("kill -9 during transfer: instances acknowledged before each kill: \(ackedPerRound) of \(paths.count)")
        #expect(ackedPerRound.contains { $0 > 0 }, "no kill landed after an acknowledgement: \(ackedPerRound)")
        // The sender retries everything, as a PACS does after a failed transfer.
        let retry = try daemon.storescu(paths)
        #expect(retry.status == 0, "\(retry.output)")
        _ = try daemon.waitForTriage([study], timeout: 60)
        let (row, images, _) = try daemon.show(study)
        #expect(row["state"] as? String == "triaged", "\(row)\n\(daemon.allLogs)")
        #expect(images.count == 16 && Set(images.compactMap { $0["sop_instance_uid"] as? String }).count == 16)
        #expect(images.allSatisfy { $0["probability"] as? Double != nil })
        let spooled = try FileManager.default.subpathsOfDirectory(atPath: daemon.spool).filter { $0.hasSuffix(".dcm") }
        #expect(spooled.count == 16)
        #expect(try FileManager.default.contentsOfDirectory(atPath: daemon.spool + "/.incoming").isEmpty)
        #expect(try daemon.stop() == 0)
    }

    @Test("files in the spool without a worklist row (a crash between placing and recording, a locked worklist) are taken in at start")
    func adoptsUnrecordedFiles() throws {
        let daemon = try DaemonHarness(quietPeriod: 0.5)
        let files = try TemporaryDirectory()
        let recorded = "1.2.826.0.1.3680043.10.15.1", orphaned = "1.2.826.0.1.3680043.10.15.2"
        try RadiographFactory.make(at: files.path("r.dcm"), study: recorded)
        try daemon.start()
        #expect(try daemon.storescu([files.path("r.dcm")]).status == 0)
        _ = try daemon.waitForTriage([recorded])
        #expect(try daemon.stop() == 0)

        // A recorded file must not be mistaken for one without a row (it would be quarantined if read).
        let recordedFile = try #require(try FileManager.default.subpathsOfDirectory(atPath: daemon.spool + "/" + recorded).first { $0.hasSuffix(".dcm") })
        try Data("damaged after it was recorded".utf8).write(to: URL(fileURLWithPath: daemon.spool + "/" + recorded + "/" + recordedFile))

        // What a crash after the link and before the commit leaves: whole files under their final names.
        let paths = try RadiographFactory.makeStudy(in: files, prefix: "o", study: orphaned, count: 2)
        try FileManager.default.createDirectory(atPath: daemon.spool + "/" + orphaned, withIntermediateDirectories: true)
        for path in paths {
            try FileManager.default.copyItem(atPath: path, toPath: daemon.spool + "/" + orphaned + "/" + (try RadiographFactory.sopInstanceUID(path)) + ".dcm")
        }
        try FileManager.default.createDirectory(atPath: daemon.spool + "/1.2.3", withIntermediateDirectories: true)
        try Data(repeating: 0x20, count: 300).write(to: URL(fileURLWithPath: daemon.spool + "/1.2.3/1.2.3.4.dcm"))

        try daemon.start()
        let studies = try daemon.waitForTriage([recorded, orphaned])
        #expect(studies[orphaned]?["state"] as? String == "triaged" && studies[orphaned]?["images"] as? Int == 2, "\(studies)")
        #expect(studies[recorded]?["images"] as? Int == 1, "a recorded file is not taken in twice")
        #expect(try daemon.studies().count == 2)
        #expect(daemon.log.contains("took in 2 instance(s) found in the spool without a worklist row"), "\(daemon.log)")
        let quarantined = try FileManager.default.contentsOfDirectory(atPath: daemon.quarantine)
        #expect(quarantined.contains { $0.hasSuffix(".reason") }, "\(quarantined)")
        #expect(!FileManager.default.fileExists(atPath: daemon.spool + "/1.2.3/1.2.3.4.dcm"))
        #expect(quarantined.filter { $0.hasSuffix(".reason") }.count == 1, "only the unreadable file without a row: \(quarantined)")
        #expect(FileManager.default.fileExists(atPath: daemon.spool + "/" + recorded + "/" + recordedFile))
        // The sender's retry finds them recorded: acknowledged, stored once.
        #expect(try daemon.storescu(paths).status == 0)
        usleep(1_500_000)
        #expect(try daemon.study(uid: orphaned)?["images"] as? Int == 2)
        #expect(try daemon.stop() == 0)
    }

    /// A daemon triaging a study right now: a full-size synthetic network on one thread makes each
    /// image take a while.
    func slowTriageUnderWay(images: Int, study: String) throws -> (DaemonHarness, String) {
        let daemon = try DaemonHarness(quietPeriod: 0.5, inputSize: 299)
        try daemon.start(logLevel: "debug")
        let files = try TemporaryDirectory()
        let paths = try RadiographFactory.makeStudy(in: files, prefix: "s", study: study, count: images)
        #expect(try daemon.storescu(paths).status == 0)
        try daemon.waitFor("the triage to start", timeout: 30) { daemon.log.contains("triage started") }
        return (daemon, study)
    }

    @Test("kill -9 during a triage: after the restart the study is triaged once, with every image")
    func killDuringTriage() throws {
        let (daemon, study) = try slowTriageUnderWay(images: 24, study: "1.2.826.0.1.3680043.10.7.1")
        usleep(300_000)
        let decoders = daemon.decoderProcesses
        #expect(decoders.count == 4, "two isolated decoder processes per triage worker, two for reading headers")
        daemon.kill9()
        // The decoder process cannot outlive a daemon killed outright (it gets SIGKILL with its parent).
        try daemon.waitFor("the orphaned decoder process to end", timeout: 10) { decoders.allSatisfy { !DaemonHarness.isDecoder($0) } }
        let before = try daemon.show(study).study
        #expect(before["state"] as? String != "triaged", "the triage finished before the kill; the test needs a slower triage")

        try daemon.start()
        _ = try daemon.waitForTriage([study], timeout: 120)
        let (row, images, _) = try daemon.show(study)
        #expect(row["state"] as? String == "triaged", "\(row)")
        #expect(images.count == 24 && images.allSatisfy { $0["probability"] as? Double != nil })
        #expect(try daemon.studies().count == 1)
        #expect(daemon.log.components(separatedBy: "study triaged").count - 1 == 1, "\(daemon.log)")
        #expect(try daemon.stop() == 0)
    }

    @Test("kill -9 while a decoder process is busy on a file: the decoder process dies with the daemon")
    func decoderDiesWithDaemon() throws {
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.16.1"
        try RadiographFactory.make(at: files.path("h.dcm"), study: study)
        let sop = try RadiographFactory.sopInstanceUID(files.path("h.dcm"))
        let daemon = try DaemonHarness(quietPeriod: 0.3)
        // The triage worker's decoder process hangs on this file (a busy child does not see its input close).
        try daemon.start(logLevel: "debug", environment: [DecoderService.faultVariable: "hang:\(sop).dcm"])
        #expect(try daemon.storescu([files.path("h.dcm")]).status == 0)
        try daemon.waitFor("the triage to start", timeout: 30) { daemon.log.contains("triage started") }
        usleep(500_000)
        let decoders = daemon.decoderProcesses
        #expect(decoders.count == 4)
        daemon.kill9()
        try daemon.waitFor("the decoder processes to end", timeout: 10) { decoders.allSatisfy { !DaemonHarness.isDecoder($0) } }
    }

    @Test("SIGTERM while a study is being triaged: that triage finishes, the daemon exits 0")
    func gracefulStop() throws {
        let (daemon, study) = try slowTriageUnderWay(images: 8, study: "1.2.826.0.1.3680043.10.8.1")
        #expect(try daemon.stop(timeout: 60) == 0)
        #expect(daemon.log.contains("study triaged") && daemon.log.contains("stopped"), "\(daemon.log)")
        #expect(try daemon.show(study).study["state"] as? String == "triaged")
    }
}
