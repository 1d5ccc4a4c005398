import Foundation

/// `bonetriage classify FILES --pictures DIR`: the heatmap of each file (its first frame), made on the
/// spot, and its overlay and plain pictures, without the worklist (for a look at a file, and for the
/// README's example picture).
public enum FilePictures {
    /// One line per file saying what was written or why not.
    public static func write(paths: [String], model: LoadedModel, folder: String, threads: Int = ProcessInfo.processInfo.activeProcessorCount,
                             maximumPixels: UInt64 = DicomReader.defaultMaximumPixels) throws -> [String] {
        try FileSystem.makeFolder(folder)
        let spec = model.model.spec
        let engine = try InceptionV3Engine(network: InceptionV3Network(weights: model.model.backbone), inputSize: spec.size, threads: threads)
        let maker = OcclusionSensitivity(engine: engine, head: model.model.head.head, reading: model.model.head.description.reading,
                                         modelFingerprint: model.identity)
        let decoder = InProcessDecoder(threads: threads)
        var used: Set<String> = []
        var lines: [String] = []
        for path in paths {
            var base = StudyPictures.safeName(((path as NSString).lastPathComponent as NSString).deletingPathExtension)
            var n = 2
            let stem = base
            while used.contains(base) { base = stem + "-\(n)"; n += 1 }
            used.insert(base)
            guard case let .inputs(frames) = decoder.decode(path: path, spec: spec, maximumPixels: maximumPixels), let input = frames.first else {
                lines.append("\(path): not classified (not a radiograph the model reads, or unreadable); no picture")
                continue
            }
            let probability = try maker.probabilities([input])[0]
            let heatmap = try maker.heatmap(input: input)
            let radiograph = try TriagePictures.radiograph(path: path, maximumPixels: maximumPixels)
            let overlayPath = folder + "/" + base + "-overlay.png", plainPath = folder + "/" + base + "-plain.png"
            try TriagePictures.overlay(radiograph, heatmap: heatmap,
                                       caption: PictureCaption(probability: probability, modelID: model.model.head.description.modelID))
                .picture.writePNG(to: overlayPath)
            try TriagePictures.plain(radiograph).writePNG(to: plainPath)
            lines.append("\(path): p(abnormal) " + String(format: "%.3f", probability) + ", wrote \(overlayPath) and \(plainPath)")
        }
        return lines
    }
}
