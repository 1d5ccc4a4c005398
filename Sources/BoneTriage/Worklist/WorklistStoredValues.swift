import Foundation

// What both stores share in reading their rows: a row's values by position, and the worklist's values
// built from them. Each backend selects the columns below in this order and hands its row over through
// `StoredValues`; how a value is kept (SQLite's types, PostgreSQL's text) is the backend's business.

/// One row's values by column position, as a store read them.
public protocol StoredValues {
    func text(_ i: Int) throws -> String?
    func integer(_ i: Int) throws -> Int?
    func double(_ i: Int) throws -> Double?
    func bool(_ i: Int) throws -> Bool?
    func date(_ i: Int) throws -> Date?
}

/// A stored value this BoneTriage cannot read: a damaged database, or one written by something else.
public struct StoredValueError: Error, CustomStringConvertible, Sendable, Equatable {
    public var column: String
    /// The value (or its start); nil when a value is missing where one is required.
    public var value: String?

    public var description: String {
        guard let value else { return "column \(column) is empty, which this BoneTriage does not expect" }
        return "column \(column) holds '\(value)', which this BoneTriage does not know"
    }
}

extension StoredValues {
    func required<T>(_ i: Int, _ column: String, _ read: (Int) throws -> T?) throws -> T {
        guard let value = try read(i) else { throw StoredValueError(column: column, value: nil) }
        return value
    }

    /// A text column that holds one of an enum's raw values, or nothing.
    func choice<E: RawRepresentable>(_ i: Int, _ column: String) throws -> E? where E.RawValue == String {
        guard let raw = try text(i) else { return nil }
        guard let value = E(rawValue: raw) else { throw StoredValueError(column: column, value: raw) }
        return value
    }

    func requiredChoice<E: RawRepresentable>(_ i: Int, _ column: String) throws -> E where E.RawValue == String {
        guard let value: E = try choice(i, column) else { throw StoredValueError(column: column, value: nil) }
        return value
    }
}

/// A study's stored columns, in the order `Study(stored:)` reads them; the row id comes first.
enum StoredStudy {
    static let columns = ["id", "studyInstanceUID", "shortID", "source", "firstReceivedAt", "arrivalDay", "patientID", "patientName",
                          "accessionNumber", "studyDate", "modality", "bodyPart", "studyDescription", "callingAETitle", "peerAddress",
                          "lastReceivedAt", "imageCount", "eligibleImageCount", "state", "stateReason", "probability", "verdict",
                          "threshold", "modelID", "modelHash", "triagedAt", "priority", "reviewState", "reviewLabel", "reviewedAt",
                          "changedAfterReview", "characterSetNote", "heatmapCount", "deliveryMark", "triageNode",
                          "operatingPoint"]
}

extension Study {
    /// A study from a row of `StoredStudy.columns` (a listing reads 100,000: by position, not by name).
    init(stored v: some StoredValues) throws {
        let c = StoredStudy.columns
        self.init(studyInstanceUID: try v.required(1, c[1], v.text), shortID: try v.required(2, c[2], v.text),
                  source: try v.requiredChoice(3, c[3]), receivedAt: try v.required(4, c[4], v.date), arrivalDay: try v.required(5, c[5], v.integer))
        patientID = try v.text(6)
        patientName = try v.text(7)
        accessionNumber = try v.text(8)
        studyDate = try v.text(9)
        modality = try v.text(10)
        bodyPart = try v.text(11)
        studyDescription = try v.text(12)
        callingAETitle = try v.text(13)
        peerAddress = try v.text(14)
        lastReceivedAt = try v.required(15, c[15], v.date)
        imageCount = try v.required(16, c[16], v.integer)
        eligibleImageCount = try v.required(17, c[17], v.integer)
        state = try v.requiredChoice(18, c[18])
        stateReason = try v.text(19)
        probability = try v.double(20)
        verdict = try v.choice(21, c[21])
        threshold = try v.double(22)
        modelID = try v.text(23)
        modelHash = try v.text(24)
        triagedAt = try v.date(25)
        priority = try v.required(26, c[26], v.integer)
        reviewState = try v.requiredChoice(27, c[27])
        reviewLabel = try v.choice(28, c[28])
        reviewedAt = try v.date(29)
        changedAfterReview = try v.required(30, c[30], v.bool)
        characterSetNote = try v.text(31)
        heatmapCount = try v.integer(32) ?? 0
        deliveryMark = try v.choice(33, c[33])
        triageNode = try v.text(34)
        operatingPoint = try v.text(35)
    }
}

