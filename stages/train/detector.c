// detector: backbone + GTM -> FPN -> RPN -> RoIAlign box head in one parameter buffer, and the
// shard / geometry / inference helpers the detect task and mp3d evaluate share (detector.h).
#include "stages/train/detector.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/bbox_head.h"
#include "nn/fpn.h"
#include "nn/pl.h"
#include "nn/rpn_head.h"
#include "stages/train/augment.h"

// MP3D / mmdetection input normalisation after the [lo, hi] -> [0, 255] window (DESIGN.md "Recipes").
static const float k_norm_mean = 123.675f, k_norm_std = 58.395f;
// mmdetection's size_divisor: inputs are padded to a multiple of the coarsest backbone stride.
static const int k_size_divisor = 32;
static const char *const k_data = "images";

struct detector {
    det_config c;
    nn_net *net;
    fpn *f;
    rpn_head *rpn;
    bbox_head *bb;
    float *props;          // (N, rpn_post_nms, 5)
    int64_t *nprops;       // (N)
    int64_t *img_hw;       // (N, 2)
    float *bdets;          // (N, max_dets, 6)
    int64_t cap_n;         // images the buffers above hold
};

int det_config_from_cfg(det_config *c, const pl_cfg *cfg, int depth) {
    memset(c, 0, sizeof *c);
    int rc = nn_arch_parse(&c->backbone.arch, cfg_str(cfg, "model.arch"));
    if (rc) return rc;
    c->backbone.width = cfg_float(cfg, "model.width");
    c->backbone.norm = !strcmp(cfg_str(cfg, "model.norm"), "gn") ? NN_NORM_GN : NN_NORM_BN;
    c->backbone.gn_groups = (int)cfg_int(cfg, "model.gn_groups");
    c->backbone.num_classes = 1;
    c->depth = depth;
    c->fpn_channels = cfg_int(cfg, "det.fpn_channels");
    c->fc_dim = cfg_int(cfg, "det.fc_dim");
    int nr = cfg_list_len(cfg, "det.anchor_ratios");
    double ratios[ANCHOR_MAX_RATIOS];
    if (nr < 1 || nr > ANCHOR_MAX_RATIOS)
        return pl_fail(PL_EINVAL, "%s: det.anchor_ratios has %d values (allowed 1..%d)", cfg_path(cfg), nr, ANCHOR_MAX_RATIOS);
    for (int i = 0; i < nr; i++) ratios[i] = cfg_list_float(cfg, "det.anchor_ratios", i);
    if ((rc = anchors_config_make(&c->anchors, cfg_float(cfg, "det.anchor_scale"), ratios, nr))) return rc;
    c->rpn_samples = cfg_int(cfg, "det.rpn_samples");
    c->rpn_pre_nms = cfg_int(cfg, "det.rpn_pre_nms");
    c->rpn_post_nms = cfg_int(cfg, "det.rpn_post_nms");
    c->rpn_nms_iou = cfg_float(cfg, "det.rpn_nms_iou");
    c->roi_samples = cfg_int(cfg, "det.roi_samples");
    c->roi_pos_fraction = cfg_float(cfg, "det.roi_pos_fraction");
    c->nms_iou = cfg_float(cfg, "det.nms_iou");
    c->score_thr = cfg_float(cfg, "det.score_thr");
    c->max_dets = cfg_int(cfg, "det.max_dets");
    c->num_classes = 1;
    c->ignore_iof = cfg_float(cfg, "det.ignore_iof");
    return 0;
}

void detector_destroy(detector *d) {
    if (!d) return;
    fpn_destroy(d->f);
    rpn_head_destroy(d->rpn);
    bbox_head_destroy(d->bb);
    nn_net_destroy(d->net);   // frees the shared nn_params too
    free(d->props);
    free(d->nprops);
    free(d->img_hw);
    free(d->bdets);
    free(d);
}

nn_params *detector_params(detector *d) { return nn_net_params(d->net); }
const det_config *detector_config(const detector *d) { return &d->c; }

