#include "bt_results.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>
#include <unistd.h>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmnet/assoc.h"
#include "dcmtk/dcmnet/dimse.h"
#include "dcmtk/dcmnet/diutil.h"
#include "dcmtk/dcmnet/dul.h"
#include "dcmtk/dcmnet/dcmtrans.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "dcmtk/dcmsr/dsriodcc.h"
#include "dcmtk/dcmsr/dsrcomcc.h"
#include "dcmtk/oflog/oflog.h"
#include "dcmtk/oflog/appender.h"
#include "dcmtk/oflog/spi/logevent.h"

namespace {

void setError(char *error, size_t size, const std::string &text) {
    if (error && size > 0) snprintf(error, size, "%s", text.c_str());
}

std::string str(const char *s) { return s ? std::string(s) : std::string(); }

/// Warnings and errors dcmsr logs on this thread while a check runs (other threads' go nowhere).
thread_local std::vector<std::string> *capturedWarnings = nullptr;

class WarningCapture : public dcmtk::log4cplus::Appender {
  public:
    void close() override {}
  protected:
    void append(const dcmtk::log4cplus::spi::InternalLoggingEvent &event) override {
        if (capturedWarnings) capturedWarnings->push_back(std::string(event.getMessage().c_str()));
    }
};

void initialiseOnce() {
    static std::once_flag once;
    std::call_once(once, [] {
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);  // DCMTK must not write to our stderr
        // dcmsr's warnings (a tree that breaks the IOD's rules, a bad value) go to the capture instead.
        dcmtk::log4cplus::Logger sr = dcmtk::log4cplus::Logger::getInstance("dcmtk.dcmsr");
        sr.setLogLevel(dcmtk::log4cplus::WARN_LOG_LEVEL);
        sr.setAdditivity(false);
        sr.addAppender(dcmtk::log4cplus::SharedAppenderPtr(new WarningCapture()));
        // A write to a peer that closed the connection must be an error (EPIPE), not the end of the process.
        struct sigaction current;
        if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
    });
}

// MARK: The study's header, copied from a template file

/// Patient (C.7.1.1), General Study (C.7.2.1) and Patient Study (C.7.2.2) module attributes.
const DcmTagKey studyTags[] = {
    // Patient
    DCM_PatientName, DCM_PatientID, DCM_IssuerOfPatientID, DCM_IssuerOfPatientIDQualifiersSequence,
    DCM_TypeOfPatientID, DCM_PatientBirthDate, DCM_PatientBirthTime, DCM_PatientSex, DCM_QualityControlSubject,
    DCM_ReferencedPatientSequence, DCM_OtherPatientIDsSequence, DCM_OtherPatientNames, DCM_EthnicGroup,
    DCM_PatientComments, DCM_PatientSpeciesDescription, DCM_PatientSpeciesCodeSequence, DCM_PatientBreedDescription,
    DCM_PatientBreedCodeSequence, DCM_BreedRegistrationSequence, DCM_ResponsiblePerson, DCM_ResponsiblePersonRole,
    DCM_ResponsibleOrganization, DCM_PatientIdentityRemoved, DCM_DeidentificationMethod,
    DCM_DeidentificationMethodCodeSequence,
    // General Study
    DCM_StudyInstanceUID, DCM_StudyDate, DCM_StudyTime, DCM_ReferringPhysicianName,
    DCM_ReferringPhysicianIdentificationSequence, DCM_ConsultingPhysicianName, DCM_StudyID, DCM_AccessionNumber,
    DCM_IssuerOfAccessionNumberSequence, DCM_StudyDescription, DCM_PhysiciansOfRecord,
    DCM_PhysiciansOfRecordIdentificationSequence, DCM_NameOfPhysiciansReadingStudy,
    DCM_PhysiciansReadingStudyIdentificationSequence, DCM_RequestingServiceCodeSequence,
    DCM_ReferencedStudySequence, DCM_ProcedureCodeSequence, DCM_ReasonForPerformedProcedureCodeSequence,
    // Patient Study
    DCM_AdmittingDiagnosesDescription, DCM_AdmittingDiagnosesCodeSequence, DCM_PatientAge, DCM_PatientSize,
    DCM_PatientWeight, DCM_PatientBodyMassIndex, DCM_MeasuredAPDimension, DCM_MeasuredLateralDimension,
    DCM_MedicalAlerts, DCM_Allergies, DCM_SmokingStatus, DCM_PregnancyStatus, DCM_LastMenstrualDate,
    DCM_PatientState, DCM_Occupation, DCM_AdditionalPatientHistory, DCM_AdmissionID,
    DCM_IssuerOfAdmissionIDSequence, DCM_ServiceEpisodeID, DCM_ServiceEpisodeDescription,
    DCM_PatientSexNeutered,
};

