// test_io_image: PNG and JPEG round trips through real files (encode -> file -> read -> decode),
// the PNG conversions (palette, RGBA, 16-bit, gray -> RGB8), CMYK JPEGs with and without the
// Adobe marker against the hand formula, corrupt/truncated PNG and JPEG, an 8-bit PNG
// rejected as CT, and a PNG named .JPEG.
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jpeglib.h>

#include "io/fileio.h"
#include "io/image.h"
#include "nn/pl.h"
#include "test_util.h"

#define HAS(needle) (strstr(pl_last_error(), (needle)) != NULL)

static char g_dir[256];

static const void *find_bytes(const void *hay, size_t n, const void *needle, size_t m) {
    const uint8_t *h = hay;
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(h + i, needle, m) == 0) return h + i;
    return NULL;
}
static char g_files[64][512];
static int g_nfiles = 0;

// Writes `buf` to DIR/name and reads it back (the round trip goes through a real file).
static void via_file(const char *name, uint8_t **buf, size_t *len) {
    PL_ASSERT(g_nfiles < 64);
    char *p = g_files[g_nfiles++];
    snprintf(p, 512, "%s/%s", g_dir, name);
    PL_ASSERT(pl_write_file_atomic(p, *buf, *len) == 0);
    free(*buf);
    PL_ASSERT(pl_read_file(p, buf, len) == 0);
}

static void test_png_gray16(void) {
    const int W = 37, H = 23;   // odd, non-square
    uint16_t *px = malloc(sizeof(uint16_t) * W * H);
    for (int i = 0; i < W * H; i++) px[i] = (uint16_t)((i * 2654435761u) >> 16);
    px[0] = 0;
    px[1] = 65535;
    px[2] = 32768 - 1024;   // HU -1024
    px[3] = 32768 + 3071;
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(img_encode_png_gray16(&buf, &len, px, W, H) == 0, "%s", pl_last_error());
    CHECK(img_is_png(buf, len) && !img_is_jpeg(buf, len), "magic");
    via_file("g16.png", &buf, &len);
    uint16_t *out = NULL;
    int w = 0, h = 0;
    CHECK(img_decode_gray16(&out, &w, &h, buf, len, "g16.png") == 0, "%s", pl_last_error());
    CHECK(w == W && h == H, "size %dx%d", w, h);
    int diff = 0;
    for (int i = 0; out && i < W * H; i++) diff += out[i] != px[i];
    CHECK(out && diff == 0, "%d pixels differ", diff);
    free(out);
    // The same 16-bit PNG as RGB8: each channel = round(v * 255 / 65535) (libpng's scale_16).
    uint8_t *rgb = NULL;
    CHECK(img_decode_rgb8(&rgb, &w, &h, buf, len, "g16.png") == 0, "%s", pl_last_error());
    int maxd = 0;
    for (int i = 0; rgb && i < W * H; i++) {
        int want = (int)lround(px[i] * 255.0 / 65535.0);
        for (int c = 0; c < 3; c++) maxd = PL_MAX(maxd, abs(rgb[3 * i + c] - want));
    }
    CHECK(rgb && maxd == 0, "16->8 bit max diff %d", maxd);
    free(rgb);
    // A truncated 16-bit PNG and one with a flipped byte in IDAT: errors naming the label.
    uint16_t *o2 = NULL;
    int rc = img_decode_gray16(&o2, &w, &h, buf, len / 2, "Images_png/000001_01_01/109.png");
    CHECK(rc == PL_EFORMAT && o2 == NULL && HAS("Images_png/000001_01_01/109.png") && HAS("corrupt PNG"),
          "truncated: rc %d '%s'", rc, pl_last_error());
    printf("truncated png: %s\n", pl_last_error());
    uint8_t *bad = malloc(len);
    memcpy(bad, buf, len);
    bad[len - 30] ^= 0x5a;   // inside the (last) IDAT chunk
    rc = img_decode_gray16(&o2, &w, &h, bad, len, "flip.png");
    CHECK(rc == PL_EFORMAT && HAS("flip.png") && HAS("corrupt PNG"), "crc: rc %d '%s'", rc, pl_last_error());
    printf("corrupt png: %s\n", pl_last_error());
    free(o2);
    rc = img_decode_gray16(&o2, &w, &h, bad, 7, "short.png");
    CHECK(rc == PL_EFORMAT && HAS("short.png") && HAS("not a PNG"), "short: rc %d '%s'", rc, pl_last_error());
    free(bad);
    free(buf);
    free(px);
}

