import BoneTriage
import Foundation
import Testing

/// pynetdicom in the venv `make test` prepares (`make dicom-venv`): an independent DICOM client that can
/// propose the HTJ2K transfer syntaxes, which DCMTK 3.6.7's storescu does not know. It sends each file's
/// dataset bytes as they are in the file (tools/store_with_pynetdicom.py).
enum PynetdicomSender {
    static var python: String {
        ProcessInfo.processInfo.environment["BONETRIAGE_DICOM_PYTHON"]
            ?? Fixtures.repositoryRoot.appendingPathComponent(".cache/dicom-venv/bin/python").path
    }

    static let available: Bool = {
        guard FileManager.default.isExecutableFile(atPath: python) else { return false }
        return (try? DaemonHarness.run(python, ["-c", "import pynetdicom, pydicom"]).status) == 0
    }()

    struct Report: Decodable {
        struct Context: Decodable {
            let sop_class: String
            let transfer_syntax: String
        }
        struct Result: Decodable {
            let file: String
            let status: Int?
            let error: String?
        }
        let established: Bool
        let aborted: Bool
        let accepted: [Context]
        let results: [Result]
    }

    /// Sends `files` over one association to the daemon; each context proposes the file's own syntax, then `also`.
    static func send(_ files: [String], port: Int, also: [String] = [], in dir: TemporaryDirectory) throws -> (report: Report, output: String) {
        let reportPath = dir.path("pynetdicom-report.json")
        try? FileManager.default.removeItem(atPath: reportPath)
        let script = Fixtures.repositoryRoot.appendingPathComponent("tools/store_with_pynetdicom.py").path
        let run = try DaemonHarness.run(python, [script, "--port", "\(port)", "--report", reportPath] + also.flatMap { ["--also", $0] } + files)
        guard let data = FileManager.default.contents(atPath: reportPath) else {
            throw DicomTools.Failed(description: "pynetdicom wrote no report (exit \(run.status)):\n\(run.output)")
        }
        return (try JSONDecoder().decode(Report.self, from: data), run.output)
    }
}

/// A Part 10 file cut into its File Meta Information (group 0002, explicit VR little endian) and its
/// dataset bytes, and the fragments of an encapsulated Pixel Data at the dataset's end.
struct PartTenFile {
    /// Meta elements by element number: their values, padding included.
    let meta: [UInt16: Data]
    let metaGroupLength: Int
    let dataset: Data

    init(_ path: String) throws {
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        guard bytes.count > 144, bytes[128..<132].elementsEqual(Array("DICM".utf8)) else {
            throw DicomTools.Failed(description: "\(path) is not a Part 10 file (no DICM after the preamble)")
        }
        func u16(_ at: Int) -> Int { Int(bytes[at]) | Int(bytes[at + 1]) << 8 }
        func u32(_ at: Int) -> Int { u16(at) | u16(at + 2) << 16 }
        var at = 132, meta: [UInt16: Data] = [:]
        while at + 8 <= bytes.count, u16(at) == 2 {
            let element = UInt16(u16(at + 2)), vr = String(decoding: bytes[(at + 4)..<(at + 6)], as: UTF8.self)
            let long = ["OB", "OW", "UN", "SQ", "UT"].contains(vr)
            let length = long ? u32(at + 8) : u16(at + 6), start = at + (long ? 12 : 8)
            guard start + length <= bytes.count else { throw DicomTools.Failed(description: "\(path): meta element (0002,\(element)) runs past the end") }
            meta[element] = bytes.subdata(in: start..<(start + length))
            at = start + length
        }
        self.meta = meta
        metaGroupLength = meta[0].map { $0.count == 4 ? $0.withUnsafeBytes { Int(UInt32(littleEndian: $0.loadUnaligned(as: UInt32.self))) } : -1 } ?? -1
        #expect(at - 144 == metaGroupLength, "\(path): (0002,0000) says \(metaGroupLength) bytes, the meta elements after it take \(at - 144)")
        dataset = bytes.subdata(in: at..<bytes.count)
    }

