#include "bt_dicom.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iconv.h>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dcspchrs.h"
#include "dcmtk/dcmimage/diregist.h"
#include "dcmtk/dcmimgle/dcmimage.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

#include <csetjmp>
#include <openjpeg.h>
// libjpeg(-turbo), 8-bit, for DCT-scaled decoding (DCMTK's own IJG copy has no scaling interface).
#include <jpeglib.h>

struct bt_dicom {
    DcmFileFormat file;
    std::string transferSyntax;
    bool hasMeta = false;
    std::map<uint32_t, std::string> strings;
    // Specific Character Set (0008,0005), read at the first text value that needs it.
    bool charsetRead = false;
    std::string charset;
    std::vector<std::string> charsetTerms;
    /// Japanese ISO 2022 (IR 13, IR 87, IR 159), which DCMTK 3.6.7 cannot convert through glibc's iconv.
    bool japanese = false;
    /// A single-byte set DCMTK 3.6.7 does not know, converted by its iconv name (ISO_IR 203: Latin-9).
    std::string iconvName;
    std::unique_ptr<DcmSpecificCharacterSet> converter;
    /// Why `converter` could not be made.
    std::string charsetProblem;
    std::string textNote;
};

struct bt_image {
    std::unique_ptr<DicomImage> image;
    int width = 0, height = 0, channels = 1, frames = 1;
};

static void setError(char *error, size_t size, const std::string &text) {
    if (error && size > 0) { snprintf(error, size, "%s", text.c_str()); }
}

static void initialiseOnce() {
    static std::once_flag once;
    std::call_once(once, [] {
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);  // DCMTK must not write to our stderr
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
    });
}

/// A UID as written, without the padding (a NUL or space) of an odd length.
static std::string trimmedUID(const char *uid) {
    std::string text(uid);
    while (!text.empty() && (text.back() == ' ' || text.back() == '\0')) text.pop_back();
    return text;
}

extern "C" bt_dicom *bt_dicom_open(const char *path, int metadataOnly, char *error, size_t errorSize) {
    initialiseOnce();
    auto dicom = std::make_unique<bt_dicom>();
    OFCondition status = dicom->file.loadFile(path, EXS_Unknown, EGL_noChange,
                                              metadataOnly ? 4096 : DCM_MaxReadLength, ERM_autoDetect);
    if (status.bad()) {
        setError(error, errorSize, std::string("DCMTK could not parse it: ") + status.text());
        return nullptr;
    }
    DcmMetaInfo *meta = dicom->file.getMetaInfo();
    dicom->hasMeta = meta && meta->card() > 0 && meta->tagExists(DCM_TransferSyntaxUID);
    DcmXfer xfer(dicom->file.getDataset()->getOriginalXfer());
    dicom->transferSyntax = xfer.getXferID() ? xfer.getXferID() : "";
    // DCMTK 3.6.7 does not know every syntax (HTJ2K, 1.2.840.10008.1.2.4.201-203, came later): it reads such a
    // dataset as explicit VR little endian, its pixel data still encapsulated. The File Meta header names it.
    OFString named;
    if (dicom->hasMeta && meta->findAndGetOFString(DCM_TransferSyntaxUID, named).good() && !named.empty() &&
        DcmXfer(named.c_str()).getXfer() == EXS_Unknown) {
        dicom->transferSyntax = trimmedUID(named.c_str());
    }
    return dicom.release();
}

extern "C" void bt_dicom_close(bt_dicom *dicom) { delete dicom; }

// MARK: Text in its character set, to UTF-8

