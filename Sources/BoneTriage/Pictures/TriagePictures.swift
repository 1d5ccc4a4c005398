import CPNG
import Foundation

extension RGBPicture {
    /// A picture filled with one colour.
    public init(width: Int, height: Int, filledWith colour: (UInt8, UInt8, UInt8)) {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for p in 0..<(width * height) {
            pixels[p * 3] = colour.0
            pixels[p * 3 + 1] = colour.1
            pixels[p * 3 + 2] = colour.2
        }
        self.init(width: width, height: height, pixels: pixels)
    }

    /// Sets one pixel; outside the picture, nothing.
    public mutating func set(x: Int, y: Int, _ colour: (UInt8, UInt8, UInt8)) {
        guard x >= 0, x < width, y >= 0, y < height else { return }
        let i = (y * width + x) * 3
        pixels[i] = colour.0
        pixels[i + 1] = colour.1
        pixels[i + 2] = colour.2
    }

    public func pixel(x: Int, y: Int) -> (UInt8, UInt8, UInt8) {
        let i = (y * width + x) * 3
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }

    /// Writes the picture as an 8-bit RGB PNG (libpng, through CPNG).
    public func writePNG(to path: String) throws {
        var error = [CChar](repeating: 0, count: 512)
        let status = pixels.withUnsafeBufferPointer {
            bt_png_write(path, $0.baseAddress, Int32(width), Int32(height), 3, &error, error.count)
        }
        guard status == 0 else {
            throw PictureError.cannotWrite(path: path, reason: DicomReader.message(error))
        }
    }
}

public enum PictureError: Error, CustomStringConvertible, Equatable {
    case cannotWrite(path: String, reason: String)
    /// The image has no heatmap (yet, or for the study's current model).
    case noHeatmap(sopInstanceUID: String, reason: String)
    case fileGone(path: String)

    public var description: String {
        switch self {
        case let .cannotWrite(path, reason):
            return "cannot write the picture \(path): \(reason); check that the folder exists and is writable"
        case let .noHeatmap(uid, reason):
            return "image \(uid) has no heatmap: \(reason)"
        case let .fileGone(path):
            return "the image file \(path) is gone (removed after triage or by storage retention); its picture cannot be made"
        }
    }
}

/// A perceptual colour map (matplotlib's "inferno", sampled at 11 points and interpolated linearly):
/// dark purple for low, through red and orange, to pale yellow for high; monotonic in lightness.
public enum HeatmapColours {
    static let inferno: [(Float, Float, Float)] = [
        (0, 0, 4), (22, 11, 57), (66, 10, 104), (106, 23, 110), (147, 38, 103), (188, 55, 84),
        (221, 81, 58), (243, 120, 25), (252, 165, 10), (246, 215, 70), (252, 255, 164),
    ]

    /// Below this share of the scale's maximum a region is not coloured at all (the radiograph shows through).
    public static let transparentBelow: Float = 0.15
    /// The opacity at the scale's maximum.
    public static let maximumOpacity: Float = 0.65

    /// The colour for `v` in 0...1: the upper three quarters of inferno, so that the lowest values shown
    /// still stand out against a dark radiograph.
    public static func colour(_ v: Float) -> (Float, Float, Float) {
        let t = 0.25 + 0.75 * min(1, max(0, v))
        let x = t * Float(inferno.count - 1)
        let i = min(inferno.count - 2, Int(x))
        let f = x - Float(i)
        let a = inferno[i], b = inferno[i + 1]
        return (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f, a.2 + (b.2 - a.2) * f)
    }

    /// The overlay's opacity for `v` in 0...1: 0 up to `transparentBelow`, then rising to `maximumOpacity`.
    public static func opacity(_ v: Float) -> Float {
        guard v > transparentBelow else { return 0 }
        return maximumOpacity * min(1, (v - transparentBelow) / (1 - transparentBelow))
    }
}

/// The words in a picture's band, besides the disclaimer.
public struct PictureCaption: Sendable, Equatable {
    /// The image's probability of abnormality (nil: not classified).
    public var probability: Double?
    public var modelID: String?

