// conv3d: vol2col + sgemm in chunks of output rows, a direct GEMM for 1x1x1 stride 1, and
// the naive reference. GEMM shapes per sample and group g (Kg = IC/groups * KD*KH*KW,
// P = OD*OH*OW): forward  Y_g (OCg, P) = W_g (OCg, Kg) x col (Kg, P);
// backward weight dW_g += dY_g x col^T;  backward data col = W_g^T x dY_g then col2vol.
#include "nn/conv3d.h"

#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv3d_dnnl.h"
#include "nn/parallel.h"
#include "nn/pl.h"
#include "nn/transpose.h"

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
    int64_t row0;  // vol2col_rows: rows lo..hi are row0 + lo .. row0 + hi
} v2c_ctx;

// col rows [lo, hi) (row = (c*KD + kd)*KH*KW + kh*KW + kw) gathered from x.
static void vol2col_rows(void *vc, int64_t lo, int64_t hi) {
    const v2c_ctx *v = vc;
    const conv3d_shape *s = v->s;
    const int64_t ncols = (v->r1 - v->r0) * v->o.w, khw = s->k[1] * s->k[2], kdhw = s->k[0] * khw;
    for (int64_t row = v->row0 + lo; row < v->row0 + hi; row++) {
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
// One sgemm (row-major C (m, n) = alpha op(A) op(B) + beta C) split by columns of C over the
// pool, each block one single-threaded sgemm: the same arithmetic per element as a single call.
// Used inside nn_blas_single (conv3d_forward_gemm / conv3d_backward_gemm).
typedef struct {
    CBLAS_TRANSPOSE ta, tb;
    int m, k, lda, ldb, ldc;
    float beta;
    const float *a, *b;
    float *c;
} gemm_ctx;

static void gemm_columns(void *vc, int64_t lo, int64_t hi) {
    const gemm_ctx *g = vc;
    const float *b = g->tb == CblasNoTrans ? g->b + lo : g->b + lo * g->ldb;
    cblas_sgemm(CblasRowMajor, g->ta, g->tb, g->m, (int)(hi - lo), g->k, 1.0f, g->a, g->lda, b, g->ldb, g->beta,
                g->c + lo, g->ldc);
}

static void conv_sgemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, const float *a,
                       int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    gemm_ctx g = {ta, tb, (int)m, (int)k, (int)lda, (int)ldb, (int)ldc, beta, a, b, c};
    // >= ~2 MFLOP and >= 32 columns per thread: below that one thread is as fast
    const int64_t min_cols = PL_MAX((int64_t)32, (int64_t)(1 << 20) / PL_MAX(m * k, (int64_t)1));
    nn_parallel_for(n, min_cols, gemm_columns, &g);
}

// Depth taps of the kernel: with one input channel per group the col rows are ordered by tap
// (row = (kd*KH + kh)*KW + kw), and for a chunk of output rows inside one output plane od only
// the taps kd with 0 <= od*SD - PD + kd < D read the volume; the others' rows are all padding
// zeros. The GEMMs then run on the live rows [t0*KH*KW, t1*KH*KW) only. ResNet3D-18's stem
// (7x7x7, depth padding 3) on VDT's 3-slice volumes reads 3 of 7 taps per plane: the GEMMs do
// 3/7 of the full work. (With more input channels a channel's live rows are not contiguous.)
static int conv3d_splits_depth(const conv3d_shape *s) {
    return s->ic / s->groups == 1 && s->k[0] > 1 && s->p[0] > 0;
}

// Output rows of the chunk starting at r0: at most `rows`, inside one plane when splitting.
static int64_t conv3d_chunk_end(const conv3d_shape *s, nn_dims o, int64_t r0, int64_t rows) {
    int64_t r1 = PL_MIN(r0 + rows, o.d * o.h);
    return conv3d_splits_depth(s) ? PL_MIN(r1, (r0 / o.h + 1) * o.h) : r1;
}

// The col rows [*k0, *k0 + *kl) the GEMMs of output rows [r0, r1) need: all Kg rows, or when
// splitting those of the live depth taps [t0, t1) (kl 0: every tap reads padding).
static void conv3d_live_rows(const conv3d_shape *s, nn_dims in, nn_dims o, int64_t r0, int64_t r1, int64_t *k0,
                             int64_t *kl) {
    const int64_t khw = s->k[1] * s->k[2];
    int64_t t0 = 0, t1 = s->k[0];
    if (conv3d_splits_depth(s)) {
        t0 = PL_MAX((int64_t)0, s->p[0] - (r1 - 1) / o.h * s->s[0]);
        t1 = PL_MAX(t0, PL_MIN(s->k[0], s->p[0] - r0 / o.h * s->s[0] + in.d));
    }
    const int64_t icg = s->ic / s->groups;
    *k0 = t0 * khw * icg;
    *kl = (t1 - t0) * khw * icg;
}

// mode 0: gathers col rows [k0, k0 + kl) (the others are left as they are); mode 1: scatter-adds
// every row of col into x (rows past the live ones map to padding and are skipped).
static void vol2col_chunk(float *col, float *x, const conv3d_shape *s, nn_dims in, nn_dims o,
                          int64_t r0, int64_t r1, int mode, int64_t k0, int64_t kl) {
    v2c_ctx v = {col, x, s, in, o, r0, r1, k0};
    const int64_t icg = s->ic / s->groups, kdhw = s->k[0] * s->k[1] * s->k[2];
    const int64_t work_per_row = (r1 - r0) * o.w;  // floats per col row
    if (mode == 0)  // >= ~64k floats per thread
        nn_parallel_for(kl, PL_MAX((int64_t)1, 65536 / PL_MAX(work_per_row, (int64_t)1)), vol2col_rows, &v);
    else
        nn_parallel_for(icg, PL_MAX((int64_t)1, 65536 / PL_MAX(work_per_row * kdhw, (int64_t)1)), col2vol_channels, &v);
}

// Sum of n floats in double, in order (the bias gradient of one channel of one sample).
static double plane_sum(const float *x, int64_t n) {
    double acc = 0;
    for (int64_t i = 0; i < n; i++) acc += x[i];
    return acc;
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
                conv_sgemm(CblasNoTrans, CblasNoTrans, oc, ncol, ic, w_t, ic, xs, isp, 1.0f, out + n * oc * osp + od0 * hw,
                           osp);
                continue;
            }
            const float *dy = dout + n * oc * osp + od0 * hw;
            conv_sgemm(CblasNoTrans, CblasTrans, oc, ic, ncol, dy, osp, xs, isp, 1.0f, dwt + t * oc * ic, ic);
            if (din) conv_sgemm(CblasTrans, CblasNoTrans, ic, ncol, oc, w_t, ic, dy, osp, 1.0f, din + n * ic * isp + id0 * hw, isp);
        }
        if (out && l->b)
            for (int64_t c = 0; c < oc; c++) {
                float *y = out + (n * oc + c) * osp, b = l->b[c];
                for (int64_t i = 0; i < osp; i++) y[i] += b;
            }
        if (!out && l->db)
            for (int64_t c = 0; c < oc; c++) l->db[c] += (float)plane_sum(dout + (n * oc + c) * osp, osp);
    }
    if (!out)
        for (int64_t t = 0; t < kd; t++)
            for (int64_t a = 0; a < oc; a++)
                for (int64_t b = 0; b < ic; b++) l->dw[(a * ic + b) * kd + t] += dwt[(t * oc + a) * ic + b];
}

