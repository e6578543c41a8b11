// test_shard_vdt: `mp3d vdt` on hand-made ImageNet and COCO layouts (lossless PNG data named
// .JPEG where exact pixels matter). Checks: the stored depth slices of a known RGB image equal
// its R, G, B planes (centre crop, no resize); a grayscale JPEG gives three equal slices; a
// downscale equals a direct 2-D reference of the same antialiased filter; labels follow
// LOC_synset_mapping.txt line order; COCO boxes are shifted by the crop, clipped, dropped below
// vdt.min_box_fraction, crowd boxes kept and flagged; corrupt JPEG, unlabelled image, annotation
// of a missing image, image missing from the zip all land in quarantine.csv; too many bad
// inputs fail the stage; the output is byte-identical written by 1 rank and by all ranks.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/archive.h"
#include "io/config.h"
#include "io/fileio.h"
#include "io/h5shard.h"
#include "io/image.h"
#include "nn/pl.h"
#include "stages/stages.h"
#include "test_util.h"


enum { S = 32 };

static uint8_t *pattern(int w, int h, int seed) {   // (h, w, 3)
    uint8_t *p = malloc((size_t)w * (size_t)h * 3);
    pl_rng r;
    pl_rng_seed(&r, (uint64_t)seed);
    for (int i = 0; i < w * h * 3; i++) p[i] = (uint8_t)pl_rng_int(&r, 0, 255);
    return p;
}

static void add_png(arc_writer *w, const char *name, const uint8_t *rgb, int wd, int ht) {
    uint8_t *png = NULL;
    size_t len = 0;
    img_encode_png_rgb8(&png, &len, rgb, wd, ht);
    arc_writer_add(w, name, png, len);
    free(png);
}

