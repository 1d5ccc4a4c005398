import Foundation

// What both stores decide the same way around their SQL: which result objects a verdict queues and in
// which series, when an outbox entry may still be retried or dropped, how a stored heatmap reads back,
// and how retention's rows group into studies. Each backend runs its own statements through the closures.

/// The result objects a triage queues (the outbox, issue 13), whatever keeps them.
enum ResultQueueing {
    /// Series numbers of result series start here, above any a modality uses in practice.
    static let seriesNumberBase = 9001

    /// The next free result series number after the study's highest (nil: none yet).
    static func nextSeriesNumber(after highest: Int?) -> Int { highest.map { $0 + 1 } ?? seriesNumberBase }

    /// A report and a Secondary Capture series, each for the destinations that take its kind and this
    /// verdict; a DICOM study only (classified images with a SOP Class UID). `insert` stores one object
    /// (kind, series UID, series number, instance number, source image, the report it replaces) and
    /// returns its id; `deliver` queues it for destinations. Returns whether anything was queued.
    static func queue<ID>(study: Study, images: [StudyImage], destinations: [ResultDestination], highestSeriesNumber: () throws -> Int?,
                          latestReport: () throws -> ID?,
                          insert: (_ kind: ResultKind, _ series: String, _ seriesNumber: Int, _ instance: Int, _ source: String?, _ replaces: ID?) throws -> ID,
                          deliver: (_ object: ID, _ destinations: [String]) throws -> Void) throws -> Bool {
        guard let verdict = study.verdict, !destinations.isEmpty else { return false }
        let classified = images.filter { $0.probability != nil && $0.sopClassUID != nil }
        guard !classified.isEmpty else { return false }
        func wanting(_ kind: ResultKind) -> [String] {
            destinations.filter { $0.kinds.contains(kind) && ($0.verdicts == .all || verdict == .abnormal) }.map(\.name)
        }
        var nextSeries = nextSeriesNumber(after: try highestSeriesNumber())
        let reportTo = wanting(.structuredReport)
        if !reportTo.isEmpty {
            let id = try insert(.structuredReport, DicomUID.make(), nextSeries, 1, nil, try latestReport())
            try deliver(id, reportTo)
            nextSeries += 1
        }
        let captureTo = wanting(.secondaryCapture)
        if !captureTo.isEmpty {
            let series = DicomUID.make()
            for (n, image) in classified.enumerated() {
                try deliver(try insert(.secondaryCapture, series, nextSeries, n + 1, image.sopInstanceUID, nil), captureTo)
            }
        }
        return true
    }

    /// Each destination once, in the order given.
    static func distinct(_ destinations: [String]) -> [String] {
        var seen = Set<String>()
        return destinations.filter { seen.insert($0).inserted }
    }
}

/// How a node's claim on a study's triage is decided, on the study locked by the caller's transaction.
enum TriageClaims {
    /// Refused while another node holds an open claim; nothing to do when the study's outcome stands (a
    /// new instance would have put it back to receiving): then this node's own stale claim is `close`d.
    /// Otherwise `begin` opens (or, after this node died during it, reopens and counts) this node's claim.
    static func claim(state: StudyState, existing: TriageInProgress?, node: String, close: () throws -> Void,
                      begin: () throws -> Int) throws -> TriageClaim {
        if let existing, existing.node != node { return .heldBy(node: existing.node, since: existing.startedAt) }
        if state == .triaged || state == .notApplicable || state == .failed {
            if existing != nil { try close() }
            return .alreadyDone(state: state)
        }
        return .claimed(attempts: try begin())
    }
}

extension OutboxEntry {
    /// A retry or a drop applies to an entry still on its way: a delivered or dropped one is finished.
    func requireUnfinished() throws {
        if state == .delivered || state == .dropped { throw WorklistError.outboxEntryFinished(entry: entryID, state: state) }
    }

    /// A handle of an entry (its ID or a prefix of at least 4 hex digits), lowercased, with the range of
    /// entry IDs it covers; nil when it cannot name an entry.
    static func handleRange(_ handle: String) -> (lower: String, upper: String)? {
        let h = handle.lowercased()
        guard h.count >= 4, h.allSatisfy({ $0.isHexDigit }) else { return nil }
        return (h, h + "g")
    }
}

extension StoredHeatmap {
    /// A heatmap row read back: the values when it holds a grid (which must hold rows x columns values),
    /// else why none could be made. Throws `StoredValueError` for a grid that does not hold its values.
    init(stored sopInstanceUID: String, fingerprint: String, madeAt: Date, values data: Data?, rows: Int?, columns: Int?, method: String?,
         problem: String?) throws {
        if let data, let rows, let columns {
            guard let values = Heatmap.values(stored: data, rows: rows, columns: columns) else {
                throw StoredValueError(column: "heatmapValues", value: "\(data.count) bytes, not \(rows) x \(columns) values of \(sopInstanceUID)")
            }
            let heatmap = Heatmap(rows: rows, columns: columns, values: values, method: method ?? "", modelFingerprint: fingerprint)
            self.init(sopInstanceUID: sopInstanceUID, outcome: .made(heatmap), madeAt: madeAt)
        } else {
            self.init(sopInstanceUID: sopInstanceUID, outcome: .notMade(reason: problem ?? "not made", modelFingerprint: fingerprint), madeAt: madeAt)
        }
    }
}

extension FinishedStudyFiles {
    /// Retention's rows (study, short ID, finished at, one file), in order, grouped by study.
    static func grouping(_ rows: some Sequence<(uid: String, shortID: String, finishedAt: Date, path: String)>) -> [FinishedStudyFiles] {
        var studies: [FinishedStudyFiles] = []
        for row in rows {
            if studies.last?.studyInstanceUID == row.uid {
                studies[studies.count - 1].paths.append(row.path)
            } else {
                studies.append(FinishedStudyFiles(studyInstanceUID: row.uid, shortID: row.shortID, finishedAt: row.finishedAt, paths: [row.path]))
            }
        }
        return studies
    }

    /// The paths under a folder as a half-open range of sorted paths ("/spool/" up to "/spool0": "0" follows "/").
    static func folderRange(_ folder: String) -> (prefix: String, upper: String) {
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        return (prefix, String(prefix.dropLast()) + "0")
    }
}
