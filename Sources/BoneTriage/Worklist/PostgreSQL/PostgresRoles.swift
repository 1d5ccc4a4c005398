import Foundation

/// The database roles of a shared PostgreSQL worklist, enforced by the server itself:
/// - the daemon's login owns the schema (it creates and upgrades it) and writes studies and results;
/// - `bonetriage_reviewer` (a group role; each radiologist's own login is a member) reads everything and
///   records reviews: it may insert audit-trail entries (never change or remove one: the trail's triggers
///   refuse that to everyone) and the updated reports a review queues, and update only a study's review
///   columns, never what the model found;
/// - `bonetriage_reader` reads: `list`, `show`, `export`, `outbox list`.
/// The administrator creates the two group roles once (SQL in the README); the daemon grants them what
/// they need each time it opens the worklist (and `bonetriage worklist migrate` does), so tables added by
/// later migrations are covered too. Roles that do not exist are skipped.
enum PostgresRoles {
    static let reviewer = "bonetriage_reviewer"
    static let reader = "bonetriage_reader"

    /// Every table of the schema.
    static let tables = ["study", "image", "imageCopy", "review", "triageAttempt", "heatmap", "resultObject", "resultDelivery", PostgresSchema.migrationTable]
    /// What a review changes on a study (`PostgresWorklist.updateReview`, and the outbox's delivery mark).
    static let reviewColumns = ["reviewState", "reviewLabel", "reviewedAt", "changedAfterReview", "flagged", "worklistTier", "rankWithinDay",
                                "deliveryMark"]

    /// The statements that give `role` its rights (nothing more: earlier grants are revoked first).
    static func statements(for role: String) -> [String] {
        let all = tables.joined(separator: ", ")
        var sql = ["REVOKE ALL ON \(all) FROM \(role)", "GRANT SELECT ON \(all) TO \(role)"]
        if role == reviewer {
            sql.append("GRANT INSERT ON review, resultObject, resultDelivery TO \(role)")
            sql.append("GRANT UPDATE (\(reviewColumns.joined(separator: ", "))) ON study TO \(role)")
        }
        return sql
    }

    /// Grants the group roles that exist their rights; returns their names. Only the schema's owner may:
    /// a daemon whose login does not own the tables (the administrator created them as another role)
    /// grants nothing, and the owner's grants stand.
    @discardableResult
    static func grant(_ c: PostgresConnection) throws -> [String] {
        let owns = try c.execute("SELECT pg_has_role(current_user, relowner, 'MEMBER') FROM pg_class WHERE oid = 'study'::regclass").first?.bool(0) ?? false
        guard owns else { return [] }
        let existing = try c.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[]) ORDER BY rolname",
                                     ["{\(reviewer),\(reader)}"]).rows.compactMap { $0.text(0) }
        for role in existing {
            for statement in statements(for: role) { try c.execute(statement) }
        }
        return existing
    }
}
