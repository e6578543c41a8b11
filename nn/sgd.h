#pragma once
// sgd: SGD with momentum and weight decay by PyTorch's exact rule (torch.optim.SGD,
// dampening 0): d_p = g + wd*p; buf = d_p on the first step, else buf = momentum*buf + d_p;
// p -= lr*buf, or with Nesterov p -= lr*(d_p + momentum*buf). Parameter groups as mmcv's
// paramwise_cfg builds them (weight decay off for norm weights/biases and conv/linear biases).
// Gradient clipping by global L2 norm (torch.nn.utils.clip_grad_norm_) and learning-rate
// schedules (linear warm-up, step, cosine). Flat loops over the model's params/grads/momentum.

#include <stddef.h>
#include <stdint.h>

#include "nn/params.h"

// first != 0: the momentum buffer is initialised with d_p (PyTorch's "buf is None" step).
void sgd_step(float *params, float *momentum_buf, const float *grads, size_t count, double lr,
              double momentum, double weight_decay, int first);

typedef struct {
    double lr, momentum, weight_decay;
    int nesterov;          // torch.optim.SGD(nesterov=True)
    int decay_norm_bias;   // 0: no weight decay on NN_ROLE_NORM / NN_ROLE_BIAS entries
} sgd_opts;
// One step over every NN_PARAM entry of p (params, grads, momentum), in two groups: entries
// that decay (role NN_ROLE_WEIGHT, or all when decay_norm_bias) get o->weight_decay, the rest 0.
// first != 0 initialises the momentum buffers (PyTorch's "buf is None" step).
void sgd_step_params(nn_params *p, const sgd_opts *o, int first);
// Floats of p that weight decay applies to under o (for the log).
size_t sgd_decayed_count(const nn_params *p, const sgd_opts *o);

// Global L2 norm of grads (double). If max_norm > 0 and norm > max_norm, scales grads by
// max_norm / (norm + 1e-6) as PyTorch does. Returns the norm before clipping.
double sgd_clip_grad_norm(float *grads, size_t count, double max_norm);

enum sgd_schedule { SGD_SCHED_CONSTANT = 0, SGD_SCHED_STEP, SGD_SCHED_COSINE };
typedef struct {
    double base_lr;
    enum sgd_schedule kind;
    int64_t total_iters;      // cosine: lr reaches min_lr at total_iters
    double min_lr;            // cosine floor (0 in the recipes)
    const int64_t *milestones;// step: iterations at which lr *= gamma (ascending)
    int nmilestones;
    double gamma;
    int64_t warmup_iters;     // linear warm-up (mmcv): lr * (1 - (1 - it/warmup)(1 - factor))
    double warmup_factor;     // warm-up starts at base_lr * factor
} sgd_lr_schedule;
// Learning rate at iteration it (0-based).
double sgd_lr_at(const sgd_lr_schedule *s, int64_t it);
