// synth_dl: a DeepLesion look-alike. CT-like body phantoms (air, subcutaneous fat, muscle wall,
// lungs with vessels, mediastinum, heart, liver, spleen, stomach, kidneys, bowel, spine, ribs,
// pelvic bones, bladder) whose anatomy changes smoothly with the body position z (mm, 0 = lung
// apex), with 3D ellipsoidal lesions of the eight coarse types placed inside the organ they are
// named after. Written as Images_png_NN.zip (16-bit PNG, value = HU + 32768) + DL_info.csv +
// synth_truth.csv (the ground truth of every lesion, for tests). Pixel coordinates are 0-based
// inside this file and 1-based in the CSVs, as in the release.
#include <glob.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/archive.h"
#include "io/dlinfo.h"
#include "io/fileio.h"
#include "io/image.h"
#include "io/runlog.h"
#include "nn/pl.h"
#include "stages/synth/synth.h"

// ---- constants -------------------------------------------------------------------------
static const double PI = 3.14159265358979323846;
static const uint64_t TAG_PATIENT = 0x444c5041, TAG_SERIES = 0x444c5345, TAG_NOISE = 0x444c4e4f,
                      TAG_SPLIT = 0x444c5350, TAG_ZIP = 0x444c5a49;
static const double HU_MIN = -1024, HU_MAX = 3071;   // 12-bit CT range
static const int BOX_PAD = 5;                        // DL_info: boxes = RECIST extent + 5 px
static const double EDGE_MARGIN_MM = 12;             // key slices of non-edge lesions keep this much data
static const double NOISY_FRACTION = 0.03;           // Possibly_noisy = 1 rate
static const double MIN_CONTRAST = 50;               // HU between a lesion and its surroundings

typedef struct {
    int size;                  // image side (px)
    int key_slices;            // target number of key slices
    int keys_per_series_max;
    double dmin_px, dmax_px;   // lesion long-diameter range (log-uniform)
    double context_mm;         // Slice_range half-width around a key slice
    int series_per_zip_lo, series_per_zip_hi;
    double edge_rate;          // fraction of series whose first key slice is at the volume edge
} dl_scale_par;

static const dl_scale_par DL_SCALES[3] = {
    {128, 12, 3, 6, 22, 20, 2, 3, 0.15},        // tiny: unit tests, a few seconds
    {256, 200, 4, 8, 40, 20, 4, 7, 0.08},       // small: the demo, lesions 8-40 px across
    {512, 1000, 5, 10, 75, 30, 8, 14, 0.06},    // medium
};

enum dl_label {
    L_AIR, L_FAT, L_MUSCLE, L_CHEST, L_ABD_FAT, L_PELV_FAT, L_LUNG, L_MEDIAST, L_HEART, L_VESSEL,
    L_LIVER, L_SPLEEN, L_KIDNEY, L_BOWEL, L_CORTEX, L_BONE, L_CANAL, L_BLADDER, L_TABLE, L_NLABELS
};

typedef struct {
    double cx, cy, a, b, ang, hu;   // ellipse: centre (px), semi-axes (px), rotation (rad), HU
    int label;
} dl_prim;

enum { DL_MAXPRIM = 192, DL_NVESSEL = 12, DL_NBOWEL = 18, DL_MAXLES = 16 };

typedef struct {
    dl_prim p[DL_MAXPRIM];
    int n;
    double body_cx, body_cy, body_a, body_b;   // px
} dl_scene;

typedef struct {
    int index;                 // Patient_index
    double cx, cy, A, B;       // body centre and semi-axes (px) at z = 0
    double fat;                // subcutaneous fat thickness (fraction of the semi-axes)
    double phase, rib_phase, disc_phase, liver_hu;
    double vessel[2][DL_NVESSEL][5];   // per lung: u0, v0, du, dv (per 100 mm), radius (px)
    double bowel[DL_NBOWEL][8];        // u0, v0, du, dv, radius (cavity units), z1, z2, gas
    char gender;
    int age, split, nstudies;
} dl_patient;

typedef struct {
    int type;                  // Coarse_lesion_type 1..8
    double cx, cy;             // centre (px, 0-based)
    double zc;                 // centre (body mm)
    double a, b, c;            // semi-axes: in-plane (px, a >= b), z (mm)
    double ang;                // rotation of the a axis (rad)
    double lob, lob_phase;     // lobulation amplitude and phase (k = 3)
    int lob_k;
    double hu, core_hu;        // lesion HU; core HU (necrotic centre) when core_hu != hu
    int key;                   // key slice (1-based slice number in the series)
    int noisy, edge;
    double bg_hu;              // mean noise-free background under the key-slice cross-section
    double recist[8], diam[2], bbox[4];
} dl_les;

typedef struct {
    int patient, study, series;   // 1-based
    double dz, sx;                // slice interval (mm), xy spacing (mm/px)
    double z0;                    // body z of slice 1 (mm)
    int nslices;                  // slices in the full volume (not all written)
    double noise;                 // HU sigma
    double window[2];
    int nles;
    dl_les les[DL_MAXLES];
    int64_t first_row;            // index of its first DL_info row
} dl_series;

typedef struct {
    const dl_scale_par *sp;
    int W;
    dl_patient *pat; int npat;
    dl_series *ser; int nser, cap_ser;
    float *hu;                    // (W, W) scratch
    uint8_t *lab;                 // (W, W) scratch
    int64_t *cand;                // (W*W) candidate pixel list
} dl_ctx;

// ---- small helpers -----------------------------------------------------------------------
static double r3(double v) { return round(v * 1000.0) / 1000.0; }
static double r4(double v) { return round(v * 10000.0) / 10000.0; }
static double clampd(double v, double lo, double hi) { return v < lo ? lo : v > hi ? hi : v; }

// Dome profile: 0 outside [z1, z2], 1 at the middle, sqrt-shaped at the ends.
static double prof(double z, double z1, double z2) {
    if (z <= z1 || z >= z2) return 0;
    return sqrt(sin(PI * (z - z1) / (z2 - z1)));
}

static void scene_add(dl_scene *s, double cx, double cy, double a, double b, double ang, double hu,
                      int label) {
    if (s->n >= DL_MAXPRIM || a <= 0.2 || b <= 0.2) return;
    s->p[s->n++] = (dl_prim){cx, cy, a, b, ang, hu, label};
}

// ---- anatomy ------------------------------------------------------------------------------
// Frame of the body cavity: offsets (u, v) and semi-axes in units of the cavity's semi-axes.
typedef struct { double cx, cy, ac, bc; } cav_frame;

static void cav_add(dl_scene *s, const cav_frame *f, double u, double v, double sa, double sb,
                    double ang, double hu, int label) {
    scene_add(s, f->cx + u * f->ac, f->cy + v * f->bc, sa * f->ac, sb * f->bc, ang, hu, label);
}
// Circle of radius r (in cavity-a units) with a cortex shell: bone.
static void cav_bone(dl_scene *s, const cav_frame *f, double u, double v, double sa, double sb,
                     double ang, double cortex_hu, double marrow_hu) {
    cav_add(s, f, u, v, sa, sb, ang, cortex_hu, L_CORTEX);
    cav_add(s, f, u, v, sa * 0.72, sb * 0.72, ang, marrow_hu, L_BONE);
}

