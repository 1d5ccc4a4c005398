import BoneTriage
import Foundation
import Testing

@Suite("Pictures")
struct TriagePicturesTests {
    /// A gray radiograph with a gradient and a bright diagonal, `width` x `height`.
    static func radiograph(width: Int, height: Int) -> Radiograph {
        var pixels = [UInt8](repeating: 0, count: width * height)
        for y in 0..<height {
            for x in 0..<width {
                pixels[y * width + x] = abs(x * height / max(1, width) - y) < 12 ? 240 : UInt8(20 + (x + y) * 120 / (width + height))
            }
        }
        return Radiograph(width: width, height: height, channels: 1, pixels: pixels)
    }

    /// A 10x10 heatmap, zero but for one hot cell.
    static func heatmap(hotRow: Int, hotColumn: Int, value: Float = 0.3) -> Heatmap {
        var values = [Float](repeating: 0, count: 100)
        values[hotRow * 10 + hotColumn] = value
        return Heatmap(rows: 10, columns: 10, values: values, method: "test", modelFingerprint: "f")
    }

    static let caption = PictureCaption(probability: 0.734, modelID: "humerus-test-1")

    /// The overlay picture's image area, as a picture.
    static func imageArea(_ p: TriagePicture) -> RGBPicture {
        var out = RGBPicture(width: p.imageWidth, height: p.imageHeight, filledWith: (0, 0, 0))
        for y in 0..<p.imageHeight { for x in 0..<p.imageWidth { out.set(x: x, y: y, p.picture.pixel(x: p.imageX + x, y: p.imageY + y)) } }
        return out
    }

    @Test("sizes: longest side at most 1024 px, never enlarged; a narrow image is centred on a picture wide enough for the band")
    func sizes() {
        let large = Self.radiograph(width: 3000, height: 2000)
        let plain = TriagePictures.plain(large)
        #expect(plain.width == 1024 && plain.height == 683)
        let overlay = TriagePictures.overlay(large, heatmap: Self.heatmap(hotRow: 1, hotColumn: 1), caption: Self.caption)
        #expect(overlay.picture.width <= 1024 && overlay.picture.height <= 1024 && max(overlay.picture.width, overlay.picture.height) >= 1000)
        #expect(overlay.imageHeight < overlay.picture.height, "the band is below the image")
        let tall = TriagePictures.overlay(Self.radiograph(width: 1200, height: 4000), heatmap: nil, caption: Self.caption)
        #expect(tall.picture.height <= 1024 && tall.picture.width <= 1024)
        let small = Self.radiograph(width: 300, height: 500)
        #expect(TriagePictures.plain(small).width == 300 && TriagePictures.plain(small).height == 500)
        let narrow = TriagePictures.overlay(small, heatmap: nil, caption: Self.caption)
        #expect(narrow.imageWidth == 300 && narrow.imageHeight == 500 && narrow.picture.width >= TriagePictures.minimumWidth)
        #expect(narrow.imageX == (narrow.picture.width - 300) / 2)
    }

