import CDCMTK
import Foundation

/// Sends result objects to a PACS with C-STORE (DCMTK): one association per call, addressed to the
/// destination's AE title from its calling AE title, proposing each file's SOP class in explicit and
/// implicit VR little endian; the destination's `timeoutSeconds` bounds the TCP connect, the answer to
/// the association request and each C-STORE response (a write to a peer that stops reading ends after
/// DCMTK's socket send timeout, 60 s), so a call never hangs.
/// Each call has its own association: one call at a time per thread, any number of threads.
public struct StorageSCU: ResultSending {
    public init() {}

    public func send(_ paths: [String], to destination: ResultDestination) -> [StoreOutcome] {
        guard !paths.isEmpty else { return [] }
        if let problem = Self.problem(with: destination) {
            return paths.map { _ in .retryLater(reason: "destination \(destination.name): \(problem); fix its [[results]] entry") }
        }
        let strings = CStringArena()
        var settings = bt_scu_settings()
        settings.calling_ae_title = strings(destination.callingAETitle)
        settings.called_ae_title = strings(destination.aeTitle)
        settings.host = strings(destination.host)
        settings.port = UInt16(destination.port)
        let seconds = destination.timeoutSeconds.isFinite ? destination.timeoutSeconds.rounded(.up) : 30
        settings.timeout_seconds = Int32(max(1, min(3600, seconds)))
        let cPaths = paths.map { strings($0) }
        var results = [bt_store_result](repeating: bt_store_result(), count: paths.count)
        _ = cPaths.withUnsafeBufferPointer { pathBuffer in
            results.withUnsafeMutableBufferPointer { resultBuffer in
                bt_scu_send(&settings, pathBuffer.baseAddress, pathBuffer.count, resultBuffer.baseAddress)
            }
        }
        return results.map { result in
            let message = withUnsafeBytes(of: result.message) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            switch Int(result.kind) {
            case BT_STORE_ANSWERED:
                return Self.outcome(status: result.status, comment: message.isEmpty ? nil : message, destination: destination.name)
            case BT_STORE_NOT_ACCEPTED, BT_STORE_BAD_FILE:
                return .refused(reason: message)
            default:
                return .retryLater(reason: message)
            }
        }
    }

    /// What a C-STORE response status means for the object (PS3.4 B.2.3, PS3.7 C).
    public static func outcome(status: UInt16, comment: String?, destination: String = "the destination") -> StoreOutcome {
        let code = String(format: "0x%04X", status)
        let said = comment.map { ", saying \"\($0)\"" } ?? ""
        switch status {
        case 0x0000:
            return .stored(warning: nil)
        case 0xB000:
            return .stored(warning: "\(destination) stored it with a warning (\(code), coercion of data elements)\(said)")
        case 0xB007:
            return .stored(warning: "\(destination) stored it with a warning (\(code), data set does not match SOP class)\(said)")
        case 0xB006:
            return .stored(warning: "\(destination) stored it with a warning (\(code), elements discarded)\(said)")
        case 0x0001, 0xB001...0xBFFF:
            return .stored(warning: "\(destination) stored it with a warning (\(code))\(said)")
        case 0xA700...0xA7FF:
            return .retryLater(reason: "\(destination) is out of resources (\(code))\(said)")
        case 0x0213:
            return .retryLater(reason: "\(destination) has reached a resource limitation (\(code))\(said)")
        case 0xA900...0xA9FF:
            return .refused(reason: "\(destination) refused it: data set does not match SOP class (\(code))\(said)")
        case 0xC000...0xCFFF:
            return .refused(reason: "\(destination) refused it: cannot understand (\(code))\(said)")
        case 0x0122:
            return .refused(reason: "\(destination) refused it: SOP class not supported (\(code))\(said)")
        case 0x0124:
            return .refused(reason: "\(destination) refused it: not authorized (\(code))\(said)")
        case 0x0111:
            return .refused(reason: "\(destination) refused it: duplicate SOP instance (\(code))\(said)")
        default:
            return .refused(reason: "\(destination) refused it with status \(code)\(said)")
        }
    }

    /// What is wrong with a destination before any connection is tried (AE titles, port).
    static func problem(with d: ResultDestination) -> String? {
        func aeProblem(_ title: String, _ what: String) -> String? {
            let trimmed = title.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { return "the \(what) is empty" }
            if title.utf8.count > 16 { return "the \(what) '\(title)' is longer than 16 characters" }
            if title.contains("\\") || title.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value > 0x7E }) {
                return "the \(what) '\(title)' has characters an AE title may not have"
            }
            return nil
        }
        if let p = aeProblem(d.aeTitle, "called AE title") ?? aeProblem(d.callingAETitle, "calling AE title") { return p }
        if !(1...65535).contains(d.port) { return "port \(d.port) is not between 1 and 65535" }
        if d.host.isEmpty { return "the host is empty" }
        return nil
    }
}
