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

    @Test("Orthanc C-STOREs an uploaded study to the daemon, which triages it")
    func orthancSendsAStudy() throws {
        let daemon = try DaemonHarness(quietPeriod: 1)
        try daemon.start()
        defer { _ = try? daemon.stop() }
        let dir = try TemporaryDirectory()
        let http = Self.freePort(), dicom = Self.freePort()
        let config: [String: Any] = [
            "Name": "bonetriage-test", "StorageDirectory": dir.path("storage"), "IndexDirectory": dir.path("index"),
            "HttpPort": http, "DicomPort": dicom, "DicomAet": "ORTHANC", "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false, "Plugins": [String](),
            "DicomModalities": ["bt": ["BONETRIAGE", "127.0.0.1", daemon.port]],
        ]
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir.path("orthanc.json")))
        let orthanc = Process()
        orthanc.executableURL = URL(fileURLWithPath: try #require(OrthancServer.path))
        orthanc.arguments = [dir.path("orthanc.json")]
        orthanc.standardOutput = FileHandle.nullDevice
        orthanc.standardError = try FileHandle(forWritingTo: { _ = FileManager.default.createFile(atPath: dir.path("orthanc.log"), contents: nil); return URL(fileURLWithPath: dir.path("orthanc.log")) }())
        try orthanc.run()
        defer {
            orthanc.terminate()
            let deadline = Date().addingTimeInterval(10)
            while orthanc.isRunning && Date() < deadline { usleep(100_000) }
            if orthanc.isRunning { kill(orthanc.processIdentifier, SIGKILL) }
        }
        let base = "http://127.0.0.1:\(http)"
        try daemon.waitFor("Orthanc's REST API", timeout: 60) {
            (try? DaemonHarness.run("curl", ["-s", "-f", base + "/system"]))?.status == 0
        }

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
}

enum OrthancServer {
    static var path: String? { FileManager.default.isExecutableFile(atPath: "/usr/sbin/Orthanc") ? "/usr/sbin/Orthanc" : nil }
}
