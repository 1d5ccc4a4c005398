import BoneTriage
import Foundation
import Testing

/// `list` and `show` say when pictures (heatmaps) exist; `show --images DIR` writes them.
@Suite("bonetriage show --images, and the pictures marks of list and show",
       .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct PictureCommandTests {
    @Test("list marks a study with pictures (# in the table, heatmaps in JSON and CSV); show says so; --images writes the overlay and plain pictures, the plain one alone without a heatmap, nothing for a removed file")
    func pictures() throws {
        let dir = try TemporaryDirectory()
        let db = dir.path("worklist.sqlite")
        let store = try SQLiteWorklist(path: db, create: true)
        let study = "1.2.826.0.1.3680043.10.88", other = "1.2.826.0.1.3680043.10.89"
        var sops: [String] = []
        for (uid, count) in [(study, 3), (other, 1)] {
            for i in 1...count {
                let file = dir.path("\(uid.suffix(2))-image\(i).png")
                try FileManager.default.copyItem(atPath: Fixtures.path("png/gray8.png"), toPath: file)
                var a = InstanceArrival(studyInstanceUID: uid, sopInstanceUID: "\(uid).\(i)", filePath: file, eligible: true, source: .dropFolder)
                a.bodyPart = "HUMERUS"
                a.fileName = "image\(i).png"
                _ = try store.recordArrival(a)
                if uid == study { sops.append(a.sopInstanceUID) }
            }
        }
        try store.recordTriage(TriageResult(studyInstanceUID: study, imageProbabilities: Dictionary(uniqueKeysWithValues: zip(sops, [0.9, 0.8, 0.7])),
                                            threshold: 0.5, modelID: "humerus-test", modelHash: "m1"))
        try store.recordTriage(TriageResult(studyInstanceUID: other, imageProbabilities: ["\(other).1": 0.9], threshold: 0.5, modelID: "humerus-test", modelHash: "m1"))
        var values = [Float](repeating: 0, count: 100)
        values[44] = 0.2
        try store.recordHeatmap(sopInstanceUID: sops[0], .made(Heatmap(rows: 10, columns: 10, values: values, method: "test", modelFingerprint: "m1")), at: Date())
        let removed = try #require(try store.images(ofStudy: study).last?.filePath)
        try store.markFilesRemoved([removed], at: Date())

        let table = try Executable.run(["list", "--db", db])
        #expect(table.status == 0, "\(table.stderr)")
        let id = String(Study.shortID(for: study).prefix(8)), otherID = String(Study.shortID(for: other).prefix(8))
        let lines = table.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("!#" + id) }, "\(table.stdout)")
        #expect(lines.contains { $0.hasPrefix("! " + otherID) }, "\(table.stdout)")
        #expect(lines.allSatisfy { $0.count <= 80 })
        let json = try Executable.run(["list", "--db", db, "--format", "json"])
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]])
        #expect(rows.first { $0["study_instance_uid"] as? String == study }?["heatmaps"] as? Int == 1)
        #expect(rows.first { $0["study_instance_uid"] as? String == other }?["heatmaps"] as? Int == 0)
        let csv = try Executable.run(["list", "--db", db, "--format", "csv"])
        let csvLines = csv.stdout.split(separator: "\r\n").map(String.init)
        // "heatmaps", then "delivery" (empty: nothing queued for a PACS) end the CSV's columns.
        #expect(csvLines.first?.hasSuffix(",heatmaps,delivery") == true)
        #expect(csvLines.contains { $0.hasPrefix(Study.shortID(for: study)) && $0.hasSuffix(",1,") }, "\(csv.stdout)")

        let out = dir.path("pictures")
        let show = try Executable.run(["show", id, "--db", db, "--images", out])
        #expect(show.status == 0, "\(show.stderr)")
        #expect(show.stdout.contains("heatmaps for 1 image;"), "\(show.stdout)")
        let written = try FileManager.default.contentsOfDirectory(atPath: out).sorted()
        #expect(written == ["image1-overlay.png", "image1-plain.png", "image2-plain.png"], "\(written)")
        #expect(show.stdout.contains("image1.png: wrote \(out)/image1-overlay.png and \(out)/image1-plain.png"), "\(show.stdout)")
        #expect(show.stdout.contains("image2.png: wrote \(out)/image2-plain.png; no heatmap yet"), "\(show.stdout)")
        #expect(show.stdout.contains("image3.png: its file was removed by storage retention"), "\(show.stdout)")
        let overlay = try PNGReader.read(path: out + "/image1-overlay.png"), plain = try PNGReader.read(path: out + "/image1-plain.png")
        #expect(plain.width == 24 && plain.height == 16 && overlay.width >= TriagePictures.minimumWidth && overlay.height > 16)
        let noPictures = try Executable.run(["show", otherID, "--db", db])
        #expect(noPictures.stdout.contains("no heatmap yet"), "\(noPictures.stdout)")
        // A folder that cannot be made is a clear error.
        try "x".write(toFile: dir.path("a-file"), atomically: true, encoding: .utf8)
        let bad = try Executable.run(["show", id, "--db", db, "--images", dir.path("a-file")])
        #expect(bad.status != 0 && bad.stderr.contains("a-file"), "\(bad.stderr)")
    }
}