static void forward_gemm(float *out, const float *in, const conv3d *l, nn_dims in_dims, float *ws,
                         size_t ws_floats) {
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
                conv_sgemm(CblasNoTrans, CblasNoTrans, ocg, p, icg, w, kg, x, p, 0.0f, y, p);
                continue;
            }
            for (int64_t r0 = 0, r1; r0 < o.d * o.h; r0 = r1) {
                r1 = conv3d_chunk_end(s, o, r0, rows);
                const int64_t nc = (r1 - r0) * o.w;
                int64_t k0, kl;
                conv3d_live_rows(s, in_dims, o, r0, r1, &k0, &kl);
                if (kl == 0) {  // every tap in the padding
                    for (int64_t c = 0; c < ocg; c++) memset(y + c * p + r0 * o.w, 0, (size_t)nc * sizeof(float));
                    continue;
                }
                vol2col_chunk(ws, (float *)x, s, in_dims, o, r0, r1, 0, k0, kl);
                conv_sgemm(CblasNoTrans, CblasNoTrans, ocg, nc, kl, w + k0, kg, ws + k0 * nc, nc, 0.0f, y + r0 * o.w, p);
            }
        }
        if (l->b)
            for (int64_t c = 0; c < s->oc; c++) {
                float *y = out + (n * s->oc + c) * p, b = l->b[c];
                for (int64_t i = 0; i < p; i++) y[i] += b;
            }
    }
}

