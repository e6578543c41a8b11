// task_detect: MP3D lesion-detector fine-tuning on `mp3d preprocess` shards (train.h5, val.h5):
// 9-slice int16 HU stacks windowed to det.window -> [0, 255] -> (x - 123.675) / 58.395; per-sample
// seeded augmentation (a size among det.train_sizes, horizontal flip, slice-order reversal) with
// the boxes transformed alike; the images of a rank's share are padded to a common multiple of 32.
// Validation: detections on the val split sharded over ranks, gathered, scored with the FROC
// protocol (stages/froc.h): Sens@0.5/1/2/4 and mFROC go to the metrics.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "nn/pl.h"
#include "stages/train/augment.h"
#include "stages/train/det_common.h"
#include "stages/train/trainer.h"

// The anchor/RoI sampling stream of a step is separate from the augmentation streams.
static const uint64_t k_sampling_tag = 0x73616d706c65ULL;   // "sample"

typedef struct {
    detector *det;
    lesion_shard tr, va;
    int has_val;
    det_train_opts o;         // det.train_sizes, det.test_size, det.flip, run.seed, images per rank
    int zflip;
    double window[2];
    int maxp;                 // padded side of the largest training input
    float *x;                 // (bmax, 1, D, maxp, maxp)
    float *tmp;               // (D, maxp, maxp)
    int16_t *raw;             // (D, H, W)
    float *gtbox;             // (rows of the local batch, 4)
    det_gt *gt;               // (bmax)
    det_geom *geo;            // (bmax)
    froc_opts fo;
} det_ctx;


// The stored boxes of sample i (0-based pixel centres of the stored H x W frame) must be finite,
// non-empty and inside the image, else the detector's targets are garbage; named by shard,
// sample, key slice and row so the CSV line can be found.
static int check_sample_boxes(const lesion_shard *s, int64_t i) {
    for (int64_t j = s->off[i]; j < s->off[i + 1]; j++) {
        const double *b = s->boxes + 4 * j;
        int ok = isfinite(b[0]) && isfinite(b[1]) && isfinite(b[2]) && isfinite(b[3]) && b[2] > b[0] && b[3] > b[1] &&
                 b[0] >= -1 && b[1] >= -1 && b[2] <= s->W && b[3] <= s->H;
        if (!ok)
            return pl_fail(PL_EFORMAT, "%s: sample %lld (%s) box row %lld is (%g, %g, %g, %g): need x1 < x2, y1 < y2 inside "
                           "the %dx%d image (re-run preprocess, which quarantines such rows)", s->path, (long long)i,
                           s->names[i], (long long)j, b[0], b[1], b[2], b[3], s->W, s->H);
    }
    return 0;
}

static int det_step(train_task *t, const int64_t *idx, int n, int64_t epoch, double loss_scale, gradsync *gs,
                    double *loss_sum, double *data_s) {
    det_ctx *c = t->ctx;
    *loss_sum = 0;
    *data_s = 0;
    for (int k = 0; k < t->nparts; k++) t->parts[k] = 0;
    gradsync_begin(gs);
    if (n == 0) {
        memset(t->params->grads, 0, t->params->nparams * sizeof(float));
        gradsync_ready(gs, 0, t->params->nparams);
        return gradsync_finish(gs);
    }
    double t0 = pl_time();
    const lesion_shard *s = &c->tr;
    int ph = 0, pw = 0;
    int64_t nbox = 0;
    for (int i = 0; i < n; i++) {
        pl_rng r;
        pl_rng_seed(&r, aug_sample_seed(c->o.seed, epoch, idx[i]));
        int size = c->o.sizes[pl_rng_int(&r, 0, c->o.nsizes - 1)];
        int flip = c->o.flip && pl_rng_uniform(&r) < 0.5;
        int zflip = c->zflip && pl_rng_uniform(&r) < 0.5;
        c->geo[i] = det_geom_make(s->H, s->W, size, flip, zflip);
        ph = PL_MAX(ph, det_pad_up(c->geo[i].oh));
        pw = PL_MAX(pw, det_pad_up(c->geo[i].ow));
        nbox += s->off[idx[i] + 1] - s->off[idx[i]];
    }
    const size_t per = (size_t)s->D * (size_t)ph * (size_t)pw;
    int64_t b = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const int64_t j0 = s->off[idx[i]], m = s->off[idx[i] + 1] - j0;
        rc = check_sample_boxes(s, idx[i]);
        if (!rc) rc = det_load_input(c->x + per * i, ph, pw, s, idx[i], c->geo[i], c->raw, c->tmp, c->window);
        if (rc) break;
        det_boxes_to_input(c->gtbox + 4 * b, s->boxes + 4 * j0, m, c->geo[i]);
        det_gt g = {c->gtbox + 4 * b, NULL, m, NULL, 0, c->geo[i].oh, c->geo[i].ow};
        c->gt[i] = g;
        b += m;
    }
    // A bad sample on one rank stops every rank before the forward pass (issue 16).
    if ((rc = gradsync_agree(gs, rc))) return rc;
    PL_ASSERT(b == nbox);
    *data_s = pl_time() - t0;
    pl_rng sr;
    pl_rng_seed(&sr, aug_sample_seed(c->o.seed ^ k_sampling_tag, epoch, idx[0]));
    double l[4];
    rc = detector_train_step(c->det, l, c->x, nn_dims_make(n, 1, s->D, ph, pw), c->gt, loss_scale, &sr);
    if (rc) return rc;
    *loss_sum = (l[0] + l[1] + l[2] + l[3]) * n;
    for (int k = 0; k < 4; k++) t->parts[k] = l[k] * n;
    gradsync_ready(gs, 0, t->params->nparams);   // one bucket after the whole backward
    return gradsync_finish(gs);
}

