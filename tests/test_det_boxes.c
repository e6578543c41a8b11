// test_det_boxes: IoU / IoF hand cases in both conventions, the delta coder on hand cases (with
// target stds and the wh clamp) and its encode/decode round trip on random boxes, clipping,
// the deterministic argsort, and greedy NMS against a naive O(n^2) "pick the best remaining"
// reference on random boxes with tied scores, both IoU conventions and a keep cap.
#include "nn/boxes.h"
#include "tests/test_util.h"

static void test_iou(void) {
    const float a[4] = {0, 0, 10, 10}, b[4] = {5, 5, 15, 15}, c[4] = {10, 0, 20, 10};
    tu_check_near("IoU continuous (0,0,10,10) vs (5,5,15,15) = 25/175", box_iou(a, b, 0), 25.0 / 175, 1e-7);
    tu_check_near("IoU +1 same boxes = 36/(121+121-36)", box_iou(a, b, 1), 36.0 / 206, 1e-7);
    tu_check_near("IoU continuous touching boxes = 0", box_iou(a, c, 0), 0, 0);
    tu_check_near("IoU +1 touching boxes = 11/231", box_iou(a, c, 1), 11.0 / 231, 1e-7);
    tu_check_near("IoU of a box with itself = 1", box_iou(a, a, 0), 1, 1e-12);
    tu_check_near("area continuous 10x10", box_area(a, 0), 100, 0);
    tu_check_near("area +1 10x10 -> 11x11", box_area(a, 1), 121, 0);
    const float empty[4] = {3, 3, 3, 8};
    tu_check_near("IoU with an empty box (continuous) = 0", box_iou(a, empty, 0), 0, 0);
    float ov[2 * 2];
    const float two[8] = {0, 0, 10, 10, 0, 0, 20, 20};
    box_overlaps(ov, two, 2, b, 1, 0, 1);
    tu_check_near("IoF (0,0,10,10) in (5,5,15,15) = 25/100", ov[0], 0.25, 1e-7);
    tu_check_near("IoF (0,0,20,20) in (5,5,15,15) = 100/400", ov[1], 0.25, 1e-7);
    box_overlaps(ov, two, 2, two, 2, 0, 0);
    tu_check_near("overlaps matrix [0][1] = 100/400", ov[1], 0.25, 1e-7);
    tu_check_near("overlaps matrix [1][1] = 1", ov[3], 1, 1e-7);
}

