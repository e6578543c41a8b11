// test_det_roialign: RoIAlign forward against hand-computed bilinear samples (f = 10 y + x^2 + 5,
// whose bilinear interpolation is computable by hand), aligned and legacy modes, adaptive and
// fixed sampling, the -1/size border rules, spatial_scale, channels and batch index; backward
// by finite differences and by the adjoint identity; mmdet's FPN level mapping on hand sizes;
// multi-level forward/backward equal to per-level calls.
#include "nn/roialign.h"
#include "tests/test_util.h"

static void fill_hand(float *f, int64_t h, int64_t w, float mul, float add) {
    for (int64_t y = 0; y < h; y++)
        for (int64_t x = 0; x < w; x++) f[y * w + x] = mul * (float)(10 * y + x * x + 5) + add;
}

static void test_hand(void) {
    float feat[2 * 2 * 16];  // N = 2, C = 2, 4 x 4
    fill_hand(feat, 4, 4, 1, 0);
    fill_hand(feat + 16, 4, 4, 2, 0);
    fill_hand(feat + 32, 4, 4, 1, 100);
    fill_hand(feat + 48, 4, 4, 1, 200);
    nn_dims fd = nn_dims_make(2, 2, 1, 4, 4);
    roialign_config c = {2, 2, 0, 1};
    float out[2 * 2 * 4];
    // aligned: x in [0.8, 2.6] (1 sample per bin column), y in [0.2, 2.4] (2 per bin row):
    // y samples 0.475, 1.025 | 1.575, 2.125; x samples 1.25 | 2.15; bilinear x^2: 1.75 | 4.75
    const float roi[5] = {0, 1.3f, 0.7f, 3.1f, 2.9f};
    roialign_forward(out, feat, fd, roi, 1, 1.0, &c);
    const float want[4] = {7.5f + 1.75f + 5, 7.5f + 4.75f + 5, 18.5f + 1.75f + 5, 18.5f + 4.75f + 5};
    tu_check("aligned, adaptive sampling (2x1 per bin): hand bilinear values", tu_rel_diff(out, want, 4, 1), 1e-6);
    const float want2[4] = {2 * want[0], 2 * want[1], 2 * want[2], 2 * want[3]};
    tu_check("channel 1 = 2 x channel 0", tu_rel_diff(out + 4, want2, 4, 1), 1e-6);
    const float roi_b1[5] = {1, 1.3f, 0.7f, 3.1f, 2.9f};
    roialign_forward(out, feat, fd, roi_b1, 1, 1.0, &c);
    const float want_b1[4] = {want[0] + 100, want[1] + 100, want[2] + 100, want[3] + 100};
    tu_check("batch index 1 reads image 1", tu_rel_diff(out, want_b1, 4, 1), 1e-6);
    const float roi2[5] = {0, 2.6f, 1.4f, 6.2f, 5.8f};
    roialign_forward(out, feat, fd, roi2, 1, 0.5, &c);
    tu_check("spatial_scale 0.5 on doubled coordinates: same values", tu_rel_diff(out, want, 4, 1), 1e-6);
    // legacy (aligned = 0): x in [1.3, 3.1]: samples y 0.975, 1.525 | 2.075, 2.625; x 1.75 | 2.65
    roialign_config lg = {2, 2, 0, 0};
    roialign_forward(out, feat, fd, roi, 1, 1.0, &lg);
    const float wl[4] = {12.5f + 3.25f + 5, 12.5f + 7.25f + 5, 23.5f + 3.25f + 5, 23.5f + 7.25f + 5};
    tu_check("legacy (aligned=False): hand bilinear values", tu_rel_diff(out, wl, 4, 1), 1e-6);
    // lower border: 3x3 samples at {-2,-1,0}^2; -2 is outside (0), -1 is clamped to 0: 4 of 9 count f(0,0)=5
    roialign_config one = {1, 1, 0, 1};
    const float rb[5] = {0, -2, -2, 1, 1};
    roialign_forward(out, feat, fd, rb, 1, 1.0, &one);
    tu_check_near("border: samples beyond -1 give 0, in (-1,0] clamp: 4*5/9", out[0], 20.0 / 9, 1e-6);
    // upper border: samples at 2.5, 3.5; 3.5 >= H-1 clamps to 3 (and 3.5 <= H keeps it)
    const float rt[5] = {0, 2.5f, 2.5f, 4.5f, 4.5f};
    roialign_forward(out, feat, fd, rt, 1, 1.0, &one);
    tu_check_near("border: top samples clamp to H-1: 27.5 + 7.75 + 5", out[0], 40.25, 1e-5);
    // fixed sampling ratio 2 on a 1x1 bin of [1, 2]: samples 1.25, 1.75 in x and y
    roialign_config sr2 = {1, 1, 2, 1};
    const float rs[5] = {0, 1.5f, 1.5f, 2.5f, 2.5f};
    roialign_forward(out, feat, fd, rs, 1, 1.0, &sr2);
    // 10 * mean(y) = 15; x^2 bilinear at 1.25 -> 1.75, at 1.75 -> 3.25 -> mean 2.5
    tu_check_near("sampling_ratio 2: 15 + 2.5 + 5", out[0], 22.5, 1e-5);
}

