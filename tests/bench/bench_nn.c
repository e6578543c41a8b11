// bench_nn: speed of the nn core (issue 9). Conv3d forward and forward+backward GFLOP/s for the
// listed layer shapes beside cblas_sgemm GFLOP/s on exactly the GEMM calls (same shapes, same
// chunks) the layer makes, measured in the same run; a ResNet3D-18 training step (forward, CE,
// backward, SGD) in ms/step and peak RSS (each in a forked child, getrusage of the child).
// Threads: 1 and 2 (openblas_set_num_threads). Each sample records the CPU time other processes
// used meanwhile (from /proc/stat), so a noisy sample can be recognised and discarded.
// Convolution engines (issue 15 item 3, nn.conv_engine): the layer figures are the gemm engine
// (vol2col + sgemm) beside oneDNN's (engine dnnl) and the engine "auto" picks for the layer; the
// training steps (ResNet3D-18 at (8,1,3,112,112); the demo's ResNet3DV1c-18 width 16 at
// (32,1,3,56,56)) run once per engine in NN_BENCH_ENGINES (default "gemm,dnnl,auto" when the
// build has oneDNN, else "gemm").
// Usage: bench_nn [OUT.json] [--quick]   (prints a table; writes JSON lines when OUT given)
//        bench_nn [OUT.json] --step N,D,H,W [--threads 1,2] [--steps K]   (only that training step,
//        K timed steps after a warm-up, per thread count, with nn.conv_engine's default (dnnl)
//        unless NN_BENCH_ENGINES lists engines; used by tests/bench/scale.sh)
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "nn/conv3d.h"
#include "nn/conv3d_dnnl.h"
#include "nn/loss.h"
#include "nn/net.h"
#include "nn/parallel.h"
#include "nn/pl.h"
#include "nn/sgd.h"

void openblas_set_num_threads(int n);
char *openblas_get_corename(void);

static FILE *g_json;

// ---- load accounting: busy jiffies of the machine minus our own CPU time ----
typedef struct {
    double wall, self_cpu, all_busy;
} sample_t;

