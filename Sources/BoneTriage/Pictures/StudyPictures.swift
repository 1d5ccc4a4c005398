import Foundation

/// `bonetriage show STUDY --images DIR`: per image, the overlay (radiograph, heatmap, band) and the
/// plain rendering as PNG files named after the image, and a line saying what was written or why not.
public enum StudyPictures {
    /// A file name from the image's name: its drop-folder file name without extension, else
    /// "series-S-instance-I", else its SOP Instance UID; characters other than letters, digits, '.', '-'
    /// and '_' become '_'.
    public static func baseName(_ image: StudyImage) -> String {
        let raw: String
        if let name = image.fileName, !name.isEmpty {
            raw = (name as NSString).deletingPathExtension
        } else if image.seriesNumber != nil || image.instanceNumber != nil {
            raw = "series-\(image.seriesNumber.map(String.init) ?? "x")-instance-\(image.instanceNumber.map(String.init) ?? "x")"
        } else {
            raw = image.sopInstanceUID
        }
        return safeName(raw)
    }

    /// `raw` with characters other than ASCII letters, digits, '.', '-' and '_' replaced by '_', never
    /// empty or hidden.
    public static func safeName(_ raw: String) -> String {
        let safe = String(raw.unicodeScalars.map { s -> Character in
            s.isASCII && (CharacterSet.alphanumerics.contains(s) || s == "." || s == "-" || s == "_") ? Character(s) : "_"
        })
        return safe.isEmpty || safe.hasPrefix(".") ? "image" + safe : safe
    }

    /// Writes the pictures of the study's classified images into `folder` (created if missing); one line
    /// per image, saying what was written or why not.
    public static func write(study: Study, images: [StudyImage], worklist: any WorklistStore, to folder: String,
                             maximumPixels: UInt64 = DicomReader.defaultMaximumPixels) throws -> [String] {
        try FileSystem.makeFolder(folder)
        var used: Set<String> = []
        var lines: [String] = []
        for image in images {
            let name = WorklistPresentation.printable(WorklistPresentation.imageName(image))
            guard image.eligible else {
                lines.append("\(name): not a radiograph the model reads (\(image.eligibilityReason ?? "not eligible")); no picture")
                continue
            }
            var base = baseName(image)
            var n = 2
            while used.contains(base) { base = baseName(image) + "-\(n)"; n += 1 }
            used.insert(base)
            if let removed = image.fileRemovedAt {
                lines.append("\(name): its file was removed by storage retention on \(WorklistPresentation.iso(removed) ?? "?"); no picture")
                continue
            }
            let radiograph: Radiograph
            do {
                radiograph = try TriagePictures.radiograph(path: image.filePath, maximumPixels: maximumPixels)
            } catch PictureError.fileGone {
                lines.append("\(name): its file \(image.filePath) is gone (deleted after triage, or removed); no picture")
                continue
            } catch {
                lines.append("\(name): cannot be rendered: \(error)")
                continue
            }
            let plainPath = folder + "/" + base + "-plain.png"
            try TriagePictures.plain(radiograph).writePNG(to: plainPath)
            let stored = try worklist.heatmap(sopInstanceUID: image.sopInstanceUID)
            let current = stored.flatMap { $0.outcome.modelFingerprint == study.modelHash ? $0.outcome : nil }
            switch current {
            case let .made(heatmap)?:
                let overlayPath = folder + "/" + base + "-overlay.png"
                let caption = PictureCaption(probability: image.probability, modelID: study.modelID)
                try TriagePictures.overlay(radiograph, heatmap: heatmap, caption: caption).picture.writePNG(to: overlayPath)
                lines.append("\(name): wrote \(overlayPath) and \(plainPath)")
            case let .notMade(reason, _)?:
                lines.append("\(name): wrote \(plainPath); no heatmap could be made: \(reason)")
            case nil:
                let why = image.probability == nil ? "the image was not classified" : "no heatmap yet for the study's current model (the daemon makes them; [heatmaps] compute)"
                lines.append("\(name): wrote \(plainPath); \(why)")
            }
        }
        return lines
    }
}
