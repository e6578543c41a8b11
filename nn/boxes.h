#pragma once
// boxes: axis-aligned boxes (x1, y1, x2, y2) in pixels of the network input: IoU / IoF with the
// continuous convention (mmdetection >= 2, MP3D's scorer) or the +1 convention (3DCE/MULAN,
// mmdetection 1), the delta coder of mmdetection's DeltaXYWHBBoxCoder (target means/stds, the
// log(1000/16) clamp of dw/dh), clipping, and greedy NMS in a deterministic order (score
// descending, ties by lower index). Box arrays are flat (K, 4) floats. No allocation inside.

#include <stdint.h>

// Ground truth of one image as the detection heads take it.
typedef struct {
    const float *boxes;     // (n, 4) x1 y1 x2 y2, pixels of the network input
    const int32_t *labels;  // (n) class in [0, num_classes); NULL = every box class 0
    int64_t n;
    const float *ignore;    // (n_ignore, 4) crowd / ignore regions, may be NULL
    int64_t n_ignore;
    int64_t img_h, img_w;   // image size inside the (possibly padded) input, for clipping
} det_gt;

// Area (x2 - x1) * (y2 - y1), each side +1 when plus1; 0 for an empty box.
float box_area(const float *b, int plus1);
// IoU of two boxes, 0 when they do not overlap or an area is not positive.
double box_iou(const float *a, const float *b, int plus1);
// out (na, nb): IoU(a_i, b_j), or IoF = intersection / area(a_i) when iof (mmdet's 'iof' mode,
// the foreground being the first argument).
void box_overlaps(float *out, const float *a, int64_t na, const float *b, int64_t nb, int plus1,
                  int iof);

// DeltaXYWHBBoxCoder, continuous convention only (mmdet >= 2; mmdet 1's +1 widths are not
// provided): for a proposal p and target g,
// d = ((gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph)), stored as (d - mean) / std.
typedef struct {
    float means[4], stds[4];
    double max_ratio;   // |log(wh_ratio_clip)|, wh_ratio_clip = 16 / 1000 in mmdet
} box_coder;
box_coder box_coder_make(const float means[4], const float stds[4]);
// deltas (n, 4) = encode(props (n, 4), gts (n, 4)); proposals must have positive size.
void box_encode(float *deltas, const float *props, const float *gts, int64_t n, const box_coder *c);
// boxes (n, 4) = decode(props (n, 4), deltas (n, 4)), dw/dh clamped to +-max_ratio, then clipped
// to [0, img_w] x [0, img_h] when img_h > 0 and img_w > 0. boxes may alias deltas.
void box_decode(float *boxes, const float *props, const float *deltas, int64_t n, const box_coder *c,
                int64_t img_h, int64_t img_w);
// Clamp x to [0, img_w] and y to [0, img_h] (mmdet >= 2).
void box_clip(float *boxes, int64_t n, int64_t img_h, int64_t img_w);

// order (n) = indices sorted by score descending, ties by lower index first, NaN last.
void box_argsort_desc(int64_t *order, const float *scores, int64_t n);
// Greedy NMS: visits boxes in box_argsort_desc order, keeps a box unless a kept box has IoU > thr
// with it (strictly greater, as mmcv/torchvision). keep (<= max_keep) receives kept indices in
// score order; returns their count. order (n) and dead (n) are scratch. max_keep <= 0: no cap.
int64_t box_nms(int64_t *keep, int64_t *order, uint8_t *dead, const float *boxes,
                const float *scores, int64_t n, double iou_thr, int plus1, int64_t max_keep);