static void test_png_8bit(void) {
    const int W = 20, H = 11;
    uint8_t *g = malloc(W * H), *rgb = malloc(W * H * 3);
    for (int i = 0; i < W * H; i++) {
        g[i] = (uint8_t)(i * 3);
        rgb[3 * i] = (uint8_t)i;
        rgb[3 * i + 1] = (uint8_t)(255 - i);
        rgb[3 * i + 2] = (uint8_t)(i * 7);
    }
    uint8_t *buf = NULL, *out = NULL;
    size_t len = 0;
    int w, h;
    // Gray8 -> RGB8 replicates; gray16 rejects it naming label and bit depth.
    CHECK(img_encode_png_gray8(&buf, &len, g, W, H) == 0, "%s", pl_last_error());
    via_file("g8.png", &buf, &len);
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "g8.png") == 0 && w == W && h == H, "%s", pl_last_error());
    int diff = 0;
    for (int i = 0; out && i < W * H; i++)
        for (int c = 0; c < 3; c++) diff += out[3 * i + c] != g[i];
    CHECK(out && diff == 0, "gray8 -> rgb: %d values differ", diff);
    free(out);
    uint16_t *o16 = NULL;
    int rc = img_decode_gray16(&o16, &w, &h, buf, len, "Images_png/000002_01_01/050.png");
    CHECK(rc == PL_EFORMAT && o16 == NULL && HAS("Images_png/000002_01_01/050.png") && HAS("8-bit grayscale") &&
              HAS("16-bit"),
          "8-bit as CT: rc %d '%s'", rc, pl_last_error());
    printf("8-bit png as CT: %s\n", pl_last_error());
    free(buf);
    // RGB8 exact round trip; gray16 rejects colour.
    CHECK(img_encode_png_rgb8(&buf, &len, rgb, W, H) == 0, "%s", pl_last_error());
    via_file("rgb.png", &buf, &len);
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "rgb.png") == 0 && w == W && h == H, "%s", pl_last_error());
    CHECK(out && memcmp(out, rgb, (size_t)W * H * 3) == 0, "rgb round trip differs");
    free(out);
    rc = img_decode_gray16(&o16, &w, &h, buf, len, "colour.png");
    CHECK(rc == PL_EFORMAT && HAS("colour.png") && HAS("8-bit RGB"), "rgb as CT: '%s'", pl_last_error());
    // A PNG named .JPEG (ImageNet's n02105855_2933.JPEG): decoded by its magic bytes.
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "n02105855_2933.JPEG") == 0, "%s", pl_last_error());
    CHECK(out && w == W && h == H && memcmp(out, rgb, (size_t)W * H * 3) == 0, "png named .JPEG differs");
    free(out);
    free(buf);

    // RGBA and palette PNGs written with libpng's simplified API.
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = W;
    im.height = H;
    im.format = PNG_FORMAT_RGBA;
    uint8_t *rgba = malloc(W * H * 4);
    for (int i = 0; i < W * H; i++) {
        memcpy(rgba + 4 * i, rgb + 3 * i, 3);
        rgba[4 * i + 3] = (uint8_t)(i * 11);
    }
    png_alloc_size_t n = 0;
    PL_ASSERT(png_image_write_to_memory(&im, NULL, &n, 0, rgba, 0, NULL) && n > 0);
    buf = malloc(n);
    PL_ASSERT(png_image_write_to_memory(&im, buf, &n, 0, rgba, 0, NULL));
    len = n;
    via_file("rgba.png", &buf, &len);
    // Alpha is dropped (PIL convert('RGB')): the colour samples come back exactly.
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "rgba.png") == 0, "%s", pl_last_error());
    CHECK(out && memcmp(out, rgb, (size_t)W * H * 3) == 0, "rgba -> rgb differs");
    free(out);
    free(buf);

    // Palette of 4 colours.
    const uint8_t cmap[4][3] = {{255, 0, 0}, {0, 128, 0}, {10, 20, 250}, {200, 200, 200}};
    uint8_t *idx = malloc(W * H);
    for (int i = 0; i < W * H; i++) idx[i] = (uint8_t)((i / 3) % 4);
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = W;
    im.height = H;
    im.format = PNG_FORMAT_RGB_COLORMAP;
    im.colormap_entries = 4;
    n = 0;
    PL_ASSERT(png_image_write_to_memory(&im, NULL, &n, 0, idx, 0, cmap) && n > 0);
    buf = malloc(n);
    PL_ASSERT(png_image_write_to_memory(&im, buf, &n, 0, idx, 0, cmap));
    len = n;
    CHECK(len > 8 && find_bytes(buf, len, "PLTE", 4) != NULL, "no PLTE chunk");
    via_file("palette.png", &buf, &len);
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "palette.png") == 0, "%s", pl_last_error());
    diff = 0;
    for (int i = 0; out && i < W * H; i++) diff += memcmp(out + 3 * i, cmap[idx[i]], 3) != 0;
    CHECK(out && diff == 0, "palette: %d pixels differ", diff);
    rc = img_decode_gray16(&o16, &w, &h, buf, len, "palette.png");
    CHECK(rc == PL_EFORMAT && HAS("palette"), "palette as CT: '%s'", pl_last_error());
    free(out);
    free(buf);
    free(idx);
    free(rgba);
    free(g);
    free(rgb);
}

