// roialign: mmcv's roi_align (forward and backward) on (N, C, 1, H, W), with FPN level mapping.
#include "nn/roialign.h"

#include <math.h>
#include <string.h>

#include "nn/pl.h"

// Bilinear interpolation taps of one sampling point, as mmcv's bilinear_interpolate(_gradient):
// up to 4 (index, weight) pairs; returns 0 when the point lies outside [-1, size].
static int roialign_taps(int64_t idx[4], double wt[4], double y, double x, int64_t h, int64_t w) {
    if (y < -1.0 || y > (double)h || x < -1.0 || x > (double)w) return 0;
    if (y <= 0) y = 0;
    if (x <= 0) x = 0;
    int64_t yl = (int64_t)y, xl = (int64_t)x, yh, xh;
    if (yl >= h - 1) {
        yh = yl = h - 1;
        y = (double)yl;
    } else {
        yh = yl + 1;
    }
    if (xl >= w - 1) {
        xh = xl = w - 1;
        x = (double)xl;
    } else {
        xh = xl + 1;
    }
    double ly = y - (double)yl, lx = x - (double)xl, hy = 1.0 - ly, hx = 1.0 - lx;
    idx[0] = yl * w + xl;
    idx[1] = yl * w + xh;
    idx[2] = yh * w + xl;
    idx[3] = yh * w + xh;
    wt[0] = hy * hx;
    wt[1] = hy * lx;
    wt[2] = ly * hx;
    wt[3] = ly * lx;
    return 1;
}

// Geometry of one RoI on one level.
typedef struct {
    double y0, x0, bin_h, bin_w;
    int64_t gh, gw;
    double count;
} roialign_geom;

static roialign_geom roialign_geometry(const float *roi, double scale, const roialign_config *c) {
    roialign_geom g;
    double off = c->aligned ? 0.5 : 0.0;
    double x0 = roi[1] * scale - off, y0 = roi[2] * scale - off;
    double x1 = roi[3] * scale - off, y1 = roi[4] * scale - off;
    double rw = x1 - x0, rh = y1 - y0;
    if (!c->aligned) {  // legacy: force malformed RoIs to be 1x1
        rw = fmax(rw, 1.0);
        rh = fmax(rh, 1.0);
    }
    g.y0 = y0;
    g.x0 = x0;
    g.bin_h = rh / (double)c->out_h;
    g.bin_w = rw / (double)c->out_w;
    g.gh = c->sampling_ratio > 0 ? c->sampling_ratio : (int64_t)ceil(rh / (double)c->out_h);
    g.gw = c->sampling_ratio > 0 ? c->sampling_ratio : (int64_t)ceil(rw / (double)c->out_w);
    if (g.gh < 0) g.gh = 0;
    if (g.gw < 0) g.gw = 0;
    g.count = (double)PL_MAX(g.gh * g.gw, (int64_t)1);
    return g;
}

// Sampling points of one RoI are gathered in batches of taps (bin, 4 indices, 4 weights) and
// then applied channel by channel, so each pass stays inside one (H, W) plane (cache-friendly
// for both the gather of forward and the scatter of backward).
enum { ROIALIGN_TAP_BATCH = 1024 };
typedef struct {
    int64_t bin;
    int64_t idx[4];
    float wt[4];   // bilinear weight / count
} roialign_tap;

