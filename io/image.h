#pragma once
// image: PNG (libpng) and JPEG (libjpeg) decoding and encoding to and from memory.
// CT slices are 16-bit grayscale PNGs; an 8-bit or colour PNG where CT is expected is an
// error, never a silent rescale. RGB decoding accepts RGB, grayscale (replicated to 3
// channels), CMYK/YCCK JPEGs (Adobe inverted CMYK handled) and PNG data whatever the file is
// named (detected by magic bytes). Pixel buffers are row-major, interleaved, caller frees.

#include <stddef.h>
#include <stdint.h>

// (H, W) uint16; fails with PL_EFORMAT naming `label` for bit depth != 16, colour, corrupt data.
int img_decode_gray16(uint16_t **px, int *w, int *h, const uint8_t *buf, size_t len, const char *label);
// (H, W, 3) uint8 from JPEG or PNG (by magic bytes).
int img_decode_rgb8(uint8_t **px, int *w, int *h, const uint8_t *buf, size_t len, const char *label);

int img_encode_png_gray16(uint8_t **out, size_t *len, const uint16_t *px, int w, int h);
int img_encode_png_gray8(uint8_t **out, size_t *len, const uint8_t *px, int w, int h);
int img_encode_png_rgb8(uint8_t **out, size_t *len, const uint8_t *px, int w, int h);
// ncomp 1 (grayscale), 3 (RGB -> YCbCr JPEG) or 4 (CMYK input written as an Adobe inverted CMYK JPEG).
int img_encode_jpeg(uint8_t **out, size_t *len, const uint8_t *px, int w, int h, int ncomp, int quality);

// The two halves of img_decode_rgb8, for callers that know the format: any PNG (palette,
// gray, alpha, 16-bit converted to RGB8) and any JPEG (gray, RGB, CMYK/YCCK converted).
int img_decode_png_rgb8(uint8_t **px, int *w, int *h, const uint8_t *buf, size_t len, const char *label);
int img_decode_jpeg_rgb8(uint8_t **px, int *w, int *h, const uint8_t *buf, size_t len, const char *label);

// Largest image (width x height pixels) a decoder accepts, checked from the header before any
// pixel buffer is allocated: a 13 KB JPEG may declare 65000x65000 (12.7 GB). Default
// IMG_MAX_PIXELS_DEFAULT; the setting is process-wide (stages set it from their config, e.g.
// vdt.max_megapixels). Larger images fail with PL_ERANGE naming the label and both numbers.
#define IMG_MAX_PIXELS_DEFAULT ((int64_t)100000000)
void img_set_max_pixels(int64_t n);
int64_t img_max_pixels(void);

// 1 if the buffer starts with the PNG / JPEG signature.
int img_is_png(const uint8_t *buf, size_t len);
int img_is_jpeg(const uint8_t *buf, size_t len);
