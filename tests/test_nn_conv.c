// test_nn_conv: Conv3d fast path (vol2col + sgemm, chunked; direct GEMM for 1x1x1) against the
// naive double-accumulating reference for forward and backward (1e-5 relative), with odd
// shapes, per-axis strides and paddings, groups, bias, the pointwise and GTM cases and a
// workspace small enough to force many chunks; central finite differences for dx, dw, db;
// a hand-computed 1-D case; backward-weights by kernel taps (conv3d_backward_weights_taps) against
// the naive reference (accumulating, and overwriting garbage with `write`), at 1 and 2 threads,
// and the shapes the dnnl engine gives it.
#include <cblas.h>

#include "nn/conv3d.h"
#include "nn/parallel.h"
#include "tests/test_util.h"

typedef struct {
    const char *name;
    int64_t ic, oc, k[3], s[3], p[3], groups;
    int bias;
    nn_dims in;
} conv_case;

typedef struct {
    conv3d *l;
    const float *x, *r;
    nn_dims in;
    float *y, *ws;
    size_t wsf;
    int64_t ny;
} fd_ctx;

static double conv_loss(void *vc) {  // L = sum(conv(x) * R)
    fd_ctx *c = vc;
    conv3d_forward(c->y, c->x, c->l, c->in, c->ws, c->wsf);
    double s = 0;
    for (int64_t i = 0; i < c->ny; i++) s += (double)c->y[i] * c->r[i];
    return s;
}

static void run_case(const conv_case *cc, pl_rng *rng) {
    conv3d l = {0};
    l.sh = conv3d_shape_make(cc->ic, cc->oc, cc->k, cc->s, cc->p, cc->groups, cc->bias);
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, &l.sh, cc->in) == 0);
    int64_t nx = nn_dims_count(cc->in), ny = nn_dims_count(o), nw = conv3d_weight_count(&l.sh);
    float *x = tu_alloc(nx), *w = tu_alloc(nw), *b = tu_alloc(cc->oc), *r = tu_alloc(ny);
    float *y_ref = tu_alloc(ny), *y_big = tu_alloc(ny), *y_small = tu_alloc(ny);
    float *dx_ref = tu_alloc(nx), *dw_ref = tu_alloc(nw), *db_ref = tu_alloc(cc->oc);
    float *dx = tu_alloc(nx), *dw = tu_alloc(nw), *db = tu_alloc(cc->oc);
    tu_fill(x, nx, rng, -1, 1), tu_fill(w, nw, rng, -1, 1), tu_fill(b, cc->oc, rng, -1, 1);
    tu_fill(r, ny, rng, -1, 1);
    l.w = w, l.b = cc->bias ? b : NULL;
    size_t ws_big = conv3d_workspace_floats(&l.sh, cc->in, (size_t)1 << 26);
    size_t ws_small = conv3d_workspace_floats(&l.sh, cc->in, 1);  // one output row per chunk
    float *ws = tu_alloc((int64_t)ws_big + 1);
    char what[160];

    conv3d_forward_naive(y_ref, x, &l, cc->in);
    conv3d_forward(y_big, x, &l, cc->in, ws, ws_big);
    conv3d_forward(y_small, x, &l, cc->in, ws, ws_small);
    snprintf(what, sizeof what, "%s fwd fast vs naive", cc->name);
    tu_check(what, tu_rel_diff(y_big, y_ref, ny, 1e-6), 1e-5);
    snprintf(what, sizeof what, "%s fwd chunked(%zu fl) vs naive", cc->name, ws_small);
    tu_check(what, tu_rel_diff(y_small, y_ref, ny, 1e-6), 1e-5);

    // backward: dL/dy = r; reference from the naive path; fast path with small chunks
    l.dw = dw_ref, l.db = cc->bias ? db_ref : NULL;
    conv3d_backward_naive(dx_ref, r, x, &l, cc->in);
    l.dw = dw, l.db = cc->bias ? db : NULL;
    conv3d_backward(dx, r, x, &l, cc->in, ws, ws_small);
    snprintf(what, sizeof what, "%s bwd dx fast vs naive", cc->name);
    tu_check(what, tu_rel_diff(dx, dx_ref, nx, 1e-6), 1e-5);
    snprintf(what, sizeof what, "%s bwd dw fast vs naive", cc->name);
    tu_check(what, tu_rel_diff(dw, dw_ref, nw, 1e-6), 1e-5);
    if (cc->bias) {
        snprintf(what, sizeof what, "%s bwd db fast vs naive", cc->name);
        tu_check(what, tu_rel_diff(db, db_ref, cc->oc, 1e-6), 1e-5);
    }
    // accumulation contract: a second backward adds the same again
    conv3d_backward(dx, r, x, &l, cc->in, ws, ws_big);
    for (int64_t i = 0; i < nx; i++) dx_ref[i] *= 2;
    snprintf(what, sizeof what, "%s bwd accumulates (2x dx)", cc->name);
    tu_check(what, tu_rel_diff(dx, dx_ref, nx, 1e-6), 1e-5);

    // finite differences against the first (single) backward
    memset(dx, 0, (size_t)nx * 4), memset(dw, 0, (size_t)nw * 4), memset(db, 0, (size_t)cc->oc * 4);
    conv3d_backward(dx, r, x, &l, cc->in, ws, ws_big);
    fd_ctx c = {&l, x, r, cc->in, y_big, ws, ws_big, ny};
    snprintf(what, sizeof what, "%s finite-diff dx", cc->name);
    tu_check(what, tu_fd_check(conv_loss, &c, x, dx, nx, 40, 1e-2, rng), 2e-3);
    snprintf(what, sizeof what, "%s finite-diff dw", cc->name);
    tu_check(what, tu_fd_check(conv_loss, &c, w, dw, nw, 40, 1e-2, rng), 2e-3);
    if (cc->bias) {
        snprintf(what, sizeof what, "%s finite-diff db", cc->name);
        tu_check(what, tu_fd_check(conv_loss, &c, b, db, cc->oc, 40, 1e-2, rng), 2e-3);
    }
    free(x), free(w), free(b), free(r), free(y_ref), free(y_big), free(y_small);
    free(dx_ref), free(dw_ref), free(db_ref), free(dx), free(dw), free(db), free(ws);
}

