#pragma once
// augment: training-time transforms of VDT pseudo-volumes, as CSPR does them on RGB images:
// RandomResizedCrop (torchvision's parameter draw), horizontal flip, a random order of the three
// slices (the VDT "channel shuffle"), and normalisation; evaluation: centre crop. Inputs are
// stored samples (D, S, S) uint8 (D = 3 slices); outputs (D, crop, crop) float32.
// Every draw comes from a pl_rng seeded per sample (aug_sample_seed), so a sample's augmentation
// does not depend on which rank reads it or on how many ranks there are.

#include <stdint.h>
#include "nn/pl.h"

// Seed of sample `index` in `epoch` of a run seeded `seed`.
uint64_t aug_sample_seed(uint64_t seed, int64_t epoch, int64_t index);

typedef struct { int y0, x0, h, w; } aug_box;
// torchvision RandomResizedCrop.get_params: 10 tries of area in [smin, smax] x H*W and
// log-uniform aspect ratio in [rmin, rmax]; falls back to the whole image clamped to the range.
aug_box aug_rrc_params(pl_rng *r, int h, int w, double smin, double smax, double rmin, double rmax);
aug_box aug_center_box(int h, int w, int crop);
// torchvision RandomCrop (no padding): a crop x crop box at a uniform integer offset; with
// aug_crop_resize to (crop, crop) the pixels are copied unscaled.
aug_box aug_random_box(pl_rng *r, int h, int w, int crop);

// out (D, oh, ow) = bilinear resize (half-pixel centres, align_corners=False) of the box of in
// (D, h, w); flip mirrors x; order[d] = which input slice becomes output slice d (NULL =
// identity); then (v - mean) / std.
void aug_crop_resize(float *out, int oh, int ow, const uint8_t *in, int d, int h, int w, aug_box b,
                     int flip, const int *order, float mean, float std);
// Same for int16 inputs (CT stacks), value mapping: v' = (clamp(v, lo, hi) - lo) * 255 / (hi - lo),
// then (v' - mean) / std.
void aug_crop_resize_i16(float *out, int oh, int ow, const int16_t *in, int d, int h, int w, aug_box b,
                         int flip, const int *order, float lo, float hi, float mean, float std);
