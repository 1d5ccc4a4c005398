import BoneTriage
import Foundation
import Testing

/// The decoder process keeps freed memory between the images of a study (it reuses its pages instead of
/// faulting in fresh ones) and gives it back once idle (`DecoderService.idleReleaseMilliseconds`).
@Suite("Decoder process memory", .enabled(if: Executable.url != nil, "skipped: the bonetriage binary is not built"))
struct DecoderMemoryTests {
    static func residentKiB(_ pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
            return Int(line.split(separator: " ").dropFirst().first ?? "")
        }
        return nil
    }

    @Test("after a large image the decoder holds its freed memory only while busy, and returns it within seconds of idling")
    func releasesWhenIdle() throws {
        let dir = try TemporaryDirectory()
        // 4000 x 4000 x 16 bits: 32 MB of pixels, more in the decoder's working copies.
        let side = 4000
        var w = DicomWriter.radiograph(study: "1.2.826.0.1.3680043.8.498.1619", sop: "1.2.826.0.1.3680043.8.498.1619.1",
                                       rows: side, columns: side, bitsAllocated: 16)
        w.set(0x0028, 0x0101, "US", DicomWriter.us(12))
        w.set(0x0028, 0x0102, "US", DicomWriter.us(11))
        w.set(0x0028, 0x1050, "DS", "2048")
        w.set(0x0028, 0x1051, "DS", "4096")
        w.nativePixels(bytes: side * side * 2, bitsAllocated: 16)
        let path = dir.path("large.dcm")
        try w.write(to: path)

        let process = Process()
        process.executableURL = try #require(Executable.url)
        process.arguments = ["decode-worker"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            try? input.fileHandleForWriting.close()
            process.waitUntilExit()
        }
        let request: [String: Any] = ["task": "model_input", "path": path, "maximumPixels": 256 << 20, "size": 150, "low": -1.0,
                                      "high": 0.9921875, "filter": "area", "threads": 1]
        input.fileHandleForWriting.write(try JSONSerialization.data(withJSONObject: request) + Data("\n".utf8))
        // The answer line, then 150 x 150 x 3 floats.
        var line = Data()
        while true {
            let byte = try #require(try output.fileHandleForReading.read(upToCount: 1))
            if byte.first == 0x0A { break }
            line += byte
        }
        let answer = try #require(try JSONSerialization.jsonObject(with: line) as? [String: Any])
        #expect(answer["outcome"] as? String == "inputs", "\(answer)")
        var remaining = 150 * 150 * 3 * 4
        while remaining > 0, let data = try output.fileHandleForReading.read(upToCount: remaining), !data.isEmpty { remaining -= data.count }

        let busy = try #require(Self.residentKiB(process.processIdentifier))
        #expect(busy > 40_000, "right after a 32 MB image the decoder still holds its pages (\(busy) KiB)")
        var idle = busy
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            Thread.sleep(forTimeInterval: 0.25)
            idle = Self.residentKiB(process.processIdentifier) ?? idle
            if idle < busy - 25_000 { break }
        }
        print("decoder memory: \(busy) KiB right after a 4000x4000 16-bit image, \(idle) KiB once idle")
        #expect(idle < busy - 25_000, "idle, the decoder returns the image's memory (\(busy) -> \(idle) KiB)")
    }
}
