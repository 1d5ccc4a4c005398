import BoneTriage
import Foundation
import GRDB
import Testing

@Suite("Study lifecycle and rules")
struct StudyLifecycleTests {
    @Test("transitions: an arrival reopens any study, an outcome ends any, only a receiving study is queued")
    func transitions() {
        for from in StudyState.allCases {
            #expect(StudyLifecycle.allows(from, .receiving))
            #expect(StudyLifecycle.allows(from, .triaged) && StudyLifecycle.allows(from, .notApplicable) && StudyLifecycle.allows(from, .failed))
            #expect(StudyLifecycle.allows(from, .pending) == (from == .receiving || from == .pending), "\(from) -> pending")
        }
        #expect(StudyLifecycle.setAsideReason(interruptedAttempts: StudyLifecycle.maximumInterruptedAttempts) == nil)
        #expect(StudyLifecycle.setAsideReason(interruptedAttempts: StudyLifecycle.maximumInterruptedAttempts + 1)?.contains("died 3 times") == true)
    }

    @Test("rules: the mean of the images, abnormal at the threshold itself, priority in thousandths, flagged while unreviewed or changed")
    func rules() {
        #expect(StudyRules.studyProbability([]) == nil)
        #expect(StudyRules.studyProbability([0.25, 0.75]) == 0.5)
        #expect(StudyRules.verdict(probability: 0.5, threshold: 0.5) == .abnormal)
        #expect(StudyRules.verdict(probability: 0.4999, threshold: 0.5) == .normal)
        #expect(StudyRules.priority(probability: 0.8) == 800 && StudyRules.priority(probability: 0.0005) == 1)
        #expect(StudyRules.isFlagged(verdict: .abnormal, reviewState: .unreviewed, changedAfterReview: false))
        #expect(!StudyRules.isFlagged(verdict: .abnormal, reviewState: .confirmed, changedAfterReview: false))
        #expect(StudyRules.isFlagged(verdict: .abnormal, reviewState: .overridden, changedAfterReview: true))
        #expect(!StudyRules.isFlagged(verdict: .normal, reviewState: .unreviewed, changedAfterReview: true))
        #expect(!StudyRules.isFlagged(verdict: nil, reviewState: .unreviewed, changedAfterReview: false))
    }

    @Test("the SQL mirror of the flagged rule (the listing's filter and order) agrees with StudyRules.isFlagged on every combination")
    func flaggedSQLAgrees() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("w.sqlite")
        _ = try SQLiteWorklist(path: path, create: true)
        let queue = try DatabaseQueue(path: path)
        var n = 0
        try queue.write { db in
            for verdict in [nil, Finding.normal, .abnormal] {
                for review in ReviewState.allCases {
                    for changed in [false, true] {
                        n += 1
                        let uid = "1.2.300.\(n)"
                        try db.execute(sql: """
                            INSERT INTO study (studyInstanceUID, shortID, source, firstReceivedAt, lastReceivedAt, state, verdict, reviewState, changedAfterReview, priority)
                            VALUES (?, ?, 'cstore', '2026-01-01 10:00:00.000', '2026-01-01 10:00:00.000', 'triaged', ?, ?, ?, ?)
                            """, arguments: [uid, Study.shortID(for: uid), verdict?.rawValue, review.rawValue, changed, n])
                    }
                }
            }
        }
        try queue.close()
        let store = try SQLiteWorklist(path: path, create: false)
        let all = try store.studies(matching: WorklistFilter())
        #expect(all.count == 18)
        var f = WorklistFilter()
        f.flaggedOnly = true
        let flagged = try store.studies(matching: f)
        #expect(flagged.map(\.studyInstanceUID) == all.filter(\.isFlagged).map(\.studyInstanceUID))
        #expect(flagged.count == 4, "abnormal and unreviewed (changed or not), confirmed and changed, overridden and changed")
        #expect(all.prefix(flagged.count).allSatisfy(\.isFlagged) && !all.dropFirst(flagged.count).contains(where: \.isFlagged))
    }
}
