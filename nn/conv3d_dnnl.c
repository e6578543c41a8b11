// conv3d_dnnl: oneDNN 2.x C API behind nn/conv3d. Per cached layer (shape, input dims, threads):
// the forward, backward-data and backward-weights primitives (format_tag any, the backward ones
// hinted by the forward one), and for every tensor a user memory (ncdhw / oidhw / goidhw / x)
// and, when oneDNN chose another layout, an internal memory plus a reorder. Outputs that must
// accumulate (din, dw, db) are written by oneDNN into an internal buffer and added into the user
// buffer by a reorder with a sum post-op (dst = reorder(src) + 1 * dst). Internal buffers are
// views into five arena buffers (two activation-sized, see g_arena_of) shared by all cached
// layers and sized to the largest, so the memory cost is two activations, not copies per layer.
// Between the plain layouts and oneDNN's 16- (8-) channel-blocked ones the reorders are this
// file's own AVX2 transposes split over the nn pool (dn_own_*), not oneDNN's reorder primitives.
#include "nn/conv3d_dnnl.h"

#include "nn/pl.h"

#ifndef MP3D_HAVE_DNNL

int conv3d_dnnl_available(void) { return 0; }
int conv3d_dnnl_forward(float *out, const float *in, const conv3d *l, nn_dims in_dims) {
    (void)out, (void)in, (void)l, (void)in_dims;
    return pl_fail(PL_EUNSUPPORTED, "conv3d: this build has no oneDNN (configure with -DMP3D_DNNL=ON)");
}
int conv3d_dnnl_backward(float *din, const float *dout, const float *in, const conv3d *l,
                         nn_dims in_dims, int flags) {
    (void)din, (void)dout, (void)in, (void)l, (void)in_dims, (void)flags;
    return pl_fail(PL_EUNSUPPORTED, "conv3d: this build has no oneDNN (configure with -DMP3D_DNNL=ON)");
}
int conv3d_dnnl_backward_data(float *din, const float *dout, const conv3d *l, nn_dims in_dims, int flags) {
    (void)din, (void)dout, (void)l, (void)in_dims, (void)flags;
    return pl_fail(PL_EUNSUPPORTED, "conv3d: this build has no oneDNN (configure with -DMP3D_DNNL=ON)");
}
int conv3d_dnnl_direct(const conv3d *l, nn_dims in_dims) {
    (void)l, (void)in_dims;
    return pl_fail(PL_EUNSUPPORTED, "conv3d: this build has no oneDNN (configure with -DMP3D_DNNL=ON)");
}
int conv3d_dnnl_impl(char *buf, size_t n, const conv3d *l, nn_dims in_dims) {
    (void)buf, (void)n, (void)l, (void)in_dims;
    return pl_fail(PL_EUNSUPPORTED, "conv3d: this build has no oneDNN (configure with -DMP3D_DNNL=ON)");
}
int nn_dnnl_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)beta;
    (void)c, (void)ldc;
    return pl_fail(PL_EUNSUPPORTED, "nn: this build has no oneDNN (configure with -DMP3D_DNNL=ON)");
}
int conv3d_dnnl_cached(void) { return 0; }
long conv3d_dnnl_own_reorders(void) { return 0; }
int64_t conv3d_dnnl_set_stream_min(int64_t bytes) { (void)bytes; return 0; }
void conv3d_dnnl_release(void) {}

#else

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/parallel.h"
#include "nn/transpose.h"

// Roles of internal buffers, and the arena buffer each uses (shared by all cached layers). Roles
// whose lifetimes do not overlap share a buffer: forward, then backward-weights (its inputs die
// when it has run), then backward-data; only the accumulated outputs (d_dsrc, w_dwei, w_db)
// live to the end of the backward call. So two activation-sized buffers serve all six roles.
// Backward-data's diff_dst uses backward-weights' (A_OUT): when both want the same layout it
// is reordered once (ddst_shared), and its diff_src goes to A_IN, free once backward-weights ran.
enum { R_F_SRC, R_F_WEI, R_F_DST, R_D_DDST, R_D_WEI, R_D_DSRC, R_W_SRC, R_W_DDST, R_W_DWEI, R_W_DB, R_COUNT };
enum { A_IN, A_OUT, A_WEI, A_DWEI, A_DB, A_COUNT };
static const int g_arena_of[R_COUNT] = {
    [R_F_SRC] = A_IN, [R_F_WEI] = A_WEI, [R_F_DST] = A_OUT, [R_W_SRC] = A_IN, [R_W_DDST] = A_OUT,
    [R_W_DWEI] = A_DWEI, [R_W_DB] = A_DB, [R_D_DDST] = A_OUT, [R_D_WEI] = A_WEI, [R_D_DSRC] = A_IN};

