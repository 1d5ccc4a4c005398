import BoneTriage
import Foundation
import Testing

@Suite("Configuration: [[results]], [delivery] and [storage] results")
struct ResultsConfigurationTests {
    @Test("defaults: no destination (nothing queued), retries from 10 s doubling to 10 min, results under the state directory")
    func defaults() {
        let c = BoneTriageConfiguration()
        #expect(c.resultDestinations.isEmpty && c.resultsFolder == "/var/lib/bonetriage/results")
        #expect(c.delivery == DeliveryPolicy(firstRetry: 10, maximumRetry: 600, batchSize: 50))
    }

    @Test("[[results]] entries are read with their defaults: name AE@host:port, calling AE the daemon's own, both kinds, abnormal only, 30 s")
    func entries() throws {
        let c = try BoneTriageConfiguration.parse("""
            [dicom]
            ae_title = "TRIAGE1"
            [storage]
            results = "/srv/bt/results"
            [delivery]
            first_retry_seconds = 5
            maximum_retry_seconds = 120
            batch_size = 10
            [[results]]
            ae_title = "PACS"
            host = "10.0.0.5"
            port = 104
            [[results]]
            name = "reading room"
            ae_title = "RIS"
            host = "ris.example.org"
            port = 11112
            calling_ae_title = "BT_RESULTS"
            send = ["sr"]
            verdicts = "all"
            timeout_seconds = 12.5
            """, path: "r.toml")
        #expect(c.resultsFolder == "/srv/bt/results" && c.delivery == DeliveryPolicy(firstRetry: 5, maximumRetry: 120, batchSize: 10))
        #expect(c.resultDestinations == [
            ResultDestination(aeTitle: "PACS", host: "10.0.0.5", port: 104, callingAETitle: "TRIAGE1", kinds: [.structuredReport, .secondaryCapture],
                              verdicts: .abnormal, timeoutSeconds: 30),
            ResultDestination(name: "reading room", aeTitle: "RIS", host: "ris.example.org", port: 11112, callingAETitle: "BT_RESULTS",
                              kinds: [.structuredReport], verdicts: .all, timeoutSeconds: 12.5),
        ])
        #expect(c.resultDestinations[0].name == "PACS@10.0.0.5:104")
    }

    @Test("a bad entry is named with its key, value and what it must be; names must be unique; retries must make sense")
    func problems() throws {
        do {
            _ = try BoneTriageConfiguration.parse("""
                [storage]
                spool = "/srv/bt"
                results = "/srv/bt/results"
                [delivery]
                first_retry_seconds = 60
                maximum_retry_seconds = 30
                [[results]]
                ae_title = "A TITLE THAT IS FAR TOO LONG"
                host = "10.0.0.999"
                port = 0
                send = ["sr", "pdf"]
                verdicts = "flagged"
                timeout_seconds = 0
                colour = "red"
                [[results]]
                ae_title = "PACS"
                host = "pacs"
                port = 104
                calling_ae_title = ""
                [[results]]
                name = "same"
                ae_title = "A"
                host = "a"
                port = 1
                [[results]]
                name = "same"
                ae_title = "B"
                host = "b"
                port = 2
                [[results]]
                ae_title = "MISSING"
                """, path: "bad.toml")
            Issue.record("a bad config was accepted")
        } catch let error as ConfigurationError {
            let text = error.description
            for needle in ["[[results]] entry 1 ae_title", "[[results]] entry 1 host = \"10.0.0.999\"", "[[results]] entry 1 port = 0",
                           "[[results]] entry 1 send", "\"sr\" (the triage report) and \"sc\"", "[[results]] entry 1 verdicts = \"flagged\"",
                           "[[results]] entry 1 timeout_seconds = 0", "[[results]] entry 1 colour: unknown key",
                           "[[results]] entry 2 calling_ae_title", "[[results]] entry 4 name: \"same\" is already the name of entry 3",
                           "[[results]] entry 5 host: must be", "[[results]] entry 5 port: must be",
                           "[delivery] maximum_retry_seconds = 30.0: must be at least first_retry_seconds",
                           "storage.spool = \"/srv/bt\" and storage.results = \"/srv/bt/results\": must be separate folders"] {
                #expect(text.contains(needle), "missing \(needle) in:\n\(text)")
            }
        }
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.parse("results = 3\n", path: "r.toml") }
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.parse("[results]\nae_title = \"X\"\n", path: "r.toml") }
    }

    @Test("--check-config checks the results folder when results are configured")
    func checkConfig() throws {
        var c = BoneTriageConfiguration()
        c.resultsFolder = "/proc/bonetriage-results"
        let check = ConfigurationCheck(cores: 2, defaultModelPath: { "/nonexistent" })
        #expect(!check.findings(c).contains { $0.setting == "[storage] results" }, "not needed without destinations")
        c.resultDestinations = [ResultDestination(aeTitle: "PACS", host: "10.0.0.5", port: 104, callingAETitle: "BONETRIAGE")]
        #expect(check.findings(c).contains { $0.setting == "[storage] results" && $0.severity == .failure })
    }
}
