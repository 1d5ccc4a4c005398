import BoneTriage
import Foundation
import Testing

/// The daemon's heatmap step: after the verdict, while no study waits, for the studies `[heatmaps]
/// compute` wants; none with "none"; work left at a stop is found again at start.
@Suite("Daemon heatmaps", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable, "skipped: needs the built bonetriage binary and DCMTK's storescu and img2dcm"))
struct DaemonHeatmapTests {
    /// The harness's synthetic model with a large bias: every study is abnormal (flagged).
    static func writeAbnormalModel(to path: String, inputSize: Int = 75) throws {
        try DaemonHarness.writeModel(to: path, inputSize: inputSize, modelID: "synthetic-abnormal-test", weightScale: 0.002, bias: 6,
                                     trainedAt: "2026-11-30T00:00:00Z")
    }

    @Test("a flagged study gets a heatmap per image after its verdict; show --images writes the overlay and the plain picture of each")
    func flaggedStudy() throws {
        let daemon = try DaemonHarness(extraConfig: "\n[heatmaps]\ncompute = \"flagged\"\n")
        try Self.writeAbnormalModel(to: daemon.dir.path("model.safetensors"))
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.13.1"
        let paths = try RadiographFactory.makeStudy(in: files, prefix: "h", study: study, count: 2)
        #expect(try daemon.storescu(paths).status == 0)
        let triaged = try #require(try daemon.waitForTriage([study])[study])
        #expect(triaged["verdict"] as? String == "abnormal", "\(triaged)")
        try daemon.waitFor("the heatmaps; log:\n\(daemon.log)", timeout: 60) { try daemon.show(study).study["heatmaps"] as? Int == 2 }
        let shown = try daemon.show(study)
        #expect(shown.images.allSatisfy { $0["heatmap"] as? String == "made" }, "\(shown.images)")
        // Made after the verdict was recorded.
        let log = daemon.log
        let verdict = try #require(log.range(of: "study triaged")), heatmap = try #require(log.range(of: "heatmap made"))
        #expect(verdict.lowerBound < heatmap.lowerBound)

        // The pictures, through the real binary.
        let out = try TemporaryDirectory()
        let r = try Executable.run(["show", String(Study.shortID(for: study).prefix(8)), "--db", daemon.database, "--images", out.path("pictures")])
        #expect(r.status == 0, "\(r.stderr)")
        let written = try FileManager.default.contentsOfDirectory(atPath: out.path("pictures")).sorted()
        #expect(written.count == 4 && written.filter { $0.hasSuffix("-overlay.png") }.count == 2 && written.filter { $0.hasSuffix("-plain.png") }.count == 2,
                "\(written)\n\(r.stdout)")
        for name in written {
            let picture = try PNGReader.read(path: out.path("pictures/" + name))
            #expect(max(picture.width, picture.height) <= 1024 && picture.channels == 3)
        }
        #expect(r.stdout.contains("Pictures") && r.stdout.contains("wrote ") && r.stdout.contains("-overlay.png"), "\(r.stdout)")
        #expect(r.stdout.contains("heatmaps for 2 images"), "\(r.stdout)")
    }

    @Test("compute = \"none\" makes no heatmap; with \"flagged\" after a restart, the work left is found again from the worklist")
    func noneThenRestart() throws {
        let daemon = try DaemonHarness(extraConfig: "\n[heatmaps]\ncompute = \"none\"\n")
        try Self.writeAbnormalModel(to: daemon.dir.path("model.safetensors"))
        try daemon.start()
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.13.2"
        #expect(try daemon.storescu(try RadiographFactory.makeStudy(in: files, prefix: "n", study: study, count: 1)).status == 0)
        #expect(try daemon.waitForTriage([study])[study]?["verdict"] as? String == "abnormal")
        // Idle for a while (the idle hook runs at least once a second), then a clean stop.
        Thread.sleep(forTimeInterval: 3)
        try daemon.stop()
        #expect(try daemon.show(study).study["heatmaps"] as? Int == 0)
        #expect(try daemon.show(study).images.allSatisfy { $0["heatmap"] as? String == "none" })
        #expect(!daemon.allLogs.contains("heatmap made"))

        daemon.extraConfig = "\n[heatmaps]\ncompute = \"flagged\"\n"
        try daemon.start()
        defer { _ = try? daemon.stop() }
        try daemon.waitFor("the heatmap after the restart; log:\n\(daemon.log)", timeout: 60) { try daemon.show(study).study["heatmaps"] as? Int == 1 }
    }

    @Test("with after_triage = \"delete\", a flagged study's heatmaps are made by the worker before its files are deleted")
    func deleteAfterTriage() throws {
        let daemon = try DaemonHarness(extraConfig: "\n[heatmaps]\ncompute = \"flagged\"\n")
        daemon.afterTriage = "delete"
        try Self.writeAbnormalModel(to: daemon.dir.path("model.safetensors"))
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.13.4"
        #expect(try daemon.storescu(try RadiographFactory.makeStudy(in: files, prefix: "d", study: study, count: 2)).status == 0)
        _ = try daemon.waitForTriage([study])
        try daemon.waitFor("the heatmaps; log:\n\(daemon.log)", timeout: 60) { try daemon.show(study).study["heatmaps"] as? Int == 2 }
        let shown = try daemon.show(study)
        #expect(shown.images.allSatisfy { $0["heatmap"] as? String == "made" }, "\(shown.images)")
        try daemon.waitFor("the files deleted", timeout: 30) {
            try daemon.show(study).images.allSatisfy { !FileManager.default.fileExists(atPath: $0["file_path"] as? String ?? "") }
        }
        // Within the triage (its line comes once the files are handled), not later from the deleted files.
        let log = daemon.log
        let heatmap = try #require(log.range(of: "heatmap made")), verdict = try #require(log.range(of: "study triaged"))
        #expect(heatmap.lowerBound < verdict.lowerBound)
        #expect(!log.contains("no heatmap for an image"))
    }

    @Test("an image whose file is gone gets the reason recorded, not a heatmap, and the daemon carries on")
    func fileGone() throws {
        let daemon = try DaemonHarness(extraConfig: "\n[heatmaps]\ncompute = \"none\"\n")
        try Self.writeAbnormalModel(to: daemon.dir.path("model.safetensors"))
        try daemon.start()
        let files = try TemporaryDirectory()
        let study = "1.2.826.0.1.3680043.10.13.3"
        #expect(try daemon.storescu(try RadiographFactory.makeStudy(in: files, prefix: "g", study: study, count: 1)).status == 0)
        _ = try daemon.waitForTriage([study])
        try daemon.stop()
        // The spool file disappears (as after_triage = "delete" or a hand would remove it).
        let images = try daemon.show(study).images
        let path = try #require(images.first?["file_path"] as? String)
        try FileManager.default.removeItem(atPath: path)
        daemon.extraConfig = "\n[heatmaps]\ncompute = \"all\"\n"
        try daemon.start()
        defer { _ = try? daemon.stop() }
        try daemon.waitFor("the reason; log:\n\(daemon.log)", timeout: 60) { try daemon.show(study).images.first?["heatmap"] as? String == "not_made" }
        let problem = try daemon.show(study).images.first?["heatmap_problem"] as? String
        #expect(problem?.contains("gone") == true, "\(String(describing: problem))")
        #expect(daemon.log.contains("no heatmap for an image"))
        // show --images says so and writes nothing for it.
        let out = try TemporaryDirectory()
        let r = try Executable.run(["show", study, "--db", daemon.database, "--images", out.path("p")])
        #expect(r.status == 0 && r.stdout.contains("is gone"), "\(r.stdout)\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: out.path("p")).isEmpty)
    }
}
