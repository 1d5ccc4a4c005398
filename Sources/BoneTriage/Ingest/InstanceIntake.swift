import Foundation
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The C-STORE status BoneTriage answers (the README's conformance table lists them).
public enum StoreStatus: UInt16, Sendable {
    case success = 0x0000
    /// The spool could not take the file (disk full, folder not writable): the sender should retry later.
    case outOfResources = 0xA700
    /// The file is in the spool but the worklist could not record it (database locked or unwritable).
    case worklistUnavailable = 0xA701
    /// The dataset's SOP Instance UID is not the one the C-STORE request announced.
    case datasetDoesNotMatch = 0xA900
    /// Not a DICOM dataset DCMTK can parse, or one without a Study or SOP Instance UID.
    case cannotUnderstand = 0xC000
}

/// One dataset received over C-STORE, already fsync'd in the spool's incoming folder.
public struct ReceivedInstance: Sendable {
    public var temporaryPath: String
    public var sopClassUID: String
    public var sopInstanceUID: String
    public var callingAETitle: String
    public var peerAddress: String

    public init(temporaryPath: String, sopClassUID: String, sopInstanceUID: String, callingAETitle: String, peerAddress: String) {
        self.temporaryPath = temporaryPath
        self.sopClassUID = sopClassUID
        self.sopInstanceUID = sopInstanceUID
        self.callingAETitle = callingAETitle
        self.peerAddress = peerAddress
    }
}

/// An instance now durable in the spool and recorded in the worklist: what the study assembler needs.
public struct ArrivalNotice: Sendable, Equatable {
    public var studyInstanceUID: String
    public var sopInstanceUID: String
    public var receivedAt: Date
    public var expectedInstances: Int?

    public init(studyInstanceUID: String, sopInstanceUID: String, receivedAt: Date, expectedInstances: Int?) {
        self.studyInstanceUID = studyInstanceUID
        self.sopInstanceUID = sopInstanceUID
        self.receivedAt = receivedAt
        self.expectedInstances = expectedInstances
    }
}

/// What became of a file dropped into the drop folder.
public enum DropOutcome: Equatable, Sendable {
    case recorded(ArrivalNotice)
    case duplicate
    case quarantined(path: String, reason: String)
    /// The file vanished or could not be moved; it stays where it is and is tried again at the next start.
    case leftInPlace(reason: String)
}

/// Takes every arriving file (C-STORE or drop folder) through the same steps: read its header, put it
/// durably in the spool, record it in the worklist, then tell the study assembler. Unreadable files go
/// to quarantine with their reason. Thread-safe: called from association threads and the watcher.
public final class InstanceIntake: Sendable {
    public let spool: Spool
    public let quarantine: Quarantine
    let worklist: any WorklistStore
    let logger: Logger
    let notify: @Sendable (ArrivalNotice) -> Void
    let maximumPixels: UInt64
    /// Where headers are read and PNG files checked (the daemon's isolated decoder process).
    let headers: any HeaderReader
    /// Set when a file was left in the spool without its worklist row (the worklist was locked or away).
    private let unrecordedFiles = Atomic<Bool>(false)

    public init(spool: Spool, quarantine: Quarantine, worklist: any WorklistStore, logger: Logger,
                maximumPixels: UInt64 = DicomReader.defaultMaximumPixels, headers: any HeaderReader = InProcessHeaderReader(),
                notify: @escaping @Sendable (ArrivalNotice) -> Void) {
        self.maximumPixels = maximumPixels
        self.headers = headers
        self.spool = spool
        self.quarantine = quarantine
        self.worklist = worklist
        self.logger = logger
        self.notify = notify
    }

    // MARK: C-STORE

    public func store(_ received: ReceivedInstance) -> StoreStatus {
        let metadata: DicomMetadata
        do {
            metadata = try headers.metadata(path: received.temporaryPath)
        } catch {
            // The reason names no temporary path: the file is quarantined under its SOP Instance UID.
            if case let .notDICOM(_, reason) = error, reason == DicomReader.emptyDatasetReason {
                return refuse(received, .cannotUnderstand, reason: "the C-STORE carried an empty dataset (no attribute at all, so no Study "
                              + "or SOP Instance UID); the sender should send the instance's attributes")
            }
            return refuse(received, .cannotUnderstand, reason: error.explanation)
        }
        guard let study = metadata.studyInstanceUID, !study.isEmpty else {
            return refuse(received, .cannotUnderstand, reason: "the dataset has no Study Instance UID (0020,000D)")
        }
        let sop = metadata.sopInstanceUID ?? ""
        guard sop == received.sopInstanceUID else {
            return refuse(received, .datasetDoesNotMatch,
                          reason: sop.isEmpty ? "the dataset has no SOP Instance UID (0008,0018); the request announced '\(received.sopInstanceUID)'"
                              : "the dataset's SOP Instance UID '\(sop)' differs from the request's '\(received.sopInstanceUID)'")
        }
        let placement: Spool.Placement
        do {
            placement = try spool.place(temporary: received.temporaryPath, study: study, instance: sop, fileExtension: "dcm")
        } catch {
            unlink(received.temporaryPath)
            logger.error("C-STORE answered 0xA700 (out of resources): \(error)")
            return .outOfResources
        }
        var arrival = Self.arrival(metadata, study: study, sop: sop, path: placement.path, source: .cstore)
        arrival.callingAETitle = received.callingAETitle
        arrival.peerAddress = received.peerAddress
        do {
            if try worklist.recordArrival(arrival) == .duplicate {
                discardCopy(placement, of: sop)
                logger.info("repeated instance acknowledged and stored once", metadata: ["study": "\(Study.shortID(for: study))"])
                return .success
            }
        } catch {
            // The file stays in the spool under its final name: the sender's retry finds it there, and
            // the daemon records it itself once the worklist is back (`adoptUnrecordedFiles`).
            unrecordedFiles.store(true, ordering: .relaxed)
            logger.error("C-STORE answered 0xA701: the worklist could not record the instance: \(error)")
            return .worklistUnavailable
        }
        logger.debug("instance stored", metadata: ["study": "\(Study.shortID(for: study))", "path": "\(placement.path)"])
        notify(ArrivalNotice(studyInstanceUID: study, sopInstanceUID: sop, receivedAt: arrival.receivedAt,
                             expectedInstances: metadata.numberOfStudyRelatedInstances))
        return .success
    }

    private func refuse(_ received: ReceivedInstance, _ status: StoreStatus, reason: String) -> StoreStatus {
        let name = Spool.component(received.sopInstanceUID) + ".dcm"
        do {
            let kept = try quarantine.admit(received.temporaryPath, originalName: name,
                                            reason: "C-STORE from '\(received.callingAETitle)' at \(received.peerAddress) answered 0x"
                                                + String(status.rawValue, radix: 16, uppercase: true) + ": " + reason)
            logger.warning("C-STORE answered 0x\(String(status.rawValue, radix: 16, uppercase: true)): \(reason); kept in \(kept)")
        } catch {
            unlink(received.temporaryPath)
            logger.error("C-STORE answered 0x\(String(status.rawValue, radix: 16, uppercase: true)): \(reason); could not quarantine: \(error)")
        }
        return status
    }

    // MARK: Files in the spool without a worklist row

    /// Whether files may wait in the spool without a worklist row: a C-STORE was answered 0xA701 (the
    /// worklist locked or unreachable), or the last `adoptUnrecordedFiles` could not record them all.
    public var hasUnrecordedFiles: Bool { unrecordedFiles.load(ordering: .relaxed) }

    /// Records the DICOM files in the spool that the worklist does not know: a crash between a file's
    /// placement and its record, or a worklist that was locked (0xA701), left them there, or a failover
    /// to a replica that had not received their rows yet (asynchronous replication) lost them. They are whole
    /// and fsync'd (nothing is placed before that), so they are taken in as received; a sender that
    /// resends one finds it recorded and stored once. Defective ones go to quarantine. Run at start,
    /// before the receiver and the drop folder. PNG files are left alone: their drop-folder original is
    /// still there (it is removed only once recorded) and is retried. Returns how many were adopted.
    @discardableResult
    public func adoptUnrecordedFiles() -> Int {
        unrecordedFiles.store(false, ordering: .relaxed)
        let known: Set<String>
        do { known = try worklist.imagePaths(under: spool.root) } catch {
            unrecordedFiles.store(true, ordering: .relaxed)
            logger.error("could not check the spool against the worklist (\(error)); files without a row are taken in once it answers")
            return 0
        }
        var adopted = 0
        let folders = ((try? FileManager.default.contentsOfDirectory(atPath: spool.root)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
        for folder in folders {
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: spool.root + "/" + folder)) ?? []).sorted()
            for name in names where name.hasSuffix(".dcm") {
                let path = spool.root + "/" + folder + "/" + name
                guard !known.contains(path) else { continue }
                do {
                    let metadata = try headers.metadata(path: path)
                    guard let study = metadata.studyInstanceUID, !study.isEmpty else {
                        throw ImagingError.notDICOM(path: path, reason: "it has no Study Instance UID (0020,000D)")
                    }
                    // A dropped file without one was placed under its content's UID, as here.
                    let sop = metadata.sopInstanceUID.flatMap { $0.isEmpty ? nil : $0 } ?? Self.contentUID(path: path)
                    let arrival = Self.arrival(metadata, study: study, sop: sop, path: path, source: .cstore)
                    if try worklist.recordArrival(arrival) != .duplicate {
                        adopted += 1
                        notify(ArrivalNotice(studyInstanceUID: study, sopInstanceUID: sop, receivedAt: arrival.receivedAt,
                                             expectedInstances: metadata.numberOfStudyRelatedInstances))
                    }
                } catch let error as ImagingError where Self.isDefect(error) {
                    let kept = try? quarantine.admit(path, originalName: name, reason: "found in the spool without a worklist row, and unreadable: \(error)")
                    let placeNow = kept.map { "moved to \($0)" } ?? "left in place"
                    logger.warning("a file in the spool without a worklist row is unreadable: \(error); \(placeNow)")
                } catch {
                    unrecordedFiles.store(true, ordering: .relaxed)
                    logger.error("a file in the spool without a worklist row could not be recorded (\(error)); tried again shortly",
                                 metadata: ["path": "\(path)"])
                }
            }
        }
        if adopted > 0 {
            logger.info("took in \(adopted) instance(s) found in the spool without a worklist row (left by a crash or a locked worklist before they were recorded, or whose rows a database failover lost)")
        }
        return adopted
    }

    // MARK: Drop folder

    /// Reads a complete file from the drop folder, puts it in the spool and the worklist, and removes it
    /// from the drop folder only then. PNG files are grouped into studies by folder (MURA-style).
    ///
    /// Only a regular file inside the drop folder is read: the path is walked from `dropRoot` one folder
    /// at a time without following a link, the file is opened with O_NOFOLLOW|O_NONBLOCK and checked to
    /// be the regular file found, and its header is read from the copy taken into the spool. A link
    /// (to a file or a folder), a FIFO, a socket or a device goes to quarantine as itself, unopened, with
    /// its reason; so does a file whose path is PATH_MAX or longer (reached through folder descriptors).
    public func ingest(dropped path: String, dropRoot: String) -> DropOutcome {
        let root = (dropRoot as NSString).standardizingPath
        guard var parts = DropTree.components(of: path, root: root), let name = parts.popLast() else {
            logger.error("not taken in: \(DropTree.shortened(path)) is not inside the drop folder \(root)")
            return .leftInPlace(reason: "not inside the drop folder \(root)")
        }
        let relative = (parts + [name]).joined(separator: "/")
        let shown = DropTree.shortened(relative)
        let folder: Int32
        do {
            let rootFD = try DropTree.openRoot(root)
            defer { close(rootFD) }
            folder = try DropTree.openFolder(rootFD, components: parts)
        } catch {
            if case .gone = error { return .leftInPlace(reason: "the file is gone") }
            logger.error("dropped file \(shown) left in place: \(error)")
            return .leftInPlace(reason: "\(error)")
        }
        defer { close(folder) }
        guard let found = DropTree.status(folder, name) else { return .leftInPlace(reason: "the file is gone") }
        switch DropTree.kind(folder, name, found) {
        case .regular:
            break
        case .folder:
            return .leftInPlace(reason: "it is a folder")
        case let kind:
            return quarantine(folder, name, relative: relative, reason: "it is \(kind.description), not a regular file: only regular files are "
                + "taken from the drop folder, and what a link points to is never read or moved. Copy or move the file itself into the drop folder")
        }
        let length = root.utf8.count + 1 + relative.utf8.count
        if length >= DropTree.pathMax {
            return quarantine(folder, name, relative: relative, reason: "its path is \(length) bytes long, beyond the system's limit of "
                + "\(DropTree.pathMax - 1) (PATH_MAX): other programs cannot open it by name. Drop it under a shorter path")
        }
        // Open what was found, without blocking or following a link, and check it is still that file.
        let file = openat(folder, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard file >= 0 else {
            let reason = String(cString: strerror(errno))
            logger.error("dropped file \(shown) left in place: cannot open it: \(reason)")
            return .leftInPlace(reason: reason)
        }
        defer { close(file) }
        var opened = stat()
        guard fstat(file, &opened) == 0, opened.st_mode & S_IFMT == S_IFREG, DropTree.same(opened, found) else {
            // Replaced between the look and the open: the replacement's own event brings it back.
            logger.warning("dropped file \(shown) changed while it was being opened; left in place")
            return .leftInPlace(reason: "it changed while it was being opened")
        }
        // Named after the dropped file (its first 100 bytes), so the copy being read says what it is.
        let temporary = spool.temporaryPath(tag: "drop-" + String(decoding: name.utf8.prefix(100), as: UTF8.self))
        do {
            try FileSystem.copyDurably(descriptor: file, in: folder, name: name, to: temporary)
        } catch {
            logger.error("dropped file \(shown) left in the drop folder: \(error); it is tried again at the next start")
            return .leftInPlace(reason: "\(error)")
        }
        // From here on the copy in the spool is read: what is checked is what is stored.
        let arrival: InstanceArrival, expected: Int?, ext: String
        do {
            if Self.isPNG(temporary, name: name) {
                try headers.checkPNG(path: temporary, maximumPixels: maximumPixels)
                var dropped = try Self.pngArrival(path: temporary, relative: relative)
                dropped.fileName = name
                arrival = dropped
                expected = nil
                ext = "png"
            } else {
                let metadata = try headers.metadata(path: temporary)
                guard let study = metadata.studyInstanceUID, !study.isEmpty else {
                    throw ImagingError.notDICOM(path: relative, reason: "it has no Study Instance UID (0020,000D)")
                }
                let sop = metadata.sopInstanceUID.flatMap { $0.isEmpty ? nil : $0 } ?? Self.contentUID(path: temporary)
                var dropped = Self.arrival(metadata, study: study, sop: sop, path: temporary, source: .dropFolder)
                dropped.fileName = name
                arrival = dropped
                expected = metadata.numberOfStudyRelatedInstances
                ext = "dcm"
            }
        } catch {
            unlink(temporary)
            let reason = ((error as? ImagingError)?.explanation ?? "\(error)").replacingOccurrences(of: temporary, with: relative)
            return quarantine(folder, name, relative: relative, reason: reason)
        }
        do {
            let placement = try spool.place(temporary: temporary, study: arrival.studyInstanceUID, instance: arrival.sopInstanceUID, fileExtension: ext)
            var recorded = arrival
            recorded.filePath = placement.path
            let outcome = try worklist.recordArrival(recorded)
            // Removed only if it is still the file that was taken in.
            if let now = DropTree.status(folder, name), DropTree.same(now, found) { unlinkat(folder, name, 0) }
            if outcome == .duplicate {
                discardCopy(placement, of: arrival.sopInstanceUID)
                logger.info("dropped file was already received; stored once", metadata: ["study": "\(Study.shortID(for: arrival.studyInstanceUID))"])
                return .duplicate
            }
            let notice = ArrivalNotice(studyInstanceUID: arrival.studyInstanceUID, sopInstanceUID: arrival.sopInstanceUID,
                                       receivedAt: recorded.receivedAt, expectedInstances: expected)
            notify(notice)
            return .recorded(notice)
        } catch {
            unlink(temporary)
            logger.error("dropped file \(shown) left in the drop folder: \(error); it is tried again at the next start")
            return .leftInPlace(reason: "\(error)")
        }
    }

    /// Moves the entry `name` of `folder` (itself, never what a link points to) to the quarantine.
    private func quarantine(_ folder: Int32, _ name: String, relative: String, reason: String) -> DropOutcome {
        let shown = DropTree.shortened(relative)
        do {
            let kept = try quarantine.admit(entry: name, in: folder, originalName: relative, reason: reason)
            logger.warning("dropped file quarantined: \(shown): \(reason)")
            return .quarantined(path: kept, reason: reason)
        } catch {
            logger.error("dropped file \(shown) could not be quarantined (\(error)); left in place. It was refused because \(reason)")
            return .leftInPlace(reason: "\(error)")
        }
    }

    // MARK: Helpers

    /// A repeated instance whose first copy was recorded elsewhere (moved to the archive after its
    /// triage) must not leave a second copy in the spool that no row points to.
    private func discardCopy(_ placement: Spool.Placement, of sop: String) {
        guard case let .stored(path) = placement, let recorded = try? worklist.imagePath(sopInstanceUID: sop), recorded != path,
              FileManager.default.fileExists(atPath: recorded) else { return }
        unlink(path)
    }

    /// Whether an error is the file's own fault (quarantine it), not a passing condition (a permission,
    /// a decoder that timed out) under which a good file must stay where it is.
    static func isDefect(_ error: ImagingError) -> Bool {
        switch error {
        case .notDICOM, .undecodable, .incomplete, .tooLarge, .notPNG: return true
        case let .decoderFailed(_, reason): return reason.hasPrefix("crashed")
        case .unreadable: return false
        }
    }

    static func arrival(_ m: DicomMetadata, study: String, sop: String, path: String, source: StudySource) -> InstanceArrival {
        let eligibility = Eligibility.decide(m)
        var a = InstanceArrival(studyInstanceUID: study, sopInstanceUID: sop, seriesInstanceUID: m.seriesInstanceUID, filePath: path,
                                eligible: eligibility.isEligible, source: source)
        if case let .notApplicable(reason) = eligibility { a.eligibilityReason = reason }
        a.patientID = m.patientID
        a.patientName = m.patientName
        a.accessionNumber = m.accessionNumber
        a.studyDate = m.studyDate
        a.modality = m.modality
        a.bodyPart = m.bodyPartExamined.flatMap { $0.isEmpty ? nil : $0.uppercased() }
        a.studyDescription = m.studyDescription
        a.characterSetNote = m.characterSetNote
        a.seriesNumber = m.seriesNumber
        a.sopClassUID = m.sopClassUID
        a.instanceNumber = m.instanceNumber
        a.viewPosition = m.viewPosition
        a.laterality = m.laterality
        return a
    }

    /// A PNG study is its folder: the Study UID is derived from the folder's path under the drop folder,
    /// the SOP UID from the file's content (so the same image dropped twice is stored once), and in
    /// MURA's layout (`XR_<PART>/patient<N>/study<M>_<label>/image<K>.png`, under any folders) the body
    /// part from `XR_<PART>` and the patient ID from the patient folder.
    static func pngArrival(path: String, relative: String) throws -> InstanceArrival {
        let folder = (relative as NSString).deletingLastPathComponent
        let components = folder.split(separator: "/").map(String.init)
        var a = InstanceArrival(studyInstanceUID: uid(from: Data("bonetriage-drop-folder:\(folder)".utf8)),
                                sopInstanceUID: contentUID(path: path), filePath: path, eligible: true, source: .dropFolder)
        let part = components.lastIndex { $0.uppercased().hasPrefix("XR_") }
        a.bodyPart = part.map { String(components[$0].dropFirst(3)).uppercased() }
        a.patientID = muraPatient(components, after: part)
        a.studyDescription = folder.isEmpty ? nil : folder
        a.modality = "OT"
        return a
    }

    /// A folder that may name a patient (`patient11185`, MURA's patient folder): the intake may read it
    /// as the patient ID, and the daemon's log masks it.
    static func isPatientFolder(_ name: String) -> Bool { name.lowercased().hasPrefix("patient") }

    /// The patient folder: the one right after `XR_<PART>` when it is named patient..., else the last
    /// folder named `patient<digits>`, else the last named patient... (never a folder above the layout,
    /// such as `patients-2026`, when the layout is there).
    static func muraPatient(_ components: [String], after part: Int?) -> String? {
        let isPatient = isPatientFolder
        if let part, part + 1 < components.count, isPatient(components[part + 1]) { return components[part + 1] }
        let below = part.map { Array(components[($0 + 1)...]) } ?? components
        if let numbered = below.last(where: { isPatient($0) && $0.dropFirst("patient".count).allSatisfy(\.isNumber) && $0.count > "patient".count }) {
            return numbered
        }
        return below.last(where: isPatient)
    }

    /// A DICOM UID under the 2.25 root (ISO/IEC 9834-8): the first 128 bits of a SHA-256, in decimal.
    static func uid(from data: Data) -> String {
        let hex = SHA256Digest.hex(data).prefix(32)
        let value = UInt128(hex, radix: 16) ?? 1
        return "2.25.\(value)"
    }

    static func contentUID(path: String) -> String {
        var digest = SHA256Digest()
        if let handle = FileHandle(forReadingAtPath: path) {
            while let chunk = try? handle.read(upToCount: 1 << 20), !chunk.isEmpty { digest.update(chunk) }
            try? handle.close()
        }
        let value = UInt128(digest.finalHex().prefix(32), radix: 16) ?? 1
        return "2.25.\(value)"
    }

    /// By its signature, or by the name it was dropped under (`name`, the path's own by default).
    static func isPNG(_ path: String, name: String? = nil) -> Bool {
        let head = (FileHandle(forReadingAtPath: path).flatMap { try? $0.read(upToCount: 8) }) ?? Data()
        return Array(head) == IncomingImage.pngSignature || (name ?? path).lowercased().hasSuffix(".png")
    }
}