typedef struct {
    float *feat, *out, *r;
    nn_dims fd;
    const float *rois;
    int64_t k, nout;
    double scale;
    roialign_config c;
} rctx;

static double rloss(void *vc) {
    rctx *c = vc;
    roialign_forward(c->out, c->feat, c->fd, c->rois, c->k, c->scale, &c->c);
    double s = 0;
    for (int64_t i = 0; i < c->nout; i++) s += (double)c->out[i] * c->r[i];
    return s;
}

static void test_backward(pl_rng *rng) {
    const int64_t K = 7;
    nn_dims fd = nn_dims_make(2, 3, 1, 9, 11);
    float rois[7 * 5];
    for (int64_t i = 0; i < K; i++) {
        float x = (float)pl_rng_range(rng, -6, 34), y = (float)pl_rng_range(rng, -6, 28);
        rois[5 * i] = (float)(i % 2);
        rois[5 * i + 1] = x;
        rois[5 * i + 2] = y;
        rois[5 * i + 3] = x + (float)pl_rng_range(rng, 0.5, 20);
        rois[5 * i + 4] = y + (float)pl_rng_range(rng, 0.5, 20);
    }
    for (int mode = 0; mode < 3; mode++) {
        rctx c = {0};
        c.fd = fd;
        c.rois = rois;
        c.k = K;
        c.scale = 0.25 + 0.25 * mode;
        c.c = (roialign_config){3, 3, mode == 1 ? 2 : 0, mode != 2};
        int64_t nf = nn_dims_count(fd);
        c.nout = K * fd.c * 9;
        c.feat = tu_alloc(nf);
        c.out = tu_alloc(c.nout);
        c.r = tu_alloc(c.nout);
        float *g = tu_alloc(nf);
        tu_fill(c.feat, nf, rng, -1, 1);
        tu_fill(c.r, c.nout, rng, -1, 1);
        roialign_backward(g, c.r, fd, rois, K, c.scale, &c.c);
        char what[96];
        snprintf(what, sizeof what, "RoIAlign backward vs finite differences (%s)",
                 mode == 0 ? "aligned, adaptive" : mode == 1 ? "aligned, ratio 2" : "legacy");
        tu_check(what, tu_fd_check(rloss, &c, c.feat, g, nf, 400, 1e-2, rng), 2e-3);
        // adjoint: <R, A f> = <A^T R, f>
        double lhs = rloss(&c), rhs = 0;
        for (int64_t i = 0; i < nf; i++) rhs += (double)g[i] * c.feat[i];
        tu_check("RoIAlign adjoint identity <R, A f> = <A^T R, f>", fabs(lhs - rhs) / fmax(fabs(lhs), 1), 1e-5);
        free(c.feat);
        free(c.out);
        free(c.r);
        free(g);
    }
}

