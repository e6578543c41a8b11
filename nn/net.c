// net: graph executor for the networks built by resnet3d.c (through nn/net_graph.c). Ops run in list order (their
// build order); backward runs in reverse. Activations of every tensor are kept (backward reads
// them); activation gradients share slots by liveness (a tensor's gradient lives from its
// first consumer's backward to its producer's backward), so the gradient arena is a fraction
// of the activation arena.
#include <stdlib.h>
#include <string.h>

#include "nn/nn_impl.h"
#include "nn/parallel.h"
#include "nn/pl.h"

static const size_t NN_DEFAULT_WS_BYTES = 256u << 20;  // issue 9: 256 MB default bound
static const size_t NN_ALIGN_FLOATS = 16;              // 64-byte aligned tensors

int nn_arch_parse(enum nn_arch *out, const char *name) {
    static const char *names[] = {"resnet3d18", "resnet3dv1c18", "p3d63"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (enum nn_arch)i;
            return 0;
        }
    return pl_fail(PL_EINVAL, "model.arch = '%s' (allowed: resnet3d18|resnet3dv1c18|p3d63)", name);
}

const char *nn_arch_name(enum nn_arch a) {
    return a == NN_ARCH_RESNET3D18 ? "resnet3d18" : a == NN_ARCH_RESNET3DV1C18 ? "resnet3dv1c18" : "p3d63";
}

void nn_net_point_views(nn_net *net) {
    nn_params *p = &net->params;
    for (int i = 0; i < net->nops; i++) {
        nn_op *op = &net->ops[i];
        float *v[5] = {0}, *g[5] = {0};
        for (int j = 0; j < 5; j++)
            if (op->pidx[j] >= 0) {
                v[j] = nn_params_data(p, op->pidx[j]);
                g[j] = nn_params_grad(p, op->pidx[j]);
            }
        switch (op->kind) {
        case NN_OP_CONV:
            op->u.conv.w = v[0], op->u.conv.dw = g[0], op->u.conv.b = v[1], op->u.conv.db = g[1];
            break;
        case NN_OP_LINEAR:
            op->u.fc.w = v[0], op->u.fc.dw = g[0], op->u.fc.b = v[1], op->u.fc.db = g[1];
            break;
        case NN_OP_BN:
            op->u.bn.gamma = v[0], op->u.bn.dgamma = g[0], op->u.bn.beta = v[1], op->u.bn.dbeta = g[1];
            op->u.bn.running_mean = v[2], op->u.bn.running_var = v[3], op->u.bn.num_batches_tracked = v[4];
            break;
        case NN_OP_GN:
            op->u.gn.gamma = v[0], op->u.gn.dgamma = g[0], op->u.gn.beta = v[1], op->u.gn.dbeta = g[1];
            break;
        default:
            break;
        }
    }
}

int nn_net_build(nn_net **out, const nn_net_config *cfg) {
    *out = NULL;
    if (!(cfg->width > 0)) return pl_fail(PL_EINVAL, "model.width = %g (must be > 0)", cfg->width);
    nn_net *net = pl_calloc(1, sizeof *net, "network");
    if (!net) return PL_ENOMEM;
    net->cfg = *cfg;
    if (!net->cfg.workspace_bytes) net->cfg.workspace_bytes = NN_DEFAULT_WS_BYTES;
    nn_params_init(&net->params);
    int rc = nn_build_network(net);
    if (rc) {
        nn_net_destroy(net);
        return rc;
    }
    *out = net;
    return 0;
}

int nn_net_finish(nn_net *net, uint64_t seed) {
    int rc = nn_params_alloc(&net->params);
    if (rc) return rc;
    nn_net_point_views(net);
    nn_params_reset(&net->params, seed);
    return 0;
}

int nn_net_create(nn_net **out, const nn_net_config *cfg, uint64_t seed) {
    int rc = nn_net_build(out, cfg);
    if (!rc && (rc = nn_net_finish(*out, seed))) {
        nn_net_destroy(*out);
        *out = NULL;
    }
    return rc;
}

void nn_net_destroy(nn_net *net) {
    if (!net) return;
    nn_params_free(&net->params);
    free(net->ops);
    free(net->t);
    free(net->act);
    free(net->gbuf);
    free(net->aux);
    free(net->ws);
    free(net);
}