    public init(probability: Double?, modelID: String?) {
        self.probability = probability
        self.modelID = modelID
    }
}

/// A picture with where the radiograph is in it (the rest is the band and margins).
public struct TriagePicture: Sendable, Equatable {
    public var picture: RGBPicture
    public var imageX: Int
    public var imageY: Int
    public var imageWidth: Int
    public var imageHeight: Int
}

/// The pictures a radiologist sees: the radiograph rendered as for the model (full-resolution decode, the
/// same windowing, VOI LUT, MONOCHROME1 inversion and min-max decisions), scaled to at most 1024 px on
/// its longest side; and the same with the heatmap overlaid and a band below it carrying the disclaimer,
/// the probability, the model and the colour scale.
public enum TriagePictures {
    public static let longestSide = 1024
    /// The overlay picture is at least this wide (a narrow radiograph is centred on black), so that the
    /// band's text fits.
    public static let minimumWidth = 480

    /// The first frame of an image file, rendered as people see it (DICOM or PNG), at the size the pictures
    /// need: a JPEG 2000 or JPEG file is decoded at the lowest resolution that keeps `longestSide` pixels
    /// on both sides (rendered as the full image would be), and the frame is then scaled (area averaging)
    /// to at most `sourceLongestSide` on its longest side. The daemon does this in its decoder process
    /// (`IsolatedRadiographs`), so that a file that crashes a decoder costs one picture, not the daemon.
    public static func radiograph(path: String, maximumPixels: UInt64 = DicomReader.defaultMaximumPixels) throws -> Radiograph {
        guard FileManager.default.fileExists(atPath: path) else { throw PictureError.fileGone(path: path) }
        let image = try IncomingImage.read(path: path, maximumPixels: maximumPixels, minimumSize: longestSide)
        if case let .notApplicable(reason) = image.eligibility {
            throw ImagingError.undecodable(path: path, reason: "not a radiograph BoneTriage renders: \(reason)")
        }
        guard let frame = image.frames.first else { throw ImagingError.undecodable(path: path, reason: "the image has no frame") }
        return reduced(frame, longestSide: sourceLongestSide)
    }

    /// The longest side of the radiograph a picture is made from: twice the picture's, so that the
    /// picture's own scaling (to make room for the band) averages over whole source pixels.
    public static let sourceLongestSide = 2 * longestSide

    /// The radiograph scaled (area averaging, its channels kept) to fit `longestSide`; as it is when it fits.
    public static func reduced(_ image: Radiograph, longestSide: Int) -> Radiograph {
        let size = fitted(width: image.width, height: image.height, maxWidth: longestSide, maxHeight: longestSide)
        guard size.width < image.width || size.height < image.height else { return image }
        return areaResized(image, width: size.width, height: size.height)
    }

    /// The radiograph scaled (area averaging, its channels kept) to `width` x `height`.
    static func areaResized(_ image: Radiograph, width: Int, height: Int) -> Radiograph {
        let columns = ModelInput.weights(from: image.width, to: width, filter: .area)
        let rows = ModelInput.weights(from: image.height, to: height, filter: .area)
        let resized = ModelInput.resize(image, columns: columns, rows: rows)
        return Radiograph(width: width, height: height, channels: image.channels, pixels: resized.map { UInt8(min(255, max(0, $0.rounded()))) })
    }

    /// The size a `width` x `height` image is scaled to so that it fits `maxWidth` x `maxHeight` (never enlarged).
    public static func fitted(width: Int, height: Int, maxWidth: Int, maxHeight: Int) -> (width: Int, height: Int) {
        let scale = min(1, min(Double(maxWidth) / Double(max(1, width)), Double(maxHeight) / Double(max(1, height))))
        return (max(1, Int((Double(width) * scale).rounded())), max(1, Int((Double(height) * scale).rounded())))
    }

