import Foundation
import GRDB

/// The worklist in one SQLite file (WAL mode, so the daemon writes while radiologists read and review).
public final class SQLiteWorklist: WorklistStore {
    public let path: String
    public let node: String
    private let pool: DatabasePool

    /// How long a writer waits for another process's transaction before giving up.
    public static let busyTimeout: TimeInterval = 10

    /// Who may write a worklist the daemon creates: its owner (the daemon) and its group (radiologists'
    /// `confirm` and `override`; SQLite gives the -wal and -shm files the same mode). Others: nothing.
    public static let creationMode: mode_t = 0o660

    /// Opens (and with `create`, creates with `creationMode`) the database, and upgrades its schema in place
    /// when it is older. A database written by a newer BoneTriage is refused rather than touched.
    ///
    /// A user who may read the database but not write it (`access(2)`: real uid and groups) opens it
    /// read-only: nothing is written on open, the WAL is read through SQLite's read-only shared memory
    /// (or, when the daemon is not running and has left no WAL, the file is read as it is), and an
    /// older schema is an error that says the daemon upgrades it when it starts.
    /// `node`: the name this process records its files and triages under (`[worklist] node`).
    public init(path: String, create: Bool, node: String = WorklistNode.local) throws {
        self.path = path
        self.node = node
        var info = stat()
        let exists = stat(path, &info) == 0
        if !exists && errno == EACCES {
            throw WorklistError.databaseUnusable(path: path, reason: "permission denied on its folder; ask the administrator to add your account to group "
                                                 + WorklistAccess.reviewersGroup)
        }
        if exists && access(path, R_OK) != 0 {
            throw WorklistError.databaseUnusable(path: path, reason: "permission denied; ask the administrator to add your account to group "
                                                 + WorklistAccess.groupName(info.st_gid) + " (the group of the file)")
        }
        if !exists {
            guard create else { throw WorklistError.databaseNotFound(path: path) }
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, Self.creationMode)
            if fd < 0 && errno != EEXIST {
                throw WorklistError.databaseUnusable(path: path, reason: String(cString: strerror(errno)) + "; check that the folder exists and is writable")
            }
            if fd >= 0 {
                // The process's umask (systemd's UMask=0027) must not take the group's write away.
                fchmod(fd, Self.creationMode)
                close(fd)
            }
        }
        let readOnly = !create && !WorklistAccess.mayWrite(path)
        var configuration = Configuration()
        configuration.busyMode = .timeout(Self.busyTimeout)
        configuration.foreignKeysEnabled = true
        configuration.readonly = readOnly
        do {
            pool = try DatabasePool(path: readOnly ? Self.readOnlyLocation(path) : path, configuration: configuration)
            let migrator = WorklistSchema.migrator
            let (applied, superseded, current) = try pool.read { db in
                (try migrator.appliedIdentifiers(db), try migrator.hasBeenSuperseded(db), try migrator.hasCompletedMigrations(db))
            }
            if superseded {
                let known = Set(migrator.migrations)
                throw WorklistError.newerSchema(path: path, unknownMigrations: applied.filter { !known.contains($0) }.sorted())
            }
            if !current {
                if readOnly { throw WorklistError.olderSchema(path: path, missingMigrations: migrator.migrations.filter { !applied.contains($0) }) }
                try migrator.migrate(pool)
            }
        } catch let error as WorklistError {
            throw error
        } catch let error as DatabaseError {
            throw WorklistError.databaseUnusable(path: path, reason: error.message ?? error.description)
        }
    }

    /// Where a read-only connection opens the database: the file itself while its WAL is there (the
    /// daemon runs); when there is none and this user may not create one in the folder, the file as an
    /// immutable URI, which SQLite reads without a WAL or locks (nothing else writes it then).
    private static func readOnlyLocation(_ path: String) -> String {
        let folder = (path as NSString).deletingLastPathComponent
        guard !FileManager.default.fileExists(atPath: path + "-wal"), !WorklistAccess.mayWrite(folder.isEmpty ? "." : folder) else { return path }
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "?#%")
        return "file:" + (absolute.addingPercentEncoding(withAllowedCharacters: allowed) ?? absolute) + "?immutable=1"
    }

    func write<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try pool.write(body) } catch let error as DatabaseError {
            throw WorklistError.databaseUnusable(path: path, reason: error.message ?? error.description)
        } catch let error as StoredValueError {
            throw WorklistError.databaseUnusable(path: path, reason: error.description)
        }
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        do { return try pool.read(body) } catch let error as DatabaseError {
            throw WorklistError.databaseUnusable(path: path, reason: error.message ?? error.description)
        } catch let error as StoredValueError {
            throw WorklistError.databaseUnusable(path: path, reason: error.description)
        }
    }

    static func studyRow(_ db: Database, uid: String) throws -> StudyRow {
        guard let row = try Row.fetchOne(db, sql: StudyRow.selectSQL + " WHERE studyInstanceUID = ?", arguments: [uid]) else {
            throw WorklistError.studyNotFound(handle: uid)
        }
        return try StudyRow(listed: row)
    }

    // MARK: Written by the daemon

    public func recordArrival(_ a: InstanceArrival) throws -> ArrivalOutcome {
        try write { db in try Self.recordArrival(db, a, node: node) }
    }

    public func recordArrivals(_ arrivals: [InstanceArrival]) throws -> [ArrivalOutcome] {
        try write { db in try arrivals.map { try Self.recordArrival(db, $0, node: node) } }
    }

    private static func recordArrival(_ db: Database, _ a: InstanceArrival, node: String) throws -> ArrivalOutcome {
        if let stored = try Row.fetchOne(db, sql: "SELECT id, node FROM image WHERE sopInstanceUID = ?", arguments: [a.sopInstanceUID]) {
            let imageID: Int64 = stored["id"]
            let holder: String? = stored["node"]
            if holder == nil || holder == node { return .duplicate }
            if try Row.fetchOne(db, sql: "SELECT 1 FROM imageCopy WHERE imageID = ? AND node = ?", arguments: [imageID, node]) != nil { return .duplicate }
            try db.execute(sql: "INSERT INTO imageCopy (imageID, node, filePath, receivedAt) VALUES (?, ?, ?, ?)",
                           arguments: [imageID, node, a.filePath, a.receivedAt])
            return .copyKept
        }
        var outcome = ArrivalOutcome.addedToStudy
        var row: StudyRow
        if let existing = try Row.fetchOne(db, sql: StudyRow.selectSQL + " WHERE studyInstanceUID = ?", arguments: [a.studyInstanceUID]) {
            row = try StudyRow(listed: existing)
        } else {
            row = StudyRow(id: nil, study: Study(studyInstanceUID: a.studyInstanceUID, source: a.source, receivedAt: a.receivedAt))
            outcome = .newStudy
        }
        row.study.take(a)
        try row.save(db)
        guard let studyID = row.id else { throw WorklistError.studyNotFound(handle: a.studyInstanceUID) }
        var image = StudyImage(studyInstanceUID: a.studyInstanceUID, sopInstanceUID: a.sopInstanceUID, seriesInstanceUID: a.seriesInstanceUID,
                               filePath: a.filePath, receivedAt: a.receivedAt, eligible: a.eligible, eligibilityReason: a.eligibilityReason)
        image.take(details: a)
        image.node = node
        var imageRow = ImageRow(id: nil, studyID: studyID, image: image)
        try imageRow.insert(db)
        return outcome
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

    public func recordImageProblems(_ problems: [String: String]) throws {
        guard !problems.isEmpty else { return }
        try write { db in
            for (sop, problem) in problems {
                try db.execute(sql: "UPDATE image SET eligibilityReason = ? WHERE sopInstanceUID = ? AND eligible", arguments: [problem, sop])
            }
        }
    }

    private func setState(_ uid: String, _ state: StudyState, reason: String?) throws {
        try write { db in
            var row = try Self.studyRow(db, uid: uid)
            try row.study.move(to: state, reason: reason)
            if state != .pending {
                row.study.triageNode = node
                try Self.passUnbuiltResults(db, studyID: row.id, to: node)
            }
            try row.update(db)
        }
    }

    /// Per-image probabilities and the study's outcome (`Study.recordTriage`: the mean, the verdict at
    /// the threshold), in one transaction. A study that was already reviewed keeps its history and is marked changed.
    @discardableResult
    public func recordTriage(_ r: TriageResult) throws -> Study {
        try write { db in
            var row = try Self.studyRow(db, uid: r.studyInstanceUID)
            guard let studyID = row.id else { throw WorklistError.studyNotFound(handle: r.studyInstanceUID) }
            try row.study.checkCurrent(r)
            var images = try ImageRow.fetchAll(db, sql: ImageRow.selectSQL + " WHERE i.studyID = ?", arguments: [studyID])
            for i in images.indices {
                images[i].image.take(r)
                try images[i].update(db)
            }
            row.study.recordTriage(r, imageProbabilities: images.compactMap(\.image.probability))
            row.study.triageNode = node
            try row.update(db)
            try Self.passUnbuiltResults(db, studyID: studyID, to: node)
            row.study.heatmapCount = try Self.recountHeatmaps(db, studyID: studyID)
            if row.study.state == .triaged {
                try Self.queueResults(db, studyID: studyID, study: row.study, images: images.map(\.image), destinations: r.resultDestinations,
                                      at: r.triagedAt)
            }
            return row.study
        }
    }

    public func beginTriage(studyInstanceUID uid: String) throws -> TriageClaim {
        try write { db in
            let study = try Self.studyRow(db, uid: uid)
            let open = try Row.fetchOne(db, sql: "SELECT node, startedAt, attempts FROM triageAttempt WHERE studyID = ?", arguments: [study.id])
            return try TriageClaims.claim(state: study.study.state, existing: open.map { TriageInProgress(node: $0["node"] ?? node, startedAt: $0["startedAt"],
                                                                                                       attempts: $0["attempts"]) },
                                          node: node, close: {
                try db.execute(sql: "DELETE FROM triageAttempt WHERE studyID = ? AND (node IS NULL OR node = ?)", arguments: [study.id, node])
            }, begin: {
                try db.execute(sql: """
                    INSERT INTO triageAttempt (studyID, attempts, startedAt, node) VALUES (?, 1, ?, ?)
                    ON CONFLICT(studyID) DO UPDATE SET attempts = attempts + 1, startedAt = excluded.startedAt, node = excluded.node
                    """, arguments: [study.id, Date(), node])
                return try Int.fetchOne(db, sql: "SELECT attempts FROM triageAttempt WHERE studyID = ?", arguments: [study.id]) ?? 1
            })
        }
    }

    public func endTriage(studyInstanceUID uid: String) throws {
        try write { db in
            try db.execute(sql: "DELETE FROM triageAttempt WHERE studyID = (SELECT id FROM study WHERE studyInstanceUID = ?) AND (node IS NULL OR node = ?)",
                           arguments: [uid, node])
        }
    }

    public func triageInProgress(ofStudy uid: String) throws -> TriageInProgress? {
        try read { db in
            try Row.fetchOne(db, sql: """
                SELECT a.node, a.startedAt, a.attempts FROM triageAttempt a JOIN study s ON s.id = a.studyID WHERE s.studyInstanceUID = ?
                """, arguments: [uid]).map { TriageInProgress(node: $0["node"] ?? node, startedAt: $0["startedAt"], attempts: $0["attempts"]) }
        }
    }

    /// This node's files: its copy where it kept one, else the image's own file when this node recorded it.
    public func updateImagePaths(_ paths: [String: String]) throws {
        try write { db in
            for (sop, path) in paths {
                try db.execute(sql: "UPDATE imageCopy SET filePath = ? WHERE node = ? AND imageID = (SELECT id FROM image WHERE sopInstanceUID = ?)",
                               arguments: [path, node, sop])
                if db.changesCount == 0 {
                    try db.execute(sql: "UPDATE image SET filePath = ? WHERE sopInstanceUID = ? AND (node IS NULL OR node = ?)", arguments: [path, sop, node])
                }
            }
        }
    }

    public func finishedStudyFiles(under folder: String) throws -> [FinishedStudyFiles] {
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        let finished = [StudyState.triaged, .notApplicable, .failed].map { "'\($0.rawValue)'" }.joined(separator: ", ")
        return try read { db in
            // A study's source files stay while one of its result objects waits to be built from them; a
            // result file goes once every destination has it (or it was dropped), from the node that has it.
            let rows = try Row.fetchCursor(db, sql: """
                WITH files AS (
                    SELECT i.studyID, i.filePath, i.id AS n FROM image i
                    WHERE i.fileRemovedAt IS NULL AND substr(i.filePath, 1, length(?)) = ? AND (i.node IS NULL OR i.node = ?)
                    UNION ALL
                    SELECT i.studyID, c.filePath, i.id + 2000000000000 AS n FROM imageCopy c JOIN image i ON i.id = c.imageID
                    WHERE c.node = ? AND c.fileRemovedAt IS NULL AND substr(c.filePath, 1, length(?)) = ?
                    UNION ALL
                    SELECT o.studyID, o.filePath, o.id + 4000000000000 AS n FROM resultObject o JOIN study s ON s.id = o.studyID
                    WHERE o.filePath IS NOT NULL AND o.fileRemovedAt IS NULL AND substr(o.filePath, 1, length(?)) = ? AND \(Self.ofNode)
                      AND NOT EXISTS (SELECT 1 FROM resultDelivery d WHERE d.objectID = o.id AND d.state NOT IN ('delivered', 'dropped'))
                )
                SELECT s.studyInstanceUID, s.shortID, max(s.lastReceivedAt, coalesce(s.triagedAt, s.lastReceivedAt)) AS finishedAt, f.filePath
                FROM files f JOIN study s ON s.id = f.studyID
                WHERE s.state IN (\(finished))
                  AND NOT EXISTS (SELECT 1 FROM resultObject w WHERE w.studyID = s.id AND w.filePath IS NULL AND w.buildProblem IS NULL)
                ORDER BY finishedAt, s.id, f.n
                """, arguments: [prefix, prefix, node, node, prefix, prefix, prefix, prefix, node])
            var found: [(uid: String, shortID: String, finishedAt: Date, path: String)] = []
            while let row = try rows.next() { found.append((row["studyInstanceUID"], row["shortID"], row["finishedAt"], row["filePath"])) }
            return FinishedStudyFiles.grouping(found)
        }
    }

    public func markFilesRemoved(_ paths: [String], at date: Date) throws {
        guard !paths.isEmpty else { return }
        try write { db in
            for path in paths {
                try db.execute(sql: "UPDATE image SET fileRemovedAt = ? WHERE filePath = ? AND (node IS NULL OR node = ?)", arguments: [date, path, node])
                try db.execute(sql: "UPDATE imageCopy SET fileRemovedAt = ? WHERE node = ? AND filePath = ?", arguments: [date, node, path])
                try db.execute(sql: """
                    UPDATE resultObject SET fileRemovedAt = ? WHERE id IN (
                        SELECT o.id FROM resultObject o JOIN study s ON s.id = o.studyID WHERE o.filePath = ? AND \(Self.ofNode))
                    """, arguments: [date, path, node])
            }
        }
    }

    // MARK: Read and reviewed by radiologists

    public func studies(matching f: WorklistFilter) throws -> [Study] {
        var studies: [Study] = []
        try forEachStudy(matching: f) { studies.append($0) }
        return studies
    }

    public func forEachStudy(matching f: WorklistFilter, _ body: (Study) throws -> Void) throws {
        let query = Self.listing(f)
        try read { db in
            let rows = try Row.fetchCursor(db, sql: query.sql, arguments: query.arguments)
            while let row = try rows.next() { try body(try StudyRow(listed: row).study) }
        }
    }

    public func counts(matching f: WorklistFilter) throws -> WorklistCounts {
        let query = Self.counting(f)
        return try read { db in
            let row = try Row.fetchOne(db, sql: query.sql, arguments: query.arguments)
            let total = (row?["total"] as Int?) ?? 0, flagged = (row?["flagged"] as Int?) ?? 0
            return WorklistCounts(flagged: flagged, others: total - flagged)
        }
    }

    public func shortIDPrefixes(of shortIDs: [String]?, minimumLength: Int) throws -> ShortIDPrefixes {
        try read { db in
            guard let shortIDs else {
                // Everything: one walk of the short-ID index.
                return ShortIDPrefixes.fromSorted(try String.fetchAll(db, sql: Self.allShortIDs.sql), minimumLength: minimumLength)
            }
            // A page: each ID's neighbours in the short-ID index.
            let (before, after) = (Self.neighbourBefore(""), Self.neighbourAfter(""))
            return try ShortIDPrefixes.collect(minimumLength: minimumLength) { note in
                for id in Set(shortIDs) {
                    note(id, try String.fetchOne(db, sql: before.sql, arguments: [id]), try String.fetchOne(db, sql: after.sql, arguments: [id]))
                }
            }
        }
    }

    /// A study by its whole Study Instance UID, an exact accession number, or a prefix (at least 4
    /// characters) of its short ID or of its Study Instance UID.
    public func study(handle: String) throws -> Study {
        try read { db in try Self.resolve(db, handle: handle) }
    }

    public func study(studyInstanceUID uid: String) throws -> Study {
        try read { db in try Self.studyRow(db, uid: uid).study }
    }

    private static func resolve(_ db: Database, handle: String) throws -> Study {
        try StudyHandle.resolve(handle) { lookup in
            let query = handleQuery(lookup)
            return try Row.fetchAll(db, sql: query.sql, arguments: query.arguments).map { try StudyRow(listed: $0).study }
        }
    }

    // MARK: The worklist's queries, each served by an index (a test reads their plans)

    struct Query {
        enum Kind { case listing, counting, uid, accession, prefix }
        var kind: Kind
        var sql: String
        var arguments: StatementArguments
    }

    /// The columns each order sorts by, ending with the row id so that equal keys keep one order, and
    /// the index that serves it (forced, so that a filter never makes SQLite sort 100,000 rows itself).
    static func order(_ sort: WorklistSort, flaggedOnly: Bool) -> (index: String, orderBy: String) {
        switch sort {
        case .priority:
            return (flaggedOnly ? "study_order_flagged" : "study_order_priority",
                    "worklistTier, arrivalDay DESC, rankWithinDay DESC, firstReceivedAt DESC, id")
        case .arrival: return ("study_order_arrival", "firstReceivedAt DESC, id DESC")
        case .probability: return ("study_order_probability", "probability DESC, firstReceivedAt DESC, id DESC")
        }
    }

    /// The WHERE clause of a filter (order and limit aside).
    static func conditions(_ f: WorklistFilter) -> (sql: String, arguments: StatementArguments) {
        var terms: [String] = [], arguments = StatementArguments()
        if f.flaggedOnly { terms.append("flagged = 1") }
        if !f.states.isEmpty {
            terms.append("state IN (" + f.states.map { _ in "?" }.joined(separator: ", ") + ")")
            arguments += StatementArguments(f.states.map(\.rawValue))
        }
        if let review = f.review { terms.append("reviewState = ?"); arguments += [review.rawValue] }
        if let since = f.since { terms.append("firstReceivedAt >= ?"); arguments += [since] }
        if let until = f.until { terms.append("firstReceivedAt < ?"); arguments += [until] }
        if let part = f.bodyPart { terms.append("bodyPart = ? COLLATE NOCASE"); arguments += [part] }
        if let accession = f.accession { terms.append("accessionNumber = ?"); arguments += [accession] }
        if let patient = f.patient {
            // A name prefix as a range of the NOCASE index (no LIKE: its wildcards are plain text here).
            terms.append("(patientID = ? OR (patientName >= ? COLLATE NOCASE AND patientName < ? COLLATE NOCASE))")
            arguments += [patient, patient, patient + "\u{10FFFF}"]
        }
        return (terms.isEmpty ? "" : " WHERE " + terms.joined(separator: " AND "), arguments)
    }

    /// A listing. Looking a study up by accession number or patient selects a handful of rows through
    /// their own index, sorted in memory; every other listing walks its order's index.
    static func listing(_ f: WorklistFilter) -> Query {
        let (index, orderBy) = order(f.sort, flaggedOnly: f.flaggedOnly)
        let (whereSQL, arguments) = conditions(f)
        let byIdentity = f.accession != nil || f.patient != nil
        var sql = "SELECT " + StoredStudy.columns.joined(separator: ", ") + " FROM study" + (byIdentity ? "" : " INDEXED BY \(index)")
            + whereSQL + " ORDER BY " + orderBy
        if let limit = f.limit { sql += " LIMIT \(max(0, limit))" }
        return Query(kind: .listing, sql: sql, arguments: arguments)
    }

    static func counting(_ f: WorklistFilter) -> Query {
        let (whereSQL, arguments) = conditions(f)
        return Query(kind: .counting, sql: "SELECT count(*) AS total, coalesce(sum(flagged), 0) AS flagged FROM study" + whereSQL, arguments: arguments)
    }

    static let allShortIDs = Query(kind: .prefix, sql: "SELECT shortID FROM study ORDER BY shortID", arguments: [])
    static func neighbourBefore(_ id: String) -> Query {
        Query(kind: .prefix, sql: "SELECT shortID FROM study WHERE shortID < ? ORDER BY shortID DESC LIMIT 1", arguments: [id])
    }
    static func neighbourAfter(_ id: String) -> Query {
        Query(kind: .prefix, sql: "SELECT shortID FROM study WHERE shortID > ? ORDER BY shortID LIMIT 1", arguments: [id])
    }

    /// The query of one lookup of a handle (`StudyHandle`), prefixes as index ranges.
    static func handleQuery(_ lookup: StudyHandle.Lookup) -> Query {
        // The columns by name: a reader connection opened before a migration then prepares them afresh.
        let select = StudyRow.selectSQL + " WHERE "
        switch lookup {
        case let .uid(uid): return Query(kind: .uid, sql: select + "studyInstanceUID = ?", arguments: [uid])
        case let .accession(accession):
            return Query(kind: .accession, sql: select + "accessionNumber = ? LIMIT \(StudyHandle.candidateLimit)", arguments: [accession])
        case let .prefix(shortID, uid):
            var ranges: [String] = []
            var arguments = StatementArguments()
            if let shortID { ranges.append("(shortID >= ? AND shortID < ?)"); arguments += [shortID.lower, shortID.upper] }
            if let uid { ranges.append("(studyInstanceUID >= ? AND studyInstanceUID < ?)"); arguments += [uid.lower, uid.upper] }
            return Query(kind: .prefix, sql: select + (ranges.isEmpty ? "0" : ranges.joined(separator: " OR ")) + " LIMIT \(StudyHandle.candidateLimit)",
                         arguments: arguments)
        }
    }

    /// The lookups of a handle, in order (`StudyHandle.lookups`).
    static func handleQueries(_ handle: String) -> [Query] { StudyHandle.lookups(handle).map(handleQuery) }

    /// What SQLite plans for each query the worklist's listing, counts, ID prefixes and handle lookups
    /// issue (`EXPLAIN QUERY PLAN`), one line per step: to check that each is served by an index.
    public func queryPlans(listing filter: WorklistFilter, handle: String) throws -> [(query: String, plan: [String])] {
        let queries = [Self.listing(filter), Self.counting(filter), Self.allShortIDs, Self.neighbourBefore("abc"), Self.neighbourAfter("abc")]
            + Self.handleQueries(handle)
        return try read { db in
            try queries.map { query in
                let rows = try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + query.sql, arguments: query.arguments)
                return (query.sql, rows.map { $0["detail"] as String? ?? "" })
            }
        }
    }

    /// The image's file as this node has it (its own copy where it kept one).
    public func imagePath(sopInstanceUID: String) throws -> String? {
        try read { db in
            try ImageRow.fetchOne(db, sql: ImageRow.localSelectSQL + " WHERE i.sopInstanceUID = ?", arguments: [node, sopInstanceUID])?.image.filePath
        }
    }

    /// The files under `folder` this node recorded: its images' and its copies'.
    public func imagePaths(under folder: String) throws -> Set<String> {
        let prefix = folder.hasSuffix("/") ? folder : folder + "/"
        return try read { db in
            Set(try String.fetchAll(db, sql: """
                SELECT filePath FROM image WHERE substr(filePath, 1, ?) = ? AND (node IS NULL OR node = ?)
                UNION SELECT filePath FROM imageCopy WHERE node = ? AND substr(filePath, 1, ?) = ?
                """, arguments: [prefix.unicodeScalars.count, prefix, node, node, prefix.unicodeScalars.count, prefix]))
        }
    }

    /// Each image with its file as this node has it: its own copy where it kept one (`StudyImage.node`).
    public func images(ofStudy uid: String) throws -> [StudyImage] {
        try read { db in
            let study = try Self.studyRow(db, uid: uid)
            return try ImageRow.fetchAll(db, sql: ImageRow.localSelectSQL + " WHERE i.studyID = ? ORDER BY i.receivedAt, i.id",
                                         arguments: [node, study.id]).map(\.image)
        }
    }

    public func reviews(ofStudy uid: String) throws -> [Review] {
        try read { db in
            let study = try Self.studyRow(db, uid: uid)
            return try ReviewRow.fetchAll(db, sql: ReviewRow.selectSQL + " WHERE r.studyID = ? ORDER BY r.id", arguments: [study.id]).map(\.review)
        }
    }

    /// Appends one entry per study to the audit trail and updates each study's review state, all in one
    /// transaction: a study unknown, or one `Study.review` refuses, and nothing is recorded.
    @discardableResult
    public func recordReviews(studyInstanceUIDs: [String], by reviewer: ReviewerIdentity, action: ReviewAction, label: Finding?,
                              note: String?, at: Date) throws -> [Review] {
        try write { db in
            var reviews: [Review] = []
            for uid in studyInstanceUIDs {
                var row = try Self.studyRow(db, uid: uid)
                guard let studyID = row.id else { throw WorklistError.studyNotFound(handle: uid) }
                let previous = try ReviewRow.fetchOne(db, sql: ReviewRow.selectSQL + " WHERE r.studyID = ? ORDER BY r.id DESC LIMIT 1",
                                                      arguments: [studyID])?.review
                let review = try row.study.review(by: reviewer, action: action, label: label, note: note, at: at, previous: previous)
                var reviewRow = ReviewRow(id: nil, studyID: studyID, review: review)
                try reviewRow.insert(db)
                try row.update(db)
                if let reviewID = reviewRow.id { try Self.queueUpdatedReport(db, studyID: studyID, reviewID: reviewID, at: at) }
                reviews.append(review)
            }
            return reviews
        }
    }
}

