import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The daemon (the real binary) delivering its results to Orthanc (`OrthancPACS`) as the destination PACS:
/// the report read back through Orthanc's REST API, a destination that is down, a kill -9 while sending,
/// a review's updated report (these send reports only), and the Secondary Captures with their heatmaps.
@Suite("results delivered to Orthanc by the daemon", .serialized,
       .enabled(if: Executable.url != nil && OrthancPACS.available && DicomTools.find("dsrdump") != nil && DicomTools.find("dcmdump") != nil,
                "skipped: needs the bonetriage executable, Orthanc, curl and DCMTK (dsrdump, dcmdump); `make test` installs them"))
struct OutboxOrthancTests {
    static func daemon(sendingTo pacs: OrthancPACS, send: String = "[\"sr\"]", heatmaps: String = "flagged",
                       triage: String = "") throws -> DaemonHarness {
        let d = try DaemonHarness(quietPeriod: 1)
        d.extraConfig = """
            \(triage)
            [heatmaps]
            compute = "\(heatmaps)"
            [delivery]
            first_retry_seconds = 1
            maximum_retry_seconds = 2
            [[results]]
            name = "orthanc"
            ae_title = "\(pacs.aeTitle)"
            host = "127.0.0.1"
            port = \(pacs.dicomPort)
            verdicts = "all"
            send = \(send)
            timeout_seconds = 10
            """
        return d
    }

    /// A study of `images` self-made CR radiographs of the humerus (64 x 64), dropped into the daemon's drop folder.
    static func drop(_ d: DaemonHarness, study: String, images: Int = 1) throws {
        try FileManager.default.createDirectory(atPath: d.dropFolder, withIntermediateDirectories: true)
        for i in 1...images {
            var w = DicomWriter.radiograph(study: study, sop: "\(study).\(i)", rows: 64, columns: 64)
            w.set(0x0010, 0x0010, "PN", "DOE^JANE")
            w.set(0x0010, 0x0020, "LO", "PID-4711")
            w.set(0x0008, 0x0020, "DA", "20261130")
            w.set(0x0008, 0x0050, "SH", "ACC4711")
            w.nativePixels(bytes: 64 * 64)
            let name = "\(study).\(i).dcm"
            try w.write(to: d.dropFolder + "/." + name + ".part")
            try FileManager.default.moveItem(atPath: d.dropFolder + "/." + name + ".part", toPath: d.dropFolder + "/" + name)
        }
    }

    static func worklist(_ d: DaemonHarness) throws -> SQLiteWorklist { try SQLiteWorklist(path: d.database, create: false) }

    static func delivered(_ store: SQLiteWorklist, count: Int) throws -> Bool {
        let entries = try store.outboxEntries(includeDelivered: true)
        return entries.count == count && entries.allSatisfy { $0.state == .delivered }
    }

    /// The text of a DICOM file as DCMTK's dsrdump (an SR) or dcmdump reads it; the tool must accept it.
    static func dump(_ tool: String, _ path: String) throws -> String {
        let r = try DaemonHarness.run(tool, [path])
        #expect(r.status == 0, "\(tool) refused \(path): \(r.output)")
        return r.output
    }

