// Tests of the FROC scoring library (stages/score/froc_score.c) on hand-computed cases: the issue's
// case A, one detection finding two lesions, the integer-FP rules, empty images and no
// detections, ties, IoU conventions, noisy exclusion, sub-groups, AP, the detections CSV, and
// the patient bootstrap against a brute-force resampled walk.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "nn/pl.h"
#include "stages/score/froc.h"
#include "test_util.h"


static froc_image img(const char *name, int patient) {
    froc_image m;
    memset(&m, 0, sizeof m);
    snprintf(m.name, sizeof m.name, "%s", name);
    m.patient = patient;
    return m;
}

static froc_gt gtb(int64_t image, double x1, double y1, double x2, double y2) {
    froc_gt g;
    memset(&g, 0, sizeof g);
    g.box[0] = x1, g.box[1] = y1, g.box[2] = x2, g.box[3] = y2;
    g.image = image;
    g.type = -1;
    g.long_mm = NAN;
    g.slice_mm = NAN;
    return g;
}

static froc_det detb(const char *file, double x1, double y1, double x2, double y2, double score) {
    froc_det d;
    memset(&d, 0, sizeof d);
    snprintf(d.file, sizeof d.file, "%s", file);
    d.box[0] = x1, d.box[1] = y1, d.box[2] = x2, d.box[3] = y2;
    d.score = score;
    return d;
}

// (A) the exact case, MULAN rule, IoU +1.
static void test_case_a(void) {
    froc_image im[4] = {img("img0", 0), img("img1", 1), img("img2", 2), img("img3", 3)};
    froc_gt g[4] = {gtb(0, 10, 10, 30, 30), gtb(1, 50, 50, 70, 70), gtb(1, 100, 100, 120, 120),
                    gtb(3, 0, 0, 10, 10)};
    froc_det d[9] = {detb("img0", 10, 10, 30, 30, .9),     detb("img0", 11, 11, 31, 31, .8),
                     detb("img0", 200, 200, 220, 220, .7), detb("img1", 50, 50, 120, 120, .95),
                     detb("img1", 100, 100, 120, 120, .6), detb("img1", 0, 0, 5, 5, .3),
                     detb("img2", 5, 5, 25, 25, .85),      detb("img2", 1, 1, 2, 2, .2),
                     detb("img3", 0, 0, 10, 10, .5)};
    froc_set s;
    CHECK(froc_set_build(&s, im, 4, g, 4, d, 9) == 0);
    froc_opts o;
    froc_opts_default(&o);
    froc_curve c;
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    const double sens[9] = {0, .25, .25, .25, .25, .5, .75, .75, .75};
    const double fppi[9] = {.25, .25, .5, .5, .75, .75, .75, 1, 1.25};
    CHECK(c.n_dets == 9 && c.n_lesions == 4 && c.n_images == 4);
    for (int i = 0; i < 9; i++) {
        CHECK_NEAR((double)c.tp[i] / 4, sens[i], 1e-12);
        CHECK_NEAR((double)c.fp[i] / 4, fppi[i], 1e-12);
    }
    // rank 3 (score .8) re-finds img0's lesion: neither TP nor FP
    CHECK(c.new_hits[3] == 0 && c.is_fp[3] == 0);
    CHECK_NEAR(c.best_iou[3], 400.0 / 482.0, 1e-12);
    const double want[FROC_NLEVELS] = {.25, .75, .75, .75, .75, .75};
    for (int k = 0; k < FROC_NLEVELS; k++) CHECK_NEAR(c.sens[k], want[k], 1e-12);
    CHECK_NEAR(c.mfroc, (.25 + .75 * 3) / 4, 1e-12);
    CHECK(c.found_by[0] == 1 && c.found_by[1] == -1 && c.found_by[2] == 5 && c.found_by[3] == 6);
    // at 0.75 FP/image (3 FPs, an integer count) the rules differ: .75 vs .25
    CHECK_NEAR(froc_sens_at(c.tp, c.fp, 9, 4, 4, 0.75, FROC_FP_BEFORE_NEXT), .75, 1e-12);
    CHECK_NEAR(froc_sens_at(c.tp, c.fp, 9, 4, 4, 0.75, FROC_FP_FIRST_AT), .25, 1e-12);
    // between integer counts both rules agree (0.6 FP/image = 2.4 FPs -> before the 3rd FP)
    CHECK_NEAR(froc_sens_at(c.tp, c.fp, 9, 4, 4, 0.6, FROC_FP_FIRST_AT), .25, 1e-12);
    CHECK_NEAR(froc_sens_at(c.tp, c.fp, 9, 4, 4, 0.6, FROC_FP_BEFORE_NEXT), .25, 1e-12);
    froc_curve_free(&c);
    o.fp_rule = FROC_FP_FIRST_AT;
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    for (int k = 0; k < FROC_NLEVELS; k++) CHECK_NEAR(c.sens[k], want[k], 1e-12);
    froc_curve_free(&c);
    // AP (one-to-one): ranks .95 F, .9 T, .85 F, .8 F(dup), .7 F, .6 T, .5 T, .3 F, .2 F
    // recall .25 at prec 1/2, .5 at 2/6, .75 at 3/7 -> envelope 1/2 (r<=.25), 3/7 (r<=.75), 0 above
    double ap;
    CHECK(froc_ap(&ap, &s, NULL, &o) == 0);
    CHECK_NEAR(ap, (26 * 0.5 + 50 * (3.0 / 7.0)) / 101.0, 1e-12);
    froc_set_free(&s);
    printf("case_a: ok\n");
}

