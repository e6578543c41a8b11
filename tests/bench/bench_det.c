// bench_det: timings of the detection operators at the MP3D shape (512 x 512 input, P3D-63
// stage widths 256/512/1024/2048, FPN 256, 3 anchors, 512 sampled RoIs, 1000 proposals),
// with a same-run sgemm reference of the FPN P2 3x3-conv GEMM shape. Single thread
// (OPENBLAS_NUM_THREADS=1 recommended). Prints key:value lines; min over repetitions, with the
// process CPU time of the same run to expose a loaded machine. Usage: bench_det [size] [reps]
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/bbox_head.h"
#include "nn/fpn.h"
#include "nn/rpn_head.h"

static double cpu_now(void) { return (double)clock() / CLOCKS_PER_SEC; }

typedef struct {
    double wall, cpu;
} tm2;

#define BENCH(res, reps, stmt)                                                           \
    do {                                                                                 \
        res.wall = 1e30;                                                                 \
        res.cpu = 0;                                                                     \
        for (int r_ = 0; r_ < (reps); r_++) {                                            \
            double w0_ = pl_time(), c0_ = cpu_now();                                     \
            stmt;                                                                        \
            double w_ = pl_time() - w0_, c_ = cpu_now() - c0_;                           \
            if (w_ < res.wall) {                                                         \
                res.wall = w_;                                                           \
                res.cpu = c_;                                                            \
            }                                                                            \
        }                                                                                \
    } while (0)

static void fill(float *x, size_t n, pl_rng *r, double a) {
    for (size_t i = 0; i < n; i++) x[i] = (float)pl_rng_range(r, -a, a);
}

