import BoneTriage
import Foundation
import GRDB
import Testing

extension TriageClaim {
    /// The node named by `.heldBy`, else nil.
    var heldByNode: String? { if case let .heldBy(node, _) = self { node } else { nil } }
}

/// Several nodes on one worklist, whatever keeps it: each store writes as its node (`[worklist] node`).
/// Two stores opened on one location with two node names stand for two `bonetriage serve` processes.
@Suite("Worklist nodes contract")
struct WorklistNodesContractTests {
    /// Two stores on one new worklist, as node-a and node-b, with the folder that holds it.
    static func twoNodes(_ backend: WorklistBackend) throws -> (TemporaryDirectory, a: any WorklistStore, b: any WorklistStore) {
        let dir = try TemporaryDirectory()
        let location = try backend.location(dir.url.path)
        return (dir, try Worklist.open(location, role: .daemon, node: "node-a"), try Worklist.open(location, role: .daemon, node: "node-b"))
    }

    static func arrival(_ study: String, _ sop: String, spool: String) -> InstanceArrival {
        WorklistStoreContractTests.arrival(study, sop, path: "\(spool)/\(study)/\(sop).dcm")
    }

    static func result(_ study: String, _ probabilities: [String: Double], imageCount: Int) -> TriageResult {
        TriageResult(studyInstanceUID: study, imageProbabilities: probabilities, threshold: 0.5, modelID: "m", modelHash: "h", imageCount: imageCount)
    }

    @Test("an instance that reached two nodes: recorded once, the second node's file kept as its copy and read as its own", arguments: WorklistBackend.all)
    func copiesOfOneInstance(_ backend: WorklistBackend) throws {
        let (dir, a, b) = try Self.twoNodes(backend)
        defer { withExtendedLifetime(dir) {} }
        #expect(try a.recordArrival(Self.arrival("1.2.1", "1.2.1.1", spool: "/spool")) == .newStudy)
        #expect(try b.recordArrival(Self.arrival("1.2.1", "1.2.1.1", spool: "/spool")) == .copyKept, "same path string, another node's disk")
        #expect(try b.recordArrival(Self.arrival("1.2.1", "1.2.1.1", spool: "/spool")) == .duplicate, "node-b has it already")
        #expect(try a.recordArrival(Self.arrival("1.2.1", "1.2.1.1", spool: "/other")) == .duplicate)
        #expect(try b.recordArrival(Self.arrival("1.2.1", "1.2.1.2", spool: "/spool-b")) == .addedToStudy)
        let study = try a.study(studyInstanceUID: "1.2.1")
        #expect(study.imageCount == 2, "a copy is not another image")

        let seenByA = try a.images(ofStudy: "1.2.1")
        #expect(seenByA.map(\.node) == ["node-a", "node-b"])
        #expect(seenByA.map { $0.isHeld(by: "node-a") } == [true, false])
        let seenByB = try b.images(ofStudy: "1.2.1")
        #expect(seenByB.map(\.node) == ["node-b", "node-b"], "node-b reads its own copy of the first")
        #expect(seenByB.map(\.filePath) == ["/spool/1.2.1/1.2.1.1.dcm", "/spool-b/1.2.1/1.2.1.2.dcm"])

        // Each node's files under its spool: its own images and its copies, never the other node's rows.
        #expect(try a.imagePaths(under: "/spool") == ["/spool/1.2.1/1.2.1.1.dcm"])
        #expect(try b.imagePaths(under: "/spool") == ["/spool/1.2.1/1.2.1.1.dcm"])
        #expect(try a.imagePaths(under: "/spool-b") == [])
        #expect(try b.imagePaths(under: "/spool-b") == ["/spool-b/1.2.1/1.2.1.2.dcm"])
        #expect(try b.imagePath(sopInstanceUID: "1.2.1.1") == "/spool/1.2.1/1.2.1.1.dcm")

        // node-b archives its copy: node-a's row keeps its own path.
        try b.updateImagePaths(["1.2.1.1": "/archive/1.2.1/1.2.1.1.dcm"])
        #expect(try b.images(ofStudy: "1.2.1").first?.filePath == "/archive/1.2.1/1.2.1.1.dcm")
        #expect(try a.images(ofStudy: "1.2.1").first?.filePath == "/spool/1.2.1/1.2.1.1.dcm")
        // node-a removes its file by path: node-b's copy (same path string before) is not marked.
        try a.markFilesRemoved(["/spool/1.2.1/1.2.1.1.dcm"], at: WorklistFixture.base)
        #expect(try a.images(ofStudy: "1.2.1").first?.fileRemovedAt == WorklistFixture.base)
        #expect(try b.images(ofStudy: "1.2.1").first?.fileRemovedAt == nil)
    }