// Smooth test picture so JPEG error stays small: (H, W, C).
static uint8_t *smooth(int W, int H, int C) {
    uint8_t *p = malloc((size_t)W * H * C);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int c = 0; c < C; c++) {
                double v = 128 + 100 * sin(0.05 * x + 0.9 * c) * cos(0.04 * y - 0.5 * c);
                p[((size_t)y * W + x) * C + c] = (uint8_t)lround(v);
            }
    return p;
}

static void test_jpeg(void) {
    const int W = 96, H = 64;
    uint8_t *rgb = smooth(W, H, 3), *g = smooth(W, H, 1);
    uint8_t *buf = NULL, *out = NULL;
    size_t len = 0;
    int w, h;
    // RGB at quality 95.
    CHECK(img_encode_jpeg(&buf, &len, rgb, W, H, 3, 95) == 0, "%s", pl_last_error());
    CHECK(img_is_jpeg(buf, len) && !img_is_png(buf, len), "magic");
    via_file("rgb.jpg", &buf, &len);
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "rgb.jpg") == 0 && w == W && h == H, "%s", pl_last_error());
    int maxd = 0;
    double mean = 0;
    for (int i = 0; out && i < W * H * 3; i++) {
        maxd = PL_MAX(maxd, abs(out[i] - rgb[i]));
        mean += abs(out[i] - rgb[i]);
    }
    mean /= W * H * 3;
    printf("jpeg rgb q95: max diff %d, mean %.3f\n", maxd, mean);
    CHECK(out && maxd <= 12 && mean < 2.0, "rgb jpeg max diff %d mean %.3f", maxd, mean);
    free(out);
    // Truncated JPEG: an error for this image, never exit() and never a gray-padded image.
    int rc = img_decode_rgb8(&out, &w, &h, buf, len / 2, "n01440764_10026.JPEG");
    CHECK(rc == PL_EFORMAT && out == NULL && HAS("n01440764_10026.JPEG") && HAS("corrupt JPEG"), "rc %d '%s'", rc,
          pl_last_error());
    printf("truncated jpeg: %s\n", pl_last_error());
    // Garbage in the header (the quantisation tables and frame header) is an error too.
    uint8_t *bad = malloc(len);
    memcpy(bad, buf, len);
    memset(bad + 20, 0xFF, 200);
    rc = img_decode_rgb8(&out, &w, &h, bad, len, "garbage.jpg");
    CHECK(rc == PL_EFORMAT && out == NULL && HAS("garbage.jpg") && HAS("corrupt JPEG"), "rc %d '%s'", rc, pl_last_error());
    printf("corrupt jpeg: %s\n", pl_last_error());
    free(bad);
    // JPEG data where a CT PNG is expected.
    uint16_t *o16 = NULL;
    rc = img_decode_gray16(&o16, &w, &h, buf, len, "ct.png");
    CHECK(rc == PL_EFORMAT && HAS("ct.png") && HAS("not a PNG"), "'%s'", pl_last_error());
    free(buf);

    // Grayscale JPEG -> 3 equal channels close to the source.
    CHECK(img_encode_jpeg(&buf, &len, g, W, H, 1, 95) == 0, "%s", pl_last_error());
    via_file("gray.jpg", &buf, &len);
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "gray.jpg") == 0 && w == W && h == H, "%s", pl_last_error());
    maxd = 0;
    int unequal = 0;
    for (int i = 0; out && i < W * H; i++) {
        maxd = PL_MAX(maxd, abs(out[3 * i] - g[i]));
        unequal += out[3 * i] != out[3 * i + 1] || out[3 * i] != out[3 * i + 2];
    }
    printf("jpeg gray q95: max diff %d\n", maxd);
    CHECK(out && maxd <= 6 && unequal == 0, "gray jpeg max diff %d, %d unequal pixels", maxd, unequal);
    free(out);
    free(buf);

    // Neither format.
    const uint8_t gif[8] = {'G', 'I', 'F', '8', '9', 'a', 0, 0};
    rc = img_decode_rgb8(&out, &w, &h, gif, 8, "x.JPEG");
    CHECK(rc == PL_EFORMAT && HAS("x.JPEG") && HAS("47 49 46 38"), "'%s'", pl_last_error());
    rc = img_decode_rgb8(&out, &w, &h, gif, 0, "empty.JPEG");
    CHECK(rc == PL_EFORMAT && HAS("empty.JPEG"), "'%s'", pl_last_error());
    // Bad encoder arguments.
    CHECK(img_encode_jpeg(&buf, &len, rgb, W, H, 2, 90) == PL_EINVAL && HAS("2 components"), "'%s'", pl_last_error());
    CHECK(img_encode_jpeg(&buf, &len, rgb, W, H, 3, 0) == PL_EINVAL && HAS("quality 0"), "'%s'", pl_last_error());
    CHECK(img_encode_png_rgb8(&buf, &len, rgb, 0, H) == PL_EINVAL && HAS("0x64"), "'%s'", pl_last_error());
    free(rgb);
    free(g);
}