static double proc_busy_seconds(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long u, n, s, idle, io, irq, sirq, steal;
    int k = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &u, &n, &s, &idle, &io, &irq, &sirq, &steal);
    fclose(f);
    if (k != 8) return 0;
    return (double)(u + n + s + irq + sirq + steal) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_utime.tv_sec + r.ru_stime.tv_sec + 1e-6 * (r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

static sample_t sample_now(void) {
    sample_t s = {pl_time(), self_cpu_seconds(), proc_busy_seconds()};
    return s;
}

// other processes' CPU (cores) during [a, b]
static double other_cores(sample_t a, sample_t b) {
    double wall = b.wall - a.wall;
    double other = (b.all_busy - a.all_busy) - (b.self_cpu - a.self_cpu);
    return wall > 0 ? PL_MAX(other, 0.0) / wall : 0;
}

// ---- conv layer cases ----
typedef struct {
    const char *name;
    int nconv;
    conv3d_shape s[2];
    nn_dims in;
} layer_case;

typedef struct {
    conv3d l;
    nn_dims in, out;
    float *x, *y, *dy, *dx;
} conv_run;

static void conv_run_init(conv_run *r, const conv3d_shape *s, nn_dims in, pl_rng *rng) {
    memset(r, 0, sizeof *r);
    r->l.sh = *s;
    r->in = in;
    PL_ASSERT(conv3d_out_dims(&r->out, s, in) == 0);
    int64_t nw = conv3d_weight_count(s), nx = nn_dims_count(in), ny = nn_dims_count(r->out);
    r->l.w = pl_malloc((size_t)nw * 4, "w");
    r->l.dw = pl_calloc((size_t)nw, 4, "dw");
    r->x = pl_malloc((size_t)nx * 4, "x");
    r->dx = pl_calloc((size_t)nx, 4, "dx");
    r->y = pl_malloc((size_t)ny * 4, "y");
    r->dy = pl_malloc((size_t)ny * 4, "dy");
    PL_ASSERT(r->l.w && r->l.dw && r->x && r->dx && r->y && r->dy);
    for (int64_t i = 0; i < nw; i++) r->l.w[i] = (float)pl_rng_range(rng, -0.05, 0.05);
    for (int64_t i = 0; i < nx; i++) r->x[i] = (float)pl_rng_range(rng, -1, 1);
    for (int64_t i = 0; i < ny; i++) r->dy[i] = (float)pl_rng_range(rng, -1, 1);
}

static void conv_run_free(conv_run *r) {
    free(r->l.w), free(r->l.dw), free(r->x), free(r->dx), free(r->y), free(r->dy);
}

// The cblas_sgemm calls conv3d makes for this layer (same M, N, K, transposes, leading dims and
// chunking), on the layer's own buffers: the reference the layer is measured against.
static void sgemm_like_conv(const conv_run *r, float *ws, size_t ws_floats, int backward) {
    const conv3d_shape *s = &r->l.sh;
    const int64_t g = s->groups, icg = s->ic / g, ocg = s->oc / g;
    const int64_t kg = icg * s->k[0] * s->k[1] * s->k[2], p = nn_dims_spatial(r->out);
    int pointwise = 1;
    for (int i = 0; i < 3; i++) pointwise &= s->k[i] == 1 && s->s[i] == 1 && s->p[i] == 0;
    if (g == 1 && s->k[0] > 1 && s->k[1] == 1 && s->k[2] == 1 && s->s[0] == 1 && s->s[1] == 1 &&
        s->s[2] == 1 && s->p[1] == 0 && s->p[2] == 0) {  // conv3d's temporal path: KD shifted GEMMs
        const int64_t hw = r->in.h * r->in.w, isp = r->in.d * hw, osp = r->out.d * hw;
        for (int64_t n = 0; n < r->in.n; n++)
            for (int64_t t = 0; t < s->k[0]; t++) {
                int64_t od0 = PL_MAX((int64_t)0, s->p[0] - t), od1 = PL_MIN(r->out.d, r->in.d + s->p[0] - t);
                int64_t id0 = od0 - s->p[0] + t, nc = (od1 - od0) * hw;
                const float *xs = r->x + n * s->ic * isp + id0 * hw;
                float *y = r->y + n * s->oc * osp + od0 * hw, *dy = r->dy + n * s->oc * osp + od0 * hw;
                if (!backward)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->oc, (int)nc, (int)s->ic, 1.0f, ws, (int)s->ic, xs, (int)isp, 1.0f, y, (int)osp);
                else {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->oc, (int)s->ic, (int)nc, 1.0f, dy, (int)osp, xs, (int)isp, 1.0f, ws, (int)s->ic);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)s->ic, (int)nc, (int)s->oc, 1.0f, ws, (int)s->ic, dy, (int)osp, 1.0f, r->dx + n * s->ic * isp + id0 * hw, (int)isp);
                }
            }
        return;
    }
    int64_t nrows = r->out.d * r->out.h, rows = pointwise ? nrows : PL_CLAMP((int64_t)(ws_floats / (size_t)(kg * r->out.w)), 1, nrows);
    for (int64_t n = 0; n < r->in.n; n++)
        for (int64_t gi = 0; gi < g; gi++) {
            const float *x = r->x + (n * s->ic + gi * icg) * nn_dims_spatial(r->in);
            float *y = r->y + (n * s->oc + gi * ocg) * p;
            if (pointwise) {
                if (!backward)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ocg, (int)p, (int)icg, 1.0f, r->l.w, (int)kg, x, (int)p, 0.0f, y, (int)p);
                else {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ocg, (int)icg, (int)p, 1.0f, r->dy, (int)p, x, (int)p, 1.0f, r->l.dw, (int)kg);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)icg, (int)p, (int)ocg, 1.0f, r->l.w, (int)kg, r->dy, (int)p, 1.0f, r->dx, (int)p);
                }
                continue;
            }
            for (int64_t r0 = 0; r0 < nrows; r0 += rows) {
                int64_t nc = (PL_MIN(r0 + rows, nrows) - r0) * r->out.w;
                if (!backward)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ocg, (int)nc, (int)kg, 1.0f, r->l.w, (int)kg, ws, (int)nc, 0.0f, y + r0 * r->out.w, (int)p);
                else {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ocg, (int)kg, (int)nc, 1.0f, r->dy + r0 * r->out.w, (int)p, ws, (int)nc, 1.0f, r->l.dw, (int)kg);
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kg, (int)nc, (int)ocg, 1.0f, r->l.w, (int)kg, r->dy + r0 * r->out.w, (int)p, 0.0f, ws, (int)nc);
                }
            }
        }
}

