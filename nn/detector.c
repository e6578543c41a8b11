// detector: backbone + GTM -> FPN -> RPN -> RoIAlign box head in one parameter buffer, and the
// input geometry (resize, flips, padding) with its inverse (nn/detector.h).
#include "nn/detector.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/bbox_head.h"
#include "nn/fpn.h"
#include "nn/parallel.h"
#include "nn/pl.h"
#include "nn/rpn_head.h"

// mmdetection's size_divisor: inputs are padded to a multiple of the coarsest backbone stride.
static const int k_size_divisor = 32;

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
    nn_parallel_zero(p->grads, (int64_t)p->nparams);  // heads accumulate; the net overwrites its own
    float *dpf[5];
    for (int l = 0; l < 5; l++) dpf[l] = fpn_output_grad(d->f, l);
    if ((rc = bbox_head_backward(d->bb, dpf))) return rc;
    if ((rc = rpn_head_backward(d->rpn, dpf))) return rc;
    float *dc[4];
    for (int k = 0; k < 4; k++) {
        nn_dims od;
        nn_net_output(d->net, k, &od);
        dc[k] = nn_net_output_grad(d->net, k);
        nn_parallel_zero(dc[k], nn_dims_count(od));
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

int det_pad_up(int v) { return (v + k_size_divisor - 1) / k_size_divisor * k_size_divisor; }