static int det_validate(train_task *t, MPI_Comm comm, char *json, size_t json_cap, char *line, size_t line_cap) {
    det_ctx *c = t->ctx;
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const int64_t lo = c->va.n * rank / size, hi = c->va.n * (rank + 1) / size;
    froc_dets mine;
    memset(&mine, 0, sizeof mine);
    double secs = 0;
    int rc = det_infer_range(&mine, c->det, &c->va, lo, hi, c->o.test_size, c->window, &secs);
    int bad = rc != 0;
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
    if (bad) {
        froc_dets_free(&mine);
        return rc ? rc : PL_EIO;
    }
    froc_det *all = NULL;
    int64_t nall = 0;
    rc = det_gather(&all, &nall, mine.d, mine.n, comm, -1);
    froc_dets_free(&mine);
    if (rc) return rc;
    froc_set set;
    froc_curve cur;
    memset(&cur, 0, sizeof cur);
    int labelled = 0;
    rc = froc_set_from_shard(&set, &labelled, &c->va, &c->fo, all, nall);
    if (!rc && labelled && set.n_images > 0) rc = froc_walk(&cur, &set, NULL, &c->fo);
    if (!rc) {
        const double *sv = cur.sens;
        snprintf(json, json_cap,
                 "\"mfroc\":%.6f,\"sens_0.5\":%.6f,\"sens_1\":%.6f,\"sens_2\":%.6f,\"sens_4\":%.6f,\"sens_8\":%.6f,"
                 "\"val_images\":%lld,\"val_lesions\":%lld,\"val_dets\":%lld,\"val_seconds\":%.3f",
                 cur.mfroc, sv[0], sv[1], sv[2], sv[3], sv[4], (long long)set.n_images, (long long)cur.n_lesions,
                 (long long)nall, secs);
        snprintf(line, line_cap, "mfroc:%.4f sens@0.5:%.4f sens@1:%.4f sens@2:%.4f sens@4:%.4f images:%lld lesions:%lld dets:%lld",
                 cur.mfroc, sv[0], sv[1], sv[2], sv[3], (long long)set.n_images, (long long)cur.n_lesions, (long long)nall);
    }
    froc_curve_free(&cur);
    froc_set_free(&set);
    free(all);
    return rc;
}

static void det_destroy(train_task *t) {
    det_ctx *c = t ? t->ctx : NULL;
    if (!c) { det_task_free(t, NULL, NULL, 0); return; }
    lesion_shard_close(&c->tr);
    lesion_shard_close(&c->va);
    void *const bufs[] = {c->x, c->tmp, c->raw, c->gtbox, c->gt, c->geo};
    det_task_free(t, c->det, bufs, (int)(sizeof bufs / sizeof bufs[0]));
}

