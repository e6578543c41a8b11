// anchors: mmdetection's AnchorGenerator / MaxIoUAssigner / RandomSampler, and shape k-means.
#include "nn/anchors.h"

#include <math.h>
#include <string.h>

// DESIGN.md "Detector": FPN strides P2..P6.
static const int64_t ANCHOR_STRIDES[5] = {4, 8, 16, 32, 64};
enum { ANCHOR_KMEANS_MAX = 256 };

int anchors_config_make(anchor_config *c, double scale, const double *ratios, int nratios) {
    if (nratios < 1 || nratios > ANCHOR_MAX_RATIOS)
        return pl_fail(PL_EINVAL, "anchors: %d ratios (allowed 1..%d)", nratios, ANCHOR_MAX_RATIOS);
    if (!(scale > 0)) return pl_fail(PL_EINVAL, "anchors: scale %g (must be > 0)", scale);
    memset(c, 0, sizeof *c);
    c->nlevels = 5;
    for (int i = 0; i < 5; i++) c->strides[i] = ANCHOR_STRIDES[i];
    c->nratios = nratios;
    for (int i = 0; i < nratios; i++) {
        if (!(ratios[i] > 0)) return pl_fail(PL_EINVAL, "anchors: ratio[%d] = %g (must be > 0)", i, ratios[i]);
        c->ratios[i] = ratios[i];
    }
    c->nscales = 1;
    c->scales[0] = scale;
    c->center_offset = 0.0;
    return 0;
}

int anchors_per_location(const anchor_config *c) { return c->nratios * c->nscales; }

void anchors_base(float *base, const anchor_config *c, int level) {
    const double s = (double)c->strides[level];
    const double cx = c->center_offset * s, cy = c->center_offset * s;
    int a = 0;
    // mmdet scale_major: ws = (w * w_ratios[:, None] * scales[None, :]).view(-1) -> ratio-major
    for (int r = 0; r < c->nratios; r++) {
        double hr = sqrt(c->ratios[r]), wr = 1.0 / hr;
        for (int k = 0; k < c->nscales; k++, a++) {
            double w = s * wr * c->scales[k], h = s * hr * c->scales[k];
            base[4 * a + 0] = (float)(cx - 0.5 * w);
            base[4 * a + 1] = (float)(cy - 0.5 * h);
            base[4 * a + 2] = (float)(cx + 0.5 * w);
            base[4 * a + 3] = (float)(cy + 0.5 * h);
        }
    }
}

void anchors_grid(float *out, const anchor_config *c, int level, int64_t fh, int64_t fw) {
    const int na = anchors_per_location(c);
    float base[4 * ANCHOR_MAX_RATIOS * ANCHOR_MAX_SCALES];
    anchors_base(base, c, level);
    const float s = (float)c->strides[level];
    for (int64_t y = 0; y < fh; y++)
        for (int64_t x = 0; x < fw; x++) {
            float *o = out + 4 * ((y * fw + x) * na);
            float sx = (float)x * s, sy = (float)y * s;
            for (int a = 0; a < na; a++) {
                o[4 * a + 0] = base[4 * a + 0] + sx;
                o[4 * a + 1] = base[4 * a + 1] + sy;
                o[4 * a + 2] = base[4 * a + 2] + sx;
                o[4 * a + 3] = base[4 * a + 3] + sy;
            }
        }
}

void anchors_inside(uint8_t *valid, const float *anchors, int64_t n, int64_t img_h, int64_t img_w,
                    double allowed_border) {
    for (int64_t i = 0; i < n; i++) {
        const float *b = anchors + 4 * i;
        valid[i] = allowed_border < 0 ||
                   (b[0] >= -allowed_border && b[1] >= -allowed_border &&
                    b[2] < (double)img_w + allowed_border && b[3] < (double)img_h + allowed_border);
    }
}

void anchors_shapes(float *wh, const anchor_config *c) {
    const int na = anchors_per_location(c);
    float base[4 * ANCHOR_MAX_RATIOS * ANCHOR_MAX_SCALES];
    for (int l = 0; l < c->nlevels; l++) {
        anchors_base(base, c, l);
        for (int a = 0; a < na; a++) {
            wh[2 * (l * na + a) + 0] = base[4 * a + 2] - base[4 * a + 0];
            wh[2 * (l * na + a) + 1] = base[4 * a + 3] - base[4 * a + 1];
        }
    }
}

assign_config anchors_assign_rpn_defaults(void) {
    assign_config c = {0.7, 0.3, 0.3, 1, 1, 0.5, 0};
    return c;
}

assign_config anchors_assign_rcnn_defaults(void) {
    assign_config c = {0.5, 0.5, 0.5, 0, 1, 0.5, 0};
    return c;
}

