import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Result objects for tests: a study template (a real radiograph from ../shared, or a self-made one),
/// placements in its study, reports and pictures, and DCMTK's tools to read them back.
enum ResultFixtures {
    /// A real radiograph (RG1_UNCR: an uncompressed CR, ISO_IR 100) when ../shared is present.
    static var realRadiograph: String? {
        guard let shared = Fixtures.shared else { return nil }
        let path = shared.appendingPathComponent("data/dicom/radiographs/RG1_UNCR.dcm").path
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    /// A self-made radiograph (DicomWriter): patient name in ISO_IR 100 with non-ASCII letters.
    static func selfMadeRadiograph(in dir: TemporaryDirectory, study: String = "1.2.826.0.1.3680043.10.13.1") throws -> String {
        var w = DicomWriter.radiograph(study: study, sop: study + ".1.1", rows: 32, columns: 24)
        w.set(0x0008, 0x0005, "CS", "ISO_IR 100")
        w.set(0x0008, 0x0020, "DA", "20261130")
        w.set(0x0008, 0x0030, "TM", "101500")
        w.set(0x0008, 0x0050, "SH", "ACC-13")
        w.set(0x0010, 0x0010, "PN", Data([0x4D, 0xFC, 0x6C, 0x6C, 0x65, 0x72, 0x5E, 0x4A, 0xF6, 0x72, 0x67]))  // Müller^Jörg in Latin-1
        w.set(0x0010, 0x0020, "LO", "PAT-13")
        w.set(0x0010, 0x0030, "DA", "19600101")
        w.set(0x0010, 0x0040, "CS", "M")
        w.set(0x0020, 0x0010, "SH", "S13")
        w.nativePixels(bytes: 32 * 24)
        let path = dir.path("self-made.dcm")
        try w.write(to: path)
        return path
    }

    /// The real radiograph when present, else a self-made one; with the reason the real one is missing.
    static func template(in dir: TemporaryDirectory) throws -> (path: String, real: Bool) {
        if let real = realRadiograph { return (real, true) }
        return (try selfMadeRadiograph(in: dir), false)
    }

    static func placement(template: String, instanceNumber: Int = 1) throws -> ResultPlacement {
        let meta = try DicomReader.metadata(path: template)
        return ResultPlacement(studyTemplatePath: template, studyInstanceUID: try #require(meta.studyInstanceUID),
                               seriesInstanceUID: DicomUID.make(), seriesNumber: 9901, sopInstanceUID: DicomUID.make(),
                               instanceNumber: instanceNumber, contentDateTime: Date(timeIntervalSince1970: 1_796_000_000))
    }

    static func source(of template: String, probability: Double? = 0.873, problem: String? = nil) throws -> ReportedImage {
        let meta = try DicomReader.metadata(path: template)
        return ReportedImage(sopClassUID: try #require(meta.sopClassUID), sopInstanceUID: try #require(meta.sopInstanceUID),
                             seriesInstanceUID: meta.seriesInstanceUID, probability: probability, problem: problem)
    }

    static func report(template: String, review: ReportedReview? = nil, predecessor: ReportedObject? = nil) throws -> TriageReport {
        let meta = try DicomReader.metadata(path: template)
        let unclassified = ReportedImage(sopClassUID: "1.2.840.10008.5.1.4.1.1.1", sopInstanceUID: try #require(meta.sopInstanceUID) + ".77",
                                         seriesInstanceUID: meta.seriesInstanceUID, probability: nil,
                                         problem: "the image cannot be rendered: JPEG 2000 codestream truncated")
        return TriageReport(placement: try placement(template: template), verdict: .abnormal, probability: 0.873, threshold: 0.42,
                            modelID: "mura-humerus-v1", modelFingerprint: "sha256:1f2e3d4c5b6a7980", triagedAt: Date(timeIntervalSince1970: 1_795_990_000),
                            images: [try source(of: template), unclassified], review: review, predecessor: predecessor)
    }

    /// A picture with a pattern no two pixels' neighbours share: any swap of rows, columns or channels shows.
    static func picture(width: Int = 64, height: Int = 48) -> RGBPicture {
        var pixels = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let i = (y * width + x) * 3
                pixels[i] = UInt8(x * 4 % 256)
                pixels[i + 1] = UInt8(y * 5 % 256)
                pixels[i + 2] = UInt8((x * 7 + y * 3) % 256)
            }
        }
        return RGBPicture(width: width, height: height, pixels: pixels)
    }

    static func capture(template: String, picture: RGBPicture = picture()) throws -> TriageCapture {
        TriageCapture(placement: try placement(template: template), seriesDescription: "BoneTriage heatmaps (triage aid)",
                      picture: picture, source: try source(of: template))
    }

    static var toolsAvailable: Bool { ["dcmdump", "dsrdump"].allSatisfy { DicomTools.find($0) != nil } }

    struct ToolRun {
        let status: Int32
        let output: String
        let errors: String
    }

    /// Runs a tool with stdout and stderr apart.
    static func run(_ tool: String, _ arguments: [String]) throws -> ToolRun {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try #require(DicomTools.find(tool), "\(tool) is not installed"))
        p.arguments = arguments
        let out = Pipe()
        let dir = try TemporaryDirectory()
        let errorsPath = dir.path("stderr")
        _ = FileManager.default.createFile(atPath: errorsPath, contents: nil)
        p.standardOutput = out
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errorsPath))
        try p.run()
        let output = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let errors = (try? String(contentsOfFile: errorsPath, encoding: .utf8)) ?? ""
        return ToolRun(status: p.terminationStatus, output: String(decoding: output, as: UTF8.self), errors: errors)
    }

    /// The values of every element with this tag, at any depth (dcmdump +P), as dcmdump prints them.
    static func values(_ path: String, _ tag: String) throws -> [String] {
        let r = try run("dcmdump", ["-q", "-Un", "+L", "+P", tag, path])
        return r.output.split(separator: "\n").compactMap { line in
            guard let open = line.firstIndex(of: "["), let close = line.lastIndex(of: "]"), open < close else {
                // Numbers (US) and empty values print without brackets.
                let parts = line.split(separator: " ", omittingEmptySubsequences: true)
                if parts.count > 2, parts[2].first != "(" && parts[2] != "#" { return String(parts[2]) }
                return line.contains("(no value available)") ? "" : nil
            }
            return String(line[line.index(after: open)..<close])
        }
    }

    static func value(_ path: String, _ tag: String) throws -> String? { try values(path, tag).first }
}
