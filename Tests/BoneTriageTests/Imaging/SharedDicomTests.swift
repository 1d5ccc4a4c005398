import BoneTriage
import Foundation
import Testing

/// Real radiographs and broken files from public test suites, read from ../shared/data/dicom.
@Suite("Imaging with the shared real DICOM files", .enabled(if: Fixtures.shared != nil, "skipped: ../shared/data is absent; the self-made imaging tests still ran"))
struct SharedDicomTests {
    static func files(_ folder: String) -> [String] {
        guard let root = Fixtures.shared?.appendingPathComponent("data/dicom/\(folder)") else { return [] }
        return ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []).filter { $0.hasSuffix(".dcm") }.sorted()
            .map { root.appendingPathComponent($0).path }
    }

    @Test("every real radiograph reads and renders (JPEG 2000 included); XA cine and mammography are set aside")
    func radiographs() throws {
        let paths = Self.files("radiographs")
        #expect(paths.count >= 12)
        let spec = ModelInputSpec(size: 150, range: -1...0.9921875, filter: .area)
        for path in paths {
            let name = URL(fileURLWithPath: path).lastPathComponent
            let image = try IncomingImage.read(path: path)
            if name.hasPrefix("XA_multiframe") || name.hasPrefix("MG_") {
                #expect(!image.eligibility.isEligible, "\(name)")
                // Not fed to the model, but it must still render when asked.
                let rendered = try DicomReader.render(path: path)
                #expect(rendered.frames.count == (name.hasPrefix("XA") ? 96 : 1))
                continue
            }
            #expect(image.eligibility.isEligible, "\(name): \(image.eligibility)")
            let frame = try #require(image.frames.first, "\(name)")
            #expect(frame.width == image.metadata?.columns && frame.height == image.metadata?.rows, "\(name)")
            let lo = frame.pixels.min() ?? 0, hi = frame.pixels.max() ?? 0
            #expect(hi > lo, "\(name) rendered flat")
            let input = ModelInput.make(frame, spec: spec)
            #expect(input.count == 150 * 150 * 3 && input.allSatisfy { $0 >= -1 && $0 <= 0.9921875 })
            if name.hasPrefix("DX_JPEG2KLossless") { #expect(image.decisions?.fileWindowIgnored == true, "its window 2725/5310 misses values 32744...65535") }
            if name.contains("J2K") || name.contains("JPEG2K") { #expect(image.decisions?.decodedWithOpenJPEG == true, "\(name)") }
            if image.metadata?.photometricInterpretation == "MONOCHROME1" { #expect(image.decisions?.invertedMonochrome1 == true, "\(name)") }
        }
    }

    @Test("other formats: deflate, big endian, implicit VR, RLE RGB multi-frame, LUT sequences all read")
    func otherFormats() throws {
        for path in Self.files("other_formats") {
            let name = URL(fileURLWithPath: path).lastPathComponent
            let meta = try DicomReader.metadata(path: path)
            #expect(!meta.transferSyntaxUID.isEmpty, "\(name)")
            if name == "genFile.dcm" {  // a JPEG with a misplaced marker segment: refused, clearly
                #expect(throws: ImagingError.self) { try DicomReader.render(path: path) }
                continue
            }
            let rendered = try DicomReader.render(path: path)
            #expect(rendered.frames.count == meta.numberOfFrames, "\(name)")
            if name.hasPrefix("SC_rgb_rle_2frame") { #expect(rendered.frames.count == 2 && rendered.frames[0].channels == 3 && rendered.frames[0] != rendered.frames[1]) }
            if name == "image_dfl.dcm" { #expect(meta.transferSyntaxUID == "1.2.840.10008.1.2.1.99") }
            if name == "vlut_04.dcm" { #expect(rendered.decisions.voi == .voiLUT) }
        }
    }

    @Test("the file without File Meta reads as implicit VR little endian")
    func noMeta() throws {
        let path = try #require(Self.files("radiographs").first { $0.contains("nometa_implicitLE") })
        let m = try DicomReader.metadata(path: path)
        #expect(!m.hasFileMeta && m.transferSyntaxUID == "1.2.840.10008.1.2" && m.modality == "CR" && m.rows == 440)
    }

    /// What each broken file must do: be refused (with a clear error) or be read (its defect is recoverable).
    static let brokenExpectations: [String: Bool] = [
        "DX_966_badCOMmarker_J2KR.dcm": false,  // invalid COM marker: OpenJPEG refuses the codestream
        "ExplVR_LitEndNoMeta.dcm": true,  // no File Meta: read; an RT plan, so not applicable
        "GH177_D_CLUNIE_CT1_IVRLE_BigEndian_undefined_length.dcm": true,  // header reads; a CT, not applicable
        "J2K_pixelrep_mismatch.dcm": true,  // header reads; a CT, not applicable
        "JPEGLossless_1s_1f_i_16_16_bad.dcm": true,  // decodes; a CT, not applicable
        "MR_truncated.dcm": false,  // pixel data 62 bytes short
        "badVR.dcm": true,  // IS value '1A': header reads; RT dose, not applicable
        "bad_sequence.dcm": true,  // invalid sequence encoding, still reads; a CT
        "emri_small_jpeg_2k_lossless_too_short.dcm": false,  // ends before Pixel Data
        "meta_missing_tsyntax.dcm": false,  // no SOP Instance or Study UID: not a usable DICOM object
        "no_meta.dcm": false,  // DCMTK cannot parse the bare dataset
        "rtplan_truncated.dcm": false,  // truncated
    ]

    @Test("every broken file is refused with a clear error or read, as listed; none crashes the reader")
    func brokenFiles() throws {
        let paths = Self.files("broken")
        #expect(Set(paths.map { URL(fileURLWithPath: $0).lastPathComponent }) == Set(Self.brokenExpectations.keys))
        for path in paths {
            let name = URL(fileURLWithPath: path).lastPathComponent
            let expectRead = Self.brokenExpectations[name] ?? false
            do {
                let image = try IncomingImage.read(path: path)
                #expect(expectRead, "\(name) was read but should be refused")
                #expect(!image.eligibility.isEligible || !image.frames.isEmpty)
            } catch let error as ImagingError {
                #expect(!expectRead, "\(name) was refused: \(error)")
                #expect(error.description.contains(name), "the message names the file")
            }
            // Forcing a full decode, eligible or not, must also end in pixels or a typed error.
            do { _ = try DicomReader.render(path: path) } catch is ImagingError {}
        }
    }

    @Test("a real radiograph re-encoded losslessly by DCMTK renders bit-identically",
          .enabled(if: DicomTools.available, "skipped: DCMTK's command-line tools are not installed"))
    func realLosslessReencodings() throws {
        let path = try #require(Self.files("radiographs").first { $0.hasSuffix("RG3_UNCR.dcm") })
        let original = try DicomReader.render(path: path)
        let dir = try TemporaryDirectory()
        try DicomTools.run("dcmcjpeg", ["+e1", path, dir.path("jl.dcm")])
        try DicomTools.run("dcmcjpls", [path, dir.path("ls.dcm")])
        try DicomTools.run("dcmcrle", [path, dir.path("rle.dcm")])
        for name in ["jl", "ls", "rle"] {
            let again = try DicomReader.render(path: dir.path("\(name).dcm"))
            #expect(again.frames == original.frames, "\(name)")
            #expect(again.decisions == original.decisions, "\(name)")
        }
    }
}
