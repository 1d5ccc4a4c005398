import Foundation

/// Any file that arrives (DICOM or PNG), read and rendered, with whether the model may see it.
public struct IncomingImage: Sendable {
    public enum Format: String, Sendable, Codable { case dicom, png }

    public let path: String
    public let format: Format
    /// Nil for PNG, which carries no DICOM header.
    public let metadata: DicomMetadata?
    public let eligibility: Eligibility
    public let frames: [Radiograph]
    public let decisions: RenderingDecisions?
    /// The JPEG 2000 resolution level the frames were decoded at (0: full resolution), with the full size.
    public var reduction: ModelInput.Reduction?

    static let pngSignature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

    /// PNG by its signature, anything else as DICOM. Ineligible DICOM (CT, SR, ...) is not decoded.
    /// `minimumSize` and `threads`: as `DicomReader.render` (0: full resolution, for what people see).
    public static func read(path: String, maximumPixels: UInt64 = DicomReader.defaultMaximumPixels, minimumSize: Int = 0,
                            threads: Int = 1) throws -> IncomingImage {
        let head = (FileHandle(forReadingAtPath: path).flatMap { try? $0.read(upToCount: 8) }) ?? Data()
        if Array(head) == pngSignature {
            let image = try PNGReader.read(path: path, maximumPixels: maximumPixels)
            return IncomingImage(path: path, format: .png, metadata: nil, eligibility: .radiograph, frames: [image], decisions: nil)
        }
        if path.lowercased().hasSuffix(".png") {
            throw ImagingError.notPNG(path: path, reason: "the file does not start with the PNG signature")
        }
        let metadata = try DicomReader.metadata(path: path)
        let eligibility = Eligibility.decide(metadata)
        guard eligibility.isEligible else {
            return IncomingImage(path: path, format: .dicom, metadata: metadata, eligibility: eligibility, frames: [], decisions: nil)
        }
        let rendered = try DicomReader.render(path: path, maximumPixels: maximumPixels, minimumSize: minimumSize, threads: threads)
        return IncomingImage(path: path, format: .dicom, metadata: rendered.metadata, eligibility: eligibility,
                             frames: rendered.frames, decisions: rendered.decisions, reduction: rendered.reduction)
    }
}
