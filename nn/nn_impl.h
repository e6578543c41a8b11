#pragma once
// nn_impl: the network graph shared by net.c (executor, planning) and resnet3d.c (builders).
// Not a public header: nothing outside nn/ includes it.

#include "nn/conv3d.h"
#include "nn/net.h"
#include "nn/norm.h"
#include "nn/ops.h"

enum nn_op_kind { NN_OP_CONV, NN_OP_BN, NN_OP_GN, NN_OP_MAXPOOL, NN_OP_ADD, NN_OP_GAP, NN_OP_LINEAR };

typedef struct {
    enum nn_op_kind kind;
    int in0, in1, out;        // tensor ids (in1 only for ADD)
    int relu;                 // fused ReLU on the output (BN, GN, ADD)
    int gtm;                  // CONV: input (N, C, D, H, W) read as (N, C*D, 1, H, W)
    int alias;                // ADD: output written in place over in0 (planned)
    int pidx[5];              // param entries: w, b | gamma, beta, running_mean, running_var, nbt
    int npar;                 // trainable entries among pidx (first npar)
    union {
        conv3d conv;
        batchnorm3d bn;
        groupnorm gn;
        maxpool3d_shape pool;
        linear fc;
    } u;
    size_t aux_off, aux_bytes;// saved statistics / argmax indices in the aux arena
} nn_op;

typedef struct {
    nn_dims dims;
    float *data;              // activation (or the caller's input)
    float *grad;              // NULL for the network input
    int slot;                 // gradient slot in the plan, -1 none
    int zeroed;               // backward bookkeeping
} nn_tensor;

struct nn_net {
    nn_net_config cfg;
    nn_params params;
    nn_op *ops;
    int nops, capops;
    nn_tensor *t;
    int nt, capt;
    int outputs[4], noutputs;
    // plan for one input shape
    int planned;
    nn_dims plan_in;
    float *act;  size_t act_floats;
    float *gbuf; size_t grad_floats;
    char *aux;   size_t aux_total;
    float *ws;   size_t ws_floats;
    int last_train;
    int forwarded;
};

// net_graph.c: graph building (a leaf: calls nothing else of nn/net*)
int nn_net_add_tensor(nn_net *net);
nn_op *nn_net_add_op(nn_net *net, enum nn_op_kind kind, int in0, int in1);
int nn_build_network(nn_net *net);     // resnet3d.c: registers ops and params
void nn_net_point_views(nn_net *net);  // net.c: after nn_params_alloc, layers take their views
