// mp3d vdt: ImageNet (ILSVRC2012 tars + LOC csv/txt) or COCO 2017 (zips + instances JSON) ->
// pseudo-3D HDF5 shards OUT/{imagenet,coco}_{split}.h5 holding `images` (N, 1, 3, S, S) uint8:
// the colour axis is the depth axis (VDT, Zhang et al. 2022). Decode -> antialiased resize of the
// short side to vdt.short_side -> centre crop vdt.crop. Work is split by whole archive entries
// (an ImageNet train synset tar, a val/COCO image) balanced by bytes, from the sorted entry list.
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/archive.h"
#include "io/coco.h"
#include "io/fileio.h"
#include "io/h5shard.h"
#include "io/image.h"
#include "io/imagenet.h"
#include "io/strbuf.h"
#include "io/worksplit.h"
#include "nn/pl.h"
#include "stages/data/quarantine.h"
#include "stages/stages.h"

#ifndef MP3D_VERSION
#define MP3D_VERSION "0.1.0"
#endif

enum { NAME_W = 64 };

// ---------------------------------------------------------------------------- resize + crop

// One RGB pixel as 4 float lanes (r, g, b, unused): GCC/clang vector extensions, loaded and
// stored with memcpy (no alignment assumed).
typedef float v4f __attribute__((vector_size(16)));
typedef float v8f __attribute__((vector_size(32)));

// Separable antialiased linear resampling (a triangle filter widened by the downscale factor,
// as PIL's BILINEAR resize does): output pixel o of an axis reads input pixels around
// centre (o + 0.5) * in / out with weights max(0, 1 - |k + 0.5 - centre| / support),
// support = max(in / out, 1), normalised to sum 1.
typedef struct {
    int *first, *count;   // (out) first input index and tap count
    float *w;             // (out, taps)
    int taps;
} vdt_axis;

static void axis_free(vdt_axis *a) {
    free(a->first);
    free(a->count);
    free(a->w);
}

// Weights for output indices [o0, o0 + n) of an axis resized from `in` to `out`.
static int axis_init(vdt_axis *a, int in, int out, int o0, int n) {
    double scale = (double)in / out, support = scale > 1 ? scale : 1.0;
    a->taps = (int)ceil(support) * 2 + 1;
    a->first = pl_malloc(sizeof(int) * (size_t)n, "resize taps");
    a->count = pl_malloc(sizeof(int) * (size_t)n, "resize taps");
    a->w = pl_calloc((size_t)n * (size_t)a->taps, sizeof(float), "resize weights");   // taps past count stay 0
    if (!a->first || !a->count || !a->w) return PL_ENOMEM;
    for (int i = 0; i < n; i++) {
        double c = (o0 + i + 0.5) * scale;
        int k0 = (int)floor(c - support), k1 = (int)ceil(c + support);
        k0 = PL_MAX(k0, 0);
        k1 = PL_MIN(k1, in - 1);
        double ws[256], sum = 0;
        int cnt = 0, first = -1;
        for (int k = k0; k <= k1 && cnt < a->taps && cnt < 256; k++) {
            double wt = 1.0 - fabs(k + 0.5 - c) / support;
            if (wt <= 0) {
                if (first < 0) continue;
                break;
            }
            if (first < 0) first = k;
            ws[cnt++] = wt;
            sum += wt;
        }
        if (cnt == 0) {   // cannot happen for support >= 1, kept as a guard: nearest pixel
            first = PL_CLAMP((int)c, 0, in - 1);
            ws[0] = sum = 1;
            cnt = 1;
        }
        a->first[i] = first;
        a->count[i] = cnt;
        for (int t = 0; t < cnt; t++) a->w[(size_t)i * (size_t)a->taps + (size_t)t] = (float)(ws[t] / sum);
    }
    return 0;
}

// One row of the horizontal pass: dst (C, 3) from px, the row's floats (interleaved RGB,
// starting at column c0, zero-padded by `taps` pixels). Every output reads `taps` pixels, the
// weights past its count being 0: adding 0 * p (p finite, >= 0) to a sum >= +0 changes no bit,
// so per channel the sums are the plain per-pixel loop's (a += w[t] * p[t], t ascending) bit
// for bit, without the unpredictable loop exit. `taps` a constant at the call (inlined, unrolled).
static inline void hpass_row(float *restrict dst, const float *restrict px, const vdt_axis *ax, int C, int c0, int taps) {
    int i = 0;
    // two output pixels per 8-lane vector (pixel i in lanes 0-3, i + 1 in lanes 4-7): half the
    // instructions, and per lane the same multiply, then add, in the same tap order
    for (; i + 1 < C; i += 2) {
        const float *w0 = ax->w + (size_t)i * (size_t)ax->taps, *w1 = w0 + ax->taps;
        const float *p0 = px + (size_t)(ax->first[i] - c0) * 3, *p1 = px + (size_t)(ax->first[i + 1] - c0) * 3;
        v8f a = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int t = 0; t < taps; t++) {
            v4f u, v;
            memcpy(&u, p0 + 3 * t, sizeof u);
            memcpy(&v, p1 + 3 * t, sizeof v);
            v8f x = __builtin_shufflevector(u, v, 0, 1, 2, 3, 4, 5, 6, 7);
            v8f wv = {w0[t], w0[t], w0[t], w0[t], w1[t], w1[t], w1[t], w1[t]};
            a += wv * x;
        }
        v4f lo = __builtin_shufflevector(a, a, 0, 1, 2, 3), hi = __builtin_shufflevector(a, a, 4, 5, 6, 7);
        memcpy(dst + 3 * i, &lo, sizeof lo);
        memcpy(dst + 3 * i + 3, &hi, sizeof hi);   // lane 3 of each is overwritten next (or lands in the slack)
    }
    for (; i < C; i++) {
        const float *wt = ax->w + (size_t)i * (size_t)ax->taps;
        const float *p = px + (size_t)(ax->first[i] - c0) * 3;
        v4f a = {0, 0, 0, 0};
        for (int t = 0; t < taps; t++) {
            v4f v;
            memcpy(&v, p + 3 * t, sizeof v);   // lane 3 (the next pixel's red) is never used
            a += wt[t] * v;
        }
        memcpy(dst + 3 * i, &a, sizeof a);   // lane 3 is overwritten by the next pixel (or the slack)
    }
}

