// synth_imagenet: an ILSVRC2012 look-alike with learnable classes. Each class is a texture or a
// shape (stripes at three orientations, checkerboard, rings, disc, dots, triangle, cross, colour
// ramp) with random colours, position, scale, rotation jitter and pixel noise, on non-square
// images of varied sizes. Layout as published: ILSVRC2012_img_train.tar of one tar per synset,
// ILSVRC2012_img_val.tar, LOC_val_solution.csv and LOC_synset_mapping.txt. The quirks of the
// real set are present once each in train: a CMYK JPEG (Adobe inverted), a grayscale JPEG and
// a PNG named .JPEG. Shapes come from synth_common.c.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/archive.h"
#include "io/fileio.h"
#include "io/image.h"
#include "io/runlog.h"
#include "nn/pl.h"
#include "stages/synth/synth.h"

static const double PI = 3.14159265358979323846;
static const uint64_t TAG_TRAIN = 0x494e5452, TAG_VAL = 0x494e5641, TAG_ORDER = 0x494e4f52;
static const int JPEG_QUALITY = 90;

// The ten Imagenette synsets, in wnid order (the mapping file's order = label order).
static const struct { const char *wnid, *desc; } IN_CLASSES[10] = {
    {"n01440764", "tench, Tinca tinca"},
    {"n02102040", "English springer, English springer spaniel"},
    {"n02979186", "cassette player"},
    {"n03000684", "chain saw, chainsaw"},
    {"n03028079", "church, church building"},
    {"n03394916", "French horn, horn"},
    {"n03417042", "garbage truck, dustcart"},
    {"n03425413", "gas pump, gasoline pump, petrol pump, island dispenser"},
    {"n03445777", "golf ball"},
    {"n03888605", "parachute, chute"},
};
// Pattern of each class (same index as IN_CLASSES).
enum in_pattern { P_HSTRIPES, P_VSTRIPES, P_DSTRIPES, P_CHECKER, P_RINGS, P_DISC, P_DOTS, P_TRIANGLE,
                  P_CROSS, P_RAMP };

typedef struct { int classes, train, val, side_lo, side_hi; } in_scale_par;
static const in_scale_par IN_SCALES[3] = {
    {4, 6, 2, 48, 100},      // tiny: 24 train, 8 val
    {10, 40, 10, 80, 200},   // small
    {10, 150, 30, 120, 320}, // medium
};

// ---- class patterns ----------------------------------------------------------------------
static double clamp01(double v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

// Two colours whose luminance differs by at least 70 (so every class is visible in gray too).
static void pick_colours(double fg[3], double bg[3], pl_rng *r) {
    for (int tries = 0; tries < 100; tries++) {
        for (int c = 0; c < 3; c++) {
            fg[c] = pl_rng_range(r, 0, 255);
            bg[c] = pl_rng_range(r, 0, 255);
        }
        double lf = 0.299 * fg[0] + 0.587 * fg[1] + 0.114 * fg[2];
        double lb = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2];
        if (fabs(lf - lb) >= 70) return;
    }
}