// (B) one detection overlapping two overlapping lesions finds both.
static void test_case_b(void) {
    froc_image im[1] = {img("x", 0)};
    froc_gt g[2] = {gtb(0, 10, 10, 30, 30), gtb(0, 11, 11, 31, 31)};
    froc_det d[1] = {detb("x", 10, 10, 31, 31, .9)};
    froc_set s;
    CHECK(froc_set_build(&s, im, 1, g, 2, d, 1) == 0);
    froc_opts o;
    froc_opts_default(&o);
    froc_curve c;
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK(c.new_hits[0] == 2 && c.tp[0] == 2 && c.fp[0] == 0);
    CHECK(c.found_by[0] == 0 && c.found_by[1] == 0);
    for (int k = 0; k < FROC_NLEVELS; k++) CHECK_NEAR(c.sens[k], 1.0, 0);
    double ap;   // AP matches one-to-one: recall .5 at precision 1
    CHECK(froc_ap(&ap, &s, NULL, &o) == 0);
    CHECK_NEAR(ap, 51.0 / 101.0, 1e-12);
    froc_curve_free(&c);
    froc_set_free(&s);
    printf("case_b: ok\n");
}

// (C) integer FP counts: FP .9, TP .8, FP .7, TP .6 on two images (2 lesions).
static void test_case_c(void) {
    froc_image im[2] = {img("A", 0), img("B", 1)};
    froc_gt g[2] = {gtb(0, 0, 0, 9, 9), gtb(1, 20, 20, 29, 29)};
    froc_det d[4] = {detb("A", 100, 100, 110, 110, .9), detb("A", 0, 0, 9, 9, .8),
                     detb("B", 300, 300, 310, 310, .7), detb("B", 20, 20, 29, 29, .6)};
    froc_set s;
    CHECK(froc_set_build(&s, im, 2, g, 2, d, 4) == 0);
    froc_opts o;
    froc_opts_default(&o);
    froc_curve c;
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    // 0.5 FP/img = 1 FP: before the 2nd FP 1 lesion found; 1 FP/img = 2 FPs: all found
    CHECK_NEAR(c.sens[0], 0.5, 0);
    CHECK_NEAR(c.sens[1], 1.0, 0);
    froc_curve_free(&c);
    o.fp_rule = FROC_FP_FIRST_AT;
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    // at the first point with 1 FP nothing is found yet; at the first with 2 FPs one lesion
    CHECK_NEAR(c.sens[0], 0.0, 0);
    CHECK_NEAR(c.sens[1], 0.5, 0);
    CHECK_NEAR(c.sens[2], 1.0, 0);
    CHECK_NEAR(c.mfroc, (0 + .5 + 1 + 1) / 4.0, 1e-12);
    froc_curve_free(&c);
    froc_set_free(&s);
    printf("case_c: ok\n");
}