static void add_corrupt_jpeg(arc_writer *w, const char *name) {
    uint8_t *rgb = pattern(24, 24, 99), *jpg = NULL;
    size_t len = 0;
    img_encode_jpeg(&jpg, &len, rgb, 24, 24, 3, 90);
    arc_writer_add(w, name, jpg, len / 3);   // truncated inside the entropy-coded data
    free(jpg);
    free(rgb);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

// Direct 2-D evaluation of the stage's filter: resize (w, h) so the short side is S, crop S x S.
static double ref_pixel(const uint8_t *rgb, int w, int h, int ox, int oy, int c) {
    int nw = w <= h ? S : (int)((int64_t)S * w / h), nh = w <= h ? (int)((int64_t)S * h / w) : S;
    int x0 = (nw - S) / 2, y0 = (nh - S) / 2;
    double scx = (double)w / nw, scy = (double)h / nh, sux = scx > 1 ? scx : 1, suy = scy > 1 ? scy : 1;
    double cx = (ox + x0 + 0.5) * scx, cy = (oy + y0 + 0.5) * scy, acc = 0, wsum = 0;
    for (int y = 0; y < h; y++) {
        double wy = 1 - fabs(y + 0.5 - cy) / suy;
        if (wy <= 0) continue;
        for (int x = 0; x < w; x++) {
            double wx = 1 - fabs(x + 0.5 - cx) / sux;
            if (wx <= 0) continue;
            acc += wx * wy * rgb[((size_t)y * (size_t)w + (size_t)x) * 3 + (size_t)c];
            wsum += wx * wy;
        }
    }
    return acc / wsum;
}

static void make_imagenet(const char *dir) {
    char p[600];
    pl_mkdir_p(dir);
    snprintf(p, sizeof p, "%s/LOC_synset_mapping.txt", dir);
    write_text(p, "n00000002 second synset\nn00000001 first synset\n");
    snprintf(p, sizeof p, "%s/LOC_val_solution.csv", dir);
    write_text(p, "ImageId,PredictionString\nILSVRC2012_val_00000001,n00000001 1 2 3 4 \nILSVRC2012_val_00000002,n00000002 1 2 3 4 \n");
    // train: two synset tars inside the outer tar
    arc_writer *outer = NULL, *in = NULL;
    snprintf(p, sizeof p, "%s/ILSVRC2012_img_train.tar", dir);
    arc_writer_open(&outer, p, ARC_TAR);
    uint8_t *buf = NULL;
    size_t len = 0;
    arc_writer_open_memory(&in, ARC_TAR);
    uint8_t *a = pattern(40, 32, 1);
    add_png(in, "n00000001_1.JPEG", a, 40, 32);
    add_corrupt_jpeg(in, "n00000001_2.JPEG");
    arc_writer_close_memory(in, &buf, &len);
    arc_writer_add(outer, "n00000001.tar", buf, len);
    free(buf);
    arc_writer_open_memory(&in, ARC_TAR);
    uint8_t gray[32 * 32], *jpg = NULL;
    for (int i = 0; i < 32 * 32; i++) gray[i] = (uint8_t)(i * 7);
    img_encode_jpeg(&jpg, &len, gray, 32, 32, 1, 95);
    arc_writer_add(in, "n00000002_5.JPEG", jpg, len);
    free(jpg);
    uint8_t *b = pattern(32, 48, 2);
    add_png(in, "n00000002_7.JPEG", b, 32, 48);
    uint8_t *c = pattern(80, 64, 3);
    add_png(in, "n00000002_8.JPEG", c, 80, 64);
    arc_writer_close_memory(in, &buf, &len);
    arc_writer_add(outer, "n00000002.tar", buf, len);
    free(buf);
    arc_writer_close(outer);
    // val
    snprintf(p, sizeof p, "%s/ILSVRC2012_img_val.tar", dir);
    arc_writer_open(&outer, p, ARC_TAR);
    add_png(outer, "ILSVRC2012_val_00000001.JPEG", b, 32, 48);
    add_png(outer, "ILSVRC2012_val_00000002.JPEG", a, 40, 32);
    add_png(outer, "ILSVRC2012_val_00000003.JPEG", a, 40, 32);   // not in LOC_val_solution.csv
    arc_writer_close(outer);
    free(a);
    free(b);
    free(c);
}

static void make_coco(const char *dir) {
    char p[600];
    snprintf(p, sizeof p, "%s/annotations", dir);
    pl_mkdir_p(p);
    snprintf(p, sizeof p, "%s/annotations/instances_val2017.json", dir);
    write_text(p,
               "{\"images\": [{\"id\": 1, \"file_name\": \"000000000001.jpg\", \"width\": 40, \"height\": 32},"
               "{\"id\": 2, \"file_name\": \"000000000002.jpg\", \"width\": 24, \"height\": 24},"
               "{\"id\": 4, \"file_name\": \"000000000004.jpg\", \"width\": 40, \"height\": 32}],"
               "\"annotations\": ["
               "{\"id\": 11, \"image_id\": 1, \"category_id\": 7, \"bbox\": [10, 4, 8, 10], \"area\": 80, \"iscrowd\": 0},"
               "{\"id\": 12, \"image_id\": 1, \"category_id\": 3, \"bbox\": [0, 0, 6, 8], \"area\": 48, \"iscrowd\": 0},"
               "{\"id\": 13, \"image_id\": 1, \"category_id\": 7, \"bbox\": [20, 10, 10, 10], \"area\": 100, \"iscrowd\": 1},"
               "{\"id\": 14, \"image_id\": 99, \"category_id\": 3, \"bbox\": [1, 1, 5, 5], \"area\": 25, \"iscrowd\": 0}],"
               "\"categories\": [{\"id\": 7, \"name\": \"seven\"}, {\"id\": 3, \"name\": \"three\"}]}");
    arc_writer *w = NULL;
    snprintf(p, sizeof p, "%s/val2017.zip", dir);
    arc_writer_open(&w, p, ARC_ZIP);
    uint8_t *a = pattern(40, 32, 1);
    add_png(w, "val2017/000000000001.jpg", a, 40, 32);
    add_corrupt_jpeg(w, "val2017/000000000002.jpg");
    arc_writer_close(w);
    free(a);
}

static int run_stage(MPI_Comm comm, const char *root, const char *out, const char *dataset, const char *splits, const char *maxbad) {
    char s[6][700];
    snprintf(s[0], sizeof s[0], "input.root=%s", root);
    snprintf(s[1], sizeof s[1], "output.dir=%s", out);
    snprintf(s[2], sizeof s[2], "vdt.dataset=%s", dataset);
    snprintf(s[3], sizeof s[3], "vdt.splits=%s", splits);
    snprintf(s[4], sizeof s[4], "vdt.short_side=%d", S);
    snprintf(s[5], sizeof s[5], "vdt.crop=%d", S);
    char mb[64];
    snprintf(mb, sizeof mb, "run.max_bad_fraction=%s", maxbad);
    const char *sets[7] = {s[0], s[1], s[2], s[3], s[4], s[5], mb};
    pl_cfg *cfg = NULL;
    if (cfg_load(&cfg, NULL, sets, 7)) return -100;
    int rc = stage_vdt_run(cfg, comm);
    cfg_destroy(cfg);
    return rc;
}

// Plane c of stored sample == channel c of img (w, h) at crop offset (x0, y0); returns #diffs.
static int64_t plane_diff(const uint8_t *smp, const uint8_t *img, int w, int x0, int y0) {
    int64_t bad = 0;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) bad += smp[(c * S + y) * S + x] != img[((size_t)(y + y0) * (size_t)w + (size_t)(x + x0)) * 3 + (size_t)c];
    return bad;
}