// Renders class `pattern` into rgb (h, w, 3); box = the object's extent (x1, y1, x2, y2),
// the whole image for textures.
static void in_render(uint8_t *rgb, int w, int h, int pattern, pl_rng *r, int box[4]) {
    double fg[3], bg[3];
    pick_colours(fg, bg, r);
    double m = PL_MIN(w, h);
    double period = pl_rng_range(r, 0.08, 0.16) * m;
    double phase = pl_rng_uniform(r);
    double jitter = pl_rng_range(r, -12, 12) * PI / 180;
    double ang = jitter;
    if (pattern == P_VSTRIPES) ang += PI / 2;
    if (pattern == P_DSTRIPES) ang += pl_rng_uniform(r) < 0.5 ? PI / 4 : 3 * PI / 4;
    if (pattern == P_RAMP || pattern == P_CHECKER || pattern == P_DOTS) ang = pl_rng_range(r, 0, PI);
    double ca = cos(ang), sa = sin(ang);
    double cx = w * pl_rng_range(r, 0.35, 0.65), cy = h * pl_rng_range(r, 0.35, 0.65);
    synth_shape sh = {SHAPE_DISC, cx, cy, m * pl_rng_range(r, 0.28, 0.42), pl_rng_range(r, 0, 2 * PI)};
    if (pattern == P_TRIANGLE) sh.kind = SHAPE_TRIANGLE;
    if (pattern == P_CROSS) sh.kind = SHAPE_CROSS;
    double noise = pl_rng_range(r, 6, 14);
    double shade = pl_rng_range(r, -0.15, 0.15);   // illumination slope across the image
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double u = (x * ca + y * sa) / period + phase, v = (-x * sa + y * ca) / period + phase;
            double t = 0;
            switch (pattern) {
            case P_HSTRIPES:
            case P_VSTRIPES:
            case P_DSTRIPES: t = 0.5 + 0.5 * fmax(-1, fmin(1, 3 * sin(2 * PI * v))); break;
            case P_CHECKER: t = 0.5 + 0.5 * fmax(-1, fmin(1, 6 * sin(2 * PI * u) * sin(2 * PI * v))); break;
            case P_RINGS: {
                double d = hypot(x - cx, y - cy) / period + phase;
                t = 0.5 + 0.5 * fmax(-1, fmin(1, 3 * sin(2 * PI * d)));
                break;
            }
            case P_DOTS: {
                double fu = u - floor(u) - 0.5, fv = v - floor(v) - 0.5;
                t = clamp01((0.28 - sqrt(fu * fu + fv * fv)) * period + 0.5);
                break;
            }
            case P_RAMP: t = clamp01(0.5 + (x - cx) * ca / m + (y - cy) * sa / m); break;
            default: t = synth_shape_cover(&sh, x, y); break;
            }
            double light = 1 + shade * ((double)x / w - 0.5);
            for (int c = 0; c < 3; c++) {
                double val = (bg[c] + t * (fg[c] - bg[c])) * light + noise * pl_rng_normal(r);
                rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)lrint(fmax(0, fmin(255, val)));
            }
        }
    box[0] = 0;
    box[1] = 0;
    box[2] = w - 1;
    box[3] = h - 1;
    if (pattern == P_DISC || pattern == P_TRIANGLE || pattern == P_CROSS) {
        double xy[64];
        int np = synth_shape_polygon(xy, &sh);
        double x0 = 1e30, y0 = 1e30, x1 = -1e30, y1 = -1e30;
        for (int k = 0; k < np; k++) {
            x0 = fmin(x0, xy[2 * k]);
            x1 = fmax(x1, xy[2 * k]);
            y0 = fmin(y0, xy[2 * k + 1]);
            y1 = fmax(y1, xy[2 * k + 1]);
        }
        box[0] = (int)PL_MAX(0, floor(x0));
        box[1] = (int)PL_MAX(0, floor(y0));
        box[2] = (int)PL_MIN(w - 1, ceil(x1));
        box[3] = (int)PL_MIN(h - 1, ceil(y1));
    }
}

enum in_kind { IN_JPEG_RGB, IN_JPEG_CMYK, IN_JPEG_GRAY, IN_PNG };

// One encoded image of class `cls` in the given container kind.
static int in_image(uint8_t **out, size_t *len, int box[4], const in_scale_par *sp, int cls,
                    enum in_kind kind, pl_rng *r) {
    int w = (int)pl_rng_int(r, sp->side_lo, sp->side_hi);
    int h = (int)pl_rng_int(r, sp->side_lo, sp->side_hi);
    if (h == w) h = w > sp->side_lo ? w - 1 : w + 1;   // never square
    uint8_t *rgb = pl_malloc((size_t)w * h * 4, "synth rgb");
    if (!rgb) return PL_ENOMEM;
    in_render(rgb, w, h, cls, r, box);
    int rc;
    if (kind == IN_JPEG_CMYK) {
        // RGB -> CMYK inks; the encoder writes them Adobe-inverted as Photoshop does.
        uint8_t *cmyk = rgb;   // in place, back to front (4 bytes per pixel >= 3)
        for (int64_t i = (int64_t)w * h - 1; i >= 0; i--) {
            double R = rgb[i * 3], G = rgb[i * 3 + 1], B = rgb[i * 3 + 2];
            double mx = fmax(R, fmax(G, B)), K = 255 - mx;
            double C = mx > 0 ? 255 - R * 255 / mx : 0, M = mx > 0 ? 255 - G * 255 / mx : 0,
                   Y = mx > 0 ? 255 - B * 255 / mx : 0;
            cmyk[i * 4] = (uint8_t)lrint(C);
            cmyk[i * 4 + 1] = (uint8_t)lrint(M);
            cmyk[i * 4 + 2] = (uint8_t)lrint(Y);
            cmyk[i * 4 + 3] = (uint8_t)lrint(K);
        }
        rc = img_encode_jpeg(out, len, cmyk, w, h, 4, JPEG_QUALITY);
    } else if (kind == IN_JPEG_GRAY) {
        for (int64_t i = 0; i < (int64_t)w * h; i++)
            rgb[i] = (uint8_t)lrint(0.299 * rgb[i * 3] + 0.587 * rgb[i * 3 + 1] + 0.114 * rgb[i * 3 + 2]);
        rc = img_encode_jpeg(out, len, rgb, w, h, 1, JPEG_QUALITY);
    } else if (kind == IN_PNG) {
        rc = img_encode_png_rgb8(out, len, rgb, w, h);
    } else {
        rc = img_encode_jpeg(out, len, rgb, w, h, 3, JPEG_QUALITY);
    }
    free(rgb);
    return rc;
}

