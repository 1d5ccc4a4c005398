import ArgumentParser
import BoneTriage
import Foundation

extension ResizeFilter: ExpressibleByArgument {}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what BoneTriage reads from DICOM or PNG files and how it renders them for the model.",
        discussion: "Exits non-zero when any file cannot be rendered; the reason goes to standard error.")

    @Argument(help: "DICOM or PNG files.")
    var files: [String]
    @Flag(help: "One JSON object per file, one per line.")
    var json = false
    @Option(help: "Write the model input of every frame as PNG into this folder (<file name>.<frame>.png).")
    var inputPng: String?
    @Option(help: "Model input size in pixels.")
    var inputSize: Int = 150
    @Option(help: "Resize filter: area or nearest.")
    var filter: ResizeFilter = .area

    func run() throws {
        if let inputPng {
            try FileManager.default.createDirectory(atPath: inputPng, withIntermediateDirectories: true)
        }
        let spec = ModelInputSpec(size: inputSize, range: 0...1, filter: filter)
        var failures = 0
        for path in files {
            do {
                let image = try IncomingImage.read(path: path)
                print(json ? InspectReport.json(image) : InspectReport.text(image))
                if let inputPng {
                    for (index, frame) in image.frames.enumerated() {
                        let name = URL(fileURLWithPath: path).lastPathComponent + ".\(index + 1).png"
                        let preview = ModelInput.preview(ModelInput.make(frame, spec: spec), spec: spec)
                        try PNGReader.write(preview, to: URL(fileURLWithPath: inputPng).appendingPathComponent(name).path)
                    }
                }
            } catch {
                failures += 1
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            }
        }
        if failures > 0 { throw ExitCode(1) }
    }
}

/// How `inspect` prints an image (patient fields are shown: this is an administrator's tool run by hand).
enum InspectReport {
    static func object(_ image: IncomingImage) -> [String: Any] {
        var o: [String: Any] = ["file": image.path, "format": image.format.rawValue, "eligible": image.eligibility.isEligible,
                                "frames": image.frames.count]
        if case let .notApplicable(reason) = image.eligibility { o["not_applicable_reason"] = reason }
        if let first = image.frames.first { o["width"] = first.width; o["height"] = first.height; o["channels"] = first.channels }
        if let m = image.metadata, let data = try? JSONEncoder().encode(m), let meta = try? JSONSerialization.jsonObject(with: data) {
            o["metadata"] = meta
        }
        if let d = image.decisions, let data = try? JSONEncoder().encode(d), let decisions = try? JSONSerialization.jsonObject(with: data) {
            o["rendering"] = decisions
        }
        return o
    }

    static func json(_ image: IncomingImage) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object(image), options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }

    static func text(_ image: IncomingImage) -> String {
        var lines = ["\(image.path)  [\(image.format.rawValue)]"]
        func add(_ key: String, _ value: String?) { if let value { lines.append("  " + key.padding(toLength: 20, withPad: " ", startingAt: 0) + value) } }
        if let m = image.metadata {
            add("SOP class", m.sopClassUID)
            add("modality / part", [m.modality, m.bodyPartExamined, m.viewPosition, m.laterality].compactMap { $0 }.joined(separator: " / "))
            add("study", m.studyInstanceUID)
            add("transfer syntax", m.transferSyntaxUID + (m.hasFileMeta ? "" : " (no File Meta: implicit VR little endian assumed)"))
            add("pixels", "\(m.columns ?? 0)x\(m.rows ?? 0), \(m.numberOfFrames) frame(s), \(m.photometricInterpretation ?? "?"), \(m.bitsStored ?? 0)/\(m.bitsAllocated ?? 0) bits")
            add("study instances", m.numberOfStudyRelatedInstances.map(String.init))
        }
        switch image.eligibility {
        case .radiograph: add("eligible", "yes")
        case let .notApplicable(reason): add("eligible", "no: \(reason)")
        }
        if let d = image.decisions {
            let window = d.windowCenter.map { c in " (center \(c), width \(d.windowWidth ?? 0))" } ?? ""
            add("rendering", "\(d.voi.rawValue)\(window)\(d.invertedMonochrome1 ? ", MONOCHROME1 inverted" : "")\(d.decodedWithOpenJPEG ? ", JPEG 2000 via OpenJPEG" : "")\(d.fileWindowIgnored ? ", the file's window missed every pixel value so min-max was used" : "")")
        }
        if let f = image.frames.first { add("rendered", "\(image.frames.count) x \(f.width)x\(f.height)x\(f.channels) (8-bit)") }
        return lines.joined(separator: "\n")
    }
}
