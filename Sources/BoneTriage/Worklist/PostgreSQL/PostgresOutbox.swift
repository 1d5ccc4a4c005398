import Foundation

/// The outbox of `PostgresWorklist`: tables `resultObject` and `resultDelivery` (migration v9), with the
/// same behaviour as the SQLite worklist's. A change to a study's entries locks the study's row before its
/// delivery mark is computed again, so two processes updating entries of one study never leave a stale mark.
extension PostgresWorklist {
    // MARK: Queued with a verdict or a review (inside their transaction, the study locked)

    /// The objects a triage needs, by destination (`ResultQueueing.queue`), each to be built and delivered
    /// by the study's triage node (the node recording the triage); returns the study's new delivery mark
    /// when something was queued.
    static func queueResults(_ c: PostgresConnection, studyID: Int64, study: Study, images: [StudyImage], destinations: [ResultDestination],
                             at: Date) throws -> DeliveryMark? {
        let queued = try ResultQueueing.queue(
            study: study, images: images, destinations: destinations,
            highestSeriesNumber: { try c.execute("SELECT max(seriesNumber) FROM resultObject WHERE studyID = $1", [studyID]).first?.integer(0) },
            latestReport: { try latestReportID(c, studyID: studyID) },
            insert: { kind, series, seriesNumber, instance, source, replaces in
                try insertObject(c, studyID: studyID, kind: kind, series: series, seriesNumber: seriesNumber, instance: instance, source: source,
                                 reviewID: nil, replacesID: replaces, node: study.triageNode, at: at)
            },
            deliver: { id, names in try insertDeliveries(c, objectID: id, destinations: names, at: at) })
        return queued ? try refreshDeliveryMark(c, studyID: studyID) : nil
    }

    /// A review of a study that has a report: an updated report (same series, next instance) replacing
    /// the latest one, for the destinations that one was queued for, built and delivered by the study's
    /// triage node (the reviewer's process makes no file).
    static func queueUpdatedReport(_ c: PostgresConnection, studyID: Int64, reviewID: Int64, at: Date) throws {
        guard let previous = try latestReportID(c, studyID: studyID),
              let row = try c.execute("SELECT seriesInstanceUID, seriesNumber FROM resultObject WHERE id = $1", [previous]).first else { return }
        let destinations = try c.execute("SELECT destination FROM resultDelivery WHERE objectID = $1 ORDER BY id", [previous]).rows.compactMap { $0.text(0) }
        guard !destinations.isEmpty else { return }
        let series = try row.required(0, "seriesInstanceUID", row.text), number = try row.required(1, "seriesNumber", row.integer)
        let instance = (try c.execute("SELECT max(instanceNumber) FROM resultObject WHERE studyID = $1 AND seriesInstanceUID = $2",
                                      [studyID, series]).first?.integer(0) ?? 0) + 1
        let triageNode = try c.execute("SELECT triageNode FROM study WHERE id = $1", [studyID]).first?.text(0)
        let id = try insertObject(c, studyID: studyID, kind: .structuredReport, series: series, seriesNumber: number, instance: instance,
                                  source: nil, reviewID: reviewID, replacesID: previous, node: triageNode, at: at)
        try insertDeliveries(c, objectID: id, destinations: destinations, at: at)
        _ = try refreshDeliveryMark(c, studyID: studyID)
    }

    /// A study triaged again, by `node`: its objects not built yet (no disk has their file) go with its
    /// triage, as they did before objects had a node; those built stay with the node that has their file.
    static func passUnbuiltResults(_ c: PostgresConnection, studyID: Int64, to node: String) throws {
        try c.execute("UPDATE resultObject SET node = $1 WHERE studyID = $2 AND filePath IS NULL AND buildProblem IS NULL", [node, studyID])
    }