// x = [1 2 3 4 5] along W, kernel [1 0 -1], stride 2, pad 1, bias 0.5:
// padded [0 1 2 3 4 5 0] -> windows at 0,2,4: [0 1 2] [2 3 4] [4 5 0]
// -> 0-2, 2-4, 4-0 -> [-2 -2 4] + 0.5 = [-1.5 -1.5 4.5]
static void hand_case(void) {
    float x[5] = {1, 2, 3, 4, 5}, w[3] = {1, 0, -1}, b = 0.5f, y[3] = {0}, ws[16];
    conv3d l = {0};
    const int64_t k[3] = {1, 1, 3}, s[3] = {1, 1, 2}, p[3] = {0, 0, 1};
    l.sh = conv3d_shape_make(1, 1, k, s, p, 1, 1);
    l.w = w, l.b = &b;
    nn_dims in = nn_dims_make(1, 1, 1, 1, 5), o;
    PL_ASSERT(conv3d_out_dims(&o, &l.sh, in) == 0 && o.w == 3);
    conv3d_forward(y, x, &l, in, ws, 16);
    float want[3] = {-1.5f, -1.5f, 4.5f};
    tu_check("hand 1-D conv k3 s2 p1 + bias", tu_rel_diff(y, want, 3, 1), 0);
    // dL/dy = [1 1 1]: dw[j] = sum over windows of x at tap j = (0+2+4, 1+3+5, 2+4+0) = (6, 9, 6)
    float dy[3] = {1, 1, 1}, dw[3] = {0}, db = 0, dx[5] = {0};
    l.dw = dw, l.db = &db;
    conv3d_backward(dx, dy, x, &l, in, ws, 16);
    float want_dw[3] = {6, 9, 6};
    // dx: x1 gets w1 (window0, tap1)=0... x_i receives w[tap] for every window covering it:
    // x0(pos1): w1 -> 0; x1(pos2): w2 (win0) + w0 (win1) = -1+1 = 0; x2(pos3): w1 = 0;
    // x3(pos4): w2 + w0 = 0; x4(pos5): w1 = 0
    float want_dx[5] = {0, 0, 0, 0, 0};
    tu_check("hand 1-D conv dw", tu_rel_diff(dw, want_dw, 3, 1), 0);
    tu_check("hand 1-D conv db = 3", fabs(db - 3.0f), 0);
    tu_check("hand 1-D conv dx", tu_rel_diff(dx, want_dx, 5, 1), 0);
}

