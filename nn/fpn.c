// fpn: lateral 1x1 convs, top-down nearest resize + add, 3x3 output convs, P6 by subsampling.
#include "nn/fpn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv3d.h"

static const size_t FPN_DEFAULT_WS_FLOATS = 16u << 20;

struct fpn {
    fpn_config cfg;
    conv3d lat[FPN_MAX_IN], out[FPN_MAX_IN];
    int lat_w[FPN_MAX_IN], lat_b[FPN_MAX_IN], out_w[FPN_MAX_IN], out_b[FPN_MAX_IN];  // param indices
    // plan
    nn_dims in_dims[FPN_MAX_IN], od[FPN_MAX_IN + 1];
    const float *in[FPN_MAX_IN];
    float *m[FPN_MAX_IN];     // (N, C, 1, H_i, W_i) merged laterals (input of the 3x3 convs)
    float *p[FPN_MAX_IN + 1]; // outputs
    float *dp[FPN_MAX_IN + 1];
    float *dm[FPN_MAX_IN];
    float *arena;
    size_t arena_cap;
    float *ws;
    size_t ws_floats, ws_cap;
};

static int fpn_add_conv(nn_params *p, int *wi, int *bi, const char *prefix, int i, int64_t ic,
                        int64_t oc, int64_t k) {
    char name[NN_NAME_MAX];
    int64_t ws[4] = {oc, ic, k, k};
    snprintf(name, sizeof name, "%s.%d.conv.weight", prefix, i);
    int rc = nn_params_add(p, wi, name, NN_PARAM, 4, ws, NN_INIT_FAN_IN_UNIFORM, ic * k * k);
    if (rc) return rc;
    snprintf(name, sizeof name, "%s.%d.conv.bias", prefix, i);
    return nn_params_add(p, bi, name, NN_PARAM, 1, &oc, NN_INIT_FAN_IN_UNIFORM, ic * k * k);
}

int fpn_create(fpn **out, const fpn_config *cfg, nn_params *p) {
    *out = NULL;
    if (cfg->nin < 1 || cfg->nin > FPN_MAX_IN || cfg->out_channels < 1 ||
        (cfg->num_outs != cfg->nin && cfg->num_outs != cfg->nin + 1))
        return pl_fail(PL_EINVAL, "fpn: nin = %d, out_channels = %lld, num_outs = %d (need 1..%d inputs, num_outs nin or nin+1)",
                       cfg->nin, (long long)cfg->out_channels, cfg->num_outs, FPN_MAX_IN);
    fpn *f = pl_calloc(1, sizeof *f, "fpn");
    if (!f) return PL_ENOMEM;
    f->cfg = *cfg;
    if (!f->cfg.ws_floats) f->cfg.ws_floats = FPN_DEFAULT_WS_FLOATS;
    const int64_t k1[3] = {1, 1, 1}, k3[3] = {1, 3, 3}, s1[3] = {1, 1, 1}, p0[3] = {0, 0, 0},
                  p1[3] = {0, 1, 1};
    const int64_t c = cfg->out_channels;
    int rc = 0;
    for (int i = 0; i < cfg->nin && !rc; i++) {
        f->lat[i].sh = conv3d_shape_make(cfg->in_channels[i], c, k1, s1, p0, 1, 1);
        rc = fpn_add_conv(p, &f->lat_w[i], &f->lat_b[i], "neck.lateral_convs", i, cfg->in_channels[i], c, 1);
    }
    for (int i = 0; i < cfg->nin && !rc; i++) {
        f->out[i].sh = conv3d_shape_make(c, c, k3, s1, p1, 1, 1);
        rc = fpn_add_conv(p, &f->out_w[i], &f->out_b[i], "neck.fpn_convs", i, c, c, 3);
    }
    if (rc) {
        fpn_destroy(f);
        return rc;
    }
    *out = f;
    return 0;
}

static void fpn_bind_conv(conv3d *l, const nn_params *p, int wi, int bi) {
    l->w = nn_params_data(p, wi);
    l->dw = nn_params_grad(p, wi);
    l->b = nn_params_data(p, bi);
    l->db = nn_params_grad(p, bi);
}

void fpn_bind(fpn *f, const nn_params *p) {
    for (int i = 0; i < f->cfg.nin; i++) {
        fpn_bind_conv(&f->lat[i], p, f->lat_w[i], f->lat_b[i]);
        fpn_bind_conv(&f->out[i], p, f->out_w[i], f->out_b[i]);
    }
}

