#ifndef BONETRIAGE_SCP_H
#define BONETRIAGE_SCP_H
// A DICOM Storage SCP (C-STORE and C-ECHO) on DCMTK, behind a plain C API. The listener only accepts
// TCP connections; each connection gets its own thread, which reads its A-ASSOCIATE-RQ (within the ACSE
// timeout) and then serves the association (up to max_associations at once), so a connection that says
// nothing never holds up the others. Connections still waiting for their A-ASSOCIATE-RQ are limited,
// overall and per peer address; one beyond a limit is closed at once. Every received
// dataset is streamed to a file exactly as sent (bit-preserving, with a Part 10 meta header) and fsync'd;
// the `store` callback then decides the DIMSE status that is answered, so the caller can make the file
// durable and recorded before the sender hears "success".
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_scp bt_scp;

typedef struct bt_scp_settings {
    /// The called AE title this SCP answers to (associations addressed to another title are refused).
    const char *ae_title;
    /// IPv4 address to listen on ("0.0.0.0" for every interface).
    const char *bind_address;
    /// TCP port; 0 picks a free one (see bt_scp_port).
    uint16_t port;
    /// Folder for datasets being received (same file system as the spool, so a rename is atomic).
    const char *incoming_folder;
    int max_associations;
    /// Connections accepted but still waiting for their A-ASSOCIATE-RQ: at most this many in all, and
    /// at most max_pending_per_address from one IPv4 address; a connection beyond either is closed at once.
    /// A connection from a listed address (callbacks.listed_address) is held to the per-address limit only,
    /// so strangers filling the overall limit cannot lock out the senders the allow-list names.
    int max_pending_connections;
    int max_pending_per_address;
    /// Seconds to wait for an A-ASSOCIATE-RQ after connect, and for the next DIMSE message.
    int acse_timeout;
    int dimse_timeout;
    uint32_t max_pdu;
    /// C-STORE is answered 0xA700 (out of resources) when the incoming folder has less free space.
    uint32_t minimum_free_mb;
} bt_scp_settings;

/// One received C-STORE, already in `file_path` (fsync'd). Strings are valid during the callback only.
typedef struct bt_scp_store_request {
    const char *file_path;
    const char *sop_class_uid;
    const char *sop_instance_uid;
    const char *transfer_syntax_uid;
    const char *calling_ae;
    const char *peer_address;
} bt_scp_store_request;

enum {
    BT_SCP_ACCEPT = 0,
    BT_SCP_REFUSE_CALLING_AE = 1,
    BT_SCP_REFUSE_HOST = 2,
};

enum { BT_LOG_DEBUG = 0, BT_LOG_INFO = 1, BT_LOG_WARNING = 2, BT_LOG_ERROR = 3 };

typedef struct bt_scp_callbacks {
    void *context;
    /// Whether a calling AE title from this peer address may associate: one of BT_SCP_ACCEPT / _REFUSE_*.
    int (*accept_caller)(void *context, const char *calling_ae, const char *peer_address);
    /// Whether this peer address is one the allowed callers name in their hosts (1) or not (0). Optional.
    int (*listed_address)(void *context, const char *peer_address);
    /// Takes over the received file (moves or removes it) and returns the DIMSE status to answer.
    uint16_t (*store)(void *context, const bt_scp_store_request *request);
    /// One line per association event (no patient data is ever passed here).
    void (*log)(void *context, int level, const char *message);
} bt_scp_callbacks;

/// Opens the listening socket. NULL on failure (port in use, bad address, ...), with `error` set.
bt_scp *bt_scp_open(const bt_scp_settings *settings, bt_scp_callbacks callbacks, char *error, size_t error_size);
/// The port actually listened on.
uint16_t bt_scp_port(const bt_scp *scp);
/// Accepts associations until bt_scp_stop; then waits for running associations to end. Returns 0.
int bt_scp_run(bt_scp *scp);
/// Thread-safe: stop accepting (within about half a second); connections that have not sent their
/// A-ASSOCIATE-RQ yet are closed at once; running associations finish.
void bt_scp_stop(bt_scp *scp);
/// Thread-safe: associations being served now, and served in all.
int bt_scp_active_associations(const bt_scp *scp);
uint64_t bt_scp_total_associations(const bt_scp *scp);
/// Thread-safe: connections waiting for their A-ASSOCIATE-RQ now.
int bt_scp_pending_connections(const bt_scp *scp);
/// The storage SOP classes accepted (DCMTK's dcmAllStorageSOPClassUIDs): their count, and one by index.
int bt_scp_storage_sop_class_count(void);
const char *bt_scp_storage_sop_class(int index);
/// Only after bt_scp_run has returned (or was never called).
void bt_scp_close(bt_scp *scp);

#ifdef __cplusplus
}
#endif
#endif
