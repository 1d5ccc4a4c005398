import BoneTriage
import Foundation
import Logging
import Synchronization
import Testing

/// Test doubles for the parts engineers 1 and 2 provide: a writer that writes a small file naming what it
/// was given, a sender that answers from a script, a picture maker that makes a 2x2 picture.
final class RecordingWriter: ResultObjectWriting {
    let written = Mutex<[String]>([])
    let failing: Bool
    init(failing: Bool = false) { self.failing = failing }

    func writeReport(_ report: TriageReport, to path: String) throws {
        if failing { throw CocoaError(.fileWriteUnknown) }
        written.withLock { $0.append(report.placement.sopInstanceUID) }
        let text = "SR \(report.placement.sopInstanceUID) study \(report.placement.studyInstanceUID) verdict \(report.verdict.rawValue) "
            + "replaces \(report.predecessor?.sopInstanceUID ?? "-") review \(report.review?.label.rawValue ?? "-") template \(report.placement.studyTemplatePath)"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    func writeCapture(_ capture: TriageCapture, to path: String) throws {
        if failing { throw CocoaError(.fileWriteUnknown) }
        written.withLock { $0.append(capture.placement.sopInstanceUID) }
        try Data("SC \(capture.placement.sopInstanceUID) of \(capture.source.sopInstanceUID) \(capture.picture.width)x\(capture.picture.height)".utf8)
            .write(to: URL(fileURLWithPath: path))
    }
}

final class ScriptedSender: ResultSending {
    /// Each call's paths and destination name.
    let calls = Mutex<[(paths: [String], destination: String)]>([])
    let answer: Mutex<@Sendable (String) -> StoreOutcome>
    init(_ answer: @escaping @Sendable (String) -> StoreOutcome) { self.answer = Mutex(answer) }

    func send(_ paths: [String], to destination: ResultDestination) -> [StoreOutcome] {
        calls.withLock { $0.append((paths, destination.name)) }
        let answer = self.answer.withLock { $0 }
        return paths.map(answer)
    }
}

/// A switch the tests turn while a stage runs.
final class Flag: Sendable {
    private let value: Atomic<Bool>
    init(_ initial: Bool) { value = Atomic(initial) }
    var isSet: Bool { value.load(ordering: .relaxed) }
    func set(_ v: Bool) { value.store(v, ordering: .relaxed) }
}

struct SquarePictures: TriagePictureMaking {
    func picture(of image: StudyImage, in study: Study) throws -> RGBPicture {
        RGBPicture(width: 2, height: 2, pixels: [UInt8](repeating: 200, count: 12))
    }
}

@Suite("Results: the build stage and the delivery stage")
struct ResultStagesTests {
    let dir: TemporaryDirectory
    let store: any WorklistStore
    let logger = Logger(label: "test")
    static let destination = ResultDestination(name: "PACS", aeTitle: "PACS", host: "127.0.0.1", port: 11113, callingAETitle: "BONETRIAGE")

    init() throws {
        dir = try TemporaryDirectory()
        store = try Worklist.open(path: dir.path("worklist.sqlite"), role: .daemon)
    }

    /// A triaged abnormal DICOM study with `images` real files in the spool; returns its UID.
    func triagedStudy(_ uid: String = "1.2.950", images: Int = 2) throws -> String {
        try FileManager.default.createDirectory(atPath: dir.path("spool/\(uid)"), withIntermediateDirectories: true)
        var probabilities: [String: Double] = [:]
        for i in 1...images {
            let path = dir.path("spool/\(uid)/\(i).dcm")
            try Data("DICM".utf8).write(to: URL(fileURLWithPath: path))
            var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: "\(uid).\(i)", seriesInstanceUID: "\(uid).0", filePath: path,
                                    eligible: true, source: .cstore)
            a.sopClassUID = "1.2.840.10008.5.1.4.1.1.1"
            a.bodyPart = "HUMERUS"
            _ = try store.recordArrival(a)
            probabilities["\(uid).\(i)"] = 0.9
        }
        var r = TriageResult(studyInstanceUID: uid, imageProbabilities: probabilities, threshold: 0.5, modelID: "m", modelHash: "h")
        r.resultDestinations = [Self.destination]
        try store.recordTriage(r)
        return uid
    }

    func stage(_ components: ResultsComponents, after: PostTriageAction = .keep) -> ResultBuildStage {
        ResultBuildStage(worklist: store, components: components, folder: dir.path("results"), afterTriage: after,
                         spoolFolder: dir.path("spool"), logger: logger)
    }