    /// The study's `deliveryMark` from its entries, after any change to them; the study row is locked first.
    @discardableResult
    static func refreshDeliveryMark(_ c: PostgresConnection, studyID: Int64?) throws -> DeliveryMark? {
        guard let studyID else { return nil }
        try c.execute("SELECT 1 FROM study WHERE id = $1 FOR UPDATE", [studyID])
        let entries = try c.execute(entrySelect + " WHERE o.studyID = $1", [studyID]).rows.map(entry)
        let mark = DeliveryMark.of(entries)
        try c.execute("UPDATE study SET deliveryMark = $1 WHERE id = $2", [mark?.rawValue, studyID])
        return mark
    }

    static func studyID(_ c: PostgresConnection, object sop: String) throws -> Int64? {
        try c.execute("SELECT studyID FROM resultObject WHERE sopInstanceUID = $1", [sop]).first?.integer(0).map(Int64.init)
    }

    static func studyID(_ c: PostgresConnection, entry: String) throws -> Int64? {
        try c.execute("SELECT o.studyID FROM resultDelivery d JOIN resultObject o ON o.id = d.objectID WHERE d.entryID = $1", [entry])
            .first?.integer(0).map(Int64.init)
    }

    private static func latestReportID(_ c: PostgresConnection, studyID: Int64) throws -> Int64? {
        try c.execute("SELECT max(id) FROM resultObject WHERE studyID = $1 AND kind = $2", [studyID, ResultKind.structuredReport.rawValue])
            .first?.integer(0).map(Int64.init)
    }

    private static func insertObject(_ c: PostgresConnection, studyID: Int64, kind: ResultKind, series: String, seriesNumber: Int, instance: Int,
                                     source: String?, reviewID: Int64?, replacesID: Int64?, node: String?, at: Date) throws -> Int64 {
        let row = try c.execute("""
            INSERT INTO resultObject (studyID, kind, sopInstanceUID, seriesInstanceUID, seriesNumber, instanceNumber, sourceSOPInstanceUID,
                                      reviewID, replacesID, queuedAt, node)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id
            """, [studyID, kind.rawValue, DicomUID.make(), series, seriesNumber, instance, source, reviewID, replacesID, at, node]).first
        guard let id = try row?.integer(0) else { throw StoredValueError(column: "resultObject.id", value: nil) }
        return Int64(id)
    }

    private static func insertDeliveries(_ c: PostgresConnection, objectID: Int64, destinations: [String], at: Date) throws {
        guard let sop = try c.execute("SELECT sopInstanceUID FROM resultObject WHERE id = $1", [objectID]).first?.text(0) else { return }
        for name in ResultQueueing.distinct(destinations) {
            try c.execute("""
                INSERT INTO resultDelivery (objectID, entryID, destination, state, attempts, nextAttemptAt) VALUES ($1, $2, $3, $4, 0, $5)
                """, [objectID, OutboxEntry.entryID(objectSOPInstanceUID: sop, destination: name), name, DeliveryState.pending.rawValue, at])
        }
    }

    // MARK: Reading the outbox

    /// The objects of the node given as parameter `$n`: its own, and those without a node (queued before
    /// objects had one) of a study it triaged last; an object of a study no node triaged is anyone's (a
    /// single node's, from before nodes were kept).
    static func ofNode(_ n: Int) -> String {
        "(coalesce(o.node, s.triageNode) IS NULL OR coalesce(o.node, s.triageNode) = $\(n))"
    }

    private static let objectSelect = """
        SELECT o.id, o.kind, o.sopInstanceUID, o.seriesInstanceUID, o.seriesNumber, o.instanceNumber, o.sourceSOPInstanceUID, o.queuedAt,
               o.filePath, o.builtAt, o.buildProblem, o.fileRemovedAt, s.studyInstanceUID, s.shortID,
               s.studyInstanceUID, r.reviewer, r.reviewedAt, r.action, r.fromVerdict, r.label, r.note, r.statedReviewer,
               p.kind, p.sopInstanceUID, p.seriesInstanceUID, o.node
        FROM resultObject o JOIN study s ON s.id = o.studyID
        LEFT JOIN review r ON r.id = o.reviewID
        LEFT JOIN resultObject p ON p.id = o.replacesID
        """

