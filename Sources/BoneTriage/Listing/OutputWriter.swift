import Foundation

/// The reader of a listing went away (a pager was quit, `| head` had enough): stop writing, quietly.
public struct OutputClosed: Error {}

/// Buffered writes to a file descriptor: a listing of 100,000 studies goes out in 64 KiB blocks as it
/// is read, never held whole.
public final class OutputWriter {
    public let fd: Int32
    private var buffer: [UInt8] = []
    private let capacity: Int

    public init(fd: Int32, capacity: Int = 1 << 16) {
        self.fd = fd
        self.capacity = capacity
        buffer.reserveCapacity(capacity + 4096)
    }

    public func write(_ text: String) throws {
        buffer.append(contentsOf: text.utf8)
        if buffer.count >= capacity { try flush() }
    }

    public func line(_ text: String) throws { try write(text + "\n") }

    public func flush() throws {
        var offset = 0
        while offset < buffer.count {
            let n = buffer.withUnsafeBytes { bytes in systemWrite(fd, bytes.baseAddress.map { $0 + offset }, bytes.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                buffer.removeAll(keepingCapacity: true)
                if errno == EPIPE { throw OutputClosed() }
                throw OutputError(reason: String(cString: strerror(errno)))
            }
            offset += n
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer?, _ count: Int) -> Int { write(fd, bytes, count) }

public struct OutputError: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { "cannot write the output: \(reason)" }
}
