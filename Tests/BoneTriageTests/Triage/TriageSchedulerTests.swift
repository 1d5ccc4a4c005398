import BoneTriage
import Foundation
import Logging
import Testing

@Suite("Triage scheduler")
struct TriageSchedulerTests {
    @Test("a complete study goes to one worker at a time; late instances queue it again for after that triage")
    func oneWorkerPerStudy() throws {
        let scheduler = TriageScheduler(quietPeriod: 0)
        let t = Date()
        scheduler.arrived(ArrivalNotice(studyInstanceUID: "1.1", sopInstanceUID: "1.1.1", receivedAt: t, expectedInstances: nil))
        let first = try #require(scheduler.next())
        #expect(first.study == "1.1" && first.newlyQueued == ["1.1"])
        // A late instance while "1.1" is being triaged: it is queued but not handed out until finished.
        scheduler.arrived(ArrivalNotice(studyInstanceUID: "1.1", sopInstanceUID: "1.1.2", receivedAt: t, expectedInstances: nil))
        scheduler.arrived(ArrivalNotice(studyInstanceUID: "2.2", sopInstanceUID: "2.2.1", receivedAt: t, expectedInstances: nil))
        let second = try #require(scheduler.next())
        #expect(second.study == "2.2")
        #expect(scheduler.counts.queued == 1 && scheduler.counts.triaging == 2)
        scheduler.finished("1.1")
        #expect(scheduler.next()?.study == "1.1")
        scheduler.finished("1.1")
        scheduler.finished("2.2")
        // A study that waited for a model comes back at once.
        scheduler.requeue("3.3")
        #expect(scheduler.next()?.study == "3.3")
        scheduler.stop()
        #expect(scheduler.next() == nil)
    }

    @Test("a study is due once its quiet period is over or all its announced instances came, and while it is queued and not taken")
    func studyDue() throws {
        let now = Locked(Date(timeIntervalSince1970: 1_000_000))
        let scheduler = TriageScheduler(quietPeriod: 30, clock: { now.withLock { $0 } })
        #expect(!scheduler.hasStudyDue)
        scheduler.arrived(ArrivalNotice(studyInstanceUID: "1.1", sopInstanceUID: "1.1.1", receivedAt: now.withLock { $0 }, expectedInstances: nil))
        #expect(!scheduler.hasStudyDue, "within its quiet period")
        now.withLock { $0 += 31 }
        #expect(scheduler.hasStudyDue, "its quiet period is over")
        #expect(scheduler.next()?.study == "1.1")
        #expect(!scheduler.hasStudyDue, "taken by a worker")
        scheduler.arrived(ArrivalNotice(studyInstanceUID: "2.2", sopInstanceUID: "2.2.1", receivedAt: now.withLock { $0 }, expectedInstances: 2))
        #expect(!scheduler.hasStudyDue)
        scheduler.arrived(ArrivalNotice(studyInstanceUID: "2.2", sopInstanceUID: "2.2.2", receivedAt: now.withLock { $0 }, expectedInstances: 2))
        #expect(scheduler.hasStudyDue, "all its announced instances came")
        scheduler.requeue("3.3")
        #expect(scheduler.hasStudyDue)
        scheduler.stop()
    }

    @Test("workers wait for the quiet period, and stop() wakes them")
    func waitsAndStops() throws {
        let scheduler = TriageScheduler(quietPeriod: 0.3)
        scheduler.arrived(ArrivalNotice(studyInstanceUID: "1.1", sopInstanceUID: "1.1.1", receivedAt: Date(), expectedInstances: nil))
        let start = Date()
        #expect(scheduler.next()?.study == "1.1")
        #expect(Date().timeIntervalSince(start) >= 0.25)
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.2) { scheduler.stop() }
        #expect(scheduler.next() == nil)
    }
}

@Suite("Spool")
struct SpoolTests {
    @Test("a file enters under its final name once; a second copy of the same instance is dropped")
    func placement() throws {
        let dir = try TemporaryDirectory()
        let spool = Spool(root: dir.path("spool"))
        #expect(try spool.prepare() == 0)
        let first = spool.temporaryPath(tag: "t"), second = spool.temporaryPath(tag: "t")
        try Data("one".utf8).write(to: URL(fileURLWithPath: first))
        try Data("two".utf8).write(to: URL(fileURLWithPath: second))
        let a = try spool.place(temporary: first, study: "1.2.3", instance: "1.2.3.4", fileExtension: "dcm")
        let b = try spool.place(temporary: second, study: "1.2.3", instance: "1.2.3.4", fileExtension: "dcm")
        #expect(a == .stored(path: dir.path("spool") + "/1.2.3/1.2.3.4.dcm"))
        #expect(b == .alreadyPresent(path: a.path))
        #expect(try String(contentsOfFile: a.path, encoding: .utf8) == "one")
        #expect(try FileManager.default.contentsOfDirectory(atPath: spool.incoming).isEmpty)
        // Names that are not plain UIDs never become paths.
        let odd = spool.temporaryPath(tag: "t")
        try Data("x".utf8).write(to: URL(fileURLWithPath: odd))
        let placed = try spool.place(temporary: odd, study: "../../etc", instance: "a/b", fileExtension: "dcm")
        #expect(placed.path.hasPrefix(dir.path("spool") + "/h") && !placed.path.contains(".."))
        // Leftovers of a crash are cleared at the next start.
        try Data("partial".utf8).write(to: URL(fileURLWithPath: spool.temporaryPath(tag: "t")))
        #expect(try spool.prepare() == 1)
    }
}

@Suite("Study triage")
struct StudyTriageTests {
    @Test("a study whose triage was cut short three times is set aside as failed instead of looping", arguments: WorklistBackend.all)
    func poisonStudy(_ backend: WorklistBackend) throws {
        let dir = try TemporaryDirectory()
        let store = try backend.open(dir.url.path)
        let uid = "1.2.826.0.1.3680043.10.11.1"
        _ = try store.recordArrival(InstanceArrival(studyInstanceUID: uid, sopInstanceUID: uid + ".1", filePath: dir.path("x.dcm"),
                                                    eligible: true, source: .cstore))
        let worker = StudyTriage(worklist: store, models: ModelSlot(nil), policy: TriagePolicy(configuration: BoneTriageConfiguration()),
                                 logger: Logger(label: "test"))
        // A triage that ends normally leaves no mark: here, no model is loaded, so the study waits.
        #expect(worker.triage(studyInstanceUID: uid) == .waitingForModel)
        #expect(try store.beginTriage(studyInstanceUID: uid) == .claimed(attempts: 1))
        // Three triages that never ended (the process died during each).
        _ = try store.beginTriage(studyInstanceUID: uid)
        _ = try store.beginTriage(studyInstanceUID: uid)
        guard case .failed = worker.triage(studyInstanceUID: uid) else { Issue.record("the study was not set aside"); return }
        let study = try store.study(handle: uid)
        #expect(study.state == .failed && study.stateReason?.contains("died 3 times") == true, "\(study)")
        #expect(try store.triageInProgress(ofStudy: uid) == nil, "the claim was closed")
        #expect(try store.beginTriage(studyInstanceUID: uid) == .alreadyDone(state: .failed), "set aside: it is not claimed again until an instance arrives")
    }
}