// MARK: Heatmaps

extension SQLiteWorklist {
    /// Sets the study's count of images with a heatmap made by its current model, and returns it.
    fileprivate static func recountHeatmaps(_ db: Database, studyID: Int64) throws -> Int {
        try db.execute(sql: """
            UPDATE study SET heatmapCount = (
                SELECT count(*) FROM heatmap h JOIN image i ON i.id = h.imageID
                WHERE i.studyID = study.id AND h.modelHash = study.modelHash AND h.heatmapValues IS NOT NULL)
            WHERE id = ?
            """, arguments: [studyID])
        return try Int.fetchOne(db, sql: "SELECT heatmapCount FROM study WHERE id = ?", arguments: [studyID]) ?? 0
    }

    public func recordHeatmap(sopInstanceUID: String, _ outcome: HeatmapOutcome, at date: Date) throws {
        try write { db in
            guard let image = try Row.fetchOne(db, sql: "SELECT id, studyID FROM image WHERE sopInstanceUID = ?", arguments: [sopInstanceUID]) else {
                throw WorklistError.studyNotFound(handle: sopInstanceUID)
            }
            let imageID: Int64 = image["id"], studyID: Int64 = image["studyID"]
            let h = outcome.heatmap
            try db.execute(sql: """
                INSERT INTO heatmap (imageID, modelHash, gridRows, gridColumns, heatmapValues, method, problem, madeAt)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(imageID) DO UPDATE SET modelHash = excluded.modelHash, gridRows = excluded.gridRows,
                    gridColumns = excluded.gridColumns, heatmapValues = excluded.heatmapValues, method = excluded.method,
                    problem = excluded.problem, madeAt = excluded.madeAt
                """, arguments: [imageID, outcome.modelFingerprint, h?.rows, h?.columns, h?.storedValues, h?.method, outcome.reason, date])
            _ = try Self.recountHeatmaps(db, studyID: studyID)
        }
    }