/// Type 2 attributes of these modules: present (empty) even when the template lacks them.
const DcmTagKey studyType2Tags[] = {
    DCM_PatientName, DCM_PatientID, DCM_PatientBirthDate, DCM_PatientSex,
    DCM_StudyDate, DCM_StudyTime, DCM_ReferringPhysicianName, DCM_StudyID, DCM_AccessionNumber,
};

/// Loads the template, converts its text to UTF-8 and checks its Study Instance UID.
bool loadTemplate(const bt_result_header &h, DcmFileFormat &file, std::string &why) {
    OFCondition status = file.loadFile(str(h.template_path).c_str(), EXS_Unknown, EGL_noChange, 4096, ERM_autoDetect);
    if (status.bad()) {
        why = "the study's template file " + str(h.template_path) + " could not be read (" + status.text() +
              "): give a DICOM file of the study (a source image or an earlier result object)";
        return false;
    }
    DcmDataset *data = file.getDataset();
    OFString study;
    if (data->findAndGetOFString(DCM_StudyInstanceUID, study).bad() || study.empty()) {
        why = "the study's template file " + str(h.template_path) + " has no Study Instance UID";
        return false;
    }
    if (std::string(study.c_str()) != str(h.study_instance_uid)) {
        why = "the study's template file " + str(h.template_path) + " belongs to study " + study.c_str() +
              ", not to study " + str(h.study_instance_uid) + " the result object is placed in: give a file of that study";
        return false;
    }
    status = data->convertToUTF8();
    if (status.bad()) {
        why = std::string("the text of the study's template file could not be converted to UTF-8 from its Specific Character Set (") +
              status.text() + ")";
        return false;
    }
    return true;
}

OFCondition copyStudyModules(DcmDataset &from, DcmDataset &to) {
    for (const DcmTagKey &tag : studyTags) {
        to.findAndDeleteElement(tag, OFFalse, OFFalse);
        DcmElement *element = nullptr;
        if (from.findAndGetElement(tag, element, OFFalse, OFTrue /* copy */).good() && element) {
            OFCondition status = to.insert(element, OFTrue);
            if (status.bad()) { delete element; return status; }
        }
    }
    for (const DcmTagKey &tag : studyType2Tags) {
        if (!to.tagExists(tag)) to.insertEmptyElement(tag);
    }
    return EC_Normal;
}

/// Specific Character Set: ISO_IR 192 when any text needs it (everything is UTF-8 by now), else none.
void setCharacterSet(DcmDataset &data) {
    bool nonASCII = false;
    DcmStack stack;
    while (!nonASCII && data.nextObject(stack, OFTrue).good()) {
        DcmObject *object = stack.top();
        if (!object->isLeaf() || !object->isAffectedBySpecificCharacterSet()) continue;
        char *value = nullptr;
        Uint32 length = 0;
        auto *element = OFstatic_cast(DcmElement *, object);
        if (element->getString(value, length).good() && value) {
            for (Uint32 i = 0; i < length; ++i) {
                if (OFstatic_cast(unsigned char, value[i]) >= 0x80) { nonASCII = true; break; }
            }
        }
    }
    if (nonASCII) data.putAndInsertString(DCM_SpecificCharacterSet, "ISO_IR 192");
    else data.findAndDeleteElement(DCM_SpecificCharacterSet);
}