    @Test("claims: another node's open claim is left to it; a standing outcome is not triaged again; a node resumes its own", arguments: WorklistBackend.all)
    func claims(_ backend: WorklistBackend) throws {
        let (dir, a, b) = try Self.twoNodes(backend)
        defer { withExtendedLifetime(dir) {} }
        _ = try a.recordArrival(Self.arrival("1.2.2", "1.2.2.1", spool: "/spool"))
        _ = try b.recordArrival(Self.arrival("1.2.2", "1.2.2.1", spool: "/spool"))
        #expect(try a.beginTriage(studyInstanceUID: "1.2.2") == .claimed(attempts: 1))
        #expect(try b.beginTriage(studyInstanceUID: "1.2.2").heldByNode == "node-a")
        let open = try b.triageInProgress(ofStudy: "1.2.2")
        #expect(open?.node == "node-a" && open?.attempts == 1)
        try b.endTriage(studyInstanceUID: "1.2.2")
        #expect(try a.triageInProgress(ofStudy: "1.2.2")?.node == "node-a", "a node cannot close another's claim")

        // node-a died during it: at its restart it takes its claim up again, counted.
        #expect(try a.beginTriage(studyInstanceUID: "1.2.2") == .claimed(attempts: 2))
        try a.recordTriage(Self.result("1.2.2", ["1.2.2.1": 0.9], imageCount: 1))
        try a.endTriage(studyInstanceUID: "1.2.2")
        #expect(try a.triageInProgress(ofStudy: "1.2.2") == nil)
        #expect(try b.study(studyInstanceUID: "1.2.2").triageNode == "node-a")
        #expect(try b.beginTriage(studyInstanceUID: "1.2.2") == .alreadyDone(state: .triaged), "triaged, and nothing arrived since")
        #expect(try b.triageInProgress(ofStudy: "1.2.2") == nil)

        // A new instance, at node-b only: the study is receiving again and node-b may claim it.
        _ = try b.recordArrival(Self.arrival("1.2.2", "1.2.2.2", spool: "/spool"))
        #expect(try b.beginTriage(studyInstanceUID: "1.2.2") == .claimed(attempts: 1))
        #expect(try a.beginTriage(studyInstanceUID: "1.2.2").heldByNode == "node-b")
    }

    @Test("a study's heatmaps, results and retention belong to the node that triaged it", arguments: WorklistBackend.all)
    func workOfTheTriageNode(_ backend: WorklistBackend) throws {
        let (dir, a, b) = try Self.twoNodes(backend)
        defer { withExtendedLifetime(dir) {} }
        var arrival = Self.arrival("1.2.3", "1.2.3.1", spool: "/spool-a")
        arrival.sopClassUID = "1.2.840.10008.5.1.4.1.1.1"
        _ = try a.recordArrival(arrival)
        arrival.filePath = "/spool-b/1.2.3/1.2.3.1.dcm"
        #expect(try b.recordArrival(arrival) == .copyKept)
        #expect(try b.beginTriage(studyInstanceUID: "1.2.3") == .claimed(attempts: 1))
        var result = Self.result("1.2.3", ["1.2.3.1": 0.9], imageCount: 1)
        result.resultDestinations = [ResultDestination(name: "pacs", aeTitle: "PACS", host: "127.0.0.1", port: 104, callingAETitle: "BONETRIAGE", verdicts: .all)]
        try b.recordTriage(result)
        try b.endTriage(studyInstanceUID: "1.2.3")

        #expect(try a.heatmapWork(scope: .all, modelFingerprint: "h", limit: 10).isEmpty, "node-a did not triage it")
        let work = try b.heatmapWork(scope: .all, modelFingerprint: "h", limit: 10)
        #expect(work.map(\.filePath) == ["/spool-b/1.2.3/1.2.3.1.dcm"], "node-b makes it from its own copy")
        #expect(try a.resultObjectsAwaitingBuild(limit: 10).isEmpty)
        let objects = try b.resultObjectsAwaitingBuild(limit: 10)
        #expect(!objects.isEmpty)
        for object in objects { try b.recordResultBuilt(sopInstanceUID: object.sopInstanceUID, filePath: "/results-b/\(object.sopInstanceUID).dcm", at: WorklistFixture.base) }
        #expect(try a.deliveriesDue(at: Date().addingTimeInterval(60), limit: 10).isEmpty)
        #expect(try b.deliveriesDue(at: Date().addingTimeInterval(60), limit: 10).count == objects.count)

        // Retention: each node finds its own files of the finished study, and only those.
        #expect(try a.finishedStudyFiles(under: "/spool-a").flatMap(\.paths) == ["/spool-a/1.2.3/1.2.3.1.dcm"])
        #expect(try b.finishedStudyFiles(under: "/spool-b").flatMap(\.paths) == ["/spool-b/1.2.3/1.2.3.1.dcm"])
        #expect(try a.finishedStudyFiles(under: "/spool-b").isEmpty)
        try b.markFilesRemoved(["/spool-b/1.2.3/1.2.3.1.dcm"], at: WorklistFixture.base)
        #expect(try b.finishedStudyFiles(under: "/spool-b").isEmpty)
        #expect(try a.finishedStudyFiles(under: "/spool-a").flatMap(\.paths) == ["/spool-a/1.2.3/1.2.3.1.dcm"])
    }

