// Tests of the COCO bbox evaluation (stages/score/cocoeval.c) on hand-computed cases: 2 gts / 3 dets
// with known IoUs, crowd regions, dets on images without gt or outside the evaluated list, a
// category without gt, area ranges, the max_dets cut, perfect and empty detections, input order,
// bad input. Usage: test_cocoeval                          (the tests)
//                   test_cocoeval --dump DIR SEED PLUS1 MAXD (a random case for the Python reference:
//                   DIR/{images,gt,dets}.csv, DIR/opts.txt and the C result DIR/result.json)
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/fileio.h"
#include "nn/pl.h"
#include "stages/score/cocoeval.h"
#include "test_util.h"


// pycocotools' precision is tp / (tp + fp + eps): a single TP gives 1 - 2^-52, not 1.
static const double TOL = 1e-12;

static coco_eval_gt gtb(int64_t image, int32_t cat, double x1, double y1, double x2, double y2) {
    coco_eval_gt g;
    memset(&g, 0, sizeof g);
    g.image = image, g.category = cat;
    g.box[0] = x1, g.box[1] = y1, g.box[2] = x2, g.box[3] = y2;
    return g;
}
static coco_eval_det detb(int64_t image, int32_t cat, double x1, double y1, double x2, double y2, double s) {
    coco_eval_det d;
    memset(&d, 0, sizeof d);
    d.image = image, d.category = cat;
    d.box[0] = x1, d.box[1] = y1, d.box[2] = x2, d.box[3] = y2;
    d.score = s;
    return d;
}
static int run(coco_eval_result *r, const coco_eval_gt *g, int64_t ng, const coco_eval_det *d, int64_t nd,
               const int64_t *im, int64_t ni, int max_dets) {
    coco_eval_opts o;
    coco_eval_opts_default(&o);
    o.max_dets = max_dets;
    return coco_eval_run(r, g, ng, d, nd, im, ni, &o);
}

// 1 image, 1 category, gts A = [0,0,20,20], B = [40,0,60,20] (area 400 each: small).
// d1 (.9) = [0,0,20,16.6]  IoU(A) = 332/400 = 0.83   -> TP for t <= .80 (7 thresholds)
// d2 (.8) = [100,100,110,110] IoU 0                  -> FP
// d3 (.7) = [40,0,60,12.4] IoU(B) = 248/400 = 0.62   -> TP for t <= .60 (3 thresholds)
// t in {.50,.55,.60}: TP FP TP: rc = [.5,.5,1], pr = [1,.5,2/3] -> envelope [1,2/3,2/3];
//   recall points 0..0.50 (51) -> 1, 0.51..1 (50) -> 2/3: sum 51 + 100/3 = 253/3.
// t in {.65..80} (4): TP FP FP: rc = [.5,.5,.5]: 51 points -> 1, 50 -> 0: sum 51.
// t in {.85,.90,.95}: no TP: 0.
// AP50 = (253/3)/101 = 253/303; AP75 = 51/101; AP = (3*253/3 + 4*51)/1010 = 457/1010.
// AR: recall 1 (3 thresholds), .5 (4), 0 (3) -> 5/10; AR1 (d1 only): .5 for 7 thresholds -> .35.
static void test_hand_two_gts(void) {
    coco_eval_gt g[] = {gtb(7, 1, 0, 0, 20, 20), gtb(7, 1, 40, 0, 60, 20)};
    coco_eval_det d[] = {detb(7, 1, 0, 0, 20, 16.6, .9), detb(7, 1, 100, 100, 110, 110, .8),
                         detb(7, 1, 40, 0, 60, 12.4, .7)};
    int64_t im[] = {7};
    coco_eval_result r;
    CHECK(run(&r, g, 2, d, 3, im, 1, 100) == 0);
    CHECK_NEAR(r.ap50, 253.0 / 303.0, TOL);
    CHECK_NEAR(r.ap75, 51.0 / 101.0, TOL);
    CHECK_NEAR(r.ap, 457.0 / 1010.0, TOL);
    CHECK_NEAR(r.ap_small, 457.0 / 1010.0, TOL);
    CHECK(r.ap_medium == -1 && r.ap_large == -1);
    CHECK_NEAR(r.ar100, 0.5, TOL);
    CHECK_NEAR(r.ar10, 0.5, TOL);
    CHECK_NEAR(r.ar1, 0.35, TOL);
    CHECK_NEAR(r.ar_small, 0.5, TOL);
    CHECK(r.ar_medium == -1 && r.ar_large == -1);
    CHECK(r.ncat == 1 && r.cat_ids[0] == 1);
    CHECK_NEAR(r.ap_per_cat[0], r.ap, 0);
    CHECK_NEAR(r.ap50_per_cat[0], r.ap50, 0);
    CHECK(r.nimages == 1 && r.ngt == 2 && r.ndet == 3);
    fprintf(stderr, "hand_two_gts: ap:%.6f ap50:%.6f ap75:%.6f ar1:%.4f ar100:%.4f\n", r.ap, r.ap50, r.ap75,
            r.ar1, r.ar100);
    coco_eval_result_free(&r);
}