int detector_create(detector **out, const det_config *c, uint64_t seed) {
    *out = NULL;
    if (c->depth < 1) return pl_fail(PL_EINVAL, "detector: input depth %d (must be >= 1)", c->depth);
    detector *d = pl_calloc(1, sizeof *d, "detector");
    if (!d) return PL_ENOMEM;
    d->c = *c;
    d->c.backbone.backbone = 1;
    d->c.backbone.gtm_depth = c->depth;
    int rc = nn_net_build(&d->net, &d->c.backbone);
    if (rc) goto fail;
    nn_params *p = nn_net_params(d->net);
    // FPN inputs: the GTM outputs, whose widths are the stage widths (gtm.k.weight is (C_k, D, 1, 1)).
    fpn_config fc = {0};
    fc.nin = 4;
    for (int k = 0; k < 4; k++) {
        char name[NN_NAME_MAX];
        snprintf(name, sizeof name, "gtm.%d.weight", k);
        int j = nn_params_find(p, name);
        PL_ASSERT(j >= 0);
        fc.in_channels[k] = p->info[j].shape[0];
    }
    fc.out_channels = c->fpn_channels;
    fc.num_outs = 5;
    if ((rc = fpn_create(&d->f, &fc, p))) goto fail;
    rpn_head_config rc_ = rpn_head_defaults(c->fpn_channels, &c->anchors);
    rc_.num_samples = c->rpn_samples;
    rc_.nms_pre = c->rpn_pre_nms;
    rc_.nms_iou = c->rpn_nms_iou;
    rc_.max_per_img = c->rpn_post_nms;
    rc_.assign.ignore_iof = c->ignore_iof;
    if ((rc = rpn_head_create(&d->rpn, &rc_, p))) goto fail;
    if (c->num_classes < 1) {
        rc = pl_fail(PL_EINVAL, "detector: %d classes (must be >= 1)", c->num_classes);
        goto fail;
    }
    bbox_head_config bc = bbox_head_defaults(c->fpn_channels, c->num_classes);
    bc.assign.ignore_iof = c->ignore_iof;
    bc.fc_dim = c->fc_dim;
    bc.num_samples = c->roi_samples;
    bc.pos_fraction = c->roi_pos_fraction;
    bc.nms_iou = c->nms_iou;
    bc.score_thr = c->score_thr;
    bc.max_per_img = c->max_dets;
    if ((rc = bbox_head_create(&d->bb, &bc, p))) goto fail;
    if ((rc = nn_net_finish(d->net, seed))) goto fail;
    fpn_bind(d->f, p);
    rpn_head_bind(d->rpn, p);
    bbox_head_bind(d->bb, p);
    pl_rng rng;
    pl_rng_seed(&rng, seed ^ 0x6d6d646574ULL);   // heads' own stream ("mmdet")
    fpn_init_weights(d->f, &rng);
    rpn_head_init_weights(d->rpn, &rng);
    bbox_head_init_weights(d->bb, &rng);
    *out = d;
    return 0;
fail:
    detector_destroy(d);
    return rc;
}

static int ensure_images(detector *d, int64_t n) {
    if (n <= d->cap_n) return 0;
    free(d->props);
    free(d->nprops);
    free(d->img_hw);
    free(d->bdets);
    d->props = pl_malloc(sizeof(float) * (size_t)(n * d->c.rpn_post_nms * 5), "proposals");
    d->nprops = pl_malloc(sizeof(int64_t) * (size_t)n, "proposal counts");
    d->img_hw = pl_malloc(sizeof(int64_t) * (size_t)(2 * n), "image sizes");
    d->bdets = pl_malloc(sizeof(float) * (size_t)(n * d->c.max_dets * 6), "detections");
    if (!d->props || !d->nprops || !d->img_hw || !d->bdets) {
        d->cap_n = 0;
        return PL_ENOMEM;
    }
    d->cap_n = n;
    return 0;
}

