#include "bt_scp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/dulstruc.h"
#include "dcmtk/dcmnet/scpthrd.h"
#include "dcmtk/oflog/oflog.h"

struct bt_scp {
    std::string aeTitle, bindAddress, incoming;
    bt_scp_settings settings{};
    bt_scp_callbacks callbacks{};
    T_ASC_Network *network = nullptr;
    uint16_t port = 0;
    std::atomic<bool> stopping{false};
    std::atomic<int> active{0};
    std::atomic<uint64_t> total{0};
    std::atomic<uint64_t> fileCounter{0};
    std::string fileStem;
    std::mutex mutex;
    std::condition_variable idle;
    DcmSharedSCPConfig config;

    void log(int level, const std::string &message) const {
        if (callbacks.log) callbacks.log(callbacks.context, level, message.c_str());
    }
};

static std::string trimmed(const OFString &value) {
    std::string s(value.c_str());
    size_t start = s.find_first_not_of(' ');
    size_t end = s.find_last_not_of(' ');
    return start == std::string::npos ? std::string() : s.substr(start, end - start + 1);
}

static void setError(char *error, size_t size, const std::string &text) {
    if (error && size > 0) snprintf(error, size, "%s", text.c_str());
}

static const char *const verificationSyntaxes[] = {
    UID_LittleEndianExplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
};

/// Compressed syntaxes first, lossless before lossy, so a sender that offers the file's own encoding
/// sends it as it is; the uncompressed ones last.
static const char *const storageSyntaxes[] = {
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    UID_RLELosslessTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEG2000TransferSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_LittleEndianExplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
};

/// One association, on its own thread: C-ECHO through DCMTK, C-STORE here.
class StorageAssociation : public DcmThreadSCP {
public:
    StorageAssociation(bt_scp *owner, T_ASC_Association *association) : owner(owner), association(association) {}

protected:
    /// Accepts, from what the peer proposes, Verification and every storage SOP class DCMTK knows, each
    /// with the first of our transfer syntaxes (in our order of preference) that the peer offers for it.
    /// Built per association from the peer's proposal: a fixed profile holds fewer contexts than there
    /// are storage SOP classes. Anything else is refused context by context (abstract or transfer syntax
    /// not supported); an association left with no accepted context is refused by DCMTK.
    OFCondition negotiateAssociation() override {
        T_ASC_Parameters *params = association->params;
        const char *verification[] = {UID_VerificationSOPClass};
        OFCondition cond = ASC_acceptContextsWithPreferredTransferSyntaxes(
            params, verification, 1, const_cast<const char **>(verificationSyntaxes), int(sizeof verificationSyntaxes / sizeof *verificationSyntaxes));
        // The storage pass refuses what it does not accept, except contexts already accepted (Verification).
        if (cond.good())
            cond = ASC_acceptContextsWithPreferredTransferSyntaxes(params, dcmAllStorageSOPClassUIDs, numberOfDcmAllStorageSOPClassUIDs,
                                                                   const_cast<const char **>(storageSyntaxes),
                                                                   int(sizeof storageSyntaxes / sizeof *storageSyntaxes));
        // No context proposed at all: nothing accepted, so DCMTK refuses the association (no acceptable context).
        if (cond == ASC_NOPRESENTATIONCONTEXTPROPOSED) return EC_Normal;
        if (cond.bad()) {
            owner->log(BT_LOG_ERROR, "cannot negotiate the presentation contexts of " + describePeer() + ": " + cond.text());
            refuseAssociation(DCMSCP_INTERNAL_ERROR);
        }
        return cond;
    }

    OFBool checkCalledAETitleAccepted(const OFString &calledAE) override {
        return trimmed(calledAE) == owner->aeTitle;
    }
    // DCMTK passes the called address here; the peer's own address is what the allow-list is about.
    OFBool checkCallingHostAccepted(const OFString &) override {
        return callerVerdict() != BT_SCP_REFUSE_HOST;
    }
    OFBool checkCallingAETitleAccepted(const OFString &) override {
        return callerVerdict() != BT_SCP_REFUSE_CALLING_AE;
    }