// Resize (h, w, 3) so the short side is S, then centre-crop C x C into planes (3, C, C).
// Only the cropped window is computed. Sets the scale and crop offset used (for boxes).
static int resize_crop(uint8_t *out, const uint8_t *rgb, int w, int h, int S, int C, double *sx, double *sy, int *x0, int *y0) {
    int nw, nh;
    if (w <= h) {
        nw = S;
        nh = (int)((int64_t)S * h / w);   // torchvision Resize(int): long side truncated
    } else {
        nh = S;
        nw = (int)((int64_t)S * w / h);
    }
    *sx = (double)nw / w;
    *sy = (double)nh / h;
    *x0 = (nw - C) / 2;
    *y0 = (nh - C) / 2;
    vdt_axis ax = {0}, ay = {0};
    float *tmp = NULL;
    int rc = axis_init(&ax, w, nw, *x0, C);
    if (!rc) rc = axis_init(&ay, h, nh, *y0, C);
    if (!rc) {
        // rows needed by the vertical pass, and the columns the horizontal pass reads
        int r0 = ay.first[0], r1 = ay.first[C - 1] + ay.count[C - 1];
        int c0 = ax.first[0], c1 = ax.first[C - 1] + ax.count[C - 1];
        // tmp: (rows, C, 3) plus one float of slack (each pixel is stored as 4 lanes); px: the
        // columns [c0, c1) of one source row as floats, interleaved RGB, then zeros for the
        // padded taps and the fourth lane
        const size_t span = (size_t)(c1 - c0) * 3, pad = (size_t)ax.taps * 3 + 1;
        tmp = pl_malloc(sizeof(float) * ((size_t)(r1 - r0) * (size_t)C * 3 + 1), "resize rows");
        float *px = pl_calloc(span + pad, sizeof(float), "resize row");
        if (!tmp || !px) rc = PL_ENOMEM;
        for (int r = r0; r < r1 && !rc; r++) {   // horizontal: (rows, C, 3)
            const uint8_t *src = rgb + ((size_t)r * (size_t)w + (size_t)c0) * 3;
            for (size_t k = 0; k < span; k++) px[k] = src[k];   // vectorizes (bytes -> floats)
            float *dst = tmp + (size_t)(r - r0) * (size_t)C * 3;
            switch (ax.taps) {   // 3: upscaling, 5: downscaling by up to 2 (ImageNet to 256), 7: up to 3
            case 3: hpass_row(dst, px, &ax, C, c0, 3); break;
            case 5: hpass_row(dst, px, &ax, C, c0, 5); break;
            case 7: hpass_row(dst, px, &ax, C, c0, 7); break;
            default: hpass_row(dst, px, &ax, C, c0, ax.taps); break;
            }
        }
        free(px);
        // vertical, a whole output row at a time, 32 values at once (the same sums in the same
        // order as per pixel), then rounded into the planes
        float *acc = rc ? NULL : pl_malloc(sizeof(float) * (size_t)C * 3, "resize row");
        if (!rc && !acc) rc = PL_ENOMEM;
        for (int j = 0; j < C && !rc; j++) {
            const float *wt = ay.w + (size_t)j * (size_t)ay.taps;
            const float *p0 = tmp + (size_t)(ay.first[j] - r0) * (size_t)C * 3;
            const size_t row = (size_t)C * 3;
            size_t k = 0;
            for (; k + 32 <= row; k += 32) {   // 32 sums held in registers across the taps
                v8f a0 = {0, 0, 0, 0, 0, 0, 0, 0}, a1 = a0, a2 = a0, a3 = a0, v0, v1, v2, v3;
                for (int t = 0; t < ay.count[j]; t++) {
                    const float wv = wt[t], *p = p0 + (size_t)t * row + k;
                    memcpy(&v0, p, sizeof v0);
                    memcpy(&v1, p + 8, sizeof v1);
                    memcpy(&v2, p + 16, sizeof v2);
                    memcpy(&v3, p + 24, sizeof v3);
                    a0 += wv * v0;
                    a1 += wv * v1;
                    a2 += wv * v2;
                    a3 += wv * v3;
                }
                memcpy(acc + k, &a0, sizeof a0);
                memcpy(acc + k + 8, &a1, sizeof a1);
                memcpy(acc + k + 16, &a2, sizeof a2);
                memcpy(acc + k + 24, &a3, sizeof a3);
            }
            for (; k < row; k++) {
                float a = 0;
                for (int t = 0; t < ay.count[j]; t++) a += wt[t] * p0[(size_t)t * row + k];
                acc[k] = a;
            }
            for (int c = 0; c < 3; c++) {
                uint8_t *o = out + ((size_t)c * (size_t)C + (size_t)j) * (size_t)C;
                for (int i = 0; i < C; i++) {
                    float v = nearbyintf(acc[(size_t)i * 3 + (size_t)c]);
                    o[i] = (uint8_t)PL_CLAMP(v, 0.0f, 255.0f);
                }
            }
        }
        free(acc);
    }
    free(tmp);
    axis_free(&ax);
    axis_free(&ay);
    return rc;
}

// ---------------------------------------------------------------------------- items