nn_params *nn_net_params(nn_net *net) { return &net->params; }

void nn_net_set_bn_sync(nn_net *net, void (*fn)(void *ctx, double *buf, int n), void *ctx) {
    for (int i = 0; i < net->nops; i++)
        if (net->ops[i].kind == NN_OP_BN) {
            net->ops[i].u.bn.sync = fn;
            net->ops[i].u.bn.sync_ctx = ctx;
        }
}
int nn_net_num_outputs(const nn_net *net) { return net->noutputs; }

static nn_dims op_in_dims(const nn_net *net, const nn_op *op) {
    nn_dims d = net->t[op->in0].dims;
    if (op->gtm) d = nn_dims_make(d.n, d.c * d.d, 1, d.h, d.w);
    return d;
}

static size_t align_up(size_t n) { return (n + NN_ALIGN_FLOATS - 1) / NN_ALIGN_FLOATS * NN_ALIGN_FLOATS; }

// Shape inference and memory plan for input dims `in`.
static int nn_net_plan(nn_net *net, nn_dims in) {
    net->planned = 0;
    net->t[0].dims = in;
    size_t act = 0, aux = 0, ws = 0;
    const size_t ws_bound = net->cfg.workspace_bytes / sizeof(float);
    for (int i = 0; i < net->nops; i++) {
        nn_op *op = &net->ops[i];
        nn_dims d = op_in_dims(net, op), o = d;
        int rc = 0;
        op->aux_bytes = 0;
        switch (op->kind) {
        case NN_OP_CONV:
            rc = conv3d_out_dims(&o, &op->u.conv.sh, d);
            if (!rc) ws = PL_MAX(ws, conv3d_workspace_floats(&op->u.conv.sh, d, ws_bound));
            break;
        case NN_OP_BN:
            op->aux_bytes = 2 * (size_t)d.c * sizeof(float);
            break;
        case NN_OP_GN:
            op->aux_bytes = 2 * (size_t)(d.n * op->u.gn.groups) * sizeof(float);
            break;
        case NN_OP_MAXPOOL:
            rc = maxpool3d_out_dims(&o, &op->u.pool, d);
            op->aux_bytes = (size_t)nn_dims_count(o) * sizeof(int32_t);
            break;
        case NN_OP_ADD: {
            nn_dims b = net->t[op->in1].dims;
            if (memcmp(&b, &d, sizeof d))
                rc = pl_fail(PL_EINVAL, "net: residual add of (%lld,%lld,%lld,%lld,%lld) and (%lld,%lld,%lld,%lld,%lld) at op %d",
                             (long long)d.n, (long long)d.c, (long long)d.d, (long long)d.h, (long long)d.w,
                             (long long)b.n, (long long)b.c, (long long)b.d, (long long)b.h, (long long)b.w, i);
            break;
        }
        case NN_OP_GAP:
            o = nn_dims_make(d.n, d.c, 1, 1, 1);
            break;
        case NN_OP_LINEAR:
            if (d.c * d.d * d.h * d.w != op->u.fc.in)
                rc = pl_fail(PL_EINVAL, "net: linear expects %lld inputs, got %lld", (long long)op->u.fc.in,
                             (long long)(d.c * d.d * d.h * d.w));
            o = nn_dims_make(d.n, op->u.fc.out, 1, 1, 1);
            break;
        }
        if (rc) return pl_fail(rc, "net: input (%lld,%lld,%lld,%lld,%lld) does not fit %s at op %d",
                               (long long)in.n, (long long)in.c, (long long)in.d, (long long)in.h,
                               (long long)in.w, nn_arch_name(net->cfg.arch), i);
        net->t[op->out].dims = o;
        op->aux_off = aux;
        aux += (op->aux_bytes + 63) / 64 * 64;
    }
    // activations: one region per tensor, except that a residual add writes in place over its
    // first input when nothing else reads that input and its producer's backward does not read
    // its own output (conv, or a norm without fused ReLU) - as PyTorch's `out += identity`.
    int *nuse = pl_calloc((size_t)net->nt + 1, sizeof(int), "tensor uses");
    if (!nuse) return PL_ENOMEM;
    for (int i = 0; i < net->nops; i++) {
        nuse[net->ops[i].in0]++;
        if (net->ops[i].kind == NN_OP_ADD) nuse[net->ops[i].in1]++;
    }
    for (int k = 0; k < net->noutputs; k++) nuse[net->outputs[k]] += 2;
    for (int i = 0; i < net->nops; i++) {
        nn_op *op = &net->ops[i];
        op->alias = 0;
        if (op->kind == NN_OP_ADD && op->in0 > 0 && nuse[op->in0] == 1) {
            const nn_op *pr = NULL;
            for (int j = 0; j < i; j++)
                if (net->ops[j].out == op->in0) pr = &net->ops[j];
            op->alias = pr && (pr->kind == NN_OP_CONV || ((pr->kind == NN_OP_BN || pr->kind == NN_OP_GN) && !pr->relu));
        }
        if (!op->alias) act += align_up((size_t)nn_dims_count(net->t[op->out].dims));
    }
    free(nuse);
    // gradient slots by liveness, in backward order
    int *busy = pl_malloc((size_t)net->nt * sizeof(int) + 1, "grad slot plan");
    size_t *slot_size = pl_calloc((size_t)net->nt + 1, sizeof(size_t), "grad slot sizes");
    if (!busy || !slot_size) {
        free(busy);
        free(slot_size);
        return PL_ENOMEM;
    }
    int nslots = 0;
    for (int i = 0; i < net->nt; i++) net->t[i].slot = -1, busy[i] = 0;
    // take a free slot: smallest one large enough, else the largest free one (grown)
#define NN_TAKE_SLOT(tid)                                                                   \
    do {                                                                                    \
        size_t need = align_up((size_t)nn_dims_count(net->t[tid].dims));                    \
        int best = -1;                                                                      \
        for (int s_ = 0; s_ < nslots; s_++) {                                               \
            if (busy[s_]) continue;                                                         \
            if (best < 0) { best = s_; continue; }                                          \
            int fits = slot_size[s_] >= need, bfits = slot_size[best] >= need;              \
            if ((fits && (!bfits || slot_size[s_] < slot_size[best])) ||                    \
                (!fits && !bfits && slot_size[s_] > slot_size[best]))                       \
                best = s_;                                                                  \
        }                                                                                   \
        if (best < 0) best = nslots++;                                                      \
        slot_size[best] = PL_MAX(slot_size[best], need);                                    \
        busy[best] = 1;                                                                     \
        net->t[tid].slot = best;                                                            \
    } while (0)
    for (int k = 0; k < net->noutputs; k++) NN_TAKE_SLOT(net->outputs[k]);
    for (int i = net->nops - 1; i >= 0; i--) {
        nn_op *op = &net->ops[i];
        int ins[2] = {op->in0, op->kind == NN_OP_ADD ? op->in1 : -1};
        for (int j = 0; j < 2; j++)
            if (ins[j] > 0 && net->t[ins[j]].slot < 0) NN_TAKE_SLOT(ins[j]);
        if (net->t[op->out].slot >= 0) busy[net->t[op->out].slot] = 0;  // producer done
    }
#undef NN_TAKE_SLOT
    size_t gfl = 0;
    for (int s = 0; s < nslots; s++) {
        size_t sz = slot_size[s];
        slot_size[s] = gfl;  // now the offset
        gfl += sz;
    }
    free(net->act);
    free(net->gbuf);
    free(net->aux);
    free(net->ws);
    net->act = pl_malloc(PL_MAX(act, (size_t)1) * sizeof(float), "activations");
    net->gbuf = pl_malloc(PL_MAX(gfl, (size_t)1) * sizeof(float), "activation gradients");
    net->aux = pl_malloc(PL_MAX(aux, (size_t)1), "saved statistics");
    net->ws = pl_malloc(PL_MAX(ws, (size_t)1) * sizeof(float), "conv workspace");
    if (!net->act || !net->gbuf || !net->aux || !net->ws) {
        free(busy);
        free(slot_size);
        return PL_ENOMEM;
    }
    size_t off = 0;
    for (int i = 0; i < net->nops; i++) {
        nn_tensor *t = &net->t[net->ops[i].out];
        if (net->ops[i].alias) {
            t->data = net->t[net->ops[i].in0].data;
            continue;
        }
        t->data = net->act + off;
        off += align_up((size_t)nn_dims_count(t->dims));
    }
    for (int i = 0; i < net->nt; i++)
        net->t[i].grad = net->t[i].slot >= 0 ? net->gbuf + slot_size[net->t[i].slot] : NULL;
    net->act_floats = act;
    net->grad_floats = gfl;
    net->aux_total = aux;
    net->ws_floats = PL_MAX(ws, (size_t)1);
    net->plan_in = in;
    net->planned = 1;
    free(busy);
    free(slot_size);
    LOG_DEBUG("net_plan arch:%s input:%lldx%lldx%lldx%lldx%lld act_mb:%.1f grad_mb:%.1f ws_mb:%.1f",
              nn_arch_name(net->cfg.arch), (long long)in.n, (long long)in.c, (long long)in.d,
              (long long)in.h, (long long)in.w, act * 4.0 / 1048576, gfl * 4.0 / 1048576, ws * 4.0 / 1048576);
    return 0;
}