// Layouts this file reorders with its own loops (dn_own_*), split over the nn pool: plain
// (A, B, K) against B blocked by bs = 16 (AVX-512) or 8 (AVX2) and, for weights, A too. oneDNN 2.6's generic `jit:uni`
// reorder handles the weight layouts slowly (ResNet3D-18's 512x512x3x3x3 to ABcde16b16a: 6.2 ms
// at 1 thread, ~95 ms of reorders per (8,1,3,112,112) step) and its reorders scale poorly to 2
// threads (1.3x).
typedef enum {
    DN_OWN_NONE,
    DN_OWN_ACT,  // (N, C, S)  <-> (N, C/bs, S, bs c)              aBcde16b, aBcde8b, acdeb (bs = C)
    DN_OWN_WIO,  // (O, I, K)  <-> (O/bs, I/bs, K, bs i, bs o)     ABcde16b16a, ABcde8b8a
    DN_OWN_WOI,  // (O, I, K)  <-> (O/bs, I/bs, K, bs o, bs i)     ABcde16a16b, ABcde8a8b
} dn_own_kind;

// One tensor argument of one primitive: the user's plain buffer and, when oneDNN wants another
// layout or the result must be added, an internal buffer (arena role) and the reorder between.
typedef struct {
    dnnl_memory_t user, inner;  // inner == NULL: the primitive works on the user buffer
    dnnl_primitive_t reorder;   // user -> inner (inputs) or inner -> user (outputs, maybe summing)
    int role;
    size_t bytes;               // of inner
    int sum;                    // output added into the user buffer
    dn_own_kind own;            // DN_OWN_NONE: oneDNN's reorder; else ours, on plain (a, b, k)
    int64_t a, b, k, bs;        // with b (and for weights a) in blocks of bs
} dn_tensor;

enum { DN_IMPL_LEN = 40 };

typedef struct {
    conv3d_shape sh;
    nn_dims in;
    int threads;
    char impl[3][DN_IMPL_LEN];  // oneDNN's implementation names: forward, backward-data, -weights
    dnnl_primitive_t fwd, bwd_d, bwd_w;
    dn_tensor f_src, f_wei, f_bias, f_dst;
    dn_tensor d_ddst, d_wei, d_dsrc;
    dn_tensor w_src, w_ddst, w_dwei, w_db;
    int ddst_shared;  // backward-data takes diff_dst in the layout backward-weights got it in
} dn_layer;

static struct {
    pthread_mutex_t lock;
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    dn_layer **layers;
    int n, cap;
    void *arena[A_COUNT];
    size_t arena_bytes[A_COUNT];
} g_dn = {.lock = PTHREAD_MUTEX_INITIALIZER};

int conv3d_dnnl_available(void) { return 1; }

#define DN(call)                                                                         \
    do {                                                                                 \
        dnnl_status_t st_ = (call);                                                      \
        if (st_ != dnnl_success) {                                                       \
            rc = pl_fail(PL_EUNSUPPORTED, "conv3d dnnl: %s failed (status %d)", #call, (int)st_); \
            goto done;                                                                   \
        }                                                                                \
    } while (0)

static void dn_tensor_free(dn_tensor *t) {
    if (t->user) dnnl_memory_destroy(t->user);
    if (t->inner) dnnl_memory_destroy(t->inner);
    if (t->reorder) dnnl_primitive_destroy(t->reorder);
    memset(t, 0, sizeof(*t));
}

static void dn_layer_free(dn_layer *L) {
    if (!L) return;
    if (L->fwd) dnnl_primitive_destroy(L->fwd);
    if (L->bwd_d) dnnl_primitive_destroy(L->bwd_d);
    if (L->bwd_w) dnnl_primitive_destroy(L->bwd_w);
    dn_tensor *ts[] = {&L->f_src, &L->f_wei, &L->f_bias, &L->f_dst, &L->d_ddst, &L->d_wei,
                       &L->d_dsrc, &L->w_src, &L->w_ddst, &L->w_dwei, &L->w_db};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) dn_tensor_free(ts[i]);
    free(L);
}

// ---- own reorders ----
static _Atomic long g_own_runs;  // reorders done by dn_own_run (tests)

typedef struct {
    const dn_tensor *t;
    float *plain, *blk;
    int to_blocked;
    int add;     // to the plain side: added into it (an accumulated output), else overwritten
    int stream;  // a large destination not added into: streaming stores (see nn_transpose)
} dn_own_ctx;

