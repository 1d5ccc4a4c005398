/// BoneTriage's version: one constant, printed by `bonetriage --version`, `serve --check-config` and
/// the daemon's "listening" line. Raise it when a release is cut.
public enum BoneTriageVersion {
    public static let number = "0.1.0"

    /// "0.1.0", or "0.1.0 (commit 1a2b3c4d5e6f)" when the build knew its git commit (the executable's
    /// build stamp, made by tools/build_stamp.sh; none in a build from a tarball).
    public static func description(commit: String?) -> String {
        commit.map { "\(number) (commit \($0))" } ?? number
    }
}