// Images without lesions count in FP/image; no detections at all; no lesions at all.
static void test_empty(void) {
    froc_image im[3] = {img("a", 0), img("b", 1), img("c", 2)};
    froc_gt g[1] = {gtb(0, 0, 0, 9, 9)};
    froc_det d[2] = {detb("b", 0, 0, 9, 9, .9), detb("a", 0, 0, 9, 9, .5)};
    froc_opts o;
    froc_opts_default(&o);
    froc_set s;
    froc_curve c;
    // 3 images, FP on lesion-free b first: 1 FP = 1/3 FP/image < 0.5 -> found at 0.5
    CHECK(froc_set_build(&s, im, 3, g, 1, d, 2) == 0);
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK(c.is_fp[0] == 1 && c.new_hits[1] == 1);
    CHECK_NEAR(c.sens[0], 1.0, 0);
    froc_curve_free(&c);
    froc_set_free(&s);
    // 2 images (drop c): 1 FP = 0.5 FP/image; before_next -> 1, first_at -> 0
    CHECK(froc_set_build(&s, im, 2, g, 1, d, 2) == 0);
    o.fp_rule = FROC_FP_FIRST_AT;
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK_NEAR(c.sens[0], 0.0, 0);
    CHECK_NEAR(c.sens[1], 1.0, 0);
    froc_curve_free(&c);
    froc_set_free(&s);
    o.fp_rule = FROC_FP_BEFORE_NEXT;
    // no detections
    CHECK(froc_set_build(&s, im, 3, g, 1, NULL, 0) == 0);
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    for (int k = 0; k < FROC_NLEVELS; k++) CHECK_NEAR(c.sens[k], 0.0, 0);
    CHECK(c.found_by[0] == -1 && c.mfroc == 0);
    double ap = -1;
    CHECK(froc_ap(&ap, &s, NULL, &o) == 0 && ap == 0);
    froc_ci ci;
    CHECK(froc_bootstrap(&ci, &s, &c, NULL, &o, 50, 7) == 0);
    CHECK(ci.lo[0] == 0 && ci.hi[FROC_NLEVELS] == 0);
    froc_curve_free(&c);
    froc_set_free(&s);
    // no lesions: sensitivity undefined (NAN), AP undefined
    CHECK(froc_set_build(&s, im, 3, NULL, 0, d, 2) == 0);
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK(isnan(c.sens[0]) && c.fp[1] == 2);
    CHECK(froc_ap(&ap, &s, NULL, &o) == 0 && isnan(ap));
    froc_curve_free(&c);
    froc_set_free(&s);
    // detections on unknown images are ignored and counted
    froc_det out[2] = {detb("zzz", 0, 0, 9, 9, .9), detb("a", 0, 0, 9, 9, .5)};
    CHECK(froc_set_build(&s, im, 3, g, 1, out, 2) == 0);
    CHECK(s.n_det == 1 && s.n_det_outside == 1);
    froc_set_free(&s);
    // duplicate image names are an error
    froc_image dup[2] = {img("a", 0), img("a", 1)};
    pl_quiet_begin();
    CHECK(froc_set_build(&s, dup, 2, NULL, 0, NULL, 0) == PL_EINVAL);
    CHECK(strstr(pl_last_error(), "'a'") != NULL);
    pl_quiet_end();
    printf("empty: ok\n");
}