// Backbone + GTM + FPN: pf[l] (N, C, 1, H_l, W_l) for P2..P6.
static int forward_feats(detector *d, const float *x, nn_dims in, int train, const float **pf, nn_dims *pd) {
    if (in.c != 1 || in.d != d->c.depth)
        return pl_fail(PL_EINVAL, "detector: input (N, %lld, %lld, H, W), expected (N, 1, %d, H, W)", (long long)in.c,
                       (long long)in.d, d->c.depth);
    if (in.h % k_size_divisor || in.w % k_size_divisor)
        return pl_fail(PL_EINVAL, "detector: input %lldx%lld is not padded to a multiple of %d", (long long)in.h,
                       (long long)in.w, k_size_divisor);
    int rc = nn_net_forward(d->net, x, in, train);
    if (rc) return rc;
    const float *cf[4];
    nn_dims cd[4];
    for (int k = 0; k < 4; k++) cf[k] = nn_net_output(d->net, k, &cd[k]);
    if ((rc = fpn_forward(d->f, cf, cd))) return rc;
    for (int l = 0; l < 5; l++) pf[l] = fpn_output(d->f, l, &pd[l]);
    return 0;
}

int detector_train_step(detector *d, double loss[4], const float *x, nn_dims in, const det_gt *gt,
                        double grad_scale, pl_rng *rng) {
    int rc = ensure_images(d, in.n);
    if (rc) return rc;
    const float *pf[5];
    nn_dims pd[5];
    if ((rc = forward_feats(d, x, in, 1, pf, pd))) return rc;
    for (int64_t n = 0; n < in.n; n++) {
        d->img_hw[2 * n] = gt[n].img_h;
        d->img_hw[2 * n + 1] = gt[n].img_w;
    }
    if ((rc = rpn_head_forward(d->rpn, pf, pd))) return rc;
    if ((rc = rpn_head_targets(d->rpn, NULL, NULL, gt, rng))) return rc;
    if ((rc = rpn_head_loss(d->rpn, &loss[0], &loss[1]))) return rc;
    // Proposals come from the current outputs and are not differentiated through (mmdet detaches them).
    if ((rc = rpn_head_proposals(d->rpn, d->props, d->nprops, d->img_hw))) return rc;
    if ((rc = bbox_head_sample(d->bb, NULL, d->props, d->nprops, d->c.rpn_post_nms, gt, in.n, rng))) return rc;
    if ((rc = bbox_head_forward(d->bb, pf, pd))) return rc;
    if ((rc = bbox_head_loss(d->bb, &loss[2], &loss[3]))) return rc;
    nn_params *p = nn_net_params(d->net);
    memset(p->grads, 0, p->nparams * sizeof(float));   // heads accumulate; the net overwrites its own
    float *dpf[5];
    for (int l = 0; l < 5; l++) dpf[l] = fpn_output_grad(d->f, l);
    if ((rc = bbox_head_backward(d->bb, dpf))) return rc;
    if ((rc = rpn_head_backward(d->rpn, dpf))) return rc;
    float *dc[4];
    for (int k = 0; k < 4; k++) {
        nn_dims od;
        nn_net_output(d->net, k, &od);
        dc[k] = nn_net_output_grad(d->net, k);
        memset(dc[k], 0, sizeof(float) * (size_t)nn_dims_count(od));
    }
    if ((rc = fpn_backward(d->f, dc))) return rc;
    if ((rc = nn_net_backward(d->net, NULL, NULL))) return rc;
    if (grad_scale != 1.0) {
        const float s = (float)grad_scale;
        for (size_t i = 0; i < p->nparams; i++) p->grads[i] *= s;
    }
    return 0;
}

int detector_detect_labelled(detector *d, float *dets, int64_t *ndets, const float *x, nn_dims in,
                             const int64_t *img_hw) {
    int rc = ensure_images(d, in.n);
    if (rc) return rc;
    const float *pf[5];
    nn_dims pd[5];
    if ((rc = forward_feats(d, x, in, 0, pf, pd))) return rc;
    if ((rc = rpn_head_forward(d->rpn, pf, pd))) return rc;
    if ((rc = rpn_head_proposals(d->rpn, d->props, d->nprops, img_hw))) return rc;
    if ((rc = bbox_head_set_proposals(d->bb, d->props, d->nprops, d->c.rpn_post_nms, in.n))) return rc;
    if ((rc = bbox_head_forward(d->bb, pf, pd))) return rc;
    return bbox_head_detect(d->bb, dets, ndets, img_hw);
}

