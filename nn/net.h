#pragma once
// net: the VDT/MP3D networks — ResNet3D-18, ResNet3DV1c-18, P3D-63 (DESIGN.md "Networks") with
// a width multiplier, BatchNorm or GroupNorm, a classification head or a backbone mode whose
// outputs are the four stage outputs (optionally through the GTM). Parameters live in one
// nn_params (PyTorch state_dict names); activations and gradients are planned once per input
// shape and re-planned only when it changes: nothing is allocated per step. No MPI, no files.

#include <stddef.h>
#include <stdint.h>

#include "nn/dims.h"
#include "nn/params.h"

enum nn_arch { NN_ARCH_RESNET3D18 = 0, NN_ARCH_RESNET3DV1C18, NN_ARCH_P3D63 };
enum nn_norm_kind { NN_NORM_BN = 0, NN_NORM_GN };

typedef struct {
    enum nn_arch arch;
    double width;            // channels = round(base * width), base 64 (32 for the V1c stem)
    enum nn_norm_kind norm;
    int gn_groups;           // GroupNorm groups (must divide every normalised channel count)
    int num_classes;         // head: global average pool + fc (ignored in backbone mode)
    int backbone;            // 1: outputs are the 4 stage outputs (N, C_k, D, H_k, W_k)
    int gtm_depth;           // backbone: > 0 adds GTM gtm.k (input depth must equal it);
                             // outputs become (N, C_k, 1, H_k, W_k)
    size_t workspace_bytes;  // bound of the conv column workspace; 0 = 256 MB
    int profile;             // 1: log seconds per op kind after each forward / backward
} nn_net_config;

typedef struct nn_net nn_net;

// Called during backward each time one layer's parameter gradients are final, with the
// (offset, count) of that layer's parameters in the grads buffer. Parameters are laid out in
// forward execution order, so successive calls sweep the buffer in contiguous, descending
// ranges (each call's offset + count equals the previous call's offset).
typedef void (*nn_grad_ready_fn)(void *ctx, size_t offset, size_t count);

int nn_arch_parse(enum nn_arch *out, const char *name);  // resnet3d18|resnet3dv1c18|p3d63
const char *nn_arch_name(enum nn_arch a);

// Builds the network, allocates its parameters and initialises them (PyTorch defaults) from seed.
int nn_net_create(nn_net **out, const nn_net_config *cfg, uint64_t seed);
// Two-phase build for composite models (backbone + detection heads in ONE parameter buffer):
// nn_net_build registers the network's entries in nn_net_params(net) without allocating; the
// caller registers its own entries in the same container (nn_params_add), then nn_net_finish
// allocates once, points the network's views and initialises every entry (nn_params_reset).
int nn_net_build(nn_net **out, const nn_net_config *cfg);
int nn_net_finish(nn_net *net, uint64_t seed);
void nn_net_destroy(nn_net *net);   // accepts NULL
nn_params *nn_net_params(nn_net *net);

// x (N, 1, D, H, W) must stay valid until nn_net_backward returns (the stem's weight gradient
// reads it). train: BatchNorm uses batch statistics and updates its running statistics.
int nn_net_forward(nn_net *net, const float *x, nn_dims in, int train);
int nn_net_num_outputs(const nn_net *net);    // 1 (logits (N, classes)) or 4 (backbone)
float *nn_net_output(const nn_net *net, int i, nn_dims *dims);
// Gradient buffer of output i: the caller writes every element before nn_net_backward.
float *nn_net_output_grad(nn_net *net, int i);
// Backward of the last forward: overwrites the whole grads buffer (no accumulation across
// calls); cb (may be NULL) as described above.
int nn_net_backward(nn_net *net, nn_grad_ready_fn cb, void *ctx);
// Synchronised BatchNorm: every BatchNorm layer sums its statistics over the replicas with
// fn (see batchnorm3d.sync); fn = NULL restores per-replica statistics.
void nn_net_set_bn_sync(nn_net *net, void (*fn)(void *ctx, double *buf, int n), void *ctx);
// Bytes of the current plan: activations, activation gradients, saved statistics, workspace.
size_t nn_net_plan_bytes(const nn_net *net);