size_t nn_net_plan_bytes(const nn_net *net) {
    return (net->act_floats + net->grad_floats + net->ws_floats) * sizeof(float) + net->aux_total;
}

static void nn_net_log_profile(const char *pass, const double *t) {
    LOG_INFO("net_profile pass:%s conv_s:%.3f bn_s:%.3f gn_s:%.3f maxpool_s:%.3f add_s:%.3f gap_s:%.3f linear_s:%.3f",
             pass, t[NN_OP_CONV], t[NN_OP_BN], t[NN_OP_GN], t[NN_OP_MAXPOOL], t[NN_OP_ADD], t[NN_OP_GAP], t[NN_OP_LINEAR]);
}

int nn_net_forward(nn_net *net, const float *x, nn_dims in, int train) {
    if (in.c != 1) return pl_fail(PL_EINVAL, "net: input has %lld channels, expected 1", (long long)in.c);
    if (net->cfg.backbone && net->cfg.gtm_depth > 0 && in.d != net->cfg.gtm_depth)
        return pl_fail(PL_EINVAL, "net: input depth %lld but the GTM was built for depth %d",
                       (long long)in.d, net->cfg.gtm_depth);
    if (!net->planned || memcmp(&in, &net->plan_in, sizeof in)) {
        int rc = nn_net_plan(net, in);
        if (rc) return rc;
    }
    net->t[0].data = (float *)x;  // read only: no op writes its input
    double prof[NN_OP_LINEAR + 1] = {0}, t0 = net->cfg.profile ? pl_time() : 0;
    for (int i = 0; i < net->nops; i++) {
        nn_op *op = &net->ops[i];
        nn_dims d = op_in_dims(net, op);
        const float *a = net->t[op->in0].data;
        float *y = net->t[op->out].data;
        float *aux = (float *)(net->aux + op->aux_off);
        switch (op->kind) {
        case NN_OP_CONV:
            conv3d_forward(y, a, &op->u.conv, d, net->ws, net->ws_floats);
            break;
        case NN_OP_BN:
            batchnorm3d_forward(y, aux, aux + d.c, a, &op->u.bn, d, train, op->relu);
            break;
        case NN_OP_GN:
            groupnorm_forward(y, aux, aux + d.n * op->u.gn.groups, a, &op->u.gn, d, op->relu);
            break;
        case NN_OP_MAXPOOL:
            maxpool3d_forward(y, (int32_t *)aux, a, &op->u.pool, d);
            break;
        case NN_OP_ADD:
            add_forward(y, a, net->t[op->in1].data, nn_dims_count(d), op->relu);
            break;
        case NN_OP_GAP:
            avgpool_global_forward(y, a, d);
            break;
        case NN_OP_LINEAR:
            linear_forward(y, a, &op->u.fc, d.n);
            break;
        }
        if (net->cfg.profile) {
            double t1 = pl_time();
            prof[op->kind] += t1 - t0;
            t0 = t1;
        }
    }
    if (net->cfg.profile) nn_net_log_profile("forward", prof);
    net->last_train = train;
    net->forwarded = 1;
    return 0;
}