static void test_levels(pl_rng *rng) {
    const float side[8] = {30, 56, 111, 112, 223, 224, 448, 1000};
    const int want[8] = {0, 0, 0, 1, 1, 2, 3, 3};
    float rois[8 * 5];
    for (int i = 0; i < 8; i++) {
        rois[5 * i] = 0;
        rois[5 * i + 1] = 10;
        rois[5 * i + 2] = 20;
        rois[5 * i + 3] = 10 + side[i];
        rois[5 * i + 4] = 20 + side[i];
    }
    int lvl[8], bad = 0;
    roialign_map_levels(lvl, rois, 8, 4, 56);
    for (int i = 0; i < 8; i++) bad += lvl[i] != want[i];
    printf("levels of sides 30 56 111 112 223 224 448 1000: %d %d %d %d %d %d %d %d\n", lvl[0], lvl[1],
           lvl[2], lvl[3], lvl[4], lvl[5], lvl[6], lvl[7]);
    tu_check_near("mmdet level mapping floor(log2(sqrt(area)/56)) clamped to [0,3] (mismatches)", bad, 0, 0);
    // a 56 x 224 box: sqrt(area) = 112 -> level 1
    const float r2[5] = {0, 0, 0, 56, 224};
    roialign_map_levels(lvl, r2, 1, 4, 56);
    tu_check_near("56 x 224 box (sqrt area 112) -> level 1", lvl[0], 1, 0);
    // multi-level == per-level calls
    nn_dims fd[4];
    float *feats[4], *dfe[4], *dfe1[4];
    double scales[4];
    for (int l = 0; l < 4; l++) {
        fd[l] = nn_dims_make(1, 2, 1, 64 >> l, 48 >> l);
        feats[l] = tu_alloc(nn_dims_count(fd[l]));
        dfe[l] = tu_alloc(nn_dims_count(fd[l]));
        dfe1[l] = tu_alloc(nn_dims_count(fd[l]));
        tu_fill(feats[l], nn_dims_count(fd[l]), rng, -1, 1);
        scales[l] = 1.0 / (4 << l);
    }
    roialign_config c = {7, 7, 0, 1};
    float out[8 * 2 * 49], one[2 * 49], dout[8 * 2 * 49];
    tu_fill(dout, 8 * 2 * 49, rng, -1, 1);
    roialign_map_levels(lvl, rois, 8, 4, 56);
    roialign_forward_levels(out, (const float *const *)feats, fd, scales, lvl, rois, 8, &c);
    roialign_backward_levels(dfe, dout, fd, scales, lvl, rois, 8, &c);
    double md = 0;
    for (int i = 0; i < 8; i++) {
        roialign_forward(one, feats[lvl[i]], fd[lvl[i]], rois + 5 * i, 1, scales[lvl[i]], &c);
        md = fmax(md, tu_rel_diff(out + i * 98, one, 98, 1));
        roialign_backward(dfe1[lvl[i]], dout + i * 98, fd[lvl[i]], rois + 5 * i, 1, scales[lvl[i]], &c);
    }
    tu_check("multi-level forward == per-level forward", md, 0);
    md = 0;
    for (int l = 0; l < 4; l++) md = fmax(md, tu_rel_diff(dfe[l], dfe1[l], nn_dims_count(fd[l]), 1));
    tu_check("multi-level backward == per-level backward", md, 0);
    for (int l = 0; l < 4; l++) {
        free(feats[l]);
        free(dfe[l]);
        free(dfe1[l]);
    }
}

int main(void) {
    pl_rng rng;
    pl_rng_seed(&rng, 17);
    test_hand();
    test_backward(&rng);
    test_levels(&rng);
    return tu_finish("test_det_roialign");
}