    /// Runs one statement on the worklist at `location` beside its stores: rows as an older BoneTriage left them.
    static func execute(_ sql: String, on location: WorklistLocation) throws {
        switch location {
        case let .sqlite(path): try DatabaseQueue(path: path).write { try $0.execute(sql: sql) }
        case let .postgresql(connection): try PostgresConnection(connection).execute(sql)
        }
    }

    @Test("a study triaged again on another node: each result object is built and delivered by the node whose disk has (or is to have) its file; one not built yet goes with the triage; one without a node follows the study's triage node, as before",
          arguments: WorklistBackend.all)
    func resultsOfAStudyTriagedAgainElsewhere(_ backend: WorklistBackend) throws {
        let dir = try TemporaryDirectory()
        defer { withExtendedLifetime(dir) {} }
        let location = try backend.location(dir.url.path)
        let a = try Worklist.open(location, role: .daemon, node: "node-a"), b = try Worklist.open(location, role: .daemon, node: "node-b")
        let pacs = ResultDestination(name: "pacs", aeTitle: "PACS", host: "127.0.0.1", port: 104, callingAETitle: "BONETRIAGE", verdicts: .all)
        let later = Date().addingTimeInterval(60)
        func dicom(_ study: String, _ sop: String) -> InstanceArrival {
            var arrival = Self.arrival(study, sop, spool: "/spool")
            arrival.sopClassUID = "1.2.840.10008.5.1.4.1.1.1"
            return arrival
        }
        func triage(_ store: any WorklistStore, _ study: String, _ sops: [String]) throws {
            #expect(try store.beginTriage(studyInstanceUID: study) == .claimed(attempts: 1))
            var result = Self.result(study, Dictionary(uniqueKeysWithValues: sops.map { ($0, 0.9) }), imageCount: sops.count)
            result.resultDestinations = [pacs]
            try store.recordTriage(result)
            try store.endTriage(studyInstanceUID: study)
        }
        func due(_ store: any WorklistStore, _ study: String) throws -> Set<String> {
            Set(try store.deliveriesDue(at: later, limit: 100).filter { $0.studyInstanceUID == study }.map(\.objectSOPInstanceUID))
        }
        func awaiting(_ store: any WorklistStore, _ study: String) throws -> Set<String> {
            Set(try store.resultObjectsAwaitingBuild(limit: 100).filter { $0.studyInstanceUID == study }.map(\.sopInstanceUID))
        }
        func file(_ sop: String) -> String { "/results/\(sop).dcm" }

        // node-a triages the study (node-b keeps a copy of its image) and builds the report; not the capture yet.
        _ = try a.recordArrival(dicom("1.2.5", "1.2.5.1"))
        #expect(try b.recordArrival(dicom("1.2.5", "1.2.5.1")) == .copyKept)
        try triage(a, "1.2.5", ["1.2.5.1"])
        let first = try a.resultObjects(ofStudy: "1.2.5")
        #expect(first.map(\.kind) == [.structuredReport, .secondaryCapture])
        #expect(first.allSatisfy { $0.node == "node-a" }, "queued for the node that triaged")
        let report = try #require(first.first).sopInstanceUID, capture = try #require(first.last).sopInstanceUID
        #expect(try awaiting(a, "1.2.5") == [report, capture])
        #expect(try awaiting(b, "1.2.5").isEmpty)
        try a.recordResultBuilt(sopInstanceUID: report, filePath: file(report), at: WorklistFixture.base)
        #expect(try due(a, "1.2.5") == [report])
        #expect(try due(b, "1.2.5").isEmpty)

        // A new instance reaches node-b only, which triages the study again.
        _ = try b.recordArrival(dicom("1.2.5", "1.2.5.2"))
        try triage(b, "1.2.5", ["1.2.5.1", "1.2.5.2"])
        let second = try b.resultObjects(ofStudy: "1.2.5")
        let new = second.filter { $0.sopInstanceUID != report && $0.sopInstanceUID != capture }
        #expect(new.map(\.kind) == [.structuredReport, .secondaryCapture, .secondaryCapture], "a report and a capture of each image")
        #expect(new.allSatisfy { $0.node == "node-b" })
        #expect(new.first?.replaces?.sopInstanceUID == report, "the new report replaces node-a's")
        #expect(second.first { $0.sopInstanceUID == report }?.node == "node-a", "built: its file is on node-a's disk")
        #expect(second.first { $0.sopInstanceUID == capture }?.node == "node-b", "not built: it goes with the triage, as before")
        #expect(try due(a, "1.2.5") == [report], "node-a still delivers the file it has")
        #expect(try due(b, "1.2.5").isEmpty, "node-b never sends a file it does not have")
        #expect(try awaiting(a, "1.2.5").isEmpty)
        #expect(try awaiting(b, "1.2.5") == Set([capture] + new.map(\.sopInstanceUID)))

        // A build node-a began before the new triage ends after it: the file is on node-a's disk, so the
        // object is node-a's again. node-b builds the others.
        #expect(try a.recordResultBuilt(sopInstanceUID: capture, filePath: file(capture), at: WorklistFixture.base))
        #expect(try b.resultObjects(ofStudy: "1.2.5").first { $0.sopInstanceUID == capture }?.node == "node-a")
        // node-b, which had it on its list too, finishes its own build later: the first record stands.
        #expect(try b.recordResultBuilt(sopInstanceUID: capture, filePath: "/results-b/\(capture).dcm", at: later) == false)
        let kept = try #require(try a.resultObjects(ofStudy: "1.2.5").first { $0.sopInstanceUID == capture })
        #expect(kept.node == "node-a" && kept.filePath == file(capture))
        #expect(throws: WorklistError.self) { try b.recordResultBuilt(sopInstanceUID: "1.2.999.404", filePath: "/x.dcm", at: later) }
        #expect(try awaiting(b, "1.2.5") == Set(new.map(\.sopInstanceUID)))
        for sop in try awaiting(b, "1.2.5") { try b.recordResultBuilt(sopInstanceUID: sop, filePath: file(sop), at: WorklistFixture.base) }
        #expect(try due(a, "1.2.5") == [report, capture])
        #expect(try due(b, "1.2.5") == Set(new.map(\.sopInstanceUID)))

        // Delivered everywhere: each node's retention finds its own result files (one path string, two
        // disks), and cannot mark the other's removed.
        for store in [a, b] {
            for e in try store.deliveriesDue(at: later, limit: 100) {
                try store.recordDeliveryAttempt(entryID: e.entryID, state: .delivered, message: nil, nextAttemptAt: nil, at: WorklistFixture.base)
            }
        }
        #expect(try b.study(studyInstanceUID: "1.2.5").deliveryMark == .sent)
        #expect(Set(try a.finishedStudyFiles(under: "/results").flatMap(\.paths)) == [file(report), file(capture)])
        #expect(Set(try b.finishedStudyFiles(under: "/results").flatMap(\.paths)) == Set(new.map { file($0.sopInstanceUID) }))
        try b.markFilesRemoved(second.map { file($0.sopInstanceUID) }, at: WorklistFixture.base)
        #expect(try b.finishedStudyFiles(under: "/results").isEmpty)
        #expect(Set(try a.finishedStudyFiles(under: "/results").flatMap(\.paths)) == [file(report), file(capture)])
        #expect(try a.resultObjects(ofStudy: "1.2.5").filter { $0.fileRemovedAt == nil }.map(\.sopInstanceUID) == [report, capture])

        // Objects without a node (queued before objects had one) follow the study's triage node, as before:
        // anyone's while no node triaged the study, then the triage node's, which a new triage changes.
        _ = try a.recordArrival(dicom("1.2.6", "1.2.6.1"))
        #expect(try b.recordArrival(dicom("1.2.6", "1.2.6.1")) == .copyKept)
        try triage(a, "1.2.6", ["1.2.6.1"])
        let old = try a.resultObjects(ofStudy: "1.2.6").map(\.sopInstanceUID)
        let oldReport = try #require(old.first), oldCapture = try #require(old.last)
        try a.recordResultBuilt(sopInstanceUID: oldReport, filePath: file(oldReport), at: WorklistFixture.base)
        try Self.execute("UPDATE resultObject SET node = NULL WHERE studyID = (SELECT id FROM study WHERE studyInstanceUID = '1.2.6')", on: location)
        try Self.execute("UPDATE study SET triageNode = NULL WHERE studyInstanceUID = '1.2.6'", on: location)
        #expect(try a.resultObjects(ofStudy: "1.2.6").allSatisfy { $0.node == nil })
        for store in [a, b] {
            #expect(try due(store, "1.2.6") == [oldReport], "a single node's, from before nodes were kept")
            #expect(try awaiting(store, "1.2.6") == [oldCapture])
        }
        try Self.execute("UPDATE study SET triageNode = 'node-a' WHERE studyInstanceUID = '1.2.6'", on: location)
        #expect(try due(a, "1.2.6") == [oldReport])
        #expect(try awaiting(a, "1.2.6") == [oldCapture])
        #expect(try due(b, "1.2.6").isEmpty)
        #expect(try awaiting(b, "1.2.6").isEmpty)
        _ = try b.recordArrival(dicom("1.2.6", "1.2.6.2"))
        try triage(b, "1.2.6", ["1.2.6.1", "1.2.6.2"])
        let moved = try b.resultObjects(ofStudy: "1.2.6")
        #expect(moved.first { $0.sopInstanceUID == oldReport }?.node == nil, "a built object without a node keeps none")
        #expect(moved.first { $0.sopInstanceUID == oldCapture }?.node == "node-b")
        #expect(try due(a, "1.2.6").isEmpty)
        #expect(try due(b, "1.2.6") == [oldReport], "as before nodes were kept on objects: the study's triage node")
        #expect(try awaiting(b, "1.2.6") == Set(moved.filter { $0.sopInstanceUID != oldReport }.map(\.sopInstanceUID)))
    }
}

