// test_nn_layers: BatchNorm3d and GroupNorm (hand-computed numbers, PyTorch's running-stat
// rule, eval mode, finite differences, fused ReLU), MaxPool3d, global average pool, Linear,
// residual add, nearest 2x upsampling, ReLU (hand cases + finite differences), the losses
// (hand-computed CE with label smoothing, BCE, smooth L1 + finite differences), SGD two steps
// by hand, global-norm clipping and the learning-rate schedules.
#include "nn/loss.h"
#include "nn/norm.h"
#include "nn/ops.h"
#include "nn/parallel.h"
#include "nn/sgd.h"
#include "tests/test_util.h"

// ---- generic "L = sum(f(x) * R)" finite-difference context ----
typedef struct {
    int kind;  // 0 BN train, 1 GN, 2 maxpool, 3 linear, 4 gap, 5 upsample, 6 add
    void *layer;
    float *x, *x2, *y, *r, *aux, *aux2;
    int32_t *idx;
    nn_dims d;
    int64_t ny;
} lctx;

static void lforward(lctx *c) {
    switch (c->kind) {
    case 0: batchnorm3d_forward(c->y, c->aux, c->aux2, c->x, c->layer, c->d, 1, 0); break;
    case 1: groupnorm_forward(c->y, c->aux, c->aux2, c->x, c->layer, c->d, 0); break;
    case 2: maxpool3d_forward(c->y, c->idx, c->x, c->layer, c->d); break;
    case 3: linear_forward(c->y, c->x, c->layer, c->d.n); break;
    case 4: avgpool_global_forward(c->y, c->x, c->d); break;
    case 5: upsample2x_forward(c->y, c->x, c->d); break;
    case 6: add_forward(c->y, c->x, c->x2, nn_dims_count(c->d), 0); break;
    }
}

