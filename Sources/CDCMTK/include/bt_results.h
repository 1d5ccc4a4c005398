#ifndef BONETRIAGE_RESULTS_H
#define BONETRIAGE_RESULTS_H
// The DICOM result objects BoneTriage sends back to a PACS (a Comprehensive SR built with dcmsr, a
// Secondary Capture image) and the C-STORE SCU that sends them, behind a plain C API (DCMTK 3.6.7).
// Every function reports failure through its return value and an error text; no DCMTK type crosses it.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A coded concept: code value, coding scheme designator, code meaning.
typedef struct bt_code {
    const char *value;
    const char *scheme;
    const char *meaning;
} bt_code;

/// A reference to a DICOM instance (study from the placement).
typedef struct bt_instance_reference {
    const char *series_instance_uid;
    const char *sop_class_uid;
    const char *sop_instance_uid;
} bt_instance_reference;

/// What every result object shares: where it goes in the study, and what its header copies.
typedef struct bt_result_header {
    /// A DICOM file of the study: its Patient, General Study and Patient Study attributes are copied.
    const char *template_path;
    const char *study_instance_uid;
    const char *series_instance_uid;
    const char *sop_instance_uid;
    int series_number;
    int instance_number;
    /// Content Date (DA), Content Time (TM) and Timezone Offset From UTC ("+HHMM"), also used for
    /// Instance Creation Date/Time.
    const char *content_date;
    const char *content_time;
    const char *timezone_offset;
    const char *series_description;
    /// Manufacturer (0008,0070) and Software Versions (0018,1020).
    const char *manufacturer;
    const char *software_version;
} bt_result_header;

enum {
    BT_SR_CONTAINER = 0,
    BT_SR_TEXT = 1,
    BT_SR_CODE = 2,
    BT_SR_NUM = 3,
    BT_SR_DATETIME = 4,
    BT_SR_PNAME = 5,
    BT_SR_IMAGE = 6,
    BT_SR_UIDREF = 7,
};
enum {
    BT_SR_ROOT = 0,
    BT_SR_CONTAINS = 1,
    BT_SR_HAS_OBS_CONTEXT = 2,
    BT_SR_HAS_CONCEPT_MOD = 3,
    BT_SR_INFERRED_FROM = 4,
    BT_SR_HAS_PROPERTIES = 5,
};

/// One content item of an SR, in document order: `depth` 0 is the root CONTAINER (exactly one, first),
/// an item's children follow it at depth + 1.
typedef struct bt_sr_item {
    int depth;
    int relationship;
    int value_type;
    bt_code concept;
    /// TEXT, DATETIME, PNAME, UIDREF: the value; NUM: the number as a decimal string (DS).
    const char *text;
    /// CODE: the coded value; NUM: the measurement unit (UCUM).
    bt_code code;
    /// IMAGE: the referenced image.
    const char *sop_class_uid;
    const char *sop_instance_uid;
} bt_sr_item;

typedef struct bt_sr_spec {
    bt_result_header header;
    const bt_sr_item *items;
    size_t item_count;
    /// A private coding scheme used in the tree, declared in the Coding Scheme Identification Sequence.
    const char *private_scheme;
    const char *private_scheme_name;
    const char *private_scheme_organization;
    /// Current Requested Procedure Evidence: every image the tree references.
    const bt_instance_reference *evidence;
    size_t evidence_count;
    /// When set, the document is VERIFIED by this observer (PN) of this organization at this DT;
    /// otherwise UNVERIFIED.
    const char *verifying_observer;
    const char *verifying_organization;
    const char *verification_datetime;
    /// When set, the report this one replaces (Predecessor Documents Sequence).
    const bt_instance_reference *predecessor;
} bt_sr_spec;

/// Writes a Comprehensive SR (Part 10, explicit VR little endian) to `path` (through a temporary file
/// beside it, renamed into place). 0 on success; 1 with `error` set.
int bt_write_report(const bt_sr_spec *spec, const char *path, char *error, size_t error_size);

/// dcmsr's own checks of an SR file: DSRDocument::read (with every warning dcmsr logs while reading
/// it), the document tree's validity and the IOD's relationship constraints. 0 when it passes with no
/// warning; 1 with `error` set to the problems found (one per line).
int bt_check_report(const char *path, char *error, size_t error_size);

typedef struct bt_sc_spec {
    bt_result_header header;
    int width;
    int height;
    /// width x height x 3 bytes, RGB, top row first.
    const uint8_t *pixels;
    const char *derivation_description;
    const char *source_sop_class_uid;
    const char *source_sop_instance_uid;
} bt_sc_spec;

/// Writes a Secondary Capture image (Part 10, explicit VR little endian) to `path`. 0 on success; 1
/// with `error` set.
int bt_write_capture(const bt_sc_spec *spec, const char *path, char *error, size_t error_size);

// MARK: C-STORE SCU

typedef struct bt_scu_settings {
    const char *calling_ae_title;
    const char *called_ae_title;
    const char *host;
    uint16_t port;
    /// Seconds for the TCP connect, the association's answer and each C-STORE response (a write to a
    /// peer that stops reading ends after DCMTK's socket send timeout, 60 s).
    int timeout_seconds;
} bt_scu_settings;

enum {
    /// The peer answered the C-STORE: `status` is its DIMSE status, `message` its Error Comment if any.
    BT_STORE_ANSWERED = 0,
    /// The association did not accept the file's SOP class (with any transfer syntax proposed).
    BT_STORE_NOT_ACCEPTED = 1,
    /// No answer this time: no connection, association rejected or aborted, timeout; `message` says why.
    BT_STORE_NETWORK = 2,
    /// The file cannot be sent (unreadable, no SOP Class/Instance UID, a transfer syntax not sent).
    BT_STORE_BAD_FILE = 3,
};

typedef struct bt_store_result {
    int kind;
    uint16_t status;
    char message[512];
} bt_store_result;

/// Sends `count` files over one association (one presentation context per SOP class, proposing
/// explicit and implicit VR little endian), one result per file in order. Never blocks longer than the
/// timeouts allow; thread-safe (each call has its own association). Returns the number of files stored
/// (status answered, whatever it was, is counted only when 0x0000 or a warning).
int bt_scu_send(const bt_scu_settings *settings, const char *const *paths, size_t count, bt_store_result *results);

#ifdef __cplusplus
}
#endif
#endif