// A crowd region C = [100,100,200,200]: dets inside it (IoU = intersection / det area = 1) are
// matched to the ignored crowd gt, repeatedly, and are neither TP nor FP: AP = 1 (one TP at the
// top: 1 - 2^-52). The same gt without the crowd flag makes them FPs ranked first: the TP d1 (.5)
// comes after two FPs, and C is then an unmatched regular gt (npig 2): rc = [0,0,.5],
// pr = [0,0,1/3] -> envelope 1/3 up to recall .5, 0 after: AP = 51/101 / 3.
static void test_crowd(void) {
    coco_eval_gt g[] = {gtb(1, 1, 0, 0, 20, 20), gtb(1, 1, 100, 100, 200, 200)};
    g[1].iscrowd = 1;
    coco_eval_det d[] = {detb(1, 1, 120, 120, 140, 140, .95), detb(1, 1, 150, 150, 160, 160, .9),
                         detb(1, 1, 0, 0, 20, 20, .5)};
    int64_t im[] = {1};
    coco_eval_result r;
    CHECK(run(&r, g, 2, d, 3, im, 1, 100) == 0);
    CHECK_NEAR(r.ap, 1, TOL);
    CHECK_NEAR(r.ap50, 1, TOL);
    CHECK_NEAR(r.ar100, 1, TOL);
    coco_eval_result_free(&r);
    g[1].iscrowd = 0;
    CHECK(run(&r, g, 2, d, 3, im, 1, 100) == 0);
    CHECK_NEAR(r.ap, 51.0 / 101.0 / 3.0, TOL);
    CHECK_NEAR(r.ar100, 0.5, TOL);
    coco_eval_result_free(&r);
    // a crowd-only category has no non-crowd gt: -1, like a category with only dets
    g[1].iscrowd = 1;
    g[1].category = 2;
    d[0].category = 2;
    CHECK(run(&r, g, 2, d, 3, im, 1, 100) == 0);
    CHECK(r.ncat == 2 && r.ap_per_cat[1] == -1 && r.ap50_per_cat[1] == -1);
    coco_eval_result_free(&r);
}

// A det on image 2 (listed, no gt) with score .9 ranks before the TP on image 1 (.5):
// tp = [0,1], fp = [1,1], rc = [0,1], pr = [0,.5] -> envelope .5 everywhere: AP = .5.
// Unlisted images (3) are ignored, and with image 2 unlisted AP = 1.
static void test_image_without_gt(void) {
    coco_eval_gt g[] = {gtb(1, 4, 10, 10, 50, 50)};
    coco_eval_det d[] = {detb(2, 4, 10, 10, 50, 50, .9), detb(1, 4, 10, 10, 50, 50, .5),
                         detb(3, 4, 10, 10, 50, 50, .99)};
    int64_t im[] = {2, 1, 2};   // order and duplicates do not matter
    coco_eval_result r;
    CHECK(run(&r, g, 1, d, 3, im, 3, 100) == 0);
    CHECK_NEAR(r.ap, 0.5, TOL);
    CHECK_NEAR(r.ap50, 0.5, TOL);
    CHECK(r.nimages == 2 && r.ndet == 2);
    coco_eval_result_free(&r);
    int64_t im1[] = {1};
    CHECK(run(&r, g, 1, d, 3, im1, 1, 100) == 0);
    CHECK_NEAR(r.ap, 1, TOL);
    CHECK(r.nimages == 1 && r.ndet == 1);
    coco_eval_result_free(&r);
}