    public func heatmap(sopInstanceUID: String) throws -> StoredHeatmap? {
        try read { db in
            guard let row = try Row.fetchOne(db, sql: """
                SELECT h.* FROM heatmap h JOIN image i ON i.id = h.imageID WHERE i.sopInstanceUID = ?
                """, arguments: [sopInstanceUID]) else { return nil }
            return try StoredHeatmap(stored: sopInstanceUID, fingerprint: row["modelHash"], madeAt: row["madeAt"], values: row["heatmapValues"],
                                     rows: row["gridRows"], columns: row["gridColumns"], method: row["method"], problem: row["problem"])
        }
    }

    public func heatmapWork(scope: HeatmapScope, modelFingerprint: String, limit: Int) throws -> [HeatmapWork] {
        guard scope != .none, limit > 0 else { return [] }
        let verdict = scope == .flagged ? "AND s.verdict = '\(Finding.abnormal.rawValue)'" : ""
        return try read { db in
            try Row.fetchAll(db, sql: """
                SELECT s.studyInstanceUID, i.sopInstanceUID, coalesce(c.filePath, i.filePath) AS filePath,
                       CASE WHEN c.imageID IS NULL THEN i.fileRemovedAt ELSE c.fileRemovedAt END AS fileRemovedAt, s.modelHash
                FROM study s JOIN image i ON i.studyID = s.id LEFT JOIN imageCopy c ON c.imageID = i.id AND c.node = ?
                WHERE s.state = '\(StudyState.triaged.rawValue)' \(verdict) AND s.modelHash = ? AND (s.triageNode IS NULL OR s.triageNode = ?)
                  AND i.eligible AND i.probability IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM heatmap h WHERE h.imageID = i.id AND h.modelHash = s.modelHash)
                ORDER BY s.triagedAt DESC, s.id, i.receivedAt, i.id
                LIMIT ?
                """, arguments: [node, modelFingerprint, node, limit]).map { row in
                HeatmapWork(studyInstanceUID: row["studyInstanceUID"], sopInstanceUID: row["sopInstanceUID"], filePath: row["filePath"],
                            fileRemovedAt: row["fileRemovedAt"], modelFingerprint: row["modelHash"])
            }
        }
    }
}