static double lloss(void *vc) {
    lctx *c = vc;
    lforward(c);
    double s = 0;
    for (int64_t i = 0; i < c->ny; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

static void test_batchnorm(pl_rng *rng) {
    // hand case: C=1, N=2, W=2: x = [1 2 | 3 4]; mean 2.5, biased var 1.25, unbiased 5/3
    float x[4] = {1, 2, 3, 4}, y[4], g = 2, b = 0.5f, rm = 0, rv = 1, nbt = 0, mean, invstd;
    float dg = 0, db = 0;
    batchnorm3d l = {1, 1e-5f, 0.1f, &g, &b, &dg, &db, &rm, &rv, &nbt, NULL, NULL};
    nn_dims d = nn_dims_make(2, 1, 1, 1, 2);
    batchnorm3d_forward(y, &mean, &invstd, x, &l, d, 1, 0);
    const double is = 1.0 / sqrt(1.25 + 1e-5);  // 0.894423613
    float want[4];
    for (int i = 0; i < 4; i++) want[i] = (float)(2 * (x[i] - 2.5) * is + 0.5);
    tu_check_near("BN hand y[0] = 2*(1-2.5)/sqrt(1.25+eps)+0.5", y[0], -2.18327084, 1e-6);
    tu_check("BN hand y (all four)", tu_rel_diff(y, want, 4, 1), 1e-6);
    tu_check_near("BN running_mean = 0.9*0 + 0.1*2.5", rm, 0.25, 1e-7);
    tu_check_near("BN running_var = 0.9*1 + 0.1*(5/3) (unbiased)", rv, 1.06666667, 1e-6);
    tu_check_near("BN num_batches_tracked", nbt, 1, 0);
    // eval: running statistics, no update
    batchnorm3d_forward(y, &mean, &invstd, x, &l, d, 0, 0);
    tu_check_near("BN eval y[3] = 2*(4-0.25)/sqrt(1.0666667+eps)+0.5", y[3],
                  2 * (4 - 0.25) / sqrt(1.06666667 + 1e-5) + 0.5, 2e-6);
    tu_check_near("BN eval leaves running_mean", rm, 0.25, 0);
    // eval backward: dx = gamma*invstd*dy
    float dy[4] = {1, -1, 2, 0}, dx[4] = {0};
    batchnorm3d_backward(dx, dy, x, y, &mean, &invstd, &l, d, 0, 0, 0);
    tu_check_near("BN eval dx[2] = 2*2/sqrt(rv+eps)", dx[2], 4 / sqrt(1.06666667 + 1e-5), 2e-6);

    // finite differences in train mode, odd shape
    nn_dims e = nn_dims_make(3, 5, 3, 4, 5);
    int64_t n = nn_dims_count(e);
    float *xx = tu_alloc(n), *yy = tu_alloc(n), *r = tu_alloc(n), *gx = tu_alloc(n);
    float ga[5], be[5], dga[5] = {0}, dbe[5] = {0}, rm5[5] = {0}, rv5[5] = {1, 1, 1, 1, 1}, nb5 = 0;
    float mu[5], isd[5];
    tu_fill(xx, n, rng, -2, 3), tu_fill(r, n, rng, -1, 1), tu_fill(ga, 5, rng, 0.5, 1.5), tu_fill(be, 5, rng, -1, 1);
    batchnorm3d L = {5, 1e-5f, 0.1f, ga, be, dga, dbe, rm5, rv5, &nb5, NULL, NULL};
    batchnorm3d_forward(yy, mu, isd, xx, &L, e, 1, 0);
    batchnorm3d_backward(gx, r, xx, yy, mu, isd, &L, e, 1, 0, 0);
    lctx c = {0, &L, xx, NULL, yy, r, mu, isd, NULL, e, n};
    tu_check("BN train finite-diff dx", tu_fd_check(lloss, &c, xx, gx, n, 60, 1e-2, rng), 1e-2);
    tu_check("BN train finite-diff dgamma", tu_fd_check(lloss, &c, ga, dga, 5, 5, 1e-2, rng), 1e-2);
    tu_check("BN train finite-diff dbeta", tu_fd_check(lloss, &c, be, dbe, 5, 5, 1e-2, rng), 1e-2);
    // fused ReLU == plain BN backward of the masked gradient
    float *ym = tu_alloc(n), *rm_ = tu_alloc(n), *gx2 = tu_alloc(n);
    memset(gx, 0, (size_t)n * 4);
    batchnorm3d_forward(yy, mu, isd, xx, &L, e, 1, 0);
    batchnorm3d_forward(ym, mu, isd, xx, &L, e, 1, 1);
    for (int64_t i = 0; i < n; i++) rm_[i] = yy[i] > 0 ? r[i] : 0;
    batchnorm3d_backward(gx, rm_, xx, yy, mu, isd, &L, e, 1, 0, 0);
    batchnorm3d_backward(gx2, r, xx, ym, mu, isd, &L, e, 1, 1, 0);
    tu_check("BN fused ReLU backward == masked plain backward", tu_rel_diff(gx2, gx, n, 1e-6), 1e-6);
    free(xx), free(yy), free(r), free(gx), free(ym), free(rm_), free(gx2);
}

static void test_groupnorm(pl_rng *rng) {
    // hand: N=1, C=4, 2 groups, one voxel: x = [1 3 | 10 14] -> group means 2, 12, vars 1, 4
    float x[4] = {1, 3, 10, 14}, y[4], ga[4] = {1, 1, 2, 1}, be[4] = {0, 0, 0, 1}, mu[2], isd[2];
    float dga[4] = {0}, dbe[4] = {0};
    groupnorm l = {4, 2, 1e-5f, ga, be, dga, dbe};
    groupnorm_forward(y, mu, isd, x, &l, nn_dims_make(1, 4, 1, 1, 1), 0);
    float want[4] = {(float)(-1 / sqrt(1 + 1e-5)), (float)(1 / sqrt(1 + 1e-5)),
                     (float)(2 * -2 / sqrt(4 + 1e-5)), (float)(2 / sqrt(4 + 1e-5) + 1)};
    tu_check("GN hand y = [-1, 1, -2, 2] (eps-scaled)", tu_rel_diff(y, want, 4, 1), 1e-6);

    nn_dims e = nn_dims_make(2, 6, 3, 3, 5);
    int64_t n = nn_dims_count(e);
    float *xx = tu_alloc(n), *yy = tu_alloc(n), *r = tu_alloc(n), *gx = tu_alloc(n);
    float g6[6], b6[6], dg6[6] = {0}, db6[6] = {0}, m6[6], s6[6];
    tu_fill(xx, n, rng, -2, 3), tu_fill(r, n, rng, -1, 1), tu_fill(g6, 6, rng, 0.5, 1.5), tu_fill(b6, 6, rng, -1, 1);
    groupnorm L = {6, 3, 1e-5f, g6, b6, dg6, db6};
    groupnorm_forward(yy, m6, s6, xx, &L, e, 0);
    groupnorm_backward(gx, r, xx, yy, m6, s6, &L, e, 0, 0);
    lctx c = {1, &L, xx, NULL, yy, r, m6, s6, NULL, e, n};
    tu_check("GN finite-diff dx", tu_fd_check(lloss, &c, xx, gx, n, 60, 1e-2, rng), 1e-2);
    tu_check("GN finite-diff dgamma", tu_fd_check(lloss, &c, g6, dg6, 6, 6, 1e-2, rng), 1e-2);
    tu_check("GN finite-diff dbeta", tu_fd_check(lloss, &c, b6, db6, 6, 6, 1e-2, rng), 1e-2);
    float *ym = tu_alloc(n), *rm_ = tu_alloc(n), *gx2 = tu_alloc(n);
    memset(gx, 0, (size_t)n * 4);
    groupnorm_forward(ym, m6, s6, xx, &L, e, 1);
    for (int64_t i = 0; i < n; i++) rm_[i] = yy[i] > 0 ? r[i] : 0;
    groupnorm_backward(gx, rm_, xx, yy, m6, s6, &L, e, 0, 0);
    groupnorm_backward(gx2, r, xx, ym, m6, s6, &L, e, 1, 0);
    tu_check("GN fused ReLU backward == masked plain backward", tu_rel_diff(gx2, gx, n, 1e-6), 1e-6);
    free(xx), free(yy), free(r), free(gx), free(ym), free(rm_), free(gx2);
}

static void test_small_ops(pl_rng *rng) {
    // maxpool hand: 1-D [1 5 2 4 3], k3 s2 p1 -> windows [-inf 1 5] [5 2 4] [4 3 -inf] -> 5 5 4
    float x[5] = {1, 5, 2, 4, 3}, y[3], dx[5] = {0}, dy[3] = {1, 10, 100};
    int32_t idx[3];
    maxpool3d_shape ps = {{1, 1, 3}, {1, 1, 2}, {0, 0, 1}};
    nn_dims d1 = nn_dims_make(1, 1, 1, 1, 5), o1;
    PL_ASSERT(maxpool3d_out_dims(&o1, &ps, d1) == 0);
    maxpool3d_forward(y, idx, x, &ps, d1);
    maxpool3d_backward(dx, dy, idx, d1, o1);
    float wy[3] = {5, 5, 4}, wdx[5] = {0, 11, 0, 100, 0};
    tu_check("maxpool hand k3 s2 p1 forward", tu_rel_diff(y, wy, 3, 1), 0);
    tu_check("maxpool hand backward (first max takes the tie)", tu_rel_diff(dx, wdx, 5, 1), 0);
    // NaN and -inf (PyTorch propagates NaN; mp3d keeps the first NaN's index): 1-D k3 s2 p1 over
    // [1 NaN 7 NaN -inf -inf]: windows {1,NaN} {NaN,7,NaN} {NaN,-inf,-inf} -> NaN@1 NaN@1 NaN@3;
    // k2 s1 p0 over [-inf -inf 2]: {-inf,-inf} -> -inf@0 (the first), {-inf,2} -> 2@2
    {
        float xn[6] = {1, NAN, 7, NAN, -INFINITY, -INFINITY}, yn[3];
        int32_t in_[3];
        maxpool3d_forward(yn, in_, xn, &ps, nn_dims_make(1, 1, 1, 1, 6));
        tu_check("maxpool NaN windows: value NaN, first NaN's index",
                 !(isnan(yn[0]) && isnan(yn[1]) && isnan(yn[2]) && in_[0] == 1 && in_[1] == 1 && in_[2] == 3), 0);
        float xi[3] = {-INFINITY, -INFINITY, 2}, yi[2];
        int32_t ii2[2];
        maxpool3d_shape p2 = {{1, 1, 2}, {1, 1, 1}, {0, 0, 0}};
        maxpool3d_forward(yi, ii2, xi, &p2, nn_dims_make(1, 1, 1, 1, 3));
        tu_check("maxpool all -inf window: -inf at the first index; then 2 at 2",
                 !(isinf(yi[0]) && yi[0] < 0 && ii2[0] == 0 && yi[1] == 2 && ii2[1] == 2), 0);
    }

    // maxpool against a window-by-window reference written here (the first strict maximum in
    // (d, h, w) order; a window of -inf gives its first element): values from {0, 1, 2, 3} (ties
    // everywhere) and -inf runs, four shapes with stride, padding and kernels of one along an axis
    {
        const maxpool3d_shape shp[4] = {{{3, 3, 3}, {1, 2, 2}, {1, 1, 1}},
                                        {{1, 3, 3}, {1, 2, 2}, {0, 1, 1}},
                                        {{2, 2, 2}, {2, 2, 2}, {0, 0, 0}},
                                        {{3, 1, 1}, {1, 1, 1}, {1, 0, 0}}};
        const nn_dims din[4] = {nn_dims_make(2, 3, 5, 9, 8), nn_dims_make(1, 2, 4, 11, 10), nn_dims_make(1, 2, 6, 8, 8),
                                nn_dims_make(1, 2, 5, 3, 4)};
        int bad = 0;
        for (int c = 0; c < 4; c++) {
            nn_dims od;
            PL_ASSERT(maxpool3d_out_dims(&od, &shp[c], din[c]) == 0);
            int64_t nx = nn_dims_count(din[c]), ny = nn_dims_count(od), isp = nn_dims_spatial(din[c]), osp = nn_dims_spatial(od);
            float *px = tu_alloc(nx), *py = tu_alloc(ny);
            int32_t *pi = pl_malloc((size_t)ny * 4, "idx");
            for (int64_t i = 0; i < nx; i++) px[i] = (float)(pl_rng_u64(rng) % 4);
            for (int64_t i = 0; i < nx / 3; i++) px[i] = -INFINITY;   // -inf runs: whole windows of them
            maxpool3d_forward(py, pi, px, &shp[c], din[c]);
            for (int64_t p = 0; p < din[c].n * din[c].c; p++)
                for (int64_t od_ = 0; od_ < od.d; od_++)
                    for (int64_t oh = 0; oh < od.h; oh++)
                        for (int64_t ow = 0; ow < od.w; ow++) {
                            float best = -INFINITY;
                            int64_t bi = -1;
                            for (int64_t kd = 0; kd < shp[c].k[0]; kd++)
                                for (int64_t kh = 0; kh < shp[c].k[1]; kh++)
                                    for (int64_t kw = 0; kw < shp[c].k[2]; kw++) {
                                        int64_t id = od_ * shp[c].s[0] - shp[c].p[0] + kd, ih = oh * shp[c].s[1] - shp[c].p[1] + kh;
                                        int64_t iw = ow * shp[c].s[2] - shp[c].p[2] + kw;
                                        if (id < 0 || ih < 0 || iw < 0 || id >= din[c].d || ih >= din[c].h || iw >= din[c].w) continue;
                                        int64_t i = (id * din[c].h + ih) * din[c].w + iw;
                                        if (px[p * isp + i] > best || bi < 0) {
                                            best = px[p * isp + i];
                                            bi = i;
                                        }
                                    }
                            int64_t o_ = p * osp + (od_ * od.h + oh) * od.w + ow;
                            bad += py[o_] != best || pi[o_] != bi;
                        }
            free(px), free(py), free(pi);
        }
        tu_check("maxpool == the window-by-window reference with ties and -inf (mismatches)", bad, 0);
    }

    // maxpool finite differences: distinct values on a 0.01 grid, step 1e-3 crosses no tie
    maxpool3d_shape p3 = {{3, 3, 3}, {1, 2, 2}, {1, 1, 1}};
    nn_dims d = nn_dims_make(2, 3, 3, 7, 6), o;
    PL_ASSERT(maxpool3d_out_dims(&o, &p3, d) == 0);
    int64_t n = nn_dims_count(d), no = nn_dims_count(o);
    float *xx = tu_alloc(n), *yy = tu_alloc(no), *r = tu_alloc(no), *gx = tu_alloc(n);
    int32_t *ii = pl_malloc((size_t)no * 4, "idx");
    int64_t *perm = pl_malloc((size_t)n * 8, "perm");
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    pl_rng_shuffle_i64(rng, perm, n);
    for (int64_t i = 0; i < n; i++) xx[i] = 0.01f * (float)perm[i] - 1.0f;
    tu_fill(r, no, rng, -1, 1);
    maxpool3d_forward(yy, ii, xx, &p3, d);
    maxpool3d_backward(gx, r, ii, d, o);
    lctx c = {2, &p3, xx, NULL, yy, r, NULL, NULL, ii, d, no};
    tu_check("maxpool k3 s(1,2,2) p1 finite-diff dx", tu_fd_check(lloss, &c, xx, gx, n, 80, 1e-3, rng), 1e-3);
    free(xx), free(yy), free(r), free(gx), free(ii), free(perm);

    // linear: hand y = x W^T + b with x=[1 2], W=[[1 0],[2 -1],[0 3]], b=[0.5 0 -1] -> [1.5 0 5]
    float lx[2] = {1, 2}, lw[6] = {1, 0, 2, -1, 0, 3}, lb[3] = {0.5f, 0, -1}, ly[3];
    float ldw[6] = {0}, ldb[3] = {0}, ldx[2] = {0}, ldy[3] = {1, 1, 1};
    linear L = {2, 3, lw, lb, ldw, ldb};
    linear_forward(ly, lx, &L, 1);
    float wly[3] = {1.5f, 0, 5};
    tu_check("linear hand forward", tu_rel_diff(ly, wly, 3, 1), 0);
    linear_backward(ldx, ldy, lx, &L, 1);
    float wldx[2] = {3, 2}, wldw[6] = {1, 2, 1, 2, 1, 2};  // dx = column sums of W; dW = dy x^T
    tu_check("linear hand dx, dW", tu_rel_diff(ldx, wldx, 2, 1) + tu_rel_diff(ldw, wldw, 6, 1), 0);
    // linear finite differences
    {
        int64_t nb = 3, in = 7, out = 4;
        float *a = tu_alloc(nb * in), *w = tu_alloc(out * in), *b = tu_alloc(out), *yv = tu_alloc(nb * out);
        float *rr = tu_alloc(nb * out), *ga = tu_alloc(nb * in), *gw = tu_alloc(out * in), *gb = tu_alloc(out);
        tu_fill(a, nb * in, rng, -1, 1), tu_fill(w, out * in, rng, -1, 1), tu_fill(b, out, rng, -1, 1);
        tu_fill(rr, nb * out, rng, -1, 1);
        linear LL = {in, out, w, b, gw, gb};
        linear_backward(ga, rr, a, &LL, nb);
        lctx lc = {3, &LL, a, NULL, yv, rr, NULL, NULL, NULL, nn_dims_make(nb, in, 1, 1, 1), nb * out};
        tu_check("linear finite-diff dx", tu_fd_check(lloss, &lc, a, ga, nb * in, 21, 1e-2, rng), 1e-3);
        tu_check("linear finite-diff dW", tu_fd_check(lloss, &lc, w, gw, out * in, 28, 1e-2, rng), 1e-3);
        tu_check("linear finite-diff db", tu_fd_check(lloss, &lc, b, gb, out, 4, 1e-2, rng), 1e-3);
        free(a), free(w), free(b), free(yv), free(rr), free(ga), free(gw), free(gb);
    }
    // global average pool, upsample, add: hand + finite differences
    {
        float gx_[6] = {1, 2, 3, 4, 5, 6}, gy[2], gdx[6] = {0}, gdy[2] = {3, 6};
        avgpool_global_forward(gy, gx_, nn_dims_make(1, 2, 1, 1, 3));
        avgpool_global_backward(gdx, gdy, nn_dims_make(1, 2, 1, 1, 3));
        float wgy[2] = {2, 5}, wgdx[6] = {1, 1, 1, 2, 2, 2};
        tu_check("global avg pool hand forward/backward", tu_rel_diff(gy, wgy, 2, 1) + tu_rel_diff(gdx, wgdx, 6, 1), 0);
        float ux[2] = {1, 2}, uy[8], udx[2] = {0}, udy[8] = {1, 2, 3, 4, 5, 6, 7, 8};
        upsample2x_forward(uy, ux, nn_dims_make(1, 1, 1, 1, 2));
        upsample2x_backward(udx, udy, nn_dims_make(1, 1, 1, 1, 2));
        float wuy[8] = {1, 1, 2, 2, 1, 1, 2, 2}, wudx[2] = {1 + 2 + 5 + 6, 3 + 4 + 7 + 8};
        tu_check("upsample2x hand forward/backward", tu_rel_diff(uy, wuy, 8, 1) + tu_rel_diff(udx, wudx, 2, 1), 0);
        nn_dims e = nn_dims_make(2, 3, 2, 3, 4);
        int64_t ne = nn_dims_count(e), ne4 = ne * 4;
        float *a = tu_alloc(ne), *bb = tu_alloc(ne), *yv = tu_alloc(ne4), *rr = tu_alloc(ne4);
        float *ga = tu_alloc(ne), *gb = tu_alloc(ne);
        tu_fill(a, ne, rng, -1, 1), tu_fill(bb, ne, rng, -1, 1), tu_fill(rr, ne4, rng, -1, 1);
        upsample2x_backward(ga, rr, e);
        lctx uc = {5, NULL, a, NULL, yv, rr, NULL, NULL, NULL, e, ne4};
        tu_check("upsample2x finite-diff dx", tu_fd_check(lloss, &uc, a, ga, ne, 40, 1e-2, rng), 1e-3);
        memset(ga, 0, (size_t)ne * 4);
        avgpool_global_backward(ga, rr, e);
        lctx gc = {4, NULL, a, NULL, yv, rr, NULL, NULL, NULL, e, e.n * e.c};
        tu_check("global avg pool finite-diff dx", tu_fd_check(lloss, &gc, a, ga, ne, 40, 1e-2, rng), 1e-3);
        memset(ga, 0, (size_t)ne * 4);
        add_forward(yv, a, bb, ne, 1);
        add_backward(ga, gb, rr, yv, ne, 1);
        int bad = 0;
        for (int64_t i = 0; i < ne; i++) {
            float want = (a[i] + bb[i] > 0) ? rr[i] : 0;
            bad += ga[i] != want || gb[i] != want || yv[i] != (a[i] + bb[i] > 0 ? a[i] + bb[i] : 0);
        }
        tu_check("add+ReLU forward/backward elementwise", bad, 0);
        float rx[4] = {-1, 0, 2, -3}, ry[4], rdx[4] = {1, 1, 1, 1}, rdy[4] = {5, 6, 7, 8};
        relu_forward(ry, rx, 4);
        relu_backward(rdx, rdy, ry, 4);
        float wry[4] = {0, 0, 2, 0}, wrdx[4] = {1, 1, 8, 1};
        tu_check("relu hand forward/backward (accumulating)", tu_rel_diff(ry, wry, 4, 1) + tu_rel_diff(rdx, wrdx, 4, 1), 0);
        free(a), free(bb), free(yv), free(rr), free(ga), free(gb);
    }
}

typedef struct {
    float *z;
    int64_t *lab, n, k;
    double eps;
} ce_ctx;
static double ce_loss(void *v) {
    ce_ctx *c = v;
    double l;
    PL_ASSERT(loss_softmax_ce(&l, NULL, c->z, c->lab, c->n, c->k, c->eps) == 0);
    return l;
}

static void test_losses(pl_rng *rng) {
    // CE hand: logits [1 2 3], label 2, eps 0.1, K 3: q = [1/30, 1/30, 0.9 + 1/30];
    // log p = z - log(e + e^2 + e^3) = [-2.40760596, -1.40760596, -0.40760596]
    // loss = (2.40760596 + 1.40760596)/30 + 0.93333333*0.40760596 = 0.50760596
    float z[3] = {1, 2, 3}, dz[3];
    int64_t lab = 2;
    double l;
    loss_softmax_ce(&l, dz, z, &lab, 1, 3, 0.1);
    tu_check_near("CE label smoothing 0.1 hand loss", l, 0.5076059644, 1e-7);
    float wdz[3] = {0.0566972398f, 0.2113951377f, -0.2680923776f};  // softmax - q
    tu_check("CE label smoothing hand dlogits = p - q", tu_rel_diff(dz, wdz, 3, 1), 1e-6);
    loss_softmax_ce(&l, NULL, z, &lab, 1, 3, 0.0);
    tu_check_near("CE no smoothing = -log p_2", l, 0.4076059644, 1e-7);
    // large logits stay finite
    float big[2] = {1000, -1000};
    int64_t l0 = 1;
    loss_softmax_ce(&l, NULL, big, &l0, 1, 2, 0.0);
    tu_check_near("CE of logits (1000, -1000), label 1 = 2000", l, 2000, 1e-6);
    pl_quiet_begin();
    int64_t badl = 3;
    tu_check("CE rejects label 3 of K=3", loss_softmax_ce(&l, NULL, z, &badl, 1, 3, 0) == PL_ERANGE ? 0 : 1, 0);
    pl_quiet_end();
    // CE finite differences
    int64_t n = 4, k = 5, labs[4] = {0, 4, 2, 2};
    float *zz = tu_alloc(n * k), *gz = tu_alloc(n * k);
    tu_fill(zz, n * k, rng, -3, 3);
    loss_softmax_ce(&l, gz, zz, labs, n, k, 0.1);
    ce_ctx c = {zz, labs, n, k, 0.1};
    tu_check("CE (eps 0.1) finite-diff dlogits", tu_fd_check(ce_loss, &c, zz, gz, n * k, 20, 1e-3, rng), 1e-3);
    free(zz), free(gz);

    // BCE hand: x = [0 2], t = [1 0]: (log 2 + log(1 + e^2)) / 2 = (0.69314718 + 2.12692801)/2
    float bx[2] = {0, 2}, bt[2] = {1, 0}, bdx[2];
    double bl = loss_sigmoid_bce(bdx, bx, bt, NULL, 2, 0);
    tu_check_near("sigmoid BCE hand loss", bl, 1.4100375938, 1e-8);
    float wbdx[2] = {-0.25f, 0.4403985390f};  // (sigmoid(x) - t) / 2
    tu_check("sigmoid BCE hand dx", tu_rel_diff(bdx, wbdx, 2, 1), 1e-6);
    // smooth L1 hand, beta 1: d = [0.5, -3] -> [0.125, 2.5], mean 1.3125; dx = [0.25, -0.5]
    float sx[2] = {1.5f, -1}, st[2] = {1, 2}, sdx[2];
    double sl = loss_smooth_l1(sdx, sx, st, NULL, 2, 1.0, 0);
    tu_check_near("smooth L1 (beta 1) hand loss", sl, 1.3125, 1e-12);
    float wsdx[2] = {0.25f, -0.5f};
    tu_check("smooth L1 hand dx", tu_rel_diff(sdx, wsdx, 2, 1), 0);
    sl = loss_smooth_l1(NULL, sx, st, NULL, 2, 1.0 / 9, 4.0);  // sum (0.5-1/18) + (3-1/18) / 4
    tu_check_near("smooth L1 (beta 1/9, norm 4)", sl, (0.5 - 1.0 / 18 + 3 - 1.0 / 18) / 4, 1e-7);
}

static void test_sgd(void) {
    // PyTorch SGD(lr=0.1, momentum=0.9, weight_decay=0.01), two steps, by hand:
    // p=1, g=0.5: d=0.51, buf=0.51, p=0.949;  d=0.50949, buf=0.9*0.51+0.50949=0.96849, p=0.852151
    // p=-2, g=0.1: d=0.08, buf=0.08, p=-2.008; d=0.07992, buf=0.15192, p=-2.023192
    float p[2] = {1, -2}, g[2] = {0.5f, 0.1f}, buf[2] = {123, 456};
    sgd_step(p, buf, g, 2, 0.1, 0.9, 0.01, 1);
    tu_check_near("SGD step 1 p[0]", p[0], 0.949, 1e-7);
    tu_check_near("SGD step 1 buf[1] (= d_p on the first step)", buf[1], 0.08, 1e-7);
    sgd_step(p, buf, g, 2, 0.1, 0.9, 0.01, 0);
    tu_check_near("SGD step 2 p[0]", p[0], 0.852151, 1e-6);
    tu_check_near("SGD step 2 buf[0]", buf[0], 0.96849, 1e-6);
    tu_check_near("SGD step 2 p[1]", p[1], -2.023192, 1e-6);
    // Nesterov with two groups (torch.optim.SGD(nesterov=True), weight decay 0 on norm/bias):
    // decayed p=1, g=0.5: d=0.51, buf=0.51, p -= 0.1*(0.51+0.9*0.51) -> 0.9031;
    //   d=0.5+0.01*0.9031=0.509031, buf=0.9*0.51+d=0.968031, p -= 0.1*(d+0.9*buf) -> 0.76507411
    // exempt p=-2, g=0.1: d=0.1, buf=0.1, p -> -2.019; buf=0.19, p -= 0.1*(0.1+0.171) -> -2.0461
    {
        nn_params P;
        nn_params_init(&P);
        int iw, ib, ibn, irm;
        int64_t two = 2, one = 1;
        nn_params_add(&P, &iw, "conv.weight", NN_PARAM, 1, &two, NN_INIT_ZEROS, 0);
        nn_params_add(&P, &ib, "conv.bias", NN_PARAM, 1, &one, NN_INIT_ZEROS, 0);
        nn_params_add(&P, &ibn, "bn.weight", NN_PARAM, 1, &one, NN_INIT_ONES, 0);
        nn_params_add(&P, &irm, "bn.running_mean", NN_BUFFER, 1, &one, NN_INIT_ZEROS, 0);
        nn_params_set_role(&P, ibn, NN_ROLE_NORM);
        tu_check("param roles: .bias is a bias, set_role marks norm, weights decay",
                 !(P.info[ib].role == NN_ROLE_BIAS && P.info[ibn].role == NN_ROLE_NORM && P.info[iw].role == NN_ROLE_WEIGHT), 0);
        if (nn_params_alloc(&P) == 0) {
            float *w = nn_params_data(&P, iw), *bb = nn_params_data(&P, ib), *bn = nn_params_data(&P, ibn);
            w[0] = 1, w[1] = 1, bb[0] = -2, bn[0] = -2;
            float *gw = nn_params_grad(&P, iw), *gb = nn_params_grad(&P, ib), *gbn = nn_params_grad(&P, ibn);
            gw[0] = gw[1] = 0.5f, gb[0] = gbn[0] = 0.1f;
            sgd_opts o = {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01, .nesterov = 1, .decay_norm_bias = 0};
            tu_check_near("decayed floats (conv.weight only)", (double)sgd_decayed_count(&P, &o), 2, 0);
            sgd_step_params(&P, &o, 1);
            tu_check_near("Nesterov step 1, decayed", w[1], 0.9031, 1e-7);
            tu_check_near("Nesterov step 1, bias exempt", bb[0], -2.019, 1e-6);
            sgd_step_params(&P, &o, 0);
            tu_check_near("Nesterov step 2, decayed", w[0], 0.76507411, 1e-6);
            tu_check_near("Nesterov step 2, bias exempt", bb[0], -2.0461, 1e-6);
            tu_check_near("Nesterov step 2, norm weight exempt", bn[0], -2.0461, 1e-6);
            o.decay_norm_bias = 1;
            tu_check_near("decayed floats (all)", (double)sgd_decayed_count(&P, &o), 4, 0);
        }
        nn_params_free(&P);
    }
    // clipping: [3 4] has norm 5; clip to 1 -> [0.6 0.8]
    float cg[2] = {3, 4};
    double norm = sgd_clip_grad_norm(cg, 2, 1.0);
    tu_check_near("clip: norm before", norm, 5, 1e-12);
    tu_check_near("clip: g[1] = 4 * 1/(5+1e-6)", cg[1], 4.0 / (5 + 1e-6), 1e-7);
    float cg2[2] = {0.3f, 0.4f};
    sgd_clip_grad_norm(cg2, 2, 1.0);
    tu_check_near("clip: below max is unchanged", cg2[0], 0.3f, 0);
    // schedules
    sgd_lr_schedule cs = {0.1, SGD_SCHED_COSINE, 100, 0, NULL, 0, 0.1, 0, 1};
    tu_check_near("cosine lr at 50/100", sgd_lr_at(&cs, 50), 0.05, 1e-12);
    tu_check_near("cosine lr at 25/100 = 0.05(1+cos(pi/4))", sgd_lr_at(&cs, 25), 0.05 * (1 + sqrt(0.5)), 1e-12);
    tu_check_near("cosine lr at end", sgd_lr_at(&cs, 100), 0, 1e-12);
    int64_t ms[2] = {16000, 22000};  // iterations (epochs 16, 22 at 1000 it/epoch)
    sgd_lr_schedule ss = {0.02, SGD_SCHED_STEP, 0, 0, ms, 2, 0.1, 500, 1.0 / 3};
    tu_check_near("step+warmup lr at 0 = lr/3", sgd_lr_at(&ss, 0), 0.02 / 3, 1e-12);
    tu_check_near("warmup lr at 250 = lr*(1-0.5*2/3)", sgd_lr_at(&ss, 250), 0.02 * 2 / 3, 1e-12);
    sgd_lr_schedule ss2 = ss;
    ss2.warmup_iters = 0;
    tu_check_near("step lr at 15999", sgd_lr_at(&ss2, 15999), 0.02, 1e-12);
    tu_check_near("step lr at 16000 (x0.1)", sgd_lr_at(&ss2, 16000), 0.002, 1e-12);
    tu_check_near("step lr at 22000 (x0.01)", sgd_lr_at(&ss2, 22000), 0.0002, 1e-12);
}

static void one_replica(void *ctx, double *buf, int n) { (void)ctx, (void)buf, (void)n; }

// BN and GN split channels / groups over threads: results must be bit-identical to 1 thread.
static void test_norm_threads(pl_rng *rng) {
    nn_dims d = nn_dims_make(2, 16, 4, 64, 64);  // 32768 values per channel -> 8 channels per thread
    int64_t n = nn_dims_count(d);
    float *x = tu_alloc(n), *dy = tu_alloc(n), *y[2], *dx[2], st[2][64], g[16], b[16], dg[2][16], db[2][16];
    float rm[16] = {0}, rv[16], nbt = 0;
    tu_fill(x, n, rng, -1, 2), tu_fill(dy, n, rng, -1, 1), tu_fill(g, 16, rng, 0.5, 1.5), tu_fill(b, 16, rng, -1, 1);
    for (int i = 0; i < 16; i++) rv[i] = 1;
    double diff = 0;
    for (int kind = 0; kind < 2; kind++) {
        for (int t = 0; t < 2; t++) {
            nn_set_threads(t + 1);
            y[t] = tu_alloc(n), dx[t] = tu_alloc(n);
            memset(dg[t], 0, sizeof dg[t]), memset(db[t], 0, sizeof db[t]);
            if (kind == 0) {
                batchnorm3d l = {16, 1e-5f, 0.1f, g, b, dg[t], db[t], rm, rv, &nbt, NULL, NULL};
                batchnorm3d_forward(y[t], st[t], st[t] + 16, x, &l, d, 1, 1);
                batchnorm3d_backward(dx[t], dy, x, y[t], st[t], st[t] + 16, &l, d, 1, 1, 0);
            } else {
                groupnorm l = {16, 4, 1e-5f, g, b, dg[t], db[t]};
                groupnorm_forward(y[t], st[t], st[t] + 8, x, &l, d, 1);
                groupnorm_backward(dx[t], dy, x, y[t], st[t], st[t] + 8, &l, d, 1, 0);
            }
        }
        diff += tu_rel_diff(y[1], y[0], n, 1) + tu_rel_diff(dx[1], dx[0], n, 1);
        diff += tu_rel_diff(dg[1], dg[0], 16, 1) + tu_rel_diff(db[1], db[0], 16, 1);
        for (int t = 0; t < 2; t++) free(y[t]), free(dx[t]);
    }
    // max-pool: planes split over threads
    maxpool3d_shape ps = {{3, 3, 3}, {1, 2, 2}, {1, 1, 1}};
    nn_dims o;
    PL_ASSERT(maxpool3d_out_dims(&o, &ps, d) == 0);
    int64_t no = nn_dims_count(o);
    float *py[2], *pdx[2];
    int32_t *pi[2];
    for (int t = 0; t < 2; t++) {
        nn_set_threads(t + 1);
        py[t] = tu_alloc(no), pdx[t] = tu_alloc(n), pi[t] = pl_malloc((size_t)no * 4, "idx");
        maxpool3d_forward(py[t], pi[t], x, &ps, d);
        maxpool3d_backward(pdx[t], dy, pi[t], d, o);  // dy reused as an (N,C,OD,OH,OW) gradient
    }
    diff += tu_rel_diff(py[1], py[0], no, 1) + tu_rel_diff(pdx[1], pdx[0], n, 1);
    for (int t = 0; t < 2; t++) free(py[t]), free(pdx[t]), free(pi[t]);
    nn_set_threads(0);
    tu_check("BN, GN, max-pool with 2 threads == 1 thread (bitwise)", diff, 0);

    // Synchronised BN (train.sync_bn) with a one-replica all-reduce: the same numbers as the
    // local path, and bit-identical at 1 and 2 threads (its passes are split over channels too).
    {
        float *ys[3], *dxs[3], sst[3][32], sdg[3][16], sdb[3][16];
        for (int t = 0; t < 3; t++) {  // t = 0, 1: sync at 1, 2 threads; t = 2: local at 1 thread
            nn_set_threads(t == 1 ? 2 : 1);
            ys[t] = tu_alloc(n), dxs[t] = tu_alloc(n);
            memset(sdg[t], 0, sizeof sdg[t]), memset(sdb[t], 0, sizeof sdb[t]);
            batchnorm3d l = {16, 1e-5f, 0.1f, g, b, sdg[t], sdb[t], rm, rv, &nbt, t < 2 ? one_replica : NULL, NULL};
            batchnorm3d_forward(ys[t], sst[t], sst[t] + 16, x, &l, d, 1, 1);
            batchnorm3d_backward(dxs[t], dy, x, ys[t], sst[t], sst[t] + 16, &l, d, 1, 1, 0);
        }
        double dt = tu_rel_diff(ys[1], ys[0], n, 1) + tu_rel_diff(dxs[1], dxs[0], n, 1) +
                    tu_rel_diff(sdg[1], sdg[0], 16, 1) + tu_rel_diff(sdb[1], sdb[0], 16, 1);
        tu_check("sync BN with 2 threads == 1 thread (bitwise)", dt, 0);
        double dl = tu_rel_diff(ys[0], ys[2], n, 1) + tu_rel_diff(dxs[0], dxs[2], n, 1) +
                    tu_rel_diff(sdg[0], sdg[2], 16, 1) + tu_rel_diff(sdb[0], sdb[2], 16, 1);
        tu_check("sync BN (1 replica) == local BN", dl, 1e-5);
        for (int t = 0; t < 3; t++) free(ys[t]), free(dxs[t]);
    }

    // write (the net passes it for a gradient's first use): dx full of NaN overwritten gives the
    // same bits as dx of zeros added into, for BN, sync BN and GN at 2 threads
    {
        double dw = 0;
        nn_set_threads(2);
        for (int kind = 0; kind < 3; kind++) {
            float *ya = tu_alloc(n), *add = tu_alloc(n), *wr = tu_alloc(n), s2[64], dgx[16] = {0}, dbx[16] = {0};
            for (int64_t i = 0; i < n; i++) wr[i] = NAN;
            for (int w = 0; w < 2; w++) {
                float *dxw = w ? wr : add;
                if (kind < 2) {
                    batchnorm3d l = {16, 1e-5f, 0.1f, g, b, dgx, dbx, rm, rv, &nbt, kind ? one_replica : NULL, NULL};
                    batchnorm3d_forward(ya, s2, s2 + 16, x, &l, d, 1, 1);
                    batchnorm3d_backward(dxw, dy, x, ya, s2, s2 + 16, &l, d, 1, 1, w);
                } else {
                    groupnorm l = {16, 4, 1e-5f, g, b, dgx, dbx};
                    groupnorm_forward(ya, s2, s2 + 8, x, &l, d, 1);
                    groupnorm_backward(dxw, dy, x, ya, s2, s2 + 8, &l, d, 1, w);
                }
            }
            dw += memcmp(add, wr, (size_t)n * sizeof(float)) != 0;
            free(ya), free(add), free(wr);
        }
        nn_set_threads(0);
        tu_check("BN, sync BN, GN backward with write: NaN-filled dx == zeros added into (bitwise)", dw, 0);
    }

    // SGD and gradient clipping over 300k floats (several 64k blocks): 2 threads == 1 thread
    // bitwise, and the clipped norm against a plain double sum.
    {
        const int64_t m = 300001;
        float *pp[2], *mm[2], *gg[2];
        double nrm[2];
        for (int t = 0; t < 2; t++) {
            nn_set_threads(t + 1);
            pl_rng r2;
            pl_rng_seed(&r2, 7);
            pp[t] = tu_alloc(m), mm[t] = tu_alloc(m), gg[t] = tu_alloc(m);
            tu_fill(pp[t], m, &r2, -1, 1), tu_fill(gg[t], m, &r2, -3, 3);
            nrm[t] = sgd_clip_grad_norm(gg[t], (size_t)m, 10.0);
            sgd_step(pp[t], mm[t], gg[t], (size_t)m, 0.1, 0.9, 1e-4, 1);
            sgd_step(pp[t], mm[t], gg[t], (size_t)m, 0.1, 0.9, 1e-4, 0);
        }
        nn_set_threads(0);
        tu_check("SGD + clip over 300k floats, 2 threads == 1 thread (bitwise)",
                 tu_rel_diff(pp[1], pp[0], m, 1) + tu_rel_diff(mm[1], mm[0], m, 1) + fabs(nrm[1] - nrm[0]), 0);
        pl_rng r2;
        pl_rng_seed(&r2, 7);
        float *g0 = tu_alloc(m), *p0 = tu_alloc(m);
        tu_fill(p0, m, &r2, -1, 1), tu_fill(g0, m, &r2, -3, 3);
        double ss = 0;
        for (int64_t i = 0; i < m; i++) ss += (double)g0[i] * g0[i];
        tu_check_near("clip norm over 300k floats == plain double sum", nrm[0] / sqrt(ss), 1, 1e-12);
        float want = g0[m - 1] * (float)(10.0 / (sqrt(ss) + 1e-6));
        tu_check_near("clip scales the last float (past the last full block)", gg[0][m - 1], want, 1e-6 * fabs(want) + 1e-12);
        for (int t = 0; t < 2; t++) free(pp[t]), free(mm[t]), free(gg[t]);
        free(g0), free(p0);
    }
    free(x), free(dy);
}

int main(void) {
    pl_rng rng;
    pl_rng_seed(&rng, 99);
    test_batchnorm(&rng);
    test_groupnorm(&rng);
    test_small_ops(&rng);
    test_losses(&rng);
    test_sgd();
    test_norm_threads(&rng);
    return tu_finish("test_nn_layers");
}
