import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Who records a review: the login of the user running the command, from the real uid (never from
/// $USER, $LOGNAME or an option, which anyone can set), and a name they state beside it (the
/// radiologist they review for, say), which never replaces it.
public struct ReviewerIdentity: Sendable, Equatable {
    public var login: String
    public var statedName: String?

    /// The longest stated name kept.
    public static let maximumStatedNameLength = 100

    public init(login: String, statedName: String? = nil) {
        self.login = login
        self.statedName = statedName
    }

    /// The account of the real uid (`getpwuid(getuid())`), or "uid<N>" when it has no entry in the
    /// password database; `statedName` is checked and kept beside it (dropped when it is the login).
    public static func current(statedName: String?) throws -> ReviewerIdentity {
        let uid = getuid()
        var login = "uid\(uid)"
        if let entry = getpwuid(uid), let name = String(validatingCString: entry.pointee.pw_name), !name.isEmpty { login = name }
        return ReviewerIdentity(login: login, statedName: try checkedStatedName(statedName, login: login))
    }

    /// A stated name: trimmed, not empty, no control characters, at most `maximumStatedNameLength` characters.
    public static func checkedStatedName(_ raw: String?, login: String) throws -> String? {
        guard let raw else { return nil }
        let name = raw.trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty else { throw ReviewerNameError(reason: "it is empty") }
        guard !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw ReviewerNameError(reason: "it holds a control character (a newline, a tab, an escape)")
        }
        guard name.count <= maximumStatedNameLength else {
            throw ReviewerNameError(reason: "it is \(name.count) characters long, more than \(maximumStatedNameLength)")
        }
        return name == login ? nil : name
    }
}

/// A `--reviewer` name that cannot be recorded.
public struct ReviewerNameError: Error, CustomStringConvertible, Equatable {
    public var reason: String
    public var description: String {
        "--reviewer is not recorded: \(reason); give the name of the radiologist you review for, e.g. --reviewer \"Dr Smith\" (your login is recorded in any case)"
    }
}