    private static let entrySelect = """
        SELECT d.entryID, s.studyInstanceUID, s.shortID, o.kind, o.sopInstanceUID, d.destination, d.state, d.attempts, o.queuedAt,
               d.nextAttemptAt, d.lastError, d.deliveredAt, d.droppedBy, d.droppedAt, o.filePath, o.buildProblem, d.objectID
        FROM resultDelivery d JOIN resultObject o ON o.id = d.objectID JOIN study s ON s.id = o.studyID
        """

    private static func object(_ r: PostgresRow, deliveries: [Int64: [OutboxEntry]]) throws -> ResultObject {
        var o = ResultObject(studyInstanceUID: try r.required(12, "studyInstanceUID", r.text), shortID: try r.required(13, "shortID", r.text),
                             kind: try r.requiredChoice(1, "kind"), sopInstanceUID: try r.required(2, "sopInstanceUID", r.text),
                             seriesInstanceUID: try r.required(3, "seriesInstanceUID", r.text), seriesNumber: try r.required(4, "seriesNumber", r.integer),
                             instanceNumber: try r.required(5, "instanceNumber", r.integer), queuedAt: try r.required(7, "queuedAt", r.date))
        o.sourceSOPInstanceUID = r.text(6)
        o.filePath = r.text(8)
        o.builtAt = try r.date(9)
        o.buildProblem = r.text(10)
        o.fileRemovedAt = try r.date(11)
        o.node = r.text(25)
        if r.text(15) != nil { o.review = try review(r, from: 14) }
        if let sop = r.text(23) {
            let kind: ResultKind = try r.requiredChoice(22, "kind")
            o.replaces = ReportedObject(sopClassUID: kind.sopClassUID, sopInstanceUID: sop, seriesInstanceUID: try r.required(24, "seriesInstanceUID", r.text))
        }
        o.deliveries = deliveries[Int64(try r.required(0, "id", r.integer))] ?? []
        return o
    }

    private static func entry(_ r: PostgresRow) throws -> OutboxEntry {
        var e = OutboxEntry(entryID: try r.required(0, "entryID", r.text), studyInstanceUID: try r.required(1, "studyInstanceUID", r.text),
                            shortID: try r.required(2, "shortID", r.text), kind: try r.requiredChoice(3, "kind"),
                            objectSOPInstanceUID: try r.required(4, "sopInstanceUID", r.text), destination: try r.required(5, "destination", r.text),
                            state: try r.requiredChoice(6, "state"), attempts: try r.required(7, "attempts", r.integer),
                            queuedAt: try r.required(8, "queuedAt", r.date))
        e.nextAttemptAt = try r.date(9)
        e.lastError = r.text(10)
        e.deliveredAt = try r.date(11)
        e.droppedBy = r.text(12)
        e.droppedAt = try r.date(13)
        e.filePath = r.text(14)
        e.buildProblem = r.text(15)
        return e
    }

    /// Objects with their deliveries (one query for the objects, one for their entries).
    private static func objects(_ c: PostgresConnection, where condition: String, _ parameters: [(any PostgresParameter)?]) throws -> [ResultObject] {
        let rows = try c.execute(objectSelect + condition, parameters).rows
        let ids = try rows.map { Int64(try $0.required(0, "id", $0.integer)) }
        var deliveries: [Int64: [OutboxEntry]] = [:]
        if !ids.isEmpty {
            let list = "{" + ids.map(String.init).joined(separator: ",") + "}"
            for row in try c.execute(entrySelect + " WHERE d.objectID = ANY($1::bigint[]) ORDER BY d.id", [list]).rows {
                deliveries[Int64(try row.required(16, "objectID", row.integer)), default: []].append(try entry(row))
            }
        }
        return try rows.map { try object($0, deliveries: deliveries) }
    }

