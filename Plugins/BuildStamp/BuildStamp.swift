import Foundation
import PackagePlugin

/// Stamps the executable with the git commit it is built from (tools/build_stamp.sh; `nil` when the
/// sources are not a git checkout, e.g. a release tarball), for `bonetriage --version`.
@main
struct BuildStamp: BuildToolPlugin {
    func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
        let folder = context.pluginWorkDirectoryURL.appendingPathComponent("stamp")
        let script = context.package.directoryURL.appendingPathComponent("tools/build_stamp.sh")
        return [.prebuildCommand(displayName: "Stamping the build with its git commit",
                                 executable: URL(fileURLWithPath: "/bin/sh"),
                                 arguments: [script.path, context.package.directoryURL.path, folder.appendingPathComponent("BuildStamp.swift").path],
                                 outputFilesDirectory: folder)]
    }
}
