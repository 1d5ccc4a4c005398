import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// DCMTK's storescp on a free port, with the options a test gives; stopped when the value goes away.
final class StoreSCP {
    let port: Int
    let dir: TemporaryDirectory
    let aeTitle = "RESULTS"
    private let process = Process()

    init(_ options: [String] = []) throws {
        dir = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: dir.path("received"), withIntermediateDirectories: true)
        port = OrthancPACS.freePort()
        process.executableURL = URL(fileURLWithPath: try #require(DicomTools.find("storescp")))
        process.arguments = ["-aet", aeTitle, "-od", dir.path("received")] + options + ["\(port)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if Self.accepts(port) { return }
            usleep(50_000)
        }
        throw DicomTools.Failed(description: "storescp did not listen on port \(port)")
    }

    /// SIGKILL: storescp may not end on SIGTERM while it waits for an association.
    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    func destination(timeoutSeconds: Double = 10) -> ResultDestination {
        ResultDestination(aeTitle: aeTitle, host: "127.0.0.1", port: port, callingAETitle: "BONETRIAGE", timeoutSeconds: timeoutSeconds)
    }

    var received: [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path("received"))) ?? []).sorted().map { dir.path("received/" + $0) }
    }
}

@Suite("C-STORE SCU", .serialized,
       .enabled(if: ResultFixtures.toolsAvailable && DicomTools.find("storescp") != nil && DicomTools.find("img2dcm") != nil,
                "skipped: needs DCMTK's storescp, dcmdump, dsrdump and img2dcm (Debian package dcmtk)"))
struct StorageSCUTests {
    let scu = StorageSCU()

    /// An SR and an SC of a self-made study (no ../shared needed for sending).
    func objects(in dir: TemporaryDirectory) throws -> (sr: String, sc: String) {
        let template = dir.path("template.dcm")
        try RadiographFactory.make(at: template, study: "1.2.826.0.1.3680043.10.13.3", seed: 5)
        let sr = dir.path("sr.dcm"), sc = dir.path("sc.dcm")
        try DicomResultWriter().writeReport(try ResultFixtures.report(template: template), to: sr)
        try DicomResultWriter().writeCapture(try ResultFixtures.capture(template: template), to: sc)
        return (sr, sc)
    }

    @Test("storescp stores both objects over one association, and they arrive intact")
    func stored() throws {
        let dir = try TemporaryDirectory()
        let (sr, sc) = try objects(in: dir)
        let peer = try StoreSCP()
        let outcomes = scu.send([sr, sc], to: peer.destination())
        #expect(outcomes == [.stored(warning: nil), .stored(warning: nil)], "\(outcomes)")
        let received = peer.received
        #expect(received.count == 2, "\(received)")
        let byUID = Dictionary(try received.map { (try DicomReader.metadata(path: $0).sopInstanceUID ?? "", $0) }, uniquingKeysWith: { a, _ in a })
        let sentSC = try DicomReader.metadata(path: sc), sentSR = try DicomReader.metadata(path: sr)
        let arrivedSC = try #require(byUID[sentSC.sopInstanceUID ?? "-"]), arrivedSR = try #require(byUID[sentSR.sopInstanceUID ?? "-"])
        #expect(try DicomReader.render(path: arrivedSC).frames.first?.pixels == DicomReader.render(path: sc).frames.first?.pixels)
        #expect(try ResultFixtures.run("dsrdump", ["+Pl", "+Pu", "+Pc", arrivedSR]).output == ResultFixtures.run("dsrdump", ["+Pl", "+Pu", "+Pc", sr]).output)
        // Every attribute of the dataset arrived as sent (the meta header names the receiver, so leave it out).
        let dataset = { (path: String) in try ResultFixtures.run("dcmdump", ["-q", "+L", path]).output
            .split(separator: "\n").filter { !$0.hasPrefix("(0002,") && !$0.hasPrefix("#") }.joined(separator: "\n") }
        #expect(try dataset(arrivedSC) == dataset(sc))
        #expect(try dataset(arrivedSR) == dataset(sr))
    }

    @Test("no listener on the port: retry later, with the reason")
    func noListener() throws {
        let dir = try TemporaryDirectory()
        let (sr, sc) = try objects(in: dir)
        let port = OrthancPACS.freePort()
        let destination = ResultDestination(aeTitle: "NOBODY", host: "127.0.0.1", port: port, callingAETitle: "BONETRIAGE", timeoutSeconds: 5)
        let outcomes = scu.send([sr, sc], to: destination)
        #expect(outcomes.count == 2)
        for outcome in outcomes {
            guard case let .retryLater(reason) = outcome else { Issue.record("expected retryLater, got \(outcome)"); continue }
            #expect(reason.contains("no association with NOBODY at 127.0.0.1:\(port)"), "\(reason)")
            #expect(reason.lowercased().contains("refused"), "\(reason)")
        }
    }

