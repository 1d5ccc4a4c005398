import ArgumentParser
import BoneTriage
import Foundation

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the running daemon's counts (those of systemctl status), without systemd.",
        discussion: """
            Reads the file the daemon keeps while it runs ([service] status_file): received, assembling, queued, \
            triaging, done and failed studies, workers and model, with the file's age and whether the daemon's process \
            is alive. Exit codes: 0 running, 3 not running (as systemctl status), 1 the file cannot be read.
            """)

    @Option(help: "The configuration file that names the status file.")
    var config: String = BoneTriageConfiguration.defaultPath
    @Option(help: "The status file itself, instead of the configuration's [service] status_file.")
    var statusFile: String?

    func run() throws {
        let path: String
        if let statusFile {
            path = statusFile
        } else if config == BoneTriageConfiguration.defaultPath, !FileManager.default.fileExists(atPath: config) {
            path = BoneTriageConfiguration.defaultStatusFile
        } else {
            path = try BoneTriageConfiguration.load(path: config).statusFile
        }
        let report = try DaemonStatus.report(path: path)
        print(report.text)
        if report.exitCode != 0 { throw ExitCode(report.exitCode) }
    }
}