/// The instance's identity and dates, and the equipment.
OFCondition putInstanceAttributes(DcmDataset &data, const bt_result_header &h) {
    OFCondition s = EC_Normal;
    auto put = [&](const DcmTagKey &tag, const std::string &value) {
        if (s.good()) s = data.putAndInsertString(tag, value.c_str());
    };
    put(DCM_StudyInstanceUID, str(h.study_instance_uid));
    put(DCM_SeriesInstanceUID, str(h.series_instance_uid));
    put(DCM_SOPInstanceUID, str(h.sop_instance_uid));
    put(DCM_SeriesNumber, std::to_string(h.series_number));
    put(DCM_InstanceNumber, std::to_string(h.instance_number));
    put(DCM_ContentDate, str(h.content_date));
    put(DCM_ContentTime, str(h.content_time));
    put(DCM_InstanceCreationDate, str(h.content_date));
    put(DCM_InstanceCreationTime, str(h.content_time));
    if (h.timezone_offset && *h.timezone_offset) put(DCM_TimezoneOffsetFromUTC, str(h.timezone_offset));
    put(DCM_SeriesDescription, str(h.series_description));
    put(DCM_Manufacturer, str(h.manufacturer));
    put(DCM_SoftwareVersions, str(h.software_version));
    return s;
}

/// Saves as Part 10, explicit VR little endian, through a temporary file renamed into place.
bool saveFile(DcmFileFormat &file, const char *path, std::string &why) {
    std::string temporary = str(path) + ".partial";
    OFCondition status = file.saveFile(temporary.c_str(), EXS_LittleEndianExplicit, EET_ExplicitLength, EGL_recalcGL,
                                       EPD_noChange, 0, 0, EWM_createNewMeta);
    if (status.bad()) {
        unlink(temporary.c_str());
        why = "could not write " + str(path) + ": " + status.text();
        return false;
    }
    if (rename(temporary.c_str(), path) != 0) {
        why = "could not move the written file to " + str(path) + ": " + strerror(errno);
        unlink(temporary.c_str());
        return false;
    }
    return true;
}

std::string checkValue(const char *what, const char *value) {
    if (!value || !*value) return std::string(what) + " is empty";
    return "";
}

std::string checkHeader(const bt_result_header &h) {
    for (auto [what, value] : {std::pair<const char *, const char *>{"the template path", h.template_path},
                               {"the Study Instance UID", h.study_instance_uid},
                               {"the Series Instance UID", h.series_instance_uid},
                               {"the SOP Instance UID", h.sop_instance_uid}}) {
        std::string problem = checkValue(what, value);
        if (!problem.empty()) return problem;
    }
    for (auto [what, value] : {std::pair<const char *, const char *>{"Study Instance UID", h.study_instance_uid},
                               {"Series Instance UID", h.series_instance_uid},
                               {"SOP Instance UID", h.sop_instance_uid}}) {
        if (DcmUniqueIdentifier::checkStringValue(value, "1").bad())
            return std::string("the ") + what + " '" + value + "' is not a valid UID";
    }
    return "";
}

// MARK: SR

DSRTypes::E_RelationshipType relationship(int r) {
    switch (r) {
    case BT_SR_ROOT: return DSRTypes::RT_isRoot;
    case BT_SR_CONTAINS: return DSRTypes::RT_contains;
    case BT_SR_HAS_OBS_CONTEXT: return DSRTypes::RT_hasObsContext;
    case BT_SR_HAS_CONCEPT_MOD: return DSRTypes::RT_hasConceptMod;
    case BT_SR_INFERRED_FROM: return DSRTypes::RT_inferredFrom;
    case BT_SR_HAS_PROPERTIES: return DSRTypes::RT_hasProperties;
    default: return DSRTypes::RT_invalid;
    }
}

DSRTypes::E_ValueType valueType(int v) {
    switch (v) {
    case BT_SR_CONTAINER: return DSRTypes::VT_Container;
    case BT_SR_TEXT: return DSRTypes::VT_Text;
    case BT_SR_CODE: return DSRTypes::VT_Code;
    case BT_SR_NUM: return DSRTypes::VT_Num;
    case BT_SR_DATETIME: return DSRTypes::VT_DateTime;
    case BT_SR_PNAME: return DSRTypes::VT_PName;
    case BT_SR_IMAGE: return DSRTypes::VT_Image;
    case BT_SR_UIDREF: return DSRTypes::VT_UIDRef;
    default: return DSRTypes::VT_invalid;
    }
}

DSRCodedEntryValue coded(const bt_code &c) { return DSRCodedEntryValue(str(c.value), str(c.scheme), str(c.meaning)); }

