// conv3d: vol2col + sgemm in chunks of output rows, a direct GEMM for 1x1x1 stride 1, and
// the naive reference. GEMM shapes per sample and group g (Kg = IC/groups * KD*KH*KW,
// P = OD*OH*OW): forward  Y_g (OCg, P) = W_g (OCg, Kg) x col (Kg, P);
// backward weight dW_g += dY_g x col^T;  backward data col = W_g^T x dY_g then col2vol.
#include "nn/conv3d.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "nn/parallel.h"
#include "nn/pl.h"

conv3d_shape conv3d_shape_make(int64_t ic, int64_t oc, const int64_t k[3], const int64_t s[3],
                               const int64_t p[3], int64_t groups, int bias) {
    conv3d_shape r;
    r.ic = ic;
    r.oc = oc;
    for (int i = 0; i < 3; i++) {
        r.k[i] = k[i];
        r.s[i] = s[i];
        r.p[i] = p[i];
    }
    r.groups = groups;
    r.bias = bias;
    return r;
}

int conv3d_out_dims(nn_dims *out, const conv3d_shape *s, nn_dims in) {
    if (s->groups < 1 || s->ic % s->groups || s->oc % s->groups)
        return pl_fail(PL_EINVAL, "conv3d: groups=%lld must divide ic=%lld and oc=%lld",
                       (long long)s->groups, (long long)s->ic, (long long)s->oc);
    if (in.c != s->ic)
        return pl_fail(PL_EINVAL, "conv3d: input has %lld channels, layer expects %lld",
                       (long long)in.c, (long long)s->ic);
    int64_t isz[3] = {in.d, in.h, in.w}, osz[3];
    for (int i = 0; i < 3; i++) {
        if (s->k[i] < 1 || s->s[i] < 1 || s->p[i] < 0)
            return pl_fail(PL_EINVAL, "conv3d: axis %d kernel=%lld stride=%lld pad=%lld (need k>=1 s>=1 p>=0)",
                           i, (long long)s->k[i], (long long)s->s[i], (long long)s->p[i]);
        int64_t span = isz[i] + 2 * s->p[i] - s->k[i];
        if (span < 0)
            return pl_fail(PL_EINVAL, "conv3d: axis %d input %lld + 2*pad %lld < kernel %lld",
                           i, (long long)isz[i], (long long)s->p[i], (long long)s->k[i]);
        osz[i] = span / s->s[i] + 1;
    }
    *out = nn_dims_make(in.n, s->oc, osz[0], osz[1], osz[2]);
    return 0;
}

int64_t conv3d_weight_count(const conv3d_shape *s) {
    return s->oc * (s->ic / s->groups) * s->k[0] * s->k[1] * s->k[2];
}

static int conv3d_is_pointwise(const conv3d_shape *s) {
    for (int i = 0; i < 3; i++)
        if (s->k[i] != 1 || s->s[i] != 1 || s->p[i] != 0) return 0;
    return 1;
}

// (k,1,1) stride 1 with depth padding only, one group: the col rows of tap t are input planes
// shifted by t - pd, so the layer is KD accumulated GEMMs on the input itself (no vol2col).
static int conv3d_is_temporal(const conv3d_shape *s) {
    return s->groups == 1 && s->k[0] > 1 && s->k[1] == 1 && s->k[2] == 1 && s->s[0] == 1 &&
           s->s[1] == 1 && s->s[2] == 1 && s->p[1] == 0 && s->p[2] == 0;
}

double conv3d_forward_flops(const conv3d_shape *s, nn_dims in) {
    nn_dims o = {0, 0, 0, 0, 0};
    if (conv3d_out_dims(&o, s, in)) return 0;
    return 2.0 * (double)in.n * (double)nn_dims_spatial(o) * (double)conv3d_weight_count(s);
}