static void backward_gemm(float *din, const float *dout, const float *in, const conv3d *l, nn_dims in_dims,
                          float *ws, size_t ws_floats) {
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
            for (int64_t c = 0; c < s->oc; c++) l->db[c] += (float)plane_sum(dout + (n * s->oc + c) * p, p);
        for (int64_t gi = 0; gi < g; gi++) {
            const float *x = in + (n * s->ic + gi * icg) * isp;
            float *dx = din ? din + (n * s->ic + gi * icg) * isp : NULL;
            const float *w = l->w + gi * ocg * kg;
            float *dw = l->dw + gi * ocg * kg;
            const float *dy = dout + (n * s->oc + gi * ocg) * p;
            if (pointwise) {
                // dW (OCg, ICg) += dY (OCg, P) x X^T (P, ICg); dX (ICg, P) += W^T x dY
                conv_sgemm(CblasNoTrans, CblasTrans, ocg, icg, p, dy, p, x, p, 1.0f, dw, kg);
                if (dx) conv_sgemm(CblasTrans, CblasNoTrans, icg, p, ocg, w, kg, dy, p, 1.0f, dx, p);
                continue;
            }
            for (int64_t r0 = 0, r1; r0 < o.d * o.h; r0 = r1) {
                r1 = conv3d_chunk_end(s, o, r0, rows);
                const int64_t nc = (r1 - r0) * o.w;
                int64_t k0, kl;
                conv3d_live_rows(s, in_dims, o, r0, r1, &k0, &kl);
                if (kl == 0) continue;  // every tap in the padding: no gradient flows
                vol2col_chunk(ws, (float *)x, s, in_dims, o, r0, r1, 0, k0, kl);
                conv_sgemm(CblasNoTrans, CblasTrans, ocg, kl, nc, dy + r0 * o.w, p, ws + k0 * nc, nc, 1.0f, dw + k0, kg);
                if (!dx) continue;
                // dead rows of ws keep stale values: col2vol skips their (padding) positions
                conv_sgemm(CblasTrans, CblasNoTrans, kl, nc, ocg, w + k0, kg, dy + r0 * o.w, p, 0.0f, ws + k0 * nc, nc);
                vol2col_chunk(ws, dx, s, in_dims, o, r0, r1, 1, 0, 0);
            }
        }
    }
}

// The gemm engine splits its GEMMs over the pool itself (conv_sgemm), OpenBLAS held at one thread.
void conv3d_forward_gemm(float *out, const float *in, const conv3d *l, nn_dims in_dims, float *ws,
                         size_t ws_floats) {
    nn_blas_hold h = nn_blas_single();
    forward_gemm(out, in, l, in_dims, ws, ws_floats);
    nn_blas_restore(h);
}

void conv3d_backward_gemm(float *din, const float *dout, const float *in, const conv3d *l, nn_dims in_dims,
                          float *ws, size_t ws_floats) {
    nn_blas_hold h = nn_blas_single();
    backward_gemm(din, dout, in, l, in_dims, ws, ws_floats);
    nn_blas_restore(h);
}

// ---- backward-weights by kernel taps ----
// dW[:, :, t] = sum over the outputs o whose input for tap t lies inside the volume of
// dY[:, o] x[:, o*s - p + t]: per tap one GEMM (OC, IC) = A_t (OC, K_t) x B_t^T (K_t, IC), A_t
// and B_t gathered from dY and X over the tap's box of live outputs, K_t = N * box size. The
// padding taps never enter a GEMM (vol2col+sgemm multiplies them as zeros), and the GEMM's K
// runs over the whole batch. The GEMMs write C (OC, T, IC) (row oc holds the T taps' rows), which
// is then transposed per oc into dW (OC, IC, T).
//
// Used by the dnnl engine for layers whose weights are large and outputs small (see
// conv3d_taps_preferred): oneDNN 2.6's backward-weights for ResNet3D-18's 512->512 3x3x3 layer on
// (8,512,3,4,4) runs at about half its forward's rate (61 ms against 35 at 1 thread, AMD EPYC
// Zen 4; 33 at 2 threads), where the taps take 41 / ~22 ms: the GEMMs do 54 % of the padded
// layer's multiply-adds (2.94 of 5.44 GFLOP) at sgemm's rate. With 256x256 weights, or at 14x14,
// oneDNN was as fast or faster.
typedef struct {
    int64_t lo[3], hi[3];  // box of live outputs per axis (od, oh, ow)
    int64_t k[3];          // the tap
    int64_t K;             // N * box volume
} tap_box;

// Outputs o in [0, out) with 0 <= o*s - p + k < in.
static void tap_axis(int64_t k, int64_t s, int64_t p, int64_t in, int64_t out, int64_t *lo, int64_t *hi) {
    int64_t l = 0, h = out;
    while (l < out && l * s - p + k < 0) l++;
    while (h > l && (h - 1) * s - p + k >= in) h--;
    *lo = l;
    *hi = h;
}

static tap_box conv3d_tap(const conv3d_shape *s, nn_dims in, nn_dims o, int64_t t) {
    tap_box b;
    const int64_t khw = s->k[1] * s->k[2];
    b.k[0] = t / khw;
    b.k[1] = t % khw / s->k[2];
    b.k[2] = t % s->k[2];
    const int64_t isz[3] = {in.d, in.h, in.w}, osz[3] = {o.d, o.h, o.w};
    b.K = in.n;
    for (int a = 0; a < 3; a++) {
        tap_axis(b.k[a], s->s[a], s->p[a], isz[a], osz[a], &b.lo[a], &b.hi[a]);
        b.K *= b.hi[a] - b.lo[a];
    }
    return b;
}

static int64_t conv3d_tap_count(const conv3d_shape *s) { return s->k[0] * s->k[1] * s->k[2]; }

