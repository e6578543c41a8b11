// test_detect: the composed MP3D detector and its geometry on a real tiny cohort (mp3d synth
// tiny -> mp3d preprocess, twice: stored at 128 px with an identity affine, and resized to 96 px
// with a non-trivial one). Checks: the input geometry on a hand case (resize with half-pixel
// centres, flip, inverse through a hand affine); stored boxes -> network input -> original frame
// reproduces DL_info's boxes through the shard's real affine; detector_train_step's grad_scale
// is an exact factor; SGD on two real key slices drives the summed loss below half its start;
// detector_detect returns sorted, clipped boxes. Serial (MPI is initialised for the stages).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/config.h"
#include "io/h5shard.h"
#include "nn/pl.h"
#include "nn/sgd.h"
#include "stages/train/det_common.h"
#include "stages/stages.h"
#include "test_util.h"

static int run_stage(int (*fn)(const pl_cfg *, MPI_Comm), const char *const *sets, int n) {
    pl_cfg *c = NULL;
    if (cfg_load(&c, NULL, sets, n)) return -1;
    int code = fn(c, MPI_COMM_WORLD);
    cfg_destroy(c);
    return code;
}

// Resize 100 -> 150 (k = 1.5) and 80 -> 120; u' = (u + 0.5) k - 0.5; flip x' = ow - 1 - x.
static void test_geometry_hand(void) {
    det_geom g = det_geom_make(80, 100, 150, 0, 0);
    tu_check_near("geometry: 80x100 at size 150 -> 120 rows", g.oh, 120, 0);
    tu_check_near("geometry: 80x100 at size 150 -> 150 columns", g.ow, 150, 0);
    const double st[4] = {10, 20, 30, 40};
    float in[4];
    det_boxes_to_input(in, st, 1, g);
    // k = 150 / max(80, 100) = 1.5 on both axes: x (10.5, 30.5) * 1.5 - 0.5, y (20.5, 40.5) * 1.5 - 0.5
    const float want[4] = {15.25f, 30.25f, 45.25f, 60.25f};
    double md = 0;
    for (int k = 0; k < 4; k++) md = fmax(md, fabs(in[k] - want[k]));
    tu_check("geometry: stored (10,20,30,40) -> input (15.25,30.25,45.25,60.25)", md, 1e-5);
    det_geom gf = g;
    gf.flip = 1;
    float fl[4];
    det_boxes_to_input(fl, st, 1, gf);
    md = fabs(fl[0] - (149 - 45.25)) + fabs(fl[2] - (149 - 15.25)) + fabs(fl[1] - in[1]) + fabs(fl[3] - in[3]);
    tu_check("geometry: flip -> x (103.75, 133.75), y unchanged", md, 1e-5);
    // back to the original frame through a hand affine: orig_x = 0.5 x + 1.25, orig_y = 2 y - 3
    const double aff[4] = {0.5, 1.25, 2.0, -3.0};
    const float ib[4] = {15.25f, 24.25f, 45.25f, 48.25f};
    double ob[4];
    det_boxes_to_orig(ob, ib, 1, g, aff);
    // stored x = (15.25 + 0.5) / 1.5 - 0.5 = 10, (45.25 + 0.5) / 1.5 - 0.5 = 30;
    // stored y = (24.25 + 0.5) / 1.5 - 0.5 = 16, (48.25 + 0.5) / 1.5 - 0.5 = 32
    const double wo[4] = {6.25, 29.0, 16.25, 61.0};
    md = 0;
    for (int k = 0; k < 4; k++) md = fmax(md, fabs(ob[k] - wo[k]));
    tu_check("geometry: input -> original (6.25, 29, 16.25, 61)", md, 1e-9);
}

