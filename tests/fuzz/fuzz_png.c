// libFuzzer harness: PNG decoding (io/png_io.c): 16-bit grayscale CT slices as `mp3d preprocess`
// reads them (img_decode_gray16) and RGB as `mp3d vdt` reads a PNG named .JPEG
// (img_decode_rgb8 dispatches on the magic). The pixel cap is lowered to 2^22 so that declared
// sizes near the default cap (1e8) do not dominate the run time; the check is the same code.
#include "tests/fuzz/fuzz_common.h"
#include "io/image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fuzz_quiet();
    img_set_max_pixels((int64_t)1 << 22);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = (uint8_t *)fuzz_dup(data, size);
    if (!buf) return 0;
    int w = 0, h = 0;
    uint16_t *g = NULL;
    if (img_decode_gray16(&g, &w, &h, buf, size, "slice.png") == 0) {
        if (w <= 0 || h <= 0 || (int64_t)w * h > img_max_pixels()) abort();
        volatile uint32_t sum = 0;
        for (int64_t i = 0; i < (int64_t)w * h; i++) sum += g[i];   // every pixel was written
        (void)sum;
    }
    free(g);
    uint8_t *rgb = NULL;
    if (img_decode_rgb8(&rgb, &w, &h, buf, size, "image.JPEG") == 0) {
        if (w <= 0 || h <= 0 || (int64_t)w * h > img_max_pixels()) abort();
        volatile uint32_t sum = 0;
        for (int64_t i = 0; i < (int64_t)w * h * 3; i++) sum += rgb[i];
        (void)sum;
    }
    free(rgb);
    free(buf);
    return 0;
}
