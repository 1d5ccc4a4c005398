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
    @Flag(help: "Only check the configuration, print what it resolves to, and exit (0 when usable).")
    var checkConfig = false

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level must be debug, info, warning or error") }
    }

    func run() throws {
        let settings = try BoneTriageConfiguration.load(path: config)
        if checkConfig {
            print("configuration \(config) is usable")
            print("  DICOM: AE \(settings.aeTitle) on \(settings.bindAddress):\(settings.port), \(settings.allowedCallers.count) allowed caller(s)")
            print("  drop folder: \(settings.dropFolder ?? "off"); spool: \(settings.spoolFolder); after triage: \(settings.afterTriage.rawValue)")
            print("  worklist: \(settings.databasePath); model: \(settings.modelPath ?? DefaultModel.path())")
            print("  triage: \(settings.workers) worker(s), decoding " + (settings.isolateDecoder
                ? "in child processes (one per worker, two for headers; time-out \(Int(settings.decodeTimeout)) s)" : "inside the daemon"))
            return
        }
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { JournalLogHandler(label: $0, level: level) }
        let daemon = TriageDaemon(configuration: settings, configurationPath: config, logger: Logger(label: "bonetriage"))
        try daemon.run()
    }
}