    @Test("a triaged study's report arrives in Orthanc in the same study, once, with the verdict and probability")
    func reportArrives() throws {
        let pacs = try OrthancPACS()
        let d = try Self.daemon(sendingTo: pacs)
        try d.start()
        defer { _ = try? d.stop() }
        let study = "1.2.826.0.1.3680043.8.498.40001"
        try Self.drop(d, study: study, images: 2)
        let store = try Self.worklist(d)
        try d.waitFor("the report delivered", timeout: 120) { (try? Self.delivered(store, count: 1)) == true }
        let triaged = try store.study(studyInstanceUID: study)
        let report = try #require(try store.resultObjects(ofStudy: study).first)
        let instances = try pacs.instances(ofStudyUID: study)
        #expect(instances.count == 1, "one instance per result: \(instances)")
        let id = try #require(instances.first?["ID"] as? String)
        let tags = try pacs.tags(instance: id)
        #expect(tags["StudyInstanceUID"] as? String == study && tags["SOPInstanceUID"] as? String == report.sopInstanceUID)
        #expect(tags["Modality"] as? String == "SR" && tags["SOPClassUID"] as? String == ResultKind.structuredReport.sopClassUID)
        try pacs.file(instance: id, to: d.dir.path("report.dcm"))
        let text = try Self.dump("dsrdump", d.dir.path("report.dcm"))
        let probability = try #require(triaged.probability)
        #expect(text.contains(String(format: "%.6f", probability)), "the study probability is in the report:\n\(text)")
        #expect(text.lowercased().contains((try #require(triaged.verdict)).rawValue), "the verdict is in the report:\n\(text)")
        let dumped = try Self.dump("dcmdump", d.dir.path("report.dcm"))
        #expect(dumped.contains(study + ".1") && dumped.contains(study + ".2"), "each source image is referenced:\n\(dumped)")
        #expect(d.log.contains("result delivered") && !d.log.contains("DOE") && !d.log.contains("PID-4711"), "no patient data in the log")
    }