int conv3d_taps_preferred(const conv3d_shape *s, nn_dims in) {
    nn_dims o = {0, 0, 0, 0, 0};
    if (conv3d_out_dims(&o, s, in)) return 0;
    return s->groups == 1 && s->k[1] > 1 && s->k[2] > 1 && conv3d_weight_count(s) >= 3000000 &&
           nn_dims_spatial(o) <= 256;
}

size_t conv3d_taps_scratch_floats(const conv3d_shape *s, nn_dims in) {
    nn_dims o = {0, 0, 0, 0, 0};
    if (conv3d_out_dims(&o, s, in)) return 0;
    int64_t kmax = 0;
    for (int64_t t = 0; t < conv3d_tap_count(s); t++) kmax = PL_MAX(kmax, conv3d_tap(s, in, o, t).K);
    return (size_t)(s->oc * s->ic * conv3d_tap_count(s) + (s->oc + s->ic) * kmax);
}

typedef struct {
    const conv3d_shape *s;
    nn_dims in, o;
    tap_box b;
    const float *src;  // dY (gather A) or X (gather B)
    float *dst;        // A (C_out, K) or B (C_in, K)
    int input;         // 1: B from X (shifted by the tap), 0: A from dY
    // transpose-add
    const float *c;
    float *dw, *db;
    const float *dy;
    int write;  // dw, db overwritten rather than added into
} taps_ctx;

// Rows [lo, hi) (channels) of A or B: each row is the box of one channel over every sample.
static void taps_gather(void *vc, int64_t lo, int64_t hi) {
    const taps_ctx *v = vc;
    const conv3d_shape *s = v->s;
    const tap_box *b = &v->b;
    const int64_t ch = v->input ? s->ic : s->oc;
    const nn_dims g = v->input ? v->in : v->o;  // the gathered tensor's dims
    const int64_t bw = b->hi[2] - b->lo[2];
    const int64_t sw = v->input ? s->s[2] : 1;
    // whole rows of a unit-stride source: the box's rows are one contiguous run per plane
    const int64_t sh = v->input ? s->s[1] : 1, bh = b->hi[1] - b->lo[1];
    const int planes = sw == 1 && sh == 1 && bw == g.w;
    for (int64_t c = lo; c < hi; c++) {
        float *dst = v->dst + c * b->K;
        for (int64_t n = 0; n < v->in.n; n++)
            for (int64_t d = b->lo[0]; d < b->hi[0]; d++) {
                int64_t id = d, ih = b->lo[1], iw = b->lo[2];
                if (v->input) {
                    id = d * s->s[0] - s->p[0] + b->k[0];
                    ih = b->lo[1] * s->s[1] - s->p[1] + b->k[1];
                    iw = b->lo[2] * s->s[2] - s->p[2] + b->k[2];
                }
                const float *row = v->src + (((n * ch + c) * g.d + id) * g.h + ih) * g.w + iw;
                if (planes) {
                    memcpy(dst, row, (size_t)(bh * bw) * sizeof(float));
                    dst += bh * bw;
                    continue;
                }
                for (int64_t h = 0; h < bh; h++, dst += bw, row += sh * g.w)
                    for (int64_t w = 0; w < bw; w++) dst[w] = row[w * sw];
            }
    }
}

// dW rows [lo, hi): dW[oc, ic, t] += C[oc, t, ic]; db[oc] += sum of dY[:, oc] (= with v->write).
static void taps_scatter(void *vc, int64_t lo, int64_t hi) {
    const taps_ctx *v = vc;
    const int64_t T = conv3d_tap_count(v->s), IC = v->s->ic, P = nn_dims_spatial(v->o);
    for (int64_t oc = lo; oc < hi; oc++) {
        float *dw = v->dw + oc * IC * T;
        const float *c = v->c + oc * T * IC;
        nn_transpose(c, IC, dw, T, T, IC, !v->write, v->write);  // written: streamed, nothing reads it soon
        if (v->db) {
            double acc = 0;
            for (int64_t n = 0; n < v->in.n; n++) acc += plane_sum(v->dy + (n * v->s->oc + oc) * P, P);
            v->db[oc] = (v->write ? 0.0f : v->db[oc]) + (float)acc;
        }
    }
    if (v->write) nn_transpose_fence();
}