int detector_detect(detector *d, float *dets, int64_t *ndets, const float *x, nn_dims in, const int64_t *img_hw) {
    int rc = ensure_images(d, in.n);   // d->bdets holds (N, max_dets, 6)
    if (rc) return rc;
    if ((rc = detector_detect_labelled(d, d->bdets, ndets, x, in, img_hw))) return rc;
    const int64_t M = d->c.max_dets;
    for (int64_t n = 0; n < in.n; n++)
        for (int64_t j = 0; j < ndets[n]; j++)
            memcpy(dets + (n * M + j) * 5, d->bdets + (n * M + j) * 6, 5 * sizeof(float));
    return 0;
}

// ---- shard splits ------------------------------------------------------------------------------

void det_split_close(det_split *s) {
    if (!s) return;
    h5shard_close(s->r);
    free(s->off);
    free(s->boxes);
    free(s->boxes_orig);
    free(s->diam_mm);
    free(s->type);
    free(s->noisy);
    free(s->affine);
    free(s->spacing);
    free(s->ids);
    free(s->names);
    memset(s, 0, sizeof *s);
}

int det_split_open(det_split *s, const char *root, const char *split) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s/%s.h5", root, split);
    int rc = h5shard_open(&s->r, s->path);
    if (rc) return rc;
    int64_t dims[6];
    int nd = h5shard_shape(s->r, k_data, dims, 6);
    if (nd != 4) {
        rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' has %d dims, expected 4 (N, D, H, W) (an mp3d preprocess shard)", s->path,
                     k_data, nd);
        goto fail;
    }
    s->n = dims[0];
    s->D = (int)dims[1];
    s->H = (int)dims[2];
    s->W = (int)dims[3];
    int64_t rd[2];
    if ((nd = h5shard_shape(s->r, "boxes", rd, 2)) < 1) {
        rc = pl_fail(PL_EFORMAT, "%s: no 'boxes' table", s->path);
        goto fail;
    }
    s->nrows = rd[0];
    const size_t n1 = (size_t)(s->n + 1), m1 = (size_t)(s->nrows + 1);
    s->off = pl_malloc(sizeof(int64_t) * n1, "lesion offsets");
    s->boxes = pl_malloc(sizeof(double) * 4 * m1, "boxes");
    s->boxes_orig = pl_malloc(sizeof(double) * 4 * m1, "boxes_orig");
    s->diam_mm = pl_malloc(sizeof(double) * 2 * m1, "diameters");
    s->type = pl_malloc(sizeof(int32_t) * m1, "lesion types");
    s->noisy = pl_malloc(sizeof(int32_t) * m1, "noisy flags");
    s->affine = pl_malloc(sizeof(double) * 4 * n1, "affine");
    s->spacing = pl_malloc(sizeof(double) * 3 * n1, "spacing");
    s->ids = pl_malloc(sizeof(int32_t) * 4 * n1, "ids");
    s->names = pl_calloc(n1, 64, "file names");
    if (!s->off || !s->boxes || !s->boxes_orig || !s->diam_mm || !s->type || !s->noisy || !s->affine || !s->spacing ||
        !s->ids || !s->names) {
        rc = PL_ENOMEM;
        goto fail;
    }
    if ((rc = h5shard_read(s->r, "lesion_offsets", SHARD_I64, s->off, 0, s->n + 1))) goto fail;
    if (s->n > 0) {
        if ((rc = h5shard_read(s->r, "affine", SHARD_F64, s->affine, 0, s->n))) goto fail;
        if ((rc = h5shard_read(s->r, "spacing", SHARD_F64, s->spacing, 0, s->n))) goto fail;
        if ((rc = h5shard_read(s->r, "ids", SHARD_I32, s->ids, 0, s->n))) goto fail;
        if ((rc = h5shard_read(s->r, "file_name", SHARD_STR, s->names, 0, s->n))) goto fail;
    }
    if (s->nrows > 0) {
        if ((rc = h5shard_read(s->r, "boxes", SHARD_F64, s->boxes, 0, s->nrows))) goto fail;
        if ((rc = h5shard_read(s->r, "boxes_orig", SHARD_F64, s->boxes_orig, 0, s->nrows))) goto fail;
        if ((rc = h5shard_read(s->r, "diameters_mm", SHARD_F64, s->diam_mm, 0, s->nrows))) goto fail;
        if ((rc = h5shard_read(s->r, "lesion_type", SHARD_I32, s->type, 0, s->nrows))) goto fail;
        if ((rc = h5shard_read(s->r, "noisy", SHARD_I32, s->noisy, 0, s->nrows))) goto fail;
    }
    if (s->off[0] != 0 || s->off[s->n] != s->nrows) {
        rc = pl_fail(PL_EFORMAT, "%s: lesion_offsets run 0..%lld, the boxes table has %lld rows", s->path,
                     (long long)s->off[s->n], (long long)s->nrows);
        goto fail;
    }
    for (int64_t i = 0; i < s->n; i++) s->names[i][63] = 0;
    double hu[2] = {-1024, 1050};
    int nh = 0;
    if (h5shard_get_attr_f64(s->r, "hu_clip", hu, 2, &nh) == 0 && nh == 2) memcpy(s->hu, hu, sizeof hu);
    else memcpy(s->hu, hu, sizeof hu);
    return 0;
