#include "stages/train/augment.h"

#include <math.h>

uint64_t aug_sample_seed(uint64_t seed, int64_t epoch, int64_t index) {
    uint64_t v[3] = {seed, (uint64_t)epoch, (uint64_t)index};
    return pl_fnv1a(v, sizeof v, PL_FNV_INIT);
}

aug_box aug_rrc_params(pl_rng *r, int h, int w, double smin, double smax, double rmin, double rmax) {
    double area = (double)h * (double)w;
    double lr0 = log(rmin), lr1 = log(rmax);
    for (int t = 0; t < 10; t++) {
        double a = area * pl_rng_range(r, smin, smax);
        double ratio = exp(pl_rng_range(r, lr0, lr1));
        int cw = (int)lround(sqrt(a * ratio));
        int ch = (int)lround(sqrt(a / ratio));
        if (cw > 0 && ch > 0 && cw <= w && ch <= h) {
            aug_box b = {(int)pl_rng_int(r, 0, h - ch), (int)pl_rng_int(r, 0, w - cw), ch, cw};
            return b;
        }
    }
    // Fallback: central crop of the whole image with the ratio clamped into [rmin, rmax].
    double in_ratio = (double)w / (double)h;
    int cw = w, ch = h;
    if (in_ratio < rmin) { cw = w; ch = (int)lround(w / rmin); }
    else if (in_ratio > rmax) { ch = h; cw = (int)lround(h * rmax); }
    aug_box b = {(h - ch) / 2, (w - cw) / 2, ch, cw};
    return b;
}

aug_box aug_center_box(int h, int w, int crop) {
    int ch = PL_MIN(crop, h), cw = PL_MIN(crop, w);
    // torchvision CenterCrop: top = round((h - crop) / 2)
    aug_box b = {(int)lround((h - ch) / 2.0), (int)lround((w - cw) / 2.0), ch, cw};
    return b;
}

aug_box aug_random_box(pl_rng *r, int h, int w, int crop) {
    int ch = PL_MIN(crop, h), cw = PL_MIN(crop, w);
    // torchvision RandomCrop.get_params: top, left uniform integers in [0, h - crop], [0, w - crop]
    aug_box b = {(int)pl_rng_int(r, 0, h - ch), (int)pl_rng_int(r, 0, w - cw), ch, cw};
    return b;
}

// Source coordinate table for one axis: for output o, the two source taps and the weight of
// the second, half-pixel centres (align_corners=False), clamped to the box.
static void taps(int *i0, int *i1, float *f, int on, int start, int len) {
    double scale = (double)len / (double)on;
    for (int o = 0; o < on; o++) {
        double s = (o + 0.5) * scale - 0.5;
        if (s < 0) s = 0;
        int a = (int)floor(s);
        if (a > len - 1) a = len - 1;
        int b = a + 1 < len ? a + 1 : len - 1;
        i0[o] = start + a;
        i1[o] = start + b;
        f[o] = (float)(s - a);
    }
}

#define AUG_MAX 4096
#define CROP_RESIZE_BODY(T, MAPV)                                                                  \
    int y0[AUG_MAX], y1[AUG_MAX], x0[AUG_MAX], x1[AUG_MAX];                                       \
    float fy[AUG_MAX], fx[AUG_MAX];                                                                \
    PL_ASSERT(oh <= AUG_MAX && ow <= AUG_MAX);                                                     \
    taps(y0, y1, fy, oh, b.y0, b.h);                                                               \
    taps(x0, x1, fx, ow, b.x0, b.w);                                                               \
    for (int dd = 0; dd < d; dd++) {                                                               \
        int src = order ? order[dd] : dd;                                                          \
        const T *p = in + (int64_t)src * h * w;                                                    \
        float *q = out + (int64_t)dd * oh * ow;                                                    \
        for (int y = 0; y < oh; y++) {                                                             \
            const T *r0 = p + (int64_t)y0[y] * w, *r1 = p + (int64_t)y1[y] * w;                    \
            float wy = fy[y];                                                                      \
            for (int x = 0; x < ow; x++) {                                                         \
                int xs = flip ? ow - 1 - x : x;                                                    \
                float a = MAPV(r0[x0[xs]]), bb = MAPV(r0[x1[xs]]);                                 \
                float c = MAPV(r1[x0[xs]]), e = MAPV(r1[x1[xs]]);                                  \
                float top = a + (bb - a) * fx[xs], bot = c + (e - c) * fx[xs];                     \
                q[(int64_t)y * ow + x] = top + (bot - top) * wy;                                   \
            }                                                                                      \
        }                                                                                          \
    }

void aug_crop_resize(float *out, int oh, int ow, const uint8_t *in, int d, int h, int w, aug_box b,
                     int flip, const int *order, float mean, float std) {
#define MAP_U8(v) (((float)(v) - mean) / std)
    CROP_RESIZE_BODY(uint8_t, MAP_U8)
#undef MAP_U8
}

void aug_crop_resize_i16(float *out, int oh, int ow, const int16_t *in, int d, int h, int w, aug_box b,
                         int flip, const int *order, float lo, float hi, float mean, float std) {
    float k = 255.0f / (hi - lo);
#define MAP_I16(v) (((PL_CLAMP((float)(v), lo, hi) - lo) * k - mean) / std)
    CROP_RESIZE_BODY(int16_t, MAP_I16)
#undef MAP_I16
}