typedef struct {
    double sec, other, cpu;  // best wall seconds, other processes' cores then, our CPU seconds then
} timing;

// best of `reps` timed runs (after one warm-up) of what(): min seconds, load during it
#define TIME_BEST(reps, out, ...)                                                              \
    do {                                                                                       \
        __VA_ARGS__;                                                                           \
        (out).sec = 1e30;                                                                      \
        for (int rep_ = 0; rep_ < (reps); rep_++) {                                            \
            sample_t a_ = sample_now();                                                        \
            __VA_ARGS__;                                                                       \
            sample_t b_ = sample_now();                                                        \
            if (b_.wall - a_.wall < (out).sec)                                                 \
                (out).sec = b_.wall - a_.wall, (out).other = other_cores(a_, b_),              \
                (out).cpu = b_.self_cpu - a_.self_cpu;                                         \
        }                                                                                      \
    } while (0)

static void bench_layer(const layer_case *lc, int threads, int reps, pl_rng *rng) {
    conv_run r[2];
    nn_dims in = lc->in;
    double flops = 0;
    size_t wsf = 0;
    const size_t bound = (256u << 20) / 4;
    for (int i = 0; i < lc->nconv; i++) {
        conv_run_init(&r[i], &lc->s[i], in, rng);
        flops += conv3d_forward_flops(&lc->s[i], in);
        wsf = PL_MAX(wsf, conv3d_workspace_floats(&lc->s[i], in, bound));
        in = r[i].out;
    }
    wsf = PL_MAX(wsf, (size_t)1);
    float *ws = pl_malloc(wsf * 4, "workspace");
    PL_ASSERT(ws);
    memset(ws, 0, wsf * 4);
    timing f = {0, 0, 0}, fb = f, gf = f, gfb = f, df = f, dfb = f;
    conv3d_engine_reset();
    conv3d_set_engine(CONV3D_ENGINE_GEMM);
    TIME_BEST(reps, f, for (int i = 0; i < lc->nconv; i++) conv3d_forward(r[i].y, r[i].x, &r[i].l, r[i].in, ws, wsf));
    TIME_BEST(reps, fb, for (int i = 0; i < lc->nconv; i++) {
        conv3d_forward(r[i].y, r[i].x, &r[i].l, r[i].in, ws, wsf);
        conv3d_backward(r[i].dx, r[i].dy, r[i].x, &r[i].l, r[i].in, ws, wsf);
    });
    TIME_BEST(reps, gf, for (int i = 0; i < lc->nconv; i++) sgemm_like_conv(&r[i], ws, wsf, 0));
    TIME_BEST(reps, gfb, for (int i = 0; i < lc->nconv; i++) {
        sgemm_like_conv(&r[i], ws, wsf, 0);
        sgemm_like_conv(&r[i], ws, wsf, 1);
    });
    // oneDNN (engine dnnl: primitives created in the warm-up run), then what auto picks per conv
    char pick[64] = "";
    if (conv3d_dnnl_available() && !getenv("NN_BENCH_NO_DNNL")) {
        conv3d_set_engine(CONV3D_ENGINE_DNNL);
        TIME_BEST(reps, df, for (int i = 0; i < lc->nconv; i++) conv3d_forward(r[i].y, r[i].x, &r[i].l, r[i].in, ws, wsf));
        TIME_BEST(reps, dfb, for (int i = 0; i < lc->nconv; i++) {
            conv3d_forward(r[i].y, r[i].x, &r[i].l, r[i].in, ws, wsf);
            conv3d_backward(r[i].dx, r[i].dy, r[i].x, &r[i].l, r[i].in, ws, wsf);
        });
        conv3d_engine_reset();
        conv3d_set_engine(CONV3D_ENGINE_AUTO);
        for (int i = 0; i < lc->nconv; i++) {
            conv3d_engine e = conv3d_engine_for(&r[i].l, r[i].x, r[i].in, ws, wsf);
            snprintf(pick + strlen(pick), sizeof pick - strlen(pick), "%s%s", i ? "+" : "", conv3d_engine_name(e));
        }
        conv3d_engine_reset();
        conv3d_set_engine(CONV3D_ENGINE_GEMM);
    }
    double d1 = df.sec > 0 ? flops / df.sec * 1e-9 : 0, d2 = dfb.sec > 0 ? 3 * flops / dfb.sec * 1e-9 : 0;
    double dc1 = df.cpu > 0 ? flops / df.cpu * 1e-9 * threads : 0, dc2 = dfb.cpu > 0 ? 3 * flops / dfb.cpu * 1e-9 * threads : 0;
    double g1 = flops / f.sec * 1e-9, g2 = 3 * flops / fb.sec * 1e-9;
    double s1 = flops / gf.sec * 1e-9, s2 = 3 * flops / gfb.sec * 1e-9;
    printf("%-44s thr:%d  fwd %6.1f GF/s (sgemm %6.1f, %3.0f%%)  fwd+bwd %6.1f GF/s (sgemm %6.1f, %3.0f%%)  other_cpu:%.2f\n",
           lc->name, threads, g1, s1, 100 * g1 / s1, g2, s2, 100 * g2 / s2, PL_MAX(f.other, fb.other));
    if (df.sec > 0)
        printf("%-44s thr:%d  oneDNN: fwd %6.1f GF/s  fwd+bwd %6.1f GF/s  (%.2fx / %.2fx the gemm engine)  auto picks: %s  other_cpu:%.2f\n",
               "", threads, d1, d2, d1 / g1, d2 / g2, pick, PL_MAX(df.other, dfb.other));
    if (threads == 1)  // CPU-time view: robust to time-sharing with other processes
        printf("%-44s thr:1  cpu-time view: fwd %6.1f (sgemm %6.1f)  fwd+bwd %6.1f (sgemm %6.1f)\n", "",
               flops / f.cpu * 1e-9, flops / gf.cpu * 1e-9, 3 * flops / fb.cpu * 1e-9, 3 * flops / gfb.cpu * 1e-9);
    fflush(stdout);
    if (g_json)
        fprintf(g_json, "{\"kind\":\"layer\",\"name\":\"%s\",\"threads\":%d,\"gflop\":%.4f,\"fwd_s\":%.5f,\"fwdbwd_s\":%.5f,"
                        "\"fwd_gflops\":%.2f,\"fwdbwd_gflops\":%.2f,\"sgemm_fwd_gflops\":%.2f,\"sgemm_fwdbwd_gflops\":%.2f,"
                        "\"other_cores\":%.3f,\"cpu_fwd_gflops\":%.2f,\"cpu_fwdbwd_gflops\":%.2f,"
                        "\"cpu_sgemm_fwd_gflops\":%.2f,\"cpu_sgemm_fwdbwd_gflops\":%.2f,"
                        "\"dnnl_fwd_gflops\":%.2f,\"dnnl_fwdbwd_gflops\":%.2f,\"cpu_dnnl_fwd_gflops\":%.2f,"
                        "\"cpu_dnnl_fwdbwd_gflops\":%.2f,\"dnnl_other_cores\":%.3f,\"auto_pick\":\"%s\"}\n",
                lc->name, threads, flops * 1e-9, f.sec, fb.sec, g1, g2, s1, s2, PL_MAX(PL_MAX(f.other, fb.other), PL_MAX(gf.other, gfb.other)),
                flops / f.cpu * 1e-9 * threads, 3 * flops / fb.cpu * 1e-9 * threads, flops / gf.cpu * 1e-9 * threads,
                3 * flops / gfb.cpu * 1e-9 * threads, d1, d2, dc1, dc2, PL_MAX(df.other, dfb.other), pick);
    for (int i = 0; i < lc->nconv; i++) conv_run_free(&r[i]);
    free(ws);
}