typedef struct {
    char name[NAME_W];     // entry base name ("ILSVRC2012_val_00000001.JPEG", "000000000139.jpg", "n01440764.tar")
    char entry[256];       // full entry name in the archive
    int64_t size;          // bytes (balance)
    int64_t idx;           // ImageNet: label or -1; COCO: image index in coco_set
    int present;           // found in the archive
    int dup;               // COCO: its file_name is another image's too (quarantined)
} vdt_item;

static int cmp_item(const void *a, const void *b) { return strcmp(((const vdt_item *)a)->name, ((const vdt_item *)b)->name); }
static int cmp_item_idx(const void *a, const void *b) {
    const vdt_item *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->idx > y->idx) - (x->idx < y->idx);
}

static const char *base_of(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int64_t find_item(const vdt_item *it, int64_t n, const char *name) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t m = (lo + hi) / 2;
        if (strcmp(it[m].name, name) < 0) lo = m + 1;
        else hi = m;
    }
    return lo < n && !strcmp(it[lo].name, name) ? lo : -1;
}

typedef struct {
    const pl_cfg *cfg;
    int S, C;
    double min_frac;
    quarantine *q;
    h5shard_writer *w;
    const coco_set *coco;
    uint8_t *sample;       // (1, 3, C, C)
    int64_t kept, skipped;
    double t_decode, t_proc;
} vdt_ctx;

// One decoded image -> one sample under `key`. Quarantines and returns 0 on bad input.
static int add_image(vdt_ctx *cx, int64_t key, const char *archive, const char *entry, const uint8_t *buf, size_t len, int label,
                     int64_t coco_idx) {
    uint8_t *rgb = NULL;
    int w = 0, h = 0;
    double t0 = pl_time();
    pl_quiet_begin();
    int rc = img_decode_rgb8(&rgb, &w, &h, buf, len, entry);
    pl_quiet_end();
    double t1 = pl_time();
    cx->t_decode += t1 - t0;
    if (rc) {
        quarantine_add(cx->q, archive, entry, pl_last_error(), 1);
        cx->skipped++;
        return 0;
    }
    double sx, sy;
    int x0, y0;
    rc = resize_crop(cx->sample, rgb, w, h, cx->S, cx->C, &sx, &sy, &x0, &y0);
    free(rgb);
    if (rc) return rc;
    char name[NAME_W] = {0};
    snprintf(name, sizeof name, "%s", base_of(entry));
    int32_t size[2] = {h, w};
    double affine[4] = {1.0 / sx, x0 / sx, 1.0 / sy, y0 / sy};   // orig = a * (stored) + b, continuous coordinates
    if (!cx->coco) {
        int32_t lab = label;
        const void *cv[] = {name, &lab, size, affine};
        rc = h5shard_add(cx->w, key, cx->sample, cv, 0, NULL);
    } else {
        const coco_set *s = cx->coco;
        const coco_image *im = &s->images[coco_idx];
        int64_t a0 = s->ann_off[coco_idx], a1 = s->ann_off[coco_idx + 1], m = 0;
        double *bx = pl_malloc(sizeof(double) * 5 * (size_t)PL_MAX(a1 - a0, (int64_t)1), "coco boxes");
        int32_t *ib = pl_malloc(sizeof(int32_t) * 3 * (size_t)PL_MAX(a1 - a0, (int64_t)1), "coco labels");
        int64_t *ids = pl_malloc(sizeof(int64_t) * (size_t)PL_MAX(a1 - a0, (int64_t)1), "coco ann ids");
        if (!bx || !ib || !ids) { free(bx); free(ib); free(ids); return PL_ENOMEM; }
        double *frac = bx + 4 * (a1 - a0);
        int32_t *lab = ib, *cat = ib + (a1 - a0), *crowd = ib + 2 * (a1 - a0);
        // annotation boxes: COCO [x, y, w, h] in the decoded image's pixels (if the JSON size
        // disagrees with the decoded size, scale by the decoded one), into the stored frame,
        // clipped by the crop; dropped when less than min_box_fraction of the area remains.
        double jx = im->width > 0 ? (double)w / im->width : 1, jy = im->height > 0 ? (double)h / im->height : 1;
        for (int64_t a = a0; a < a1; a++) {
            const coco_ann *an = &s->anns[a];
            double X1 = an->bbox[0] * jx * sx - x0, Y1 = an->bbox[1] * jy * sy - y0;
            double X2 = (an->bbox[0] + an->bbox[2]) * jx * sx - x0, Y2 = (an->bbox[1] + an->bbox[3]) * jy * sy - y0;
            double full = (X2 - X1) * (Y2 - Y1);
            double cx1 = PL_CLAMP(X1, 0.0, (double)cx->C), cy1 = PL_CLAMP(Y1, 0.0, (double)cx->C);
            double cx2 = PL_CLAMP(X2, 0.0, (double)cx->C), cy2 = PL_CLAMP(Y2, 0.0, (double)cx->C);
            double kept = (cx2 - cx1) * (cy2 - cy1);
            double f = full > 0 ? kept / full : 0;
            if (full <= 0 || kept <= 0 || f < cx->min_frac) continue;
            bx[4 * m] = cx1;
            bx[4 * m + 1] = cy1;
            bx[4 * m + 2] = cx2;
            bx[4 * m + 3] = cy2;
            frac[m] = f;
            lab[m] = an->label;
            cat[m] = an->category_id;
            crowd[m] = an->iscrowd;
            ids[m] = an->id;
            m++;
        }
        // compact the per-row arrays (they were laid out for a1 - a0 rows)
        memmove(bx + 4 * m, frac, sizeof(double) * (size_t)m);
        memmove(ib + m, cat, sizeof(int32_t) * (size_t)m);
        memmove(ib + 2 * m, crowd, sizeof(int32_t) * (size_t)m);
        int64_t image_id = im->id;
        const void *cv[] = {name, &image_id, size, affine};
        const void *rv[] = {bx, bx + 4 * m, ib, ib + m, ib + 2 * m, ids};
        rc = h5shard_add(cx->w, key, cx->sample, cv, m, rv);
        free(bx);
        free(ib);
        free(ids);
    }
    cx->t_proc += pl_time() - t1;
    if (!rc) cx->kept++;
    return rc;
}

