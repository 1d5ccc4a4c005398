import CDCMTK
import Foundation
import Logging
import Synchronization

public enum StorageReceiverError: Error, CustomStringConvertible {
    case cannotListen(reason: String)
    public var description: String {
        switch self {
        case let .cannotListen(reason): return "the DICOM receiver cannot start: \(reason); check [dicom] bind_address and port (is another receiver using it?)"
        }
    }
}

/// The DICOM C-STORE (and C-ECHO) receiver: DCMTK's association handling behind `bt_scp.h`, with every
/// received dataset handed to the intake, whose answer becomes the DIMSE status. Calling AE titles and
/// their addresses are checked against the allowed callers at association time; `updateAllowedCallers`
/// takes effect for the next association (SIGHUP) without dropping running ones.
public final class StorageReceiver: @unchecked Sendable {
    final class Context: Sendable {
        let intake: InstanceIntake
        let callers: Mutex<[AllowedCaller]>
        let logger: Logger

        init(intake: InstanceIntake, callers: [AllowedCaller], logger: Logger) {
            self.intake = intake
            self.callers = Mutex(callers)
            self.logger = logger
        }
    }

    private let handle: OpaquePointer
    private let context: Unmanaged<Context>
    public let port: UInt16
    public let aeTitle: String

    public init(configuration c: BoneTriageConfiguration, intake: InstanceIntake, logger: Logger) throws {
        let context = Unmanaged.passRetained(Context(intake: intake, callers: c.allowedCallers, logger: logger))
        var callbacks = bt_scp_callbacks()
        callbacks.context = context.toOpaque()
        callbacks.accept_caller = { raw, ae, address in
            guard let raw, let ae, let address else { return Int32(BT_SCP_REFUSE_CALLING_AE) }
            let context = Unmanaged<Context>.fromOpaque(raw).takeUnretainedValue()
            let title = String(cString: ae), ip = String(cString: address)
            let callers = context.callers.withLock { $0 }
            if callers.contains(where: { $0.admits(aeTitle: title, from: ip) }) { return Int32(BT_SCP_ACCEPT) }
            return callers.contains(where: { $0.aeTitle == title }) ? Int32(BT_SCP_REFUSE_HOST) : Int32(BT_SCP_REFUSE_CALLING_AE)
        }
        callbacks.listed_address = { raw, address in
            guard let raw, let address, let ip = IPv4Range.parseAddress(String(cString: address)) else { return 0 }
            let callers = Unmanaged<Context>.fromOpaque(raw).takeUnretainedValue().callers.withLock { $0 }
            return callers.contains { $0.hosts.contains { $0.contains(ip) } } ? 1 : 0
        }
        callbacks.store = { raw, request in
            guard let raw, let r = request?.pointee, let path = r.file_path else { return StoreStatus.outOfResources.rawValue }
            let context = Unmanaged<Context>.fromOpaque(raw).takeUnretainedValue()
            func text(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }
            let received = ReceivedInstance(temporaryPath: String(cString: path), sopClassUID: text(r.sop_class_uid),
                                            sopInstanceUID: text(r.sop_instance_uid), callingAETitle: text(r.calling_ae),
                                            peerAddress: text(r.peer_address))
            return context.intake.store(received).rawValue
        }
        callbacks.log = { raw, level, message in
            guard let raw, let message else { return }
            let logger = Unmanaged<Context>.fromOpaque(raw).takeUnretainedValue().logger
            let text = Logger.Message(stringLiteral: String(cString: message))
            switch Int(level) {
            case Int(BT_LOG_ERROR): logger.error(text)
            case Int(BT_LOG_WARNING): logger.warning(text)
            case Int(BT_LOG_INFO): logger.info(text)
            default: logger.debug(text)
            }
        }
        var error = [CChar](repeating: 0, count: 512)
        let spoolIncoming = intake.spool.incoming
        let opened: OpaquePointer? = c.aeTitle.withCString { ae in
            c.bindAddress.withCString { bind in
                spoolIncoming.withCString { incoming in
                    var settings = bt_scp_settings()
                    settings.ae_title = ae
                    settings.bind_address = bind
                    settings.port = UInt16(c.port)
                    settings.incoming_folder = incoming
                    settings.max_associations = Int32(c.maxAssociations)
                    settings.max_pending_connections = Int32(c.maxPendingConnections)
                    settings.max_pending_per_address = Int32(c.maxPendingConnectionsPerAddress)
                    settings.acse_timeout = Int32(c.acseTimeout)
                    settings.dimse_timeout = Int32(c.dimseTimeout)
                    settings.max_pdu = UInt32(c.maxPDU)
                    settings.minimum_free_mb = UInt32(c.minimumFreeSpaceMB)
                    return bt_scp_open(&settings, callbacks, &error, error.count)
                }
            }
        }
        guard let opened else {
            context.release()
            throw StorageReceiverError.cannotListen(reason: String(decoding: error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        handle = opened
        self.context = context
        port = bt_scp_port(opened)
        aeTitle = c.aeTitle
    }

    deinit {
        bt_scp_close(handle)
        context.release()
    }

    /// Serves associations until `stop()`, then waits for the running ones to end. Blocks: run it on
    /// its own thread.
    public func run() { _ = bt_scp_run(handle) }

    /// Stops accepting connections within about half a second and closes those that have not sent their
    /// A-ASSOCIATE-RQ; running associations finish.
    public func stop() { bt_scp_stop(handle) }

    public func updateAllowedCallers(_ callers: [AllowedCaller]) {
        context.takeUnretainedValue().callers.withLock { $0 = callers }
    }

    /// The storage SOP classes the receiver accepts (DCMTK 3.6.7's `dcmAllStorageSOPClassUIDs`), besides Verification.
    public static var storageSOPClassUIDs: [String] {
        (0..<Int(bt_scp_storage_sop_class_count())).compactMap { bt_scp_storage_sop_class(Int32($0)).map { String(cString: $0) } }
    }

    public var activeAssociations: Int { Int(bt_scp_active_associations(handle)) }
    /// Connections accepted that have not sent their A-ASSOCIATE-RQ yet.
    public var pendingConnections: Int { Int(bt_scp_pending_connections(handle)) }
    public var totalAssociations: UInt64 { bt_scp_total_associations(handle) }
}