int conv3d_backward_weights_taps(const float *dout, const float *in, const conv3d *l, nn_dims in_dims,
                                 float *scratch, size_t scratch_floats, int write) {
    const conv3d_shape *s = &l->sh;
    nn_dims o = {0, 0, 0, 0, 0};
    int rc = conv3d_out_dims(&o, s, in_dims);
    if (rc) return rc;
    if (s->groups != 1) return pl_fail(PL_EINVAL, "conv3d taps: groups %lld (only 1)", (long long)s->groups);
    const size_t need = conv3d_taps_scratch_floats(s, in_dims);
    if (scratch_floats < need)
        return pl_fail(PL_EINVAL, "conv3d taps: scratch of %zu floats, %zu needed", scratch_floats, need);
    const int64_t T = conv3d_tap_count(s), IC = s->ic, OC = s->oc;
    float *c = scratch, *a = scratch + OC * T * IC, *bm = NULL;
    taps_ctx v = {.s = s, .in = in_dims, .o = o};
    for (int64_t t = 0; t < T; t++) {
        v.b = conv3d_tap(s, in_dims, o, t);
        if (v.b.K == 0) {  // every output reads padding on this tap
            for (int64_t oc = 0; oc < OC; oc++) memset(c + (oc * T + t) * IC, 0, (size_t)IC * sizeof(float));
            continue;
        }
        bm = a + OC * v.b.K;
        const int64_t per = PL_MAX((int64_t)1, 16384 / PL_MAX(v.b.K, (int64_t)1));
        v.src = dout, v.dst = a, v.input = 0;
        nn_parallel_for(OC, per, taps_gather, &v);
        v.src = in, v.dst = bm, v.input = 1;
        nn_parallel_for(IC, per, taps_gather, &v);
        if (conv3d_dnnl_available()) {
            rc = nn_dnnl_sgemm(0, 1, OC, IC, v.b.K, a, v.b.K, bm, v.b.K, 0.0f, c + t * IC, T * IC);
            if (rc) return rc;  // nothing accumulated yet
        } else {  // a build without oneDNN: OpenBLAS, split over the pool
            nn_blas_hold h = nn_blas_single();
            conv_sgemm(CblasNoTrans, CblasTrans, OC, IC, v.b.K, a, v.b.K, bm, v.b.K, 0.0f, c + t * IC, T * IC);
            nn_blas_restore(h);
        }
    }
    v.c = c, v.dw = l->dw, v.db = l->db, v.dy = dout, v.write = write;
    nn_parallel_for(OC, 8, taps_scatter, &v);
    return 0;
}

// The taps' scratch (C, A, B), grown on demand and kept (one call at a time, as oneDNN's cache);
// freed by conv3d_engine_reset.
static struct {
    float *p;
    size_t n;
} g_taps;

static float *conv3d_taps_scratch(size_t floats) {
    if (g_taps.n < floats) {
        free(g_taps.p);
        g_taps.n = 0;
        g_taps.p = pl_malloc(floats * sizeof(float), "conv3d taps scratch");
        if (!g_taps.p) return NULL;
        g_taps.n = floats;
    }
    return g_taps.p;
}

// ---- engine choice ----
// The decision table: one record per (shape, input dims, threads) seen, in first-use order.
static struct {
    pthread_mutex_t lock;
    conv3d_engine mode;
    conv3d_engine_record *rec;
    int n, cap;
} g_eng = {.lock = PTHREAD_MUTEX_INITIALIZER, .mode = CONV3D_ENGINE_GEMM};

void conv3d_set_engine(conv3d_engine e) {
    pthread_mutex_lock(&g_eng.lock);
    g_eng.mode = e;
    pthread_mutex_unlock(&g_eng.lock);
}

conv3d_engine conv3d_get_engine(void) {
    pthread_mutex_lock(&g_eng.lock);
    conv3d_engine e = g_eng.mode;
    pthread_mutex_unlock(&g_eng.lock);
    return e;
}

const char *conv3d_engine_name(conv3d_engine e) {
    return e == CONV3D_ENGINE_AUTO ? "auto" : e == CONV3D_ENGINE_DNNL ? "dnnl" : "gemm";
}

int conv3d_engine_parse(const char *str, conv3d_engine *e) {
    for (int i = 0; i < 3; i++)
        if (str && !strcmp(str, conv3d_engine_name((conv3d_engine)i))) {
            *e = (conv3d_engine)i;
            return 0;
        }
    return pl_fail(PL_EINVAL, "conv engine \"%s\" (must be \"auto\", \"gemm\" or \"dnnl\")", str ? str : "(null)");
}

static int conv3d_same_shape(const conv3d_shape *a, const conv3d_shape *b) {
    if (a->ic != b->ic || a->oc != b->oc || a->groups != b->groups || !a->bias != !b->bias) return 0;
    for (int i = 0; i < 3; i++)
        if (a->k[i] != b->k[i] || a->s[i] != b->s[i] || a->p[i] != b->p[i]) return 0;
    return 1;
}

static int conv3d_same_dims(nn_dims a, nn_dims b) {
    return a.n == b.n && a.c == b.c && a.d == b.d && a.h == b.h && a.w == b.w;
}

// Index of the record for this key, or -1. Caller holds the lock.
static int conv3d_table_find(const conv3d_shape *s, nn_dims in, int threads) {
    for (int i = 0; i < g_eng.n; i++)
        if (g_eng.rec[i].threads == threads && conv3d_same_dims(g_eng.rec[i].in, in) &&
            conv3d_same_shape(&g_eng.rec[i].sh, s))
            return i;
    return -1;
}

