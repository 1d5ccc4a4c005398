import BoneTriage
import Foundation
import GRDB
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `bonetriage serve` against real DICOM peers nobody here wrote (DCMTK's storescu, dcmsend, echoscu),
/// the drop folder, and signals. Each test runs its own daemon on a free loopback port.
@Suite("daemon end to end", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs the built bonetriage and DCMTK's storescu, dcmsend, echoscu, img2dcm (Debian package dcmtk; `make test` installs it)"))
struct DaemonTests {
    @Test("storescu and dcmsend, compressed and not, several associations at once: every instance stored once and triaged")
    func receivesFromRealSenders() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        // Study A: two native images over storescu. Study B: JPEG-LS and RLE over dcmsend (which proposes
        // what each file has). Study C: a CT image: stored, recorded, not applicable.
        let a = "1.2.826.0.1.3680043.10.1.1", b = "1.2.826.0.1.3680043.10.1.2", c = "1.2.826.0.1.3680043.10.1.3"
        for i in 0..<2 { try RadiographFactory.make(at: files.path("a\(i).dcm"), study: a, seed: i) }
        try RadiographFactory.make(at: files.path("b-native0.dcm"), study: b, seed: 10)
        try RadiographFactory.make(at: files.path("b-native1.dcm"), study: b, seed: 11)
        try DicomTools.run("dcmcjpls", [files.path("b-native0.dcm"), files.path("b0.dcm")])
        try DicomTools.run("dcmcrle", [files.path("b-native1.dcm"), files.path("b1.dcm")])
        try RadiographFactory.make(at: files.path("c0.dcm"), study: c, modality: "CT", seed: 20)

        let port = "\(daemon.port)"
        let commands: [(String, [String])] = [
            ("storescu", ["-aet", "STORESCU", "-aec", "BONETRIAGE", "127.0.0.1", port, files.path("a0.dcm"), files.path("a1.dcm")]),
            ("dcmsend", ["-aet", "DCMSEND", "-aec", "BONETRIAGE", "127.0.0.1", port, files.path("b0.dcm"), files.path("b1.dcm")]),
            ("storescu", ["-aet", "STORESCU", "-aec", "BONETRIAGE", "127.0.0.1", port, files.path("c0.dcm")]),
            ("echoscu", ["-aet", "STORESCU", "-aec", "BONETRIAGE", "127.0.0.1", port]),
        ]
        let results = Locked<[Int: DaemonHarness.Run]>([:])
        DispatchQueue.concurrentPerform(iterations: commands.count) { i in
            let run = (try? DaemonHarness.run(commands[i].0, commands[i].1)) ?? DaemonHarness.Run(status: -1, output: "could not run")
            results.withLock { $0[i] = run }
        }
        for (i, run) in results.withLock({ $0 }).sorted(by: { $0.key < $1.key }) {
            #expect(run.status == 0, "sender \(i) failed: \(run.output)\n\(daemon.log)")
        }
        // The same instance again: acknowledged, stored once.
        let again = try daemon.storescu([files.path("a0.dcm")])
        #expect(again.status == 0, "\(again.output)")

        let studies = try daemon.waitForTriage([a, b, c])
        let sa = try #require(studies[a]), sb = try #require(studies[b]), sc = try #require(studies[c])
        #expect(sa["state"] as? String == "triaged" && sa["images"] as? Int == 2, "\(sa)")
        #expect(sb["state"] as? String == "triaged" && sb["images"] as? Int == 2, "\(sb)")
        #expect(sc["state"] as? String == "not_applicable", "\(sc)")
        #expect((sc["state_reason"] as? String)?.contains("no eligible image") == true, "\(sc)")
        #expect(sa["calling_ae_title"] as? String == "STORESCU" && sa["source"] as? String == "cstore")
        let p = try #require(sa["probability"] as? Double)
        #expect(p > 0 && p < 1)

        // Files arrive as sent: the spool keeps each file's transfer syntax, one file per SOP instance.
        let spooled = try FileManager.default.subpathsOfDirectory(atPath: daemon.spool).filter { $0.hasSuffix(".dcm") }
        #expect(spooled.count == 5, "\(spooled)")
        let jpegLS = try RadiographFactory.sopInstanceUID(files.path("b0.dcm"))
        let kept = try #require(spooled.first { $0.hasSuffix(jpegLS + ".dcm") })
        #expect(try DicomReader.metadata(path: daemon.spool + "/" + kept).transferSyntaxUID == "1.2.840.10008.1.2.4.80")
        // No patient name or ID in the log at info level.
        #expect(!daemon.log.contains("Test^Patient") && !daemon.log.contains("TEST-"))
        #expect(try daemon.stop() == 0)
        #expect(daemon.log.contains("stopped"))
    }

    @Test("unknown callers, wrong called AE and a caller from the wrong address are refused; junk on the port does no harm")
    func refusesStrangers() throws {
        let daemon = try DaemonHarness()
        try daemon.writeConfig(callers: #"[{ ae_title = "STORESCU", hosts = ["127.0.0.1"] }, { ae_title = "FARAWAY", hosts = ["10.9.9.0/24"] }]"#)
        try daemon.start(keepConfig: true)
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        try RadiographFactory.make(at: files.path("x.dcm"), study: "1.2.826.0.1.3680043.10.2.1")

        let stranger = try daemon.storescu([files.path("x.dcm")], callingAE: "INTRUDER")
        #expect(stranger.status != 0 && stranger.output.contains("Calling AE Title Not Recognized"), "\(stranger.output)")
        let wrongCalled = try daemon.storescu([files.path("x.dcm")], calledAE: "SOMEONEELSE")
        #expect(wrongCalled.status != 0 && wrongCalled.output.contains("Called AE Title Not Recognized"), "\(wrongCalled.output)")
        let wrongHost = try daemon.storescu([files.path("x.dcm")], callingAE: "FARAWAY")
        #expect(wrongHost.status != 0, "\(wrongHost.output)")
        #expect(daemon.log.contains("'INTRUDER' from 127.0.0.1") && daemon.log.contains("not allowed from this address"), "\(daemon.log)")

        // Bytes that are not DICOM, a connection that says nothing, and one cut mid-PDU.
        for payload in [Data((0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }), Data(), Data([0x01, 0x00, 0x00, 0x00, 0xFF, 0xFF])] {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(daemon.port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            #expect(connected == 0)
            _ = payload.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(fd)
        }
        #expect(daemon.isRunning)
        let echo = try daemon.echo()
        #expect(echo.status == 0, "\(echo.output)\n\(daemon.log)")
        let ok = try daemon.storescu([files.path("x.dcm")])
        #expect(ok.status == 0, "\(ok.output)")
        #expect(try daemon.studies().count == 1)

        // SIGHUP: a newly allowed caller is accepted without a restart.
        try daemon.writeConfig(port: daemon.port, callers: #"[{ ae_title = "STORESCU" }, { ae_title = "INTRUDER" }]"#)
        daemon.signal(SIGHUP)
        try daemon.waitFor("reload", timeout: 20) { daemon.log.contains("reloaded") }
        let welcome = try daemon.storescu([files.path("x.dcm")], callingAE: "INTRUDER")
        #expect(welcome.status == 0, "\(welcome.output)")
    }

    @Test("the drop folder: PNG studies grouped by folder, DICOM, files dropped while down, junk to quarantine with its reason")
    func dropFolder() throws {
        let daemon = try DaemonHarness()
        let files = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: daemon.dropFolder, withIntermediateDirectories: true)
        // Dropped while the daemon was down.
        let early = "1.2.826.0.1.3680043.10.3.1"
        try RadiographFactory.make(at: daemon.dropFolder + "/early.dcm", study: early)
        try daemon.start()
        defer { _ = try? daemon.stop() }

        // A MURA-style PNG study, written elsewhere and moved in whole (as `mv` into the folder does).
        let staged = files.path("XR_HUMERUS")
        try FileManager.default.createDirectory(atPath: staged + "/patient07/study1_positive", withIntermediateDirectories: true)
        try PNGReader.write(testPattern(), to: staged + "/patient07/study1_positive/image1.png")
        try PNGReader.write(testPattern(width: 80, height: 90), to: staged + "/patient07/study1_positive/image2.png")
        try FileManager.default.moveItem(atPath: staged, toPath: daemon.dropFolder + "/XR_HUMERUS")
        // Junk, and a truncated PNG.
        try Data("not an image".utf8).write(to: URL(fileURLWithPath: daemon.dropFolder + "/notes.dcm"))
        try FileManager.default.copyItem(atPath: Fixtures.path("png/truncated.png"), toPath: daemon.dropFolder + "/broken.png")

        try daemon.waitFor("drop folder emptied", timeout: 30) {
            (try FileManager.default.subpathsOfDirectory(atPath: daemon.dropFolder)).allSatisfy { !$0.contains(".") }
        }
        var png: [String: Any]?
        try daemon.waitFor("the PNG study", timeout: 30) {
            png = try daemon.studies().first { $0["body_part"] as? String == "HUMERUS" && $0["source"] as? String == "drop_folder" && $0["images"] as? Int == 2 && $0["state"] as? String == "triaged" }
            return png != nil
        }
        #expect(png?["patient_id"] as? String == "patient07")
        let studies = try daemon.waitForTriage([early])
        #expect(studies[early]?["state"] as? String == "triaged")
        let quarantined = try FileManager.default.contentsOfDirectory(atPath: daemon.quarantine)
        #expect(quarantined.filter { $0.hasSuffix(".reason") }.count == 2, "\(quarantined)")
        let reasons = try quarantined.filter { $0.hasSuffix(".reason") }.map { try String(contentsOfFile: daemon.quarantine + "/" + $0, encoding: .utf8) }
        #expect(reasons.contains { $0.contains("notes.dcm") && $0.contains("DICOM") }, "\(reasons)")
        #expect(reasons.contains { $0.contains("broken.png") }, "\(reasons)")

        // The same PNG dropped again is stored once.
        try FileManager.default.createDirectory(atPath: daemon.dropFolder + "/XR_HUMERUS/patient07/study1_positive", withIntermediateDirectories: true)
        try PNGReader.write(testPattern(), to: files.path("again.png"))
        try FileManager.default.moveItem(atPath: files.path("again.png"), toPath: daemon.dropFolder + "/XR_HUMERUS/patient07/study1_positive/image1.png")
        try daemon.waitFor("duplicate noticed", timeout: 20) { daemon.log.contains("already received") }
        #expect(try daemon.studies().count == 2)
    }

    @Test("the study is triaged as soon as Number of Study Related Instances have arrived, before the quiet period")
    func announcedCount() throws {
        let daemon = try DaemonHarness(quietPeriod: 600)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let triaged = try Self.sendAnnouncedStudy("1.2.826.0.1.3680043.10.4.1", images: 3, to: daemon)
        #expect(triaged["images"] as? Int == 3)
    }

    /// Sends a study of `images` radiographs over C-STORE, each announcing that count (Number of Study Related
    /// Instances), and returns its worklist row once triaged.
    static func sendAnnouncedStudy(_ study: String, images: Int, to daemon: DaemonHarness) throws -> [String: Any] {
        let files = try TemporaryDirectory()
        for i in 0..<images { try RadiographFactory.make(at: files.path("s\(i).dcm"), study: study, seed: i, expectedInstances: images) }
        #expect(try daemon.storescu((0..<images).map { files.path("s\($0).dcm") }).status == 0)
        return try daemon.waitForTriage([study], timeout: 30)[study] ?? [:]
    }

    @Test("[triage] precision = bfloat16: the daemon logs it with the model, shows it in its status and triages with it", .enabled(if: ConvolutionArithmetic.bfloat16.isSupported,
          "skipped: this CPU (\(CPUInfo.modelName)) lacks AVX512-BF16, and the configuration refuses bfloat16 there (tested in ConfigurationTests)"))
    func bfloat16Precision() throws {
        let daemon = try DaemonHarness(extraConfig: "precision = \"bfloat16\"")
        try daemon.start()
        defer { _ = try? daemon.stop() }
        try daemon.waitFor("the model loaded in bfloat16", timeout: 30) { daemon.log.contains("precision=bfloat16") }
        try daemon.waitFor("the status to name the precision", timeout: 30) {
            let shown = try Executable.run(["status", "--config", daemon.configPath]).stdout
            return shown.contains("· model ") && shown.contains(" (bfloat16)")
        }
        let triaged = try Self.sendAnnouncedStudy("1.2.826.0.1.3680043.10.4.2", images: 2, to: daemon)
        #expect(triaged["images"] as? Int == 2)
        let probability = try #require(triaged["probability"] as? Double, "\(triaged)")
        #expect((0...1).contains(probability))
    }

    @Test("out of disk space answers 0xA700 and the daemon stays up; a model that fails to load keeps studies waiting until SIGHUP")
    func faults() throws {
        let daemon = try DaemonHarness(extraConfig: "")
        try daemon.writeConfig()
        // Ask for more free space than any disk has, and point at a model file that is not there.
        var text = try String(contentsOfFile: daemon.configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "minimum_free_space_mb = 1", with: "minimum_free_space_mb = 999999")
        text = text.replacingOccurrences(of: "model.safetensors", with: "missing.safetensors")
        try text.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        try daemon.start(keepConfig: true)
        defer { _ = try? daemon.stop() }
        #expect(daemon.log.contains("no model loaded"))
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.5.1"
        try RadiographFactory.make(at: files.path("f.dcm"), study: study)
        let full = try daemon.storescu([files.path("f.dcm")], extra: ["-v"])
        #expect(full.output.lowercased().contains("a700") || full.output.contains("OutOfResources"), "\(full.output)")
        #expect(daemon.log.contains("0xA700"), "\(daemon.log)")
        #expect(try daemon.studies().isEmpty)

        // Room again (reload refuses nothing; the free-space rule needs a restart), and still no model.
        try daemon.stop()
        text = text.replacingOccurrences(of: "minimum_free_space_mb = 999999", with: "minimum_free_space_mb = 1")
        try text.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        try daemon.start(keepConfig: true)
        #expect(try daemon.storescu([files.path("f.dcm")]).status == 0)
        try daemon.waitFor("waiting for a model", timeout: 20) { daemon.log.contains("no model is loaded; the study waits") }
        #expect(try daemon.study(uid: study)?["state"] as? String != "triaged")
        // The model is fixed and the daemon told: the waiting study is triaged.
        try FileManager.default.copyItem(atPath: daemon.dir.path("model.safetensors"), toPath: daemon.dir.path("missing.safetensors"))
        daemon.signal(SIGHUP)
        try daemon.waitFor("reload", timeout: 20) { daemon.log.contains("reloaded") }
        let studies = try daemon.waitForTriage([study], timeout: 30)
        #expect(studies[study]?["state"] as? String == "triaged")
    }

    @Test("a dropped file the locked worklist could not take stays in the drop folder and is retried")
    func dropRetry() throws {
        let daemon = try DaemonHarness(extraConfig: "")
        try daemon.writeConfig()
        var text = try String(contentsOfFile: daemon.configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "[drop_folder]\n", with: "[drop_folder]\nretry_seconds = 1\n")
        try text.write(toFile: daemon.configPath, atomically: true, encoding: .utf8)
        try daemon.start(keepConfig: true)
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.14.1"
        try RadiographFactory.make(at: files.path("d.dcm"), study: study)
        let holder = try DatabaseQueue(path: daemon.database)
        try holder.writeWithoutTransaction { db in
            try db.execute(sql: "BEGIN EXCLUSIVE")
            defer { try? db.execute(sql: "ROLLBACK") }
            try FileManager.default.moveItem(atPath: files.path("d.dcm"), toPath: daemon.dropFolder + "/d.dcm")
            try daemon.waitFor("the worklist to give up", timeout: 30) { daemon.log.contains("left in the drop folder") }
        }
        #expect(FileManager.default.fileExists(atPath: daemon.dropFolder + "/d.dcm"))
        let studies = try daemon.waitForTriage([study], timeout: 30)
        #expect(studies[study]?["state"] as? String == "triaged")
        #expect(!FileManager.default.fileExists(atPath: daemon.dropFolder + "/d.dcm"))
    }

    @Test("late instances re-triage a study and keep its review history")
    func lateInstances() throws {
        let daemon = try DaemonHarness(quietPeriod: 0.5)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.13.1"
        for i in 0..<3 { try RadiographFactory.make(at: files.path("l\(i).dcm"), study: study, seed: 60 + i) }
        #expect(try daemon.storescu([files.path("l0.dcm"), files.path("l1.dcm")]).status == 0)
        let first = try #require(try daemon.waitForTriage([study])[study])
        #expect(first["images"] as? Int == 2 && first["state"] as? String == "triaged")
        let override = try Executable.run(["override", study, "--label", "abnormal", "--db", daemon.database, "--reviewer", "dr.test", "--note", "fracture"])
        #expect(override.status == 0, "\(override.stderr)")

        #expect(try daemon.storescu([files.path("l2.dcm")]).status == 0)
        var latest: [String: Any] = [:]
        try daemon.waitFor("the re-triage", timeout: 30) {
            latest = try daemon.study(uid: study) ?? [:]
            return latest["images"] as? Int == 3 && latest["state"] as? String == "triaged"
        }
        #expect(latest["changed_after_review"] as? Bool == true, "\(latest)")
        #expect(latest["review_state"] as? String == "overridden" && latest["review_label"] as? String == "abnormal")
        let (_, images, reviews) = try daemon.show(study)
        #expect(reviews.count == 1 && reviews.first?["stated_reviewer"] as? String == "dr.test")
        #expect(images.allSatisfy { $0["probability"] as? Double != nil })
    }

    @Test("a file that crashes the decoder costs that image only: the study is triaged without it and says why; the daemon carries on")
    func decoderCrash() throws {
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.14.1", after = "1.2.826.0.1.3680043.10.14.2"
        let paths = try RadiographFactory.makeStudy(in: files, prefix: "c", study: study, count: 3)
        try RadiographFactory.make(at: files.path("after.dcm"), study: after, seed: 9)
        let poison = try RadiographFactory.sopInstanceUID(paths[1])
        // A study of one image, which crashes the decoder too.
        let lone = "1.2.826.0.1.3680043.10.14.3"
        try RadiographFactory.make(at: files.path("lone.dcm"), study: lone, seed: 11, sopInstanceUID: poison + ".1")
        let daemon = try DaemonHarness(quietPeriod: 0.5)
        // The spool names each file by its SOP Instance UID: the decoder process crashes on these.
        try daemon.start(environment: [DecoderService.faultVariable: "crash:\(poison)."])
        defer { _ = try? daemon.stop() }
        try daemon.waitFor("the decoder processes", timeout: 10) { daemon.decoderProcesses.count == 4 }
        #expect(try daemon.storescu(paths).status == 0)
        let triaged = try #require(try daemon.waitForTriage([study])[study])
        #expect(triaged["state"] as? String == "triaged" && triaged["images"] as? Int == 3, "\(triaged)")
        let images = try daemon.show(study).images
        let crashed = try #require(images.first { $0["sop_instance_uid"] as? String == poison })
        #expect(crashed["probability"] is NSNull)
        #expect((crashed["eligibility_reason"] as? String)?.contains("crashed the decoder process") == true, "\(crashed)")
        let others = images.filter { $0["sop_instance_uid"] as? String != poison }.compactMap { $0["probability"] as? Double }
        #expect(others.count == 2)
        let mean = others.reduce(0, +) / 2
        #expect(abs((triaged["probability"] as? Double ?? -1) - mean) < 1e-9, "the study probability is the mean of the images that were classified")
        let text = try Executable.run(["show", study, "--db", daemon.database])
        // show wraps an image's line to 80 columns: read it with its continuation lines joined.
        let unwrapped = text.stdout.replacingOccurrences(of: "\n" + String(repeating: " ", count: 9), with: " ")
        #expect(unwrapped.contains("(not classified: could not be decoded: crashed the decoder process"), "\(text.stdout)")
        #expect(daemon.log.contains("crashed the decoder process"), "\(daemon.log)")

        // With no image left to classify, the study fails with the reason, kept with the image too.
        #expect(try daemon.storescu([files.path("lone.dcm")]).status == 0)
        let failed = try #require(try daemon.waitForTriage([lone])[lone])
        #expect(failed["state"] as? String == "failed" && (failed["state_reason"] as? String)?.contains("crashed the decoder process") == true, "\(failed)")
        let loneImages = try daemon.show(lone).images
        #expect(loneImages.count == 1 && (loneImages.first?["eligibility_reason"] as? String)?.contains("could not be decoded") == true, "\(loneImages)")

        // The header of a dropped file is read in the decoder process too: a file that crashes it is
        // quarantined with the reason, and the daemon carries on.
        try FileManager.default.copyItem(atPath: files.path("after.dcm"), toPath: daemon.dropFolder + "/dropped-\(poison).dcm")
        var reason = ""
        try daemon.waitFor("the crashing dropped file in quarantine", timeout: 20) {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: daemon.quarantine)) ?? []
            guard let name = names.first(where: { $0.contains("dropped-") && $0.hasSuffix(".reason") }) else { return false }
            reason = (try? String(contentsOfFile: daemon.quarantine + "/" + name, encoding: .utf8)) ?? ""
            return true
        }
        #expect(reason.contains("crashed the decoder process"), "\(reason)")

        // The daemon, its associations and the next study carry on, with a new decoder process.
        #expect(daemon.isRunning)
        #expect(try daemon.storescu([files.path("after.dcm")]).status == 0)
        #expect(try daemon.waitForTriage([after])[after]?["state"] as? String == "triaged")
        let decoders = daemon.decoderProcesses
        // Two for the triage worker (one of them may not be started again yet after the crash), two for headers.
        #expect(decoders.count >= 3, "\(decoders)")
        #expect(try daemon.stop() == 0)
        #expect(decoders.allSatisfy { kill($0, 0) != 0 }, "the decoder process ends with the daemon")
    }

    @Test("after triage, files are archived or deleted as configured; a resend is stored once; late images re-triage from the kept probabilities",
          arguments: ["archive", "delete"])
    func afterTriage(_ action: String) throws {
        let files = try TemporaryDirectory()
        let study = action == "archive" ? "1.2.826.0.1.3680043.10.17.1" : "1.2.826.0.1.3680043.10.17.2"
        let paths = try RadiographFactory.makeStudy(in: files, prefix: "a", study: study, count: 3)
        let daemon = try DaemonHarness(quietPeriod: 0.5)
        daemon.afterTriage = action
        try daemon.start()
        defer { _ = try? daemon.stop() }
        func images() throws -> [[String: Any]] { try daemon.show(study).images }
        func spooled() -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: daemon.spool + "/" + study)) ?? []).filter { $0.hasSuffix(".dcm") }
        }
        #expect(try daemon.storescu(Array(paths[0...1])).status == 0)
        _ = try daemon.waitForTriage([study])
        let first = try images()
        #expect(first.count == 2 && first.allSatisfy { $0["probability"] as? Double != nil })
        #expect(spooled().isEmpty, "\(action): the spool keeps nothing after triage: \(spooled())")
        for image in first {
            let path = try #require(image["file_path"] as? String)
            if action == "archive" {
                #expect(path.hasPrefix(daemon.archive + "/" + study + "/") && FileManager.default.fileExists(atPath: path), "\(path)")
            } else {
                #expect(!FileManager.default.fileExists(atPath: path), "\(path)")
            }
        }

        // The PACS sends the first image again: acknowledged, stored once, no stray copy in the spool.
        #expect(try daemon.storescu([paths[0]]).status == 0)
        usleep(1_500_000)
        #expect(try images().count == 2)
        if action == "archive" { #expect(spooled().isEmpty, "a resend leaves no second copy: \(spooled())") }

        // A late image: the study is triaged again with all three, the first two from their kept probabilities.
        #expect(try daemon.storescu([paths[2]]).status == 0)
        try daemon.waitFor("the re-triage with the late image", timeout: 30) {
            try daemon.study(uid: study)?["images"] as? Int == 3 && daemon.study(uid: study)?["state"] as? String == "triaged"
                && (try images()).allSatisfy { $0["probability"] as? Double != nil }
        }
        let last = try images()
        for image in first {
            let again = last.first { $0["sop_instance_uid"] as? String == image["sop_instance_uid"] as? String }
            #expect(again?["probability"] as? Double == image["probability"] as? Double, "the earlier probability is kept")
        }
        if action == "archive" { #expect(spooled().isEmpty) }
    }

    /// Sends a file while another process's write transaction holds the worklist longer than the daemon waits (10 s).
    static func storeWhileLocked(_ daemon: DaemonHarness, _ file: String) throws -> DaemonHarness.Run {
        let holder = try DatabaseQueue(path: daemon.database)
        return try holder.writeWithoutTransaction { db -> DaemonHarness.Run in
            try db.execute(sql: "BEGIN EXCLUSIVE")
            defer { try? db.execute(sql: "ROLLBACK") }
            return try daemon.storescu([file], extra: ["-v"])
        }
    }

    @Test("a worklist locked past its busy timeout answers 0xA701, keeps the file, and the retry is recorded")
    func lockedWorklist() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.10.1"
        try RadiographFactory.make(at: files.path("l.dcm"), study: study)
        let locked = try Self.storeWhileLocked(daemon, files.path("l.dcm"))
        #expect(locked.output.contains("Refused: OutOfResources"), "\(locked.output)")
        #expect(daemon.log.contains("0xA701"), "\(daemon.log)")
        let sop = try RadiographFactory.sopInstanceUID(files.path("l.dcm"))
        #expect(FileManager.default.fileExists(atPath: daemon.spool + "/" + study + "/" + sop + ".dcm"))
        #expect(daemon.isRunning)
        #expect(try daemon.storescu([files.path("l.dcm")]).status == 0)
        let studies = try daemon.waitForTriage([study])
        #expect(studies[study]?["images"] as? Int == 1)
    }

    @Test("a file answered 0xA701 while the worklist was locked is recorded and triaged once it answers again, without a resend or a restart")
    func lockedWorklistRecoversWithoutResend() throws {
        let daemon = try DaemonHarness(quietPeriod: 0.5)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.10.2"
        try RadiographFactory.make(at: files.path("l.dcm"), study: study)
        let locked = try Self.storeWhileLocked(daemon, files.path("l.dcm"))
        #expect(locked.output.contains("Refused: OutOfResources"), "\(locked.output)")
        let studies = try daemon.waitForTriage([study], timeout: 60)
        #expect(studies[study]?["images"] as? Int == 1 && studies[study]?["state"] as? String == "triaged", "\(studies)")
        #expect(daemon.log.contains("took in 1 instance(s) found in the spool without a worklist row"), "\(daemon.log)")
    }
}

/// A small lock for test bookkeeping across threads.
final class Locked<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