    /// The radiograph as RGB, scaled (area averaging) to `width` x `height`.
    public static func scaled(_ image: Radiograph, width: Int, height: Int) -> RGBPicture {
        let resized = areaResized(image, width: width, height: height)
        guard resized.channels == 1 else { return RGBPicture(width: width, height: height, pixels: resized.pixels) }
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for (p, v) in resized.pixels.enumerated() { pixels[p * 3] = v; pixels[p * 3 + 1] = v; pixels[p * 3 + 2] = v }
        return RGBPicture(width: width, height: height, pixels: pixels)
    }

    /// The plain rendering: the radiograph alone, longest side at most 1024 px.
    public static func plain(_ image: Radiograph) -> RGBPicture {
        let size = fitted(width: image.width, height: image.height, maxWidth: longestSide, maxHeight: longestSide)
        return scaled(image, width: size.width, height: size.height)
    }

    /// The band's lines and text scale for a picture `width` pixels wide.
    static func bandLines(_ caption: PictureCaption, heatmapMaximum: Float?) -> [String] {
        let p = caption.probability.map { "p(abnormal) " + String(format: "%.3f", $0) } ?? "not classified"
        let model = "model " + (caption.modelID ?? "unknown")
        let scale = heatmapMaximum.map { $0 > 0 ? "Colour: drop in p(abnormal) when the region is hidden" : "No region lowered p(abnormal) when hidden" }
            ?? "No heatmap yet"
        return [TriageDisclaimer.text, p + "  " + model, scale]
    }

    static func fit(_ text: String, scale: Int, width: Int) -> String {
        let room = (width / scale + 1) / BitmapFont.advance
        guard text.count > room, room > 1 else { return text }
        return String(text.prefix(room - 1)) + "~"
    }

    /// The radiograph with `heatmap` overlaid (nil: none yet) and the band, at most 1024 px on each side.
    public static func overlay(_ image: Radiograph, heatmap: Heatmap?, caption: PictureCaption) -> TriagePicture {
        let maximum = heatmap?.maximum
        let lines = bandLines(caption, heatmapMaximum: maximum)
        let longest = lines.map(BitmapFont.width(of:)).max() ?? 0
        // Text at twice the font's size when the widest line fits a full-width picture, else at its size.
        let textScale = longest * 2 + 16 <= longestSide ? 2 : 1
        let lineHeight = BitmapFont.lineHeight * textScale
        let barHeight = 6 * textScale
        let scaleRow = maximum.map { $0 > 0 } ?? false
        let bandHeight = 8 + lines.count * lineHeight + (scaleRow ? barHeight + lineHeight + 4 : 0) + 4
        let size = fitted(width: image.width, height: image.height, maxWidth: longestSide, maxHeight: longestSide - bandHeight)
        let width = min(longestSide, max(size.width, minimumWidth, longest * textScale + 16))
        var picture = RGBPicture(width: width, height: size.height + bandHeight, filledWith: (0, 0, 0))
        let rendered = scaled(image, width: size.width, height: size.height)
        let left = (width - size.width) / 2
        let values = heatmap.map { $0.upsampled(width: size.width, height: size.height) }
        let top = max(maximum ?? 0, .leastNormalMagnitude)
        for y in 0..<size.height {
            for x in 0..<size.width {
                var (r, g, b) = rendered.pixel(x: x, y: y)
                if let values {
                    let v = values[y * size.width + x] / top
                    let alpha = HeatmapColours.opacity(v)
                    if alpha > 0 {
                        let c = HeatmapColours.colour(v)
                        func mix(_ base: UInt8, _ over: Float) -> UInt8 { UInt8(min(255, max(0, (Float(base) * (1 - alpha) + over * alpha).rounded()))) }
                        (r, g, b) = (mix(r, c.0), mix(g, c.1), mix(b, c.2))
                    }
                }
                picture.set(x: left + x, y: y, (r, g, b))
            }
        }
        // The band: a dark grey strip under the image.
        let bandTop = size.height
        for y in bandTop..<picture.height { for x in 0..<width { picture.set(x: x, y: y, (32, 32, 32)) } }
        var y = bandTop + 8
        for (i, line) in lines.enumerated() {
            let colour: (UInt8, UInt8, UInt8) = i == 0 ? (255, 220, 0) : (235, 235, 235)
            BitmapFont.draw(fit(line, scale: textScale, width: width - 16), into: &picture, x: 8, y: y, scale: textScale, colour: colour)
            y += lineHeight
        }
        if scaleRow, let maximum {
            // The colour scale: 0 on the left, the heatmap's maximum on the right, transparent part dimmed.
            let low = "0", high = String(format: "%.2f", Double(maximum))
            let labelRoom = (BitmapFont.width(of: high) + 8) * textScale
            let barLeft = 8 + labelRoom, barRight = width - 8 - labelRoom
            BitmapFont.draw(low, into: &picture, x: barLeft - (BitmapFont.width(of: low) + 4) * textScale, y: y, scale: textScale, colour: (235, 235, 235))
            BitmapFont.draw(high, into: &picture, x: barRight + 4 * textScale, y: y, scale: textScale, colour: (235, 235, 235))
            if barRight > barLeft {
                for x in barLeft..<barRight {
                    let v = Float(x - barLeft) / Float(max(1, barRight - barLeft - 1))
                    let c = HeatmapColours.colour(v)
                    let shown = HeatmapColours.opacity(v) > 0
                    let colour = shown ? (UInt8(c.0), UInt8(c.1), UInt8(c.2)) : (UInt8(c.0 * 0.35), UInt8(c.1 * 0.35), UInt8(c.2 * 0.35))
                    for dy in 0..<(BitmapFont.glyphHeight * textScale) { picture.set(x: x, y: y + dy, colour) }
                }
            }
        }
        return TriagePicture(picture: picture, imageX: left, imageY: 0, imageWidth: size.width, imageHeight: size.height)
    }
}

