// synth_common: the leaf helpers every synth writer uses — per-item random streams and the
// shapes drawn by the ImageNet and COCO generators (declared in synth.h). It calls nothing else
// of stages/synth/, so the driver (synth.c) -> writers (synth_{dl,imagenet,coco}.c) -> common
// dependency runs one way.
#include <math.h>
#include <string.h>

#include "nn/pl.h"
#include "stages/synth/synth.h"

static const double PI = 3.14159265358979323846;

void synth_rng_init(pl_rng *r, uint64_t seed, uint64_t tag, uint64_t index) {
    uint64_t key[3] = {seed, tag, index};
    pl_rng_seed(r, pl_fnv1a(key, sizeof key, PL_FNV_INIT));
}

// ---- shapes (ImageNet and COCO) ------------------------------------------------
// Signed distance (px, positive inside) of (x, y) to the shape's outline.
static double shape_sd(const synth_shape *s, double x, double y) {
    double dx = x - s->cx, dy = y - s->cy;
    double c = cos(s->ang), n = sin(s->ang);
    double lx = dx * c + dy * n, ly = -dx * n + dy * c;
    double r = s->size, d = sqrt(dx * dx + dy * dy);
    switch (s->kind) {
    case SHAPE_DISC: return r - d;
    case SHAPE_SQUARE: return fmin(r - fabs(lx), r - fabs(ly));
    case SHAPE_TRIANGLE: {
        double sd = 1e30;   // equilateral, circumradius r: inradius r/2
        for (int k = 0; k < 3; k++) {
            double a = s->ang - PI / 2 + 2 * PI * k / 3 + PI;
            sd = fmin(sd, r / 2 - (dx * cos(a) + dy * sin(a)));
        }
        return sd;
    }
    case SHAPE_RING: return fmin(r - d, d - 0.55 * r);
    case SHAPE_CROSS: {
        double w = 0.3 * r;
        return fmax(fmin(r - fabs(lx), w - fabs(ly)), fmin(w - fabs(lx), r - fabs(ly)));
    }
    default: return -1e30;
    }
}

double synth_shape_cover(const synth_shape *s, double x, double y) {
    double v = shape_sd(s, x, y) + 0.5;
    return v < 0 ? 0 : v > 1 ? 1 : v;
}

int synth_shape_polygon(double *xy, const synth_shape *s) {
    double c = cos(s->ang), n = sin(s->ang), r = s->size;
    double loc[32][2];
    int np = 0;
    switch (s->kind) {
    case SHAPE_DISC:
    case SHAPE_RING:
        np = 24;
        for (int k = 0; k < np; k++) {
            loc[k][0] = r * cos(2 * PI * k / np);
            loc[k][1] = r * sin(2 * PI * k / np);
        }
        break;
    case SHAPE_SQUARE: {
        static const double q[4][2] = {{-1, -1}, {1, -1}, {1, 1}, {-1, 1}};
        np = 4;
        for (int k = 0; k < 4; k++) {
            loc[k][0] = r * q[k][0];
            loc[k][1] = r * q[k][1];
        }
        break;
    }
    case SHAPE_TRIANGLE:
        // vertices opposite the three edges of shape_sd (local frame, apex up)
        np = 3;
        for (int k = 0; k < 3; k++) {
            double a = -PI / 2 + 2 * PI * k / 3;
            loc[k][0] = r * cos(a);
            loc[k][1] = r * sin(a);
        }
        break;
    case SHAPE_CROSS: {
        double w = 0.3 * r;
        const double q[12][2] = {{-w, -r}, {w, -r}, {w, -w}, {r, -w}, {r, w}, {w, w},
                                 {w, r}, {-w, r}, {-w, w}, {-r, w}, {-r, -w}, {-w, -w}};
        np = 12;
        memcpy(loc, q, sizeof q);
        break;
    }
    default: return 0;
    }
    for (int k = 0; k < np; k++) {
        xy[2 * k] = s->cx + loc[k][0] * c - loc[k][1] * n;
        xy[2 * k + 1] = s->cy + loc[k][0] * n + loc[k][1] * c;
    }
    return np;
}
