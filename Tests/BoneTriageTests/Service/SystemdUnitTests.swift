import BoneTriage
import Foundation
import Testing

/// `systemd/bonetriage.service` as systemd reads it. `tools/check_systemd_unit.sh` runs
/// `systemd-analyze verify` on a copy whose ExecStart points at a stub (the binary is not installed
/// here) and fails on any warning, since verify itself exits 0 when it ignores a bad line.
@Suite("systemd unit")
struct SystemdUnitTests {
    static let unit = Fixtures.repositoryRoot.appendingPathComponent("systemd/bonetriage.service").path
    static let script = Fixtures.repositoryRoot.appendingPathComponent("tools/check_systemd_unit.sh").path
    static var systemdAnalyze: Bool { DicomTools.find("systemd-analyze") != nil }

    /// The check script, stdout and stderr together.
    static func check(_ arguments: [String] = []) throws -> DaemonHarness.Run {
        try DaemonHarness.run("/bin/sh", [script] + arguments)
    }

    @Test("systemd-analyze verify accepts the unit without a single warning",
          .enabled(if: systemdAnalyze, "skipped: systemd-analyze is not installed (Debian package systemd)"))
    func verify() throws {
        let run = try Self.check()
        #expect(run.status == 0, "\(run.output)")
    }

    @Test("the check fails on an unknown key and on a value systemd ignores, though verify exits 0 for both",
          .enabled(if: systemdAnalyze, "skipped: systemd-analyze is not installed (Debian package systemd)"))
    func catchesWarnings() throws {
        let dir = try TemporaryDirectory()
        let text = try String(contentsOfFile: Self.unit, encoding: .utf8)
        #expect(text.contains("\nWatchdogSec=30\n"))
        let broken = text.replacingOccurrences(of: "\nWatchdogSec=30\n", with: "\nWatchdogSec=thirty\nWatchdogSecs=30\n")
        let path = dir.path("bonetriage.service")
        try broken.write(toFile: path, atomically: true, encoding: .utf8)
        let run = try Self.check([path])
        #expect(run.status == 1, "\(run.output)")
        #expect(run.output.contains("Unknown key 'WatchdogSecs'"), "\(run.output)")
        #expect(run.output.contains("thirty"), "\(run.output)")
    }

    @Test("the unit runs the installed binary with the default configuration, as a notify service in the state directory")
    func agreesWithTheDefaults() throws {
        let lines = Set(try String(contentsOfFile: Self.unit, encoding: .utf8).split(separator: "\n").map(String.init))
        #expect(lines.contains("ExecStart=/usr/local/bin/bonetriage serve --config \(BoneTriageConfiguration.defaultPath)"))
        #expect(lines.contains("Type=notify") && lines.contains("NotifyAccess=main"))
        #expect(lines.contains("ExecReload=/bin/kill -HUP $MAINPID"))
        // StateDirectory= is relative to /var/lib; the daemon's defaults and the installed model live there.
        #expect(lines.contains("StateDirectory=bonetriage") && BoneTriageConfiguration.stateDirectory == "/var/lib/bonetriage")
        #expect(lines.contains("ReadWritePaths=\(BoneTriageConfiguration.stateDirectory)"))
        #expect(BoneTriageConfiguration.defaultDatabasePath.hasPrefix(BoneTriageConfiguration.stateDirectory + "/"))
        #expect(DefaultModel.installedPath.hasPrefix(BoneTriageConfiguration.stateDirectory + "/"))
        #expect(lines.contains("User=bonetriage") && lines.contains("Group=bonetriage"))
    }
}