// Category 1: two gts found exactly (AP 1: the second TP makes the envelope exactly 1);
// category 2: only dets (no gt: -1, left out); category 3: a gt and no det (AP 0).
// Mean over the valid ones: (1 + 0) / 2.
static void test_categories(void) {
    coco_eval_gt g[] = {gtb(1, 1, 0, 0, 10, 10), gtb(2, 1, 5, 5, 50, 50), gtb(2, 3, 60, 60, 90, 90)};
    coco_eval_det d[] = {detb(1, 1, 0, 0, 10, 10, .9), detb(2, 1, 5, 5, 50, 50, .8),
                         detb(1, 2, 0, 0, 10, 10, .95), detb(2, 2, 60, 60, 90, 90, .7)};
    int64_t im[] = {1, 2};
    coco_eval_result r;
    CHECK(run(&r, g, 3, d, 4, im, 2, 100) == 0);
    CHECK(r.ncat == 3);
    if (r.ncat == 3) {
        CHECK(r.cat_ids[0] == 1 && r.cat_ids[1] == 2 && r.cat_ids[2] == 3);
        CHECK(r.ap_per_cat[0] == 1 && r.ap_per_cat[1] == -1 && r.ap_per_cat[2] == 0);
        CHECK(r.ap50_per_cat[0] == 1 && r.ap50_per_cat[1] == -1 && r.ap50_per_cat[2] == 0);
    }
    CHECK(r.ap == 0.5 && r.ap50 == 0.5 && r.ar100 == 0.5);
    coco_eval_result_free(&r);
}

// One image: S = [0,0,10,10] (area 100, small), M = [100,0,145,45] (2025, medium),
// L = [200,0,350,150] (22500, large). Dets: dL = L (.9), dF = [500,500,510,510] (.85, area 100,
// nothing), dS = S (.8).
// all:    TP FP TP, npig 3: rc = [1/3,1/3,2/3], pr env = [1,2/3,2/3]: r <= .33 (34 points) -> 1,
//         .34..66 (33) -> 2/3, rest 0: AP = (34 + 22)/101 = 56/101; AR = 2/3.
// small:  dL matched to the ignored L -> ignored; dF in range, unmatched -> FP; dS TP:
//         rc = [0,0,1], pr = [0,0,.5] -> .5 everywhere: AP = .5, AR = 1.
// medium: dL, dS matched to ignored gts, dF unmatched outside the range: all ignored: AP = 0.
// large:  dL TP, the others ignored: AP = 1 (1 - 2^-52), AR = 1.
// The area field overrides the box area: S with area 2000 becomes medium (small: -1).
static void test_area_ranges(void) {
    coco_eval_gt g[] = {gtb(1, 1, 0, 0, 10, 10), gtb(1, 1, 100, 0, 145, 45), gtb(1, 1, 200, 0, 350, 150)};
    coco_eval_det d[] = {detb(1, 1, 200, 0, 350, 150, .9), detb(1, 1, 500, 500, 510, 510, .85),
                         detb(1, 1, 0, 0, 10, 10, .8)};
    int64_t im[] = {1};
    coco_eval_result r;
    CHECK(run(&r, g, 3, d, 3, im, 1, 100) == 0);
    CHECK_NEAR(r.ap, 56.0 / 101.0, TOL);
    CHECK_NEAR(r.ap_small, 0.5, TOL);
    CHECK(r.ap_medium == 0);
    CHECK_NEAR(r.ap_large, 1, TOL);
    CHECK_NEAR(r.ar100, 2.0 / 3.0, TOL);
    CHECK_NEAR(r.ar_small, 1, TOL);
    CHECK(r.ar_medium == 0);
    CHECK_NEAR(r.ar_large, 1, TOL);
    coco_eval_result_free(&r);
    g[0].area = 2000;   // S: medium now; dF (area 100) is outside every range but all
    CHECK(run(&r, g, 3, d, 3, im, 1, 100) == 0);
    CHECK(r.ap_small == -1 && r.ar_small == -1);
    // medium (S and M, npig 2): dL ignored (matched L), dF ignored (area), dS TP:
    // rc = [0,0,.5], envelope 1 up to recall .5 (51 points): AP = 51/101, AR = 1/2
    CHECK_NEAR(r.ap_medium, 51.0 / 101.0, TOL);
    CHECK_NEAR(r.ar_medium, 0.5, TOL);
    coco_eval_result_free(&r);
}