// Builds the primitives of one axial slice at body position z (mm), back to front.
static void scene_build(dl_scene *s, const dl_patient *p, double z, int W) {
    s->n = 0;
    double A = p->A * (1 + 0.04 * sin(z / 70 + p->phase)) * (z > 450 ? 1.05 : 1.0);
    double B = p->B * (1 + 0.03 * sin(z / 55 + 2 * p->phase)) * (z < 240 ? 1.04 : 1.0);
    s->body_cx = p->cx;
    s->body_cy = p->cy;
    s->body_a = A;
    s->body_b = B;
    // patient table under the body
    scene_add(s, p->cx, p->cy + B + 0.035 * W, 0.42 * W, 0.008 * W, 0, 120, L_TABLE);
    scene_add(s, p->cx, p->cy, A, B, 0, -105, L_FAT);
    double in = 1 - p->fat;
    scene_add(s, p->cx, p->cy, A * in, B * in, 0, 45, L_MUSCLE);
    double cav = in - 0.075;
    cav_frame f = {p->cx, p->cy, A * cav, B * cav};
    int region = z < 235 ? 0 : z < 455 ? 1 : 2;   // chest, abdomen, pelvis
    if (region == 0) cav_add(s, &f, 0, 0, 1, 1, 0, 35, L_CHEST);
    else cav_add(s, &f, 0, 0, 1, 1, 0, -75, region == 1 ? L_ABD_FAT : L_PELV_FAT);

    // ribs and sternum, just inside the muscle wall
    if (z > -20 && z < 330) {
        for (int k = 0; k < 14; k++) {
            double phi = p->rib_phase + 2 * PI * k / 14.0;
            double sn = sin(phi), cs = cos(phi);
            if (sn > 0.93 || sn < -0.95) continue;   // no rib over the spine or the sternum
            if (cos(2 * PI * z / 22.0 + 0.7 * k) < 0.25) continue;
            double rr = in - 0.035;
            scene_add(s, p->cx + cs * A * rr, p->cy + sn * B * rr, 0.035 * W, 0.012 * W,
                      atan2(B * cs, -A * sn), 800, L_CORTEX);
        }
        if (z > 40 && z < 220)
            scene_add(s, p->cx, p->cy - B * (in - 0.03), 0.03 * W, 0.012 * W, 0, 600, L_CORTEX);
    }

    // chest: mediastinal fat, lungs with vessels, heart, aorta
    if (z > 0 && z < 250) cav_add(s, &f, 0.05, -0.15, 0.24, 0.62, 0, -80, L_MEDIAST);
    for (int side = 0; side < 2; side++) {
        double zend = side == 0 ? 235 : 255;   // the right lung (image left) ends above the liver
        double g;
        if (z <= -10 || z >= zend) g = 0;
        else if (z < 120) g = sqrt(sin(0.5 * PI * (z + 10) / 130));
        else g = sqrt(1 - pow((z - 120) / (zend - 120), 2));
        if (g < 0.15) continue;
        double u = side == 0 ? -0.5 : 0.5, v = -0.05 + 0.12 * (1 - g);
        double sa = 0.42 * (0.5 + 0.5 * g), sb = 0.74 * g;
        cav_add(s, &f, u, v, sa, sb, 0, -850, L_LUNG);
        for (int k = 0; k < DL_NVESSEL; k++) {
            const double *vs = p->vessel[side][k];
            double vu = vs[0] + vs[2] * z / 100, vv = vs[1] + vs[3] * z / 100;
            if (vu * vu + vv * vv > 0.75) continue;
            scene_add(s, f.cx + (u + vu * sa) * f.ac, f.cy + (v + vv * sb) * f.bc, vs[4], vs[4], 0, 30,
                      L_VESSEL);
        }
    }
    double gh = prof(z, 110, 250);
    if (gh > 0.25) cav_add(s, &f, 0.12, -0.12, 0.36 * gh, 0.5 * gh, 0.3, 40, L_HEART);
    if (z > 50 && z < 140) cav_add(s, &f, 0.0, -0.32, 0.07, 0.07 * f.ac / f.bc, 0, 45, L_VESSEL);

    // abdomen: bowel first (organs lie over it), then stomach, liver, spleen, kidneys, psoas
    for (int k = 0; k < DL_NBOWEL; k++) {
        const double *bw = p->bowel[k];
        if (z < bw[5] || z > bw[6]) continue;
        double t = (z - bw[5]) / 100;
        double u = bw[0] + bw[2] * t, v = bw[1] + bw[3] * t, r = bw[4];
        cav_add(s, &f, u, v, r, r * f.ac / f.bc, 0, 38, L_BOWEL);
        cav_add(s, &f, u, v, 0.62 * r, 0.62 * r * f.ac / f.bc, 0, bw[7] > 0.5 ? -900 : 12, L_BOWEL);
    }
    double gs = prof(z, 200, 300);
    if (gs > 0.25) {
        cav_add(s, &f, 0.35, -0.35, 0.3 * gs, 0.22 * gs, 0.2, 20, L_BOWEL);
        cav_add(s, &f, 0.33, -0.48, 0.15 * gs, 0.07 * gs, 0.2, -950, L_BOWEL);
    }
    double gl = prof(z, 185, 385);
    if (gl > 0.15)
        cav_add(s, &f, -0.38 + 0.05 * (1 - gl), -0.05, 0.52 * (0.4 + 0.6 * gl), 0.7 * (0.3 + 0.7 * gl), 0.2,
                p->liver_hu, L_LIVER);
    double gp = prof(z, 215, 320);
    if (gp > 0.25) cav_add(s, &f, 0.62, 0.3, 0.2 * gp, 0.35 * gp, -0.5, 48, L_SPLEEN);
    double gk = prof(z, 290, 410);
    if (gk > 0.25) {
        for (int side = -1; side <= 1; side += 2) {
            cav_add(s, &f, 0.45 * side, 0.5, 0.16 * gk, 0.24 * gk, 0.35 * side, 32, L_KIDNEY);
            cav_add(s, &f, 0.37 * side, 0.5, 0.05 * gk, 0.1 * gk, 0.35 * side, -40, L_ABD_FAT);
        }
    }
    double gm = prof(z, 320, 540);
    if (gm > 0.25)
        for (int side = -1; side <= 1; side += 2)
            cav_add(s, &f, 0.25 * side, 0.55, 0.12 * gm, 0.14 * gm, 0, 45, L_MUSCLE);
    if (z > 40 && z < 470) cav_add(s, &f, 0.08, 0.42, 0.06, 0.06 * f.ac / f.bc, 0, 45, L_VESSEL);

    // pelvis: iliac wings, sacrum, bladder, rectum, femoral heads
    double gi = prof(z, 430, 570);
    if (gi > 0.25)
        for (int side = -1; side <= 1; side += 2)
            cav_bone(s, &f, 0.72 * side, 0.15, 0.13 * (0.5 + 0.5 * gi), 0.45 * gi, 0.4 * side, 800, 260);
    double gc = prof(z, 440, 545);
    if (gc > 0.25) cav_bone(s, &f, 0, 0.66, 0.3 * gc, 0.17 * gc, 0, 700, 250);
    double gb = prof(z, 500, 650);
    if (gb > 0.25) cav_add(s, &f, 0, -0.35, 0.32 * gb, 0.3 * gb, 0, 8, L_BLADDER);
    double gr = prof(z, 480, 650);
    if (gr > 0.25) {
        cav_add(s, &f, 0, 0.42, 0.1, 0.1 * f.ac / f.bc, 0, 30, L_BOWEL);
        cav_add(s, &f, 0, 0.42, 0.05, 0.05 * f.ac / f.bc, 0, -900, L_BOWEL);
    }
    double gf = prof(z, 570, 680);
    if (gf > 0.25)
        for (int side = -1; side <= 1; side += 2)
            cav_bone(s, &f, 0.68 * side, 0.05, 0.17 * gf, 0.17 * gf * f.ac / f.bc, 0, 850, 300);

    // spine: paraspinal muscles, vertebral body (or disc), canal, spinous process
    if (z < 480) {
        double rv = 0.16 * f.ac;
        double vy = f.cy + 0.62 * f.bc;
        for (int side = -1; side <= 1; side += 2)
            cav_add(s, &f, 0.25 * side, 0.86, 0.2, 0.14, 0, 50, L_MUSCLE);
        int disc = fmod(z + p->disc_phase + 3000, 30.0) < 7;
        scene_add(s, f.cx, vy, rv, rv, 0, 900, L_CORTEX);
        scene_add(s, f.cx, vy, 0.78 * rv, 0.78 * rv, 0, disc ? 90 : 230, disc ? L_MUSCLE : L_BONE);
        scene_add(s, f.cx, vy + 1.55 * rv, 0.42 * rv, 0.42 * rv, 0, 15, L_CANAL);
        scene_add(s, f.cx, vy + 2.5 * rv, 0.16 * rv, 0.5 * rv, 0, 700, L_CORTEX);
    }
}