    void refuseAssociation(const DcmRefuseReasonType reason) override {
        const char *why = "refused";
        switch (reason) {
        case DCMSCP_CALLED_AE_TITLE_NOT_RECOGNIZED: why = "called AE title is not ours"; break;
        case DCMSCP_CALLING_AE_TITLE_NOT_RECOGNIZED: why = "calling AE title is not an allowed caller"; break;
        case DCMSCP_CALLING_HOST_NOT_ALLOWED: why = "calling AE title is not allowed from this address"; break;
        case DCMSCP_NO_PRESENTATION_CONTEXTS: why = "no acceptable presentation context"; break;
        case DCMSCP_BAD_APPLICATION_CONTEXT_NAME: why = "not the DICOM application context"; break;
        default: break;
        }
        owner->log(BT_LOG_WARNING, "association refused: " + describePeer() + " called '" + trimmed(getCalledAETitle()) + "': " + why);
        DcmThreadSCP::refuseAssociation(reason);
    }

    void notifyAssociationAcknowledge() override {
        owner->log(BT_LOG_INFO, "association accepted: " + describePeer());
    }
    void notifyReleaseRequest() override {
        owner->log(BT_LOG_INFO, "association released: " + describePeer() + ", " + std::to_string(stored) + " instance(s) acknowledged");
    }
    void notifyAbortRequest() override {
        owner->log(BT_LOG_WARNING, "association aborted by the peer: " + describePeer() + ", " + std::to_string(stored) + " instance(s) acknowledged before");
    }
    void notifyDIMSEError(const OFCondition &cond) override {
        owner->log(BT_LOG_WARNING, "association ended on a DIMSE error: " + describePeer() + ": " + cond.text());
    }

    OFCondition handleIncomingCommand(T_DIMSE_Message *message, const DcmPresentationContextInfo &info) override {
        if (message->CommandField == DIMSE_C_STORE_RQ) return handleStore(message->msg.CStoreRQ, info);
        return DcmThreadSCP::handleIncomingCommand(message, info);
    }

    /// Starts the write-back of what has arrived so far (every 4 MB), so that the fsync before the
    /// answer waits for the tail of the file only.
    void notifyRECEIVEProgress(const unsigned long byteCount) override {
        if (receiving < 0 || byteCount < flushedUpTo + (4u << 20)) return;
        sync_file_range(receiving, 0, 0, SYNC_FILE_RANGE_WRITE);
        flushedUpTo = byteCount;
    }

private:
    bt_scp *owner;
    T_ASC_Association *association;
    int verdict = -1;
    uint64_t stored = 0;
    int receiving = -1;
    unsigned long flushedUpTo = 0;

    int callerVerdict() {
        if (verdict < 0) {
            std::string ae = trimmed(getPeerAETitle()), ip = getPeerIP().c_str();
            verdict = owner->callbacks.accept_caller ? owner->callbacks.accept_caller(owner->callbacks.context, ae.c_str(), ip.c_str())
                                                     : BT_SCP_ACCEPT;
        }
        return verdict;
    }

    std::string describePeer() const {
        return "'" + trimmed(getPeerAETitle()) + "' from " + std::string(getPeerIP().c_str());
    }

    /// Consumes a dataset that cannot be stored, so the association stays usable for the answer.
    OFCondition discardDataset(T_DIMSE_C_StoreRQ &request, const DcmPresentationContextInfo &info, Uint16 status) {
        DcmDataset *dataset = nullptr;
        OFCondition cond = receiveSTORERequest(request, info.presentationContextID, dataset);
        delete dataset;
        if (cond.bad()) return cond;
        return sendSTOREResponse(info.presentationContextID, request, status);
    }

