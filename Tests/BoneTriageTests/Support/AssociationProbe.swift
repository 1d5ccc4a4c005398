import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A DICOM upper-layer client written from PS3.8 for the tests, independent of DCMTK: it opens plain TCP
/// connections (from a chosen loopback address, to look like several hosts), proposes presentation contexts
/// in an A-ASSOCIATE-RQ and reads what the receiver answers for each one.
enum AssociationProbe {
    struct Failed: Error, CustomStringConvertible { let description: String }

    static let explicitLittleEndian = "1.2.840.10008.1.2.1"
    static let implicitLittleEndian = "1.2.840.10008.1.2"

    /// A connected TCP socket to 127.0.0.1:`port`, bound first to `from` (any 127.x.y.z is this machine).
    /// Reads give up after `receiveTimeout` seconds.
    static func connect(port: Int, from local: String = "127.0.0.1", receiveTimeout: Int = 60) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failed(description: "socket: \(String(cString: strerror(errno)))") }
        func address(_ ip: String, _ port: Int) -> sockaddr_in {
            var a = sockaddr_in()
            a.sin_family = sa_family_t(AF_INET)
            a.sin_port = in_port_t(UInt16(port).bigEndian)
            a.sin_addr.s_addr = inet_addr(ip)
            return a
        }
        var source = address(local, 0), target = address("127.0.0.1", port)
        var timeout = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &source) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        let connected = bound == 0 ? withUnsafePointer(to: &target) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) } } : -1
        guard connected == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw Failed(description: "cannot connect from \(local) to port \(port): \(why)")
        }
        return fd
    }

    /// Whether the peer has closed this connection (end of file or reset), without waiting.
    static func closedByPeer(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT))
        if n == 0 { return true }
        if n < 0 { return errno != EAGAIN && errno != EWOULDBLOCK }
        return false
    }

    /// Blocks until the peer closes the connection or the socket's receive timeout passes; true if it closed.
    static func waitUntilClosedByPeer(_ fd: Int32) -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, Int32(MSG_PEEK))
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    enum Answer {
        /// A-ASSOCIATE-AC: per proposed context ID, the result (0 acceptance, 3 abstract syntax not
        /// supported, 4 transfer syntaxes not supported, ...) and the accepted transfer syntax.
        case accepted([UInt8: (result: UInt8, transferSyntax: String)])
        /// A-ASSOCIATE-RJ: result, source, reason.
        case rejected(result: UInt8, source: UInt8, reason: UInt8)
    }

    /// Proposes one presentation context per abstract syntax (at most 128: context IDs are odd bytes),
    /// each with `transferSyntaxes`, then releases the association if it was accepted.
    static func propose(_ abstractSyntaxes: [String], transferSyntaxes: [String] = [explicitLittleEndian, implicitLittleEndian],
                        port: Int, callingAE: String = "STORESCU", calledAE: String = "BONETRIAGE") throws -> (contexts: [UInt8: String], answer: Answer) {
        guard abstractSyntaxes.count <= 128 else { throw Failed(description: "at most 128 presentation contexts per association") }
        let fd = try connect(port: port)
        defer { close(fd) }
        var contexts: [UInt8: String] = [:]
        var body = Data()
        body += u16(1) + Data([0, 0]) + aeTitle(calledAE) + aeTitle(callingAE) + Data(count: 32)
        body += item(0x10, Data("1.2.840.10008.3.1.1.1".utf8))
        for (i, uid) in abstractSyntaxes.enumerated() {
            let id = UInt8(2 * i + 1)
            contexts[id] = uid
            var pc = Data([id, 0, 0, 0]) + item(0x30, Data(uid.utf8))
            for ts in transferSyntaxes { pc += item(0x40, Data(ts.utf8)) }
            body += item(0x20, pc)
        }
        body += item(0x50, item(0x51, u32(65536)) + item(0x52, Data("1.2.826.0.1.3680043.10.999".utf8)))
        try send(fd, pdu(0x01, body))
        let (type, answer) = try readPDU(fd)
        switch type {
        case 0x02:
            var results: [UInt8: (result: UInt8, transferSyntax: String)] = [:]
            var offset = 68
            while offset + 4 <= answer.count {
                let itemType = answer[offset], length = Int(answer[offset + 2]) << 8 | Int(answer[offset + 3])
                let value = answer.subdata(in: (offset + 4)..<min(answer.count, offset + 4 + length))
                if itemType == 0x21, value.count >= 4 {
                    var ts = ""
                    if value.count >= 8, value[value.startIndex + 4] == 0x40 {
                        let tsLength = Int(value[value.startIndex + 6]) << 8 | Int(value[value.startIndex + 7])
                        ts = String(decoding: value.dropFirst(8).prefix(tsLength), as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: "\0 "))
                    }
                    results[value[value.startIndex]] = (value[value.startIndex + 2], ts)
                }
                offset += 4 + length
            }
            try send(fd, pdu(0x05, Data(count: 4)))
            _ = try? readPDU(fd)
            return (contexts, .accepted(results))
        case 0x03:
            guard answer.count >= 4 else { throw Failed(description: "short A-ASSOCIATE-RJ") }
            return (contexts, .rejected(result: answer[1], source: answer[2], reason: answer[3]))
        default:
            throw Failed(description: "unexpected PDU type \(type) in answer to A-ASSOCIATE-RQ")
        }
    }

    private static func u16(_ v: Int) -> Data { Data([UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]) }
    private static func u32(_ v: Int) -> Data { Data([UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]) }
    private static func aeTitle(_ s: String) -> Data { Data(s.utf8.prefix(16)) + Data(repeating: 0x20, count: max(0, 16 - s.utf8.count)) }
    private static func item(_ type: UInt8, _ value: Data) -> Data { Data([type, 0]) + u16(value.count) + value }
    private static func pdu(_ type: UInt8, _ value: Data) -> Data { Data([type, 0]) + u32(value.count) + value }

    private static func send(_ fd: Int32, _ data: Data) throws {
        var sent = 0
        while sent < data.count {
            let n = data.withUnsafeBytes { bytes in
                bytes.baseAddress.map { Glibc.send(fd, $0 + sent, data.count - sent, Int32(MSG_NOSIGNAL)) } ?? -1
            }
            guard n > 0 else { throw Failed(description: "send: \(String(cString: strerror(errno)))") }
            sent += n
        }
    }

    private static func readExactly(_ fd: Int32, _ count: Int) throws -> Data {
        var data = Data(count: count)
        var got = 0
        while got < count {
            let n = data.withUnsafeMutableBytes { bytes in bytes.baseAddress.map { recv(fd, $0 + got, count - got, 0) } ?? -1 }
            guard n > 0 else { throw Failed(description: n == 0 ? "the receiver closed the connection" : "recv: \(String(cString: strerror(errno)))") }
            got += n
        }
        return data
    }

    private static func readPDU(_ fd: Int32) throws -> (UInt8, Data) {
        let header = try readExactly(fd, 6)
        let length = header[2...5].reduce(0) { $0 << 8 | Int($1) }
        guard length <= 1 << 20 else { throw Failed(description: "PDU of \(length) bytes") }
        return (header[0], try readExactly(fd, length))
    }
}