// stored boxes -> input at two sizes -> original frame == DL_info's boxes (boxes_orig)
static void test_affine_roundtrip(const char *root) {
    lesion_shard s;
    int rc = lesion_shard_open(&s, root, "train");
    tu_check_near("open the 96-px shard", rc, 0, 0);
    if (rc) return;
    tu_check_near("shard resized to 96 px", s.W, 96, 0);
    tu_check_near("its affine is not the identity (ax = 128 / 96)", s.affine[0], 128.0 / 96.0, 1e-12);
    const int sizes[2] = {96, 160};
    double md = 0;
    int64_t used = 0;
    for (int z = 0; z < 2; z++)
        for (int64_t i = 0; i < s.n; i++) {
            det_geom g = det_geom_make(s.H, s.W, sizes[z], 0, 0);
            for (int64_t j = s.off[i]; j < s.off[i + 1]; j++) {
                const double *b = s.boxes + 4 * j;
                if (b[0] <= 0 || b[1] <= 0 || b[2] >= s.W - 1 || b[3] >= s.H - 1) continue;   // clamped by preprocess
                float in[4];
                double ob[4];
                det_boxes_to_input(in, b, 1, g);
                det_boxes_to_orig(ob, in, 1, g, s.affine + 4 * i);
                for (int k = 0; k < 4; k++) md = fmax(md, fabs(ob[k] - s.boxes_orig[4 * j + k]));
                used++;
            }
        }
    printf("affine round trip: %lld boxes, max |orig - DL_info| = %.3g px\n", (long long)used, md);
    tu_check_near("affine round trip: boxes checked >= 8", used >= 8 ? 1 : 0, 1, 0);
    tu_check("affine round trip: input -> original frame == DL_info boxes (px)", md, 2e-4);
    lesion_shard_close(&s);
}

typedef struct {
    lesion_shard s;
    float *x;
    float boxes[64 * 4];
    det_gt gt[2];
    int ph, pw;
} batch2;

static int load_batch(batch2 *b, const char *root) {
    if (lesion_shard_open(&b->s, root, "train")) return -1;
    const lesion_shard *s = &b->s;
    det_geom g = det_geom_make(s->H, s->W, s->W, 0, 0);
    b->ph = (g.oh + 31) / 32 * 32;
    b->pw = (g.ow + 31) / 32 * 32;
    b->x = tu_alloc((int64_t)2 * s->D * b->ph * b->pw);
    float *tmp = tu_alloc((int64_t)s->D * g.oh * g.ow);
    int16_t *raw = pl_malloc(sizeof(int16_t) * (size_t)s->D * s->H * s->W, "raw");
    const double win[2] = {-1024, 1050};
    int64_t nb = 0;
    for (int i = 0; i < 2; i++) {
        int64_t m = s->off[i + 1] - s->off[i];
        if (det_load_input(b->x + (size_t)i * s->D * b->ph * b->pw, b->ph, b->pw, s, i, g, raw, tmp, win)) return -1;
        det_boxes_to_input(b->boxes + 4 * nb, s->boxes + 4 * s->off[i], m, g);
        det_gt gt = {b->boxes + 4 * nb, NULL, m, NULL, 0, g.oh, g.ow};
        b->gt[i] = gt;
        nb += m;
    }
    free(tmp);
    free(raw);
    return 0;
}