// Rows of output (od, oh pairs) per chunk so that Kg * rows * OW floats fit in ws_floats.
static int64_t conv3d_chunk_rows(int64_t kg, int64_t ow, int64_t nrows, size_t ws_floats) {
    int64_t rows = (int64_t)(ws_floats / (size_t)(kg * ow));
    return PL_CLAMP(rows, 1, nrows);
}

size_t conv3d_workspace_floats(const conv3d_shape *s, nn_dims in, size_t bound_floats) {
    nn_dims o = {0, 0, 0, 0, 0};
    if (conv3d_out_dims(&o, s, in)) return 0;
    if (conv3d_is_pointwise(s)) return 0;
    if (conv3d_is_temporal(s)) return (size_t)(2 * s->oc * s->ic * s->k[0]);  // repacked W, dW
    int64_t kg = (s->ic / s->groups) * s->k[0] * s->k[1] * s->k[2];
    int64_t rows = conv3d_chunk_rows(kg, o.w, o.d * o.h, bound_floats);
    return (size_t)(kg * rows * o.w);
}

// One output row (OW values) of one col row: x_row is the input row (W) at (ic, id, ih).
static inline void vol2col_row(float *dst, const float *x_row, int64_t w, int64_t ow,
                               int64_t sw, int64_t pw, int64_t kw) {
    if (sw == 1) {
        int64_t lo = PL_CLAMP(pw - kw, 0, ow);             // first ow with iw >= 0
        int64_t hi = PL_CLAMP(w + pw - kw, lo, ow);        // first ow with iw >= W
        if (lo) memset(dst, 0, (size_t)lo * sizeof(float));
        memcpy(dst + lo, x_row + lo - pw + kw, (size_t)(hi - lo) * sizeof(float));
        if (hi < ow) memset(dst + hi, 0, (size_t)(ow - hi) * sizeof(float));
        return;
    }
    for (int64_t o = 0; o < ow; o++) {
        int64_t iw = o * sw - pw + kw;
        dst[o] = (iw >= 0 && iw < w) ? x_row[iw] : 0.0f;
    }
}

static inline void col2vol_row(float *x_row, const float *src, int64_t w, int64_t ow,
                               int64_t sw, int64_t pw, int64_t kw) {
    if (sw == 1) {
        int64_t lo = PL_CLAMP(pw - kw, 0, ow);
        int64_t hi = PL_CLAMP(w + pw - kw, lo, ow);
        float *xr = x_row + lo - pw + kw;
        for (int64_t o = lo; o < hi; o++) xr[o - lo] += src[o];
        return;
    }
    for (int64_t o = 0; o < ow; o++) {
        int64_t iw = o * sw - pw + kw;
        if (iw >= 0 && iw < w) x_row[iw] += src[o];
    }
}

typedef struct {
    float *col, *x;
    const conv3d_shape *s;
    nn_dims in, o;
    int64_t r0, r1;
} v2c_ctx;

// col rows [lo, hi) (row = (c*KD + kd)*KH*KW + kh*KW + kw) gathered from x.
static void vol2col_rows(void *vc, int64_t lo, int64_t hi) {
    const v2c_ctx *v = vc;
    const conv3d_shape *s = v->s;
    const int64_t ncols = (v->r1 - v->r0) * v->o.w, khw = s->k[1] * s->k[2], kdhw = s->k[0] * khw;
    for (int64_t row = lo; row < hi; row++) {
        const int64_t c = row / kdhw, kd = row % kdhw / khw, kh = row % khw / s->k[2], kw = row % s->k[2];
        float *dst = v->col + row * ncols;
        for (int64_t r = v->r0; r < v->r1; r++, dst += v->o.w) {
            int64_t od = r / v->o.h, oh = r % v->o.h;
            int64_t id = od * s->s[0] - s->p[0] + kd, ih = oh * s->s[1] - s->p[1] + kh;
            if (id < 0 || id >= v->in.d || ih < 0 || ih >= v->in.h) {
                memset(dst, 0, (size_t)v->o.w * sizeof(float));
                continue;
            }
            const float *xr = v->x + ((c * v->in.d + id) * v->in.h + ih) * v->in.w;
            vol2col_row(dst, xr, v->in.w, v->o.w, s->s[2], s->p[2], kw);
        }
    }
}

