import BoneTriage
import Foundation

/// DCMTK's and OpenJPEG's own command-line tools (Debian packages dcmtk, libopenjp2-tools), which
/// the tests use to make encodings nobody here wrote.
enum DicomTools {
    static func find(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    static var available: Bool { ["img2dcm", "dcmcjpeg", "dcmcjpls", "dcmcrle", "opj_compress"].allSatisfy { find($0) != nil } }

    struct Failed: Error, CustomStringConvertible { let description: String }

    static func run(_ tool: String, _ arguments: [String]) throws {
        guard let path = find(tool) else { throw Failed(description: "\(tool) is not installed") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let err = Pipe()
        process.standardError = err
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failed(description: "\(tool) \(arguments.joined(separator: " ")) failed: \(String(decoding: message, as: UTF8.self))")
        }
    }

    /// An 8-bit gray BMP (bottom-up rows, gray palette), the input img2dcm takes.
    static func writeBMP(_ image: Radiograph, to path: String) throws {
        precondition(image.channels == 1)
        let rowLength = (image.width + 3) / 4 * 4
        var data = Data()
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { data.append(contentsOf: $0) } }
        func u16(_ v: Int) { withUnsafeBytes(of: UInt16(v).littleEndian) { data.append(contentsOf: $0) } }
        let offset = 14 + 40 + 1024
        data.append(contentsOf: Array("BM".utf8)); u32(offset + rowLength * image.height); u16(0); u16(0); u32(offset)
        u32(40); u32(image.width); u32(image.height); u16(1); u16(8); u32(0); u32(rowLength * image.height); u32(2835); u32(2835); u32(256); u32(0)
        for i in 0..<256 { data.append(contentsOf: [UInt8(i), UInt8(i), UInt8(i), 0]) }
        for y in (0..<image.height).reversed() {
            data.append(contentsOf: image.pixels[(y * image.width)..<((y + 1) * image.width)])
            data.append(contentsOf: [UInt8](repeating: 0, count: rowLength - image.width))
        }
        try data.write(to: URL(fileURLWithPath: path))
    }

    /// A binary PGM, the input opj_compress takes.
    static func writePGM(_ image: Radiograph, to path: String) throws {
        var data = Data("P5\n\(image.width) \(image.height)\n255\n".utf8)
        data.append(contentsOf: image.pixels)
        try data.write(to: URL(fileURLWithPath: path))
    }

    /// A minimal Part 10 file (explicit VR little endian meta) holding one encapsulated JPEG 2000
    /// codestream as an 8-bit MONOCHROME2 Secondary Capture.
    static func encapsulateJ2K(_ codestream: Data, rows: Int, columns: Int, lossy: Bool = false,
                               transferSyntax: String? = nil, to path: String) throws {
        var w = DicomWriter(sopInstanceUID: "1.2.826.0.1.3680043.8.498.777.1")
        w.sopClassUID = "1.2.840.10008.5.1.4.1.1.7"
        w.set(0x0008, 0x0060, "CS", "OT")
        w.set(0x0020, 0x000D, "UI", "1.2.826.0.1.3680043.8.498.777")
        w.set(0x0020, 0x000E, "UI", "1.2.826.0.1.3680043.8.498.777.0")
        w.set(0x0028, 0x0002, "US", DicomWriter.us(1))
        w.set(0x0028, 0x0004, "CS", "MONOCHROME2")
        w.set(0x0028, 0x0010, "US", DicomWriter.us(rows))
        w.set(0x0028, 0x0011, "US", DicomWriter.us(columns))
        w.set(0x0028, 0x0100, "US", DicomWriter.us(8))
        w.set(0x0028, 0x0101, "US", DicomWriter.us(8))
        w.set(0x0028, 0x0102, "US", DicomWriter.us(7))
        w.set(0x0028, 0x0103, "US", DicomWriter.us(0))
        w.encapsulatedPixels([codestream], transferSyntax: transferSyntax ?? (lossy ? "1.2.840.10008.1.2.4.91" : "1.2.840.10008.1.2.4.90"))
        try w.write(to: path)
    }
}
