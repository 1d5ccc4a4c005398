import ArgumentParser
import BoneTriage
import Foundation

@main
struct BoneTriageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bonetriage",
        abstract: "Bone X-ray triage beside a PACS: an Inception V3 classifier flags abnormal studies for review.",
        discussion: "Outputs are triage aids, not diagnoses. Exit codes: 0 success, 1 study or database not found or ambiguous (or another failure), 2 usage error (an unknown command too), 3 no daemon running (status).",
        version: "bonetriage " + BoneTriageVersion.description(commit: BuildStamp.commit),
        subcommands: [ListCommand.self, InspectCommand.self, ClassifyCommand.self, TrainCommand.self, EvaluateCommand.self, ShowCommand.self, ConfirmCommand.self, OverrideCommand.self, ExportCommand.self,
                      ModelCommand.self, BenchCommand.self, ServeCommand.self, StatusCommand.self, OutboxCommand.self, WorklistAdminCommand.self, DecodeWorkerCommand.self])

    /// Exit codes as documented: 2 for usage errors (ArgumentParser's own is 64), a command's own
    /// `ExitCode` as it is (status: 3), 1 for the rest.
    static func main() {
        if let typed = CommandLine.arguments.dropFirst().first, !typed.hasPrefix("-") {
            let known = configuration.subcommands.map { $0._commandName } + ["help"]
            if !known.contains(typed) {
                let shown = configuration.subcommands.filter { $0.configuration.shouldDisplay }.map { $0._commandName }
                FileHandle.standardError.write(Data((CommandSuggestion.message(unknown: typed, commands: shown) + "\n").utf8))
                Foundation.exit(2)
            }
        }
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            let message = fullMessage(for: error)
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            Foundation.exit(code == .validationFailure ? 2 : error is ExitCode ? code.rawValue : 1)
        }
    }
}