// xavier_uniform (gain 1): U(-a, a), a = sqrt(6 / (fan_in + fan_out)), bias 0
static void fpn_xavier(conv3d *l, pl_rng *rng) {
    const conv3d_shape *s = &l->sh;
    int64_t k = s->k[0] * s->k[1] * s->k[2];
    double a = sqrt(6.0 / (double)(s->ic * k + s->oc * k));
    int64_t n = conv3d_weight_count(s);
    for (int64_t i = 0; i < n; i++) l->w[i] = (float)pl_rng_range(rng, -a, a);
    for (int64_t i = 0; i < s->oc; i++) l->b[i] = 0.0f;
}

void fpn_init_weights(fpn *f, pl_rng *rng) {
    for (int i = 0; i < f->cfg.nin; i++) fpn_xavier(&f->lat[i], rng);
    for (int i = 0; i < f->cfg.nin; i++) fpn_xavier(&f->out[i], rng);
}

void fpn_destroy(fpn *f) {
    if (!f) return;
    free(f->arena);
    free(f->ws);
    free(f);
}

int fpn_num_outputs(const fpn *f) { return f->cfg.num_outs; }

float *fpn_output(const fpn *f, int i, nn_dims *dims) {
    PL_ASSERT(i >= 0 && i < f->cfg.num_outs);
    if (dims) *dims = f->od[i];
    return f->p[i];
}

float *fpn_output_grad(const fpn *f, int i) {
    PL_ASSERT(i >= 0 && i < f->cfg.num_outs);
    return f->dp[i];
}

void fpn_zero_output_grads(fpn *f) {
    for (int i = 0; i < f->cfg.num_outs; i++)
        memset(f->dp[i], 0, (size_t)nn_dims_count(f->od[i]) * sizeof(float));
}

// Nearest resize of the (H, W) planes, PyTorch 'nearest': src = floor(dst * in / out).
// add: y += resize(x); backward (transpose): dx += resize^T(dy).
static void fpn_resize_add(float *y, const float *x, int64_t planes, int64_t ih, int64_t iw,
                           int64_t oh, int64_t ow) {
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * ih * iw;
        float *yp = y + pl * oh * ow;
        for (int64_t r = 0; r < oh; r++) {
            const float *xr = xp + PL_MIN(r * ih / oh, ih - 1) * iw;
            for (int64_t c = 0; c < ow; c++) yp[r * ow + c] += xr[PL_MIN(c * iw / ow, iw - 1)];
        }
    }
}

static void fpn_resize_add_t(float *dx, const float *dy, int64_t planes, int64_t ih, int64_t iw,
                             int64_t oh, int64_t ow) {
    for (int64_t pl = 0; pl < planes; pl++) {
        float *xp = dx + pl * ih * iw;
        const float *yp = dy + pl * oh * ow;
        for (int64_t r = 0; r < oh; r++) {
            float *xr = xp + PL_MIN(r * ih / oh, ih - 1) * iw;
            for (int64_t c = 0; c < ow; c++) xr[PL_MIN(c * iw / ow, iw - 1)] += yp[r * ow + c];
        }
    }
}

