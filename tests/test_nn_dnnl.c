// test_nn_dnnl: nn/conv3d's oneDNN engine and the engine choice.
//  1. conv3d_dnnl_forward / _backward against the naive double reference (1e-5 relative) for
//     3x3x3 pad 1, stride 2, (1,3,3), (3,1,1), 1x1x1 (plain and strided), groups 2 and
//     depthwise, the 7x7x7 stem, non-cubic inputs, N = 1 and 2, with and without bias;
//     forward overwrites a garbage-filled output; backward ACCUMULATES into pre-filled din, dw,
//     db (checked as prefill + reference), and din = NULL leaves only dw, db changed;
//     backward-data alone changes din only; the engine "dnnl" through conv3d_backward (passes
//     without a direct oneDNN kernel on the sgemm path: the stem's dW; dW by kernel taps for
//     256->448 on (2,256,2,3,3)) gives the same sums; a
//     32->48 layer whose blocked layouts go through conv3d_dnnl's own reorders (3x3x3 and 1x1x1,
//     with and without streaming stores), 1 and 2 threads.
//  2. The engine switch: "dnnl" runs a layer on oneDNN (a primitive is cached), "gemm" never
//     does; "auto" decides once per (shape, input, threads), logs "engine auto ... -> X" at
//     INFO (captured from stderr), does not touch the layer's gradients while measuring, and
//     its decision table round-trips through export/import; a bad engine name is PL_EINVAL; an
//     import the table cannot grow for (pl_alloc_fail_after) is PL_ENOMEM.
//  3. A few SGD steps of a small ResNet3D-18 (width 1/8, BN) give the same losses with engine
//     gemm, dnnl and auto (1e-4 relative), and the same parameters after the steps (1e-4).
#include <unistd.h>

#include "nn/conv3d.h"
#include "nn/conv3d_dnnl.h"
#include "nn/loss.h"
#include "nn/net.h"
#include "nn/ops.h"
#include "nn/parallel.h"
#include "nn/sgd.h"
#include "tests/test_util.h"

typedef struct {
    const char *name;
    int64_t ic, oc, k[3], s[3], p[3], groups;
    int bias;
    nn_dims in;
} conv_case;