// Tiles t = (A block, B block) in [lo, hi). Every kind is, per tile, bs (or bs x bs) transposes
// of a (bs rows x K) plain matrix into K rows of the blocked side:
//   ACT: rows bi (plain stride K),      blocked [k][bi]      (row stride bs)
//   WIO: per bi, rows ai (stride B*K),  blocked [k][bi][ai]  (row stride bs*bs, offset bi*bs)
//   WOI: per ai, rows bi (stride K),    blocked [k][ai][bi]  (row stride bs*bs, offset ai*bs)
static void dn_own_tiles(void *vc, int64_t lo, int64_t hi) {
    const dn_own_ctx *c = vc;
    const dn_tensor *T = c->t;
    const int act = T->own == DN_OWN_ACT;
    const int64_t bs = T->bs, B = T->b, nb = B / bs, A = act ? 1 : bs, K = T->k;
    for (int64_t t = lo; t < hi; t++) {
        const int64_t ab = t / nb, bb = t % nb;
        float *blk = c->blk + t * K * bs * A;
        float *plain = c->plain + (ab * A * B + bb * bs) * K;  // (ai = 0, bi = 0, k = 0)
        // 1x1x1 weights in the forward / backward-weights layout (P3D-63's bottlenecks): the tile
        // is one bs x bs transpose, not bs transposes of bs x 1. P3D-63 at 512, Zen 4: to blocked
        // 3.0 -> 0.5 ns a float, back to plain 2.4 -> 0.6. Backward-data's 1x1x1 layout is
        // BAcde16a16b, which oneDNN's reorder handles (6 ms a P3D-63 training step).
        if (T->own == DN_OWN_WIO && K == 1) {
            if (c->to_blocked)
                nn_transpose(plain, B, blk, bs, bs, bs, 0, c->stream);  // blk[bi][ai] = w[ai][bi]
            else
                nn_transpose(blk, bs, plain, B, bs, bs, c->add, c->stream);
            continue;
        }
        for (int64_t j = 0; j < A; j++) {
            float *p, *q;
            int64_t ps, qs;
            if (act)
                p = plain, ps = K, q = blk, qs = bs;
            else if (T->own == DN_OWN_WIO)
                p = plain + j * K, ps = B * K, q = blk + j * bs, qs = bs * bs;
            else
                p = plain + j * B * K, ps = K, q = blk + j * bs, qs = bs * bs;
            if (c->to_blocked)
                nn_transpose(p, ps, q, qs, bs, K, 0, c->stream);
            else
                nn_transpose(q, qs, p, ps, K, bs, c->add, c->stream);
        }
    }
    if (c->stream) nn_transpose_fence();  // streaming stores ordered before the pool's join
}

// Destinations of at least this many bytes are written with streaming stores (they are far
// larger than the L2 cache, so their reader gets them from memory either way). ResNet3D-18 step
// (8,1,3,112,112) on the Zen 4, 1 thread: the own reorders' samples (perf) fell by 30 ms a step.
static int64_t g_stream_min = (int64_t)4 << 20;

int64_t conv3d_dnnl_set_stream_min(int64_t bytes) {
    const int64_t old = g_stream_min;
    g_stream_min = bytes;
    return old;
}

// Plain <-> blocked for tensor t; add: the plain side is an accumulated output (blocked -> plain only).
static void dn_own_run(const dn_tensor *t, float *plain, float *blk, int to_blocked, int add) {
    add = add && !to_blocked;
    dn_own_ctx c = {t, plain, blk, to_blocked, add, !add && t->a * t->b * t->k * 4 >= g_stream_min};
    const int64_t ablk = t->own == DN_OWN_ACT ? 1 : t->bs;
    const int64_t tiles = (t->a / ablk) * (t->b / t->bs), per_tile = t->bs * ablk * t->k;
    nn_parallel_for(tiles, PL_MAX((int64_t)1, 32768 / per_tile), dn_own_tiles, &c);  // >= ~32k floats a thread
    g_own_runs++;
}

// Which own reorder, if any, moves between user layout umd (plain, 5D) and pmd.
static dn_own_kind dn_own_match(dn_tensor *t, const dnnl_memory_desc_t *umd, const dnnl_memory_desc_t *pmd) {
    static const struct {
        dn_own_kind kind;
        int64_t bs;  // 0: all channels in one block (channels-last activations, N S C)
        dnnl_format_tag_t tag;
    } cand[] = {{DN_OWN_ACT, 16, dnnl_aBcde16b}, {DN_OWN_WIO, 16, dnnl_ABcde16b16a}, {DN_OWN_WOI, 16, dnnl_ABcde16a16b},
                {DN_OWN_ACT, 8, dnnl_aBcde8b},   {DN_OWN_WIO, 8, dnnl_ABcde8b8a},    {DN_OWN_WOI, 8, dnnl_ABcde8a8b},
                {DN_OWN_ACT, 0, dnnl_acdeb}};
    if (umd->ndims != 5 || umd->data_type != dnnl_f32) return DN_OWN_NONE;
    dnnl_memory_desc_t plain, want;
    if (dnnl_memory_desc_init_by_tag(&plain, 5, umd->dims, dnnl_f32, dnnl_abcde) != dnnl_success ||
        !dnnl_memory_desc_equal(&plain, umd))
        return DN_OWN_NONE;
    const dnnl_dim_t *d = umd->dims;
    for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]); i++) {
        const int64_t bs = cand[i].bs ? cand[i].bs : d[1];
        if (d[1] % bs || (cand[i].kind != DN_OWN_ACT && d[0] % bs)) continue;
        if (dnnl_memory_desc_init_by_tag(&want, 5, d, dnnl_f32, cand[i].tag) != dnnl_success ||
            !dnnl_memory_desc_equal(&want, pmd))
            continue;
        t->a = d[0], t->b = d[1], t->k = d[2] * d[3] * d[4], t->bs = bs;
        return cand[i].kind;
    }
    return DN_OWN_NONE;
}

