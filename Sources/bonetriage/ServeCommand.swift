import ArgumentParser
import BoneTriage
import Foundation
import Logging

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the triage daemon: receive studies over DICOM and from the drop folder, triage them, fill the worklist.",
        discussion: """
            Runs in the foreground (systemd's Type=notify). SIGTERM stops it cleanly; SIGHUP reloads the model and the \
            allowed callers. Logs go to stderr, one line per event, without patient data at info level.
            """)

    @Option(help: "The configuration file.")
    var config: String = BoneTriageConfiguration.defaultPath
    @Option(help: "Log level: debug, info, warning or error.")
    var logLevel: String = "info"
    @Flag(help: "Only check the configuration, and what it names on this machine (model file, bind address, writable folders, a PostgreSQL worklist: reachable, schema state, ownership), print what it resolves to, and exit: 1 on what will not work, 0 when usable (warnings on stderr).")
    var checkConfig = false

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level must be debug, info, warning or error") }
    }

    func run() throws {
        let settings = try BoneTriageConfiguration.load(path: config)
        if checkConfig {
            let check = ConfigurationCheck()
            let database = check.worklistFindings(settings)
            let findings = check.findings(settings) + database.findings
            for finding in findings {
                let kind = finding.severity == .failure ? "error" : "warning"
                FileHandle.standardError.write(Data("\(kind): \(finding)\n".utf8))
            }
            guard !findings.contains(where: { $0.severity == .failure }) else {
                FileHandle.standardError.write(Data("configuration \(config) will not work: fix the error(s) above\n".utf8))
                throw ExitCode(1)
            }
            print("version: \(BoneTriageVersion.description(commit: BuildStamp.commit))")
            print("configuration \(config) is usable")
            print("  DICOM: AE \(settings.aeTitle) on \(settings.bindAddress):\(settings.port), \(settings.allowedCallers.count) allowed caller(s)")
            print("  drop folder: \(settings.dropFolder ?? "off"); spool: \(settings.spoolFolder); after triage: \(settings.afterTriage.rawValue)")
            print("  worklist: \(settings.worklistLocation); model: \(settings.modelPath ?? DefaultModel.path())")
            if let summary = database.summary { print("  worklist database: \(summary)") }
            print("  triage: \(settings.workers) worker(s), decoding " + (settings.isolateDecoder
                ? "in child processes (one per worker, two for headers; time-out \(Int(settings.decodeTimeout)) s)" : "inside the daemon"))
            print("  status file: \(settings.statusFile)")
            print("  results: " + (settings.resultDestinations.isEmpty ? "none sent (no [[results]])"
                : settings.resultDestinations.map { "\($0.name) (\($0.kinds.map(\.rawValue).sorted().joined(separator: "+")), \($0.verdicts.rawValue))" }
                    .joined(separator: ", ") + "; made in \(settings.resultsFolder)"))
            return
        }
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { JournalLogHandler(label: $0, level: level) }
        // Results in the PACS: DCMTK's SR writer and C-STORE SCU; the Secondary Captures carry the heatmap
        // overlays, made by the daemon from its worklist once the heatmaps are settled.
        let results = ResultsComponents(writer: DicomResultWriter(), sender: StorageSCU(), heatmapOverlays: true)
        let daemon = TriageDaemon(configuration: settings, configurationPath: config, logger: Logger(label: "bonetriage"), results: results)
        try daemon.run()
    }
}
