// libFuzzer harness: PNG decoding (io/png_io.c): 16-bit grayscale CT slices as `mp3d preprocess`
// reads them (img_decode_gray16) and RGB as `mp3d vdt` reads a PNG named .JPEG
// (img_decode_rgb8 dispatches on the magic); see fuzz_image.h.
#include "tests/fuzz/fuzz_image.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    fuzz_image_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = (uint8_t *)fuzz_dup(data, size);
    if (!buf) return 0;
    fuzz_decode_any(buf, size);
    free(buf);
    return 0;
}
