import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The DICOM receiver's negotiation and connection handling, against an independent upper-layer client
/// (AssociationProbe, written from PS3.8) and DCMTK's storescu/echoscu.
@Suite("DICOM receiver: SOP classes and connections", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs the built bonetriage and DCMTK's storescu, dcmsend, echoscu, img2dcm (Debian package dcmtk; `make test` installs it)"))
struct DicomReceiverTests {
    static let verification = "1.2.840.10008.1.1"

    @Test("every storage SOP class DCMTK knows is accepted (more than one association can propose), with Verification; anything else is refused context by context")
    func acceptsEveryStorageSOPClass() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let classes = StorageReceiver.storageSOPClassUIDs
        #expect(classes.count > 128, "\(classes.count) storage SOP classes: fewer than one association can propose")
        // Among them those a hospital sends with a radiograph study (XA, RF, US, X-Ray Radiation Dose SR,
        // VL photographic, 12-lead ECG), which a fixed 128-context profile left out.
        for uid in ["1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.12.1", "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.6.1",
                    "1.2.840.10008.5.1.4.1.1.88.67", "1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.840.10008.5.1.4.1.1.9.1.1"] {
            #expect(classes.contains(uid), "\(uid) is not among the accepted storage SOP classes")
        }

        // 127 contexts per association (the last one also proposes Verification), each proposing explicit
        // and implicit VR little endian: every one accepted, with explicit VR LE (our preference).
        var refused: [String] = []
        var proposed = 0
        var chunks = stride(from: 0, to: classes.count, by: 127).map { Array(classes[$0..<min($0 + 127, classes.count)]) }
        chunks[chunks.count - 1].append(Self.verification)
        for chunk in chunks {
            let (contexts, answer) = try AssociationProbe.propose(chunk, port: daemon.port)
            guard case let .accepted(results) = answer else {
                Issue.record("association refused: \(answer)\n\(daemon.log)")
                continue
            }
            for (id, uid) in contexts {
                proposed += 1
                guard let r = results[id], r.result == 0 else {
                    refused.append("\(uid) (result \(results[id].map { String($0.result) } ?? "missing"))")
                    continue
                }
                #expect(r.transferSyntax == AssociationProbe.explicitLittleEndian, "\(uid): \(r.transferSyntax)")
            }
        }
        #expect(proposed == classes.count + 1)
        #expect(refused.isEmpty, "\(refused.count) of \(classes.count) storage SOP classes refused: \(refused.joined(separator: ", "))")

        // Not a storage class (Study Root C-FIND): abstract syntax not supported (3); a storage class offered
        // only in a syntax we do not take (MPEG-2): transfer syntaxes not supported (4). The association
        // itself is accepted for the rest.
        let find = "1.2.840.10008.5.1.4.1.2.2.1", cr = "1.2.840.10008.5.1.4.1.1.1"
        let (contexts, answer) = try AssociationProbe.propose([find, cr, Self.verification], port: daemon.port)
        guard case let .accepted(results) = answer else {
            Issue.record("association refused: \(answer)")
            return
        }
        let byUID = Dictionary(uniqueKeysWithValues: contexts.map { ($1, results[$0]?.result) })
        #expect(byUID[find] == 3 && byUID[cr] == 0 && byUID[Self.verification] == 0, "\(byUID)")
        let (mpegContexts, mpegAnswer) = try AssociationProbe.propose([cr, Self.verification], transferSyntaxes: ["1.2.840.10008.1.2.4.100"], port: daemon.port)
        if case let .accepted(r) = mpegAnswer {
            #expect(mpegContexts.allSatisfy { r[$0.key]?.result == 4 }, "\(r)")
        }
        // Nothing acceptable at all: the association is refused (permanent).
        let (_, none) = try AssociationProbe.propose([find], port: daemon.port)
        guard case let .rejected(result, _, _) = none else {
            Issue.record("an association with nothing acceptable was not refused: \(none)")
            return
        }
        #expect(result == 1)
        #expect(daemon.isRunning)
    }

    @Test("storescu sends an XA (a real multi-frame JPEG file) and a self-made X-Ray Radiation Dose SR: both received and recorded")
    func storesClassesBeyondTheFirst128() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.11.1"
        let sr = files.path("dose.dcm")
        try DoseReportFactory.make(at: sr, study: study, sopInstanceUID: study + ".9.1")
        let sent = try daemon.storescu([sr])
        #expect(sent.status == 0 && !sent.output.contains("No presentation context"), "\(sent.output)\n\(daemon.log)")
        var studies = [study]

        let xa = Fixtures.shared?.appendingPathComponent("data/dicom/radiographs/XA_multiframe96_jpegbaseline_HasFragmentSequence.dcm").path
        if let xa, FileManager.default.fileExists(atPath: xa) {
            let xaStudy = try #require(try DicomReader.metadata(path: xa).studyInstanceUID)
            // -xy: propose JPEG baseline too (storescu proposes only uncompressed syntaxes by default), so
            // the file travels as it is.
            let run = try daemon.storescu([xa], extra: ["-xy"])
            #expect(run.status == 0 && !run.output.contains("No presentation context"), "\(run.output)\n\(daemon.log)")
            studies.append(xaStudy)
        } else {
            print("note: the real XA file is absent (../shared/data/dicom); only the self-made Dose SR was sent")
        }
        let recorded = try daemon.waitForTriage(studies, timeout: 120)
        for uid in studies {
            let row = try #require(recorded[uid])
            #expect(row["images"] as? Int == 1 && row["state"] as? String != "failed", "\(row)")
        }
        let dose = try #require(recorded[study])
        #expect(dose["state"] as? String == "not_applicable", "\(dose)")
    }

    @Test("connections that never send an A-ASSOCIATE-RQ do not delay a real sender, and a stop does not wait for them")
    func idleConnectionsDoNotStall() throws {
        let daemon = try DaemonHarness()
        daemon.acseTimeout = 30
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        try RadiographFactory.make(at: files.path("x.dcm"), study: "1.2.826.0.1.3680043.10.12.1")

        // Eight silent connections, from the sender's address and from four others (a port scanner, a
        // half-open peer). Before, each one held the listener for acse_timeout_seconds in turn.
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for i in 0..<8 { idle.append(try AssociationProbe.connect(port: daemon.port, from: i < 4 ? "127.0.0.1" : "127.0.0.\(i - 2)")) }
        let echo = try daemon.echo()
        #expect(echo.status == 0, "\(echo.output)\n\(daemon.log)")
        let store = try daemon.storescu([files.path("x.dcm")])
        #expect(store.status == 0, "\(store.output)\n\(daemon.log)")
        // Served while every silent connection was still open: nothing waited for one to time out.
        let closed = idle.filter { AssociationProbe.closedByPeer($0) }
        #expect(closed.isEmpty, "\(closed.count) of the silent connections were closed before the sender was served")

        // A stop closes the silent connections at once rather than waiting out their ACSE timeout (30 s).
        #expect(try daemon.stop(timeout: 20) == 0)
        #expect(idle.allSatisfy { AssociationProbe.waitUntilClosedByPeer($0) })
        #expect(daemon.log.contains("8 connection(s) that had not sent an A-ASSOCIATE-RQ closed"), "\(daemon.log)")
    }

    @Test("connections waiting for their A-ASSOCIATE-RQ are limited per address and in all; one beyond is closed at once, with a warning; listed senders are not locked out")
    func pendingConnectionLimits() throws {
        let daemon = try DaemonHarness()
        daemon.acseTimeout = 30
        daemon.dicomConfig = "max_pending_connections = 3\nmax_pending_connections_per_address = 2"
        try daemon.writeConfig(callers: #"[{ ae_title = "STORESCU", hosts = ["127.0.0.1"] }]"#)
        try daemon.start(keepConfig: true)
        defer { _ = try? daemon.stop() }
        var held: [Int32] = []
        defer { held.forEach { close($0) } }

        // Two silent connections from 127.0.0.2 are held; a third from there is closed at once (well
        // before the 30 s ACSE timeout: the probe gives up waiting after 10 s).
        held.append(try AssociationProbe.connect(port: daemon.port, from: "127.0.0.2"))
        held.append(try AssociationProbe.connect(port: daemon.port, from: "127.0.0.2"))
        let third = try AssociationProbe.connect(port: daemon.port, from: "127.0.0.2", receiveTimeout: 10)
        defer { close(third) }
        #expect(AssociationProbe.waitUntilClosedByPeer(third), "the third connection from one address was not closed")
        // One from 127.0.0.3 makes three in all; a fourth, from any address, is closed at once.
        held.append(try AssociationProbe.connect(port: daemon.port, from: "127.0.0.3"))
        let fourth = try AssociationProbe.connect(port: daemon.port, from: "127.0.0.4", receiveTimeout: 10)
        defer { close(fourth) }
        #expect(AssociationProbe.waitUntilClosedByPeer(fourth), "a connection beyond max_pending_connections was not closed")
        #expect(held.allSatisfy { !AssociationProbe.closedByPeer($0) }, "a connection within the limits was closed")
        let log = daemon.log
        #expect(log.contains("connection from 127.0.0.2 closed at once") && log.contains("[dicom] max_pending_connections_per_address"), "\(log)")
        #expect(log.contains("connection from 127.0.0.4 closed at once") && log.contains("(the limit is [dicom] max_pending_connections)"), "\(log)")

        // While strangers fill the overall limit, a sender from an address the allow-list names
        // (STORESCU, hosts 127.0.0.1) still gets through: only the per-address limit applies to it.
        let echo = try daemon.echo()
        #expect(echo.status == 0, "\(echo.output)\n\(daemon.log)")
        #expect(held.allSatisfy { !AssociationProbe.closedByPeer($0) })
        // A stranger gets a slot again once one frees.
        close(held.removeLast())
        try daemon.waitFor("a pending slot freed", timeout: 20) {
            let fd = try AssociationProbe.connect(port: daemon.port, from: "127.0.0.5", receiveTimeout: 1)
            defer { close(fd) }
            return !AssociationProbe.waitUntilClosedByPeer(fd)
        }
        #expect(daemon.isRunning)
    }
}

