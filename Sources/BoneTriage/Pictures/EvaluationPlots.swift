import Foundation

/// `evaluate --plots`: the ROC curve with the operating point marked, and a reliability (calibration)
/// plot, drawn with the bitmap font and written as PNG through libpng.
public enum EvaluationPlots {
    public static let size = 640
    static let left = 90, right = 30, top = 70, bottom = 80
    static let white: (UInt8, UInt8, UInt8) = (255, 255, 255), black: (UInt8, UInt8, UInt8) = (0, 0, 0)
    static let grey: (UInt8, UInt8, UInt8) = (200, 200, 200), blue: (UInt8, UInt8, UInt8) = (20, 80, 200)
    static let red: (UInt8, UInt8, UInt8) = (210, 30, 30)

    /// The plotting frame: unit square [0, 1] x [0, 1] mapped to pixels.
    struct Frame {
        let x0 = left, y0 = size - bottom, width = size - left - right, height = size - top - bottom
        func x(_ v: Double) -> Int { x0 + Int((min(max(v, 0), 1) * Double(width)).rounded()) }
        func y(_ v: Double) -> Int { y0 - Int((min(max(v, 0), 1) * Double(height)).rounded()) }
    }

    static func line(_ p: inout RGBPicture, _ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: (UInt8, UInt8, UInt8), thickness: Int = 1,
                     dashed: Bool = false) {
        let steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in 0...steps {
            if dashed && (s / 6) % 2 == 1 { continue }
            let x = x0 + (x1 - x0) * s / steps, y = y0 + (y1 - y0) * s / steps
            for dy in 0..<thickness { for dx in 0..<thickness { p.set(x: x + dx - thickness / 2, y: y + dy - thickness / 2, c) } }
        }
    }

    static func disc(_ p: inout RGBPicture, _ cx: Int, _ cy: Int, radius: Int, _ c: (UInt8, UInt8, UInt8)) {
        for dy in -radius...radius { for dx in -radius...radius where dx * dx + dy * dy <= radius * radius { p.set(x: cx + dx, y: cy + dy, c) } }
    }

    static func text(_ p: inout RGBPicture, _ s: String, x: Int, y: Int, scale: Int = 2, _ c: (UInt8, UInt8, UInt8) = black) {
        BitmapFont.draw(s, into: &p, x: x, y: y, scale: scale, colour: c)
    }

    /// Axes, grid, ticks at 0, 0.2, ... 1 with their labels, the axis names and the title.
    static func axes(title: String, xName: String, yName: String) -> (RGBPicture, Frame) {
        var p = RGBPicture(width: size, height: size, filledWith: white)
        let f = Frame()
        for k in 0...5 {
            let v = Double(k) / 5, label = String(format: "%.1f", v)
            line(&p, f.x(v), f.y(0), f.x(v), f.y(1), grey)
            line(&p, f.x(0), f.y(v), f.x(1), f.y(v), grey)
            line(&p, f.x(v), f.y0, f.x(v), f.y0 + 6, black, thickness: 2)
            line(&p, f.x0 - 6, f.y(v), f.x0, f.y(v), black, thickness: 2)
            text(&p, label, x: f.x(v) - BitmapFont.width(of: label), y: f.y0 + 12)
            text(&p, label, x: f.x0 - 12 - 2 * BitmapFont.width(of: label), y: f.y(v) - 7)
        }
        line(&p, f.x0, f.y0, f.x(1), f.y0, black, thickness: 2)
        line(&p, f.x0, f.y0, f.x0, f.y(1), black, thickness: 2)
        text(&p, xName, x: f.x0 + (f.width - 2 * BitmapFont.width(of: xName)) / 2, y: f.y0 + 44)
        text(&p, yName, x: 10, y: top - 24)
        text(&p, title, x: (size - 2 * BitmapFont.width(of: title)) / 2, y: 12)
        return (p, f)
    }

    /// The ROC curve of the studies, the chance diagonal, and the operating point (a red dot, with its
    /// threshold, sensitivity and specificity).
    public static func roc(_ e: StudyEvaluation) -> RGBPicture {
        let auroc = e.auroc.isFinite ? String(format: "%.3f", e.auroc) : "-"
        let ci = e.aurocInterval.map { String(format: " (%.3f-%.3f)", $0.lower, $0.upper) } ?? ""
        var (p, f) = axes(title: "ROC, \(e.studies) studies: AUROC \(auroc)\(ci)", xName: "1 - specificity (false positive rate)",
                          yName: "sensitivity (true positive rate)")
        line(&p, f.x(0), f.y(0), f.x(1), f.y(1), (150, 150, 150), dashed: true)
        for (a, b) in zip(e.roc, e.roc.dropFirst()) { line(&p, f.x(a.fpr), f.y(a.tpr), f.x(b.fpr), f.y(b.tpr), blue, thickness: 3) }
        if e.sensitivity.isFinite, e.specificity.isFinite {
            let px = f.x(1 - e.specificity), py = f.y(e.sensitivity)
            disc(&p, px, py, radius: 7, red)
            // The legend sits in the lower right, where a ROC curve above the diagonal does not pass.
            let label = String(format: "threshold %.3f", e.threshold)
            let figures = String(format: "sens %.2f, spec %.2f", e.sensitivity, e.specificity)
            disc(&p, f.x(0.45), f.y(0.2) + 7, radius: 6, red)
            text(&p, label, x: f.x(0.45) + 14, y: f.y(0.2), red)
            text(&p, figures, x: f.x(0.45) + 14, y: f.y(0.2) + 22, red)
        }
        return p
    }

    /// Reliability plot: for each of 10 equal-width bins holding studies, the fraction abnormal against the
    /// mean probability (a dot whose size grows with the bin's studies), the perfect-calibration diagonal,
    /// and the expected calibration error and Brier score.
    public static func reliability(_ e: StudyEvaluation) -> RGBPicture {
        let which = e.calibrated ? "calibrated" : "uncalibrated"
        var (p, f) = axes(title: String(format: "Reliability (%@): ECE %.3f, Brier %.3f", which, e.expectedCalibrationError, e.brier),
                          xName: "mean predicted probability (10 bins)", yName: "fraction of studies abnormal")
        line(&p, f.x(0), f.y(0), f.x(1), f.y(1), (150, 150, 150), dashed: true)
        let filled = e.reliability.filter { $0.count > 0 }
        for (a, b) in zip(filled, filled.dropFirst()) {
            line(&p, f.x(a.meanProbability), f.y(a.observedFraction), f.x(b.meanProbability), f.y(b.observedFraction), blue, thickness: 3)
        }
        let largest = max(1, filled.map(\.count).max() ?? 1)
        for b in filled {
            let radius = 4 + Int((8 * (Double(b.count) / Double(largest)).squareRoot()).rounded())
            disc(&p, f.x(b.meanProbability), f.y(b.observedFraction), radius: radius, blue)
            text(&p, "\(b.count)", x: f.x(b.meanProbability) + radius + 3, y: f.y(b.observedFraction) - 4, scale: 1, black)
        }
        text(&p, "dot size and number: studies in the bin", x: f.x0 + 8, y: f.y(1) + 8, scale: 1)
        return p
    }

    /// Writes roc.png and calibration.png into `folder` (created when missing); returns their paths.
    public static func write(_ e: StudyEvaluation, folder: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let roc = (folder as NSString).appendingPathComponent("roc.png"), cal = (folder as NSString).appendingPathComponent("calibration.png")
        try Self.roc(e).writePNG(to: roc)
        try reliability(e).writePNG(to: cal)
        return [roc, cal]
    }
}
