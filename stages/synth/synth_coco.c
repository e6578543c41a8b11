// synth_coco: a COCO 2017 look-alike. Images are textured backgrounds with coloured shapes
// (disc, square, triangle, ring, cross) as objects; categories have non-contiguous ids; some
// images have no objects and a few hold a crowd (a cluster of small shapes annotated once with
// iscrowd = 1 and an uncompressed RLE mask). Layout as published: train2017.zip, val2017.zip
// ({id:012d}.jpg under train2017/ and val2017/) and annotations_trainval2017.zip holding
// annotations/instances_{train,val}2017.json. bbox = [x, y, w, h] in pixels, top-left origin.
#include <cjson/cJSON.h>
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

static const uint64_t TAG_IDS = 0x434f4944, TAG_IMG = 0x434f494d;
static const int JPEG_QUALITY = 90;
static const double EMPTY_RATE = 0.1;    // images without any annotation
static const double CROWD_RATE = 0.06;   // images holding a crowd region

// Categories: COCO-style non-contiguous ids; shape kind = index.
static const struct { int id; const char *name; } CATS[SHAPE_NKINDS] = {
    {1, "disc"}, {3, "square"}, {7, "triangle"}, {12, "ring"}, {18, "cross"},
};

typedef struct { int train, val, side_lo, side_hi, max_objects; } coco_scale_par;
static const coco_scale_par COCO_SCALES[3] = {
    {12, 6, 64, 128, 4},       // tiny
    {300, 60, 120, 240, 5},    // small
    {1500, 250, 240, 480, 6},  // medium
};

static double r2(double v) { return round(v * 100.0) / 100.0; }