// Ties and boundaries.
// (a) det d1 (.9) = [2.5,0,12.5,10] overlaps gA = [0,0,10,10] and gB = [5,0,15,10] with the same
//     IoU 75/125 = .6; pycocotools keeps the later gt (gB: `if ious < iou: continue` lets an
//     equal IoU replace the match), so d2 (.8) = gA is a TP too: AP50 = 1. For t > .6 d1 is an
//     FP before d2: rc = [0,.5], pr = [0,.5]: 51 points at .5. AP = (3 + 7 * 25.5/101) / 10.
// (b) equal scores keep input order within an image and image-id order across images: an FP
//     listed first then a TP at the same score: rc = [0,1], pr = [0,.5]: AP = .5 (not 1); with
//     max_dets 1 only the FP is kept: AP = AR = 0. Across images: the FP on image 1 (listed
//     after the TP on image 2) still ranks first: AP = .5.
// (c) IoU exactly at a threshold matches: [0,0,10,5] on [0,0,10,10] is 0.5 (AP50 = 1, 1 - 2^-52),
//     [0,0,10,7.5] is 0.75: TP for the 6 thresholds <= .75: AP = .6, AP75 = 1.
// (d) area ranges are closed: a 32x32 gt (1024) is both small and medium; so is an FP 32x32 det.
static void test_ties_and_boundaries(void) {
    coco_eval_result r;
    int64_t im1[] = {1}, im12[] = {1, 2};
    {
        coco_eval_gt g[] = {gtb(1, 1, 0, 0, 10, 10), gtb(1, 1, 5, 0, 15, 10)};
        coco_eval_det d[] = {detb(1, 1, 2.5, 0, 12.5, 10, .9), detb(1, 1, 0, 0, 10, 10, .8)};
        CHECK(run(&r, g, 2, d, 2, im1, 1, 100) == 0);
        CHECK(r.ap50 == 1);
        CHECK_NEAR(r.ap, (3 + 7 * 25.5 / 101) / 10, TOL);
        coco_eval_result_free(&r);
    }
    {
        coco_eval_gt g[] = {gtb(1, 1, 0, 0, 10, 10)};
        coco_eval_det d[] = {detb(1, 1, 50, 50, 60, 60, .5), detb(1, 1, 0, 0, 10, 10, .5)};
        CHECK(run(&r, g, 1, d, 2, im1, 1, 100) == 0);
        CHECK_NEAR(r.ap, 0.5, TOL);
        CHECK(r.ar1 == 0 && r.ar100 == 1);
        coco_eval_result_free(&r);
        CHECK(run(&r, g, 1, d, 2, im1, 1, 1) == 0);
        CHECK(r.ap == 0 && r.ar100 == 0);
        coco_eval_result_free(&r);
        coco_eval_det d2[] = {detb(2, 1, 0, 0, 10, 10, .5), detb(1, 1, 50, 50, 60, 60, .5)};
        g[0].image = 2;
        CHECK(run(&r, g, 1, d2, 2, im12, 2, 100) == 0);
        CHECK_NEAR(r.ap, 0.5, TOL);
        coco_eval_result_free(&r);
    }
    {
        coco_eval_gt g[] = {gtb(1, 1, 0, 0, 10, 10)};
        coco_eval_det d[] = {detb(1, 1, 0, 0, 10, 5, .9)};
        CHECK(run(&r, g, 1, d, 1, im1, 1, 100) == 0);
        CHECK_NEAR(r.ap50, 1, TOL);
        CHECK_NEAR(r.ap, 0.1, TOL);
        coco_eval_result_free(&r);
        d[0].box[3] = 7.5;
        CHECK(run(&r, g, 1, d, 1, im1, 1, 100) == 0);
        CHECK_NEAR(r.ap75, 1, TOL);
        CHECK_NEAR(r.ap, 0.6, TOL);
        coco_eval_result_free(&r);
    }
    {
        coco_eval_gt g[] = {gtb(1, 1, 0, 0, 32, 32)};
        coco_eval_det d[] = {detb(1, 1, 100, 100, 132, 132, .9), detb(1, 1, 0, 0, 32, 32, .8)};
        CHECK(run(&r, g, 1, d, 2, im1, 1, 100) == 0);
        CHECK_NEAR(r.ap_small, 0.5, TOL);    // FP then TP, in both ranges
        CHECK_NEAR(r.ap_medium, 0.5, TOL);
        CHECK(r.ap_large == -1);
        coco_eval_result_free(&r);
    }
}

