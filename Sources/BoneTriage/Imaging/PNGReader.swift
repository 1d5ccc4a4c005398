import CPNG
import Foundation

/// PNG images (MURA's format) through libpng.
public enum PNGReader {
    public static func read(path: String, maximumPixels: UInt64 = DicomReader.defaultMaximumPixels) throws -> Radiograph {
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw ImagingError.unreadable(path: path, reason: FileManager.default.fileExists(atPath: path) ? "permission denied" : "no such file")
        }
        var pixels: UnsafeMutablePointer<UInt8>?
        var width: Int32 = 0, height: Int32 = 0, channels: Int32 = 0
        var error = [CChar](repeating: 0, count: 512)
        let status = bt_png_read(path, maximumPixels, &pixels, &width, &height, &channels, &error, error.count)
        if status == -2 {
            throw ImagingError.sizeRefusal(path: path, width: Int(width), height: Int(height), frames: 1, limit: maximumPixels)
        }
        guard status == 0, let pixels else {
            throw ImagingError.notPNG(path: path, reason: DicomReader.message(error))
        }
        defer { bt_png_free(pixels) }
        let count = Int(width) * Int(height) * Int(channels)
        return Radiograph(width: Int(width), height: Int(height), channels: Int(channels),
                          pixels: Array(UnsafeBufferPointer(start: pixels, count: count)))
    }

    public static func write(_ image: Radiograph, to path: String) throws {
        var error = [CChar](repeating: 0, count: 512)
        let status = image.pixels.withUnsafeBufferPointer {
            bt_png_write(path, $0.baseAddress, Int32(image.width), Int32(image.height), Int32(image.channels), &error, error.count)
        }
        guard status == 0 else { throw ImagingError.unreadable(path: path, reason: "cannot write PNG: \(DicomReader.message(error))") }
    }
}
