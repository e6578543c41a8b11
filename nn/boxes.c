// boxes: IoU/IoF, the DeltaXYWHBBoxCoder of mmdetection, clipping and greedy NMS.
#include "nn/boxes.h"

#include <math.h>
#include <stdlib.h>

#include "nn/pl.h"

// mmdet's DeltaXYWHBBoxCoder wh_ratio_clip: dw, dh are clamped to |log(16 / 1000)|.
static const double BOX_WH_RATIO_CLIP = 16.0 / 1000.0;

float box_area(const float *b, int plus1) {
    float o = plus1 ? 1.0f : 0.0f;
    float w = b[2] - b[0] + o, h = b[3] - b[1] + o;
    return (w > 0 && h > 0) ? w * h : 0.0f;
}

// intersection area of two boxes (0 when disjoint)
static double box_inter(const float *a, const float *b, int plus1) {
    double o = plus1 ? 1.0 : 0.0;
    double w = fmin(a[2], b[2]) - fmax(a[0], b[0]) + o;
    double h = fmin(a[3], b[3]) - fmax(a[1], b[1]) + o;
    return (w > 0 && h > 0) ? w * h : 0.0;
}

double box_iou(const float *a, const float *b, int plus1) {
    double in = box_inter(a, b, plus1);
    if (in <= 0) return 0.0;
    double u = (double)box_area(a, plus1) + (double)box_area(b, plus1) - in;
    return u > 0 ? in / u : 0.0;
}

void box_overlaps(float *out, const float *a, int64_t na, const float *b, int64_t nb, int plus1,
                  int iof) {
    for (int64_t i = 0; i < na; i++) {
        const float *ai = a + 4 * i;
        double aa = box_area(ai, plus1);
        for (int64_t j = 0; j < nb; j++) {
            double v;
            if (iof) {
                double in = box_inter(ai, b + 4 * j, plus1);
                v = aa > 0 ? in / aa : 0.0;
            } else {
                v = box_iou(ai, b + 4 * j, plus1);
            }
            out[i * nb + j] = (float)v;
        }
    }
}

box_coder box_coder_make(const float means[4], const float stds[4]) {
    box_coder c;
    for (int k = 0; k < 4; k++) {
        c.means[k] = means[k];
        c.stds[k] = stds[k];
    }
    c.max_ratio = fabs(log(BOX_WH_RATIO_CLIP));
    return c;
}

void box_encode(float *deltas, const float *props, const float *gts, int64_t n, const box_coder *c) {
    for (int64_t i = 0; i < n; i++) {
        const float *p = props + 4 * i, *g = gts + 4 * i;
        double pw = (double)p[2] - p[0], ph = (double)p[3] - p[1];
        double px = 0.5 * ((double)p[0] + p[2]), py = 0.5 * ((double)p[1] + p[3]);
        double gw = (double)g[2] - g[0], gh = (double)g[3] - g[1];
        double gx = 0.5 * ((double)g[0] + g[2]), gy = 0.5 * ((double)g[1] + g[3]);
        double d[4] = {(gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph)};
        for (int k = 0; k < 4; k++) deltas[4 * i + k] = (float)((d[k] - c->means[k]) / c->stds[k]);
    }
}

void box_clip(float *boxes, int64_t n, int64_t img_h, int64_t img_w) {
    for (int64_t i = 0; i < n; i++) {
        float *b = boxes + 4 * i;
        b[0] = PL_CLAMP(b[0], 0.0f, (float)img_w);
        b[2] = PL_CLAMP(b[2], 0.0f, (float)img_w);
        b[1] = PL_CLAMP(b[1], 0.0f, (float)img_h);
        b[3] = PL_CLAMP(b[3], 0.0f, (float)img_h);
    }
}

void box_decode(float *boxes, const float *props, const float *deltas, int64_t n, const box_coder *c,
                int64_t img_h, int64_t img_w) {
    for (int64_t i = 0; i < n; i++) {
        const float *p = props + 4 * i;
        double d[4];
        for (int k = 0; k < 4; k++) d[k] = (double)deltas[4 * i + k] * c->stds[k] + c->means[k];
        d[2] = PL_CLAMP(d[2], -c->max_ratio, c->max_ratio);
        d[3] = PL_CLAMP(d[3], -c->max_ratio, c->max_ratio);
        double pw = (double)p[2] - p[0], ph = (double)p[3] - p[1];
        double px = 0.5 * ((double)p[0] + p[2]), py = 0.5 * ((double)p[1] + p[3]);
        double gx = px + pw * d[0], gy = py + ph * d[1];
        double gw = pw * exp(d[2]), gh = ph * exp(d[3]);
        float *b = boxes + 4 * i;
        b[0] = (float)(gx - 0.5 * gw);
        b[1] = (float)(gy - 0.5 * gh);
        b[2] = (float)(gx + 0.5 * gw);
        b[3] = (float)(gy + 0.5 * gh);
    }
    if (img_h > 0 && img_w > 0) box_clip(boxes, n, img_h, img_w);
}