namespace {
std::string trimmedTerm(const std::string &term) {
    size_t first = term.find_first_not_of(' '), last = term.find_last_not_of(' ');
    return first == std::string::npos ? std::string() : term.substr(first, last - first + 1);
}

/// At most `limit` bytes of a value from the file, for a message.
std::string shortened(const std::string &text, size_t limit = 64) {
    return text.size() <= limit ? text : text.substr(0, limit) + "...";
}

/// Converts `in` from the iconv encoding `from` to UTF-8 (no transliteration, nothing dropped).
bool iconvToUTF8(const std::string &in, const char *from, std::string &out) {
    if (in.empty()) return true;
    iconv_t cd = iconv_open("UTF-8", from);
    if (cd == (iconv_t)-1) return false;
    std::vector<char> source(in.begin(), in.end());
    std::vector<char> target(in.size() * 4 + 16);
    char *inPtr = source.data(), *outPtr = target.data();
    size_t inLeft = source.size(), outLeft = target.size();
    bool ok = iconv(cd, &inPtr, &inLeft, &outPtr, &outLeft) != (size_t)-1 && inLeft == 0 &&
              iconv(cd, nullptr, nullptr, &outPtr, &outLeft) != (size_t)-1;
    iconv_close(cd);
    if (ok) out.append(target.data(), size_t(outPtr - target.data()));
    return ok;
}

/// Japanese text in ISO 2022 code extensions (DICOM PS3.5 6.1.2.5, Annex H): ASCII or JIS X 0201
/// Romaji in G0 (ESC ( B, ESC ( J), JIS X 0201 Katakana in G1 (ESC ) I), JIS X 0208 (ESC $ B) and
/// JIS X 0212 (ESC $ ( D) in G0. The designations return to the initial state (value 1 of Specific
/// Character Set) at every delimiter and control character. Two-byte and Katakana characters go
/// through glibc's EUC-JP decoder.
bool decodeJapanese(const std::string &in, bool romajiKatakanaInitially, const std::string &delimiters,
                    std::string &out, std::string &why) {
    enum class G0 { ascii, romaji, jisX0208, jisX0212 };
    G0 g0 = romajiKatakanaInitially ? G0::romaji : G0::ascii;
    bool katakana = romajiKatakanaInitially;
    std::string pending;  // EUC-JP bytes not yet converted
    auto flush = [&]() -> bool {
        if (pending.empty()) return true;
        if (!iconvToUTF8(pending, "EUC-JP", out)) { why = "a two-byte character is not in JIS X 0208 / JIS X 0212"; return false; }
        pending.clear();
        return true;
    };
    auto reset = [&] { g0 = romajiKatakanaInitially ? G0::romaji : G0::ascii; katakana = romajiKatakanaInitially; };
    const size_t n = in.size();
    for (size_t i = 0; i < n;) {
        uint8_t c = uint8_t(in[i]);
        if (c == 0x1B) {
            std::string escape = in.substr(i + 1, 3);
            if (escape.compare(0, 2, "(B") == 0) { g0 = G0::ascii; i += 3; }
            else if (escape.compare(0, 2, "(J") == 0) { g0 = G0::romaji; i += 3; }
            else if (escape.compare(0, 2, ")I") == 0) { katakana = true; i += 3; }
            else if (escape.compare(0, 2, "$B") == 0) { g0 = G0::jisX0208; i += 3; }
            else if (escape.compare(0, 3, "$(D") == 0) { g0 = G0::jisX0212; i += 4; }
            else { why = "an escape sequence for a character set other than ISO 2022 IR 6, 13, 87 or 159"; return false; }
            continue;
        }
        if (c < 0x21 || c == 0x7F) {  // controls and space: single bytes in every set
            pending.push_back(char(c));
            if (c == 0x0D || c == 0x0A || c == 0x09 || c == 0x0C) reset();
            ++i;
            continue;
        }
        if (c >= 0x80) {
            if (katakana && c >= 0xA1 && c <= 0xDF) { pending.push_back(char(0x8E)); pending.push_back(char(c)); ++i; continue; }
            why = "a byte above 0x7F that no designated character set defines";
            return false;
        }
        if (g0 == G0::jisX0208 || g0 == G0::jisX0212) {
            if (i + 1 >= n || uint8_t(in[i + 1]) < 0x21 || uint8_t(in[i + 1]) > 0x7E) { why = "a two-byte character is cut short"; return false; }
            if (g0 == G0::jisX0212) pending.push_back(char(0x8F));
            pending.push_back(char(c | 0x80));
            pending.push_back(char(uint8_t(in[i + 1]) | 0x80));
            i += 2;
            continue;
        }
        if (delimiters.find(char(c)) != std::string::npos) {
            pending.push_back(char(c));
            reset();
        } else if (g0 == G0::romaji && (c == 0x5C || c == 0x7E)) {
            if (!flush()) return false;
            out += c == 0x5C ? "\xC2\xA5" : "\xE2\x80\xBE";  // YEN SIGN, OVERLINE
        } else {
            pending.push_back(char(c));
        }
        ++i;
    }
    return flush();
}

void readCharset(bt_dicom *dicom) {
    if (dicom->charsetRead) return;
    dicom->charsetRead = true;
    OFString value;
    if (dicom->file.getDataset()->findAndGetOFStringArray(DCM_SpecificCharacterSet, value, OFFalse).good()) dicom->charset = value.c_str();
    size_t start = 0;
    while (true) {
        size_t end = dicom->charset.find('\\', start);
        dicom->charsetTerms.push_back(trimmedTerm(dicom->charset.substr(start, end == std::string::npos ? std::string::npos : end - start)));
        if (end == std::string::npos) break;
        start = end + 1;
    }
    for (const auto &term : dicom->charsetTerms) {
        if (term == "ISO 2022 IR 87" || term == "ISO 2022 IR 159") dicom->japanese = true;
    }
    if (dicom->charsetTerms.size() == 1 && dicom->charsetTerms[0] == "ISO 2022 IR 13") dicom->japanese = true;
    if (dicom->japanese) return;
    if (dicom->charsetTerms.size() == 1 && dicom->charsetTerms[0] == "ISO_IR 203") {
        dicom->iconvName = "ISO-8859-15";
        return;
    }
    auto converter = std::make_unique<DcmSpecificCharacterSet>();
    OFCondition status = converter->selectCharacterSet(OFString(dicom->charset.c_str()), "ISO_IR 192");
    if (status.good()) {
        dicom->converter = std::move(converter);
    } else {
        dicom->charsetProblem = "Specific Character Set (0008,0005) '" + shortened(trimmedTerm(dicom->charset)) +
                                "' is unknown or cannot be converted here (" + status.text() + ")";
    }
}

/// Converts one element's value to UTF-8 in place when it has non-ASCII bytes or escape sequences;
/// notes why when it cannot.
void convertToUTF8(bt_dicom *dicom, DcmElement *element, const OFString &raw, OFString &value) {
    value = raw;
    if (!element->isAffectedBySpecificCharacterSet()) return;
    bool plain = true;
    for (size_t i = 0; i < raw.length(); ++i) {
        uint8_t c = uint8_t(raw[i]);
        if (c >= 0x80 || c == 0x1B) { plain = false; break; }
    }
    if (plain) return;
    readCharset(dicom);
    std::string problem;
    if (dicom->charset.empty() || dicom->charsetTerms == std::vector<std::string>{"ISO_IR 6"}) {
        problem = "text holds bytes outside ASCII but the file declares no Specific Character Set (0008,0005) other than ASCII";
    } else if (dicom->japanese) {
        std::string out, why;
        bool romaji = !dicom->charsetTerms.empty() && dicom->charsetTerms[0] == "ISO 2022 IR 13";
        std::string delimiters = element->getVR() == EVR_PN ? "\\^=" : "\\";
        if (decodeJapanese(std::string(raw.c_str(), raw.length()), romaji, delimiters, out, why)) {
            value = OFString(out.c_str(), out.size());
            return;
        }
        problem = "a text value is not valid in Specific Character Set (0008,0005) '" + shortened(trimmedTerm(dicom->charset)) + "' (" + why + ")";
    } else if (!dicom->iconvName.empty()) {
        std::string out;
        if (iconvToUTF8(std::string(raw.c_str(), raw.length()), dicom->iconvName.c_str(), out)) {
            value = OFString(out.c_str(), out.size());
            return;
        }
        problem = "a text value is not valid in Specific Character Set (0008,0005) '" + dicom->charsetTerms[0] + "'";
    } else if (!dicom->converter) {
        problem = dicom->charsetProblem;
    } else {
        OFCondition status = element->convertCharacterSet(*dicom->converter);
        OFString converted;
        if (status.good() && element->getOFStringArray(converted).good()) {
            value = converted;
            return;
        }
        problem = "a text value is not valid in Specific Character Set (0008,0005) '" + shortened(trimmedTerm(dicom->charset)) + "' (" +
                  (status.bad() ? status.text() : "unreadable after conversion") + ")";
    }
    if (dicom->textNote.empty()) dicom->textNote = problem + "; such text is kept as received";
}
}  // namespace

