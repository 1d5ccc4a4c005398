import Foundation
import TOMLKit

/// A configuration that cannot be used, with every problem found (key, value, why).
public struct ConfigurationError: Error, CustomStringConvertible, Equatable {
    public let path: String
    public let problems: [String]

    public var description: String {
        "configuration \(path) cannot be used:\n" + problems.map { "  - \($0)" }.joined(separator: "\n")
    }
}

/// BoneTriage's settings, read from one TOML file (`etc/bonetriage.toml` is the commented example).
/// Every key has a documented default, so an empty file is a valid configuration.
public struct BoneTriageConfiguration: Sendable, Equatable {
    public static let defaultPath = "/etc/bonetriage/bonetriage.toml"
    public static let defaultDatabasePath = "/var/lib/bonetriage/worklist.sqlite"

    /// `[worklist] database`: the SQLite worklist the daemon writes and the CLI reads.
    public var databasePath: String = defaultDatabasePath

    public init() {}

    public static func load(path: String) throws -> BoneTriageConfiguration {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            let reason = FileManager.default.fileExists(atPath: path) ? "it is not readable UTF-8 text" : "the file does not exist"
            throw ConfigurationError(path: path, problems: ["\(reason); give --config PATH or install the example from etc/bonetriage.toml"])
        }
        return try parse(text, path: path)
    }

    public static func parse(_ text: String, path: String) throws -> BoneTriageConfiguration {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(path: path, problems: ["TOML syntax error at line \(error.source.begin.line), column \(error.source.begin.column): \(error.description)"])
        }
        var config = BoneTriageConfiguration()
        var problems: [String] = []
        if let worklist = table["worklist"] {
            if let section = worklist.table {
                for key in section.keys where key != "database" {
                    problems.append("[worklist] \(key): unknown key (known: database)")
                }
                if let value = section["database"] {
                    if let path = value.string, !path.isEmpty, path.hasPrefix("/") {
                        config.databasePath = path
                    } else {
                        problems.append("[worklist] database = \(value): must be an absolute path in quotes, e.g. \"\(defaultDatabasePath)\"")
                    }
                }
            } else {
                problems.append("worklist = \(worklist): must be a table ([worklist])")
            }
        }
        guard problems.isEmpty else { throw ConfigurationError(path: path, problems: problems) }
        return config
    }
}
