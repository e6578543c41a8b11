#pragma once
// fpn: the Feature Pyramid Network neck of mmdetection (FPN, num_outs 5, no extra convs):
// lateral 1x1 convs to C channels, top-down nearest upsampling (to the finer map's size) + add,
// 3x3 output convs, and P6 = max_pool2d(P5, kernel 1, stride 2). Parameters are registered in a
// caller's nn_params under mmdet's names ("neck.lateral_convs.i.conv.weight", ".bias",
// "neck.fpn_convs.i.conv.weight", ".bias"). Maps are (N, C, 1, H, W). Buffers are planned for an
// input shape and grown only when a larger one arrives. Forward reads inputs again in backward.

#include <stdint.h>

#include "nn/dims.h"
#include "nn/params.h"
#include "nn/pl.h"

#define FPN_MAX_IN 4

typedef struct {
    int nin;                             // input levels (4: C2..C5)
    int64_t in_channels[FPN_MAX_IN];
    int64_t out_channels;                // 256 in MP3D
    int num_outs;                        // nin (no extra level) or nin + 1 (P6 by max pool)
    size_t ws_floats;                    // bound of the 3x3-conv column workspace; 0 = 16 M floats
} fpn_config;

typedef struct fpn fpn;

// Registers the parameters in p (before nn_params_alloc) and returns the layer.
int fpn_create(fpn **out, const fpn_config *cfg, nn_params *p);
// After nn_params_alloc: the layer takes its views of p's params and grads.
void fpn_bind(fpn *f, const nn_params *p);
// mmdet's initialisation: xavier_uniform weights, zero biases (call after nn_params_reset).
void fpn_init_weights(fpn *f, pl_rng *rng);
void fpn_destroy(fpn *f);   // accepts NULL

// in[i] (N, C_i, 1, H_i, W_i), C2 finest; H_{i+1} = ceil(H_i / 2) is not required (nearest
// resize to the finer size). in must stay valid until fpn_backward. PL_EINVAL on bad shapes.
int fpn_forward(fpn *f, const float *const *in, const nn_dims *in_dims);
int fpn_num_outputs(const fpn *f);
float *fpn_output(const fpn *f, int i, nn_dims *dims);   // P2 .. P6 of the last forward
// dL/dP_i buffers: cleared by fpn_forward (and fpn_zero_output_grads); heads accumulate into them.
float *fpn_output_grad(const fpn *f, int i);
void fpn_zero_output_grads(fpn *f);
// din[i] (NULL skips) += dL/dC_i; parameter gradients accumulate into p's grads.
// Consumes the output gradients (P5's receives P6's share).
int fpn_backward(fpn *f, float *const *din);