extern "C" const char *bt_dicom_string(bt_dicom *dicom, uint16_t group, uint16_t element) {
    uint32_t key = (uint32_t(group) << 16) | element;
    auto found = dicom->strings.find(key);
    if (found != dicom->strings.end()) return found->second.c_str();
    DcmItem *source = group == 0x0002 ? static_cast<DcmItem *>(dicom->file.getMetaInfo()) : dicom->file.getDataset();
    DcmElement *found_element = nullptr;
    OFString raw, value;
    if (!source || source->findAndGetElement(DcmTagKey(group, element), found_element, OFFalse).bad() || !found_element ||
        found_element->getOFStringArray(raw).bad()) {
        return nullptr;
    }
    if (group == 0x0002) value = raw; else convertToUTF8(dicom, found_element, raw, value);
    auto inserted = dicom->strings.emplace(key, std::string(value.c_str(), value.length()));
    return inserted.first->second.c_str();
}

extern "C" const char *bt_dicom_text_note(bt_dicom *dicom) { return dicom->textNote.empty() ? nullptr : dicom->textNote.c_str(); }

extern "C" unsigned long bt_dicom_dataset_size(bt_dicom *dicom) { return dicom->file.getDataset()->card(); }

extern "C" long bt_dicom_integer(bt_dicom *dicom, uint16_t group, uint16_t element, long fallback) {
    DcmDataset *ds = dicom->file.getDataset();
    Uint16 us;
    if (ds->findAndGetUint16(DcmTagKey(group, element), us, 0, OFFalse).good()) return us;
    Sint32 is;
    if (ds->findAndGetSint32(DcmTagKey(group, element), is, 0, OFFalse).good()) return is;
    OFString text;
    if (ds->findAndGetOFString(DcmTagKey(group, element), text, 0, OFFalse).good()) {
        char *end = nullptr;
        long v = strtol(text.c_str(), &end, 10);
        if (end && end != text.c_str() && *end == '\0') return v;
    }
    return fallback;
}

extern "C" const char *bt_dicom_transfer_syntax(bt_dicom *dicom) { return dicom->transferSyntax.c_str(); }
extern "C" int bt_dicom_has_file_meta(bt_dicom *dicom) { return dicom->hasMeta ? 1 : 0; }

// MARK: JPEG 2000 through OpenJPEG

