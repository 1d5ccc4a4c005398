import BoneTriage
import Foundation
import Logging

/// An `InstanceIntake` over a spool, a quarantine and a worklist in a temporary folder: what the
/// intake tests feed C-STORE instances and dropped files to.
struct IntakeHarness {
    let dir: TemporaryDirectory
    let intake: InstanceIntake
    let worklist: SQLiteWorklist

    init(headers: any HeaderReader = InProcessHeaderReader()) throws {
        dir = try TemporaryDirectory()
        let spool = Spool(root: dir.path("spool"))
        _ = try spool.prepare()
        let quarantine = Quarantine(root: dir.path("quarantine"))
        try quarantine.prepare()
        worklist = try SQLiteWorklist(path: dir.path("w.sqlite"), create: true)
        intake = InstanceIntake(spool: spool, quarantine: quarantine, worklist: worklist, logger: Logger(label: "test"),
                                headers: headers, notify: { _ in })
    }

    /// `w` as a C-STORE from PACS would leave it (written into the spool's `.incoming`), given to the
    /// intake; the status it answers.
    func receive(_ w: DicomWriter, emptyDataset: Bool = false) throws -> StoreStatus {
        let received = intake.spool.temporaryPath(tag: "cstore")
        try w.write(to: received, emptyDataset: emptyDataset)
        return intake.store(ReceivedInstance(temporaryPath: received, sopClassUID: w.sopClassUID, sopInstanceUID: w.sopInstanceUID,
                                             callingAETitle: "PACS", peerAddress: "127.0.0.1"))
    }

    /// Every `.reason` file in the quarantine.
    func reasons() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.path("quarantine")).filter { $0.hasSuffix(".reason") }
            .map { try String(contentsOfFile: dir.path("quarantine") + "/" + $0, encoding: .utf8) }
    }
}
