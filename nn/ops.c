// ops: ReLU, MaxPool3d, global average pool, Linear, residual add, nearest 2x upsampling.
#include "nn/ops.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "nn/conv3d.h"
#include "nn/conv3d_dnnl.h"
#include "nn/parallel.h"
#include "nn/pl.h"

void relu_forward(float *y, const float *x, int64_t count) {
    for (int64_t i = 0; i < count; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

void relu_backward(float *dx, const float *dy, const float *y, int64_t count) {
    for (int64_t i = 0; i < count; i++) dx[i] += y[i] > 0 ? dy[i] : 0.0f;
}

int maxpool3d_out_dims(nn_dims *out, const maxpool3d_shape *s, nn_dims in) {
    int64_t isz[3] = {in.d, in.h, in.w}, osz[3];
    for (int i = 0; i < 3; i++) {
        if (s->k[i] < 1 || s->s[i] < 1 || s->p[i] < 0 || 2 * s->p[i] > s->k[i])
            return pl_fail(PL_EINVAL, "maxpool3d: axis %d kernel=%lld stride=%lld pad=%lld (need pad <= kernel/2)",
                           i, (long long)s->k[i], (long long)s->s[i], (long long)s->p[i]);
        int64_t span = isz[i] + 2 * s->p[i] - s->k[i];
        if (span < 0)
            return pl_fail(PL_EINVAL, "maxpool3d: axis %d input %lld too small for kernel %lld",
                           i, (long long)isz[i], (long long)s->k[i]);
        osz[i] = span / s->s[i] + 1;
    }
    *out = nn_dims_make(in.n, in.c, osz[0], osz[1], osz[2]);
    return 0;
}

typedef struct {
    float *y, *dx;
    int32_t *idx;
    const float *x, *dy;
    const int32_t *cidx;
    const maxpool3d_shape *s;
    nn_dims in, o;
} pool_ctx;

// The window's first maximum and its index ('>' keeps the first; the first NaN wins, as the value
// PyTorch propagates). [d0,d1)x[h0,h1)x[w0,w1) is the window clipped to the input.
static float maxpool_window(const float *xp, nn_dims in, int64_t d0, int64_t d1, int64_t h0, int64_t h1,
                            int64_t w0, int64_t w1, int64_t *bi) {
    float best = -INFINITY;
    *bi = -1;
    for (int64_t id = d0; id < d1; id++)
        for (int64_t ih = h0; ih < h1; ih++)
            for (int64_t iw = w0; iw < w1; iw++) {
                int64_t i = (id * in.h + ih) * in.w + iw;
                if (xp[i] > best || isnan(xp[i]) || *bi < 0) {
                    best = xp[i];
                    *bi = i;
                    if (isnan(best)) return best;
                }
            }
    return best;
}

// One plane by the window (the reference): the inner loop only compares (a NaN is noted, and
// such a window is redone by maxpool_window); window bounds are clipped once per output row.
static void maxpool_plane_windows(const pool_ctx *k, const float *xp, float *yp, int32_t *ip) {
    const maxpool3d_shape *s = k->s;
    const nn_dims in = k->in, o = k->o;
    for (int64_t od = 0; od < o.d; od++) {
        const int64_t ds = od * s->s[0] - s->p[0], d0 = PL_MAX(ds, 0), d1 = PL_MIN(ds + s->k[0], in.d);
        for (int64_t oh = 0; oh < o.h; oh++) {
            const int64_t hs = oh * s->s[1] - s->p[1], h0 = PL_MAX(hs, 0), h1 = PL_MIN(hs + s->k[1], in.h);
            float *yr = yp + (od * o.h + oh) * o.w;
            int32_t *ir = ip + (od * o.h + oh) * o.w;
            for (int64_t ow = 0; ow < o.w; ow++) {
                const int64_t ws = ow * s->s[2] - s->p[2], w0 = PL_MAX(ws, 0), w1 = PL_MIN(ws + s->k[2], in.w);
                float best = -INFINITY;
                int64_t bi = -1;
                int nan = 0;
                for (int64_t id = d0; id < d1; id++)
                    for (int64_t ih = h0; ih < h1; ih++) {
                        const int64_t row = (id * in.h + ih) * in.w;
                        for (int64_t iw = w0; iw < w1; iw++) {
                            const float v = xp[row + iw];
                            nan |= v != v;
                            if (v > best) {
                                best = v;
                                bi = row + iw;
                            }
                        }
                    }
                if (nan || bi < 0) best = maxpool_window(xp, in, d0, d1, h0, h1, w0, w1, &bi);
                yr[ow] = best;
                ir[ow] = (int32_t)bi;
            }
        }
    }
}

// Running first strict maximum: m[i] = ms[i] where ms[i] > m[i], with its index (branch-free).
static void max_first_init(float *m, int32_t *mi, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        m[i] = -INFINITY;
        mi[i] = -1;
    }
}
static void max_first_into(float *m, int32_t *mi, const float *ms, const int32_t *is, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const int better = ms[i] > m[i];
        m[i] = better ? ms[i] : m[i];
        mi[i] = better ? is[i] : mi[i];
    }
}