// Ties: equal scores rank by File_name, then input order.
static void test_ties(void) {
    froc_opts o;
    froc_opts_default(&o);
    o.fp_rule = FROC_FP_FIRST_AT;
    froc_gt g[1];
    froc_set s;
    froc_curve c;
    // lesion on "b.png"; FP on "a.png" with the same score ranks first -> sens@0.5 (1 FP) = 0
    froc_image im[2] = {img("a.png", 0), img("b.png", 1)};
    g[0] = gtb(1, 0, 0, 9, 9);
    froc_det d[2] = {detb("b.png", 0, 0, 9, 9, .5), detb("a.png", 0, 0, 9, 9, .5)};
    CHECK(froc_set_build(&s, im, 2, g, 1, d, 2) == 0);
    CHECK(s.det[0].image == 0 && s.det[0].src == 1);
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK_NEAR(c.sens[0], 0.0, 0);
    froc_curve_free(&c);
    froc_set_free(&s);
    // lesion on "a.png" instead: the TP ranks first -> 1
    g[0] = gtb(0, 0, 0, 9, 9);
    froc_det d2[2] = {detb("b.png", 0, 0, 9, 9, .5), detb("a.png", 0, 0, 9, 9, .5)};
    CHECK(froc_set_build(&s, im, 2, g, 1, d2, 2) == 0);
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK_NEAR(c.sens[0], 1.0, 0);
    froc_curve_free(&c);
    froc_set_free(&s);
    // same image, same score: input order decides
    froc_det d3[3] = {detb("a.png", 50, 50, 60, 60, .5), detb("a.png", 0, 0, 9, 9, .5),
                      detb("a.png", 70, 70, 80, 80, .7)};
    CHECK(froc_set_build(&s, im, 2, g, 1, d3, 3) == 0);
    CHECK(s.det[0].src == 2 && s.det[1].src == 0 && s.det[2].src == 1);
    froc_set_free(&s);
    printf("ties: ok\n");
}

// IoU: +1 on widths (3DCE/MULAN) vs continuous (MP3D), hand values and a hit that flips.
static void test_iou(void) {
    double a[4] = {0, 0, 9, 9}, b[4] = {5, 0, 14, 9}, far[4] = {20, 20, 30, 30};
    CHECK_NEAR(froc_iou(a, b, 1), 50.0 / 150.0, 1e-15);
    CHECK_NEAR(froc_iou(a, b, 0), 36.0 / 126.0, 1e-15);
    CHECK_NEAR(froc_iou(a, a, 0), 1.0, 0);
    CHECK_NEAR(froc_iou(a, far, 1), 0.0, 0);
    // touching boxes: +1 counts the shared pixel column, continuous gives 0
    double t[4] = {9, 0, 18, 9};
    CHECK_NEAR(froc_iou(a, t, 1), 10.0 / 190.0, 1e-15);
    CHECK_NEAR(froc_iou(a, t, 0), 0.0, 0);
    froc_image im[1] = {img("x", 0)};
    froc_gt g[1] = {gtb(0, 0, 0, 9, 9)};
    froc_det d[1] = {detb("x", 0, 0, 9, 4, .9)};   // +1: 50/100 = .5 hit; continuous: 36/81 miss
    froc_set s;
    froc_curve c;
    froc_opts o;
    froc_opts_default(&o);
    CHECK(froc_set_build(&s, im, 1, g, 1, d, 1) == 0);
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK(c.tp[0] == 1 && c.fp[0] == 0);
    froc_curve_free(&c);
    o.iou_plus1 = 0;
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK(c.tp[0] == 0 && c.fp[0] == 1);
    CHECK_NEAR(c.best_iou[0], 36.0 / 81.0, 1e-15);
    froc_curve_free(&c);
    froc_set_free(&s);
    printf("iou: ok\n");
}

static dl_lesion row(const char *file, int patient, int split, int noisy, int type, double x1, double y1,
                     double x2, double y2, double long_px, double sp_xy, double sp_z, int line) {
    dl_lesion r;
    memset(&r, 0, sizeof r);
    snprintf(r.file_name, sizeof r.file_name, "%s", file);
    r.patient = patient;
    r.split = split;
    r.noisy = noisy;
    r.type = type;
    r.bbox[0] = x1, r.bbox[1] = y1, r.bbox[2] = x2, r.bbox[3] = y2;
    r.diam_px[0] = long_px;
    r.spacing[0] = r.spacing[1] = sp_xy;
    r.spacing[2] = sp_z;
    r.line = line;
    return r;
}