std::string describe(const bt_sr_item &item, size_t index) {
    return "content item " + std::to_string(index + 1) + " (" + str(item.concept.meaning) + ")";
}

/// Builds the document tree from the flattened items.
bool buildTree(DSRDocumentTree &tree, const bt_sr_spec &spec, std::string &why) {
    if (spec.item_count == 0 || spec.items[0].depth != 0 || spec.items[0].value_type != BT_SR_CONTAINER) {
        why = "an SR needs a root CONTAINER first";
        return false;
    }
    int depth = -1;
    for (size_t i = 0; i < spec.item_count; ++i) {
        const bt_sr_item &item = spec.items[i];
        DSRTypes::E_AddMode mode = DSRTypes::AM_afterCurrent;
        if (i == 0) {
            mode = DSRTypes::AM_afterCurrent;
        } else if (item.depth <= 0 || item.depth > depth + 1) {
            why = describe(item, i) + " is at depth " + std::to_string(item.depth) + " after one at depth " + std::to_string(depth);
            return false;
        } else if (item.depth == depth + 1) {
            mode = DSRTypes::AM_belowCurrent;
        } else {
            for (int d = depth; d > item.depth; --d) tree.goUp();
        }
        size_t node = tree.addContentItem(relationship(item.relationship), valueType(item.value_type), mode);
        if (node == 0) {
            why = describe(item, i) + ": dcmsr refused a " + std::string(DSRTypes::valueTypeToDefinedTerm(valueType(item.value_type))) +
                  " by " + DSRTypes::relationshipTypeToDefinedTerm(relationship(item.relationship)) + " there (the IOD's constraints)";
            return false;
        }
        depth = item.depth;
        DSRContentItem &content = tree.getCurrentContentItem();
        OFCondition s = content.setConceptName(coded(item.concept));
        if (s.good()) {
            switch (item.value_type) {
            case BT_SR_CONTAINER: s = content.setContinuityOfContent(DSRTypes::COC_Separate); break;
            case BT_SR_TEXT:
            case BT_SR_DATETIME:
            case BT_SR_PNAME:
            case BT_SR_UIDREF: s = content.setStringValue(str(item.text)); break;
            case BT_SR_CODE: s = content.setCodeValue(coded(item.code)); break;
            case BT_SR_NUM: s = content.setNumericValue(DSRNumericMeasurementValue(str(item.text), coded(item.code))); break;
            case BT_SR_IMAGE: s = content.setImageReference(DSRImageReferenceValue(str(item.sop_class_uid), str(item.sop_instance_uid))); break;
            default: s = EC_IllegalParameter;
            }
        }
        if (s.bad()) {
            why = describe(item, i) + ": " + s.text() + " (value '" + str(item.text) + str(item.sop_instance_uid) + "')";
            return false;
        }
    }
    return true;
}

}  // namespace