namespace {
struct MemoryStream {
    const uint8_t *data;
    size_t size, position;
};

OPJ_SIZE_T readStream(void *buffer, OPJ_SIZE_T bytes, void *user) {
    auto *m = static_cast<MemoryStream *>(user);
    if (m->position >= m->size) return (OPJ_SIZE_T)-1;
    size_t n = std::min<size_t>(bytes, m->size - m->position);
    memcpy(buffer, m->data + m->position, n);
    m->position += n;
    return n;
}
OPJ_OFF_T skipStream(OPJ_OFF_T bytes, void *user) {
    auto *m = static_cast<MemoryStream *>(user);
    if (bytes < 0) {
        if (size_t(-bytes) > m->position) return -1;
        m->position -= size_t(-bytes);
    } else {
        m->position = std::min(m->size, m->position + size_t(bytes));
    }
    return bytes;
}
OPJ_BOOL seekStream(OPJ_OFF_T to, void *user) {
    auto *m = static_cast<MemoryStream *>(user);
    if (to < 0 || size_t(to) > m->size) return OPJ_FALSE;
    m->position = size_t(to);
    return OPJ_TRUE;
}
void quiet(const char *, void *) {}

uint32_t ceilShift(uint32_t value, uint32_t shift) { return uint32_t((uint64_t(value) + (uint64_t(1) << shift) - 1) >> shift); }

/// The lowest resolution level whose image keeps at least `minSize` pixels in both dimensions, given the
/// image area (x0, y0)-(x1, y1) on the reference grid and `resolutions` (decomposition levels + 1).
int levelFor(uint32_t x0, uint32_t y0, uint32_t x1, uint32_t y1, uint32_t resolutions, int minSize) {
    if (minSize <= 0 || resolutions < 2) return 0;
    int level = 0;
    for (uint32_t r = 1; r < resolutions && r < 31; ++r) {
        uint32_t w = ceilShift(x1, r) - ceilShift(x0, r), h = ceilShift(y1, r) - ceilShift(y0, r);
        if (w < uint32_t(minSize) || h < uint32_t(minSize)) break;
        level = int(r);
    }
    return level;
}

/// The values Bits Stored and Pixel Representation allow.
struct StoredRange {
    bool valid = false;
    bool isSigned = false;
    OPJ_INT32 low = 0, high = 0;
    StoredRange(long bitsStored, long pixelRepresentation) {
        if (bitsStored < 1 || bitsStored > 16) return;
        valid = true;
        isSigned = pixelRepresentation == 1;
        low = isSigned ? -(OPJ_INT32(1) << (bitsStored - 1)) : 0;
        high = isSigned ? (OPJ_INT32(1) << (bitsStored - 1)) - 1 : (OPJ_INT32(1) << bitsStored) - 1;
    }
};

/// Decodes one codestream into `out` (samples interleaved, as DICOM's planar configuration 0). With
/// `level` -1, picks the resolution level from `minSize` (see `levelFor`); else decodes at `level`.
/// `level` is set to the level decoded, `width` x `height` to the decoded size.
bool decodeJ2K(const std::vector<uint8_t> &code, int rows, int columns, int samples, int bitsAllocated, const StoredRange &range, int minSize,
               int threads, int &level, int &width, int &height, std::vector<uint8_t> &out, std::string &why) {
    if (code.size() < 4) { why = "JPEG 2000 fragment is empty"; return false; }
    // A JP2 file box starts with 0000000C6A502020; a raw codestream with FF4FFF51.
    bool jp2 = code.size() >= 12 && code[4] == 0x6A && code[5] == 0x50;
    opj_codec_t *codec = opj_create_decompress(jp2 ? OPJ_CODEC_JP2 : OPJ_CODEC_J2K);
    opj_set_error_handler(codec, quiet, nullptr);
    opj_set_warning_handler(codec, quiet, nullptr);
    opj_set_info_handler(codec, quiet, nullptr);
    opj_dparameters_t parameters;
    opj_set_default_decoder_parameters(&parameters);
    MemoryStream memory{code.data(), code.size(), 0};
    opj_stream_t *stream = opj_stream_default_create(OPJ_TRUE);
    opj_stream_set_user_data(stream, &memory, nullptr);
    opj_stream_set_user_data_length(stream, code.size());
    opj_stream_set_read_function(stream, readStream);
    opj_stream_set_skip_function(stream, skipStream);
    opj_stream_set_seek_function(stream, seekStream);
    opj_image_t *image = nullptr;
    // 0 threads: the calling thread only (also when OPJ_NUM_THREADS is set in the environment).
    bool ok = opj_setup_decoder(codec, &parameters) && opj_codec_set_threads(codec, threads > 1 ? threads : 0) &&
              opj_read_header(stream, codec, &image) && image && image->numcomps > 0;
    bool headerRead = ok;
    uint32_t expectedWidth = uint32_t(columns), expectedHeight = uint32_t(rows);
    if (ok && int(image->x1 - image->x0) == columns && int(image->y1 - image->y0) == rows && image->x1 > image->x0 && image->y1 > image->y0) {
        if (level < 0) {
            // The decomposition levels of every component (the main header's COD/COC); a tile that
            // declares fewer makes OpenJPEG refuse the reduced decode, and the caller decodes in full.
            uint32_t resolutions = 0;
            if (opj_codestream_info_v2_t *cstr = opj_get_cstr_info(codec)) {
                if (cstr->m_default_tile_info.tccp_info && cstr->nbcomps == image->numcomps) {
                    resolutions = UINT32_MAX;
                    for (uint32_t c = 0; c < cstr->nbcomps; ++c) resolutions = std::min(resolutions, cstr->m_default_tile_info.tccp_info[c].numresolutions);
                }
                opj_destroy_cstr_info(&cstr);
            }
            level = levelFor(image->x0, image->y0, image->x1, image->y1, resolutions, minSize);
        }
        if (level > 0) {
            expectedWidth = ceilShift(image->x1, uint32_t(level)) - ceilShift(image->x0, uint32_t(level));
            expectedHeight = ceilShift(image->y1, uint32_t(level)) - ceilShift(image->y0, uint32_t(level));
            ok = opj_set_decoded_resolution_factor(codec, OPJ_UINT32(level));
            if (!ok) why = "OpenJPEG refused resolution level " + std::to_string(level);
        }
    } else if (ok) {
        level = 0;  // the header's size is checked against Rows and Columns below
    }
    if (level < 0) level = 0;
    if (ok) ok = opj_decode(codec, stream, image) && opj_end_decompress(codec, stream);
    if (!ok || !image) {
        if (why.empty() || !headerRead) why = "the JPEG 2000 codestream is corrupt (OpenJPEG could not decode it)";
        if (level > 0) why += " at resolution level " + std::to_string(level);
        ok = false;
    } else if (int(image->numcomps) != samples || image->comps[0].w != expectedWidth || image->comps[0].h != expectedHeight) {
        why = "the JPEG 2000 image is " + std::to_string(image->comps[0].w) + "x" + std::to_string(image->comps[0].h) + "x" +
              std::to_string(image->numcomps) + " but the header says " + std::to_string(columns) + "x" + std::to_string(rows) + "x" +
              std::to_string(samples);
        if (level > 0) why += " (" + std::to_string(expectedWidth) + "x" + std::to_string(expectedHeight) + " at resolution level " + std::to_string(level) + ")";
        ok = false;
    } else {
        width = int(expectedWidth);
        height = int(expectedHeight);
        size_t pixels = size_t(width) * size_t(height);
        int bytes = bitsAllocated / 8;
        out.assign(pixels * samples * bytes, 0);
        for (int c = 0; c < samples; ++c) {
            if (image->comps[c].w != image->comps[0].w || image->comps[c].h != image->comps[0].h || !image->comps[c].data) {
                why = "JPEG 2000 components differ in size (subsampled components are not supported)";
                ok = false;
                break;
            }
            const OPJ_INT32 *src = image->comps[c].data;
            // A lower level is a low-pass of the image, and its filters ring at sharp edges beyond the
            // values the full image holds (a 5/3 level of a 12-bit CR reaches 5482): clamp it to the values
            // Bits Stored allows, which the full image never leaves.
            const bool clamp = level > 0 && range.valid;
            for (size_t p = 0; p < pixels; ++p) {
                OPJ_INT32 value = clamp ? std::min(std::max(src[p], range.low), range.high) : src[p];
                uint32_t v = uint32_t(value);  // two's complement bits, as stored
                size_t at = (p * samples + c) * bytes;
                out[at] = uint8_t(v);
                if (bytes == 2) out[at + 1] = uint8_t(v >> 8);
            }
        }
    }
    if (image) opj_image_destroy(image);
    opj_stream_destroy(stream);
    opj_destroy_codec(codec);
    return ok;
}

/// The codestream of each frame of encapsulated pixel data: one frame may span several fragments;
/// several frames must have one fragment each (no Basic Offset Table is needed then).
bool frameCodestreams(DcmDataset *ds, int frames, const char *what, std::vector<std::vector<uint8_t>> &codes, std::string &why) {
    DcmElement *element = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, element).bad() || !element) { why = "there is no Pixel Data element"; return false; }
    DcmPixelData *pixelData = OFstatic_cast(DcmPixelData *, element);
    DcmPixelSequence *sequence = nullptr;
    E_TransferSyntax xfer = ds->getOriginalXfer();
    if (pixelData->getEncapsulatedRepresentation(xfer, nullptr, sequence).bad() || !sequence) {
        why = std::string("the ") + what + " pixel data is not encapsulated";
        return false;
    }
    unsigned long fragments = sequence->card();
    if (fragments < 2) { why = "the encapsulated pixel data has no fragment"; return false; }
    auto fragmentBytes = [&](unsigned long i, std::vector<uint8_t> &into) -> bool {
        DcmPixelItem *item = nullptr;
        Uint8 *bytes = nullptr;
        if (sequence->getItem(item, i).bad() || !item || item->getUint8Array(bytes).bad()) return false;
        if (bytes) into.insert(into.end(), bytes, bytes + item->getLength());
        return true;
    };
    codes.clear();
    if (frames == 1) {
        codes.emplace_back();
        for (unsigned long i = 1; i < fragments; ++i) {
            if (!fragmentBytes(i, codes.back())) { why = "fragment " + std::to_string(i) + " is unreadable"; return false; }
        }
    } else if (fragments - 1 == (unsigned long)frames) {
        for (unsigned long i = 1; i < fragments; ++i) {
            codes.emplace_back();
            if (!fragmentBytes(i, codes.back())) { why = "fragment " + std::to_string(i) + " is unreadable"; return false; }
        }
    } else {
        why = std::string("multi-frame ") + what + " with frames split over several fragments is not supported";
        return false;
    }
    return true;
}

