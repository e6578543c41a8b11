// task_detect_coco: detection pre-training through the variable dimension transform (VDT) on
// `mp3d vdt` COCO shards (coco_train.h5, coco_val.h5): each RGB image is a (1, 3, S, S)
// pseudo-volume whose 3 slices are its colour channels; the detector of the lesion task (3D
// backbone, z never down-sampled, a GTM collapsing the 3 slices, FPN, RPN, box head) with a
// multi-class head over the shard's categories (background excluded). Training: a size drawn
// from det.train_sizes (the longer side; the stored crops are square, so also the shorter),
// horizontal flip, a random order of the three slices (det.slice_shuffle, as VDT
// classification pre-training), crowd boxes passed as ignore regions (det.ignore_iof).
// Inputs: u8 -> (v - 123.675) / 58.395 on every slice, the normalisation the lesion detector
// uses after its HU window, so a transferred backbone sees the same input statistics.
// Validation: COCO-style AP (0.5:0.95, 0.5, 0.75, by size) on the val split in the stored
// frame (stages/cocoeval.h), into the metrics and OUTPUT/coco_eval.json + coco_eval.md.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "io/h5shard.h"
#include "nn/pl.h"
#include "stages/train/augment.h"
#include "stages/score/cocoeval.h"
#include "stages/train/det_common.h"
#include "stages/train/trainer.h"

static const uint64_t k_sampling_tag = 0x73616d706c65ULL;   // "sample": anchor/RoI sampling stream
static const float k_mean = 123.675f, k_std = 58.395f;
static const char *const k_data = "images";

// One split of a vdt COCO shard: images (N, 1, 3, S, S) u8 and the box table.
typedef struct {
    h5shard_reader *r;
    char path[4096];
    int64_t n;
    int D, S;
    int64_t nrows;
    int64_t *off;         // (n + 1) rows of image i: [off[i], off[i+1])
    double *boxes;        // (nrows, 4) x1 y1 x2 y2, continuous pixels of the stored crop
    int32_t *label;       // (nrows) contiguous category index
    int32_t *crowd;       // (nrows)
    int64_t *image_id;    // (n)
} coco_split;

typedef struct {
    detector *det;
    coco_split tr, va;
    int has_val;
    int ncls;
    int32_t *cat_ids;     // (ncls) COCO category_id of each label
    char (*cat_names)[64];
    det_train_opts o;     // det.train_sizes, det.test_size, det.flip, run.seed, images per rank
    int shuffle;
    int maxp;
    float *x, *tmp;
    uint8_t *raw;
    float *gtbox, *ignbox;
    int32_t *gtlab;
    det_gt *gt;
    char out_dir[4096];
} coco_ctx;


static void coco_split_close(coco_split *s) {
    h5shard_close(s->r);
    free(s->off);
    free(s->boxes);
    free(s->label);
    free(s->crowd);
    free(s->image_id);
    memset(s, 0, sizeof *s);
}

