import BoneTriage
import Foundation
import Testing

/// What `bonetriage serve` does with files that are hard to read: Pixel Data shorter than declared,
/// text in a Specific Character Set, an image over [triage] maximum_megapixels, a header read that
/// runs out of time. Real senders (storescu, dcmsend), the drop folder, and the CLI a radiologist uses.
@Suite("daemon end to end: reading files", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable,
                "skipped: needs the built bonetriage and DCMTK's storescu, dcmsend, echoscu, img2dcm (Debian package dcmtk; `make test` installs it)"))
struct DecodingDaemonTests {
    static func quarantineReasons(_ daemon: DaemonHarness) -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: daemon.quarantine)) ?? []
        return names.filter { $0.hasSuffix(".reason") }.compactMap { try? String(contentsOfFile: daemon.quarantine + "/" + $0, encoding: .utf8) }
    }

    @Test("short Pixel Data is refused 0xC000 (C-STORE) or quarantined (drop folder), never triaged; a huge image is left out as over maximum_megapixels")
    func shortAndHugeImages() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let short = "1.2.826.0.1.3680043.10.60.1", frames = "1.2.826.0.1.3680043.10.60.2", huge = "1.2.826.0.1.3680043.10.60.3"
        let good = "1.2.826.0.1.3680043.10.60.4"
        var s = DicomWriter.radiograph(study: short, sop: short + ".1", rows: 16384, columns: 16384, bitsAllocated: 16)
        s.nativePixels(bytes: 512, bitsAllocated: 16)
        try s.write(to: files.path("short.dcm"))
        var f = DicomWriter.radiograph(study: frames, sop: frames + ".1", rows: 512, columns: 512, bitsAllocated: 16, frames: 1024)
        f.nativePixels(bytes: 512, bitsAllocated: 16)
        var h = DicomWriter.radiograph(study: huge, sop: huge + ".1", rows: 65535, columns: 65535)
        h.encapsulatedPixels([Data(repeating: 1, count: 64)], transferSyntax: "1.2.840.10008.1.2.5")
        try h.write(to: files.path("huge.dcm"))
        var g = DicomWriter.radiograph(study: good, sop: good + ".1", rows: 64, columns: 64)
        g.nativePixels(bytes: 64 * 64)
        try g.write(to: files.path("good.dcm"))

        let sent = try daemon.storescu([files.path("short.dcm"), files.path("good.dcm")], extra: ["-v", "--no-halt"])
        #expect(sent.output.contains("Received Store Response (Error: CannotUnderstand)"), "storescu sees the refusal (0xC000): \(sent.output)")
        let rle = try daemon.dcmsend([files.path("huge.dcm")])
        #expect(rle.status == 0, "\(rle.output)")
        try FileManager.default.createDirectory(atPath: daemon.dropFolder, withIntermediateDirectories: true)
        try f.write(to: files.path("frames.dcm"))
        try FileManager.default.moveItem(atPath: files.path("frames.dcm"), toPath: daemon.dropFolder + "/frames.dcm")

        let studies = try daemon.waitForTriage([good, huge])
        #expect(studies[good]?["state"] as? String == "triaged", "\(studies[good] ?? [:])")
        try daemon.waitFor("the dropped file quarantined", timeout: 30) { Self.quarantineReasons(daemon).count == 2 }
        let reasons = Self.quarantineReasons(daemon)
        #expect(reasons.contains { $0.contains("answered 0xC000") && $0.contains("holds 512 bytes") && $0.contains("need 536870912 bytes") }, "\(reasons)")
        #expect(reasons.contains { $0.contains("frames.dcm") && $0.contains("x 1024) need 536870912 bytes") }, "\(reasons)")
        let all = try daemon.studies()
        #expect(!all.contains { $0["study_instance_uid"] as? String == short || $0["study_instance_uid"] as? String == frames }, "\(all)")

        // The huge image is stored (its header is sound) and left out of its triage with the limit named.
        let shown = try daemon.show(huge)
        let problem = shown.images.first?["eligibility_reason"] as? String ?? ""
        #expect(problem.contains("over the limit of 256 Mpixel ([triage] maximum_megapixels)") && !problem.contains("uncompressed"), "\(shown)")
        #expect(daemon.log.contains("listening"))
        #expect(try daemon.echo().status == 0, "the daemon is still up")
    }

    @Test("names in ISO_IR 100, ISO 2022 IR 87 and GB18030 reach list (JSON, CSV) and show as UTF-8; an unknown set is flagged")
    func characterSets() throws {
        let daemon = try DaemonHarness()
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        let cases: [(uid: String, charset: String, name: Data, expected: String?)] = [
            ("1.2.826.0.1.3680043.10.70.1", "ISO_IR 100", CharacterSetTests.latin1Name, "Gérard^Zoë"),
            ("1.2.826.0.1.3680043.10.70.2", "\\ISO 2022 IR 87", CharacterSetTests.cases[2].1, "Yamada^Tarou=山田^太郎=やまだ^たろう"),
            ("1.2.826.0.1.3680043.10.70.3", "GB18030", CharacterSetTests.cases[5].1, "Wang^XiaoDong=王^小东="),
            ("1.2.826.0.1.3680043.10.70.4", "ISO_IR 999", CharacterSetTests.latin1Name, nil),
        ]
        var paths: [String] = []
        for (i, c) in cases.enumerated() {
            var w = DicomWriter.radiograph(study: c.uid, sop: c.uid + ".1", rows: 64, columns: 64)
            w.set(0x0008, 0x0005, "CS", c.charset)
            w.set(0x0010, 0x0010, "PN", c.name)
            w.nativePixels(bytes: 64 * 64)
            paths.append(files.path("c\(i).dcm"))
            try w.write(to: paths[i])
        }
        let sent = try daemon.storescu(paths)
        #expect(sent.status == 0, "\(sent.output)")
        let studies = try daemon.waitForTriage(cases.map(\.uid))
        for c in cases {
            let row = try #require(studies[c.uid])
            if let expected = c.expected {
                #expect(row["patient_name"] as? String == expected, "\(c.charset): \(row)")
                #expect(row["character_set_note"] is NSNull, "\(c.charset): \(row)")
            } else {
                #expect((row["character_set_note"] as? String)?.contains("'ISO_IR 999'") == true, "\(row)")
            }
        }
        let csv = try Executable.run(["list", "--db", daemon.database, "--format", "csv"])
        #expect(csv.status == 0 && csv.stdout.contains("Gérard^Zoë") && csv.stdout.contains("Yamada^Tarou=山田^太郎=やまだ^たろう")
                && csv.stdout.contains("王^小东"), "\(csv.stdout)")
        #expect(!csv.stdout.contains("\u{FFFD}"), "no replacement characters: \(csv.stdout)")
        let shown = try daemon.show(cases[3].uid)
        #expect((shown.study["character_set_note"] as? String)?.contains("kept as received") == true, "\(shown.study)")
        let text = try Executable.run(["show", cases[3].uid, "--db", daemon.database])
        #expect(text.stdout.contains("NOT CONVERTED: Specific Character Set (0008,0005) 'ISO_IR 999'"), "\(text.stdout)")
        let plain = try Executable.run(["show", cases[0].uid, "--db", daemon.database])
        #expect(plain.stdout.contains("Zoë, Gérard") || plain.stdout.contains("Gérard, Zoë"), "\(plain.stdout)")
        // Patient names stay out of the log at info level.
        #expect(!daemon.log.contains("Gérard") && !daemon.log.contains("山田"))
    }

    @Test("a dropped file whose header read runs out of time is quarantined with the header limit named, not decode_timeout_seconds alone")
    func headerTimeoutReason() throws {
        let daemon = try DaemonHarness(extraConfig: "decode_timeout_seconds = 2")
        try FileManager.default.createDirectory(atPath: daemon.dropFolder, withIntermediateDirectories: true)
        try daemon.start(environment: [DecoderService.faultVariable: "hang:slow-header"])
        defer { _ = try? daemon.stop() }
        let files = try TemporaryDirectory()
        var w = DicomWriter.radiograph(study: "1.2.826.0.1.3680043.10.140.1", sop: "1.2.826.0.1.3680043.10.140.1.1", rows: 64, columns: 64)
        w.nativePixels(bytes: 64 * 64)
        try w.write(to: files.path("slow-header.dcm"))
        try FileManager.default.moveItem(atPath: files.path("slow-header.dcm"), toPath: daemon.dropFolder + "/slow-header.dcm")
        // The reason file is written before the log line that says so: wait for both.
        try daemon.waitFor("the file quarantined", timeout: 30) { !Self.quarantineReasons(daemon).isEmpty && daemon.log.contains("quarantined") }
        let reason = Self.quarantineReasons(daemon).joined()
        #expect(reason.contains("took longer than 2 s (the limit for reading a header or checking a PNG: [triage] decode_timeout_seconds, at most 10 s)"),
                "\(reason)")
        #expect(!reason.contains("stays where it is") && !reason.contains("study went on"), "\(reason)")
        #expect(daemon.log.contains("quarantined") && !daemon.log.contains("stays where it is"), "\(daemon.log)")
        #expect(try daemon.echo().status == 0)
    }
}