static void dnnl_case(const conv_case *cc, pl_rng *rng) {
    conv3d l = {0};
    l.sh = conv3d_shape_make(cc->ic, cc->oc, cc->k, cc->s, cc->p, cc->groups, cc->bias);
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, &l.sh, cc->in) == 0);
    int64_t nx = nn_dims_count(cc->in), ny = nn_dims_count(o), nw = conv3d_weight_count(&l.sh), nb = cc->oc;
    float *x = tu_alloc(nx), *w = tu_alloc(nw), *b = tu_alloc(nb), *r = tu_alloc(ny);
    float *y_ref = tu_alloc(ny), *y = tu_alloc(ny);
    float *dx_ref = tu_alloc(nx), *dw_ref = tu_alloc(nw), *db_ref = tu_alloc(nb);
    float *dx = tu_alloc(nx), *dw = tu_alloc(nw), *db = tu_alloc(nb);
    float *dx0 = tu_alloc(nx), *dw0 = tu_alloc(nw), *db0 = tu_alloc(nb);
    tu_fill(x, nx, rng, -1, 1), tu_fill(w, nw, rng, -1, 1), tu_fill(b, nb, rng, -1, 1);
    tu_fill(r, ny, rng, -1, 1);
    l.w = w, l.b = cc->bias ? b : NULL;
    char what[200];

    conv3d_forward_naive(y_ref, x, &l, cc->in);
    for (int64_t i = 0; i < ny; i++) y[i] = 1e6f;  // must be overwritten
    int rc = conv3d_dnnl_forward(y, x, &l, cc->in);
    snprintf(what, sizeof what, "%s: dnnl fwd vs naive", cc->name);
    tu_check(what, rc ? 1e9 : tu_rel_diff(y, y_ref, ny, 1e-6), 1e-5);

    // references: naive backward into zeros
    l.dw = dw_ref, l.db = cc->bias ? db_ref : NULL;
    conv3d_backward_naive(dx_ref, r, x, &l, cc->in);
    // dnnl backward into pre-filled buffers: expect prefill + reference
    tu_fill(dx0, nx, rng, -1, 1), tu_fill(dw0, nw, rng, -1, 1), tu_fill(db0, nb, rng, -1, 1);
    memcpy(dx, dx0, (size_t)nx * 4), memcpy(dw, dw0, (size_t)nw * 4), memcpy(db, db0, (size_t)nb * 4);
    l.dw = dw, l.db = cc->bias ? db : NULL;
    rc = conv3d_dnnl_backward(dx, r, x, &l, cc->in, 0);
    for (int64_t i = 0; i < nx; i++) dx_ref[i] += dx0[i];
    for (int64_t i = 0; i < nw; i++) dw_ref[i] += dw0[i];
    for (int64_t i = 0; i < nb; i++) db_ref[i] += db0[i];
    snprintf(what, sizeof what, "%s: dnnl bwd din += (prefilled)", cc->name);
    tu_check(what, rc ? 1e9 : tu_rel_diff(dx, dx_ref, nx, 1e-6), 1e-5);
    snprintf(what, sizeof what, "%s: dnnl bwd dw += (prefilled)", cc->name);
    tu_check(what, rc ? 1e9 : tu_rel_diff(dw, dw_ref, nw, 1e-6), 1e-5);
    if (cc->bias) {
        snprintf(what, sizeof what, "%s: dnnl bwd db += (prefilled)", cc->name);
        tu_check(what, rc ? 1e9 : tu_rel_diff(db, db_ref, nb, 1e-6), 1e-5);
    }
    // din = NULL: dw, db accumulate a second time, nothing else is written
    rc = conv3d_dnnl_backward(NULL, r, x, &l, cc->in, 0);
    for (int64_t i = 0; i < nw; i++) dw_ref[i] += dw_ref[i] - dw0[i];
    for (int64_t i = 0; i < nb; i++) db_ref[i] += db_ref[i] - db0[i];
    snprintf(what, sizeof what, "%s: dnnl bwd din=NULL, dw += again", cc->name);
    tu_check(what, rc ? 1e9 : tu_rel_diff(dw, dw_ref, nw, 1e-6), 1e-5);
    if (cc->bias) {
        snprintf(what, sizeof what, "%s: dnnl bwd din=NULL, db += again", cc->name);
        tu_check(what, rc ? 1e9 : tu_rel_diff(db, db_ref, nb, 1e-6), 1e-5);
    }
    // backward-data alone: din += reference, dw and db untouched
    float *dxs = tu_alloc(nx), *dws = tu_alloc(nw), *dbs = tu_alloc(nb);
    l.dw = dws, l.db = cc->bias ? dbs : NULL;
    conv3d_backward_naive(dxs, r, x, &l, cc->in);  // the single reference, into zeros
    memcpy(dx, dx0, (size_t)nx * 4), memcpy(dw, dw0, (size_t)nw * 4), memcpy(db, db0, (size_t)nb * 4);
    l.dw = dw, l.db = cc->bias ? db : NULL;
    rc = conv3d_dnnl_backward_data(dx, r, &l, cc->in, 0);
    for (int64_t i = 0; i < nx; i++) dx_ref[i] = dx0[i] + dxs[i];
    snprintf(what, sizeof what, "%s: dnnl bwd-data din += , dw db untouched", cc->name);
    tu_check(what, rc ? 1e9 : tu_rel_diff(dx, dx_ref, nx, 1e-6) + (memcmp(dw, dw0, (size_t)nw * 4) != 0) +
                                  (memcmp(db, db0, (size_t)nb * 4) != 0), 1e-5);
    // the dnnl engine through conv3d_backward, which runs the passes oneDNN has no direct kernel
    // for (mask below) on the sgemm path: din, dw, db += reference, then din = NULL
    const int jit = conv3d_dnnl_direct(&l, cc->in);
    size_t wsf = conv3d_workspace_floats(&l.sh, cc->in, (size_t)1 << 22);
    float *ws = tu_alloc((int64_t)wsf + 1);
    conv3d_set_engine(CONV3D_ENGINE_DNNL);
    memcpy(dx, dx0, (size_t)nx * 4), memcpy(dw, dw0, (size_t)nw * 4), memcpy(db, db0, (size_t)nb * 4);
    conv3d_backward(dx, r, x, &l, cc->in, ws, wsf);
    conv3d_backward(NULL, r, x, &l, cc->in, ws, wsf);
    conv3d_set_engine(CONV3D_ENGINE_GEMM);
    for (int64_t i = 0; i < nw; i++) dw_ref[i] = dw0[i] + 2 * dws[i];
    for (int64_t i = 0; i < nb; i++) db_ref[i] = db0[i] + 2 * dbs[i];
    snprintf(what, sizeof what, "%s: engine dnnl (direct passes 0x%x) bwd din, then din=NULL", cc->name, jit < 0 ? 0 : jit);
    double d = tu_rel_diff(dx, dx_ref, nx, 1e-6) + tu_rel_diff(dw, dw_ref, nw, 1e-6);
    if (cc->bias) d += tu_rel_diff(db, db_ref, nb, 1e-6);
    tu_check(what, jit < 0 ? 1e9 : d, 1e-5);
    // CONV3D_WRITE_DIN | _DW: garbage in din, dw, db is overwritten with the reference, through
    // conv3d_dnnl_backward, backward-data alone (dw, db untouched), and both engines'
    // conv3d_backward_flags (the engine's non-oneDNN passes zero what they accumulate into)
    for (int path = 0; path < 4; path++) {
        static const char *names[] = {"dnnl bwd", "dnnl bwd-data", "engine dnnl", "engine gemm"};
        for (int64_t i = 0; i < nx; i++) dx[i] = 1e6f;
        for (int64_t i = 0; i < nw; i++) dw[i] = 1e6f;
        for (int64_t i = 0; i < nb; i++) db[i] = 1e6f;
        const int both = CONV3D_WRITE_DIN | CONV3D_WRITE_DW;
        rc = 0;
        if (path == 0) rc = conv3d_dnnl_backward(dx, r, x, &l, cc->in, both);
        if (path == 1) rc = conv3d_dnnl_backward_data(dx, r, &l, cc->in, both);
        if (path >= 2) {
            conv3d_set_engine(path == 2 ? CONV3D_ENGINE_DNNL : CONV3D_ENGINE_GEMM);
            conv3d_backward_flags(dx, r, x, &l, cc->in, ws, wsf, both);
            conv3d_set_engine(CONV3D_ENGINE_GEMM);
        }
        d = tu_rel_diff(dx, dxs, nx, 1e-6);
        if (path == 1) {
            for (int64_t i = 0; i < nw; i++) d += dw[i] != 1e6f;
            for (int64_t i = 0; i < nb; i++) d += db[i] != 1e6f;
        } else {
            d += tu_rel_diff(dw, dws, nw, 1e-6);
            if (cc->bias) d += tu_rel_diff(db, dbs, nb, 1e-6);
        }
        snprintf(what, sizeof what, "%s: %s with WRITE_DIN|DW overwrites garbage", cc->name, names[path]);
        tu_check(what, rc ? 1e9 : d, 1e-5);
    }
    free(x), free(w), free(b), free(r), free(y_ref), free(y), free(dx_ref), free(dw_ref), free(db_ref);
    free(dx), free(dw), free(db), free(dx0), free(dw0), free(db0), free(dxs), free(dws), free(dbs), free(ws);
}