/// A minimal X-Ray Radiation Dose SR (1.2.840.10008.5.1.4.1.1.88.67), made with DCMTK's dump2dcm: the
/// kind of instance a modality or PACS sends along with a radiograph study. Same patient as
/// RadiographFactory gives the study's images (a PACS files the study under its patient).
enum DoseReportFactory {
    static let sopClass = "1.2.840.10008.5.1.4.1.1.88.67"

    static func make(at path: String, study: String, sopInstanceUID: String) throws {
        let dump = """
            (0002,0010) UI [1.2.840.10008.1.2.1]
            (0008,0016) UI [\(sopClass)]
            (0008,0018) UI [\(sopInstanceUID)]
            (0008,0060) CS [SR]
            (0010,0010) PN [Test^Patient]
            (0010,0020) LO [TEST-\(Study.shortID(for: study).prefix(6))]
            (0020,000d) UI [\(study)]
            (0020,000e) UI [\(study).9]
            (0020,0013) IS [1]
            (0040,a040) CS [CONTAINER]
            (0040,a050) CS [SEPARATE]
            (0040,a491) CS [COMPLETE]
            (0040,a493) CS [UNVERIFIED]

            """
        try dump.write(toFile: path + ".txt", atomically: true, encoding: .utf8)
        defer { unlink(path + ".txt") }
        try DicomTools.run("dump2dcm", ["+te", path + ".txt", path])
    }
}