// Paints one soft-edged ellipse (edge about 1 px wide) into hu (and lab when not NULL).
// A lesion uses lobulation: the boundary radius is scaled by 1 + lob * cos(k * phi + phase).
static void paint_ellipse(float *hu, uint8_t *lab, int W, double cx, double cy, double a, double b,
                          double ang, double val, int label, double lob, int lob_k, double lob_phase) {
    double cs = cos(ang), sn = sin(ang);
    double ext = (1 + fabs(lob)) * 1.0;
    double hx = sqrt(a * a * cs * cs + b * b * sn * sn) * ext + 1.5;
    double hy = sqrt(a * a * sn * sn + b * b * cs * cs) * ext + 1.5;
    int x0 = (int)floor(cx - hx), x1 = (int)ceil(cx + hx);
    int y0 = (int)floor(cy - hy), y1 = (int)ceil(cy + hy);
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > W - 1) x1 = W - 1;
    if (y1 > W - 1) y1 = W - 1;
    // Without lobulation the local boundary radius lies in [min(a,b), max(a,b)], so pixels with
    // d <= 1 - 0.5/min are fully inside and d >= 1 + 0.5/min fully outside (no sqrt needed).
    double rmin = fmin(a, b);
    double din = lob == 0 ? fmax(0, 1 - 0.5 / rmin) : 0, dout = lob == 0 ? 1 + 0.5 / rmin : 1e30;
    double din2 = din * din, dout2 = dout * dout;
    for (int y = y0; y <= y1; y++) {
        for (int x = x0; x <= x1; x++) {
            double dx = x - cx, dy = y - cy;
            double xr = dx * cs + dy * sn, yr = -dx * sn + dy * cs;
            double q = (xr / a) * (xr / a) + (yr / b) * (yr / b);
            if (q >= dout2) continue;
            double alpha = 1;
            if (q > din2) {
                double d = sqrt(q);
                if (lob != 0 && d > 0) d /= 1 + lob * cos(lob_k * atan2(yr / b, xr / a) + lob_phase);
                double rho = sqrt(dx * dx + dy * dy);
                // distance to the boundary along the ray, in px: (1 - d) * rho / d
                double edge = d > 1e-9 ? (1 - d) * rho / d : 1e9;
                alpha = clampd(0.5 + edge, 0, 1);
                if (alpha <= 0) continue;
            }
            size_t i = (size_t)y * (size_t)W + (size_t)x;
            hu[i] += (float)(alpha * (val - hu[i]));
            if (lab && alpha >= 0.5) lab[i] = (uint8_t)label;
        }
    }
}

static void scene_render(float *hu, uint8_t *lab, const dl_scene *s, int W) {
    for (size_t i = 0; i < (size_t)W * (size_t)W; i++) hu[i] = -1000;
    if (lab) memset(lab, L_AIR, (size_t)W * (size_t)W);
    for (int k = 0; k < s->n; k++) {
        const dl_prim *p = &s->p[k];
        paint_ellipse(hu, lab, W, p->cx, p->cy, p->a, p->b, p->ang, p->hu, p->label, 0, 0, 0);
    }
}

// In-plane semi-axes scale of lesion l at body position z (0 = not cut by this slice).
static double lesion_scale(const dl_les *l, double z) {
    double t = (z - l->zc) / l->c;
    return t * t < 1 ? sqrt(1 - t * t) : 0;
}

static void lesion_paint(float *hu, uint8_t *lab, int W, const dl_les *l, double z, int label) {
    double s = lesion_scale(l, z);
    if (s * l->b < 0.3) return;
    paint_ellipse(hu, lab, W, l->cx, l->cy, l->a * s, l->b * s, l->ang, l->hu, label, l->lob, l->lob_k,
                  l->lob_phase);
    if (l->core_hu != l->hu)
        paint_ellipse(hu, NULL, W, l->cx, l->cy, 0.45 * l->a * s, 0.45 * l->b * s, l->ang, l->core_hu, label,
                      l->lob, l->lob_k, l->lob_phase);
}

// ---- patients and lesion planning ---------------------------------------------------------
static void patient_init(dl_patient *p, uint64_t seed, int index, int W) {
    pl_rng r;
    synth_rng_init(&r, seed, TAG_PATIENT, (uint64_t)index);
    memset(p, 0, sizeof *p);
    p->index = index;
    double s = pl_rng_range(&r, 0.88, 1.05);
    p->A = 0.40 * W * s;
    p->B = 0.27 * W * s * pl_rng_range(&r, 0.92, 1.08);
    p->cx = W * 0.5 + pl_rng_range(&r, -0.03, 0.03) * W;
    p->cy = W * 0.5 + pl_rng_range(&r, -0.01, 0.04) * W;
    p->fat = pl_rng_range(&r, 0.06, 0.14);
    p->phase = pl_rng_range(&r, 0, 2 * PI);
    p->rib_phase = pl_rng_range(&r, 0, 0.4);
    p->disc_phase = pl_rng_range(&r, 0, 30);
    p->liver_hu = pl_rng_range(&r, 55, 65);
    for (int side = 0; side < 2; side++)
        for (int k = 0; k < DL_NVESSEL; k++) {
            double *v = p->vessel[side][k];
            double rad = sqrt(pl_rng_uniform(&r)) * 0.8, th = pl_rng_range(&r, 0, 2 * PI);
            v[0] = rad * cos(th);
            v[1] = rad * sin(th);
            v[2] = pl_rng_range(&r, -0.25, 0.25);
            v[3] = pl_rng_range(&r, -0.25, 0.25);
            v[4] = pl_rng_range(&r, 0.005, 0.013) * W;
        }
    for (int k = 0; k < DL_NBOWEL; k++) {
        double *b = p->bowel[k];
        double rad = sqrt(pl_rng_uniform(&r)) * 0.6, th = pl_rng_range(&r, 0, 2 * PI);
        b[0] = rad * cos(th);
        b[1] = rad * sin(th) * 0.8 - 0.1;
        b[2] = pl_rng_range(&r, -0.3, 0.3);
        b[3] = pl_rng_range(&r, -0.3, 0.3);
        b[4] = pl_rng_range(&r, 0.07, 0.12);
        b[5] = pl_rng_range(&r, 280, 520);
        b[6] = b[5] + pl_rng_range(&r, 30, 120);
        b[7] = pl_rng_uniform(&r) < 0.4;
    }
    p->gender = pl_rng_uniform(&r) < 0.5 ? 'M' : 'F';
    p->age = (int)pl_rng_int(&r, 18, 88);
    p->nstudies = pl_rng_uniform(&r) < 0.6 ? 1 : 2;
}

