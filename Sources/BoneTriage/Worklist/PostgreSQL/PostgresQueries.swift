import Foundation

/// The PostgreSQL worklist's listing, counting and handle queries, with their parameters numbered as
/// they are bound. Each is served by an index of `v6-worklist-order`.
enum PostgresQueries {
    struct Query {
        var sql: String
        var parameters: [(any PostgresParameter)?] = []

        /// Adds a parameter and returns its placeholder.
        mutating func bind(_ value: (any PostgresParameter)?) -> String {
            parameters.append(value)
            return "$\(parameters.count)"
        }
    }

    /// The columns each order sorts by, ending with the row id so that equal keys keep one order (as the
    /// SQLite worklist's; NULL probabilities last, where SQLite puts them).
    static func orderBy(_ sort: WorklistSort) -> String {
        switch sort {
        case .priority: return "worklistTier, arrivalDay DESC, rankWithinDay DESC, firstReceivedAt DESC, id"
        case .arrival: return "firstReceivedAt DESC, id DESC"
        case .probability: return "probability DESC NULLS LAST, firstReceivedAt DESC, id DESC"
        }
    }

    /// The WHERE clause of a filter (order and limit aside), its parameters bound into `query`.
    static func conditions(_ f: WorklistFilter, into query: inout Query) -> String {
        var terms: [String] = []
        if f.flaggedOnly { terms.append("flagged") }
        if !f.states.isEmpty { terms.append("state IN (" + f.states.map { query.bind($0.rawValue) }.joined(separator: ", ") + ")") }
        if let review = f.review { terms.append("reviewState = " + query.bind(review.rawValue)) }
        if let since = f.since { terms.append("firstReceivedAt >= " + query.bind(since)) }
        if let until = f.until { terms.append("firstReceivedAt < " + query.bind(until)) }
        // ASCII letters fold, as SQLite's NOCASE (the columns are COLLATE "C").
        if let part = f.bodyPart { terms.append("lower(bodyPart) = lower(\(query.bind(part))::text)") }
        if let accession = f.accession { terms.append("accessionNumber = " + query.bind(accession)) }
        if let patient = f.patient {
            // A name prefix as a range of the lower(patientName) index (no LIKE: its wildcards are plain text here).
            let id = query.bind(patient), prefix = query.bind(patient), top = query.bind("\u{10FFFF}")
            terms.append("(patientID = \(id) OR (lower(patientName) >= lower(\(prefix)::text) AND lower(patientName) < (lower(\(prefix)::text) || \(top)::text)))")
        }
        return terms.isEmpty ? "" : " WHERE " + terms.joined(separator: " AND ")
    }

    static func listing(_ f: WorklistFilter) -> Query {
        var query = Query(sql: "")
        let whereSQL = conditions(f, into: &query)
        query.sql = PostgresWorklist.studySelect + whereSQL + " ORDER BY " + orderBy(f.sort)
        if let limit = f.limit { query.sql += " LIMIT " + query.bind(max(0, limit)) }
        return query
    }

    static func counting(_ f: WorklistFilter) -> Query {
        var query = Query(sql: "")
        let whereSQL = conditions(f, into: &query)
        query.sql = "SELECT count(*), count(*) FILTER (WHERE flagged) FROM study" + whereSQL
        return query
    }

    /// One lookup of a radiologist's handle (`StudyHandle`).
    static func lookup(_ lookup: StudyHandle.Lookup) -> Query {
        var query = Query(sql: "")
        let select = PostgresWorklist.studySelect + " WHERE "
        switch lookup {
        case let .uid(uid):
            query.sql = select + "studyInstanceUID = " + query.bind(uid)
        case let .accession(accession):
            query.sql = select + "accessionNumber = " + query.bind(accession) + " LIMIT \(StudyHandle.candidateLimit)"
        case let .prefix(shortID, uid):
            var ranges: [String] = []
            if let shortID { ranges.append("(shortID >= \(query.bind(shortID.lower)) AND shortID < \(query.bind(shortID.upper)))") }
            if let uid { ranges.append("(studyInstanceUID >= \(query.bind(uid.lower)) AND studyInstanceUID < \(query.bind(uid.upper)))") }
            query.sql = select + (ranges.isEmpty ? "false" : ranges.joined(separator: " OR ")) + " LIMIT \(StudyHandle.candidateLimit)"
        }
        return query
    }
}