// Sets up t for user layout `umd` and the layout the primitive chose (`pmd`). dir 0: input
// (reorder user -> inner when they differ); dir 1: output written in place when the layouts
// agree; dir 2: output added into the user buffer (always through inner + a summing reorder).
static int dn_tensor_make(dn_tensor *t, const dnnl_memory_desc_t *umd, const dnnl_memory_desc_t *pmd,
                          int dir, int role) {
    int rc = 0;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    t->role = role;
    DN(dnnl_memory_create(&t->user, umd, g_dn.eng, DNNL_MEMORY_NONE));
    if (dir != 2 && dnnl_memory_desc_equal(umd, pmd)) return 0;
    t->bytes = dnnl_memory_desc_get_size(pmd);
    t->sum = dir == 2;
    t->own = dn_own_match(t, umd, pmd);
    DN(dnnl_memory_create(&t->inner, pmd, g_dn.eng, DNNL_MEMORY_NONE));
    if (dir == 0) {
        DN(dnnl_reorder_primitive_desc_create(&rpd, umd, g_dn.eng, pmd, g_dn.eng, NULL));
    } else {
        if (dir == 2) {
            DN(dnnl_primitive_attr_create(&attr));
            DN(dnnl_post_ops_create(&po));
            DN(dnnl_post_ops_append_sum(po, 1.0f));
            DN(dnnl_primitive_attr_set_post_ops(attr, po));
        }
        DN(dnnl_reorder_primitive_desc_create(&rpd, pmd, g_dn.eng, umd, g_dn.eng, attr));
    }
    DN(dnnl_primitive_create(&t->reorder, rpd));
done:
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return rc;
}

static int dn_init_engine(void) {
    int rc = 0;
    if (g_dn.eng) return 0;
    DN(dnnl_engine_create(&g_dn.eng, dnnl_cpu, 0));
    DN(dnnl_stream_create(&g_dn.strm, g_dn.eng, dnnl_stream_default_flags));
done:
    return rc;
}

// 1 when oneDNN picked one of its direct JIT kernels for pd ("jit:avx512_core", "jit_1x1:avx2",
// "brgconv:avx512_core", ...), 0 for its gemm-based ones ("x64:gemm:jit") and the reference.
static const char *dn_impl_str(const_dnnl_primitive_desc_t pd) {
    const char *info = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) != dnnl_success || !info)
        return "?";
    return info;
}

static int dn_is_jit(const_dnnl_primitive_desc_t pd) {
    const char *info = dn_impl_str(pd);
    return strcmp(info, "?") != 0 && !strstr(info, "gemm") && strncmp(info, "ref", 3) != 0;
}

// One candidate for a pass: created from desc, it becomes *pd when it is a JIT kernel (returns
// 1: done) or when it is the `any` candidate (is_any) and *pd is still empty (the fallback).
static int dn_pick(dnnl_primitive_desc_t *pd, const void *desc, const_dnnl_primitive_desc_t hint, int is_any) {
    dnnl_primitive_desc_t alt = NULL;
    if (dnnl_primitive_desc_create(&alt, desc, NULL, g_dn.eng, hint) != dnnl_success) return 0;
    if (dn_is_jit(alt) || (is_any && !*pd)) {
        if (*pd) dnnl_primitive_desc_destroy(*pd);
        *pd = alt;
        return dn_is_jit(alt);
    }
    dnnl_primitive_desc_destroy(alt);
    return 0;
}

static void dn_impl_name(char dst[DN_IMPL_LEN], const_dnnl_primitive_desc_t pd) {
    snprintf(dst, DN_IMPL_LEN, "%s", dn_impl_str(pd));
}