static int coco_split_open(coco_split *s, const char *root, const char *split) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s/coco_%s.h5", root, split);
    int rc = h5shard_open(&s->r, s->path);
    if (rc) return rc;
    int64_t dims[6], rd[2];
    int nd = h5shard_shape(s->r, k_data, dims, 6);
    // the extents come from the file: bounded before they size allocations (as lesion_shard_open)
    if (nd != 5 || dims[1] != 1 || dims[3] != dims[4] || dims[0] < 0 || dims[0] > ((int64_t)1 << 26) || dims[2] < 1 ||
        dims[2] > 64 || dims[3] < 1 || dims[3] > 8192) {
        rc = pl_fail(PL_EFORMAT, "%s: '%s' must be (N, 1, 3, S, S) (an mp3d vdt COCO shard), has %d dims", s->path, k_data, nd);
        goto fail;
    }
    s->n = dims[0];
    s->D = (int)dims[2];
    s->S = (int)dims[3];
    if (h5shard_shape(s->r, "boxes", rd, 2) < 1 || !h5shard_exists(s->r, "box_offsets")) {
        rc = pl_fail(PL_EFORMAT, "%s: no 'boxes' / 'box_offsets' table (an ImageNet shard given as COCO?)", s->path);
        goto fail;
    }
    if (rd[0] < 0 || rd[0] > ((int64_t)1 << 28)) {
        rc = pl_fail(PL_EFORMAT, "%s: the boxes table has %lld rows", s->path, (long long)rd[0]);
        goto fail;
    }
    s->nrows = rd[0];
    const size_t n1 = (size_t)s->n + 1, m1 = (size_t)s->nrows + 1;
    s->off = pl_malloc(sizeof(int64_t) * n1, "box offsets");
    s->boxes = pl_malloc(sizeof(double) * 4 * m1, "boxes");
    s->label = pl_malloc(sizeof(int32_t) * m1, "labels");
    s->crowd = pl_malloc(sizeof(int32_t) * m1, "crowd flags");
    s->image_id = pl_malloc(sizeof(int64_t) * n1, "image ids");
    if (!s->off || !s->boxes || !s->label || !s->crowd || !s->image_id) {
        rc = PL_ENOMEM;
        goto fail;
    }
    // row widths checked against the buffers (a wider table in the file would overrun them)
    if ((rc = h5shard_read_rows(s->r, "box_offsets", SHARD_I64, s->off, 0, s->n + 1, 1))) goto fail;
    if (s->n > 0 && (rc = h5shard_read_rows(s->r, "image_id", SHARD_I64, s->image_id, 0, s->n, 1))) goto fail;
    if (s->nrows > 0) {
        if ((rc = h5shard_read_rows(s->r, "boxes", SHARD_F64, s->boxes, 0, s->nrows, 4))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "label", SHARD_I32, s->label, 0, s->nrows, 1))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "iscrowd", SHARD_I32, s->crowd, 0, s->nrows, 1))) goto fail;
    }
    if (s->off[0] != 0 || s->off[s->n] != s->nrows) {
        rc = pl_fail(PL_EFORMAT, "%s: box_offsets run 0..%lld, the boxes table has %lld rows", s->path,
                     (long long)s->off[s->n], (long long)s->nrows);
        goto fail;
    }
    for (int64_t i = 0; i < s->n; i++)
        if (s->off[i + 1] < s->off[i]) {
            rc = pl_fail(PL_EFORMAT, "%s: box_offsets[%lld] = %lld < box_offsets[%lld] = %lld (must not decrease)", s->path,
                         (long long)(i + 1), (long long)s->off[i + 1], (long long)i, (long long)s->off[i]);
            goto fail;
        }
    return 0;
fail:
    coco_split_close(s);
    return rc;
}

// The `categories` attribute: one "label category_id name" line per category, labels 0..n-1.
static int read_categories(coco_ctx *c, const coco_split *s) {
    char *txt = NULL;
    int rc = h5shard_get_attr_str(s->r, "categories", &txt);
    if (rc) return rc;
    int n = 0;
    for (const char *p = txt; *p; p++) n += *p == '\n';
    if (txt[0] && txt[strlen(txt) - 1] != '\n') n++;
    c->cat_ids = pl_calloc((size_t)(n + 1), sizeof(int32_t), "category ids");
    c->cat_names = pl_calloc((size_t)(n + 1), 64, "category names");
    if (!c->cat_ids || !c->cat_names) {
        free(txt);
        return PL_ENOMEM;
    }
    int k = 0;
    for (char *line = strtok(txt, "\n"); line && !rc; line = strtok(NULL, "\n")) {
        int lab = -1, id = 0, used = 0;
        if (sscanf(line, "%d %d %n", &lab, &id, &used) < 2 || lab != k)
            rc = pl_fail(PL_EFORMAT, "%s: categories line %d '%s': expected 'label category_id name' with label %d", s->path,
                         k + 1, line, k);
        else {
            c->cat_ids[k] = id;
            snprintf(c->cat_names[k], 64, "%s", line + used);
            k++;
        }
    }
    free(txt);
    if (!rc && k < 1) rc = pl_fail(PL_EFORMAT, "%s: no categories in the 'categories' attribute", s->path);
    c->ncls = k;
    return rc;
}

// x (3, ph, pw) of image i: resized to g (continuous frame scaled by oh/S), flipped, slices in
// `order`, normalised, zero padding.
static int load_image(float *x, int ph, int pw, const coco_split *s, int64_t i, det_geom g, const int *order, uint8_t *raw,
                      float *tmp) {
    int rc = h5shard_read(s->r, k_data, SHARD_U8, raw, i, 1);
    if (rc) return rc;
    aug_box b = {0, 0, s->S, s->S};
    aug_crop_resize(tmp, g.oh, g.ow, raw, s->D, s->S, s->S, b, g.flip, order, k_mean, k_std);
    memset(x, 0, sizeof(float) * (size_t)s->D * (size_t)ph * (size_t)pw);
    for (int z = 0; z < s->D; z++)
        for (int y = 0; y < g.oh; y++)
            memcpy(x + ((size_t)z * ph + y) * pw, tmp + ((size_t)z * g.oh + y) * g.ow, sizeof(float) * (size_t)g.ow);
    return 0;
}