int main(int argc, char **argv) {
    const int64_t size = argc > 1 ? atoll(argv[1]) : 512;
    const int reps = argc > 2 ? atoi(argv[2]) : 3;
    pl_rng rng;
    pl_rng_seed(&rng, 1);
    // reference: the sgemm of the FPN P2 output conv (M = 256, K = 256*9, N = (size/4)^2)
    {
        int64_t m = 256, k = 2304, n = (size / 4) * (size / 4);
        float *a = pl_malloc((size_t)(m * k) * 4, "A"), *b = pl_malloc((size_t)(k * n) * 4, "B"),
              *c = pl_malloc((size_t)(m * n) * 4, "C");
        fill(a, (size_t)(m * k), &rng, 1);
        fill(b, (size_t)(k * n), &rng, 1);
        tm2 t;
        BENCH(t, reps, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)k, 1.0f, a,
                                   (int)k, b, (int)n, 0.0f, c, (int)n));
        printf("ref_sgemm m:%lld k:%lld n:%lld wall_s:%.4f cpu_s:%.4f gflops:%.1f\n", (long long)m, (long long)k,
               (long long)n, t.wall, t.cpu, 2.0 * m * k * n / t.wall * 1e-9);
        free(a);
        free(b);
        free(c);
    }
    nn_params p;
    nn_params_init(&p);
    fpn_config fc = {4, {256, 512, 1024, 2048}, 256, 5, 0};
    anchor_config ac;
    const double ratios[3] = {0.5, 1.0, 2.0};
    anchors_config_make(&ac, 4.0, ratios, 3);
    rpn_head_config rc = rpn_head_defaults(256, &ac);
    bbox_head_config bc = bbox_head_defaults(256, 1);
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
    fpn_init_weights(f, &rng);
    rpn_head_init_weights(rpn, &rng);
    bbox_head_init_weights(bb, &rng);
    printf("params:%zu (%.1f MB)\n", p.nparams, p.nparams * 4e-6);
    float *in[4], *din[4];
    nn_dims d[4];
    for (int i = 0; i < 4; i++) {
        d[i] = nn_dims_make(1, fc.in_channels[i], 1, size >> (i + 2), size >> (i + 2));
        in[i] = pl_malloc((size_t)nn_dims_count(d[i]) * 4, "C");
        din[i] = pl_calloc((size_t)nn_dims_count(d[i]), 4, "dC");
        fill(in[i], (size_t)nn_dims_count(d[i]), &rng, 1);
    }
    tm2 t;
    BENCH(t, reps, fpn_forward(f, (const float *const *)in, d));
    double fpn_flops = 0;
    for (int i = 0; i < 4; i++) {
        double hw = (double)(d[i].h * d[i].w);
        fpn_flops += 2.0 * hw * 256 * (double)fc.in_channels[i] + 2.0 * hw * 256 * 256 * 9;
    }
    printf("fpn_forward wall_s:%.4f cpu_s:%.4f gflops:%.1f\n", t.wall, t.cpu, fpn_flops / t.wall * 1e-9);
    const float *pf[5];
    float *dpf[5];
    nn_dims pd[5];
    for (int l = 0; l < 5; l++) {
        pf[l] = fpn_output(f, l, &pd[l]);
        dpf[l] = fpn_output_grad(f, l);
    }
    for (int l = 0; l < 5; l++) fill(dpf[l], (size_t)nn_dims_count(pd[l]), &rng, 1e-3);
    BENCH(t, reps, fpn_backward(f, din));
    printf("fpn_backward wall_s:%.4f cpu_s:%.4f gflops:%.1f\n", t.wall, t.cpu, 2 * fpn_flops / t.wall * 1e-9);
    BENCH(t, reps, rpn_head_forward(rpn, pf, pd));
    double rpn_flops = 0;
    for (int l = 0; l < 5; l++) rpn_flops += 2.0 * (double)(pd[l].h * pd[l].w) * 256 * (256 * 9 + 15);
    printf("rpn_forward wall_s:%.4f cpu_s:%.4f gflops:%.1f\n", t.wall, t.cpu, rpn_flops / t.wall * 1e-9);
    const float gtb[12] = {100, 120, 140, 150, 300, 310, 330, 352, 50, 400, 90, 470};
    det_gt gt = {gtb, NULL, 3, NULL, 0, size, size};
    int64_t np, nn, nanch = 0;
    for (int l = 0; l < 5; l++) nanch += pd[l].h * pd[l].w * 3;
    BENCH(t, reps, rpn_head_targets(rpn, &np, &nn, &gt, &rng));
    printf("rpn_targets anchors:%lld pos:%lld neg:%lld wall_s:%.4f cpu_s:%.4f\n", (long long)nanch, (long long)np,
           (long long)nn, t.wall, t.cpu);
    double lc, lr;
    BENCH(t, reps, rpn_head_loss(rpn, &lc, &lr));
    printf("rpn_loss wall_s:%.4f cpu_s:%.4f loss_cls:%.4f loss_reg:%.4f\n", t.wall, t.cpu, lc, lr);
    for (int l = 0; l < 5; l++) memset(dpf[l], 0, (size_t)nn_dims_count(pd[l]) * 4);
    BENCH(t, reps, rpn_head_backward(rpn, dpf));
    printf("rpn_backward wall_s:%.4f cpu_s:%.4f gflops:%.1f\n", t.wall, t.cpu, 2 * rpn_flops / t.wall * 1e-9);
    static float props[1000 * 5];
    int64_t nprop;
    const int64_t hw[2] = {size, size};
    BENCH(t, reps, rpn_head_proposals(rpn, props, &nprop, hw));
    printf("rpn_proposals kept:%lld wall_s:%.4f cpu_s:%.4f\n", (long long)nprop, t.wall, t.cpu);
    int64_t npos;
    BENCH(t, reps, bbox_head_sample(bb, &npos, props, &nprop, 1000, &gt, 1, &rng));
    int64_t k;
    bbox_head_rois(bb, &k);
    printf("roi_sample rois:%lld pos:%lld wall_s:%.4f cpu_s:%.4f\n", (long long)k, (long long)npos, t.wall, t.cpu);
    BENCH(t, reps, bbox_head_forward(bb, pf, pd));
    double fc_flops = 2.0 * (double)k * (12544.0 * 1024 + 1024 * 1024 + 1024 * 6);
    printf("bbox_forward rois:%lld wall_s:%.4f cpu_s:%.4f fc_gflops:%.1f\n", (long long)k, t.wall, t.cpu, fc_flops / t.wall * 1e-9);
    BENCH(t, reps, bbox_head_loss(bb, &lc, &lr));
    printf("bbox_loss wall_s:%.4f cpu_s:%.4f\n", t.wall, t.cpu);
    BENCH(t, reps, bbox_head_backward(bb, dpf));
    printf("bbox_backward wall_s:%.4f cpu_s:%.4f fc_gflops:%.1f\n", t.wall, t.cpu, 2 * fc_flops / t.wall * 1e-9);
    // RoIAlign alone (forward, backward) on the same RoIs
    {
        const float *rois = bbox_head_rois(bb, &k);
        int *lvl = pl_malloc((size_t)k * sizeof(int), "lvl");
        float *o = pl_malloc((size_t)k * 256 * 49 * 4, "roi out");
        double sc[4] = {0.25, 0.125, 0.0625, 0.03125};
        roialign_map_levels(lvl, rois, k, 4, 56);
        roialign_config ra = {7, 7, 0, 1};
        BENCH(t, reps, roialign_forward_levels(o, pf, pd, sc, lvl, rois, k, &ra));
        printf("roialign_forward rois:%lld wall_s:%.4f cpu_s:%.4f\n", (long long)k, t.wall, t.cpu);
        BENCH(t, reps, roialign_backward_levels(dpf, o, pd, sc, lvl, rois, k, &ra));
        printf("roialign_backward rois:%lld wall_s:%.4f cpu_s:%.4f\n", (long long)k, t.wall, t.cpu);
        free(lvl);
        free(o);
    }
    PL_ASSERT(bbox_head_set_proposals(bb, props, &nprop, 1000, 1) == 0);
    BENCH(t, reps, bbox_head_forward(bb, pf, pd));
    printf("bbox_forward_test rois:%lld wall_s:%.4f cpu_s:%.4f\n", (long long)nprop, t.wall, t.cpu);
    static float dets[100 * 6];
    int64_t nd;
    BENCH(t, reps, bbox_head_detect(bb, dets, &nd, hw));
    printf("bbox_detect dets:%lld wall_s:%.4f cpu_s:%.4f\n", (long long)nd, t.wall, t.cpu);
    // NMS of 2000 random boxes
    {
        enum { N = 2000 };
        static float bx[4 * N], scr[N];
        static int64_t keep[N], ord[N];
        static uint8_t dead[N];
        for (int i = 0; i < N; i++) {
            float x = (float)pl_rng_range(&rng, 0, (double)size), y = (float)pl_rng_range(&rng, 0, (double)size);
            bx[4 * i] = x, bx[4 * i + 1] = y;
            bx[4 * i + 2] = x + (float)pl_rng_range(&rng, 8, 128), bx[4 * i + 3] = y + (float)pl_rng_range(&rng, 8, 128);
            scr[i] = (float)pl_rng_uniform(&rng);
        }
        int64_t kept = 0;
        BENCH(t, reps, kept = box_nms(keep, ord, dead, bx, scr, N, 0.7, 0, 0));
        printf("nms boxes:%d kept:%lld wall_s:%.5f cpu_s:%.5f\n", N, (long long)kept, t.wall, t.cpu);
    }
    for (int i = 0; i < 4; i++) {
        free(in[i]);
        free(din[i]);
    }
    fpn_destroy(f);
    rpn_head_destroy(rpn);
    bbox_head_destroy(bb);
    nn_params_free(&p);
    return 0;
}
