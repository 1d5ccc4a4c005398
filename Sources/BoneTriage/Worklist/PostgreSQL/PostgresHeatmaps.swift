import Foundation

// MARK: Heatmaps of `PostgresWorklist` (table `heatmap`, migration v8)

extension PostgresWorklist {
    /// Sets the study's count of images with a heatmap made by its current model, and returns it.
    static func recountHeatmaps(_ c: PostgresConnection, studyID: Int64) throws -> Int {
        let row = try c.execute("""
            UPDATE study SET heatmapCount = (
                SELECT count(*) FROM heatmap h JOIN image i ON i.id = h.imageID
                WHERE i.studyID = study.id AND h.modelHash = study.modelHash AND h.heatmapValues IS NOT NULL)
            WHERE id = $1 RETURNING heatmapCount
            """, [studyID]).first
        return try row?.integer(0) ?? 0
    }

    /// Replaces the image's heatmap and recounts its study's, with the study locked (two nodes making
    /// heatmaps for one study keep its count right).
    public func recordHeatmap(sopInstanceUID: String, _ outcome: HeatmapOutcome, at date: Date) throws {
        try write { c in
            guard let image = try c.execute("SELECT id, studyID FROM image WHERE sopInstanceUID = $1", [sopInstanceUID]).first,
                  let imageID = try image.integer(0), let studyID = try image.integer(1) else {
                throw WorklistError.studyNotFound(handle: sopInstanceUID)
            }
            try c.execute("SELECT 1 FROM study WHERE id = $1 FOR UPDATE", [studyID])
            let h = outcome.heatmap
            try c.execute("""
                INSERT INTO heatmap (imageID, modelHash, gridRows, gridColumns, heatmapValues, method, problem, madeAt)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (imageID) DO UPDATE SET modelHash = excluded.modelHash, gridRows = excluded.gridRows,
                    gridColumns = excluded.gridColumns, heatmapValues = excluded.heatmapValues, method = excluded.method,
                    problem = excluded.problem, madeAt = excluded.madeAt
                """, [imageID, outcome.modelFingerprint, h?.rows, h?.columns, h?.storedValues, h?.method, outcome.reason, date])
            _ = try Self.recountHeatmaps(c, studyID: Int64(studyID))
        }
    }

    public func heatmap(sopInstanceUID: String) throws -> StoredHeatmap? {
        try read { c in
            guard let row = try c.execute("""
                SELECT h.modelHash, h.madeAt, h.heatmapValues, h.gridRows, h.gridColumns, h.method, h.problem
                FROM heatmap h JOIN image i ON i.id = h.imageID WHERE i.sopInstanceUID = $1
                """, [sopInstanceUID]).first else { return nil }
            return try StoredHeatmap(stored: sopInstanceUID, fingerprint: try row.required(0, "modelHash", row.text),
                                     madeAt: try row.required(1, "madeAt", row.date), values: try row.data(2), rows: try row.integer(3),
                                     columns: try row.integer(4), method: row.text(5), problem: row.text(6))
        }
    }

    public func heatmapWork(scope: HeatmapScope, modelFingerprint: String, limit: Int) throws -> [HeatmapWork] {
        guard scope != .none, limit > 0 else { return [] }
        let verdict = scope == .flagged ? "AND s.verdict = '\(Finding.abnormal.rawValue)'" : ""
        return try read { c in
            try c.execute("""
                SELECT s.studyInstanceUID, i.sopInstanceUID, coalesce(c.filePath, i.filePath),
                       CASE WHEN c.imageID IS NULL THEN i.fileRemovedAt ELSE c.fileRemovedAt END, s.modelHash
                FROM study s JOIN image i ON i.studyID = s.id LEFT JOIN imageCopy c ON c.imageID = i.id AND c.node = $3
                WHERE s.state = '\(StudyState.triaged.rawValue)' \(verdict) AND s.modelHash = $1 AND (s.triageNode IS NULL OR s.triageNode = $3)
                  AND i.eligible AND i.probability IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM heatmap h WHERE h.imageID = i.id AND h.modelHash = s.modelHash)
                ORDER BY s.triagedAt DESC, s.id, i.receivedAt, i.id
                LIMIT $2
                """, [modelFingerprint, limit, node]).rows.map { row in
                HeatmapWork(studyInstanceUID: try row.required(0, "studyInstanceUID", row.text), sopInstanceUID: try row.required(1, "sopInstanceUID", row.text),
                            filePath: try row.required(2, "filePath", row.text), fileRemovedAt: try row.date(3), modelFingerprint: try row.required(4, "modelHash", row.text))
            }
        }
    }
}