// 1 when anchor i lies in an ignore region (IoF over the anchor > thr)
static int anchors_ignored(const float *b, const det_gt *gt, const assign_config *c) {
    if (c->ignore_iof <= 0 || !gt->ignore) return 0;
    double area = box_area(b, c->plus1);
    if (area <= 0) return 0;
    for (int64_t j = 0; j < gt->n_ignore; j++) {
        float iof;
        box_overlaps(&iof, b, 1, gt->ignore + 4 * j, 1, c->plus1, 1);
        if (iof > c->ignore_iof) return 1;
    }
    return 0;
}

// IoU of anchor i with gt g as the assigner sees it: -1 for ignored / invalid anchors
static double anchors_iou_or_skip(const float *b, int skip, const float *g, int plus1) {
    return skip ? -1.0 : box_iou(b, g, plus1);
}

void anchors_assign(int64_t *assigned, float *max_iou, const float *boxes, const uint8_t *valid,
                    int64_t n, const det_gt *gt, const assign_config *c) {
    // pass 1: per anchor, ignore status, best IoU and its box (first box on ties, as argmax)
    for (int64_t i = 0; i < n; i++) {
        const float *b = boxes + 4 * i;
        int skip = (valid && !valid[i]) || anchors_ignored(b, gt, c);
        if (skip) {
            assigned[i] = ASSIGN_IGNORE;
            if (max_iou) max_iou[i] = -1.0f;
            continue;
        }
        double best = 0;  // mmdet: no gt -> max overlap 0 -> negative
        int64_t arg = -1;
        for (int64_t g = 0; g < gt->n; g++) {
            double v = (float)box_iou(b, gt->boxes + 4 * g, c->plus1);  // float like mmdet
            if (arg < 0 || v > best) {
                best = v;
                arg = g;
            }
        }
        if (max_iou) max_iou[i] = (float)best;
        if (arg >= 0 && best >= c->pos_iou) assigned[i] = arg;
        else if (best < c->neg_iou) assigned[i] = ASSIGN_NEG;
        else assigned[i] = ASSIGN_IGNORE;
    }
    if (!c->match_low_quality) return;
    // pass 2: each gt box's best anchor(s) become positive if good enough; later boxes win ties
    for (int64_t g = 0; g < gt->n; g++) {
        const float *gb = gt->boxes + 4 * g;
        float gmax = -1;
        int64_t garg = -1;
        for (int64_t i = 0; i < n; i++) {
            int skip = (valid && !valid[i]) || anchors_ignored(boxes + 4 * i, gt, c);
            float v = (float)anchors_iou_or_skip(boxes + 4 * i, skip, gb, c->plus1);
            if (garg < 0 || v > gmax) {
                gmax = v;
                garg = i;
            }
        }
        if (garg < 0 || gmax < c->min_pos_iou) continue;
        if (!c->gt_max_assign_all) {
            assigned[garg] = g;
            continue;
        }
        for (int64_t i = 0; i < n; i++) {
            int skip = (valid && !valid[i]) || anchors_ignored(boxes + 4 * i, gt, c);
            if ((float)anchors_iou_or_skip(boxes + 4 * i, skip, gb, c->plus1) == gmax) assigned[i] = g;
        }
    }
}

// Moves a uniform random subset of size k of a[0..m) to its front (partial Fisher-Yates).
static void anchors_choose(int64_t *a, int64_t m, int64_t k, pl_rng *rng) {
    for (int64_t i = 0; i < k && i < m; i++) {
        int64_t j = pl_rng_int(rng, i, m - 1);
        int64_t t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

int64_t anchors_sample(uint8_t *picked, int64_t *npos, const int64_t *assigned, int64_t n,
                       int64_t num, double pos_fraction, pl_rng *rng, int64_t *ws) {
    memset(picked, 0, (size_t)n);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++)
        if (assigned[i] >= 0) ws[m++] = i;
    int64_t want_pos = (int64_t)((double)num * pos_fraction);
    int64_t np = PL_MIN(m, want_pos);
    anchors_choose(ws, m, np, rng);
    for (int64_t i = 0; i < np; i++) picked[ws[i]] = 1;
    m = 0;
    for (int64_t i = 0; i < n; i++)
        if (assigned[i] == ASSIGN_NEG) ws[m++] = i;
    int64_t nn = PL_MIN(m, num - np);
    anchors_choose(ws, m, nn, rng);
    for (int64_t i = 0; i < nn; i++) picked[ws[i]] = 1;
    if (npos) *npos = np;
    return np + nn;
}

double anchors_shape_iou(const float *a, const float *b) {
    double in = fmin(a[0], b[0]) * fmin(a[1], b[1]);
    double u = (double)a[0] * a[1] + (double)b[0] * b[1] - in;
    return u > 0 ? in / u : 0.0;
}

double anchors_mean_best_iou(const float *wh, int64_t n, const float *anchor_wh, int64_t na) {
    if (n <= 0) return 0.0;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double best = 0;
        for (int64_t j = 0; j < na; j++) best = fmax(best, anchors_shape_iou(wh + 2 * i, anchor_wh + 2 * j));
        s += best;
    }
    return s / (double)n;
}