extern "C" int bt_write_report(const bt_sr_spec *spec, const char *path, char *error, size_t errorSize) {
    initialiseOnce();
    try {
        std::string why = checkHeader(spec->header);
        if (!why.empty()) { setError(error, errorSize, why); return 1; }
        DcmFileFormat templateFile;
        if (!loadTemplate(spec->header, templateFile, why)) { setError(error, errorSize, why); return 1; }

        DSRDocument document(DSRTypes::DT_ComprehensiveSR);
        document.setSpecificCharacterSetType(DSRTypes::CS_UTF8);
        if (!buildTree(document.getTree(), *spec, why)) { setError(error, errorSize, "the SR's content tree: " + why); return 1; }
        OFCondition s = document.createNewSeriesInStudy(str(spec->header.study_instance_uid));
        if (s.good() && spec->private_scheme) {
            DSRCodingSchemeIdentificationList &schemes = document.getCodingSchemeIdentification();
            s = schemes.addItem(str(spec->private_scheme), "", str(spec->private_scheme_name), str(spec->private_scheme_organization));
        }
        for (size_t i = 0; s.good() && i < spec->evidence_count; ++i) {
            const bt_instance_reference &r = spec->evidence[i];
            s = document.getCurrentRequestedProcedureEvidence().addItem(str(spec->header.study_instance_uid), str(r.series_instance_uid),
                                                                        str(r.sop_class_uid), str(r.sop_instance_uid));
            if (s.bad()) why = "the evidence reference to image " + str(r.sop_instance_uid) + " (series '" + str(r.series_instance_uid) + "')";
        }
        if (s.good() && spec->predecessor) {
            const bt_instance_reference &p = *spec->predecessor;
            s = document.getPredecessorDocuments().addItem(str(spec->header.study_instance_uid), str(p.series_instance_uid),
                                                           str(p.sop_class_uid), str(p.sop_instance_uid));
            if (s.bad()) why = "the reference to the report replaced (" + str(p.sop_instance_uid) + ")";
        }
        if (s.good()) s = document.setContentDate(str(spec->header.content_date));
        if (s.good()) s = document.setContentTime(str(spec->header.content_time));
        if (s.good()) s = document.completeDocument();
        if (s.good() && spec->verifying_observer) {
            s = document.verifyDocument(str(spec->verifying_observer), str(spec->verifying_organization), str(spec->verification_datetime));
            if (s.bad()) why = "the verifying observer '" + str(spec->verifying_observer) + "' at " + str(spec->verification_datetime);
        }
        if (s.bad()) {
            setError(error, errorSize, "dcmsr could not make the SR" + (why.empty() ? std::string() : " (" + why + ")") + ": " + s.text());
            return 1;
        }
        DcmFileFormat file;
        DcmDataset *data = file.getDataset();
        s = document.write(*data);
        if (s.good()) s = copyStudyModules(*templateFile.getDataset(), *data);
        if (s.good()) s = putInstanceAttributes(*data, spec->header);
        if (s.bad()) { setError(error, errorSize, std::string("dcmsr could not write the SR: ") + s.text()); return 1; }
        setCharacterSet(*data);
        if (!saveFile(file, path, why)) { setError(error, errorSize, why); return 1; }
        return 0;
    } catch (const std::exception &e) {
        setError(error, errorSize, std::string("writing the SR failed: ") + e.what());
        return 1;
    }
}

extern "C" int bt_check_report(const char *path, char *error, size_t errorSize) {
    initialiseOnce();
    std::vector<std::string> warnings;
    capturedWarnings = &warnings;
    std::vector<std::string> problems;
    DcmFileFormat file;
    OFCondition s = file.loadFile(path);
    if (s.bad()) {
        problems.push_back(std::string("DCMTK could not read it: ") + s.text());
    } else {
        DSRDocument document;
        s = document.read(*file.getDataset());
        if (s.bad()) problems.push_back(std::string("DSRDocument::read failed: ") + s.text());
        else {
            if (!document.isValid()) problems.push_back("the document is not valid (dcmsr's DSRDocument::isValid)");
            if (!document.getTree().isValid()) problems.push_back("the document tree is not valid (DSRDocumentTree::isValid)");
            DSRIODConstraintChecker *checker = nullptr;
            if (document.getDocumentType() == DSRTypes::DT_ComprehensiveSR) checker = new DSRComprehensiveSRConstraintChecker();
            if (checker) {
                OFCondition c = document.getTree().checkDocumentTreeConstraints(checker);
                if (c.bad()) problems.push_back(std::string("the tree breaks the IOD's relationship constraints: ") + c.text());
                delete checker;
            }
        }
    }
    capturedWarnings = nullptr;
    for (const std::string &w : warnings) {
        // DCMTK 3.6.7's VR checker has no UTF-8 support: it says so for every ISO_IR 192 document it
        // reads, about itself, not about the document (dsrdump does not report it).
        if (w.rfind("The VR checker does not support this Specific Character Set", 0) == 0) continue;
        problems.push_back("dcmsr: " + w);
    }
    if (problems.empty()) return 0;
    std::string text;
    for (const std::string &p : problems) text += (text.empty() ? "" : "\n") + p;
    setError(error, errorSize, text);
    return 1;
}

// MARK: Secondary Capture