// ---------------------------------------------------------------------------- archives

static int list_archive(vdt_item **items, int64_t *n, const char *path, quarantine *q, int note) {
    arc_reader *r = NULL;
    pl_quiet_begin();
    int rc = arc_open_file(&r, path);
    pl_quiet_end();
    if (rc) return rc;
    int64_t cap = 0;
    const char *name;
    int64_t size;
    for (;;) {
        pl_quiet_begin();
        rc = arc_next(r, &name, &size);
        pl_quiet_end();
        if (rc <= 0) break;
        if (*n == cap) {
            cap = cap ? 2 * cap : 1024;
            vdt_item *ni = pl_realloc(*items, sizeof(vdt_item) * (size_t)cap, "archive items");
            if (!ni) { arc_close(r); return PL_ENOMEM; }
            *items = ni;
        }
        vdt_item *it = &(*items)[*n];
        memset(it, 0, sizeof *it);
        snprintf(it->name, sizeof it->name, "%s", base_of(name));
        snprintf(it->entry, sizeof it->entry, "%s", name);
        it->size = size < 0 ? 0 : size;
        it->idx = -1;
        it->present = 1;
        (*n)++;
    }
    if (rc < 0) {
        if (note) {
            LOG_WARN("vdt: archive:%s damaged (quarantined; entries before the damage are used)", path);
            quarantine_add(q, path, *n ? (*items)[*n - 1].entry : "", pl_last_error(), 0);
        }
        rc = 0;
    }
    arc_close(r);
    return rc;
}

// Streams `path`, calling add_image for every entry whose base name is one of items[b0, b1).
// Entries inside a damaged tail never arrive; the caller quarantines what is left.
static int stream_items(vdt_ctx *cx, const char *path, vdt_item *items, int64_t b0, int64_t b1, uint8_t *got,
                        int64_t (*key_of)(const vdt_item *, int64_t), int (*label_of)(const vdt_ctx *, const vdt_item *)) {
    if (b0 >= b1) return 0;
    arc_reader *r = NULL;
    pl_quiet_begin();
    int rc = arc_open_file(&r, path);
    pl_quiet_end();
    if (rc) return 0;
    const char *name;
    int64_t size;
    int64_t todo = b1 - b0;
    while (todo > 0) {
        pl_quiet_begin();
        int nrc = arc_next(r, &name, &size);
        pl_quiet_end();
        if (nrc <= 0) break;
        int64_t k = find_item(items + b0, b1 - b0, base_of(name));
        if (k < 0 || got[k]) continue;
        got[k] = 1;
        todo--;
        uint8_t *buf = NULL;
        size_t len = 0;
        pl_quiet_begin();
        int erc = arc_read_entry(r, &buf, &len);
        pl_quiet_end();
        if (erc) {
            quarantine_add(cx->q, path, name, pl_last_error(), 1);
            cx->skipped++;
            free(buf);
            continue;
        }
        const vdt_item *it = &items[b0 + k];
        rc = add_image(cx, key_of(it, b0 + k), path, name, buf, len, label_of(cx, it), it->idx);
        free(buf);
        if (rc) break;
    }
    arc_close(r);
    return rc;
}

static int64_t key_plain(const vdt_item *it, int64_t i) {
    (void)it;
    return i;
}
static int label_of_idx(const vdt_ctx *cx, const vdt_item *it) {
    (void)cx;
    return (int)it->idx;
}

// ---------------------------------------------------------------------------- the stage


