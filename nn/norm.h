#pragma once
// norm: BatchNorm3d and GroupNorm over NCDHW float32, forward and backward, each with an
// optional fused ReLU (y = max(norm(x), 0)). Statistics are accumulated in double.
// Conventions follow PyTorch's documentation: BatchNorm normalises with the biased batch
// variance, updates running_var with the unbiased one and running_* = (1-m)*old + m*batch;
// eval mode uses the running statistics. No allocation: callers pass the saved-stat buffers.

#include "nn/dims.h"

typedef struct {
    int64_t c;
    float eps;        // 1e-5 (PyTorch default)
    float momentum;   // 0.1 (PyTorch default)
    float *gamma, *beta;          // (C) views into params ("weight", "bias")
    float *dgamma, *dbeta;        // (C) views into grads (accumulated)
    float *running_mean, *running_var; // (C) views into buffers
    float *num_batches_tracked;   // (1) view into buffers (an integer count kept as float)
    // Synchronised BatchNorm (optional): sums buf[0..n) element-wise over all replicas in place
    // (the trainer passes an MPI all-reduce). With it, training statistics and the backward's
    // two per-channel sums are those of the global batch (torch.nn.SyncBatchNorm).
    void (*sync)(void *ctx, double *buf, int n);
    void *sync_ctx;
} batchnorm3d;

// y = gamma * (x - mean) * invstd + beta (then ReLU if relu). train: batch statistics over
// (N, D, H, W), saved as mean/invstd (C each) for backward, running stats updated.
// eval: running statistics, nothing updated (mean/invstd still written).
void batchnorm3d_forward(float *y, float *mean, float *invstd, const float *x,
                         const batchnorm3d *l, nn_dims d, int train, int relu);
// dx += dL/dx (skipped when NULL; with write, dx = dL/dx: its content is not read),
// dgamma/dbeta += ...; y is the forward output (for the ReLU mask when relu). For a forward in
// eval mode pass train = 0 (statistics are constants).
void batchnorm3d_backward(float *dx, const float *dy, const float *x, const float *y,
                          const float *mean, const float *invstd, const batchnorm3d *l,
                          nn_dims d, int train, int relu, int write);

typedef struct {
    int64_t c, groups;
    float eps;                    // 1e-5
    float *gamma, *beta, *dgamma, *dbeta; // (C)
} groupnorm;

// Statistics per (sample, group) over (C/groups, D, H, W); mean/invstd are (N, groups).
void groupnorm_forward(float *y, float *mean, float *invstd, const float *x, const groupnorm *l,
                       nn_dims d, int relu);
// Same contract as batchnorm3d_backward (dx added into, or overwritten with write).
void groupnorm_backward(float *dx, const float *dy, const float *x, const float *y,
                        const float *mean, const float *invstd, const groupnorm *l, nn_dims d,
                        int relu, int write);
