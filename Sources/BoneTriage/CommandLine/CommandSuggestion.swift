/// "did you mean": the known command closest to a mistyped one.
public enum CommandSuggestion {
    /// Edits (insert, delete, replace, swap two neighbours) that turn `a` into `b`.
    public static func distance(_ a: String, _ b: String) -> Int {
        let x = Array(a.lowercased()), y = Array(b.lowercased())
        guard !x.isEmpty else { return y.count }
        guard !y.isEmpty else { return x.count }
        var d = [[Int]](repeating: [Int](repeating: 0, count: y.count + 1), count: x.count + 1)
        for i in 0...x.count { d[i][0] = i }
        for j in 0...y.count { d[0][j] = j }
        for i in 1...x.count {
            for j in 1...y.count {
                let cost = x[i - 1] == y[j - 1] ? 0 : 1
                d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
                if i > 1, j > 1, x[i - 1] == y[j - 2], x[i - 2] == y[j - 1] {
                    d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
                }
            }
        }
        return d[x.count][y.count]
    }

    /// The closest of `commands` to `typed`, if it is close enough to be what was meant: at most two
    /// edits, and fewer edits than half the command's length ("ls" is not a typo of "bench").
    public static func closest(to typed: String, among commands: [String]) -> String? {
        let ranked = commands.map { ($0, distance(typed, $0)) }.filter { $0.1 <= 2 && $0.1 * 2 < $0.0.count }
        return ranked.min { $0.1 < $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }?.0
    }

    /// The message for a first argument that is no command.
    public static func message(unknown typed: String, commands: [String], program: String = "bonetriage") -> String {
        let shown = String(typed.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "?" : Character($0) }.prefix(40))
        if let match = closest(to: typed, among: commands) {
            return "unknown command '\(shown)'; did you mean '\(match)'? (\(program) --help lists the commands)"
        }
        return "unknown command '\(shown)'; the commands are: \(commands.joined(separator: ", ")) (\(program) --help)"
    }
}