// Creates the three primitives and their tensors for layer shape s on input dims in.
static int dn_layer_create(dn_layer **out, const conv3d_shape *s, nn_dims in, int threads) {
    int rc = 0;
    nn_dims o;
    dnnl_convolution_desc_t fd, dd, wd;
    dnnl_primitive_desc_t fpd = NULL, dpd = NULL, wpd = NULL;
    dn_layer *L = NULL;
    if ((rc = conv3d_out_dims(&o, s, in))) return rc;
    if ((rc = dn_init_engine())) return rc;
    L = pl_calloc(1, sizeof(*L), "conv3d dnnl layer");
    if (!L) return PL_ENOMEM;
    L->sh = *s;
    L->in = in;
    L->threads = threads;
    const int64_t g = s->groups;
    dnnl_dims_t src_d = {in.n, in.c, in.d, in.h, in.w}, dst_d = {o.n, o.c, o.d, o.h, o.w};
    dnnl_dims_t wei_d = {g, s->oc / g, s->ic / g, s->k[0], s->k[1], s->k[2]};
    dnnl_dims_t wei1_d = {s->oc, s->ic, s->k[0], s->k[1], s->k[2]};  // groups == 1: oidhw
    dnnl_dims_t bias_d = {s->oc};
    dnnl_dims_t strides = {s->s[0], s->s[1], s->s[2]}, pad = {s->p[0], s->p[1], s->p[2]};
    dnnl_memory_desc_t src_u, dst_u, wei_u, bias_u, src_a, dst_a, wei_a, bias_a;
    if (g == 1) {
        DN(dnnl_memory_desc_init_by_tag(&wei_u, 5, wei1_d, dnnl_f32, dnnl_oidhw));
        DN(dnnl_memory_desc_init_by_tag(&wei_a, 5, wei1_d, dnnl_f32, dnnl_format_tag_any));
    } else {
        DN(dnnl_memory_desc_init_by_tag(&wei_u, 6, wei_d, dnnl_f32, dnnl_goidhw));
        DN(dnnl_memory_desc_init_by_tag(&wei_a, 6, wei_d, dnnl_f32, dnnl_format_tag_any));
    }
    DN(dnnl_memory_desc_init_by_tag(&src_u, 5, src_d, dnnl_f32, dnnl_ncdhw));
    DN(dnnl_memory_desc_init_by_tag(&dst_u, 5, dst_d, dnnl_f32, dnnl_ncdhw));
    DN(dnnl_memory_desc_init_by_tag(&bias_u, 1, bias_d, dnnl_f32, dnnl_x));
    DN(dnnl_memory_desc_init_by_tag(&src_a, 5, src_d, dnnl_f32, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&dst_a, 5, dst_d, dnnl_f32, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&bias_a, 1, bias_d, dnnl_f32, dnnl_format_tag_any));
    const dnnl_memory_desc_t *bias = s->bias ? &bias_a : NULL;
    // Channels-last activations. oneDNN's `any` layouts block channels by 16; a layer with
    // channels not a multiple of 16 (the demo networks' first stage has 8) is padded to 16 and,
    // for backward-weights, oneDNN 2.6 gives it its gemm implementation. Measured at
    // (4,8,9,64,64) 3x3x3, AVX-512, 1 thread: `any` fwd 6.1 / bwd-data 11.5 / bwd-weights 43.8
    // ms (gemm), ndhwc 6.1 / 5.7 / 6.3 (all JIT). Such layers (IC > 3: the first-layer kernels
    // handle IC <= 3) try ndhwc first; every pass keeps the first of its two candidates that is
    // a JIT kernel, else the `any` one.
    dnnl_memory_desc_t src_c, dst_c;
    DN(dnnl_memory_desc_init_by_tag(&src_c, 5, src_d, dnnl_f32, dnnl_ndhwc));
    DN(dnnl_memory_desc_init_by_tag(&dst_c, 5, dst_d, dnnl_f32, dnnl_ndhwc));
    const int last_first = s->ic > 3 && (s->ic % 16 || s->oc % 16);
    const dnnl_memory_desc_t *cs[2] = {last_first ? &src_c : &src_a, last_first ? &src_a : &src_c};
    const dnnl_memory_desc_t *cd[2] = {last_first ? &dst_c : &dst_a, last_first ? &dst_a : &dst_c};
    for (int t = 0; t < 2; t++) {
        DN(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, cs[t],
                                              &wei_a, bias, cd[t], strides, pad, pad));
        if (dn_pick(&fpd, &fd, NULL, cs[t] == &src_a)) break;
    }
    for (int t = 0; t < 2; t++) {
        DN(dnnl_convolution_backward_data_desc_init(&dd, dnnl_convolution_direct, cs[t], &wei_a, cd[t],
                                                    strides, pad, pad));
        if (dn_pick(&dpd, &dd, fpd, cs[t] == &src_a)) break;
    }
    for (int t = 0; t < 2; t++) {
        DN(dnnl_convolution_backward_weights_desc_init(&wd, dnnl_convolution_direct, cs[t], &wei_a, bias,
                                                       cd[t], strides, pad, pad));
        if (dn_pick(&wpd, &wd, fpd, cs[t] == &src_a)) break;
    }
    if (!fpd || !dpd || !wpd) {
        rc = pl_fail(PL_EUNSUPPORTED, "conv3d dnnl: no implementation for ic:%lld oc:%lld", (long long)s->ic,
                     (long long)s->oc);
        goto done;
    }
    dn_impl_name(L->impl[0], fpd);
    dn_impl_name(L->impl[1], dpd);
    dn_impl_name(L->impl[2], wpd);
    DN(dnnl_primitive_create(&L->fwd, fpd));
    DN(dnnl_primitive_create(&L->bwd_d, dpd));
    DN(dnnl_primitive_create(&L->bwd_w, wpd));