// nearest centroid (largest IoU, first on ties) among k; *dist = 1 - IoU
static int anchors_nearest(const float *p, const float *cent, int k, double *dist) {
    int best = 0;
    double bi = -1;
    for (int j = 0; j < k; j++) {
        double v = anchors_shape_iou(p, cent + 2 * j);
        if (v > bi) {
            bi = v;
            best = j;
        }
    }
    if (dist) *dist = 1.0 - bi;
    return best;
}

int anchors_kmeans(float *centroids, int32_t *assign, const float *wh, int64_t n, int k, int max_iter,
                   pl_rng *rng) {
    if (k < 1 || k > ANCHOR_KMEANS_MAX || n < k)
        return pl_fail(PL_EINVAL, "anchors k-means: k = %d clusters for %lld shapes (need 1 <= k <= min(%d, shapes))",
                       k, (long long)n, ANCHOR_KMEANS_MAX);
    for (int64_t i = 0; i < n; i++)
        if (!(wh[2 * i] > 0 && wh[2 * i + 1] > 0))
            return pl_fail(PL_EINVAL, "anchors k-means: shape %lld is %g x %g (must be positive)",
                           (long long)i, wh[2 * i], wh[2 * i + 1]);
    // k-means++ seeding with D = 1 - IoU (probability proportional to D^2)
    int64_t first = pl_rng_int(rng, 0, n - 1);
    centroids[0] = wh[2 * first];
    centroids[1] = wh[2 * first + 1];
    for (int j = 1; j < k; j++) {
        double tot = 0;
        for (int64_t i = 0; i < n; i++) {
            double d;
            anchors_nearest(wh + 2 * i, centroids, j, &d);
            tot += d * d;
        }
        int64_t pick = n - 1;
        if (tot > 0) {
            double u = pl_rng_uniform(rng) * tot, acc = 0;
            for (int64_t i = 0; i < n; i++) {
                double d;
                anchors_nearest(wh + 2 * i, centroids, j, &d);
                acc += d * d;
                if (acc > u) {
                    pick = i;
                    break;
                }
            }
        } else {
            pick = pl_rng_int(rng, 0, n - 1);
        }
        centroids[2 * j] = wh[2 * pick];
        centroids[2 * j + 1] = wh[2 * pick + 1];
    }
    for (int64_t i = 0; i < n; i++) assign[i] = -1;
    int it = 0;
    for (; it < max_iter; it++) {
        int changed = 0;
        for (int64_t i = 0; i < n; i++) {
            int a = anchors_nearest(wh + 2 * i, centroids, k, NULL);
            if (a != assign[i]) changed = 1;
            assign[i] = a;
        }
        if (!changed && it > 0) break;
        for (int j = 0; j < k; j++) {
            double sw = 0, sh = 0;
            int64_t cnt = 0;
            for (int64_t i = 0; i < n; i++)
                if (assign[i] == j) {
                    sw += wh[2 * i];
                    sh += wh[2 * i + 1];
                    cnt++;
                }
            if (cnt > 0) {
                centroids[2 * j] = (float)(sw / (double)cnt);
                centroids[2 * j + 1] = (float)(sh / (double)cnt);
            } else {
                // empty: re-seed with the shape farthest from its centroid
                double worst = -1;
                int64_t wi = 0;
                for (int64_t i = 0; i < n; i++) {
                    double d = 1.0 - anchors_shape_iou(wh + 2 * i, centroids + 2 * assign[i]);
                    if (d > worst) {
                        worst = d;
                        wi = i;
                    }
                }
                centroids[2 * j] = wh[2 * wi];
                centroids[2 * j + 1] = wh[2 * wi + 1];
                assign[wi] = j;
            }
        }
    }
    // sort centroids by area ascending (insertion sort, k small) and remap the assignment
    int perm[ANCHOR_KMEANS_MAX];
    for (int j = 0; j < k; j++) perm[j] = j;
    for (int a = 1; a < k; a++)
        for (int b = a; b > 0; b--) {
            float ab = centroids[2 * perm[b]] * centroids[2 * perm[b] + 1];
            float aa = centroids[2 * perm[b - 1]] * centroids[2 * perm[b - 1] + 1];
            if (ab >= aa) break;
            int t = perm[b];
            perm[b] = perm[b - 1];
            perm[b - 1] = t;
        }
    float tmp[2 * ANCHOR_KMEANS_MAX];
    for (int j = 0; j < k; j++) {
        tmp[2 * j] = centroids[2 * perm[j]];
        tmp[2 * j + 1] = centroids[2 * perm[j] + 1];
    }
    memcpy(centroids, tmp, (size_t)k * 2 * sizeof(float));
    for (int64_t i = 0; i < n; i++) assign[i] = anchors_nearest(wh + 2 * i, centroids, k, NULL);
    return it;
}