// Where each coarse type lives: body z range (mm), the labels it may occupy (the first is
// where its centre must be) and the fraction of the lesion disc that must lie in them.
typedef struct { double z1, z2; int labels[3]; int nlabels; double frac; } dl_type_site;
static const dl_type_site DL_SITES[9] = {
    {0, 0, {0}, 0, 0},
    {0, 560, {L_BONE}, 1, 0.85},                          // 1 bone
    {280, 455, {L_ABD_FAT}, 1, 0.72},                     // 2 abdomen
    {20, 160, {L_MEDIAST, L_VESSEL}, 2, 0.8},             // 3 mediastinum
    {215, 350, {L_LIVER}, 1, 0.97},                       // 4 liver
    {40, 215, {L_LUNG, L_VESSEL}, 2, 0.93},               // 5 lung
    {310, 390, {L_KIDNEY}, 1, 0.6},                       // 6 kidney
    {0, 600, {L_FAT, L_MUSCLE}, 2, 0.96},                 // 7 soft tissue
    {470, 620, {L_PELV_FAT}, 1, 0.72},                    // 8 pelvis
};

static double lesion_hu_for(int type, pl_rng *r) {
    switch (type) {
    case 1: return pl_rng_uniform(r) < 0.35 ? pl_rng_range(r, 0, 60) : pl_rng_range(r, 650, 900);
    case 4: return pl_rng_uniform(r) < 0.7 ? pl_rng_range(r, 5, 25) : pl_rng_range(r, 95, 120);
    case 5: return pl_rng_range(r, -40, 30);
    case 6: return pl_rng_uniform(r) < 0.5 ? pl_rng_range(r, -10, 5) : pl_rng_range(r, 85, 110);
    case 7: return pl_rng_range(r, 55, 80);
    default: return pl_rng_range(r, 30, 55);   // nodes and masses in fat: abdomen, mediastinum, pelvis
    }
}

