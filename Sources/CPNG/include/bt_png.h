#ifndef BONETRIAGE_PNG_H
#define BONETRIAGE_PNG_H
#include <stddef.h>
#include <stdint.h>

/// Reads any PNG (1-16 bit gray, gray+alpha, RGB(A), palette) as 8-bit gray (channels 1) or RGB
/// (channels 3); alpha is dropped, 16-bit samples are scaled with rounding. `*pixels` is malloc'd
/// (free with bt_png_free). Images over `max_pixels` are refused: -2, with `width` and `height` set. Returns 0, or -1 with `error` set.
int bt_png_read(const char *path, uint64_t max_pixels, uint8_t **pixels, int *width, int *height, int *channels,
                char *error, size_t error_size);
void bt_png_free(uint8_t *pixels);
/// Writes 8-bit gray (channels 1) or RGB (channels 3). Returns 0, or -1 with `error` set.
int bt_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels, char *error, size_t error_size);
#endif
