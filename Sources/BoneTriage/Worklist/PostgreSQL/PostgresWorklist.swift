import Foundation

/// The worklist in a PostgreSQL database, shared by several `bonetriage serve` nodes and many readers.
///
/// Concurrency: every writing transaction runs at READ COMMITTED and first locks the rows it reads and
/// then writes: the study's row (`SELECT ... FOR UPDATE`) is the meeting point of everything that changes
/// a study (arrivals, state changes, triage, reviews, heatmap counts, the outbox's delivery mark), so two
/// processes changing one study take turns and the second reads what the first committed. A new study or
/// image is inserted with `ON CONFLICT DO NOTHING`, so two nodes receiving the same study (or the same
/// instance) at once end with one row. READ COMMITTED plus row locks rather than SERIALIZABLE: writers of
/// different studies never wait for each other nor fail, and no transaction has to be retried in the
/// normal course; a deadlock (SQLSTATE 40P01, possible only when one command locks several studies in
/// opposite orders) or a serialization failure rolls the transaction back and runs it again
/// (`PostgresConnection.transaction`). Readers use one REPEATABLE READ READ ONLY snapshot per call.
public final class PostgresWorklist: WorklistStore {
    /// The server as host:port/database, for messages (never the password).
    public let server: String
    public let node: String
    let pool: PostgresPool

    /// Connects to the database (a libpq connection string or `postgresql://` URI) and checks its schema:
    /// with `migrate` (the daemon) a missing or older schema is created or upgraded in place; without, an
    /// older one is an error that says the daemon upgrades it. A database written by a newer BoneTriage
    /// is refused either way.
    /// `node`: the name this process records its files and triages under (`[worklist] node`).
    public init(connection conninfo: String, migrate: Bool, node: String = WorklistNode.local) throws {
        self.node = node
        pool = PostgresPool(conninfo: conninfo)
        server = WorklistLocation.postgresql(connection: conninfo).description
        try Self.mapErrors(server) { try PostgresSchema.prepare(pool, server: server, upgrade: migrate) }
    }

    static func mapErrors<T>(_ server: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as WorklistError {
            throw error
        } catch let error as PostgresError where error.connectionLost {
            throw WorklistError.databaseUnreachable(server: server, reason: error.message, sqlState: error.sqlState)
        } catch let error as PostgresError where error.sqlState == "42501" {
            throw WorklistError.databaseRefused(server: server, reason: error.message)
        } catch let error as PostgresError {
            throw WorklistError.databaseUnusable(path: server, reason: error.description)
        } catch let error as StoredValueError {
            throw WorklistError.databaseUnusable(path: server, reason: error.description)
        }
    }