// One gt and 120 dets on one image: 119 FPs at scores 1 - i/1000 and the TP at rank `tp_rank`
// (0-based). With max_dets 100, rank 99 is kept: one TP after 99 FPs: pr = 1/100 at rc = 1 ->
// AP = 1/100 (up to eps), AR100 = 1, AR10 = AR1 = 0; rank 100 is cut: AP = AR = 0. With
// max_dets 200, rank 100 gives AP = 1/101. A second image with 60 dets does not matter (the cut
// is per image).
static void test_max_dets(void) {
    coco_eval_gt g[] = {gtb(1, 1, 0, 0, 100, 100)};
    coco_eval_det d[180];
    int64_t im[] = {1, 2};
    for (int pass = 0; pass < 3; pass++) {
        int tp_rank = pass == 0 ? 99 : 100, maxd = pass == 2 ? 200 : 100;
        for (int i = 0, f = 0; i < 120; i++) {
            double s = 1 - i / 1000.0;
            d[i] = i == tp_rank ? detb(1, 1, 0, 0, 100, 100, s) : detb(1, 1, 200 + f, 200, 210 + f, 210, s);
            if (i != tp_rank) f++;
        }
        for (int i = 120; i < 180; i++) d[i] = detb(2, 1, 0, 0, 10, 10, 0.5);
        coco_eval_result r;
        CHECK(run(&r, g, 1, d, 180, im, 2, maxd) == 0);
        if (pass == 0) {
            CHECK_NEAR(r.ap, 0.01, TOL);
            CHECK(r.ar100 == 1 && r.ar10 == 0 && r.ar1 == 0);
        } else if (pass == 1) {
            CHECK(r.ap == 0 && r.ar100 == 0);
        } else {
            CHECK_NEAR(r.ap, 1.0 / 101.0, TOL);
            CHECK(r.ar100 == 1 && r.max_dets == 200);
        }
        coco_eval_result_free(&r);
    }
}

// A random case: n_img images (ids 1000 + 7 i, listed shuffled with a duplicate), categories
// {1,3,7,12,20} (20 has dets only), 0..8 gts per image (side 4..300 log-uniform: all three
// ranges; 1 in 10 crowd; half with a segmentation-like area field), jittered copies of the gts
// and random FPs as dets, scores on a 1/50 grid (ties) when `ties`, one image with 130 dets of
// category 3 (the max_dets cut), dets on unlisted images, exact duplicate gts (IoU ties),
// integer coordinates on odd images (IoUs exactly at thresholds).
typedef struct {
    coco_eval_gt *g; int64_t ng;
    coco_eval_det *d; int64_t nd;
    int64_t *im; int64_t ni;
} rcase;

static void rcase_free(rcase *c) {
    free(c->g);
    free(c->d);
    free(c->im);
}