// col2vol for input channels [lo, hi): every col row of channel c adds into x[c] only, so
// channel ranges can run concurrently.
static void col2vol_channels(void *vc, int64_t lo, int64_t hi) {
    const v2c_ctx *v = vc;
    const conv3d_shape *s = v->s;
    const int64_t ncols = (v->r1 - v->r0) * v->o.w, kdhw = s->k[0] * s->k[1] * s->k[2];
    for (int64_t c = lo; c < hi; c++) {
        int64_t row = c * kdhw;
        for (int64_t kd = 0; kd < s->k[0]; kd++)
            for (int64_t kh = 0; kh < s->k[1]; kh++)
                for (int64_t kw = 0; kw < s->k[2]; kw++, row++) {
                    const float *src = v->col + row * ncols;
                    for (int64_t r = v->r0; r < v->r1; r++, src += v->o.w) {
                        int64_t od = r / v->o.h, oh = r % v->o.h;
                        int64_t id = od * s->s[0] - s->p[0] + kd, ih = oh * s->s[1] - s->p[1] + kh;
                        if (id < 0 || id >= v->in.d || ih < 0 || ih >= v->in.h) continue;
                        float *xr = v->x + ((c * v->in.d + id) * v->in.h + ih) * v->in.w;
                        col2vol_row(xr, src, v->in.w, v->o.w, s->s[2], s->p[2], kw);
                    }
                }
    }
}

// col (Kg, (r1-r0)*OW) from x (ICg, D, H, W) for output rows r = od*OH + oh in [r0, r1).
// mode 0: gather into col; mode 1: scatter-add col into x (col2vol).
static void vol2col_chunk(float *col, float *x, const conv3d_shape *s, nn_dims in, nn_dims o,
                          int64_t r0, int64_t r1, int mode) {
    v2c_ctx v = {col, x, s, in, o, r0, r1};
    const int64_t icg = s->ic / s->groups, kdhw = s->k[0] * s->k[1] * s->k[2];
    const int64_t work_per_row = (r1 - r0) * o.w;  // floats per col row
    if (mode == 0)  // >= ~64k floats per thread
        nn_parallel_for(icg * kdhw, PL_MAX((int64_t)1, 65536 / PL_MAX(work_per_row, (int64_t)1)), vol2col_rows, &v);
    else
        nn_parallel_for(icg, PL_MAX((int64_t)1, 65536 / PL_MAX(work_per_row * kdhw, (int64_t)1)), col2vol_channels, &v);
}

