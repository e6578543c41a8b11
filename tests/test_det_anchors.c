// test_det_anchors: anchor generation on a hand case (count, order, coordinates), the inside
// flags, MaxIoUAssigner on hand-made boxes (thresholds, ignore band, best-anchor rule with and
// without ties, min_pos_iou, crowd regions never positive or negative, invalid anchors, no gt),
// RandomSampler (counts, only positives/negatives, determinism, inclusion frequency), and shape
// k-means with 1 - IoU on hand sets.
#include "nn/anchors.h"
#include "tests/test_util.h"

static void test_generation(void) {
    anchor_config c;
    const double ratios[3] = {0.5, 1.0, 2.0};
    tu_check_near("anchors_config_make ok", anchors_config_make(&c, 4.0, ratios, 3), 0, 0);
    tu_check_near("A = 3 ratios x 1 scale", anchors_per_location(&c), 3, 0);
    float base[12];
    anchors_base(base, &c, 0);
    // stride 4, side 16: ratio 0.5 -> w = 16 * sqrt(2) = 22.627, h = 16 / sqrt(2) = 11.314
    const float want[12] = {-11.3137085f, -5.65685425f, 11.3137085f, 5.65685425f, -8, -8, 8, 8,
                            -5.65685425f, -11.3137085f, 5.65685425f, 11.3137085f};
    tu_check("base anchors of P2 (ratios 0.5/1/2, side 16) by hand", tu_rel_diff(base, want, 12, 1), 1e-6);
    float grid[2 * 3 * 3 * 4];
    anchors_grid(grid, &c, 0, 2, 3);
    // (y=1, x=2, a=1): index (1*3+2)*3+1 = 16, centre (8, 4), 16x16
    const float w16[4] = {0, -4, 16, 12};
    tu_check("grid anchor 16 = (y1,x2,ratio 1) = (0,-4,16,12)", tu_rel_diff(grid + 64, w16, 4, 1), 0);
    const float w5[4] = {4 - 5.65685425f, -11.3137085f, 4 + 5.65685425f, 11.3137085f};
    tu_check("grid anchor 5 = (y0,x1,ratio 2)", tu_rel_diff(grid + 20, w5, 4, 1), 1e-6);
    float sh[5 * 3 * 2];
    anchors_shapes(sh, &c);
    tu_check_near("shape of P4 ratio 1: 4 x 16 = 64 wide", sh[2 * (2 * 3 + 1)], 64, 1e-4);
    tu_check_near("shape of P6 ratio 2: h = 256 * sqrt(2)", sh[2 * (4 * 3 + 2) + 1], 256 * sqrt(2.0), 1e-3);
    uint8_t v[18];
    anchors_inside(v, grid, 18, 8, 12, 0);
    int nv = 0;
    for (int i = 0; i < 18; i++) nv += v[i];
    tu_check_near("inside (border 0) on a 8x12 image: none of the 16-px anchors at x<=8 fit", nv, 0, 0);
    anchors_inside(v, grid, 18, 8, 12, -1);
    nv = 0;
    for (int i = 0; i < 18; i++) nv += v[i];
    tu_check_near("allowed_border < 0: all 18 valid", nv, 18, 0);
    anchors_inside(v, grid, 18, 100, 100, 12);
    tu_check_near("border 12: anchor 16 (0,-4,16,12) valid", v[16], 1, 0);
    tu_check_near("border 12: anchor 0 (x1 = -11.3, y1 = -5.7) valid", v[0], 1, 0);
    anchors_inside(v, grid, 18, 100, 100, 11);
    tu_check_near("border 11: anchor 0 (x1 = -11.3) invalid", v[0], 0, 0);
}