// Train image numbers of one synset: distinct, ascending, like "n01440764_10026".
static void train_numbers(int *num, int n, pl_rng *r) {
    for (int i = 0; i < n; i++) {
        int v, dup;
        do {
            v = (int)pl_rng_int(r, 1, 13000 + 10 * n);
            dup = 0;
            for (int j = 0; j < i; j++) dup |= num[j] == v;
        } while (dup);
        num[i] = v;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && num[j - 1] > num[j]; j--) {
            int t = num[j];
            num[j] = num[j - 1];
            num[j - 1] = t;
        }
}

static int write_train(const in_scale_par *sp, uint64_t seed, const char *dir, synth_stats *st, pl_progress *pg) {
    char path[4096];
    int rc = pl_path_join(path, sizeof path, dir, "ILSVRC2012_img_train.tar");
    if (rc) return rc;
    arc_writer *outer = NULL, *inner = NULL;
    int *num = pl_malloc(sizeof *num * (size_t)sp->train, "train numbers");
    if (!num) return PL_ENOMEM;
    if ((rc = arc_writer_open(&outer, path, ARC_TAR))) goto done;
    for (int c = 0; c < sp->classes && !rc; c++) {
        pl_rng r;
        synth_rng_init(&r, seed, TAG_TRAIN, (uint64_t)c * 100000);
        train_numbers(num, sp->train, &r);
        if ((rc = arc_writer_open_memory(&inner, ARC_TAR))) goto done;
        for (int i = 0; i < sp->train && !rc; i++) {
            // the set's quirks, once each: class 0 holds the CMYK JPEG, class 1 the grayscale
            // JPEG, class 2 the PNG named .JPEG (each its class's first image)
            enum in_kind kind = IN_JPEG_RGB;
            if (i == 0 && c == 0) kind = IN_JPEG_CMYK;
            if (i == 0 && c == 1) kind = IN_JPEG_GRAY;
            if (i == 0 && c == 2) kind = IN_PNG;
            pl_rng ri;
            synth_rng_init(&ri, seed, TAG_TRAIN, (uint64_t)c * 100000 + (uint64_t)i + 1);
            uint8_t *img = NULL;
            size_t len = 0;
            int box[4];
            rc = in_image(&img, &len, box, sp, c, kind, &ri);
            char name[64];
            snprintf(name, sizeof name, "%s_%d.JPEG", IN_CLASSES[c].wnid, num[i]);
            if (!rc) rc = arc_writer_add(inner, name, img, len);
            free(img);
            st->in_train++;
            progress_update(pg, st->in_train);
        }
        uint8_t *buf = NULL;
        size_t len = 0;
        if (rc) goto done;
        rc = arc_writer_close_memory(inner, &buf, &len);
        inner = NULL;
        char name[64];
        snprintf(name, sizeof name, "%s.tar", IN_CLASSES[c].wnid);
        if (!rc) rc = arc_writer_add(outer, name, buf, len);
        free(buf);
    }
    if (!rc) {
        rc = arc_writer_close(outer);
        outer = NULL;
    }
done:
    if (inner) {
        uint8_t *b = NULL;
        size_t l = 0;
        arc_writer_close_memory(inner, &b, &l);
        free(b);
    }
    arc_writer_abort(outer);
    free(num);
    return rc;
}