static int in_site(int label, const dl_type_site *st) {
    for (int i = 0; i < st->nlabels; i++)
        if (label == st->labels[i]) return 1;
    return 0;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

// Keeps a lesion visible: its HU differs by >= MIN_CONTRAST from the mean background under its
// ellipse and from the median of the band 2-7 px around it (about the padding band of its box,
// what a reader compares it with). When the drawn HU is too close, it moves to the nearest
// value that satisfies both. Needs the geometry (cx, cy, a, b, ang) set; returns the mean
// background under the ellipse.
static double lesion_keep_visible(dl_les *l, const float *bg, int W) {
    const double x = l->cx, y = l->cy, cs = cos(l->ang), sn = sin(l->ang);
    int r = (int)ceil(l->a + 8);
    float *band = pl_malloc(sizeof *band * (size_t)(2 * r + 1) * (size_t)(2 * r + 1), "lesion band");
    PL_ASSERT(band);
    double in_sum = 0;
    int in_n = 0, nb = 0;
    for (int yy = (int)floor(y) - r; yy <= (int)floor(y) + r; yy++)
        for (int xx = (int)floor(x) - r; xx <= (int)floor(x) + r; xx++) {
            if (xx < 0 || yy < 0 || xx >= W || yy >= W) continue;
            double dx = xx - x, dy = yy - y, xr = dx * cs + dy * sn, yr = -dx * sn + dy * cs;
            double q0 = pow(xr / l->a, 2) + pow(yr / l->b, 2);
            double q2 = pow(xr / (l->a + 2), 2) + pow(yr / (l->b + 2), 2);
            double q7 = pow(xr / (l->a + 7), 2) + pow(yr / (l->b + 7), 2);
            float v = bg[(size_t)yy * W + xx];
            if (q0 <= 1) {
                in_sum += v;
                in_n++;
            } else if (q2 > 1 && q7 <= 1) {
                band[nb++] = v;
            }
        }
    double b_in = in_n ? in_sum / in_n : l->hu;
    double b_band = b_in;
    if (nb) {
        qsort(band, (size_t)nb, sizeof *band, cmp_float);
        b_band = band[nb / 2];
    }
    free(band);
    double lo = fmin(b_in, b_band), hi = fmax(b_in, b_band);
    int ok = fabs(l->hu - b_in) >= MIN_CONTRAST && fabs(l->hu - b_band) >= MIN_CONTRAST;
    if (!ok) {
        // candidates: below both, above both, or between them when they are far apart
        double below = lo - MIN_CONTRAST, above = hi + MIN_CONTRAST;
        double best = fabs(l->hu - below) < fabs(l->hu - above) ? below : above;
        if (hi - lo >= 2 * MIN_CONTRAST) {
            double mid = PL_CLAMP(l->hu, lo + MIN_CONTRAST, hi - MIN_CONTRAST);
            if (fabs(l->hu - mid) < fabs(l->hu - best)) best = mid;
        }
        l->hu = best;
    }
    return b_in;
}

// Tries to place a lesion of `type` on the key slice whose label map is in ctx->lab; 1 if placed.
static int lesion_place(dl_ctx *cx, dl_series *se, dl_les *l, int type, double zkey, int key,
                        pl_rng *r) {
    const dl_type_site *st = &DL_SITES[type];
    const int W = cx->W;
    int64_t nc = 0;
    for (int64_t i = 0; i < (int64_t)W * W; i++)
        if (cx->lab[i] == st->labels[0]) cx->cand[nc++] = i;
    if (nc == 0) return 0;
    double dmin = cx->sp->dmin_px, dmax = cx->sp->dmax_px;
    double a = 0.5 * exp(pl_rng_range(r, log(dmin), log(dmax)));
    double ratio = pl_rng_range(r, 0.55, 1.0);
    for (int shrink = 0; shrink < 6; shrink++, a *= 0.8) {
        if (2 * a < 0.75 * dmin) break;
        for (int attempt = 0; attempt < 60; attempt++) {
            int64_t i = cx->cand[pl_rng_int(r, 0, nc - 1)];
            double x = (double)(i % W) + pl_rng_range(r, -0.5, 0.5);
            double y = (double)(i / W) + pl_rng_range(r, -0.5, 0.5);
            double rr = a + 1;
            if (x - rr < 2 || y - rr < 2 || x + rr > W - 3 || y + rr > W - 3) continue;
            int in = 0, tot = 0;
            for (int yy = (int)floor(y - rr); yy <= (int)ceil(y + rr); yy++)
                for (int xx = (int)floor(x - rr); xx <= (int)ceil(x + rr); xx++) {
                    double dx = xx - x, dy = yy - y;
                    if (dx * dx + dy * dy > rr * rr) continue;
                    tot++;
                    in += in_site(cx->lab[(size_t)yy * W + xx], st);
                }
            if (tot == 0 || in < st->frac * tot) continue;
            double c = fmax(a * se->sx * pl_rng_range(r, 0.7, 1.3), 1.2 * se->dz);
            double zc = zkey + pl_rng_range(r, -0.45, 0.45) * se->dz;
            int clash = 0;
            for (int k = 0; k < se->nles && !clash; k++) {
                const dl_les *o = &se->les[k];
                double dzp = (zc - o->zc) / se->sx, dxp = x - o->cx, dyp = y - o->cy;
                double need = 1.15 * (a + o->a) + 3;
                double needz = (c + o->c) / se->sx;
                if (dxp * dxp + dyp * dyp < need * need && fabs(dzp) < needz + 2) clash = 1;
            }
            if (clash) continue;
            memset(l, 0, sizeof *l);
            l->type = type;
            l->cx = x;
            l->cy = y;
            l->zc = zc;
            l->a = a;
            l->b = a * ratio;
            l->c = c;
            l->ang = pl_rng_range(r, 0, PI);
            l->lob = pl_rng_uniform(r) < 0.5 ? pl_rng_range(r, 0.03, 0.12) : 0;
            l->lob_k = (int)pl_rng_int(r, 2, 4);
            l->lob_phase = pl_rng_range(r, 0, 2 * PI);
            l->hu = lesion_hu_for(type, r);
            double under = lesion_keep_visible(l, cx->hu, W);
            l->core_hu = l->hu;
            // a necrotic (darker) centre in some large hypodense masses: more contrast, not less
            if (a > 12 && type != 1 && type != 5 && l->hu < under && pl_rng_uniform(r) < 0.3) l->core_hu = l->hu - 25;
            l->key = key;
            l->noisy = pl_rng_uniform(r) < NOISY_FRACTION;
            return 1;
        }
    }
    return 0;
}

// Measures RECIST axes on the key slice from the lesion's own cross-section (pixel centres
// where it covers >= half a pixel), and the mean noise-free background under it.
static void lesion_measure(dl_ctx *cx, dl_les *l, double zkey, const float *bg) {
    const int W = cx->W;
    const size_t n = (size_t)W * (size_t)W;
    float *m = pl_malloc(n * sizeof *m, "lesion mask");
    uint8_t *ml = pl_malloc(n, "lesion mask labels");
    PL_ASSERT(m && ml);
    for (size_t i = 0; i < n; i++) m[i] = 0;
    memset(ml, 0, n);
    dl_les one = *l;
    one.hu = one.core_hu = 1;
    lesion_paint(m, ml, W, &one, zkey, 1);
    // pixel list
    int64_t np = 0;
    double bgsum = 0;
    for (size_t i = 0; i < n; i++)
        if (ml[i]) {
            cx->cand[np++] = (int64_t)i;
            bgsum += bg[i];
        }
    PL_ASSERT(np > 0);
    l->bg_hu = bgsum / (double)np;
    // long axis: the farthest pair of mask pixels (boundary pixels suffice)
    double best = -1;
    int64_t pa = cx->cand[0], pb = cx->cand[0];
    for (int64_t i = 0; i < np; i++) {
        int64_t p = cx->cand[i];
        int x = (int)(p % W), y = (int)(p / W);
        int inner = x > 0 && y > 0 && x < W - 1 && y < W - 1 && ml[p - 1] && ml[p + 1] && ml[p - W] && ml[p + W];
        if (inner) continue;
        for (int64_t j = 0; j < np; j++) {
            int64_t q = cx->cand[j];
            double dx = (double)(q % W) - x, dy = (double)(q / W) - y;
            double d2 = dx * dx + dy * dy;
            if (d2 > best) {
                best = d2;
                pa = p;
                pb = q;
            }
        }
    }
    double ax = (double)(pa % W), ay = (double)(pa / W), bx = (double)(pb % W), by = (double)(pb / W);
    double len = sqrt(best);
    double ux = len > 0 ? (bx - ax) / len : 1, uy = len > 0 ? (by - ay) / len : 0;
    // short axis: the widest extent perpendicular to the long axis, on one perpendicular line
    int nb = (int)ceil(len) + 3;
    double *smin = pl_malloc(sizeof(double) * 2 * (size_t)nb, "recist bins");
    PL_ASSERT(smin);
    double *smax = smin + nb;
    for (int i = 0; i < nb; i++) {
        smin[i] = 1e30;
        smax[i] = -1e30;
    }
    for (int64_t i = 0; i < np; i++) {
        int64_t p = cx->cand[i];
        double dx = (double)(p % W) - ax, dy = (double)(p / W) - ay;
        double t = dx * ux + dy * uy, s = -dx * uy + dy * ux;
        int bi = (int)lround(t) + 1;
        if (bi < 0 || bi >= nb) continue;
        if (s < smin[bi]) smin[bi] = s;
        if (s > smax[bi]) smax[bi] = s;
    }
    int bbest = 1;
    for (int i = 0; i < nb; i++)
        if (smax[i] - smin[i] > smax[bbest] - smin[bbest]) bbest = i;
    double tb = bbest - 1;
    double s0 = smin[bbest] < 1e29 ? smin[bbest] : 0, s1 = smax[bbest] > -1e29 ? smax[bbest] : 0;
    double cxs = ax + tb * ux, cys = ay + tb * uy;
    double c3x = cxs - s0 * uy, c3y = cys + s0 * ux, c4x = cxs - s1 * uy, c4y = cys + s1 * ux;
    free(smin);
    // 1-based coordinates as in the release
    double pts[8] = {ax + 1, ay + 1, bx + 1, by + 1, c3x + 1, c3y + 1, c4x + 1, c4y + 1};
    for (int i = 0; i < 8; i++) l->recist[i] = r3(pts[i]);
    l->diam[0] = r3(len);
    l->diam[1] = r3(s1 - s0);
    double x0 = 1e30, y0 = 1e30, x1 = -1e30, y1 = -1e30;
    for (int i = 0; i < 4; i++) {
        x0 = fmin(x0, l->recist[2 * i]);
        x1 = fmax(x1, l->recist[2 * i]);
        y0 = fmin(y0, l->recist[2 * i + 1]);
        y1 = fmax(y1, l->recist[2 * i + 1]);
    }
    l->bbox[0] = r3(fmax(1, x0 - BOX_PAD));
    l->bbox[1] = r3(fmax(1, y0 - BOX_PAD));
    l->bbox[2] = r3(fmin(W, x1 + BOX_PAD));
    l->bbox[3] = r3(fmin(W, y1 + BOX_PAD));
    free(m);
    free(ml);
}

static const double DZ_CHOICES[6] = {1.0, 1.25, 2.0, 2.5, 3.0, 5.0};
static const double DZ_WEIGHTS[6] = {0.08, 0.12, 0.05, 0.2, 0.05, 0.5};

static double pick_dz(pl_rng *r) {
    double u = pl_rng_uniform(r), acc = 0;
    for (int i = 0; i < 6; i++) {
        acc += DZ_WEIGHTS[i];
        if (u < acc) return DZ_CHOICES[i];
    }
    return 5.0;
}

static int key_used(const dl_series *se, int key) {
    for (int k = 0; k < se->nles; k++)
        if (se->les[k].key == key) return 1;
    return 0;
}

// Places the lesions of one key slice at body z ~ zc_hint on slice `key`; returns lesions added.
static int plan_key(dl_ctx *cx, dl_series *se, const dl_patient *p, int first_type, int key,
                    int want_min, pl_rng *r) {
    const int W = cx->W;
    double zkey = se->z0 + (key - 1) * se->dz;
    dl_scene *sc = pl_malloc(sizeof *sc, "scene");
    PL_ASSERT(sc);
    scene_build(sc, p, zkey, W);
    scene_render(cx->hu, cx->lab, sc, W);
    free(sc);
    int want = 1;
    double u = pl_rng_uniform(r);
    if (u < 0.07) want = 3;
    else if (u < 0.27) want = 2;
    want = PL_MAX(want, want_min);
    int added = 0;
    for (int tries = 0; tries < 24 && added < want && se->nles < DL_MAXLES; tries++) {
        int type = (tries == 0 && first_type > 0) ? first_type : (int)pl_rng_int(r, 1, 8);
        if (zkey < DL_SITES[type].z1 - 20 || zkey > DL_SITES[type].z2 + 20) continue;
        // the label map is of the background only; lesion_place also avoids other lesions
        if (lesion_place(cx, se, &se->les[se->nles], type, zkey, key, r)) {
            se->nles++;
            added++;
        }
    }
    return added;
}

// Plans one series: volume extent, key slices, lesions (measured on the key slices).
static void plan_series(dl_ctx *cx, dl_series *se, const dl_patient *p, uint64_t seed, int study,
                        int series) {
    pl_rng r;
    synth_rng_init(&r, seed, TAG_SERIES, (uint64_t)p->index * 100 + (uint64_t)study * 10 + (uint64_t)series);
    memset(se, 0, sizeof *se);
    se->patient = p->index;
    se->study = study;
    se->series = series;
    se->dz = pick_dz(&r);
    se->sx = round(pl_rng_range(&r, 0.6, 0.98) * 1e5) / 1e5;
    double L = pl_rng_range(&r, 160, 380);
    se->nslices = (int)PL_MIN(999.0, round(L / se->dz) + 1);
    L = (se->nslices - 1) * se->dz;
    se->noise = pl_rng_range(&r, 10, 20);
    int nkeys = (int)pl_rng_int(&r, 1, cx->sp->keys_per_series_max);
    // first key: pick a type, its body position, and where the volume starts around it
    int type = (int)pl_rng_int(&r, 1, 8);
    double zc = pl_rng_range(&r, DL_SITES[type].z1, DL_SITES[type].z2);
    // the first series of a tiny cohort always shows the rarer cases: a key slice at the volume
    // edge holding several lesions
    int showcase = cx->sp->key_slices <= 20 && p->index == 1 && study == 1 && series == 1;
    int edge = pl_rng_uniform(&r) < cx->sp->edge_rate || showcase;
    int key;
    if (edge) {
        int k_from_edge = (int)pl_rng_int(&r, 0, 1);   // the key slice is the first/last or next to it
        if (pl_rng_uniform(&r) < 0.5) {
            key = 1 + k_from_edge;
            se->z0 = zc - (key - 1) * se->dz;
        } else {
            key = se->nslices - k_from_edge;
            se->z0 = zc - (key - 1) * se->dz;
        }
    } else {
        double off = pl_rng_range(&r, EDGE_MARGIN_MM, L - EDGE_MARGIN_MM);
        se->z0 = zc - off;
        key = (int)lround(off / se->dz) + 1;
    }
    se->z0 = round(se->z0 * 100) / 100;
    int placed = plan_key(cx, se, p, type, key, showcase ? 2 : 1, &r);
    for (int retry = 0; edge && placed == 0 && retry < 8; retry++) {
        // the edge case must exist: move the volume so another type's lesion sits at its edge
        type = (int)pl_rng_int(&r, 1, 8);
        zc = pl_rng_range(&r, DL_SITES[type].z1, DL_SITES[type].z2);
        se->z0 = round((zc - (key - 1) * se->dz) * 100) / 100;
        placed = plan_key(cx, se, p, type, key, showcase ? 2 : 1, &r);
    }
    for (int k = 0; k < placed; k++) se->les[k].edge = edge;
    for (int kk = 1; kk < nkeys || se->nles == 0; kk++) {
        if (kk > 40) break;
        double lo = se->z0 + EDGE_MARGIN_MM, hi = se->z0 + L - EDGE_MARGIN_MM;
        int t = (int)pl_rng_int(&r, 1, 8);
        double a = fmax(lo, DL_SITES[t].z1), b = fmin(hi, DL_SITES[t].z2);
        if (a >= b) continue;
        double z = pl_rng_range(&r, a, b);
        int k2 = (int)lround((z - se->z0) / se->dz) + 1;
        if (k2 < 1 || k2 > se->nslices || key_used(se, k2)) continue;
        plan_key(cx, se, p, t, k2, 1, &r);
    }
    // key slices in ascending order (rows of a series are listed by key slice)
    for (int i = 1; i < se->nles; i++)
        for (int j = i; j > 0 && se->les[j - 1].key > se->les[j].key; j--) {
            dl_les t = se->les[j];
            se->les[j] = se->les[j - 1];
            se->les[j - 1] = t;
        }
    // measure on the key slice's background (without lesions)
    int last_key = -1;
    dl_scene *sc = pl_malloc(sizeof *sc, "scene");
    PL_ASSERT(sc);
    for (int k = 0; k < se->nles; k++) {
        dl_les *l = &se->les[k];
        double zkey = se->z0 + (l->key - 1) * se->dz;
        if (l->key != last_key) {
            scene_build(sc, p, zkey, cx->W);
            scene_render(cx->hu, NULL, sc, cx->W);
            last_key = l->key;
        }
        lesion_measure(cx, l, zkey, cx->hu);
    }
    free(sc);
    // DICOM window as a reader of this body region would have set it
    double zmid = se->z0 + 0.5 * L;
    if (zmid < 230 && pl_rng_uniform(&r) < 0.5) {
        se->window[0] = -1350;
        se->window[1] = 150;
    } else if (pl_rng_uniform(&r) < 0.1) {
        se->window[0] = -450;
        se->window[1] = 1050;
    } else {
        se->window[0] = -175;
        se->window[1] = 275;
    }
}

static int ctx_push_series(dl_ctx *cx) {
    if (cx->nser == cx->cap_ser) {
        int nc = cx->cap_ser ? 2 * cx->cap_ser : 64;
        dl_series *ns = pl_realloc(cx->ser, sizeof *ns * (size_t)nc, "synth series");
        if (!ns) return PL_ENOMEM;
        cx->ser = ns;
        cx->cap_ser = nc;
    }
    cx->nser++;
    return 0;
}

static int keys_of(const dl_series *se) {
    int n = 0;
    for (int k = 0; k < se->nles; k++)
        if (k == 0 || se->les[k].key != se->les[k - 1].key) n++;
    return n;
}

// ---- writing ------------------------------------------------------------------------------
static void slice_range_of(const dl_ctx *cx, const dl_series *se, int key, int out[2]) {
    int m = (int)lround(cx->sp->context_mm / se->dz);
    out[0] = PL_MAX(1, key - m);
    out[1] = PL_MIN(se->nslices, key + m);
}

// Renders slice s (1-based) of a series: background + lesions + noise, as HU + 32768.
static void render_slice(dl_ctx *cx, const dl_series *se, const dl_patient *p, int s, uint64_t seed,
                         uint16_t *out, dl_scene *sc) {
    const int W = cx->W;
    double z = se->z0 + (s - 1) * se->dz;
    scene_build(sc, p, z, W);
    scene_render(cx->hu, NULL, sc, W);
    for (int k = 0; k < se->nles; k++) lesion_paint(cx->hu, NULL, W, &se->les[k], z, 0);
    pl_rng r;
    synth_rng_init(&r, seed, TAG_NOISE, ((uint64_t)p->index * 100 + (uint64_t)se->study * 10 + (uint64_t)se->series) * 1000 + (uint64_t)s);
    // approximately Gaussian noise: sum of four 16-bit uniforms (Irwin-Hall, variance 1/3)
    const double scale = se->noise * sqrt(3.0) * 2.0 / 65536.0;
    for (size_t i = 0; i < (size_t)W * (size_t)W; i++) {
        uint64_t u = pl_rng_u64(&r);
        double sum = (double)(u & 0xffff) + (double)((u >> 16) & 0xffff) + (double)((u >> 32) & 0xffff) +
                     (double)(u >> 48);
        double v = cx->hu[i] + (sum - 2.0 * 65535.0) * 0.5 * scale;
        v = clampd(v, HU_MIN, HU_MAX);
        out[i] = (uint16_t)lrint(v + 32768.0);
    }
}

static int write_truth(const dl_ctx *cx, const char *dir) {
    char path[4096];
    int rc = pl_path_join(path, sizeof path, dir, "synth_truth.csv");
    if (rc) return rc;
    size_t cap = 256 + (size_t)cx->nser * DL_MAXLES * 256, n = 0;
    char *t = pl_malloc(cap, "synth truth");
    if (!t) return PL_ENOMEM;
    n += (size_t)snprintf(t + n, cap - n,
                          "File_name,Row,Coarse_lesion_type,Center_x,Center_y,Center_slice,Radius_long_px,"
                          "Radius_short_px,Radius_z_slices,Angle_rad,Lesion_HU,Core_HU,Background_HU,Edge\n");
    for (int i = 0; i < cx->nser; i++) {
        const dl_series *se = &cx->ser[i];
        for (int k = 0; k < se->nles; k++) {
            const dl_les *l = &se->les[k];
            n += (size_t)snprintf(t + n, cap - n, "%06d_%02d_%02d_%03d.png,%lld,%d,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f,%.4f,"
                                  "%.1f,%.1f,%.1f,%d\n", se->patient, se->study, se->series, l->key,
                                  (long long)(se->first_row + k + 1), l->type, l->cx + 1, l->cy + 1,
                                  (l->zc - se->z0) / se->dz + 1, l->a, l->b, l->c / se->dz, l->ang, l->hu,
                                  l->core_hu, l->bg_hu, l->edge);
        }
    }
    rc = pl_write_file_atomic(path, t, n);
    free(t);
    return rc;
}

static int write_dlinfo(const dl_ctx *cx, const char *dir, int64_t nrows) {
    char path[4096];
    int rc = pl_path_join(path, sizeof path, dir, "DL_info.csv");
    if (rc) return rc;
    dl_lesion *rows = pl_calloc((size_t)nrows, sizeof *rows, "DL_info rows");
    if (!rows) return PL_ENOMEM;
    int64_t ri = 0;
    for (int i = 0; i < cx->nser; i++) {
        const dl_series *se = &cx->ser[i];
        const dl_patient *p = &cx->pat[se->patient - 1];
        for (int k = 0; k < se->nles; k++) {
            const dl_les *l = &se->les[k];
            dl_lesion *o = &rows[ri++];
            snprintf(o->file_name, sizeof o->file_name, "%06d_%02d_%02d_%03d.png", se->patient, se->study,
                     se->series, l->key);
            o->patient = se->patient;
            o->study = se->study;
            o->series = se->series;
            o->key_slice = l->key;
            memcpy(o->recist, l->recist, sizeof o->recist);
            memcpy(o->bbox, l->bbox, sizeof o->bbox);
            memcpy(o->diam_px, l->diam, sizeof o->diam_px);
            dl_scene sc;
            scene_build(&sc, p, se->z0 + (l->key - 1) * se->dz, cx->W);
            o->norm_loc[0] = r4(clampd((l->cx - (sc.body_cx - sc.body_a)) / (2 * sc.body_a), 0, 1));
            o->norm_loc[1] = r4(clampd((l->cy - (sc.body_cy - sc.body_b)) / (2 * sc.body_b), 0, 1));
            o->norm_loc[2] = r4(clampd(l->zc / 650.0, 0, 1));
            o->type = p->split == 1 ? -1 : l->type;
            o->noisy = l->noisy;
            slice_range_of(cx, se, l->key, o->slice_range);
            o->spacing[0] = se->sx;
            o->spacing[1] = se->sx;
            o->spacing[2] = se->dz;
            o->image_size[0] = cx->W;
            o->image_size[1] = cx->W;
            o->window[0] = se->window[0];
            o->window[1] = se->window[1];
            o->gender = p->gender;
            o->age = p->age + (se->study - 1);
            o->split = p->split;
        }
    }
    rc = dlinfo_write(path, rows, nrows);
    free(rows);
    return rc;
}

static void assign_splits(dl_ctx *cx, uint64_t seed) {
    pl_rng r;
    synth_rng_init(&r, seed, TAG_SPLIT, 0);
    int64_t *order = pl_malloc(sizeof *order * (size_t)cx->npat, "split order");
    PL_ASSERT(order);
    for (int i = 0; i < cx->npat; i++) order[i] = i;
    pl_rng_shuffle_i64(&r, order, cx->npat);
    int nval = (int)lround(0.15 * cx->npat), ntest = (int)lround(0.15 * cx->npat);
    if (cx->npat >= 3) {
        nval = PL_MAX(1, nval);
        ntest = PL_MAX(1, ntest);
    }
    for (int i = 0; i < cx->npat; i++) {
        int split = i < nval ? 2 : i < nval + ntest ? 3 : 1;
        cx->pat[order[i]].split = split;
    }
    free(order);
}

static void ctx_free(dl_ctx *cx) {
    free(cx->pat);
    free(cx->ser);
    free(cx->hu);
    free(cx->lab);
    free(cx->cand);
}

// Removes what an earlier run may have left here (index files first, so an interrupted run
// never looks complete; stale zips, so a smaller cohort does not inherit a larger one's series).
static int clear_previous(const char *dir) {
    const char *names[2] = {"DL_info.csv", "synth_truth.csv"};
    char path[4096];
    for (int i = 0; i < 2; i++) {
        int rc = pl_path_join(path, sizeof path, dir, names[i]);
        if (rc) return rc;
        if (pl_path_exists(path) && unlink(path) != 0)
            return pl_fail(PL_EIO, "%s: cannot remove the previous run's file", path);
    }
    int rc = pl_path_join(path, sizeof path, dir, "Images_png_[0-9][0-9].zip");
    if (rc) return rc;
    glob_t g;
    if (glob(path, 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc && !rc; i++)
            if (unlink(g.gl_pathv[i]) != 0) rc = pl_fail(PL_EIO, "%s: cannot remove the previous run's zip", g.gl_pathv[i]);
        if (g.gl_pathc) LOG_INFO("synth:removed_previous dir:%s zips:%zu", dir, g.gl_pathc);
        globfree(&g);
    }
    return rc;
}

int synth_write_deeplesion(synth_stats *st, const synth_opts *o, const char *dir, int parts) {
    dl_ctx cx = {0};
    cx.sp = &DL_SCALES[o->scale];
    cx.W = cx.sp->size;
    const size_t npx = (size_t)cx.W * (size_t)cx.W;
    const int size = o->size > 1 ? o->size : 1, rank = o->size > 1 ? o->rank : 0;
    int rc = pl_mkdir_p(dir);
    if (!rc && (parts & SYNTH_PART_PREPARE)) rc = clear_previous(dir);
    if (rc || !(parts & (SYNTH_PART_DATA | SYNTH_PART_INDEX))) return rc;
    cx.hu = pl_malloc(npx * sizeof *cx.hu, "synth slice");
    cx.lab = pl_malloc(npx, "synth labels");
    cx.cand = pl_malloc(npx * sizeof *cx.cand, "synth candidates");
    uint16_t *px = pl_malloc(npx * sizeof *px, "synth png pixels");
    dl_scene *sc = pl_malloc(sizeof *sc, "synth scene");
    arc_writer *zw = NULL;
    int *zip_of = NULL;   // (nser) 1-based zip number of each series
    if (!cx.hu || !cx.lab || !cx.cand || !px || !sc) {
        rc = PL_ENOMEM;
        goto done;
    }
    // 1. plan patients, series and lesions until the key-slice target is met
    int64_t keys = 0, nrows = 0;
    while (keys < cx.sp->key_slices) {
        dl_patient *np = pl_realloc(cx.pat, sizeof *np * (size_t)(cx.npat + 1), "synth patients");
        if (!np) {
            rc = PL_ENOMEM;
            goto done;
        }
        cx.pat = np;
        dl_patient *p = &cx.pat[cx.npat++];
        patient_init(p, o->seed, cx.npat, cx.W);
        // a patient holds at most a quarter of the key slices, so even tiny has >= 3 patients
        // (one per split)
        const int64_t cap = PL_MAX(1, cx.sp->key_slices / 4), keys0 = keys;
        for (int study = 1; study <= p->nstudies && keys < cx.sp->key_slices && keys - keys0 < cap; study++) {
            pl_rng r;
            synth_rng_init(&r, o->seed, TAG_PATIENT + 1, (uint64_t)p->index * 10 + (uint64_t)study);
            int nseries = pl_rng_uniform(&r) < 0.8 ? 1 : 2;
            for (int s = 1; s <= nseries && keys < cx.sp->key_slices && keys - keys0 < cap; s++) {
                if ((rc = ctx_push_series(&cx))) goto done;
                dl_series *se = &cx.ser[cx.nser - 1];
                plan_series(&cx, se, p, o->seed, study, s);
                if (se->nles == 0) {   // nothing fitted: no folder for this series
                    cx.nser--;
                    continue;
                }
                se->first_row = nrows;
                nrows += se->nles;
                keys += keys_of(se);
            }
        }
    }
    assign_splits(&cx, o->seed);

    // 2. whole series folders per zip, in folder-name order; zip z is written by rank z % size
    zip_of = pl_malloc(sizeof *zip_of * (size_t)(cx.nser + 1), "zip of series");
    if (!zip_of) {
        rc = PL_ENOMEM;
        goto done;
    }
    pl_rng zr;
    synth_rng_init(&zr, o->seed, TAG_ZIP, 0);
    int zip_no = 0;
    for (int i = 0, quota = 0, in_zip = 0; i < cx.nser; i++, in_zip++) {
        if (i == 0 || in_zip >= quota) {
            zip_no++;
            quota = (int)pl_rng_int(&zr, cx.sp->series_per_zip_lo, cx.sp->series_per_zip_hi);
            in_zip = 0;
        }
        zip_of[i] = zip_no;
    }
    int64_t total_slices = 0;
    for (int i = 0; i < cx.nser; i++) {
        if ((zip_of[i] - 1) % size != rank || !(parts & SYNTH_PART_DATA)) continue;
        int prev_hi = 0;   // keys ascend, so the union of ranges is counted range by range
        for (int k = 0; k < cx.ser[i].nles; k++) {
            int sr[2];
            slice_range_of(&cx, &cx.ser[i], cx.ser[i].les[k].key, sr);
            int lo = PL_MAX(sr[0], prev_hi + 1);
            if (sr[1] >= lo) total_slices += sr[1] - lo + 1;
            prev_hi = PL_MAX(prev_hi, sr[1]);
        }
    }
    pl_progress prog;
    progress_init(&prog, "synth deeplesion slices", total_slices, o->progress, o->progress_interval);
    int64_t nslices = 0;
    for (int i = 0; i < cx.nser && (parts & SYNTH_PART_DATA); i++) {
        const dl_series *se = &cx.ser[i];
        const dl_patient *p = &cx.pat[se->patient - 1];
        if ((zip_of[i] - 1) % size != rank) continue;
        if (!zw) {
            char name[64], path[4096];
            snprintf(name, sizeof name, "Images_png_%02d.zip", zip_of[i]);
            if ((rc = pl_path_join(path, sizeof path, dir, name))) goto done;
            if ((rc = arc_writer_open(&zw, path, ARC_ZIP_STORE))) goto done;
        }
        // slices to write: the union of the key slices' ranges
        uint8_t *want = pl_calloc((size_t)se->nslices + 2, 1, "slice set");
        if (!want) {
            rc = PL_ENOMEM;
            goto done;
        }
        for (int k = 0; k < se->nles; k++) {
            int sr[2];
            slice_range_of(&cx, se, se->les[k].key, sr);
            for (int s = sr[0]; s <= sr[1]; s++) want[s] = 1;
        }
        for (int s = 1; s <= se->nslices && !rc; s++) {
            if (!want[s]) continue;
            render_slice(&cx, se, p, s, o->seed, px, sc);
            uint8_t *png = NULL;
            size_t len = 0;
            double te = pl_time();
            rc = img_encode_png_gray16(&png, &len, px, cx.W, cx.W);
            st->seconds_dl_png += pl_time() - te;
            if (!rc) {
                char entry[128];
                snprintf(entry, sizeof entry, "Images_png/%06d_%02d_%02d/%03d.png", se->patient, se->study,
                         se->series, s);
                rc = arc_writer_add(zw, entry, png, len);
            }
            free(png);
            nslices++;
            progress_update(&prog, nslices);
        }
        free(want);
        if (rc) goto done;
        if (i + 1 == cx.nser || zip_of[i + 1] != zip_of[i]) {   // this zip is complete
            rc = arc_writer_close(zw);
            zw = NULL;
            if (rc) goto done;
        }
    }
    if (parts & SYNTH_PART_DATA) {
        progress_finish(&prog);
        PL_ASSERT(nslices == total_slices);
    }
    // 3. the index files last: a folder without DL_info.csv is not a finished cohort
    if (parts & SYNTH_PART_INDEX) {
        if ((rc = write_truth(&cx, dir))) goto done;
        if ((rc = write_dlinfo(&cx, dir, nrows))) goto done;
    }
    st->dl_patients = cx.npat;
    st->dl_series = cx.nser;
    st->dl_slices += nslices;
    st->dl_key_slices = keys;
    st->dl_lesions = nrows;
    st->dl_zips = zip_no;
done:
    arc_writer_abort(zw);
    free(zip_of);
    free(px);
    free(sc);
    ctx_free(&cx);
    return rc;
}
