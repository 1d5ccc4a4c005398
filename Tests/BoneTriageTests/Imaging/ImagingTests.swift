import BoneTriage
import Foundation
import Testing

/// A 8-bit test pattern holding 0 and 255, so no VOI window (min-max) changes it.
func testPattern(width: Int = 61, height: Int = 47) -> Radiograph {
    let pixels = (0..<(width * height)).map { p -> UInt8 in
        let x = p % width, y = p / width
        if p == 0 { return 0 }
        if p == 1 { return 255 }
        return UInt8((x * 13 + y * 7 + (x * y) % 17) % 256)
    }
    return Radiograph(width: width, height: height, channels: 1, pixels: pixels)
}

@Suite("Imaging with self-made fixtures (stands alone)")
struct SelfMadeImagingTests {
    static let spec = ModelInputSpec(size: 150, range: -1...0.9921875, filter: .area)

    @Test("every PNG colour type and depth reads to the same pixels")
    func pngVariants() throws {
        let gray = try PNGReader.read(path: Fixtures.path("png/gray8.png"))
        #expect(gray.width == 24 && gray.height == 16 && gray.channels == 1)
        for name in ["gray16", "gray_alpha8"] {
            #expect(try PNGReader.read(path: Fixtures.path("png/\(name).png")) == gray, "\(name)")
        }
        let replicated = gray.pixels.flatMap { [$0, $0, $0] }
        #expect(try PNGReader.read(path: Fixtures.path("png/palette8.png")).pixels == replicated)
        let rgb = try PNGReader.read(path: Fixtures.path("png/rgb8.png"))
        #expect(rgb.channels == 3 && rgb.pixels == gray.pixels.flatMap { [$0, UInt8((Int($0) + 85) % 256), UInt8((Int($0) + 170) % 256)] })
        #expect(try PNGReader.read(path: Fixtures.path("png/rgba8.png")) == rgb)
    }

    @Test("broken PNGs are refused with a typed error", arguments: ["truncated", "corrupt_idat", "not_a_png"])
    func brokenPNG(_ name: String) throws {
        #expect(throws: ImagingError.self) { try IncomingImage.read(path: Fixtures.path("png/\(name).png")) }
        do {
            _ = try IncomingImage.read(path: Fixtures.path("png/\(name).png"))
        } catch let error as ImagingError {
            guard case .notPNG = error else { Issue.record("expected notPNG, got \(error)"); return }
            #expect(error.description.contains("\(name).png"))
        }
    }

    @Test("PNG and every lossless DICOM encoding of one image give bit-identical model inputs",
          .enabled(if: DicomTools.available, "skipped: DCMTK's and OpenJPEG's command-line tools are not installed (make test installs dcmtk and libopenjp2-tools)"))
    func losslessEncodingsAgree() throws {
        let dir = try TemporaryDirectory()
        let image = testPattern()
        try PNGReader.write(image, to: dir.path("pattern.png"))
        try DicomTools.writeBMP(image, to: dir.path("pattern.bmp"))
        try DicomTools.run("img2dcm", ["-i", "BMP", dir.path("pattern.bmp"), dir.path("native.dcm")])
        try DicomTools.run("dcmcjpeg", ["+e1", dir.path("native.dcm"), dir.path("jpeg-lossless.dcm")])
        try DicomTools.run("dcmcjpeg", ["+el", dir.path("native.dcm"), dir.path("jpeg-lossless-p14.dcm")])
        try DicomTools.run("dcmcjpls", [dir.path("native.dcm"), dir.path("jpeg-ls.dcm")])
        try DicomTools.run("dcmcrle", [dir.path("native.dcm"), dir.path("rle.dcm")])
        try DicomTools.run("dcmconv", ["+te", dir.path("native.dcm"), dir.path("big-endian.dcm")])
        try DicomTools.run("dcmconv", ["+ti", dir.path("native.dcm"), dir.path("implicit.dcm")])
        try DicomTools.writePGM(image, to: dir.path("pattern.pgm"))
        try DicomTools.run("opj_compress", ["-i", dir.path("pattern.pgm"), "-o", dir.path("pattern.j2k")])
        try DicomTools.encapsulateJ2K(try Data(contentsOf: URL(fileURLWithPath: dir.path("pattern.j2k"))),
                                      rows: image.height, columns: image.width, to: dir.path("jpeg2000.dcm"))

        let png = try IncomingImage.read(path: dir.path("pattern.png"))
        #expect(png.frames == [image])
        let reference = ModelInput.make(image, spec: Self.spec)
        for name in ["native", "jpeg-lossless", "jpeg-lossless-p14", "jpeg-ls", "rle", "big-endian", "implicit", "jpeg2000"] {
            let dicom = try IncomingImage.read(path: dir.path("\(name).dcm"))
            #expect(dicom.eligibility.isEligible, "\(name)")
            #expect(dicom.frames == [image], "\(name): rendered pixels differ")
            #expect(dicom.frames.first.map { ModelInput.make($0, spec: Self.spec) } == reference, "\(name): model input differs")
        }
        #expect(try IncomingImage.read(path: dir.path("jpeg2000.dcm")).decisions?.decodedWithOpenJPEG == true)
    }