extern "C" int bt_write_capture(const bt_sc_spec *spec, const char *path, char *error, size_t errorSize) {
    initialiseOnce();
    try {
        std::string why = checkHeader(spec->header);
        if (why.empty() && (spec->width <= 0 || spec->height <= 0 || spec->width > 65535 || spec->height > 65535 || !spec->pixels))
            why = "the picture is " + std::to_string(spec->width) + "x" + std::to_string(spec->height) + " pixels: it must be 1 to 65535 each way";
        if (why.empty()) why = checkValue("the source image's SOP Class UID", spec->source_sop_class_uid);
        if (why.empty()) why = checkValue("the source image's SOP Instance UID", spec->source_sop_instance_uid);
        if (!why.empty()) { setError(error, errorSize, why); return 1; }
        DcmFileFormat templateFile;
        if (!loadTemplate(spec->header, templateFile, why)) { setError(error, errorSize, why); return 1; }

        DcmFileFormat file;
        DcmDataset *data = file.getDataset();
        OFCondition s = copyStudyModules(*templateFile.getDataset(), *data);
        auto put = [&](const DcmTagKey &tag, const std::string &value) {
            if (s.good()) s = data->putAndInsertString(tag, value.c_str());
        };
        auto putUS = [&](const DcmTagKey &tag, Uint16 value) {
            if (s.good()) s = data->putAndInsertUint16(tag, value);
        };
        // SOP Common
        put(DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
        if (s.good()) s = putInstanceAttributes(*data, spec->header);
        // General Series
        put(DCM_Modality, "OT");
        // SC Equipment
        put(DCM_ConversionType, "WSD");
        put(DCM_SecondaryCaptureDeviceManufacturer, str(spec->header.manufacturer));
        put(DCM_SecondaryCaptureDeviceSoftwareVersions, str(spec->header.software_version));
        // General Image
        put(DCM_ImageType, "DERIVED\\SECONDARY");
        if (s.good()) s = data->insertEmptyElement(DCM_PatientOrientation);
        put(DCM_BurnedInAnnotation, "YES");
        put(DCM_DerivationDescription, str(spec->derivation_description));
        if (s.good()) {
            DcmItem *item = nullptr;
            s = data->findOrCreateSequenceItem(DCM_SourceImageSequence, item, 0);
            if (s.good() && item) s = item->putAndInsertString(DCM_ReferencedSOPClassUID, spec->source_sop_class_uid);
            if (s.good() && item) s = item->putAndInsertString(DCM_ReferencedSOPInstanceUID, spec->source_sop_instance_uid);
        }
        // SC Image
        put(DCM_DateOfSecondaryCapture, str(spec->header.content_date));
        put(DCM_TimeOfSecondaryCapture, str(spec->header.content_time));
        // Image Pixel
        putUS(DCM_SamplesPerPixel, 3);
        put(DCM_PhotometricInterpretation, "RGB");
        putUS(DCM_PlanarConfiguration, 0);
        putUS(DCM_Rows, OFstatic_cast(Uint16, spec->height));
        putUS(DCM_Columns, OFstatic_cast(Uint16, spec->width));
        putUS(DCM_BitsAllocated, 8);
        putUS(DCM_BitsStored, 8);
        putUS(DCM_HighBit, 7);
        putUS(DCM_PixelRepresentation, 0);
        if (s.good()) {
            unsigned long count = OFstatic_cast(unsigned long, spec->width) * OFstatic_cast(unsigned long, spec->height) * 3;
            s = data->putAndInsertUint8Array(DCM_PixelData, spec->pixels, count);
        }
        if (s.bad()) { setError(error, errorSize, std::string("could not make the Secondary Capture: ") + s.text()); return 1; }
        setCharacterSet(*data);
        if (!saveFile(file, path, why)) { setError(error, errorSize, why); return 1; }
        return 0;
    } catch (const std::exception &e) {
        setError(error, errorSize, std::string("writing the Secondary Capture failed: ") + e.what());
        return 1;
    }
}

// MARK: C-STORE SCU

namespace {

void setMessage(bt_store_result &r, const std::string &text) { snprintf(r.message, sizeof(r.message), "%s", text.c_str()); }

std::string inWords(const OFCondition &c, int timeout) {
    if (c == DIMSE_NODATAAVAILABLE || c == DUL_READTIMEOUT)
        return "no answer from the peer within " + std::to_string(timeout) + " s (timeout)";
    if (c == DUL_PEERABORTEDASSOCIATION) return "the peer aborted the association";
    if (c == DUL_PEERREQUESTEDRELEASE) return "the peer released the association before answering";
    if (c == DUL_NETWORKCLOSED) return "the peer closed the connection";
    return std::string(c.text());
}

struct Network {
    T_ASC_Network *net = nullptr;
    T_ASC_Association *assoc = nullptr;
    T_ASC_Parameters *params = nullptr;  // owned by assoc once requested
    ~Network() {
        if (assoc) {
            ASC_destroyAssociation(&assoc);
        } else if (params) {
            ASC_destroyAssociationParameters(&params);
        }
        if (net) ASC_dropNetwork(&net);
    }
};

}  // namespace

extern "C" int bt_scu_send(const bt_scu_settings *settings, const char *const *paths, size_t count, bt_store_result *results) {
    initialiseOnce();
    int stored = 0;
    const int timeout = settings->timeout_seconds > 0 ? settings->timeout_seconds : 30;
    std::vector<std::unique_ptr<DcmFileFormat>> files(count);
    std::vector<std::string> classes(count), instances(count);
    std::vector<std::string> abstractSyntaxes;
    size_t sendable = 0;
    for (size_t i = 0; i < count; ++i) {
        results[i] = bt_store_result{};
        auto file = std::make_unique<DcmFileFormat>();
        OFCondition s = file->loadFile(paths[i]);
        if (s.bad()) {
            results[i].kind = BT_STORE_BAD_FILE;
            setMessage(results[i], std::string("could not read ") + paths[i] + ": " + s.text());
            continue;
        }
        OFString sopClass, sopInstance;
        file->getDataset()->findAndGetOFString(DCM_SOPClassUID, sopClass);
        file->getDataset()->findAndGetOFString(DCM_SOPInstanceUID, sopInstance);
        E_TransferSyntax xfer = file->getDataset()->getOriginalXfer();
        if (sopClass.empty() || sopInstance.empty()) {
            results[i].kind = BT_STORE_BAD_FILE;
            setMessage(results[i], std::string(paths[i]) + " has no SOP Class UID or SOP Instance UID");
            continue;
        }
        if (xfer != EXS_LittleEndianExplicit && xfer != EXS_LittleEndianImplicit) {
            results[i].kind = BT_STORE_BAD_FILE;
            setMessage(results[i], std::string(paths[i]) + " is in transfer syntax " + DcmXfer(xfer).getXferName() +
                                       ": only explicit and implicit VR little endian files are sent");
            continue;
        }
        classes[i] = sopClass.c_str();
        instances[i] = sopInstance.c_str();
        files[i] = std::move(file);
        if (std::find(abstractSyntaxes.begin(), abstractSyntaxes.end(), classes[i]) == abstractSyntaxes.end())
            abstractSyntaxes.push_back(classes[i]);
        ++sendable;
    }
    if (sendable == 0) return 0;
    auto failAll = [&](int kind, const std::string &why) {
        for (size_t i = 0; i < count; ++i)
            if (files[i] && results[i].kind == BT_STORE_ANSWERED && results[i].status == 0 && results[i].message[0] == 0) {
                results[i].kind = kind;
                setMessage(results[i], why);
            }
    };
    if (abstractSyntaxes.size() > 128) {
        failAll(BT_STORE_BAD_FILE, "more than 128 SOP classes in one call: send fewer at once");
        return 0;
    }

    const std::string peer = str(settings->host) + ":" + std::to_string(settings->port);
    // TCP connect timeout (used by outgoing connections only). DCMTK's socket send/receive timeouts
    // (dcmSocketSendTimeout/ReceiveTimeout, 60 s) are left alone: they would also change the daemon's
    // Storage SCP. Reads are bounded by the ACSE/DIMSE timeouts below, a write to a stuck peer by those 60 s.
    dcmConnectionTimeout.set(timeout);
    Network n;
    OFCondition s = ASC_initializeNetwork(NET_REQUESTOR, 0, timeout, &n.net);
    if (s.good()) s = ASC_createAssociationParameters(&n.params, ASC_DEFAULTMAXPDU);
    if (s.good()) s = ASC_setAPTitles(n.params, settings->calling_ae_title, settings->called_ae_title, nullptr);
    if (s.good()) {
        char local[256] = "localhost";
        gethostname(local, sizeof(local) - 1);
        s = ASC_setPresentationAddresses(n.params, local, peer.c_str());
    }
    const char *syntaxes[] = {UID_LittleEndianExplicitTransferSyntax, UID_LittleEndianImplicitTransferSyntax};
    for (size_t i = 0; s.good() && i < abstractSyntaxes.size(); ++i) {
        s = ASC_addPresentationContext(n.params, OFstatic_cast(T_ASC_PresentationContextID, 2 * i + 1), abstractSyntaxes[i].c_str(), syntaxes, 2);
    }
    if (s.bad()) {
        failAll(BT_STORE_NETWORK, std::string("could not prepare the association: ") + s.text());
        return 0;
    }
    T_ASC_Parameters *params = n.params;
    s = ASC_requestAssociation(n.net, n.params, &n.assoc, nullptr, nullptr, DUL_NOBLOCK, timeout);
    if (s.bad()) {
        std::string why;
        if (s == DUL_ASSOCIATIONREJECTED) {
            T_ASC_RejectParameters reject;
            OFString text;
            ASC_getRejectParameters(params, &reject);
            ASC_printRejectParameters(text, &reject);
            // One line: "Result: ..., Source: ..., Reason: ..."
            std::string line;
            for (char c : std::string(text.c_str())) line += (c == '\n' ? ' ' : c);
            why = str(settings->called_ae_title) + " at " + peer + " rejected the association from " + str(settings->calling_ae_title) + " (" + line + ")";
        } else {
            why = "no association with " + str(settings->called_ae_title) + " at " + peer + ": " + inWords(s, timeout);
        }
        failAll(BT_STORE_NETWORK, why);
        return 0;
    }
    bool alive = true;
    for (size_t i = 0; i < count; ++i) {
        if (!files[i]) continue;
        if (!alive) break;
        T_ASC_PresentationContextID pc = ASC_findAcceptedPresentationContextID(n.assoc, classes[i].c_str());
        if (pc == 0) {
            results[i].kind = BT_STORE_NOT_ACCEPTED;
            const char *name = dcmFindNameOfUID(classes[i].c_str(), nullptr);
            setMessage(results[i], str(settings->called_ae_title) + " did not accept SOP class " + classes[i] + (name ? std::string(" (") + name + ")" : "") +
                                       " in explicit or implicit VR little endian");
            continue;
        }
        T_DIMSE_C_StoreRQ request;
        T_DIMSE_C_StoreRSP response;
        memset(&request, 0, sizeof(request));
        memset(&response, 0, sizeof(response));
        request.MessageID = n.assoc->nextMsgID++;
        OFStandard::strlcpy(request.AffectedSOPClassUID, classes[i].c_str(), sizeof(request.AffectedSOPClassUID));
        OFStandard::strlcpy(request.AffectedSOPInstanceUID, instances[i].c_str(), sizeof(request.AffectedSOPInstanceUID));
        request.DataSetType = DIMSE_DATASET_PRESENT;
        request.Priority = DIMSE_PRIORITY_MEDIUM;
        DcmDataset *detail = nullptr;
        s = DIMSE_storeUser(n.assoc, pc, &request, nullptr, files[i]->getDataset(), nullptr, nullptr, DIMSE_NONBLOCKING, timeout,
                            &response, &detail);
        if (s.good()) {
            results[i].kind = BT_STORE_ANSWERED;
            results[i].status = response.DimseStatus;
            OFString comment;
            if (detail && detail->findAndGetOFString(DCM_ErrorComment, comment).good() && !comment.empty()) setMessage(results[i], comment.c_str());
            Uint16 st = response.DimseStatus;
            if (st == 0x0000 || st == 0x0001 || (st & 0xF000) == 0xB000) ++stored;
        } else {
            results[i].kind = BT_STORE_NETWORK;
            setMessage(results[i], "C-STORE of " + instances[i] + " to " + str(settings->called_ae_title) + " at " + peer + " failed: " + inWords(s, timeout));
            alive = false;
            for (size_t j = i + 1; j < count; ++j)
                if (files[j]) {
                    results[j].kind = BT_STORE_NETWORK;
                    setMessage(results[j], "not sent: the association ended on an earlier file (" + inWords(s, timeout) + ")");
                }
        }
        delete detail;
    }
    if (alive) {
        if (ASC_releaseAssociation(n.assoc).bad()) ASC_abortAssociation(n.assoc);
    } else {
        ASC_abortAssociation(n.assoc);
    }
    return stored;
}