/// The operating point a verdict came from, kept with the study and named where the verdict is shown.
@Suite("Operating point of a verdict")
struct VerdictOperatingPointTests {
    @Test("kept with the verdict by both stores; show names it and the node that triaged, and an open claim", arguments: WorklistBackend.all)
    func keptAndShown(_ backend: WorklistBackend) throws {
        let (dir, a, b) = try WorklistNodesContractTests.twoNodes(backend)
        defer { withExtendedLifetime(dir) {} }
        _ = try a.recordArrival(WorklistNodesContractTests.arrival("1.2.4", "1.2.4.1", spool: "/spool"))
        #expect(try a.beginTriage(studyInstanceUID: "1.2.4") == .claimed(attempts: 1))
        let open = try b.triageInProgress(ofStudy: "1.2.4")
        let claimed = WorklistPresentation.detail(try b.study(studyInstanceUID: "1.2.4"), images: try b.images(ofStudy: "1.2.4"), reviews: [], inProgress: open)
        #expect(claimed.contains("claimed by node node-a since"), "\(claimed)")
        var result = WorklistNodesContractTests.result("1.2.4", ["1.2.4.1": 0.8], imageCount: 1)
        result.operatingPoint = "site-calibrated for sensitivity 0.90: sensitivity 0.91 (95% CI 0.85-0.95), specificity 0.72 on 240 studies, set 2026-11-30"
        try a.recordTriage(result)
        try a.endTriage(studyInstanceUID: "1.2.4")
        let study = try b.study(studyInstanceUID: "1.2.4")
        #expect(study.operatingPoint == result.operatingPoint)
        let detail = WorklistPresentation.detail(study, images: try b.images(ofStudy: "1.2.4"), reviews: [])
        #expect(detail.contains("Operating point   site-calibrated for sensitivity 0.90"), "\(detail)")
        #expect(detail.contains("on node node-a"), "\(detail)")
        let json = WorklistPresentation.detailJSONObject(study, images: [], reviews: [])
        #expect((json["study"] as? [String: Any])?["operating_point"] as? String == result.operatingPoint)
        #expect((json["study"] as? [String: Any])?["triage_node"] as? String == "node-a")
    }
}