static void test_assign(void) {
    const float gtb[12] = {0, 0, 10, 10, 100, 100, 120, 140, 300, 300, 310, 310};
    const float an[8 * 4] = {
        0, 0, 10, 10,          // a0 IoU 1 with gt0 -> pos 0
        0, 0, 10, 12,          // a1 IoU 100/120 -> pos 0
        5, 0, 15, 10,          // a2 IoU 50/150 = 0.333 -> ignore band
        50, 50, 60, 60,        // a3 IoU 0 -> neg
        100, 100, 120, 120,    // a4 IoU 0.5 with gt1 -> gt1's best -> pos 1
        100, 120, 120, 140,    // a5 IoU 0.5 with gt1, ties a4 -> pos 1 when assigning all ties
        7, 0, 17, 10,          // a6 IoU 30/170 -> neg
        305, 300, 325, 310,    // a7 gt2's best, IoU 50/250 = 0.2 < min_pos 0.3 -> neg
    };
    det_gt g = {gtb, NULL, 3, NULL, 0, 512, 512};
    assign_config c = anchors_assign_rpn_defaults();
    int64_t as[8];
    float mx[8];
    anchors_assign(as, mx, an, NULL, 8, &g, &c);
    const int64_t want[8] = {0, 0, ASSIGN_IGNORE, ASSIGN_NEG, 1, 1, ASSIGN_NEG, ASSIGN_NEG};
    int bad = 0;
    for (int i = 0; i < 8; i++) bad += as[i] != want[i];
    printf("assigned: %lld %lld %lld %lld %lld %lld %lld %lld\n", (long long)as[0], (long long)as[1],
           (long long)as[2], (long long)as[3], (long long)as[4], (long long)as[5], (long long)as[6],
           (long long)as[7]);
    tu_check_near("RPN assignment of 8 hand anchors (mismatches)", bad, 0, 0);
    tu_check_near("max IoU of a1 = 100/120", mx[1], 100.0 / 120, 1e-6);
    tu_check_near("max IoU of a7 = 50/250", mx[7], 0.2, 1e-6);
    c.gt_max_assign_all = 0;
    anchors_assign(as, NULL, an, NULL, 8, &g, &c);
    tu_check_near("best-anchor rule, first argmax only: a4 pos", (double)as[4], 1, 0);
    tu_check_near("best-anchor rule, first argmax only: a5 stays in the band", (double)as[5], ASSIGN_IGNORE, 0);
    c.gt_max_assign_all = 1;
    c.match_low_quality = 0;
    anchors_assign(as, NULL, an, NULL, 8, &g, &c);
    tu_check_near("no low-quality matching: a4 in the band", (double)as[4], ASSIGN_IGNORE, 0);
    c.match_low_quality = 1;
    c.min_pos_iou = 0.15;
    anchors_assign(as, NULL, an, NULL, 8, &g, &c);
    tu_check_near("min_pos_iou 0.15: a7 (IoU 0.2) becomes gt2's positive", (double)as[7], 2, 0);
    c.min_pos_iou = 0.3;
    // crowd region (0,0,12,12): a0 (IoF 1), a1 (1), a2 (0.7) ignored even with IoU 1; a6 (IoF 0.5) not
    const float crowd[4] = {0, 0, 12, 12};
    g.ignore = crowd;
    g.n_ignore = 1;
    anchors_assign(as, mx, an, NULL, 8, &g, &c);
    tu_check_near("crowd: a0 (IoU 1 with gt0) neither pos nor neg", (double)as[0], ASSIGN_IGNORE, 0);
    tu_check_near("crowd: a1 ignored", (double)as[1], ASSIGN_IGNORE, 0);
    tu_check_near("crowd: a2 ignored", (double)as[2], ASSIGN_IGNORE, 0);
    tu_check_near("crowd: a6 (IoF exactly 0.5) still negative", (double)as[6], ASSIGN_NEG, 0);
    tu_check_near("crowd: best-anchor rule cannot pick ignored a0 (gt0 gets none)",
                  (double)(as[0] == 0 || as[1] == 0 || as[6] == 0), 0, 0);
    tu_check_near("crowd: max_iou of an ignored anchor = -1", mx[0], -1, 0);
    g.ignore = NULL;
    g.n_ignore = 0;
    uint8_t valid[8] = {1, 1, 1, 0, 0, 1, 1, 1};
    anchors_assign(as, NULL, an, valid, 8, &g, &c);
    tu_check_near("invalid a3 ignored", (double)as[3], ASSIGN_IGNORE, 0);
    tu_check_near("invalid a4 ignored, a5 still gt1's best", (double)(as[4] * 10 + as[5]), ASSIGN_IGNORE * 10 + 1, 0);
    det_gt none = {NULL, NULL, 0, crowd, 1, 512, 512};
    anchors_assign(as, NULL, an, NULL, 8, &none, &c);
    int nneg = 0;
    for (int i = 0; i < 8; i++) nneg += as[i] == ASSIGN_NEG;
    tu_check_near("no gt boxes: all negative except the 3 in the crowd region", nneg, 5, 0);
    // R-CNN defaults: 0.5/0.5, no low quality: a4 (IoU exactly 0.5) positive, a2 (0.33) negative
    assign_config r = anchors_assign_rcnn_defaults();
    anchors_assign(as, NULL, an, NULL, 8, &g, &r);
    tu_check_near("R-CNN assigner: a4 (IoU 0.5) positive", (double)as[4], 1, 0);
    tu_check_near("R-CNN assigner: a2 (IoU 0.33) negative", (double)as[2], ASSIGN_NEG, 0);
    tu_check_near("R-CNN assigner: a7 negative", (double)as[7], ASSIGN_NEG, 0);
}