// Noisy exclusion and split selection through DL_info rows.
static void test_noisy(void) {
    dl_lesion rows[4] = {
        row("000001_01_01_010.png", 1, 3, 0, 5, 0, 0, 9, 9, 10, 0.7, 1.0, 2),
        row("000002_01_01_020.png", 2, 3, 1, 4, 0, 0, 9, 9, 20, 0.8, 5.0, 3),   // noisy only
        row("000001_01_01_010.png", 1, 3, 1, 4, 50, 50, 59, 59, 30, 0.7, 1.0, 4), // noisy, shares slice
        row("000003_01_01_030.png", 3, 2, 0, 1, 0, 0, 9, 9, 40, 0.9, 2.5, 5),   // val
    };
    froc_det d[3] = {detb("000002_01_01_020.png", 0, 0, 9, 9, .9), detb("000001_01_01_010.png", 0, 0, 9, 9, .8),
                     detb("000001_01_01_010.png", 50, 50, 59, 59, .7)};
    froc_opts o;
    froc_opts_default(&o);
    froc_set s;
    froc_curve c;
    CHECK(froc_set_from_dlinfo(&s, rows, 4, &o, d, 3) == 0);
    CHECK(s.n_images == 1 && s.n_gt == 1 && s.n_det == 2 && s.n_det_outside == 1);
    CHECK(s.gt[0].line == 2 && s.gt[0].type == 5);
    CHECK_NEAR(s.gt[0].long_mm, 7.0, 1e-12);
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    // the detection on the excluded noisy lesion is a false positive: 1 FP on 1 image
    CHECK(c.tp[1] == 1 && c.fp[1] == 1);
    froc_curve_free(&c);
    froc_set_free(&s);
    o.keep_noisy = 1;
    CHECK(froc_set_from_dlinfo(&s, rows, 4, &o, d, 3) == 0);
    CHECK(s.n_images == 2 && s.n_gt == 3 && s.n_det == 3 && s.n_det_outside == 0);
    CHECK(s.n_units == 2);
    CHECK(froc_walk(&c, &s, NULL, &o) == 0);
    CHECK(c.tp[2] == 3 && c.fp[2] == 0);
    froc_curve_free(&c);
    froc_set_free(&s);
    o.split = 0;
    CHECK(froc_set_from_dlinfo(&s, rows, 4, &o, d, 3) == 0);
    CHECK(s.n_images == 3 && s.n_gt == 4 && s.n_units == 3);
    CHECK(strcmp(s.images[2].name, "000003_01_01_030.png") == 0);
    CHECK_NEAR(s.gt[3].slice_mm, 2.5, 0);
    froc_set_free(&s);
    printf("noisy: ok\n");
}

// Sub-groups filter the lesions and keep all detections.
static void test_groups(void) {
    froc_image im[2] = {img("i0", 0), img("i1", 1)};
    froc_gt g[2] = {gtb(0, 0, 0, 9, 9), gtb(1, 0, 0, 19, 19)};
    g[0].type = 5, g[0].long_mm = 5, g[0].slice_mm = 1;     // lung, < 10 mm, thin
    g[1].type = 4, g[1].long_mm = 20, g[1].slice_mm = 5;    // liver, 10-30 mm, thick
    froc_det d[2] = {detb("i1", 0, 0, 19, 19, .9), detb("i0", 0, 0, 9, 9, .8)};
    froc_set s;
    CHECK(froc_set_build(&s, im, 2, g, 2, d, 2) == 0);
    froc_opts o;
    froc_opts_default(&o);
    o.fp_rule = FROC_FP_FIRST_AT;
    froc_eval ev;
    CHECK(froc_evaluate(&ev, &s, &o, 20, 3) == 0);
    const int64_t want_n[FROC_NGROUPS] = {0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 1};
    for (int k = 0; k < FROC_NGROUPS; k++) CHECK(ev.groups[k].n_lesions == want_n[k]);
    // lung: the liver hit (.9) is an FP for this group, 1 FP on 2 images = 0.5 FP/image, found after it
    CHECK(strcmp(ev.groups[4].name, "lung") == 0);
    CHECK_NEAR(ev.groups[4].sens[0], 0.0, 0);
    CHECK_NEAR(ev.groups[4].sens[1], 1.0, 0);
    // liver: found first
    CHECK_NEAR(ev.groups[3].sens[0], 1.0, 0);
    CHECK(ev.groups[8].sens[0] == ev.groups[4].sens[0] && ev.groups[11].sens[1] == 1.0);
    CHECK(isnan(ev.groups[0].mfroc) && isnan(ev.groups[10].mfroc) && isnan(ev.groups[0].ci.lo[0]));
    CHECK_NEAR(ev.all.sens[0], 1.0, 0);
    CHECK(froc_group_has(9, &g[1]) && !froc_group_has(9, &g[0]) && froc_group_has(12, &g[1]));
    froc_gt edge = gtb(0, 0, 0, 1, 1);
    edge.long_mm = 10, edge.slice_mm = 2;
    CHECK(froc_group_has(9, &edge) && !froc_group_has(8, &edge) && froc_group_has(11, &edge));
    edge.long_mm = 30;
    CHECK(froc_group_has(9, &edge) && !froc_group_has(10, &edge));
    froc_eval_free(&ev);
    froc_set_free(&s);
    printf("groups: ok\n");
}