// A layer of shape sh on input `in` (random weights, no bias) through conv3d_forward with the engine
// set now, against the naive reference; returns the engine conv3d_engine_for gives the layer.
static conv3d_engine rule_layer(const char *name, conv3d_shape sh, nn_dims in, float *ws, size_t wsf, pl_rng *rng) {
    conv3d l = {0};
    l.sh = sh;
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, &l.sh, in) == 0);
    const int64_t nx = nn_dims_count(in), ny = nn_dims_count(o), nw = conv3d_weight_count(&l.sh);
    float *x = tu_alloc(nx), *w = tu_alloc(nw), *y = tu_alloc(ny), *y_ref = tu_alloc(ny);
    tu_fill(x, nx, rng, -1, 1), tu_fill(w, nw, rng, -1, 1);
    l.w = w;
    conv3d_forward_naive(y_ref, x, &l, in);
    conv3d_forward(y, x, &l, in, ws, wsf);
    char what[160];
    snprintf(what, sizeof what, "engine dnnl: %s forward vs naive", name);
    tu_check(what, tu_rel_diff(y, y_ref, ny, 1e-6), 1e-5);
    const conv3d_engine e = conv3d_engine_for(&l, x, in, ws, wsf);
    free(x), free(w), free(y), free(y_ref);
    return e;
}

