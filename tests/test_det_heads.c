// test_det_heads: FPN (hand case with identity-like weights incl. a non-2x size, P6 by
// subsampling; finite-difference gradients of inputs and parameters), RPN head (hand-made
// targets and loss, finite-difference gradients through the real loss, proposals by hand incl.
// NMS and the empty-box filter), box head (hand-made RoI sampling with gt as proposals, the
// multi-class loss by hand, test decoding + per-class NMS by hand, finite-difference gradients),
// crowd (ignore) regions in RPN and RoI assignment, and the mmdet parameter names and shapes.
#include "nn/bbox_head.h"
#include "nn/fpn.h"
#include "nn/rpn_head.h"
#include "nn/sgd.h"
#include "tests/test_util.h"

// ---------------------------------------------------------------- FPN
static void test_fpn_hand(void) {
    nn_params p;
    nn_params_init(&p);
    fpn_config fc = {2, {1, 1}, 1, 3, 0};
    fpn *f;
    PL_ASSERT(fpn_create(&f, &fc, &p) == 0);
    PL_ASSERT(nn_params_alloc(&p) == 0);
    fpn_bind(f, &p);
    // laterals: w 1 b 0 (level 0), w 2 b 1 (level 1); output convs: centre tap 1 (identity)
    nn_params_data(&p, nn_params_find(&p, "neck.lateral_convs.0.conv.weight"))[0] = 1;
    nn_params_data(&p, nn_params_find(&p, "neck.lateral_convs.1.conv.weight"))[0] = 2;
    nn_params_data(&p, nn_params_find(&p, "neck.lateral_convs.1.conv.bias"))[0] = 1;
    nn_params_data(&p, nn_params_find(&p, "neck.fpn_convs.0.conv.weight"))[4] = 1;
    nn_params_data(&p, nn_params_find(&p, "neck.fpn_convs.1.conv.weight"))[4] = 1;
    // C2 3x3 (odd: nearest resize 2 -> 3 maps rows 0,0,1), C3 2x2
    float c2[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, c3[4] = {10, 20, 30, 40};
    const float *in[2] = {c2, c3};
    nn_dims d[2] = {nn_dims_make(1, 1, 1, 3, 3), nn_dims_make(1, 1, 1, 2, 2)};
    PL_ASSERT(fpn_forward(f, in, d) == 0);
    nn_dims od;
    float *p0 = fpn_output(f, 0, &od), *p1 = fpn_output(f, 1, NULL), *p2 = fpn_output(f, 2, NULL);
    // M1 = 2*C3+1 = [21 41; 61 81]; M0 = C2 + resize(M1): rows (0,0,1) cols (0,0,1)
    const float w1[4] = {21, 41, 61, 81};
    const float w0[9] = {1 + 21, 2 + 21, 3 + 41, 4 + 21, 5 + 21, 6 + 41, 7 + 61, 8 + 61, 9 + 81};
    tu_check("FPN hand: P3 = 2 C3 + 1", tu_rel_diff(p1, w1, 4, 1), 0);
    tu_check("FPN hand: P2 = C2 + nearest(P3 -> 3x3)", tu_rel_diff(p0, w0, 9, 1), 0);
    nn_dims d2;
    fpn_output(f, 2, &d2);
    tu_check_near("FPN hand: P4 (extra) is 1x1", (double)(d2.h * 10 + d2.w), 11, 0);
    tu_check_near("FPN hand: P4 = max_pool(k1, s2) of P3 = P3[0][0]", p2[0], 21, 0);
    tu_check_near("FPN output dims of P2 (3x3, 1 channel)", (double)(od.c * 100 + od.h * 10 + od.w), 133, 0);
    fpn_destroy(f);
    nn_params_free(&p);
}

typedef struct {
    fpn *f;
    float *in[4];
    nn_dims d[4];
    float *r[5];
} fctx;

static double floss(void *vc) {
    fctx *c = vc;
    PL_ASSERT(fpn_forward(c->f, (const float *const *)c->in, c->d) == 0);
    double s = 0;
    for (int i = 0; i < fpn_num_outputs(c->f); i++) {
        nn_dims od;
        float *o = fpn_output(c->f, i, &od);
        for (int64_t j = 0; j < nn_dims_count(od); j++) s += (double)o[j] * c->r[i][j];
    }
    return s;
}

static void test_fpn_grad(pl_rng *rng, int odd) {
    nn_params p;
    nn_params_init(&p);
    fpn_config fc = {4, {3, 4, 5, 6}, 4, 5, 0};
    fpn *f;
    PL_ASSERT(fpn_create(&f, &fc, &p) == 0);
    PL_ASSERT(nn_params_alloc(&p) == 0);
    nn_params_reset(&p, 7);
    fpn_bind(f, &p);
    fpn_init_weights(f, rng);
    fctx c = {0};
    c.f = f;
    const int64_t hs[4] = {odd ? 7 : 8, 4, 2, 1}, ws[4] = {odd ? 9 : 8, odd ? 5 : 4, odd ? 3 : 2, odd ? 2 : 1};
    float *din[4];
    for (int i = 0; i < 4; i++) {
        c.d[i] = nn_dims_make(2, fc.in_channels[i], 1, hs[i], ws[i]);
        c.in[i] = tu_alloc(nn_dims_count(c.d[i]));
        din[i] = tu_alloc(nn_dims_count(c.d[i]));
        tu_fill(c.in[i], nn_dims_count(c.d[i]), rng, -1, 1);
    }
    PL_ASSERT(fpn_forward(f, (const float *const *)c.in, c.d) == 0);
    for (int i = 0; i < 5; i++) {
        nn_dims od;
        fpn_output(f, i, &od);
        c.r[i] = tu_alloc(nn_dims_count(od));
        tu_fill(c.r[i], nn_dims_count(od), rng, -1, 1);
    }
    floss(&c);
    for (int i = 0; i < 5; i++) {
        nn_dims od;
        fpn_output(f, i, &od);
        memcpy(fpn_output_grad(f, i), c.r[i], (size_t)nn_dims_count(od) * sizeof(float));
    }
    memset(p.grads, 0, p.nparams * sizeof(float));
    PL_ASSERT(fpn_backward(f, din) == 0);
    double md = 0;
    for (int i = 0; i < 4; i++)
        md = fmax(md, tu_fd_check(floss, &c, c.in[i], din[i], nn_dims_count(c.d[i]), 60, 1e-2, rng));
    char what[96];
    snprintf(what, sizeof what, "FPN dL/dC_k vs finite differences (%s sizes)", odd ? "odd" : "2x");
    tu_check(what, md, 2e-3);
    float *g = tu_alloc((int64_t)p.nparams);
    memcpy(g, p.grads, p.nparams * sizeof(float));
    md = tu_fd_check(floss, &c, p.params, g, (int64_t)p.nparams, 300, 1e-2, rng);
    snprintf(what, sizeof what, "FPN parameter gradients vs finite differences (%s sizes)", odd ? "odd" : "2x");
    tu_check(what, md, 2e-3);
    if (!odd) {
        int i0 = nn_params_find(&p, "neck.lateral_convs.0.conv.weight");
        int i3 = nn_params_find(&p, "neck.fpn_convs.3.conv.bias");
        int i9 = nn_params_find(&p, "neck.fpn_convs.3.conv.weight");
        tu_check_near("FPN names: lateral_convs.0 weight is (4, 3, 1, 1)",
                      i0 >= 0 ? (double)(p.info[i0].shape[0] * 1000 + p.info[i0].shape[1] * 100 + p.info[i0].shape[2] * 10 + p.info[i0].shape[3]) : -1,
                      4311, 0);
        tu_check_near("FPN names: fpn_convs.3 weight is (4, 4, 3, 3)",
                      i9 >= 0 ? (double)(p.info[i9].shape[0] * 1000 + p.info[i9].shape[1] * 100 + p.info[i9].shape[2] * 10 + p.info[i9].shape[3]) : -1,
                      4433, 0);
        tu_check_near("FPN names: fpn_convs.3 bias present, 16 entries in all", i3 >= 0 ? p.n : -1, 16, 0);
    }
    free(g);
    for (int i = 0; i < 4; i++) {
        free(c.in[i]);
        free(din[i]);
    }
    for (int i = 0; i < 5; i++) free(c.r[i]);
    fpn_destroy(f);
    nn_params_free(&p);
}

// ---------------------------------------------------------------- RPN head
static rpn_head *make_rpn(nn_params *p, int64_t ch, int nlev, int64_t stride0, double scale, int nratios,
                          pl_rng *rng) {
    anchor_config a;
    const double ratios[3] = {0.5, 1.0, 2.0};
    PL_ASSERT(anchors_config_make(&a, scale, nratios == 1 ? ratios + 1 : ratios, nratios) == 0);
    a.nlevels = nlev;
    for (int l = 0; l < nlev; l++) a.strides[l] = stride0 << l;
    rpn_head_config c = rpn_head_defaults(ch, &a);
    rpn_head *h;
    nn_params_init(p);
    PL_ASSERT(rpn_head_create(&h, &c, p) == 0);
    PL_ASSERT(nn_params_alloc(p) == 0);
    nn_params_reset(p, 3);
    rpn_head_bind(h, p);
    rpn_head_init_weights(h, rng);
    return h;
}

static double bce(double z, double t) { return fmax(z, 0) - z * t + log1p(exp(-fabs(z))); }
static double sl1(double d, double beta) { return fabs(d) < beta ? 0.5 * d * d / beta : fabs(d) - 0.5 * beta; }

static void test_rpn_hand(pl_rng *rng) {
    nn_params p;
    // one level, stride 8, side 16 (scale 2), ratio 1: 4x4 map -> 16 anchors centred at 8*(x, y)
    rpn_head *h = make_rpn(&p, 2, 1, 8, 2.0, 1, rng);
    nn_dims fd = nn_dims_make(1, 2, 1, 4, 4);
    float *feat = tu_alloc(nn_dims_count(fd));
    tu_fill(feat, nn_dims_count(fd), rng, -1, 1);
    const float *fl[1] = {feat};
    PL_ASSERT(rpn_head_forward(h, fl, &fd) == 0);
    int64_t na;
    const float *an = rpn_head_anchors(h, 0, &na);
    const float a10[4] = {8, 8, 24, 24};  // (y=2, x=2) -> index 10, centre (16, 16)
    tu_check_near("RPN anchors: 16 on a 4x4 map", (double)na, 16, 0);
    tu_check("RPN anchor 10 = (8, 8, 24, 24)", tu_rel_diff(an + 40, a10, 4, 1), 0);
    // gt = anchor 10: 1 positive, its 4 edge neighbours IoU 1/3 (ignored), 11 negatives
    const float gtb[4] = {8, 8, 24, 24};
    det_gt g = {gtb, NULL, 1, NULL, 0, 32, 32};
    int64_t np, nn;
    PL_ASSERT(rpn_head_targets(h, &np, &nn, &g, rng) == 0);
    tu_check_near("RPN targets: 1 positive", (double)np, 1, 0);
    tu_check_near("RPN targets: 11 negatives (4 neighbours in the 0.3-0.7 band)", (double)nn, 11, 0);
    float *cls = rpn_head_cls(h, 0), *reg = rpn_head_reg(h, 0);
    for (int j = 0; j < 16; j++) cls[j] = 0.1f * (float)(j - 8);
    for (int j = 0; j < 64; j++) reg[j] = 0.5f;  // non-positives' deltas must not count
    const float dpos[4] = {0.05f, -0.2f, 0.1f, 0.0f};
    for (int k = 0; k < 4; k++) reg[k * 16 + 10] = dpos[k];  // channel a*4+k, location 10
    double lc, lr;
    PL_ASSERT(rpn_head_loss(h, &lc, &lr) == 0);
    double want_c = 0;
    const int band[4] = {6, 9, 11, 14};
    for (int j = 0; j < 16; j++) {
        int ign = j == band[0] || j == band[1] || j == band[2] || j == band[3];
        if (!ign) want_c += bce(0.1 * (j - 8), j == 10 ? 1 : 0);
    }
    want_c /= 12;
    double want_r = 0;
    for (int k = 0; k < 4; k++) want_r += sl1(dpos[k], 1.0 / 9);
    want_r /= 12;
    tu_check_near("RPN loss_cls = sum BCE over 12 sampled / 12", lc, want_c, 1e-7);
    tu_check_near("RPN loss_reg = smooth L1 (beta 1/9) of the positive / 12", lr, want_r, 1e-7);
    tu_check_near("RPN loss_reg by hand (0.01125 + 0.14444 + 0.045 + 0) / 12", lr, (0.01125 + (0.2 - 0.5 / 9) + 0.045) / 12, 1e-7);
    // proposals: zero deltas -> anchors clipped to the 32x32 image; scores sigmoid(0.1 (j - 8))
    memset(reg, 0, 64 * sizeof(float));
    float props[1000 * 5];
    int64_t npr;
    const int64_t hw[2] = {32, 32};
    PL_ASSERT(rpn_head_proposals(h, props, &npr, hw) == 0);
    tu_check_near("proposals: all 16 kept (neighbour IoU 1/3 < 0.7)", (double)npr, 16, 0);
    const float top[5] = {16, 16, 32, 32, (float)(1 / (1 + exp(-0.7)))};  // anchor 15 (24,24)+-8, clipped
    tu_check("proposal 0 = anchor 15 clipped, score sigmoid(0.7)", tu_rel_diff(props, top, 5, 1), 1e-6);
    const float last[5] = {0, 0, 8, 8, (float)(1 / (1 + exp(0.8)))};
    tu_check("proposal 15 = anchor 0 clipped to (0,0,8,8), score sigmoid(-0.8)", tu_rel_diff(props + 75, last, 5, 1), 1e-6);
    // anchor 1 (centre (8,0)) moved by dx = -0.5 onto anchor 0: same clipped box, lower score
    // than anchor 1? anchor 1 logit -0.7 > anchor 0's -0.8 -> anchor 0 is suppressed
    reg[0 * 16 + 1] = -0.5f;
    // anchor 3 (centre (24, 0)) pushed out of the image: x2 < 0 after the shift -> empty, dropped
    reg[0 * 16 + 3] = -3.0f;
    PL_ASSERT(rpn_head_proposals(h, props, &npr, hw) == 0);
    int found0 = 0;
    for (int64_t i = 0; i < npr; i++) found0 += props[5 * i + 4] == (float)(1 / (1 + exp(0.8)));
    tu_check_near("proposals: 14 left (one suppressed by NMS, one empty box dropped)", (double)npr, 14, 0);
    tu_check_near("proposals: the lower-scored duplicate (anchor 0) is the one suppressed", found0, 0, 0);
    free(feat);
    rpn_head_destroy(h);
    nn_params_free(&p);
}

typedef struct {
    rpn_head *h;
    float *feats[2];
    nn_dims fd[2];
} rctx;

static double rloss(void *vc) {
    rctx *c = vc;
    PL_ASSERT(rpn_head_forward(c->h, (const float *const *)c->feats, c->fd) == 0);
    double lc, lr;  // targets drawn once before the FD loop stay (same map sizes)
    PL_ASSERT(rpn_head_loss(c->h, &lc, &lr) == 0);
    return lc + lr;
}

static void test_rpn_grad(pl_rng *rng) {
    nn_params p;
    // 2 levels (strides 4, 8), 3 ratios, side 2 x stride, C = 3; N = 2 images 16x16
    rpn_head *h = make_rpn(&p, 3, 2, 4, 2.0, 3, rng);
    // larger weights than mmdet's 0.01 so the loss is not flat
    for (size_t i = 0; i < p.nparams; i++) p.params[i] = (float)pl_rng_range(rng, -0.5, 0.5);
    rctx c = {0};
    c.h = h;
    c.fd[0] = nn_dims_make(2, 3, 1, 4, 4);
    c.fd[1] = nn_dims_make(2, 3, 1, 2, 2);
    float *df[2];
    for (int l = 0; l < 2; l++) {
        c.feats[l] = tu_alloc(nn_dims_count(c.fd[l]));
        df[l] = tu_alloc(nn_dims_count(c.fd[l]));
        tu_fill(c.feats[l], nn_dims_count(c.fd[l]), rng, -1, 1);
    }
    const float g0[8] = {1, 2, 9, 7, 6, 5, 15, 14}, g1[4] = {3, 4, 12, 13};
    det_gt gt[2] = {{g0, NULL, 2, NULL, 0, 16, 16}, {g1, NULL, 1, NULL, 0, 16, 16}};
    PL_ASSERT(rpn_head_forward(h, (const float *const *)c.feats, c.fd) == 0);
    int64_t np, nn;
    PL_ASSERT(rpn_head_targets(h, &np, &nn, gt, rng) == 0);
    printf("rpn grad case: %lld positives, %lld negatives\n", (long long)np, (long long)nn);
    tu_check("RPN grad case has positives and negatives", (np > 0 && nn > 0) ? 0 : 1, 0);
    double l0 = rloss(&c);
    memset(p.grads, 0, p.nparams * sizeof(float));
    PL_ASSERT(rpn_head_backward(h, df) == 0);
    double md = 0;
    for (int l = 0; l < 2; l++)
        md = fmax(md, tu_fd_check(rloss, &c, c.feats[l], df[l], nn_dims_count(c.fd[l]), 48, 1e-3, rng));
    printf("rpn loss %.6f\n", l0);
    tu_check("RPN head dL/dfeatures vs finite differences (BCE + smooth L1)", md, 5e-3);
    float *g = tu_alloc((int64_t)p.nparams);
    memcpy(g, p.grads, p.nparams * sizeof(float));
    md = tu_fd_check(rloss, &c, p.params, g, (int64_t)p.nparams, 200, 1e-3, rng);
    tu_check("RPN head parameter gradients vs finite differences", md, 5e-3);
    // proposals of a 2-image batch: image 1's equal those of image 1 run alone
    static float pr2[2 * 1000 * 5], pr1[1000 * 5];
    int64_t n2[2], n1;
    const int64_t hw2[4] = {16, 16, 12, 14};
    PL_ASSERT(rpn_head_forward(h, (const float *const *)c.feats, c.fd) == 0);  // (FD left a perturbed one)
    PL_ASSERT(rpn_head_proposals(h, pr2, n2, hw2) == 0);
    int sorted = 1, inside = 1;
    for (int i = 0; i < 2; i++)
        for (int64_t j = 0; j < n2[i]; j++) {
            const float *b = pr2 + (i * 1000 + j) * 5;
            if (j > 0 && b[4] > b[-1]) sorted = 0;
            if (b[0] < 0 || b[1] < 0 || b[2] > hw2[2 * i + 1] || b[3] > hw2[2 * i] || !(b[2] > b[0]) || !(b[3] > b[1])) inside = 0;
        }
    printf("proposals per image: %lld, %lld\n", (long long)n2[0], (long long)n2[1]);
    tu_check_near("proposals sorted by score, non-empty, inside their image", sorted && inside && n2[0] > 0, 1, 0);
    float *one[2];
    nn_dims d1[2];
    for (int l = 0; l < 2; l++) {
        d1[l] = c.fd[l];
        d1[l].n = 1;
        one[l] = c.feats[l] + nn_dims_count(d1[l]);
    }
    PL_ASSERT(rpn_head_forward(h, (const float *const *)one, d1) == 0);
    PL_ASSERT(rpn_head_proposals(h, pr1, &n1, hw2 + 2) == 0);
    tu_check_near("batch of 2: image 1 proposal count = image 1 alone", (double)n2[1], (double)n1, 0);
    tu_check("batch of 2: image 1 proposals = image 1 alone", tu_rel_diff(pr2 + 5000, pr1, 5 * n1, 1), 0);
    const char *names[6] = {"rpn_head.rpn_conv.weight", "rpn_head.rpn_conv.bias", "rpn_head.rpn_cls.weight",
                            "rpn_head.rpn_cls.bias", "rpn_head.rpn_reg.weight", "rpn_head.rpn_reg.bias"};
    int found = 0;
    for (int i = 0; i < 6; i++) found += nn_params_find(&p, names[i]) >= 0;
    tu_check_near("RPN names: the six mmdet entries", found, 6, 0);
    int ir = nn_params_find(&p, "rpn_head.rpn_reg.weight");
    tu_check_near("RPN reg weight is (4A = 12, 3, 1, 1)", ir >= 0 ? (double)(p.info[ir].shape[0] * 100 + p.info[ir].shape[1] * 10 + p.info[ir].shape[2]) : -1, 1231, 0);
    free(g);
    for (int l = 0; l < 2; l++) {
        free(c.feats[l]);
        free(df[l]);
    }
    rpn_head_destroy(h);
    nn_params_free(&p);
}

// ---------------------------------------------------------------- box head
static bbox_head *make_bbox(nn_params *p, bbox_head_config *c, pl_rng *rng) {
    bbox_head *h;
    nn_params_init(p);
    PL_ASSERT(bbox_head_create(&h, c, p) == 0);
    PL_ASSERT(nn_params_alloc(p) == 0);
    nn_params_reset(p, 5);
    bbox_head_bind(h, p);
    bbox_head_init_weights(h, rng);
    return h;
}

static void small_feats(float **f, nn_dims *fd, int64_t n, int64_t ch, int64_t size, pl_rng *rng) {
    for (int l = 0; l < 4; l++) {
        fd[l] = nn_dims_make(n, ch, 1, size >> l, size >> l);
        f[l] = tu_alloc(nn_dims_count(fd[l]));
        tu_fill(f[l], nn_dims_count(fd[l]), rng, -1, 1);
    }
}

static void test_bbox_hand(pl_rng *rng) {
    nn_params p;
    bbox_head_config c = bbox_head_defaults(2, 3);
    c.fc_dim = 8;
    c.roi.out_h = c.roi.out_w = 2;
    bbox_head *h = make_bbox(&p, &c, rng);
    // gt: g0 label 2, g1 label 0; proposals p0 (IoU 0.909 with g0), p1 (0.667 with g1), p2, p3 (0.377)
    const float gtb[8] = {10, 10, 30, 30, 40, 40, 60, 70};
    const int32_t gl[2] = {2, 0};
    det_gt g = {gtb, gl, 2, NULL, 0, 64, 64};
    const float props[4 * 5] = {10, 10, 30, 32, 0.9f, 40, 40, 60, 60, 0.8f, 0, 0, 8, 8, 0.7f, 12, 12, 40, 40, 0.6f};
    const int64_t npr = 4;
    int64_t np;
    PL_ASSERT(bbox_head_sample(h, &np, props, &npr, 4, &g, 1, rng) == 0);
    int64_t k;
    const float *rois = bbox_head_rois(h, &k);
    const int64_t *lab = bbox_head_labels(h);
    tu_check_near("RoI sampling: 6 RoIs (2 gt + 4 proposals)", (double)k, 6, 0);
    tu_check_near("RoI sampling: 4 positives (gt boxes, p0, p1)", (double)np, 4, 0);
    int64_t wl[6] = {2, 0, 2, 0, 3, 3};
    int bad = 0;
    for (int i = 0; i < 6; i++) bad += lab[i] != wl[i];
    tu_check_near("RoI labels (positives first; background = num_classes = 3)", bad, 0, 0);
    const float r2[5] = {0, 10, 10, 30, 32};
    tu_check("RoI 2 is proposal p0 with batch index 0", tu_rel_diff(rois + 10, r2, 5, 1), 0);
    nn_dims fd[4];
    float *f[4];
    small_feats(f, fd, 1, 2, 16, rng);
    PL_ASSERT(bbox_head_forward(h, (const float *const *)f, fd) == 0);
    float *cls = bbox_head_cls(h), *reg = bbox_head_reg(h);
    for (int i = 0; i < 6 * 4; i++) cls[i] = 0.3f * (float)((i * 7) % 5) - 0.5f;
    for (int i = 0; i < 6 * 12; i++) reg[i] = 0.1f * (float)((i * 5) % 9) - 0.4f;
    double lc, lr;
    PL_ASSERT(bbox_head_loss(h, &lc, &lr) == 0);
    double wc = 0;
    for (int i = 0; i < 6; i++) {
        double se = 0;
        for (int j = 0; j < 4; j++) se += exp(cls[i * 4 + j]);
        wc += log(se) - cls[i * 4 + wl[i]];
    }
    wc /= 6;
    // targets: g0, g1 -> 0; p0 -> (0, -1/22, 0, log(20/22)) / std; p1 -> (0, 0.25, 0, log 1.5) / std
    const double t[4][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {0, -1.0 / 22 / 0.1, 0, log(20.0 / 22) / 0.2}, {0, 2.5, 0, log(1.5) / 0.2}};
    double wr = 0;
    for (int i = 0; i < 4; i++)
        for (int kk = 0; kk < 4; kk++) wr += sl1(reg[i * 12 + 4 * wl[i] + kk] - t[i][kk], 1.0);
    wr /= 6;
    tu_check_near("box head loss_cls: softmax CE over 6 RoIs, 4 classes", lc, wc, 1e-6);
    tu_check_near("box head loss_reg: smooth L1 on the label's 4 outputs / 6", lr, wr, 1e-6);
    // test decoding: 2 classes; r0, r1 overlap (IoU 0.82), r2 apart; image 64 x 64
    bbox_head_config c2 = bbox_head_defaults(2, 2);
    c2.fc_dim = 8;
    c2.roi.out_h = c2.roi.out_w = 2;
    nn_params p2;
    bbox_head *h2 = make_bbox(&p2, &c2, rng);
    const float tp[3 * 5] = {0, 0, 20, 20, 0.9f, 1, 1, 21, 21, 0.8f, 50, 50, 70, 70, 0.7f};
    const int64_t ntp = 3, hw[2] = {64, 64};
    PL_ASSERT(bbox_head_set_proposals(h2, tp, &ntp, 3, 1) == 0);
    PL_ASSERT(bbox_head_forward(h2, (const float *const *)f, fd) == 0);
    cls = bbox_head_cls(h2);
    reg = bbox_head_reg(h2);
    const float logits[9] = {2, 0, 0, 1, 1, 0, 0, 3, 0};
    memcpy(cls, logits, sizeof logits);
    memset(reg, 0, 3 * 8 * sizeof(float));
    reg[2 * 8 + 4] = 1.0f;  // r2, class 1: dx = 1 * 0.1 * 20 = +2 px -> (52, 50, 72, 70), clipped to 64
    float dets[100 * 6];
    int64_t nd;
    PL_ASSERT(bbox_head_detect(h2, dets, &nd, hw) == 0);
    const double e = exp(1.0), e2 = exp(2.0), e3 = exp(3.0);
    const float want[4 * 6] = {52, 50, 64, 64, (float)(e3 / (e3 + 2)), 1,
                               0, 0, 20, 20, (float)(e2 / (e2 + 2)), 0,
                               1, 1, 21, 21, (float)(e / (2 * e + 1)), 1,
                               50, 50, 64, 64, (float)(1 / (e3 + 2)), 0};  // clipped to 64
    tu_check_near("detections: 4 (r1 suppressed in class 0, r0 in class 1)", (double)nd, 4, 0);
    for (int64_t i = 0; i < nd; i++)
        printf("det %lld: %g %g %g %g score %.6f label %g\n", (long long)i, dets[6 * i], dets[6 * i + 1],
               dets[6 * i + 2], dets[6 * i + 3], dets[6 * i + 4], dets[6 * i + 5]);
    tu_check("detections by hand (boxes, softmax scores, labels, sorted)", tu_rel_diff(dets, want, 24, 1), 1e-6);
    // score threshold 0.1 drops (r2, class 0); max_per_img 2 keeps the two best
    c2.score_thr = 0.1;
    c2.max_per_img = 2;
    nn_params p3;
    bbox_head *h3 = make_bbox(&p3, &c2, rng);
    PL_ASSERT(bbox_head_set_proposals(h3, tp, &ntp, 3, 1) == 0);
    PL_ASSERT(bbox_head_forward(h3, (const float *const *)f, fd) == 0);
    memcpy(bbox_head_cls(h3), logits, sizeof logits);
    memset(bbox_head_reg(h3), 0, 3 * 8 * sizeof(float));
    bbox_head_reg(h3)[2 * 8 + 4] = 1.0f;
    PL_ASSERT(bbox_head_detect(h3, dets, &nd, hw) == 0);
    tu_check_near("detections capped at max_per_img = 2", (double)nd, 2, 0);
    tu_check("capped detections = the two best", tu_rel_diff(dets, want, 12, 1), 1e-6);
    bbox_head_destroy(h3);
    nn_params_free(&p3);
    for (int l = 0; l < 4; l++) free(f[l]);
    bbox_head_destroy(h);
    bbox_head_destroy(h2);
    nn_params_free(&p);
    nn_params_free(&p2);
}

typedef struct {
    bbox_head *h;
    float *f[4];
    nn_dims fd[4];
} bctx;

static double bloss(void *vc) {
    bctx *c = vc;
    PL_ASSERT(bbox_head_forward(c->h, (const float *const *)c->f, c->fd) == 0);
    double lc, lr;
    PL_ASSERT(bbox_head_loss(c->h, &lc, &lr) == 0);
    return lc + lr;
}

static void test_bbox_grad(pl_rng *rng, int agnostic) {
    nn_params p;
    bbox_head_config c = bbox_head_defaults(2, 2);
    c.fc_dim = 6;
    c.roi.out_h = c.roi.out_w = 2;
    c.num_samples = 12;
    c.class_agnostic = agnostic;
    bctx x = {0};
    x.h = make_bbox(&p, &c, rng);
    for (size_t i = 0; i < p.nparams; i++) p.params[i] = (float)pl_rng_range(rng, -0.5, 0.5);
    small_feats(x.f, x.fd, 2, 2, 32, rng);  // input 128 x 128 at stride 4
    float *df[4];
    for (int l = 0; l < 4; l++) df[l] = tu_alloc(nn_dims_count(x.fd[l]));
    // boxes of several sizes so RoIs land on several levels
    const float g0[8] = {10, 12, 40, 50, 6, 2, 126, 124}, g1[4] = {30, 30, 50, 46};
    const int32_t lab0[2] = {1, 0}, lab1[1] = {1};
    det_gt gt[2] = {{g0, lab0, 2, NULL, 0, 128, 128}, {g1, lab1, 1, NULL, 0, 128, 128}};
    enum { NP = 10 };
    float props[2 * NP * 5];
    int64_t npr[2] = {NP, NP};
    for (int i = 0; i < 2 * NP; i++) {
        const float *b = i < NP ? g0 + 4 * (i % 2) : g1;
        float *q = props + 5 * i;
        float jw = (b[2] - b[0]) * 0.3f, jh = (b[3] - b[1]) * 0.3f;
        q[0] = b[0] + (float)pl_rng_range(rng, -jw, jw);
        q[1] = b[1] + (float)pl_rng_range(rng, -jh, jh);
        q[2] = b[2] + (float)pl_rng_range(rng, -jw, jw);
        q[3] = b[3] + (float)pl_rng_range(rng, -jh, jh);
        q[4] = 1;
        if (i % 5 == 4) {  // some background proposals
            q[0] = 100, q[1] = 100, q[2] = 100 + (float)pl_rng_range(rng, 5, 25), q[3] = 110;
            if (i >= NP) q[0] = 2, q[1] = 100, q[2] = 20, q[3] = 120;
        }
    }
    int64_t np;
    PL_ASSERT(bbox_head_sample(x.h, &np, props, npr, NP, gt, 2, rng) == 0);
    int64_t k;
    const float *rois = bbox_head_rois(x.h, &k);
    int lv[64], used[4] = {0, 0, 0, 0};
    roialign_map_levels(lv, rois, k, 4, 56);
    for (int64_t i = 0; i < k; i++) used[lv[i]] = 1;
    printf("box head grad case: %lld RoIs, %lld positives, levels used %d%d%d%d\n", (long long)k, (long long)np,
           used[0], used[1], used[2], used[3]);
    tu_check("box head grad case samples positives and negatives on >= 2 levels",
             (np > 0 && np < k && used[0] + used[1] + used[2] + used[3] >= 2) ? 0 : 1, 0);
    double l0 = bloss(&x);
    memset(p.grads, 0, p.nparams * sizeof(float));
    PL_ASSERT(bbox_head_backward(x.h, df) == 0);
    double md = 0;
    for (int l = 0; l < 4; l++)
        if (used[l]) md = fmax(md, tu_fd_check(bloss, &x, x.f[l], df[l], nn_dims_count(x.fd[l]), 60, 1e-2, rng));
    printf("box head loss %.6f\n", l0);
    tu_check(agnostic ? "box head (class-agnostic) dL/dfeatures vs finite differences"
                      : "box head dL/dfeatures vs finite differences", md, 5e-3);
    float *g = tu_alloc((int64_t)p.nparams);
    memcpy(g, p.grads, p.nparams * sizeof(float));
    md = tu_fd_check(bloss, &x, p.params, g, (int64_t)p.nparams, 200, 1e-3, rng);
    tu_check(agnostic ? "box head (class-agnostic) parameter gradients vs finite differences"
                      : "box head parameter gradients vs finite differences", md, 5e-3);
    // test path on a 2-image batch: image 1's detections equal those of image 1 run alone
    int64_t hw2[4] = {128, 128, 100, 90}, nd2[2], nd1;
    static float d2[2 * 100 * 6], d1[100 * 6];
    PL_ASSERT(bbox_head_set_proposals(x.h, props, npr, NP, 2) == 0);
    PL_ASSERT(bbox_head_forward(x.h, (const float *const *)x.f, x.fd) == 0);
    PL_ASSERT(bbox_head_detect(x.h, d2, nd2, hw2) == 0);
    float *f1[4];
    nn_dims fd1[4];
    for (int l = 0; l < 4; l++) {
        fd1[l] = x.fd[l];
        fd1[l].n = 1;
        f1[l] = x.f[l] + nn_dims_count(fd1[l]);
    }
    PL_ASSERT(bbox_head_set_proposals(x.h, props + NP * 5, npr + 1, NP, 1) == 0);
    PL_ASSERT(bbox_head_forward(x.h, (const float *const *)f1, fd1) == 0);
    PL_ASSERT(bbox_head_detect(x.h, d1, &nd1, hw2 + 2) == 0);
    printf("detections per image: %lld, %lld\n", (long long)nd2[0], (long long)nd2[1]);
    tu_check_near("batch of 2: image 1 detection count = image 1 alone", (double)nd2[1], (double)nd1, 0);
    tu_check("batch of 2: image 1 detections = image 1 alone", tu_rel_diff(d2 + 600, d1, 6 * nd1, 1), 0);
    int clipped = 1;
    for (int64_t j = 0; j < nd1; j++) clipped &= d1[6 * j + 2] <= 90 && d1[6 * j + 3] <= 100;
    tu_check_near("image 1 detections clipped to its 90 x 100 frame", clipped && nd1 > 0, 1, 0);
    if (!agnostic) {
        const char *names[4] = {"roi_head.bbox_head.shared_fcs.0.weight", "roi_head.bbox_head.shared_fcs.1.weight",
                                "roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_reg.weight"};
        const int64_t rows[4] = {6, 6, 3, 8}, cols[4] = {8, 6, 6, 6};
        int ok = 0;
        for (int i = 0; i < 4; i++) {
            int j = nn_params_find(&p, names[i]);
            ok += j >= 0 && p.info[j].shape[0] == rows[i] && p.info[j].shape[1] == cols[i];
        }
        tu_check_near("box head names and shapes (fc0 (6, C*2*2), fc_cls (3, 6), fc_reg (8, 6))", ok, 4, 0);
    } else {
        int j = nn_params_find(&p, "roi_head.bbox_head.fc_reg.weight");
        tu_check_near("class-agnostic fc_reg has 4 rows", j >= 0 ? (double)p.info[j].shape[0] : -1, 4, 0);
    }
    free(g);
    for (int l = 0; l < 4; l++) {
        free(x.f[l]);
        free(df[l]);
    }
    bbox_head_destroy(x.h);
    nn_params_free(&p);
}

// FPN + RPN + box head composed as the detector will compose them, on fixed input maps, one
// parameter buffer; plain SGD must drive the summed loss down (the wiring of every gradient).
static void test_composed(pl_rng *rng) {
    nn_params p;
    nn_params_init(&p);
    const int64_t ch = 8;
    fpn_config fc = {4, {4, 6, 8, 10}, ch, 5, 0};
    anchor_config ac;
    const double ratios[3] = {0.5, 1.0, 2.0};
    PL_ASSERT(anchors_config_make(&ac, 4.0, ratios, 3) == 0);
    rpn_head_config rc = rpn_head_defaults(ch, &ac);
    rc.nms_pre = 200;
    rc.max_per_img = 100;
    bbox_head_config bc = bbox_head_defaults(ch, 1);
    bc.fc_dim = 32;
    bc.num_samples = 64;
    fpn *f;
    rpn_head *rpn;
    bbox_head *bb;
    PL_ASSERT(fpn_create(&f, &fc, &p) == 0);
    PL_ASSERT(rpn_head_create(&rpn, &rc, &p) == 0);
    PL_ASSERT(bbox_head_create(&bb, &bc, &p) == 0);
    PL_ASSERT(nn_params_alloc(&p) == 0);
    nn_params_reset(&p, 1);
    fpn_bind(f, &p);
    rpn_head_bind(rpn, &p);
    bbox_head_bind(bb, &p);
    fpn_init_weights(f, rng);
    rpn_head_init_weights(rpn, rng);
    bbox_head_init_weights(bb, rng);
    // a 64 x 64 input: C2..C5 at strides 4..32
    float *in[4];
    nn_dims d[4];
    for (int i = 0; i < 4; i++) {
        d[i] = nn_dims_make(1, fc.in_channels[i], 1, 16 >> i, 16 >> i);
        in[i] = tu_alloc(nn_dims_count(d[i]));
        tu_fill(in[i], nn_dims_count(d[i]), rng, -1, 1);
    }
    const float gtb[4] = {20, 16, 44, 36};
    det_gt gt = {gtb, NULL, 1, NULL, 0, 64, 64};
    const int64_t hw[2] = {64, 64};
    static float props[100 * 5];
    int64_t nprop;
    double first = 0, last = 0;
    const int steps = 200;
    for (int it = 0; it < steps; it++) {
        PL_ASSERT(fpn_forward(f, (const float *const *)in, d) == 0);
        const float *pf[5];
        float *dpf[5];
        nn_dims pd[5];
        for (int l = 0; l < 5; l++) {
            pf[l] = fpn_output(f, l, &pd[l]);
            dpf[l] = fpn_output_grad(f, l);
        }
        double lc, lr, bcl, brl;
        PL_ASSERT(rpn_head_forward(rpn, pf, pd) == 0);
        PL_ASSERT(rpn_head_targets(rpn, NULL, NULL, &gt, rng) == 0);
        PL_ASSERT(rpn_head_loss(rpn, &lc, &lr) == 0);
        PL_ASSERT(rpn_head_proposals(rpn, props, &nprop, hw) == 0);
        int64_t npos;
        PL_ASSERT(bbox_head_sample(bb, &npos, props, &nprop, 100, &gt, 1, rng) == 0);
        PL_ASSERT(bbox_head_forward(bb, pf, pd) == 0);
        PL_ASSERT(bbox_head_loss(bb, &bcl, &brl) == 0);
        double tot = lc + lr + bcl + brl;
        if (it == 0) first = tot;
        last = tot;
        memset(p.grads, 0, p.nparams * sizeof(float));
        PL_ASSERT(bbox_head_backward(bb, dpf) == 0);
        PL_ASSERT(rpn_head_backward(rpn, dpf) == 0);
        PL_ASSERT(fpn_backward(f, NULL) == 0);
        sgd_step(p.params, p.momentum, p.grads, p.nparams, 0.02, 0.9, 1e-4, it == 0);
        if (it % 50 == 0 || it == steps - 1)
            printf("composed step:%d rpn_cls:%.4f rpn_reg:%.5f roi_cls:%.4f roi_reg:%.6f total:%.4f proposals:%lld roi_pos:%lld\n",
                   it, lc, lr, bcl, brl, tot, (long long)nprop, (long long)npos);
    }
    // test path on the trained pieces: proposals -> box head -> detections
    const float *pf[5];
    nn_dims pd[5];
    PL_ASSERT(fpn_forward(f, (const float *const *)in, d) == 0);
    for (int l = 0; l < 5; l++) pf[l] = fpn_output(f, l, &pd[l]);
    PL_ASSERT(rpn_head_forward(rpn, pf, pd) == 0);
    PL_ASSERT(rpn_head_proposals(rpn, props, &nprop, hw) == 0);
    double best_prop = 0;
    for (int j = 0; j < 10 && j < nprop; j++) best_prop = fmax(best_prop, box_iou(props + 5 * j, gtb, 0));
    PL_ASSERT(bbox_head_set_proposals(bb, props, &nprop, 100, 1) == 0);
    PL_ASSERT(bbox_head_forward(bb, pf, pd) == 0);
    float dets[100 * 6];
    int64_t nd;
    PL_ASSERT(bbox_head_detect(bb, dets, &nd, hw) == 0);
    double top_iou = nd > 0 ? box_iou(dets, gtb, 0) : 0;
    printf("composed: best IoU among the top-10 proposals %.3f; top detection (%.1f %.1f %.1f %.1f) score %.3f IoU %.3f\n",
           best_prop, dets[0], dets[1], dets[2], dets[3], dets[4], top_iou);
    tu_check("composed: a top-10 proposal overlaps the gt box (IoU >= 0.5)", best_prop >= 0.5 ? 0 : 1, 0);
    tu_check("composed: the top detection is the gt box (IoU >= 0.7)", top_iou >= 0.7 ? 0 : 1, 0);
    tu_check("FPN + RPN + box head: 200 SGD steps bring the summed loss below 1/10 of the first", last < 0.1 * first ? 0 : 1, 0);
    for (int i = 0; i < 4; i++) free(in[i]);
    fpn_destroy(f);
    rpn_head_destroy(rpn);
    bbox_head_destroy(bb);
    nn_params_free(&p);
}

// ---------------------------------------------------------------- crowd regions (COCO iscrowd)
// With det.ignore_iof = 0.5, anchors and RoIs covered more than half (IoF over themselves) by a
// crowd region are neither positives nor negatives: they leave the loss altogether.
static void test_crowd(pl_rng *rng) {
    anchor_config a;
    const double r1[1] = {1.0};
    PL_ASSERT(anchors_config_make(&a, 2.0, r1, 1) == 0);
    a.nlevels = 1;
    a.strides[0] = 8;
    rpn_head_config rc = rpn_head_defaults(2, &a);
    rc.assign.ignore_iof = 0.5;
    nn_params p;
    nn_params_init(&p);
    rpn_head *h;
    PL_ASSERT(rpn_head_create(&h, &rc, &p) == 0);
    PL_ASSERT(nn_params_alloc(&p) == 0);
    nn_params_reset(&p, 3);
    rpn_head_bind(h, &p);
    rpn_head_init_weights(h, rng);
    nn_dims fd = nn_dims_make(1, 2, 1, 4, 4);
    float *feat = tu_alloc(nn_dims_count(fd));
    tu_fill(feat, nn_dims_count(fd), rng, -1, 1);
    const float *fl[1] = {feat};
    PL_ASSERT(rpn_head_forward(h, fl, &fd) == 0);
    // 16 anchors (8x - 8, 8y - 8, 8x + 8, 8y + 8), j = 4y + x; gt = anchor 10 (8, 8, 24, 24);
    // without crowd: 1 positive, band {6, 9, 11, 14}, 11 negatives (test_rpn_hand).
    // Crowd (-8, -8, 16, 8): IoF(anchor 0) = IoF(anchor 1) = 1 -> ignored; anchors 2, 4, 5 have
    // IoF exactly 0.5 (128 / 256 px) -> not ignored (the rule is IoF > thr) -> 9 negatives.
    const float gtb[4] = {8, 8, 24, 24}, crowd1[4] = {-8, -8, 16, 8};
    det_gt g = {gtb, NULL, 1, crowd1, 1, 32, 32};
    int64_t np, nn;
    PL_ASSERT(rpn_head_targets(h, &np, &nn, &g, rng) == 0);
    tu_check_near("RPN crowd: the positive stays", (double)np, 1, 0);
    tu_check_near("RPN crowd: anchors 0 and 1 (IoF 1) are not negatives: 9 left", (double)nn, 9, 0);
    float *cls = rpn_head_cls(h, 0);
    for (int j = 0; j < 16; j++) cls[j] = 0.1f * (float)(j - 8);
    double lc, lr, want = 0;
    PL_ASSERT(rpn_head_loss(h, &lc, &lr) == 0);
    for (int j = 2; j < 16; j++)
        if (j != 6 && j != 9 && j != 11 && j != 14) want += bce(0.1 * (j - 8), j == 10 ? 1 : 0);
    tu_check_near("RPN crowd: loss_cls over the 10 sampled anchors only (0, 1 left out)", lc, want / 10, 1e-7);
    // Crowd (10, 10, 22, 22) inside the gt: anchor 10 (IoF 144 / 256 = 0.5625) is ignored, so it
    // cannot be the gt's positive; the neighbours (IoF 72 / 256) are not; low-quality matching
    // then takes the gt's best remaining anchors, the 4 neighbours at IoU 1/3 >= min_pos_iou 0.3
    // (mmdet: ignored overlaps are -1 before matching).
    const float crowd2[4] = {10, 10, 22, 22};
    g.ignore = crowd2;
    PL_ASSERT(rpn_head_targets(h, &np, &nn, &g, rng) == 0);
    tu_check_near("RPN crowd over the gt: anchor 10 not positive, its 4 neighbours are", (double)np, 4, 0);
    tu_check_near("RPN crowd over the gt: 11 negatives (16 - 1 ignored - 4)", (double)nn, 11, 0);
    PL_ASSERT(rpn_head_loss(h, &lc, &lr) == 0);
    want = 0;
    for (int j = 0; j < 16; j++)
        if (j != 10) want += bce(0.1 * (j - 8), (j == 6 || j == 9 || j == 11 || j == 14) ? 1 : 0);
    tu_check_near("RPN crowd over the gt: loss_cls over the 15 anchors other than 10", lc, want / 15, 1e-7);
    free(feat);
    rpn_head_destroy(h);
    nn_params_free(&p);

    // Box head: gt g0 (10, 10, 30, 30) class 1 of 2; crowd (40, 0, 64, 30). Proposals: p0 IoU
    // 0.909 with g0 (positive), p1 inside the crowd (IoF 1: ignored), p2 background (negative),
    // p3 half inside the crowd (IoF 200 / 400 = 0.5: not ignored, negative).
    bbox_head_config bc = bbox_head_defaults(2, 2);
    bc.fc_dim = 8;
    bc.roi.out_h = bc.roi.out_w = 2;
    bc.assign.ignore_iof = 0.5;
    nn_params pb;
    bbox_head *b = make_bbox(&pb, &bc, rng);
    const float g0[4] = {10, 10, 30, 30}, cr[4] = {40, 0, 64, 30};
    const int32_t lab[1] = {1};
    det_gt gb = {g0, lab, 1, cr, 1, 64, 64};
    const float props[4 * 5] = {10, 10, 30, 32, 0.9f, 44, 4, 60, 24, 0.8f, 0, 40, 20, 60, 0.7f, 30, 8, 50, 28, 0.6f};
    const int64_t npr = 4;
    PL_ASSERT(bbox_head_sample(b, &np, props, &npr, 4, &gb, 1, rng) == 0);
    int64_t k;
    const float *rois = bbox_head_rois(b, &k);
    const int64_t *labels = bbox_head_labels(b);
    tu_check_near("RoI crowd: 4 RoIs (gt, p0, p2, p3; p1 in the crowd left out)", (double)k, 4, 0);
    tu_check_near("RoI crowd: 2 positives (gt, p0)", (double)np, 2, 0);
    int in_crowd = 0, bad = 0;
    for (int64_t i = 0; i < k; i++) {
        in_crowd += rois[5 * i + 1] == 44 && rois[5 * i + 2] == 4;
        bad += labels[i] != (i < 2 ? 1 : 2);
    }
    tu_check_near("RoI crowd: p1 is not among the RoIs", in_crowd, 0, 0);
    tu_check_near("RoI crowd: labels (1, 1, background 2, background 2)", bad, 0, 0);
    bbox_head_destroy(b);
    nn_params_free(&pb);
}

int main(void) {
    pl_rng rng;
    pl_rng_seed(&rng, 23);
    double t0 = pl_time();
    test_fpn_hand();
    test_fpn_grad(&rng, 0);
    test_fpn_grad(&rng, 1);
    test_rpn_hand(&rng);
    test_rpn_grad(&rng);
    test_bbox_hand(&rng);
    test_bbox_grad(&rng, 0);
    test_bbox_grad(&rng, 1);
    test_composed(&rng);
    test_crowd(&rng);
    printf("time: %.2f s\n", pl_time() - t0);
    return tu_finish("test_det_heads");
}