// One split of one dataset: returns 0, or a pl_err (same on every rank for collective failures).
static int run_split(const pl_cfg *cfg, MPI_Comm comm, const char *dataset, const char *split, const char *out_path, const char *hash,
                     quarantine *q, int64_t *n_cand, int64_t *n_skipped_local, double *t_dec, double *t_proc, int64_t *n_kept) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const char *root = cfg_str(cfg, "input.root");
    int coco = !strcmp(dataset, "coco"), rc = 0;
    vdt_ctx cx = {.cfg = cfg, .S = (int)cfg_int(cfg, "vdt.short_side"), .C = (int)cfg_int(cfg, "vdt.crop"),
                  .min_frac = cfg_float(cfg, "vdt.min_box_fraction"), .q = q};
    vdt_item *items = NULL, *tars = NULL;
    int64_t n = 0, ntars = 0;
    inet_synsets syn = {0};
    inet_val val = {0};
    coco_set cs = {0};
    char path[4096] = "", p2[4096];
    strbuf inputs = {0}, meta = {0};
    int imagenet_train = !coco && !strcmp(split, "train");
    uint8_t *got = NULL;
    // ImageNet train: inner tars that never arrived or broke part-way, and the images of the
    // good ones, to count what a damaged archive lost (its image count is unknown).
    int64_t lost_units = 0, good_tars = 0, good_images = 0;
    // --- item lists (every rank builds the same lists itself)
    if (!coco) {
        if ((rc = pl_path_join(p2, sizeof p2, root, "LOC_synset_mapping.txt")) || (rc = inet_synsets_read(&syn, p2))) goto collective;
        sb_printf(&inputs, "%s\n", p2);
        for (int i = 0; i < syn.n; i++) sb_printf(&meta, "%s %s\n", syn.syn[i].wnid, syn.syn[i].desc);
        if (imagenet_train) {
            if ((rc = pl_path_join(path, sizeof path, root, "ILSVRC2012_img_train.tar"))) goto collective;
            if ((rc = list_archive(&tars, &ntars, path, q, rank == 0))) goto collective;
            qsort(tars, (size_t)ntars, sizeof *tars, cmp_item);
            for (int64_t i = 0; i < ntars; i++) {
                char wnid[16];
                pl_quiet_begin();
                int ok = inet_synset_from_tar_name(wnid, tars[i].name) == 0;
                pl_quiet_end();
                tars[i].idx = ok ? inet_label_of(&syn, wnid) : -1;
                if (tars[i].idx < 0 && rank == 0) quarantine_add(q, path, tars[i].entry, "inner tar is not a synset of LOC_synset_mapping.txt", 0);
            }
        } else {
            if ((rc = pl_path_join(p2, sizeof p2, root, "LOC_val_solution.csv")) || (rc = inet_val_read(&val, &syn, p2))) goto collective;
            sb_printf(&inputs, "%s\n", p2);
            if (rank == 0)
                for (int64_t i = 0; i < val.nbad; i++) {
                    char e[32];
                    snprintf(e, sizeof e, "line %d", val.bad[i].line);
                    quarantine_add(q, "LOC_val_solution.csv", e, val.bad[i].msg, 1);
                }
            *n_cand += val.nbad;
            if (rank == 0) cx.skipped += val.nbad;
            if ((rc = pl_path_join(path, sizeof path, root, "ILSVRC2012_img_val.tar"))) goto collective;
            if ((rc = list_archive(&items, &n, path, q, rank == 0))) goto collective;
            qsort(items, (size_t)n, sizeof *items, cmp_item);
            for (int64_t i = 0; i < n; i++) {
                char id[48];
                items[i].idx = inet_image_id(id, sizeof id, items[i].name) == 0 ? inet_val_label(&val, id) : -1;
            }
        }
    } else {
        if ((rc = coco_load(&cs, root, split))) goto collective;
        sb_printf(&inputs, "%s (instances_%s2017.json)\n", root, split);
        if (rank == 0)
            for (int64_t i = 0; i < cs.nbad; i++) quarantine_add(q, "instances JSON", split, cs.bad[i].msg, 0);
        for (int i = 0; i < cs.ncats; i++) sb_printf(&meta, "%d %d %s\n", i, cs.cats[i].id, cs.cats[i].name);
        char zn[64];
        snprintf(zn, sizeof zn, "%s2017.zip", split);
        if ((rc = pl_path_join(path, sizeof path, root, zn))) goto collective;
        vdt_item *ent = NULL;
        int64_t nent = 0;
        if ((rc = list_archive(&ent, &nent, path, q, rank == 0))) goto collective;
        qsort(ent, (size_t)nent, sizeof *ent, cmp_item);
        // items = the JSON's images (sorted by id, the coco_set order), sized from the zip
        items = pl_calloc((size_t)PL_MAX(cs.nimages, (int64_t)1), sizeof *items, "coco items");
        if (!items) { free(ent); rc = PL_ENOMEM; goto collective; }
        for (int64_t i = 0; i < cs.nimages; i++) {
            vdt_item *it = &items[n++];
            snprintf(it->name, sizeof it->name, "%s", cs.images[i].file_name);
            it->idx = i;
            int64_t e = find_item(ent, nent, it->name);
            it->present = e >= 0;
            it->size = e >= 0 ? ent[e].size : 0;
            snprintf(it->entry, sizeof it->entry, "%s", e >= 0 ? ent[e].entry : it->name);
        }
        free(ent);
        // the stream lookup needs the items sorted by name. COCO names are {id:012d}.jpg, so id
        // order and name order agree and nothing moves; a file_name off that pattern (issue 16:
        // one wrong name used to fail the whole stage) re-sorts the items by name (ties by image
        // index), and an image whose file is not in the archive is quarantined below.
        int sorted = 1;
        for (int64_t i = 1; i < n && sorted; i++) sorted = strcmp(items[i - 1].name, items[i].name) < 0;
        if (!sorted) {
            LOG0("vdt: WARN instances_%s2017.json: image file names do not follow the image ids; sorting by name", split);
            qsort(items, (size_t)n, sizeof *items, cmp_item_idx);
            for (int64_t i = 1; i < n; i++)
                if (!strcmp(items[i - 1].name, items[i].name) && items[i].present) {
                    if (rank == 0) {
                        char why[160];
                        snprintf(why, sizeof why, "file_name '%.64s' is also the file of another image (image index %lld)",
                                 items[i].name, (long long)items[i - 1].idx);
                        quarantine_add(q, path, items[i].entry, why, 1);
                    }
                    items[i].present = 0;
                    items[i].dup = 1;
                }
        }
    }
    {
        struct stat st;
        if (path[0]) sb_printf(&inputs, "%s %lld\n", path, stat(path, &st) == 0 ? (long long)st.st_size : -1LL);
    }

    // --- writer
    {
        static const shard_col inet_cols[] = {{"file_name", SHARD_STR, NAME_W}, {"label", SHARD_I32, 1}, {"image_size", SHARD_I32, 2},
                                              {"affine", SHARD_F64, 4}};
        static const shard_col coco_cols[] = {{"file_name", SHARD_STR, NAME_W}, {"image_id", SHARD_I64, 1}, {"image_size", SHARD_I32, 2},
                                              {"affine", SHARD_F64, 4}};
        static const shard_col coco_rows[] = {{"boxes", SHARD_F64, 4}, {"box_fraction", SHARD_F64, 1}, {"label", SHARD_I32, 1},
                                              {"category_id", SHARD_I32, 1}, {"iscrowd", SHARD_I32, 1}, {"ann_id", SHARD_I64, 1}};
        shard_layout lay = {.data_name = "images", .data_type = SHARD_U8, .ndims = 4, .dims = {1, 3, cx.C, cx.C},
                            .cols = coco ? coco_cols : inet_cols, .ncols = 4, .rows = coco ? coco_rows : NULL, .nrows = coco ? 6 : 0,
                            .rows_offsets = coco ? "box_offsets" : NULL};
        rc = h5shard_writer_create(&cx.w, out_path, &lay, rank);
        if (rc) goto collective;
        cx.sample = pl_malloc((size_t)3 * (size_t)cx.C * (size_t)cx.C, "vdt sample");
        if (!cx.sample) { rc = PL_ENOMEM; goto collective; }
        cx.coco = coco ? &cs : NULL;
    }

    // --- my part of the work, then whatever never arrived is quarantined
    if (imagenet_train) {
        int64_t *bytes = pl_malloc(sizeof(int64_t) * (size_t)PL_MAX(ntars, (int64_t)1), "tar sizes");
        for (int64_t i = 0; i < ntars; i++) bytes[i] = tars[i].size;
        int64_t b0 = 0, b1 = 0;
        rc = worksplit_range(&b0, &b1, bytes, ntars, rank, size);
        free(bytes);
        if (rc) goto collective;
        arc_reader *outer = NULL;
        pl_quiet_begin();
        int orc = b0 < b1 ? arc_open_file(&outer, path) : 1;
        pl_quiet_end();
        const char *name;
        int64_t esz;
        int64_t todo = b1 - b0;
        got = pl_calloc((size_t)PL_MAX(ntars, (int64_t)1), 1, "tars seen");
        while (orc == 0 && todo > 0 && !rc) {
            pl_quiet_begin();
            int nrc = arc_next(outer, &name, &esz);
            pl_quiet_end();
            if (nrc <= 0) break;
            int64_t k = find_item(tars + b0, b1 - b0, base_of(name));
            if (k < 0 || got[b0 + k]) continue;
            got[b0 + k] = 1;
            todo--;
            const vdt_item *t = &tars[b0 + k];
            if (t->idx < 0) continue;   // quarantined above
            uint8_t *tb = NULL;
            size_t tl = 0;
            pl_quiet_begin();
            int erc = arc_read_entry(outer, &tb, &tl);
            pl_quiet_end();
            arc_reader *inner = NULL;
            if (!erc) {
                pl_quiet_begin();
                erc = arc_open_memory(&inner, tb, tl, t->entry);
                pl_quiet_end();
            }
            if (erc) {
                quarantine_add(q, path, t->entry, pl_last_error(), 0);
                lost_units++;
                free(tb);
                continue;
            }
            int inner_broken = 0;
            // the inner tar's images, sorted by name: key = (tar index << 32) + rank in the tar
            vdt_item *im = NULL;
            int64_t nim = 0, cap = 0;
            uint8_t **bufs = NULL;
            size_t *lens = NULL;
            const char *in;
            int64_t isz;
            for (;;) {
                pl_quiet_begin();
                int irc = arc_next(inner, &in, &isz);
                pl_quiet_end();
                if (irc < 0) {
                    quarantine_add(q, t->entry, nim ? im[nim - 1].entry : "", pl_last_error(), 0);
                    inner_broken = 1;
                    break;
                }
                if (irc == 0) break;
                if (nim == cap) {
                    cap = cap ? 2 * cap : 256;
                    im = pl_realloc(im, sizeof *im * (size_t)cap, "inner items");
                    bufs = pl_realloc(bufs, sizeof *bufs * (size_t)cap, "inner buffers");
                    lens = pl_realloc(lens, sizeof *lens * (size_t)cap, "inner lengths");
                    if (!im || !bufs || !lens) { rc = PL_ENOMEM; break; }
                }
                memset(&im[nim], 0, sizeof im[nim]);
                snprintf(im[nim].name, sizeof im[nim].name, "%s", base_of(in));
                snprintf(im[nim].entry, sizeof im[nim].entry, "%s", in);
                im[nim].idx = nim;   // position of its buffer
                bufs[nim] = NULL;
                lens[nim] = 0;
                pl_quiet_begin();
                int rrc = arc_read_entry(inner, &bufs[nim], &lens[nim]);
                pl_quiet_end();
                if (rrc) {
                    quarantine_add(q, t->entry, in, pl_last_error(), 1);
                    cx.skipped++;
                    (*n_cand)++;
                    free(bufs[nim]);
                    continue;
                }
                nim++;
            }
            if (inner_broken) lost_units++;   // its remaining images: counted as one more tar's worth
            else {
                good_tars++;
                good_images += nim;
            }
            if (!rc && nim > 1) qsort(im, (size_t)nim, sizeof *im, cmp_item);
            for (int64_t i = 0; i < nim && !rc; i++) {
                char wn[16];
                pl_quiet_begin();
                int ok = inet_synset_from_image_name(wn, im[i].name) == 0 && inet_label_of(&syn, wn) == t->idx;
                pl_quiet_end();
                (*n_cand)++;
                if (!ok) {
                    quarantine_add(q, t->entry, im[i].entry, "image name does not carry the synset of its tar", 1);
                    cx.skipped++;
                    continue;
                }
                rc = add_image(&cx, ((b0 + k) << 32) + i, t->entry, im[i].entry, bufs[im[i].idx], lens[im[i].idx], (int)t->idx, -1);
            }
            for (int64_t i = 0; i < nim; i++) free(bufs[im[i].idx]);
            free(bufs);
            free(lens);
            free(im);
            arc_close(inner);
            free(tb);
        }
        if (orc == 0) arc_close(outer);
        for (int64_t i = b0; i < b1 && !rc; i++)
            if (!got[i] && tars[i].idx >= 0) {
                quarantine_add(q, path, tars[i].entry, "inner tar lost in a damaged archive", 0);
                lost_units++;
            }
        // synsets of LOC_synset_mapping.txt with no inner tar at all (cut off with the archive's
        // tail, or never there): rank 0 counts them once, one inner tar's worth each
        if (rank == 0) {
            uint8_t *has = pl_calloc((size_t)PL_MAX(syn.n, 1), 1, "synsets present");
            if (!has) rc = PL_ENOMEM;
            for (int64_t i = 0; has && i < ntars; i++)
                if (tars[i].idx >= 0 && tars[i].idx < syn.n) has[tars[i].idx] = 1;
            for (int i = 0; has && i < syn.n; i++)
                if (!has[i]) {
                    char e[64];
                    snprintf(e, sizeof e, "%s.tar", syn.syn[i].wnid);
                    quarantine_add(q, path, e, "synset of LOC_synset_mapping.txt has no inner tar in the archive", 0);
                    lost_units++;
                }
            free(has);
        }
    } else {
        int64_t *bytes = pl_malloc(sizeof(int64_t) * (size_t)PL_MAX(n, (int64_t)1), "item sizes");
        for (int64_t i = 0; i < n; i++) bytes[i] = items[i].size;
        int64_t b0 = 0, b1 = 0;
        rc = worksplit_range(&b0, &b1, bytes, n, rank, size);
        free(bytes);
        if (rc) goto collective;
        *n_cand += n;
        got = pl_calloc((size_t)PL_MAX(n, (int64_t)1), 1, "items seen");
        // items without a label / missing from the archive are skipped before streaming
        for (int64_t i = b0; i < b1; i++) {
            if (items[i].dup) {   // quarantined (once, by rank 0) where it was found
                cx.skipped++;
                got[i - b0] = 1;
            } else if (!items[i].present) {
                quarantine_add(q, path, items[i].entry, "image listed in the annotations but missing from the archive", 1);
                cx.skipped++;
                got[i - b0] = 1;
            } else if (!coco && items[i].idx < 0) {
                quarantine_add(q, path, items[i].entry, "image has no label in LOC_val_solution.csv", 1);
                cx.skipped++;
                got[i - b0] = 1;
            }
        }
        rc = stream_items(&cx, path, items, b0, b1, got, key_plain, label_of_idx);
        for (int64_t i = b0; i < b1 && !rc; i++)
            if (!got[i - b0]) {
                quarantine_add(q, path, items[i].entry, "entry lost in a damaged archive", 1);
                cx.skipped++;
            }
    }
