#pragma once
// anchors: FPN anchor grids as mmdetection's AnchorGenerator builds them (side = scale x stride,
// ratio = h / w, per location ratio-major then scale, index (y * W + x) * A + a), assignment of
// anchors (or proposals) to ground truth as MaxIoUAssigner (with crowd regions ignored by IoF),
// random positive/negative sampling as RandomSampler, and k-means of box shapes with 1 - IoU as
// distance (`mp3d anchors`). Boxes are (K, 4) x1 y1 x2 y2 floats; no allocation inside.

#include <stdint.h>

#include "nn/boxes.h"
#include "nn/pl.h"

#define ANCHOR_MAX_LEVELS 8
#define ANCHOR_MAX_RATIOS 16
#define ANCHOR_MAX_SCALES 8

typedef struct {
    int nlevels;
    int64_t strides[ANCHOR_MAX_LEVELS];   // 4, 8, 16, 32, 64 for P2..P6
    int nratios;
    double ratios[ANCHOR_MAX_RATIOS];     // h / w (mmdet: h = side * sqrt(r), w = side / sqrt(r))
    int nscales;
    double scales[ANCHOR_MAX_SCALES];     // side = scale * stride (mmdet octave_base_scale)
    double center_offset;                 // anchor centre at (x + offset) * stride; mmdet >= 2: 0
} anchor_config;

// The MP3D/DESIGN defaults: strides 4..64, one scale, the given ratios; PL_EINVAL if too many.
int anchors_config_make(anchor_config *c, double scale, const double *ratios, int nratios);
int anchors_per_location(const anchor_config *c);   // nratios * nscales
// base (A, 4): the anchors of location (0, 0) of a level.
void anchors_base(float *base, const anchor_config *c, int level);
// out (H * W * A, 4): the anchors of a level over an H x W feature map.
void anchors_grid(float *out, const anchor_config *c, int level, int64_t fh, int64_t fw);
// valid (n): 1 when the anchor lies inside the image grown by allowed_border on each side
// (mmdet anchor_inside_flags); allowed_border < 0: all valid.
void anchors_inside(uint8_t *valid, const float *anchors, int64_t n, int64_t img_h, int64_t img_w,
                    double allowed_border);
// shapes (nlevels * A, 2): (w, h) of every distinct anchor, level-major (for k-means reports).
void anchors_shapes(float *wh, const anchor_config *c);

// MaxIoUAssigner. RPN (mmdet): pos 0.7, neg 0.3, min_pos 0.3, low-quality matching on;
// R-CNN: 0.5 / 0.5 / 0.5, low-quality matching off.
typedef struct {
    double pos_iou;          // max IoU >= this: positive (assigned to its best box)
    double neg_iou;          // 0 <= max IoU < this: negative
    double min_pos_iou;      // low-quality match: a box's best anchor(s) positive if IoU >= this
    int match_low_quality;
    int gt_max_assign_all;   // every anchor tying with a box's best IoU (mmdet default 1)
    double ignore_iof;       // > 0: anchors with IoF (over the anchor) > this in an ignore region
                             // are neither positive nor negative; <= 0: ignore regions unused
    int plus1;               // IoU convention
} assign_config;
assign_config anchors_assign_rpn_defaults(void);
assign_config anchors_assign_rcnn_defaults(void);

enum { ASSIGN_NEG = -1, ASSIGN_IGNORE = -2 };
// assigned (n): index of the matched gt box (positive), ASSIGN_NEG or ASSIGN_IGNORE;
// max_iou (n, may be NULL): best IoU with any gt box (-1 for ignored ones).
// valid (n, may be NULL): 0 marks an anchor ignored outright (outside the image).
void anchors_assign(int64_t *assigned, float *max_iou, const float *boxes, const uint8_t *valid,
                    int64_t n, const det_gt *gt, const assign_config *c);

// RandomSampler: up to floor(num * pos_fraction) positives at random, negatives fill up to num.
// picked (n): 1 sampled, 0 not. ws (n) scratch. Returns the total sampled; *npos gets positives.
int64_t anchors_sample(uint8_t *picked, int64_t *npos, const int64_t *assigned, int64_t n,
                       int64_t num, double pos_fraction, pl_rng *rng, int64_t *ws);

// IoU of two shapes (w, h) aligned at a common centre.
double anchors_shape_iou(const float *a, const float *b);
// Mean over boxes of the best shape IoU with any of the na anchor shapes.
double anchors_mean_best_iou(const float *wh, int64_t n, const float *anchor_wh, int64_t na);
// k-means of shapes wh (n, 2) with distance 1 - shape IoU: k-means++ seeding from rng, Lloyd
// updates (mean w and h of each cluster), an emptied cluster re-seeded with the worst-fitting
// shape, until no assignment changes or max_iter. centroids (k, 2) sorted by area ascending;
// assign (n) scratch (then the final cluster of each shape). Returns iterations or PL_EINVAL.
int anchors_kmeans(float *centroids, int32_t *assign, const float *wh, int64_t n, int k, int max_iter,
                   pl_rng *rng);
