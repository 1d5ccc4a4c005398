#include "bt_scp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dcmetinf.h"
#include "dcmtk/dcmdata/dcostrmf.h"
#include "dcmtk/dcmdata/dcuid.h"
#include "dcmtk/dcmdata/dcvrae.h"
#include "dcmtk/dcmdata/dcvrobow.h"
#include "dcmtk/dcmdata/dcvrsh.h"
#include "dcmtk/dcmdata/dcvrui.h"
#include "dcmtk/dcmdata/dcvrul.h"
#include "dcmtk/dcmnet/dcmlayer.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/dulstruc.h"
#include "dcmtk/dcmnet/lst.h"
#include "dcmtk/dcmnet/scpthrd.h"
#include "dcmtk/oflog/oflog.h"

class PendingConnection;

struct bt_scp {
    std::string aeTitle, bindAddress, incoming;
    bt_scp_settings settings{};
    bt_scp_callbacks callbacks{};
    T_ASC_Network *network = nullptr;
    std::unique_ptr<DcmTransportLayer> transport;
    uint16_t port = 0;
    std::atomic<bool> stopping{false};
    std::atomic<int> active{0};
    std::atomic<uint64_t> total{0};
    std::atomic<uint64_t> fileCounter{0};
    std::string fileStem;
    DcmSharedSCPConfig config;

    // Guarded by mutex: the connection threads, the connections still waiting for their
    // A-ASSOCIATE-RQ (by id, and how many per peer address), and the accept hand-over.
    std::mutex mutex;
    std::condition_variable changed;
    int threads = 0;
    uint64_t nextConnection = 1;
    std::map<uint64_t, PendingConnection *> pending;
    std::map<std::string, int> pendingByAddress;
    bool accepting = false;
    std::chrono::steady_clock::time_point limitWarningWindow{};
    int limitWarningsInWindow = 0;
    uint64_t unreportedLimitCloses = 0;

    void log(int level, const std::string &message) const {
        if (callbacks.log) callbacks.log(callbacks.context, level, message.c_str());
    }
};

/// A connection's TCP transport while DCMTK owns it. From accept() until its A-ASSOCIATE-RQ has been
/// read it is listed in bt_scp::pending, so the limits can count it and a stop can shut it down; it
/// leaves the list before its socket is closed, so a stop never touches a descriptor that was reused.
class PendingConnection : public DcmTCPConnection {
public:
    PendingConnection(bt_scp *owner, DcmNativeSocketType socket, uint64_t id, std::string address)
        : DcmTCPConnection(socket), owner(owner), id(id), address(std::move(address)) {}
    ~PendingConnection() override { unlist(owner, id); }
    void closeTransportConnection() override {
        unlist(owner, id);
        DcmTCPConnection::closeTransportConnection();
    }
    /// Only with owner->mutex held, while listed: ends a blocked read of the A-ASSOCIATE-RQ at once.
    void interrupt() { shutdown(getSocket(), SHUT_RDWR); }
    /// Forgets the socket without closing it (whoever else holds it closes it).
    void disown() { setSocket(DcmNativeSocketType(-1)); }

    /// Removes connection `id` from the pending list if it is still there.
    static void unlist(bt_scp *owner, uint64_t id) {
        std::lock_guard<std::mutex> lock(owner->mutex);
        auto it = owner->pending.find(id);
        if (it == owner->pending.end()) return;
        auto count = owner->pendingByAddress.find(it->second->address);
        if (count != owner->pendingByAddress.end() && --count->second <= 0) owner->pendingByAddress.erase(count);
        owner->pending.erase(it);
    }

private:
    bt_scp *owner;
    uint64_t id;
    std::string address;
};

/// What the thread serving one connection learns from the transport layer's createConnection hook,
/// which DCMTK calls on that thread right after accept().
struct ConnectionThread {
    uint64_t id = 0;
    std::string address;
    bool closedAtLimit = false;
};
static thread_local ConnectionThread *currentConnection = nullptr;