    public func resultObjects(ofStudy uid: String) throws -> [ResultObject] {
        try read { c in
            let study = try Self.studyRow(c, uid: uid)
            return try Self.objects(c, where: " WHERE o.studyID = $1 ORDER BY o.id", [study.id])
        }
    }

    public func resultObjectsAwaitingBuild(limit: Int) throws -> [ResultObject] {
        try read { c in
            try Self.objects(c, where: " WHERE o.filePath IS NULL AND o.buildProblem IS NULL AND \(Self.ofNode(2)) ORDER BY o.id LIMIT $1",
                             [limit, node])
        }
    }

    /// Locks the study of an object before the object is changed: a triage (which passes the study's
    /// unbuilt objects on) locks the study, then its objects, so a build recorded at the same time must
    /// take them in that order too.
    private static func lockedStudyID(_ c: PostgresConnection, object sop: String) throws -> Int64? {
        try c.execute("SELECT s.id FROM study s JOIN resultObject o ON o.studyID = s.id WHERE o.sopInstanceUID = $1 FOR UPDATE OF s", [sop])
            .first?.integer(0).map(Int64.init)
    }

    @discardableResult
    public func recordResultBuilt(sopInstanceUID: String, filePath: String, at: Date) throws -> Bool {
        try write { c in
            guard let studyID = try Self.lockedStudyID(c, object: sopInstanceUID) else { throw WorklistError.outboxEntryNotFound(entry: sopInstanceUID) }
            // The file is on this node's disk, whoever the object was for (a re-triage elsewhere may have
            // passed it on while this node built it): this node delivers it, unless a node recorded its own first.
            let changed = try c.execute("""
                UPDATE resultObject SET filePath = $1, builtAt = $2, buildProblem = NULL, node = $4 WHERE sopInstanceUID = $3 AND filePath IS NULL
                """, [filePath, at, sopInstanceUID, node]).affected
            guard changed == 1 else { return false }
            try Self.refreshDeliveryMark(c, studyID: studyID)
            return true
        }
    }

    public func recordResultBuildProblem(sopInstanceUID: String, reason: String, at: Date) throws {
        try write { c in
            let studyID = try Self.lockedStudyID(c, object: sopInstanceUID)
            try c.execute("UPDATE resultObject SET buildProblem = $1, builtAt = $2 WHERE sopInstanceUID = $3 AND filePath IS NULL",
                          [reason, at, sopInstanceUID])
            try Self.refreshDeliveryMark(c, studyID: studyID)
        }
    }

    public func beginResultBuild(sopInstanceUID: String) throws -> Int {
        try write { c in
            guard let attempts = try c.execute("UPDATE resultObject SET buildAttempts = buildAttempts + 1 WHERE sopInstanceUID = $1 RETURNING buildAttempts",
                                               [sopInstanceUID]).first?.integer(0) else {
                throw WorklistError.outboxEntryNotFound(entry: sopInstanceUID)
            }
            return attempts
        }
    }

    public func endResultBuild(sopInstanceUID: String) throws {
        try write { c in try c.execute("UPDATE resultObject SET buildAttempts = 0 WHERE sopInstanceUID = $1", [sopInstanceUID]) }
    }

    public func deliveriesDue(at now: Date, limit: Int) throws -> [OutboxEntry] {
        try read { c in
            try c.execute(Self.entrySelect + """
                 WHERE d.state = $1 AND o.filePath IS NOT NULL AND (d.nextAttemptAt IS NULL OR d.nextAttemptAt <= $2)
                   AND \(Self.ofNode(4))
                 ORDER BY d.destination, d.nextAttemptAt NULLS FIRST, d.id LIMIT $3
                """, [DeliveryState.pending.rawValue, now, limit, node]).rows.map(Self.entry)
        }
    }