// ---- ResNet3D-18 training step, in a child process for its own peak RSS ----
typedef struct {
    const char *name;  // "resnet3d18", "resnet3dv1c18 w0.25"
    enum nn_arch arch;
    double width;
    int classes;
} step_net;

static void step_child(const step_net *sn, nn_dims in, int threads, int steps, conv3d_engine engine, int wfd) {
    openblas_set_num_threads(threads);
    conv3d_set_engine(engine);
    nn_net_config cfg = {sn->arch, sn->width, NN_NORM_BN, 32, sn->classes, 0, 0, 0, getenv("NN_PROFILE") != NULL};
    nn_net *net;
    if (nn_net_create(&net, &cfg, 1)) _exit(2);
    nn_params *p = nn_net_params(net);
    int64_t nx = nn_dims_count(in), labels[64];
    float *x = pl_malloc((size_t)nx * 4, "input");
    pl_rng r;
    pl_rng_seed(&r, 3);
    for (int64_t i = 0; i < nx; i++) x[i] = (float)pl_rng_range(&r, -1, 1);
    for (int i = 0; i < 64; i++) labels[i] = pl_rng_int(&r, 0, sn->classes - 1);
    double best = 1e30, other = 0, loss = 0, cpu = 0;
    for (int s = 0; s <= steps; s++) {  // step 0 plans and warms up
        sample_t a = sample_now();
        if (nn_net_forward(net, x, in, 1)) _exit(3);
        nn_dims o;
        float *y = nn_net_output(net, 0, &o);
        loss_softmax_ce(&loss, nn_net_output_grad(net, 0), y, labels, o.n, o.c, 0.1);
        if (nn_net_backward(net, NULL, NULL)) _exit(4);
        sgd_step(p->params, p->momentum, p->grads, p->nparams, 0.01, 0.9, 1e-4, s == 0);
        sample_t b = sample_now();
        if (s > 0 && b.wall - a.wall < best) best = b.wall - a.wall, other = other_cores(a, b), cpu = b.self_cpu - a.self_cpu;
    }
    double msg[5] = {best, other, (double)nn_net_plan_bytes(net), cpu, (double)p->nparams};
    if (write(wfd, msg, sizeof msg) != (ssize_t)sizeof msg) _exit(5);
    _exit(0);
}

