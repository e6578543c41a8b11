#pragma once
// roialign: RoIAlign on 2-D feature maps (N, C, 1, H, W) as mmcv/torchvision compute it
// (aligned=True shifts box corners by -0.5 pixel; sampling_ratio 0 = ceil(roi_size / out_size)
// points per bin; points outside [-1, size] contribute 0), forward and backward, single- or
// multi-level (FPN). The level of a box follows mmdetection's SingleRoIExtractor:
// lvl = floor(log2(sqrt(w * h) / finest_scale + 1e-6)) clamped to [0, nlevels - 1], finest 56.
// rois are (K, 5): batch index, x1, y1, x2, y2 in input pixels. No allocation inside.

#include <stdint.h>

#include "nn/dims.h"

typedef struct {
    int64_t out_h, out_w;   // 7 x 7 in the Faster R-CNN box head
    int sampling_ratio;     // points per bin side; 0 = adaptive ceil(roi_h / out_h)
    int aligned;            // 1: mmcv aligned=True (-0.5 pixel shift); 0: legacy (min size 1)
} roialign_config;

// out (K, C, 1, OH, OW) from feat (N, C, 1, H, W); spatial_scale = 1 / stride.
void roialign_forward(float *out, const float *feat, nn_dims fd, const float *rois, int64_t k,
                      double spatial_scale, const roialign_config *c);
// dfeat (N, C, 1, H, W) += dL/dfeat for dout (K, C, 1, OH, OW).
void roialign_backward(float *dfeat, const float *dout, nn_dims fd, const float *rois, int64_t k,
                       double spatial_scale, const roialign_config *c);

// lvl (K) = mmdet's FPN level of each RoI (finest_scale 56 -> levels of strides 4, 8, 16, 32).
void roialign_map_levels(int *lvl, const float *rois, int64_t k, int nlevels, double finest_scale);
// Multi-level: RoI i reads feats[lvl[i]] (dims fd[lvl[i]], scale scales[lvl[i]]); all levels
// share N and C. out (K, C, 1, OH, OW); backward accumulates into dfeats[l] (NULL: skipped).
void roialign_forward_levels(float *out, const float *const *feats, const nn_dims *fd,
                             const double *scales, const int *lvl, const float *rois, int64_t k,
                             const roialign_config *c);
void roialign_backward_levels(float *const *dfeats, const float *dout, const nn_dims *fd,
                              const double *scales, const int *lvl, const float *rois, int64_t k,
                              const roialign_config *c);