// a ranks before b: higher score, then lower index; NaN counts as -inf
static int box_before(const float *s, int64_t a, int64_t b) {
    float sa = isnan(s[a]) ? -INFINITY : s[a], sb = isnan(s[b]) ? -INFINITY : s[b];
    return sa > sb || (sa == sb && a < b);
}

// heap sort with the total order above: deterministic whatever the input order, no scratch
static void box_sift_down(int64_t *h, const float *s, int64_t root, int64_t n) {
    for (;;) {
        int64_t c = 2 * root + 1;
        if (c >= n) return;
        // max-heap of "ranks last": the element that ranks last sits on top
        if (c + 1 < n && box_before(s, h[c], h[c + 1])) c++;
        if (!box_before(s, h[root], h[c])) return;
        int64_t t = h[root];
        h[root] = h[c];
        h[c] = t;
        root = c;
    }
}

void box_argsort_desc(int64_t *order, const float *scores, int64_t n) {
    for (int64_t i = 0; i < n; i++) order[i] = i;
    for (int64_t i = n / 2 - 1; i >= 0; i--) box_sift_down(order, scores, i, n);
    for (int64_t end = n - 1; end > 0; end--) {
        int64_t t = order[0];
        order[0] = order[end];
        order[end] = t;
        box_sift_down(order, scores, 0, end);
    }
}

static inline double nms_min_nonan(double x, double y) { return x < y ? x : y; }
static inline double nms_max_nonan(double x, double y) { return x > y ? x : y; }

// Marks dead every candidate b in [b0, n) whose IoU with the kept box (x1, y1, x2, y2, area)
// is above thr. Boxes in sorted order, structure of arrays, no NaN (so min/max need no NaN
// rule); the expression is box_iou()'s, in double, so the result is the same bits. Branch-free
// over all candidates (dead ones too: marking them again changes nothing) so it vectorises
// (kept out of line: inlined into box_nms, GCC 12 no longer vectorised it).
__attribute__((noinline)) static void nms_suppress(uint8_t *restrict dead, const float *restrict X1, const float *restrict Y1,
                         const float *restrict X2, const float *restrict Y2, const float *restrict A,
                         int64_t b0, int64_t n, double x1, double y1, double x2, double y2,
                         double area, double o, double thr) {
    for (int64_t b = b0; b < n; b++) {
        double w = nms_min_nonan(x2, X2[b]) - nms_max_nonan(x1, X1[b]) + o;
        double h = nms_min_nonan(y2, Y2[b]) - nms_max_nonan(y1, Y1[b]) + o;
        double in = w * h, u = area + (double)A[b] - in;
        double r = in / u;  // used only where u > 0 (elsewhere box_iou gives 0)
        _Bool hit = (w > 0) & (h > 0) & (in > 0) & (u > 0) & (r > thr);
        dead[b] |= hit;
    }
}

int64_t box_nms(int64_t *keep, int64_t *order, uint8_t *dead, const float *boxes,
                const float *scores, int64_t n, double iou_thr, int plus1, int64_t max_keep) {
    box_argsort_desc(order, scores, n);
    for (int64_t i = 0; i < n; i++) dead[i] = 0;
    const double o = plus1 ? 1.0 : 0.0;
    // the sorted boxes as arrays for the vectorised pass; it needs no NaN coordinate and a
    // threshold >= 0 (a box pair that does not overlap has IoU 0, never above it)
    float *soa = iou_thr >= 0 && n > 0 ? malloc((size_t)n * 5 * sizeof(float)) : NULL;
    for (int64_t a = 0; soa && a < n; a++) {
        const float *bx = boxes + 4 * order[a];
        if (isnan(bx[0]) || isnan(bx[1]) || isnan(bx[2]) || isnan(bx[3])) {
            free(soa);
            soa = NULL;
            break;
        }
        soa[a] = bx[0], soa[n + a] = bx[1], soa[2 * n + a] = bx[2], soa[3 * n + a] = bx[3];
        soa[4 * n + a] = box_area(bx, plus1);
    }
    int64_t nk = 0;
    for (int64_t a = 0; a < n; a++) {
        if (dead[a]) continue;
        int64_t i = order[a];
        keep[nk++] = i;
        if (max_keep > 0 && nk >= max_keep) break;
        const float *bi = boxes + 4 * i;
        if (soa) {
            nms_suppress(dead, soa, soa + n, soa + 2 * n, soa + 3 * n, soa + 4 * n, a + 1, n, bi[0],
                         bi[1], bi[2], bi[3], box_area(bi, plus1), o, iou_thr);
            continue;
        }
        for (int64_t b = a + 1; b < n; b++)  // NaN coordinates (or thr < 0): box_iou's fmin/fmax rule
            if (!dead[b] && box_iou(bi, boxes + 4 * order[b], plus1) > iou_thr) dead[b] = 1;
    }
    free(soa);
    return nk;
}