// One plane in three separable passes (w, then h, then d), each keeping the first
// strict maximum of its window in ascending order. The first maximum of a row of maxima is in
// the first row holding the window's maximum, at that row's first maximum: so the index is the
// window's first maximum in (d, h, w) order, the one maxpool_plane_windows finds, and the value
// is that element. A window of -inf only keeps index -1 and is redone by maxpool_window.
// m1 (D, H, OW) and m2 (D, OH, OW) with their flat input indices are scratch. Returns 1, with
// nothing written, when the first pass meets a NaN (the caller then goes window by window).
static int maxpool_plane_separable(const pool_ctx *k, const float *xp, float *yp, int32_t *ip, float *m1, int32_t *i1,
                                    float *m2, int32_t *i2) {
    const maxpool3d_shape *s = k->s;
    const nn_dims in = k->in, o = k->o;
    int nan = 0;
    for (int64_t r = 0; r < in.d * in.h; r++) {   // w
        const float *xr = xp + r * in.w;
        float *mr = m1 + r * o.w;
        int32_t *ir = i1 + r * o.w;
        for (int64_t ow = 0; ow < o.w; ow++) {
            const int64_t ws = ow * s->s[2] - s->p[2], w0 = PL_MAX(ws, 0), w1 = PL_MIN(ws + s->k[2], in.w);
            float best = -INFINITY;
            int32_t bi = -1;
            for (int64_t iw = w0; iw < w1; iw++) {
                const float v = xr[iw];
                const int better = v > best;
                nan |= v != v;
                best = better ? v : best;
                bi = better ? (int32_t)(r * in.w + iw) : bi;
            }
            mr[ow] = best;
            ir[ow] = bi;
        }
    }
    if (nan) return 1;
    for (int64_t id = 0; id < in.d; id++)   // h
        for (int64_t oh = 0; oh < o.h; oh++) {
            const int64_t hs = oh * s->s[1] - s->p[1], h0 = PL_MAX(hs, 0), h1 = PL_MIN(hs + s->k[1], in.h);
            float *mr = m2 + (id * o.h + oh) * o.w;
            int32_t *ir = i2 + (id * o.h + oh) * o.w;
            max_first_init(mr, ir, o.w);
            for (int64_t ih = h0; ih < h1; ih++)
                max_first_into(mr, ir, m1 + (id * in.h + ih) * o.w, i1 + (id * in.h + ih) * o.w, o.w);
        }
    for (int64_t od = 0; od < o.d; od++) {   // d
        const int64_t ds = od * s->s[0] - s->p[0], d0 = PL_MAX(ds, 0), d1 = PL_MIN(ds + s->k[0], in.d);
        float *yr = yp + od * o.h * o.w;
        int32_t *ir = ip + od * o.h * o.w;
        max_first_init(yr, ir, o.h * o.w);
        for (int64_t id = d0; id < d1; id++) max_first_into(yr, ir, m2 + id * o.h * o.w, i2 + id * o.h * o.w, o.h * o.w);
        for (int64_t i = 0; i < o.h * o.w; i++)
            if (ir[i] < 0) {   // every element of the window is -inf
                const int64_t oh = i / o.w, ow = i % o.w;
                const int64_t hs = oh * s->s[1] - s->p[1], ws = ow * s->s[2] - s->p[2];
                int64_t bi;
                yr[i] = maxpool_window(xp, in, d0, d1, PL_MAX(hs, 0), PL_MIN(hs + s->k[1], in.h), PL_MAX(ws, 0),
                                       PL_MIN(ws + s->k[2], in.w), &bi);
                ir[i] = (int32_t)bi;
            }
    }
    return 0;
}

