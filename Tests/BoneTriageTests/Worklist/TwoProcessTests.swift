import BoneTriage
import Foundation
import Testing

/// Thread-safe tallies for the reviewer thread.
private final class Tally: @unchecked Sendable {
    private let lock = NSLock()
    private var results: [(args: [String], status: Int32, stderr: String)] = []
    func add(_ args: [String], _ r: Executable.Result) { lock.withLock { results.append((args, r.status, r.stderr)) } }
    var all: [(args: [String], status: Int32, stderr: String)] { lock.withLock { results } }
}

/// The daemon's writer (this process, through the store API) and radiologists' review commands (other
/// processes, the real binary) on one database at the same time.
@Suite("Worklist under two processes", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct TwoProcessTests {
    @Test("no lost review, no 'database is locked', no torn row")
    func concurrentWriterAndReviewers() throws {
        let dir = try TemporaryDirectory()
        let db = dir.path("worklist.sqlite")
        let store = try SQLiteWorklist(path: db, create: true)
        // Ten triaged studies that both sides will fight over.
        var studies: [String] = []
        for n in 0..<10 {
            let uid = "1.2.826.0.1.3680043.8.498.2\(n)"
            let sops = try WorklistFixture.add(store, study: uid, images: 2, at: Double(n))
            try WorklistFixture.triage(store, study: uid, sops: sops, probabilities: [0.3 + 0.05 * Double(n), 0.6])
            studies.append(uid)
        }
        let contested = studies
        let deadline = Date().addingTimeInterval(8)
        let tally = Tally()
        let reviewers = Thread {
            var i = 0
            while Date() < deadline {
                let uid = contested[i % contested.count]
                let args = i % 3 == 0
                    ? ["override", uid, "--label", i % 2 == 0 ? "normal" : "abnormal", "--reviewer", "r\(i)", "--db", db]
                    : ["confirm", uid, "--reviewer", "r\(i)", "--note", "pass \(i)", "--db", db]
                if let r = try? Executable.run(args) { tally.add(args, r) }
                i += 1
            }
        }
        reviewers.start()
        // The writer: late images and re-triage of the same studies, plus new studies, until the deadline.
        var writes = 0, round = 0
        while Date() < deadline {
            let uid = studies[round % studies.count]
            let sop = "\(uid).late\(round)"
            var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: sop, filePath: "/spool/\(sop)", eligible: true, source: .cstore)
            a.bodyPart = "HUMERUS"
            _ = try store.recordArrival(a)
            let images = try store.images(ofStudy: try store.study(handle: uid).studyInstanceUID)
            let probabilities = Dictionary(uniqueKeysWithValues: images.enumerated().map { ($1.sopInstanceUID, Double(($0 * 37 + round) % 100) / 100) })
            try store.recordTriage(TriageResult(studyInstanceUID: uid, imageProbabilities: probabilities, threshold: 0.5, modelID: "m", modelHash: "h"))
            writes += 2
            round += 1
        }
        while reviewers.isExecuting || !reviewers.isFinished { Thread.sleep(forTimeInterval: 0.05) }

        let results = tally.all
        #expect(results.count >= 20, "only \(results.count) review commands ran in 8 s")
        #expect(writes >= 50, "only \(writes) writes in 8 s")
        // A review of a study reviewed and not triaged again since is refused (exit 1, nothing recorded).
        let alreadyReviewed = results.filter { $0.status == 1 && $0.stderr.contains("nothing recorded") }
        for r in results {
            #expect(r.status == 0 || (r.status == 1 && r.stderr.contains("nothing recorded")), "\(r.args.joined(separator: " ")) failed: \(r.stderr)")
            #expect(!r.stderr.lowercased().contains("locked"))
        }
        var reviewsFound = 0
        for uid in studies {
            let s = try store.study(handle: uid)
            let images = try store.images(ofStudy: s.studyInstanceUID)
            let trail = try store.reviews(ofStudy: s.studyInstanceUID)
            reviewsFound += trail.count
            // The study row agrees with its image rows: one transaction wrote both.
            let ps = images.compactMap(\.probability)
            #expect(ps.count == images.count && s.imageCount == images.count)
            let mean = ps.reduce(0, +) / Double(ps.count)
            #expect(abs((s.probability ?? -1) - mean) < 1e-9, "study \(uid): \(String(describing: s.probability)) vs mean \(mean)")
            #expect(s.verdict == (mean >= 0.5 ? .abnormal : .normal))
            // The review state is the last review's.
            if let last = trail.last {
                #expect(s.reviewState == (last.action == .confirm ? .confirmed : .overridden) && s.reviewLabel == last.label)
            }
        }
        #expect(reviewsFound == results.count - alreadyReviewed.count, "every acknowledged review is in the trail, no refused one")
    }
}