static void bench_step(const step_net *sn, nn_dims in, int threads, int steps, conv3d_engine engine) {
    int fd[2];
    PL_ASSERT(pipe(fd) == 0);
    fflush(stdout);
    pid_t pid = fork();
    PL_ASSERT(pid >= 0);
    if (pid == 0) {
        close(fd[0]);
        step_child(sn, in, threads, steps, engine, fd[1]);
    }
    close(fd[1]);
    double msg[5] = {0};
    ssize_t got = read(fd[0], msg, sizeof msg);
    close(fd[0]);
    int status;
    struct rusage ru;
    wait4(pid, &status, 0, &ru);
    const char *en = conv3d_engine_name(engine);
    if (got != (ssize_t)sizeof msg || !WIFEXITED(status) || WEXITSTATUS(status)) {
        printf("%s step engine %s failed (status %d)\n", sn->name, en, status);
        return;
    }
    double rss_mb = ru.ru_maxrss / 1024.0;
    printf("%s train step (%lld,1,%lld,%lld,%lld) thr:%d engine:%-4s %8.1f ms/step  cpu %8.1f ms/step  peak_rss %7.0f MB  "
           "(plan %5.0f MB)  other_cpu:%.2f  params:%.0f\n",
           sn->name, (long long)in.n, (long long)in.d, (long long)in.h, (long long)in.w, threads, en, msg[0] * 1e3, msg[3] * 1e3,
           rss_mb, msg[2] / 1048576, msg[1], msg[4]);
    fflush(stdout);
    if (g_json)
        fprintf(g_json, "{\"kind\":\"step\",\"name\":\"%s step (%lld,1,%lld,%lld,%lld)\",\"engine\":\"%s\",\"threads\":%d,\"ms\":%.1f,\"peak_rss_mb\":%.0f,\"plan_mb\":%.0f,\"other_cores\":%.3f,\"cpu_s\":%.3f,\"params\":%.0f,\"steps\":%d}\n",
                sn->name, (long long)in.n, (long long)in.d, (long long)in.h, (long long)in.w, en, threads, msg[0] * 1e3, rss_mb,
                msg[2] / 1048576, msg[1], msg[3], msg[4], steps);
}

