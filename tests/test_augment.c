// augment: RandomCrop boxes (torchvision RandomCrop.get_params: every integer offset in range,
// never outside), an unscaled crop copies the pixels exactly (then normalises), CenterCrop's
// rounding, and RandomResizedCrop boxes inside the image with an area in range.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"
#include "test_util.h"
#include "stages/train/augment.h"


int main(void) {
    enum { S = 64, C = 56, D = 3 };
    pl_rng r;
    pl_rng_seed(&r, 7);
    int seen_y[S - C + 1] = {0}, seen_x[S - C + 1] = {0}, bad = 0;
    for (int i = 0; i < 4000; i++) {
        aug_box b = aug_random_box(&r, S, S, C);
        if (b.h != C || b.w != C || b.y0 < 0 || b.x0 < 0 || b.y0 + b.h > S || b.x0 + b.w > S) bad++;
        else seen_y[b.y0]++, seen_x[b.x0]++;
    }
    CHECK(bad == 0, "%d random crop boxes outside the image or of the wrong size", bad);
    int miss = 0;
    for (int k = 0; k <= S - C; k++) miss += !seen_y[k] + !seen_x[k];
    CHECK(miss == 0, "%d of the %d offsets never drawn in 4000 draws", miss, 2 * (S - C + 1));
    // crop larger than the image: the whole image
    aug_box w = aug_random_box(&r, 40, 30, C);
    CHECK(w.y0 == 0 && w.x0 == 0 && w.h == 40 && w.w == 30, "oversized crop: %d %d %d %d", w.y0, w.x0, w.h, w.w);

    // an unscaled crop is a copy: out = (in[d][y0 + y][x0 + x] - mean) / std, flip mirrors x
    uint8_t *in = malloc(D * S * S);
    for (int i = 0; i < D * S * S; i++) in[i] = (uint8_t)((i * 37 + 11) % 251);
    float *out = malloc(sizeof(float) * D * C * C);
    aug_box b = {5, 3, C, C};
    const int order[3] = {2, 0, 1};
    aug_crop_resize(out, C, C, in, D, S, S, b, 1, order, 10.0f, 2.0f);
    double md = 0;
    for (int d = 0; d < D; d++)
        for (int y = 0; y < C; y++)
            for (int x = 0; x < C; x++) {
                float want = ((float)in[(order[d] * S + b.y0 + y) * S + b.x0 + (C - 1 - x)] - 10.0f) / 2.0f;
                md = fmax(md, fabs(out[(d * C + y) * C + x] - want));
            }
    printf("unscaled crop vs direct copy (flip, slice order): max abs diff %.3g\n", md);
    CHECK(md < 1e-6, "unscaled crop differs from the pixels by %g", md);

    // torchvision CenterCrop: top = round((h - crop) / 2)
    aug_box c = aug_center_box(64, 63, 56);
    CHECK(c.y0 == 4 && c.x0 == 4 && c.h == 56 && c.w == 56, "center: %d %d", c.y0, c.x0);

    // RandomResizedCrop: inside the image, area fraction in [smin, 1] (when not the fallback)
    bad = 0;
    for (int i = 0; i < 2000; i++) {
        aug_box q = aug_rrc_params(&r, S, S, 0.25, 1.0, 3.0 / 4.0, 4.0 / 3.0);
        double a = (double)q.h * q.w / (S * S);
        if (q.y0 < 0 || q.x0 < 0 || q.y0 + q.h > S || q.x0 + q.w > S || a < 0.2 || a > 1.0) bad++;
    }
    CHECK(bad == 0, "%d RRC boxes outside the image or the area range", bad);
    free(in);
    free(out);
    printf("test_augment: %s (%d failures)\n", g_fail ? "FAIL" : "ok", g_fail);
    return g_fail ? 1 : 0;
}
