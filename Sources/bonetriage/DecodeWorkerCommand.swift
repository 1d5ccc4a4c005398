import ArgumentParser
import BoneTriage
import Foundation

/// The daemon's isolated decoder: started by `serve` itself, one per triage worker; not for people.
struct DecodeWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "decode-worker",
        abstract: "Internal: decode files for a triage worker of `serve`, over stdin and stdout.",
        shouldDisplay: false)

    func run() throws {
        Foundation.exit(DecoderService.run())
    }
}
