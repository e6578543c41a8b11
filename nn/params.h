#pragma once
// params: one contiguous float buffer of trainable parameters, with gradients and momentum of
// the same layout, plus a separate "buffers" area (BatchNorm running stats and
// num_batches_tracked), every entry named and shaped as in PyTorch's state_dict. Built "sizes
// then point": nn_params_add registers entries (offsets only), nn_params_alloc allocates once,
// then layers take views (nn_params_data/grad). Entries are laid out in registration order.

#include <stddef.h>
#include <stdint.h>

enum nn_param_kind { NN_PARAM = 0, NN_BUFFER = 1 };
// How nn_params_reset initialises an entry (PyTorch's defaults per layer type).
enum nn_init {
    NN_INIT_ZEROS = 0,
    NN_INIT_ONES,
    NN_INIT_FAN_IN_UNIFORM,  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)): kaiming_uniform(a=sqrt(5))
                             // of conv/linear weights, and their biases
};

// What an entry is, for per-group optimiser settings (weight decay on norm/bias or not, as
// mmcv's paramwise_cfg norm_decay_mult / bias_decay_mult): set by the layer that registers it.
enum nn_param_role {
    NN_ROLE_WEIGHT = 0,  // conv / linear weights (and buffers)
    NN_ROLE_BIAS,        // conv / linear biases (registered under a name ending in ".bias")
    NN_ROLE_NORM,        // BatchNorm / GroupNorm weight and bias (nn_params_set_role)
};

#define NN_NAME_MAX 96
typedef struct {
    char name[NN_NAME_MAX];   // "layer2.0.downsample.0.weight"
    int ndim;                 // 0 (num_batches_tracked) .. 5
    int64_t shape[5];
    size_t offset, count;     // into params/grads/momentum (NN_PARAM) or buffers (NN_BUFFER)
    enum nn_param_kind kind;
    enum nn_init init;
    int64_t fan_in;
    enum nn_param_role role;  // NN_ROLE_BIAS if the name ends in ".bias", else WEIGHT until set
} nn_param_info;

typedef struct {
    nn_param_info *info;
    int n, cap;
    size_t nparams, nbuffers;   // float counts
    float *params, *grads, *momentum;  // (nparams) each
    float *buffers;                    // (nbuffers)
} nn_params;

void nn_params_init(nn_params *p);   // empty container
void nn_params_free(nn_params *p);   // frees buffers and the table (views die with it)
// Registers an entry and returns its index in *index. Names must be unique.
int nn_params_add(nn_params *p, int *index, const char *name, enum nn_param_kind kind, int ndim,
                  const int64_t *shape, enum nn_init init, int64_t fan_in);
// Marks entry `index` (e.g. a norm layer's weight/bias as NN_ROLE_NORM).
void nn_params_set_role(nn_params *p, int index, enum nn_param_role role);
int nn_params_alloc(nn_params *p);   // once, after the last add; grads/momentum zeroed
float *nn_params_data(const nn_params *p, int index);   // params or buffers view
float *nn_params_grad(const nn_params *p, int index);   // NULL for buffers
int nn_params_find(const nn_params *p, const char *name); // index or -1
// PyTorch default initialisation from a seeded pl_rng, entries in registration order.
void nn_params_reset(nn_params *p, uint64_t seed);
