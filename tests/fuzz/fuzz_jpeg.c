// libFuzzer harness: JPEG decoding (io/jpeg_io.c): ImageNet and COCO images as `mp3d vdt` reads them
// (img_decode_jpeg_rgb8; grayscale and CMYK converted to RGB) and through img_decode_rgb8
// (the magic dispatch) and img_decode_gray16 (a JPEG where a PNG slice was expected); see
// fuzz_image.h.
#include "tests/fuzz/fuzz_image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fuzz_image_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = (uint8_t *)fuzz_dup(data, size);
    if (!buf) return 0;
    int w = 0, h = 0;
    uint8_t *rgb = NULL;
    int rc = img_decode_jpeg_rgb8(&rgb, &w, &h, buf, size, "image.JPEG");
    fuzz_check_image(rc, rgb, w, h, 3);
    fuzz_decode_any(buf, size);
    free(buf);
    return 0;
}
