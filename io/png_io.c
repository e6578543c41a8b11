// png_io: PNG decoding/encoding in memory with libpng's classic API. libpng reports errors
// by longjmp; the handler stores the text so the returned pl_fail message names the label.
// 16-bit samples are big-endian in the file; png_set_swap gives host order on both paths.
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "nn/pl.h"

static const int PNG_ENC_ZLIB_LEVEL = 1;   // Z_BEST_SPEED

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    char err[256];
} png_src;

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    int oom;
    char err[256];
} png_dst;

static void on_error(png_structp png, png_const_charp msg) {
    char *err = png_get_error_ptr(png);
    if (err) snprintf(err, 256, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;   // e.g. "iCCP: known incorrect sRGB profile": harmless, not worth a log line per image
}

static void read_cb(png_structp png, png_bytep out, png_size_t n) {
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) {
        png_error(png, "truncated PNG data (read past the end of the buffer)");
    }
    memcpy(out, s->buf + s->pos, n);
    s->pos += n;
}

static void write_cb(png_structp png, png_bytep data, png_size_t n) {
    png_dst *d = png_get_io_ptr(png);
    if (d->len + n > d->cap) {
        size_t nc = d->cap ? d->cap : 65536;
        while (nc < d->len + n) nc *= 2;
        uint8_t *nb = realloc(d->buf, nc);
        if (!nb) {
            d->oom = 1;
            png_error(png, "out of memory growing the PNG output buffer");
        }
        d->buf = nb;
        d->cap = nc;
    }
    memcpy(d->buf + d->len, data, n);
    d->len += n;
}

static void flush_cb(png_structp png) { (void)png; }

int img_is_png(const uint8_t *buf, size_t len) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    return len >= 8 && memcmp(buf, sig, 8) == 0;
}

static const char *color_type_name(int ct) {
    switch (ct) {
    case PNG_COLOR_TYPE_GRAY: return "grayscale";
    case PNG_COLOR_TYPE_GRAY_ALPHA: return "grayscale+alpha";
    case PNG_COLOR_TYPE_RGB: return "RGB";
    case PNG_COLOR_TYPE_RGB_ALPHA: return "RGBA";
    case PNG_COLOR_TYPE_PALETTE: return "palette";
    default: return "unknown";
    }
}

// Decodes into *px; mode 16 = 16-bit gray only, mode 3 = anything converted to RGB8.
// Heap state lives in a struct so nothing the longjmp crosses needs to be volatile.
typedef struct {
    png_structp png;
    png_infop info;
    uint8_t *px;
    png_bytep *rows;
    png_src src;
} png_dec;

static int png_decode(void **out, int *w, int *h, const uint8_t *buf, size_t len, const char *label,
                      int mode) {
    *out = NULL;
    *w = *h = 0;
    if (!img_is_png(buf, len)) return pl_fail(PL_EFORMAT, "%s: not a PNG (bad signature, %zu bytes)", label, len);
    png_dec *d = pl_calloc(1, sizeof *d, "png decoder");
    if (!d) return PL_ENOMEM;
    d->src.buf = buf;
    d->src.len = len;
    int rc = 0;
    d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d->src.err, on_error, on_warning);
    if (!d->png) {
        free(d);
        return pl_fail(PL_ENOMEM, "%s: png_create_read_struct failed", label);
    }
    d->info = png_create_info_struct(d->png);
    if (!d->info) {
        png_destroy_read_struct(&d->png, NULL, NULL);
        free(d);
        return pl_fail(PL_ENOMEM, "%s: png_create_info_struct failed", label);
    }
    if (setjmp(png_jmpbuf(d->png))) {
        rc = pl_fail(PL_EFORMAT, "%s: corrupt PNG: %s", label, d->src.err[0] ? d->src.err : "libpng error");
        goto done;
    }
    png_set_read_fn(d->png, &d->src, read_cb);
    // CRC errors in ancillary chunks are warnings in libpng; critical ones stay errors.
    png_read_info(d->png, d->info);
    png_uint_32 pw = 0, ph = 0;
    int depth = 0, ct = 0, interlace = 0;
    png_get_IHDR(d->png, d->info, &pw, &ph, &depth, &ct, &interlace, NULL, NULL);
    if (pw == 0 || ph == 0 || pw > 65535 || ph > 65535) {
        rc = pl_fail(PL_EFORMAT, "%s: PNG size %ux%u out of range", label, (unsigned)pw, (unsigned)ph);
        goto done;
    }
    if ((int64_t)pw * (int64_t)ph > img_max_pixels()) {
        rc = pl_fail(PL_ERANGE, "%s: PNG declares %ux%u = %lld pixels, above the limit of %lld (vdt.max_megapixels)", label,
                     (unsigned)pw, (unsigned)ph, (long long)pw * (long long)ph, (long long)img_max_pixels());
        goto done;
    }
    size_t rowbytes_want;
    if (mode == 16) {
        if (ct != PNG_COLOR_TYPE_GRAY || depth != 16) {
            rc = pl_fail(PL_EFORMAT, "%s: expected a 16-bit grayscale PNG (CT slice), got %d-bit %s "
                         "(colour type %d)", label, depth, color_type_name(ct), ct);
            goto done;
        }
        png_set_swap(d->png);
        rowbytes_want = (size_t)pw * 2;
    } else {
        png_set_expand(d->png);           // palette -> RGB, gray < 8 bit -> 8 bit, tRNS -> alpha
        png_set_scale_16(d->png);         // 16 -> 8 bit, rounded
        png_set_strip_alpha(d->png);      // alpha dropped, as PIL's convert('RGB') does
        png_set_gray_to_rgb(d->png);
        rowbytes_want = (size_t)pw * 3;
    }
    if (interlace != PNG_INTERLACE_NONE) png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);
    size_t rowbytes = png_get_rowbytes(d->png, d->info);
    if (rowbytes != rowbytes_want) {
        rc = pl_fail(PL_EFORMAT, "%s: PNG transform gave %zu bytes per row, expected %zu", label, rowbytes,
                     rowbytes_want);
        goto done;
    }
    d->px = pl_malloc(rowbytes * ph, "png pixels");
    d->rows = pl_malloc(sizeof(png_bytep) * ph, "png row pointers");
    if (!d->px || !d->rows) {
        rc = PL_ENOMEM;
        goto done;
    }
    for (png_uint_32 y = 0; y < ph; y++) d->rows[y] = d->px + (size_t)y * rowbytes;
    png_read_image(d->png, d->rows);
    png_read_end(d->png, NULL);
    *out = d->px;
    d->px = NULL;
    *w = (int)pw;
    *h = (int)ph;