static cJSON *num_array(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n && a; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

typedef struct {
    cJSON *images, *anns;
    int64_t next_ann_id;
    int64_t nanns;
} coco_json;

// Renders one image and appends its image and annotation records; returns encoded JPEG.
static int coco_image(uint8_t **jpg, size_t *jlen, coco_json *js, const coco_scale_par *sp, int64_t id,
                      int index, const char *folder, pl_rng *r) {
    int w = (int)pl_rng_int(r, sp->side_lo, sp->side_hi), h = (int)pl_rng_int(r, sp->side_lo, sp->side_hi);
    uint8_t *rgb = pl_malloc((size_t)w * h * 3, "coco rgb");
    uint8_t *mask = pl_calloc((size_t)w * h, 1, "coco crowd mask");
    if (!rgb || !mask) {
        free(rgb);
        free(mask);
        return PL_ENOMEM;
    }
    // background: a smooth two-colour blend with mild texture
    double c0[3], c1[3];
    for (int c = 0; c < 3; c++) {
        c0[c] = pl_rng_range(r, 40, 215);
        c1[c] = pl_rng_range(r, 40, 215);
    }
    double ga = pl_rng_range(r, 0, 6.283185307179586), fx = pl_rng_range(r, 0.02, 0.08);
    double bgf[3] = {0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double t = 0.5 + 0.5 * sin((x * cos(ga) + y * sin(ga)) * fx);
            for (int c = 0; c < 3; c++) {
                bgf[c] = c0[c] + t * (c1[c] - c0[c]);
                rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)lrint(bgf[c]);
            }
        }
    // objects
    // image 1 of each split always holds a crowd and image 2 is always empty, so even the
    // tiny set has both cases; elsewhere they occur at their rates
    int nobj = pl_rng_uniform(r) < EMPTY_RATE ? 0 : (int)pl_rng_int(r, 1, sp->max_objects);
    int crowd = nobj > 0 && pl_rng_uniform(r) < CROWD_RATE;
    if (index == 1) {
        nobj = PL_MAX(nobj, 1);
        crowd = 1;
    }
    if (index == 2) nobj = crowd = 0;
    synth_shape sh[8];
    int n = 0;
    double m = PL_MIN(w, h);
    for (int k = 0; k < nobj && n < 8; k++) {
        for (int tries = 0; tries < 30; tries++) {
            synth_shape s = {(int)pl_rng_int(r, 0, SHAPE_NKINDS - 1), 0, 0, m * pl_rng_range(r, 0.06, 0.22),
                             pl_rng_range(r, 0, 6.283185307179586)};
            s.cx = pl_rng_range(r, 0.1 * w, 0.9 * w);
            s.cy = pl_rng_range(r, 0.1 * h, 0.9 * h);
            int ok = 1;   // objects may touch but not overlap much
            for (int j = 0; j < n && ok; j++)
                ok = hypot(s.cx - sh[j].cx, s.cy - sh[j].cy) > 0.8 * (s.size + sh[j].size);
            if (ok) {
                sh[n++] = s;
                break;
            }
        }
    }
    // crowd: a cluster of small shapes of one category in one region
    synth_shape cs[24];
    int ncs = 0;
    double crowd_box[4] = {0};
    int crowd_cat = 0;
    if (crowd) {
        crowd_cat = (int)pl_rng_int(r, 0, SHAPE_NKINDS - 1);
        double rx = pl_rng_range(r, 0.15 * w, 0.85 * w), ry = pl_rng_range(r, 0.15 * h, 0.85 * h);
        ncs = (int)pl_rng_int(r, 8, 20);
        for (int k = 0; k < ncs; k++)
            cs[k] = (synth_shape){crowd_cat, rx + pl_rng_range(r, -0.15, 0.15) * w,
                                  ry + pl_rng_range(r, -0.15, 0.15) * h, m * pl_rng_range(r, 0.02, 0.04),
                                  pl_rng_range(r, 0, 6.283185307179586)};
    }
    double colour[32][3], area[8] = {0};   // area: the object's coverage inside the image (px^2)
    for (int k = 0; k < n + (ncs ? 1 : 0); k++)
        for (int c = 0; c < 3; c++) colour[k][c] = pl_rng_uniform(r) < 0.5 ? pl_rng_range(r, 0, 60) : pl_rng_range(r, 195, 255);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = &rgb[((size_t)y * w + x) * 3];
            for (int k = 0; k < ncs; k++) {
                double a = synth_shape_cover(&cs[k], x, y);
                if (a <= 0) continue;
                if (a >= 0.5) mask[(size_t)y * w + x] = 1;
                for (int c = 0; c < 3; c++) p[c] = (uint8_t)lrint(p[c] + a * (colour[n][c] - p[c]));
            }
            for (int k = 0; k < n; k++) {
                double a = synth_shape_cover(&sh[k], x, y);
                if (a <= 0) continue;
                area[k] += a;
                for (int c = 0; c < 3; c++) p[c] = (uint8_t)lrint(p[c] + a * (colour[k][c] - p[c]));
            }
            for (int c = 0; c < 3; c++) {
                double v = p[c] + 8 * pl_rng_normal(r);
                p[c] = (uint8_t)lrint(fmax(0, fmin(255, v)));
            }
        }
    int rc = img_encode_jpeg(jpg, jlen, rgb, w, h, 3, JPEG_QUALITY);
    // records
    char fname[64], url[128];
    snprintf(fname, sizeof fname, "%012lld.jpg", (long long)id);
    snprintf(url, sizeof url, "http://images.cocodataset.org/%s/%s", folder, fname);
    cJSON *im = cJSON_CreateObject();
    cJSON_AddNumberToObject(im, "license", (double)pl_rng_int(r, 1, 8));
    cJSON_AddStringToObject(im, "file_name", fname);
    cJSON_AddStringToObject(im, "coco_url", url);
    cJSON_AddNumberToObject(im, "height", h);
    cJSON_AddNumberToObject(im, "width", w);
    cJSON_AddStringToObject(im, "date_captured", "2013-11-14 16:28:13");
    cJSON_AddStringToObject(im, "flickr_url", "");
    cJSON_AddNumberToObject(im, "id", (double)id);
    cJSON_AddItemToArray(js->images, im);
    for (int k = 0; k < n; k++) {
        double xy[64];
        int np = synth_shape_polygon(xy, &sh[k]);
        double x0 = 1e30, y0 = 1e30, x1 = -1e30, y1 = -1e30;
        for (int i = 0; i < np; i++) {
            xy[2 * i] = r2(fmax(0, fmin(w, xy[2 * i])));
            xy[2 * i + 1] = r2(fmax(0, fmin(h, xy[2 * i + 1])));
            x0 = fmin(x0, xy[2 * i]);
            x1 = fmax(x1, xy[2 * i]);
            y0 = fmin(y0, xy[2 * i + 1]);
            y1 = fmax(y1, xy[2 * i + 1]);
        }
        double bbox[4] = {r2(x0), r2(y0), r2(x1 - x0), r2(y1 - y0)};
        if (bbox[2] < 1 || bbox[3] < 1) continue;
        cJSON *an = cJSON_CreateObject();
        cJSON *seg = cJSON_CreateArray();
        cJSON_AddItemToArray(seg, num_array(xy, 2 * np));
        cJSON_AddItemToObject(an, "segmentation", seg);
        cJSON_AddNumberToObject(an, "area", r2(area[k]));
        cJSON_AddNumberToObject(an, "iscrowd", 0);
        cJSON_AddNumberToObject(an, "image_id", (double)id);
        cJSON_AddItemToObject(an, "bbox", num_array(bbox, 4));
        cJSON_AddNumberToObject(an, "category_id", CATS[sh[k].kind].id);
        cJSON_AddNumberToObject(an, "id", (double)js->next_ann_id++);
        cJSON_AddItemToArray(js->anns, an);
        js->nanns++;
    }
    if (ncs) {
        // uncompressed RLE, column-major, starting with a run of zeros (COCO's convention)
        int64_t npx = 0;
        int bx0 = w, by0 = h, bx1 = -1, by1 = -1;
        cJSON *counts = cJSON_CreateArray();
        int cur = 0;
        int64_t run = 0;
        for (int x = 0; x < w; x++)
            for (int y = 0; y < h; y++) {
                int v = mask[(size_t)y * w + x];
                if (v) {
                    npx++;
                    bx0 = PL_MIN(bx0, x);
                    bx1 = PL_MAX(bx1, x);
                    by0 = PL_MIN(by0, y);
                    by1 = PL_MAX(by1, y);
                }
                if (v != cur) {
                    cJSON_AddItemToArray(counts, cJSON_CreateNumber((double)run));
                    run = 0;
                    cur = v;
                }
                run++;
            }
        cJSON_AddItemToArray(counts, cJSON_CreateNumber((double)run));
        if (npx > 0) {
            crowd_box[0] = bx0;
            crowd_box[1] = by0;
            crowd_box[2] = bx1 - bx0 + 1;
            crowd_box[3] = by1 - by0 + 1;
            cJSON *an = cJSON_CreateObject();
            cJSON *seg = cJSON_CreateObject();
            cJSON_AddItemToObject(seg, "counts", counts);
            double size[2] = {h, w};
            cJSON_AddItemToObject(seg, "size", num_array(size, 2));
            cJSON_AddItemToObject(an, "segmentation", seg);
            cJSON_AddNumberToObject(an, "area", (double)npx);
            cJSON_AddNumberToObject(an, "iscrowd", 1);
            cJSON_AddNumberToObject(an, "image_id", (double)id);
            cJSON_AddItemToObject(an, "bbox", num_array(crowd_box, 4));
            cJSON_AddNumberToObject(an, "category_id", CATS[crowd_cat].id);
            cJSON_AddNumberToObject(an, "id", (double)(900100000000LL + js->next_ann_id++));
            cJSON_AddItemToArray(js->anns, an);
            js->nanns++;
        } else {
            cJSON_Delete(counts);
        }
    }
    free(rgb);
    free(mask);
    return rc;
}