// planes (n, c) in [p0, p1): separable when the scratch is there and the plane's windows hold no
// NaN, else window by window.
static void maxpool_forward_planes(void *vc, int64_t p0, int64_t p1) {
    const pool_ctx *k = vc;
    const nn_dims in = k->in, o = k->o;
    const int64_t isp = nn_dims_spatial(in), osp = nn_dims_spatial(o);
    const size_t n1 = (size_t)(in.d * in.h * o.w), n2 = (size_t)(in.d * o.h * o.w);
    float *m1 = malloc((n1 + n2) * (sizeof(float) + sizeof(int32_t)));   // NULL: the window path, no error
    int32_t *i1 = m1 ? (int32_t *)(m1 + n1) : NULL;
    float *m2 = m1 ? (float *)(i1 + n1) : NULL;
    int32_t *i2 = m1 ? (int32_t *)(m2 + n2) : NULL;
    for (int64_t nc = p0; nc < p1; nc++) {
        const float *xp = k->x + nc * isp;
        float *yp = k->y + nc * osp;
        int32_t *ip = k->idx + nc * osp;
        if (!m1 || maxpool_plane_separable(k, xp, yp, ip, m1, i1, m2, i2)) maxpool_plane_windows(k, xp, yp, ip);
    }
    free(m1);
}

void maxpool3d_forward(float *y, int32_t *idx, const float *x, const maxpool3d_shape *s, nn_dims in) {
    nn_dims o;
    PL_ASSERT(maxpool3d_out_dims(&o, s, in) == 0);
    pool_ctx k = {.y = y, .idx = idx, .x = x, .s = s, .in = in, .o = o};
    nn_parallel_for(in.n * in.c, PL_MAX((int64_t)1, 65536 / PL_MAX(nn_dims_spatial(o), (int64_t)1)),
                    maxpool_forward_planes, &k);
}

static void maxpool_backward_planes(void *vc, int64_t p0, int64_t p1) {
    const pool_ctx *k = vc;
    const int64_t isp = nn_dims_spatial(k->in), osp = nn_dims_spatial(k->o);
    for (int64_t nc = p0; nc < p1; nc++)
        for (int64_t i = 0; i < osp; i++) k->dx[nc * isp + k->cidx[nc * osp + i]] += k->dy[nc * osp + i];
}

void maxpool3d_backward(float *dx, const float *dy, const int32_t *idx, nn_dims in, nn_dims out) {
    pool_ctx k = {.dx = dx, .dy = dy, .cidx = idx, .in = in, .o = out};
    nn_parallel_for(in.n * in.c, PL_MAX((int64_t)1, 262144 / PL_MAX(nn_dims_spatial(out), (int64_t)1)),
                    maxpool_backward_planes, &k);
}

