import BoneTriage
import Foundation
import Logging
import Testing

/// The reasons given for refused, quarantined and unclassified files say what happened: which limit
/// fired, that the file was quarantined (not "stays where it is"), that a dataset was empty, that an
/// image is over [triage] maximum_megapixels (not "send it uncompressed").
@Suite("Intake and decoding reasons", .serialized)
struct IntakeReasonTests {
    static let spec = ModelInputSpec(size: 75, range: -1...1, filter: .area)
    static let study = "1.2.826.0.1.3680043.8.498.1414"

    @Test("an empty C-STORE dataset is refused 0xC000 as empty, not as lacking a Study Instance UID")
    func emptyDataset() throws {
        let setup = try IntakeHarness()
        let sop = Self.study + ".1"
        // What DCMTK leaves on disk for a C-STORE whose dataset is empty: the File Meta header alone.
        let status = try setup.receive(DicomWriter(sopInstanceUID: sop), emptyDataset: true)
        #expect(status == .cannotUnderstand)
        let reasons = try setup.reasons()
        #expect(reasons.count == 1 && reasons[0].contains("empty dataset"), "\(reasons)")
        #expect(!reasons[0].contains("no Study Instance UID"), "\(reasons)")
        #expect(!reasons[0].contains(".incoming"), "the reason names no temporary path: \(reasons)")
    }

    @Test("a C-STORE of a file whose Pixel Data is short is refused 0xC000 and quarantined with the numbers")
    func shortPixelDataRefused() throws {
        let setup = try IntakeHarness()
        let sop = Self.study + ".2"
        var w = DicomWriter.radiograph(study: Self.study, sop: sop, rows: 16384, columns: 16384, bitsAllocated: 16)
        w.nativePixels(bytes: 512, bitsAllocated: 16)
        let status = try setup.receive(w)
        #expect(status == .cannotUnderstand)
        let reasons = try setup.reasons()
        #expect(reasons.count == 1 && reasons[0].contains("holds 512 bytes") && reasons[0].contains("resend"), "\(reasons)")
        #expect(try setup.worklist.studies(matching: WorklistFilter()).isEmpty, "nothing is recorded or triaged")
    }