/// Puts decoded native pixels (all frames, samples interleaved) in place of the encapsulated ones, and
/// the decoded size in Rows and Columns when it was reduced.
bool replacePixelData(DcmDataset *ds, const std::vector<uint8_t> &all, int bitsAllocated, int samples, bool reduced, int width, int height,
                      std::string &why) {
    if (reduced) {
        OFCondition resized = ds->putAndInsertUint16(DCM_Rows, Uint16(height));
        if (resized.good()) resized = ds->putAndInsertUint16(DCM_Columns, Uint16(width));
        if (resized.bad()) { why = std::string("cannot set the reduced size: ") + resized.text(); return false; }
    }
    ds->findAndDeleteElement(DCM_PixelData);
    OFCondition status = bitsAllocated == 16
        ? ds->putAndInsertUint16Array(DCM_PixelData, reinterpret_cast<const Uint16 *>(all.data()), all.size() / 2)
        : ds->putAndInsertUint8Array(DCM_PixelData, all.data(), all.size());
    if (status.bad()) { why = std::string("cannot store decoded pixels: ") + status.text(); return false; }
    if (samples > 1) ds->putAndInsertUint16(DCM_PlanarConfiguration, 0);
    return true;
}

bool isJPEG2000(const std::string &ts) {
    return ts == "1.2.840.10008.1.2.4.90" || ts == "1.2.840.10008.1.2.4.91" || ts == "1.2.840.10008.1.2.4.201" ||
           ts == "1.2.840.10008.1.2.4.202" || ts == "1.2.840.10008.1.2.4.203";
}

/// How far a gray frame's extreme values move when it is averaged over 2x2 blocks (a stand-in for the
/// next lower resolution level), as a fraction of its range (maximum - minimum); the largest over the
/// frames. Extremes held by areas of several pixels (saturation, a collimator's shadow) stay put: about
/// 0 to 0.9 % on the radiographs measured; a marker, text or a dot of a few pixels moves them by 10 % or more.
double extremesShift(const std::vector<uint8_t> &all, int width, int height, int frames, int bytes, bool isSigned) {
    const size_t pixels = size_t(width) * size_t(height);
    if (pixels == 0 || all.size() < pixels * size_t(frames) * size_t(bytes)) return 1;
    auto at = [&](size_t i) -> int32_t {
        if (bytes == 1) return isSigned ? int32_t(int8_t(all[i])) : int32_t(all[i]);
        uint16_t u = uint16_t(all[2 * i] | (uint16_t(all[2 * i + 1]) << 8));
        return isSigned ? int32_t(int16_t(u)) : int32_t(u);
    };
    double worst = 0;
    for (int f = 0; f < frames; ++f) {
        const size_t base = size_t(f) * pixels;
        int32_t low = INT32_MAX, high = INT32_MIN;
        for (size_t i = 0; i < pixels; ++i) { int32_t v = at(base + i); low = std::min(low, v); high = std::max(high, v); }
        if (high <= low || width < 2 || height < 2) continue;
        int64_t low4 = INT64_MAX, high4 = INT64_MIN;  // sums of 2x2 blocks: 4 x their means
        for (int y = 0; y + 1 < height; y += 2) {
            const size_t top = base + size_t(y) * size_t(width), bottom = top + size_t(width);
            for (int x = 0; x + 1 < width; x += 2) {
                int64_t sum = int64_t(at(top + x)) + at(top + x + 1) + at(bottom + x) + at(bottom + x + 1);
                low4 = std::min(low4, sum);
                high4 = std::max(high4, sum);
            }
        }
        double range = 4.0 * double(int64_t(high) - int64_t(low));
        worst = std::max(worst, std::max(double(low4 - 4 * int64_t(low)), double(4 * int64_t(high) - high4)) / range);
    }
    return worst;
}

