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
        func element(_ group: UInt16, _ elem: UInt16, _ vr: String, _ value: Data) -> Data {
            var d = Data()
            withUnsafeBytes(of: group.littleEndian) { d.append(contentsOf: $0) }
            withUnsafeBytes(of: elem.littleEndian) { d.append(contentsOf: $0) }
            d.append(contentsOf: Array(vr.utf8))
            var v = value
            if v.count % 2 == 1 { v.append(vr == "UI" || vr == "OB" ? 0 : 0x20) }
            if ["OB", "OW", "SQ", "UN", "UT"].contains(vr) {
                d.append(contentsOf: [0, 0])
                withUnsafeBytes(of: UInt32(v.count).littleEndian) { d.append(contentsOf: $0) }
            } else {
                withUnsafeBytes(of: UInt16(v.count).littleEndian) { d.append(contentsOf: $0) }
            }
            d.append(v)
            return d
        }
        func text(_ s: String) -> Data { Data(s.utf8) }
        func us(_ v: Int) -> Data { withUnsafeBytes(of: UInt16(v).littleEndian) { Data($0) } }
        let sc = "1.2.840.10008.5.1.4.1.1.7", sop = "1.2.826.0.1.3680043.8.498.777.1", j2k = transferSyntax ?? (lossy ? "1.2.840.10008.1.2.4.91" : "1.2.840.10008.1.2.4.90")
        var metaBody = element(0x0002, 0x0001, "OB", Data([0, 1]))
        metaBody += element(0x0002, 0x0002, "UI", text(sc)) + element(0x0002, 0x0003, "UI", text(sop))
        metaBody += element(0x0002, 0x0010, "UI", text(j2k)) + element(0x0002, 0x0012, "UI", text("1.2.826.0.1.3680043.8.498.1"))
        var file = Data(count: 128) + Data("DICM".utf8)
        file += element(0x0002, 0x0000, "UL", withUnsafeBytes(of: UInt32(metaBody.count).littleEndian) { Data($0) }) + metaBody
        file += element(0x0008, 0x0016, "UI", text(sc)) + element(0x0008, 0x0018, "UI", text(sop)) + element(0x0008, 0x0060, "CS", text("OT"))
        file += element(0x0020, 0x000D, "UI", text("1.2.826.0.1.3680043.8.498.777")) + element(0x0020, 0x000E, "UI", text("1.2.826.0.1.3680043.8.498.777.0"))
        file += element(0x0028, 0x0002, "US", us(1)) + element(0x0028, 0x0004, "CS", text("MONOCHROME2"))
        file += element(0x0028, 0x0010, "US", us(rows)) + element(0x0028, 0x0011, "US", us(columns))
        file += element(0x0028, 0x0100, "US", us(8)) + element(0x0028, 0x0101, "US", us(8)) + element(0x0028, 0x0102, "US", us(7))
        file += element(0x0028, 0x0103, "US", us(0))
        // Pixel Data, undefined length: empty offset table, one fragment, sequence delimiter.
        file += Data([0xE0, 0x7F, 0x10, 0x00]) + Data("OB".utf8) + Data([0, 0, 0xFF, 0xFF, 0xFF, 0xFF])
        func item(_ payload: Data) -> Data {
            var p = payload
            if p.count % 2 == 1 { p.append(0) }
            return Data([0xFE, 0xFF, 0x00, 0xE0]) + withUnsafeBytes(of: UInt32(p.count).littleEndian) { Data($0) } + p
        }
        file += item(Data()) + item(codestream) + Data([0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0])
        try file.write(to: URL(fileURLWithPath: path))
    }
}