// Runs fn with stderr going to a temporary file; returns what was written (caller frees).
static char *capture_stderr(void (*fn)(void *), void *ctx) {
    char path[] = "/tmp/test_nn_dnnl_XXXXXX";
    int fd = mkstemp(path);
    PL_ASSERT(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn(ctx);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *buf = pl_calloc((size_t)len + 1, 1, "captured stderr");
    PL_ASSERT(buf && pread(fd, buf, (size_t)len, 0) == len);
    close(fd);
    unlink(path);
    return buf;
}

typedef struct {
    conv3d *l;
    const float *x;
    nn_dims in;
    float *y, *ws;
    size_t wsf;
    conv3d_engine got;
} auto_ctx;

static void auto_run(void *vc) {
    auto_ctx *c = vc;
    c->got = conv3d_engine_for(c->l, c->x, c->in, c->ws, c->wsf);
    conv3d_forward(c->y, c->x, c->l, c->in, c->ws, c->wsf);  // decided: no second measurement
}

static void check_engines(pl_rng *rng) {
    conv3d l = {0};
    const int64_t k[3] = {3, 3, 3}, s[3] = {1, 1, 1}, p[3] = {1, 1, 1};
    l.sh = conv3d_shape_make(8, 8, k, s, p, 1, 1);
    nn_dims in = nn_dims_make(2, 8, 4, 12, 10), o;
    PL_ASSERT(conv3d_out_dims(&o, &l.sh, in) == 0);
    int64_t nx = nn_dims_count(in), ny = nn_dims_count(o), nw = conv3d_weight_count(&l.sh);
    float *x = tu_alloc(nx), *w = tu_alloc(nw), *b = tu_alloc(8), *dw = tu_alloc(nw), *db = tu_alloc(8);
    float *y = tu_alloc(ny), *y_ref = tu_alloc(ny);
    size_t wsf = conv3d_workspace_floats(&l.sh, in, (size_t)1 << 24);
    float *ws = tu_alloc((int64_t)wsf);
    tu_fill(x, nx, rng, -1, 1), tu_fill(w, nw, rng, -1, 1), tu_fill(b, 8, rng, -1, 1);
    tu_fill(dw, nw, rng, -1, 1), tu_fill(db, 8, rng, -1, 1);
    l.w = w, l.b = b, l.dw = dw, l.db = db;
    conv3d_forward_naive(y_ref, x, &l, in);

    conv3d_engine_reset();
    conv3d_set_engine(CONV3D_ENGINE_GEMM);
    conv3d_forward(y, x, &l, in, ws, wsf);
    tu_check("engine gemm: forward vs naive", tu_rel_diff(y, y_ref, ny, 1e-6), 1e-5);
    tu_check("engine gemm: no oneDNN primitive created", conv3d_dnnl_cached(), 0);
    tu_check("engine gemm: no decision recorded", conv3d_engine_table_export(NULL, 0), 0);

    conv3d_set_engine(CONV3D_ENGINE_DNNL);
    conv3d_forward(y, x, &l, in, ws, wsf);
    tu_check("engine dnnl: forward vs naive", tu_rel_diff(y, y_ref, ny, 1e-6), 1e-5);
    tu_check("engine dnnl: the layer runs on oneDNN", conv3d_engine_for(&l, x, in, ws, wsf) == CONV3D_ENGINE_DNNL ? 0 : 1, 0);
    tu_check("engine dnnl: a primitive set is cached (1 expected)", fabs(conv3d_dnnl_cached() - 1.0), 0);
    {  // the GTM shape (grouped 1x1x1, one output channel per group) stays on gemm under dnnl
        const int64_t k1[3] = {1, 1, 1}, p0[3] = {0, 0, 0};
        conv3d_engine e = rule_layer("GTM shape", conv3d_shape_make(12, 4, k1, s, p0, 4, 0), nn_dims_make(1, 12, 1, 6, 5),
                                     ws, wsf, rng);
        tu_check("engine dnnl: the GTM shape (g4, 3 -> 1 per group, 1x1x1) runs on gemm", e == CONV3D_ENGINE_GEMM ? 0 : 1, 0);
        tu_check("engine dnnl: no primitive set for the GTM shape (still 1)", fabs(conv3d_dnnl_cached() - 1.0), 0);
    }
    {  // strided 1x1x1 (downsampling shortcuts) stay on gemm under dnnl; the same 1x1x1 unstrided
       // runs on oneDNN
        const int64_t k1[3] = {1, 1, 1}, p0[3] = {0, 0, 0}, s122[3] = {1, 2, 2}, s111[3] = {1, 1, 1};
        const nn_dims in16 = nn_dims_make(1, 16, 2, 6, 6);
        conv3d_engine e = rule_layer("1x1x1 s(1,2,2) 16->32", conv3d_shape_make(16, 32, k1, s122, p0, 1, 0), in16, ws, wsf, rng);
        tu_check("engine dnnl: 1x1x1 s(1,2,2) 16->32 runs on gemm", e == CONV3D_ENGINE_GEMM ? 0 : 1, 0);
        e = rule_layer("1x1x1 s(1,1,1) 16->32", conv3d_shape_make(16, 32, k1, s111, p0, 1, 0), in16, ws, wsf, rng);
        tu_check("engine dnnl: 1x1x1 s(1,1,1) 16->32 runs on oneDNN", e == CONV3D_ENGINE_DNNL ? 0 : 1, 0);
    }

    // auto: decides once, logs it, leaves dw/db alone while measuring
    conv3d_engine_reset();
    conv3d_set_engine(CONV3D_ENGINE_AUTO);
    float *dw_keep = tu_alloc(nw);
    memcpy(dw_keep, dw, (size_t)nw * 4);
    float db_keep = db[0];
    auto_ctx c = {&l, x, in, y, ws, wsf, CONV3D_ENGINE_AUTO};
    char *log = capture_stderr(auto_run, &c);
    printf("auto log: %s", log);
    tu_check("engine auto: picked gemm or dnnl", c.got == CONV3D_ENGINE_GEMM || c.got == CONV3D_ENGINE_DNNL ? 0 : 1, 0);
    tu_check("engine auto: logged 'engine auto ... -> <engine>'",
             strstr(log, "engine auto ic:8 oc:8 k:3x3x3") && strstr(log, c.got == CONV3D_ENGINE_DNNL ? "-> dnnl" : "-> gemm") ? 0 : 1, 0);
    const char *first = strstr(log, "engine auto");
    tu_check("engine auto: logged once (decision reused)", first && !strstr(first + 1, "engine auto") ? 0 : 1, 0);
    tu_check("engine auto: measuring left dw untouched", tu_rel_diff(dw, dw_keep, nw, 1e-6), 0);
    tu_check("engine auto: measuring left db untouched", fabs(db[0] - db_keep), 0);
    tu_check("engine auto: forward vs naive", tu_rel_diff(y, y_ref, ny, 1e-6), 1e-5);
    free(log);
    // the table: export, reset, import a forced choice, which is used without measuring
    conv3d_engine_record rec[4];
    int n = conv3d_engine_table_export(rec, 4);
    tu_check("engine table: one record", fabs(n - 1.0), 0);
    conv3d_engine_reset();
    rec[0].engine = c.got == CONV3D_ENGINE_DNNL ? CONV3D_ENGINE_GEMM : CONV3D_ENGINE_DNNL;  // the other one
    tu_check("engine table: import", conv3d_engine_table_import(rec, 1), 0);
    tu_check("engine table: imported choice used", conv3d_engine_for(&l, x, in, ws, wsf) == (conv3d_engine)rec[0].engine ? 0 : 1, 0);
    rec[0].engine = 7;
    pl_quiet_begin();
    tu_check("engine table: bad engine rejected", conv3d_engine_table_import(rec, 1) == PL_EINVAL ? 0 : 1, 0);
    conv3d_engine e;
    tu_check("engine name 'fast' rejected", conv3d_engine_parse("fast", &e) == PL_EINVAL ? 0 : 1, 0);
    pl_quiet_end();
    tu_check("engine name 'dnnl' parsed", conv3d_engine_parse("dnnl", &e) == 0 && e == CONV3D_ENGINE_DNNL ? 0 : 1, 0);
    conv3d_engine_reset();
    conv3d_set_engine(CONV3D_ENGINE_GEMM);
    free(x), free(w), free(b), free(dw), free(db), free(y), free(y_ref), free(ws), free(dw_keep);
}

// The engine table's import when the table cannot grow (pl's allocation fault injection): it says
// so (PL_ENOMEM) instead of returning 0 with records dropped, which would let a rank of the trainer
// keep its own choices while the others adopt rank 0's; the records before the failure are set.
static void check_import_enomem(void) {
    conv3d_engine_reset();
    enum { N = 40 };  // the table starts with room for 32
    conv3d_engine_record rec[N];
    memset(rec, 0, sizeof rec);
    for (int i = 0; i < N; i++) {
        rec[i].sh = conv3d_shape_make(8, 8, (int64_t[3]){3, 3, 3}, (int64_t[3]){1, 1, 1}, (int64_t[3]){1, 1, 1}, 1, 0);
        rec[i].in = nn_dims_make(1, 8, 3, 8, 8);
        rec[i].threads = i + 1;  // N distinct keys
        rec[i].engine = CONV3D_ENGINE_GEMM;
    }
    pl_quiet_begin();
    pl_alloc_fail_after(1);  // the first growth (room for 32) succeeds, the second fails
    const int rc = conv3d_engine_table_import(rec, N);
    pl_alloc_fail_after(-1);
    pl_quiet_end();
    tu_check("engine table: import that cannot grow the table is PL_ENOMEM", rc == PL_ENOMEM ? 0 : 1, 0);
    tu_check("engine table: the 32 records before the failure are set",
             fabs(conv3d_engine_table_export(NULL, 0) - 32.0), 0);
    tu_check("engine table: import after the fault is off takes all 40",
             conv3d_engine_table_import(rec, N) == 0 && conv3d_engine_table_export(NULL, 0) == N ? 0 : 1, 0);
    conv3d_engine_reset();
}

// SGD steps of a small ResNet3DV1c-18; losses[steps], final params copied to *params.
static void train_steps(conv3d_engine e, double *losses, int steps, float **params, size_t *nparams) {
    conv3d_engine_reset();
    conv3d_set_engine(e);
    nn_net_config cfg = {NN_ARCH_RESNET3DV1C18, 0.125, NN_NORM_BN, 32, 3, 0, 0, 0, 0};
    nn_net *net;
    PL_ASSERT(nn_net_create(&net, &cfg, 21) == 0);
    nn_params *p = nn_net_params(net);
    nn_dims in = {2, 1, 3, 24, 24};
    int64_t nx = nn_dims_count(in), labels[2] = {0, 2};
    float *x = tu_alloc(nx);
    pl_rng r;
    pl_rng_seed(&r, 2);
    tu_fill(x, nx, &r, -1, 1);
    for (int step = 0; step < steps; step++) {
        PL_ASSERT(nn_net_forward(net, x, in, 1) == 0);
        nn_dims o;
        float *y = nn_net_output(net, 0, &o);
        PL_ASSERT(loss_softmax_ce(&losses[step], nn_net_output_grad(net, 0), y, labels, 2, 3, 0.0) == 0);
        PL_ASSERT(nn_net_backward(net, NULL, NULL) == 0);
        sgd_step(p->params, p->momentum, p->grads, p->nparams, 0.05, 0.9, 1e-4, step == 0);
    }
    *nparams = p->nparams;
    *params = tu_alloc((int64_t)p->nparams);
    memcpy(*params, p->params, p->nparams * sizeof(float));
    printf("engine %s: losses", conv3d_engine_name(e));
    for (int s = 0; s < steps; s++) printf(" %.6f", losses[s]);
    printf("  (oneDNN primitive sets cached: %d, decisions: %d)\n", conv3d_dnnl_cached(), conv3d_engine_table_export(NULL, 0));
    if (e == CONV3D_ENGINE_DNNL)
        tu_check("training with engine dnnl used oneDNN (primitives cached > 0)", conv3d_dnnl_cached() > 0 ? 0 : 1, 0);
    nn_net_destroy(net);
    free(x);
}

// Linear layers with the dnnl engine run on oneDNN's sgemm: forward, dx and dW/db (accumulated
// into prefilled buffers) against the OpenBLAS path (the gemm engine) and a double-precision
// loop, at 1 and 2 threads.
static void check_linear_dnnl(pl_rng *rng) {
    const int64_t n = 37, in = 300, out = 50;
    float *x = tu_alloc(n * in), *w = tu_alloc(out * in), *b = tu_alloc(out), *dy = tu_alloc(n * out);
    float *y[2], *dx[2], *dw[2], *db[2];
    tu_fill(x, n * in, rng, -1, 1), tu_fill(w, out * in, rng, -1, 1), tu_fill(b, out, rng, -1, 1);
    tu_fill(dy, n * out, rng, -1, 1);
    float *y_ref = tu_alloc(n * out);
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            double s = b[o];
            for (int64_t j = 0; j < in; j++) s += (double)x[i * in + j] * w[o * in + j];
            y_ref[i * out + o] = (float)s;
        }
    for (int threads = 1; threads <= 2; threads++) {
        nn_set_threads(threads);
        for (int e = 0; e < 2; e++) {  // 0: gemm (OpenBLAS), 1: dnnl
            conv3d_set_engine(e ? CONV3D_ENGINE_DNNL : CONV3D_ENGINE_GEMM);
            y[e] = tu_alloc(n * out), dx[e] = tu_alloc(n * in), dw[e] = tu_alloc(out * in), db[e] = tu_alloc(out);
            for (int64_t i = 0; i < n * in; i++) dx[e][i] = 0.25f;  // accumulated into
            for (int64_t i = 0; i < out * in; i++) dw[e][i] = -0.5f;
            for (int64_t i = 0; i < out; i++) db[e][i] = 1.0f;
            linear l = {in, out, w, b, dw[e], db[e]};
            linear_forward(y[e], x, &l, n);
            linear_backward(dx[e], dy, x, &l, n);
        }
        char what[160];
        snprintf(what, sizeof what, "linear on oneDNN sgemm, %d thread(s): forward vs double loop", threads);
        tu_check(what, tu_rel_diff(y[1], y_ref, n * out, 1e-6), 1e-5);
        snprintf(what, sizeof what, "linear on oneDNN sgemm, %d thread(s): y, dx, dW, db vs OpenBLAS", threads);
        tu_check(what,
                 fmax(fmax(tu_rel_diff(y[1], y[0], n * out, 1e-6), tu_rel_diff(dx[1], dx[0], n * in, 1e-6)),
                      fmax(tu_rel_diff(dw[1], dw[0], out * in, 1e-6), tu_rel_diff(db[1], db[0], out, 1e-6))),
                 1e-5);
        for (int e = 0; e < 2; e++) free(y[e]), free(dx[e]), free(dw[e]), free(db[e]);
    }
    nn_set_threads(1);
    conv3d_set_engine(CONV3D_ENGINE_GEMM);
    free(x), free(w), free(b), free(dy), free(y_ref);
}

