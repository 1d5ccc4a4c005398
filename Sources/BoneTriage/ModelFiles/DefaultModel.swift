import Foundation

/// Where commands find the default model when none is given.
public enum DefaultModel {
    /// `make install` puts the model here.
    public static let installedPath = "/var/lib/bonetriage/models/humerus.safetensors"
    /// `make model` builds it here, in the checkout.
    public static let checkoutRelativePath = ".cache/models/humerus.safetensors"

    /// BONETRIAGE_MODEL, else the installed model, else the one `make model` built next to this binary's checkout.
    public static func path() -> String {
        if let env = ProcessInfo.processInfo.environment["BONETRIAGE_MODEL"], !env.isEmpty { return env }
        if FileManager.default.fileExists(atPath: installedPath) { return installedPath }
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        // <checkout>/.build/<configuration>/bonetriage
        let checkout = executable.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let candidate = checkout.appendingPathComponent(checkoutRelativePath).path
        return FileManager.default.fileExists(atPath: candidate) ? candidate : installedPath
    }
}