    OFCondition handleStore(T_DIMSE_C_StoreRQ &request, const DcmPresentationContextInfo &info) {
        std::string path = owner->incoming + "/" + owner->fileStem + "-" + std::to_string(owner->fileCounter.fetch_add(1)) + ".part";
        struct statvfs fs {};
        if (statvfs(owner->incoming.c_str(), &fs) == 0) {
            unsigned long long freeBytes = (unsigned long long)fs.f_bavail * fs.f_frsize;
            unsigned long long minimum = (unsigned long long)owner->settings.minimum_free_mb << 20;
            if (freeBytes < minimum) {
                owner->log(BT_LOG_ERROR, "C-STORE refused (0xA700 out of resources): only " + std::to_string(freeBytes >> 20) +
                                             " MB free in " + owner->incoming + "; free disk space or lower [storage] minimum_free_space_mb");
                return discardDataset(request, info, 0xA700);
            }
        }
        // Created here (so an unwritable folder is found before any data is read), kept open to start
        // the write-back while the dataset streams in, and to fsync it at the end.
        receiving = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (receiving < 0) {
            owner->log(BT_LOG_ERROR, "C-STORE refused (0xA700 out of resources): cannot create a file in " + owner->incoming + ": " +
                                         strerror(errno) + "; check the folder's owner and permissions");
            return discardDataset(request, info, 0xA700);
        }
        flushedUpTo = 0;
        OFCondition cond = receiveSTORERequest(request, info.presentationContextID, OFString(path.c_str()));
        int fd = receiving;
        receiving = -1;
        if (cond.bad()) {
            close(fd);
            unlink(path.c_str());
            owner->log(BT_LOG_WARNING, "C-STORE dataset not received from " + describePeer() + ": " + cond.text() + " (nothing was acknowledged)");
            return cond;
        }
        Uint16 status;
        std::string why;
        bool synced = fsync(fd) == 0;
        if (!synced) why = strerror(errno);
        close(fd);
        if (!synced) {
            unlink(path.c_str());
            owner->log(BT_LOG_ERROR, "C-STORE refused (0xA700 out of resources): cannot fsync " + path + ": " + why);
            status = 0xA700;
        } else {
            OFString sopClass, transferSyntax;
            findPresentationContext(info.presentationContextID, sopClass, transferSyntax);
            std::string calling = trimmed(getPeerAETitle()), ip = getPeerIP().c_str();
            bt_scp_store_request r{};
            r.file_path = path.c_str();
            r.sop_class_uid = request.AffectedSOPClassUID;
            r.sop_instance_uid = request.AffectedSOPInstanceUID;
            r.transfer_syntax_uid = transferSyntax.c_str();
            r.calling_ae = calling.c_str();
            r.peer_address = ip.c_str();
            status = owner->callbacks.store ? owner->callbacks.store(owner->callbacks.context, &r) : 0xA700;
        }
        if (status == 0) stored++;
        return sendSTOREResponse(info.presentationContextID, request, status);
    }
};

extern "C" bt_scp *bt_scp_open(const bt_scp_settings *settings, bt_scp_callbacks callbacks, char *error, size_t errorSize) {
    static std::once_flag once;
    std::call_once(once, [] { OFLog::configure(OFLogger::FATAL_LOG_LEVEL); });

    auto *scp = new bt_scp();
    scp->settings = *settings;
    scp->aeTitle = settings->ae_title ? settings->ae_title : "";
    scp->bindAddress = settings->bind_address ? settings->bind_address : "0.0.0.0";
    scp->incoming = settings->incoming_folder ? settings->incoming_folder : ".";
    scp->settings.ae_title = nullptr;
    scp->settings.bind_address = nullptr;
    scp->settings.incoming_folder = nullptr;
    scp->callbacks = callbacks;
    std::random_device random;
    scp->fileStem = std::to_string(getpid()) + "-" + std::to_string(random());

    DcmSCPConfig &config = *scp->config;
    config.setAETitle(scp->aeTitle.c_str());
    config.setRespondWithCalledAETitle(OFFalse);
    config.setMaxReceivePDULength(settings->max_pdu);
    config.setACSETimeout(settings->acse_timeout);
    config.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
    config.setDIMSETimeout(settings->dimse_timeout);
    config.setHostLookupEnabled(OFFalse);
    config.setProgressNotificationMode(OFTrue);
    // No presentation contexts in the profile: StorageAssociation::negotiateAssociation accepts them.

    // DCMTK 3.6.7 always listens on every interface; it opens an ephemeral socket that is replaced
    // here by one bound to the configured address and port.
    OFCondition cond = ASC_initializeNetwork(NET_ACCEPTOR, 0, settings->acse_timeout, &scp->network);
    if (cond.bad()) {
        setError(error, errorSize, std::string("cannot initialise the DICOM network: ") + cond.text());
        delete scp;
        return nullptr;
    }
    auto *key = reinterpret_cast<PRIVATE_NETWORKKEY *>(scp->network->network);
    close(key->networkSpecific.TCP.listenSocket);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int yes = 1;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(settings->port);
    if (fd < 0 || inet_pton(AF_INET, scp->bindAddress.c_str(), &address.sin_addr) != 1 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes) != 0 ||
        bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 || listen(fd, 64) != 0) {
        std::string why = fd < 0 ? strerror(errno) : (inet_pton(AF_INET, scp->bindAddress.c_str(), &address.sin_addr) != 1 ? "not an IPv4 address" : strerror(errno));
        setError(error, errorSize, "cannot listen on " + scp->bindAddress + ":" + std::to_string(settings->port) + ": " + why);
        if (fd >= 0) close(fd);
        key->networkSpecific.TCP.listenSocket = -1;
        ASC_dropNetwork(&scp->network);
        delete scp;
        return nullptr;
    }
    socklen_t length = sizeof address;
    getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length);
    scp->port = ntohs(address.sin_port);
    key->networkSpecific.TCP.listenSocket = fd;
    key->networkSpecific.TCP.port = scp->port;
    scp->network->acceptorPort = scp->port;
    return scp;
}

