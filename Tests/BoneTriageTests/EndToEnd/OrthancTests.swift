import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Orthanc (Debian package `orthanc`) as the sending PACS: a study uploaded through its REST API and
/// C-STOREd by Orthanc to the daemon.
@Suite("daemon with Orthanc as the PACS", .serialized,
       .enabled(if: Executable.url != nil && DaemonHarness.toolsAvailable && OrthancServer.path != nil && DicomTools.find("curl") != nil,
                "skipped: needs Orthanc (/usr/sbin/Orthanc, Debian package orthanc), curl and DCMTK; `make test` installs them"))
struct OrthancTests {
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    func curl(_ arguments: [String]) throws -> String {
        let r = try DaemonHarness.run("curl", ["-s", "-S", "--max-time", "120"] + arguments)
        #expect(r.status == 0, "curl \(arguments): \(r.output)")
        return r.output
    }

    /// Orthanc on free ports with a throwaway configuration, knowing the daemon as modality `bt`;
    /// stopped (then killed) by `stop`.
    final class Running {
        let process: Process
        let base: String
        let dir: TemporaryDirectory

        init(daemon: DaemonHarness) throws {
            dir = try TemporaryDirectory()
            let http = OrthancTests.freePort(), dicom = OrthancTests.freePort()
            let config: [String: Any] = [
                "Name": "bonetriage-test", "StorageDirectory": dir.path("storage"), "IndexDirectory": dir.path("index"),
                "HttpPort": http, "DicomPort": dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
                "AuthenticationEnabled": false, "Plugins": [String](),
                "DicomModalities": ["bt": ["BONETRIAGE", "127.0.0.1", daemon.port]],
            ]
            try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir.path("orthanc.json")))
            process = Process()
            process.executableURL = URL(fileURLWithPath: try #require(OrthancServer.path))
            process.arguments = [dir.path("orthanc.json")]
            process.standardOutput = FileHandle.nullDevice
            _ = FileManager.default.createFile(atPath: dir.path("orthanc.log"), contents: nil)
            process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir.path("orthanc.log")))
            try process.run()
            base = "http://127.0.0.1:\(http)"
            try daemon.waitFor("Orthanc's REST API", timeout: 60) {
                (try? DaemonHarness.run("curl", ["-s", "-f", self.base + "/system"]))?.status == 0
            }
        }

        func stop() {
            process.terminate()
            let deadline = Date().addingTimeInterval(10)
            while process.isRunning && Date() < deadline { usleep(100_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
    }

    @Test("Orthanc C-STOREs an uploaded study to the daemon, which triages it")
    func orthancSendsAStudy() throws {
        let daemon = try DaemonHarness(quietPeriod: 1)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let orthanc = try Running(daemon: daemon)
        defer { orthanc.stop() }
        let dir = orthanc.dir, base = orthanc.base

        let study = "1.2.826.0.1.3680043.10.9.1"
        var parent: String?
        for i in 0..<3 {
            let path = dir.path("o\(i).dcm")
            try RadiographFactory.make(at: path, study: study, seed: 40 + i)
            if i == 2 { try DicomTools.run("dcmcjpeg", ["+e1", path, path + ".jpeg"]) }
            let answer = try curl(["-X", "POST", "--data-binary", "@" + (i == 2 ? path + ".jpeg" : path), base + "/instances"])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any], "\(answer)")
            parent = object["ParentStudy"] as? String
        }
        let orthancStudy = try #require(parent)
        let stored = try curl(["-X", "POST", "--data-binary", "\"\(orthancStudy)\"", base + "/modalities/bt/store"])
        #expect(stored.contains("\"FailedInstancesCount\" : 0") || stored.contains("\"InstancesCount\" : 3"), "\(stored)")

        let triaged = try daemon.waitForTriage([study], timeout: 60)
        let row = try #require(triaged[study])
        #expect(row["state"] as? String == "triaged" && row["images"] as? Int == 3, "\(row)")
        #expect(row["calling_ae_title"] as? String == "ORTHANC")
        #expect(daemon.log.contains("association accepted: 'ORTHANC' from 127.0.0.1"))
    }

    @Test("Orthanc pushes a study with a CR and its X-Ray Radiation Dose SR: every instance arrives, the CR is triaged, the SR recorded as not applicable")
    func orthancSendsAStudyWithADoseReport() throws {
        let daemon = try DaemonHarness(quietPeriod: 1)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let orthanc = try Running(daemon: daemon)
        defer { orthanc.stop() }
        let study = "1.2.826.0.1.3680043.10.9.2"
        let cr = orthanc.dir.path("cr.dcm"), sr = orthanc.dir.path("dose.dcm")
        try RadiographFactory.make(at: cr, study: study, seed: 50)
        try DoseReportFactory.make(at: sr, study: study, sopInstanceUID: study + ".9.1")
        var parents: Set<String> = []
        for path in [cr, sr] {
            let answer = try curl(["-X", "POST", "--data-binary", "@" + path, orthanc.base + "/instances"])
            let object = try #require(try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any], "\(answer)")
            parents.insert(try #require(object["ParentStudy"] as? String, "\(answer)"))
        }
        #expect(parents.count == 1, "Orthanc filed the CR and the SR in different studies")
        let orthancStudy = try #require(parents.first)
        let stored = try curl(["-X", "POST", "--data-binary", "\"\(orthancStudy)\"", orthanc.base + "/modalities/bt/store"])
        let result = try #require(try JSONSerialization.jsonObject(with: Data(stored.utf8)) as? [String: Any], "Orthanc answered: \(stored)\n\(daemon.log)")
        #expect(result["FailedInstancesCount"] as? Int == 0 && result["InstancesCount"] as? Int == 2, "\(stored)")

        let triaged = try daemon.waitForTriage([study], timeout: 60)
        let row = try #require(triaged[study])
        #expect(row["state"] as? String == "triaged" && row["images"] as? Int == 2 && row["eligible_images"] as? Int == 1, "\(row)")
        let images = try daemon.show(study).images
        let report = try #require(images.first { $0["sop_instance_uid"] as? String == study + ".9.1" }, "\(images)")
        #expect(report["eligible"] as? Bool == false && report["probability"] is NSNull, "\(report)")
        let radiograph = try #require(images.first { $0["sop_instance_uid"] as? String != study + ".9.1" })
        #expect(radiograph["probability"] as? Double != nil, "\(radiograph)")
    }
}

enum OrthancServer {
    static var path: String? { FileManager.default.isExecutableFile(atPath: "/usr/sbin/Orthanc") ? "/usr/sbin/Orthanc" : nil }
}