    @Test("a header read that runs out of time names the header limit, and a quarantined file is not said to stay where it is",
          .enabled(if: Executable.url != nil, "needs the built bonetriage binary"))
    func headerTimeout() throws {
        var environment = ProcessInfo.processInfo.environment
        environment[DecoderService.faultVariable] = "hang:slow-header"
        let reader = IsolatedHeaderReader(executable: try #require(Executable.url).path, timeout: 1, processes: 1, environment: environment)
        defer { reader.close() }
        let setup = try IntakeHarness(headers: reader)
        let drop = setup.dir.path("drop")
        try FileManager.default.createDirectory(atPath: drop, withIntermediateDirectories: true)
        var w = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".3", rows: 8, columns: 8)
        w.nativePixels(bytes: 64)
        try w.write(to: drop + "/slow-header.dcm")
        guard case let .quarantined(kept, reason) = setup.intake.ingest(dropped: drop + "/slow-header.dcm", dropRoot: drop) else {
            Issue.record("a file whose header read timed out is quarantined")
            return
        }
        #expect(FileManager.default.fileExists(atPath: kept) && !FileManager.default.fileExists(atPath: drop + "/slow-header.dcm"))
        #expect(reason.contains("took longer than 1 s (the limit for reading a header or checking a PNG: [triage] decode_timeout_seconds, at most 10 s)"),
                "\(reason)")
        #expect(!reason.contains("stays where it is") && !reason.contains("the study went on"), "\(reason)")
        #expect(!reason.contains("uncompressed"), "\(reason)")
    }

    @Test("a 65535 x 65535 image is refused as over [triage] maximum_megapixels, in the decoder process too")
    func sizeRefusal() throws {
        let dir = try TemporaryDirectory()
        var w = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".4", rows: 65535, columns: 65535)
        w.encapsulatedPixels([Data(repeating: 1, count: 64)], transferSyntax: "1.2.840.10008.1.2.5")
        let path = dir.path("huge.dcm")
        try w.write(to: path)
        #expect(try DicomReader.metadata(path: path).rows == 65535, "the header itself is accepted")
        func check(_ error: ImagingError) {
            guard case let .tooLarge(_, reason) = error else { Issue.record("expected tooLarge, got \(error)"); return }
            #expect(reason.contains("65535 x 65535 pixels x 1 frame") && reason.contains("over the limit of 256 Mpixel ([triage] maximum_megapixels)"),
                    "\(reason)")
            #expect(!error.description.contains("uncompressed") && !error.description.contains("resend"), "\(error)")
        }
        do {
            _ = try DicomReader.render(path: path)
            Issue.record("a 65535 x 65535 image was rendered")
        } catch let error as ImagingError { check(error) }
        if let executable = Executable.url {
            let decoder = IsolatedDecoder(executable: executable.path, timeout: 30)
            defer { decoder.close() }
            guard case let .unreadable(error) = decoder.decode(path: path, spec: Self.spec, maximumPixels: DicomReader.defaultMaximumPixels) else {
                Issue.record("the decoder process must refuse it")
                return
            }
            check(error)
        }
        // A PNG over the limit says the same, not "re-export the image as PNG".
        do {
            _ = try PNGReader.read(path: Fixtures.path("png/gray8.png"), maximumPixels: 100)
            Issue.record("a PNG over the limit was read")
        } catch let ImagingError.tooLarge(_, reason) {
            #expect(reason.contains("24 x 16 pixels") && reason.contains("over the limit of 100 pixels ([triage] maximum_megapixels)"), "\(reason)")
        }
    }

    @Test("a dataset without a SOP Instance UID is answered 0xA900 saying so, not as a mismatch with ''")
    func missingSOPInstanceUID() throws {
        let setup = try IntakeHarness()
        let sop = Self.study + ".5"
        var w = DicomWriter.radiograph(study: Self.study, sop: sop, rows: 8, columns: 8)
        w.nativePixels(bytes: 64)
        w.omitSOPInstanceUID = true
        let status = try setup.receive(w)
        #expect(status == .datasetDoesNotMatch)
        let reasons = try setup.reasons()
        #expect(reasons.count == 1 && reasons[0].contains("the dataset has no SOP Instance UID (0008,0018)") && !reasons[0].contains("''"), "\(reasons)")
    }

    @Test("'sending it uncompressed may help' only where the data is compressed")
    func uncompressedHint() throws {
        let dir = try TemporaryDirectory()
        var rle = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".6", rows: 64, columns: 64)
        rle.encapsulatedPixels([Data(repeating: 0xEE, count: 64)], transferSyntax: "1.2.840.10008.1.2.5")  // not RLE segments
        try rle.write(to: dir.path("rle.dcm"))
        var native = DicomWriter.radiograph(study: Self.study, sop: Self.study + ".7", rows: 8, columns: 8)
        native.set(0x0028, 0x0002, "US", DicomWriter.us(2))
        native.nativePixels(bytes: 128)
        try native.write(to: dir.path("native.dcm"))
        for (name, hint) in [("rle.dcm", true), ("native.dcm", false)] {
            do {
                _ = try DicomReader.render(path: dir.path(name))
                Issue.record("\(name) was rendered")
            } catch let ImagingError.undecodable(_, reason) {
                #expect(reason.contains("sending it uncompressed may help") == hint, "\(name): \(reason)")
            }
        }
    }

    @Test("a decoder failure's description says what went wrong and what to do, not what became of the file")
    func decoderFailureDescription() {
        let error = ImagingError.decoderFailed(path: "/x/a.dcm", reason: "crashed the decoder process twice (killed by signal 11, Segmentation fault)")
        #expect(error.description.hasPrefix("/x/a.dcm: reading this file crashed the decoder process twice"))
        #expect(!error.description.contains("stays where it is") && !error.description.contains("study went on"), "\(error)")
        #expect(error.explanation == String(error.description.dropFirst("/x/a.dcm: ".count)))
    }
}
