import BoneTriage
import Foundation
import Logging
import Testing

/// A study whose images reached different nodes of one worklist, none holding them all.
@Suite("Study triage across nodes")
struct SplitStudyTests {
    @Test("a node missing some of a study's images waits for a node that holds them all; after the wait it triages those it holds and says where the others are",
          .enabled(if: DicomTools.find("img2dcm") != nil, "skipped: needs DCMTK's img2dcm (make test installs it)"))
    func splitStudy() throws {
        let dir = try TemporaryDirectory()
        let location = WorklistLocation.sqlite(path: dir.path("worklist.sqlite"))
        let a = try Worklist.open(location, role: .daemon, node: "node-a"), b = try Worklist.open(location, role: .daemon, node: "node-b")
        let uid = "1.2.826.0.1.3680043.10.32.1"
        let onA = dir.path("a.dcm"), onB = dir.path("b.dcm")
        try RadiographFactory.make(at: onA, study: uid, seed: 1)
        try RadiographFactory.make(at: onB, study: uid, seed: 2)
        for (store, path) in [(a, onA), (b, onB)] {
            var arrival = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: try RadiographFactory.sopInstanceUID(path), filePath: path,
                                          eligible: true, source: .cstore)
            arrival.bodyPart = "HUMERUS"
            _ = try store.recordArrival(arrival)
        }
        try DaemonHarness.writeModel(to: dir.path("model.safetensors"), inputSize: 75)
        let models = ModelSlot(try LoadedModel.load(path: dir.path("model.safetensors")))
        var configuration = BoneTriageConfiguration()
        configuration.engineThreads = 1
        var policy = TriagePolicy(configuration: configuration)
        #expect(policy.splitStudyWait == 120, "the documented default")

        let waiting = StudyTriage(worklist: b, models: models, policy: policy, logger: Logger(label: "test"))
        #expect(waiting.triage(studyInstanceUID: uid) == .waitingForImages(nodes: ["node-a"]))
        #expect(try b.triageInProgress(ofStudy: uid) == nil, "the claim is closed while it waits")
        #expect(try b.study(studyInstanceUID: uid).state == .receiving)

        policy.splitStudyWait = 0
        let worker = StudyTriage(worklist: b, models: models, policy: policy, logger: Logger(label: "test"))
        guard case let .triaged(probability, _) = worker.triage(studyInstanceUID: uid) else { Issue.record("not triaged"); return }
        let images = try b.images(ofStudy: uid)
        let missing = try #require(images.first { $0.filePath == onA })
        #expect(missing.probability == nil)
        #expect(missing.eligibilityReason?.contains("only on node node-a") == true, "\(missing.eligibilityReason ?? "")")
        let held = try #require(images.first { $0.filePath == onB })
        #expect(held.probability == probability, "the study's probability is that of the image it holds")
        let recorded = try a.study(studyInstanceUID: uid)
        #expect(recorded.triageNode == "node-b")
        #expect(recorded.operatingPoint?.hasPrefix("default threshold 0.5") == true && recorded.operatingPoint?.contains("sites should calibrate") == true,
                "a model without an operating point says so: \(recorded.operatingPoint ?? "nil")")
    }
}
