import BoneTriage
import Dispatch
import Foundation
import Logging
import Testing

/// The daemon with test doubles for the writer and the sender (the real ones: engineer 2's, tested with
/// Orthanc): a DICOM study dropped in is triaged, its report queued with the verdict, built off the
/// triage path and sent; the daemon stops promptly.
@Suite("daemon: results queued, built and delivered", .serialized)
struct DaemonResultsTests {
    static func configuration(_ dir: TemporaryDirectory) throws -> BoneTriageConfiguration {
        try DaemonHarness.writeModel(to: dir.path("model.safetensors"), inputSize: 75)
        var c = BoneTriageConfiguration()
        c.bindAddress = "127.0.0.1"
        c.port = 0
        c.dropFolder = dir.path("drop")
        c.spoolFolder = dir.path("spool")
        c.archiveFolder = dir.path("archive")
        c.quarantineFolder = dir.path("quarantine")
        c.resultsFolder = dir.path("results")
        c.databasePath = dir.path("worklist.sqlite")
        c.statusFile = dir.path("status")
        c.modelPath = dir.path("model.safetensors")
        c.quietPeriod = 0.5
        c.engineThreads = 1
        c.isolateDecoder = false
        c.minimumFreeSpaceMB = 1
        c.resultDestinations = [ResultDestination(name: "PACS", aeTitle: "PACS", host: "127.0.0.1", port: 1, callingAETitle: "BONETRIAGE",
                                                  kinds: [.structuredReport, .secondaryCapture], verdicts: .all)]
        c.delivery = DeliveryPolicy(firstRetry: 1, maximumRetry: 1)
        return c
    }

    /// Runs the daemon on a thread of its own; the semaphore is signalled when `run()` returns.
    static func run(_ daemon: TriageDaemon) -> DispatchSemaphore {
        let ended = DispatchSemaphore(value: 0)
        Thread {
            do { try daemon.run() } catch { Issue.record("the daemon did not run: \(error)") }
            ended.signal()
        }.start()
        return ended
    }

    static func dropRadiograph(_ dir: TemporaryDirectory, study: String, sop: String) throws {
        var w = DicomWriter.radiograph(study: study, sop: sop, rows: 64, columns: 64)
        w.nativePixels(bytes: 64 * 64)
        try FileManager.default.createDirectory(atPath: dir.path("drop"), withIntermediateDirectories: true)
        try w.write(to: dir.path("drop/.\(sop).part"))
        try FileManager.default.moveItem(atPath: dir.path("drop/.\(sop).part"), toPath: dir.path("drop/\(sop).dcm"))
    }

