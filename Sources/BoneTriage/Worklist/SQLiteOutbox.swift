import Foundation
import GRDB

/// The outbox of `SQLiteWorklist`: tables `resultObject` and `resultDelivery` (migration v9).
extension SQLiteWorklist {
    // MARK: Queued with a verdict or a review (inside their transaction)

    /// The objects a triage needs, by destination (`ResultQueueing.queue`), each to be built and delivered
    /// by the study's triage node (the node recording the triage).
    static func queueResults(_ db: Database, studyID: Int64, study: Study, images: [StudyImage], destinations: [ResultDestination],
                             at: Date) throws {
        let queued = try ResultQueueing.queue(
            study: study, images: images, destinations: destinations,
            highestSeriesNumber: { try Int.fetchOne(db, sql: "SELECT max(seriesNumber) FROM resultObject WHERE studyID = ?", arguments: [studyID]) },
            latestReport: { try latestReportID(db, studyID: studyID) },
            insert: { kind, series, seriesNumber, instance, source, replaces in
                try insertObject(db, studyID: studyID, kind: kind, series: series, seriesNumber: seriesNumber, instance: instance, source: source,
                                 reviewID: nil, replacesID: replaces, node: study.triageNode, at: at)
            },
            deliver: { id, names in try insertDeliveries(db, objectID: id, destinations: names, at: at) })
        if queued { try refreshDeliveryMark(db, studyID: studyID) }
    }

    /// A review of a study that has a report: an updated report (same series, next instance) replacing
    /// the latest one, for the destinations that one was queued for, built and delivered by the study's
    /// triage node (the reviewer's process makes no file).
    static func queueUpdatedReport(_ db: Database, studyID: Int64, reviewID: Int64, at: Date) throws {
        guard let previous = try latestReportID(db, studyID: studyID),
              let row = try Row.fetchOne(db, sql: "SELECT seriesInstanceUID, seriesNumber, instanceNumber FROM resultObject WHERE id = ?",
                                         arguments: [previous]) else { return }
        let destinations = try String.fetchAll(db, sql: "SELECT destination FROM resultDelivery WHERE objectID = ? ORDER BY id", arguments: [previous])
        guard !destinations.isEmpty else { return }
        let series: String = row["seriesInstanceUID"], number: Int = row["seriesNumber"]
        let instance = (try Int.fetchOne(db, sql: "SELECT max(instanceNumber) FROM resultObject WHERE studyID = ? AND seriesInstanceUID = ?",
                                         arguments: [studyID, series]) ?? 0) + 1
        let triageNode = try String.fetchOne(db, sql: "SELECT triageNode FROM study WHERE id = ?", arguments: [studyID])
        let id = try insertObject(db, studyID: studyID, kind: .structuredReport, series: series, seriesNumber: number, instance: instance,
                                  source: nil, reviewID: reviewID, replacesID: previous, node: triageNode, at: at)
        try insertDeliveries(db, objectID: id, destinations: destinations, at: at)
        try refreshDeliveryMark(db, studyID: studyID)
    }

    /// A study triaged again, by `node`: its objects not built yet (no disk has their file) go with its
    /// triage, as they did before objects had a node; those built stay with the node that has their file.
    static func passUnbuiltResults(_ db: Database, studyID: Int64?, to node: String) throws {
        guard let studyID else { return }
        try db.execute(sql: "UPDATE resultObject SET node = ? WHERE studyID = ? AND filePath IS NULL AND buildProblem IS NULL",
                       arguments: [node, studyID])
    }

    /// The study's `deliveryMark` from its entries, after any change to them.
    static func refreshDeliveryMark(_ db: Database, studyID: Int64?) throws {
        guard let studyID else { return }
        let entries = try Row.fetchAll(db, sql: entrySelect + " WHERE o.studyID = ?", arguments: [studyID]).map(entry)
        try db.execute(sql: "UPDATE study SET deliveryMark = ? WHERE id = ?", arguments: [DeliveryMark.of(entries)?.rawValue, studyID])
    }

    static func studyID(_ db: Database, object sop: String) throws -> Int64? {
        try Int64.fetchOne(db, sql: "SELECT studyID FROM resultObject WHERE sopInstanceUID = ?", arguments: [sop])
    }

    static func studyID(_ db: Database, entry: String) throws -> Int64? {
        try Int64.fetchOne(db, sql: "SELECT o.studyID FROM resultDelivery d JOIN resultObject o ON o.id = d.objectID WHERE d.entryID = ?", arguments: [entry])
    }