// Distinct ascending image ids in COCO's range.
static void image_ids(int64_t *ids, int n, pl_rng *r) {
    for (int i = 0; i < n; i++) {
        int64_t v;
        int dup;
        do {
            v = pl_rng_int(r, 1, 581929);
            dup = 0;
            for (int j = 0; j < i; j++) dup |= ids[j] == v;
        } while (dup);
        ids[i] = v;
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            int64_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
}

static cJSON *json_skeleton(coco_json *js) {
    cJSON *root = cJSON_CreateObject();
    cJSON *info = cJSON_CreateObject();
    cJSON_AddStringToObject(info, "description", "mp3d synthetic COCO-format demo set");
    cJSON_AddStringToObject(info, "url", "");
    cJSON_AddStringToObject(info, "version", "1.0");
    cJSON_AddNumberToObject(info, "year", 2017);
    cJSON_AddStringToObject(info, "contributor", "mp3d synth");
    cJSON_AddStringToObject(info, "date_created", "2017/09/01");
    cJSON_AddItemToObject(root, "info", info);
    cJSON *lic = cJSON_CreateArray();
    for (int i = 1; i <= 8; i++) {
        cJSON *l = cJSON_CreateObject();
        char nm[64];
        snprintf(nm, sizeof nm, "synthetic license %d", i);
        cJSON_AddStringToObject(l, "url", "");
        cJSON_AddNumberToObject(l, "id", i);
        cJSON_AddStringToObject(l, "name", nm);
        cJSON_AddItemToArray(lic, l);
    }
    cJSON_AddItemToObject(root, "licenses", lic);
    js->images = cJSON_AddArrayToObject(root, "images");
    js->anns = cJSON_AddArrayToObject(root, "annotations");
    cJSON *cats = cJSON_AddArrayToObject(root, "categories");
    for (int k = 0; k < SHAPE_NKINDS; k++) {
        cJSON *c = cJSON_CreateObject();
        cJSON_AddStringToObject(c, "supercategory", "shape");
        cJSON_AddNumberToObject(c, "id", CATS[k].id);
        cJSON_AddStringToObject(c, "name", CATS[k].name);
        cJSON_AddItemToArray(cats, c);
    }
    return root;
}

// Writes SPLIT2017.zip and returns the instances JSON text (caller frees).
static int coco_split(char **json, const coco_scale_par *sp, uint64_t seed, const char *dir,
                      const char *split, int n, int64_t first_ann_id, synth_stats *st, pl_progress *pg,
                      int64_t done0) {
    *json = NULL;
    char folder[32], zname[64], path[4096];
    snprintf(folder, sizeof folder, "%s2017", split);
    snprintf(zname, sizeof zname, "%s2017.zip", split);
    int rc = pl_path_join(path, sizeof path, dir, zname);
    if (rc) return rc;
    int64_t *ids = pl_malloc(sizeof *ids * (size_t)n, "coco ids");
    if (!ids) return PL_ENOMEM;
    uint64_t tag = split[0] == 't' ? 1 : 2;
    pl_rng r;
    synth_rng_init(&r, seed, TAG_IDS, tag);
    image_ids(ids, n, &r);
    coco_json js = {0};
    js.next_ann_id = first_ann_id;
    cJSON *root = json_skeleton(&js);
    arc_writer *w = NULL;
    if ((rc = arc_writer_open(&w, path, ARC_ZIP_STORE))) goto done;
    for (int i = 0; i < n && !rc; i++) {
        pl_rng ri;
        synth_rng_init(&ri, seed, TAG_IMG, tag * 10000000 + (uint64_t)i);
        uint8_t *jpg = NULL;
        size_t len = 0;
        rc = coco_image(&jpg, &len, &js, sp, ids[i], i, folder, &ri);
        char entry[96];
        snprintf(entry, sizeof entry, "%s/%012lld.jpg", folder, (long long)ids[i]);
        if (!rc) rc = arc_writer_add(w, entry, jpg, len);
        free(jpg);
        progress_update(pg, done0 + i + 1);
    }
    if (rc) goto done;
    rc = arc_writer_close(w);
    w = NULL;
    if (rc) goto done;
    *json = cJSON_PrintUnformatted(root);
    if (!*json) rc = pl_fail(PL_ENOMEM, "coco: cannot print instances_%s2017.json", split);
    st->coco_annotations += js.nanns;
    if (split[0] == 't') st->coco_train = n;
    else st->coco_val = n;
done:
    arc_writer_abort(w);
    cJSON_Delete(root);
    free(ids);
    return rc;
}

int synth_write_coco(synth_stats *st, const synth_opts *o, const char *dir) {
    const coco_scale_par *sp = &COCO_SCALES[o->scale];
    int rc = pl_mkdir_p(dir);
    if (rc) return rc;
    char path[4096];
    // the previous run's annotations go first: an interrupted run must not look complete
    if ((rc = pl_path_join(path, sizeof path, dir, "annotations_trainval2017.zip"))) return rc;
    if (pl_path_exists(path) && remove(path) != 0) return pl_fail(PL_EIO, "%s: cannot remove the previous run's file", path);
    char *jt = NULL, *jv = NULL;
    arc_writer *w = NULL;
    pl_progress pg;
    progress_init(&pg, "synth coco images", sp->train + sp->val, o->progress, o->progress_interval);
    if ((rc = coco_split(&jt, sp, o->seed, dir, "train", sp->train, 1000, st, &pg, 0))) goto done;
    if ((rc = coco_split(&jv, sp, o->seed, dir, "val", sp->val, 5000000, st, &pg, sp->train))) goto done;
    progress_finish(&pg);
    // the annotations zip last: it is what makes the folder a dataset
    if ((rc = pl_path_join(path, sizeof path, dir, "annotations_trainval2017.zip"))) goto done;
    if ((rc = arc_writer_open(&w, path, ARC_ZIP))) goto done;
    if ((rc = arc_writer_add(w, "annotations/instances_train2017.json", jt, strlen(jt)))) goto done;
    if ((rc = arc_writer_add(w, "annotations/instances_val2017.json", jv, strlen(jv)))) goto done;
    rc = arc_writer_close(w);
    w = NULL;
done:
    arc_writer_abort(w);
    free(jt);
    free(jv);
    return rc;
}
