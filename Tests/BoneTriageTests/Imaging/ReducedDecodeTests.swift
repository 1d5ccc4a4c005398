import BoneTriage
import Foundation
import Testing

/// JPEG 2000 and 8-bit JPEG decoded at the resolution the model needs (issue 16): the model input from the reduced
/// decode against the full decode plus the area resize, on real radiographs and self-made encodings.
/// The figures are printed per file ("reduced-decode ..." lines).
@Suite("Reduced-resolution JPEG 2000 and JPEG decoding for the model input")
struct ReducedDecodeTests {
    static let spec = ModelInputSpec(size: 150, range: -1...0.9921875, filter: .area)
    static var minimumSize: Int { DicomReader.minimumDecodedSize(for: spec) }

    /// The figures of one comparison.
    struct Comparison: CustomStringConvertible {
        var name: String
        var fullSize: (Int, Int)
        var reducedSize: (Int, Int)
        var level: Int
        /// Mean absolute difference of the model inputs, in gray levels of 255 (the worst frame).
        var meanAbsoluteDifference: Double
        /// Largest |p(reduced) - p(full)| over the frames.
        var probabilityDifference: Double
        var description: String {
            "reduced-decode \(name): full \(fullSize.0)x\(fullSize.1), level \(level) -> \(reducedSize.0)x\(reducedSize.1), "
                + "input MAD \(String(format: "%.3f", meanAbsoluteDifference)) gray levels, |dp| \(String(format: "%.5f", probabilityDifference))"
        }
    }

    /// The synthetic-weights backbone the other tests use, with a fixed logistic head.
    final class Scorer {
        let engine: InceptionV3Engine
        let head = LogisticHead(weights: (0..<2048).map { Float(sin(Double($0))) * 0.01 }, bias: 0)
        init() throws {
            engine = try InceptionV3Engine(network: InceptionV3Network(weights: SyntheticWeights.backbone(variant: .keras, inputSize: 150)),
                                           inputSize: 150, threads: 2)
        }
        func probabilities(_ inputs: [[Float]]) throws -> [Double] {
            let features = try engine.pooledFeatures(Array(inputs.joined()), batch: inputs.count)
            let d = features.count / inputs.count
            return (0..<inputs.count).map { head.probability(features[($0 * d)..<(($0 + 1) * d)]) }
        }
    }

    static func meanAbsoluteDifference(_ a: [Float], _ b: [Float]) -> Double {
        let scale = Double(spec.range.upperBound - spec.range.lowerBound) / 255
        return zip(a, b).map { abs(Double($0) - Double($1)) }.reduce(0, +) / Double(a.count) / scale
    }