// AP on a hand case: TP .9, FP .8, TP .7 with 2 lesions.
static void test_ap(void) {
    froc_image im[1] = {img("x", 0)};
    froc_gt g[2] = {gtb(0, 0, 0, 9, 9), gtb(0, 100, 100, 109, 109)};
    froc_det d[3] = {detb("x", 0, 0, 9, 9, .9), detb("x", 40, 40, 49, 49, .8), detb("x", 100, 100, 109, 109, .7)};
    froc_set s;
    froc_opts o;
    froc_opts_default(&o);
    CHECK(froc_set_build(&s, im, 1, g, 2, d, 3) == 0);
    double ap;
    CHECK(froc_ap(&ap, &s, NULL, &o) == 0);
    // recall .5 at precision 1, recall 1 at 2/3: 51 points at 1, 50 at 2/3
    CHECK_NEAR(ap, (51 + 50 * (2.0 / 3.0)) / 101.0, 1e-12);
    uint8_t mask[2] = {0, 1};   // only the second lesion: recall 1 at rank 3, precision 1/3
    CHECK(froc_ap(&ap, &s, mask, &o) == 0);
    CHECK_NEAR(ap, 1.0 / 3.0, 1e-12);
    froc_set_free(&s);
    printf("ap: ok\n");
}

// Detections CSV: round trip through a real file, malformed lines reported by line number.
static void test_csv(void) {
    const char *dir = "froc_test_csv";
    pl_mkdir_p(dir);
    char path[256];
    snprintf(path, sizeof path, "%s/dets.csv", dir);
    froc_det d[3] = {detb("000001_01_01_109.png", 1.5, 2.25, 30.125, 40, 0.987654321),
                     detb("000002_02_01_007.png", 0, 0, 511, 511, 1e-7), detb("b", 3, 4, 5, 6, -2)};
    CHECK(froc_dets_write(path, d, 3) == 0);
    froc_dets r;
    memset(&r, 0, sizeof r);
    CHECK(froc_dets_read(&r, path) == 0);
    CHECK(r.n == 3 && r.nbad == 0);
    for (int i = 0; i < 3 && i < r.n; i++) {
        CHECK(strcmp(r.d[i].file, d[i].file) == 0);
        CHECK(r.d[i].line == i + 2);
        for (int k = 0; k < 4; k++) CHECK_NEAR(r.d[i].box[k], d[i].box[k], 1e-9 * fabs(d[i].box[k]));
        CHECK_NEAR(r.d[i].score, d[i].score, 1e-9 * fabs(d[i].score));
    }
    froc_dets_free(&r);
    const char *text = "File_name,x1,y1,x2,y2,score\n"
                       "a.png,1,2,3,4,0.5\n"
                       "a.png,1,2,x,4,0.5\n"
                       "\n"
                       "b.png,1,2,3,4\n"
                       "b.png,5,2,3,4,0.1\r\n"
                       "\"c.png\", 1, 2, 3, 4, 0.25\r\n"
                       "d.png,1,2,3,4,nan\n";
    pl_quiet_begin();
    CHECK(froc_dets_parse(&r, text, strlen(text), "t.csv") == 0);
    CHECK(r.n == 2 && r.nbad == 4);
    if (r.n == 2) {
        CHECK(strcmp(r.d[1].file, "c.png") == 0 && r.d[1].score == 0.25 && r.d[1].line == 7);
    }
    if (r.nbad == 4) {
        CHECK(strstr(r.bad[0], "t.csv:3:") && strstr(r.bad[0], "x2") && strstr(r.bad[0], "'x'"));
        CHECK(strstr(r.bad[1], "t.csv:5:") && strstr(r.bad[1], "5 fields"));
        CHECK(strstr(r.bad[2], "t.csv:6:") && strstr(r.bad[2], "x2 < x1"));
        CHECK(strstr(r.bad[3], "t.csv:8:") && strstr(r.bad[3], "score"));
    }
    froc_dets_free(&r);
    // no header line: the first line is data
    CHECK(froc_dets_parse(&r, "a,1,1,2,2,1\n", 12, "h.csv") == 0 && r.n == 1 && r.d[0].line == 1);
    froc_dets_free(&r);
    CHECK(froc_dets_read(&r, "froc_test_csv/missing.csv") == PL_ENOTFOUND);
    pl_quiet_end();
    remove(path);
    remove(dir);
    printf("csv: ok\n");
}

