import BoneTriage
import Foundation
import Testing

/// The command line's polish, through the built binary: --version, "did you mean", serve --check-config,
/// and the man page and shell completions that `make install` generates and installs.
@Suite("bonetriage: version, typos, check-config, man page and completions",
       .enabled(if: Executable.url != nil, "skipped: needs the built bonetriage (swift build)"))
struct OperatorCommandTests {
    @Test("--version prints the library's version constant, with the commit when built from a checkout")
    func version() throws {
        let run = try Executable.run(["--version"])
        #expect(run.status == 0, "\(run)")
        let line = run.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(line.hasPrefix("bonetriage \(BoneTriageVersion.number)"), "\(line)")
        let checkout = FileManager.default.fileExists(atPath: Fixtures.repositoryRoot.appendingPathComponent(".git").path)
        if checkout {
            #expect(line.range(of: #"^bonetriage \S+ \(commit [0-9a-f]{12}(-dirty)?\)$"#, options: .regularExpression) != nil, "\(line)")
        }
    }

    @Test("the build stamp: the commit in a git checkout, nil in a tarball's folder (also one unpacked inside another repository)")
    func buildStamp() throws {
        let dir = try TemporaryDirectory()
        let script = Fixtures.repositoryRoot.appendingPathComponent("tools/build_stamp.sh").path
        let plain = dir.path("tarball")
        try FileManager.default.createDirectory(atPath: plain, withIntermediateDirectories: true)
        let out = dir.path("stamp/BuildStamp.swift")
        #expect(try DaemonHarness.run("/bin/sh", [script, plain, out]).status == 0)
        #expect(try String(contentsOfFile: out, encoding: .utf8).contains("static let commit: String? = nil"))
        // Inside a checkout's tree but not its top: still nil (the sources are not that repository's).
        let nested = Fixtures.repositoryRoot.appendingPathComponent("Tests").path
        #expect(try DaemonHarness.run("/bin/sh", [script, nested, out]).status == 0)
        #expect(try String(contentsOfFile: out, encoding: .utf8).contains("= nil"))
        let root = Fixtures.repositoryRoot.path
        if FileManager.default.fileExists(atPath: root + "/.git") {
            #expect(try DaemonHarness.run("/bin/sh", [script, root, out]).status == 0)
            let text = try String(contentsOfFile: out, encoding: .utf8)
            #expect(text.range(of: #"static let commit: String\? = "[0-9a-f]{12}(-dirty)?""#, options: .regularExpression) != nil, "\(text)")
        }
    }

    @Test("a mistyped command: did you mean, exit 2; far from any command: the list")
    func didYouMean() throws {
        for (typed, meant) in [("lsit", "list"), ("confrim", "confirm"), ("overide", "override"), ("stauts", "status"), ("exprot", "export")] {
            let run = try Executable.run([typed])
            #expect(run.status == 2, "\(typed): \(run)")
            #expect(run.stderr.contains("unknown command '\(typed)'; did you mean '\(meant)'?"), "\(run.stderr)")
        }
        let far = try Executable.run(["radiograph"])
        #expect(far.status == 2 && far.stderr.contains("unknown command 'radiograph'; the commands are: list,"), "\(far)")
        #expect(!far.stderr.contains("decode-worker"), "a hidden command is offered: \(far.stderr)")
        // Real commands and options still work.
        #expect(try Executable.run(["help", "list"]).status == 0)
        #expect(try Executable.run(["list", "--help"]).status == 0)
        #expect(CommandSuggestion.distance("lsit", "list") == 1 && CommandSuggestion.distance("confrim", "confirm") == 1)
        #expect(CommandSuggestion.closest(to: "ls", among: ["list", "show"]) == nil)
    }