static void check_imagenet(const char *out) {
    char p[600];
    snprintf(p, sizeof p, "%s/imagenet_train.h5", out);
    h5shard_reader *r = NULL;
    if (h5shard_open(&r, p)) { CHECK(0, "open %s", p); return; }
    int64_t d[5] = {0};
    CHECK(h5shard_shape(r, "images", d, 5) == 5 && d[0] == 4 && d[1] == 1 && d[2] == 3 && d[3] == S && d[4] == S,
          "train images shape (%lld, %lld, %lld, %lld, %lld), want (4, 1, 3, %d, %d)", (long long)d[0], (long long)d[1], (long long)d[2],
          (long long)d[3], (long long)d[4], S, S);
    uint8_t *img = malloc((size_t)4 * 3 * S * S);
    int32_t lab[4] = {0};
    char names[4 * 64];
    h5shard_read(r, "images", SHARD_U8, img, 0, 4);
    h5shard_read(r, "label", SHARD_I32, lab, 0, 4);
    h5shard_read(r, "file_name", SHARD_STR, names, 0, 4);
    CHECK(!strcmp(names, "n00000001_1.JPEG") && !strcmp(names + 64, "n00000002_5.JPEG") && !strcmp(names + 128, "n00000002_7.JPEG") &&
              !strcmp(names + 192, "n00000002_8.JPEG"),
          "train order: %s %s %s %s", names, names + 64, names + 128, names + 192);
    CHECK(lab[0] == 1 && lab[1] == 0 && lab[2] == 0 && lab[3] == 0, "train labels %d %d %d %d, want 1 0 0 0 (synset file line order)", lab[0],
          lab[1], lab[2], lab[3]);
    uint8_t *a = pattern(40, 32, 1), *b = pattern(32, 48, 2), *c = pattern(80, 64, 3);
    int64_t da = plane_diff(img, a, 40, 4, 0), db = plane_diff(img + 2 * 3 * S * S, b, 32, 0, 8);
    CHECK(da == 0, "40x32 image: %lld stored values differ from its R, G, B planes (crop x0 = 4)", (long long)da);
    CHECK(db == 0, "32x48 image: %lld stored values differ from its R, G, B planes (crop y0 = 8)", (long long)db);
    int64_t gray_diff = 0;
    for (int i = 0; i < S * S; i++) gray_diff += img[3 * S * S + i] != img[3 * S * S + S * S + i] || img[3 * S * S + i] != img[3 * S * S + 2 * S * S + i];
    CHECK(gray_diff == 0, "grayscale JPEG: %lld pixels differ between the three slices", (long long)gray_diff);
    double maxd = 0;
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) maxd = PL_MAX(maxd, fabs(img[3 * 3 * S * S + (ch * S + y) * S + x] - ref_pixel(c, 80, 64, x, y, ch)));
    CHECK(maxd <= 0.5 + 1e-3, "80x64 -> short side %d: max diff to the 2-D reference %.3f (> 0.5)", S, maxd);
    printf("imagenet: exact_planes_diff:%lld,%lld downscale_max_diff:%.3f\n", (long long)da, (long long)db, maxd);
    h5shard_close(r);
    snprintf(p, sizeof p, "%s/imagenet_val.h5", out);
    if (h5shard_open(&r, p)) { CHECK(0, "open %s", p); free(img); free(a); free(b); free(c); return; }
    h5shard_shape(r, "images", d, 5);
    CHECK(d[0] == 2, "val has %lld samples, want 2", (long long)d[0]);
    h5shard_read(r, "images", SHARD_U8, img, 0, 2);
    h5shard_read(r, "label", SHARD_I32, lab, 0, 2);
    CHECK(lab[0] == 1 && lab[1] == 0, "val labels %d %d, want 1 0", lab[0], lab[1]);
    CHECK(plane_diff(img, b, 32, 0, 8) == 0 && plane_diff(img + 3 * S * S, a, 40, 4, 0) == 0, "val planes differ");
    char *syn = NULL;
    h5shard_get_attr_str(r, "synsets", &syn);
    CHECK(syn && !strncmp(syn, "n00000002 second synset\nn00000001", 33), "synsets attribute: %s", syn ? syn : "(none)");
    free(syn);
    h5shard_close(r);
    free(img);
    free(a);
    free(b);
    free(c);
}