// A random cohort: n_pat patients with 1-3 images each, 0-2 lesions each, dets near lesions or random.
static void make_random(froc_set *s, int n_pat, uint64_t seed, froc_image **im_out, froc_gt **g_out,
                        froc_det **d_out, int64_t *ni, int64_t *ng, int64_t *nd) {
    pl_rng r;
    pl_rng_seed(&r, seed);
    froc_image *im = calloc((size_t)n_pat * 3, sizeof *im);
    froc_gt *g = calloc((size_t)n_pat * 6, sizeof *g);
    froc_det *d = calloc((size_t)n_pat * 3 * 12, sizeof *d);
    int64_t a = 0, b = 0, c = 0;
    for (int p = 0; p < n_pat; p++) {
        int nimg = (int)pl_rng_int(&r, 1, 3);
        for (int k = 0; k < nimg; k++) {
            snprintf(im[a].name, FROC_NAME, "%06d_01_01_%03d.png", p, k);
            im[a].patient = p;
            int nl = (int)pl_rng_int(&r, 0, 2);
            for (int l = 0; l < nl; l++) {
                double x = pl_rng_range(&r, 0, 400), y = pl_rng_range(&r, 0, 400), w = pl_rng_range(&r, 8, 60);
                g[b] = gtb(a, x, y, x + w, y + w);
                g[b].type = (int)pl_rng_int(&r, 1, 8);
                g[b].long_mm = w * 0.7;
                g[b].slice_mm = pl_rng_uniform(&r) < 0.5 ? 1.25 : 5;
                // a detection near it, jittered, with a score that favours good overlaps
                double j = pl_rng_range(&r, -0.3, 0.3) * w;
                d[c] = detb(im[a].name, x + j, y + j, x + w + j, y + w, 0.5 + 0.5 * pl_rng_uniform(&r) - fabs(j) / w);
                c++;
                b++;
            }
            int nf = (int)pl_rng_int(&r, 0, 8);
            for (int f = 0; f < nf; f++) {
                double x = pl_rng_range(&r, 0, 450), y = pl_rng_range(&r, 0, 450);
                d[c++] = detb(im[a].name, x, y, x + 30, y + 30, 0.8 * pl_rng_uniform(&r));
            }
            a++;
        }
    }
    *ni = a, *ng = b, *nd = c;
    *im_out = im, *g_out = g, *d_out = d;
    CHECK(froc_set_build(s, im, a, g, b, d, c) == 0);
}