// The gemm engine splits each sgemm by columns over the pool with OpenBLAS held at one thread
// (nn_blas_single). With OpenBLAS at 2 threads (the pool following it): the same numbers as at
// 1 thread (1e-5: OpenBLAS picks other kernels for the smaller blocks, as its own threads did),
// the same bits from run to run (the split is static), and OpenBLAS's count given back.
// Shapes large enough that every GEMM kind splits: vol2col (k333), pointwise, temporal, grouped.
static void test_blas_threads(pl_rng *rng) {
    const conv_case cases[] = {
        {"k333 8->16 (2,8,5,40,40)", 8, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 8, 5, 40, 40}},
        {"pointwise 32->16 (2,32,4,40,40)", 32, 16, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 0, {2, 32, 4, 40, 40}},
        {"temporal k311 16->16 (2,16,8,48,48)", 16, 16, {3, 1, 1}, {1, 1, 1}, {1, 0, 0}, 1, 0, {2, 16, 8, 48, 48}},
        {"k133 g2 16->16 (2,16,4,40,40)", 16, 16, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, 2, 0, {2, 16, 4, 40, 40}},
    };
    const int before = openblas_get_num_threads();
    nn_set_threads(0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *cc = &cases[i];
        conv3d l = {0};
        l.sh = conv3d_shape_make(cc->ic, cc->oc, cc->k, cc->s, cc->p, cc->groups, cc->bias);
        nn_dims o;
        PL_ASSERT(conv3d_out_dims(&o, &l.sh, cc->in) == 0);
        int64_t nx = nn_dims_count(cc->in), ny = nn_dims_count(o), nw = conv3d_weight_count(&l.sh);
        float *x = tu_alloc(nx), *w = tu_alloc(nw), *b = tu_alloc(cc->oc), *dy = tu_alloc(ny);
        tu_fill(x, nx, rng, -1, 1), tu_fill(w, nw, rng, -1, 1), tu_fill(b, cc->oc, rng, -1, 1), tu_fill(dy, ny, rng, -1, 1);
        l.w = w, l.b = cc->bias ? b : NULL;
        size_t wsf = conv3d_workspace_floats(&l.sh, cc->in, (size_t)1 << 24);
        float *ws = tu_alloc((int64_t)wsf + 1), *y[3], *dx[3], *dw[3], *db[3];
        int restored = 1;
        for (int t = 0; t < 3; t++) {  // 1 thread, 2 threads, 2 threads again
            const int nt = t == 0 ? 1 : 2;
            openblas_set_num_threads(nt);
            y[t] = tu_alloc(ny), dx[t] = tu_alloc(nx), dw[t] = tu_alloc(nw), db[t] = tu_alloc(cc->oc);
            l.dw = dw[t], l.db = cc->bias ? db[t] : NULL;
            conv3d_forward_gemm(y[t], x, &l, cc->in, ws, wsf);
            conv3d_backward_gemm(dx[t], dy, x, &l, cc->in, ws, wsf);
            restored &= openblas_get_num_threads() == nt && nn_get_threads() == nt;
        }
        char what[160];
        snprintf(what, sizeof what, "%s: 2 threads twice, same bits (y, dx, dw, db)", cc->name);
        tu_check(what, tu_rel_diff(y[2], y[1], ny, 1) + tu_rel_diff(dx[2], dx[1], nx, 1) + tu_rel_diff(dw[2], dw[1], nw, 1) +
                           tu_rel_diff(db[2], db[1], cc->oc, 1), 0);
        snprintf(what, sizeof what, "%s: 2 threads vs 1 (y, dx, dw, db)", cc->name);
        double d = PL_MAX(PL_MAX(tu_rel_diff(y[1], y[0], ny, 1e-6), tu_rel_diff(dx[1], dx[0], nx, 1e-6)),
                          PL_MAX(tu_rel_diff(dw[1], dw[0], nw, 1e-6), tu_rel_diff(db[1], db[0], cc->oc, 1e-6)));
        tu_check(what, d, 1e-5);
        snprintf(what, sizeof what, "%s: OpenBLAS and pool thread counts given back", cc->name);
        tu_check(what, !restored, 0);
        conv3d_forward_naive(y[2], x, &l, cc->in);
        snprintf(what, sizeof what, "%s: 2-thread forward vs naive", cc->name);
        tu_check(what, tu_rel_diff(y[1], y[2], ny, 1e-6), 1e-5);
        for (int t = 0; t < 3; t++) free(y[t]), free(dx[t]), free(dw[t]), free(db[t]);
        free(x), free(w), free(b), free(dy), free(ws);
    }
    openblas_set_num_threads(before);
}

