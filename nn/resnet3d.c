// resnet3d: builders of ResNet3D-18, ResNet3DV1c-18 and P3D-63 (DESIGN.md "Networks") as op
// lists for net.c, registering parameters with PyTorch state_dict names in execution order.
// P3D-63 puts the stage stride (1,2,2) on the bottleneck's first 1x1x1 conv, as the P3D
// reference code does (Qiu et al. 2017, pseudo-3d-pytorch), and cycles block types A/B/C over
// all blocks of the network (one global counter).
#include <math.h>
#include <stdio.h>

#include "nn/nn_impl.h"
#include "nn/pl.h"

static int64_t width_ch(const nn_net *net, int base) {
    long v = lround(base * net->cfg.width);
    return v < 1 ? 1 : v;
}

static int reg(nn_net *net, int *idx, const char *prefix, const char *suffix, enum nn_param_kind kind,
               int ndim, const int64_t *shape, enum nn_init init, int64_t fan_in) {
    char name[NN_NAME_MAX];
    int n = snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    if (n < 0 || n >= (int)sizeof name) return pl_fail(PL_EINVAL, "net: parameter name '%s.%s' too long", prefix, suffix);
    return nn_params_add(&net->params, idx, name, kind, ndim, shape, init, fan_in);
}

// Conv3d (bias-free unless bias) named `name`; returns the output tensor id or an error < 0.
static int b_conv(nn_net *net, const char *name, int in, int64_t ic, int64_t oc, const int64_t k[3],
                  const int64_t s[3], const int64_t p[3], int bias) {
    nn_op *op = nn_net_add_op(net, NN_OP_CONV, in, -1);
    if (!op) return PL_ENOMEM;
    op->u.conv.sh = conv3d_shape_make(ic, oc, k, s, p, 1, bias);
    int64_t shape[5] = {oc, ic, k[0], k[1], k[2]}, fan = ic * k[0] * k[1] * k[2];
    int out = op->out, rc, i0 = -1, i1 = -1;
    rc = reg(net, &i0, name, "weight", NN_PARAM, 5, shape, NN_INIT_FAN_IN_UNIFORM, fan);
    if (!rc && bias) rc = reg(net, &i1, name, "bias", NN_PARAM, 1, &oc, NN_INIT_FAN_IN_UNIFORM, fan);
    if (rc) return rc;
    op = &net->ops[net->nops - 1];
    op->pidx[0] = i0, op->pidx[1] = i1, op->npar = bias ? 2 : 1;
    return out;
}

static int b_norm(nn_net *net, const char *name, int in, int64_t c, int relu) {
    int gn = net->cfg.norm == NN_NORM_GN;
    if (gn && (net->cfg.gn_groups < 1 || c % net->cfg.gn_groups))
        return pl_fail(PL_EINVAL, "net: %s has %lld channels, not divisible by model.gn_groups = %d",
                       name, (long long)c, net->cfg.gn_groups);
    nn_op *op = nn_net_add_op(net, gn ? NN_OP_GN : NN_OP_BN, in, -1);
    if (!op) return PL_ENOMEM;
    op->relu = relu;
    if (gn) {
        op->u.gn.c = c, op->u.gn.groups = net->cfg.gn_groups, op->u.gn.eps = 1e-5f;
    } else {
        op->u.bn.c = c, op->u.bn.eps = 1e-5f, op->u.bn.momentum = 0.1f;
    }
    int out = op->out, idx[5] = {-1, -1, -1, -1, -1}, rc;
    rc = reg(net, &idx[0], name, "weight", NN_PARAM, 1, &c, NN_INIT_ONES, 0);
    if (!rc) rc = reg(net, &idx[1], name, "bias", NN_PARAM, 1, &c, NN_INIT_ZEROS, 0);
    if (!rc && !gn) rc = reg(net, &idx[2], name, "running_mean", NN_BUFFER, 1, &c, NN_INIT_ZEROS, 0);
    if (!rc && !gn) rc = reg(net, &idx[3], name, "running_var", NN_BUFFER, 1, &c, NN_INIT_ONES, 0);
    if (!rc && !gn) rc = reg(net, &idx[4], name, "num_batches_tracked", NN_BUFFER, 0, NULL, NN_INIT_ZEROS, 0);
    if (rc) return rc;
    nn_params_set_role(&net->params, idx[0], NN_ROLE_NORM);
    nn_params_set_role(&net->params, idx[1], NN_ROLE_NORM);
    op = &net->ops[net->nops - 1];
    for (int i = 0; i < 5; i++) op->pidx[i] = idx[i];
    op->npar = 2;
    return out;
}