done:
    png_destroy_read_struct(&d->png, &d->info, NULL);
    free(d->px);
    free(d->rows);
    free(d);
    return rc;
}

int img_decode_gray16(uint16_t **px, int *w, int *h, const uint8_t *buf, size_t len, const char *label) {
    void *p = NULL;
    int rc = png_decode(&p, w, h, buf, len, label, 16);
    *px = p;
    return rc;
}

int img_decode_png_rgb8(uint8_t **px, int *w, int *h, const uint8_t *buf, size_t len, const char *label) {
    void *p = NULL;
    int rc = png_decode(&p, w, h, buf, len, label, 3);
    *px = p;
    return rc;
}

typedef struct {
    png_structp png;
    png_infop info;
    png_bytep *rows;
    png_dst dst;
} png_enc;

// px: (h, w, channels) samples of `depth` bits (8, or 16 in host order).
static int png_encode(uint8_t **out, size_t *len, const void *px, int w, int h, int ct, int depth) {
    *out = NULL;
    *len = 0;
    if (w <= 0 || h <= 0 || w > 65535 || h > 65535)
        return pl_fail(PL_EINVAL, "png encode: size %dx%d out of range", w, h);
    int channels = ct == PNG_COLOR_TYPE_RGB ? 3 : 1;
    size_t rowbytes = (size_t)w * (size_t)channels * (size_t)(depth / 8);
    png_enc *e = pl_calloc(1, sizeof *e, "png encoder");
    if (!e) return PL_ENOMEM;
    int rc = 0;
    e->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e->dst.err, on_error, on_warning);
    if (!e->png) {
        free(e);
        return pl_fail(PL_ENOMEM, "png encode: png_create_write_struct failed");
    }
    e->info = png_create_info_struct(e->png);
    e->rows = pl_malloc(sizeof(png_bytep) * (size_t)h, "png row pointers");
    if (!e->info || !e->rows) {
        rc = pl_fail(PL_ENOMEM, "png encode: out of memory");
        goto done;
    }
    if (setjmp(png_jmpbuf(e->png))) {
        rc = pl_fail(e->dst.oom ? PL_ENOMEM : PL_EIO, "png encode (%dx%d): %s", w, h, e->dst.err);
        goto done;
    }
    png_set_write_fn(e->png, &e->dst, write_cb, flush_cb);
    png_set_IHDR(e->png, e->info, (png_uint_32)w, (png_uint_32)h, depth, ct, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    // zlib level 1 and the Sub filter alone: 12x faster than libpng's defaults (level 6,
    // adaptive filters) on a noisy 512x512 CT slice (8.5 vs 105 ms), for a 3% larger file.
    png_set_compression_level(e->png, PNG_ENC_ZLIB_LEVEL);
    png_set_filter(e->png, PNG_FILTER_TYPE_BASE, PNG_FILTER_SUB);
    png_write_info(e->png, e->info);
    if (depth == 16) png_set_swap(e->png);
    for (int y = 0; y < h; y++) e->rows[y] = (png_bytep)((const uint8_t *)px + (size_t)y * rowbytes);
    png_write_image(e->png, e->rows);
    png_write_end(e->png, NULL);
    *out = e->dst.buf;
    *len = e->dst.len;
    e->dst.buf = NULL;
done:
    png_destroy_write_struct(&e->png, &e->info);
    free(e->rows);
    free(e->dst.buf);
    free(e);
    return rc;
}

int img_encode_png_gray16(uint8_t **out, size_t *len, const uint16_t *px, int w, int h) {
    return png_encode(out, len, px, w, h, PNG_COLOR_TYPE_GRAY, 16);
}

int img_encode_png_gray8(uint8_t **out, size_t *len, const uint8_t *px, int w, int h) {
    return png_encode(out, len, px, w, h, PNG_COLOR_TYPE_GRAY, 8);
}

int img_encode_png_rgb8(uint8_t **out, size_t *len, const uint8_t *px, int w, int h) {
    return png_encode(out, len, px, w, h, PNG_COLOR_TYPE_RGB, 8);
}