static void check_coco(const char *out) {
    char p[600];
    snprintf(p, sizeof p, "%s/coco_val.h5", out);
    h5shard_reader *r = NULL;
    if (h5shard_open(&r, p)) { CHECK(0, "open %s", p); return; }
    int64_t d[5] = {0};
    h5shard_shape(r, "images", d, 5);
    CHECK(d[0] == 1, "coco val has %lld samples, want 1", (long long)d[0]);
    int64_t off[2] = {0}, id = 0;
    h5shard_read(r, "box_offsets", SHARD_I64, off, 0, 2);
    h5shard_read(r, "image_id", SHARD_I64, &id, 0, 1);
    CHECK(id == 1 && off[0] == 0 && off[1] == 2, "image %lld with %lld boxes, want image 1 with 2", (long long)id, (long long)(off[1] - off[0]));
    double bx[8] = {0}, fr[2] = {0};
    int32_t lab[2] = {0}, cat[2] = {0}, crowd[2] = {0};
    h5shard_read(r, "boxes", SHARD_F64, bx, 0, 2);
    h5shard_read(r, "box_fraction", SHARD_F64, fr, 0, 2);
    h5shard_read(r, "label", SHARD_I32, lab, 0, 2);
    h5shard_read(r, "category_id", SHARD_I32, cat, 0, 2);
    h5shard_read(r, "iscrowd", SHARD_I32, crowd, 0, 2);
    // ann 11: [10, 4, 8, 10] -> x shifted by the crop offset 4: [6, 4, 14, 14]; ann 13 (crowd): [16, 10, 26, 20]
    double want[8] = {6, 4, 14, 14, 16, 10, 26, 20}, err = 0;
    for (int i = 0; i < 8; i++) err = PL_MAX(err, fabs(bx[i] - want[i]));
    CHECK(err < 1e-9, "boxes differ from the hand-computed ones by %.3g", err);
    CHECK(cat[0] == 7 && cat[1] == 7 && lab[0] == 1 && lab[1] == 1, "categories %d %d labels %d %d, want 7 7 / 1 1 (ids 3, 7 -> 0, 1)", cat[0],
          cat[1], lab[0], lab[1]);
    CHECK(crowd[0] == 0 && crowd[1] == 1, "iscrowd %d %d", crowd[0], crowd[1]);
    CHECK(fr[0] == 1 && fr[1] == 1, "box fractions %g %g", fr[0], fr[1]);
    uint8_t *img = malloc(3 * S * S), *a = pattern(40, 32, 1);
    h5shard_read(r, "images", SHARD_U8, img, 0, 1);
    CHECK(plane_diff(img, a, 40, 4, 0) == 0, "coco image planes differ");
    free(img);
    free(a);
    h5shard_close(r);
}

static void check_quarantine(const char *out) {
    char p[600];
    snprintf(p, sizeof p, "%s/quarantine.csv", out);
    uint8_t *b = NULL;
    size_t n = 0;
    if (pl_read_file(p, &b, &n)) { CHECK(0, "no %s", p); return; }
    char *q = realloc(b, n + 1);
    q[n] = 0;
    CHECK(strstr(q, "n00000001_2.JPEG,"), "corrupt JPEG in a train tar not quarantined");
    CHECK(strstr(q, "ILSVRC2012_val_00000003.JPEG,image has no label"), "unlabelled val image not quarantined");
    CHECK(strstr(q, "val2017/000000000002.jpg,"), "corrupt COCO JPEG not quarantined");
    CHECK(strstr(q, "000000000004.jpg,image listed in the annotations but missing"), "COCO image missing from the zip not quarantined");
    CHECK(strstr(q, "vdt-coco,instances JSON,val,") && strstr(q, "image_id 99"), "annotation of a missing image not quarantined");
    free(q);
}