    @Test("serve --check-config: failures name their section and key, exit 1; warnings on stderr, exit 0; the version")
    func checkConfig() throws {
        let dir = try TemporaryDirectory()
        let model = dir.path("model.safetensors")
        try Data("x".utf8).write(to: URL(fileURLWithPath: model))
        func config(_ text: String) throws -> String {
            let path = dir.path("c-\(UUID().uuidString).toml")
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let folders = """
            [drop_folder]
            path = "\(dir.path("drop"))"
            [storage]
            spool = "\(dir.path("spool"))"
            archive = "\(dir.path("archive"))"
            quarantine = "\(dir.path("quarantine"))"
            [worklist]
            database = "\(dir.path("db/worklist.sqlite"))"
            """
        let good = try config("""
            [dicom]
            bind_address = "127.0.0.1"
            allowed_callers = [{ ae_title = "PACS" }]
            \(folders)
            [model]
            path = "\(model)"
            [triage]
            workers = 1
            engine_threads = 1
            """)
        let ok = try Executable.run(["serve", "--config", good, "--check-config"])
        #expect(ok.status == 0 && ok.stderr.isEmpty, "\(ok)")
        #expect(ok.stdout.contains("version: \(BoneTriageVersion.number)") && ok.stdout.contains("is usable"), "\(ok.stdout)")

        let bad = try config("""
            [dicom]
            bind_address = "192.0.2.77"
            \(folders)
            [model]
            path = "/nonexistent/model.safetensors"
            [triage]
            workers = 64
            """)
        let failed = try Executable.run(["serve", "--config", bad, "--check-config"])
        #expect(failed.status == 1, "\(failed)")
        #expect(failed.stderr.contains("error: [model] path: /nonexistent/model.safetensors does not exist"), "\(failed.stderr)")
        #expect(failed.stderr.contains("error: [dicom] bind_address: 192.0.2.77 is not an address of this machine"), "\(failed.stderr)")
        #expect(failed.stderr.contains("warning: [dicom] allowed_callers: none"), "\(failed.stderr)")
        #expect(failed.stderr.contains("warning: [triage] workers: 64 worker(s)"), "\(failed.stderr)")
        #expect(!failed.stdout.contains("is usable"), "\(failed.stdout)")

        let warned = try config("[dicom]\nbind_address = \"127.0.0.1\"\n\(folders)\n[model]\npath = \"\(model)\"\n")
        let warning = try Executable.run(["serve", "--config", warned, "--check-config"])
        #expect(warning.status == 0 && warning.stderr.contains("warning: [dicom] allowed_callers: none"), "\(warning)")
    }

    /// `make install-docs` (what `make install` runs) staged under a temporary DESTDIR, from the built binary.
    static func stageDocs() throws -> (dir: TemporaryDirectory, man: String, bash: String, zsh: String) {
        let dir = try TemporaryDirectory()
        let binary = try #require(Executable.url).path
        let run = try DaemonHarness.run("/usr/bin/make", ["-s", "-C", Fixtures.repositoryRoot.path, "install-docs",
                                                         "DESTDIR=\(dir.path("stage"))", "DOC_BIN=\(binary)", "DOC_DIR=\(dir.path("doc"))"])
        #expect(run.status == 0, "\(run.output)")
        return (dir, dir.path("stage/usr/share/man/man1/bonetriage.1.gz"), dir.path("stage/usr/share/bash-completion/completions/bonetriage"),
                dir.path("stage/usr/share/zsh/vendor-completions/_bonetriage"))
    }

    @Test("the man page: generated from the commands, installed gzipped, names every command, formats without a warning")
    func manPage() throws {
        let staged = try Self.stageDocs()
        #expect(FileManager.default.fileExists(atPath: staged.man))
        let plain = staged.dir.path("bonetriage.1")
        #expect(try DaemonHarness.run("/bin/sh", ["-c", "gzip -dc '\(staged.man)' > '\(plain)'"]).status == 0)
        let source = try String(contentsOfFile: plain, encoding: .utf8)
        let help = try Executable.run(["--experimental-dump-help"])
        let tool = try #require(try JSONSerialization.jsonObject(with: Data(help.stdout.utf8)) as? [String: Any])
        let root = try #require(tool["command"] as? [String: Any])
        let subcommands = try #require(root["subcommands"] as? [[String: Any]])
        let visible = subcommands.filter { ($0["shouldDisplay"] as? Bool) ?? true }.compactMap { $0["commandName"] as? String }.filter { $0 != "help" }
        #expect(visible.contains("status") && visible.contains("list") && visible.count >= 12)
        for name in visible {
            #expect(source.contains(".SS \"\(name.replacingOccurrences(of: "-", with: "\\-"))\""), "the man page lacks \(name)")
        }
        #expect(source.contains("\\-\\-check\\-config") && source.contains(BoneTriageVersion.number))
        #expect(!source.contains(".SS \"decode\\-worker\""), "a hidden command is in the man page")
        // groff's own check (every warning on), and man-db's.
        let groff = try DaemonHarness.run("/bin/sh", ["-c", "groff -ww -z -man -Tutf8 '\(plain)'"])
        #expect(groff.status == 0 && groff.output.isEmpty, "\(groff.output)")
        let man = try DaemonHarness.run("/bin/sh", ["-c", "MANWIDTH=80 man --warnings -l '\(staged.man)' 2>&1 >/dev/null"])
        #expect(man.status == 0 && man.output.isEmpty, "\(man.output)")
    }

    @Test("bash completion: valid, completes a command name when sourced; zsh's parses when zsh is installed")
    func completions() throws {
        let staged = try Self.stageDocs()
        #expect(try DaemonHarness.run("/bin/bash", ["-n", staged.bash]).status == 0)
        let script = """
            source '\(staged.bash)'
            complete -p bonetriage
            COMP_WORDS=(bonetriage sta); COMP_CWORD=1; COMP_LINE='bonetriage sta'; COMP_POINT=${#COMP_LINE}
            func=$(complete -p bonetriage | sed -E 's/.*-F ([^ ]+) .*/\\1/')
            "$func" bonetriage sta bonetriage
            printf 'reply:%s\\n' "${COMPREPLY[@]}"
            """
        let bash = try DaemonHarness.run("/bin/bash", ["-c", script])
        #expect(bash.status == 0, "\(bash.output)")
        #expect(bash.output.contains("-F ") && bash.output.contains("reply:status"), "\(bash.output)")
        #expect(!bash.output.contains("reply:list"), "\(bash.output)")
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/zsh") {
            let zsh = try DaemonHarness.run("/usr/bin/zsh", ["-n", staged.zsh])
            #expect(zsh.status == 0, "\(zsh.output)")
            #expect(try String(contentsOfFile: staged.zsh, encoding: .utf8).hasPrefix("#compdef bonetriage"))
        }
    }
}