// Sets the record's engine (adding it): 0, or PL_ENOMEM when the table could not grow (the key
// stays undecided: a layer's own decision is then made again at its next use).
static int conv3d_table_set(const conv3d_shape *s, nn_dims in, int threads, conv3d_engine e) {
    int i = conv3d_table_find(s, in, threads);
    if (i < 0) {
        if (g_eng.n == g_eng.cap) {
            int cap = g_eng.cap ? 2 * g_eng.cap : 32;
            conv3d_engine_record *p = pl_realloc(g_eng.rec, (size_t)cap * sizeof(*p), "conv3d engine table");
            if (!p) return PL_ENOMEM;
            g_eng.rec = p;
            g_eng.cap = cap;
        }
        i = g_eng.n++;
        memset(&g_eng.rec[i], 0, sizeof(g_eng.rec[i]));
        g_eng.rec[i].sh = *s;
        g_eng.rec[i].in = in;
        g_eng.rec[i].threads = threads;
    }
    g_eng.rec[i].engine = e;
    return 0;
}

int conv3d_engine_table_export(conv3d_engine_record *rec, int max) {
    pthread_mutex_lock(&g_eng.lock);
    int n = g_eng.n;
    if (rec && max > 0) memcpy(rec, g_eng.rec, (size_t)PL_MIN(n, max) * sizeof(*rec));
    pthread_mutex_unlock(&g_eng.lock);
    return n;
}

int conv3d_engine_table_import(const conv3d_engine_record *rec, int n) {
    pthread_mutex_lock(&g_eng.lock);
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (rec[i].engine != CONV3D_ENGINE_GEMM && rec[i].engine != CONV3D_ENGINE_DNNL) {
            rc = pl_fail(PL_EINVAL, "conv3d engine table: record %d has engine %d", i, (int)rec[i].engine);
            break;
        }
        rc = conv3d_table_set(&rec[i].sh, rec[i].in, rec[i].threads,
                              conv3d_dnnl_available() ? (conv3d_engine)rec[i].engine : CONV3D_ENGINE_GEMM);
    }
    pthread_mutex_unlock(&g_eng.lock);
    return rc;
}

void conv3d_engine_reset(void) {
    pthread_mutex_lock(&g_eng.lock);
    free(g_eng.rec);
    g_eng.rec = NULL;
    g_eng.n = g_eng.cap = 0;
    pthread_mutex_unlock(&g_eng.lock);
    conv3d_dnnl_release();
    free(g_taps.p);
    g_taps.p = NULL;
    g_taps.n = 0;
}

static void conv3d_key_text(char *buf, size_t len, const conv3d_shape *s, nn_dims in, int threads) {
    snprintf(buf, len, "ic:%lld oc:%lld k:%lldx%lldx%lld s:%lldx%lldx%lld p:%lldx%lldx%lld g:%lld in:%lldx%lldx%lldx%lldx%lld threads:%d",
             (long long)s->ic, (long long)s->oc, (long long)s->k[0], (long long)s->k[1], (long long)s->k[2],
             (long long)s->s[0], (long long)s->s[1], (long long)s->s[2], (long long)s->p[0], (long long)s->p[1],
             (long long)s->p[2], (long long)s->groups, (long long)in.n, (long long)in.c, (long long)in.d,
             (long long)in.h, (long long)in.w, threads);
}

// Times forward+backward of both engines on scratch buffers (input: the caller's; dout: the
// forward's own output; din, dw, db: scratch), best of 2 after a oneDNN warm-up that also
// creates its primitives. Returns DNNL when it is >= 5 % faster; GEMM when oneDNN fails.
static conv3d_engine conv3d_measure(const float *in, const conv3d *l, nn_dims in_dims, float *ws,
                                    size_t ws_floats, const char *key) {
    nn_dims o;
    PL_ASSERT(conv3d_out_dims(&o, &l->sh, in_dims) == 0);
    const int64_t nin = nn_dims_count(in_dims), nout = nn_dims_count(o), nw = conv3d_weight_count(&l->sh);
    float *y = pl_malloc((size_t)nout * sizeof(float), "conv3d auto: output scratch");
    float *dx = pl_calloc((size_t)nin, sizeof(float), "conv3d auto: input-gradient scratch");
    float *dw = pl_calloc((size_t)(nw + l->sh.oc), sizeof(float), "conv3d auto: weight-gradient scratch");
    conv3d_engine e = CONV3D_ENGINE_GEMM;
    if (!y || !dx || !dw) {
        LOG_WARN("conv3d: engine auto %s -> gemm (no memory to measure)", key);
        goto done;
    }
    conv3d t = *l;
    t.dw = dw;
    t.db = l->db ? dw + nw : NULL;
    pl_quiet_begin();  // a failure is an answer here, logged below as one line
    int bad = conv3d_dnnl_forward(y, in, &t, in_dims) || conv3d_dnnl_backward(dx, y, in, &t, in_dims, 0);
    pl_quiet_end();
    if (bad) {
        LOG_WARN("conv3d: engine auto %s -> gemm (oneDNN: %s)", key, pl_last_error());
        goto done;
    }
    double tg = 1e30, td = 1e30;
    for (int round = 0; round < 2; round++) {
        double t0 = pl_time();
        conv3d_forward_gemm(y, in, &t, in_dims, ws, ws_floats);
        conv3d_backward_gemm(dx, y, in, &t, in_dims, ws, ws_floats);
        double t1 = pl_time();
        pl_quiet_begin();
        bad = conv3d_dnnl_forward(y, in, &t, in_dims) || conv3d_dnnl_backward(dx, y, in, &t, in_dims, 0);
        pl_quiet_end();
        double t2 = pl_time();
        if (bad) {
            LOG_WARN("conv3d: engine auto %s -> gemm (oneDNN: %s)", key, pl_last_error());
            goto done;
        }
        tg = PL_MIN(tg, t1 - t0);
        td = PL_MIN(td, t2 - t1);
    }
    e = td * 1.05 < tg ? CONV3D_ENGINE_DNNL : CONV3D_ENGINE_GEMM;
    LOG_INFO("conv3d: engine auto %s -> %s (fwd+bwd gemm %.3f ms, dnnl %.3f ms)", key, conv3d_engine_name(e),
             tg * 1e3, td * 1e3);
done:
    free(y);
    free(dx);
    free(dw);
    return e;
}