    private static func latestReportID(_ db: Database, studyID: Int64) throws -> Int64? {
        try Int64.fetchOne(db, sql: "SELECT max(id) FROM resultObject WHERE studyID = ? AND kind = ?",
                           arguments: [studyID, ResultKind.structuredReport.rawValue])
    }

    private static func insertObject(_ db: Database, studyID: Int64, kind: ResultKind, series: String, seriesNumber: Int, instance: Int,
                                     source: String?, reviewID: Int64?, replacesID: Int64?, node: String?, at: Date) throws -> Int64 {
        try db.execute(sql: """
            INSERT INTO resultObject (studyID, kind, sopInstanceUID, seriesInstanceUID, seriesNumber, instanceNumber, sourceSOPInstanceUID,
                                      reviewID, replacesID, queuedAt, node)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, arguments: [studyID, kind.rawValue, DicomUID.make(), series, seriesNumber, instance, source, reviewID, replacesID, at, node])
        return db.lastInsertedRowID
    }

    private static func insertDeliveries(_ db: Database, objectID: Int64, destinations: [String], at: Date) throws {
        guard let sop = try String.fetchOne(db, sql: "SELECT sopInstanceUID FROM resultObject WHERE id = ?", arguments: [objectID]) else { return }
        for name in ResultQueueing.distinct(destinations) {
            try db.execute(sql: """
                INSERT INTO resultDelivery (objectID, entryID, destination, state, attempts, nextAttemptAt) VALUES (?, ?, ?, ?, 0, ?)
                """, arguments: [objectID, OutboxEntry.entryID(objectSOPInstanceUID: sop, destination: name), name,
                                 DeliveryState.pending.rawValue, at])
        }
    }

    // MARK: Reading the outbox

    /// The objects of the node given as its argument: its own, and those without a node (queued before
    /// objects had one) of a study it triaged last; an object of a study no node triaged is anyone's (a
    /// single node's, from before nodes were kept).
    static let ofNode = "(coalesce(o.node, s.triageNode) IS NULL OR coalesce(o.node, s.triageNode) = ?)"

    private static let objectSelect = """
        SELECT o.*, s.studyInstanceUID, s.shortID,
               r.reviewer AS r_reviewer, r.statedReviewer AS r_statedReviewer, r.reviewedAt AS r_reviewedAt, r.action AS r_action,
               r.fromVerdict AS r_fromVerdict, r.label AS r_label, r.note AS r_note,
               p.kind AS p_kind, p.sopInstanceUID AS p_sop, p.seriesInstanceUID AS p_series
        FROM resultObject o JOIN study s ON s.id = o.studyID
        LEFT JOIN review r ON r.id = o.reviewID
        LEFT JOIN resultObject p ON p.id = o.replacesID
        """

    private static let entrySelect = """
        SELECT d.*, o.kind, o.sopInstanceUID AS objectSOP, o.queuedAt, o.filePath, o.buildProblem, s.studyInstanceUID, s.shortID
        FROM resultDelivery d JOIN resultObject o ON o.id = d.objectID JOIN study s ON s.id = o.studyID
        """

    private static func object(_ db: Database, _ row: Row) throws -> ResultObject {
        var o = ResultObject(studyInstanceUID: row["studyInstanceUID"], shortID: row["shortID"], kind: try decodeEnum(row, "kind"),
                             sopInstanceUID: row["sopInstanceUID"], seriesInstanceUID: row["seriesInstanceUID"],
                             seriesNumber: row["seriesNumber"], instanceNumber: row["instanceNumber"], queuedAt: row["queuedAt"])
        o.sourceSOPInstanceUID = row["sourceSOPInstanceUID"]
        o.filePath = row["filePath"]
        o.builtAt = row["builtAt"]
        o.buildProblem = row["buildProblem"]
        o.fileRemovedAt = row["fileRemovedAt"]
        o.node = row["node"]
        if let reviewer: String = row["r_reviewer"] {
            o.review = Review(studyInstanceUID: o.studyInstanceUID, reviewer: reviewer, reviewedAt: row["r_reviewedAt"],
                              action: try decodeEnum(row, "r_action"), fromVerdict: try decodeOptionalEnum(row, "r_fromVerdict"),
                              label: try decodeEnum(row, "r_label"), note: row["r_note"], statedReviewer: row["r_statedReviewer"])
        }
        if let sop: String = row["p_sop"] {
            let kind: ResultKind = try decodeEnum(row, "p_kind")
            o.replaces = ReportedObject(sopClassUID: kind.sopClassUID, sopInstanceUID: sop, seriesInstanceUID: row["p_series"])
        }
        let id: Int64 = row["id"]
        o.deliveries = try Row.fetchAll(db, sql: entrySelect + " WHERE d.objectID = ? ORDER BY d.id", arguments: [id]).map(entry)
        return o
    }

    private static func entry(_ row: Row) throws -> OutboxEntry {
        var e = OutboxEntry(entryID: row["entryID"], studyInstanceUID: row["studyInstanceUID"], shortID: row["shortID"],
                            kind: try decodeEnum(row, "kind"), objectSOPInstanceUID: row["objectSOP"], destination: row["destination"],
                            state: try decodeEnum(row, "state"), attempts: row["attempts"], queuedAt: row["queuedAt"])
        e.nextAttemptAt = row["nextAttemptAt"]
        e.lastError = row["lastError"]
        e.deliveredAt = row["deliveredAt"]
        e.droppedBy = row["droppedBy"]
        e.droppedAt = row["droppedAt"]
        e.filePath = row["filePath"]
        e.buildProblem = row["buildProblem"]
        return e
    }

    public func resultObjects(ofStudy uid: String) throws -> [ResultObject] {
        try read { db in
            let study = try Self.studyRow(db, uid: uid)
            return try Row.fetchAll(db, sql: Self.objectSelect + " WHERE o.studyID = ? ORDER BY o.id", arguments: [study.id])
                .map { try Self.object(db, $0) }
        }
    }

    public func resultObjectsAwaitingBuild(limit: Int) throws -> [ResultObject] {
        try read { db in
            try Row.fetchAll(db, sql: Self.objectSelect + """
                 WHERE o.filePath IS NULL AND o.buildProblem IS NULL AND \(Self.ofNode) ORDER BY o.id LIMIT ?
                """, arguments: [node, limit]).map { try Self.object(db, $0) }
        }
    }

    @discardableResult
    public func recordResultBuilt(sopInstanceUID: String, filePath: String, at: Date) throws -> Bool {
        try write { db in
            // The file is on this node's disk, whoever the object was for (a re-triage elsewhere may have
            // passed it on while this node built it): this node delivers it, unless a node recorded its own first.
            try db.execute(sql: """
                UPDATE resultObject SET filePath = ?, builtAt = ?, buildProblem = NULL, node = ? WHERE sopInstanceUID = ? AND filePath IS NULL
                """, arguments: [filePath, at, node, sopInstanceUID])
            guard db.changesCount == 1 else {
                guard try Bool.fetchOne(db, sql: "SELECT 1 FROM resultObject WHERE sopInstanceUID = ?", arguments: [sopInstanceUID]) != nil else {
                    throw WorklistError.outboxEntryNotFound(entry: sopInstanceUID)
                }
                return false
            }
            try Self.refreshDeliveryMark(db, studyID: try Self.studyID(db, object: sopInstanceUID))
            return true
        }
    }

    public func recordResultBuildProblem(sopInstanceUID: String, reason: String, at: Date) throws {
        try write { db in
            try db.execute(sql: "UPDATE resultObject SET buildProblem = ?, builtAt = ? WHERE sopInstanceUID = ? AND filePath IS NULL",
                           arguments: [reason, at, sopInstanceUID])
            try Self.refreshDeliveryMark(db, studyID: try Self.studyID(db, object: sopInstanceUID))
        }
    }

    public func beginResultBuild(sopInstanceUID: String) throws -> Int {
        try write { db in
            try db.execute(sql: "UPDATE resultObject SET buildAttempts = buildAttempts + 1 WHERE sopInstanceUID = ?", arguments: [sopInstanceUID])
            guard let attempts = try Int.fetchOne(db, sql: "SELECT buildAttempts FROM resultObject WHERE sopInstanceUID = ?", arguments: [sopInstanceUID]) else {
                throw WorklistError.outboxEntryNotFound(entry: sopInstanceUID)
            }
            return attempts
        }
    }

    public func endResultBuild(sopInstanceUID: String) throws {
        try write { db in
            try db.execute(sql: "UPDATE resultObject SET buildAttempts = 0 WHERE sopInstanceUID = ?", arguments: [sopInstanceUID])
        }
    }

    public func deliveriesDue(at now: Date, limit: Int) throws -> [OutboxEntry] {
        try read { db in
            try Row.fetchAll(db, sql: Self.entrySelect + """
                 WHERE d.state = ? AND o.filePath IS NOT NULL AND (d.nextAttemptAt IS NULL OR d.nextAttemptAt <= ?)
                   AND \(Self.ofNode)
                 ORDER BY d.destination, d.nextAttemptAt, d.id LIMIT ?
                """, arguments: [DeliveryState.pending.rawValue, now, node, limit]).map(Self.entry)
        }
    }

    public func recordDeliveryAttempt(entryID: String, state: DeliveryState, message: String?, nextAttemptAt: Date?, at: Date) throws {
        try write { db in
            try db.execute(sql: """
                UPDATE resultDelivery SET state = ?, attempts = attempts + 1, lastError = ?, nextAttemptAt = ?,
                       deliveredAt = CASE WHEN ? THEN ? ELSE deliveredAt END
                WHERE entryID = ? AND state = ?
                """, arguments: [state.rawValue, message, state == .pending ? nextAttemptAt : nil, state == .delivered, at, entryID,
                                 DeliveryState.pending.rawValue])
            try Self.refreshDeliveryMark(db, studyID: try Self.studyID(db, entry: entryID))
        }
    }

    public func outboxEntries(includeDelivered: Bool) throws -> [OutboxEntry] {
        try read { db in
            let filter = includeDelivered ? "" : " WHERE d.state NOT IN ('delivered', 'dropped')"
            return try Row.fetchAll(db, sql: Self.entrySelect + filter + " ORDER BY o.queuedAt, d.id").map(Self.entry)
        }
    }

    public func retryDeliveries(entryIDs: [String], at: Date) throws -> [OutboxEntry] {
        try write { db in
            try entryIDs.map { handle in
                let e = try Self.resolveEntry(db, handle)
                try e.requireUnfinished()
                try db.execute(sql: "UPDATE resultDelivery SET state = ?, nextAttemptAt = ? WHERE entryID = ?",
                               arguments: [DeliveryState.pending.rawValue, at, e.entryID])
                try Self.refreshDeliveryMark(db, studyID: try Self.studyID(db, entry: e.entryID))
                return try Self.resolveEntry(db, e.entryID)
            }
        }
    }

    public func retryRefusedDeliveries(at: Date) throws -> [OutboxEntry] {
        try write { db in
            let ids = try String.fetchAll(db, sql: "SELECT entryID FROM resultDelivery WHERE state = ? ORDER BY id",
                                          arguments: [DeliveryState.refused.rawValue])
            try db.execute(sql: "UPDATE resultDelivery SET state = ?, nextAttemptAt = ? WHERE state = ?",
                           arguments: [DeliveryState.pending.rawValue, at, DeliveryState.refused.rawValue])
            for id in ids { try Self.refreshDeliveryMark(db, studyID: try Self.studyID(db, entry: id)) }
            return try ids.map { try Self.resolveEntry(db, $0) }
        }
    }

    public func dropDeliveries(entryIDs: [String], by user: String, at: Date) throws -> [OutboxEntry] {
        try write { db in
            try entryIDs.map { handle in
                let e = try Self.resolveEntry(db, handle)
                try e.requireUnfinished()
                try db.execute(sql: "UPDATE resultDelivery SET state = ?, nextAttemptAt = NULL, droppedBy = ?, droppedAt = ? WHERE entryID = ?",
                               arguments: [DeliveryState.dropped.rawValue, user, at, e.entryID])
                try Self.refreshDeliveryMark(db, studyID: try Self.studyID(db, entry: e.entryID))
                return try Self.resolveEntry(db, e.entryID)
            }
        }
    }

    /// An entry by its ID or a unique prefix of it (at least 4 hex digits).
    private static func resolveEntry(_ db: Database, _ handle: String) throws -> OutboxEntry {
        guard let range = OutboxEntry.handleRange(handle) else { throw WorklistError.outboxEntryNotFound(entry: handle) }
        let rows = try Row.fetchAll(db, sql: entrySelect + " WHERE d.entryID >= ? AND d.entryID < ? ORDER BY d.entryID LIMIT 6",
                                    arguments: [range.lower, range.upper])
        guard let first = rows.first else { throw WorklistError.outboxEntryNotFound(entry: handle) }
        guard rows.count == 1 else { throw WorklistError.ambiguousOutboxEntry(entry: handle, candidates: rows.map { $0["entryID"] }) }
        return try entry(first)
    }
}