collective:;
    if (rc) LOG_ERROR("vdt: dataset:%s split:%s rank %d: %s", dataset, split, rank, pl_last_error());
    int lrc = rc, grc = 0;
    MPI_Allreduce(&lrc, &grc, 1, MPI_INT, MPI_MIN, comm);
    if (imagenet_train) {
        // Images lost with damaged or missing inner tars: their count is unknown; each is
        // estimated at the mean of the inner tars read whole (at least 1), and counted as
        // skipped candidates so that run.max_bad_fraction judges them (issue 16).
        int64_t v[3] = {lost_units, good_tars, good_images};
        MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_INT64_T, MPI_SUM, comm);
        if (v[0] > 0) {
            int64_t per = v[1] > 0 ? PL_MAX((int64_t)1, (v[2] + v[1] / 2) / v[1]) : 1, est = v[0] * per;
            LOG0("vdt: dataset:%s split:%s lost_inner_tars:%lld lost_images_estimated:%lld (%lld per inner tar read whole)",
                 dataset, split, (long long)v[0], (long long)est, (long long)per);
            if (rank == 0) {
                *n_cand += est;
                cx.skipped += est;
            }
        }
    }
    if (!cx.w) {   // could not even create the writer here: take part in the finish anyway
        shard_layout dummy = {.data_name = "images", .data_type = SHARD_U8, .ndims = 1, .dims = {1}};
        h5shard_writer_create(&cx.w, out_path, &dummy, rank);
    }
    if (cx.w) {
        int64_t s = cx.S, c = cx.C;
        double mf = cx.min_frac;
        h5shard_set_attr_str(cx.w, "stage", "vdt");
        h5shard_set_attr_str(cx.w, "dataset", dataset);
        h5shard_set_attr_str(cx.w, "split", split);
        h5shard_set_attr_str(cx.w, "config", cfg_text(cfg));
        h5shard_set_attr_str(cx.w, "config_hash", hash);
        h5shard_set_attr_str(cx.w, "inputs", inputs.p ? inputs.p : "");
        h5shard_set_attr_str(cx.w, "mp3d_version", MP3D_VERSION);
        h5shard_set_attr_str(cx.w, coco ? "categories" : "synsets", meta.p ? meta.p : "");
        h5shard_set_attr_str(cx.w, "layout", coco ? "images (N, 1, 3, S, S) uint8, depth = R, G, B; rows of sample i are "
                                                    "[box_offsets[i], box_offsets[i+1]); boxes x1, y1, x2, y2 in the stored frame "
                                                    "(continuous pixels), clipped by the crop, kept when box_fraction >= "
                                                    "vdt.min_box_fraction; iscrowd = 1 rows are ignore regions; label = contiguous "
                                                    "index of `categories` (label category_id name per line); affine (ax, bx, ay, by): "
                                                    "orig = a * stored + b"
                                                  : "images (N, 1, 3, S, S) uint8, depth = R, G, B; label = line of `synsets` "
                                                    "(LOC_synset_mapping.txt order); affine (ax, bx, ay, by): orig = a * stored + b");
        h5shard_set_attr_i64(cx.w, "short_side", &s, 1);
        h5shard_set_attr_i64(cx.w, "crop", &c, 1);
        h5shard_set_attr_f64(cx.w, "min_box_fraction", &mf, 1);
    }
    *n_skipped_local += cx.skipped;
    *t_dec += cx.t_decode;
    *t_proc += cx.t_proc;
    *n_kept += cx.kept;
    rc = grc;
    free(got);
    free(items);
    free(tars);
    inet_synsets_free(&syn);
    inet_val_free(&val);
    coco_free(&cs);
    free(cx.sample);
    free(inputs.p);
    free(meta.p);
    // finish now: the bad fraction is judged per split below (needs the global quarantine count)
    int64_t cand_all = 0, skip_all = 0, cand_l = *n_cand, skip_l = cx.skipped;
    MPI_Allreduce(&cand_l, &cand_all, 1, MPI_INT64_T, MPI_SUM, comm);
    MPI_Allreduce(&skip_l, &skip_all, 1, MPI_INT64_T, MPI_SUM, comm);
    if (!imagenet_train) cand_all = cand_l;   // val/COCO candidates are counted identically on every rank
    double frac = cand_all > 0 ? (double)skip_all / (double)cand_all : 0;
    double max_bad = cfg_float(cfg, "run.max_bad_fraction");
    int ok = grc == 0 && frac <= max_bad;
    if (grc == 0 && frac > max_bad)
        LOG0("vdt: dataset:%s split:%s skipped:%lld of %lld (%.4f) exceeds run.max_bad_fraction = %g: no shard written", dataset, split,
             (long long)skip_all, (long long)cand_all, frac, max_bad);
    h5shard_stats st = {0};
    int frc = cx.w ? h5shard_finish(cx.w, comm, ok, &st) : PL_ENOMEM;
    if (frc == 0)
        LOG0("vdt: dataset:%s split:%s samples:%lld boxes:%lld skipped:%lld output:%s collective:%d write_s:%.2f", dataset, split,
             (long long)st.n_total, (long long)st.rows_total, (long long)skip_all, out_path, st.all_collective, st.write_seconds);
    if (grc) return grc;
    if (!ok) return PL_ERANGE;
    return frc;
}