// Temporal path: out (forward, when out != NULL) or dw/db/din (backward, from dout).
// Per sample and tap t, with od in [od0, od1) reading id = od - pd + t:
//   Y[:, od0:od1] += W_t (OC, IC) x X[:, id0:id1]        (planes of H*W floats)
//   dW_t += dY[:, od0:od1] x X[:, id0:id1]^T;   dX[:, id0:id1] += W_t^T x dY[:, od0:od1]
static void conv3d_temporal(float *out, float *din, const float *dout, const float *in,
                            const conv3d *l, nn_dims in_dims, nn_dims o, float *ws, size_t ws_floats) {
    const conv3d_shape *s = &l->sh;
    const int64_t oc = s->oc, ic = s->ic, kd = s->k[0], hw = in_dims.h * in_dims.w;
    const int64_t isp = in_dims.d * hw, osp = o.d * hw;
    PL_ASSERT(ws_floats >= (size_t)(2 * oc * ic * kd));
    float *wt = ws, *dwt = ws + oc * ic * kd;  // (KD, OC, IC) each
    for (int64_t t = 0; t < kd; t++)
        for (int64_t a = 0; a < oc; a++)
            for (int64_t b = 0; b < ic; b++) wt[(t * oc + a) * ic + b] = l->w[(a * ic + b) * kd + t];
    if (!out) memset(dwt, 0, (size_t)(oc * ic * kd) * sizeof(float));
    for (int64_t n = 0; n < in_dims.n; n++) {
        const float *x = in + n * ic * isp;
        if (out) memset(out + n * oc * osp, 0, (size_t)(oc * osp) * sizeof(float));
        for (int64_t t = 0; t < kd; t++) {
            int64_t od0 = PL_MAX((int64_t)0, s->p[0] - t), od1 = PL_MIN(o.d, in_dims.d + s->p[0] - t);
            if (od1 <= od0) continue;
            const int64_t id0 = od0 - s->p[0] + t, ncol = (od1 - od0) * hw;
            const float *w_t = wt + t * oc * ic, *xs = x + id0 * hw;
            if (out) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)oc, (int)ncol, (int)ic, 1.0f,
                            w_t, (int)ic, xs, (int)isp, 1.0f, out + n * oc * osp + od0 * hw, (int)osp);
                continue;
            }
            const float *dy = dout + n * oc * osp + od0 * hw;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)oc, (int)ic, (int)ncol, 1.0f, dy,
                        (int)osp, xs, (int)isp, 1.0f, dwt + t * oc * ic, (int)ic);
            if (din)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ic, (int)ncol, (int)oc, 1.0f,
                            w_t, (int)ic, dy, (int)osp, 1.0f, din + n * ic * isp + id0 * hw, (int)isp);
        }
        if (out && l->b)
            for (int64_t c = 0; c < oc; c++) {
                float *y = out + (n * oc + c) * osp, b = l->b[c];
                for (int64_t i = 0; i < osp; i++) y[i] += b;
            }
        if (!out && l->db)
            for (int64_t c = 0; c < oc; c++) {
                const float *dy = dout + (n * oc + c) * osp;
                double acc = 0;
                for (int64_t i = 0; i < osp; i++) acc += dy[i];
                l->db[c] += (float)acc;
            }
    }
    if (!out)
        for (int64_t t = 0; t < kd; t++)
            for (int64_t a = 0; a < oc; a++)
                for (int64_t b = 0; b < ic; b++) l->dw[(a * ic + b) * kd + t] += dwt[(t * oc + a) * ic + b];
}

void conv3d_forward(float *out, const float *in, const conv3d *l, nn_dims in_dims,
                    float *ws, size_t ws_floats) {
    const conv3d_shape *s = &l->sh;
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, s, in_dims) == 0);
    const int64_t g = s->groups, icg = s->ic / g, ocg = s->oc / g;
    const int64_t kg = icg * s->k[0] * s->k[1] * s->k[2];
    const int64_t p = nn_dims_spatial(o), isp = nn_dims_spatial(in_dims);
    if (conv3d_is_temporal(s)) {
        conv3d_temporal(out, NULL, NULL, in, l, in_dims, o, ws, ws_floats);
        return;
    }
    const int pointwise = conv3d_is_pointwise(s);
    const int64_t rows = pointwise ? 0 : conv3d_chunk_rows(kg, o.w, o.d * o.h, ws_floats);
    PL_ASSERT(pointwise || (size_t)(kg * rows * o.w) <= ws_floats);
    for (int64_t n = 0; n < in_dims.n; n++) {
        for (int64_t gi = 0; gi < g; gi++) {
            const float *x = in + (n * s->ic + gi * icg) * isp;  // (ICg, D, H, W)
            const float *w = l->w + gi * ocg * kg;               // (OCg, Kg)
            float *y = out + (n * s->oc + gi * ocg) * p;         // (OCg, P)
            if (pointwise) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ocg, (int)p, (int)icg,
                            1.0f, w, (int)kg, x, (int)p, 0.0f, y, (int)p);
                continue;
            }
            for (int64_t r0 = 0; r0 < o.d * o.h; r0 += rows) {
                int64_t r1 = PL_MIN(r0 + rows, o.d * o.h), nc = (r1 - r0) * o.w;
                vol2col_chunk(ws, (float *)x, s, in_dims, o, r0, r1, 0);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)ocg, (int)nc, (int)kg,
                            1.0f, w, (int)kg, ws, (int)nc, 0.0f, y + r0 * o.w, (int)p);
            }
        }
        if (l->b)
            for (int64_t c = 0; c < s->oc; c++) {
                float *y = out + (n * s->oc + c) * p, b = l->b[c];
                for (int64_t i = 0; i < p; i++) y[i] += b;
            }
    }
}

