// jpeg_io: JPEG decoding/encoding in memory with libjpeg(-turbo). The default libjpeg error
// handler calls exit(); ours formats the message and longjmps back, so a corrupt file is a
// PL_EFORMAT for that image only. A premature end of data (a warning in libjpeg, which would
// pad the image with gray) and every other corrupt-data warning (bad Huffman code, lost marker
// sync, hit marker, bogus progression, extraneous bytes before a marker) are errors: libjpeg
// would otherwise return a damaged image as if it were fine. Flipped bits in the entropy-coded
// data mostly show as extraneous bytes before EOI. A handful of real ImageNet files carry such
// warnings too: they are quarantined and counted against run.max_bad_fraction. Warnings that
// are not about the image data (JFIF version, Adobe transform, ICC profile) are tolerated.
// CMYK: an Adobe APP14 marker means inverted CMYK (Photoshop), where R = C*K/255; plain CMYK
// gives R = (255-C)(255-K)/255 (the same conversion PIL applies).
#include <setjmp.h>
#include <stdio.h>   // jpeglib.h needs size_t and FILE first
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

#include "io/image.h"
#include "nn/pl.h"

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void on_error_exit(j_common_ptr cinfo) {
    jpeg_err *e = (jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jb, 1);
}

static int64_t g_max_pixels = IMG_MAX_PIXELS_DEFAULT;
void img_set_max_pixels(int64_t n) { g_max_pixels = n > 0 ? n : IMG_MAX_PIXELS_DEFAULT; }
int64_t img_max_pixels(void) { return g_max_pixels; }

// libjpeg warnings that mean the entropy-coded data is damaged.
static int is_corrupt_data_warning(const struct jpeg_error_mgr *err) {
    switch (err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_MUST_RESYNC:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_ARITH_BAD_CODE:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
    case JWRN_TOO_MUCH_DATA:
    case JWRN_EXTRANEOUS_DATA: return 1;   // before EOI too: what a desynchronised decoder leaves
    default: return 0;
    }
}

static void on_emit(j_common_ptr cinfo, int level) {
    if (level >= 0) return;   // trace messages
    jpeg_err *e = (jpeg_err *)cinfo->err;
    cinfo->err->num_warnings++;
    if (is_corrupt_data_warning(cinfo->err)) {
        (*cinfo->err->format_message)(cinfo, e->msg);
        longjmp(e->jb, 1);
    }
}

int img_is_jpeg(const uint8_t *buf, size_t len) {
    return len >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF;
}

// Heap state so nothing the longjmp crosses needs to be volatile.
typedef struct {
    struct jpeg_decompress_struct cinfo;
    jpeg_err err;
    uint8_t *px;    // (H, W, 3)
    uint8_t *row;   // (W, out_color_components)
    int created;
} jpeg_dec;

static inline uint8_t mul255(unsigned a, unsigned b) { return (uint8_t)((a * b + 127) / 255); }