fail:
    det_split_close(s);
    return rc;
}

// ---- geometry ----------------------------------------------------------------------------------

det_geom det_geom_make(int H, int W, int size, int flip, int zflip) {
    det_geom g = {H, W, H, W, flip, zflip};
    if (size > 0) {
        double k = (double)size / (double)PL_MAX(H, W);
        g.oh = PL_MAX(1, (int)lround(H * k));
        g.ow = PL_MAX(1, (int)lround(W * k));
    }
    return g;
}

void det_boxes_to_input(float *out, const double *stored, int64_t n, det_geom g) {
    const double kx = (double)g.ow / g.W, ky = (double)g.oh / g.H;
    for (int64_t i = 0; i < n; i++) {
        double x1 = (stored[4 * i] + 0.5) * kx - 0.5, x2 = (stored[4 * i + 2] + 0.5) * kx - 0.5;
        double y1 = (stored[4 * i + 1] + 0.5) * ky - 0.5, y2 = (stored[4 * i + 3] + 0.5) * ky - 0.5;
        if (g.flip) {
            double t = x1;
            x1 = g.ow - 1 - x2;
            x2 = g.ow - 1 - t;
        }
        out[4 * i] = (float)x1;
        out[4 * i + 1] = (float)y1;
        out[4 * i + 2] = (float)x2;
        out[4 * i + 3] = (float)y2;
    }
}

void det_boxes_to_orig(double *out, const float *in, int64_t n, det_geom g, const double affine[4]) {
    const double kx = (double)g.W / g.ow, ky = (double)g.H / g.oh;
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++) {
            double v = in[4 * i + k], s = (k % 2 == 0) ? (v + 0.5) * kx - 0.5 : (v + 0.5) * ky - 0.5;
            out[4 * i + k] = (k % 2 == 0) ? affine[0] * s + affine[1] : affine[2] * s + affine[3];
        }
}

