#pragma once
// detector: the MP3D lesion detector composed from nn/ pieces — 3D backbone with a GTM per stage
// (nn/net.h) -> FPN P2..P6 -> RPN -> RoIAlign + two-FC box head, ONE parameter buffer (backbone
// names as PyTorch, heads as mmdetection) — and the input geometry (resize, flips, padding) with
// its exact inverse. Pure compute: no config files, shards or MPI (stages/train/det_common.h
// reads those). Inputs are (N, 1, D, H, W) float32, already windowed and normalised.

#include <stdint.h>

#include "nn/anchors.h"
#include "nn/boxes.h"
#include "nn/dims.h"
#include "nn/net.h"
#include "nn/params.h"

// ---- the composed model ------------------------------------------------------------------------
typedef struct {
    nn_net_config backbone;      // backbone = 1 and gtm_depth = input depth are set by detector_create
    int depth;                   // input slices D (the GTM collapses them)
    int64_t fpn_channels;        // 256 in MP3D
    int64_t fc_dim;              // 1024
    anchor_config anchors;       // side anchor_scale x stride on strides 4..64, configured ratios
    int64_t rpn_samples;         // 256
    int64_t rpn_pre_nms;         // 2000 per level
    int64_t rpn_post_nms;        // 1000 per image
    double rpn_nms_iou;          // 0.7
    int64_t roi_samples;         // 512
    double roi_pos_fraction;     // 0.25
    double nms_iou;              // 0.5 (test)
    double score_thr;            // 0 (test)
    int64_t max_dets;            // 100 per image (test)
    int num_classes;             // foreground classes: 1 (lesion) by default; COCO sets its categories
    double ignore_iof;           // anchors / RoIs with IoF > this in a crowd (ignore) region are neither
                                 // positive nor negative (det.ignore_iof; only where gt has ignore regions)
} det_config;

typedef struct detector detector;

// Builds backbone and heads in one nn_params, initialises them (backbone: PyTorch defaults from
// seed; heads: mmdetection's initialisers from the same seed).
int detector_create(detector **out, const det_config *c, uint64_t seed);
void detector_destroy(detector *d);   // accepts NULL
nn_params *detector_params(detector *d);
const det_config *detector_config(const detector *d);

// One training step on x (N, 1, D, H, W) with the ground truth of each image gt[n] (boxes in
// input pixels, img_h/img_w the image inside the padded input): forward, RPN targets and loss,
// proposals, RoI sampling, box head loss, backward. Overwrites the whole grads buffer with
// grad_scale x dL/dparams (L = rpn_cls + rpn_reg + roi_cls + roi_reg). loss[4] gets the four
// unscaled terms. rng drives the anchor and RoI sampling.
int detector_train_step(detector *d, double loss[4], const float *x, nn_dims in, const det_gt *gt,
                        double grad_scale, pl_rng *rng);

// Inference on x (N, 1, D, H, W): dets (N, max_dets, 5) x1 y1 x2 y2 score in input pixels,
// sorted by score; ndets (N); img_hw (N, 2) the image inside the padded input (for clipping).
int detector_detect(detector *d, float *dets, int64_t *ndets, const float *x, nn_dims in,
                    const int64_t *img_hw);
// The same with the class: dets (N, max_dets, 6) x1 y1 x2 y2 score label (label in
// [0, num_classes)), sorted by score within each image.
int detector_detect_labelled(detector *d, float *dets, int64_t *ndets, const float *x, nn_dims in,
                             const int64_t *img_hw);

// ---- input geometry ----------------------------------------------------------------------------
// Geometry of one network input made from a stored (H, W) sample: bilinear resize to (oh, ow)
// with half-pixel centres (aug_crop_resize_i16), optional horizontal flip and slice-order
// reversal, placed at the top-left of a zero-padded (ph, pw) canvas.
typedef struct {
    int H, W;        // stored
    int oh, ow;      // resized image
    int flip, zflip;
} det_geom;
// The resized size for a target `size`: the longer side becomes size (aspect kept).
det_geom det_geom_make(int H, int W, int size, int flip, int zflip);
// Boxes (n, 4) of the stored frame (pixel centres) -> input pixels: u' = (u + 0.5) * o / S - 0.5,
// then x' = ow - 1 - x under the flip (x1, x2 swap).
void det_boxes_to_input(float *out, const double *stored, int64_t n, det_geom g);
// Input pixels -> original DL_info frame: the inverse resize (no flip at test), then the
// shard's affine orig = a * stored + b. out (n, 4) double.
void det_boxes_to_orig(double *out, const float *in, int64_t n, det_geom g, const double affine[4]);
// A padded input side: v rounded up to mmdetection's size_divisor (32), as the detector requires.
int det_pad_up(int v);