int img_decode_jpeg_rgb8(uint8_t **out, int *w, int *h, const uint8_t *buf, size_t len, const char *label) {
    *out = NULL;
    *w = *h = 0;
    if (!img_is_jpeg(buf, len))
        return pl_fail(PL_EFORMAT, "%s: not a JPEG (bad SOI marker, %zu bytes)", label, len);
    if (len > (size_t)0xFFFFFFFFu) return pl_fail(PL_ERANGE, "%s: JPEG of %zu bytes too large", label, len);
    jpeg_dec *d = pl_calloc(1, sizeof *d, "jpeg decoder");
    if (!d) return PL_ENOMEM;
    int rc = 0;
    d->cinfo.err = jpeg_std_error(&d->err.pub);
    d->err.pub.error_exit = on_error_exit;
    d->err.pub.emit_message = on_emit;
    if (setjmp(d->err.jb)) {
        rc = pl_fail(PL_EFORMAT, "%s: corrupt JPEG: %s", label, d->err.msg);
        goto done;
    }
    jpeg_create_decompress(&d->cinfo);
    d->created = 1;
    jpeg_mem_src(&d->cinfo, buf, (unsigned long)len);
    jpeg_read_header(&d->cinfo, TRUE);
    if ((int64_t)d->cinfo.image_width * (int64_t)d->cinfo.image_height > g_max_pixels) {
        rc = pl_fail(PL_ERANGE, "%s: JPEG declares %ux%u = %lld pixels, above the limit of %lld (vdt.max_megapixels)", label,
                     (unsigned)d->cinfo.image_width, (unsigned)d->cinfo.image_height,
                     (long long)d->cinfo.image_width * (long long)d->cinfo.image_height, (long long)g_max_pixels);
        goto done;
    }
    J_COLOR_SPACE in = d->cinfo.jpeg_color_space;
    int cmyk = 0;
    switch (in) {
    case JCS_GRAYSCALE: d->cinfo.out_color_space = JCS_GRAYSCALE; break;
    case JCS_CMYK:
    case JCS_YCCK: d->cinfo.out_color_space = JCS_CMYK; cmyk = 1; break;
    default: d->cinfo.out_color_space = JCS_RGB; break;
    }
    jpeg_start_decompress(&d->cinfo);
    int W = (int)d->cinfo.output_width, H = (int)d->cinfo.output_height;
    int nc = d->cinfo.output_components;
    if (W <= 0 || H <= 0 || W > 65535 || H > 65535) {
        rc = pl_fail(PL_EFORMAT, "%s: JPEG size %dx%d out of range", label, W, H);
        goto done;
    }
    if (!((nc == 1 && !cmyk) || (nc == 3 && !cmyk) || (nc == 4 && cmyk))) {
        rc = pl_fail(PL_EUNSUPPORTED, "%s: JPEG colour space %d gave %d components", label, (int)in, nc);
        goto done;
    }
    int inverted = cmyk && d->cinfo.saw_Adobe_marker;
    d->px = pl_malloc((size_t)W * (size_t)H * 3, "jpeg pixels");
    d->row = pl_malloc((size_t)W * (size_t)nc, "jpeg row");
    if (!d->px || !d->row) {
        rc = PL_ENOMEM;
        goto done;
    }
    while (d->cinfo.output_scanline < d->cinfo.output_height) {
        size_t y = d->cinfo.output_scanline;
        JSAMPROW rp = nc == 3 ? d->px + y * (size_t)W * 3 : d->row;
        if (jpeg_read_scanlines(&d->cinfo, &rp, 1) != 1) {
            rc = pl_fail(PL_EFORMAT, "%s: JPEG ended at row %zu of %d", label, y, H);
            goto done;
        }
        uint8_t *o = d->px + y * (size_t)W * 3;
        if (nc == 1) {
            for (int x = 0; x < W; x++) o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = d->row[x];
        } else if (nc == 4) {
            for (int x = 0; x < W; x++) {
                unsigned c = d->row[4 * x], m = d->row[4 * x + 1], yy = d->row[4 * x + 2], k = d->row[4 * x + 3];
                if (!inverted) {
                    c = 255 - c;
                    m = 255 - m;
                    yy = 255 - yy;
                    k = 255 - k;
                }
                o[3 * x] = mul255(c, k);
                o[3 * x + 1] = mul255(m, k);
                o[3 * x + 2] = mul255(yy, k);
            }
        }
    }
    jpeg_finish_decompress(&d->cinfo);
    *out = d->px;
    d->px = NULL;
    *w = W;
    *h = H;
done:
    if (d->created) jpeg_destroy_decompress(&d->cinfo);
    free(d->px);
    free(d->row);
    free(d);
    return rc;
}

int img_decode_rgb8(uint8_t **px, int *w, int *h, const uint8_t *buf, size_t len, const char *label) {
    // The file name says nothing: ImageNet has a PNG named .JPEG. Trust the magic bytes.
    if (img_is_png(buf, len)) return img_decode_png_rgb8(px, w, h, buf, len, label);
    if (img_is_jpeg(buf, len)) return img_decode_jpeg_rgb8(px, w, h, buf, len, label);
    *px = NULL;
    *w = *h = 0;
    if (len == 0) return pl_fail(PL_EFORMAT, "%s: empty image data", label);
    return pl_fail(PL_EFORMAT, "%s: neither JPEG nor PNG (first bytes %02x %02x %02x %02x, %zu bytes)", label,
                   buf[0], len > 1 ? buf[1] : 0, len > 2 ? buf[2] : 0, len > 3 ? buf[3] : 0, len);
}

