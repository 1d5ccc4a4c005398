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

/// Every defect of an incoming file, with what a PACS administrator needs to act on it.
public enum ImagingError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case notDICOM(path: String, reason: String)
    case undecodable(path: String, reason: String)
    case notPNG(path: String, reason: String)
    /// The isolated decoder process crashed or ran out of time on this file (the daemon carried on).
    case decoderFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason):
            return "\(path): cannot read the file (\(reason)); check that it exists and BoneTriage may read it"
        case let .notDICOM(path, reason):
            return "\(path): not a readable DICOM file: \(reason); if the sender keeps producing this, check its export settings"
        case let .undecodable(path, reason):
            return "\(path): the DICOM header reads but the image cannot be rendered: \(reason); ask the sender to resend it, or send it uncompressed"
        case let .notPNG(path, reason):
            return "\(path): not a readable PNG: \(reason); re-export the image as PNG"
        case let .decoderFailed(path, reason):
            return "\(path): decoding this file \(reason); the study went on without it. The file stays where it is "
                + "for a bug report; ask the sender to resend it, or send it uncompressed"
        }
    }
}

extension ImagingError {
    /// The case's name, the file and the reason: how the isolated decoder sends an error to its parent.
    var parts: (kind: String, path: String, reason: String) {
        switch self {
        case let .unreadable(path, reason): return ("unreadable", path, reason)
        case let .notDICOM(path, reason): return ("not_dicom", path, reason)
        case let .undecodable(path, reason): return ("undecodable", path, reason)
        case let .notPNG(path, reason): return ("not_png", path, reason)
        case let .decoderFailed(path, reason): return ("decoder_failed", path, reason)
        }
    }

    init(kind: String, path: String, reason: String) {
        switch kind {
        case "unreadable": self = .unreadable(path: path, reason: reason)
        case "not_dicom": self = .notDICOM(path: path, reason: reason)
        case "not_png": self = .notPNG(path: path, reason: reason)
        case "decoder_failed": self = .decoderFailed(path: path, reason: reason)
        default: self = .undecodable(path: path, reason: reason)
        }
    }
}
