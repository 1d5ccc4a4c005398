import BoneTriage
import Foundation
import Testing

/// High-Throughput JPEG 2000 (HTJ2K, transfer syntaxes 1.2.840.10008.1.2.4.201 lossless, .202 lossless RPCL, .203),
/// encoded by OpenJPH's `ojph_compress` (not this project's code) and decoded by OpenJPEG 2.5 at the reduced
/// resolution the model needs (issue 16). DCMTK 3.6.7 does not know these UIDs: it reads such a file as explicit VR
/// little endian with encapsulated pixel data, and the reader takes the syntax from the File Meta header. Received
/// over the network: HTJ2KReceiverTests.
@Suite("HTJ2K: decoded reduced, within the equivalence bar; broken codestreams fail clearly")
struct HTJ2KTests {
    typealias R = ReducedDecodeTests

    static var encoderAvailable: Bool { DicomTools.find("ojph_compress") != nil }

    /// (transfer syntax, label, ojph_compress options).
    static let syntaxes: [(String, String, [String])] = [
        ("1.2.840.10008.1.2.4.201", "htj2k-lossless", ["-reversible", "true", "-prog_order", "LRCP"]),
        ("1.2.840.10008.1.2.4.202", "htj2k-lossless-rpcl", ["-reversible", "true", "-prog_order", "RPCL"]),
        ("1.2.840.10008.1.2.4.203", "htj2k-lossy", ["-qstep", "0.005"]),
    ]

    /// One HTJ2K codestream of `image` made by ojph_compress.
    static func codestream(_ image: R.StoredImage, options: [String], in dir: TemporaryDirectory, name: String) throws -> Data {
        try image.writePGM(to: dir.path("\(name).pgm"))
        defer { try? FileManager.default.removeItem(atPath: dir.path("\(name).pgm")) }
        try DicomTools.run("ojph_compress", ["-i", dir.path("\(name).pgm"), "-o", dir.path("\(name).j2c")] + options)
        return try Data(contentsOf: URL(fileURLWithPath: dir.path("\(name).j2c")))
    }

    /// A CR Part 10 file holding `code` (padded to an even length) with `transferSyntax`, 16 bits allocated.
    static func wrap(_ code: Data, image: R.StoredImage, header: R.Header, transferSyntax: String, to path: String) throws {
        try R.encapsulate([code.count % 2 == 1 ? code + Data([0]) : code], image: image, header: header, transferSyntax: transferSyntax, to: path)
    }

    @Test("self-made HTJ2K (lossless, lossless RPCL, lossy; 1300x1240 and 640x600): the syntax is named, decoded reduced, within 1 gray level",
          .enabled(if: encoderAvailable, "skipped: OpenJPH's ojph_compress is not installed (make deps installs openjph-tools)"))
    func selfMade() throws {
        let dir = try TemporaryDirectory()
        let scorer = try R.Scorer()
        for (width, height, level) in [(1300, 1240, 2), (640, 600, 1)] {
            let image = R.syntheticRadiograph(width: width, height: height)
            for (uid, label, options) in Self.syntaxes {
                let name = "synthetic-\(width)x\(height)-\(label)"
                let path = dir.path("\(name).dcm")
                try Self.wrap(try Self.codestream(image, options: options, in: dir, name: name), image: image,
                              header: R.Header(window: ("2000", "3000")), transferSyntax: uid, to: path)
                #expect(try DicomReader.metadata(path: path).transferSyntaxUID == uid, "\(name): the reader names the HTJ2K syntax")
                let comparison = try R.compare(path, name: name, scorer: scorer)
                #expect(comparison.level == level, "\(comparison)")
                #expect(try DicomReader.render(path: path).decisions.decodedWithOpenJPEG)
            }
        }
    }

    @Test("HTJ2K re-encodings of RG1, RG3 and DX_cat from ../shared (their windows; lossless, RPCL, lossy): reduced, within the bar",
          .enabled(if: Fixtures.shared != nil && encoderAvailable, "skipped: ../shared/data or ojph_compress is absent; the self-made HTJ2K tests still ran"))
    func sharedReencoded() throws {
        let dir = try TemporaryDirectory()
        let scorer = try R.Scorer()
        let root = try #require(Fixtures.shared).appendingPathComponent("data/dicom/radiographs")
        let sources: [(String, String, (String, String))] = [("RG1_UNCR.dcm", "MONOCHROME1", ("15000", "30000")),
                                                             ("RG3_UNCR.dcm", "MONOCHROME1", ("550", "1024")),
                                                             ("DX_cat_deid-data.dcm", "MONOCHROME2", ("2048", "4096"))]
        for (file, photometric, window) in sources {
            let image = try R.storedValues(root.appendingPathComponent(file).path)
            for (uid, label, options) in Self.syntaxes {
                let name = "\(file.replacingOccurrences(of: ".dcm", with: ""))-\(label)"
                let path = dir.path("\(name).dcm")
                try Self.wrap(try Self.codestream(image, options: options, in: dir, name: name), image: image,
                              header: R.Header(photometric: photometric, window: window), transferSyntax: uid, to: path)
                let comparison = try R.compare(path, name: name, scorer: scorer)
                #expect(comparison.level >= 2, "\(comparison): a radiograph of 1700 pixels or more reduces at least twice")
                try? FileManager.default.removeItem(atPath: path)
            }
        }
    }