/// DCMTK's TCP transport, plus the accounting: DUL calls createConnection(socket) right after accept(),
/// on the thread that called ASC_receiveAssociation. That tells the listener the accept is done, and a
/// connection beyond the pending limits gets no transport (DCMTK then closes the socket at once). An
/// address the allow-list names is exempt from the overall limit (not from the per-address one).
class CountingTransportLayer : public DcmTransportLayer {
public:
    explicit CountingTransportLayer(bt_scp *owner) : owner(owner) {}

    DcmTransportConnection *createConnection(DcmNativeSocketType socket, OFBool useSecureLayer) override {
        ConnectionThread *thread = currentConnection;
        sockaddr_in peer{};
        socklen_t length = sizeof peer;
        char text[INET_ADDRSTRLEN] = "unknown";
        if (getpeername(socket, reinterpret_cast<sockaddr *>(&peer), &length) == 0 && peer.sin_family == AF_INET)
            inet_ntop(AF_INET, &peer.sin_addr, text, sizeof text);
        std::string address = text, why;
        PendingConnection *connection = nullptr, *doomed = nullptr;
        bool listed = owner->callbacks.listed_address && owner->callbacks.listed_address(owner->callbacks.context, text) != 0;
        {
            std::lock_guard<std::mutex> lock(owner->mutex);
            owner->accepting = false;
            owner->changed.notify_all();
            int fromAddress = owner->pendingByAddress.count(address) ? owner->pendingByAddress[address] : 0;
            if (useSecureLayer || thread == nullptr) {
                why = "not accepted through the listener";
            } else if (owner->stopping.load()) {
                why = "the receiver is stopping";
            } else if (int(owner->pending.size()) >= owner->settings.max_pending_connections && !listed) {
                why = std::to_string(owner->pending.size()) + " connections already waiting for their A-ASSOCIATE-RQ (the limit is [dicom] max_pending_connections)";
            } else if (fromAddress >= owner->settings.max_pending_per_address) {
                why = std::to_string(fromAddress) + " connections from this address already waiting for their A-ASSOCIATE-RQ (the limit is [dicom] max_pending_connections_per_address)";
            } else {
                uint64_t id = owner->nextConnection++;
                try {
                    connection = new PendingConnection(owner, socket, id, address);
                    owner->pending[id] = connection;
                    owner->pendingByAddress[address] = fromAddress + 1;
                    thread->id = id;
                    thread->address = address;
                } catch (const std::exception &e) {
                    // DCMTK closes the socket when it gets no transport: the object must not close it too.
                    owner->pending.erase(id);
                    if (connection) connection->disown();
                    doomed = connection;
                    connection = nullptr;
                    why = std::string("out of memory: ") + e.what();
                }
            }
            if (connection == nullptr) {
                if (thread) {
                    thread->closedAtLimit = true;
                    thread->address = address;
                }
                // At most 5 lines in 10 seconds, so a flood of connections cannot flood the journal;
                // the next line says how many went unreported.
                auto now = std::chrono::steady_clock::now();
                if (now - owner->limitWarningWindow >= std::chrono::seconds(10)) {
                    owner->limitWarningWindow = now;
                    owner->limitWarningsInWindow = 0;
                }
                if (owner->limitWarningsInWindow >= 5) {
                    owner->unreportedLimitCloses++;
                    why.clear();
                }
                if (!why.empty()) {
                    owner->limitWarningsInWindow++;
                    if (owner->unreportedLimitCloses > 0)
                        why += "; " + std::to_string(owner->unreportedLimitCloses) + " more connection(s) closed so since the last such line";
                    owner->unreportedLimitCloses = 0;
                }
            }
        }
        delete doomed;  // outside the lock: its destructor takes it
        if (connection == nullptr && !why.empty()) owner->log(BT_LOG_WARNING, "connection from " + address + " closed at once: " + why);
        return connection;
    }

private:
    bt_scp *owner;
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

// High-Throughput JPEG 2000 (PS3.5 A.4.11), which DCMTK 3.6.7's DcmXfer does not know.
static const char *const htj2kLosslessSyntax = "1.2.840.10008.1.2.4.201";
static const char *const htj2kLosslessRPCLSyntax = "1.2.840.10008.1.2.4.202";
static const char *const htj2kSyntax = "1.2.840.10008.1.2.4.203";

/// Compressed syntaxes first, lossless before lossy, so a sender that offers the file's own encoding
/// sends it as it is; the uncompressed ones last.
static const char *const storageSyntaxes[] = {
    UID_JPEGLSLosslessTransferSyntax,
    UID_JPEGProcess14SV1TransferSyntax,
    UID_JPEGProcess14TransferSyntax,
    UID_JPEG2000LosslessOnlyTransferSyntax,
    htj2kLosslessSyntax,
    htj2kLosslessRPCLSyntax,
    UID_RLELosslessTransferSyntax,
    UID_DeflatedExplicitVRLittleEndianTransferSyntax,
    UID_JPEG2000TransferSyntax,
    htj2kSyntax,
    UID_JPEGLSLossyTransferSyntax,
    UID_JPEGProcess1TransferSyntax,
    UID_JPEGProcess2_4TransferSyntax,
    UID_LittleEndianExplicitTransferSyntax,
    UID_BigEndianExplicitTransferSyntax,
    UID_LittleEndianImplicitTransferSyntax,
};

/// DCMTK 3.6.7's DIMSE layer checks the transfer syntax of the presentation context of every command
/// it receives or sends, and of every dataset, against DcmXfer (dimse.cc, getTransferSyntax): a context
/// accepted with a syntax DcmXfer does not know fails its first C-STORE-RQ with "DIMSE Unsupported
/// transfer syntax" and the association is aborted. A syntax we accept that DcmXfer does not know is
/// therefore named to DIMSE as a known one with the same dataset encoding, once the A-ASSOCIATE-AC (with
/// the real UID) has gone out. HTJ2K's datasets are explicit VR little endian with encapsulated Pixel
/// Data, exactly as JPEG 2000's. The received bytes are written as they arrive, never parsed, and the
/// file's meta header names the real syntax (StorageAssociation::receiveToFile).
struct DimseStandIn {
    const char *syntax;
    const char *standIn;
};
static const DimseStandIn dimseStandIns[] = {
    {htj2kLosslessSyntax, UID_JPEG2000LosslessOnlyTransferSyntax},
    {htj2kLosslessRPCLSyntax, UID_JPEG2000LosslessOnlyTransferSyntax},
    {htj2kSyntax, UID_JPEG2000TransferSyntax},
};

static const char *dimseStandInFor(const char *syntax) {
    for (const DimseStandIn &s : dimseStandIns)
        if (strcmp(s.syntax, syntax) == 0) return s.standIn;
    return nullptr;
}

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