static void rcase_make(rcase *c, uint64_t seed, int n_img, int ties, int dup_gts) {
    static const int32_t cats[] = {1, 3, 7, 12, 20};
    pl_rng rng;
    pl_rng_seed(&rng, seed);
    memset(c, 0, sizeof *c);
    c->g = calloc(20000, sizeof *c->g);
    c->d = calloc(40000, sizeof *c->d);
    c->im = calloc((size_t)n_img + 1, sizeof *c->im);
    PL_ASSERT(c->g && c->d && c->im);
    for (int i = 0; i < n_img; i++) c->im[c->ni++] = 1000 + 7 * i;
    pl_rng_shuffle_i64(&rng, c->im, c->ni);
    c->im[c->ni++] = c->im[0];
    for (int i = 0; i < n_img + 3; i++) {
        int64_t id = i < n_img ? 1000 + 7 * i : 99000 + i;   // the last 3 are not listed
        int integer = i % 2;
        int ngi = (int)pl_rng_int(&rng, 0, 8);
        if (i % 10 == 3) ngi = 0;
        int64_t gstart = c->ng;
        for (int j = 0; j < ngi; j++) {
            coco_eval_gt *g = &c->g[c->ng++];
            g->image = id;
            g->category = cats[pl_rng_int(&rng, 0, 3)];
            double side = exp(pl_rng_range(&rng, log(4), log(300)));
            double w = side * pl_rng_range(&rng, 0.6, 1.4), h = side * pl_rng_range(&rng, 0.6, 1.4);
            double x = pl_rng_range(&rng, 0, 640 - w), y = pl_rng_range(&rng, 0, 480 - h);
            if (integer) x = floor(x), y = floor(y), w = floor(w) + 1, h = floor(h) + 1;
            g->box[0] = x, g->box[1] = y, g->box[2] = x + w, g->box[3] = y + h;
            g->iscrowd = pl_rng_uniform(&rng) < 0.1;
            if (g->iscrowd) {   // crowd regions are larger
                g->box[2] = PL_MIN(640, x + 2 * w), g->box[3] = PL_MIN(480, y + 2 * h);
            }
            g->area = pl_rng_uniform(&rng) < 0.5 ? w * h * pl_rng_range(&rng, 0.4, 1.0) : 0;
            if (pl_rng_uniform(&rng) < 0.08) g->area = pl_rng_uniform(&rng) < 0.5 ? 32 * 32 : 96 * 96;
            if (dup_gts && j > 0 && pl_rng_uniform(&rng) < 0.15) {   // an exact duplicate
                *g = c->g[c->ng - 2];
            }
        }
        for (int64_t j = gstart; j < c->ng; j++) {   // jittered copies
            const coco_eval_gt *g = &c->g[j];
            int ncp = pl_rng_uniform(&rng) < 0.75 ? (int)pl_rng_int(&rng, 1, 3) : 0;
            for (int k = 0; k < ncp; k++) {
                coco_eval_det *d = &c->d[c->nd++];
                double w = g->box[2] - g->box[0], h = g->box[3] - g->box[1], jit = pl_rng_range(&rng, 0, 0.2);
                d->image = g->image;
                d->category = pl_rng_uniform(&rng) < 0.9 ? g->category : cats[pl_rng_int(&rng, 0, 4)];
                double x1 = g->box[0] + jit * w * pl_rng_normal(&rng), y1 = g->box[1] + jit * h * pl_rng_normal(&rng);
                double x2 = g->box[2] + jit * w * pl_rng_normal(&rng), y2 = g->box[3] + jit * h * pl_rng_normal(&rng);
                if (integer) x1 = round(x1), y1 = round(y1), x2 = round(x2), y2 = round(y2);
                if (x2 < x1) { double t = x1; x1 = x2; x2 = t; }
                if (y2 < y1) { double t = y1; y1 = y2; y2 = t; }
                d->box[0] = x1, d->box[1] = y1, d->box[2] = x2, d->box[3] = y2;
                d->score = pl_rng_uniform(&rng) * (1 - jit);
            }
        }
        int nfp = (int)pl_rng_int(&rng, 0, 18);
        if (i == 5) nfp = 130;
        for (int k = 0; k < nfp; k++) {
            coco_eval_det *d = &c->d[c->nd++];
            d->image = id;
            d->category = i == 5 ? 3 : cats[pl_rng_int(&rng, 0, 4)];
            double side = exp(pl_rng_range(&rng, log(3), log(250)));
            double x = pl_rng_range(&rng, 0, 600), y = pl_rng_range(&rng, 0, 450);
            if (integer) x = floor(x), y = floor(y), side = floor(side) + 1;
            d->box[0] = x, d->box[1] = y, d->box[2] = x + side, d->box[3] = y + side * pl_rng_range(&rng, 0.5, 1.5);
            d->score = pl_rng_uniform(&rng) * 0.7;
        }
    }
    if (ties)
        for (int64_t k = 0; k < c->nd; k++) c->d[k].score = round(c->d[k].score * 50) / 50;
}

static int same_result(const coco_eval_result *a, const coco_eval_result *b) {
    const double *x = &a->ap, *y = &b->ap;   // the 12 figures are consecutive doubles
    for (int i = 0; i < 12; i++)
        if (x[i] != y[i]) return 0;
    if (a->ncat != b->ncat) return 0;
    for (int k = 0; k < a->ncat; k++)
        if (a->cat_ids[k] != b->cat_ids[k] || a->ap_per_cat[k] != b->ap_per_cat[k] ||
            a->ap50_per_cat[k] != b->ap50_per_cat[k])
            return 0;
    return 1;
}