    @Test("the Secondary Captures (the heatmap overlays) arrive in the same study once each image's heatmap is made, one per image, with the report")
    func capturesArrive() throws {
        let pacs = try OrthancPACS()
        let d = try Self.daemon(sendingTo: pacs, send: "[\"sr\", \"sc\"]", heatmaps: "all")
        try d.start()
        defer { _ = try? d.stop() }
        let study = "1.2.826.0.1.3680043.8.498.40004"
        try Self.drop(d, study: study, images: 2)
        let store = try Self.worklist(d)
        try d.waitFor("the report and both captures delivered", timeout: 180) { (try? Self.delivered(store, count: 3)) == true }
        let objects = try store.resultObjects(ofStudy: study)
        let captures = objects.filter { $0.kind == .secondaryCapture }
        #expect(captures.count == 2 && Set(captures.compactMap(\.sourceSOPInstanceUID)) == [study + ".1", study + ".2"])
        #expect(Set(captures.map(\.seriesInstanceUID)).count == 1, "one Secondary Capture series")
        for capture in captures {
            let source = try #require(capture.sourceSOPInstanceUID)
            let heatmap = try #require(try store.heatmap(sopInstanceUID: source), "the image's heatmap was made")
            let built = try #require(capture.builtAt)
            #expect(heatmap.outcome.heatmap != nil && heatmap.madeAt <= built, "the capture waited for its heatmap")
        }
        let instances = try pacs.instances(ofStudyUID: study)
        #expect(instances.count == 3, "one instance per result: \(instances.count)")
        for instance in instances {
            let id = try #require(instance["ID"] as? String)
            let tags = try pacs.tags(instance: id)
            #expect(tags["StudyInstanceUID"] as? String == study)
            guard tags["SOPClassUID"] as? String == ResultKind.secondaryCapture.sopClassUID else { continue }
            let uid = try #require(tags["SOPInstanceUID"] as? String)
            let capture = try #require(captures.first { $0.sopInstanceUID == uid }, "Orthanc's capture \(uid) is one the outbox queued")
            #expect(tags["BurnedInAnnotation"] as? String == "YES" && tags["Modality"] as? String == "OT")
            #expect((tags["SeriesDescription"] as? String ?? "").contains("BoneTriage"))
            // The picture Orthanc holds is the one built (the radiograph and the band below it).
            let built = try Self.dump("dcmdump", try #require(capture.filePath))
            for (tag, keyword) in [("(0028,0010)", "Rows"), ("(0028,0011)", "Columns")] {
                let line = try #require(built.split(separator: "\n").first { $0.hasPrefix(tag) })
                let value = line.split(separator: " ").dropFirst(2).first.map(String.init)
                #expect(value == tags[keyword] as? String, "\(keyword): built \(line), Orthanc \(tags[keyword] ?? "none")")
            }
        }
    }

    @Test("a real radiograph from ../shared (RG3_UNCR, 1760x1760 CR): its report and its capture, at most 1024 px, arrive in its study",
          .enabled(if: Fixtures.shared != nil, "skipped: ../shared/data is absent; the self-made studies above still ran"))
    func realRadiograph() throws {
        let source = try #require(Fixtures.shared).appendingPathComponent("data/dicom/radiographs/RG3_UNCR.dcm").path
        let meta = try DicomReader.metadata(path: source)
        let study = try #require(meta.studyInstanceUID)
        let pacs = try OrthancPACS()
        let d = try Self.daemon(sendingTo: pacs, send: "[\"sr\", \"sc\"]", heatmaps: "all", triage: #"covered_body_parts = ["EXTREMITY"]"#)
        try d.start()
        defer { _ = try? d.stop() }
        try FileManager.default.createDirectory(atPath: d.dropFolder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: source, toPath: d.dropFolder + "/.RG3_UNCR.dcm.part")
        try FileManager.default.moveItem(atPath: d.dropFolder + "/.RG3_UNCR.dcm.part", toPath: d.dropFolder + "/RG3_UNCR.dcm")
        let store = try Self.worklist(d)
        try d.waitFor("the report and the capture delivered", timeout: 180) { (try? Self.delivered(store, count: 2)) == true }
        let triaged = try store.study(studyInstanceUID: study)
        let instances = try pacs.instances(ofStudyUID: study)
        #expect(instances.count == 2, "one report and one capture: \(instances.count)")
        var kinds: [String] = []
        for instance in instances {
            let id = try #require(instance["ID"] as? String)
            let tags = try pacs.tags(instance: id)
            #expect(tags["StudyInstanceUID"] as? String == study && (tags["PatientID"] as? String ?? "") == (meta.patientID ?? ""))
            kinds.append(tags["Modality"] as? String ?? "?")
            if tags["SOPClassUID"] as? String == ResultKind.secondaryCapture.sopClassUID {
                let rows = Int(tags["Rows"] as? String ?? "") ?? 0, columns = Int(tags["Columns"] as? String ?? "") ?? 0
                #expect(max(rows, columns) == 1024 && min(rows, columns) > 500, "the picture's longest side is 1024: \(columns)x\(rows)")
            } else {
                try pacs.file(instance: id, to: d.dir.path("report.dcm"))
                let text = try Self.dump("dsrdump", d.dir.path("report.dcm"))
                #expect(text.contains(String(format: "%.6f", try #require(triaged.probability))), "\(text)")
            }
        }
        #expect(kinds.sorted() == ["OT", "SR"])
    }

    @Test("Orthanc down while the study is triaged: the report waits, is retried, and arrives once Orthanc is back")
    func destinationDown() throws {
        let pacs = try OrthancPACS()
        pacs.stop()
        let d = try Self.daemon(sendingTo: pacs)
        try d.start()
        defer { _ = try? d.stop() }
        let study = "1.2.826.0.1.3680043.8.498.40002"
        try Self.drop(d, study: study)
        let store = try Self.worklist(d)
        try d.waitFor("two failed attempts", timeout: 120) {
            (try? store.outboxEntries(includeDelivered: true).first.map { $0.attempts >= 2 && $0.state == .pending }) == true
        }
        let waiting = try #require(try store.outboxEntries(includeDelivered: false).first)
        #expect(waiting.lastError != nil && waiting.nextAttemptAt != nil)
        #expect(try Executable.run(["outbox", "--db", d.database]).stdout.contains(waiting.entryID))
        try pacs.start()
        try d.waitFor("the report delivered", timeout: 120) { (try? Self.delivered(store, count: 1)) == true }
        #expect(try pacs.instances(ofStudyUID: study).count == 1)
        #expect(d.log.contains("result not delivered"))
    }

    @Test("kill -9 while sending: after the restart every report is in Orthanc exactly once, with the UID it was given when queued")
    func killedWhileSending() throws {
        let pacs = try OrthancPACS()
        let d = try Self.daemon(sendingTo: pacs)
        try d.start()
        let studies = (1...8).map { "1.2.826.0.1.3680043.8.498.4010\($0)" }
        for s in studies { try Self.drop(d, study: s) }
        let store = try Self.worklist(d)
        try d.waitFor("the first delivery", timeout: 180) {
            (try? store.outboxEntries(includeDelivered: true).contains { $0.state == .delivered }) == true
        }
        d.kill9()
        let before = try store.outboxEntries(includeDelivered: true)
        try d.start()
        defer { _ = try? d.stop() }
        try d.waitFor("every report delivered", timeout: 180) {
            (try? store.outboxEntries(includeDelivered: true).count == studies.count
                && store.outboxEntries(includeDelivered: true).allSatisfy { $0.state == .delivered }) == true
        }
        let after = try store.outboxEntries(includeDelivered: true)
        #expect(Set(before.map(\.objectSOPInstanceUID)).isSubset(of: Set(after.map(\.objectSOPInstanceUID))), "what was queued keeps its identity")
        for s in studies {
            let instances = try pacs.instances(ofStudyUID: s)
            let uids = try instances.compactMap { $0["ID"] as? String }.map { try pacs.tags(instance: $0)["SOPInstanceUID"] as? String }
            let queued = try store.resultObjects(ofStudy: s).map(\.sopInstanceUID)
            #expect(uids == queued, "study \(s): Orthanc holds \(uids), the outbox queued \(queued)")
        }
    }

    @Test("a file that crashes the decoder while its picture is rendered costs that Secondary Capture only: the reason is kept, the report and the other picture arrive, the daemon carries on")
    func pictureCrashCostsOneCapture() throws {
        let pacs = try OrthancPACS()
        let d = try Self.daemon(sendingTo: pacs, send: "[\"sr\", \"sc\"]", heatmaps: "none")
        let study = "1.2.826.0.1.3680043.8.498.40020"
        // The spool names each file by its SOP Instance UID: rendering the first image's picture crashes the decoder process.
        try d.start(environment: [DecoderService.faultVariable: "crash-radiograph:\(study).1."])
        defer { _ = try? d.stop() }
        try Self.drop(d, study: study, images: 2)
        let store = try Self.worklist(d)
        try d.waitFor("the report and one capture delivered, one capture given up", timeout: 120) {
            let objects = (try? store.resultObjects(ofStudy: study)) ?? []
            return objects.count == 3 && objects.filter { $0.buildProblem != nil }.count == 1
                && ((try? store.outboxEntries(includeDelivered: true).filter { $0.state == .delivered }.count) ?? 0) == 2
        }
        let objects = try store.resultObjects(ofStudy: study)
        let lost = try #require(objects.first { $0.buildProblem != nil })
        #expect(lost.kind == .secondaryCapture && lost.sourceSOPInstanceUID == "\(study).1")
        #expect((lost.buildProblem ?? "").contains("crashed the decoder process"), "\(lost)")
        #expect(try pacs.instances(ofStudyUID: study).count == 2)
        #expect(d.process?.isRunning == true && d.log.contains("pictures: the decoder process crashed"), "\(d.log)")
        let outbox = try Executable.run(["outbox", "list", "--all", "--format", "json", "--db", d.database])
        #expect(outbox.status == 0 && outbox.stdout.contains("crashed the decoder process"), "\(outbox.stdout)\(outbox.stderr)")
    }

    @Test("an object whose build the daemon dies in, three times, is given up at the next start, with the reason; the study's report arrives")
    func buildCrashLoopEnds() throws {
        let pacs = try OrthancPACS()
        let d = try Self.daemon(sendingTo: pacs, send: "[\"sr\", \"sc\"]", heatmaps: "none")
        let study = "1.2.826.0.1.3680043.8.498.40021"
        try Self.drop(d, study: study, images: 1)
        var opened: SQLiteWorklist?
        // Rendering the picture hangs: the daemon is killed while it builds the capture, as a crash would end it.
        for run in 1...ResultBuildStage.maximumInterruptedBuilds {
            try d.start(logLevel: "debug", environment: [DecoderService.faultVariable: "hang-radiograph:\(study).1."])
            let store = try opened ?? Self.worklist(d)
            opened = store
            var capture = ""
            try d.waitFor("run \(run): the capture's build started", timeout: 120) {
                capture = (try? store.resultObjects(ofStudy: study).first { $0.kind == .secondaryCapture }?.sopInstanceUID) ?? ""
                return !capture.isEmpty && d.log.split(separator: "\n").contains { $0.contains("building a result object") && $0.contains(capture) }
            }
            d.kill9()
        }
        // Without the fault the capture would build now: it is given up because of the three interrupted builds.
        let store = try #require(opened)
        try d.start()
        defer { _ = try? d.stop() }
        try d.waitFor("the capture given up", timeout: 60) {
            (try? store.resultObjects(ofStudy: study).contains { $0.kind == .secondaryCapture && $0.buildProblem != nil }) == true
        }
        let capture = try #require(try store.resultObjects(ofStudy: study).first { $0.kind == .secondaryCapture })
        #expect(capture.filePath == nil && (capture.buildProblem ?? "").contains("the daemon stopped 3 times while building this object"), "\(capture)")
        try d.waitFor("the report delivered", timeout: 60) {
            (try? store.outboxEntries(includeDelivered: true).contains { $0.state == .delivered }) == true
        }
        #expect(try pacs.instances(ofStudyUID: study).count == 1)
    }

    @Test("a confirm with the CLI sends an updated report that references the first")
    func reviewUpdatesTheReport() throws {
        let pacs = try OrthancPACS()
        let d = try Self.daemon(sendingTo: pacs)
        try d.start()
        defer { _ = try? d.stop() }
        let study = "1.2.826.0.1.3680043.8.498.40003"
        try Self.drop(d, study: study)
        let store = try Self.worklist(d)
        try d.waitFor("the report delivered", timeout: 120) { (try? Self.delivered(store, count: 1)) == true }
        let first = try #require(try store.resultObjects(ofStudy: study).first)
        let label = try #require(try store.study(studyInstanceUID: study).verdict) == .abnormal ? "normal" : "abnormal"
        let review = try Executable.run(["override", study, "--label", label, "--db", d.database])
        #expect(review.status == 0, "\(review.stderr)")
        try d.waitFor("the updated report delivered", timeout: 120) { (try? Self.delivered(store, count: 2)) == true }
        let updated = try #require(try store.resultObjects(ofStudy: study).last)
        #expect(updated.replaces?.sopInstanceUID == first.sopInstanceUID && updated.review?.label.rawValue == label)
        let instances = try pacs.instances(ofStudyUID: study)
        #expect(instances.count == 2)
        let ids = instances.compactMap { $0["ID"] as? String }
        let matching = try ids.filter { try pacs.tags(instance: $0)["SOPInstanceUID"] as? String == updated.sopInstanceUID }
        let id = try #require(matching.first, "Orthanc holds the updated report \(updated.sopInstanceUID)")
        try pacs.file(instance: id, to: d.dir.path("updated.dcm"))
        let text = try Self.dump("dcmdump", d.dir.path("updated.dcm"))
        #expect(text.lowercased().contains("(0040,a360)") && text.contains(first.sopInstanceUID), "Predecessor Documents Sequence names the first:\n\(text)")
        _ = try Self.dump("dsrdump", d.dir.path("updated.dcm"))
    }
}
