#include "bt_png.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { char *error; size_t size; } failure;

static void on_error(png_structp png, png_const_charp message) {
    failure *f = (failure *)png_get_error_ptr(png);
    if (f && f->error && f->size) snprintf(f->error, f->size, "%s", message);
    png_longjmp(png, 1);
}
static void on_warning(png_structp png, png_const_charp message) { (void)png; (void)message; }

int bt_png_read(const char *path, uint64_t max_pixels, uint8_t **pixels, int *width, int *height, int *channels,
                char *error, size_t error_size) {
    *pixels = NULL;
    FILE *file = fopen(path, "rb");
    if (!file) { snprintf(error, error_size, "cannot open the file"); return -1; }
    unsigned char signature[8];
    if (fread(signature, 1, 8, file) != 8 || png_sig_cmp(signature, 0, 8) != 0) {
        fclose(file);
        snprintf(error, error_size, "the file does not start with the PNG signature");
        return -1;
    }
    failure f = {error, error_size};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &f, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) { fclose(file); snprintf(error, error_size, "out of memory"); return -1; }
    uint8_t *volatile buffer = NULL;
    png_bytep *volatile rows = NULL;
    volatile int too_large = 0;
    if (setjmp(png_jmpbuf(png))) {
        free(buffer);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        fclose(file);
        return too_large ? -2 : -1;
    }
    png_init_io(png, file);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, 1u << 20, 1u << 20);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if ((uint64_t)w * h > max_pixels) {
        snprintf(error, error_size, "the image is %ux%u pixels, over the limit of %llu", w, h, (unsigned long long)max_pixels);
        *width = (int)(w > 0x7FFFFFFFu ? 0x7FFFFFFFu : w);
        *height = (int)(h > 0x7FFFFFFFu ? 0x7FFFFFFFu : h);
        too_large = 1;
        png_longjmp(png, 1);
    }
    int color = png_get_color_type(png, info);
    if (png_get_bit_depth(png, info) == 16) png_set_scale_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_strip_alpha(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png), png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int c = png_get_channels(png, info);
    if (c != 1 && c != 3) { snprintf(error, error_size, "unexpected %d channels after conversion", c); png_longjmp(png, 1); }
    size_t stride = png_get_rowbytes(png, info);
    if (stride != (size_t)w * c) { snprintf(error, error_size, "unexpected row size"); png_longjmp(png, 1); }
    buffer = malloc(stride * h);
    rows = malloc(sizeof(png_bytep) * h);
    if (!buffer || !rows) { snprintf(error, error_size, "out of memory for %ux%u pixels", w, h); png_longjmp(png, 1); }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = buffer + y * stride;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    fclose(file);
    *pixels = buffer;
    *width = (int)w;
    *height = (int)h;
    *channels = c;
    return 0;
}

void bt_png_free(uint8_t *pixels) { free(pixels); }

int bt_png_write(const char *path, const uint8_t *pixels, int width, int height, int channels, char *error, size_t error_size) {
    FILE *file = fopen(path, "wb");
    if (!file) { snprintf(error, error_size, "cannot create the file"); return -1; }
    failure f = {error, error_size};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &f, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) { fclose(file); snprintf(error, error_size, "out of memory"); return -1; }
    if (setjmp(png_jmpbuf(png))) { png_destroy_write_struct(&png, &info); fclose(file); return -1; }
    png_init_io(png, file);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; y++) png_write_row(png, (png_const_bytep)(pixels + (size_t)y * width * channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    int closed = fclose(file);
    if (closed != 0) { snprintf(error, error_size, "cannot finish writing the file"); return -1; }
    return 0;
}