static void test_coder(pl_rng *rng) {
    const float z[4] = {0, 0, 0, 0}, one[4] = {1, 1, 1, 1}, st[4] = {0.1f, 0.1f, 0.2f, 0.2f};
    box_coder c1 = box_coder_make(z, one), cs = box_coder_make(z, st);
    const float p[4] = {0, 0, 10, 20}, g1[4] = {5, 5, 15, 25}, g2[4] = {0, 0, 20, 10};
    float d[4];
    box_encode(d, p, g1, 1, &cs);
    tu_check_near("encode shift: dx/0.1 = 0.5/0.1", d[0], 5, 1e-5);
    tu_check_near("encode shift: dy/0.1 = 0.25/0.1", d[1], 2.5, 1e-5);
    tu_check_near("encode shift: dw = 0", d[2], 0, 1e-7);
    box_encode(d, p, g2, 1, &cs);
    tu_check_near("encode reshape: dy/0.1 = -0.25/0.1", d[1], -2.5, 1e-5);
    tu_check_near("encode reshape: log(2)/0.2", d[2], log(2.0) / 0.2, 1e-5);
    tu_check_near("encode reshape: log(0.5)/0.2", d[3], log(0.5) / 0.2, 1e-5);
    // clamp: dw = 10 -> log(1000/16) = 4.1352; proposal (0,0,10,20) centred at (5,10)
    const float big[4] = {0, 0, 10, -10};
    float b[4];
    box_decode(b, p, big, 1, &c1, 0, 0);
    tu_check_near("decode clamps dw to log(1000/16): w = 10*62.5", b[2] - b[0], 625, 1e-3);
    tu_check_near("decode clamps dh to -log(1000/16): h = 20*0.016", b[3] - b[1], 0.32, 1e-5);
    tu_check_near("decode clamp keeps the centre x", 0.5 * (b[0] + b[2]), 5, 1e-4);
    box_decode(b, p, big, 1, &c1, 100, 50);
    tu_check_near("decode + clip: x1 clipped to 0", b[0], 0, 0);
    tu_check_near("decode + clip: x2 clipped to img_w 50", b[2], 50, 0);
    float cl[8] = {-5, -3, 120, 90, 10, 20, 30, 40};
    box_clip(cl, 2, 80, 100);
    tu_check_near("clip y2 = img_h 80", cl[3], 80, 0);
    tu_check_near("clip x2 = img_w 100", cl[2], 100, 0);
    tu_check_near("clip leaves an inside box alone", cl[7], 40, 0);
    // round trip on random boxes, both coders
    enum { N = 2000 };
    static float props[4 * N], gts[4 * N], del[4 * N], back[4 * N];
    for (int i = 0; i < N; i++) {
        float x = (float)pl_rng_range(rng, 0, 500), y = (float)pl_rng_range(rng, 0, 500);
        props[4 * i] = x, props[4 * i + 1] = y;
        props[4 * i + 2] = x + (float)pl_rng_range(rng, 2, 200), props[4 * i + 3] = y + (float)pl_rng_range(rng, 2, 200);
        float gx = x + (float)pl_rng_range(rng, -50, 50), gy = y + (float)pl_rng_range(rng, -50, 50);
        gts[4 * i] = gx, gts[4 * i + 1] = gy;
        // size ratios within [1/5, 5]: inside the coder's 1000/16 clamp
        gts[4 * i + 2] = gx + (props[4 * i + 2] - x) * (float)exp(pl_rng_range(rng, -1.6, 1.6));
        gts[4 * i + 3] = gy + (props[4 * i + 3] - y) * (float)exp(pl_rng_range(rng, -1.6, 1.6));
    }
    for (int k = 0; k < 2; k++) {
        const box_coder *c = k ? &cs : &c1;
        box_encode(del, props, gts, N, c);
        box_decode(back, props, del, N, c, 0, 0);
        double md = 0;  // error relative to the target box size
        for (int i = 0; i < N; i++) {
            double sz = fmax(gts[4 * i + 2] - gts[4 * i], gts[4 * i + 3] - gts[4 * i + 1]);
            for (int j = 0; j < 4; j++) md = fmax(md, fabs(back[4 * i + j] - gts[4 * i + j]) / sz);
        }
        tu_check(k ? "encode/decode round trip (stds 0.1,0.1,0.2,0.2), 2000 boxes"
                   : "encode/decode round trip (means 0, stds 1), 2000 boxes", md, 1e-5);
    }
}

// reference: repeatedly take the best remaining box (highest score, lowest index), drop every
// remaining box overlapping it by more than thr
static int64_t nms_naive(int64_t *keep, const float *boxes, const float *scores, int64_t n, double thr,
                         int plus1, int64_t max_keep) {
    uint8_t *alive = pl_malloc((size_t)n, "alive");
    for (int64_t i = 0; i < n; i++) alive[i] = 1;
    int64_t nk = 0;
    for (;;) {
        int64_t best = -1;
        for (int64_t i = 0; i < n; i++)
            if (alive[i] && (best < 0 || scores[i] > scores[best])) best = i;
        if (best < 0 || (max_keep > 0 && nk >= max_keep)) break;
        keep[nk++] = best;
        alive[best] = 0;
        for (int64_t j = 0; j < n; j++)
            if (alive[j] && box_iou(boxes + 4 * best, boxes + 4 * j, plus1) > thr) alive[j] = 0;
    }
    free(alive);
    return nk;
}

