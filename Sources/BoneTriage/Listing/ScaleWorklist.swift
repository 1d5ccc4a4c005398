import Foundation

/// A synthetic worklist at hospital scale for the listing benchmark, written through the store's public
/// API: months of studies (about 2.42 images each), 72% reviewed, about 3% flagged, 30% from the drop
/// folder in MURA layout, the rest by C-STORE with accession numbers and patient IDs. Deterministic.
public enum ScaleWorklist {
    public struct Summary: Sendable, CustomStringConvertible {
        public var studies = 0, images = 0, reviews = 0, flagged = 0
        public var seconds = 0.0
        public var description: String {
            "\(studies) studies, \(images) images, \(reviews) reviews, \(flagged) flagged, written in \(String(format: "%.1f", seconds)) s"
        }
    }

    static let parts = ["HUMERUS", "ELBOW", "FOREARM", "WRIST", "HAND", "FINGER", "SHOULDER"]
    static let families = ["MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND", "LEROY", "MOREAU",
                           "SIMON", "LAURENT", "LEFEBVRE", "MICHEL", "GARCIA", "DAVID", "BERTRAND", "ROUX", "VINCENT", "FOURNIER"]
    static let givens = ["JANE", "JOHN", "MARIE", "PIERRE", "ANNA", "LUC", "SOPHIE", "PAUL", "CLAIRE", "HUGO"]

    /// SplitMix64: the same worklist on every machine.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    }

    public static func build(into store: any WorklistStore, studies n: Int, now: Date = Date(), days: Int = 180,
                             progress: (String) -> Void = { _ in }) throws -> Summary {
        let started = Date()
        var random = Random(state: 12)
        var summary = Summary()
        let span = Double(days) * 86_400
        let reviewedBelow = Int(Double(n) * 0.72)
        let receivingFrom = n - min(30, n / 100)
        var batch: [InstanceArrival] = []
        var plans: [(uid: String, sops: [String], probability: Double, reviewed: Bool)] = []
        func flush() throws {
            _ = try store.recordArrivals(batch)
            batch.removeAll(keepingCapacity: true)
            // Reviews go in three batches (confirmed, overridden to normal, to abnormal), each one transaction.
            var confirmed: [String] = [], overridden: [Finding: [String]] = [:]
            for plan in plans where plan.probability >= 0 {
                try store.recordTriage(TriageResult(studyInstanceUID: plan.uid, imageProbabilities: Dictionary(uniqueKeysWithValues: plan.sops.map { ($0, plan.probability) }),
                                                    threshold: 0.5, modelID: "humerus-v1", modelHash: "bench", triagedAt: now))
                guard plan.reviewed else { continue }
                let verdict: Finding = plan.probability >= 0.5 ? .abnormal : .normal
                if random.unit() < 0.15 {
                    overridden[verdict == .abnormal ? .normal : .abnormal, default: []].append(plan.uid)
                } else {
                    confirmed.append(plan.uid)
                }
            }
            let reviewer = ReviewerIdentity(login: "bench")
            if !confirmed.isEmpty {
                summary.reviews += try store.recordReviews(studyInstanceUIDs: confirmed, by: reviewer, action: .confirm, label: nil, note: nil, at: now).count
            }
            for (label, uids) in overridden.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                summary.reviews += try store.recordReviews(studyInstanceUIDs: uids, by: reviewer, action: .override, label: label, note: nil, at: now).count
            }
            plans.removeAll(keepingCapacity: true)
        }
        for i in 0..<n {
            let uid = "1.2.826.0.1.3680043.10.1\(String(format: "%07d", i))"
            let arrived = now.addingTimeInterval(-span * Double(n - i) / Double(n))
            let images = i % 50 < 21 ? 3 : 2
            let part = parts[i % parts.count]
            let dropFolder = i % 10 < 3
            var sops: [String] = []
            for k in 1...images {
                let sop = "\(uid).\(k)"
                var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: sop, seriesInstanceUID: "\(uid).0",
                                        filePath: "/var/lib/bonetriage/archive/\(uid)/\(k).\(dropFolder ? "png" : "dcm")",
                                        receivedAt: arrived.addingTimeInterval(Double(k)), eligible: true, source: dropFolder ? .dropFolder : .cstore)
                if dropFolder {
                    a.patientID = "patient\(String(format: "%05d", i / 2))"
                    a.studyDescription = "train/XR_\(part)/patient\(String(format: "%05d", i / 2))/study\(i % 2 + 1)_positive"
                    a.modality = "OT"
                } else {
                    a.patientID = "P\(String(format: "%07d", i / 3))"
                    a.patientName = "\(families[(i / 3) % families.count])^\(givens[(i / 7) % givens.count])"
                    a.accessionNumber = "A\(String(format: "%08d", i))"
                    a.studyDate = WorklistPresentation.studyDateDA(arrived)
                    a.modality = "CR"
                    a.callingAETitle = "MODALITY1"
                    a.peerAddress = "10.0.0.7"
                    a.studyDescription = "XR \(part) 2 VIEWS"
                }
                a.bodyPart = part
                batch.append(a)
                sops.append(sop)
            }
            summary.images += images
            let reviewed = i < reviewedBelow
            let abnormal = random.unit() < (reviewed ? 0.35 : 0.107)
            let probability = i >= receivingFrom ? -1 : (abnormal ? 0.5 + 0.5 * random.unit() : 0.5 * random.unit())
            if probability >= 0.5 && !reviewed { summary.flagged += 1 }
            plans.append((uid, sops, probability, reviewed))
            if plans.count == 1000 {
                try flush()
                progress("\(i + 1) studies")
            }
        }
        try flush()
        summary.studies = n
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }
}
