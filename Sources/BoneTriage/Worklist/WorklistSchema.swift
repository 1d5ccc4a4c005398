import Foundation
import GRDB

/// The worklist's schema as named, forward-only migrations. Never edit a shipped migration: add one.
public enum WorklistSchema {
    public static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        // v1: studies and their images, written by the daemon.
        migrator.registerMigration("v1-studies-and-images") { db in
            try db.create(table: "study") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("studyInstanceUID", .text).notNull().unique()
                t.column("shortID", .text).notNull().indexed()
                t.column("patientID", .text)
                t.column("patientName", .text)
                t.column("accessionNumber", .text)
                t.column("studyDate", .text)
                t.column("modality", .text)
                t.column("bodyPart", .text)
                t.column("studyDescription", .text)
                t.column("source", .text).notNull()
                t.column("callingAETitle", .text)
                t.column("peerAddress", .text)
                t.column("firstReceivedAt", .datetime).notNull()
                t.column("lastReceivedAt", .datetime).notNull()
                t.column("imageCount", .integer).notNull().defaults(to: 0)
                t.column("eligibleImageCount", .integer).notNull().defaults(to: 0)
                t.column("state", .text).notNull()
                t.column("stateReason", .text)
                t.column("probability", .double)
                t.column("verdict", .text)
                t.column("threshold", .double)
                t.column("modelID", .text)
                t.column("modelHash", .text)
                t.column("triagedAt", .datetime)
                t.column("priority", .integer).notNull().defaults(to: 0)
            }
            try db.create(table: "image") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("studyID", .integer).notNull().indexed().references("study", onDelete: .cascade)
                t.column("sopInstanceUID", .text).notNull().unique()
                t.column("seriesInstanceUID", .text)
                t.column("filePath", .text).notNull()
                t.column("receivedAt", .datetime).notNull()
                t.column("eligible", .boolean).notNull()
                t.column("eligibilityReason", .text)
                t.column("probability", .double)
            }
        }
        // v2: radiologists' reviews, an append-only audit trail, and the review state on each study.
        migrator.registerMigration("v2-reviews") { db in
            try db.alter(table: "study") { t in
                t.add(column: "reviewState", .text).notNull().defaults(to: ReviewState.unreviewed.rawValue)
                t.add(column: "reviewLabel", .text)
                t.add(column: "reviewedAt", .datetime)
                t.add(column: "changedAfterReview", .boolean).notNull().defaults(to: false)
            }
            try db.create(table: "review") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("studyID", .integer).notNull().indexed().references("study", onDelete: .restrict)
                t.column("reviewer", .text).notNull()
                t.column("reviewedAt", .datetime).notNull()
                t.column("action", .text).notNull()
                t.column("fromVerdict", .text)
                t.column("label", .text).notNull()
                t.column("note", .text)
            }
            try db.execute(sql: """
                CREATE TRIGGER review_is_append_only_update BEFORE UPDATE ON review
                BEGIN SELECT RAISE(ABORT, 'the review audit trail is append-only'); END;
                CREATE TRIGGER review_is_append_only_delete BEFORE DELETE ON review
                BEGIN SELECT RAISE(ABORT, 'the review audit trail is append-only'); END;
                CREATE INDEX study_worklist_order ON study(priority DESC, firstReceivedAt);
                """)
        }
        // v3: triages started and not finished. A row left behind means the process died during that
        // study's triage; a study that keeps killing the process is set aside instead of looping.
        migrator.registerMigration("v3-triage-attempts") { db in
            try db.create(table: "triageAttempt") { t in
                t.column("studyID", .integer).primaryKey().references("study", onDelete: .cascade)
                t.column("attempts", .integer).notNull()
                t.column("startedAt", .datetime).notNull()
            }
        }
        // v4: storage retention removes the files of finished studies; the rows stay, with the date.
        migrator.registerMigration("v4-file-retention") { db in
            try db.alter(table: "image") { t in
                t.add(column: "fileRemovedAt", .datetime)
            }
            try db.create(index: "image_file_path", on: "image", columns: ["filePath"])
        }
        // v5: why a study's text is kept as received (its Specific Character Set could not be converted).
        migrator.registerMigration("v5-character-set-note") { db in
            try db.alter(table: "study") { t in
                t.add(column: "characterSetNote", .text)
            }
        }
        // v6: the worklist's orders and lookups, each served by an index. The store writes a study's
        // flagged mark, tier and rank within a day (`StudyRules`) with the study, and its local arrival day
        // when it arrives; existing rows are filled here from their columns.
        migrator.registerMigration("v6-worklist-order") { db in
            try db.alter(table: "study") { t in
                t.add(column: "flagged", .boolean).notNull().defaults(to: false)
                t.add(column: "worklistTier", .integer).notNull().defaults(to: WorklistTier.other.rawValue)
                t.add(column: "rankWithinDay", .integer).notNull().defaults(to: 0)
                t.add(column: "arrivalDay", .integer).notNull().defaults(to: 0)
            }
            let rows = try Row.fetchCursor(db, sql: "SELECT id, verdict, reviewState, changedAfterReview, priority, firstReceivedAt FROM study")
            let update = try db.makeStatement(sql: "UPDATE study SET flagged = ?, worklistTier = ?, rankWithinDay = ?, arrivalDay = ? WHERE id = ?")
            while let row = try rows.next() {
                let verdict = (row["verdict"] as String?).flatMap(Finding.init(rawValue:))
                let review = (row["reviewState"] as String?).flatMap(ReviewState.init(rawValue:)) ?? .unreviewed
                let changed: Bool = row["changedAfterReview"]
                let tier = StudyRules.tier(verdict: verdict, reviewState: review, changedAfterReview: changed)
                let arrived: Date = row["firstReceivedAt"]
                let id: Int64 = row["id"]
                try update.execute(arguments: [StudyRules.isFlagged(verdict: verdict, reviewState: review, changedAfterReview: changed),
                                                tier.rawValue, StudyRules.rankWithinDay(tier: tier, priority: row["priority"]),
                                                StudyRules.arrivalDay(arrived), id])
            }
            try db.execute(sql: """
                DROP INDEX study_worklist_order;
                CREATE INDEX study_order_priority ON study(worklistTier, arrivalDay DESC, rankWithinDay DESC, firstReceivedAt DESC);
                CREATE INDEX study_order_flagged ON study(flagged, worklistTier, arrivalDay DESC, rankWithinDay DESC, firstReceivedAt DESC);
                CREATE INDEX study_order_arrival ON study(firstReceivedAt);
                CREATE INDEX study_order_probability ON study(probability, firstReceivedAt);
                CREATE INDEX study_accession ON study(accessionNumber);
                CREATE INDEX study_patient_id ON study(patientID);
                CREATE INDEX study_patient_name ON study(patientName COLLATE NOCASE);
                CREATE INDEX study_state ON study(state);
                CREATE INDEX study_review_state ON study(reviewState);
                CREATE INDEX study_body_part ON study(bodyPart COLLATE NOCASE);
                """)
        }
        // v7: where each image is in the PACS (series and instance numbers), its view and laterality, the
        // name it had in the drop folder; and a name a reviewer states beside their login.
        migrator.registerMigration("v7-image-details-and-stated-reviewer") { db in
            try db.alter(table: "image") { t in
                t.add(column: "seriesNumber", .integer)
                t.add(column: "instanceNumber", .integer)
                t.add(column: "viewPosition", .text)
                t.add(column: "laterality", .text)
                t.add(column: "fileName", .text)
            }
            try db.alter(table: "review") { t in
                t.add(column: "statedReviewer", .text)
            }
        }
        // v8: per image, its heatmap (where the model looked), or why none could be made, with the model
        // it was made with; per study, how many of its images have one made by its current model (kept
        // with the study for `list`, recounted when a heatmap is recorded and when the study is triaged).
        migrator.registerMigration("v8-heatmaps") { db in
            try db.create(table: "heatmap") { t in
                t.column("imageID", .integer).primaryKey().references("image", onDelete: .cascade)
                t.column("modelHash", .text).notNull()
                t.column("gridRows", .integer)
                t.column("gridColumns", .integer)
                t.column("heatmapValues", .blob)
                t.column("method", .text)
                t.column("problem", .text)
                t.column("madeAt", .datetime).notNull()
            }
            try db.alter(table: "study") { t in
                t.add(column: "heatmapCount", .integer).notNull().defaults(to: 0)
            }
        }
        // v9: the results outbox. Each result object (a triage report, a Secondary Capture image) gets its
        // identity when queued, with the verdict or review that made it; its file is built once; each
        // destination's delivery is kept (state, attempts, next attempt, last error). Each image's SOP
        // Class UID too, which a report's references need.
        migrator.registerMigration("v9-results-outbox") { db in
            try db.alter(table: "image") { t in
                t.add(column: "sopClassUID", .text)
            }
            try db.alter(table: "study") { t in
                t.add(column: "deliveryMark", .text)
            }
            try db.create(table: "resultObject") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("studyID", .integer).notNull().indexed().references("study", onDelete: .restrict)
                t.column("kind", .text).notNull()
                t.column("sopInstanceUID", .text).notNull().unique()
                t.column("seriesInstanceUID", .text).notNull()
                t.column("seriesNumber", .integer).notNull()
                t.column("instanceNumber", .integer).notNull()
                t.column("sourceSOPInstanceUID", .text)
                t.column("reviewID", .integer).references("review", onDelete: .restrict)
                t.column("replacesID", .integer).references("resultObject", onDelete: .restrict)
                t.column("queuedAt", .datetime).notNull()
                t.column("filePath", .text)
                t.column("builtAt", .datetime)
                t.column("buildProblem", .text)
                t.column("fileRemovedAt", .datetime)
            }
            try db.create(table: "resultDelivery") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("objectID", .integer).notNull().references("resultObject", onDelete: .restrict)
                t.column("entryID", .text).notNull().unique()
                t.column("destination", .text).notNull()
                t.column("state", .text).notNull()
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("nextAttemptAt", .datetime)
                t.column("lastError", .text)
                t.column("deliveredAt", .datetime)
                t.column("droppedBy", .text)
                t.column("droppedAt", .datetime)
                t.uniqueKey(["objectID", "destination"])
            }
            try db.execute(sql: """
                CREATE INDEX result_object_awaiting_build ON resultObject(id) WHERE filePath IS NULL AND buildProblem IS NULL;
                CREATE INDEX result_object_file ON resultObject(filePath);
                CREATE INDEX result_delivery_due ON resultDelivery(state, nextAttemptAt);
                """)
        }
        // v10: builds of a result object begun and not ended (the daemon died while building it), so that
        // an object whose file or picture crashes the daemon is given up instead of crashing it again.
        migrator.registerMigration("v10-result-build-attempts") { db in
            try db.alter(table: "resultObject") { t in
                t.add(column: "buildAttempts", .integer).notNull().defaults(to: 0)
            }
        }
        // v11: several nodes on one worklist. The node that recorded each image (its file is on that node's
        // disk), the copies other nodes kept of the same instance, the node holding an open triage claim,
        // and the node that recorded a study's outcome (it makes the heatmaps and results). NULL: before
        // nodes were kept, a single node's.
        migrator.registerMigration("v11-triage-nodes") { db in
            try db.execute(sql: """
                ALTER TABLE image ADD COLUMN node TEXT;
                ALTER TABLE study ADD COLUMN triageNode TEXT;
                ALTER TABLE triageAttempt ADD COLUMN node TEXT;
                CREATE TABLE imageCopy (
                    imageID INTEGER NOT NULL REFERENCES image(id) ON DELETE CASCADE,
                    node TEXT NOT NULL,
                    filePath TEXT NOT NULL,
                    receivedAt DATETIME NOT NULL,
                    fileRemovedAt DATETIME,
                    PRIMARY KEY (imageID, node)
                );
                CREATE INDEX image_copy_file ON imageCopy(node, filePath);
                """)
        }
        // v12: the operating point a study's verdict came from (`OperatingPoint.verdictSource`), as the
        // review CLI and the triage report name it.
        migrator.registerMigration("v12-operating-point") { db in
            try db.alter(table: "study") { t in
                t.add(column: "operatingPoint", .text)
            }
        }
        // v13: the node whose disk has, or is to have, each result object's file: the node that queued it
        // (the study's triage node), then the node that built it. It builds and delivers the object; a
        // re-triage on another node leaves built objects with their node and passes on those not yet built.
        // Existing rows get their study's triage node, as it stood; NULL: the study's triage node, as before.
        migrator.registerMigration("v13-result-object-node") { db in
            try db.execute(sql: """
                ALTER TABLE resultObject ADD COLUMN node TEXT;
                UPDATE resultObject SET node = (SELECT triageNode FROM study WHERE study.id = resultObject.studyID);
                """)
        }
        return migrator
    }
}