static void test_detector(const char *root) {
    batch2 b;
    memset(&b, 0, sizeof b);
    int rc = load_batch(&b, root);
    tu_check_near("load two key slices of the 128-px shard", rc, 0, 0);
    if (rc) return;
    det_config c;
    memset(&c, 0, sizeof c);
    c.backbone.arch = NN_ARCH_RESNET3DV1C18;
    c.backbone.width = 0.125;
    c.backbone.norm = NN_NORM_GN;
    c.backbone.gn_groups = 4;
    c.depth = b.s.D;
    c.fpn_channels = 16;
    c.fc_dim = 64;
    const double ratios[3] = {0.5, 1, 2};
    PL_ASSERT(anchors_config_make(&c.anchors, 4.0, ratios, 3) == 0);
    c.rpn_samples = 256;
    c.rpn_pre_nms = 1000;
    c.rpn_post_nms = 300;
    c.rpn_nms_iou = 0.7;
    c.roi_samples = 128;
    c.roi_pos_fraction = 0.25;
    c.nms_iou = 0.5;
    c.max_dets = 100;
    c.num_classes = 1;
    detector *d = NULL;
    rc = detector_create(&d, &c, 3);
    tu_check_near("detector_create", rc, 0, 0);
    if (rc) return;
    nn_params *p = detector_params(d);
    tu_check_near("one buffer holds backbone, GTM and heads (gtm.3, neck, rpn_head, roi_head)",
                  (nn_params_find(p, "gtm.3.weight") >= 0) + (nn_params_find(p, "neck.fpn_convs.0.conv.weight") >= 0) +
                      (nn_params_find(p, "rpn_head.rpn_conv.weight") >= 0) +
                      (nn_params_find(p, "roi_head.bbox_head.fc_cls.weight") >= 0),
                  4, 0);
    const nn_dims in = nn_dims_make(2, 1, b.s.D, b.ph, b.pw);
    // grad_scale is an exact factor: same state, same sampling stream, scale 1 vs 0.25
    double l1[4], l2[4];
    pl_rng r1, r2;
    pl_rng_seed(&r1, 11);
    pl_rng_seed(&r2, 11);
    PL_ASSERT(detector_train_step(d, l1, b.x, in, b.gt, 1.0, &r1) == 0);
    float *g1 = tu_alloc((int64_t)p->nparams);
    memcpy(g1, p->grads, p->nparams * sizeof(float));
    PL_ASSERT(detector_train_step(d, l2, b.x, in, b.gt, 0.25, &r2) == 0);
    double md = 0, gn = 0;
    for (size_t i = 0; i < p->nparams; i++) {
        md = fmax(md, fabs(p->grads[i] - 0.25f * g1[i]));
        gn += (double)g1[i] * g1[i];
    }
    tu_check_near("same step twice: identical losses", fabs(l1[0] + l1[1] + l1[2] + l1[3] - (l2[0] + l2[1] + l2[2] + l2[3])), 0, 0);
    tu_check("grad_scale 0.25: grads are exactly 0.25 x (max abs diff)", md, 0);
    tu_check_near("gradient is non-zero", gn > 0 ? 1 : 0, 1, 0);
    // every parameter group receives gradient (backbone stem, GTM, FPN, RPN, box head)
    const char *names[5] = {"stem.0.conv.weight", "gtm.0.weight", "neck.lateral_convs.0.conv.weight", "rpn_head.rpn_reg.weight",
                            "roi_head.bbox_head.shared_fcs.1.weight"};
    int nz = 0;
    for (int k = 0; k < 5; k++) {
        int j = nn_params_find(p, names[k]);
        if (j < 0) continue;
        const float *g = g1 + p->info[j].offset;
        double s = 0;
        for (size_t i = 0; i < p->info[j].count; i++) s += fabs(g[i]);
        printf("grad |sum| %-40s %.4g\n", names[k], s);
        nz += s > 0;
    }
    tu_check_near("stem, GTM, FPN, RPN and box head all get gradient", nz, 5, 0);
    free(g1);
    // SGD on these two key slices: the summed loss falls below half of its start
    pl_rng rng;
    pl_rng_seed(&rng, 5);
    double first = 0, last = 0;
    const int steps = 40;
    for (int it = 0; it < steps; it++) {
        double l[4];
        PL_ASSERT(detector_train_step(d, l, b.x, in, b.gt, 1.0, &rng) == 0);
        sgd_clip_grad_norm(p->grads, p->nparams, 35.0);
        double warm = it < 10 ? 1.0 / 3 + (2.0 / 3) * it / 10 : 1.0;
        sgd_step(p->params, p->momentum, p->grads, p->nparams, 0.02 * warm, 0.9, 1e-4, it == 0);
        double tot = l[0] + l[1] + l[2] + l[3];
        if (it < 3) first += tot / 3;
        if (it >= steps - 5) last += tot / 5;
        if (it % 10 == 0 || it == steps - 1)
            printf("step:%d rpn_cls:%.4f rpn_reg:%.4f roi_cls:%.4f roi_reg:%.4f total:%.4f\n", it, l[0], l[1], l[2], l[3], tot);
    }
    printf("loss: mean of the first 3 steps %.4f, of the last 5 %.4f\n", first, last);
    tu_check_near("40 SGD steps: last-5 mean loss < 0.5 x first-3 mean", last < 0.5 * first ? 1 : 0, 1, 0);
    // inference: sorted scores, boxes inside the image, at most max_dets
    float *dets = tu_alloc(2 * c.max_dets * 5);
    int64_t nd[2];
    const int64_t hw[4] = {b.gt[0].img_h, b.gt[0].img_w, b.gt[1].img_h, b.gt[1].img_w};
    PL_ASSERT(detector_detect(d, dets, nd, b.x, in, hw) == 0);
    int bad = 0;
    for (int n = 0; n < 2; n++) {
        bad += nd[n] < 1 || nd[n] > c.max_dets;
        for (int64_t j = 0; j < nd[n]; j++) {
            const float *q = dets + (n * c.max_dets + j) * 5;
            bad += q[0] < 0 || q[1] < 0 || q[2] > hw[2 * n + 1] || q[3] > hw[2 * n] || q[2] < q[0] || q[3] < q[1];
            if (j > 0) bad += q[4] > q[-1];
        }
    }
    tu_check_near("detections: 1..100 per image, sorted, inside the image", bad, 0, 0);
    free(dets);
    free(b.x);
    lesion_shard_close(&b.s);
    detector_destroy(d);
}

