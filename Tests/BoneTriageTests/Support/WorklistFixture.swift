import BoneTriage
import Foundation

/// A small worklist with hostile names and every state, built through the store's own API.
enum WorklistFixture {
    static let base = Date(timeIntervalSince1970: 1_795_000_000)  // 2026-11-18

    static let uids = (
        flagged: "1.2.826.0.1.3680043.8.498.10001",
        normal: "1.2.826.0.1.3680043.8.498.10002",
        pending: "1.2.826.0.1.3680043.8.498.10003",
        hostile: "1.2.826.0.1.3680043.8.498.10004",
        ct: "1.2.826.0.1.3680043.8.498.10005"
    )

    static let hostileName = "=HYPERLINK(\"http://x\",\"a, b\")^Zoë \"Quote\"\nNewline"

    @discardableResult
    static func add(_ store: WorklistStore, study: String, images: Int, at offset: TimeInterval, name: String? = nil,
                    bodyPart: String? = "HUMERUS", eligible: Bool = true, folder: String = "/spool") throws -> [String] {
        var sops: [String] = []
        for i in 1...images {
            let sop = "\(study).\(i)"
            var a = InstanceArrival(studyInstanceUID: study, sopInstanceUID: sop, seriesInstanceUID: "\(study).0",
                                    filePath: "\(folder)/\(study)/\(i).dcm", receivedAt: base.addingTimeInterval(offset + Double(i)),
                                    eligible: eligible, eligibilityReason: eligible ? nil : "CT is not a radiograph", source: .cstore)
            a.patientName = name ?? "DOE^JANE"
            a.patientID = "PID-\(study.suffix(5))"
            a.accessionNumber = "ACC\(study.suffix(3))"
            a.modality = eligible ? "CR" : "CT"
            a.bodyPart = bodyPart
            a.callingAETitle = "MODALITY1"
            a.peerAddress = "127.0.0.1"
            _ = try store.recordArrival(a)
            sops.append(sop)
        }
        return sops
    }

    static func triage(_ store: WorklistStore, study: String, sops: [String], probabilities: [Double]) throws {
        try store.recordTriage(TriageResult(studyInstanceUID: study, imageProbabilities: Dictionary(uniqueKeysWithValues: zip(sops, probabilities)),
                                            threshold: 0.5, modelID: "humerus-v1", modelHash: "abc123", triagedAt: base.addingTimeInterval(3600)))
    }

    /// Five studies: flagged abnormal, triaged normal, pending, hostile-named abnormal, and a CT (not applicable).
    static func seed(_ store: WorklistStore) throws {
        let f = try add(store, study: uids.flagged, images: 2, at: 0)
        try triage(store, study: uids.flagged, sops: f, probabilities: [0.9, 0.7])
        let n = try add(store, study: uids.normal, images: 3, at: 100, name: "ROE^RICHARD")
        try triage(store, study: uids.normal, sops: n, probabilities: [0.1, 0.2, 0.3])
        try add(store, study: uids.pending, images: 1, at: 200, name: "POE^EDGAR")
        try store.markPending(studyInstanceUID: uids.pending)
        let h = try add(store, study: uids.hostile, images: 1, at: 300, name: hostileName, bodyPart: "-SHOULDER")
        try triage(store, study: uids.hostile, sops: h, probabilities: [0.6])
        try add(store, study: uids.ct, images: 1, at: 400, bodyPart: "CHEST", eligible: false)
        try store.markNotApplicable(studyInstanceUID: uids.ct, reason: "no eligible image (CT)")
    }
}