static void check_training_engines(void) {
    enum { STEPS = 4 };
    double lg[STEPS], ld[STEPS], la[STEPS];
    float *pg, *pd, *pa;
    size_t n;
    train_steps(CONV3D_ENGINE_GEMM, lg, STEPS, &pg, &n);
    train_steps(CONV3D_ENGINE_DNNL, ld, STEPS, &pd, &n);
    train_steps(CONV3D_ENGINE_AUTO, la, STEPS, &pa, &n);
    double dd = 0, da = 0;
    for (int s = 0; s < STEPS; s++) {
        dd = PL_MAX(dd, fabs(ld[s] - lg[s]) / fabs(lg[s]));
        da = PL_MAX(da, fabs(la[s] - lg[s]) / fabs(lg[s]));
    }
    tu_check("training losses: dnnl vs gemm (4 steps)", dd, 1e-4);
    tu_check("training losses: auto vs gemm (4 steps)", da, 1e-4);
    tu_check("parameters after 4 steps: dnnl vs gemm", tu_rel_diff(pd, pg, (int64_t)n, 1e-3), 1e-4);
    tu_check("parameters after 4 steps: auto vs gemm", tu_rel_diff(pa, pg, (int64_t)n, 1e-3), 1e-4);
    free(pg), free(pd), free(pa);
    conv3d_engine_reset();
    conv3d_set_engine(CONV3D_ENGINE_GEMM);
}