void conv3d_backward(float *din, const float *dout, const float *in, const conv3d *l,
                     nn_dims in_dims, float *ws, size_t ws_floats) {
    const conv3d_shape *s = &l->sh;
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, s, in_dims) == 0);
    const int64_t g = s->groups, icg = s->ic / g, ocg = s->oc / g;
    const int64_t kg = icg * s->k[0] * s->k[1] * s->k[2];
    const int64_t p = nn_dims_spatial(o), isp = nn_dims_spatial(in_dims);
    if (conv3d_is_temporal(s)) {
        conv3d_temporal(NULL, din, dout, in, l, in_dims, o, ws, ws_floats);
        return;
    }
    const int pointwise = conv3d_is_pointwise(s);
    const int64_t rows = pointwise ? 0 : conv3d_chunk_rows(kg, o.w, o.d * o.h, ws_floats);
    PL_ASSERT(pointwise || (size_t)(kg * rows * o.w) <= ws_floats);
    for (int64_t n = 0; n < in_dims.n; n++) {
        if (l->db)
            for (int64_t c = 0; c < s->oc; c++) {
                const float *dy = dout + (n * s->oc + c) * p;
                double acc = 0;
                for (int64_t i = 0; i < p; i++) acc += dy[i];
                l->db[c] += (float)acc;
            }
        for (int64_t gi = 0; gi < g; gi++) {
            const float *x = in + (n * s->ic + gi * icg) * isp;
            float *dx = din ? din + (n * s->ic + gi * icg) * isp : NULL;
            const float *w = l->w + gi * ocg * kg;
            float *dw = l->dw + gi * ocg * kg;
            const float *dy = dout + (n * s->oc + gi * ocg) * p;
            if (pointwise) {
                // dW (OCg, ICg) += dY (OCg, P) x X^T (P, ICg); dX (ICg, P) += W^T x dY
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ocg, (int)icg, (int)p,
                            1.0f, dy, (int)p, x, (int)p, 1.0f, dw, (int)kg);
                if (dx)
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)icg, (int)p, (int)ocg,
                                1.0f, w, (int)kg, dy, (int)p, 1.0f, dx, (int)p);
                continue;
            }
            for (int64_t r0 = 0; r0 < o.d * o.h; r0 += rows) {
                int64_t r1 = PL_MIN(r0 + rows, o.d * o.h), nc = (r1 - r0) * o.w;
                vol2col_chunk(ws, (float *)x, s, in_dims, o, r0, r1, 0);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)ocg, (int)kg, (int)nc,
                            1.0f, dy + r0 * o.w, (int)p, ws, (int)nc, 1.0f, dw, (int)kg);
                if (!dx) continue;
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kg, (int)nc, (int)ocg,
                            1.0f, w, (int)kg, dy + r0 * o.w, (int)p, 0.0f, ws, (int)nc);
                vol2col_chunk(ws, dx, s, in_dims, o, r0, r1, 1);
            }
        }
    }
}