/// Replaces encapsulated JPEG 2000 pixel data with the decoded native pixels.
/// With `minSize` > 0, decodes at the reduced resolution `decodeJ2K` picks from the first frame (every
/// frame at that level; if any fails there, all again at full resolution) and sets Rows and Columns to
/// the decoded size. `level`, `width` and `height` tell what was decoded.
/// With `minMax` (a gray image that will get the min-max window), the level is one finer than `minSize`
/// needs, and its extremes stand for the full image's only where they are stable (`extremesShift` at
/// most `bt_min_max_shift_limit`); else every frame is decoded in full. `shift` tells the figure
/// (-1 when not measured).
bool decodeJPEG2000InPlace(DcmDataset *ds, int rows, int columns, int samples, int frames, int bitsAllocated, const StoredRange &range,
                           int minSize, bool minMax, int threads, int &level, int &width, int &height, double &shift, std::string &why) {
    shift = -1;
    if (bitsAllocated != 8 && bitsAllocated != 16) { why = "Bits Allocated " + std::to_string(bitsAllocated) + " is not supported with JPEG 2000"; return false; }
    std::vector<std::vector<uint8_t>> codes;
    if (!frameCodestreams(ds, frames, "JPEG 2000", codes, why)) return false;
    std::vector<uint8_t> all;
    const int wantedSize = minMax && minSize > 0 ? 2 * minSize : minSize;
    auto decodeAll = [&](int wanted) -> bool {
        all.clear();
        level = wanted;
        for (size_t i = 0; i < codes.size(); ++i) {
            std::vector<uint8_t> frame;
            int frameLevel = level, w = 0, h = 0;
            bool decoded = decodeJ2K(codes[i], rows, columns, samples, bitsAllocated, range, wantedSize, threads, frameLevel, w, h, frame, why);
            if (i == 0) level = frameLevel;  // the first frame picks the level; the others follow it
            if (!decoded) return false;
            if (i == 0) { width = w; height = h; }
            if (w != width || h != height) { why = "JPEG 2000 frames differ in size"; return false; }
            if (codes.size() == 1) all.swap(frame); else all.insert(all.end(), frame.begin(), frame.end());
        }
        return true;
    };
    if (!decodeAll(wantedSize > 0 ? -1 : 0)) {
        // A codestream that lies about its levels or sizes: the full decode says what is wrong, if anything.
        if (level <= 0 || !decodeAll(0)) return false;
    }
    if (minMax && level > 0 && samples == 1) {
        shift = extremesShift(all, width, height, int(codes.size()), bitsAllocated / 8, range.isSigned);
        if (shift > bt_min_max_shift_limit && !decodeAll(0)) return false;
    }
    return replacePixelData(ds, all, bitsAllocated, samples, level > 0, width, height, why);
}

struct JPEGErrors {
    jpeg_error_mgr manager;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

void jpegFailed(j_common_ptr info) {
    auto *errors = reinterpret_cast<JPEGErrors *>(info->err);
    (*info->err->format_message)(info, errors->message);
    longjmp(errors->jump, 1);
}
void jpegQuiet(j_common_ptr, int) {}

/// Decodes one gray 8-bit JPEG codestream scaled by 1/`denominator` into `out` (width x height bytes).
/// Only plain data lives between setjmp and a libjpeg error's longjmp.
bool decodeScaledJPEG(const std::vector<uint8_t> &code, int rows, int columns, int denominator, std::vector<uint8_t> &out, int &width,
                      int &height, std::string &why) {
    jpeg_decompress_struct info;
    JPEGErrors errors;
    info.err = jpeg_std_error(&errors.manager);
    errors.manager.error_exit = jpegFailed;
    errors.manager.emit_message = jpegQuiet;
    errors.message[0] = 0;
    jpeg_create_decompress(&info);
    if (setjmp(errors.jump)) {
        why = std::string("libjpeg: ") + errors.message;
        jpeg_destroy_decompress(&info);
        return false;
    }
    jpeg_mem_src(&info, code.data(), (unsigned long)code.size());
    jpeg_read_header(&info, TRUE);
    if (info.num_components != 1 || info.data_precision != 8 || int(info.image_width) != columns || int(info.image_height) != rows) {
        why = "the JPEG is " + std::to_string(info.image_width) + "x" + std::to_string(info.image_height) + ", " +
              std::to_string(info.num_components) + " component(s) of " + std::to_string(info.data_precision) + " bits, not " +
              std::to_string(columns) + "x" + std::to_string(rows) + " gray 8-bit as the header says";
        jpeg_destroy_decompress(&info);
        return false;
    }
    info.out_color_space = JCS_GRAYSCALE;
    info.scale_num = 1;
    info.scale_denom = (unsigned int)denominator;
    info.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&info);
    width = int(info.output_width);
    height = int(info.output_height);
    out.resize(size_t(width) * size_t(height));
    while (info.output_scanline < info.output_height) {
        JSAMPROW row = out.data() + size_t(info.output_scanline) * size_t(width);
        jpeg_read_scanlines(&info, &row, 1);
    }
    jpeg_finish_decompress(&info);
    jpeg_destroy_decompress(&info);
    return true;
}

bool isEightBitLossyJPEG(const std::string &ts) { return ts == "1.2.840.10008.1.2.4.50" || ts == "1.2.840.10008.1.2.4.51"; }