static int b_add(nn_net *net, int a, int b, int relu) {
    nn_op *op = nn_net_add_op(net, NN_OP_ADD, a, b);
    if (!op) return PL_ENOMEM;
    op->relu = relu;
    return op->out;
}

// conv + norm (+ ReLU): the unit every block is made of.
static int b_cn(nn_net *net, const char *conv, const char *norm, int in, int64_t ic, int64_t oc,
                const int64_t k[3], const int64_t s[3], const int64_t p[3], int relu) {
    int t = b_conv(net, conv, in, ic, oc, k, s, p, 0);
    return t < 0 ? t : b_norm(net, norm, t, oc, relu);
}

#define TRY(x) do { int try_rc_ = (x); if (try_rc_ < 0) return try_rc_; } while (0)

static const int64_t K1[3] = {1, 1, 1}, K3[3] = {3, 3, 3}, S1[3] = {1, 1, 1}, P0[3] = {0, 0, 0},
                     P1[3] = {1, 1, 1}, KS[3] = {1, 3, 3}, PS[3] = {0, 1, 1}, KT[3] = {3, 1, 1},
                     PT[3] = {1, 0, 0};

static int b_stem(nn_net *net, int x, int64_t *c_out) {
    const int64_t s122[3] = {1, 2, 2};
    int64_t c64 = width_ch(net, 64);
    int t;
    if (net->cfg.arch == NN_ARCH_RESNET3DV1C18) {
        int64_t c32 = width_ch(net, 32);
        TRY(t = b_cn(net, "stem.0.conv", "stem.0.bn", x, 1, c32, K3, s122, P1, 1));
        TRY(t = b_cn(net, "stem.1.conv", "stem.1.bn", t, c32, c32, K3, S1, P1, 1));
        TRY(t = b_cn(net, "stem.2.conv", "stem.2.bn", t, c32, c64, K3, S1, P1, 1));
    } else if (net->cfg.arch == NN_ARCH_RESNET3D18) {
        const int64_t k7[3] = {7, 7, 7}, p3[3] = {3, 3, 3};
        TRY(t = b_cn(net, "conv1", "bn1", x, 1, c64, k7, s122, p3, 1));
    } else {
        const int64_t k7[3] = {1, 7, 7}, p3[3] = {0, 3, 3};
        TRY(t = b_cn(net, "conv1", "bn1", x, 1, c64, k7, s122, p3, 1));
    }
    nn_op *op = nn_net_add_op(net, NN_OP_MAXPOOL, t, -1);
    if (!op) return PL_ENOMEM;
    op->u.pool = (maxpool3d_shape){{3, 3, 3}, {1, 2, 2}, {1, 1, 1}};
    *c_out = c64;
    return op->out;
}

static int b_basic(nn_net *net, const char *pre, int x, int64_t inplanes, int64_t planes, int64_t st) {
    char a[NN_NAME_MAX + 16], b[NN_NAME_MAX + 16];   // longer names are rejected by reg()
    const int64_t s[3] = {1, st, st};
    int h, sc = x;
    snprintf(a, sizeof a, "%s.conv1", pre), snprintf(b, sizeof b, "%s.bn1", pre);
    TRY(h = b_cn(net, a, b, x, inplanes, planes, K3, s, P1, 1));
    snprintf(a, sizeof a, "%s.conv2", pre), snprintf(b, sizeof b, "%s.bn2", pre);
    TRY(h = b_cn(net, a, b, h, planes, planes, K3, S1, P1, 0));
    if (st != 1 || inplanes != planes) {
        snprintf(a, sizeof a, "%s.downsample.0", pre), snprintf(b, sizeof b, "%s.downsample.1", pre);
        TRY(sc = b_cn(net, a, b, x, inplanes, planes, K1, s, P0, 0));
    }
    return b_add(net, h, sc, 1);
}