#define MD(pd, q, i) dnnl_primitive_desc_query_md(pd, q, i)
    if ((rc = dn_tensor_make(&L->f_src, &src_u, MD(fpd, dnnl_query_src_md, 0), 0, R_F_SRC)) ||
        (rc = dn_tensor_make(&L->f_wei, &wei_u, MD(fpd, dnnl_query_weights_md, 0), 0, R_F_WEI)) ||
        (s->bias && (rc = dn_tensor_make(&L->f_bias, &bias_u, MD(fpd, dnnl_query_weights_md, 1), 0, R_COUNT))) ||
        (rc = dn_tensor_make(&L->f_dst, &dst_u, MD(fpd, dnnl_query_dst_md, 0), 1, R_F_DST)) ||
        (rc = dn_tensor_make(&L->d_ddst, &dst_u, MD(dpd, dnnl_query_diff_dst_md, 0), 0, R_D_DDST)) ||
        (rc = dn_tensor_make(&L->d_wei, &wei_u, MD(dpd, dnnl_query_weights_md, 0), 0, R_D_WEI)) ||
        (rc = dn_tensor_make(&L->d_dsrc, &src_u, MD(dpd, dnnl_query_diff_src_md, 0), 2, R_D_DSRC)) ||
        (rc = dn_tensor_make(&L->w_src, &src_u, MD(wpd, dnnl_query_src_md, 0), 0, R_W_SRC)) ||
        (rc = dn_tensor_make(&L->w_ddst, &dst_u, MD(wpd, dnnl_query_diff_dst_md, 0), 0, R_W_DDST)) ||
        (rc = dn_tensor_make(&L->w_dwei, &wei_u, MD(wpd, dnnl_query_diff_weights_md, 0), 2, R_W_DWEI)) ||
        (s->bias && (rc = dn_tensor_make(&L->w_db, &bias_u, MD(wpd, dnnl_query_diff_weights_md, 1), 2, R_W_DB))))
        goto done;
    // diff_dst reordered once per backward: backward-data reads backward-weights' copy (A_OUT;
    // backward-data writes diff_src into A_IN, whose backward-weights src is dead by then)
    L->ddst_shared = L->w_ddst.inner && L->d_ddst.inner &&
                     dnnl_memory_desc_equal(MD(wpd, dnnl_query_diff_dst_md, 0), MD(dpd, dnnl_query_diff_dst_md, 0));
#undef MD
    if (L->f_bias.inner) {  // a plain vector: oneDNN keeps x; anything else is unexpected here
        rc = pl_fail(PL_EUNSUPPORTED, "conv3d dnnl: forward bias in a non-plain layout");
        goto done;
    }
done:
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    if (dpd) dnnl_primitive_desc_destroy(dpd);
    if (wpd) dnnl_primitive_desc_destroy(wpd);
    if (rc) {
        dn_layer_free(L);
        return rc;
    }
    *out = L;
    return 0;
}

// Grows the arena so every role of L fits (done once per new layer, not per step).
static int dn_arena_fit(const dn_layer *L) {
    const dn_tensor *ts[] = {&L->f_src, &L->f_wei, &L->f_dst, &L->d_ddst, &L->d_wei, &L->d_dsrc,
                             &L->w_src, &L->w_ddst, &L->w_dwei, &L->w_db};
    for (size_t i = 0; i < sizeof(ts) / sizeof(ts[0]); i++) {
        const dn_tensor *t = ts[i];
        const int a = g_arena_of[t->role];
        if (!t->inner || t->bytes <= g_dn.arena_bytes[a]) continue;
        free(g_dn.arena[a]);
        g_dn.arena_bytes[a] = 0;
        size_t bytes = (t->bytes + 63) / 64 * 64;
        g_dn.arena[a] = aligned_alloc(64, bytes);
        if (!g_dn.arena[a]) return pl_fail(PL_ENOMEM, "conv3d dnnl: %zu bytes for an internal buffer", bytes);
        g_dn.arena_bytes[a] = bytes;
    }
    return 0;
}

static int dn_same_shape(const conv3d_shape *a, const conv3d_shape *b) {
    if (a->ic != b->ic || a->oc != b->oc || a->groups != b->groups || !a->bias != !b->bias) return 0;
    for (int i = 0; i < 3; i++)
        if (a->k[i] != b->k[i] || a->s[i] != b->s[i] || a->p[i] != b->p[i]) return 0;
    return 1;
}

// The cached layer for (shape, in, threads), created on first use. Caller holds the lock.
static int dn_layer_get(dn_layer **out, const conv3d_shape *s, nn_dims in, int threads) {
    for (int i = 0; i < g_dn.n; i++) {
        dn_layer *L = g_dn.layers[i];
        if (L->threads == threads && !memcmp(&L->in, &in, sizeof(in)) && dn_same_shape(&L->sh, s)) {
            *out = L;
            return 0;
        }
    }
    if (g_dn.n == g_dn.cap) {
        int cap = g_dn.cap ? 2 * g_dn.cap : 16;
        dn_layer **p = pl_realloc(g_dn.layers, (size_t)cap * sizeof(*p), "conv3d dnnl cache");
        if (!p) return PL_ENOMEM;
        g_dn.layers = p;
        g_dn.cap = cap;
    }
    dn_layer *L = NULL;
    int rc = dn_layer_create(&L, s, in, threads);
    if (!rc) rc = dn_arena_fit(L);
    if (rc) {
        dn_layer_free(L);
        return rc;
    }
    g_dn.layers[g_dn.n++] = L;
    *out = L;
    return 0;
}