/// For a gray 8-bit JPEG needed at `minSize` pixels or more: the smallest DCT scale 1/2, 1/4 or 1/8 whose
/// image keeps both sides at least `minSize`, decoded by libjpeg in place of the encapsulated pixels.
/// False (with `why`) when it does not apply or fails: the caller then decodes in full through DCMTK,
/// which says what is wrong with a broken file.
bool decodeJPEGScaledInPlace(DcmDataset *ds, int rows, int columns, int samples, int frames, int bitsAllocated, int bitsStored,
                             int minSize, int &level, int &width, int &height, std::string &why) {
    if (minSize <= 0 || samples != 1 || bitsAllocated != 8 || bitsStored != 8) return false;
    int denominator = 1;
    for (int d : {8, 4, 2}) {
        if ((columns + d - 1) / d >= minSize && (rows + d - 1) / d >= minSize) { denominator = d; break; }
    }
    if (denominator == 1) return false;
    std::vector<std::vector<uint8_t>> codes;
    if (!frameCodestreams(ds, frames, "JPEG", codes, why)) return false;
    std::vector<uint8_t> all, frame;
    for (size_t i = 0; i < codes.size(); ++i) {
        int w = 0, h = 0;
        if (!decodeScaledJPEG(codes[i], rows, columns, denominator, frame, w, h, why)) return false;
        if (i == 0) { width = w; height = h; }
        if (w != width || h != height) { why = "JPEG frames differ in size"; return false; }
        all.insert(all.end(), frame.begin(), frame.end());
    }
    level = denominator == 8 ? 3 : denominator == 4 ? 2 : 1;
    return replacePixelData(ds, all, 8, 1, true, width, height, why);
}
}  // namespace

// MARK: Pixel Data against its header

namespace {
std::string decimal(unsigned __int128 value) {
    std::string digits;
    do { digits.insert(digits.begin(), char('0' + int(value % 10))); value /= 10; } while (value > 0);
    return digits;
}

/// Empty when Pixel Data holds what the header declares; else why not.
std::string pixelDataShortfall(bt_dicom *dicom) {
    DcmDataset *ds = dicom->file.getDataset();
    DcmElement *element = nullptr;
    if (ds->findAndGetElement(DCM_PixelData, element, OFFalse).bad() || !element) return "";
    long rows = bt_dicom_integer(dicom, 0x0028, 0x0010, 0), columns = bt_dicom_integer(dicom, 0x0028, 0x0011, 0);
    long frames = bt_dicom_integer(dicom, 0x0028, 0x0008, 1), samples = bt_dicom_integer(dicom, 0x0028, 0x0002, 1);
    long bitsAllocated = bt_dicom_integer(dicom, 0x0028, 0x0100, 0);
    if (rows <= 0 || columns <= 0 || frames <= 0 || samples <= 0 || bitsAllocated <= 0) return "";
    const std::string advice = "; the file is truncated or corrupt";
    Uint32 length = element->getLengthField();
    if (length == DCM_UndefinedLength || DcmXfer(ds->getOriginalXfer()).isEncapsulated()) {
        auto *pixelData = dynamic_cast<DcmPixelData *>(element);
        DcmPixelSequence *sequence = nullptr;
        if (!pixelData || pixelData->getEncapsulatedRepresentation(ds->getOriginalXfer(), nullptr, sequence).bad() || !sequence) return "";
        unsigned long items = sequence->card(), fragments = 0;
        for (unsigned long i = 1; i < items; ++i) {  // item 0 is the Basic Offset Table
            DcmPixelItem *item = nullptr;
            if (sequence->getItem(item, i).good() && item && item->getLengthField() > 0) fragments++;
        }
        if (fragments >= (unsigned long)frames) return "";
        return "Pixel Data (7FE0,0010) holds " + std::to_string(fragments) + " non-empty fragment(s) of compressed data for " +
               std::to_string(frames) + " frame(s) (Number of Frames), and every frame needs at least one" + advice;
    }
    // YBR_FULL_422 and YBR_PARTIAL_422 hold two values per pixel (two luminance, one pair of chroma per two pixels).
    OFString photometric;
    long valuesPerPixel = samples;
    if (samples == 3 && ds->findAndGetOFString(DCM_PhotometricInterpretation, photometric).good() &&
        (photometric == "YBR_FULL_422" || photometric == "YBR_PARTIAL_422")) {
        valuesPerPixel = 2;
    }
    unsigned __int128 bits = (unsigned __int128)rows * (unsigned __int128)columns * (unsigned __int128)valuesPerPixel *
                             (unsigned __int128)bitsAllocated * (unsigned __int128)frames;
    unsigned __int128 needed = (bits + 7) / 8;
    if ((unsigned __int128)length >= needed) return "";
    return "Pixel Data (7FE0,0010) holds " + std::to_string(length) + " bytes, but Rows x Columns x Samples per Pixel x Bits Allocated x " +
           "Number of Frames (" + std::to_string(rows) + " x " + std::to_string(columns) + " x " + std::to_string(samples) + " x " +
           std::to_string(bitsAllocated) + " x " + std::to_string(frames) + ") need " + decimal(needed) + " bytes" + advice;
}
}  // namespace

extern "C" int bt_dicom_check_pixel_data(bt_dicom *dicom, char *error, size_t errorSize) {
    std::string why = pixelDataShortfall(dicom);
    if (why.empty()) return 0;
    setError(error, errorSize, why);
    return 1;
}

extern "C" bt_image *bt_dicom_image(bt_dicom *dicom, uint64_t maxPixels, bt_render_info *info, char *error, size_t errorSize) {
    return bt_dicom_image_reduced(dicom, maxPixels, 0, 1, 0, info, error, errorSize);
}

