import BoneTriage
import Foundation
import Testing

@Suite("Configuration file")
struct ConfigurationTests {
    static let shipped = Fixtures.repositoryRoot.appendingPathComponent("etc/bonetriage.toml").path

    @Test("the shipped example parses and states the defaults")
    func shippedExample() throws {
        let config = try BoneTriageConfiguration.load(path: Self.shipped)
        #expect(config == BoneTriageConfiguration())
        #expect(try BoneTriageConfiguration.parse("", path: "empty.toml") == BoneTriageConfiguration())
    }

    @Test("every problem is listed with its key, value and why")
    func problems() throws {
        do {
            _ = try BoneTriageConfiguration.parse("[worklist]\ndatabase = \"relative.sqlite\"\ncolour = true\n", path: "c.toml")
            Issue.record("a bad config was accepted")
        } catch let error as ConfigurationError {
            #expect(error.problems.count == 2)
            #expect(error.description.contains("[worklist] database = relative.sqlite") || error.description.contains("relative.sqlite"))
            #expect(error.description.contains("[worklist] colour: unknown key"))
        }
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.parse("[worklist\n", path: "c.toml") }
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.parse("worklist = 3\n", path: "c.toml") }
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.load(path: "/nonexistent/bt.toml") }
    }
}
