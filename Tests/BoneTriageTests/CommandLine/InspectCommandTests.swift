import BoneTriage
import Foundation
import Testing

@Suite("bonetriage inspect", .enabled(if: Executable.url != nil, "skipped: the bonetriage executable is not built next to the tests (run `make test`)"))
struct InspectCommandTests {
    @Test("JSON per file, model-input PNGs named <file>.<frame>.png, non-zero exit for a bad file")
    func inspect() throws {
        let dir = try TemporaryDirectory()
        let out = dir.path("inputs")
        let good = Fixtures.path("png/gray8.png"), bad = Fixtures.path("png/truncated.png")
        let r = try Executable.run(["inspect", "--json", "--input-png", out, good, bad])
        #expect(r.status == 1)
        #expect(r.stderr.contains("truncated.png") && r.stderr.contains("not a readable PNG"))
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.count == 1)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(object["format"] as? String == "png" && object["eligible"] as? Bool == true && object["frames"] as? Int == 1)
        let preview = try PNGReader.read(path: "\(out)/gray8.png.1.png")
        #expect(preview.width == 150 && preview.height == 150 && preview.channels == 3)
        let text = try Executable.run(["inspect", good])
        #expect(text.status == 0 && text.stdout.contains("rendered"))
    }
}