static void test_nms(pl_rng *rng) {
    // hand case: B overlaps A by 81/119 (> 0.5) and is dropped; C is far away
    const float hb[12] = {0, 0, 10, 10, 1, 1, 11, 11, 50, 50, 60, 60};
    const float hs[3] = {0.9f, 0.8f, 0.7f};
    int64_t keep[3], order[3];
    uint8_t dead[3];
    int64_t nk = box_nms(keep, order, dead, hb, hs, 3, 0.5, 0, 0);
    tu_check_near("NMS hand: 2 kept", (double)nk, 2, 0);
    tu_check_near("NMS hand: kept[0] = A", (double)keep[0], 0, 0);
    tu_check_near("NMS hand: kept[1] = C", (double)keep[1], 2, 0);
    nk = box_nms(keep, order, dead, hb, hs, 3, 0.7, 0, 0);
    tu_check_near("NMS hand thr 0.7 (IoU 0.68 survives): 3 kept", (double)nk, 3, 0);
    // a NaN corner: fmin/fmax take the other operand, so A (x2 = NaN) overlaps B over x 2..10:
    // in 80, union 0 + 100 - 80 = 20, IoU 4 > 0.5 and B goes (a plain `<` would give NaN, IoU 0)
    const float nb[8] = {2, 0, NAN, 10, 0, 0, 10, 10}, ns[2] = {0.9f, 0.8f};
    tu_check_near("IoU with a NaN corner follows fmin/fmax", box_iou(nb, nb + 4, 0), 4.0, 1e-12);
    nk = box_nms(keep, order, dead, nb, ns, 2, 0.5, 0, 0);
    tu_check_near("NMS with a NaN corner: the same rule (B dropped, 1 kept)", (double)nk, 1, 0);
    const float ns2[2] = {0.8f, 0.9f};  // now B is kept first and the NaN box is the candidate
    nk = box_nms(keep, order, dead, nb, ns2, 2, 0.5, 0, 0);
    tu_check_near("NMS with a NaN corner on the candidate: dropped too, 1 kept", (double)nk, 1, 0);
    const float ts[4] = {0.5f, 0.7f, 0.5f, NAN};
    int64_t ord[4];
    box_argsort_desc(ord, ts, 4);
    tu_check_near("argsort: ties by index, NaN last", (double)(ord[0] * 1000 + ord[1] * 100 + ord[2] * 10 + ord[3]),
                  1023, 0);
    enum { N = 400 };
    static float boxes[4 * N], scores[N];
    static int64_t k1[N], k2[N], ow[N];
    static uint8_t dw[N];
    int mism = 0, trials = 0;
    int64_t total_kept = 0;
    for (int rep = 0; rep < 6; rep++) {
        for (int i = 0; i < N; i++) {
            float x = (float)pl_rng_range(rng, 0, 150), y = (float)pl_rng_range(rng, 0, 150);
            boxes[4 * i] = x, boxes[4 * i + 1] = y;
            boxes[4 * i + 2] = x + (float)pl_rng_range(rng, 5, 50), boxes[4 * i + 3] = y + (float)pl_rng_range(rng, 5, 50);
            scores[i] = (float)(pl_rng_int(rng, 0, 40) / 40.0);  // many ties
        }
        const double thr[3] = {0.3, 0.5, 0.7};
        for (int t = 0; t < 3; t++)
            for (int plus1 = 0; plus1 < 2; plus1++)
                for (int cap = 0; cap < 2; cap++) {
                    int64_t mk = cap ? 17 : 0;
                    int64_t n1 = box_nms(k1, ow, dw, boxes, scores, N, thr[t], plus1, mk);
                    int64_t n2 = nms_naive(k2, boxes, scores, N, thr[t], plus1, mk);
                    trials++;
                    total_kept += n1;
                    if (n1 != n2 || memcmp(k1, k2, (size_t)n1 * sizeof(int64_t)) != 0) mism++;
                }
    }
    printf("nms: %d random trials, %lld boxes kept in total\n", trials, (long long)total_kept);
    tu_check_near("NMS == naive O(n^2) on 72 random cases (count of mismatches)", mism, 0, 0);
    tu_check("NMS kept something in the random cases (sanity)", total_kept > 100 ? 0 : 1, 0);
}

int main(void) {
    pl_rng rng;
    pl_rng_seed(&rng, 5);
    test_iou();
    test_coder(&rng);
    test_nms(&rng);
    return tu_finish("test_det_boxes");
}