typedef struct {
    struct jpeg_compress_struct cinfo;
    jpeg_err err;
    uint8_t *row;   // (W, 4) inverted CMYK row
    unsigned char *mem;
    unsigned long memlen;
    int created;
} jpeg_enc;

int img_encode_jpeg(uint8_t **out, size_t *len, const uint8_t *px, int w, int h, int ncomp, int quality) {
    *out = NULL;
    *len = 0;
    if (w <= 0 || h <= 0 || w > 65535 || h > 65535)
        return pl_fail(PL_EINVAL, "jpeg encode: size %dx%d out of range", w, h);
    if (ncomp != 1 && ncomp != 3 && ncomp != 4)
        return pl_fail(PL_EINVAL, "jpeg encode: %d components (expected 1, 3 or 4)", ncomp);
    if (quality < 1 || quality > 100) return pl_fail(PL_EINVAL, "jpeg encode: quality %d not in 1..100", quality);
    jpeg_enc *e = pl_calloc(1, sizeof *e, "jpeg encoder");
    if (!e) return PL_ENOMEM;
    int rc = 0;
    e->cinfo.err = jpeg_std_error(&e->err.pub);
    e->err.pub.error_exit = on_error_exit;
    e->err.pub.emit_message = on_emit;
    if (setjmp(e->err.jb)) {
        rc = pl_fail(PL_EIO, "jpeg encode (%dx%d, %d components): %s", w, h, ncomp, e->err.msg);
        goto done;
    }
    jpeg_create_compress(&e->cinfo);
    e->created = 1;
    jpeg_mem_dest(&e->cinfo, &e->mem, &e->memlen);
    e->cinfo.image_width = (JDIMENSION)w;
    e->cinfo.image_height = (JDIMENSION)h;
    e->cinfo.input_components = ncomp;
    e->cinfo.in_color_space = ncomp == 1 ? JCS_GRAYSCALE : ncomp == 3 ? JCS_RGB : JCS_CMYK;
    jpeg_set_defaults(&e->cinfo);
    // CMYK is stored as CMYK (no YCCK transform); libjpeg then writes the Adobe APP14 marker.
    if (ncomp == 4) jpeg_set_colorspace(&e->cinfo, JCS_CMYK);
    jpeg_set_quality(&e->cinfo, quality, TRUE);
    if (ncomp == 4) {
        e->row = pl_malloc((size_t)w * 4, "jpeg cmyk row");
        if (!e->row) {
            rc = PL_ENOMEM;
            goto done;
        }
    }
    jpeg_start_compress(&e->cinfo, TRUE);
    while (e->cinfo.next_scanline < e->cinfo.image_height) {
        const uint8_t *src = px + (size_t)e->cinfo.next_scanline * (size_t)w * (size_t)ncomp;
        JSAMPROW rp;
        if (ncomp == 4) {
            // Adobe convention: the file holds 255 - value for every ink.
            for (size_t i = 0; i < (size_t)w * 4; i++) e->row[i] = (uint8_t)(255 - src[i]);
            rp = e->row;
        } else {
            rp = (JSAMPROW)src;
        }
        jpeg_write_scanlines(&e->cinfo, &rp, 1);
    }
    jpeg_finish_compress(&e->cinfo);
    *out = pl_malloc(e->memlen, "jpeg output");
    if (!*out) {
        rc = PL_ENOMEM;
        goto done;
    }
    memcpy(*out, e->mem, e->memlen);
    *len = e->memlen;
done:
    if (e->created) jpeg_destroy_compress(&e->cinfo);
    free(e->mem);
    free(e->row);
    free(e);
    return rc;
}