static void check_same(const char *a, const char *b, const char *file) {
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/%s", a, file);
    snprintf(pb, sizeof pb, "%s/%s", b, file);
    h5shard_reader *ra = NULL, *rb = NULL;
    if (h5shard_open(&ra, pa) || h5shard_open(&rb, pb)) { CHECK(0, "open %s / %s", pa, pb); h5shard_close(ra); h5shard_close(rb); return; }
    char *na = NULL, *nb = NULL;
    int ca = 0, cb = 0;
    h5shard_list(ra, &na, &ca);
    h5shard_list(rb, &nb, &cb);
    CHECK(ca == cb && ca >= 4, "%s: %d vs %d datasets", file, ca, cb);
    const char *p = na;
    for (int i = 0; i < ca && i < cb; i++, p += strlen(p) + 1) {
        void *x = NULL, *y = NULL;
        size_t lx = 0, ly = 0;
        h5shard_read_raw(ra, p, &x, &lx);
        h5shard_read_raw(rb, p, &y, &ly);
        CHECK(lx == ly && memcmp(x, y, lx) == 0, "%s: dataset %s differs between 1 rank and all ranks", file, p);
        free(x);
        free(y);
    }
    free(na);
    free(nb);
    h5shard_close(ra);
    h5shard_close(rb);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    pl_log_set_level(PL_WARN);
    char dir[256], inet[300], coco[300], o_all[300], o_one[300], o_strict[300];
    snprintf(dir, sizeof dir, "shard_vdt_np%d", size);
    snprintf(inet, sizeof inet, "%s/imagenet", dir);
    snprintf(coco, sizeof coco, "%s/coco", dir);
    snprintf(o_all, sizeof o_all, "%s/out_all", dir);
    snprintf(o_one, sizeof o_one, "%s/out_one", dir);
    snprintf(o_strict, sizeof o_strict, "%s/out_strict", dir);
    if (rank == 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        CHECK(system(cmd) == 0, "rm");
        make_imagenet(inet);
        make_coco(coco);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    pl_quiet_begin();
    int rc = run_stage(MPI_COMM_WORLD, inet, o_all, "imagenet", "train,val", "0.5");
    CHECK(rc == 0, "imagenet vdt exit %d", rc);
    rc = run_stage(MPI_COMM_WORLD, coco, o_strict, "coco", "val", "0.05");
    CHECK(rc == MP3D_EXIT_FAIL, "coco with 2 of 3 images bad and max_bad_fraction 0.05: exit %d, want 1", rc);
    rc = run_stage(MPI_COMM_WORLD, coco, o_all, "coco", "val", "0.9");
    CHECK(rc == 0, "coco vdt exit %d", rc);
    MPI_Comm c1;
    MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, rank, &c1);
    if (c1 != MPI_COMM_NULL) {
        CHECK(run_stage(c1, inet, o_one, "imagenet", "train,val", "0.5") == 0, "1-rank imagenet");
        CHECK(run_stage(c1, coco, o_one, "coco", "val", "0.9") == 0, "1-rank coco");
        MPI_Comm_free(&c1);
    }
    pl_quiet_end();
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        char p[400];
        snprintf(p, sizeof p, "%s/coco_val.h5", o_strict);
        CHECK(access(p, F_OK) != 0, "strict run wrote %s", p);
        check_imagenet(o_all);
        check_coco(o_all);
        check_quarantine(o_all);
        check_same(o_one, o_all, "imagenet_train.h5");
        check_same(o_one, o_all, "imagenet_val.h5");
        check_same(o_one, o_all, "coco_val.h5");
    }
    int fails = 0;
    MPI_Allreduce(&g_fail, &fails, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%s: %d failed checks\n", fails ? "FAIL" : "PASS", fails);
    MPI_Finalize();
    return fails ? 1 : 0;
}