    /// Called right after the A-ASSOCIATE-AC went out and before the first DIMSE message is read:
    /// from here on, DIMSE sees each context accepted with a syntax DcmXfer does not know under its
    /// stand-in (see DimseStandIn); `negotiatedSyntax` keeps the real one for the files.
    void notifyAssociationAcknowledge() override {
        T_ASC_Parameters *params = association->params;
        for (LST_HEAD *list : {params->DULparams.requestedPresentationContext, params->DULparams.acceptedPresentationContext}) {
            if (list == nullptr) continue;
            for (auto *pc = static_cast<DUL_PRESENTATIONCONTEXT *>(LST_Position(&list, LST_Head(&list))); pc != nullptr;
                 pc = static_cast<DUL_PRESENTATIONCONTEXT *>(LST_Next(&list))) {
                if (pc->result != ASC_P_ACCEPTANCE) continue;
                const char *standIn = dimseStandInFor(pc->acceptedTransferSyntax);
                if (standIn == nullptr) continue;
                negotiatedSyntax[pc->presentationContextID] = pc->acceptedTransferSyntax;
                OFStandard::strlcpy(pc->acceptedTransferSyntax, standIn, sizeof pc->acceptedTransferSyntax);
            }
        }
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
    /// Presentation contexts accepted with a syntax DIMSE knows under a stand-in: the syntax negotiated.
    std::map<T_ASC_PresentationContextID, std::string> negotiatedSyntax;

    /// The transfer syntax negotiated for a presentation context (not DIMSE's stand-in).
    std::string transferSyntaxOf(T_ASC_PresentationContextID id) {
        auto real = negotiatedSyntax.find(id);
        if (real != negotiatedSyntax.end()) return real->second;
        OFString sopClass, transferSyntax;
        findPresentationContext(id, sopClass, transferSyntax);
        return transferSyntax.c_str();
    }

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

    /// DcmSCP::receiveSTORERequest(..., filename), with the File Meta Information naming the negotiated
    /// transfer syntax: the meta header DIMSE_createFilestream writes (group length, version 00\01, SOP
    /// class and instance from the request, DCMTK's implementation class UID and its bit-preserving
    /// version name, the calling AE title as source), then every PDV of the dataset as it arrives
    /// (DIMSE_receiveDataSetInFile), with DCMTK's conditions for a missing dataset, a file that cannot
    /// be written and a dataset on another presentation context.
    OFCondition receiveToFile(T_DIMSE_C_StoreRQ &request, T_ASC_PresentationContextID presID, const std::string &path,
                              const std::string &transferSyntax) {
        if (request.DataSetType == DIMSE_DATASET_NULL) return DIMSE_BADMESSAGE;
        // Each element belongs to `meta` from its creation on.
        DcmMetaInfo meta;
        auto add = [&meta](DcmElement *element) {
            meta.insert(element, OFTrue);
            return element;
        };
        Uint32 zero = 0;
        Uint8 version[2] = {0, 1};
        const char *callingAE = association->params->DULparams.callingAPTitle;
        OFCondition cond = add(new DcmUnsignedLong(DCM_FileMetaInformationGroupLength))->putUint32Array(&zero, 1);
        if (cond.good()) cond = add(new DcmOtherByteOtherWord(DCM_FileMetaInformationVersion))->putUint8Array(version, 2);
        if (cond.good()) cond = add(new DcmUniqueIdentifier(DCM_MediaStorageSOPClassUID))->putString(request.AffectedSOPClassUID);
        if (cond.good()) cond = add(new DcmUniqueIdentifier(DCM_MediaStorageSOPInstanceUID))->putString(request.AffectedSOPInstanceUID);
        if (cond.good()) cond = add(new DcmUniqueIdentifier(DCM_TransferSyntaxUID))->putString(transferSyntax.c_str());
        if (cond.good()) cond = add(new DcmUniqueIdentifier(DCM_ImplementationClassUID))->putString(OFFIS_IMPLEMENTATION_CLASS_UID);
        if (cond.good()) cond = add(new DcmShortString(DCM_ImplementationVersionName))->putString(OFFIS_DTK_IMPLEMENTATION_VERSION_NAME2);
        DcmElement *source = cond.good() ? add(new DcmApplicationEntity(DCM_SourceApplicationEntityTitle)) : nullptr;
        if (source && callingAE) cond = source->putString(callingAE);
        if (cond.good())
            cond = meta.computeGroupLengthAndPadding(EGL_withGL, EPD_noChange, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_UndefinedLength);
        DcmOutputFileStream stream(path.c_str());
        if (stream.good()) {
            meta.transferInit();
            cond = meta.write(stream, META_HEADER_DEFAULT_TRANSFERSYNTAX, EET_ExplicitLength, nullptr);
            meta.transferEnd();
        }
        if (cond.bad() || !stream.good()) {
            // As DCMTK: the dataset is read and dropped, so the association stays usable, and the
            // condition says the file could not be written.
            DIC_UL bytes = 0, pdvs = 0;
            cond = DIMSE_ignoreDataSet(association, getDIMSEBlockingMode(), getDIMSETimeout(), &bytes, &pdvs);
            if (cond.good()) cond = makeDcmnetCondition(DIMSEC_OUTOFRESOURCES, OF_error, ("Cannot create file: " + path).c_str());
            return cond;
        }
        T_ASC_PresentationContextID datasetID = presID;
        cond = DIMSE_receiveDataSetInFile(association, getDIMSEBlockingMode(), getDIMSETimeout(), &datasetID, &stream,
                                          callbackRECEIVEProgress, static_cast<DcmSCP *>(this));
        if (cond.good() && datasetID != presID)
            cond = makeDcmnetCondition(DIMSEC_INVALIDPRESENTATIONCONTEXTID, OF_error, "DIMSE: Presentation Contexts of Command and Data Set differ");
        return cond;
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
        OFCondition cond = receiveToFile(request, info.presentationContextID, path, transferSyntaxOf(info.presentationContextID));
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
            std::string transferSyntax = transferSyntaxOf(info.presentationContextID);
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
    scp->settings.max_pending_connections = std::max(1, settings->max_pending_connections);
    scp->settings.max_pending_per_address = std::max(1, settings->max_pending_per_address);
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
    // Non-blocking: a connection gone between poll() and accept() gives EAGAIN, never a blocked thread.
    // (Accepted sockets do not inherit O_NONBLOCK on Linux.)
    int flags = fcntl(fd, F_GETFL);
    scp->transport.reset(new CountingTransportLayer(scp));
    cond = flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0 ? EC_IllegalCall : ASC_setTransportLayer(scp->network, scp->transport.get(), 0);
    if (cond.bad()) {
        setError(error, errorSize, std::string("cannot set up the DICOM listener: ") + (flags < 0 || cond == EC_IllegalCall ? strerror(errno) : cond.text()));
        ASC_dropNetwork(&scp->network);
        delete scp;
        return nullptr;
    }
    return scp;
}

extern "C" uint16_t bt_scp_port(const bt_scp *scp) { return scp->port; }

/// One connection, on its own thread: accept() and the A-ASSOCIATE-RQ (read within the ACSE timeout),
/// then the association (when fewer than max_associations are running). The listener waits only for
/// the accept, so a peer that connects and says nothing holds this thread, not the listener.
static void serveConnection(bt_scp *scp) {
    ConnectionThread thread;
    currentConnection = &thread;
    T_ASC_Association *association = nullptr;
    OFCondition cond = ASC_receiveAssociation(scp->network, &association, scp->settings.max_pdu, nullptr, nullptr, OFFalse,
                                              DUL_NOBLOCK, 1);
    currentConnection = nullptr;
    {
        // If accept() itself failed, createConnection was never called: hand the listener back its turn.
        std::lock_guard<std::mutex> lock(scp->mutex);
        if (scp->accepting) {
            scp->accepting = false;
            scp->changed.notify_all();
        }
    }
    // The A-ASSOCIATE-RQ is in (or the connection is over): it no longer counts as pending.
    if (thread.id) PendingConnection::unlist(scp, thread.id);

    auto drop = [&association] {
        if (association) {
            ASC_dropAssociation(association);
            ASC_destroyAssociation(&association);
        }
    };
    if (thread.closedAtLimit || cond == DUL_NOASSOCIATIONREQUEST) {
        drop();
    } else if (cond.bad()) {
        std::string from = thread.address.empty() ? std::string() : " from " + thread.address;
        if (scp->stopping.load())
            scp->log(BT_LOG_INFO, "connection" + from + " closed at stop before it sent an A-ASSOCIATE-RQ");
        else
            scp->log(BT_LOG_WARNING, "connection" + from + " dropped before an association was set up: " + cond.text() +
                                         " (a peer must send its A-ASSOCIATE-RQ within [dicom] acse_timeout_seconds)");
        drop();
    } else {
        int running = scp->active.load();
        bool admitted = false;
        while (!scp->stopping.load() && running < scp->settings.max_associations && !admitted)
            admitted = scp->active.compare_exchange_weak(running, running + 1);
        if (!admitted) {
            bool stopping = scp->stopping.load();
            scp->log(BT_LOG_WARNING, "association from " + thread.address + " refused: " +
                                         (stopping ? std::string("the receiver is stopping")
                                                   : std::to_string(scp->settings.max_associations) +
                                                         " associations already running (raise [dicom] max_associations)"));
            T_ASC_RejectParameters reject{ASC_RESULT_REJECTEDTRANSIENT, ASC_SOURCE_SERVICEPROVIDER_PRESENTATION_RELATED,
                                          stopping ? ASC_REASON_SP_PRES_TEMPORARYCONGESTION : ASC_REASON_SP_PRES_LOCALLIMITEXCEEDED};
            ASC_rejectAssociation(association, &reject);
            drop();
        } else {
            scp->total.fetch_add(1);
            {
                StorageAssociation worker(scp, association);
                worker.setSharedConfig(scp->config);
                worker.run(association);
            }
            scp->active.fetch_sub(1);
        }
    }
    std::lock_guard<std::mutex> lock(scp->mutex);
    scp->threads--;
    scp->changed.notify_all();
}

extern "C" int bt_scp_run(bt_scp *scp) {
    auto *key = reinterpret_cast<PRIVATE_NETWORKKEY *>(scp->network->network);
    const int listening = key->networkSpecific.TCP.listenSocket;
    while (!scp->stopping.load()) {
        pollfd ready{listening, POLLIN, 0};
        if (poll(&ready, 1, 500) <= 0 || !(ready.revents & POLLIN)) continue;
        {
            std::lock_guard<std::mutex> lock(scp->mutex);
            scp->accepting = true;
            scp->threads++;
        }
        try {
            std::thread(serveConnection, scp).detach();
        } catch (const std::exception &e) {
            {
                std::lock_guard<std::mutex> lock(scp->mutex);
                scp->accepting = false;
                scp->threads--;
            }
            // Take the connection off the queue, or the loop would find it again at once.
            int refused = accept4(listening, nullptr, nullptr, SOCK_CLOEXEC);
            if (refused >= 0) close(refused);
            scp->log(BT_LOG_ERROR, std::string("connection closed: cannot start a thread for it: ") + e.what());
            continue;
        }
        // Wait for the accept only (the thread's createConnection, or its return), not for the RQ.
        std::unique_lock<std::mutex> lock(scp->mutex);
        scp->changed.wait(lock, [scp] { return !scp->accepting; });
    }
    // Connections that have not sent their A-ASSOCIATE-RQ are shut down now rather than waited for
    // (up to acse_timeout_seconds); running associations finish.
    std::unique_lock<std::mutex> lock(scp->mutex);
    size_t interrupted = scp->pending.size();
    for (auto &entry : scp->pending) entry.second->interrupt();
    lock.unlock();
    if (interrupted > 0)
        scp->log(BT_LOG_INFO, "stopping: " + std::to_string(interrupted) + " connection(s) that had not sent an A-ASSOCIATE-RQ closed");
    lock.lock();
    scp->changed.wait(lock, [scp] { return scp->threads == 0; });
    return 0;
}

extern "C" void bt_scp_stop(bt_scp *scp) { scp->stopping.store(true); }
extern "C" int bt_scp_active_associations(const bt_scp *scp) { return scp->active.load(); }
extern "C" uint64_t bt_scp_total_associations(const bt_scp *scp) { return scp->total.load(); }
extern "C" int bt_scp_pending_connections(const bt_scp *scp) {
    std::lock_guard<std::mutex> lock(const_cast<bt_scp *>(scp)->mutex);
    return int(scp->pending.size());
}

extern "C" int bt_scp_storage_sop_class_count(void) { return numberOfDcmAllStorageSOPClassUIDs; }
extern "C" const char *bt_scp_storage_sop_class(int index) {
    return index >= 0 && index < numberOfDcmAllStorageSOPClassUIDs ? dcmAllStorageSOPClassUIDs[index] : nullptr;
}

extern "C" void bt_scp_close(bt_scp *scp) {
    if (!scp) return;
    if (scp->network) ASC_dropNetwork(&scp->network);
    delete scp;
}