    func write<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try Self.mapErrors(server) { try pool.withConnection { c in try c.transaction(.readCommitted, body) } }
    }

    func read<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try Self.mapErrors(server) { try pool.withConnection { c in try c.transaction(.snapshot, body) } }
    }

    // MARK: Rows

    static let studyColumns = StoredStudy.columns.joined(separator: ", ")
    static let studySelect = "SELECT " + studyColumns + " FROM study"

    /// A study row and its id.
    struct StudyRow {
        var id: Int64
        var study: Study
        init(_ row: PostgresRow) throws {
            id = Int64(try row.required(0, "id", row.integer))
            study = try Study(stored: row)
        }
    }

    /// The study, locked for the rest of the transaction (every writer of a study goes through here).
    static func lockedStudy(_ c: PostgresConnection, uid: String) throws -> StudyRow {
        guard let row = try c.execute(studySelect + " WHERE studyInstanceUID = $1 FOR UPDATE", [uid]).first else {
            throw WorklistError.studyNotFound(handle: uid)
        }
        return try StudyRow(row)
    }

    static func studyRow(_ c: PostgresConnection, uid: String) throws -> StudyRow {
        guard let row = try c.execute(studySelect + " WHERE studyInstanceUID = $1", [uid]).first else { throw WorklistError.studyNotFound(handle: uid) }
        return try StudyRow(row)
    }

    /// Writes every column of a study, with what the worklist's orders use (`StudyRules`, via `Study`).
    static func update(_ c: PostgresConnection, _ row: StudyRow) throws {
        let s = row.study
        try c.execute("""
            UPDATE study SET patientID = $2, patientName = $3, accessionNumber = $4, studyDate = $5, modality = $6, bodyPart = $7,
                studyDescription = $8, source = $9, callingAETitle = $10, peerAddress = $11, firstReceivedAt = $12, lastReceivedAt = $13,
                imageCount = $14, eligibleImageCount = $15, state = $16, stateReason = $17, probability = $18, verdict = $19, threshold = $20,
                modelID = $21, modelHash = $22, triagedAt = $23, priority = $24, reviewState = $25, reviewLabel = $26, reviewedAt = $27,
                changedAfterReview = $28, characterSetNote = $29, deliveryMark = $30, flagged = $31, worklistTier = $32, rankWithinDay = $33,
                arrivalDay = $34, triageNode = $35, operatingPoint = $36
            WHERE id = $1
            """, [row.id, s.patientID, s.patientName, s.accessionNumber, s.studyDate, s.modality, s.bodyPart, s.studyDescription, s.source.rawValue,
                  s.callingAETitle, s.peerAddress, s.firstReceivedAt, s.lastReceivedAt, s.imageCount, s.eligibleImageCount, s.state.rawValue,
                  s.stateReason, s.probability, s.verdict?.rawValue, s.threshold, s.modelID, s.modelHash, s.triagedAt, s.priority,
                  s.reviewState.rawValue, s.reviewLabel?.rawValue, s.reviewedAt, s.changedAfterReview, s.characterSetNote,
                  s.deliveryMark?.rawValue, s.isFlagged, s.tier.rawValue, s.rankWithinDay, s.arrivalDay, s.triageNode, s.operatingPoint])
    }

    /// The columns a review changes (`Study.review`): all a reviewer's database role may update (see
    /// `PostgresRoles`), so that a radiologist's login can never change what the model found.
    static func updateReview(_ c: PostgresConnection, _ row: StudyRow) throws {
        let s = row.study
        try c.execute("""
            UPDATE study SET reviewState = $2, reviewLabel = $3, reviewedAt = $4, changedAfterReview = $5, flagged = $6, worklistTier = $7,
                rankWithinDay = $8
            WHERE id = $1
            """, [row.id, s.reviewState.rawValue, s.reviewLabel?.rawValue, s.reviewedAt, s.changedAfterReview, s.isFlagged, s.tier.rawValue,
                  s.rankWithinDay])
    }

    static let imageColumns = """
        SELECT i.id, s.studyInstanceUID, i.sopInstanceUID, i.seriesInstanceUID, i.filePath, i.receivedAt, i.eligible, i.eligibilityReason,
               i.probability, i.fileRemovedAt, i.seriesNumber, i.instanceNumber, i.viewPosition, i.laterality, i.fileName, i.sopClassUID, i.node
        """
    static let imageSelect = imageColumns + ", NULL, NULL, NULL FROM image i JOIN study s ON s.id = i.studyID"

    /// As `imageSelect`, with a node's own copy (the node is parameter `$n`) in place of the image's file
    /// where it kept one: for reading only, never written back.
    static func localImageSelect(node n: Int) -> String {
        imageColumns + """
            , c.node, c.filePath, c.fileRemovedAt
            FROM image i JOIN study s ON s.id = i.studyID LEFT JOIN imageCopy c ON c.imageID = i.id AND c.node = $\(n)
            """
    }

    static func image(_ r: PostgresRow) throws -> (id: Int64, image: StudyImage) {
        var i = StudyImage(studyInstanceUID: try r.required(1, "studyInstanceUID", r.text), sopInstanceUID: try r.required(2, "sopInstanceUID", r.text),
                           seriesInstanceUID: r.text(3), filePath: try r.required(4, "filePath", r.text), receivedAt: try r.required(5, "receivedAt", r.date),
                           eligible: try r.required(6, "eligible", r.bool), eligibilityReason: r.text(7))
        i.probability = try r.double(8)
        i.fileRemovedAt = try r.date(9)
        i.seriesNumber = try r.integer(10)
        i.instanceNumber = try r.integer(11)
        i.viewPosition = r.text(12)
        i.laterality = r.text(13)
        i.fileName = r.text(14)
        i.sopClassUID = r.text(15)
        i.node = r.text(16)
        if let copyNode = r.text(17) {
            i.node = copyNode
            i.filePath = try r.required(18, "imageCopy.filePath", r.text)
            i.fileRemovedAt = try r.date(19)
        }
        return (Int64(try r.required(0, "id", r.integer)), i)
    }

    static let reviewSelect = """
        SELECT r.id, s.studyInstanceUID, r.reviewer, r.reviewedAt, r.action, r.fromVerdict, r.label, r.note, r.statedReviewer
        FROM review r JOIN study s ON s.id = r.studyID
        """

    static func review(_ r: PostgresRow, from offset: Int = 1) throws -> Review {
        Review(studyInstanceUID: try r.required(offset, "studyInstanceUID", r.text), reviewer: try r.required(offset + 1, "reviewer", r.text),
               reviewedAt: try r.required(offset + 2, "reviewedAt", r.date), action: try r.requiredChoice(offset + 3, "action"),
               fromVerdict: try r.choice(offset + 4, "fromVerdict"), label: try r.requiredChoice(offset + 5, "label"), note: r.text(offset + 6),
               statedReviewer: r.text(offset + 7))
    }

    // MARK: Written by the daemon

    public func recordArrival(_ a: InstanceArrival) throws -> ArrivalOutcome {
        try write { c in try Self.recordArrival(c, a, node: node) }
    }

    public func recordArrivals(_ arrivals: [InstanceArrival]) throws -> [ArrivalOutcome] {
        try write { c in try arrivals.map { try Self.recordArrival(c, $0, node: node) } }
    }

    /// An instance another node recorded first: this node's file becomes its copy (`ArrivalOutcome.copyKept`),
    /// unless this node holds it already. Nil when no image has the SOP Instance UID.
    private static func recordCopy(_ c: PostgresConnection, _ a: InstanceArrival, node: String) throws -> ArrivalOutcome? {
        guard let stored = try c.execute("SELECT id, node FROM image WHERE sopInstanceUID = $1", [a.sopInstanceUID]).first else { return nil }
        let holder = stored.text(1)
        if holder == nil || holder == node { return .duplicate }
        let kept = try c.execute("""
            INSERT INTO imageCopy (imageID, node, filePath, receivedAt) VALUES ($1, $2, $3, $4) ON CONFLICT (imageID, node) DO NOTHING RETURNING imageID
            """, [Int64(try stored.required(0, "id", stored.integer)), node, a.filePath, a.receivedAt]).first != nil
        return kept ? .copyKept : .duplicate
    }

    /// An instance and its study. The study row is made if missing (`ON CONFLICT DO NOTHING`: a node that
    /// loses the race uses the winner's) and locked; the image is inserted the same way, so the same SOP
    /// Instance UID arriving at two nodes at once is stored once, and the study that was made for it alone
    /// by the node that lost is removed again.
    private static func recordArrival(_ c: PostgresConnection, _ a: InstanceArrival, node: String) throws -> ArrivalOutcome {
        if let outcome = try recordCopy(c, a, node: node) { return outcome }
        let fresh = Study(studyInstanceUID: a.studyInstanceUID, source: a.source, receivedAt: a.receivedAt)
        let created = try c.execute("""
            INSERT INTO study (studyInstanceUID, shortID, source, firstReceivedAt, lastReceivedAt, state, arrivalDay)
            VALUES ($1, $2, $3, $4, $4, $5, $6) ON CONFLICT (studyInstanceUID) DO NOTHING RETURNING id
            """, [fresh.studyInstanceUID, fresh.shortID, fresh.source.rawValue, a.receivedAt, fresh.state.rawValue, fresh.arrivalDay]).first != nil
        var row = try lockedStudy(c, uid: a.studyInstanceUID)
        var image = StudyImage(studyInstanceUID: a.studyInstanceUID, sopInstanceUID: a.sopInstanceUID, seriesInstanceUID: a.seriesInstanceUID,
                               filePath: a.filePath, receivedAt: a.receivedAt, eligible: a.eligible, eligibilityReason: a.eligibilityReason)
        image.take(details: a)
        let inserted = try c.execute("""
            INSERT INTO image (studyID, sopInstanceUID, seriesInstanceUID, filePath, receivedAt, eligible, eligibilityReason, seriesNumber,
                               instanceNumber, viewPosition, laterality, fileName, sopClassUID, node)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (sopInstanceUID) DO NOTHING RETURNING id
            """, [row.id, image.sopInstanceUID, image.seriesInstanceUID, image.filePath, image.receivedAt, image.eligible, image.eligibilityReason,
                  image.seriesNumber, image.instanceNumber, image.viewPosition, image.laterality, image.fileName, image.sopClassUID, node]).first != nil
        guard inserted else {
            // Another process stored this instance between the check above and here: this file is a copy.
            if created { try c.execute("DELETE FROM study WHERE id = $1", [row.id]) }
            return try recordCopy(c, a, node: node) ?? .duplicate
        }
        row.study.take(a)
        try update(c, row)
        return created ? .newStudy : .addedToStudy
    }

    public func markPending(studyInstanceUID: String) throws {
        try setState(studyInstanceUID, .pending, reason: nil)
    }

    public func markNotApplicable(studyInstanceUID: String, reason: String) throws {
        try setState(studyInstanceUID, .notApplicable, reason: reason)
    }

    public func markFailed(studyInstanceUID: String, reason: String) throws {
        try setState(studyInstanceUID, .failed, reason: reason)
    }

    private func setState(_ uid: String, _ state: StudyState, reason: String?) throws {
        try write { c in
            var row = try Self.lockedStudy(c, uid: uid)
            try row.study.move(to: state, reason: reason)
            if state != .pending {
                row.study.triageNode = node
                try Self.passUnbuiltResults(c, studyID: row.id, to: node)
            }
            try Self.update(c, row)
        }
    }

    public func recordImageProblems(_ problems: [String: String]) throws {
        guard !problems.isEmpty else { return }
        try write { c in
            for (sop, problem) in problems.sorted(by: { $0.key < $1.key }) {
                try c.execute("UPDATE image SET eligibilityReason = $1 WHERE sopInstanceUID = $2 AND eligible", [problem, sop])
            }
        }
    }

    /// Per-image probabilities and the study's outcome (`Study.recordTriage`), with the results it queues,
    /// in one transaction on the locked study: an arrival that slipped in since the triage read the study
    /// is seen here, and the result is refused as superseded.
    @discardableResult
    public func recordTriage(_ r: TriageResult) throws -> Study {
        try write { c in
            var row = try Self.lockedStudy(c, uid: r.studyInstanceUID)
            try row.study.checkCurrent(r)
            var images = try c.execute(Self.imageSelect + " WHERE i.studyID = $1 ORDER BY i.receivedAt, i.id", [row.id]).rows.map(Self.image)
            for k in images.indices {
                images[k].image.take(r)
                try c.execute("UPDATE image SET probability = $1, eligibilityReason = $2 WHERE id = $3",
                              [images[k].image.probability, images[k].image.eligibilityReason, images[k].id])
            }
            row.study.recordTriage(r, imageProbabilities: images.compactMap(\.image.probability))
            row.study.triageNode = node
            try Self.update(c, row)
            try Self.passUnbuiltResults(c, studyID: row.id, to: node)
            row.study.heatmapCount = try Self.recountHeatmaps(c, studyID: row.id)
            if row.study.state == .triaged {
                if let mark = try Self.queueResults(c, studyID: row.id, study: row.study, images: images.map(\.image),
                                                    destinations: r.resultDestinations, at: r.triagedAt) {
                    row.study.deliveryMark = mark
                }
            }
            return row.study
        }
    }

    /// The claim (`TriageClaims`) on the locked study row: two nodes claiming at once take turns, and the
    /// second finds the first's claim.
    public func beginTriage(studyInstanceUID uid: String) throws -> TriageClaim {
        try write { c in
            let study = try Self.lockedStudy(c, uid: uid)
            let open = try c.execute("SELECT node, startedAt, attempts FROM triageAttempt WHERE studyID = $1", [study.id]).first
            let existing = try open.map { TriageInProgress(node: $0.text(0) ?? node, startedAt: try $0.required(1, "startedAt", $0.date),
                                                           attempts: try $0.required(2, "attempts", $0.integer)) }
            return try TriageClaims.claim(state: study.study.state, existing: existing, node: node, close: {
                try c.execute("DELETE FROM triageAttempt WHERE studyID = $1 AND (node IS NULL OR node = $2)", [study.id, node])
            }, begin: {
                let attempts = try c.execute("""
                    INSERT INTO triageAttempt (studyID, attempts, startedAt, node) VALUES ($1, 1, $2, $3)
                    ON CONFLICT (studyID) DO UPDATE SET attempts = triageAttempt.attempts + 1, startedAt = excluded.startedAt, node = excluded.node
                    RETURNING attempts
                    """, [study.id, Date(), node]).first
                return try attempts?.integer(0) ?? 1
            })
        }
    }

    public func endTriage(studyInstanceUID uid: String) throws {
        try write { c in
            _ = try c.execute("DELETE FROM triageAttempt WHERE studyID = (SELECT id FROM study WHERE studyInstanceUID = $1) AND (node IS NULL OR node = $2)",
                              [uid, node])
        }
    }

    public func triageInProgress(ofStudy uid: String) throws -> TriageInProgress? {
        try read { c in
            try c.execute("""
                SELECT a.node, a.startedAt, a.attempts FROM triageAttempt a JOIN study s ON s.id = a.studyID WHERE s.studyInstanceUID = $1
                """, [uid]).first.map { TriageInProgress(node: $0.text(0) ?? node, startedAt: try $0.required(1, "startedAt", $0.date),
                                                        attempts: try $0.required(2, "attempts", $0.integer)) }
        }
    }

    /// This node's files: its copy where it kept one, else the image's own file when this node recorded it.
    public func updateImagePaths(_ paths: [String: String]) throws {
        guard !paths.isEmpty else { return }
        try write { c in
            for (sop, path) in paths.sorted(by: { $0.key < $1.key }) {
                let copied = try c.execute("UPDATE imageCopy SET filePath = $1 WHERE node = $2 AND imageID = (SELECT id FROM image WHERE sopInstanceUID = $3)",
                                           [path, node, sop]).affected
                if copied == 0 {
                    try c.execute("UPDATE image SET filePath = $1 WHERE sopInstanceUID = $2 AND (node IS NULL OR node = $3)", [path, sop, node])
                }
            }
        }
    }

    /// The image's file as this node has it (its own copy where it kept one).
    public func imagePath(sopInstanceUID: String) throws -> String? {
        try read { c in
            try c.execute(Self.localImageSelect(node: 2) + " WHERE i.sopInstanceUID = $1", [sopInstanceUID, node]).rows.first.map { try Self.image($0).image.filePath }
        }
    }

    /// The files under `folder` this node recorded: its images' and its copies'.
    public func imagePaths(under folder: String) throws -> Set<String> {
        let range = FinishedStudyFiles.folderRange(folder)
        return try read { c in
            Set(try c.execute("""
                SELECT filePath FROM image WHERE filePath >= $1 AND filePath < $2 AND (node IS NULL OR node = $3)
                UNION SELECT filePath FROM imageCopy WHERE node = $3 AND filePath >= $1 AND filePath < $2
                """, [range.prefix, range.upper, node]).rows.compactMap { $0.text(0) })
        }
    }

    public func finishedStudyFiles(under folder: String) throws -> [FinishedStudyFiles] {
        let range = FinishedStudyFiles.folderRange(folder)
        let finished = [StudyState.triaged, .notApplicable, .failed].map { "'\($0.rawValue)'" }.joined(separator: ", ")
        return try read { c in
            // A study's source files stay while one of its result objects waits to be built from them; a
            // result file goes once every destination has it (or it was dropped), from the node that has it.
            let rows = try c.execute("""
                WITH files AS (
                    SELECT i.studyID, i.filePath, i.id AS n FROM image i
                    WHERE i.fileRemovedAt IS NULL AND i.filePath >= $1 AND i.filePath < $2 AND (i.node IS NULL OR i.node = $3)
                    UNION ALL
                    SELECT i.studyID, c.filePath, i.id + 2000000000000 AS n FROM imageCopy c JOIN image i ON i.id = c.imageID
                    WHERE c.node = $3 AND c.fileRemovedAt IS NULL AND c.filePath >= $1 AND c.filePath < $2
                    UNION ALL
                    SELECT o.studyID, o.filePath, o.id + 4000000000000 AS n FROM resultObject o JOIN study s ON s.id = o.studyID
                    WHERE o.filePath IS NOT NULL AND o.fileRemovedAt IS NULL AND o.filePath >= $1 AND o.filePath < $2 AND \(Self.ofNode(3))
                      AND NOT EXISTS (SELECT 1 FROM resultDelivery d WHERE d.objectID = o.id AND d.state NOT IN ('delivered', 'dropped'))
                )
                SELECT s.studyInstanceUID, s.shortID, greatest(s.lastReceivedAt, coalesce(s.triagedAt, s.lastReceivedAt)) AS finishedAt, f.filePath
                FROM files f JOIN study s ON s.id = f.studyID
                WHERE s.state IN (\(finished))
                  AND NOT EXISTS (SELECT 1 FROM resultObject w WHERE w.studyID = s.id AND w.filePath IS NULL AND w.buildProblem IS NULL)
                ORDER BY finishedAt, s.id, f.n
                """, [range.prefix, range.upper, node])
            return FinishedStudyFiles.grouping(try rows.rows.map { row in
                (try row.required(0, "studyInstanceUID", row.text), try row.required(1, "shortID", row.text),
                 try row.required(2, "finishedAt", row.date), try row.required(3, "filePath", row.text))
            })
        }
    }

    public func markFilesRemoved(_ paths: [String], at date: Date) throws {
        guard !paths.isEmpty else { return }
        try write { c in
            for path in paths {
                try c.execute("UPDATE image SET fileRemovedAt = $1 WHERE filePath = $2 AND (node IS NULL OR node = $3)", [date, path, node])
                try c.execute("UPDATE imageCopy SET fileRemovedAt = $1 WHERE node = $2 AND filePath = $3", [date, node, path])
                try c.execute("""
                    UPDATE resultObject o SET fileRemovedAt = $1 FROM study s WHERE s.id = o.studyID AND o.filePath = $2 AND \(Self.ofNode(3))
                    """, [date, path, node])
            }
        }
    }

    // MARK: Read and reviewed by radiologists

    public func studies(matching f: WorklistFilter) throws -> [Study] {
        var studies: [Study] = []
        try forEachStudy(matching: f) { studies.append($0) }
        return studies
    }

    /// How many rows a listing's cursor fetches at a time.
    static let fetchSize = 500

    /// Streams from a server-side cursor, `fetchSize` rows at a time, in one read-only snapshot.
    public func forEachStudy(matching f: WorklistFilter, _ body: (Study) throws -> Void) throws {
        let query = PostgresQueries.listing(f)
        try read { c in
            try c.execute("DECLARE worklist_listing NO SCROLL CURSOR FOR " + query.sql, query.parameters)
            while true {
                let batch = try c.execute("FETCH FORWARD \(Self.fetchSize) FROM worklist_listing")
                for row in batch.rows { try body(try Study(stored: row)) }
                if batch.rows.count < Self.fetchSize { break }
            }
            try c.execute("CLOSE worklist_listing")
        }
    }

    public func counts(matching f: WorklistFilter) throws -> WorklistCounts {
        let query = PostgresQueries.counting(f)
        return try read { c in
            let row = try c.execute(query.sql, query.parameters).first
            let total = try row?.integer(0) ?? 0, flagged = try row?.integer(1) ?? 0
            return WorklistCounts(flagged: flagged, others: total - flagged)
        }
    }

    public func shortIDPrefixes(of shortIDs: [String]?, minimumLength: Int) throws -> ShortIDPrefixes {
        try read { c in
            guard let shortIDs else {
                let ids = try c.execute("SELECT shortID FROM study ORDER BY shortID").rows.compactMap { $0.text(0) }
                return ShortIDPrefixes.fromSorted(ids, minimumLength: minimumLength)
            }
            // A page: each ID's neighbours in the short-ID index.
            return try ShortIDPrefixes.collect(minimumLength: minimumLength) { note in
                for id in Set(shortIDs) {
                    let before = try c.execute("SELECT shortID FROM study WHERE shortID < $1 ORDER BY shortID DESC LIMIT 1", [id]).first?.text(0)
                    let after = try c.execute("SELECT shortID FROM study WHERE shortID > $1 ORDER BY shortID LIMIT 1", [id]).first?.text(0)
                    note(id, before, after)
                }
            }
        }
    }

    /// A study by its whole Study Instance UID, an exact accession number, or a prefix (at least 4
    /// characters) of its short ID or of its Study Instance UID (`StudyHandle`).
    public func study(handle: String) throws -> Study {
        try read { c in
            try StudyHandle.resolve(handle) { lookup in
                let query = PostgresQueries.lookup(lookup)
                return try c.execute(query.sql, query.parameters).rows.map { try Study(stored: $0) }
            }
        }
    }

    /// What PostgreSQL plans (`EXPLAIN`, one line per step) for a listing, its count and a handle's
    /// lookups, with sorting and sequential scans made the last resort: a plan that still sorts or scans
    /// the table has no index to serve it.
    public func queryPlans(listing filter: WorklistFilter, handle: String) throws -> [(query: String, plan: [String])] {
        let queries = [PostgresQueries.listing(filter), PostgresQueries.counting(filter)] + StudyHandle.lookups(handle).map(PostgresQueries.lookup)
        return try read { c in
            try c.execute("SET LOCAL enable_sort TO off; SET LOCAL enable_seqscan TO off")
            return try queries.map { query in
                (query.sql, try c.execute("EXPLAIN " + query.sql, query.parameters).rows.compactMap { $0.text(0) })
            }
        }
    }

    public func study(studyInstanceUID uid: String) throws -> Study {
        try read { c in try Self.studyRow(c, uid: uid).study }
    }

    public func images(ofStudy uid: String) throws -> [StudyImage] {
        try read { c in
            let study = try Self.studyRow(c, uid: uid)
            return try c.execute(Self.localImageSelect(node: 2) + " WHERE i.studyID = $1 ORDER BY i.receivedAt, i.id", [study.id, node]).rows.map {
                try Self.image($0).image
            }
        }
    }

    public func reviews(ofStudy uid: String) throws -> [Review] {
        try read { c in
            let study = try Self.studyRow(c, uid: uid)
            return try c.execute(Self.reviewSelect + " WHERE r.studyID = $1 ORDER BY r.id", [study.id]).rows.map { try Self.review($0) }
        }
    }

    /// Appends one entry per study to the audit trail and updates each study's review state, all in one
    /// transaction on the locked studies: a study unknown, or one `Study.review` refuses, and nothing is
    /// recorded. Two radiologists confirming one study at once: the second waits for the first's lock,
    /// then sees its review and is told so.
    @discardableResult
    public func recordReviews(studyInstanceUIDs: [String], by reviewer: ReviewerIdentity, action: ReviewAction, label: Finding?,
                              note: String?, at: Date) throws -> [Review] {
        try write { c in
            var reviews: [Review] = []
            for uid in studyInstanceUIDs {
                var row = try Self.lockedStudy(c, uid: uid)
                let previous = try c.execute(Self.reviewSelect + " WHERE r.studyID = $1 ORDER BY r.id DESC LIMIT 1", [row.id]).first.map { try Self.review($0) }
                var review = try row.study.review(by: reviewer, action: action, label: label, note: note, at: at, previous: previous)
                // The database records its login as the reviewer (a trigger: see v2-reviews), whatever is sent.
                let inserted = try c.execute("""
                    INSERT INTO review (studyID, reviewer, reviewedAt, action, fromVerdict, label, note, statedReviewer)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id, reviewer
                    """, [row.id, review.reviewer, review.reviewedAt, review.action.rawValue, review.fromVerdict?.rawValue, review.label.rawValue,
                          review.note, review.statedReviewer]).first
                if let login = inserted?.text(1) { review.reviewer = login }
                try Self.updateReview(c, row)
                if let reviewID = try inserted?.integer(0) {
                    try Self.queueUpdatedReport(c, studyID: row.id, reviewID: Int64(reviewID), at: at)
                }
                reviews.append(review)
            }
            return reviews
        }
    }
}
