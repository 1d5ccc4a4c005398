import Foundation

/// Runs the built `bonetriage` executable (a sibling of the test bundle in the build products folder).
enum Executable {
    static var url: URL? {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent("bonetriage")
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
            dir = dir.deletingLastPathComponent()
        }
        return nil
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// The built binary with these arguments, and these variables changed in its environment.
    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        guard let url else { throw CocoaError(.fileNoSuchFile) }
        return try run(url, arguments, environment: environment)
    }

    /// A shell command line (for what needs the shell: a umask, a redirection).
    static func shell(_ command: String) throws -> Result {
        try run(URL(fileURLWithPath: "/bin/sh"), ["-c", command])
    }

    private static func run(_ program: URL, _ arguments: [String], environment: [String: String] = [:]) throws -> Result {
        let process = Process()
        process.executableURL = program
        process.arguments = arguments
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                      stderr: String(decoding: stderr, as: UTF8.self))
    }
}