    @Test("lossy encodings (JPEG baseline, JPEG-LS near-lossless, JPEG 2000 irreversible) decode close to the original",
          .enabled(if: DicomTools.available, "skipped: DCMTK's and OpenJPEG's command-line tools are not installed"))
    func lossyEncodingsDecode() throws {
        let dir = try TemporaryDirectory()
        let image = testPattern()
        try DicomTools.writeBMP(image, to: dir.path("p.bmp"))
        try DicomTools.run("img2dcm", ["-i", "BMP", dir.path("p.bmp"), dir.path("native.dcm")])
        try DicomTools.run("dcmcjpeg", ["+eb", "+q", "95", dir.path("native.dcm"), dir.path("baseline.dcm")])
        try DicomTools.run("dcmcjpls", ["+en", dir.path("native.dcm"), dir.path("near-lossless.dcm")])
        try DicomTools.writePGM(image, to: dir.path("p.pgm"))
        try DicomTools.run("opj_compress", ["-i", dir.path("p.pgm"), "-o", dir.path("p.j2k"), "-I", "-r", "4"])
        try DicomTools.encapsulateJ2K(try Data(contentsOf: URL(fileURLWithPath: dir.path("p.j2k"))), rows: image.height,
                                      columns: image.width, lossy: true, to: dir.path("j2k-lossy.dcm"))
        for name in ["baseline", "near-lossless", "j2k-lossy"] {
            let decoded = try IncomingImage.read(path: dir.path("\(name).dcm"))
            let frame = try #require(decoded.frames.first, "\(name)")
            #expect(frame.width == image.width && frame.height == image.height)
            // Min-max windowing of a lossy copy can stretch slightly; the mean error stays small.
            let error = zip(frame.pixels, image.pixels).map { abs(Double($0) - Double($1)) }.reduce(0, +) / Double(image.pixels.count)
            #expect(error < 12, "\(name): mean absolute error \(error)")
        }
        #expect(try DicomReader.metadata(path: dir.path("j2k-lossy.dcm")).transferSyntaxUID == "1.2.840.10008.1.2.4.91")
    }

