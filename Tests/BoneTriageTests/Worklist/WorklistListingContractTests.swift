import BoneTriage
import Foundation
import Testing

/// The listing side of the store contract: orders, counts, filters, handles and ID prefixes, for every backend.
extension WorklistStoreContractTests {
    /// A triaged study that arrived `daysAgo` days before now, at `hour` local time.
    static func triaged(_ store: any WorklistStore, _ uid: String, daysAgo: Int, hour: Int = 9, probability: Double,
                        accession: String? = nil, patientID: String? = nil, patientName: String? = nil) throws {
        let today = Calendar.current.startOfDay(for: Date())
        let at = Calendar.current.date(byAdding: .day, value: -daysAgo, to: today)?.addingTimeInterval(Double(hour) * 3600) ?? today
        var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: uid + ".1", filePath: "/spool/\(uid)/1.dcm", receivedAt: at, eligible: true, source: .cstore)
        a.accessionNumber = accession
        a.patientID = patientID
        a.patientName = patientName
        _ = try store.recordArrival(a)
        try store.recordTriage(TriageResult(studyInstanceUID: uid, imageProbabilities: [uid + ".1": probability], threshold: 0.5, modelID: "m", modelHash: "h"))
    }

    static func uids(_ store: any WorklistStore, _ configure: (inout WorklistFilter) -> Void = { _ in }) throws -> [String] {
        var f = WorklistFilter()
        configure(&f)
        return try store.studies(matching: f).map(\.studyInstanceUID)
    }

    @Test("priority order: changed after review first, then flagged by arrival day (newest day first, most probable first within it), then the rest newest first",
          arguments: WorklistBackend.all)
    func priorityOrder(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try Self.triaged(store, "1.9.1", daysAgo: 3, probability: 0.99)           // flagged, old, very probable
        try Self.triaged(store, "1.9.2", daysAgo: 0, hour: 8, probability: 0.60)  // flagged today, less probable
        try Self.triaged(store, "1.9.3", daysAgo: 0, hour: 7, probability: 0.90)  // flagged today, more probable, earlier
        try Self.triaged(store, "1.9.4", daysAgo: 1, probability: 0.20)           // normal, yesterday
        try Self.triaged(store, "1.9.5", daysAgo: 0, hour: 6, probability: 0.10)  // normal, today
        try Self.triaged(store, "1.9.6", daysAgo: 5, probability: 0.30)           // reviewed, then changed
        try store.recordReview(studyInstanceUID: "1.9.6", by: ReviewerIdentity(login: "r"), action: .confirm, label: nil, note: nil, at: Date())
        try store.recordTriage(TriageResult(studyInstanceUID: "1.9.6", imageProbabilities: ["1.9.6.1": 0.35], threshold: 0.5, modelID: "m2", modelHash: "h2"))
        try Self.triaged(store, "1.9.7", daysAgo: 2, probability: 0.95)           // confirmed abnormal: no longer flagged
        try store.recordReview(studyInstanceUID: "1.9.7", by: ReviewerIdentity(login: "r"), action: .confirm, label: nil, note: nil, at: Date())

        #expect(try Self.uids(store) == ["1.9.6", "1.9.3", "1.9.2", "1.9.1", "1.9.5", "1.9.4", "1.9.7"],
                "changed after review raised; today's 0.90 and 0.60 above the 3-day-old 0.99; the rest newest first")
        #expect(try Self.uids(store) { $0.flaggedOnly = true } == ["1.9.3", "1.9.2", "1.9.1"])
        #expect(try Self.uids(store) { $0.sort = .arrival } == ["1.9.2", "1.9.3", "1.9.5", "1.9.4", "1.9.7", "1.9.1", "1.9.6"])
        #expect(try Self.uids(store) { $0.sort = .probability } == ["1.9.1", "1.9.7", "1.9.3", "1.9.2", "1.9.6", "1.9.4", "1.9.5"])
        #expect(try Self.uids(store) { $0.limit = 2 } == ["1.9.6", "1.9.3"])
        var streamed: [String] = []
        try store.forEachStudy(matching: WorklistFilter()) { streamed.append($0.studyInstanceUID) }
        #expect(streamed == (try Self.uids(store)), "the cursor gives the listing's order")
        // A review moves a study down at once; a late image of a reviewed study raises it again.
        try store.recordReview(studyInstanceUID: "1.9.3", by: ReviewerIdentity(login: "r"), action: .override, label: .normal, note: nil, at: Date())
        #expect(try Self.uids(store).first == "1.9.6" && Self.uids(store)[1] == "1.9.2")
    }

    @Test("counts: flagged and others, for the same filters as the listing, whatever its limit", arguments: WorklistBackend.all)
    func counts(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try WorklistFixture.seed(store)
        #expect(try store.counts(matching: WorklistFilter()) == WorklistCounts(flagged: 2, others: 3))
        var f = WorklistFilter()
        f.limit = 1
        f.bodyPart = "humerus"
        #expect(try store.counts(matching: f) == WorklistCounts(flagged: 1, others: 2))
        f = WorklistFilter()
        f.flaggedOnly = true
        #expect(try store.counts(matching: f) == WorklistCounts(flagged: 2, others: 0))
        f = WorklistFilter()
        f.since = WorklistFixture.base.addingTimeInterval(150)
        #expect(try store.counts(matching: f) == WorklistCounts(flagged: 1, others: 2))
    }

    @Test("finding a study: --accession exactly, --patient by ID or name prefix (any case), --since and --until", arguments: WorklistBackend.all)
    func findFilters(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try Self.triaged(store, "1.8.1", daysAgo: 2, probability: 0.7, accession: "ACC-1", patientID: "PID7", patientName: "Doe^Jane")
        try Self.triaged(store, "1.8.2", daysAgo: 1, probability: 0.2, accession: "ACC-2", patientID: "PID8", patientName: "DOERING^MAX")
        try Self.triaged(store, "1.8.3", daysAgo: 0, probability: 0.2, accession: "ACC-1", patientID: "X%", patientName: "ROE^PID7")
        #expect(try Set(Self.uids(store) { $0.accession = "ACC-1" }) == ["1.8.1", "1.8.3"])
        #expect(try Self.uids(store) { $0.accession = "acc-1" }.isEmpty, "an accession number is matched exactly")
        #expect(try Self.uids(store) { $0.patient = "PID7" } == ["1.8.1"], "the ID exactly, not a name containing it")
        #expect(try Self.uids(store) { $0.patient = "doe" } == ["1.8.1", "1.8.2"])
        #expect(try Self.uids(store) { $0.patient = "doe^j" } == ["1.8.1"])
        #expect(try Self.uids(store) { $0.patient = "X%" } == ["1.8.3"], "% is plain text")
        #expect(try Self.uids(store) { $0.patient = "X" }.isEmpty)
        let yesterday = Calendar.current.date(byAdding: .day, value: -1, to: Calendar.current.startOfDay(for: Date())) ?? Date()
        #expect(try Self.uids(store) { $0.since = yesterday; $0.sort = .arrival } == ["1.8.3", "1.8.2"])
        #expect(try Self.uids(store) { $0.until = yesterday } == ["1.8.1"])
    }

    @Test("handles: whole UID, then accession number, then ID prefix; a shared accession is ambiguous and lists the studies; a non-hex ID says what is accepted",
          arguments: WorklistBackend.all)
    func accessionHandles(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        try Self.triaged(store, "1.7.1", daysAgo: 0, probability: 0.7, accession: "RX2026-0042")
        try Self.triaged(store, "1.7.2", daysAgo: 0, probability: 0.7, accession: "SHARED")
        try Self.triaged(store, "1.7.3", daysAgo: 0, probability: 0.7, accession: "SHARED")
        try Self.triaged(store, "1.7.4", daysAgo: 0, probability: 0.7, accession: "1.7.1")
        #expect(try store.study(handle: "RX2026-0042").studyInstanceUID == "1.7.1")
        #expect(try store.study(handle: " RX2026-0042 ").studyInstanceUID == "1.7.1")
        #expect(try store.study(handle: "1.7.1").studyInstanceUID == "1.7.1", "a whole UID wins over an accession number")
        let shared = [Study.shortID(for: "1.7.2"), Study.shortID(for: "1.7.3")].sorted()
        #expect(throws: WorklistError.ambiguousAccession(accession: "SHARED", candidates: shared)) { try store.study(handle: "SHARED") }
        #expect(WorklistError.ambiguousAccession(accession: "SHARED", candidates: shared).description.contains(shared[0]))
        #expect(throws: WorklistError.invalidHandle("NOPE-1")) { try store.study(handle: "NOPE-1") }
        #expect(WorklistError.invalidHandle("xyz123").description.contains("hexadecimal"))
        #expect(WorklistError.invalidHandle("xyz123").description.contains("accession number"))
        let id = Study.shortID(for: "1.7.4")
        #expect(try store.study(handle: String(id.prefix(6))).studyInstanceUID == "1.7.4")
    }

    /// Two UIDs whose short IDs share their first 9 characters, found by brute force (about 2^18 tries).
    static func collidingUIDs() -> (String, String) {
        var seen: [Substring: String] = [:]
        var n = 0
        while true {
            let uid = "1.2.999.\(n)"
            let key = Study.shortID(for: uid).prefix(9)
            if let other = seen[key] { return (other, uid) }
            seen[key] = uid
            n += 1
        }
    }

    @Test("ID prefixes: at least 8 characters, more where two short IDs share 8 or more (like git), and each prefix resolves",
          arguments: WorklistBackend.all)
    func idPrefixes(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let (a, b) = Self.collidingUIDs()
        let (ida, idb) = (Study.shortID(for: a), Study.shortID(for: b))
        #expect(ida.prefix(9) == idb.prefix(9) && ida != idb)
        let shared = zip(ida, idb).prefix { $0 == $1 }.count
        for uid in [a, b, "1.2.998.1"] { try Self.triaged(store, uid, daysAgo: 0, probability: 0.3) }
        let prefixes = try store.shortIDPrefixes(of: nil, minimumLength: 8)
        #expect(try store.shortIDPrefixes(of: [ida, idb, Study.shortID(for: "1.2.998.1")], minimumLength: 8) == prefixes, "a page's prefixes are the same")
        #expect(try store.shortIDPrefixes(of: [ida], minimumLength: 8).prefix(of: ida) == prefixes.prefix(of: ida))
        #expect(prefixes.prefix(of: ida) == String(ida.prefix(shared + 1)))
        #expect(prefixes.prefix(of: idb) == String(idb.prefix(shared + 1)))
        #expect(prefixes.prefix(of: Study.shortID(for: "1.2.998.1")).count == 8)
        #expect(try store.study(handle: prefixes.prefix(of: ida)).studyInstanceUID == a)
        #expect(try store.study(handle: prefixes.prefix(of: idb)).studyInstanceUID == b)
        #expect(throws: WorklistError.self) { try store.study(handle: String(ida.prefix(8))) }
        let table = WorklistPresentation.table(try store.studies(matching: WorklistFilter()), colour: false, prefixes: prefixes)
        #expect(table.contains(String(ida.prefix(shared + 1)) + " ") && table.contains(String(idb.prefix(shared + 1)) + " "))
        #expect(table.split(separator: "\n").allSatisfy { $0.count <= 80 })
    }

    @Test("batched arrivals: the same outcomes as one by one", arguments: WorklistBackend.all)
    func batchedArrivals(_ backend: WorklistBackend) throws {
        let (dir, store) = try Self.fresh(backend)
        defer { withExtendedLifetime(dir) {} }
        let outcomes = try store.recordArrivals([Self.arrival("1.6.1", "1.6.1.1"), Self.arrival("1.6.1", "1.6.1.2"), Self.arrival("1.6.1", "1.6.1.1")])
        #expect(outcomes == [.newStudy, .addedToStudy, .duplicate])
        #expect(try store.study(studyInstanceUID: "1.6.1").imageCount == 2)
    }
}