// Continuous stored-frame box -> input pixels (scale, then x' = ow - x under the flip).
static void box_to_input(float *o, const double *b, det_geom g) {
    const double kx = (double)g.ow / g.W, ky = (double)g.oh / g.H;
    double x1 = b[0] * kx, x2 = b[2] * kx;
    if (g.flip) {
        double t = x1;
        x1 = g.ow - x2;
        x2 = g.ow - t;
    }
    o[0] = (float)x1;
    o[1] = (float)(b[1] * ky);
    o[2] = (float)x2;
    o[3] = (float)(b[3] * ky);
}

static int coco_step(train_task *t, const int64_t *idx, int n, int64_t epoch, double loss_scale, gradsync *gs,
                     double *loss_sum, double *data_s) {
    coco_ctx *c = t->ctx;
    *loss_sum = 0;
    *data_s = 0;
    gradsync_begin(gs);
    if (n == 0) {
        memset(t->params->grads, 0, t->params->nparams * sizeof(float));
        gradsync_ready(gs, 0, t->params->nparams);
        return gradsync_finish(gs);
    }
    double t0 = pl_time();
    const coco_split *s = &c->tr;
    det_geom geo[64];
    int order[64][8];
    PL_ASSERT(n <= 64 && s->D <= 8);
    int ph = 0, pw = 0;
    for (int i = 0; i < n; i++) {
        pl_rng r;
        pl_rng_seed(&r, aug_sample_seed(c->o.seed, epoch, idx[i]));
        int size = c->o.sizes[pl_rng_int(&r, 0, c->o.nsizes - 1)];
        int flip = c->o.flip && pl_rng_uniform(&r) < 0.5;
        geo[i] = det_geom_make(s->S, s->S, size, flip, 0);
        int64_t o[8];
        for (int k = 0; k < s->D; k++) o[k] = k;
        if (c->shuffle) pl_rng_shuffle_i64(&r, o, s->D);
        for (int k = 0; k < s->D; k++) order[i][k] = (int)o[k];
        ph = PL_MAX(ph, det_pad_up(geo[i].oh));
        pw = PL_MAX(pw, det_pad_up(geo[i].ow));
    }
    const size_t per = (size_t)s->D * (size_t)ph * (size_t)pw;
    int64_t b = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if ((rc = load_image(c->x + per * i, ph, pw, s, idx[i], geo[i], order[i], c->raw, c->tmp))) break;
        for (int64_t j = s->off[idx[i]]; j < s->off[idx[i] + 1] && !rc; j++) {
            const double *q = s->boxes + 4 * j;   // (x1, y1, x2, y2) in the stored S x S frame
            if (!(isfinite(q[0]) && isfinite(q[1]) && isfinite(q[2]) && isfinite(q[3]) && q[2] >= q[0] && q[3] >= q[1]))
                rc = pl_fail(PL_EFORMAT, "%s: sample %lld (image_id %lld) box row %lld is (%g, %g, %g, %g): need x1 <= x2, "
                             "y1 <= y2", s->path, (long long)idx[i], (long long)s->image_id[idx[i]], (long long)j, q[0],
                             q[1], q[2], q[3]);
        }
        if (rc) break;
        int64_t ng = 0, ni = 0, b0 = b;
        for (int64_t j = s->off[idx[i]]; j < s->off[idx[i] + 1]; j++) b += !s->crowd[j];
        int64_t bi = b;   // ignore regions follow the image's boxes
        for (int64_t j = s->off[idx[i]]; j < s->off[idx[i] + 1]; j++) {
            if (s->crowd[j]) {
                box_to_input(c->gtbox + 4 * (bi + ni), s->boxes + 4 * j, geo[i]);
                ni++;
            } else {
                box_to_input(c->gtbox + 4 * (b0 + ng), s->boxes + 4 * j, geo[i]);
                c->gtlab[b0 + ng] = s->label[j];
                ng++;
            }
        }
        det_gt g = {c->gtbox + 4 * b0, c->gtlab + b0, ng, ni ? c->gtbox + 4 * bi : NULL, ni, geo[i].oh, geo[i].ow};
        c->gt[i] = g;
        b = bi + ni;
    }
    // A bad sample on one rank stops every rank before the forward pass (issue 16).
    if ((rc = gradsync_agree(gs, rc))) return rc;
    *data_s = pl_time() - t0;
    pl_rng sr;
    pl_rng_seed(&sr, aug_sample_seed(c->o.seed ^ k_sampling_tag, epoch, idx[0]));
    double l[4];
    rc = detector_train_step(c->det, l, c->x, nn_dims_make(n, 1, s->D, ph, pw), c->gt, loss_scale, &sr);
    if (rc) return rc;
    *loss_sum = (l[0] + l[1] + l[2] + l[3]) * n;
    gradsync_ready(gs, 0, t->params->nparams);
    return gradsync_finish(gs);
}