// Layers the dnnl engine leaves to gemm: grouped 1x1x1 convolutions with one output channel per
// group (the GTM, Conv2d(C*D, C, 1, groups=C)). Each group is a weighted sum of D planes, so
// the layer is memory-bound; oneDNN wants its input channels-last, and the reorders of the
// (C*D)-channel input in and of its gradient out cost more than the convolution. Measured with
// P3D-63 at 512x512x9, forward+backward, 1 thread (the `auto` engine's timing, Xeon): the four
// GTM layers took 57 / 35 / 15 / 9 ms on gemm and 471 / 160 / 70 / 27 ms on oneDNN.
//
// And strided 1x1x1 convolutions (the downsampling shortcuts and P3D-63's strided bottleneck
// entries): oneDNN 2.6 runs them on its generic direct kernel (not jit_1x1), at 20-70 GFLOP/s;
// the gemm path is one subsampling gather and a GEMM at sgemm's rate. Measured per pass, 1 thread,
// AMD EPYC Zen 4 (gemm fwd / dW / dX against oneDNN's): 256->512 s(1,2,2) on (1,256,9,128,128)
// 118 / 127 / 123 ms against 175 / 484 / 211; 1024->2048 on (1,1024,9,32,32) 96 / 101 / 89
// against 160 / 154 / 211; ResNet3D-18's 256->512 on (8,256,3,7,7) 3.5 ms against 5.2 in all.
// At 2 threads: 66 / 64 / 66 against 91 / 254 / 112 ms for the first; ResNet3D-18's smallest,
// 64->128 on (8,64,3,28,28), 2.4 ms against oneDNN's 2.0.
static int conv3d_is_strided_pointwise(const conv3d_shape *s) {
    int strided = 0;
    for (int i = 0; i < 3; i++) {
        if (s->k[i] != 1 || s->p[i] != 0) return 0;
        strided |= s->s[i] > 1;
    }
    return strided && s->groups == 1;
}

static int conv3d_gemm_by_rule(const conv3d_shape *s) {
    return (s->groups > 1 && s->oc == s->groups && conv3d_is_pointwise(s) && !s->bias) || conv3d_is_strided_pointwise(s);
}

conv3d_engine conv3d_engine_for(const conv3d *l, const float *in, nn_dims in_dims, float *ws,
                                size_t ws_floats) {
    const int threads = nn_get_threads();
    pthread_mutex_lock(&g_eng.lock);
    conv3d_engine mode = g_eng.mode;
    int i = mode == CONV3D_ENGINE_GEMM ? -1 : conv3d_table_find(&l->sh, in_dims, threads);
    conv3d_engine e = i >= 0 ? (conv3d_engine)g_eng.rec[i].engine : CONV3D_ENGINE_GEMM;
    pthread_mutex_unlock(&g_eng.lock);
    if (mode == CONV3D_ENGINE_GEMM || i >= 0 || !conv3d_dnnl_available()) return e;
    // First use of this key under AUTO or DNNL: decide (DNNL: try to build the primitives).
    char key[256];
    conv3d_key_text(key, sizeof(key), &l->sh, in_dims, threads);
    if (mode == CONV3D_ENGINE_AUTO) {
        e = conv3d_measure(in, l, in_dims, ws, ws_floats, key);
    } else {
        e = conv3d_gemm_by_rule(&l->sh) ? CONV3D_ENGINE_GEMM : CONV3D_ENGINE_DNNL;
    }
    pthread_mutex_lock(&g_eng.lock);
    (void)conv3d_table_set(&l->sh, in_dims, threads, e);  // not recorded: decided again next time
    pthread_mutex_unlock(&g_eng.lock);
    return e;
}

