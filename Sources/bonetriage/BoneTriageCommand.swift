import ArgumentParser
import BoneTriage

@main
struct BoneTriageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bonetriage",
        abstract: "Bone X-ray triage: Inception V3 abnormality classifier beside a PACS.",
        subcommands: [ModelCommand.self, BenchCommand.self]
    )
}