static int dn_exec(dnnl_primitive_t p, int nargs, const dnnl_exec_arg_t *args) {
    int rc = 0;
    DN(dnnl_primitive_execute(p, g_dn.strm, nargs, args));
    DN(dnnl_stream_wait(g_dn.strm));
done:
    return rc;
}

// Points t at the user's buffer (and its inner memory at the arena), runs the input reorder;
// returns the memory the primitive should use.
static int dn_bind(dnnl_memory_t *use, dn_tensor *t, const void *user, int input) {
    int rc = 0;
    DN(dnnl_memory_set_data_handle(t->user, (void *)user));
    *use = t->user;
    if (!t->inner) return 0;
    DN(dnnl_memory_set_data_handle(t->inner, g_dn.arena[g_arena_of[t->role]]));
    *use = t->inner;
    if (input && t->own) {
        dn_own_run(t, (float *)user, g_dn.arena[g_arena_of[t->role]], 1, 0);
    } else if (input) {
        dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, t->user}, {DNNL_ARG_TO, t->inner}};
        rc = dn_exec(t->reorder, 2, a);
    }
done:
    return rc;
}

// Output reorder inner -> user: a sum for accumulated outputs, unless `write` (the user buffer's
// content is to be replaced: the own reorders then write it; oneDNN's summing reorder gets it zeroed).
static int dn_unbind(dn_tensor *t, int write) {
    if (!t->inner) return 0;
    int rc = 0;
    void *user = NULL, *inner = NULL;
    DN(dnnl_memory_get_data_handle(t->user, &user));
    if (t->own) {
        DN(dnnl_memory_get_data_handle(t->inner, &inner));
        dn_own_run(t, user, inner, 0, t->sum && !write);
        return 0;
    }
    if (t->sum && write) {
        const dnnl_memory_desc_t *umd = NULL;
        DN(dnnl_memory_get_memory_desc(t->user, &umd));
        nn_parallel_zero(user, (int64_t)(dnnl_memory_desc_get_size(umd) / sizeof(float)));
    }
    dnnl_exec_arg_t a[2] = {{DNNL_ARG_FROM, t->inner}, {DNNL_ARG_TO, t->user}};
    rc = dn_exec(t->reorder, 2, a);
done:
    return rc;
}

static int dn_begin(dn_layer **L, const conv3d *l, nn_dims in_dims) {
    int threads = nn_get_threads();
    omp_set_num_threads(threads);
    return dn_layer_get(L, &l->sh, in_dims, threads);
}

int conv3d_dnnl_forward(float *out, const float *in, const conv3d *l, nn_dims in_dims) {
    pthread_mutex_lock(&g_dn.lock);
    dn_layer *L = NULL;
    dnnl_memory_t src = NULL, wei = NULL, dst = NULL, bias = NULL;
    int rc = dn_begin(&L, l, in_dims);
    if (rc || (rc = dn_bind(&src, &L->f_src, in, 1)) || (rc = dn_bind(&wei, &L->f_wei, l->w, 1)) ||
        (l->sh.bias && (rc = dn_bind(&bias, &L->f_bias, l->b, 1))) || (rc = dn_bind(&dst, &L->f_dst, out, 0)))
        goto done;
    dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst}, {DNNL_ARG_BIAS, bias}};
    if ((rc = dn_exec(L->fwd, bias ? 4 : 3, a)) || (rc = dn_unbind(&L->f_dst, 1))) goto done;
done:
    pthread_mutex_unlock(&g_dn.lock);
    return rc;
}