// MARK: Rows: the SQLite form of the worklist's values. Row ids and GRDB conformances stay here.

/// A text column that must hold one of an enum's raw values; anything else is a damaged database.
/// (Shared by the SQLite adapter's files: the worklist and the outbox.)
func decodeEnum<E: RawRepresentable>(_ row: Row, _ column: String) throws -> E where E.RawValue == String {
    guard let value: E = try decodeOptionalEnum(row, column) else {
        throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "column \(column) is empty, which this BoneTriage does not expect")
    }
    return value
}

func decodeOptionalEnum<E: RawRepresentable>(_ row: Row, _ column: String) throws -> E? where E.RawValue == String {
    guard let raw: String = row[column] else { return nil }
    guard let value = E(rawValue: raw) else {
        throw DatabaseError(resultCode: .SQLITE_CORRUPT, message: "column \(column) holds '\(raw)', which this BoneTriage does not know")
    }
    return value
}

struct StudyRow: MutablePersistableRecord {
    static let databaseTableName = "study"
    var id: Int64?
    var study: Study

    init(id: Int64?, study: Study) {
        self.id = id
        self.study = study
    }

    /// A study's columns by name (`StoredStudy.columns`): a reader connection opened before a migration
    /// then prepares them afresh.
    static let selectSQL = "SELECT " + StoredStudy.columns.joined(separator: ", ") + " FROM study"