static int write_val(const in_scale_par *sp, uint64_t seed, const char *dir, synth_stats *st, pl_progress *pg) {
    int n = sp->classes * sp->val;
    int64_t *order = pl_malloc(sizeof *order * (size_t)n, "val order");
    size_t cap = 64 + (size_t)n * 96, used = 0;
    char *csv = pl_malloc(cap, "LOC_val_solution.csv");
    arc_writer *w = NULL;
    int rc = 0;
    if (!order || !csv) {
        rc = PL_ENOMEM;
        goto done;
    }
    for (int i = 0; i < n; i++) order[i] = i % sp->classes;
    pl_rng r;
    synth_rng_init(&r, seed, TAG_ORDER, 0);
    pl_rng_shuffle_i64(&r, order, n);
    char path[4096];
    if ((rc = pl_path_join(path, sizeof path, dir, "ILSVRC2012_img_val.tar"))) goto done;
    if ((rc = arc_writer_open(&w, path, ARC_TAR))) goto done;
    used += (size_t)snprintf(csv + used, cap - used, "ImageId,PredictionString\n");
    for (int i = 0; i < n && !rc; i++) {
        int c = (int)order[i];
        pl_rng ri;
        synth_rng_init(&ri, seed, TAG_VAL, (uint64_t)i);
        uint8_t *img = NULL;
        size_t len = 0;
        int box[4];
        rc = in_image(&img, &len, box, sp, c, IN_JPEG_RGB, &ri);
        char name[64];
        snprintf(name, sizeof name, "ILSVRC2012_val_%08d.JPEG", i + 1);
        if (!rc) rc = arc_writer_add(w, name, img, len);
        free(img);
        used += (size_t)snprintf(csv + used, cap - used, "ILSVRC2012_val_%08d,%s %d %d %d %d \n", i + 1,
                                 IN_CLASSES[c].wnid, box[0], box[1], box[2], box[3]);
        st->in_val++;
        progress_update(pg, st->in_train + st->in_val);
    }
    if (rc) goto done;
    rc = arc_writer_close(w);
    w = NULL;
    if (rc) goto done;
    if ((rc = pl_path_join(path, sizeof path, dir, "LOC_val_solution.csv"))) goto done;
    rc = pl_write_file_atomic(path, csv, used);
done:
    arc_writer_abort(w);
    free(order);
    free(csv);
    return rc;
}

int synth_write_imagenet(synth_stats *st, const synth_opts *o, const char *dir) {
    in_scale_par par = IN_SCALES[o->scale];
    if (o->in_side_lo > 0 && o->in_side_hi >= o->in_side_lo) {   // e.g. 333..500: real ImageNet's sizes
        par.side_lo = o->in_side_lo;
        par.side_hi = o->in_side_hi;
    }
    const in_scale_par *sp = &par;
    int rc = pl_mkdir_p(dir);
    if (rc) return rc;
    // the previous run's index files go first: an interrupted run must not look complete
    const char *index_files[2] = {"LOC_val_solution.csv", "LOC_synset_mapping.txt"};
    for (int i = 0; i < 2; i++) {
        char p[4096];
        if ((rc = pl_path_join(p, sizeof p, dir, index_files[i]))) return rc;
        if (pl_path_exists(p) && remove(p) != 0) return pl_fail(PL_EIO, "%s: cannot remove the previous run's file", p);
    }
    st->in_classes = sp->classes;
    pl_progress pg;
    progress_init(&pg, "synth imagenet images", (int64_t)sp->classes * (sp->train + sp->val), o->progress,
                  o->progress_interval);
    if ((rc = write_train(sp, o->seed, dir, st, &pg))) return rc;
    // the mapping and the val labels last: without them the folder is not a usable dataset
    char map[4096];
    size_t used = 0;
    for (int c = 0; c < sp->classes; c++)
        used += (size_t)snprintf(map + used, sizeof map - used, "%s %s\n", IN_CLASSES[c].wnid, IN_CLASSES[c].desc);
    char path[4096];
    if ((rc = pl_path_join(path, sizeof path, dir, "LOC_synset_mapping.txt"))) return rc;
    if ((rc = pl_write_file_atomic(path, map, used))) return rc;
    if ((rc = write_val(sp, o->seed, dir, st, &pg))) return rc;
    progress_finish(&pg);
    return 0;
}
