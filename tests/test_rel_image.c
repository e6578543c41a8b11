// Reliability of the image decoders (issue 16 item 4): a JPEG/PNG declaring a huge size is
// refused from its header (no allocation), and damaged JPEG entropy-coded data is an error,
// not a silently gray-padded or garbled image. Serial, no MPI.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "nn/pl.h"

static int g_fail = 0;
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fprintf(stderr, "\n");                                           \
            g_fail++;                                                        \
        }                                                                    \
    } while (0)

// A textured RGB image so the entropy-coded segment is long.
static uint8_t *texture(int w, int h) {
    uint8_t *px = malloc((size_t)w * h * 3);
    uint64_t s = 88172645463325252ULL;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        px[i] = (uint8_t)((i / 3 % (size_t)w) * 2 + (s & 63));
    }
    return px;
}

// Offset of the first byte after the SOS header, and of the SOF0 marker.
static size_t find_marker(const uint8_t *b, size_t n, uint8_t m) {
    for (size_t i = 2; i + 1 < n; i++)
        if (b[i] == 0xFF && b[i + 1] == m) return i;
    return 0;
}

int main(void) {
    pl_quiet_begin();
    const int W = 256, H = 256;
    uint8_t *px = texture(W, H), *jpg = NULL, *out = NULL;
    size_t len = 0;
    int w = 0, h = 0;
    CHECK(img_encode_jpeg(&jpg, &len, px, W, H, 3, 90) == 0, "%s", pl_last_error());
    CHECK(img_decode_rgb8(&out, &w, &h, jpg, len, "clean.jpg") == 0 && w == W && h == H, "clean: %s", pl_last_error());
    free(out);
    out = NULL;

    // 1. a header declaring 65000x65000: refused before decoding, naming the limit
    uint8_t *big = malloc(len);
    memcpy(big, jpg, len);
    size_t sof = find_marker(big, len, 0xC0);
    CHECK(sof > 0, "no SOF0 marker");
    big[sof + 5] = 0xFD, big[sof + 6] = 0xE8;   // height 65000
    big[sof + 7] = 0xFD, big[sof + 8] = 0xE8;   // width 65000
    double t0 = pl_time();
    int rc = img_decode_rgb8(&out, &w, &h, big, len, "huge.jpg");
    CHECK(rc == PL_ERANGE && strstr(pl_last_error(), "huge.jpg") && strstr(pl_last_error(), "65000x65000"),
          "rc %d: %s", rc, pl_last_error());
    CHECK(pl_time() - t0 < 1.0, "took %.1f s", pl_time() - t0);
    free(out);
    out = NULL;
    // the limit is a setting: 5000 pixels refuses the clean 256x256 image too
    img_set_max_pixels(5000);
    rc = img_decode_rgb8(&out, &w, &h, jpg, len, "clean.jpg");
    CHECK(rc == PL_ERANGE, "limit 5000: rc %d", rc);
    free(out);
    out = NULL;
    uint8_t *png = NULL;
    size_t plen = 0;
    CHECK(img_encode_png_rgb8(&png, &plen, px, W, H) == 0, "%s", pl_last_error());
    rc = img_decode_rgb8(&out, &w, &h, png, plen, "clean.png");
    CHECK(rc == PL_ERANGE && strstr(pl_last_error(), "clean.png"), "PNG over the limit: rc %d: %s", rc, pl_last_error());
    free(out);
    out = NULL;
    img_set_max_pixels(0);   // back to the default
    CHECK(img_max_pixels() == IMG_MAX_PIXELS_DEFAULT, "default %lld", (long long)img_max_pixels());

    // 2. 30 bytes flipped in the entropy-coded data: an error naming the file, for every seed
    size_t sos = find_marker(jpg, len, 0xDA);
    CHECK(sos > 0, "no SOS marker");
    size_t data0 = sos + 2 + (size_t)(jpg[sos + 2] << 8 | jpg[sos + 3]), data1 = len - 2;
    int refused = 0, trials = 20;
    uint8_t *bad = malloc(len);
    for (int seed = 1; seed <= trials; seed++) {
        memcpy(bad, jpg, len);
        uint64_t s = 0x9E3779B97F4A7C15ULL * (uint64_t)seed;
        for (int k = 0; k < 30; k++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            size_t at = data0 + s % (data1 - data0);
            uint8_t v = (uint8_t)(bad[at] ^ (1u << (s >> 40) % 8));
            if (v == 0xFF || bad[at] == 0xFF || bad[at - 1] == 0xFF) continue;   // keep markers and stuffing intact
            bad[at] = v;
        }
        rc = img_decode_rgb8(&out, &w, &h, bad, len, "flipped.jpg");
        if (rc == PL_EFORMAT && strstr(pl_last_error(), "flipped.jpg") && strstr(pl_last_error(), "orrupt")) refused++;
        free(out);
        out = NULL;
    }
    printf("flipped entropy data: refused %d of %d\n", refused, trials);
    CHECK(refused >= trials * 3 / 4, "only %d of %d damaged JPEGs refused", refused, trials);
    // 3. truncated at half: still an error (premature end)
    rc = img_decode_rgb8(&out, &w, &h, jpg, len / 2, "half.jpg");
    CHECK(rc == PL_EFORMAT, "truncated: rc %d", rc);
    free(out);
    free(bad);
    free(big);
    free(png);
    free(jpg);
    free(px);
    printf("test_rel_image: %s\n", g_fail ? "FAILED" : "ok");
    return g_fail ? 1 : 0;
}