float *nn_net_output(const nn_net *net, int i, nn_dims *dims) {
    PL_ASSERT(i >= 0 && i < net->noutputs && net->planned);
    const nn_tensor *t = &net->t[net->outputs[i]];
    if (dims) *dims = t->dims;
    return t->data;
}

float *nn_net_output_grad(nn_net *net, int i) {
    PL_ASSERT(i >= 0 && i < net->noutputs && net->planned);
    return net->t[net->outputs[i]].grad;
}

// Gradient buffer of an op input, zeroed on first use in this backward; NULL for the net input.
// With `fresh` (an op that can overwrite it) it is not zeroed: *fresh says whether this is the
// first use, so that the op writes the buffer rather than adds into it.
static float *input_grad(nn_net *net, int tid, int *fresh) {
    nn_tensor *t = &net->t[tid];
    if (fresh) *fresh = 0;
    if (!t->grad) return NULL;
    if (!t->zeroed) {
        if (fresh)
            *fresh = 1;
        else
            nn_parallel_zero(t->grad, nn_dims_count(t->dims));
        t->zeroed = 1;
    }
    return t->grad;
}

int nn_net_backward(nn_net *net, nn_grad_ready_fn cb, void *ctx) {
    if (!net->forwarded) return pl_fail(PL_EINVAL, "net: backward without a forward");
    for (int i = 0; i < net->nt; i++) net->t[i].zeroed = 0;
    for (int k = 0; k < net->noutputs; k++) net->t[net->outputs[k]].zeroed = 1;  // caller wrote them
    const nn_params *p = &net->params;
    double prof[NN_OP_LINEAR + 1] = {0}, t0 = net->cfg.profile ? pl_time() : 0;
    for (int i = net->nops - 1; i >= 0; i--) {
        nn_op *op = &net->ops[i];
        // a convolution writes its parameter gradients and a first-use input gradient itself;
        // a norm writes a first-use input gradient
        const int conv = op->kind == NN_OP_CONV;
        const int writes_dx = conv || op->kind == NN_OP_BN || op->kind == NN_OP_GN;
        size_t poff = 0, pcount = 0;
        if (op->npar > 0) {
            poff = p->info[op->pidx[0]].offset;
            const nn_param_info *last = &p->info[op->pidx[op->npar - 1]];
            pcount = last->offset + last->count - poff;
            if (!conv) nn_parallel_zero(p->grads + poff, (int64_t)pcount);
        }
        nn_dims d = op_in_dims(net, op);
        nn_tensor *to = &net->t[op->out];
        PL_ASSERT(to->zeroed);  // every tensor with a producer has a consumer or is an output
        const float *x = net->t[op->in0].data, *dy = to->grad, *y = to->data;
        float *aux = (float *)(net->aux + op->aux_off);
        int fresh = 0;
        float *dx = input_grad(net, op->in0, writes_dx ? &fresh : NULL);
        switch (op->kind) {
        case NN_OP_CONV:
            conv3d_backward_flags(dx, dy, x, &op->u.conv, d, net->ws, net->ws_floats,
                                  (fresh ? CONV3D_WRITE_DIN : 0) | (op->npar > 0 ? CONV3D_WRITE_DW : 0));
            break;
        case NN_OP_BN:
            batchnorm3d_backward(dx, dy, x, y, aux, aux + d.c, &op->u.bn, d, net->last_train, op->relu, fresh);
            break;
        case NN_OP_GN:
            groupnorm_backward(dx, dy, x, y, aux, aux + d.n * op->u.gn.groups, &op->u.gn, d, op->relu, fresh);
            break;
        case NN_OP_MAXPOOL:
            if (dx) maxpool3d_backward(dx, dy, (const int32_t *)aux, d, to->dims);
            break;
        case NN_OP_ADD:
            add_backward(dx, input_grad(net, op->in1, NULL), dy, y, nn_dims_count(d), op->relu);
            break;
        case NN_OP_GAP:
            if (dx) avgpool_global_backward(dx, dy, d);
            break;
        case NN_OP_LINEAR:
            linear_backward(dx, dy, x, &op->u.fc, d.n);
            break;
        }
        if (cb && pcount) cb(ctx, poff, pcount);
        if (net->cfg.profile) {
            double t1 = pl_time();
            prof[op->kind] += t1 - t0;
            t0 = t1;
        }
    }
    if (net->cfg.profile) nn_net_log_profile("backward", prof);
    return 0;
}