    /// Full decode + resize against the reduced decode + resize, frame by frame, with the same rendering decisions.
    /// `expectEquivalent` false: the figures only (a case the rule is known not to see).
    static func compare(_ path: String, name: String, scorer: Scorer, threads: Int = 1, expectEquivalent: Bool = true) throws -> Comparison {
        let full = try DicomReader.render(path: path)
        let reduced = try DicomReader.render(path: path, minimumSize: minimumSize, threads: threads)
        #expect(full.resolutionLevel == 0, "\(name): the default render is at full resolution")
        #expect(full.frames.count == reduced.frames.count, "\(name)")
        #expect(!expectEquivalent || full.decisions.voi == reduced.decisions.voi && full.decisions.invertedMonochrome1 == reduced.decisions.invertedMonochrome1
                && full.decisions.fileWindowIgnored == reduced.decisions.fileWindowIgnored, "\(name): rendering decisions differ")
        if full.decisions.voi == .window {
            #expect(full.decisions.windowCenter == reduced.decisions.windowCenter && full.decisions.windowWidth == reduced.decisions.windowWidth, "\(name)")
        }
        let fullInputs = full.frames.map { ModelInput.make($0, spec: spec) }
        let reducedInputs = reduced.frames.map { ModelInput.make($0, spec: spec, reduction: reduced.reduction) }
        let mad = zip(fullInputs, reducedInputs).map { meanAbsoluteDifference($0, $1) }.max() ?? 0
        let p = try scorer.probabilities(fullInputs + reducedInputs)
        let n = fullInputs.count
        let dp = (0..<n).map { abs(p[$0] - p[n + $0]) }.max() ?? 0
        let first = try #require(full.frames.first), small = try #require(reduced.frames.first)
        let comparison = Comparison(name: name, fullSize: (first.width, first.height), reducedSize: (small.width, small.height),
                                    level: reduced.resolutionLevel, meanAbsoluteDifference: mad, probabilityDifference: dp)
        print(comparison)
        #expect(small.width == (first.width + (1 << comparison.level) - 1) >> comparison.level
                && small.height == (first.height + (1 << comparison.level) - 1) >> comparison.level, "\(comparison)")
        #expect(comparison.level == 0 || (small.width >= minimumSize && small.height >= minimumSize), "\(comparison)")
        if expectEquivalent {
            #expect(mad <= 1, "\(comparison)")
            #expect(dp <= 0.01, "\(comparison)")
        }
        return comparison
    }

    // MARK: Self-made encodings

    /// 16-bit stored values, row by row.
    struct StoredImage {
        var width: Int, height: Int, bitsStored: Int
        var values: [UInt16]

        /// 2x2 means (rounded), for a smaller radiograph of the same kind.
        func halved() -> StoredImage {
            let w = width / 2, h = height / 2
            var out = [UInt16](repeating: 0, count: w * h)
            for y in 0..<h {
                for x in 0..<w {
                    let top: Int = 2 * y * width + 2 * x
                    let bottom: Int = top + width
                    let sum: Int = Int(values[top]) + Int(values[top + 1]) + Int(values[bottom]) + Int(values[bottom + 1])
                    out[y * w + x] = UInt16((sum + 2) / 4)
                }
            }
            return StoredImage(width: w, height: h, bitsStored: bitsStored, values: out)
        }

        /// A binary 16-bit PGM (big-endian samples), the input opj_compress takes; maxval 2^bitsStored - 1.
        func writePGM(to path: String) throws {
            var data = Data("P5\n\(width) \(height)\n\((1 << bitsStored) - 1)\n".utf8)
            data.reserveCapacity(data.count + values.count * 2)
            for v in values { data.append(UInt8(v >> 8)); data.append(UInt8(v & 0xFF)) }
            try data.write(to: URL(fileURLWithPath: path))
        }
    }

    /// What a self-made file declares beside its pixels.
    struct Header {
        var photometric = "MONOCHROME2"
        var window: (center: String, width: String)?
        var frames = 1
    }

    /// A CR Part 10 file holding one codestream per frame (JPEG 2000 lossless or lossy), 16 bits allocated.
    static func encapsulate(_ codestreams: [Data], image: StoredImage, header: Header, lossy: Bool, to path: String) throws {
        try encapsulate(codestreams, image: image, header: header, transferSyntax: lossy ? "1.2.840.10008.1.2.4.91" : "1.2.840.10008.1.2.4.90", to: path)
    }

    /// The same with any encapsulated transfer syntax (HTJ2K's among them).
    static func encapsulate(_ codestreams: [Data], image: StoredImage, header: Header, transferSyntax: String, to path: String) throws {
        var w = DicomWriter.radiograph(study: "1.2.826.0.1.3680043.8.498.1616", sop: "1.2.826.0.1.3680043.8.498.1616.1",
                                       rows: image.height, columns: image.width, bitsAllocated: 16,
                                       frames: header.frames > 1 ? header.frames : nil)
        w.set(0x0028, 0x0004, "CS", header.photometric)
        w.set(0x0028, 0x0101, "US", DicomWriter.us(image.bitsStored))
        w.set(0x0028, 0x0102, "US", DicomWriter.us(image.bitsStored - 1))
        if let window = header.window {
            w.set(0x0028, 0x1050, "DS", window.center)
            w.set(0x0028, 0x1051, "DS", window.width)
        }
        w.encapsulatedPixels(codestreams, transferSyntax: transferSyntax)
        try w.write(to: path)
    }

    /// Encodes with OpenJPEG's own encoder (not this project's code) and wraps it into DICOM.
    static func encode(_ images: [StoredImage], header: Header, lossy: Bool, extra: [String] = [], in dir: TemporaryDirectory,
                       name: String) throws -> String {
        let codes = try Self.codestreams(images, lossy: lossy, extra: extra, in: dir, name: name)
        let path = dir.path("\(name).dcm")
        var h = header
        h.frames = images.count
        try encapsulate(codes, image: images[0], header: h, lossy: lossy, to: path)
        return path
    }

    /// One opj_compress codestream per image.
    static func codestreams(_ images: [StoredImage], lossy: Bool, extra: [String] = [], in dir: TemporaryDirectory, name: String) throws -> [Data] {
        var codestreams: [Data] = []
        for (i, image) in images.enumerated() {
            try image.writePGM(to: dir.path("\(name)-\(i).pgm"))
            var arguments = ["-i", dir.path("\(name)-\(i).pgm"), "-o", dir.path("\(name)-\(i).j2k")]
            if lossy { arguments += ["-I", "-r", "20"] }
            try DicomTools.run("opj_compress", arguments + extra)
            codestreams.append(try Data(contentsOf: URL(fileURLWithPath: dir.path("\(name)-\(i).j2k"))))
            try? FileManager.default.removeItem(atPath: dir.path("\(name)-\(i).pgm"))
        }
        return codestreams
    }

    /// A radiograph-like 12-bit image made here: soft tissue gradient, two "bones" with bright cortices
    /// and a thin fracture line, and noise; bright where dense (as stored for MONOCHROME2).
    static func syntheticRadiograph(width: Int, height: Int, seed: UInt64 = 1616) -> StoredImage {
        var state = seed
        func noise() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % 61) - 30
        }
        var values = [UInt16](repeating: 0, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                let u = Double(x) / Double(width), v = Double(y) / Double(height)
                var value = 600 + 900 * exp(-pow((u - 0.5) / 0.3, 2))  // soft tissue
                for centre in [0.38, 0.62] {
                    let d = abs(u - centre - 0.04 * sin(v * 3))
                    if d < 0.06 { value += d > 0.045 ? 2200 : 1300 }  // cortex brighter than marrow
                }
                if abs(v - 0.47 - 0.1 * (u - 0.5)) < 0.003 && abs(u - 0.38) < 0.07 { value -= 900 }  // a fracture line
                values[y * width + x] = UInt16(max(0, min(4095, Int(value) + noise())))
            }
        }
        return StoredImage(width: width, height: height, bitsStored: 12, values: values)
    }

    @Test("the reduced path is taken: a 640x600 JPEG 2000 decodes at level 1 (320x300) for a 150 input, and matches the full decode",
          .enabled(if: DicomTools.available, "skipped: OpenJPEG's opj_compress is not installed (make deps installs libopenjp2-tools)"))
    func selfMadeSmall() throws {
        let dir = try TemporaryDirectory()
        let scorer = try Scorer()
        let image = Self.syntheticRadiograph(width: 640, height: 600)
        for (lossy, header, label) in [(false, Header(window: ("2000", "3000")), "window"), (true, Header(photometric: "MONOCHROME1"), "mono1-minmax"),
                                       (false, Header(photometric: "MONOCHROME1", window: ("1800", "3600")), "mono1-window")] {
            let name = "synthetic-640x600-\(lossy ? "lossy" : "lossless")-\(label)"
            let path = try Self.encode([image], header: header, lossy: lossy, in: dir, name: name)
            let comparison = try Self.compare(path, name: name, scorer: scorer)
            if header.window == nil {
                // No window: the min-max window needs the full image's extremes, so it is decoded in full.
                #expect(comparison.level == 0 && comparison.meanAbsoluteDifference == 0, "\(comparison)")
                continue
            }
            #expect(comparison.level == 1, "\(comparison)")
            #expect(comparison.reducedSize.0 == 320 && comparison.reducedSize.1 == 300, "\(comparison)")
            let rendered = try DicomReader.render(path: path, minimumSize: Self.minimumSize)
            #expect(rendered.decisions.decodedWithOpenJPEG && rendered.decisions.invertedMonochrome1 == (header.photometric == "MONOCHROME1"))
        }
    }

    @Test("the level is bounded by the codestream's decomposition levels and by the size; nearest-filter models get full resolution",
          .enabled(if: DicomTools.available, "skipped: OpenJPEG's opj_compress is not installed"))
    func levelBounds() throws {
        let dir = try TemporaryDirectory()
        let big = Self.syntheticRadiograph(width: 1300, height: 1240)
        // 1300x1240 could go to level 2 (325x310); a codestream with one decomposition level stops at 1,
        // one with none (a single resolution) at 0.
        let windowed = Header(window: ("2000", "3000"))
        let two = try Self.encode([big], header: windowed, lossy: false, in: dir, name: "levels-default")
        #expect(try DicomReader.render(path: two, minimumSize: Self.minimumSize).resolutionLevel == 2)
        let one = try Self.encode([big], header: windowed, lossy: false, extra: ["-n", "2"], in: dir, name: "levels-1")
        let reducedOne = try DicomReader.render(path: one, minimumSize: Self.minimumSize)
        #expect(reducedOne.resolutionLevel == 1 && reducedOne.frames.first?.width == 650 && reducedOne.frames.first?.height == 620)
        let none = try Self.encode([big], header: windowed, lossy: false, extra: ["-n", "1"], in: dir, name: "levels-0")
        let reducedNone = try DicomReader.render(path: none, minimumSize: Self.minimumSize)
        #expect(reducedNone.resolutionLevel == 0 && reducedNone.frames.first?.width == 1300)
        // Too small to reduce: 440x420 halves to 220x210, under 300.
        let small = try Self.encode([Self.syntheticRadiograph(width: 440, height: 420)], header: windowed, lossy: false, in: dir, name: "small")
        #expect(try DicomReader.render(path: small, minimumSize: Self.minimumSize).resolutionLevel == 0)
        // The model-input decoders: area reduces, nearest does not.
        #expect(DicomReader.minimumDecodedSize(for: Self.spec) == 300)
        #expect(DicomReader.minimumDecodedSize(for: ModelInputSpec(size: 150, range: -1...1, filter: .nearest)) == 0)
        // The full decode stays the default (inspect, what radiologists see).
        #expect(try DicomReader.render(path: two).resolutionLevel == 0)
        #expect(try IncomingImage.read(path: two).frames.first?.width == 1300)
    }

    @Test("multi-frame JPEG 2000: every frame at the same reduced level, each matching its full decode",
          .enabled(if: DicomTools.available, "skipped: OpenJPEG's opj_compress is not installed"))
    func multiFrame() throws {
        let dir = try TemporaryDirectory()
        let scorer = try Scorer()
        let frames = [Self.syntheticRadiograph(width: 700, height: 640, seed: 1), Self.syntheticRadiograph(width: 700, height: 640, seed: 2)]
        let path = try Self.encode(frames, header: Header(window: ("2000", "3000")), lossy: false, in: dir, name: "two-frames")
        let comparison = try Self.compare(path, name: "synthetic-700x640-2-frames", scorer: scorer)
        #expect(comparison.level == 1)
        let rendered = try DicomReader.render(path: path, minimumSize: Self.minimumSize)
        #expect(rendered.frames.count == 2 && rendered.frames.allSatisfy { $0.width == 350 && $0.height == 320 })
    }

    @Test("OpenJPEG threads change nothing in the pixels; a worker's decoders share its engine threads",
          .enabled(if: DicomTools.available, "skipped: OpenJPEG's opj_compress is not installed"))
    func threads() throws {
        let dir = try TemporaryDirectory()
        let path = try Self.encode([Self.syntheticRadiograph(width: 1300, height: 1240)], header: Header(window: ("2000", "3000")), lossy: true, in: dir, name: "threads")
        let one = try DicomReader.render(path: path, minimumSize: Self.minimumSize, threads: 1)
        let two = try DicomReader.render(path: path, minimumSize: Self.minimumSize, threads: 2)
        #expect(one.frames == two.frames && one.resolutionLevel == 2)
        #expect(StudyTriage.decodeThreads(engineThreads: 2, decoders: 2) == 1)
        #expect(StudyTriage.decodeThreads(engineThreads: 2, decoders: 1) == 2)
        #expect(StudyTriage.decodeThreads(engineThreads: 8, decoders: 2) == 4)
        #expect(StudyTriage.decodeThreads(engineThreads: 1, decoders: 4) == 1)
    }

    @Test("the model-input decoders (in process and in a child) take the reduced path; the same pixels either way",
          .enabled(if: DicomTools.available, "skipped: OpenJPEG's opj_compress is not installed"))
    func decodersUseReducedPath() throws {
        let dir = try TemporaryDirectory()
        let path = try Self.encode([Self.syntheticRadiograph(width: 1300, height: 1240)], header: Header(window: ("2000", "3000")), lossy: false,
                                   in: dir, name: "decoder")
        guard case let .inputs(inputs) = InProcessDecoder.decode(path: path, spec: Self.spec, maximumPixels: DicomReader.defaultMaximumPixels) else {
            Issue.record("not decoded")
            return
        }
        let reduced = try DicomReader.render(path: path, minimumSize: Self.minimumSize)
        let full = try DicomReader.render(path: path)
        let reducedInput = try ModelInput.make(#require(reduced.frames.first), spec: Self.spec, reduction: reduced.reduction)
        let fullInput = try ModelInput.make(#require(full.frames.first), spec: Self.spec)
        #expect(inputs == [reducedInput])
        #expect(inputs != [fullInput], "the decoder took the full-resolution path")
        // The daemon's decoder process, with two OpenJPEG threads.
        if let executable = Executable.url {
            let isolated = IsolatedDecoder(executable: executable.path, timeout: 30)
            isolated.decodeThreads = 2
            defer { isolated.close() }
            guard case let .inputs(child) = isolated.decode(path: path, spec: Self.spec, maximumPixels: DicomReader.defaultMaximumPixels) else {
                Issue.record("not decoded in the child")
                return
            }
            #expect(child == [reducedInput])
        }
    }

    @Test("a codestream whose reduced decode cannot give the declared size falls back or fails clearly, never crashes",
          .enabled(if: DicomTools.available, "skipped: OpenJPEG's opj_compress is not installed"))
    func lyingCodestreams() throws {
        let dir = try TemporaryDirectory()
        let image = Self.syntheticRadiograph(width: 640, height: 600)
        try image.writePGM(to: dir.path("p.pgm"))
        try DicomTools.run("opj_compress", ["-i", dir.path("p.pgm"), "-o", dir.path("p.j2k")])
        let code = try Data(contentsOf: URL(fileURLWithPath: dir.path("p.j2k")))
        // Rows and Columns that are not the codestream's: refused as before, at any resolution.
        let wrong = StoredImage(width: 700, height: 600, bitsStored: 12, values: [])
        try Self.encapsulate([code], image: wrong, header: Header(), lossy: false, to: dir.path("wrong.dcm"))
        #expect(throws: ImagingError.self) { try DicomReader.render(path: dir.path("wrong.dcm"), minimumSize: Self.minimumSize) }
        // Truncated codestreams: each cut either decodes (reduced or in full) or is refused with an error.
        for cut in stride(from: 40, to: code.count, by: max(1, code.count / 23)) {
            try Self.encapsulate([code.prefix(cut)], image: image, header: Header(window: ("2000", "3000")), lossy: false, to: dir.path("cut.dcm"))
            if let rendered = try? DicomReader.render(path: dir.path("cut.dcm"), minimumSize: Self.minimumSize) {
                let frame = try #require(rendered.frames.first)
                #expect(frame.width == (640 + (1 << rendered.resolutionLevel) - 1) >> rendered.resolutionLevel)
            }
        }
    }

    // MARK: JPEG (8-bit baseline and extended) by DCT scaling

    /// An 8-bit gray CR (native), its values `image`'s mapped linearly through `window` (centre, width) of its stored values.
    static func eightBit(_ image: StoredImage, window: (Double, Double)) -> [UInt8] {
        let low = window.0 - window.1 / 2
        return image.values.map { UInt8(max(0, min(255, ((Double($0) - low) / window.1 * 255).rounded()))) }
    }

    /// Encodes 8-bit gray pixels with DCMTK's own JPEG encoder (dcmcjpeg, IJG; not this project's code):
    /// `+eb` baseline (1.2.840.10008.1.2.4.50) or `+ee` extended (.51), at `quality`.
    static func encodeJPEG(_ pixels: [UInt8], width: Int, height: Int, photometric: String, window: Bool, option: String, quality: Int,
                           in dir: TemporaryDirectory, name: String) throws -> String {
        var w = DicomWriter.radiograph(study: "1.2.826.0.1.3680043.8.498.1617", sop: "1.2.826.0.1.3680043.8.498.1617.1",
                                       rows: height, columns: width, bitsAllocated: 8)
        w.set(0x0028, 0x0004, "CS", photometric)
        if window {
            w.set(0x0028, 0x1050, "DS", "128")
            w.set(0x0028, 0x1051, "DS", "256")
        }
        w.set(0x7FE0, 0x0010, "OB", Data(pixels) + (pixels.count % 2 == 1 ? Data([0]) : Data()))
        let native = dir.path("\(name)-native.dcm"), path = dir.path("\(name).dcm")
        try w.write(to: native)
        try DicomTools.run("dcmcjpeg", [option, "+q", String(quality), native, path])
        try? FileManager.default.removeItem(atPath: native)
        return path
    }

    @Test("8-bit JPEG (baseline and extended, several sizes and qualities) decodes DCT-scaled (1/2, 1/4, 1/8), matching the full decode",
          .enabled(if: DicomTools.find("dcmcjpeg") != nil, "skipped: DCMTK's dcmcjpeg is not installed (make deps installs dcmtk)"))
    func jpegSelfMade() throws {
        let dir = try TemporaryDirectory()
        let scorer = try Scorer()
        // width x height -> the scale expected for a 300-pixel minimum: 640x600 -> 1/2, 1300x1240 -> 1/4, 2600x2480 -> 1/8.
        for (width, height, level) in [(640, 600, 1), (1300, 1240, 2), (2600, 2480, 3), (450, 420, 0)] {
            let pixels = Self.eightBit(Self.syntheticRadiograph(width: width, height: height), window: (2000, 3600))
            for (option, quality) in [("+eb", 90), ("+eb", 50), ("+ee", 75)] {
                let name = "jpeg\(option.dropFirst())-q\(quality)-\(width)x\(height)"
                let path = try Self.encodeJPEG(pixels, width: width, height: height, photometric: "MONOCHROME2", window: true,
                                               option: option, quality: quality, in: dir, name: name)
                let comparison = try Self.compare(path, name: name, scorer: scorer)
                #expect(comparison.level == level, "\(comparison)")
                let reduced = try DicomReader.render(path: path, minimumSize: Self.minimumSize)
                #expect(reduced.dctScaled == (level > 0), "\(name): a JPEG reduced by DCT scaling says so")
            }
        }
    }

    @Test("DCT-scaled pixels cover their blocks: the block-aligned resize matches the full decode better than the JPEG 2000 phase would",
          .enabled(if: DicomTools.find("dcmcjpeg") != nil, "skipped: DCMTK's dcmcjpeg is not installed"))
    func jpegBlockAlignment() throws {
        let dir = try TemporaryDirectory()
        let pixels = Self.eightBit(Self.syntheticRadiograph(width: 2600, height: 2480), window: (2000, 3600))
        let path = try Self.encodeJPEG(pixels, width: 2600, height: 2480, photometric: "MONOCHROME2", window: true, option: "+eb",
                                       quality: 95, in: dir, name: "aligned")
        let full = try DicomReader.render(path: path), reduced = try DicomReader.render(path: path, minimumSize: Self.minimumSize)
        let fullFrame = try #require(full.frames.first), reducedFrame = try #require(reduced.frames.first)
        let aligned = try #require(reduced.reduction)
        #expect(aligned.blockAligned && aligned.level == 3)
        var wavelet = aligned
        wavelet.blockAligned = false
        let reference = ModelInput.make(fullFrame, spec: Self.spec)
        let madAligned = Self.meanAbsoluteDifference(reference, ModelInput.make(reducedFrame, spec: Self.spec, reduction: aligned))
        let madShifted = Self.meanAbsoluteDifference(reference, ModelInput.make(reducedFrame, spec: Self.spec, reduction: wavelet))
        print("reduced-decode jpeg block alignment: MAD \(String(format: "%.3f", madAligned)) aligned, \(String(format: "%.3f", madShifted)) with the JPEG 2000 phase")
        #expect(madAligned < madShifted)
    }

    @Test("a JPEG that is not what its header says, or is cut short, falls back to DCMTK's full decode or fails clearly",
          .enabled(if: DicomTools.find("dcmcjpeg") != nil, "skipped: DCMTK's dcmcjpeg is not installed"))
    func jpegLyingOrCut() throws {
        let dir = try TemporaryDirectory()
        let pixels = Self.eightBit(Self.syntheticRadiograph(width: 1300, height: 1240), window: (2000, 3600))
        let path = try Self.encodeJPEG(pixels, width: 1300, height: 1240, photometric: "MONOCHROME2", window: true, option: "+eb",
                                       quality: 90, in: dir, name: "source")
        // The codestream, taken back out of the file: between the first FFD8 and the last FFD9.
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let start = try #require((0..<(bytes.count - 1)).first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xD8 })
        let end = try #require((0..<(bytes.count - 1)).reversed().first { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xD9 })
        let code = Data(bytes[start...(end + 1)])
        func wrap(_ code: Data, rows: Int, columns: Int, to name: String) throws -> String {
            var w = DicomWriter.radiograph(study: "1.2.826.0.1.3680043.8.498.1618", sop: "1.2.826.0.1.3680043.8.498.1618.1",
                                           rows: rows, columns: columns, bitsAllocated: 8)
            w.set(0x0028, 0x1050, "DS", "128")
            w.set(0x0028, 0x1051, "DS", "256")
            w.encapsulatedPixels([code.count % 2 == 1 ? code + Data([0]) : code], transferSyntax: "1.2.840.10008.1.2.4.50")
            try w.write(to: dir.path(name))
            return dir.path(name)
        }
        // The header says another size: the scaled path refuses it, and DCMTK's full decode decides.
        let lying = try wrap(code, rows: 1240, columns: 1200, to: "lying.dcm")
        let full = try? DicomReader.render(path: lying)
        let reduced = try? DicomReader.render(path: lying, minimumSize: Self.minimumSize)
        #expect(reduced?.dctScaled != true, "a JPEG whose size is not the header's is never DCT-scaled")
        #expect((full == nil) == (reduced == nil), "the reduced path ends as the full decode does")
        // Cut short at many places: never a crash; a scaled image, when there is one, has the scaled size.
        for cut in stride(from: 20, to: code.count, by: max(1, code.count / 17)) {
            let cutPath = try wrap(code.prefix(cut), rows: 1240, columns: 1300, to: "cut.dcm")
            if let rendered = try? DicomReader.render(path: cutPath, minimumSize: Self.minimumSize), rendered.dctScaled {
                let frame = try #require(rendered.frames.first)
                #expect(frame.width == 325 && frame.height == 310)
            }
        }
    }

    @Test("8-bit JPEG re-encodings (baseline, extended; full size and halved) of the uncompressed RG1, RG3 and DX radiographs in ../shared",
          .enabled(if: Fixtures.shared != nil && DicomTools.find("dcmcjpeg") != nil, "skipped: ../shared/data or dcmcjpeg is absent; the self-made JPEG tests still ran"))
    func jpegSharedReencoded() throws {
        let dir = try TemporaryDirectory()
        let scorer = try Scorer()
        let root = try #require(Fixtures.shared).appendingPathComponent("data/dicom/radiographs")
        let sources: [(String, String, (Double, Double))] = [("RG1_UNCR.dcm", "MONOCHROME1", (15000, 30000)),
                                                             ("RG3_UNCR.dcm", "MONOCHROME1", (550, 1024)),
                                                             ("DX_cat_deid-data.dcm", "MONOCHROME2", (2048, 4096))]
        for (file, photometric, window) in sources {
            let original = try Self.storedValues(root.appendingPathComponent(file).path)
            for (sizeLabel, image) in [("full", original), ("half", original.halved())] {
                let pixels = Self.eightBit(image, window: window)
                for (option, quality) in [("+eb", 90), ("+ee", 75)] {
                    let name = "\(file.replacingOccurrences(of: ".dcm", with: ""))-\(sizeLabel)-jpeg\(option.dropFirst())-q\(quality)"
                    let path = try Self.encodeJPEG(pixels, width: image.width, height: image.height, photometric: photometric, window: true,
                                                   option: option, quality: quality, in: dir, name: name)
                    let comparison = try Self.compare(path, name: name, scorer: scorer)
                    #expect(comparison.level >= 1, "\(comparison): a radiograph of 600 pixels or more is DCT-scaled")
                    try? FileManager.default.removeItem(atPath: path)
                }
            }
        }
    }

    // MARK: Real radiographs (../shared)

    /// The stored values of an uncompressed little-endian 16-bit file (its last Pixel Data element).
    static func storedValues(_ path: String) throws -> StoredImage {
        let meta = try DicomReader.metadata(path: path)
        let rows = try #require(meta.rows), columns = try #require(meta.columns), bits = try #require(meta.bitsStored)
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // The last (7FE0,0010) OW header; its value may hold more than Rows x Columns values (padding).
        let header: [UInt8] = [0xE0, 0x7F, 0x10, 0x00, 0x4F, 0x57, 0x00, 0x00]
        let needed = rows * columns * 2
        var at = bytes.count - needed - 12
        while at >= 0 && !bytes[at..<(at + 8)].elementsEqual(header) { at -= 1 }
        let start = try #require(at >= 0 ? at + 12 : nil, "no native OW Pixel Data in \(path)")
        #expect(bytes.count - start >= needed)
        var values = [UInt16](repeating: 0, count: rows * columns)
        for i in 0..<values.count { values[i] = UInt16(bytes[start + 2 * i]) | UInt16(bytes[start + 2 * i + 1]) << 8 }
        let mask = UInt16((1 << bits) - 1)
        return StoredImage(width: columns, height: rows, bitsStored: bits, values: values.map { $0 & mask })
    }

    @Test("every JPEG 2000 radiograph in ../shared: reduced decode within 1 gray level and 0.01 of probability",
          .enabled(if: Fixtures.shared != nil, "skipped: ../shared/data is absent; the self-made JPEG 2000 tests still ran"))
    func sharedJPEG2000() throws {
        let scorer = try Scorer()
        var compared = 0
        for path in SharedDicomTests.files("radiographs") {
            let meta = try DicomReader.metadata(path: path)
            guard ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                   "1.2.840.10008.1.2.4.203"].contains(meta.transferSyntaxUID) else { continue }
            let comparison = try Self.compare(path, name: URL(fileURLWithPath: path).lastPathComponent, scorer: scorer)
            if try DicomReader.render(path: path).decisions.voi == .minMax {
                // Min-max: one level finer than the model needs when its extremes are stable (MinMaxReducedTests), else in full.
                let reduced = try DicomReader.render(path: path, minimumSize: Self.minimumSize)
                #expect(comparison.level == 0 || (reduced.minMaxShift ?? 1) <= DicomReader.minMaxShiftLimit, "\(comparison)")
            } else {
                #expect(comparison.level >= 2, "\(comparison): a radiograph of 1400 pixels or more reduces at least twice")
            }
            compared += 1
        }
        #expect(compared >= 3)
    }

    @Test("every JPEG radiograph in ../shared: 8-bit gray ones large enough DCT-scaled, the others in full; all within 1 gray level",
          .enabled(if: Fixtures.shared != nil, "skipped: ../shared/data is absent; the self-made JPEG tests still ran"))
    func sharedJPEG() throws {
        let scorer = try Scorer()
        var compared = 0
        for path in SharedDicomTests.files("radiographs") {
            let meta = try DicomReader.metadata(path: path)
            guard ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"].contains(meta.transferSyntaxUID) else { continue }
            let comparison = try Self.compare(path, name: URL(fileURLWithPath: path).lastPathComponent, scorer: scorer)
            let rendered = try DicomReader.render(path: path, minimumSize: Self.minimumSize)
            let scalable = meta.bitsAllocated == 8 && rendered.decisions.voi != .minMax && rendered.frames.first?.channels == 1
                && (min(meta.rows ?? 0, meta.columns ?? 0) + 1) / 2 >= Self.minimumSize
            #expect(rendered.dctScaled == scalable, "\(comparison)")
            compared += 1
        }
        #expect(compared >= 2)
    }

    @Test("JPEG 2000 re-encodings (lossless, lossy; full size and halved) of the uncompressed RG1, RG3 and DX radiographs in ../shared",
          .enabled(if: Fixtures.shared != nil && DicomTools.available, "skipped: ../shared/data or opj_compress is absent; the self-made tests still ran"))
    func sharedReencoded() throws {
        let dir = try TemporaryDirectory()
        let scorer = try Scorer()
        let root = try #require(Fixtures.shared).appendingPathComponent("data/dicom/radiographs")
        // The files' own windows and photometric interpretations (MANIFEST.md), and one min-max case each.
        let sources: [(String, String, (String, String))] = [("RG1_UNCR.dcm", "MONOCHROME1", ("15000", "30000")),
                                                             ("RG3_UNCR.dcm", "MONOCHROME1", ("550", "1024")),
                                                             ("DX_cat_deid-data.dcm", "MONOCHROME2", ("2048", "4096"))]
        for (file, photometric, window) in sources {
            let original = try Self.storedValues(root.appendingPathComponent(file).path)
            for (sizeLabel, image) in [("full", original), ("half", original.halved())] {
                for lossy in [false, true] {
                    let stem = "\(file.replacingOccurrences(of: ".dcm", with: ""))-\(sizeLabel)-\(lossy ? "lossy20" : "lossless")"
                    let codes = try Self.codestreams([image], lossy: lossy, in: dir, name: stem)
                    for windowed in [true, false] {
                        let name = "\(stem)-\(windowed ? "window" : "minmax")"
                        let header = Header(photometric: photometric, window: windowed ? window : nil)
                        let path = dir.path("\(name).dcm")
                        try Self.encapsulate(codes, image: image, header: header, lossy: lossy, to: path)
                        let comparison = try Self.compare(path, name: name, scorer: scorer)
                        if windowed {
                            #expect(comparison.level >= 1, "\(comparison)")
                        } else {
                            // Min-max: reduced only where the finer level's extremes are stable (MinMaxReducedTests).
                            let reduced = try DicomReader.render(path: path, minimumSize: Self.minimumSize)
                            #expect(comparison.level == 0 || (reduced.minMaxShift ?? 1) <= DicomReader.minMaxShiftLimit, "\(comparison)")
                        }
                        try? FileManager.default.removeItem(atPath: path)
                    }
                }
            }
        }
    }
}
