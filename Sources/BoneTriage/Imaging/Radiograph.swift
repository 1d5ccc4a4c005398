/// One rendered 8-bit image as a person would see it in a viewer: gray (bone bright) or RGB.
public struct Radiograph: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// 1 (gray) or 3 (RGB), interleaved.
    public let channels: Int
    public let pixels: [UInt8]

    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "radiograph pixel count does not match its shape")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }
}

/// Every defect of an incoming file, with what a PACS administrator needs to act on it. The text says
/// what is wrong with the file and what to do; what became of the file (quarantined, left out of its
/// study, refused over C-STORE) is for the caller to say, since only it knows.
public enum ImagingError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case notDICOM(path: String, reason: String)
    case undecodable(path: String, reason: String)
    /// Pixel Data holds less than the header declares (a truncated or corrupt file): refused before any
    /// rendering, so that nothing is padded, allocated for or classified that the file does not hold.
    case incomplete(path: String, reason: String)
    /// More pixels than [triage] maximum_megapixels: refused before decoding.
    case tooLarge(path: String, reason: String)
    case notPNG(path: String, reason: String)
    /// The isolated decoder process crashed or ran out of time on this file (the daemon carried on).
    case decoderFailed(path: String, reason: String)

    public var description: String { "\(parts.path): \(explanation)" }

    /// What is wrong and what to do, without the file's path (for a reason given where the file's
    /// name is already said, or where its temporary path would mean nothing).
    public var explanation: String {
        switch self {
        case let .unreadable(_, reason):
            return "cannot read the file (\(reason)); check that it exists and BoneTriage may read it"
        case let .notDICOM(_, reason):
            return "not a readable DICOM file: \(reason); if the sender keeps producing this, check its export settings"
        case let .undecodable(_, reason):
            return "the DICOM header reads but the image cannot be rendered: \(reason); ask the sender to resend it"
        case let .incomplete(_, reason):
            return "\(reason); ask the sender to resend it"
        case let .tooLarge(_, reason):
            return reason
        case let .notPNG(_, reason):
            return "not a readable PNG: \(reason); re-export the image as PNG"
        case let .decoderFailed(_, reason):
            return "reading this file \(reason); it may be corrupt or made to hang or crash a decoder: "
                + "ask the sender to resend it, and report it if it is a valid image"
        }
    }

    /// The refusal of an image over `limit` pixels ([triage] maximum_megapixels, in units of 2^20).
    public static func sizeRefusal(path: String, width: Int, height: Int, frames: Int, limit: UInt64) -> ImagingError {
        let total = Double(width) * Double(height) * Double(max(1, frames))
        let limitText = limit % (1 << 20) == 0 ? "\(limit >> 20) Mpixel" : "\(limit) pixels"
        let size = "\(width) x \(height) pixels x \(frames) frame\(frames == 1 ? "" : "s")"
        return .tooLarge(path: path, reason: "the image is \(size) (\(String(format: "%.1f", total / 1_048_576)) Mpixel), over the limit of "
                         + "\(limitText) ([triage] maximum_megapixels); it is not decoded. If such images are expected, raise "
                         + "[triage] maximum_megapixels (at most 4096)")
    }
}

extension ImagingError {
    /// The case's name, the file and the reason: how the isolated decoder sends an error to its parent.
    var parts: (kind: String, path: String, reason: String) {
        switch self {
        case let .unreadable(path, reason): return ("unreadable", path, reason)
        case let .notDICOM(path, reason): return ("not_dicom", path, reason)
        case let .undecodable(path, reason): return ("undecodable", path, reason)
        case let .incomplete(path, reason): return ("incomplete", path, reason)
        case let .tooLarge(path, reason): return ("too_large", path, reason)
        case let .notPNG(path, reason): return ("not_png", path, reason)
        case let .decoderFailed(path, reason): return ("decoder_failed", path, reason)
        }
    }

    init(kind: String, path: String, reason: String) {
        switch kind {
        case "unreadable": self = .unreadable(path: path, reason: reason)
        case "not_dicom": self = .notDICOM(path: path, reason: reason)
        case "incomplete": self = .incomplete(path: path, reason: reason)
        case "too_large": self = .tooLarge(path: path, reason: reason)
        case "not_png": self = .notPNG(path: path, reason: reason)
        case "decoder_failed": self = .decoderFailed(path: path, reason: reason)
        default: self = .undecodable(path: path, reason: reason)
        }
    }
}