int stage_vdt_run(const pl_cfg *cfg, MPI_Comm comm) {
    int rank;
    MPI_Comm_rank(comm, &rank);
    if (cfg_require(cfg, "input.root") || cfg_require(cfg, "output.dir")) return MP3D_EXIT_USAGE;
    pl_malloc_reuse(64u << 20);   // per-image entry, pixel and resize buffers: as in preprocess
    const char *outdir = cfg_str(cfg, "output.dir"), *dataset = cfg_str(cfg, "vdt.dataset");
    img_set_max_pixels((int64_t)(cfg_float(cfg, "vdt.max_megapixels") * 1e6));
    if (cfg_int(cfg, "vdt.crop") > cfg_int(cfg, "vdt.short_side")) {
        LOG0_ERROR("%s: vdt.crop = %lld is larger than vdt.short_side = %lld (the crop must fit the resized short side)",
             cfg_path(cfg), (long long)cfg_int(cfg, "vdt.crop"), (long long)cfg_int(cfg, "vdt.short_side"));
        return MP3D_EXIT_USAGE;
    }
    char splits[128];
    snprintf(splits, sizeof splits, "%s", cfg_str(cfg, "vdt.splits"));
    for (char *tok = strtok(splits, ", "); tok; tok = strtok(NULL, ", "))
        if (strcmp(tok, "train") && strcmp(tok, "val")) {
            LOG0_ERROR("%s: vdt.splits: '%s' is not train or val", cfg_path(cfg), tok);
            return MP3D_EXIT_USAGE;
        }
    int rc = 0;
    if (rank == 0) rc = pl_mkdir_p(outdir);
    MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
    if (rc) return MP3D_EXIT_FAIL;
    double t0 = pl_time();
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)cfg_hash(cfg, STAGE_CONTENT_KEYS_VDT));
    char qtag[32];
    snprintf(qtag, sizeof qtag, "vdt-%s", dataset);   // so an ImageNet and a COCO run can share output.dir
    quarantine *q = quarantine_create(qtag);
    if (!q) return MP3D_EXIT_FAIL;
    int exit_code = MP3D_EXIT_OK;
    int64_t kept = 0, skipped = 0;
    double t_dec = 0, t_proc = 0;
    int ran = 0;
    snprintf(splits, sizeof splits, "%s", cfg_str(cfg, "vdt.splits"));
    char *save = NULL;
    for (char *tok = strtok_r(splits, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        char nm[64], path[4096];
        snprintf(nm, sizeof nm, "%s_%s.h5", dataset, tok);
        if (pl_path_join(path, sizeof path, outdir, nm)) { exit_code = MP3D_EXIT_USAGE; break; }
        int cur = rank == 0 && !cfg_bool(cfg, "run.force") && h5shard_hash_matches(path, hash);
        MPI_Bcast(&cur, 1, MPI_INT, 0, comm);
        if (cur) {
            LOG0("vdt: dataset:%s split:%s output:%s status:complete (skipped; --force re-runs)", dataset, tok, path);
            continue;
        }
        int64_t cand = 0;
        ran = 1;
        int src = run_split(cfg, comm, dataset, tok, path, hash, q, &cand, &skipped, &t_dec, &t_proc, &kept);
        if (src) exit_code = MP3D_EXIT_FAIL;
    }
    int64_t total_q = 0, skipped_q = 0, kept_all = 0;
    if (!ran) {   // every output complete: keep the quarantine rows of the run that made them
        quarantine_destroy(q);
        return exit_code;
    }
    if (quarantine_write(q, outdir, comm, &total_q, &skipped_q)) exit_code = MP3D_EXIT_FAIL;
    MPI_Allreduce(&kept, &kept_all, 1, MPI_INT64_T, MPI_SUM, comm);
    double dec = 0, proc = 0;
    MPI_Allreduce(&t_dec, &dec, 1, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(&t_proc, &proc, 1, MPI_DOUBLE, MPI_SUM, comm);
    double secs = pl_time() - t0;
    LOG0("vdt: dataset:%s images:%lld skipped:%lld quarantined:%lld seconds:%.2f images_per_s:%.1f decode_cpu_s:%.2f resize_cpu_s:%.2f",
         dataset, (long long)kept_all, (long long)skipped_q, (long long)total_q, secs, secs > 0 ? kept_all / secs : 0.0, dec, proc);
    quarantine_destroy(q);
    return exit_code;
}