// Detections of val images [lo, hi) in the stored frame.
static int infer_range(coco_ctx *c, coco_eval_det **out, int64_t *nout, int64_t lo, int64_t hi) {
    const coco_split *s = &c->va;
    *out = NULL;
    *nout = 0;
    if (lo >= hi) return 0;
    const det_geom g = det_geom_make(s->S, s->S, c->o.test_size, 0, 0);
    const int ph = det_pad_up(g.oh), pw = det_pad_up(g.ow);
    const int64_t M = detector_config(c->det)->max_dets;
    float *x = pl_malloc(sizeof(float) * (size_t)s->D * ph * pw, "input");
    float *tmp = pl_malloc(sizeof(float) * (size_t)s->D * g.oh * g.ow, "resize scratch");
    uint8_t *raw = pl_malloc((size_t)s->D * s->S * s->S, "stored sample");
    float *dets = pl_malloc(sizeof(float) * (size_t)M * 6, "detections");
    coco_eval_det *all = pl_malloc(sizeof *all * (size_t)(M * (hi - lo)), "detections");
    int rc = (!x || !tmp || !raw || !dets || !all) ? PL_ENOMEM : 0;
    const int order[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    const int64_t hw[2] = {g.oh, g.ow};
    const double kx = (double)s->S / g.ow, ky = (double)s->S / g.oh;
    int64_t k = 0;
    for (int64_t i = lo; i < hi && !rc; i++) {
        if ((rc = load_image(x, ph, pw, s, i, g, order, raw, tmp))) break;
        int64_t nd = 0;
        if ((rc = detector_detect_labelled(c->det, dets, &nd, x, nn_dims_make(1, 1, s->D, ph, pw), hw))) break;
        for (int64_t j = 0; j < nd; j++, k++) {
            const float *d = dets + 6 * j;
            coco_eval_det e;
            memset(&e, 0, sizeof e);
            e.image = s->image_id[i];
            e.category = c->cat_ids[(int)d[5]];
            e.box[0] = d[0] * kx;
            e.box[1] = d[1] * ky;
            e.box[2] = d[2] * kx;
            e.box[3] = d[3] * ky;
            e.score = d[4];
            all[k] = e;
        }
    }
    free(x);
    free(tmp);
    free(raw);
    free(dets);
    if (rc) {
        free(all);
        return rc;
    }
    *out = all;
    *nout = k;
    return 0;
}

static int write_report(const coco_ctx *c, const coco_eval_result *r, int64_t ndet, double secs) {
    char path[4200];
    snprintf(path, sizeof path, "%s/coco_eval.json", c->out_dir);
    int rc = coco_eval_write_json(path, r);
    if (rc) return rc;
    snprintf(path, sizeof path, "%s/coco_eval.md", c->out_dir);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return pl_fail(PL_EIO, "coco_eval.md: no memory stream");
    fprintf(f, "# COCO-style evaluation of the detection pre-training (VDT pseudo-volumes)\n\n");
    fprintf(f, "Validation split: `%s` — %lld images, %lld boxes (crowd included as ignore regions), %lld detections, "
               "%.1f s of inference. Boxes are scored in the stored %dx%d crop frame; area ranges as COCO (32², 96² px).\n\n",
            c->va.path, (long long)c->va.n, (long long)c->va.nrows, (long long)ndet, secs, c->va.S, c->va.S);
    fprintf(f, "| AP | AP50 | AP75 | AP small | AP medium | AP large | AR@1 | AR@10 | AR@100 |\n|---|---|---|---|---|---|---|---|---|\n");
    fprintf(f, "| %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f | %.4f |\n\n", r->ap, r->ap50, r->ap75, r->ap_small,
            r->ap_medium, r->ap_large, r->ar1, r->ar10, r->ar100);
    fprintf(f, "| category_id | name | AP | AP50 |\n|---|---|---|---|\n");
    for (int i = 0; i < r->ncat; i++) {
        const char *name = "";
        for (int k = 0; k < c->ncls; k++)
            if (c->cat_ids[k] == r->cat_ids[i]) name = c->cat_names[k];
        fprintf(f, "| %d | %s | %.4f | %.4f |\n", r->cat_ids[i], name, r->ap_per_cat[i], r->ap50_per_cat[i]);
    }
    fprintf(f, "\n(-1 = no ground truth of that kind, as pycocotools.)\n");
    fclose(f);
    rc = pl_write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

static int coco_validate(train_task *t, MPI_Comm comm, char *json, size_t json_cap, char *line, size_t line_cap) {
    coco_ctx *c = t->ctx;
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const coco_split *s = &c->va;
    const int64_t lo = s->n * rank / size, hi = s->n * (rank + 1) / size;
    double t0 = pl_time();
    coco_eval_det *mine = NULL;
    int64_t nmine = 0;
    int rc = infer_range(c, &mine, &nmine, lo, hi);
    int bad = rc != 0;
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
    if (bad) {
        free(mine);
        return rc ? rc : PL_EIO;
    }
    void *all = NULL;
    int64_t nall = 0;
    rc = det_gather_records(&all, &nall, mine, nmine, sizeof(coco_eval_det), comm, -1);
    free(mine);
    if (rc) return rc;
    double secs = pl_time() - t0;
    coco_eval_gt *gt = pl_malloc(sizeof *gt * (size_t)(s->nrows + 1), "coco ground truth");
    int64_t *ids = s->image_id;
    if (!gt) {
        free(all);
        return PL_ENOMEM;
    }
    for (int64_t i = 0; i < s->n; i++)
        for (int64_t j = s->off[i]; j < s->off[i + 1]; j++) {
            coco_eval_gt *g = &gt[j];
            memset(g, 0, sizeof *g);
            g->image = s->image_id[i];
            g->category = c->cat_ids[s->label[j]];
            memcpy(g->box, s->boxes + 4 * j, sizeof g->box);
            g->area = 0;   // box area (the shards keep no segmentation area)
            g->iscrowd = s->crowd[j];
        }
    coco_eval_opts o = {100, 0};
    coco_eval_result r;
    memset(&r, 0, sizeof r);
    rc = coco_eval_run(&r, gt, s->nrows, all, nall, ids, s->n, &o);
    free(gt);
    free(all);
    if (rc) return rc;
    snprintf(json, json_cap,
             "\"ap\":%.6f,\"ap50\":%.6f,\"ap75\":%.6f,\"ap_small\":%.6f,\"ap_medium\":%.6f,\"ap_large\":%.6f,\"ar100\":%.6f,"
             "\"val_images\":%lld,\"val_dets\":%lld,\"val_seconds\":%.3f",
             r.ap, r.ap50, r.ap75, r.ap_small, r.ap_medium, r.ap_large, r.ar100, (long long)s->n, (long long)nall, secs);
    snprintf(line, line_cap, "ap:%.4f ap50:%.4f ap75:%.4f ar100:%.4f images:%lld dets:%lld", r.ap, r.ap50, r.ap75, r.ar100,
             (long long)s->n, (long long)nall);
    int wrc = 0;
    if (rank == 0) wrc = write_report(c, &r, nall, secs);
    if (wrc) LOG_WARN("detect_coco: could not write the COCO evaluation report: %s", pl_last_error());
    coco_eval_result_free(&r);
    return 0;
}

static void coco_destroy(train_task *t) {
    coco_ctx *c = t ? t->ctx : NULL;
    if (!c) { det_task_free(t, NULL, NULL, 0); return; }
    coco_split_close(&c->tr);
    coco_split_close(&c->va);
    void *const bufs[] = {c->cat_ids, c->cat_names, c->x, c->tmp, c->raw, c->gtbox, c->gtlab, c->gt};
    det_task_free(t, c->det, bufs, (int)(sizeof bufs / sizeof bufs[0]));
}

int task_detect_coco_create(train_task **out, const pl_cfg *cfg, MPI_Comm comm) {
    *out = NULL;
    const train_task fns = {.step = coco_step, .destroy = coco_destroy};
    train_task *t = NULL;
    int rc = det_task_new(&t, sizeof(coco_ctx), "detect_coco", &fns);
    if (rc) return rc;
    coco_ctx *c = t->ctx;
    int size = 1;
    MPI_Comm_size(comm, &size);
    const char *root = cfg_str(cfg, "input.root");
    snprintf(c->out_dir, sizeof c->out_dir, "%s", cfg_str(cfg, "output.dir"));
    if ((rc = coco_split_open(&c->tr, root, "train"))) goto fail;
    if (c->tr.D > 8) {
        rc = pl_fail(PL_EFORMAT, "%s: %d slices per sample (a VDT COCO shard has 3)", c->tr.path, c->tr.D);
        goto fail;
    }
    if ((rc = read_categories(c, &c->tr))) goto fail;
    for (int64_t j = 0; j < c->tr.nrows; j++)
        if (c->tr.label[j] < 0 || c->tr.label[j] >= c->ncls) {
            rc = pl_fail(PL_EFORMAT, "%s: box row %lld has label %d, the shard has %d categories", c->tr.path, (long long)j,
                         c->tr.label[j], c->ncls);
            goto fail;
        }
    c->has_val = det_val_wanted(cfg, root, "coco_val.h5", "detect_coco");
    if (c->has_val) {
        if ((rc = coco_split_open(&c->va, root, "val"))) goto fail;
        if (c->va.D != c->tr.D) {
            rc = pl_fail(PL_EFORMAT, "%s: val samples have %d slices, train %d", c->va.path, c->va.D, c->tr.D);
            goto fail;
        }
        for (int64_t j = 0; j < c->va.nrows; j++)
            if (c->va.label[j] < 0 || c->va.label[j] >= c->ncls) {
                rc = pl_fail(PL_EFORMAT, "%s: box row %lld has label %d, the train shard has %d categories", c->va.path,
                             (long long)j, c->va.label[j], c->ncls);
                goto fail;
            }
        t->validate = coco_validate;
    }
    if ((rc = det_train_opts_from_cfg(&c->o, cfg, size))) goto fail;
    c->shuffle = cfg_bool(cfg, "det.slice_shuffle");
    if (c->o.bmax > 64) {
        rc = pl_fail(PL_EINVAL, "%s: train.batch = %lld gives %d images per rank (at most 64)", cfg_path(cfg),
                     (long long)cfg_int(cfg, "train.batch"), c->o.bmax);
        goto fail;
    }
    det_config dc;
    if ((rc = det_config_from_cfg(&dc, cfg, c->tr.D))) goto fail;
    dc.num_classes = c->ncls;
    if ((rc = detector_create(&c->det, &dc, c->o.seed))) goto fail;
    c->maxp = det_pad_up(c->o.max_size);
    int64_t maxrows = 0;
    for (int64_t i = 0; i < c->tr.n; i++) maxrows = PL_MAX(maxrows, c->tr.off[i + 1] - c->tr.off[i]);
    const size_t plane = (size_t)c->maxp * (size_t)c->maxp;
    c->x = pl_malloc(sizeof(float) * (size_t)c->o.bmax * (size_t)c->tr.D * plane, "batch");
    c->tmp = pl_malloc(sizeof(float) * (size_t)c->tr.D * plane, "resize scratch");
    c->raw = pl_malloc((size_t)c->tr.D * (size_t)c->tr.S * (size_t)c->tr.S, "stored sample");
    c->gtbox = pl_malloc(sizeof(float) * 4 * (size_t)(c->o.bmax * maxrows + 1), "batch boxes");
    c->gtlab = pl_malloc(sizeof(int32_t) * (size_t)(c->o.bmax * maxrows + 1), "batch labels");
    c->gt = pl_calloc((size_t)c->o.bmax, sizeof(det_gt), "batch truth");
    if (!c->x || !c->tmp || !c->raw || !c->gtbox || !c->gtlab || !c->gt) {
        rc = PL_ENOMEM;
        goto fail;
    }
    t->params = detector_params(c->det);
    t->n_train = c->tr.n;
    int64_t ncrowd = 0;
    for (int64_t j = 0; j < c->tr.nrows; j++) ncrowd += c->tr.crowd[j] != 0;
    LOG0("detect_coco: train:%s images:%lld boxes:%lld crowd:%lld categories:%d stored:%dx%dx%d val:%lld sizes:%d..%d "
         "test_size:%d slice_shuffle:%d params:%zu",
         c->tr.path, (long long)c->tr.n, (long long)c->tr.nrows, (long long)ncrowd, c->ncls, c->tr.D, c->tr.S, c->tr.S,
         (long long)c->va.n, c->o.sizes[0], c->o.max_size, c->o.test_size, c->shuffle, t->params->nparams);
    *out = t;
    return 0;
fail:
    coco_destroy(t);
    return rc;
}
