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

    @Test("tiers: changed after review first (any verdict), then flagged, then the rest; the rank within a day is the priority in the first two")
    func tiers() {
        #expect(StudyRules.tier(verdict: .normal, reviewState: .confirmed, changedAfterReview: true) == .changedAfterReview)
        #expect(StudyRules.tier(verdict: .abnormal, reviewState: .overridden, changedAfterReview: true) == .changedAfterReview)
        #expect(StudyRules.tier(verdict: .abnormal, reviewState: .unreviewed, changedAfterReview: false) == .flagged)
        #expect(StudyRules.tier(verdict: .abnormal, reviewState: .confirmed, changedAfterReview: false) == .other)
        #expect(StudyRules.tier(verdict: nil, reviewState: .unreviewed, changedAfterReview: false) == .other)
        #expect(StudyRules.rankWithinDay(tier: .flagged, priority: 800) == 800 && StudyRules.rankWithinDay(tier: .other, priority: 800) == 0)
        let zone = TimeZone(identifier: "America/New_York") ?? .gmt
        #expect(StudyRules.arrivalDay(Date(timeIntervalSince1970: 1_796_011_200), timeZone: zone) == 20261129, "04:00 UTC is still the day before in New York")
        #expect(StudyRules.arrivalDay(Date(timeIntervalSince1970: 1_796_011_200), timeZone: .gmt) == 20261130)
    }

    @Test("migration v6 fills the flagged mark, tier, rank and arrival day of rows written before it, from StudyRules")
    func orderBackfill() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("w.sqlite")
        let queue = try DatabaseQueue(path: path)
        try WorklistSchema.migrator.migrate(queue, upTo: "v5-character-set-note")
        var n = 0
        try queue.write { db in
            for verdict in [nil, Finding.normal, .abnormal] {
                for review in ReviewState.allCases {
                    for changed in [false, true] {
                        n += 1
                        let uid = "1.2.300.\(n)"
                        try db.execute(sql: """
                            INSERT INTO study (studyInstanceUID, shortID, source, firstReceivedAt, lastReceivedAt, state, verdict, reviewState, changedAfterReview, priority)
                            VALUES (?, ?, 'cstore', ?, ?, 'triaged', ?, ?, ?, ?)
                            """, arguments: [uid, Study.shortID(for: uid), Date(timeIntervalSince1970: 1_795_000_000 + Double(n) * 86_400),
                                             Date(timeIntervalSince1970: 1_795_000_000), verdict?.rawValue, review.rawValue, changed, n])
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
        #expect(all.map(\.tier) == all.map(\.tier).sorted(), "in tier order")
        #expect(all.allSatisfy { $0.arrivalDay == StudyRules.arrivalDay($0.firstReceivedAt) })
        #expect(try store.counts(matching: WorklistFilter()) == WorklistCounts(flagged: 4, others: 14))
    }
}