    @Test("a peer that rejects the association: retry later, with its reason")
    func associationRejected() throws {
        let dir = try TemporaryDirectory()
        let (sr, _) = try objects(in: dir)
        let peer = try StoreSCP(["--refuse"])
        let outcomes = scu.send([sr], to: peer.destination())
        guard case let .retryLater(reason) = try #require(outcomes.first) else { Issue.record("expected retryLater, got \(outcomes)"); return }
        #expect(reason.contains("rejected the association"), "\(reason)")
        #expect(reason.contains("Reason:") || reason.contains("reason"), "\(reason)")
        #expect(peer.received.isEmpty)
    }

    @Test("a peer that does not accept the SOP class refuses that object, and still stores the others")
    func sopClassNotAccepted() throws {
        let dir = try TemporaryDirectory()
        let (sr, sc) = try objects(in: dir)
        let config = dir.path("scp.cfg")
        try """
        [[TransferSyntaxes]]
        [Uncompressed]
        TransferSyntax1 = LocalEndianExplicit
        TransferSyntax2 = LittleEndianImplicit
        [[PresentationContexts]]
        [OnlyCaptures]
        PresentationContext1 = VerificationSOPClass\\Uncompressed
        PresentationContext2 = SecondaryCaptureImageStorage\\Uncompressed
        [[Profiles]]
        [Captures]
        PresentationContexts = OnlyCaptures

        """.write(toFile: config, atomically: true, encoding: .utf8)
        let peer = try StoreSCP(["-xf", config, "Captures"])
        let outcomes = scu.send([sr, dir.path("missing.dcm"), sc], to: peer.destination())
        #expect(outcomes.count == 3)
        guard case let .refused(reason) = outcomes[0] else { Issue.record("expected refused, got \(outcomes[0])"); return }
        #expect(reason.contains("did not accept SOP class 1.2.840.10008.5.1.4.1.1.88.33"), "\(reason)")
        guard case let .refused(missing) = outcomes[1] else { Issue.record("expected refused, got \(outcomes[1])"); return }
        #expect(missing.contains("missing.dcm"), "\(missing)")
        #expect(outcomes[2] == .stored(warning: nil))
        #expect(peer.received.count == 1)
    }

    @Test("a peer that never answers the C-STORE: retry later after the timeout, never a hang")
    func timeout() throws {
        let dir = try TemporaryDirectory()
        let (_, sc) = try objects(in: dir)
        let peer = try StoreSCP(["--sleep-during", "8"])
        let outcomes = scu.send([sc, sc], to: peer.destination(timeoutSeconds: 1))
        #expect(outcomes.count == 2)
        guard case let .retryLater(reason) = outcomes[0] else { Issue.record("expected retryLater, got \(outcomes)"); return }
        #expect(reason.contains("timeout"), "\(reason)")
        guard case let .retryLater(second) = outcomes[1] else { Issue.record("expected retryLater, got \(outcomes)"); return }
        #expect(second.contains("not sent"), "\(second)")
    }

    @Test("a destination with a bad AE title or port is not tried: retry later, naming what to fix")
    func badDestination() throws {
        let long = ResultDestination(aeTitle: "A_TITLE_FAR_TOO_LONG", host: "127.0.0.1", port: 104, callingAETitle: "BONETRIAGE")
        guard case let .retryLater(reason) = try #require(scu.send(["x.dcm"], to: long).first) else { Issue.record("not retryLater"); return }
        #expect(reason.contains("longer than 16") && reason.contains("[[results]]"), "\(reason)")
        let port = ResultDestination(aeTitle: "PACS", host: "127.0.0.1", port: 70000, callingAETitle: "BONETRIAGE")
        guard case let .retryLater(portReason) = try #require(scu.send(["x.dcm"], to: port).first) else { Issue.record("not retryLater"); return }
        #expect(portReason.contains("70000"))
        #expect(scu.send([], to: port).isEmpty)
    }

    @Test("every C-STORE status maps to stored, stored with a warning, refused or retry later")
    func statusMapping() {
        #expect(StorageSCU.outcome(status: 0x0000, comment: nil) == .stored(warning: nil))
        for warning: UInt16 in [0xB000, 0xB006, 0xB007, 0x0001] {
            guard case let .stored(text) = StorageSCU.outcome(status: warning, comment: "coerced") else { Issue.record("\(warning)"); continue }
            #expect(text?.contains(String(format: "0x%04X", warning)) == true && text?.contains("coerced") == true, "\(String(describing: text))")
        }
        for busy: UInt16 in [0xA700, 0xA701, 0xA7FF, 0x0213] {
            guard case .retryLater = StorageSCU.outcome(status: busy, comment: nil) else { Issue.record("\(busy) should be retryLater"); continue }
        }
        for refusal: UInt16 in [0xA900, 0xA9FF, 0xC000, 0xC123, 0x0122, 0x0124, 0x0110, 0x0111, 0xA800] {
            guard case let .refused(reason) = StorageSCU.outcome(status: refusal, comment: nil) else { Issue.record("\(refusal) should be refused"); continue }
            #expect(reason.contains(String(format: "0x%04X", refusal)))
        }
    }
}