    @Test("an HTJ2K study dropped into the daemon's drop folder is triaged, every image classified",
          .enabled(if: encoderAvailable, "skipped: OpenJPH's ojph_compress is not installed"))
    func studyThroughTheDropFolder() throws {
        let daemon = try DaemonHarness()
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.8.498.1621"
        try FileManager.default.createDirectory(atPath: daemon.dropFolder, withIntermediateDirectories: true)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        for (i, (uid, label, options)) in Self.syntaxes.enumerated() {
            let image = R.syntheticRadiograph(width: 640, height: 600, seed: UInt64(i + 1))
            var w = DicomWriter.radiograph(study: study, sop: "\(study).\(i + 1)", rows: image.height, columns: image.width, bitsAllocated: 16)
            w.set(0x0028, 0x0101, "US", DicomWriter.us(12))
            w.set(0x0028, 0x0102, "US", DicomWriter.us(11))
            w.set(0x0028, 0x1050, "DS", "2000")
            w.set(0x0028, 0x1051, "DS", "3000")
            let code = try Self.codestream(image, options: options, in: files, name: label)
            w.encapsulatedPixels([code.count % 2 == 1 ? code + Data([0]) : code], transferSyntax: uid)
            // Written beside the folder and moved in whole, as a sender's `mv` does.
            try w.write(to: files.path("\(label).dcm"))
            try FileManager.default.moveItem(atPath: files.path("\(label).dcm"), toPath: daemon.dropFolder + "/\(label).dcm")
        }
        let triaged = try daemon.waitForTriage([study])
        #expect(triaged[study]?["state"] as? String == "triaged", "\(String(describing: triaged[study]))")
        let images = try daemon.show(study).images
        #expect(images.count == 3 && images.allSatisfy { $0["probability"] as? Double != nil }, "\(images)")
    }

    @Test("a truncated or garbage HTJ2K codestream fails with a reason naming the file, in process and in the isolated decoder, never a crash",
          .enabled(if: encoderAvailable, "skipped: OpenJPH's ojph_compress is not installed"))
    func brokenCodestreams() throws {
        let dir = try TemporaryDirectory()
        let image = R.syntheticRadiograph(width: 640, height: 600)
        let code = try Self.codestream(image, options: ["-reversible", "true"], in: dir, name: "source")
        let header = R.Header(window: ("2000", "3000"))
        var broken: [(String, Data)] = [("garbage", Data((0..<4000).map { UInt8(($0 * 37 + 11) % 256) })),
                                        ("header-only", code.prefix(60))]
        // The HT code-block data cut short, and bytes flipped in it.
        broken.append(("cut-half", code.prefix(code.count / 2)))
        var flipped = code
        for i in stride(from: code.count / 3, to: code.count, by: 97) { flipped[i] ^= 0x5A }
        broken.append(("flipped", flipped))
        let isolated = Executable.url.map { IsolatedDecoder(executable: $0.path, timeout: 30) }
        defer { isolated?.close() }
        for (label, bytes) in broken {
            let path = dir.path("\(label).dcm")
            try Self.wrap(bytes, image: image, header: header, transferSyntax: "1.2.840.10008.1.2.4.201", to: path)
            for minimumSize in [0, R.minimumSize] {
                do {
                    let rendered = try DicomReader.render(path: path, minimumSize: minimumSize)
                    // OpenJPEG may decode what is left of a cut codestream: then at the size the header declares.
                    let frame = try #require(rendered.frames.first)
                    #expect(frame.width == (640 + (1 << rendered.resolutionLevel) - 1) >> rendered.resolutionLevel, "\(label)")
                    #expect(label != "garbage" && label != "header-only", "\(label) was decoded")
                } catch let error as ImagingError {
                    #expect(error.description.contains("\(label).dcm"), "\(error)")
                    print("htj2k broken \(label) (minimum size \(minimumSize)): \(error)")
                }
            }
            if let isolated {
                switch isolated.decode(path: path, spec: R.spec, maximumPixels: DicomReader.defaultMaximumPixels) {
                case .inputs: #expect(label != "garbage" && label != "header-only", "\(label) was decoded in the child")
                case .notApplicable(let reason): Issue.record("\(label): not applicable? \(reason)")
                case .unreadable(let error):
                    #expect(!error.description.contains("crashed"), "\(label): \(error)")
                    print("htj2k broken \(label) in the decoder process: \(error)")
                }
            }
        }
    }
}