static int fpn_plan(fpn *f, const nn_dims *in_dims) {
    const int nin = f->cfg.nin;
    const int64_t c = f->cfg.out_channels;
    size_t total = 0, ws = 0;
    for (int i = 0; i < nin; i++) {
        nn_dims d = in_dims[i];
        if (d.d != 1 || d.c != f->cfg.in_channels[i] || d.n != in_dims[0].n || d.h < 1 || d.w < 1)
            return pl_fail(PL_EINVAL, "fpn: input %d is (%lld, %lld, %lld, %lld, %lld), expected (N=%lld, %lld, 1, H, W)",
                           i, (long long)d.n, (long long)d.c, (long long)d.d, (long long)d.h,
                           (long long)d.w, (long long)in_dims[0].n, (long long)f->cfg.in_channels[i]);
        f->in_dims[i] = d;
        f->od[i] = nn_dims_make(d.n, c, 1, d.h, d.w);
        total += 4 * (size_t)nn_dims_count(f->od[i]);  // m, p, dp, dm
        ws = PL_MAX(ws, conv3d_workspace_floats(&f->out[i].sh, f->od[i], f->cfg.ws_floats));
    }
    if (f->cfg.num_outs > nin) {
        nn_dims t = f->od[nin - 1];
        f->od[nin] = nn_dims_make(t.n, c, 1, (t.h - 1) / 2 + 1, (t.w - 1) / 2 + 1);
        total += 2 * (size_t)nn_dims_count(f->od[nin]);
    }
    if (total > f->arena_cap) {
        free(f->arena);
        f->arena = pl_malloc(total * sizeof(float), "fpn activations");
        f->arena_cap = f->arena ? total : 0;
        if (!f->arena) return PL_ENOMEM;
    }
    if (ws > f->ws_cap) {
        free(f->ws);
        f->ws = pl_malloc(ws * sizeof(float), "fpn workspace");
        f->ws_cap = f->ws ? ws : 0;
        if (!f->ws) return PL_ENOMEM;
    }
    f->ws_floats = f->ws_cap;
    float *a = f->arena;
    for (int i = 0; i < nin; i++) {
        size_t n = (size_t)nn_dims_count(f->od[i]);
        f->m[i] = a, a += n;
        f->p[i] = a, a += n;
        f->dp[i] = a, a += n;
        f->dm[i] = a, a += n;
    }
    if (f->cfg.num_outs > nin) {
        size_t n = (size_t)nn_dims_count(f->od[nin]);
        f->p[nin] = a, a += n;
        f->dp[nin] = a, a += n;
    }
    return 0;
}

int fpn_forward(fpn *f, const float *const *in, const nn_dims *in_dims) {
    int rc = fpn_plan(f, in_dims);
    if (rc) return rc;
    fpn_zero_output_grads(f);
    const int nin = f->cfg.nin;
    for (int i = 0; i < nin; i++) {
        f->in[i] = in[i];
        conv3d_forward(f->m[i], in[i], &f->lat[i], in_dims[i], f->ws, f->ws_floats);
    }
    // top-down: M_{i-1} += nearest_resize(M_i) to the finer size
    for (int i = nin - 1; i > 0; i--) {
        nn_dims a = f->od[i], b = f->od[i - 1];
        fpn_resize_add(f->m[i - 1], f->m[i], a.n * a.c, a.h, a.w, b.h, b.w);
    }
    for (int i = 0; i < nin; i++) conv3d_forward(f->p[i], f->m[i], &f->out[i], f->od[i], f->ws, f->ws_floats);
    if (f->cfg.num_outs > nin) {
        // max_pool2d(kernel 1, stride 2): P6[y][x] = P5[2y][2x]
        nn_dims s = f->od[nin - 1], t = f->od[nin];
        for (int64_t pl = 0; pl < t.n * t.c; pl++)
            for (int64_t y = 0; y < t.h; y++)
                for (int64_t x = 0; x < t.w; x++)
                    f->p[nin][(pl * t.h + y) * t.w + x] = f->p[nin - 1][(pl * s.h + 2 * y) * s.w + 2 * x];
    }
    return 0;
}

int fpn_backward(fpn *f, float *const *din) {
    const int nin = f->cfg.nin;
    if (f->cfg.num_outs > nin) {
        nn_dims s = f->od[nin - 1], t = f->od[nin];
        for (int64_t pl = 0; pl < t.n * t.c; pl++)
            for (int64_t y = 0; y < t.h; y++)
                for (int64_t x = 0; x < t.w; x++)
                    f->dp[nin - 1][(pl * s.h + 2 * y) * s.w + 2 * x] += f->dp[nin][(pl * t.h + y) * t.w + x];
    }
    for (int i = 0; i < nin; i++) {
        memset(f->dm[i], 0, (size_t)nn_dims_count(f->od[i]) * sizeof(float));
        conv3d_backward(f->dm[i], f->dp[i], f->m[i], &f->out[i], f->od[i], f->ws, f->ws_floats);
    }
    // top-down transpose, finest first: dM_i is complete once dM_{i-1} has passed its share up
    for (int i = 1; i < nin; i++) {
        nn_dims a = f->od[i], b = f->od[i - 1];
        fpn_resize_add_t(f->dm[i], f->dm[i - 1], a.n * a.c, a.h, a.w, b.h, b.w);
    }
    for (int i = 0; i < nin; i++)
        conv3d_backward(din ? din[i] : NULL, f->dm[i], f->in[i], &f->lat[i], f->in_dims[i], f->ws, f->ws_floats);
    return 0;
}