// The bootstrap's weighted walk equals a brute-force walk over an explicitly resampled cohort.
static void test_bootstrap(void) {
    froc_set s;
    froc_image *im;
    froc_gt *g;
    froc_det *d;
    int64_t ni, ng, nd;
    make_random(&s, 40, 11, &im, &g, &d, &ni, &ng, &nd);
    double maxdiff = 0;
    for (int rule = 0; rule < 2; rule++) {
        froc_opts o;
        froc_opts_default(&o);
        o.fp_rule = (enum froc_fp_rule)rule;
        froc_curve c;
        CHECK(froc_walk(&c, &s, NULL, &o) == 0);
        for (uint64_t seed = 1; seed <= 6; seed++) {
            froc_ci one;
            CHECK(froc_bootstrap(&one, &s, &c, NULL, &o, 1, seed) == 0);
            // replay the draws: units are patients 0..39 in order
            pl_rng rng;
            pl_rng_seed(&rng, seed);
            int w[40] = {0};
            for (int u = 0; u < 40; u++) w[pl_rng_int(&rng, 0, 39)]++;
            froc_image *bi = calloc((size_t)ni * 40, sizeof *bi);
            froc_gt *bg = calloc((size_t)ng * 40, sizeof *bg);
            froc_det *bd = calloc((size_t)nd * 40, sizeof *bd);
            int64_t a = 0, b = 0, e = 0;
            for (int64_t i = 0; i < ni; i++) {
                for (int copy = 0; copy < w[im[i].patient]; copy++) {
                    bi[a] = im[i];
                    snprintf(bi[a].name, FROC_NAME, "%.20s#%d", im[i].name, copy);
                    for (int64_t j = 0; j < ng; j++)
                        if (g[j].image == i) {
                            bg[b] = g[j];
                            bg[b++].image = a;
                        }
                    for (int64_t k = 0; k < nd; k++)
                        if (strcmp(d[k].file, im[i].name) == 0) {
                            bd[e] = d[k];
                            snprintf(bd[e++].file, FROC_NAME, "%s", bi[a].name);
                        }
                    a++;
                }
            }
            froc_set bs;
            froc_curve bc;
            CHECK(froc_set_build(&bs, bi, a, bg, b, bd, e) == 0);
            CHECK(froc_walk(&bc, &bs, NULL, &o) == 0);
            for (int k = 0; k < FROC_NLEVELS; k++) {
                double diff = fabs(bc.sens[k] - one.lo[k]);
                if (diff > maxdiff) maxdiff = diff;
                CHECK_NEAR(one.lo[k], bc.sens[k], 1e-12);
                CHECK(one.lo[k] == one.hi[k]);
            }
            CHECK_NEAR(one.lo[FROC_NLEVELS], bc.mfroc, 1e-12);
            froc_curve_free(&bc);
            froc_set_free(&bs);
            free(bi);
            free(bg);
            free(bd);
        }
        // 95% CI brackets the point estimate, deterministic for a seed, moves with the seed
        froc_ci ci1, ci2, ci3;
        CHECK(froc_bootstrap(&ci1, &s, &c, NULL, &o, 400, 42) == 0);
        CHECK(froc_bootstrap(&ci2, &s, &c, NULL, &o, 400, 42) == 0);
        CHECK(froc_bootstrap(&ci3, &s, &c, NULL, &o, 400, 43) == 0);
        int differs = 0;
        for (int k = 0; k <= FROC_NLEVELS; k++) {
            double pt = k < FROC_NLEVELS ? c.sens[k] : c.mfroc;
            CHECK(ci1.lo[k] <= pt && pt <= ci1.hi[k]);
            CHECK(ci1.lo[k] < ci1.hi[k] || k >= 4);
            CHECK(ci1.lo[k] == ci2.lo[k] && ci1.hi[k] == ci2.hi[k]);
            differs |= ci1.lo[k] != ci3.lo[k] || ci1.hi[k] != ci3.hi[k];
        }
        CHECK(differs);
        printf("bootstrap rule:%d mfroc:%.4f ci:[%.4f, %.4f] sens@0.5:%.4f ci:[%.4f, %.4f]\n", rule, c.mfroc,
               ci1.lo[FROC_NLEVELS], ci1.hi[FROC_NLEVELS], c.sens[0], ci1.lo[0], ci1.hi[0]);
        froc_curve_free(&c);
    }
    printf("bootstrap: brute-force max diff %.3g\n", maxdiff);
    free(im);
    free(g);
    free(d);
    froc_set_free(&s);
    printf("bootstrap: ok\n");
}

int main(void) {
    test_case_a();
    test_case_b();
    test_case_c();
    test_empty();
    test_ties();
    test_iou();
    test_noisy();
    test_groups();
    test_ap();
    test_csv();
    test_bootstrap();
    if (g_fail) {
        fprintf(stderr, "test_froc: %d check(s) failed\n", g_fail);
        return 1;
    }
    printf("test_froc: all passed\n");
    return 0;
}
