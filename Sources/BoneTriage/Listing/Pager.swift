import Foundation

/// A pager for long output on a terminal, chosen like git's: `$BONETRIAGE_PAGER`, else `$PAGER`, else
/// `less -FRX` (quits at once when everything fits, keeps colours, leaves the text on the screen).
public final class Pager {
    public static let fallback = "less -FRX"

    /// The pager command to run, or nil for none (an empty value or `cat` means none, as in git).
    public static func command(environment: [String: String]) -> String? {
        let chosen = [environment["BONETRIAGE_PAGER"], environment["PAGER"]].compactMap { $0 }.first ?? fallback
        let trimmed = chosen.trimmingCharacters(in: .whitespaces)
        return trimmed.isEmpty || trimmed == "cat" ? nil : trimmed
    }

    /// Whether the command's program can be found (so that a pager that cannot start is not used).
    public static func canStart(_ command: String, environment: [String: String]) -> Bool {
        guard let program = command.split(separator: " ").first.map(String.init) else { return false }
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) }
        let path = environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(program)") }
    }

    private let process: Process
    private let pipe: Pipe
    /// Where to write: the pager's standard input.
    public var fd: Int32 { pipe.fileHandleForWriting.fileDescriptor }

    /// Starts the pager on this terminal, or returns nil when there is none or it cannot start.
    public static func start(environment: [String: String] = ProcessInfo.processInfo.environment) -> Pager? {
        guard let command = command(environment: environment), canStart(command, environment: environment) else { return nil }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        var env = environment
        if env["LESS"] == nil { env["LESS"] = "FRX" }
        if env["LV"] == nil { env["LV"] = "-c" }
        process.environment = env
        let pipe = Pipe()
        process.standardInput = pipe
        do { try process.run() } catch { return nil }
        return Pager(process: process, pipe: pipe)
    }

    private init(process: Process, pipe: Pipe) {
        self.process = process
        self.pipe = pipe
    }

    /// Closes the pager's input and waits until the reader quits it.
    public func finish() {
        try? pipe.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}