// Perfect detections (every non-crowd gt once, at least 2 per category): the envelope reaches
// exactly 1 at every recall point, AP = AR = 1 exactly. No detections: 0 (not -1).
static void test_perfect_and_empty(void) {
    rcase c;
    rcase_make(&c, 11, 40, 0, 0);
    c.nd = 0;
    for (int64_t j = 0; j < c.ng; j++) {
        if (c.g[j].iscrowd) continue;
        coco_eval_det *d = &c.d[c.nd++];
        d->image = c.g[j].image, d->category = c.g[j].category;
        memcpy(d->box, c.g[j].box, sizeof d->box);
        d->score = 0.1 + 0.8 * (double)(j % 13) / 13;
    }
    coco_eval_result r;
    CHECK(run(&r, c.g, c.ng, c.d, c.nd, c.im, c.ni, 100) == 0);
    CHECK(r.ap == 1 && r.ap50 == 1 && r.ap75 == 1 && r.ar1 > 0 && r.ar100 == 1);
    CHECK_NEAR(r.ap_small, 1, TOL);
    CHECK_NEAR(r.ap_medium, 1, TOL);
    CHECK_NEAR(r.ap_large, 1, TOL);
    CHECK(r.ar_small == 1 && r.ar_medium == 1 && r.ar_large == 1);
    fprintf(stderr, "perfect: ap:%.17g ap_small:%.17g ncat:%d\n", r.ap, r.ap_small, r.ncat);
    coco_eval_result_free(&r);
    CHECK(run(&r, c.g, c.ng, c.d, 0, c.im, c.ni, 100) == 0);
    CHECK(r.ap == 0 && r.ap50 == 0 && r.ap_small == 0 && r.ap_large == 0 && r.ar100 == 0 && r.ar1 == 0);
    coco_eval_result_free(&r);
    rcase_free(&c);
}

// Shuffled gts, dets and image list give the same result, bit for bit (distinct scores and no
// duplicate gts, so nothing depends on input order).
static void test_shuffled(void) {
    rcase c;
    rcase_make(&c, 5, 50, 0, 0);
    coco_eval_result r0, r1;
    CHECK(run(&r0, c.g, c.ng, c.d, c.nd, c.im, c.ni, 100) == 0);
    pl_rng rng;
    pl_rng_seed(&rng, 99);
    for (int64_t i = c.ng - 1; i > 0; i--) {
        int64_t j = pl_rng_int(&rng, 0, i);
        coco_eval_gt t = c.g[i]; c.g[i] = c.g[j]; c.g[j] = t;
    }
    for (int64_t i = c.nd - 1; i > 0; i--) {
        int64_t j = pl_rng_int(&rng, 0, i);
        coco_eval_det t = c.d[i]; c.d[i] = c.d[j]; c.d[j] = t;
    }
    pl_rng_shuffle_i64(&rng, c.im, c.ni);
    CHECK(run(&r1, c.g, c.ng, c.d, c.nd, c.im, c.ni, 100) == 0);
    CHECK(same_result(&r0, &r1));
    CHECK(r0.ap > 0.05 && r0.ap < 0.95);   // a non-trivial case
    fprintf(stderr, "shuffled: gts:%lld dets:%lld ap:%.6f ap50:%.6f (same after shuffling: %d)\n",
            (long long)c.ng, (long long)c.nd, r0.ap, r0.ap50, same_result(&r0, &r1));
    coco_eval_result_free(&r0);
    coco_eval_result_free(&r1);
    rcase_free(&c);
}

static void test_bad_input(void) {
    pl_quiet_begin();
    coco_eval_gt g[] = {gtb(1, 1, 0, 0, 10, 10)};
    coco_eval_det d[] = {detb(1, 1, 0, 0, 10, 10, NAN)};
    int64_t im[] = {1};
    coco_eval_result r;
    CHECK(run(&r, g, 1, d, 1, im, 1, 100) == PL_EINVAL);
    CHECK(strstr(pl_last_error(), "det 0") != NULL);
    coco_eval_result_free(&r);
    d[0].score = 0.5;
    g[0].box[2] = -5;
    CHECK(run(&r, g, 1, d, 1, im, 1, 100) == PL_EINVAL);
    CHECK(strstr(pl_last_error(), "x2 < x1") != NULL);
    g[0].box[2] = 10;
    CHECK(run(&r, g, 1, d, 1, im, 1, 0) == PL_EINVAL);
    CHECK(run(&r, g, 1, d, 1, NULL, 1, 100) == PL_EINVAL);
    coco_eval_result_free(&r);
    pl_quiet_end();
    // nothing to evaluate: every figure -1
    CHECK(run(&r, g, 1, d, 1, im, 0, 100) == 0);
    CHECK(r.ap == -1 && r.ar100 == -1 && r.ncat == 0);
    coco_eval_result_free(&r);
}