    /// A meta text value without its padding (a trailing NUL or space).
    func text(_ element: UInt16) -> String? {
        meta[element].map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: "\0 ")) }
    }

    /// The fragments of the encapsulated Pixel Data (undefined length, at the end of the dataset), after the Basic Offset Table.
    func fragments() throws -> [Data] {
        let header: [UInt8] = [0xE0, 0x7F, 0x10, 0x00, 0x4F, 0x42, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF]
        let bytes = [UInt8](dataset)
        var at = bytes.count - header.count
        while at >= 0 && !bytes[at..<(at + header.count)].elementsEqual(header) { at -= 1 }
        guard at >= 0 else { throw DicomTools.Failed(description: "no encapsulated Pixel Data in the dataset") }
        at += header.count
        var items: [Data] = []
        while at + 8 <= bytes.count {
            let tag = bytes[at..<(at + 4)], length = Int(bytes[at + 4]) | Int(bytes[at + 5]) << 8 | Int(bytes[at + 6]) << 16 | Int(bytes[at + 7]) << 24
            if tag.elementsEqual([0xFE, 0xFF, 0xDD, 0xE0]) { return Array(items.dropFirst()) }
            guard tag.elementsEqual([0xFE, 0xFF, 0x00, 0xE0]), at + 8 + length <= bytes.count else { break }
            items.append(Data(bytes[(at + 8)..<(at + 8 + length)]))
            at += 8 + length
        }
        throw DicomTools.Failed(description: "the encapsulated Pixel Data has no sequence delimiter")
    }
}

/// The C-STORE SCP and HTJ2K (1.2.840.10008.1.2.4.201 lossless, .202 lossless RPCL, .203): DCMTK 3.6.7's DcmXfer
/// does not know these UIDs, so its DIMSE layer refuses to read a command on such a context; the receiver
/// names them to DIMSE as JPEG 2000 after the A-ASSOCIATE-AC and writes the File Meta header itself.
@Suite("DICOM receiver: HTJ2K over the network", .serialized,
       .enabled(if: Executable.url != nil, "skipped: needs the built bonetriage"))
struct HTJ2KReceiverTests {
    static let cr = "1.2.840.10008.5.1.4.1.1.1"
    static let explicitLE = AssociationProbe.explicitLittleEndian
    static let implicitLE = AssociationProbe.implicitLittleEndian
    static let htj2kLossless = "1.2.840.10008.1.2.4.201", htj2kRPCL = "1.2.840.10008.1.2.4.202", htj2k = "1.2.840.10008.1.2.4.203"
    static let j2kLossless = "1.2.840.10008.1.2.4.90", j2k = "1.2.840.10008.1.2.4.91"

    static var senderAvailable: Bool { HTJ2KTests.encoderAvailable && PynetdicomSender.available }

