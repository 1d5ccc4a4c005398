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
        // <checkout>/.build/[<triple>/]<configuration>/bonetriage: look a few folders up.
        var folder = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<5 {
            let candidate = folder.appendingPathComponent(checkoutRelativePath).path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            folder = folder.deletingLastPathComponent()
        }
        return installedPath
    }

    /// The model to use: the one given, else the default one, which must exist.
    public static func resolve(_ given: String?) throws -> String {
        if let given { return given }
        let path = path()
        guard FileManager.default.fileExists(atPath: path) else {
            throw ModelFileError.notAModel(path: path, reason: "no model was given and no default model is installed; pass --model FILE")
        }
        return path
    }
}
