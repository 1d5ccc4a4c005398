import BoneTriage
import Foundation
import Testing

/// Every query the CLI's listing issues is served by an index: no `SCAN study` without one, and no
/// `USE TEMP B-TREE` (SQLite sorting the worklist itself), except after a SEARCH by accession number
/// or patient, which selects a handful of studies through their own index.
@Suite("Worklist query plans")
struct WorklistQueryPlanTests {
    static func filters() -> [(String, WorklistFilter)] {
        var shapes: [(String, WorklistFilter)] = []
        let yesterday = Date().addingTimeInterval(-86_400)
        for sort in WorklistSort.allCases {
            func add(_ name: String, _ configure: (inout WorklistFilter) -> Void) {
                var f = WorklistFilter()
                f.sort = sort
                configure(&f)
                shapes.append(("\(sort.rawValue) \(name)", f))
            }
            add("first page") { $0.limit = 40 }
            add("all") { _ in }
            add("flagged") { $0.flaggedOnly = true }
            add("flagged page") { $0.flaggedOnly = true; $0.limit = 40 }
            add("state") { $0.states = [.pending, .failed] }
            add("review") { $0.review = .confirmed }
            add("since") { $0.since = yesterday }
            add("since until") { $0.since = yesterday; $0.until = Date() }
            add("body part") { $0.bodyPart = "humerus" }
            add("accession") { $0.accession = "ACC1" }
            add("patient") { $0.patient = "DOE" }
            add("everything") {
                $0.flaggedOnly = true; $0.states = [.triaged]; $0.review = .unreviewed; $0.since = yesterday; $0.until = Date(); $0.bodyPart = "wrist"
            }
        }
        return shapes
    }

    @Test("every listing, count, ID-prefix and handle query uses an index and never sorts the worklist in a temporary B-tree")
    func plans() throws {
        let dir = try TemporaryDirectory()
        let store = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        try WorklistFixture.seed(store)
        for (name, filter) in Self.filters() {
            for handle in ["1.2.826.0.1.3680043.8.498.10001", "ACC001", "a1b2c3d4", "1234", "1.2.826"] {
                for (query, plan) in try store.queryPlans(listing: filter, handle: handle) {
                    let unindexed = plan.filter { $0.hasPrefix("SCAN study") && !$0.contains("INDEX") }
                    #expect(unindexed.isEmpty, "\(name), handle \(handle): \(query)\n\(plan.joined(separator: "\n"))")
                    let selective = plan.contains { $0.hasPrefix("SEARCH study USING INDEX study_accession")
                        || $0.hasPrefix("SEARCH study USING INDEX study_patient") || $0.contains("MULTI-INDEX OR") }
                    if !selective {
                        #expect(!plan.contains { $0.contains("TEMP B-TREE") }, "\(name), handle \(handle): \(query)\n\(plan.joined(separator: "\n"))")
                    }
                }
            }
        }
    }
}
