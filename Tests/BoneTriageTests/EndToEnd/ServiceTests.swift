import BoneTriage
import Foundation
import Logging
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What systemd and journald see of the daemon: the notify protocol, log lines, and start failures.
@Suite("daemon under systemd", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs the built bonetriage and DCMTK's command-line tools (`make test` installs them)"))
struct ServiceTests {
    @Test("READY=1 once listening, WATCHDOG=1 at half the interval, STATUS= with counts, STOPPING=1 on SIGTERM")
    func notifyProtocol() throws {
        let daemon = try DaemonHarness()
        let socketPath = daemon.dir.path("notify.sock")
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in Array(socketPath.utf8).enumerated() { raw[i] = b } }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0)
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        func drain() -> [String] {
            var messages: [String] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard n > 0 else { return messages }
                messages.append(String(decoding: buffer[0..<n], as: UTF8.self))
            }
        }
        try daemon.start(environment: ["NOTIFY_SOCKET": socketPath, "WATCHDOG_USEC": "400000", "JOURNAL_STREAM": "8:1234"])
        var messages: [String] = []
        try daemon.waitFor("watchdog pings", timeout: 10) {
            messages += drain()
            return messages.filter { $0.contains("WATCHDOG=1") }.count >= 3
        }
        let ready = try #require(messages.first)
        #expect(ready.hasPrefix("READY=1\nSTATUS=associations 0 · received 0"), "\(ready)")
        #expect(messages.contains { $0.hasPrefix("STATUS=") && $0.contains("queued 0") })
        let files = try TemporaryDirectory()
        try RadiographFactory.make(at: files.path("n.dcm"), study: "1.2.826.0.1.3680043.10.12.1")
        #expect(try daemon.storescu([files.path("n.dcm")]).status == 0)
        try daemon.waitFor("the count in STATUS", timeout: 10) {
            messages += drain()
            return messages.contains { $0.contains("received 1") }
        }
        #expect(try daemon.stop() == 0)
        messages += drain()
        #expect(messages.contains("STOPPING=1"))
        // journald: each line starts with its syslog priority and carries no timestamp of its own.
        let lines = daemon.log.split(separator: "\n")
        #expect(!lines.isEmpty && lines.allSatisfy { $0.hasPrefix("<6>") || $0.hasPrefix("<4>") || $0.hasPrefix("<3>") }, "\(daemon.log)")
        #expect(lines.contains { $0.hasPrefix("<6>listening") })
    }

    @Test("a port already in use, or a bad configuration, stops the start with a message that says what to fix")
    func startFailures() throws {
        let first = try DaemonHarness()
        try first.start()
        defer { _ = try? first.stop() }
        let second = try DaemonHarness()
        try second.writeConfig(port: first.port)
        let busy = try Executable.run(["serve", "--config", second.configPath])
        #expect(busy.status == 1)
        #expect(busy.stderr.contains("cannot listen on 127.0.0.1:\(first.port)") && busy.stderr.contains("Address already in use"), "\(busy.stderr)")

        try "[dicom]\nport = \"eleven\"\n[storage]\nafter_triage = \"burn\"\n".write(toFile: second.configPath, atomically: true, encoding: .utf8)
        let bad = try Executable.run(["serve", "--config", second.configPath])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("[dicom] port") && bad.stderr.contains("[storage] after_triage"), "\(bad.stderr)")
        // A spool that cannot be a folder (a file is in the way): the start stops and names the folder.
        try second.writeConfig()
        try Data().write(to: URL(fileURLWithPath: second.dir.path("blocker")))
        var text = try String(contentsOfFile: second.configPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "spool = \"\(second.spool)\"", with: "spool = \"\(second.dir.path("blocker"))/spool\"")
        try text.write(toFile: second.configPath, atomically: true, encoding: .utf8)
        let blocked = try Executable.run(["serve", "--config", second.configPath])
        #expect(blocked.status == 1 && blocked.stderr.contains("blocker/spool") && blocked.stderr.contains("write access"), "\(blocked.stderr)")

        // With a model at hand (BONETRIAGE_MODEL: the shipped file names none), as `make install` provides one.
        let check = try DaemonHarness.run("/usr/bin/env", ["BONETRIAGE_MODEL=\(second.dir.path("model.safetensors"))", try #require(Executable.url).path,
                                                           "serve", "--config", ConfigurationTests.shipped, "--check-config"])
        #expect(check.status == 0 && check.output.contains("is usable"), "\(check.output)")
    }
}

@Suite("journald log lines")
struct JournalLogHandlerTests {
    @Test("priority prefixes under journald; control characters cannot forge a line")
    func format() {
        let journal = JournalLogHandler(label: "bonetriage", environment: ["JOURNAL_STREAM": "1:2"])
        // journald writes `bonetriage[pid]:` itself: the line does not repeat the name.
        #expect(journal.line(level: .warning, message: "refused 'EVIL\nINFO forged' peer", metadata: ["study": "abc", "why": "two words"])
                == "<4>refused 'EVIL INFO forged' peer study=abc why=\"two words\"\n")
        #expect(journal.line(level: .error, message: "x", metadata: nil).hasPrefix("<3>"))
        let terminal = JournalLogHandler(label: "bonetriage", environment: [:])
        let line = terminal.line(level: .info, message: "listening", metadata: nil)
        #expect(line.hasSuffix(" INFO bonetriage: listening\n") && line.first?.isNumber == true, "\(line)")
    }
}