extern "C" bt_image *bt_dicom_image_reduced(bt_dicom *dicom, uint64_t maxPixels, int minSize, int threads, int expectMinMax,
                                            bt_render_info *info, char *error, size_t errorSize) {
    initialiseOnce();
    DcmDataset *ds = dicom->file.getDataset();
    if (!ds->tagExists(DCM_PixelData)) { setError(error, errorSize, "it has no Pixel Data (7FE0,0010)"); return nullptr; }
    long rows = bt_dicom_integer(dicom, 0x0028, 0x0010, 0), columns = bt_dicom_integer(dicom, 0x0028, 0x0011, 0);
    long frames = bt_dicom_integer(dicom, 0x0028, 0x0008, 1), samples = bt_dicom_integer(dicom, 0x0028, 0x0002, 1);
    long bitsAllocated = bt_dicom_integer(dicom, 0x0028, 0x0100, 0);
    if (rows <= 0 || columns <= 0) { setError(error, errorSize, "Rows (0028,0010) or Columns (0028,0011) is missing or zero"); return nullptr; }
    if (frames <= 0) { setError(error, errorSize, "Number of Frames (0028,0008) is not a positive number"); return nullptr; }
    if (samples != 1 && samples != 3) { setError(error, errorSize, "Samples per Pixel (0028,0002) is " + std::to_string(samples) + ", expected 1 or 3"); return nullptr; }
    if (uint64_t(rows) * uint64_t(columns) * uint64_t(frames) > maxPixels) {
        setError(error, errorSize, "the image is " + std::to_string(columns) + "x" + std::to_string(rows) + "x" + std::to_string(frames) +
                 " pixels, over the limit of " + std::to_string(maxPixels));
        return nullptr;
    }
    // Never render (and allocate for) more than the file holds: DCMTK would pad missing pixels.
    std::string shortfall = pixelDataShortfall(dicom);
    if (!shortfall.empty()) { setError(error, errorSize, shortfall); return nullptr; }
    bool openjpeg = false;
    int level = 0;
    double shift = -1;
    // A gray image without a VOI LUT or window (or whose window the caller found to miss every value)
    // gets the min-max window, from the full image's extremes, which a lower resolution level (a
    // low-pass) does not always keep: JPEG 2000 checks them (decodeJPEG2000InPlace); JPEG is decoded in full.
    const bool minMax = minSize > 0 && samples == 1 &&
                        (expectMinMax != 0 || (!ds->tagExists(DCM_VOILUTSequence) && !ds->tagExists(DCM_WindowCenter)));
    const StoredRange range(bt_dicom_integer(dicom, 0x0028, 0x0101, 0), bt_dicom_integer(dicom, 0x0028, 0x0103, 0));
    if (isJPEG2000(dicom->transferSyntax)) {
        std::string why;
        int width = int(columns), height = int(rows);
        if (!decodeJPEG2000InPlace(ds, int(rows), int(columns), int(samples), int(frames), int(bitsAllocated), range, minSize, minMax,
                                   threads, level, width, height, shift, why)) {
            setError(error, errorSize, why);
            return nullptr;
        }
        openjpeg = true;
    }
    bool dctScaled = false;
    if (minMax && !openjpeg) minSize = 0;
    if (!openjpeg && isEightBitLossyJPEG(dicom->transferSyntax)) {
        std::string why;
        int width = int(columns), height = int(rows);
        long bitsStored = bt_dicom_integer(dicom, 0x0028, 0x0101, 0);
        dctScaled = decodeJPEGScaledInPlace(ds, int(rows), int(columns), int(samples), int(frames), int(bitsAllocated), int(bitsStored),
                                            minSize, level, width, height, why);
        if (!dctScaled) level = 0;
    }
    E_TransferSyntax xfer = openjpeg || dctScaled ? EXS_LittleEndianExplicit : ds->getOriginalXfer();
    auto result = std::make_unique<bt_image>();
    result->image.reset(new DicomImage(ds, xfer, CIF_MayDetachPixelData, 0, 0));
    DicomImage *image = result->image.get();
    if (image->getStatus() != EIS_Normal) {
        setError(error, errorSize, std::string("DCMTK could not decode the pixels: ") + DicomImage::getString(image->getStatus()));
        return nullptr;
    }
    memset(info, 0, sizeof(*info));
    info->used_openjpeg = openjpeg ? 1 : 0;
    info->resolution_level = level;
    info->dct_scaled = dctScaled ? 1 : 0;
    info->full_width = int(columns);
    info->full_height = int(rows);
    info->min_max_shift = shift;
    if (image->isMonochrome()) {
        if (image->getVoiLutCount() > 0 && image->setVoiLut(0)) {
            info->voi_method = 2;
        } else if (image->getWindowCount() > 0 && image->setWindow(0)) {
            info->voi_method = 1;
        } else {
            image->setMinMaxWindow(0);
            info->voi_method = 0;
        }
        double center = 0, width = 0;
        double low = 0, high = 0;
        if (info->voi_method == 1 && image->getWindow(center, width) && image->getMinMaxValues(low, high) &&
            (high < center - width / 2 || low > center + width / 2)) {
            image->setMinMaxWindow(0);
            info->voi_method = 0;
            info->file_window_ignored = 1;
        }
        if (image->getWindow(center, width)) { info->window_center = center; info->window_width = width; }
        // DCMTK renders MONOCHROME1 as displayed: low values bright, so bone is bright.
        info->inverted = image->getPhotometricInterpretation() == EPI_Monochrome1 ? 1 : 0;
        result->channels = 1;
    } else {
        result->channels = 3;
    }
    result->width = int(image->getWidth());
    result->height = int(image->getHeight());
    result->frames = int(image->getFrameCount());
    info->width = result->width;
    info->height = result->height;
    info->channels = result->channels;
    info->frames = result->frames;
    return result.release();
}

extern "C" int bt_image_render(bt_image *image, int frame, uint8_t *out, size_t outSize, char *error, size_t errorSize) {
    size_t needed = size_t(image->width) * size_t(image->height) * size_t(image->channels);
    if (frame < 0 || frame >= image->frames) { setError(error, errorSize, "no frame " + std::to_string(frame + 1)); return -1; }
    if (outSize < needed) { setError(error, errorSize, "output buffer too small"); return -1; }
    if (!image->image->getOutputData(out, needed, 8, frame, 0)) {
        setError(error, errorSize, std::string("DCMTK could not render frame ") + std::to_string(frame + 1) + ": " +
                 DicomImage::getString(image->image->getStatus()));
        return -1;
    }
    return 0;
}

extern "C" void bt_image_close(bt_image *image) { delete image; }