// Backward-weights by kernel taps (conv3d_backward_weights_taps) against the naive reference:
// dw and db ACCUMULATE (pre-filled with the reference, they must hold twice it); a scratch one
// float short and groups > 1 are PL_EINVAL with dw untouched.
static void taps_case(const conv_case *cc, pl_rng *rng) {
    conv3d l = {0};
    l.sh = conv3d_shape_make(cc->ic, cc->oc, cc->k, cc->s, cc->p, 1, cc->bias);
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, &l.sh, cc->in) == 0);
    int64_t nx = nn_dims_count(cc->in), ny = nn_dims_count(o), nw = conv3d_weight_count(&l.sh);
    float *x = tu_alloc(nx), *w = tu_alloc(nw), *dy = tu_alloc(ny);
    float *dw_ref = tu_alloc(nw), *db_ref = tu_alloc(cc->oc), *dw = tu_alloc(nw), *db = tu_alloc(cc->oc);
    tu_fill(x, nx, rng, -1, 1), tu_fill(w, nw, rng, -1, 1), tu_fill(dy, ny, rng, -1, 1);
    l.w = w, l.dw = dw_ref, l.db = cc->bias ? db_ref : NULL;
    conv3d_backward_naive(NULL, dy, x, &l, cc->in);
    memcpy(dw, dw_ref, (size_t)nw * 4), memcpy(db, db_ref, (size_t)cc->oc * 4);
    l.dw = dw, l.db = cc->bias ? db : NULL;
    size_t need = conv3d_taps_scratch_floats(&l.sh, cc->in);
    float *scratch = tu_alloc((int64_t)need);
    int rc = conv3d_backward_weights_taps(dy, x, &l, cc->in, scratch, need, 0);
    for (int64_t i = 0; i < nw; i++) dw_ref[i] *= 2;
    for (int64_t i = 0; i < cc->oc; i++) db_ref[i] *= 2;
    char what[200];
    snprintf(what, sizeof what, "%s: dW by taps (threads %d) accumulates the naive dw%s", cc->name, nn_get_threads(),
             cc->bias ? ", db" : "");
    double d = tu_rel_diff(dw, dw_ref, nw, 1e-6) + (cc->bias ? tu_rel_diff(db, db_ref, cc->oc, 1e-6) : 0);
    tu_check(what, rc ? 1e9 : d, 1e-5);
    // write: garbage in dw and db replaced by the naive dw, db (half of the doubled reference)
    for (int64_t i = 0; i < nw; i++) dw[i] = 1e6f, dw_ref[i] *= 0.5f;
    for (int64_t i = 0; i < cc->oc; i++) db[i] = 1e6f, db_ref[i] *= 0.5f;
    rc = conv3d_backward_weights_taps(dy, x, &l, cc->in, scratch, need, 1);
    snprintf(what, sizeof what, "%s: dW by taps with write overwrites garbage with the naive dw%s", cc->name,
             cc->bias ? ", db" : "");
    d = tu_rel_diff(dw, dw_ref, nw, 1e-6) + (cc->bias ? tu_rel_diff(db, db_ref, cc->oc, 1e-6) : 0);
    tu_check(what, rc ? 1e9 : d, 1e-5);
    pl_quiet_begin();
    memcpy(dw_ref, dw, (size_t)nw * 4);
    rc = conv3d_backward_weights_taps(dy, x, &l, cc->in, scratch, need - 1, 0);
    snprintf(what, sizeof what, "%s: taps scratch one float short is PL_EINVAL, dw untouched", cc->name);
    tu_check(what, (rc == PL_EINVAL ? 0 : 1) + (memcmp(dw, dw_ref, (size_t)nw * 4) != 0), 0);
    pl_quiet_end();
    free(x), free(w), free(dy), free(dw_ref), free(db_ref), free(dw), free(db), free(scratch);
}

