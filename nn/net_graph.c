// net_graph: the two graph-building primitives (a new tensor, a new op) the network builder
// (resnet3d.c) calls. A leaf: it knows the nn_net lists only, so the executor (net.c) -> builder
// (resnet3d.c) -> net_graph.c dependency runs one way.
#include <string.h>

#include "nn/nn_impl.h"
#include "nn/pl.h"

int nn_net_add_tensor(nn_net *net) {
    if (net->nt == net->capt) {
        int cap = net->capt ? 2 * net->capt : 64;
        nn_tensor *t = pl_realloc(net->t, (size_t)cap * sizeof *t, "net tensors");
        if (!t) return PL_ENOMEM;
        net->t = t;
        net->capt = cap;
    }
    memset(&net->t[net->nt], 0, sizeof(nn_tensor));
    net->t[net->nt].slot = -1;
    return net->nt++;
}

nn_op *nn_net_add_op(nn_net *net, enum nn_op_kind kind, int in0, int in1) {
    if (net->nops == net->capops) {
        int cap = net->capops ? 2 * net->capops : 64;
        nn_op *o = pl_realloc(net->ops, (size_t)cap * sizeof *o, "net ops");
        if (!o) return NULL;
        net->ops = o;
        net->capops = cap;
    }
    int out = nn_net_add_tensor(net);
    if (out < 0) return NULL;
    nn_op *op = &net->ops[net->nops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->in0 = in0;
    op->in1 = in1;
    op->out = out;
    for (int i = 0; i < 5; i++) op->pidx[i] = -1;
    return op;
}