int main(void) {
    tu_check("this build has oneDNN (MP3D_DNNL)", conv3d_dnnl_available() ? 0 : 1, 0);
    if (!conv3d_dnnl_available()) return tu_finish("test_nn_dnnl");
    check_import_enomem();
    pl_rng rng;
    pl_rng_seed(&rng, 17);
    nn_set_threads(1);
    const conv_case cases[] = {
        {"k333 s1 p1 bias N2 (2,3,5,6,7)", 3, 4, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 3, 5, 6, 7}},
        {"k333 s2 p1 (1,4,5,8,9)", 4, 6, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, 1, 0, {1, 4, 5, 8, 9}},
        {"k133 s(1,2,2) p011 N2", 4, 5, {1, 3, 3}, {1, 2, 2}, {0, 1, 1}, 1, 1, {2, 4, 3, 9, 7}},
        {"k311 p100 N2", 4, 5, {3, 1, 1}, {1, 1, 1}, {1, 0, 0}, 1, 0, {2, 4, 5, 6, 6}},
        {"k111 5->3 N2", 5, 3, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 1, {2, 5, 3, 4, 5}},
        {"k111 s(1,2,2) downsample", 4, 6, {1, 1, 1}, {1, 2, 2}, {0, 0, 0}, 1, 0, {1, 4, 3, 7, 6}},
        {"k231 s(2,1,3) p(1,0,1) g2 bias", 4, 6, {2, 3, 1}, {2, 1, 3}, {1, 0, 1}, 2, 1, {1, 4, 5, 7, 8}},
        {"GTM grouped k111 g3 N2", 12, 3, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 3, 0, {2, 12, 1, 5, 5}},
        {"depthwise k333 g4 s2 bias", 4, 4, {3, 3, 3}, {2, 2, 2}, {1, 1, 1}, 4, 1, {1, 4, 5, 5, 6}},
        {"stem k777 s(1,2,2) p3 ic1", 1, 4, {7, 7, 7}, {1, 2, 2}, {3, 3, 3}, 1, 0, {1, 1, 3, 11, 10}},
        {"k333 p1 16->16 (1,16,4,10,12) blocked", 16, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {1, 16, 4, 10, 12}},
        {"k333 p1 8->16 N2 (channels-last retry)", 8, 16, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 8, 4, 10, 12}},
        // >= 3 M weights, <= 256 outputs per sample: the engine takes dW by kernel taps
        {"k333 p1 256->448 N2 (2,256,2,3,3), dW by taps", 256, 448, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 256, 2, 3, 3}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) dnnl_case(&cases[i], &rng);
    // several channel blocks on each axis: activations and weights in oneDNN's blocked layouts
    // (16 with AVX-512, 8 with AVX2) go through conv3d_dnnl's own reorders, at 1 and 2 threads
    {
        const conv_case blk = {"k333 p1 32->48 N2 (2,32,3,6,5), own reorders", 32, 48, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 32, 3, 6, 5}};
        long own0 = conv3d_dnnl_own_reorders();
        dnnl_case(&blk, &rng);
        nn_set_threads(2);
        dnnl_case(&blk, &rng);
        // every own reorder's destination written with streaming stores where the shapes allow:
        // spatial 40 = 2 x 16 + 8 (the blocked -> plain rows in 16s and a tail of 8), 90, 27
        const int64_t stream_min = conv3d_dnnl_set_stream_min(0);
        const conv_case st[] = {{"k333 p1 32->48 N2 (2,32,2,4,5), streaming stores", 32, 48, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 32, 2, 4, 5}},
                                {"k333 p1 32->48 N2 (2,32,3,6,5), streaming stores", 32, 48, {3, 3, 3}, {1, 1, 1}, {1, 1, 1}, 1, 1, {2, 32, 3, 6, 5}},
                                {"k111 32->48 N2 (2,32,3,6,5), streaming stores", 32, 48, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 1, {2, 32, 3, 6, 5}}};
        for (int i = 0; i < 3; i++) dnnl_case(&st[i], &rng);
        nn_set_threads(1);
        for (int i = 0; i < 3; i++) dnnl_case(&st[i], &rng);
        conv3d_dnnl_set_stream_min(stream_min);
        // 1x1x1 weights in blocked layouts: each 16x16 tile in one transpose (or row copies)
        const conv_case pw = {"k111 32->48 N2 (2,32,3,6,5), own reorders", 32, 48, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, 1, 0, {2, 32, 3, 6, 5}};
        dnnl_case(&pw, &rng);
        nn_set_threads(2);
        dnnl_case(&pw, &rng);
        nn_set_threads(1);
        printf("own reorders in the 32->48 cases: %ld\n", conv3d_dnnl_own_reorders() - own0);
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2"))
            tu_check("32->48: blocked layouts reordered by conv3d_dnnl's own loops", conv3d_dnnl_own_reorders() > own0 ? 0 : 1, 0);
    }
    // IC 8, 3x3x3: oneDNN 2.6's `any` choice for backward-weights is its gemm implementation
    // (12x slower at (4,8,9,64,64)); with AVX2 or better a JIT kernel exists for ndhwc and the
    // layer must use it for all three passes
    {
        conv3d l8 = {0};
        const conv_case *c8 = &cases[sizeof cases / sizeof cases[0] - 2];
        l8.sh = conv3d_shape_make(c8->ic, c8->oc, c8->k, c8->s, c8->p, c8->groups, c8->bias);
        char impl[160] = "";
        int rc = conv3d_dnnl_impl(impl, sizeof impl, &l8, c8->in);
        printf("IC 8 3x3x3 layer: oneDNN implementations (fwd/bwd_d/bwd_w) %s\n", impl);
        const char *w = strrchr(impl, '/');
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2"))
            tu_check("IC 8 3x3x3: backward-weights runs a JIT kernel, not gemm/ref",
                     !rc && w && strncmp(w + 1, "jit", 3) == 0 ? 0 : 1, 0);
        else
            printf("this CPU has no AVX2: oneDNN has no JIT kernel to prefer here\n");
    }
    // the same shape again hits the cache (no new primitive set)
    int cached = conv3d_dnnl_cached();
    dnnl_case(&cases[0], &rng);
    tu_check("a repeated shape reuses its cached primitives", fabs(conv3d_dnnl_cached() - (double)cached), 0);
    nn_set_threads(2);  // another thread count is another primitive set
    dnnl_case(&cases[10], &rng);
    tu_check("2 threads: a new primitive set", fabs(conv3d_dnnl_cached() - (double)(cached + 1)), 0);
    nn_set_threads(1);
    check_engines(&rng);
    check_linear_dnnl(&rng);
    check_training_engines();
    conv3d_engine_reset();
    return tu_finish("test_nn_dnnl");
}