/// The study lookups a radiologist's handle means, in order: the whole Study Instance UID, then an exact
/// accession number, then prefixes of the short ID (hexadecimal) and of the UID (digits and dots) as
/// ranges of their sorted values. Each store turns them into its queries; `resolve` decides from the matches.
enum StudyHandle {
    enum Lookup: Equatable {
        case uid(String)
        case accession(String)
        /// Half-open ranges [lower, upper) of the short ID and of the UID (either may be absent).
        case prefix(shortID: (lower: String, upper: String)?, uid: (lower: String, upper: String)?)

        static func == (a: Lookup, b: Lookup) -> Bool {
            switch (a, b) {
            case let (.uid(x), .uid(y)), let (.accession(x), .accession(y)): return x == y
            case let (.prefix(s1, u1), .prefix(s2, u2)):
                return s1?.lower == s2?.lower && s1?.upper == s2?.upper && u1?.lower == u2?.lower && u1?.upper == u2?.upper
            default: return false
            }
        }
    }

    /// At most this many candidates are fetched for an ambiguous handle.
    static let candidateLimit = 50

    static func isIDOrUIDPrefix(_ handle: String) -> Bool {
        handle.count >= 4 && handle.allSatisfy { $0.isASCII && ($0.isHexDigit || $0 == ".") }
    }

    static func lookups(_ handle: String) -> [Lookup] {
        var lookups: [Lookup] = [.uid(handle), .accession(handle)]
        guard isIDOrUIDPrefix(handle) else { return lookups }
        // Short IDs are lowercase hexadecimal: every one that starts with the prefix sorts below prefix + "g".
        let short = handle.allSatisfy(\.isHexDigit) ? (handle.lowercased(), handle.lowercased() + "g") : nil
        // UIDs are digits and dots, which all sort below ":".
        let uid = handle.allSatisfy({ $0.isNumber || $0 == "." }) ? (handle, handle + ":") : nil
        lookups.append(.prefix(shortID: short, uid: uid))
        return lookups
    }

    /// The one study a handle names, from the studies each lookup matches (`matches` runs the store's query).
    static func resolve(_ raw: String, matches: (Lookup) throws -> [Study]) throws -> Study {
        let handle = raw.trimmingCharacters(in: .whitespaces)
        for lookup in lookups(handle) {
            let found = try matches(lookup).sorted { $0.shortID < $1.shortID }
            switch (lookup, found.count) {
            case (_, 0): continue
            case (_, 1): return found[0]
            case (.accession, _): throw WorklistError.ambiguousAccession(accession: handle, candidates: found.map(\.shortID))
            default: throw WorklistError.ambiguousStudy(handle: handle, candidates: found.map(\.shortID))
            }
        }
        if isIDOrUIDPrefix(handle) { throw WorklistError.studyNotFound(handle: handle) }
        throw WorklistError.invalidHandle(raw)
    }
}

extension ShortIDPrefixes {
    /// The prefixes of short IDs, each given with its neighbours in sorted order (`length(of:previous:next:)`).
    static func collect(minimumLength: Int, _ walk: ((_ id: String, _ previous: String?, _ next: String?) -> Void) throws -> Void) rethrows -> ShortIDPrefixes {
        var longer: [String: Int] = [:]
        try walk { id, previous, next in
            let length = length(of: id, previous: previous, next: next, minimumLength: minimumLength)
            if length > minimumLength { longer[id] = length }
        }
        return ShortIDPrefixes(minimumLength: minimumLength, longer: longer)
    }

    /// Every study's prefixes from all short IDs in sorted order, each against the one before and after it.
    static func fromSorted(_ ids: some Sequence<String>, minimumLength: Int) -> ShortIDPrefixes {
        collect(minimumLength: minimumLength) { note in
            var iterator = ids.makeIterator()
            var (previous, current): (String?, String?) = (nil, iterator.next())
            while let id = current {
                let next = iterator.next()
                note(id, previous, next)
                (previous, current) = (id, next)
            }
        }
    }
}
