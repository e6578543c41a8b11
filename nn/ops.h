#pragma once
// ops: the small layers on NCDHW float32 — ReLU, MaxPool3d (per-axis kernel/stride/pad,
// PyTorch's -inf padding and first-max tie rule), global average pool, Linear, residual add
// (optionally fused with ReLU), nearest 2x upsampling of (H, W) for FPN. Every backward
// ACCUMULATES into its input gradients (dx += ...), so a tensor read by two layers gets the
// sum. The GTM reshape (N, C, D, H, W) -> (N, C*D, 1, H, W) needs no op: the memory is the same.

#include "nn/dims.h"

void relu_forward(float *y, const float *x, int64_t count);
void relu_backward(float *dx, const float *dy, const float *y, int64_t count);

typedef struct {
    int64_t k[3], s[3], p[3];   // (d, h, w)
} maxpool3d_shape;
int maxpool3d_out_dims(nn_dims *out, const maxpool3d_shape *s, nn_dims in);
// idx (N, C, OD, OH, OW): flat index inside the (D, H, W) volume of the max, for backward.
void maxpool3d_forward(float *y, int32_t *idx, const float *x, const maxpool3d_shape *s, nn_dims in);
void maxpool3d_backward(float *dx, const float *dy, const int32_t *idx, nn_dims in, nn_dims out);

// y (N, C) = mean over (D, H, W) of x (N, C, D, H, W).
void avgpool_global_forward(float *y, const float *x, nn_dims in);
void avgpool_global_backward(float *dx, const float *dy, nn_dims in);

typedef struct {
    int64_t in, out;
    float *w, *b;    // (OUT, IN), (OUT) views into params
    float *dw, *db;  // same, views into grads (accumulated)
} linear;
// y (N, OUT) = x (N, IN) W^T + b
void linear_forward(float *y, const float *x, const linear *l, int64_t n);
void linear_backward(float *dx, const float *dy, const float *x, const linear *l, int64_t n);

// y = a + b (then ReLU if relu); backward: da += g, db += g with g = dy masked by y > 0.
void add_forward(float *y, const float *a, const float *b, int64_t count, int relu);
void add_backward(float *da, float *db, const float *dy, const float *y, int64_t count, int relu);

// y (N, C, D, 2H, 2W) = nearest upsampling of x (N, C, D, H, W).
void upsample2x_forward(float *y, const float *x, nn_dims in);
void upsample2x_backward(float *dx, const float *dy, nn_dims in);