    @Test("a peer proposing HTJ2K and uncompressed syntaxes for one SOP class gets HTJ2K; beside JPEG 2000, the conformance statement's order holds")
    func negotiatesHTJ2KByPreference() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        // (proposed, in the peer's order; the one we accept)
        let cases: [([String], String)] = [
            ([Self.explicitLE, Self.htj2kLossless], Self.htj2kLossless),
            ([Self.explicitLE, Self.implicitLE, Self.htj2kRPCL], Self.htj2kRPCL),
            ([Self.htj2k, Self.explicitLE, Self.implicitLE], Self.htj2k),
            ([Self.htj2k, Self.htj2kLossless], Self.htj2kLossless),  // lossless before lossy
            ([Self.htj2kLossless, Self.j2kLossless], Self.j2kLossless),  // JPEG 2000 lossless, then HTJ2K lossless
            ([Self.htj2k, Self.j2k], Self.j2k),
            ([Self.htj2kLossless], Self.htj2kLossless),
        ]
        for (proposed, expected) in cases {
            let (contexts, answer) = try AssociationProbe.propose([Self.cr], transferSyntaxes: proposed, port: daemon.port)
            guard case let .accepted(results) = answer, let id = contexts.first?.key else {
                Issue.record("\(proposed): association not accepted: \(answer)\n\(daemon.log)")
                continue
            }
            #expect(results[id]?.result == 0 && results[id]?.transferSyntax == expected,
                    "proposed \(proposed): accepted \(String(describing: results[id])), expected \(expected)")
        }
        #expect(daemon.isRunning)
    }

    /// One self-made radiograph of `study`, its codestream and its file (the codestream padded to an even length).
    static func htj2kFile(study: String, index: Int, syntax: String, options: [String], in dir: TemporaryDirectory) throws -> (path: String, sop: String, code: Data) {
        let image = ReducedDecodeTests.syntheticRadiograph(width: 640, height: 600, seed: UInt64(index + 7))
        let sop = "\(study).\(index)"
        var w = DicomWriter.radiograph(study: study, sop: sop, rows: image.height, columns: image.width, bitsAllocated: 16)
        w.set(0x0028, 0x0101, "US", DicomWriter.us(12))
        w.set(0x0028, 0x0102, "US", DicomWriter.us(11))
        w.set(0x0028, 0x1050, "DS", "2000")
        w.set(0x0028, 0x1051, "DS", "3000")
        let code = try HTJ2KTests.codestream(image, options: options, in: dir, name: "image\(index)")
        w.encapsulatedPixels([code.count % 2 == 1 ? code + Data([0]) : code], transferSyntax: syntax)
        let path = dir.path("image\(index).dcm")
        try w.write(to: path)
        return (path, sop, code)
    }

    /// The checks every received file gets: stored under its study, the meta header as DCMTK writes it with the
    /// negotiated syntax named, the dataset byte for byte as sent.
    static func checkStored(_ sent: String, study: String, sop: String, syntax: String, daemon: DaemonHarness) throws -> PartTenFile {
        let stored = try PartTenFile(daemon.spool + "/" + study + "/" + sop + ".dcm")
        let original = try PartTenFile(sent)
        #expect(stored.text(0x10) == syntax, "\(sop): the meta header names \(stored.text(0x10) ?? "no transfer syntax"), sent as \(syntax)")
        #expect(stored.meta[1] == Data([0, 1]))
        #expect(stored.text(2) == cr && stored.text(3) == sop)
        // DCMTK's implementation class UID and the version name it gives files received bit-preserving.
        #expect(stored.text(0x12) == "1.2.276.0.7230010.3.0.3.6.7" && stored.text(0x13) == "OFFIS_DCMBP_367", "\(stored.meta)")
        #expect(stored.text(0x16) == "STORESCU")
        #expect(stored.dataset == original.dataset, "\(sop): the stored dataset (\(stored.dataset.count) bytes) differs from the one sent (\(original.dataset.count) bytes)")
        return stored
    }

    @Test("HTJ2K lossless, lossless RPCL and lossy sent by pynetdicom (with a native image, one association): each accepted in its syntax, stored bit for bit with its syntax in the meta header, the study triaged",
          .enabled(if: senderAvailable, "skipped: needs OpenJPH's ojph_compress (make deps) and pynetdicom in .cache/dicom-venv (make dicom-venv, from PyPI)"))
    func receivesSelfMadeHTJ2K() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let dir = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.8.498.1633"
        var sent: [(path: String, sop: String, syntax: String, code: Data?)] = []
        for (i, (uid, _, options)) in HTJ2KTests.syntaxes.enumerated() {
            let f = try Self.htj2kFile(study: study, index: i + 1, syntax: uid, options: options, in: dir)
            sent.append((f.path, f.sop, uid, f.code))
        }
        // A native explicit VR little endian image: the files of syntaxes DCMTK knows keep their meta header.
        var native = DicomWriter.radiograph(study: study, sop: "\(study).4", rows: 64, columns: 64)
        native.nativePixels(bytes: 64 * 64)
        try native.write(to: dir.path("native.dcm"))
        sent.append((dir.path("native.dcm"), "\(study).4", Self.explicitLE, nil))

        let (report, output) = try PynetdicomSender.send(sent.map(\.path), port: daemon.port, in: dir)
        #expect(report.established && !report.aborted, "\(output)\n\(daemon.log)")
        #expect(Set(report.accepted.map(\.transfer_syntax)) == Set(sent.map(\.syntax)), "accepted: \(report.accepted)")
        try #require(report.results.count == sent.count && report.results.allSatisfy { $0.status == 0 }, "\(report.results)\n\(output)\n\(daemon.log)")

        let triaged = try daemon.waitForTriage([study])
        #expect(triaged[study]?["state"] as? String == "triaged", "\(String(describing: triaged[study]))")
        let images = try daemon.show(study).images
        #expect(images.count == 4 && images.allSatisfy { $0["probability"] as? Double != nil }, "\(images)")
        for file in sent {
            let stored = try Self.checkStored(file.path, study: study, sop: file.sop, syntax: file.syntax, daemon: daemon)
            if let code = file.code {
                let fragments = try stored.fragments()
                #expect(fragments.count == 1 && fragments.first?.prefix(code.count) == code && fragments.first?.count == (code.count + 1) / 2 * 2,
                        "\(file.sop): the stored Pixel Data is not the codestream sent (\(fragments.map(\.count)) bytes, codestream \(code.count))")
            }
        }
        #expect(daemon.log.contains("association released: 'STORESCU' from 127.0.0.1, 4 instance(s) acknowledged"), "\(daemon.log)")
        #expect(daemon.isRunning)
    }

    @Test("an HTJ2K dataset cut short is answered 0xC000 and quarantined with its reason; the next file of the same association is stored and triaged",
          .enabled(if: senderAvailable, "skipped: needs OpenJPH's ojph_compress (make deps) and pynetdicom in .cache/dicom-venv (make dicom-venv, from PyPI)"))
    func truncatedHTJ2KDataset() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let dir = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.8.498.1635"
        let cut = try Self.htj2kFile(study: study, index: 1, syntax: Self.htj2kLossless, options: ["-reversible", "true"], in: dir)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: cut.path))
        try bytes.prefix(bytes.count - 400).write(to: URL(fileURLWithPath: cut.path))
        let good = try Self.htj2kFile(study: study, index: 2, syntax: Self.htj2kLossless, options: ["-reversible", "true"], in: dir)

        let (report, output) = try PynetdicomSender.send([cut.path, good.path], port: daemon.port, in: dir)
        #expect(report.established && !report.aborted, "\(output)\n\(daemon.log)")
        try #require(report.results.map(\.status) == [0xC000, 0], "\(report.results)\n\(output)\n\(daemon.log)")
        let quarantined = try FileManager.default.contentsOfDirectory(atPath: daemon.quarantine)
        #expect(quarantined.contains { $0.hasSuffix("\(cut.sop).dcm") } && quarantined.contains { $0.hasSuffix("\(cut.sop).dcm.reason") }, "\(quarantined)")
        let triaged = try daemon.waitForTriage([study])
        #expect(triaged[study]?["state"] as? String == "triaged" && triaged[study]?["images"] as? Int == 1, "\(String(describing: triaged[study]))")
        _ = try Self.checkStored(good.path, study: study, sop: good.sop, syntax: Self.htj2kLossless, daemon: daemon)
        #expect(daemon.isRunning)
    }

    @Test("HTJ2K re-encodings of RG3 (lossless) and DX_cat (lossy) from ../shared, offered with explicit VR little endian as a fallback: sent as HTJ2K, stored bit for bit, triaged",
          .enabled(if: senderAvailable && Fixtures.shared != nil, "skipped: ../shared/data, ojph_compress or pynetdicom (make dicom-venv) is absent"))
    func receivesSharedRadiographsAsHTJ2K() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let dir = try TemporaryDirectory()
        let root = try #require(Fixtures.shared).appendingPathComponent("data/dicom/radiographs")
        let study = "1.2.826.0.1.3680043.8.498.1634"
        let sources: [(String, String, (String, String), String, [String])] = [
            ("RG3_UNCR.dcm", "MONOCHROME1", ("550", "1024"), Self.htj2kLossless, ["-reversible", "true", "-prog_order", "LRCP"]),
            ("DX_cat_deid-data.dcm", "MONOCHROME2", ("2048", "4096"), Self.htj2k, ["-qstep", "0.005"]),
        ]
        var sent: [(path: String, sop: String, syntax: String, code: Data)] = []
        for (i, (file, photometric, window, syntax, options)) in sources.enumerated() {
            let image = try ReducedDecodeTests.storedValues(root.appendingPathComponent(file).path)
            let code = try HTJ2KTests.codestream(image, options: options, in: dir, name: "shared\(i)")
            let sop = "\(study).\(i + 1)"
            var w = DicomWriter.radiograph(study: study, sop: sop, rows: image.height, columns: image.width, bitsAllocated: 16)
            w.set(0x0028, 0x0004, "CS", photometric)
            w.set(0x0028, 0x0101, "US", DicomWriter.us(image.bitsStored))
            w.set(0x0028, 0x0102, "US", DicomWriter.us(image.bitsStored - 1))
            w.set(0x0028, 0x1050, "DS", window.0)
            w.set(0x0028, 0x1051, "DS", window.1)
            w.encapsulatedPixels([code.count % 2 == 1 ? code + Data([0]) : code], transferSyntax: syntax)
            try w.write(to: dir.path("shared\(i).dcm"))
            sent.append((dir.path("shared\(i).dcm"), sop, syntax, code))
        }
        let (report, output) = try PynetdicomSender.send(sent.map(\.path), port: daemon.port, also: [Self.explicitLE], in: dir)
        #expect(report.established && !report.aborted, "\(output)\n\(daemon.log)")
        #expect(Set(report.accepted.map(\.transfer_syntax)) == Set(sent.map(\.syntax)), "accepted: \(report.accepted)")
        try #require(report.results.count == sent.count && report.results.allSatisfy { $0.status == 0 }, "\(report.results)\n\(output)\n\(daemon.log)")

        let triaged = try daemon.waitForTriage([study], timeout: 120)
        #expect(triaged[study]?["state"] as? String == "triaged", "\(String(describing: triaged[study]))")
        let images = try daemon.show(study).images
        #expect(images.count == 2 && images.allSatisfy { $0["probability"] as? Double != nil }, "\(images)")
        for file in sent {
            let stored = try Self.checkStored(file.path, study: study, sop: file.sop, syntax: file.syntax, daemon: daemon)
            #expect(try stored.fragments().first?.prefix(file.code.count) == file.code, "\(file.sop): the stored Pixel Data is not the codestream sent")
        }
        #expect(daemon.isRunning)
    }
}
