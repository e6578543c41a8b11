#pragma once
// bbox_head: the second stage of Faster R-CNN as mmdetection's StandardRoIHead +
// Shared2FCBBoxHead: RoIAlign (7x7, FPN level by mmdet's finest-scale-56 rule) -> flatten ->
// FC + ReLU -> FC + ReLU -> fc_cls (num_classes + 1 logits, BACKGROUND LAST as mmdet >= 2) and
// fc_reg (4 per class, or 4 when class-agnostic); RoI sampling (gt boxes added as proposals,
// MaxIoUAssigner 0.5, 512 x 25 % positive), losses (softmax CE + smooth L1 on the positives'
// own class, both / RoIs sampled in the batch) and test decoding (softmax, per-class NMS).
// Names "roi_head.bbox_head.shared_fcs.{0,1}", "fc_cls", "fc_reg". Maps (N, C, 1, H, W).

#include <stdint.h>

#include "nn/anchors.h"
#include "nn/boxes.h"
#include "nn/dims.h"
#include "nn/params.h"
#include "nn/pl.h"
#include "nn/roialign.h"

#define BBOX_MAX_LEVELS 4

typedef struct {
    int64_t in_channels;       // FPN width
    int nlevels;               // 4: P2..P5
    int64_t strides[BBOX_MAX_LEVELS];   // 4, 8, 16, 32
    double finest_scale;       // 56
    roialign_config roi;       // 7 x 7, sampling_ratio 0, aligned 1
    int64_t fc_dim;            // 1024
    int num_classes;           // foreground classes (1 for lesions)
    int class_agnostic;        // 1: fc_reg has 4 outputs
    box_coder coder;           // means 0, stds (0.1, 0.1, 0.2, 0.2)
    assign_config assign;      // anchors_assign_rcnn_defaults()
    int64_t num_samples;       // 512 per image
    double pos_fraction;       // 0.25
    int add_gt_as_proposals;   // 1
    double smooth_l1_beta;     // 1.0
    double score_thr;          // test: keep scores > this (0)
    double nms_iou;            // test: per-class NMS 0.5
    int64_t max_per_img;       // test: 100
} bbox_head_config;

bbox_head_config bbox_head_defaults(int64_t channels, int num_classes);

typedef struct bbox_head bbox_head;

int bbox_head_create(bbox_head **out, const bbox_head_config *cfg, nn_params *p);  // registers params
void bbox_head_bind(bbox_head *h, const nn_params *p);    // after nn_params_alloc
// mmdet: shared fcs xavier_uniform, fc_cls normal(0, 0.01), fc_reg normal(0, 0.001), biases 0.
void bbox_head_init_weights(bbox_head *h, pl_rng *rng);
void bbox_head_destroy(bbox_head *h);                     // accepts NULL

// Training RoIs: for each image n, candidates = gt boxes (if add_gt_as_proposals) then the
// proposals props[n] (rows of 5: x1 y1 x2 y2 score, nprops[n] of them, row stride max_props);
// assigns, samples, and keeps RoIs (positives first per image), labels and targets.
// *npos (may be NULL) gets the batch's positives.
int bbox_head_sample(bbox_head *h, int64_t *npos, const float *props, const int64_t *nprops,
                     int64_t max_props, const det_gt *gt, int64_t n_img, pl_rng *rng);
// Test RoIs: every proposal of every image (no targets).
int bbox_head_set_proposals(bbox_head *h, const float *props, const int64_t *nprops,
                            int64_t max_props, int64_t n_img);
// RoIs of the current set: (K, 5) batch index, x1 y1 x2 y2; labels (K) with num_classes for
// background (NULL at test).
const float *bbox_head_rois(const bbox_head *h, int64_t *k);
const int64_t *bbox_head_labels(const bbox_head *h);

// feats[l] (N, C, 1, H_l, W_l) for l < nlevels (the FPN outputs); stay valid until backward.
int bbox_head_forward(bbox_head *h, const float *const *feats, const nn_dims *fd);
float *bbox_head_cls(const bbox_head *h);   // (K, num_classes + 1) logits of the last forward
float *bbox_head_reg(const bbox_head *h);   // (K, 4 * num_classes or 4) deltas
// Losses against the sampled targets; writes the output gradients for backward.
int bbox_head_loss(bbox_head *h, double *loss_cls, double *loss_reg);
// dfeats[l] += dL/dfeats (NULL skips a level); parameter gradients accumulate into p's grads.
int bbox_head_backward(bbox_head *h, float *const *dfeats);

// dets (N, max_per_img, 6): x1 y1 x2 y2 score label, sorted by score; ndets (N); img_hw (N, 2)
// for clipping. Uses the last forward on bbox_head_set_proposals RoIs.
int bbox_head_detect(bbox_head *h, float *dets, int64_t *ndets, const int64_t *img_hw);