// Runs BODY for every (output oi, input ii, weight wi) index triple that meets in the sum.
#define CONV3D_NAIVE_LOOP(BODY)                                                                   \
    for (int64_t n = 0; n < in_dims.n; n++)                                                       \
        for (int64_t oc = 0; oc < s->oc; oc++) {                                                  \
            int64_t gi = oc / ocg;                                                                \
            for (int64_t od = 0; od < o.d; od++)                                                  \
                for (int64_t oh = 0; oh < o.h; oh++)                                              \
                    for (int64_t ow = 0; ow < o.w; ow++) {                                        \
                        int64_t oi = (((n * s->oc + oc) * o.d + od) * o.h + oh) * o.w + ow;       \
                        for (int64_t c = 0; c < icg; c++)                                         \
                            for (int64_t kd = 0; kd < s->k[0]; kd++) {                            \
                                int64_t id = od * s->s[0] - s->p[0] + kd;                         \
                                if (id < 0 || id >= in_dims.d) continue;                          \
                                for (int64_t kh = 0; kh < s->k[1]; kh++) {                        \
                                    int64_t ih = oh * s->s[1] - s->p[1] + kh;                     \
                                    if (ih < 0 || ih >= in_dims.h) continue;                      \
                                    for (int64_t kw = 0; kw < s->k[2]; kw++) {                    \
                                        int64_t iw = ow * s->s[2] - s->p[2] + kw;                 \
                                        if (iw < 0 || iw >= in_dims.w) continue;                  \
                                        int64_t ic = gi * icg + c;                                \
                                        int64_t ii = (((n * s->ic + ic) * in_dims.d + id) *       \
                                                      in_dims.h + ih) * in_dims.w + iw;           \
                                        int64_t wi = (((oc * icg + c) * s->k[0] + kd) * s->k[1] + \
                                                      kh) * s->k[2] + kw;                         \
                                        BODY;                                                     \
                                    }                                                             \
                                }                                                                 \
                            }                                                                     \
                    }                                                                             \
        }

void conv3d_forward_naive(float *out, const float *in, const conv3d *l, nn_dims in_dims) {
    const conv3d_shape *s = &l->sh;
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, s, in_dims) == 0);
    const int64_t icg = s->ic / s->groups, ocg = s->oc / s->groups;
    int64_t total = nn_dims_count(o);
    double *acc = pl_calloc((size_t)total, sizeof(double), "conv3d naive accumulator");
    PL_ASSERT(acc);
    CONV3D_NAIVE_LOOP(acc[oi] += (double)in[ii] * (double)l->w[wi])
    int64_t p = nn_dims_spatial(o);
    for (int64_t i = 0; i < total; i++)
        out[i] = (float)(acc[i] + (l->b ? (double)l->b[(i / p) % s->oc] : 0.0));
    free(acc);
}

void conv3d_backward_naive(float *din, const float *dout, const float *in, const conv3d *l,
                           nn_dims in_dims) {
    const conv3d_shape *s = &l->sh;
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, s, in_dims) == 0);
    const int64_t icg = s->ic / s->groups, ocg = s->oc / s->groups;
    int64_t nin = nn_dims_count(in_dims), nw = conv3d_weight_count(s);
    double *dx = pl_calloc((size_t)nin, sizeof(double), "conv3d naive dx");
    double *dw = pl_calloc((size_t)nw, sizeof(double), "conv3d naive dw");
    PL_ASSERT(dx && dw);
    CONV3D_NAIVE_LOOP({
        dx[ii] += (double)dout[oi] * (double)l->w[wi];
        dw[wi] += (double)dout[oi] * (double)in[ii];
    })
    if (din)
        for (int64_t i = 0; i < nin; i++) din[i] += (float)dx[i];
    for (int64_t i = 0; i < nw; i++) l->dw[i] += (float)dw[i];
    if (l->db) {
        int64_t p = nn_dims_spatial(o);
        for (int64_t c = 0; c < s->oc; c++) {
            double acc = 0;
            for (int64_t n = 0; n < in_dims.n; n++)
                for (int64_t i = 0; i < p; i++) acc += dout[(n * s->oc + c) * p + i];
            l->db[c] += (float)acc;
        }
    }
    free(dx);
    free(dw);
}
