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
        }
    }
}
