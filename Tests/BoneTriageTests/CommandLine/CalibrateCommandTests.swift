import BoneTriage
import Foundation
import Testing

@Suite("bonetriage model calibrate, model show and evaluate on a site's DICOM studies",
       .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct CalibrateCommandTests {
    /// A site: `count` one-image DICOM studies (64 x 64 CR, HUMERUS, each its own pattern) under
    /// `site/studyNN/`, plus one ultrasound study (not eligible), and the model the tests use.
    struct Site {
        let dir: TemporaryDirectory
        let model: String
        let folder: String
        var studies: [String] = []
        var scores: [Double] = []

        init(count: Int) throws {
            dir = try TemporaryDirectory()
            model = dir.path("model.safetensors")
            folder = dir.path("site")
            try DaemonHarness.writeModel(to: model, inputSize: 75, weightScale: 0.05)
            for k in 0..<count {
                let name = String(format: "study%02d", k)
                try write(name, modality: "CR", bodyPart: "HUMERUS", seed: k)
                studies.append(name)
            }
            try write("ultrasound", modality: "US", bodyPart: "HUMERUS", seed: 999)
            let classifier = try StudyClassifier(model: try TriageModel.load(path: model))
            scores = try studies.map { try #require(try classifier.classify(paths: [folder + "/\($0)/image.dcm"]).probability) }
        }

        func write(_ name: String, modality: String, bodyPart: String, seed: Int) throws {
            try FileManager.default.createDirectory(atPath: folder + "/" + name, withIntermediateDirectories: true)
            var w = DicomWriter.radiograph(study: "1.2.826.0.1.3680043.10.999.\(seed + 1)", sop: "1.2.826.0.1.3680043.10.999.\(seed + 1).1", rows: 64, columns: 64)
            w.set(0x0008, 0x0060, "CS", modality)
            w.set(0x0018, 0x0015, "CS", bodyPart)
            w.set(0x7FE0, 0x0010, "OB", Data((0..<(64 * 64)).map { i in UInt8(truncatingIfNeeded: (i % 64) * (seed % 7 + 1) + (i / 64) * (seed % 5 + 1) + seed * 13) }))
            try w.write(to: folder + "/\(name)/image.dcm")
        }

        /// Labels from the scores: the higher half abnormal, with `flips` pairs across the middle swapped.
        func labels(flips: Int = 3) -> [Int] {
            let order = scores.indices.sorted { scores[$0] < scores[$1] }
            var labels = [Int](repeating: 0, count: scores.count)
            for (rank, i) in order.enumerated() where rank >= scores.count / 2 { labels[i] = 1 }
            for f in 0..<flips {
                let low = order[scores.count / 2 - 1 - 2 * f], high = order[scores.count / 2 + 2 * f]
                labels[low] = 1; labels[high] = 0
            }
            return labels
        }

        func writeLabels(_ name: String, studies: [String], labels: [Int], extra: [String] = []) throws -> String {
            let lines = ["path,label"] + zip(studies, labels).map { "\($0.0),\($0.1)" } + extra
            try (lines.joined(separator: "\n") + "\n").write(toFile: folder + "/" + name, atomically: true, encoding: .utf8)
            return folder + "/" + name
        }
    }

    @Test("calibrate writes a site model: the daemon's scores, the threshold for the target, Platt, intervals; the input unchanged; show and classify use it")
    func calibrate() throws {
        let site = try Site(count: 64)
        let labels = site.labels()
        let csv = try site.writeLabels("labels.csv", studies: site.studies, labels: labels, extra: ["ultrasound,0"])
        let before = try Data(contentsOf: URL(fileURLWithPath: site.model))
        let out = site.dir.path("site.safetensors")
        let r = try Executable.run(["model", "calibrate", "--data", site.folder, "--labels", csv, "--target-sensitivity", "0.9",
                                    "--out", out, "--model", site.model])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("left out ultrasound: none of its 1 images is an eligible radiograph"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: site.model)) == before, "the input model is unchanged")

        let model = try TriageModel.load(path: out)
        let point = try #require(model.head.description.operatingPoint)
        #expect(point.source == .site && point.targetSensitivity == 0.9 && point.abnormalStudies == 32 && point.normalStudies == 32)
        #expect(point.threshold == Metrics.threshold(forSensitivity: 0.9, scores: site.scores, labels: labels))
        #expect(model.head.description.threshold == point.threshold)
        #expect(point.dataFingerprint == StudyDataFingerprint.of(identifiers: site.studies, labels: labels))
        let counts = ConfusionCounts(scores: site.scores, labels: labels, threshold: point.threshold)
        #expect(point.sensitivity == counts.sensitivity && point.specificity == counts.specificity && point.sensitivity >= 0.9)
        #expect(point.sensitivityInterval == Intervals.wilson(successes: counts.truePositives, trials: 32))
        #expect(point.calibration == PlattScaling.fit(probabilities: site.scores, labels: labels))
        // The backbone and head bytes are those of the input.
        let a = try SafeTensorsFile.read(path: site.model), b = try SafeTensorsFile.read(path: out)
        #expect(Set(a.tensors.keys) == Set(b.tensors.keys))
        for (name, tensor) in a.tensors { #expect(b.tensors[name]?.values == tensor.values && b.tensors[name]?.shape == tensor.shape, "\(name)") }

        let show = try Executable.run(["model", "show", out])
        #expect(show.status == 0 && show.stdout.contains("operating point: site") && show.stdout.contains("64 (32 abnormal, 32 normal)"))
        #expect(show.stdout.contains(point.dataFingerprint) && show.stdout.contains("Platt scaling"))
        // The worklist and the triage report name it with each verdict.
        let named = OperatingPoint.verdictSource(model.head.description)
        #expect(named.hasPrefix("site-calibrated for sensitivity 0.90: sensitivity ") && named.contains("on 64 studies, set "), "\(named)")
        let showOld = try Executable.run(["model", "show", site.model])
        #expect(showOld.status == 0 && showOld.stdout.contains("operating point: default") && showOld.stdout.contains("sites should calibrate before use"))
        #expect(showOld.stdout.contains("bonetriage model calibrate"))

        // classify reports the calibrated probability and threshold; the verdict is the uncalibrated mean's.
        let image = site.folder + "/\(site.studies[0])/image.dcm"
        let classify = try Executable.run(["classify", "--json", "--model", out, image])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(classify.stdout.utf8)) as? [String: Any])
        let calibration = try #require(point.calibration)
        #expect(abs((object["probability"] as? Double ?? -1) - calibration.calibrated(site.scores[0])) < 1e-9)
        #expect(abs((object["threshold"] as? Double ?? -1) - calibration.calibrated(point.threshold)) < 1e-12)
        #expect(object["verdict"] as? String == (site.scores[0] >= point.threshold ? "abnormal" : "normal"))
    }

    @Test("calibrate refuses too few studies, a too wide interval, a target outside (0, 1), other body parts, writing over its input")
    func refusals() throws {
        var site = try Site(count: 64)
        let labels = site.labels()
        let out = site.dir.path("x.safetensors")
        func run(_ csv: String, _ target: String = "0.9", model: String? = nil) throws -> Executable.Result {
            try Executable.run(["model", "calibrate", "--data", site.folder, "--labels", csv, "--target-sensitivity", target, "--out", model ?? out,
                                "--model", site.model])
        }
        let few = try run(try site.writeLabels("few.csv", studies: Array(site.studies.prefix(40)), labels: Array(labels.prefix(40))))
        #expect(few.status != 0 && few.stderr.contains("too few studies to calibrate on") && few.stderr.contains("at least 30 of each"))
        let wide = try run(try site.writeLabels("all.csv", studies: site.studies, labels: labels), "0.5")
        #expect(wide.status != 0 && wide.stderr.contains("too uncertain") && wide.stderr.contains("wider than 0.30"))
        for bad in ["1.5", "0", "1"] {
            let r = try run(site.folder + "/all.csv", bad)
            #expect(r.status != 0 && r.stderr.contains("must be between 0 and 1"), "\(bad): \(r.stderr)")
        }
        try site.write("foot", modality: "CR", bodyPart: "FOOT", seed: 500)
        site.studies.append("foot")
        let foot = try run(try site.writeLabels("foot.csv", studies: site.studies, labels: labels + [1]))
        #expect(foot.status != 0 && foot.stderr.contains("1 of FOOT") && foot.stderr.contains("the model covers HUMERUS"))
        let same = try run(site.folder + "/all.csv", model: site.model)
        #expect(same.status != 0 && same.stderr.contains("write the calibrated model to a new file"))
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test("evaluate on DICOM studies with a labels CSV: intervals, calibration error, and the two plots")
    func evaluate() throws {
        let site = try Site(count: 40)
        let labels = site.labels(flips: 4)
        let csv = try site.writeLabels("labels.csv", studies: site.studies, labels: labels, extra: ["ultrasound,1"])
        let plots = site.dir.path("plots")
        let r = try Executable.run(["evaluate", "--data", site.folder, "--labels", csv, "--model", site.model, "--json", "--plots", plots])
        #expect(r.status == 0, "\(r.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let e = try #require(object["study_evaluation"] as? [String: Any])
        #expect(e["studies"] as? Int == 40 && e["abnormal_studies"] as? Int == 20)
        let auroc = Metrics.auroc(scores: site.scores, labels: labels)
        #expect(abs((e["study_auroc"] as? Double ?? -1) - auroc) < 1e-3)
        let ci = try #require(e["study_auroc_ci"] as? [Double])
        let delong = try #require(Intervals.delong(scores: site.scores, labels: labels))
        #expect(ci.count == 2 && abs(ci[0] - delong.interval.lower) < 1e-3 && abs(ci[1] - delong.interval.upper) < 1e-3)
        let counts = ConfusionCounts(scores: site.scores, labels: labels, threshold: 0.5)
        let sensitivity = Intervals.wilson(successes: counts.truePositives, trials: counts.abnormal)
        #expect((e["sensitivity_ci"] as? [Double])?.first.map { abs($0 - sensitivity.lower) < 1e-3 } == true)
        #expect(abs((e["brier"] as? Double ?? -1) - CalibrationMeasures.brier(probabilities: site.scores, labels: labels)) < 1e-3)
        #expect(abs((e["ece_10_bins"] as? Double ?? -1) - CalibrationMeasures.expected(probabilities: site.scores, labels: labels)) < 1e-3)
        #expect((object["left_out"] as? [[String: String]])?.first?["study"] == "ultrasound")

        for name in ["roc.png", "calibration.png"] {
            let path = plots + "/" + name
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            #expect(bytes.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "\(name) is a PNG")
            let picture = try PNGReader.read(path: path)
            #expect(picture.width == EvaluationPlots.size && picture.height == EvaluationPlots.size && picture.channels == 3)
            var colours = Set<UInt32>()
            var dark = 0, blue = 0, red = 0
            for p in 0..<(picture.width * picture.height) {
                let (r, g, b) = (picture.pixels[p * 3], picture.pixels[p * 3 + 1], picture.pixels[p * 3 + 2])
                colours.insert(UInt32(r) << 16 | UInt32(g) << 8 | UInt32(b))
                if r < 60 && g < 60 && b < 60 { dark += 1 }
                if b > 150 && r < 80 { blue += 1 }
                if r > 150 && g < 80 && b < 80 { red += 1 }
            }
            #expect(colours.count >= 4 && dark > 2000, "\(name): axes and labels are drawn")
            #expect(blue > 300, "\(name): the curve is drawn")
            if name == "roc.png" { #expect(red > 100, "the operating point is marked") }
        }

        let text = try Executable.run(["evaluate", "--data", site.folder, "--labels", csv, "--model", site.model])
        #expect(text.status == 0 && text.stdout.contains("(95% CI ") && text.stdout.contains("DeLong") && text.stdout.contains("expected calibration error"))
    }

    @Test("calibrate on a MURA-layout folder (labels from the folder names): identifiers relative to the folder; the site threshold is applied to a study")
    func muraLayout() throws {
        let dir = try TemporaryDirectory()
        let model = dir.path("model.safetensors")
        try DaemonHarness.writeModel(to: model, inputSize: 75, weightScale: 0.05)
        let classifier = try StudyClassifier(model: try TriageModel.load(path: model))
        // 64 PNG images with their own patterns, scored first; the higher half made abnormal studies.
        var scores: [Double] = []
        for k in 0..<64 {
            let image = testPattern(width: 40 + k, height: 30 + (k * 7) % 23)
            let pixels = image.pixels.enumerated().map { i, v in UInt8(truncatingIfNeeded: Int(v) * (k % 3 + 1) + (i % (k + 2)) * 3) }
            try PNGReader.write(Radiograph(width: image.width, height: image.height, channels: 1, pixels: pixels), to: dir.path("\(k).png"))
            scores.append(try #require(try classifier.classify(paths: [dir.path("\(k).png")]).probability))
        }
        let median = scores.sorted()[32]
        var identifiers: [String] = [], labels: [Int] = []
        for k in 0..<64 {
            let label = scores[k] >= median ? 1 : 0
            let study = String(format: "XR_HUMERUS/patient%05d/study1_%@", k, label == 1 ? "positive" : "negative")
            try FileManager.default.createDirectory(atPath: dir.path("site/train/" + study), withIntermediateDirectories: true)
            try FileManager.default.moveItem(atPath: dir.path("\(k).png"), toPath: dir.path("site/train/\(study)/image1.png"))
            identifiers.append(study)
            labels.append(label)
        }
        let out = dir.path("site.safetensors")
        let r = try Executable.run(["model", "calibrate", "--data", dir.path("site"), "--target-sensitivity", "0.95", "--out", out, "--model", model])
        #expect(r.status == 0, "\(r.stderr)")
        let calibrated = try TriageModel.load(path: out)
        let point = try #require(calibrated.head.description.operatingPoint)
        #expect(point.abnormalStudies == 32 && point.normalStudies == 32 && point.data == "folder site")
        #expect(point.dataFingerprint == StudyDataFingerprint.of(identifiers: identifiers, labels: labels))
        // 31 of the 32 abnormal studies reach 0.95: the threshold is the 31st highest abnormal score.
        #expect(point.threshold == scores.sorted()[33] && point.sensitivity == 31.0 / 32)
        // The daemon's classifier gives the verdicts at the site threshold.
        let site = try StudyClassifier(model: calibrated)
        let lowest = try #require(scores.indices.min { scores[$0] < scores[$1] })
        let result = try site.classify(paths: [dir.path("site/train/\(identifiers[lowest])/image1.png")])
        #expect(result.verdict == .normal && result.calibrated && result.uncalibratedProbability == scores[lowest])
    }
}