int det_load_input(float *x, int ph, int pw, const det_split *s, int64_t i, det_geom g, int16_t *raw, float *tmp,
                   const double window[2]) {
    PL_ASSERT(g.oh <= ph && g.ow <= pw && g.H == s->H && g.W == s->W);
    int rc = h5shard_read(s->r, k_data, SHARD_I16, raw, i, 1);
    if (rc) return rc;
    int order[64];
    for (int z = 0; z < s->D && z < 64; z++) order[z] = g.zflip ? s->D - 1 - z : z;
    aug_box b = {0, 0, s->H, s->W};
    const int direct = g.oh == ph && g.ow == pw;
    float *dst = direct ? x : tmp;
    aug_crop_resize_i16(dst, g.oh, g.ow, raw, s->D, s->H, s->W, b, g.flip, order, (float)window[0], (float)window[1],
                        k_norm_mean, k_norm_std);
    if (direct) return 0;
    memset(x, 0, sizeof(float) * (size_t)s->D * (size_t)ph * (size_t)pw);
    for (int z = 0; z < s->D; z++)
        for (int y = 0; y < g.oh; y++)
            memcpy(x + ((size_t)z * ph + y) * pw, tmp + ((size_t)z * g.oh + y) * g.ow, sizeof(float) * (size_t)g.ow);
    return 0;
}

static int pad_up(int v) { return (v + k_size_divisor - 1) / k_size_divisor * k_size_divisor; }

// ---- inference ---------------------------------------------------------------------------------

int det_infer_range(froc_dets *out, detector *d, const det_split *s, int64_t lo, int64_t hi, int test_size,
                    const double window[2], double *seconds) {
    double t0 = pl_time();
    if (lo >= hi) {
        if (seconds) *seconds = 0;
        return 0;
    }
    const det_geom g = det_geom_make(s->H, s->W, test_size, 0, 0);
    const int ph = pad_up(g.oh), pw = pad_up(g.ow);
    const int64_t M = d->c.max_dets;
    float *x = pl_malloc(sizeof(float) * (size_t)s->D * ph * pw, "input");
    float *tmp = pl_malloc(sizeof(float) * (size_t)s->D * g.oh * g.ow, "resize scratch");
    int16_t *raw = pl_malloc(sizeof(int16_t) * (size_t)s->D * s->H * s->W, "stored sample");
    float *dets = pl_malloc(sizeof(float) * (size_t)M * 5, "detections");
    double ob[4];
    int rc = (!x || !tmp || !raw || !dets) ? PL_ENOMEM : 0;
    const int64_t hw[2] = {g.oh, g.ow};
    for (int64_t i = lo; i < hi && !rc; i++) {
        if ((rc = det_load_input(x, ph, pw, s, i, g, raw, tmp, window))) break;
        int64_t nd = 0;
        if ((rc = detector_detect(d, dets, &nd, x, nn_dims_make(1, 1, s->D, ph, pw), hw))) break;
        for (int64_t j = 0; j < nd && !rc; j++) {
            det_boxes_to_orig(ob, dets + 5 * j, 1, g, s->affine + 4 * i);   // rows of 5: box, score
            froc_det fd;
            memset(&fd, 0, sizeof fd);
            snprintf(fd.file, sizeof fd.file, "%s", s->names[i]);
            memcpy(fd.box, ob, sizeof fd.box);
            fd.score = dets[5 * j + 4];
            rc = froc_dets_push(out, &fd);
        }
    }
    free(x);
    free(tmp);
    free(raw);
    free(dets);
    if (seconds) *seconds = pl_time() - t0;
    return rc;
}

int det_gather(froc_det **all, int64_t *n_all, const froc_det *mine, int64_t n_mine, MPI_Comm comm, int root) {
    void *buf = NULL;
    int rc = det_gather_records(&buf, n_all, mine, n_mine, sizeof(froc_det), comm, root);
    *all = buf;
    return rc;
}