int task_detect_create(train_task **out, const pl_cfg *cfg, MPI_Comm comm) {
    *out = NULL;
    const train_task fns = {.step = det_step, .destroy = det_destroy};
    train_task *t = NULL;
    int rc = det_task_new(&t, sizeof(det_ctx), "detect", &fns);
    if (rc) return rc;
    det_ctx *c = t->ctx;
    static const char *const k_parts[4] = {"rpn_cls", "rpn_reg", "roi_cls", "roi_reg"};
    t->nparts = 4;
    for (int k = 0; k < 4; k++) t->part_names[k] = k_parts[k];
    int size = 1;
    MPI_Comm_size(comm, &size);
    const char *root = cfg_str(cfg, "input.root");
    if ((rc = lesion_shard_open(&c->tr, root, "train"))) goto fail;
    c->has_val = det_val_wanted(cfg, root, "val.h5", "detect");
    if (c->has_val) {
        if ((rc = lesion_shard_open(&c->va, root, "val"))) goto fail;
        if (c->va.D != c->tr.D) {
            rc = pl_fail(PL_EFORMAT, "%s: val samples have %d slices, train %d", c->va.path, c->va.D, c->tr.D);
            goto fail;
        }
        t->validate = det_validate;
    }
    if ((rc = det_train_opts_from_cfg(&c->o, cfg, size))) goto fail;
    c->zflip = cfg_bool(cfg, "det.zflip");
    if (cfg_list_len(cfg, "det.window") != 2 || !(cfg_list_float(cfg, "det.window", 1) > cfg_list_float(cfg, "det.window", 0))) {
        rc = pl_fail(PL_EINVAL, "%s: det.window must be [lo, hi] with hi > lo", cfg_path(cfg));
        goto fail;
    }
    c->window[0] = cfg_list_float(cfg, "det.window", 0);
    c->window[1] = cfg_list_float(cfg, "det.window", 1);
    det_froc_opts(&c->fo, cfg);
    det_config dc;
    if ((rc = det_config_from_cfg(&dc, cfg, c->tr.D))) goto fail;
    if ((rc = detector_create(&c->det, &dc, c->o.seed))) goto fail;
    // the largest input: the longer stored side scaled to the largest size, padded
    {
        det_geom g = det_geom_make(c->tr.H, c->tr.W, c->o.max_size, 0, 0);
        c->maxp = det_pad_up(PL_MAX(g.oh, g.ow));
    }
    int64_t maxrows = 0;
    for (int64_t i = 0; i < c->tr.n; i++) maxrows = PL_MAX(maxrows, c->tr.off[i + 1] - c->tr.off[i]);
    const size_t plane = (size_t)c->maxp * (size_t)c->maxp;
    c->x = pl_malloc(sizeof(float) * (size_t)c->o.bmax * (size_t)c->tr.D * plane, "batch");
    c->tmp = pl_malloc(sizeof(float) * (size_t)c->tr.D * plane, "resize scratch");
    c->raw = pl_malloc(sizeof(int16_t) * (size_t)c->tr.D * (size_t)c->tr.H * (size_t)c->tr.W, "stored sample");
    c->gtbox = pl_malloc(sizeof(float) * 4 * (size_t)(c->o.bmax * maxrows + 1), "batch boxes");
    c->gt = pl_calloc((size_t)c->o.bmax, sizeof(det_gt), "batch truth");
    c->geo = pl_calloc((size_t)c->o.bmax, sizeof(det_geom), "batch geometry");
    if (!c->x || !c->tmp || !c->raw || !c->gtbox || !c->gt || !c->geo) {
        rc = PL_ENOMEM;
        goto fail;
    }
    t->params = detector_params(c->det);
    t->n_train = c->tr.n;
    LOG0("detect: train:%s samples:%lld lesions:%lld stored:%dx%dx%d val:%lld sizes:%d..%d test_size:%d params:%zu",
         c->tr.path, (long long)c->tr.n, (long long)c->tr.nrows, c->tr.D, c->tr.H, c->tr.W, (long long)c->va.n,
         c->o.sizes[0], c->o.max_size, c->o.test_size, t->params->nparams);
    *out = t;
    return 0;
fail:
    det_destroy(t);
    return rc;
}