// One RoI: out (C, OH, OW) from feat, or (out NULL) dfeat += from dout (C, OH, OW).
static void roialign_one(float *out, const float *feat, float *dfeat, const float *dout, nn_dims fd,
                         const float *roi, double scale, const roialign_config *c) {
    const roialign_geom g = roialign_geometry(roi, scale, c);
    int64_t b = (int64_t)roi[0];
    PL_ASSERT(b >= 0 && b < fd.n && fd.d == 1);
    const int64_t hw = fd.h * fd.w, ohw = c->out_h * c->out_w;
    if (out) memset(out, 0, (size_t)(fd.c * ohw) * sizeof(float));
    roialign_tap taps[ROIALIGN_TAP_BATCH];
    int nt = 0;
    const int64_t npts = ohw * g.gh * g.gw;
    for (int64_t q = 0; q <= npts; q++) {
        if (q < npts) {
            const int64_t bin = q / (g.gh * g.gw), r = q % (g.gh * g.gw);
            const int64_t ph = bin / c->out_w, pw = bin % c->out_w, iy = r / g.gw, ix = r % g.gw;
            double y = g.y0 + (double)ph * g.bin_h + ((double)iy + 0.5) * g.bin_h / (double)g.gh;
            double x = g.x0 + (double)pw * g.bin_w + ((double)ix + 0.5) * g.bin_w / (double)g.gw;
            double wt[4];
            roialign_tap *t = &taps[nt];
            if (roialign_taps(t->idx, wt, y, x, fd.h, fd.w)) {
                t->bin = bin;
                for (int k = 0; k < 4; k++) t->wt[k] = (float)(wt[k] / g.count);
                nt++;
            }
        }
        if (nt == ROIALIGN_TAP_BATCH || (q == npts && nt > 0)) {
            for (int64_t ch = 0; ch < fd.c; ch++) {
                const int64_t base = (b * fd.c + ch) * hw;
                if (out) {
                    const float *f = feat + base;
                    float *o = out + ch * ohw;
                    for (int i = 0; i < nt; i++) {
                        const roialign_tap *t = &taps[i];
                        o[t->bin] += t->wt[0] * f[t->idx[0]] + t->wt[1] * f[t->idx[1]] +
                                     t->wt[2] * f[t->idx[2]] + t->wt[3] * f[t->idx[3]];
                    }
                } else {
                    float *df = dfeat + base;
                    const float *go = dout + ch * ohw;
                    for (int i = 0; i < nt; i++) {
                        const roialign_tap *t = &taps[i];
                        const float v = go[t->bin];
                        for (int k = 0; k < 4; k++) df[t->idx[k]] += t->wt[k] * v;
                    }
                }
            }
            nt = 0;
        }
    }
}

void roialign_forward(float *out, const float *feat, nn_dims fd, const float *rois, int64_t k,
                      double spatial_scale, const roialign_config *c) {
    const int64_t per = fd.c * c->out_h * c->out_w;
    for (int64_t i = 0; i < k; i++)
        roialign_one(out + i * per, feat, NULL, NULL, fd, rois + 5 * i, spatial_scale, c);
}

void roialign_backward(float *dfeat, const float *dout, nn_dims fd, const float *rois, int64_t k,
                       double spatial_scale, const roialign_config *c) {
    const int64_t per = fd.c * c->out_h * c->out_w;
    for (int64_t i = 0; i < k; i++)
        roialign_one(NULL, NULL, dfeat, dout + i * per, fd, rois + 5 * i, spatial_scale, c);
}

void roialign_map_levels(int *lvl, const float *rois, int64_t k, int nlevels, double finest_scale) {
    for (int64_t i = 0; i < k; i++) {
        const float *r = rois + 5 * i;
        double scale = sqrt(fmax(((double)r[3] - r[1]) * ((double)r[4] - r[2]), 0.0));
        double l = floor(log2(scale / finest_scale + 1e-6));
        lvl[i] = (int)PL_CLAMP(l, 0.0, (double)(nlevels - 1));
    }
}

void roialign_forward_levels(float *out, const float *const *feats, const nn_dims *fd,
                             const double *scales, const int *lvl, const float *rois, int64_t k,
                             const roialign_config *c) {
    const int64_t per = fd[0].c * c->out_h * c->out_w;
    for (int64_t i = 0; i < k; i++)
        roialign_one(out + i * per, feats[lvl[i]], NULL, NULL, fd[lvl[i]], rois + 5 * i, scales[lvl[i]], c);
}

void roialign_backward_levels(float *const *dfeats, const float *dout, const nn_dims *fd,
                              const double *scales, const int *lvl, const float *rois, int64_t k,
                              const roialign_config *c) {
    const int64_t per = fd[0].c * c->out_h * c->out_w;
    for (int64_t i = 0; i < k; i++)
        if (dfeats[lvl[i]])
            roialign_one(NULL, NULL, dfeats[lvl[i]], dout + i * per, fd[lvl[i]], rois + 5 * i, scales[lvl[i]], c);
}