static void test_taps(pl_rng *rng) {
    const conv_case cases[] = {
        {"taps k333 s1 p1 bias", 3, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 3, 5, 6, 7}},
        {"taps k333 s(1,2,2) p1 (a 512-stage downsample)", 5, 7, {3, 3, 3}, {1, 2, 2}, {1, 1, 1}, 1, 0, {2, 5, 3, 7, 7}},
        {"taps k231 s(2,1,3) p(1,0,1) bias", 4, 6, {2, 3, 1}, {2, 1, 3}, {1, 0, 1}, 1, 1, {1, 4, 5, 7, 8}},
        // D = 2, k3 s2 p1: one output plane, and the tap kd = 0 reads only padding (K = 0)
        {"taps k333 s2 p1 D=2: tap kd=0 all padding", 3, 2, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, 1, 1, {2, 3, 2, 5, 4}},
        {"taps k133 p011 on 4x4", 6, 5, {1, 3, 3}, {1, 1, 1}, {0, 1, 1}, 1, 0, {3, 6, 3, 4, 4}},
        {"taps k777 s(1,2,2) p3 stem", 1, 4, {7, 7, 7}, {1, 2, 2}, {3, 3, 3}, 1, 0, {1, 1, 3, 11, 10}},
    };
    nn_set_threads(1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) taps_case(&cases[i], rng);
    // enough channels that the gathers and the transpose split over 2 threads
    nn_set_threads(2);
    const conv_case wide = {"taps 2 threads k333 p1 64->96 (2,64,3,4,4)", 64, 96, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 64, 3, 4, 4}};
    taps_case(&wide, rng);
    nn_set_threads(0);
    // groups are not handled: PL_EINVAL, nothing written
    conv3d g = {0};
    g.sh = conv3d_shape_make(4, 4, (int64_t[3]){3, 3, 3}, (int64_t[3]){1, 1, 1}, (int64_t[3]){1, 1, 1}, 2, 0);
    float gw[4 * 2 * 27] = {0}, gdw[4 * 2 * 27] = {0}, gx[4 * 27] = {0}, gdy[4 * 27] = {0}, gs[8192];
    g.w = gw, g.dw = gdw;
    pl_quiet_begin();
    int rc = conv3d_backward_weights_taps(gdy, gx, &g, nn_dims_make(1, 4, 3, 3, 3), gs, 8192, 0);
    pl_quiet_end();
    tu_check("taps with groups 2 is PL_EINVAL", rc == PL_EINVAL ? 0 : 1, 0);
    // the rule the dnnl engine uses: ResNet3D-18's 512-channel stage at 3x4x4 and its stride-2
    // entry take the taps; 512 channels at 3x14x14, 256x256 weights and grouped layers do not
    const int64_t k3[3] = {3, 3, 3}, s1[3] = {1, 1, 1}, s2[3] = {1, 2, 2}, p1[3] = {1, 1, 1};
    conv3d_shape c512 = conv3d_shape_make(512, 512, k3, s1, p1, 1, 0);
    conv3d_shape c256_512 = conv3d_shape_make(256, 512, k3, s2, p1, 1, 0);
    conv3d_shape c256 = conv3d_shape_make(256, 256, k3, s1, p1, 1, 0);
    conv3d_shape g512 = conv3d_shape_make(512, 512, k3, s1, p1, 2, 0);
    tu_check("taps preferred: 512->512 on (8,512,3,4,4)", conv3d_taps_preferred(&c512, nn_dims_make(8, 512, 3, 4, 4)) ? 0 : 1, 0);
    tu_check("taps preferred: 256->512 s(1,2,2) on (8,256,3,7,7)", conv3d_taps_preferred(&c256_512, nn_dims_make(8, 256, 3, 7, 7)) ? 0 : 1, 0);
    tu_check("taps not preferred: 512->512 on (8,512,3,14,14)", conv3d_taps_preferred(&c512, nn_dims_make(8, 512, 3, 14, 14)) ? 1 : 0, 0);
    tu_check("taps not preferred: 256->256 on (8,256,3,4,4)", conv3d_taps_preferred(&c256, nn_dims_make(8, 256, 3, 4, 4)) ? 1 : 0, 0);
    tu_check("taps not preferred: groups 2", conv3d_taps_preferred(&g512, nn_dims_make(8, 512, 3, 4, 4)) ? 1 : 0, 0);
}