void avgpool_global_forward(float *y, const float *x, nn_dims in) {
    const int64_t sp = nn_dims_spatial(in);
    for (int64_t nc = 0; nc < in.n * in.c; nc++) {
        double s = 0;
        for (int64_t i = 0; i < sp; i++) s += x[nc * sp + i];
        y[nc] = (float)(s / (double)sp);
    }
}

void avgpool_global_backward(float *dx, const float *dy, nn_dims in) {
    const int64_t sp = nn_dims_spatial(in);
    for (int64_t nc = 0; nc < in.n * in.c; nc++) {
        float g = dy[nc] / (float)sp;
        for (int64_t i = 0; i < sp; i++) dx[nc * sp + i] += g;
    }
}

// C (m, n) += op(A) op(B), row-major: oneDNN's sgemm with the dnnl and auto engines (see
// nn_dnnl_sgemm), OpenBLAS with the gemm engine, the reference (and if oneDNN refuses).
static void linear_sgemm(int ta, int tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                         const float *b, int64_t ldb, float *c, int64_t ldc) {
    if (conv3d_get_engine() != CONV3D_ENGINE_GEMM && conv3d_dnnl_available() &&
        nn_dnnl_sgemm(ta, tb, m, n, k, a, lda, b, ldb, 1.0f, c, ldc) == 0)
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, 1.0f, a, (int)lda, b, (int)ldb, 1.0f, c, (int)ldc);
}

void linear_forward(float *y, const float *x, const linear *l, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < l->out; o++) y[i * l->out + o] = l->b ? l->b[o] : 0.0f;
    linear_sgemm(0, 1, n, l->out, l->in, x, l->in, l->w, l->in, y, l->out);
}

void linear_backward(float *dx, const float *dy, const float *x, const linear *l, int64_t n) {
    // dW (OUT, IN) += dY^T (OUT, N) x X (N, IN); dX (N, IN) += dY (N, OUT) x W (OUT, IN)
    linear_sgemm(1, 0, l->out, l->in, n, dy, l->out, x, l->in, l->dw, l->in);
    if (l->db)
        for (int64_t i = 0; i < n; i++)
            for (int64_t o = 0; o < l->out; o++) l->db[o] += dy[i * l->out + o];
    if (dx) linear_sgemm(0, 0, n, l->in, l->out, dy, l->out, l->w, l->in, dx, l->in);
}

void add_forward(float *y, const float *a, const float *b, int64_t count, int relu) {
    if (relu)
        for (int64_t i = 0; i < count; i++) {
            float v = a[i] + b[i];
            y[i] = v > 0 ? v : 0.0f;
        }
    else
        for (int64_t i = 0; i < count; i++) y[i] = a[i] + b[i];
}

void add_backward(float *da, float *db, const float *dy, const float *y, int64_t count, int relu) {
    for (int64_t i = 0; i < count; i++) {
        float g = (!relu || y[i] > 0) ? dy[i] : 0.0f;
        if (da) da[i] += g;
        if (db) db[i] += g;
    }
}

void upsample2x_forward(float *y, const float *x, nn_dims in) {
    const int64_t ow = 2 * in.w;
    for (int64_t r = 0; r < in.n * in.c * in.d * in.h; r++) {
        const float *xr = x + r * in.w;
        float *y0 = y + 2 * r * ow, *y1 = y0 + ow;
        for (int64_t i = 0; i < in.w; i++) y0[2 * i] = y0[2 * i + 1] = y1[2 * i] = y1[2 * i + 1] = xr[i];
    }
}

void upsample2x_backward(float *dx, const float *dy, nn_dims in) {
    const int64_t ow = 2 * in.w;
    for (int64_t r = 0; r < in.n * in.c * in.d * in.h; r++) {
        float *xr = dx + r * in.w;
        const float *y0 = dy + 2 * r * ow, *y1 = y0 + ow;
        for (int64_t i = 0; i < in.w; i++) xr[i] += y0[2 * i] + y0[2 * i + 1] + y1[2 * i] + y1[2 * i + 1];
    }
}
