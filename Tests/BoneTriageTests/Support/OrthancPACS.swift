import BoneTriage
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

enum OrthancServer {
    static var path: String? { FileManager.default.isExecutableFile(atPath: "/usr/sbin/Orthanc") ? "/usr/sbin/Orthanc" : nil }
}

/// Orthanc (Debian package `orthanc`) as a test PACS: a throwaway configuration and storage on free
/// ports, knowing BoneTriage as modality `bt` (its calling AE title, and the port Orthanc sends studies
/// to); stopped by `stop` (SIGTERM, then SIGKILL) and started again on the same ports and storage by
/// `start`. REST helpers read what it holds.
final class OrthancPACS {
    /// Orthanc's own AE title: what BoneTriage calls.
    let aeTitle = "ORTHANC"
    let httpPort: Int
    let dicomPort: Int
    let dir: TemporaryDirectory
    let callingAETitle: String
    private var process: Process?
    private var runs = 0

    static var available: Bool { OrthancServer.path != nil && DicomTools.find("curl") != nil }
    static let unavailable = "skipped: needs Orthanc (/usr/sbin/Orthanc, Debian package orthanc) and curl; `make test` installs them"

    var base: String { "http://127.0.0.1:\(httpPort)" }
    var log: String { (1...max(runs, 1)).map { (try? String(contentsOfFile: dir.path("orthanc-\($0).log"), encoding: .utf8)) ?? "" }.joined() }
    var isRunning: Bool { process?.isRunning ?? false }

    /// Starts Orthanc. `callingAETitle` and `callingPort` describe BoneTriage (Orthanc's modality `bt`);
    /// with `onlyKnownCallers`, Orthanc stores only what modalities it knows send.
    init(callingAETitle: String = "BONETRIAGE", callingPort: Int = 104, onlyKnownCallers: Bool = false) throws {
        dir = try TemporaryDirectory()
        self.callingAETitle = callingAETitle
        httpPort = Self.freePort()
        dicomPort = Self.freePort()
        let config: [String: Any] = [
            "Name": "bonetriage-test", "StorageDirectory": dir.path("storage"), "IndexDirectory": dir.path("index"),
            "HttpPort": httpPort, "DicomPort": dicomPort, "DicomAet": aeTitle, "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false, "Plugins": [String](), "DicomAlwaysAllowStore": !onlyKnownCallers,
            "DicomModalities": ["bt": [callingAETitle, "127.0.0.1", callingPort]],
        ]
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: dir.path("orthanc.json")))
        try start()
    }

    deinit { stop() }

    /// Starts it (again) on the same ports and storage; returns when its REST API answers.
    func start() throws {
        guard !isRunning else { return }
        runs += 1
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try #require(OrthancServer.path))
        p.arguments = [dir.path("orthanc.json")]
        p.standardOutput = FileHandle.nullDevice
        let logPath = dir.path("orthanc-\(runs).log")
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if (try? DaemonHarness.run("curl", ["-s", "-f", base + "/system"]))?.status == 0 { return }
            if !p.isRunning { break }
            usleep(100_000)
        }
        throw OrthancError(description: "Orthanc did not answer on \(base) within 60 s:\n\(log)")
    }

    func stop() {
        guard let p = process, p.isRunning else { return }
        p.terminate()
        let deadline = Date().addingTimeInterval(10)
        while p.isRunning && Date() < deadline { usleep(100_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
    }

    /// Where BoneTriage sends results to this PACS.
    func destination(timeoutSeconds: Double = 30) -> ResultDestination {
        ResultDestination(aeTitle: aeTitle, host: "127.0.0.1", port: dicomPort, callingAETitle: callingAETitle, timeoutSeconds: timeoutSeconds)
    }

    struct OrthancError: Error, CustomStringConvertible { let description: String }

    // MARK: REST

    /// curl against the REST API (`path` from "/"), failing on an HTTP error.
    func curl(_ arguments: [String]) throws -> Data {
        let r = try DaemonHarness.run("curl", ["-s", "-S", "-f", "--max-time", "120"] + arguments)
        guard r.status == 0 else { throw OrthancError(description: "curl \(arguments.joined(separator: " ")) failed (\(r.status)): \(r.output)") }
        return Data(r.output.utf8)
    }

    func get(_ path: String) throws -> Any {
        try JSONSerialization.jsonObject(with: try curl([base + path]))
    }

    func post(_ path: String, body: String) throws -> Any {
        try JSONSerialization.jsonObject(with: try curl(["-X", "POST", "--data-binary", body, base + path]))
    }

    /// Uploads a DICOM file (`POST /instances`): Orthanc's ids of the instance and its study.
    @discardableResult
    func upload(_ path: String) throws -> (instance: String, study: String) {
        let answer = try #require(try post("/instances", body: "@" + path) as? [String: Any])
        return (try #require(answer["ID"] as? String, "\(answer)"), try #require(answer["ParentStudy"] as? String, "\(answer)"))
    }

    /// Orthanc's id of the study with this Study Instance UID, if it holds one.
    func study(uid: String) throws -> String? {
        let found = try #require(try post("/tools/lookup", body: uid) as? [[String: Any]])
        return found.first { $0["Type"] as? String == "Study" }?["ID"] as? String
    }

    /// The instances of a study (Orthanc's id), each as `/studies/{id}/instances` gives it.
    func instances(ofStudy id: String) throws -> [[String: Any]] {
        try #require(try get("/studies/\(id)/instances") as? [[String: Any]])
    }

    /// The instances filed under the study with this Study Instance UID (none when Orthanc has no such study).
    func instances(ofStudyUID uid: String) throws -> [[String: Any]] {
        guard let id = try study(uid: uid) else { return [] }
        return try instances(ofStudy: id)
    }

    /// An instance's tags by name (`/instances/{id}/tags?simplify`).
    func tags(instance id: String) throws -> [String: Any] {
        try #require(try get("/instances/\(id)/tags?simplify") as? [String: Any])
    }

    /// An instance's DICOM file, saved at `path`.
    func file(instance id: String, to path: String) throws {
        _ = try curl(["-o", path, base + "/instances/\(id)/file"])
    }

    /// A free TCP port on the loopback interface.
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
}