    static func waitFor(_ what: String, timeout: Double = 90, _ condition: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if (try? condition()) == true { return }
            usleep(100_000)
        }
        Issue.record("timed out waiting for \(what)")
        throw CocoaError(.userCancelled)
    }

    @Test("a triaged DICOM study's report and captures are queued with the verdict, built once and delivered; a destination that is down gets them later; the daemon stops promptly")
    func delivers() throws {
        let dir = try TemporaryDirectory()
        let c = try Self.configuration(dir)
        let down = Flag(true)
        let sender = ScriptedSender { _ in down.isSet ? .retryLater(reason: "connection refused") : .stored(warning: nil) }
        let writer = RecordingWriter()
        let daemon = TriageDaemon(configuration: c, configurationPath: nil, logger: Logger(label: "test"),
                                  results: ResultsComponents(writer: writer, sender: sender, pictures: SquarePictures()))
        let ended = Self.run(daemon)
        defer { daemon.stop() }
        let study = "1.2.826.0.1.3680043.8.498.30001"
        try Self.dropRadiograph(dir, study: study, sop: study + ".1")
        try Self.dropRadiograph(dir, study: study, sop: study + ".2")
        try Self.waitFor("the daemon to start") { FileManager.default.fileExists(atPath: c.statusFile) }
        let store = try SQLiteWorklist(path: c.databasePath, create: false)
        try Self.waitFor("two attempts while the destination is down") {
            try store.outboxEntries(includeDelivered: true).count == 3 && store.outboxEntries(includeDelivered: true).allSatisfy { $0.attempts >= 2 }
        }
        let objects = try store.resultObjects(ofStudy: study)
        #expect(objects.map(\.kind) == [.structuredReport, .secondaryCapture, .secondaryCapture])
        #expect(try store.study(studyInstanceUID: study).state == .triaged)
        down.set(false)
        try Self.waitFor("delivery once the destination is up") {
            try store.outboxEntries(includeDelivered: true).allSatisfy { $0.state == .delivered }
        }
        #expect(writer.written.withLock { $0 }.sorted() == objects.map(\.sopInstanceUID).sorted(), "each object built once, however often it was sent")
        let files = Set(objects.compactMap(\.filePath))
        #expect(files.count == 3 && sender.calls.withLock { $0 }.allSatisfy { Set($0.paths).isSubset(of: files) }, "resends are the same files")
        daemon.stop()
        #expect(ended.wait(timeout: .now() + 30) == .success, "the daemon stops with its result threads")
    }

    @Test("after_triage = delete: the spool files a study's results still need stay until they are built, then go")
    func deleteWaitsForTheBuild() throws {
        let dir = try TemporaryDirectory()
        var c = try Self.configuration(dir)
        c.afterTriage = .delete
        let heatmaps = Flag(false)
        let daemon = TriageDaemon(configuration: c, configurationPath: nil, logger: Logger(label: "test"),
                                  results: ResultsComponents(writer: RecordingWriter(), sender: ScriptedSender { _ in .stored(warning: nil) },
                                                             pictures: SquarePictures(), heatmapSettled: { _ in heatmaps.isSet }))
        let ended = Self.run(daemon)
        defer { daemon.stop() }
        let study = "1.2.826.0.1.3680043.8.498.30002"
        try Self.dropRadiograph(dir, study: study, sop: study + ".1")
        try Self.waitFor("the daemon to start") { FileManager.default.fileExists(atPath: c.statusFile) }
        let store = try SQLiteWorklist(path: c.databasePath, create: false)
        try Self.waitFor("the report built and delivered") {
            try store.outboxEntries(includeDelivered: true).contains { $0.kind == .structuredReport && $0.state == .delivered }
        }
        let image = try #require(try store.images(ofStudy: study).first)
        #expect(try store.study(studyInstanceUID: study).state == .triaged)
        #expect(FileManager.default.fileExists(atPath: image.filePath), "the capture still waits for its heatmap, so the file stays")
        heatmaps.set(true)
        try Self.waitFor("the capture built, then the study's file deleted") {
            try store.resultObjects(ofStudy: study).allSatisfy { $0.filePath != nil } && !FileManager.default.fileExists(atPath: image.filePath)
        }
        daemon.stop()
        #expect(ended.wait(timeout: .now() + 30) == .success)
    }

    @Test("with a picture maker, the heatmap pictures arrive in Orthanc as a Secondary Capture series of the study, one per image, at the picture's size",
          .enabled(if: OrthancPACS.available, "skipped: needs Orthanc (/usr/sbin/Orthanc, Debian package orthanc) and curl; `make test` installs them"))
    func capturesArriveInOrthanc() throws {
        let pacs = try OrthancPACS()
        let dir = try TemporaryDirectory()
        var c = try Self.configuration(dir)
        c.resultDestinations = [pacs.destination(timeoutSeconds: 10)]
        c.resultDestinations[0].verdicts = .all
        let daemon = TriageDaemon(configuration: c, configurationPath: nil, logger: Logger(label: "test"),
                                  results: ResultsComponents(writer: DicomResultWriter(), sender: StorageSCU(), pictures: BandPictures()))
        let ended = Self.run(daemon)
        defer { daemon.stop() }
        let study = "1.2.826.0.1.3680043.8.498.30003"
        try Self.dropRadiograph(dir, study: study, sop: study + ".1")
        try Self.dropRadiograph(dir, study: study, sop: study + ".2")
        try Self.waitFor("the daemon to start") { FileManager.default.fileExists(atPath: c.statusFile) }
        let store = try SQLiteWorklist(path: c.databasePath, create: false)
        try Self.waitFor("the report and both captures delivered") {
            let entries = try store.outboxEntries(includeDelivered: true)
            return entries.count == 3 && entries.allSatisfy { $0.state == .delivered }
        }
        let objects = try store.resultObjects(ofStudy: study)
        let instances = try pacs.instances(ofStudyUID: study).compactMap { $0["ID"] as? String }.map { try pacs.tags(instance: $0) }
        #expect(instances.count == 3, "one instance per result")
        let captures = instances.filter { $0["SOPClassUID"] as? String == ResultKind.secondaryCapture.sopClassUID }
        #expect(captures.count == 2)
        #expect(Set(captures.compactMap { $0["SOPInstanceUID"] as? String }) == Set(objects.filter { $0.kind == .secondaryCapture }.map(\.sopInstanceUID)))
        #expect(captures.allSatisfy { $0["StudyInstanceUID"] as? String == study && $0["Rows"] as? String == "48" && $0["Columns"] as? String == "64" },
                "\(captures)")
        #expect(captures.allSatisfy { ($0["SeriesDescription"] as? String ?? "").contains("BoneTriage") })
        daemon.stop()
        #expect(ended.wait(timeout: .now() + 30) == .success)
    }
}

/// A simple real picture maker for tests: a 64 x 48 grey picture with a band, whatever the image.
struct BandPictures: TriagePictureMaking {
    func picture(of image: StudyImage, in study: Study) throws -> RGBPicture {
        var pixels = [UInt8](repeating: 90, count: 64 * 48 * 3)
        for i in stride(from: 64 * 40 * 3, to: pixels.count, by: 1) { pixels[i] = 230 }
        return RGBPicture(width: 64, height: 48, pixels: pixels)
    }
}