    public func recordDeliveryAttempt(entryID: String, state: DeliveryState, message: String?, nextAttemptAt: Date?, at: Date) throws {
        try write { c in
            try c.execute("""
                UPDATE resultDelivery SET state = $1, attempts = attempts + 1, lastError = $2, nextAttemptAt = $3::timestamptz,
                       deliveredAt = CASE WHEN $4::boolean THEN $5::timestamptz ELSE deliveredAt END
                WHERE entryID = $6 AND state = $7
                """, [state.rawValue, message, state == .pending ? nextAttemptAt : nil, state == .delivered, at, entryID, DeliveryState.pending.rawValue])
            try Self.refreshDeliveryMark(c, studyID: try Self.studyID(c, entry: entryID))
        }
    }

    public func outboxEntries(includeDelivered: Bool) throws -> [OutboxEntry] {
        try read { c in
            let filter = includeDelivered ? "" : " WHERE d.state NOT IN ('delivered', 'dropped')"
            return try c.execute(Self.entrySelect + filter + " ORDER BY o.queuedAt, d.id").rows.map(Self.entry)
        }
    }

    public func retryDeliveries(entryIDs: [String], at: Date) throws -> [OutboxEntry] {
        try write { c in
            try entryIDs.map { handle in
                let e = try Self.resolveEntry(c, handle)
                try e.requireUnfinished()
                try c.execute("UPDATE resultDelivery SET state = $1, nextAttemptAt = $2 WHERE entryID = $3", [DeliveryState.pending.rawValue, at, e.entryID])
                try Self.refreshDeliveryMark(c, studyID: try Self.studyID(c, entry: e.entryID))
                return try Self.resolveEntry(c, e.entryID)
            }
        }
    }

    public func retryRefusedDeliveries(at: Date) throws -> [OutboxEntry] {
        try write { c in
            let ids = try c.execute("""
                UPDATE resultDelivery SET state = $1, nextAttemptAt = $2 WHERE state = $3 RETURNING id, entryID
                """, [DeliveryState.pending.rawValue, at, DeliveryState.refused.rawValue]).rows
                .map { (id: try $0.integer(0) ?? 0, entry: $0.text(1) ?? "") }.sorted { $0.id < $1.id }.map(\.entry)
            for id in ids { try Self.refreshDeliveryMark(c, studyID: try Self.studyID(c, entry: id)) }
            return try ids.map { try Self.resolveEntry(c, $0) }
        }
    }

    public func dropDeliveries(entryIDs: [String], by user: String, at: Date) throws -> [OutboxEntry] {
        try write { c in
            try entryIDs.map { handle in
                let e = try Self.resolveEntry(c, handle)
                try e.requireUnfinished()
                try c.execute("UPDATE resultDelivery SET state = $1, nextAttemptAt = NULL, droppedBy = $2, droppedAt = $3 WHERE entryID = $4",
                              [DeliveryState.dropped.rawValue, user, at, e.entryID])
                try Self.refreshDeliveryMark(c, studyID: try Self.studyID(c, entry: e.entryID))
                return try Self.resolveEntry(c, e.entryID)
            }
        }
    }

    /// An entry by its ID or a unique prefix of it (at least 4 hex digits).
    private static func resolveEntry(_ c: PostgresConnection, _ handle: String) throws -> OutboxEntry {
        guard let range = OutboxEntry.handleRange(handle) else { throw WorklistError.outboxEntryNotFound(entry: handle) }
        let rows = try c.execute(entrySelect + " WHERE d.entryID >= $1 AND d.entryID < $2 ORDER BY d.entryID LIMIT 6", [range.lower, range.upper]).rows
        guard let first = rows.first else { throw WorklistError.outboxEntryNotFound(entry: handle) }
        guard rows.count == 1 else { throw WorklistError.ambiguousOutboxEntry(entry: handle, candidates: rows.compactMap { $0.text(0) }) }
        return try entry(first)
    }
}
