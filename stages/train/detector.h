#pragma once
// detector: the MP3D lesion detector composed from nn/ pieces — 3D backbone with a GTM per stage
// (nn/net.h) -> FPN P2..P6 -> RPN -> RoIAlign + two-FC box head, single class, ONE parameter
// buffer (backbone names as PyTorch, heads as mmdetection) — plus what the detect task and
// `mp3d evaluate` share: reading a preprocess shard split, the input geometry (resize, flips,
// padding) and its exact inverse to the original DL_info frame, sharded inference and the gather
// of detections. Inputs are (N, 1, D, H, W) float32, already windowed and normalised.

#include <mpi.h>
#include <stdint.h>

#include "io/config.h"
#include "io/h5shard.h"
#include "nn/anchors.h"
#include "nn/boxes.h"
#include "nn/dims.h"
#include "nn/net.h"
#include "nn/params.h"
#include "stages/score/froc.h"

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

// model.* and det.* keys of a config; depth = slices of the shards it will read.
int det_config_from_cfg(det_config *c, const pl_cfg *cfg, int depth);

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

// ---- preprocess shard splits (no MPI: each process reads for itself) ---------------------------
typedef struct {
    h5shard_reader *r;
    char path[4096];
    int64_t n;               // key slices
    int D, H, W;             // stored sample (D, H, W) int16 HU
    int64_t nrows;           // lesion rows
    int64_t *off;            // (n + 1) lesion rows of sample i: [off[i], off[i+1])
    double *boxes;           // (nrows, 4) stored frame, 0-based pixel centres
    double *boxes_orig;      // (nrows, 4) DL_info frame (1-based)
    double *diam_mm;         // (nrows, 2)
    int32_t *type, *noisy;   // (nrows)
    double *affine;          // (n, 4) ax, bx, ay, by: orig = a * stored + b
    double *spacing;         // (n, 3) mm: x, y, slice interval
    int32_t *ids;            // (n, 4) patient, study, series, key slice
    char (*names)[64];       // (n) File_name
    double hu[2];            // the shard's HU clip (the window is det.window)
} det_split;

// Opens root/<split>.h5 written by mp3d preprocess and reads its metadata (File_name strings are
// the preprocess width, 64 bytes).
int det_split_open(det_split *s, const char *root, const char *split);
void det_split_close(det_split *s);   // accepts a zeroed split

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
// x (D, ph, pw) of sample i: windowed ([lo, hi] -> [0, 255]), (v - 123.675) / 58.395, resized,
// flipped, zero padding. raw (D, H, W) and tmp (D, oh, ow) are scratch.
int det_load_input(float *x, int ph, int pw, const det_split *s, int64_t i, det_geom g, int16_t *raw,
                   float *tmp, const double window[2]);

// ---- inference and gathering -------------------------------------------------------------------
// Detects on samples [lo, hi) of s at det.test_size (one image per forward, so results do not
// depend on how samples are split over ranks) and appends them, mapped to the original frame,
// to out. *seconds (may be NULL) gets the time spent.
int det_infer_range(froc_dets *out, detector *d, const det_split *s, int64_t lo, int64_t hi, int test_size,
                    const double window[2], double *seconds);
// Collective: concatenates every rank's detections in rank order (MPI_Gatherv of variable
// counts) on root, or on every rank when root < 0. *all malloc'ed (NULL on non-receivers).
int det_gather(froc_det **all, int64_t *n_all, const froc_det *mine, int64_t n_mine, MPI_Comm comm, int root);
// The same for records of any fixed size (rec_size bytes each).
int det_gather_records(void **all, int64_t *n_all, const void *mine, int64_t n_mine, size_t rec_size, MPI_Comm comm,
                       int root);
// The FROC truth of a split from its shard: every key slice with at least one scored lesion
// (noisy ones dropped unless o->keep_noisy), as froc_set_from_dlinfo does from DL_info.csv.
// *labelled = 0 (and an empty set) when the split has no lesion rows at all.
int det_froc_set(froc_set *set, int *labelled, const det_split *s, const froc_opts *o, const froc_det *dets,
                 int64_t n_dets);
// eval.* keys -> FROC options (split unused here).
void det_froc_opts(froc_opts *o, const pl_cfg *cfg);