static int b_p3d(nn_net *net, const char *pre, int x, int64_t inplanes, int64_t planes, int64_t st,
                 int type) {
    char a[NN_NAME_MAX + 16], b[NN_NAME_MAX + 16];   // longer names are rejected by reg()
    const int64_t s[3] = {1, st, st};
    int h, u, sp, tp, sc = x;
    snprintf(a, sizeof a, "%s.conv1", pre), snprintf(b, sizeof b, "%s.bn1", pre);
    TRY(h = b_cn(net, a, b, x, inplanes, planes, K1, s, P0, 1));
    snprintf(a, sizeof a, "%s.conv2", pre), snprintf(b, sizeof b, "%s.bn2", pre);
    TRY(sp = b_cn(net, a, b, h, planes, planes, KS, S1, PS, 1));  // S(h)
    snprintf(a, sizeof a, "%s.conv3", pre), snprintf(b, sizeof b, "%s.bn3", pre);
    if (type == 0) {  // A: T(S(x))
        TRY(u = b_cn(net, a, b, sp, planes, planes, KT, S1, PT, 1));
    } else {          // B: S(x) + T(x);  C: S(x) + T(S(x))
        TRY(tp = b_cn(net, a, b, type == 1 ? h : sp, planes, planes, KT, S1, PT, 1));
        TRY(u = b_add(net, sp, tp, 0));
    }
    snprintf(a, sizeof a, "%s.conv4", pre), snprintf(b, sizeof b, "%s.bn4", pre);
    TRY(u = b_cn(net, a, b, u, planes, 4 * planes, K1, S1, P0, 0));
    if (st != 1 || inplanes != 4 * planes) {
        snprintf(a, sizeof a, "%s.downsample.0", pre), snprintf(b, sizeof b, "%s.downsample.1", pre);
        TRY(sc = b_cn(net, a, b, x, inplanes, 4 * planes, K1, s, P0, 0));
    }
    return b_add(net, u, sc, 1);
}

int nn_build_network(nn_net *net) {
    const nn_net_config *cfg = &net->cfg;
    int x = nn_net_add_tensor(net);  // tensor 0: the input
    TRY(x);
    int64_t c = 0;
    int t = b_stem(net, x, &c);
    TRY(t);
    static const int p3d_blocks[4] = {3, 4, 6, 3};
    int stage_out[4], nblock = 0;
    int64_t stage_c[4];
    for (int k = 0; k < 4; k++) {
        int64_t planes = width_ch(net, 64 << k);
        int nb = cfg->arch == NN_ARCH_P3D63 ? p3d_blocks[k] : 2;
        for (int b = 0; b < nb; b++) {
            char pre[NN_NAME_MAX];
            snprintf(pre, sizeof pre, "layer%d.%d", k + 1, b);
            int64_t st = (b == 0 && k > 0) ? 2 : 1;
            if (cfg->arch == NN_ARCH_P3D63) {
                TRY(t = b_p3d(net, pre, t, c, planes, st, nblock++ % 3));
                c = 4 * planes;
            } else {
                TRY(t = b_basic(net, pre, t, c, planes, st));
                c = planes;
            }
        }
        stage_out[k] = t;
        stage_c[k] = c;
    }
    if (cfg->backbone) {
        for (int k = 0; k < 4; k++) {
            net->outputs[k] = stage_out[k];
            if (cfg->gtm_depth <= 0) continue;
            // GTM: Conv2d(C*D, C, 1, groups=C, bias=False) on (N, C*D, H, W); weight (C, D, 1, 1)
            int64_t ck = stage_c[k], dd = cfg->gtm_depth;
            nn_op *op = nn_net_add_op(net, NN_OP_CONV, stage_out[k], -1);
            if (!op) return PL_ENOMEM;
            op->gtm = 1;
            op->u.conv.sh = conv3d_shape_make(ck * dd, ck, K1, S1, P0, ck, 0);
            int out = op->out, idx;
            char name[NN_NAME_MAX];
            snprintf(name, sizeof name, "gtm.%d", k);
            int64_t shape[4] = {ck, dd, 1, 1};
            TRY(reg(net, &idx, name, "weight", NN_PARAM, 4, shape, NN_INIT_FAN_IN_UNIFORM, dd));
            op = &net->ops[net->nops - 1];
            op->pidx[0] = idx, op->npar = 1;
            net->outputs[k] = out;
        }
        net->noutputs = 4;
        return 0;
    }
    if (cfg->num_classes < 1) return pl_fail(PL_EINVAL, "model.num_classes = %d (must be >= 1)", cfg->num_classes);
    nn_op *op = nn_net_add_op(net, NN_OP_GAP, t, -1);
    if (!op) return PL_ENOMEM;
    int g = op->out, wi, bi;
    op = nn_net_add_op(net, NN_OP_LINEAR, g, -1);
    if (!op) return PL_ENOMEM;
    int64_t nc = cfg->num_classes, shape[2] = {nc, c};
    op->u.fc.in = c, op->u.fc.out = nc;
    int out = op->out;
    TRY(nn_params_add(&net->params, &wi, "fc.weight", NN_PARAM, 2, shape, NN_INIT_FAN_IN_UNIFORM, c));
    TRY(nn_params_add(&net->params, &bi, "fc.bias", NN_PARAM, 1, &nc, NN_INIT_FAN_IN_UNIFORM, c));
    op = &net->ops[net->nops - 1];
    op->pidx[0] = wi, op->pidx[1] = bi, op->npar = 2;
    net->outputs[0] = out;
    net->noutputs = 1;
    return 0;
}