int det_gather_records(void **all, int64_t *n_all, const void *mine, int64_t n_mine, size_t rec_size, MPI_Comm comm,
                       int root) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    *all = NULL;
    *n_all = 0;
    const int64_t rec = (int64_t)rec_size;
    if (n_mine * rec > INT32_MAX) return pl_fail(PL_ERANGE, "det_gather: %lld detections on rank %d exceed one message", (long long)n_mine, rank);
    int cnt = (int)(n_mine * rec);
    int *counts = pl_malloc(sizeof(int) * (size_t)size * 2, "gather counts");
    if (!counts) return PL_ENOMEM;
    int *displs = counts + size;
    int rc = MPI_Allgather(&cnt, 1, MPI_INT, counts, 1, MPI_INT, comm);
    int64_t total = 0;
    for (int r = 0; r < size; r++) total += counts[r];
    if (rc != MPI_SUCCESS || total > INT32_MAX) {
        free(counts);
        return pl_fail(rc != MPI_SUCCESS ? PL_EMPI : PL_ERANGE, "det_gather: %lld bytes of detections (MPI rc %d)", (long long)total, rc);
    }
    int off = 0;
    for (int r = 0; r < size; r++) {
        displs[r] = off;
        off += counts[r];
    }
    const int recv = root < 0 || rank == root;
    void *buf = NULL;
    if (recv) buf = pl_malloc((size_t)(total > 0 ? total : rec), "gathered detections");
    int nomem = recv && !buf;   // every rank learns of a failed receive buffer before the gather
    MPI_Allreduce(MPI_IN_PLACE, &nomem, 1, MPI_INT, MPI_MAX, comm);
    if (nomem) {
        free(buf);
        free(counts);
        return pl_fail(PL_ENOMEM, "det_gather: no memory for %lld bytes of detections on a receiving rank", (long long)total);
    }
    if (root < 0)
        rc = MPI_Allgatherv(mine, cnt, MPI_BYTE, buf, counts, displs, MPI_BYTE, comm);
    else
        rc = MPI_Gatherv(mine, cnt, MPI_BYTE, buf, counts, displs, MPI_BYTE, root, comm);
    free(counts);
    if (rc != MPI_SUCCESS) {
        free(buf);
        return pl_fail(PL_EMPI, "det_gather: MPI_Gatherv failed (%d)", rc);
    }
    if (recv) {
        *all = buf;
        *n_all = total / rec;
    }
    return 0;
}

void det_froc_opts(froc_opts *o, const pl_cfg *cfg) {
    froc_opts_default(o);
    o->iou = cfg_float(cfg, "eval.iou");
    o->iou_plus1 = cfg_bool(cfg, "eval.iou_plus1");
    o->keep_noisy = !strcmp(cfg_str(cfg, "eval.noisy"), "keep");
    o->fp_rule = !strcmp(cfg_str(cfg, "eval.fp_rule"), "first_at") ? FROC_FP_FIRST_AT : FROC_FP_BEFORE_NEXT;
    o->split = 0;
}

int det_froc_set(froc_set *set, int *labelled, const det_split *s, const froc_opts *o, const froc_det *dets,
                 int64_t n_dets) {
    memset(set, 0, sizeof *set);
    *labelled = s->nrows > 0;
    if (!*labelled) return 0;
    froc_image *im = pl_calloc((size_t)s->n + 1, sizeof *im, "images");
    froc_gt *g = pl_calloc((size_t)s->nrows + 1, sizeof *g, "lesions");
    if (!im || !g) {
        free(im);
        free(g);
        return PL_ENOMEM;
    }
    int64_t ni = 0, ng = 0;
    for (int64_t i = 0; i < s->n; i++) {
        int64_t g0 = ng;
        for (int64_t j = s->off[i]; j < s->off[i + 1]; j++) {
            if (!o->keep_noisy && s->noisy[j]) continue;
            froc_gt *x = &g[ng++];
            memcpy(x->box, s->boxes_orig + 4 * j, sizeof x->box);
            x->image = ni;
            x->type = s->type[j];
            x->long_mm = s->diam_mm[2 * j] > 0 ? s->diam_mm[2 * j] : NAN;
            x->slice_mm = s->spacing[3 * i + 2] > 0 ? s->spacing[3 * i + 2] : NAN;
            x->noisy = s->noisy[j];
            x->line = 0;
        }
        if (ng == g0) continue;   // no scored lesion: not an evaluated image (as from DL_info.csv)
        snprintf(im[ni].name, FROC_NAME, "%s", s->names[i]);
        im[ni].patient = s->ids[4 * i];
        ni++;
    }
    int rc = froc_set_build(set, im, ni, g, ng, dets, n_dets);
    free(im);
    free(g);
    return rc;
}