    @Test("truncating a DICOM file at every offset, or flipping bytes, never crashes the reader",
          .enabled(if: DicomTools.available, "skipped: img2dcm is not installed"))
    func generatedCorruptions() throws {
        let dir = try TemporaryDirectory()
        try DicomTools.writeBMP(testPattern(width: 20, height: 10), to: dir.path("p.bmp"))
        try DicomTools.run("img2dcm", ["-i", "BMP", dir.path("p.bmp"), dir.path("good.dcm")])
        try DicomTools.run("dcmcjpls", [dir.path("good.dcm"), dir.path("good-ls.dcm")])
        for source in ["good.dcm", "good-ls.dcm"] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: dir.path(source)))
            var refused = 0
            for cut in stride(from: 0, to: bytes.count, by: 3) {
                let path = dir.path("cut.dcm")
                try bytes.prefix(cut).write(to: URL(fileURLWithPath: path))
                do { _ = try IncomingImage.read(path: path) } catch is ImagingError { refused += 1 }
            }
            #expect(refused > bytes.count / 6, "\(source): most truncations must be refused")
            var generator = SystemRandomNumberGenerator()
            for _ in 0..<300 {
                var damaged = bytes
                for _ in 0..<3 { damaged[Int.random(in: 132..<damaged.count, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator) }
                let path = dir.path("flip.dcm")
                try damaged.write(to: URL(fileURLWithPath: path))
                _ = try? IncomingImage.read(path: path)  // a typed error or an image; anything else would crash the suite
            }
        }
    }

    @Test("empty files, folders, missing files and oversized images get clear errors")
    func badInputs() throws {
        let dir = try TemporaryDirectory()
        _ = FileManager.default.createFile(atPath: dir.path("empty.dcm"), contents: Data())
        #expect(throws: ImagingError.notDICOM(path: dir.path("empty.dcm"), reason: "the file is empty (0 bytes)")) {
            try IncomingImage.read(path: dir.path("empty.dcm"))
        }
        #expect(throws: ImagingError.unreadable(path: dir.url.path, reason: "it is a folder")) { try DicomReader.metadata(path: dir.url.path) }
        #expect(throws: ImagingError.unreadable(path: dir.path("none.dcm"), reason: "no such file")) { try DicomReader.metadata(path: dir.path("none.dcm")) }
        try Data("just some text, not a DICOM file at all".utf8).write(to: URL(fileURLWithPath: dir.path("text.dcm")))
        #expect(throws: ImagingError.self) { try IncomingImage.read(path: dir.path("text.dcm")) }
        #expect(throws: ImagingError.self) { try PNGReader.read(path: Fixtures.path("png/gray8.png"), maximumPixels: 100) }
        if DicomTools.available {
            try DicomTools.writeBMP(testPattern(), to: dir.path("p.bmp"))
            try DicomTools.run("img2dcm", ["-i", "BMP", dir.path("p.bmp"), dir.path("p.dcm")])
            do {
                _ = try DicomReader.render(path: dir.path("p.dcm"), maximumPixels: 1000)
                Issue.record("an image over the pixel limit was rendered")
            } catch let ImagingError.tooLarge(_, reason) {
                #expect(reason.contains("over the limit of 1000 pixels ([triage] maximum_megapixels)"), "\(reason)")
            }
        }
    }

    @Test("an unknown transfer syntax, a corrupt codestream, or dimensions that disagree are refused by name")
    func unknownSyntaxAndCorruptCodestream() throws {
        let dir = try TemporaryDirectory()
        let garbage = Data((0..<300).map { UInt8(($0 * 37) % 256) })
        try DicomTools.encapsulateJ2K(garbage, rows: 10, columns: 10, transferSyntax: "1.2.3.4.5.6.7", to: dir.path("unknown.dcm"))
        try DicomTools.encapsulateJ2K(garbage, rows: 10, columns: 10, to: dir.path("corrupt.dcm"))
        for name in ["unknown", "corrupt"] {
            do {
                _ = try IncomingImage.read(path: dir.path("\(name).dcm"))
                Issue.record("\(name) was rendered")
            } catch let error as ImagingError {
                #expect(error.description.contains("\(name).dcm"), "\(error)")
            }
        }
        if DicomTools.available {
            try DicomTools.writePGM(testPattern(), to: dir.path("p.pgm"))
            try DicomTools.run("opj_compress", ["-i", dir.path("p.pgm"), "-o", dir.path("p.j2k")])
            try DicomTools.encapsulateJ2K(try Data(contentsOf: URL(fileURLWithPath: dir.path("p.j2k"))), rows: 48, columns: 61, to: dir.path("mismatch.dcm"))
            do {
                _ = try DicomReader.render(path: dir.path("mismatch.dcm"))
                Issue.record("a codestream of another size was accepted")
            } catch let ImagingError.undecodable(_, reason) {
                #expect(reason.contains("61x47x1 but the header says 61x48x1"), "\(reason)")
            }
        }
    }

    @Test("resizing: area averages, nearest picks like PIL, sizes and ranges come from the spec")
    func resize() throws {
        let flat = Radiograph(width: 300, height: 200, channels: 1, pixels: [UInt8](repeating: 200, count: 60000))
        #expect(ModelInput.resize(flat, to: 150, filter: .area).allSatisfy { abs($0 - 200) < 1e-3 })
        let stripes = Radiograph(width: 4, height: 1, channels: 1, pixels: [0, 100, 200, 255])
        #expect(ModelInput.resize(stripes, to: 2, filter: .area).prefix(2) == [50, 227.5])
        #expect(ModelInput.resize(stripes, to: 2, filter: .nearest).prefix(2) == [100, 255])
        let input = ModelInput.make(flat, spec: ModelInputSpec(size: 99, range: 0...1, filter: .area))
        #expect(input.count == 99 * 99 * 3 && input.allSatisfy { abs($0 - 200 / 255) < 1e-5 })
        let tiny = Radiograph(width: 2, height: 2, channels: 1, pixels: [0, 255, 255, 0])
        let up = ModelInput.resize(tiny, to: 150, filter: .area)
        #expect(up.count == 150 * 150 && up.allSatisfy { $0 >= 0 && $0 <= 255 })
    }
}
