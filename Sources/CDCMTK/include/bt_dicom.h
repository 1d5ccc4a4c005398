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
/// The text lives as long as the handle.
const char *bt_dicom_string(bt_dicom *dicom, uint16_t group, uint16_t element);
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
} bt_render_info;

/// Decodes pixel data (every supported transfer syntax) and prepares 8-bit rendering: Modality LUT,
/// then the first VOI window or VOI LUT (else min-max), MONOCHROME1 inverted, colour as RGB.
/// Refuses images over `max_pixels` (rows x columns x frames). NULL on failure, with `error` set.
bt_image *bt_dicom_image(bt_dicom *dicom, uint64_t max_pixels, bt_render_info *info, char *error, size_t error_size);
/// Writes frame `frame` (from 0) as width x height x channels bytes. 0 on success.
int bt_image_render(bt_image *image, int frame, uint8_t *out, size_t out_size, char *error, size_t error_size);
void bt_image_close(bt_image *image);

#ifdef __cplusplus
}
#endif
#endif