static void test_sample(void) {
    enum { N = 1000 };
    static int64_t as[N], ws[N];
    static uint8_t pk[N], pk2[N];
    pl_rng rng;
    // 30 positives, 600 negatives, rest ignored
    for (int i = 0; i < N; i++) as[i] = i % 33 == 0 && i < 990 ? i % 7 : (i % 10 < 6 ? ASSIGN_NEG : ASSIGN_IGNORE);
    int64_t np0 = 0, nn0 = 0;
    for (int i = 0; i < N; i++) np0 += as[i] >= 0, nn0 += as[i] == ASSIGN_NEG;
    pl_rng_seed(&rng, 3);
    int64_t np, ns = anchors_sample(pk, &np, as, N, 256, 0.5, &rng, ws);
    int wrong = 0, posk = 0;
    for (int i = 0; i < N; i++) {
        wrong += pk[i] && as[i] == ASSIGN_IGNORE;
        posk += pk[i] && as[i] >= 0;
    }
    printf("sample: %lld positives, %lld negatives available\n", (long long)np0, (long long)nn0);
    tu_check_near("few positives: all taken", (double)np, (double)np0, 0);
    tu_check_near("negatives fill up to 256", (double)ns, 256, 0);
    tu_check_near("no ignored anchor sampled", wrong, 0, 0);
    tu_check_near("positive count matches the flags", posk, (double)np, 0);
    pl_rng_seed(&rng, 3);
    anchors_sample(pk2, NULL, as, N, 256, 0.5, &rng, ws);
    tu_check_near("same seed, same sample", memcmp(pk, pk2, N) == 0, 1, 0);
    pl_rng_seed(&rng, 4);
    anchors_sample(pk2, NULL, as, N, 256, 0.5, &rng, ws);
    tu_check_near("another seed, another sample", memcmp(pk, pk2, N) != 0, 1, 0);
    // 200 positives: half of 256; inclusion frequency of each positive ~ 128/200
    for (int i = 0; i < N; i++) as[i] = i < 200 ? 0 : (i < 900 ? ASSIGN_NEG : ASSIGN_IGNORE);
    static int hits[N];
    const int draws = 2000;
    for (int d = 0; d < draws; d++) {
        ns = anchors_sample(pk, &np, as, N, 256, 0.5, &rng, ws);
        if (np != 128 || ns != 256) wrong++;
        for (int i = 0; i < N; i++) hits[i] += pk[i];
    }
    tu_check_near("many positives: 128 pos + 128 neg every draw (bad draws)", wrong, 0, 0);
    double flo = 1, fhi = 0;
    for (int i = 0; i < 200; i++) {
        double f = hits[i] / (double)draws;
        flo = flo < f ? flo : f;
        fhi = fhi > f ? fhi : f;
    }
    printf("positive inclusion frequency: min %.3f max %.3f (expected 0.640)\n", flo, fhi);
    tu_check("positive inclusion frequency within 0.64 +- 0.06", fmax(fabs(flo - 0.64), fabs(fhi - 0.64)), 0.06);
    // few negatives: total = all of them
    for (int i = 0; i < N; i++) as[i] = i < 10 ? 0 : (i < 30 ? ASSIGN_NEG : ASSIGN_IGNORE);
    ns = anchors_sample(pk, &np, as, N, 256, 0.5, &rng, ws);
    tu_check_near("10 pos + 20 neg available: 30 sampled", (double)ns, 30, 0);
}

