#pragma once
// Shared by the image harnesses (fuzz_png.c, fuzz_jpeg.c): the set-up, the check of a decoder's
// result, and the two decoders every image file reaches in the pipeline whatever its format
// (img_decode_gray16 as `mp3d preprocess` reads a CT slice, img_decode_rgb8 as `mp3d vdt`
// dispatches on the magic). The pixel cap is lowered to 2^22 so that declared sizes near the
// default cap (1e8) do not dominate the run time; the check is the same code.

#include "io/image.h"
#include "tests/fuzz/fuzz_common.h"

static inline void fuzz_image_init(void) {
    fuzz_quiet();
    img_set_max_pixels((int64_t)1 << 22);
}

// On success the size is positive and within the cap, and every byte of the w*h*bytes_per_pixel
// output is read (ASan flags a shorter allocation). Frees the output either way.
static inline void fuzz_check_image(int rc, void *pix, int w, int h, int64_t bytes_per_pixel) {
    if (rc == 0) {
        if (w <= 0 || h <= 0 || (int64_t)w * h > img_max_pixels()) abort();
        volatile uint32_t sum = 0;
        const uint8_t *p = pix;
        for (int64_t i = 0; i < (int64_t)w * h * bytes_per_pixel; i++) sum += p[i];
        (void)sum;
    }
    free(pix);
}

static inline void fuzz_decode_any(const uint8_t *buf, size_t size) {
    int w = 0, h = 0;
    uint16_t *g = NULL;
    int rc = img_decode_gray16(&g, &w, &h, buf, size, "slice.png");
    fuzz_check_image(rc, g, w, h, 2);
    uint8_t *rgb = NULL;
    rc = img_decode_rgb8(&rgb, &w, &h, buf, size, "image.JPEG");
    fuzz_check_image(rc, rgb, w, h, 3);
}
