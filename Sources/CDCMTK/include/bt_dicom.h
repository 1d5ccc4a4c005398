#ifndef BONETRIAGE_DICOM_H
#define BONETRIAGE_DICOM_H
// A plain C API over DCMTK (and OpenJPEG for JPEG 2000): the only C++ in BoneTriage. No DCMTK type
// crosses this header. Every function reports failure through its return value and an error text.
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bt_dicom bt_dicom;
typedef struct bt_image bt_image;

/// Opens a DICOM file (Part 10, or a bare dataset: implicit VR little endian is assumed). With
/// `metadata_only`, values longer than 4 KB (pixel data) are left on disk. NULL on failure, with `error` set.
bt_dicom *bt_dicom_open(const char *path, int metadata_only, char *error, size_t error_size);
void bt_dicom_close(bt_dicom *dicom);

/// The value of a top-level element as text (multi-valued: backslash-separated), or NULL when absent.
/// Text affected by Specific Character Set (0008,0005) (PN, LO, SH, ST, LT, UT, UC) is converted to
/// UTF-8; a value that cannot be converted is given as received and `bt_dicom_text_note` says why.
/// The text lives as long as the handle.
const char *bt_dicom_string(bt_dicom *dicom, uint16_t group, uint16_t element);
/// Why some text read so far through `bt_dicom_string` is not UTF-8 converted from its character set
/// (an unknown or unsupported Specific Character Set, bytes invalid in it, non-ASCII bytes without
/// one), or NULL when every value read was converted. Names no patient data.
const char *bt_dicom_text_note(bt_dicom *dicom);
/// How many attributes the dataset holds (File Meta excluded): 0 for an empty dataset.
unsigned long bt_dicom_dataset_size(bt_dicom *dicom);
/// Checks, without decoding, that Pixel Data (7FE0,0010) holds the data its header declares: native
/// data at least Rows x Columns x Samples per Pixel x Bits Allocated x Number of Frames bits,
/// encapsulated data at least one non-empty fragment per frame. 0 when it does (or there is no Pixel
/// Data, or the header lacks what the check needs: rendering reports that); 1 with `error` set when not.
int bt_dicom_check_pixel_data(bt_dicom *dicom, char *error, size_t error_size);
/// The value of a top-level element as an integer, or `fallback` when absent or not a number.
long bt_dicom_integer(bt_dicom *dicom, uint16_t group, uint16_t element, long fallback);
/// The transfer syntax the dataset was read in (UID), and whether the file had a File Meta header.
const char *bt_dicom_transfer_syntax(bt_dicom *dicom);
int bt_dicom_has_file_meta(bt_dicom *dicom);

/// How an image was rendered to 8 bits.
typedef struct bt_render_info {
    int width, height, channels, frames;
    /// 0 = min-max window over the pixel values, 1 = the file's first window, 2 = its VOI LUT sequence.
    int voi_method;
    double window_center, window_width;
    /// 1 when MONOCHROME1 was inverted so that bone is bright.
    int inverted;
    /// 1 when the file's window lay entirely outside the pixel values (it would render a flat image),
    /// so the min-max window was used instead.
    int file_window_ignored;
    /// 1 when the JPEG 2000 codestream was decoded by OpenJPEG.
    int used_openjpeg;
    /// The JPEG 2000 resolution level decoded: 0 is full resolution, r is 1/2^r of it in each dimension
    /// (width and height above are the decoded image's; Rows and Columns were set to them for rendering).
    int resolution_level;
    /// Columns and Rows of the file (the full resolution).
    int full_width, full_height;
    /// 1 when a JPEG (8-bit baseline or extended) was decoded by libjpeg with DCT scaling: then
    /// `resolution_level` r means the image was scaled by 1/2^r, each pixel covering a 2^r x 2^r block
    /// (where a JPEG 2000 level's pixel is centred on the first pixel of its block).
    int dct_scaled;
    /// For a gray JPEG 2000 image decoded for the min-max window at a reduced size: how far its extreme
    /// values moved under a 2x2 average, as a fraction of their range (above `bt_min_max_shift_limit`,
    /// the image was decoded again in full); -1 when not measured.
    double min_max_shift;
} bt_render_info;

/// The largest `min_max_shift` for which a reduced level's extremes stand for the full image's.
static const double bt_min_max_shift_limit = 0.01;

/// Decodes pixel data (every supported transfer syntax) and prepares 8-bit rendering: Modality LUT,
/// then the first VOI window or VOI LUT (else min-max), MONOCHROME1 inverted, colour as RGB.
/// Refuses images over `max_pixels` (rows x columns x frames). NULL on failure, with `error` set.
bt_image *bt_dicom_image(bt_dicom *dicom, uint64_t max_pixels, bt_render_info *info, char *error, size_t error_size);
/// As `bt_dicom_image`, for a picture that is only needed at `min_size` x `min_size` pixels or more
/// (the model's input with the resize filter's margin): JPEG 2000 is decoded at the lowest resolution
/// level (of those the codestream has) whose width and height are both at least `min_size`, with
/// `threads` OpenJPEG threads (1 or less: the calling thread only). The reduced image is rendered as the
/// full one would be (its Rows and Columns). A codestream whose reduced decode fails or gives another
/// size than its header promises is decoded at full resolution instead. A gray 8-bit JPEG (baseline or
/// extended, one frame per fragment or one frame) is decoded by libjpeg scaled by 1/2, 1/4 or 1/8, the
/// smallest scale keeping both sides at least `min_size` (`dct_scaled` says so). Other transfer syntaxes
/// (12-bit JPEG, lossless JPEG, JPEG-LS, RLE, native), and `min_size` 0, decode at full resolution.
/// A gray image that gets the min-max window (no VOI LUT or window, or `expect_min_max` 1: the caller
/// found its window to miss every value) is decoded, if JPEG 2000, one level finer than `min_size`
/// needs, and again in full when that level's extremes are not stable (`min_max_shift`); other syntaxes
/// decode it in full.
bt_image *bt_dicom_image_reduced(bt_dicom *dicom, uint64_t max_pixels, int min_size, int threads, int expect_min_max, bt_render_info *info,
                                 char *error, size_t error_size);
/// Writes frame `frame` (from 0) as width x height x channels bytes. 0 on success.
int bt_image_render(bt_image *image, int frame, uint8_t *out, size_t out_size, char *error, size_t error_size);
void bt_image_close(bt_image *image);

#ifdef __cplusplus
}
#endif
#endif
