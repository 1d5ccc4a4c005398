/// A worklist on a database server that can go away and come back, perhaps as another server (a
/// PostgreSQL failover to a replica). With asynchronous replication, what the old primary committed
/// just before it died may be missing on the new one; the daemon, which still holds those instances in
/// its spool, checks them against the worklist each time `connectionFaults` moves.
public protocol WorklistConnectionFaults: AnyObject, Sendable {
    /// How many times a connection was lost, could not be made, or reached a server that refused a write.
    var connectionFaults: Int { get }
}

extension PostgresWorklist: WorklistConnectionFaults {
    public var connectionFaults: Int { pool.connectionFaults }
}