// Backward; weights = 0 leaves dw and db alone (backward-data only, din not NULL). flags:
// CONV3D_WRITE_DIN / _DW, see conv3d_backward_flags.
static int dn_backward(float *din, const float *dout, const float *in, const conv3d *l, nn_dims in_dims,
                       int weights, int flags) {
    pthread_mutex_lock(&g_dn.lock);
    dn_layer *L = NULL;
    dnnl_memory_t ddst = NULL, wei = NULL, dsrc = NULL, src = NULL, dwei = NULL, db = NULL;
    int rc = dn_begin(&L, l, in_dims);
    if (rc) goto done;
    // backward-weights first: its internal inputs share arena buffers with backward-data's
    if (weights) {
        if ((rc = dn_bind(&src, &L->w_src, in, 1)) || (rc = dn_bind(&ddst, &L->w_ddst, dout, 1)) ||
            (rc = dn_bind(&dwei, &L->w_dwei, l->dw, 0)) || (l->sh.bias && (rc = dn_bind(&db, &L->w_db, l->db, 0))))
            goto done;
        dnnl_exec_arg_t a[4] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_DIFF_WEIGHTS, dwei},
                                {DNNL_ARG_DIFF_BIAS, db}};
        if ((rc = dn_exec(L->bwd_w, db ? 4 : 3, a))) goto done;
    }
    if (din) {
        if (weights && L->ddst_shared) {  // already in A_OUT, as backward-weights left it
            DN(dnnl_memory_set_data_handle(L->d_ddst.inner, g_dn.arena[g_arena_of[R_D_DDST]]));
            ddst = L->d_ddst.inner;
        } else if ((rc = dn_bind(&ddst, &L->d_ddst, dout, 1))) {
            goto done;
        }
        if ((rc = dn_bind(&wei, &L->d_wei, l->w, 1)) ||
            (rc = dn_bind(&dsrc, &L->d_dsrc, din, 0)))
            goto done;
        dnnl_exec_arg_t ad[3] = {{DNNL_ARG_DIFF_DST, ddst}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DIFF_SRC, dsrc}};
        if ((rc = dn_exec(L->bwd_d, 3, ad))) goto done;
    }
    // Every primitive ran: only now write or add into the caller's buffers (all or nothing).
    const int wdin = !!(flags & CONV3D_WRITE_DIN), wdw = !!(flags & CONV3D_WRITE_DW);
    if ((din && (rc = dn_unbind(&L->d_dsrc, wdin))) || (weights && (rc = dn_unbind(&L->w_dwei, wdw))) ||
        (db && (rc = dn_unbind(&L->w_db, wdw))))
        goto done;
done:
    pthread_mutex_unlock(&g_dn.lock);
    return rc;
}

int conv3d_dnnl_backward(float *din, const float *dout, const float *in, const conv3d *l,
                         nn_dims in_dims, int flags) {
    return dn_backward(din, dout, in, l, in_dims, 1, flags);
}

int conv3d_dnnl_backward_data(float *din, const float *dout, const conv3d *l, nn_dims in_dims, int flags) {
    if (!din) return pl_fail(PL_EINVAL, "conv3d dnnl: backward-data without din");
    return dn_backward(din, dout, NULL, l, in_dims, 0, flags & CONV3D_WRITE_DIN);
}

int conv3d_dnnl_direct(const conv3d *l, nn_dims in_dims) {
    pthread_mutex_lock(&g_dn.lock);
    dn_layer *L = NULL;
    int rc = dn_begin(&L, l, in_dims);
    if (!rc)
        for (int i = 0; i < 3; i++)
            if (!strstr(L->impl[i], "gemm") && strncmp(L->impl[i], "ref", 3) != 0 && strcmp(L->impl[i], "?") != 0)
                rc |= 1 << i;
    pthread_mutex_unlock(&g_dn.lock);
    return rc;
}

int nn_dnnl_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                  const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    omp_set_num_threads(nn_get_threads());
    dnnl_status_t st = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
    if (st != dnnl_success)
        return pl_fail(PL_EUNSUPPORTED, "nn: dnnl_sgemm %c%c m:%lld n:%lld k:%lld failed (status %d)", ta ? 'T' : 'N',
                       tb ? 'T' : 'N', (long long)m, (long long)n, (long long)k, (int)st);
    return 0;
}

int conv3d_dnnl_impl(char *buf, size_t n, const conv3d *l, nn_dims in_dims) {
    pthread_mutex_lock(&g_dn.lock);
    dn_layer *L = NULL;
    int rc = dn_begin(&L, l, in_dims);
    if (!rc) snprintf(buf, n, "%s/%s/%s", L->impl[0], L->impl[1], L->impl[2]);
    pthread_mutex_unlock(&g_dn.lock);
    return rc;
}

long conv3d_dnnl_own_reorders(void) { return g_own_runs; }

int conv3d_dnnl_cached(void) {
    pthread_mutex_lock(&g_dn.lock);
    int n = g_dn.n;
    pthread_mutex_unlock(&g_dn.lock);
    return n;
}

void conv3d_dnnl_release(void) {
    pthread_mutex_lock(&g_dn.lock);
    for (int i = 0; i < g_dn.n; i++) dn_layer_free(g_dn.layers[i]);
    free(g_dn.layers);
    g_dn.layers = NULL;
    g_dn.n = g_dn.cap = 0;
    for (int r = 0; r < A_COUNT; r++) {
        free(g_dn.arena[r]);
        g_dn.arena[r] = NULL;
        g_dn.arena_bytes[r] = 0;
    }
    if (g_dn.strm) dnnl_stream_destroy(g_dn.strm);
    if (g_dn.eng) dnnl_engine_destroy(g_dn.eng);
    g_dn.strm = NULL;
    g_dn.eng = NULL;
    pthread_mutex_unlock(&g_dn.lock);
}

#endif