// CMYK JPEG written directly with libjpeg: samples stored as given, as plain CMYK without an
// Adobe marker (ycck = 0) or as Adobe YCCK (ycck = 1, the colour transform Photoshop uses).
static void encode_raw_cmyk(uint8_t **out, unsigned long *len, const uint8_t *cmyk, int W, int H, int ycck) {
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr em;
    ci.err = jpeg_std_error(&em);
    jpeg_create_compress(&ci);
    *out = NULL;
    *len = 0;
    jpeg_mem_dest(&ci, out, len);
    ci.image_width = (JDIMENSION)W;
    ci.image_height = (JDIMENSION)H;
    ci.input_components = 4;
    ci.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&ci);
    jpeg_set_colorspace(&ci, ycck ? JCS_YCCK : JCS_CMYK);
    ci.write_Adobe_marker = ycck ? TRUE : FALSE;
    jpeg_set_quality(&ci, 95, TRUE);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW r = (JSAMPROW)(cmyk + (size_t)ci.next_scanline * W * 4);
        jpeg_write_scanlines(&ci, &r, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
}

static void test_cmyk(void) {
    const int W = 64, H = 48;
    uint8_t *cmyk = smooth(W, H, 4);
    // Expected RGB from the ink values: R = (255 - C)(255 - K)/255, same for G (M), B (Y).
    uint8_t *want = malloc((size_t)W * H * 3);
    for (int i = 0; i < W * H; i++)
        for (int c = 0; c < 3; c++)
            want[3 * i + c] = (uint8_t)lround((255.0 - cmyk[4 * i + c]) * (255.0 - cmyk[4 * i + 3]) / 255.0);
    // 1) Adobe inverted CMYK from our encoder.
    uint8_t *buf = NULL, *out = NULL;
    size_t len = 0;
    int w, h;
    CHECK(img_encode_jpeg(&buf, &len, cmyk, W, H, 4, 95) == 0, "%s", pl_last_error());
    CHECK(find_bytes(buf, len, "\xFF\xEE", 2) != NULL && find_bytes(buf, len, "Adobe", 5) != NULL, "no Adobe APP14 marker");
    via_file("cmyk_adobe.jpg", &buf, &len);
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "cmyk_adobe.jpg") == 0 && w == W && h == H, "%s", pl_last_error());
    int maxd = 0;
    double mean = 0;
    for (int i = 0; out && i < W * H * 3; i++) {
        maxd = PL_MAX(maxd, abs(out[i] - want[i]));
        mean += abs(out[i] - want[i]);
    }
    mean /= W * H * 3;
    printf("cmyk adobe jpeg: max diff %d mean %.3f vs (255-C)(255-K)/255\n", maxd, mean);
    CHECK(out && maxd <= 12 && mean < 2.0, "adobe cmyk max %d mean %.3f", maxd, mean);
    // Decoding as if not inverted would be far off: the test can tell the two apart.
    free(out);
    free(buf);
    // 2) Plain CMYK (no Adobe marker): not inverted, same expected colours.
    unsigned long plen = 0;
    encode_raw_cmyk(&buf, &plen, cmyk, W, H, 0);
    len = plen;
    CHECK(find_bytes(buf, len, "Adobe", 5) == NULL, "plain CMYK has an Adobe marker");
    via_file("cmyk_plain.jpg", &buf, &len);
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "cmyk_plain.jpg") == 0, "%s", pl_last_error());
    maxd = 0;
    for (int i = 0; out && i < W * H * 3; i++) maxd = PL_MAX(maxd, abs(out[i] - want[i]));
    printf("cmyk plain jpeg: max diff %d\n", maxd);
    CHECK(out && maxd <= 12, "plain cmyk max %d", maxd);
    // Cross-check: the plain file's raw samples decoded with the Adobe rule would differ a lot.
    int far = 0;
    for (int i = 0; out && i < W * H; i++) {
        int wrong = (int)lround(cmyk[4 * i] * (double)cmyk[4 * i + 3] / 255.0);
        far += abs(wrong - out[3 * i]) > 40;
    }
    CHECK(far > W * H / 4, "inverted and plain rules indistinguishable on this image (%d)", far);
    free(out);
    free(buf);
    // 3) Adobe YCCK holding inverted CMYK (Photoshop's usual CMYK JPEG).
    uint8_t *inv = malloc((size_t)W * H * 4);
    for (int i = 0; i < W * H * 4; i++) inv[i] = (uint8_t)(255 - cmyk[i]);
    encode_raw_cmyk(&buf, &plen, inv, W, H, 1);
    len = plen;
    via_file("ycck.jpg", &buf, &len);
    CHECK(img_decode_rgb8(&out, &w, &h, buf, len, "ycck.jpg") == 0, "%s", pl_last_error());
    maxd = 0;
    for (int i = 0; out && i < W * H * 3; i++) maxd = PL_MAX(maxd, abs(out[i] - want[i]));
    printf("ycck adobe jpeg: max diff %d\n", maxd);
    CHECK(out && maxd <= 12, "ycck max %d", maxd);
    free(out);
    free(buf);
    free(inv);
    free(want);
    free(cmyk);
}

int main(void) {
    pl_quiet_begin();
    snprintf(g_dir, sizeof g_dir, "tmp_io_image_%ld", (long)getpid());
    PL_ASSERT(pl_mkdir_p(g_dir) == 0);
    double t0 = pl_time();
    test_png_gray16();
    test_png_8bit();
    test_jpeg();
    test_cmyk();
    for (int i = 0; i < g_nfiles; i++) unlink(g_files[i]);
    rmdir(g_dir);
    printf("test_io_image: %.2f s\n", pl_time() - t0);
    if (g_fail) fprintf(stderr, "test_io_image: %d failures\n", g_fail);
    else printf("test_io_image: all checks passed\n");
    return g_fail ? 1 : 0;
}