/// The Secondary Capture's picture of one classified image (`TriagePictureMaking`): the radiograph with
/// the heatmap the worklist holds for the study's current model, and the band. An image without such a
/// heatmap (not made yet, or not possible) is an error (`PictureError.noHeatmap`: try again once the
/// daemon made it) unless `requireHeatmap` is false: then the picture says "No heatmap yet" in its band
/// (for `[heatmaps] compute = "none"`).
public struct TriagePictureMaker: TriagePictureMaking {
    public let worklist: any WorklistStore
    public var maximumPixels: UInt64
    public var requireHeatmap: Bool
    /// Where the radiograph is rendered: the daemon's decoder process (`IsolatedRadiographs`), or here.
    public var radiographs: any RadiographSource

    public init(worklist: any WorklistStore, maximumPixels: UInt64 = DicomReader.defaultMaximumPixels, requireHeatmap: Bool = true,
                radiographs: any RadiographSource = InProcessRadiographs()) {
        self.worklist = worklist
        self.maximumPixels = maximumPixels
        self.requireHeatmap = requireHeatmap
        self.radiographs = radiographs
    }

    public func picture(of image: StudyImage, in study: Study) throws -> RGBPicture {
        let stored = try worklist.heatmap(sopInstanceUID: image.sopInstanceUID)
        let current = stored.flatMap { $0.outcome.modelFingerprint == study.modelHash ? $0.outcome : nil }
        if requireHeatmap {
            guard let current else {
                throw PictureError.noHeatmap(sopInstanceUID: image.sopInstanceUID, reason: "not made yet for the study's current model")
            }
            guard current.heatmap != nil else {
                throw PictureError.noHeatmap(sopInstanceUID: image.sopInstanceUID, reason: current.reason ?? "it could not be made")
            }
        }
        let heatmap = current?.heatmap
        let radiograph = try radiographs.radiograph(path: image.filePath, maximumPixels: maximumPixels)
        return TriagePictures.overlay(radiograph, heatmap: heatmap,
                                      caption: PictureCaption(probability: image.probability, modelID: study.modelID)).picture
    }
}