// The cost of one nn_parallel_for region: one index per thread, each ~10 us of arithmetic, so an
// ideal fork/join takes the time of one index and a serial loop `threads` times that. Best of 5
// rounds of 2000 regions; the serial time of one index is measured the same way. The network
// step calls hundreds of regions (vol2col, col2vol, norms, pools, element-wise passes).
static void region_body(void *ctx, int64_t lo, int64_t hi) {
    volatile double *acc = ctx;
    for (int64_t i = lo; i < hi; i++) {
        double x = (double)i;
        for (int k = 0; k < 4000; k++) x = x * 0.999999 + 1e-9;
        acc[i & 7] += x;
    }
}

static void bench_regions(int threads) {
    volatile double acc[8] = {0};
    double best = 1e30, one = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = pl_time();
        for (int i = 0; i < 2000; i++) region_body((void *)acc, 0, 1);
        one = PL_MIN(one, (pl_time() - t0) / 2000);
    }
    nn_set_threads(threads);
    for (int r = 0; r < 5; r++) {
        double t0 = pl_time();
        for (int i = 0; i < 2000; i++) nn_parallel_for(threads, 1, region_body, (void *)acc);
        best = PL_MIN(best, (pl_time() - t0) / 2000);
    }
    nn_set_threads(0);
    printf("parallel_for region thr:%d (%d x %.1f us of work)  %8.2f us/region  overhead %.2f us\n", threads,
           threads, one * 1e6, best * 1e6, (best - one) * 1e6);
    if (g_json)
        fprintf(g_json, "{\"kind\":\"region\",\"threads\":%d,\"work_us\":%.2f,\"us\":%.2f}\n", threads, one * 1e6,
                best * 1e6);
}