static void test_kmeans(void) {
    const float a[2] = {10, 20}, b[2] = {20, 10};
    tu_check_near("shape IoU (10x20 vs 20x10) = 100/300", anchors_shape_iou(a, b), 1.0 / 3, 1e-7);
    const float wh[12] = {100, 50, 10, 10, 110, 55, 12, 12, 90, 45, 14, 14};
    float cent[4];
    int32_t asg[6];
    pl_rng rng;
    pl_rng_seed(&rng, 11);
    int it = anchors_kmeans(cent, asg, wh, 6, 2, 100, &rng);
    printf("kmeans: %d iterations, centroids (%g, %g) (%g, %g)\n", it, cent[0], cent[1], cent[2], cent[3]);
    const float want[4] = {12, 12, 100, 50};
    tu_check("k-means k=2 on two hand clusters: means (12,12), (100,50)", tu_rel_diff(cent, want, 4, 1), 1e-6);
    tu_check_near("k-means assignment of (110,55) -> cluster 1 (larger)", asg[2], 1, 0);
    tu_check_near("k-means assignment of (14,14) -> cluster 0", asg[5], 0, 0);
    double mb = anchors_mean_best_iou(wh, 6, cent, 2);
    double hand = (1 + 100.0 / 144 + 5000.0 / 6050 + 1 + 4050.0 / 5000 + 144.0 / 196) / 6;
    tu_check_near("mean best IoU of the hand set with the centroids", mb, hand, 1e-6);
    float c3[6];
    const float three[6] = {8, 8, 30, 10, 10, 40};
    int32_t a3[3];
    anchors_kmeans(c3, a3, three, 3, 3, 100, &rng);
    const float w3[6] = {8, 8, 30, 10, 10, 40};  // areas 64 < 300 < 400
    tu_check("k-means k = n: centroids are the shapes, by area", tu_rel_diff(c3, w3, 6, 1), 0);
    pl_quiet_begin();
    tu_check_near("k-means k > n is PL_EINVAL", anchors_kmeans(c3, a3, three, 3, 4, 10, &rng), PL_EINVAL, 0);
    const float bad[4] = {5, 0, 3, 3};
    tu_check_near("k-means on a zero-height shape is PL_EINVAL", anchors_kmeans(c3, a3, bad, 2, 1, 10, &rng), PL_EINVAL, 0);
    pl_quiet_end();
    // default anchors vs the lesion-sized set: the derived set fits better
    anchor_config c;
    const double ratios[3] = {0.5, 1.0, 2.0};
    anchors_config_make(&c, 4.0, ratios, 3);
    float sh[15 * 2];
    anchors_shapes(sh, &c);
    double md = anchors_mean_best_iou(wh, 6, sh, 15);
    printf("mean best IoU: default anchors %.4f, k-means(2) %.4f\n", md, mb);
    tu_check("the k-means set fits the hand shapes better than the default set", md < mb ? 0 : 1, 0);
}

int main(void) {
    test_generation();
    test_assign();
    test_sample();
    test_kmeans();
    return tu_finish("test_det_anchors");
}
