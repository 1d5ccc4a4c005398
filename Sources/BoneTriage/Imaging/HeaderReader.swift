import CSystem
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A DICOM header reader and PNG checker that several threads share (the receiver's associations and
/// the drop-folder watcher).
public protocol HeaderReader: Sendable {
    func metadata(path: String) throws(ImagingError) -> DicomMetadata
    func checkPNG(path: String, maximumPixels: UInt64) throws(ImagingError)
    /// Lets go of the reader's processes, if it has any.
    func close()
}

extension HeaderReader {
    public func close() {}
}

/// Reads headers in this process.
public struct InProcessHeaderReader: HeaderReader {
    public init() {}

    public func metadata(path: String) throws(ImagingError) -> DicomMetadata {
        do { return try DicomReader.metadata(path: path) } catch let error as ImagingError { throw error } catch {
            throw .notDICOM(path: path, reason: "\(error)")
        }
    }

    public func checkPNG(path: String, maximumPixels: UInt64) throws(ImagingError) {
        do { _ = try PNGReader.read(path: path, maximumPixels: maximumPixels) } catch let error as ImagingError { throw error } catch {
            throw .notPNG(path: path, reason: "\(error)")
        }
    }
}

/// Reads headers in a few shared decoder processes, one file at a time each (a header takes about a
/// millisecond), so that a file that crashes the parser is refused instead of taking the daemon down,
/// and a file that hangs one process (for up to its time-out) leaves the others to the other senders.
public final class IsolatedHeaderReader: HeaderReader {
    private final class Slot: Sendable {
        let decoder: Mutex<IsolatedDecoder>
        init(_ decoder: sending IsolatedDecoder) { self.decoder = Mutex(decoder) }
    }

    private let slots: [Slot]
    private let next = Atomic<Int>(0)
    /// The longest a header read or PNG check may take: the receiver's associations wait for it.
    public static let maximumTimeout: Double = 10
    /// What a header read that ran out of time is told it exceeded.
    public static let timeoutSetting = "the limit for reading a header or checking a PNG: [triage] decode_timeout_seconds, at most "
        + "\(IsolatedDecoder.format(maximumTimeout)) s"

    public init(executable: String, timeout: Double, processes: Int = 2,
                environment: [String: String] = ProcessInfo.processInfo.environment, onEvent: (@Sendable (String) -> Void)? = nil) {
        slots = (0..<max(1, processes)).map { _ in
            let decoder = IsolatedDecoder(executable: executable, timeout: min(timeout, Self.maximumTimeout), timeoutSetting: Self.timeoutSetting,
                                          environment: environment)
            decoder.onEvent = onEvent
            decoder.start()
            return Slot(decoder)
        }
    }

    /// Runs `body` on a free decoder process, or waits for the next one in turn when all are busy.
    private func withDecoder<T: Sendable>(_ body: @Sendable (IsolatedDecoder) throws(ImagingError) -> T) throws(ImagingError) -> T {
        for slot in slots {
            let free: Result<T, ImagingError>? = slot.decoder.withLockIfAvailable { decoder in
                do throws(ImagingError) { return .success(try body(decoder)) } catch { return .failure(error) }
            }
            if let free { return try free.get() }
        }
        let turn = next.wrappingAdd(1, ordering: .relaxed).oldValue % slots.count
        let result: Result<T, ImagingError> = slots[turn].decoder.withLock { decoder in
            do throws(ImagingError) { return .success(try body(decoder)) } catch { return .failure(error) }
        }
        return try result.get()
    }

    public func metadata(path: String) throws(ImagingError) -> DicomMetadata {
        try withDecoder { decoder throws(ImagingError) in try decoder.header(path: path) }
    }

    public func checkPNG(path: String, maximumPixels: UInt64) throws(ImagingError) {
        try withDecoder { decoder throws(ImagingError) in try decoder.checkPNG(path: path, maximumPixels: maximumPixels) }
    }

    /// The decoder processes' IDs (those running).
    public var processIDs: [pid_t] { slots.compactMap { $0.decoder.withLock { $0.childProcessID } } }

    /// Ends the decoder processes.
    public func close() { slots.forEach { $0.decoder.withLock { $0.close() } } }
}