int main(void) {
    pl_rng rng;
    pl_rng_seed(&rng, 9);
    hand_case();
    const conv_case cases[] = {
        {"k333 s1 p1 bias", 3, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 3, 5, 6, 7}},
        {"k231 s(2,1,3) p(1,0,1) g2 bias", 4, 6, {2, 3, 1}, {2, 1, 3}, {1, 0, 1}, 2, 1, {1, 4, 5, 7, 8}},
        {"pointwise 5->3", 5, 3, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 0, {2, 5, 3, 4, 5}},
        {"pointwise s(1,2,2) downsample", 4, 6, {1, 1, 1}, {1, 2, 2}, {0, 0, 0}, 1, 0, {1, 4, 3, 7, 6}},
        {"GTM grouped 1x1 (C=3, D=4)", 12, 3, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 3, 0, {2, 12, 1, 5, 5}},
        {"temporal k311 p100", 4, 5, {3, 1, 1}, {1, 1, 1}, {1, 0, 0}, 1, 0, {1, 4, 5, 6, 6}},
        {"temporal k511 p(1,0,0) bias, D=3", 3, 5, {5, 1, 1}, {1, 1, 1}, {1, 0, 0}, 1, 1, {2, 3, 3, 4, 5}},
        {"temporal k211 p0 (no padding)", 3, 2, {2, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 1, {2, 3, 4, 3, 5}},
        {"spatial k133 s(1,2,2) p011", 4, 5, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, 1, 0, {2, 4, 3, 9, 7}},
        {"stem k777 s(1,2,2) p3", 1, 4, {7, 7, 7}, {1, 2, 2}, {3, 3, 3}, 1, 0, {1, 1, 3, 11, 10}},
        {"depthwise k333 g4 s2", 4, 4, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, 4, 1, {1, 4, 5, 5, 6}},
        // one input channel per group: the GEMMs skip the depth taps that read only padding
        {"k233 p(2,1,1) 1->3 bias: first plane all padding", 1, 3, {2, 3, 3}, {1, 1, 1}, {2, 1, 1}, 1, 1, {2, 1, 3, 6, 5}},
        {"k333 g2 s(2,1,1) p(2,1,1) 2->4", 2, 4, {3, 3, 3}, {2, 1, 1}, {2, 1, 1}, 2, 0, {1, 2, 4, 5, 6}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], &rng);
    // big enough that vol2col and col2vol split over 2 threads (nn_parallel_for thresholds)
    nn_set_threads(2);
    const conv_case threaded = {"2 threads: k333 p1 (1,8,5,40,40)", 8, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {1, 8, 5, 40, 40}};
    run_case(&threaded, &rng);
    const conv_case stem2 = {"2 threads: stem k777 s(1,2,2) p3 (2,1,3,40,40)", 1, 16, {7, 7, 7}, {1, 2, 2}, {3, 3, 3}, 1, 0, {2, 1, 3, 40, 40}};
    run_case(&stem2, &rng);
    nn_set_threads(0);
    test_blas_threads(&rng);
    test_taps(&rng);
    // invalid shapes are reported, not asserted
    pl_quiet_begin();
    conv3d_shape bad = conv3d_shape_make(6, 4, (int64_t[3]){1, 1, 1}, (int64_t[3]){1, 1, 1},
                                         (int64_t[3]){0, 0, 0}, 4, 0);
    nn_dims o;
    tu_check("groups=4 with ic=6 rejected", conv3d_out_dims(&o, &bad, nn_dims_make(1, 6, 1, 1, 1)) == PL_EINVAL ? 0 : 1, 0);
    return tu_finish("test_nn_conv");
}