extern "C" uint16_t bt_scp_port(const bt_scp *scp) { return scp->port; }

extern "C" int bt_scp_run(bt_scp *scp) {
    while (!scp->stopping.load()) {
        T_ASC_Association *association = nullptr;
        OFCondition cond = ASC_receiveAssociation(scp->network, &association, scp->settings.max_pdu, nullptr, nullptr, OFFalse,
                                                  DUL_NOBLOCK, 1);
        if (cond == DUL_NOASSOCIATIONREQUEST) {
            ASC_destroyAssociation(&association);
            continue;
        }
        if (cond.bad()) {
            scp->log(BT_LOG_WARNING, std::string("connection dropped before an association was set up: ") + cond.text());
            if (association) {
                ASC_dropAssociation(association);
                ASC_destroyAssociation(&association);
            }
            continue;
        }
        if (scp->active.load() >= scp->settings.max_associations) {
            scp->log(BT_LOG_WARNING, "association refused: " + std::to_string(scp->settings.max_associations) +
                                         " associations already running (raise [dicom] max_associations)");
            T_ASC_RejectParameters reject{ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                                          ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED};
            ASC_rejectAssociation(association, &reject);
            ASC_dropAssociation(association);
            ASC_destroyAssociation(&association);
            continue;
        }
        scp->active.fetch_add(1);
        scp->total.fetch_add(1);
        try {
            std::thread([scp, association] {
                {
                    StorageAssociation worker(scp, association);
                    worker.setSharedConfig(scp->config);
                    worker.run(association);
                }
                std::lock_guard<std::mutex> lock(scp->mutex);
                scp->active.fetch_sub(1);
                scp->idle.notify_all();
            }).detach();
        } catch (const std::exception &e) {
            scp->active.fetch_sub(1);
            scp->log(BT_LOG_ERROR, std::string("cannot start a thread for an association: ") + e.what());
            ASC_dropAssociation(association);
            ASC_destroyAssociation(&association);
        }
    }
    std::unique_lock<std::mutex> lock(scp->mutex);
    scp->idle.wait(lock, [scp] { return scp->active.load() == 0; });
    return 0;
}

extern "C" void bt_scp_stop(bt_scp *scp) { scp->stopping.store(true); }
extern "C" int bt_scp_active_associations(const bt_scp *scp) { return scp->active.load(); }
extern "C" uint64_t bt_scp_total_associations(const bt_scp *scp) { return scp->total.load(); }

extern "C" int bt_scp_storage_sop_class_count(void) { return numberOfDcmAllStorageSOPClassUIDs; }
extern "C" const char *bt_scp_storage_sop_class(int index) {
    return index >= 0 && index < numberOfDcmAllStorageSOPClassUIDs ? dcmAllStorageSOPClassUIDs[index] : nullptr;
}

extern "C" void bt_scp_close(bt_scp *scp) {
    if (!scp) return;
    if (scp->network) ASC_dropNetwork(&scp->network);
    delete scp;
}
