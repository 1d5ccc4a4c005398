import ArgumentParser
import BoneTriage
import Foundation

@main
struct BoneTriageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bonetriage",
        abstract: "Bone X-ray triage beside a PACS: an Inception V3 classifier flags abnormal studies for review.",
        discussion: "Outputs are triage aids, not diagnoses. Exit codes: 0 success, 1 study or database not found or ambiguous (or another failure), 2 usage error.",
        subcommands: [ListCommand.self, InspectCommand.self, ClassifyCommand.self, TrainCommand.self, EvaluateCommand.self, ShowCommand.self, ConfirmCommand.self, OverrideCommand.self, ExportCommand.self,
                      ModelCommand.self, BenchCommand.self, ServeCommand.self, DecodeWorkerCommand.self])

    /// Exit codes as documented: 2 for usage errors (ArgumentParser's own is 64), 1 for the rest.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                print(fullMessage(for: error))
                Foundation.exit(0)
            }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            Foundation.exit(code == .validationFailure ? 2 : 1)
        }
    }
}