// Helper mode for test_detect_learn.sh: copies the key slices (the first LIMIT if given) of
// SRC/<split>.h5 (an mp3d preprocess shard) into DST/<split>.h5 without any lesion rows: a
// cohort with no labels.
static int make_unlabelled(const char *src, const char *dst, const char *split, int64_t limit) {
    lesion_shard s;
    if (lesion_shard_open(&s, src, split)) return 1;
    if (limit > 0 && limit < s.n) s.n = limit;
    static const shard_col cols[] = {{"file_name", SHARD_STR, 64}, {"ids", SHARD_I32, 4}, {"spacing", SHARD_F64, 3},
                                     {"affine", SHARD_F64, 4}};
    static const shard_col rows[] = {{"boxes", SHARD_F64, 4}, {"boxes_orig", SHARD_F64, 4}, {"diameters_mm", SHARD_F64, 2},
                                     {"lesion_type", SHARD_I32, 1}, {"noisy", SHARD_I32, 1}};
    shard_layout lay = {.data_name = "images", .data_type = SHARD_I16, .ndims = 3, .dims = {s.D, s.H, s.W}, .cols = cols,
                        .ncols = 4, .rows = rows, .nrows = 5, .rows_offsets = "lesion_offsets"};
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.h5", dst, split);
    h5shard_writer *w = NULL;
    int16_t *raw = pl_malloc(sizeof(int16_t) * (size_t)s.D * s.H * s.W, "raw");
    int rc = raw ? h5shard_writer_create(&w, path, &lay, 0) : PL_ENOMEM;
    for (int64_t i = 0; i < s.n && !rc; i++) {
        rc = h5shard_read(s.r, "images", SHARD_I16, raw, i, 1);
        const void *cv[4] = {s.names[i], s.ids + 4 * i, s.spacing + 3 * i, s.affine + 4 * i};
        if (!rc) rc = h5shard_add(w, i, raw, cv, 0, NULL);
    }
    int frc = w ? h5shard_finish(w, MPI_COMM_WORLD, rc == 0, NULL) : rc;
    free(raw);
    lesion_shard_close(&s);
    printf("unlabelled copy of %s/%s.h5 -> %s: %s\n", src, split, path, rc || frc ? pl_last_error() : "ok");
    return rc || frc ? 1 : 0;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    pl_log_set_rank(0);
    if ((argc == 5 || argc == 6) && !strcmp(argv[1], "make-unlabelled")) {
        int r = make_unlabelled(argv[2], argv[3], argv[4], argc == 6 ? atoll(argv[5]) : 0);
        MPI_Finalize();
        return r;
    }
    pl_log_set_level(PL_WARN);
    double t0 = pl_time();
    char dir[] = "/tmp/mp3d_detect.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        MPI_Finalize();
        return 1;
    }
    char a[512], b2[512], c2[512], d2[512];
    snprintf(a, sizeof a, "output.dir=%s/syn", dir);
    const char *s1[] = {a, "synth.scale=tiny", "synth.datasets=deeplesion"};
    int code = run_stage(stage_synth_run, s1, 3);
    snprintf(b2, sizeof b2, "input.root=%s/syn/deeplesion", dir);
    snprintf(c2, sizeof c2, "output.dir=%s/pp", dir);
    const char *s2[] = {b2, c2};
    if (!code) code = run_stage(stage_preprocess_run, s2, 2);
    snprintf(d2, sizeof d2, "output.dir=%s/pp96", dir);
    const char *s3[] = {b2, d2, "preprocess.size=96"};
    if (!code) code = run_stage(stage_preprocess_run, s3, 3);
    tu_check_near("synth tiny + preprocess (128 px and 96 px)", code, 0, 0);
    test_geometry_hand();
    if (!code) {
        char p1[512], p2[512];
        snprintf(p1, sizeof p1, "%s/pp96", dir);
        snprintf(p2, sizeof p2, "%s/pp", dir);
        test_affine_roundtrip(p1);
        test_detector(p2);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", dir);
    printf("time: %.2f s\n", pl_time() - t0);
    MPI_Finalize();
    return tu_finish("test_detect");
}