// A oneDNN call failed on a layer chosen for it: log once, use GEMM for this key from now on.
static void conv3d_dnnl_failed(const conv3d *l, nn_dims in_dims) {
    const int threads = nn_get_threads();
    char key[256];
    conv3d_key_text(key, sizeof(key), &l->sh, in_dims, threads);
    LOG_WARN("conv3d: oneDNN failed for %s, using gemm (%s)", key, pl_last_error());
    pthread_mutex_lock(&g_eng.lock);
    (void)conv3d_table_set(&l->sh, in_dims, threads, CONV3D_ENGINE_GEMM);  // not recorded: tried again
    pthread_mutex_unlock(&g_eng.lock);
}

void conv3d_forward(float *out, const float *in, const conv3d *l, nn_dims in_dims,
                    float *ws, size_t ws_floats) {
    if (conv3d_get_engine() != CONV3D_ENGINE_GEMM && conv3d_engine_for(l, in, in_dims, ws, ws_floats) == CONV3D_ENGINE_DNNL) {
        pl_quiet_begin();
        int rc = conv3d_dnnl_forward(out, in, l, in_dims);
        pl_quiet_end();
        if (!rc) return;
        conv3d_dnnl_failed(l, in_dims);
    }
    conv3d_forward_gemm(out, in, l, in_dims, ws, ws_floats);
}

// Zeroes the outputs flags says are to be written, for a path that accumulates.
static void conv3d_zero_written(float *din, const conv3d *l, nn_dims in_dims, int flags) {
    if (din && (flags & CONV3D_WRITE_DIN)) nn_parallel_zero(din, nn_dims_count(in_dims));
    if (flags & CONV3D_WRITE_DW) {
        nn_parallel_zero(l->dw, conv3d_weight_count(&l->sh));
        if (l->db) nn_parallel_zero(l->db, l->sh.oc);
    }
}

void conv3d_backward(float *din, const float *dout, const float *in, const conv3d *l,
                     nn_dims in_dims, float *ws, size_t ws_floats) {
    conv3d_backward_flags(din, dout, in, l, in_dims, ws, ws_floats, 0);
}

void conv3d_backward_flags(float *din, const float *dout, const float *in, const conv3d *l,
                           nn_dims in_dims, float *ws, size_t ws_floats, int flags) {
    if (conv3d_get_engine() != CONV3D_ENGINE_GEMM && conv3d_engine_for(l, in, in_dims, ws, ws_floats) == CONV3D_ENGINE_DNNL) {
        // A backward pass oneDNN has no direct kernel for (it would run its own im2col+gemm: dW
        // of the one-channel stems) runs on this file's vol2col+sgemm path instead, which skips
        // the depth taps that read only padding and splits its GEMMs over the pool. ResNet3D-18's
        // stem on (8,1,3,112,112), dW: 19 / 11 ms at 1 / 2 threads against oneDNN's 45 / 30.
        // Layers with large weights and small outputs take dW by kernel taps (see
        // conv3d_backward_weights_taps), din from oneDNN.
        pl_quiet_begin();
        const int jit = conv3d_dnnl_direct(l, in_dims);
        const int dnnl_data = jit >= 0 && din && (jit & CONV3D_DNNL_DATA);
        const int taps = jit >= 0 && (!din || dnnl_data) && conv3d_taps_preferred(&l->sh, in_dims);
        const int dnnl_weights = jit >= 0 && !taps && (jit & CONV3D_DNNL_WEIGHTS) && (!din || dnnl_data);
        int rc = jit < 0         ? jit
                 : dnnl_weights ? conv3d_dnnl_backward(din, dout, in, l, in_dims, flags)
                 : dnnl_data    ? conv3d_dnnl_backward_data(din, dout, l, in_dims, flags)
                                : 0;
        int taps_rc = -1;
        // what oneDNN did not write is accumulated below: zero what is to be written
        if (!rc && taps) {
            const size_t need = conv3d_taps_scratch_floats(&l->sh, in_dims);
            float *scratch = conv3d_taps_scratch(need);
            taps_rc = scratch ? conv3d_backward_weights_taps(dout, in, l, in_dims, scratch, need,
                                                             !!(flags & CONV3D_WRITE_DW))
                              : PL_ENOMEM;
        }
        pl_quiet_end();
        if (!rc) {
            // dW (and din when oneDNN does not compute it) here, accumulated: zero what is to be written
            if (!dnnl_weights && taps_rc != 0) {
                conv3d_zero_written(dnnl_data ? NULL : din, l, in_dims, flags);
                conv3d_backward_gemm(dnnl_data ? NULL : din, dout, in, l, in_dims, ws, ws_floats);
            }
            return;
        }
        conv3d_dnnl_failed(l, in_dims);
    }
    conv3d_zero_written(din, l, in_dims, flags);
    conv3d_backward_gemm(din, dout, in, l, in_dims, ws, ws_floats);
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
