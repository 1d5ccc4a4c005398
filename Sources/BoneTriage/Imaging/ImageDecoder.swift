import Foundation

/// What decoding one file for the model gave: one input per frame, why the model may not see it, or
/// why it could not be read.
public enum DecodedImage: Sendable {
    /// One size x size x 3 model input per frame (NHWC, in the model's value range).
    case inputs([[Float]])
    case notApplicable(reason: String)
    case unreadable(ImagingError)
}

/// Turns files into model inputs. Implementations keep state (a child process) and are used by one
/// thread at a time: one per triage worker.
public protocol ImageDecoder: AnyObject {
    func decode(path: String, spec: ModelInputSpec, maximumPixels: UInt64) -> DecodedImage
    /// Gets ready ahead of the first file (the isolated decoder starts its process).
    func start()
    /// Lets go of what `start` took.
    func close()
}

extension ImageDecoder {
    public func start() {}
    public func close() {}
}

/// Decodes in this process: reading, rendering (DCMTK, OpenJPEG, libpng) and resizing. JPEG 2000 is
/// decoded at the lowest resolution the model's input needs (`DicomReader.minimumDecodedSize`).
public final class InProcessDecoder: ImageDecoder {
    /// OpenJPEG threads per image.
    public let threads: Int

    public init(threads: Int = 1) { self.threads = max(1, threads) }

    public func decode(path: String, spec: ModelInputSpec, maximumPixels: UInt64) -> DecodedImage {
        Self.decode(path: path, spec: spec, maximumPixels: maximumPixels, threads: threads)
    }

    public static func decode(path: String, spec: ModelInputSpec, maximumPixels: UInt64, threads: Int = 1) -> DecodedImage {
        do {
            let image = try IncomingImage.read(path: path, maximumPixels: maximumPixels,
                                               minimumSize: DicomReader.minimumDecodedSize(for: spec), threads: threads)
            if case let .notApplicable(reason) = image.eligibility { return .notApplicable(reason: reason) }
            guard !image.frames.isEmpty else { return .unreadable(.undecodable(path: path, reason: "the image has no frame")) }
            guard image.frames.count <= IsolatedDecoder.maximumFrames else {
                return .unreadable(.undecodable(path: path, reason: "\(image.frames.count) frames; BoneTriage classifies at most \(IsolatedDecoder.maximumFrames) per file"))
            }
            return .inputs(image.frames.map { ModelInput.make($0, spec: spec, reduction: image.reduction) })
        } catch let error as ImagingError {
            return .unreadable(error)
        } catch {
            return .unreadable(.undecodable(path: path, reason: "\(error)"))
        }
    }
}
