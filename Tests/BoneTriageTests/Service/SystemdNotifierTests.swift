import BoneTriage
import Foundation
import Testing

@Suite("systemd notify protocol")
struct SystemdNotifierTests {
    /// A datagram socket standing in for systemd; returns what it received.
    func receive(on path: String, abstract: Bool, _ body: () -> Void) throws -> String {
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(path.utf8)
        if abstract { bytes.insert(0, at: 0) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        #expect(bound == 0, "bind: \(String(cString: strerror(errno)))")
        body()
        var buffer = [UInt8](repeating: 0, count: 4096)
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
    }

    @Test("READY and STATUS reach a path socket and an abstract one; without NOTIFY_SOCKET nothing is sent")
    func notify() throws {
        let dir = try TemporaryDirectory()
        let path = dir.path("notify.sock")
        let got = try receive(on: path, abstract: false) {
            #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": path]).notify("READY=1\nSTATUS=listening on 11112"))
        }
        #expect(got == "READY=1\nSTATUS=listening on 11112")
        let name = "bonetriage-test-\(getpid())"
        let abstract = try receive(on: name, abstract: true) {
            #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": "@" + name]).notify("WATCHDOG=1"))
        }
        #expect(abstract == "WATCHDOG=1")
        #expect(!SystemdNotifier(environment: [:]).notify("READY=1"))
        #expect(!SystemdNotifier(environment: ["NOTIFY_SOCKET": dir.path("nobody-listens.sock")]).notify("READY=1"))
    }
}