int main(int argc, char **argv) {
    int quick = 0, step_only = 0, steps = 2, threads[4] = {1, 2}, nthreads = 2;
    nn_dims step_in = {0, 1, 0, 0, 0};
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else if (strcmp(argv[i], "--step") == 0 && i + 1 < argc) {  // --step N,D,H,W: only this step
            long long n, d, h, w;
            if (sscanf(argv[++i], "%lld,%lld,%lld,%lld", &n, &d, &h, &w) != 4 || n < 1 || n > 64 || d < 1 || h < 16 ||
                w < 16) {
                fprintf(stderr, "bench_nn: --step %s (expected N,D,H,W with 1 <= N <= 64, H and W >= 16)\n", argv[i]);
                return 2;
            }
            step_in = (nn_dims){n, 1, d, h, w};
            step_only = 1;
        } else if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) { steps = atoi(argv[++i]); if (steps < 1) steps = 1; }
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {  // --threads 1,2
            nthreads = sscanf(argv[++i], "%d,%d,%d,%d", &threads[0], &threads[1], &threads[2], &threads[3]);
            if (nthreads < 1) {
                fprintf(stderr, "bench_nn: --threads %s (expected a comma-separated list)\n", argv[i]);
                return 2;
            }
        } else out = argv[i];
    }
    if (out && !(g_json = fopen(out, "w"))) {
        pl_fail(PL_EIO, "%s: cannot write", out);
        return 1;
    }
    if (g_json) fprintf(g_json, "{\"kind\":\"meta\",\"blas_core\":\"%s\"}\n", openblas_get_corename());
    printf("openblas core: %s\n", openblas_get_corename());
    conv3d_engine engines[3];
    int nengines = 0;
    const char *elist = getenv("NN_BENCH_ENGINES");
    if (!elist) elist = conv3d_dnnl_available() ? "gemm,dnnl,auto" : "gemm";
    for (const char *q = elist; *q && nengines < 3;) {
        char name[16] = "";
        size_t len = strcspn(q, ",");
        snprintf(name, sizeof name, "%.*s", (int)PL_MIN(len, sizeof name - 1), q);
        if (conv3d_engine_parse(name, &engines[nengines]) == 0) nengines++;
        q += len + (q[len] == ',');
    }
    if (step_only) {  // tests/bench/scale.sh: one training step shape at the listed thread counts
        // NN_BENCH_STEP_NET=demo: the demo's ResNet3DV1c-18 width 0.25 (10 classes) instead
        const step_net r18_step = getenv("NN_BENCH_STEP_NET") && !strcmp(getenv("NN_BENCH_STEP_NET"), "demo")
                                      ? (step_net){"resnet3dv1c18 w0.25", NN_ARCH_RESNET3DV1C18, 0.25, 10}
                                      : (step_net){"resnet3d18", NN_ARCH_RESNET3D18, 1.0, 1000};
        // without NN_BENCH_ENGINES: what users get, nn.conv_engine's default (dnnl, io/config_schema.c;
        // this program reads no config, and the library's own default is the gemm reference)
        if (!getenv("NN_BENCH_ENGINES"))
            engines[0] = conv3d_dnnl_available() ? CONV3D_ENGINE_DNNL : CONV3D_ENGINE_GEMM, nengines = 1;
        for (int t = 0; t < nthreads; t++)
            for (int e = 0; e < nengines; e++) bench_step(&r18_step, step_in, threads[t], steps, engines[e]);
        if (g_json) fclose(g_json);
        return 0;
    }
    const int64_t K3[3] = {3, 3, 3}, K1[3] = {1, 1, 1}, S1[3] = {1, 1, 1}, P1[3] = {1, 1, 1}, P0[3] = {0, 0, 0};
    const int64_t KS[3] = {1, 3, 3}, PS[3] = {0, 1, 1}, KT[3] = {3, 1, 1}, PT[3] = {1, 0, 0};
    conv3d_shape c333 = conv3d_shape_make(64, 64, K3, S1, P1, 1, 0);
    conv3d_shape cs = conv3d_shape_make(64, 64, KS, S1, PS, 1, 0), ct = conv3d_shape_make(64, 64, KT, S1, PT, 1, 0);
    conv3d_shape c1 = conv3d_shape_make(256, 64, K1, S1, P0, 1, 0);
    layer_case cases[] = {
        {"conv 3x3x3 64->64 (2,64,9,64,64)", 1, {c333}, {2, 64, 9, 64, 64}},
        {"conv 3x3x3 64->64 (2,64,9,128,128)", 1, {c333}, {2, 64, 9, 128, 128}},
        {"P3D (1,3,3)+(3,1,1) 64->64 (2,64,9,64,64)", 2, {cs, ct}, {2, 64, 9, 64, 64}},
        {"P3D (1,3,3)+(3,1,1) 64->64 (2,64,9,128,128)", 2, {cs, ct}, {2, 64, 9, 128, 128}},
        {"conv 1x1x1 256->64 (2,256,9,64,64)", 1, {c1}, {2, 256, 9, 64, 64}},
    };
    pl_rng rng;
    pl_rng_seed(&rng, 1);
    int ncases = (int)(sizeof cases / sizeof cases[0]);
    // Training steps first, before this process starts any thread: each runs in a forked child,
    // which inherits neither nn/parallel.c's pool workers nor libgomp's threads (the child would
    // believe them running: the pool would run its regions serially, OpenMP could hang), and
    // whose peak RSS would include what the layer runs left in this heap. Engines:
    // NN_BENCH_ENGINES (comma-separated), default all the build has.
    const step_net r18 = {"resnet3d18", NN_ARCH_RESNET3D18, 1.0, 1000};
    const step_net demo = {"resnet3dv1c18 w0.25", NN_ARCH_RESNET3DV1C18, 0.25, 10};
    if (!getenv("NN_BENCH_NO_STEP"))
        for (int t = 1; t <= 2; t++) {
            for (int e = 0; e < nengines; e++) bench_step(&r18, (nn_dims){8, 1, 3, 112, 112}, t, quick ? 1 : 3, engines[e]);
            for (int e = 0; e < nengines; e++) bench_step(&demo, (nn_dims){32, 1, 3, 56, 56}, t, quick ? 2 : 5, engines[e]);
            if (!quick && !getenv("NN_BENCH_NO_BIG")) bench_step(&r18, (nn_dims){2, 1, 9, 256, 256}, t, 2, CONV3D_ENGINE_GEMM);
        }
    for (int t = 2; t <= 4; t += 2)
        if (!getenv("NN_BENCH_NO_REGIONS")) bench_regions(t);
    for (int t = 1; t <= 2 && !getenv("NN_BENCH_NO_LAYERS"); t++) {
        openblas_set_num_threads(t);
        for (int i = 0; i < ncases; i++) {
            if (quick && i % 2) continue;
            bench_layer(&cases[i], t, quick ? 1 : 3, &rng);
        }
    }
    if (g_json) fclose(g_json);
    return 0;
}
