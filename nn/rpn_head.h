#pragma once
// rpn_head: mmdetection's RPNHead shared over the FPN levels: 3x3 conv + ReLU, 1x1 cls conv
// (A sigmoid logits per location) and 1x1 reg conv (4A deltas), A anchors per location. Targets
// (MaxIoUAssigner 0.7/0.3/min 0.3, RandomSampler 256 x 0.5), loss (sigmoid BCE over sampled
// anchors + smooth L1 beta 1/9 on positives, both / number sampled in the batch) and proposals
// (per level top nms_pre by score, decode, clip, drop empty boxes, NMS per level, top
// max_per_img overall, as mmdet 2.x). Maps (N, C, 1, H, W); names "rpn_head.rpn_conv.weight" ...

#include <stdint.h>

#include "nn/anchors.h"
#include "nn/boxes.h"
#include "nn/dims.h"
#include "nn/params.h"
#include "nn/pl.h"

typedef struct {
    int64_t in_channels;      // FPN width
    int64_t feat_channels;    // width of the shared 3x3 conv (mmdet: = in_channels)
    anchor_config anchors;    // one level per input map
    assign_config assign;     // anchors_assign_rpn_defaults()
    int64_t num_samples;      // 256
    double pos_fraction;      // 0.5
    double allowed_border;    // anchors further outside the image are ignored; < 0 keeps all (mmdet 2)
    double smooth_l1_beta;    // 1/9
    box_coder coder;          // means 0, stds 1
    int64_t nms_pre;          // candidates per level before NMS: 2000
    double nms_iou;           // 0.7
    int64_t max_per_img;      // proposals kept: 1000 (train and test in MP3D)
    double min_bbox_size;     // proposals need w, h > this (0: drop empty boxes)
    size_t ws_floats;         // bound of the 3x3-conv column workspace; 0 = 16 M floats
} rpn_head_config;

rpn_head_config rpn_head_defaults(int64_t channels, const anchor_config *anchors);

typedef struct rpn_head rpn_head;

int rpn_head_create(rpn_head **out, const rpn_head_config *cfg, nn_params *p);  // registers params
void rpn_head_bind(rpn_head *h, const nn_params *p);   // after nn_params_alloc
void rpn_head_init_weights(rpn_head *h, pl_rng *rng);  // mmdet: normal(0, 0.01), bias 0
void rpn_head_destroy(rpn_head *h);                    // accepts NULL

// feats[l] (N, C, 1, H_l, W_l) for every anchor level; must stay valid until backward.
int rpn_head_forward(rpn_head *h, const float *const *feats, const nn_dims *fd);
// Outputs of the last forward: cls (N, A, 1, H, W) logits, reg (N, 4A, 1, H, W), channel a*4+k.
float *rpn_head_cls(const rpn_head *h, int level);
float *rpn_head_reg(const rpn_head *h, int level);
// Anchors of a level for the last forward's map size: (H * W * A, 4), index (y * W + x) * A + a.
const float *rpn_head_anchors(const rpn_head *h, int level, int64_t *count);

// Assigns and samples anchors for the N images of the last forward (gt[n]); kept for the loss
// of every following forward on the same map sizes (a size change drops them).
// *npos / *nneg (may be NULL) receive the batch's sampled counts.
int rpn_head_targets(rpn_head *h, int64_t *npos, int64_t *nneg, const det_gt *gt, pl_rng *rng);
// Losses of the current outputs against the stored targets; writes dL/dcls, dL/dreg (the loss
// being loss_cls + loss_reg) for backward.
int rpn_head_loss(rpn_head *h, double *loss_cls, double *loss_reg);
// dfeats[l] (NULL skips) += dL/dfeats; parameter gradients accumulate into p's grads.
int rpn_head_backward(rpn_head *h, float *const *dfeats);

// props (N, max_per_img, 5) x1 y1 x2 y2 score, sorted by score; nprops (N). img_hw (N, 2).
int rpn_head_proposals(rpn_head *h, float *props, int64_t *nprops, const int64_t *img_hw);