    @Test("overlay: coloured where the heatmap is hot, the plain rendering where it is zero, and nothing outside the image")
    func overlay() {
        let image = Self.radiograph(width: 800, height: 600)
        let p = TriagePictures.overlay(image, heatmap: Self.heatmap(hotRow: 2, hotColumn: 3), caption: Self.caption)
        let plain = TriagePictures.scaled(image, width: p.imageWidth, height: p.imageHeight)
        let area = Self.imageArea(p)
        // The centre of cell (row 2, column 3) is hot: coloured.
        let hx = Int(3.5 * Double(p.imageWidth) / 10), hy = Int(2.5 * Double(p.imageHeight) / 10)
        #expect(area.pixel(x: hx, y: hy) != plain.pixel(x: hx, y: hy))
        let (r, g, b) = area.pixel(x: hx, y: hy)
        #expect(!(r == g && g == b), "the hot region is in colour over a gray radiograph")
        // Far from it (cells whose bilinear neighbourhood is all zero): exactly the plain rendering.
        var differing = 0
        for y in 0..<p.imageHeight {
            for x in 0..<p.imageWidth where x > p.imageWidth / 2 || y > p.imageHeight / 2 {
                if area.pixel(x: x, y: y) != plain.pixel(x: x, y: y) { differing += 1 }
            }
        }
        #expect(differing == 0)
        // A heatmap of zeros changes nothing in the image.
        let cold = TriagePictures.overlay(image, heatmap: Heatmap(rows: 10, columns: 10, values: [Float](repeating: 0, count: 100), method: "m",
                                                                  modelFingerprint: "f"), caption: Self.caption)
        #expect(Self.imageArea(cold) == TriagePictures.scaled(image, width: cold.imageWidth, height: cold.imageHeight))
        // Beside a narrow image, the margins stay black whatever the heatmap.
        let narrow = TriagePictures.overlay(Self.radiograph(width: 200, height: 400),
                                            heatmap: Heatmap(rows: 10, columns: 10, values: [Float](repeating: 1, count: 100), method: "m", modelFingerprint: "f"),
                                            caption: Self.caption)
        #expect(narrow.imageX > 0)
        for y in stride(from: 0, to: narrow.imageHeight, by: 7) {
            #expect(narrow.picture.pixel(x: 0, y: y) == (0, 0, 0) && narrow.picture.pixel(x: narrow.picture.width - 1, y: y) == (0, 0, 0))
        }
    }

    @Test("band: the disclaimer (in yellow), the probability and the model in the bitmap font, and a colour scale")
    func band() {
        let image = Self.radiograph(width: 800, height: 600)
        let p = TriagePictures.overlay(image, heatmap: Self.heatmap(hotRow: 5, hotColumn: 5), caption: Self.caption)
        let bandRows = p.imageHeight..<p.picture.height
        var yellow = 0, coloured = Set<[UInt8]>()
        for y in bandRows {
            for x in 0..<p.picture.width {
                let (r, g, b) = p.picture.pixel(x: x, y: y)
                if (r, g, b) == (255, 220, 0) { yellow += 1 }
                if !(r == g && g == b) { coloured.insert([r, g, b]) }
            }
        }
        // The disclaimer alone is drawn in yellow: as many pixels as its glyphs have, at the band's text scale.
        var reference = RGBPicture(width: 1024, height: 40, filledWith: (0, 0, 0))
        BitmapFont.draw(TriageDisclaimer.text, into: &reference, x: 0, y: 0, scale: 2, colour: (255, 220, 0))
        let expected = reference.pixels.count / 3 - (0..<(1024 * 40)).filter { reference.pixels[$0 * 3] == 0 }.count
        #expect(yellow == expected && yellow > 0)
        // The colour scale: many colours besides the yellow text.
        #expect(coloured.count > 50)
        // Another probability or model changes the band, not the image.
        let other = TriagePictures.overlay(image, heatmap: Self.heatmap(hotRow: 5, hotColumn: 5),
                                           caption: PictureCaption(probability: 0.251, modelID: "humerus-test-2"))
        #expect(Self.imageArea(other) == Self.imageArea(p))
        #expect(other.picture != p.picture)
    }

    @Test("font: every printable ASCII character has its own glyph within its cell; others are drawn as '?'")
    func font() {
        let printable = (32...126).map { Character(UnicodeScalar(UInt8($0))) }
        func bitmap(_ c: Character) -> [Bool] {
            (0..<BitmapFont.glyphHeight).flatMap { y in (0..<BitmapFont.glyphWidth).map { x in BitmapFont.isSet(c, x: x, y: y) } }
        }
        let glyphs = printable.map(bitmap)
        #expect(Set(glyphs).count == printable.count, "two characters share a glyph")
        #expect(glyphs.dropFirst().allSatisfy { $0.contains(true) }, "only the space is blank")
        #expect(bitmap("é") == bitmap("?"))
        #expect(!BitmapFont.isSet("A", x: BitmapFont.glyphWidth, y: 0) && !BitmapFont.isSet("A", x: 0, y: BitmapFont.glyphHeight))
    }

