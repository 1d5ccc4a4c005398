import BoneTriage
import Foundation
import Testing

@Suite("The pager for list --all on a terminal")
struct PagerTests {
    @Test("chosen like git's: BONETRIAGE_PAGER, then PAGER, then less -FRX; empty or cat means none")
    func choice() {
        #expect(Pager.command(environment: [:]) == "less -FRX")
        #expect(Pager.command(environment: ["PAGER": "more"]) == "more")
        #expect(Pager.command(environment: ["PAGER": "more", "BONETRIAGE_PAGER": "most -s"]) == "most -s")
        #expect(Pager.command(environment: ["BONETRIAGE_PAGER": ""]) == nil)
        #expect(Pager.command(environment: ["PAGER": " cat "]) == nil)
    }

    @Test("a pager whose program cannot be found is not started (the output goes to the terminal)")
    func cannotStart() {
        #expect(!Pager.canStart("no-such-pager-here -R", environment: ["PATH": "/usr/bin:/bin"]))
        #expect(Pager.canStart("sh -c cat", environment: ["PATH": "/usr/bin:/bin"]))
        #expect(!Pager.canStart("/nonexistent/less", environment: [:]))
        #expect(Pager.start(environment: ["BONETRIAGE_PAGER": "no-such-pager-here", "PATH": "/usr/bin:/bin"]) == nil)
    }
}
