import BoneTriage
import Foundation
import Testing

@Suite("Configuration file")
struct ConfigurationTests {
    static let shipped = Fixtures.repositoryRoot.appendingPathComponent("etc/bonetriage.toml").path

    @Test("the shipped example parses and states the defaults")
    func shippedExample() throws {
        let config = try BoneTriageConfiguration.load(path: Self.shipped)
        #expect(config == BoneTriageConfiguration())
        #expect(try BoneTriageConfiguration.parse("", path: "empty.toml") == BoneTriageConfiguration())
    }

    @Test("every problem is listed with its key, value and why")
    func problems() throws {
        do {
            _ = try BoneTriageConfiguration.parse("[worklist]\ndatabase = \"relative.sqlite\"\ncolour = true\n", path: "c.toml")
            Issue.record("a bad config was accepted")
        } catch let error as ConfigurationError {
            #expect(error.problems.count == 2)
            #expect(error.description.contains("[worklist] database = relative.sqlite") || error.description.contains("relative.sqlite"))
            #expect(error.description.contains("[worklist] colour: unknown key"))
        }
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.parse("[worklist\n", path: "c.toml") }
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.parse("worklist = 3\n", path: "c.toml") }
        #expect(throws: ConfigurationError.self) { try BoneTriageConfiguration.load(path: "/nonexistent/bt.toml") }
    }

    @Test("every section and key is read; a file full of mistakes lists each one")
    func allKeys() throws {
        let good = try BoneTriageConfiguration.parse("""
            [dicom]
            ae_title = "TRIAGE1"
            bind_address = "127.0.0.1"
            port = 4242
            allowed_callers = [{ ae_title = "PACS", hosts = ["10.0.0.5", "10.1.0.0/16"] }, { ae_title = "MODALITY" }]
            max_associations = 3
            max_pending_connections = 20
            max_pending_connections_per_address = 2
            [drop_folder]
            path = ""
            [storage]
            spool = "/srv/bt/spool"
            archive = "/srv/bt/archive"
            quarantine = "/srv/bt/quarantine"
            after_triage = "delete"
            [model]
            path = "/srv/bt/model.safetensors"
            [triage]
            quiet_period_seconds = 12.5
            workers = 2
            covered_body_parts = ["humerus", "SHOULDER"]
            triage_unknown_body_part = true
            isolate_decoder = false
            decode_timeout_seconds = 15
            decoders_per_worker = 3
            """, path: "good.toml")
        #expect(good.aeTitle == "TRIAGE1" && good.bindAddress == "127.0.0.1" && good.port == 4242 && good.maxAssociations == 3)
        #expect(good.maxPendingConnections == 20 && good.maxPendingConnectionsPerAddress == 2)
        #expect(BoneTriageConfiguration().maxPendingConnections == 64 && BoneTriageConfiguration().maxPendingConnectionsPerAddress == 8)
        #expect(good.dropFolder == nil && good.afterTriage == .delete && good.modelPath == "/srv/bt/model.safetensors")
        #expect(good.quietPeriod == 12.5 && good.workers == 2 && good.triageUnknownBodyPart)
        #expect(good.coveredBodyParts == ["HUMERUS", "SHOULDER"])
        #expect(!good.isolateDecoder && good.decodeTimeout == 15 && good.decodersPerWorker == 3)
        #expect(BoneTriageConfiguration().isolateDecoder && BoneTriageConfiguration().decodeTimeout == 60)
        #expect(good.allowedCallers.count == 2)
        let pacs = try #require(good.allowedCallers.first)
        #expect(pacs.admits(aeTitle: "PACS", from: "10.0.0.5") && pacs.admits(aeTitle: "PACS", from: "10.1.200.3"))
        #expect(!pacs.admits(aeTitle: "PACS", from: "10.0.0.6") && !pacs.admits(aeTitle: "OTHER", from: "10.0.0.5"))
        #expect(good.allowedCallers[1].admits(aeTitle: "MODALITY", from: "192.168.1.1"))

        do {
            _ = try BoneTriageConfiguration.parse("""
                [dicom]
                ae_title = "A TITLE THAT IS FAR TOO LONG"
                bind_address = "localhost"
                port = 70000
                allowed_callers = [{ ae_title = "PACS", hosts = ["10.0.0.300"] }, { host = "x" }]
                max_pending_connections = 0
                max_pending_connections_per_address = "many"
                [storage]
                spool = "/srv/bt"
                archive = "/srv/bt/archive"
                after_triage = "shred"
                [triage]
                quiet_period_seconds = -1
                workers = 0
                isolate_decoder = "yes"
                decode_timeout_seconds = 0
                decoders_per_worker = 0
                [printer]
                """, path: "bad.toml")
            Issue.record("a bad config was accepted")
        } catch let error as ConfigurationError {
            let text = error.description
            for needle in ["ae_title", "bind_address", "port = 70000", "10.0.0.300", "allowed_callers[1] host: unknown key", "after_triage",
                           "quiet_period_seconds", "workers = 0", "isolate_decoder", "decode_timeout_seconds = 0", "decoders_per_worker = 0", "[printer]: unknown section",
                           "max_pending_connections = 0", "max_pending_connections_per_address", "must be separate folders"] {
                #expect(text.contains(needle), "missing \(needle) in:\n\(text)")
            }
        }
    }

    @Test("[service] status_file: defaulted to systemd's runtime folder, read, an absolute path")
    func statusFile() throws {
        #expect(BoneTriageConfiguration().statusFile == "/run/bonetriage/status")
        #expect(try BoneTriageConfiguration.parse("[service]\nstatus_file = \"/tmp/bt/status\"\n", path: "s.toml").statusFile == "/tmp/bt/status")
        do {
            _ = try BoneTriageConfiguration.parse("[service]\nstatus_file = \"status\"\npid_file = \"/x\"\n", path: "s.toml")
            Issue.record("a relative status file was accepted")
        } catch let error as ConfigurationError {
            #expect(error.description.contains("[service] status_file = \"status\": must be an absolute path"), "\(error)")
            #expect(error.description.contains("[service] pid_file: unknown key"), "\(error)")
        }
    }

    @Test("[drop_folder] remove_empty_folders_after_seconds: read, defaulted, bounded")
    func dropFolderFolderRemoval() throws {
        #expect(BoneTriageConfiguration().dropRemoveEmptyFoldersAfter == 120)
        let c = try BoneTriageConfiguration.parse("[drop_folder]\nremove_empty_folders_after_seconds = 0\nretry_seconds = 5\n", path: "d.toml")
        #expect(c.dropRemoveEmptyFoldersAfter == 0 && c.dropRetryInterval == 5)
        do {
            _ = try BoneTriageConfiguration.parse("[drop_folder]\nremove_empty_folders_after_seconds = -1\n", path: "d.toml")
            Issue.record("a negative wait was accepted")
        } catch let error as ConfigurationError {
            #expect(error.description.contains("remove_empty_folders_after_seconds"), "\(error)")
        }
    }

    @Test("IPv4 addresses and CIDR blocks")
    func addresses() {
        #expect(IPv4Range("10.0.0.0/8")?.contains(IPv4Range.parseAddress("10.200.3.4") ?? 0) == true)
        #expect(IPv4Range("0.0.0.0/0")?.contains(IPv4Range.parseAddress("8.8.8.8") ?? 0) == true)
        #expect(IPv4Range("192.168.1.7")?.description == "192.168.1.7")
        for bad in ["10.0.0", "10.0.0.1/33", "a.b.c.d", "1.2.3.4/", "256.1.1.1", "01234.1.1.1"] { #expect(IPv4Range(bad) == nil, "\(bad)") }
    }

    @Test("[heatmaps] compute: flagged by default (as the shipped example states), all or none; anything else is refused with the choices")
    func heatmaps() throws {
        #expect(BoneTriageConfiguration().heatmapScope == .flagged)
        #expect(try BoneTriageConfiguration.load(path: Self.shipped).heatmapScope == .flagged)
        let shipped = try String(contentsOfFile: Self.shipped, encoding: .utf8)
        #expect(shipped.contains("[heatmaps]\n") && shipped.contains("compute = \"flagged\""))
        #expect(try BoneTriageConfiguration.parse("[heatmaps]\ncompute = \"all\"\n", path: "h.toml").heatmapScope == .all)
        #expect(try BoneTriageConfiguration.parse("[heatmaps]\ncompute = \"none\"\n", path: "h.toml").heatmapScope == HeatmapScope.none)
        do {
            _ = try BoneTriageConfiguration.parse("[heatmaps]\ncompute = \"sometimes\"\nstride = 3\n", path: "h.toml")
            Issue.record("a bad [heatmaps] section was accepted")
        } catch let error as ConfigurationError {
            #expect(error.problems.count == 2, "\(error.problems)")
            #expect(error.description.contains("[heatmaps] compute = \"sometimes\": must be one of \"flagged\", \"all\", \"none\""), "\(error)")
            #expect(error.description.contains("[heatmaps] stride: unknown key"), "\(error)")
        }
    }

    @Test("[triage] kernels: auto by default (as the shipped example states); a family this CPU runs, in any case; anything else refused with the choices")
    func kernels() throws {
        #expect(BoneTriageConfiguration().kernels == nil)
        let shipped = try String(contentsOfFile: Self.shipped, encoding: .utf8)
        #expect(shipped.contains("kernels = \"auto\""))
        #expect(try BoneTriageConfiguration.parse("[triage]\nkernels = \"portable\"\n", path: "k.toml").kernels == .portable)
        #expect(try BoneTriageConfiguration.parse("[triage]\nkernels = \"Portable\"\n", path: "k.toml").kernels == .portable)
        #expect(try BoneTriageConfiguration.parse("[triage]\nkernels = \"auto\"\n", path: "k.toml").kernels == nil)
        #expect(try BoneTriageConfiguration.parse("[triage]\nkernels = \"AUTO\"\n", path: "k.toml").kernels == nil)
        #expect(TriagePolicy(configuration: try BoneTriageConfiguration.parse("[triage]\nkernels = \"portable\"\n", path: "k.toml")).kernels == .portable)
        // The emulation is for tests, and a family the CPU lacks would die on an illegal instruction.
        var refused = ["fast", "avx512-on-avx2"]
        if !KernelFamily.avx512.isSupported { refused.append("avx512") }
        for name in refused {
            do {
                _ = try BoneTriageConfiguration.parse("[triage]\nkernels = \"\(name)\"\n", path: "k.toml")
                Issue.record("kernels = \(name) was accepted")
            } catch let error as ConfigurationError {
                #expect(error.description.contains("[triage] kernels = \"\(name)\": must be \"auto\" or a kernel family this CPU"), "\(error)")
                #expect(error.description.contains("\"portable\""), "\(error)")
            }
        }
    }

    @Test("[triage] precision: float32 by default (as the shipped example states); bfloat16 where the CPU has AVX512-BF16, else refused saying so; anything else refused")
    func precision() throws {
        #expect(BoneTriageConfiguration().precision == .float32)
        let shipped = try String(contentsOfFile: Self.shipped, encoding: .utf8)
        #expect(shipped.contains("precision = \"float32\""))
        #expect(try BoneTriageConfiguration.parse("[triage]\nprecision = \"Float32\"\n", path: "p.toml").precision == .float32)
        func refusal(_ name: String) throws -> String? {
            do {
                _ = try BoneTriageConfiguration.parse("[triage]\nprecision = \"\(name)\"\n", path: "p.toml")
                return nil
            } catch let error as ConfigurationError {
                return error.description
            }
        }
        if ConvolutionArithmetic.bfloat16.isSupported {
            let parsed = try BoneTriageConfiguration.parse("[triage]\nprecision = \"bfloat16\"\n", path: "p.toml")
            #expect(parsed.precision == .bfloat16 && TriagePolicy(configuration: parsed).precision == .bfloat16)
        } else {
            let message = try #require(try refusal("bfloat16"), "bfloat16 accepted on a CPU without AVX512-BF16")
            #expect(message.contains("runs \"float32\" only (bfloat16 needs AVX512-BF16)"), "\(message)")
        }
        for name in ["half", "bfloat16-emulated", "fp16"] {
            let message = try #require(try refusal(name), "precision = \(name) was accepted")
            #expect(message.contains("[triage] precision = \"\(name)\": must be \"float32\" or \"bfloat16\""), "\(message)")
        }
    }
}
