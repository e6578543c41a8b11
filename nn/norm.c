// norm: BatchNorm3d (PyTorch torch.nn.BatchNorm3d semantics) and GroupNorm (Wu & He 2018,
// torch.nn.GroupNorm). Backward of y = gamma*xhat + beta with xhat = (x - mu)*invstd over a
// set of M values: dx = invstd * (g - mean(g) - xhat * mean(g*xhat)), g = gamma*dy (train);
// with fixed statistics (eval) dx = gamma*invstd*dy.
#include "nn/norm.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "nn/parallel.h"
#include "nn/pl.h"

typedef struct {
    float *y, *mean, *invstd, *dx;
    const float *x, *dy, *yin, *cmean, *cinvstd;
    const batchnorm3d *bn;
    const groupnorm *gn;
    nn_dims d;
    int train, relu;
    int write;    // backward: dx overwritten (it holds nothing to keep), else added into
    double *buf;  // sync paths: per-channel sums (all-reduced between passes)
    double m;     // sync paths: the global count of values per channel
} norm_ctx;

// A backward's dx element: written (write) or added into.
static inline void norm_put(float *dx, float v, int write) { *dx = write ? v : *dx + v; }

// Channel sums over one plane in 8 interleaved double lanes, added in a fixed order at the end:
// the compiler can vectorise them (a single running double sum is one long dependency chain),
// and the bits do not depend on the thread count. NL = lanes.
enum { NL = 8 };
static inline double lanes_total(const double *acc) {
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

static double plane_sum(const float *x, int64_t n) {
    double acc[NL] = {0};
    int64_t i = 0;
    for (; i + NL <= n; i += NL)
        for (int j = 0; j < NL; j++) acc[j] += x[i + j];
    for (int j = 0; i < n; i++, j++) acc[j] += x[i];
    return lanes_total(acc);
}

static double plane_sq_dev(const float *x, int64_t n, double mu) {
    double acc[NL] = {0};
    int64_t i = 0;
    for (; i + NL <= n; i += NL)
        for (int j = 0; j < NL; j++) {
            double t = x[i + j] - mu;
            acc[j] += t * t;
        }
    for (int j = 0; i < n; i++, j++) {
        double t = x[i] - mu;
        acc[j] += t * t;
    }
    return lanes_total(acc);
}

// sum g and sum g*(x - mu) over one plane, g = dy masked by y > 0 when relu (the fused ReLU).
// The 8 lanes as two 4-wide vectors of GCC/clang vector extensions: written as plain lanes GCC
// 12 kept the accumulators in memory (or, with the ReLU test, did not vectorise at all). Per
// lane the arithmetic is the plain loop's (float g*(x - mu), then widened), so are the bits.
typedef float nv4f __attribute__((vector_size(16)));
typedef int32_t nv4i __attribute__((vector_size(16)));
typedef double nv4d __attribute__((vector_size(32)));
static void plane_grad_sums(const float *x, const float *dy, const float *y, int64_t n, float mu, int relu,
                            double *sg, double *sgx) {
    nv4d a[2] = {{0}}, ax[2] = {{0}};
    const nv4f zero = {0}, muv = {mu, mu, mu, mu};
    int64_t i = 0;
    for (; i + NL <= n; i += NL)
        for (int h = 0; h < 2; h++) {
            nv4f g, xv, yv;
            memcpy(&g, dy + i + 4 * h, sizeof g);
            memcpy(&xv, x + i + 4 * h, sizeof xv);
            if (relu) {  // g where y > 0, else +0 (the plain loop's 0.0f)
                memcpy(&yv, y + i + 4 * h, sizeof yv);
                g = (nv4f)((nv4i)g & (yv > zero));
            }
            a[h] += __builtin_convertvector(g, nv4d);
            ax[h] += __builtin_convertvector(g * (xv - muv), nv4d);
        }
    double la[NL], lax[NL];
    for (int j = 0; j < 4; j++) la[j] = a[0][j], la[4 + j] = a[1][j], lax[j] = ax[0][j], lax[4 + j] = ax[1][j];
    for (int j = 0; i < n; i++, j++) {
        float g = (!relu || y[i] > 0) ? dy[i] : 0.0f;
        la[j] += g;
        lax[j] += (double)(g * (x[i] - mu));
    }
    *sg = lanes_total(la);
    *sgx = lanes_total(lax);
}

static void bn_forward_range(void *vc, int64_t c0, int64_t c1) {
    const norm_ctx *k = vc;
    float *y = k->y, *mean = k->mean, *invstd = k->invstd;
    const float *x = k->x;
    const batchnorm3d *l = k->bn;
    const nn_dims d = k->d;
    const int train = k->train, relu = k->relu;
    const int64_t sp = nn_dims_spatial(d), m = d.n * sp;
    for (int64_t c = c0; c < c1; c++) {
        double mu, var;
        if (train) {
            double s = 0, s2 = 0;
            for (int64_t n = 0; n < d.n; n++) s += plane_sum(x + (n * d.c + c) * sp, sp);
            mu = s / (double)m;
            for (int64_t n = 0; n < d.n; n++) s2 += plane_sq_dev(x + (n * d.c + c) * sp, sp, mu);
            var = s2 / (double)m;
            double unbiased = m > 1 ? s2 / (double)(m - 1) : var;
            l->running_mean[c] = (float)((1.0 - l->momentum) * l->running_mean[c] + l->momentum * mu);
            l->running_var[c] = (float)((1.0 - l->momentum) * l->running_var[c] + l->momentum * unbiased);
        } else {
            mu = l->running_mean[c];
            var = l->running_var[c];
        }
        double is = 1.0 / sqrt(var + (double)l->eps);
        mean[c] = (float)mu;
        invstd[c] = (float)is;
        // (x - mu) first: a*x + (beta - a*mu) would cancel badly when |mu| >> std
        const float a = (float)(l->gamma[c] * is), b = l->beta[c], mf = (float)mu;
        for (int64_t n = 0; n < d.n; n++) {
            const float *xp = x + (n * d.c + c) * sp;
            float *yp = y + (n * d.c + c) * sp;
            if (relu)
                for (int64_t i = 0; i < sp; i++) {
                    float v = (xp[i] - mf) * a + b;
                    yp[i] = v > 0 ? v : 0;
                }
            else
                for (int64_t i = 0; i < sp; i++) yp[i] = (xp[i] - mf) * a + b;
        }
    }
}

// channels per thread so that each thread has >= ~256k values
static int64_t norm_min_channels(nn_dims d) {
    return PL_MAX((int64_t)1, 262144 / PL_MAX(d.n * nn_dims_spatial(d), (int64_t)1));
}

// Synchronised training forward: global count and sum, then the global sum of squared
// deviations from the global mean (two passes, as the single-replica path, for accuracy). The
// per-channel passes run in parallel over channels; the all-reduces between them on the caller.
static void bns_sum_range(void *vc, int64_t c0, int64_t c1) {
    const norm_ctx *k = vc;
    const int64_t sp = nn_dims_spatial(k->d), C = k->d.c;
    for (int64_t c = c0; c < c1; c++) {
        double s = 0;
        for (int64_t n = 0; n < k->d.n; n++) s += plane_sum(k->x + (n * C + c) * sp, sp);
        k->buf[c] = s;
    }
}

static void bns_dev_range(void *vc, int64_t c0, int64_t c1) {
    const norm_ctx *k = vc;
    const int64_t sp = nn_dims_spatial(k->d), C = k->d.c;
    for (int64_t c = c0; c < c1; c++) {
        const double mu = k->m > 0 ? k->buf[c] / k->m : 0;
        double s2 = 0;
        for (int64_t n = 0; n < k->d.n; n++) s2 += plane_sq_dev(k->x + (n * C + c) * sp, sp, mu);
        k->buf[C + 1 + c] = s2;
        k->mean[c] = (float)mu;
    }
}

static void bns_norm_range(void *vc, int64_t c0, int64_t c1) {
    const norm_ctx *k = vc;
    const batchnorm3d *l = k->bn;
    const int64_t sp = nn_dims_spatial(k->d), C = k->d.c;
    const double m = k->m;
    for (int64_t c = c0; c < c1; c++) {
        const double mu = k->mean[c], s2 = k->buf[C + 1 + c];
        const double var = m > 0 ? s2 / m : 0, unbiased = m > 1 ? s2 / (m - 1) : var;
        l->running_mean[c] = (float)((1.0 - l->momentum) * l->running_mean[c] + l->momentum * mu);
        l->running_var[c] = (float)((1.0 - l->momentum) * l->running_var[c] + l->momentum * unbiased);
        const double is = 1.0 / sqrt(var + (double)l->eps);
        k->invstd[c] = (float)is;
        const float a = (float)(l->gamma[c] * is), b = l->beta[c], mf = (float)mu;
        for (int64_t n = 0; n < k->d.n; n++) {
            const float *xp = k->x + (n * C + c) * sp;
            float *yp = k->y + (n * C + c) * sp;
            for (int64_t i = 0; i < sp; i++) {
                float v = (xp[i] - mf) * a + b;
                yp[i] = (k->relu && v < 0) ? 0 : v;
            }
        }
    }
}

static void bn_forward_sync(float *y, float *mean, float *invstd, const float *x, const batchnorm3d *l,
                            nn_dims d, int relu) {
    const int64_t C = d.c;
    double buf[2 * 4096 + 1];
    PL_ASSERT(C <= 4096);
    norm_ctx k = {.y = y, .mean = mean, .invstd = invstd, .x = x, .bn = l, .d = d, .relu = relu, .buf = buf};
    nn_parallel_for(C, norm_min_channels(d), bns_sum_range, &k);
    buf[C] = (double)(d.n * nn_dims_spatial(d));
    l->sync(l->sync_ctx, buf, (int)C + 1);
    k.m = buf[C];
    nn_parallel_for(C, norm_min_channels(d), bns_dev_range, &k);
    l->sync(l->sync_ctx, buf + C + 1, (int)C);
    nn_parallel_for(C, norm_min_channels(d), bns_norm_range, &k);
}

// Synchronised training backward: dgamma/dbeta get the local sums (the gradient all-reduce adds
// the replicas'); dx uses the global sums and the global count.
static void bnsb_sum_range(void *vc, int64_t c0, int64_t c1) {
    const norm_ctx *k = vc;
    const batchnorm3d *l = k->bn;
    const int64_t sp = nn_dims_spatial(k->d), C = k->d.c;
    for (int64_t c = c0; c < c1; c++) {
        double sg = 0, sgx = 0;
        for (int64_t n = 0; n < k->d.n; n++) {
            const int64_t off = (n * C + c) * sp;
            double a, ax;
            plane_grad_sums(k->x + off, k->dy + off, k->yin + off, sp, k->cmean[c], k->relu, &a, &ax);
            sg += a;
            sgx += ax;
        }
        sgx *= k->cinvstd[c];
        l->dbeta[c] += (float)sg;
        l->dgamma[c] += (float)sgx;
        k->buf[c] = sg;
        k->buf[C + c] = sgx;
    }
}

static void bnsb_dx_range(void *vc, int64_t c0, int64_t c1) {
    const norm_ctx *k = vc;
    const int64_t sp = nn_dims_spatial(k->d), C = k->d.c;
    const float *x = k->x, *dy = k->dy, *y = k->yin;
    for (int64_t c = c0; c < c1; c++) {
        const float mu = k->cmean[c], is = k->cinvstd[c], kk = k->bn->gamma[c] * is;
        const float mg = (float)(k->buf[c] / k->m), mgx = (float)(k->buf[C + c] / k->m);
        for (int64_t n = 0; n < k->d.n; n++) {
            const int64_t off = (n * C + c) * sp;
            float *dxp = k->dx + off;
            for (int64_t i = 0; i < sp; i++) {
                float g = (!k->relu || y[off + i] > 0) ? dy[off + i] : 0.0f;
                const float v = kk * (g - mg - (x[off + i] - mu) * is * mgx);
                norm_put(&dxp[i], v, k->write);
            }
        }
    }
}

static void bn_backward_sync(float *dx, const float *dy, const float *x, const float *y, const float *mean,
                             const float *invstd, const batchnorm3d *l, nn_dims d, int relu, int write) {
    const int64_t C = d.c;
    double buf[2 * 4096 + 1];
    PL_ASSERT(C <= 4096);
    norm_ctx k = {.dx = dx, .dy = dy, .x = x, .yin = y, .cmean = mean, .cinvstd = invstd, .bn = l,
                  .d = d, .relu = relu, .write = write, .buf = buf};
    nn_parallel_for(C, norm_min_channels(d), bnsb_sum_range, &k);
    buf[2 * C] = (double)(d.n * nn_dims_spatial(d));
    l->sync(l->sync_ctx, buf, 2 * (int)C + 1);
    if (!dx) return;
    k.m = buf[2 * C];
    nn_parallel_for(C, norm_min_channels(d), bnsb_dx_range, &k);
}

void batchnorm3d_forward(float *y, float *mean, float *invstd, const float *x,
                         const batchnorm3d *l, nn_dims d, int train, int relu) {
    PL_ASSERT(d.c == l->c);
    if (train && l->sync) {
        bn_forward_sync(y, mean, invstd, x, l, d, relu);
        if (l->num_batches_tracked) l->num_batches_tracked[0] += 1.0f;
        return;
    }
    norm_ctx k = {.y = y, .mean = mean, .invstd = invstd, .x = x, .bn = l, .d = d, .train = train, .relu = relu};
    nn_parallel_for(d.c, norm_min_channels(d), bn_forward_range, &k);
    if (train && l->num_batches_tracked) l->num_batches_tracked[0] += 1.0f;
}

static void bn_backward_range(void *vc, int64_t c0, int64_t c1) {
    const norm_ctx *k = vc;
    float *dx = k->dx;
    const float *dy = k->dy, *x = k->x, *y = k->yin, *mean = k->cmean, *invstd = k->cinvstd;
    const batchnorm3d *l = k->bn;
    const nn_dims d = k->d;
    const int train = k->train, relu = k->relu;
    const int64_t sp = nn_dims_spatial(d), m = d.n * sp;
    for (int64_t c = c0; c < c1; c++) {
        const float mu = mean[c], is = invstd[c];
        double sg = 0, sgx = 0;  // sum dy, sum dy*xhat (ReLU-masked)
        for (int64_t n = 0; n < d.n; n++) {
            const int64_t off = (n * d.c + c) * sp;
            double a, ax;
            plane_grad_sums(x + off, dy + off, y + off, sp, mu, relu, &a, &ax);
            sg += a;
            sgx += ax * is;
        }
        l->dbeta[c] += (float)sg;
        l->dgamma[c] += (float)sgx;
        if (!dx) continue;
        const float kk = l->gamma[c] * is;
        const float mg = train ? (float)(sg / (double)m) : 0.0f;
        const float mgx = train ? (float)(sgx / (double)m) : 0.0f;
        for (int64_t n = 0; n < d.n; n++) {
            const int64_t off = (n * d.c + c) * sp;
            const float *xp = x + off, *gp = dy + off, *yp = y + off;
            float *dxp = dx + off;
            for (int64_t i = 0; i < sp; i++) {
                float g = (!relu || yp[i] > 0) ? gp[i] : 0.0f;
                const float v = kk * (g - mg - (xp[i] - mu) * is * mgx);
                norm_put(&dxp[i], v, k->write);
            }
        }
    }
}

void batchnorm3d_backward(float *dx, const float *dy, const float *x, const float *y,
                          const float *mean, const float *invstd, const batchnorm3d *l,
                          nn_dims d, int train, int relu, int write) {
    if (train && l->sync) {
        bn_backward_sync(dx, dy, x, y, mean, invstd, l, d, relu, write);
        return;
    }
    norm_ctx k = {.dx = dx, .dy = dy, .x = x, .yin = y, .cmean = mean, .cinvstd = invstd, .bn = l,
                  .d = d, .train = train, .relu = relu, .write = write};
    nn_parallel_for(d.c, norm_min_channels(d), bn_backward_range, &k);
}

static void gn_forward_range(void *vc, int64_t g0, int64_t g1) {
    const norm_ctx *k = vc;
    float *y = k->y, *mean = k->mean, *invstd = k->invstd;
    const float *x = k->x;
    const groupnorm *l = k->gn;
    const nn_dims d = k->d;
    const int relu = k->relu;
    const int64_t sp = nn_dims_spatial(d), cg = d.c / l->groups, m = cg * sp;
    for (int64_t n = 0; n < d.n; n++)
        for (int64_t g = g0; g < g1; g++) {
            const float *xg = x + (n * d.c + g * cg) * sp;
            double mu = plane_sum(xg, m) / (double)m, s2 = plane_sq_dev(xg, m, mu);
            double is = 1.0 / sqrt(s2 / (double)m + (double)l->eps);
            mean[n * l->groups + g] = (float)mu;
            invstd[n * l->groups + g] = (float)is;
            for (int64_t cc = 0; cc < cg; cc++) {
                int64_t c = g * cg + cc;
                const float a = (float)(l->gamma[c] * is), b = l->beta[c], mf = (float)mu;
                const float *xp = xg + cc * sp;
                float *yp = y + (n * d.c + c) * sp;
                for (int64_t i = 0; i < sp; i++) {
                    float v = (xp[i] - mf) * a + b;
                    yp[i] = (relu && v < 0) ? 0 : v;
                }
            }
        }
}

static int64_t gn_min_groups(nn_dims d, int64_t groups) {
    return PL_MAX((int64_t)1, 262144 / PL_MAX(d.n * nn_dims_spatial(d) * (d.c / groups), (int64_t)1));
}

void groupnorm_forward(float *y, float *mean, float *invstd, const float *x, const groupnorm *l,
                       nn_dims d, int relu) {
    PL_ASSERT(d.c == l->c && l->c % l->groups == 0);
    norm_ctx k = {.y = y, .mean = mean, .invstd = invstd, .x = x, .gn = l, .d = d, .relu = relu};
    nn_parallel_for(l->groups, gn_min_groups(d, l->groups), gn_forward_range, &k);
}

// groups [g0, g1) for every sample: dgamma/dbeta of a channel are only touched by its group
static void gn_backward_range(void *vc, int64_t g0, int64_t g1) {
    const norm_ctx *k = vc;
    float *dx = k->dx;
    const float *dy = k->dy, *x = k->x, *y = k->yin, *mean = k->cmean, *invstd = k->cinvstd;
    const groupnorm *l = k->gn;
    const nn_dims d = k->d;
    const int relu = k->relu;
    const int64_t sp = nn_dims_spatial(d), cg = d.c / l->groups, m = cg * sp;
    for (int64_t n = 0; n < d.n; n++)
        for (int64_t g = g0; g < g1; g++) {
            const float mu = mean[n * l->groups + g], is = invstd[n * l->groups + g];
            double sgh = 0, sghx = 0;  // sum gamma*dy, sum gamma*dy*xhat over the group
            for (int64_t cc = 0; cc < cg; cc++) {
                int64_t c = g * cg + cc, off = (n * d.c + c) * sp;
                double a, ax;
                plane_grad_sums(x + off, dy + off, y + off, sp, mu, relu, &a, &ax);
                ax *= is;
                l->dbeta[c] += (float)a;
                l->dgamma[c] += (float)ax;
                sgh += (double)l->gamma[c] * a;
                sghx += (double)l->gamma[c] * ax;
            }
            if (!dx) continue;
            const float mg = (float)(sgh / (double)m), mgx = (float)(sghx / (double)m);
            for (int64_t cc = 0; cc < cg; cc++) {
                int64_t c = g * cg + cc, off = (n * d.c + c) * sp;
                const float gm = l->gamma[c];
                for (int64_t i = 0; i < sp; i++) {
                    float gv = (!relu || y[off + i] > 0) ? dy[off + i] : 0.0f;
                    const float v = is * (gm * gv - mg - (x[off + i] - mu) * is * mgx);
                    norm_put(&dx[off + i], v, k->write);
                }
            }
        }
}

void groupnorm_backward(float *dx, const float *dy, const float *x, const float *y,
                        const float *mean, const float *invstd, const groupnorm *l, nn_dims d,
                        int relu, int write) {
    norm_ctx k = {.dx = dx, .dy = dy, .x = x, .yin = y, .cmean = mean, .cinvstd = invstd, .gn = l,
                  .d = d, .relu = relu, .write = write};
    nn_parallel_for(l->groups, gn_min_groups(d, l->groups), gn_backward_range, &k);
}