    /// A row of `selectSQL`, read by position (a listing reads 100,000; by name costs a lookup per column).
    init(listed row: Row) throws {
        id = row[0]
        study = try Study(stored: GRDBStoredValues(row: row))
    }

    func encode(to container: inout PersistenceContainer) throws {
        let s = study
        container["id"] = id
        container["studyInstanceUID"] = s.studyInstanceUID
        container["shortID"] = s.shortID
        container["patientID"] = s.patientID
        container["patientName"] = s.patientName
        container["accessionNumber"] = s.accessionNumber
        container["studyDate"] = s.studyDate
        container["modality"] = s.modality
        container["bodyPart"] = s.bodyPart
        container["studyDescription"] = s.studyDescription
        container["source"] = s.source.rawValue
        container["callingAETitle"] = s.callingAETitle
        container["peerAddress"] = s.peerAddress
        container["firstReceivedAt"] = s.firstReceivedAt
        container["lastReceivedAt"] = s.lastReceivedAt
        container["imageCount"] = s.imageCount
        container["eligibleImageCount"] = s.eligibleImageCount
        container["state"] = s.state.rawValue
        container["stateReason"] = s.stateReason
        container["probability"] = s.probability
        container["verdict"] = s.verdict?.rawValue
        container["threshold"] = s.threshold
        container["modelID"] = s.modelID
        container["modelHash"] = s.modelHash
        container["triagedAt"] = s.triagedAt
        container["priority"] = s.priority
        container["reviewState"] = s.reviewState.rawValue
        container["reviewLabel"] = s.reviewLabel?.rawValue
        container["reviewedAt"] = s.reviewedAt
        container["changedAfterReview"] = s.changedAfterReview
        container["characterSetNote"] = s.characterSetNote
        container["deliveryMark"] = s.deliveryMark?.rawValue
        container["triageNode"] = s.triageNode
        container["operatingPoint"] = s.operatingPoint
        // What the worklist's orders and the flagged filter use, from `StudyRules` (the store only persists it).
        let tier = s.tier
        container["flagged"] = s.isFlagged
        container["worklistTier"] = tier.rawValue
        container["rankWithinDay"] = StudyRules.rankWithinDay(tier: tier, priority: s.priority)
        container["arrivalDay"] = s.arrivalDay
    }

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

/// A GRDB row as the shared builders read it (`StoredValues`).
private struct GRDBStoredValues: StoredValues {
    let row: Row
    func text(_ i: Int) -> String? { row[i] }
    func integer(_ i: Int) -> Int? { row[i] }
    func double(_ i: Int) -> Double? { row[i] }
    func bool(_ i: Int) -> Bool? { row[i] }
    func date(_ i: Int) -> Date? { row[i] }
}

private struct ImageRow: FetchableRecord, MutablePersistableRecord {
    static let databaseTableName = "image"
    /// An image's columns with its study's UID (the public value names its study by UID, the row by id).
    static let selectSQL = "SELECT i.*, s.studyInstanceUID FROM image i JOIN study s ON s.id = i.studyID"
    /// As `selectSQL`, with a node's own copy (its first argument is the node) in place of the image's
    /// file when it kept one: for reading only, never written back.
    static let localSelectSQL = """
        SELECT i.*, s.studyInstanceUID, c.node AS copyNode, c.filePath AS copyPath, c.fileRemovedAt AS copyRemovedAt
        FROM image i JOIN study s ON s.id = i.studyID LEFT JOIN imageCopy c ON c.imageID = i.id AND c.node = ?
        """
    var id: Int64?
    var studyID: Int64
    var image: StudyImage