    /// A triaged study whose three result objects are built; returns its UID and their files.
    func builtStudy() throws -> (uid: String, files: [String]) {
        let uid = try triagedStudy()
        stage(ResultsComponents(writer: RecordingWriter(), sender: ScriptedSender { _ in .stored(warning: nil) }, pictures: SquarePictures())).runOnce()
        let files = try store.resultObjects(ofStudy: uid).compactMap(\.filePath)
        #expect(files.count == 3)
        return (uid, files)
    }

    /// A delivery stage to `destination` whose sender stores everything.
    func deliveryStage() -> (ResultDeliveryStage, ScriptedSender) {
        let sender = ScriptedSender { _ in .stored(warning: nil) }
        return (ResultDeliveryStage(worklist: store, sender: sender, destinations: [Self.destination], policy: DeliveryPolicy(), logger: logger), sender)
    }

    @Test("each object's file is built once, from a source image of the study; a second pass builds nothing")
    func buildsOnce() throws {
        let uid = try triagedStudy()
        let writer = RecordingWriter()
        let build = stage(ResultsComponents(writer: writer, sender: ScriptedSender { _ in .stored(warning: nil) }, pictures: SquarePictures()))
        #expect(build.runOnce() == 3)
        #expect(build.runOnce() == 0)
        let objects = try store.resultObjects(ofStudy: uid)
        #expect(writer.written.withLock { $0 } == objects.map(\.sopInstanceUID), "one write per object")
        for o in objects {
            let path = try #require(o.filePath)
            #expect(path == dir.path("results/\(uid)/\(o.sopInstanceUID).dcm"))
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(text.contains(o.sopInstanceUID))
        }
        let report = try String(contentsOfFile: try #require(objects[0].filePath), encoding: .utf8)
        #expect(report.contains("study \(uid)") && report.contains("template \(dir.path("spool/\(uid)/1.dcm"))"))
        #expect(!FileManager.default.fileExists(atPath: dir.path("results/\(uid)/.\(objects[0].sopInstanceUID).part")))
    }

    @Test("a capture waits while its image's heatmap is not settled; an object that cannot be built is recorded with the reason, once")
    func waitsAndGivesUp() throws {
        let uid = try triagedStudy(images: 1)
        let settled = Flag(false)
        let writer = RecordingWriter()
        let build = stage(ResultsComponents(writer: writer, sender: ScriptedSender { _ in .stored(warning: nil) }, pictures: SquarePictures(),
                                            heatmapSettled: { _ in settled.isSet }))
        #expect(build.runOnce() == 1, "the report is built; the capture waits for its heatmap")
        #expect(try store.resultObjects(ofStudy: uid).map(\.awaitsBuild) == [false, true])
        settled.set(true)
        #expect(build.runOnce() == 1)

        // A study whose files are gone, without an earlier result object: not buildable, said once.
        let gone = try triagedStudy("1.2.951", images: 1)
        try FileManager.default.removeItem(atPath: dir.path("spool/\(gone)"))
        let before = writer.written.withLock { $0.count }
        #expect(build.runOnce() == 2)
        let objects = try store.resultObjects(ofStudy: gone)
        #expect(objects.allSatisfy { $0.filePath == nil && ($0.buildProblem ?? "").contains("no DICOM file of the study is left") })
        #expect(build.runOnce() == 0, "never retried in a loop")
        #expect(writer.written.withLock { $0.count } == before)

        // A writer that fails: recorded with its reason, no partial file left.
        let failing = try triagedStudy("1.2.952", images: 1)
        #expect(stage(ResultsComponents(writer: RecordingWriter(failing: true), sender: ScriptedSender { _ in .stored(warning: nil) })).runOnce() == 2)
        let failed = try store.resultObjects(ofStudy: failing)
        #expect((failed[0].buildProblem ?? "").hasPrefix("the DICOM file could not be written"))
        #expect((failed[1].buildProblem ?? "").contains("no picture maker"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path("results/\(failing)")).isEmpty)
    }

    @Test("an object whose build the daemon died in three times is given up with the reason; the study's other objects are built")
    func givesUpAfterInterruptedBuilds() throws {
        let uid = try triagedStudy(images: 1)
        let objects = try store.resultObjects(ofStudy: uid)
        let capture = try #require(objects.first { $0.kind == .secondaryCapture })
        // Three builds of the capture began and never ended: the daemon died during each.
        for _ in 1...ResultBuildStage.maximumInterruptedBuilds { _ = try store.beginResultBuild(sopInstanceUID: capture.sopInstanceUID) }
        let writer = RecordingWriter()
        let build = stage(ResultsComponents(writer: writer, sender: ScriptedSender { _ in .stored(warning: nil) }, pictures: SquarePictures()))
        #expect(build.runOnce() == 2)
        let after = try store.resultObjects(ofStudy: uid)
        let given = try #require(after.first { $0.sopInstanceUID == capture.sopInstanceUID })
        #expect(given.filePath == nil && (given.buildProblem ?? "").contains("the daemon stopped 3 times while building this object"), "\(given)")
        #expect(writer.written.withLock { $0 } == [objects[0].sopInstanceUID], "the capture is not written again; the report is")
        #expect(after.first { $0.kind == .structuredReport }?.filePath != nil)
        // A build that ends (built, not built or waiting) is not counted against the next one.
        let other = try triagedStudy("1.2.953", images: 1)
        #expect(build.runOnce() == 2)
        for object in try store.resultObjects(ofStudy: other) {
            #expect(object.filePath != nil)
            #expect(try store.beginResultBuild(sopInstanceUID: object.sopInstanceUID) == 1)
        }
    }

    @Test("after_triage = delete: the study's spool files stay until its objects are built, then go")
    func deleteAfterBuild() throws {
        let uid = try triagedStudy(images: 1)
        let settled = Flag(false)
        let build = stage(ResultsComponents(writer: RecordingWriter(), sender: ScriptedSender { _ in .stored(warning: nil) }, pictures: SquarePictures(),
                                            heatmapSettled: { _ in settled.isSet }), after: .delete)
        build.runOnce()
        #expect(FileManager.default.fileExists(atPath: dir.path("spool/\(uid)/1.dcm")), "the capture still needs the study's file")
        settled.set(true)
        build.runOnce()
        #expect(!FileManager.default.fileExists(atPath: dir.path("spool/\(uid)/1.dcm")), "built: the file goes as after_triage says")
        #expect(try store.resultObjects(ofStudy: uid).allSatisfy { $0.filePath.map { FileManager.default.fileExists(atPath: $0) } == true })
    }

    @Test("delivery: one association per destination per pass; stored, refused, and retried with backoff, always the same file")
    func delivery() throws {
        let uid = try triagedStudy()
        stage(ResultsComponents(writer: RecordingWriter(), sender: ScriptedSender { _ in .stored(warning: nil) }, pictures: SquarePictures())).runOnce()
        let sender = ScriptedSender { _ in .retryLater(reason: "connection refused") }
        let policy = DeliveryPolicy(firstRetry: 10, maximumRetry: 25)
        let delivery = ResultDeliveryStage(worklist: store, sender: sender, destinations: [Self.destination], policy: policy, logger: logger)
        let t0 = Date()
        #expect(delivery.runOnce(now: t0) == 3)
        #expect(sender.calls.withLock { $0.count } == 1, "the three objects go over one association")
        let entries = try store.outboxEntries(includeDelivered: false)
        #expect(entries.allSatisfy { $0.state == .pending && $0.attempts == 1 && $0.lastError == "connection refused" })
        let next = try #require(entries.first?.nextAttemptAt)
        // The worklist keeps times to the millisecond.
        #expect(next.timeIntervalSince(t0) >= 9.99 && next.timeIntervalSince(t0) < 15)
        #expect(delivery.runOnce(now: t0.addingTimeInterval(5)) == 0, "nothing is sent before its next attempt")
        #expect(delivery.runOnce(now: t0.addingTimeInterval(60)) == 3)
        let second = try #require(try store.outboxEntries(includeDelivered: false).first?.nextAttemptAt)
        #expect(second.timeIntervalSince(t0) >= 79.99 && second.timeIntervalSince(t0) < 85, "the wait doubled: 20 s after the second failure")

        let files = try store.resultObjects(ofStudy: uid).compactMap(\.filePath)
        sender.answer.withLock { $0 = { path in path == files[1] ? .refused(reason: "0xA900 data set does not match SOP class") : .stored(warning: nil) } }
        #expect(delivery.runOnce(now: t0.addingTimeInterval(600)) == 3)
        let calls = sender.calls.withLock { $0 }
        #expect(calls.count == 3 && calls.allSatisfy { $0.paths == files && $0.destination == "PACS" }, "every attempt sends the very same files")
        let all = try store.outboxEntries(includeDelivered: true)
        #expect(all.map(\.state) == [.delivered, .refused, .delivered])
        #expect(all[1].lastError == "0xA900 data set does not match SOP class")
        #expect(delivery.runOnce(now: t0.addingTimeInterval(6000)) == 0, "a refused entry waits for a person")
    }

    @Test("delivery: an entry whose file is missing on this node is not sent, and is refused saying so; the others go")
    func missingFile() throws {
        let (uid, files) = try builtStudy()
        try FileManager.default.removeItem(atPath: files[1])
        let (delivery, sender) = deliveryStage()
        #expect(delivery.runOnce() == 3)
        #expect(sender.calls.withLock { $0.map(\.paths) } == [[files[0], files[2]]], "the missing file is not handed to the sender")
        let entries = try store.outboxEntries(includeDelivered: true)
        #expect(entries.map(\.state) == [.delivered, .refused, .delivered])
        let reason = try #require(entries[1].lastError)
        #expect(reason == ResultDeliveryStage.missingFileReason(path: files[1], node: store.node))
        #expect(reason.contains("\(files[1]) is missing on node \(store.node), whose entry it is") && reason.contains("bonetriage outbox drop"), "\(reason)")
        #expect(try store.study(studyInstanceUID: uid).deliveryMark == .failed, "someone must look")
        #expect(delivery.runOnce(now: Date().addingTimeInterval(600)) == 0, "a refused entry waits for a person")
    }

    @Test("delivery: while the results folder itself is not there (not mounted), entries wait and are sent when it is back")
    func resultsFolderNotMounted() throws {
        let (uid, files) = try builtStudy()
        let results = ((files[0] as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
        try FileManager.default.moveItem(atPath: results, toPath: results + ".unmounted")
        let (delivery, sender) = deliveryStage()
        let t0 = Date()
        #expect(delivery.runOnce(now: t0) == 3)
        #expect(sender.calls.withLock { $0.isEmpty }, "nothing is handed to the sender")
        let waiting = try store.outboxEntries(includeDelivered: true)
        #expect(waiting.map(\.state) == [.pending, .pending, .pending])
        #expect(waiting.allSatisfy { $0.lastError?.contains("the results folder \(results) is not there (not mounted?)") == true }, "\(waiting.map(\.lastError))")
        #expect(try store.study(studyInstanceUID: uid).deliveryMark != .failed)
        try FileManager.default.moveItem(atPath: results + ".unmounted", toPath: results)
        #expect(delivery.runOnce(now: t0.addingTimeInterval(3600)) == 3)
        #expect(try store.outboxEntries(includeDelivered: true).map(\.state) == [.delivered, .delivered, .delivered])
    }

    @Test("two nodes: a study triaged again on the other node; each node builds into its own folder and sends only the files it built")
    func twoNodes() throws {
        let location = WorklistLocation.sqlite(path: dir.path("nodes.sqlite"))
        let a = try Worklist.open(location, role: .daemon, node: "node-a"), b = try Worklist.open(location, role: .daemon, node: "node-b")
        let uid = "1.2.960"
        func arrive(_ store: any WorklistStore, _ n: Int, spool: String) throws {
            try FileManager.default.createDirectory(atPath: dir.path("\(spool)/\(uid)"), withIntermediateDirectories: true)
            let path = dir.path("\(spool)/\(uid)/\(n).dcm")
            try Data("DICM".utf8).write(to: URL(fileURLWithPath: path))
            var arrival = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: "\(uid).\(n)", seriesInstanceUID: "\(uid).0", filePath: path,
                                          eligible: true, source: .cstore)
            arrival.sopClassUID = "1.2.840.10008.5.1.4.1.1.1"
            _ = try store.recordArrival(arrival)
        }
        func triage(_ store: any WorklistStore, images: Int) throws {
            #expect(try store.beginTriage(studyInstanceUID: uid) == .claimed(attempts: 1))
            var r = TriageResult(studyInstanceUID: uid, imageProbabilities: Dictionary(uniqueKeysWithValues: (1...images).map { ("\(uid).\($0)", 0.9) }),
                                 threshold: 0.5, modelID: "m", modelHash: "h", imageCount: images)
            r.resultDestinations = [Self.destination]
            try store.recordTriage(r)
            try store.endTriage(studyInstanceUID: uid)
        }
        func stages(_ store: any WorklistStore, _ name: String) -> (ResultBuildStage, ResultDeliveryStage, ScriptedSender) {
            let sender = ScriptedSender { _ in .stored(warning: nil) }
            let components = ResultsComponents(writer: RecordingWriter(), sender: sender, pictures: SquarePictures())
            return (ResultBuildStage(worklist: store, components: components, folder: dir.path("results-\(name)"), afterTriage: .keep,
                                     spoolFolder: dir.path("spool-\(name)"), logger: logger),
                    ResultDeliveryStage(worklist: store, sender: sender, destinations: [Self.destination], policy: DeliveryPolicy(), logger: logger), sender)
        }
        let (buildA, deliverA, sentByA) = stages(a, "a"), (buildB, deliverB, sentByB) = stages(b, "b")

        // node-a triages the study and builds its report and capture; before they are sent, an image
        // reaches node-b only, which triages the study again.
        try arrive(a, 1, spool: "spool-a")
        try arrive(b, 1, spool: "spool-b")
        try triage(a, images: 1)
        #expect(buildB.runOnce() == 0)
        #expect(buildA.runOnce() == 2)
        try arrive(b, 2, spool: "spool-b")
        try triage(b, images: 2)
        #expect(buildA.runOnce() == 0)
        #expect(buildB.runOnce() == 3, "its own report and a capture of each image")

        #expect(deliverB.runOnce() == 3)
        #expect(deliverA.runOnce() == 2, "node-a still sends what it built")
        let sentA = sentByA.calls.withLock { $0.flatMap(\.paths) }, sentB = sentByB.calls.withLock { $0.flatMap(\.paths) }
        #expect(sentA.count == 2 && sentA.allSatisfy { $0.hasPrefix(dir.path("results-a") + "/") }, "\(sentA)")
        #expect(sentB.count == 3 && sentB.allSatisfy { $0.hasPrefix(dir.path("results-b") + "/") }, "\(sentB)")
        let entries = try a.outboxEntries(includeDelivered: true)
        #expect(entries.count == 5 && entries.allSatisfy { $0.state == .delivered }, "\(entries.map { ($0.state, $0.lastError) })")
        #expect(try b.study(studyInstanceUID: uid).deliveryMark == .sent)

        // node-b triages a third image and reads its list of objects to build; before it builds them, a
        // fourth image reaches node-a, which triages the study again and takes the unbuilt ones over.
        // node-b's stale list builds nothing.
        try arrive(b, 3, spool: "spool-b")
        try triage(b, images: 3)
        let stale = try b.resultObjectsAwaitingBuild(limit: 100)
        #expect(stale.count == 4, "a report and a capture of each of three images")
        try arrive(a, 4, spool: "spool-a")
        try triage(a, images: 4)
        let filesOfB = try FileManager.default.subpathsOfDirectory(atPath: dir.path("results-b")).count
        for object in stale { #expect(try buildB.build(object) == .elsewhere, "\(object.kind)") }
        #expect(try FileManager.default.subpathsOfDirectory(atPath: dir.path("results-b")).count == filesOfB, "node-b wrote nothing")
        #expect(buildA.runOnce() == 9, "node-a builds node-b's four and its own five")
        #expect(try a.resultObjectsAwaitingBuild(limit: 100).isEmpty && b.resultObjectsAwaitingBuild(limit: 100).isEmpty)
    }

    @Test("delivery: entries for a destination no longer configured wait, untouched")
    func unknownDestination() throws {
        _ = try triagedStudy(images: 1)
        stage(ResultsComponents(writer: RecordingWriter(), sender: ScriptedSender { _ in .stored(warning: nil) })).runOnce()
        let sender = ScriptedSender { _ in .stored(warning: nil) }
        let delivery = ResultDeliveryStage(worklist: store, sender: sender, destinations: [], policy: DeliveryPolicy(), logger: logger)
        #expect(delivery.runOnce() == 0 && sender.calls.withLock { $0.isEmpty })
        #expect(try store.outboxEntries(includeDelivered: false).filter { $0.filePath != nil }.allSatisfy { $0.state == .pending && $0.attempts == 0 })
    }

    @Test("the retry delay: first_retry_seconds, doubled after each failure, at most maximum_retry_seconds")
    func backoff() {
        let p = DeliveryPolicy(firstRetry: 10, maximumRetry: 600)
        #expect((1...8).map { p.retryDelay(afterFailures: $0) } == [10, 20, 40, 80, 160, 320, 600, 600])
        #expect(p.retryDelay(afterFailures: 1000) == 600)
    }

    @Test("without a picture maker, destinations are queued for reports only")
    func reportsOnlyWithoutPictures() {
        let c = ResultsComponents(writer: RecordingWriter(), sender: ScriptedSender { _ in .stored(warning: nil) })
        let scOnly = ResultDestination(name: "SC", aeTitle: "X", host: "h", port: 1, callingAETitle: "B", kinds: [.secondaryCapture])
        #expect(c.queueing([Self.destination, scOnly]).map(\.kinds) == [[.structuredReport]])
        var with = c
        with.pictures = SquarePictures()
        #expect(with.queueing([Self.destination, scOnly]).count == 2)
    }
}