static void test_json(void) {
    coco_eval_gt g[] = {gtb(1, 5, 0, 0, 10, 10)};
    coco_eval_det d[] = {detb(1, 5, 0, 0, 10, 10, .5)};
    int64_t im[] = {1};
    coco_eval_result r;
    CHECK(run(&r, g, 1, d, 1, im, 1, 100) == 0);
    char path[] = "/tmp/mp3d_cocoeval_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    CHECK(coco_eval_write_json(path, &r) == 0);
    uint8_t *buf = NULL;
    size_t len = 0;
    CHECK(pl_read_file(path, &buf, &len) == 0);
    CHECK(buf && strstr((char *)buf, "\"ap_medium\": -1,") && strstr((char *)buf, "{\"id\": 5, \"ap\": "));
    free(buf);
    remove(path);
    coco_eval_result_free(&r);
}

// --dump: the random case with ties and duplicate gts, as CSV for test_cocoeval_reference.py.
static int dump(const char *dir, uint64_t seed, int plus1, int maxd) {
    rcase c;
    rcase_make(&c, seed, 50, 1, 1);
    char p[4096];
    FILE *f;
    snprintf(p, sizeof p, "%s/images.csv", dir);
    if (!(f = fopen(p, "w"))) return 1;
    for (int64_t i = 0; i < c.ni; i++) fprintf(f, "%lld\n", (long long)c.im[i]);
    fclose(f);
    snprintf(p, sizeof p, "%s/gt.csv", dir);
    if (!(f = fopen(p, "w"))) return 1;
    fprintf(f, "image,category,x1,y1,x2,y2,area,iscrowd\n");
    for (int64_t i = 0; i < c.ng; i++)
        fprintf(f, "%lld,%d,%.17g,%.17g,%.17g,%.17g,%.17g,%d\n", (long long)c.g[i].image, c.g[i].category,
                c.g[i].box[0], c.g[i].box[1], c.g[i].box[2], c.g[i].box[3], c.g[i].area, c.g[i].iscrowd);
    fclose(f);
    snprintf(p, sizeof p, "%s/dets.csv", dir);
    if (!(f = fopen(p, "w"))) return 1;
    fprintf(f, "image,category,x1,y1,x2,y2,score\n");
    for (int64_t i = 0; i < c.nd; i++)
        fprintf(f, "%lld,%d,%.17g,%.17g,%.17g,%.17g,%.17g\n", (long long)c.d[i].image, c.d[i].category,
                c.d[i].box[0], c.d[i].box[1], c.d[i].box[2], c.d[i].box[3], c.d[i].score);
    fclose(f);
    snprintf(p, sizeof p, "%s/opts.txt", dir);
    if (!(f = fopen(p, "w"))) return 1;
    fprintf(f, "%d %d\n", maxd, plus1);
    fclose(f);
    coco_eval_result r;
    coco_eval_opts o = {.max_dets = maxd, .plus1 = plus1};
    double t0 = pl_time();
    int rc = coco_eval_run(&r, c.g, c.ng, c.d, c.nd, c.im, c.ni, &o);
    double dt = pl_time() - t0;
    if (rc) return 1;
    snprintf(p, sizeof p, "%s/result.json", dir);
    rc = coco_eval_write_json(p, &r);
    fprintf(stderr, "dump seed:%llu plus1:%d max_dets:%d images:%lld gts:%lld dets:%lld ap:%.6f ap50:%.6f "
            "seconds:%.4f\n", (unsigned long long)seed, plus1, maxd, (long long)r.nimages, (long long)r.ngt,
            (long long)r.ndet, r.ap, r.ap50, dt);
    coco_eval_result_free(&r);
    rcase_free(&c);
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--dump") == 0) {
        if (argc != 6) {
            fprintf(stderr, "usage: %s --dump DIR SEED PLUS1 MAX_DETS\n", argv[0]);
            return 2;
        }
        return dump(argv[2], strtoull(argv[3], NULL, 10), atoi(argv[4]), atoi(argv[5]));
    }
    test_hand_two_gts();
    test_crowd();
    test_image_without_gt();
    test_categories();
    test_area_ranges();
    test_ties_and_boundaries();
    test_max_dets();
    test_perfect_and_empty();
    test_shuffled();
    test_bad_input();
    test_json();
    if (g_fail) {
        fprintf(stderr, "test_cocoeval: %d check(s) failed\n", g_fail);
        return 1;
    }
    fprintf(stderr, "test_cocoeval: all checks passed\n");
    return 0;
}