    @Test("files: a PNG renders and its pictures are written as PNG that read back; a DICOM radiograph renders as for the model")
    func files() throws {
        let dir = try TemporaryDirectory()
        let image = try TriagePictures.radiograph(path: Fixtures.path("png/gray8.png"))
        #expect(image.width == 24 && image.height == 16)
        let overlay = TriagePictures.overlay(image, heatmap: Self.heatmap(hotRow: 0, hotColumn: 0), caption: Self.caption).picture
        try overlay.writePNG(to: dir.path("overlay.png"))
        let back = try PNGReader.read(path: dir.path("overlay.png"))
        #expect(back.width == overlay.width && back.height == overlay.height && back.channels == 3 && back.pixels == overlay.pixels)
        #expect(throws: PictureError.self) { try overlay.writePNG(to: dir.path("missing/folder/x.png")) }
        #expect(throws: PictureError.self) { try TriagePictures.radiograph(path: dir.path("gone.png")) }
        if let shared = Fixtures.shared {
            let path = shared.appendingPathComponent("data/dicom/radiographs/CR-MONO1-10-chest_nometa_implicitLE.dcm").path
            if FileManager.default.fileExists(atPath: path) {
                let rendered = try TriagePictures.radiograph(path: path)
                let forModel = try IncomingImage.read(path: path, minimumSize: 0)
                #expect(forModel.decisions?.invertedMonochrome1 == true)
                #expect(rendered == forModel.frames.first)
            }
        }
    }

    @Test("the Secondary Capture's picture: the overlay of the image's heatmap for the study's current model; none yet is an error")
    func pictureMaker() throws {
        let dir = try TemporaryDirectory()
        let store = try Worklist.open(path: dir.path("worklist.sqlite"), role: .daemon)
        var arrival = InstanceArrival(studyInstanceUID: "1.2.77", sopInstanceUID: "1.2.77.1", filePath: Fixtures.path("png/gray8.png"),
                                      eligible: true, source: .dropFolder)
        arrival.bodyPart = "HUMERUS"
        _ = try store.recordArrival(arrival)
        try store.recordTriage(TriageResult(studyInstanceUID: "1.2.77", imageProbabilities: ["1.2.77.1": 0.8], threshold: 0.5,
                                            modelID: "humerus-test-1", modelHash: "model-a"))
        let study = try store.study(studyInstanceUID: "1.2.77")
        let image = try #require(try store.images(ofStudy: "1.2.77").first)
        let maker = TriagePictureMaker(worklist: store)
        #expect(throws: PictureError.self) { try maker.picture(of: image, in: study) }
        // Unless a picture without a heatmap is asked for: the band says so.
        let without = try TriagePictureMaker(worklist: store, requireHeatmap: false).picture(of: image, in: study)
        #expect(without == TriagePictures.overlay(try TriagePictures.radiograph(path: image.filePath), heatmap: nil,
                                                  caption: PictureCaption(probability: 0.8, modelID: "humerus-test-1")).picture)
        let heatmap = Heatmap(rows: 10, columns: 10, values: Self.heatmap(hotRow: 4, hotColumn: 4).values, method: "m", modelFingerprint: "model-a")
        try store.recordHeatmap(sopInstanceUID: "1.2.77.1", .made(heatmap), at: Date())
        let picture = try maker.picture(of: image, in: study)
        let expected = TriagePictures.overlay(try TriagePictures.radiograph(path: image.filePath), heatmap: heatmap,
                                              caption: PictureCaption(probability: 0.8, modelID: "humerus-test-1")).picture
        #expect(picture == expected)
        // A heatmap of another model does not count.
        var retriaged = study
        retriaged.modelHash = "model-b"
        #expect(throws: PictureError.self) { try maker.picture(of: image, in: retriaged) }
    }
}