    init(id: Int64?, studyID: Int64, image: StudyImage) {
        self.id = id
        self.studyID = studyID
        self.image = image
    }

    init(row: Row) throws {
        id = row["id"]
        studyID = row["studyID"]
        var i = StudyImage(studyInstanceUID: row["studyInstanceUID"], sopInstanceUID: row["sopInstanceUID"],
                           seriesInstanceUID: row["seriesInstanceUID"], filePath: row["filePath"], receivedAt: row["receivedAt"],
                           eligible: row["eligible"], eligibilityReason: row["eligibilityReason"])
        i.probability = row["probability"]
        i.fileRemovedAt = row["fileRemovedAt"]
        i.seriesNumber = row["seriesNumber"]
        i.instanceNumber = row["instanceNumber"]
        i.viewPosition = row["viewPosition"]
        i.laterality = row["laterality"]
        i.fileName = row["fileName"]
        i.sopClassUID = row["sopClassUID"]
        i.node = row["node"]
        if let copyNode: String = row["copyNode"] {
            i.node = copyNode
            i.filePath = row["copyPath"]
            i.fileRemovedAt = row["copyRemovedAt"]
        }
        image = i
    }

    func encode(to container: inout PersistenceContainer) throws {
        container["id"] = id
        container["studyID"] = studyID
        container["sopInstanceUID"] = image.sopInstanceUID
        container["seriesInstanceUID"] = image.seriesInstanceUID
        container["filePath"] = image.filePath
        container["receivedAt"] = image.receivedAt
        container["eligible"] = image.eligible
        container["eligibilityReason"] = image.eligibilityReason
        container["probability"] = image.probability
        container["fileRemovedAt"] = image.fileRemovedAt
        container["seriesNumber"] = image.seriesNumber
        container["instanceNumber"] = image.instanceNumber
        container["viewPosition"] = image.viewPosition
        container["laterality"] = image.laterality
        container["fileName"] = image.fileName
        container["sopClassUID"] = image.sopClassUID
        container["node"] = image.node
    }

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}

private struct ReviewRow: FetchableRecord, MutablePersistableRecord {
    static let databaseTableName = "review"
    static let selectSQL = "SELECT r.*, s.studyInstanceUID FROM review r JOIN study s ON s.id = r.studyID"
    var id: Int64?
    var studyID: Int64
    var review: Review

    init(id: Int64?, studyID: Int64, review: Review) {
        self.id = id
        self.studyID = studyID
        self.review = review
    }

    init(row: Row) throws {
        id = row["id"]
        studyID = row["studyID"]
        review = Review(studyInstanceUID: row["studyInstanceUID"], reviewer: row["reviewer"], reviewedAt: row["reviewedAt"],
                        action: try decodeEnum(row, "action"), fromVerdict: try decodeOptionalEnum(row, "fromVerdict"),
                        label: try decodeEnum(row, "label"), note: row["note"], statedReviewer: row["statedReviewer"])
    }

    func encode(to container: inout PersistenceContainer) throws {
        container["id"] = id
        container["studyID"] = studyID
        container["reviewer"] = review.reviewer
        container["reviewedAt"] = review.reviewedAt
        container["action"] = review.action.rawValue
        container["fromVerdict"] = review.fromVerdict?.rawValue
        container["label"] = review.label.rawValue
        container["note"] = review.note
        container["statedReviewer"] = review.statedReviewer
    }

    mutating func didInsert(_ inserted: InsertionSuccess) { id = inserted.rowID }
}
