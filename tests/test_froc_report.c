// Tests of the FROC report (stages/eval/froc_report.c) through real files: a 3-image cohort with key
// slices in an Images_png_01.zip, a quarantine list, the report written, then read back:
// report.md/html content, froc.svg parsed as XML and froc.json as JSON (python3), CSV row counts,
// overlay PNGs decoded and checked pixel by pixel (windows, box colours, the lung panel).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/archive.h"
#include "io/fileio.h"
#include "io/image.h"
#include "nn/pl.h"
#include "stages/eval/froc_report.h"
#include "stages/score/froc.h"
#include "test_util.h"


enum { IMG = 64 };
static const char *const k_names[3] = {"000001_01_01_010.png", "000002_01_01_020.png", "000003_01_01_030.png"};

static char *slurp(const char *dir, const char *name, size_t *len) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *b = NULL;
    size_t n = 0;
    if (pl_read_file(path, &b, &n)) return NULL;
    char *s = realloc(b, n + 1);
    s[n] = 0;
    if (len) *len = n;
    return s;
}

static int count_lines(const char *s) {
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

static int count_str(const char *s, const char *needle) {
    int n = 0;
    for (const char *p = s; p && (p = strstr(p, needle)) != NULL; p++) n++;
    return n;
}

// HU(x, y) = -1000 + 30 x, stored as HU + 32768.
static int write_zip(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/Images_png_01.zip", dir);
    arc_writer *w = NULL;
    int rc = arc_writer_open(&w, path, ARC_ZIP);
    if (rc) return rc;
    uint16_t px[IMG * IMG];
    for (int y = 0; y < IMG; y++)
        for (int x = 0; x < IMG; x++) px[y * IMG + x] = (uint16_t)(32768 - 1000 + 30 * x);
    for (int i = 0; i < 3 && !rc; i++) {
        uint8_t *png = NULL;
        size_t len = 0;
        rc = img_encode_png_gray16(&png, &len, px, IMG, IMG);
        char entry[128];
        snprintf(entry, sizeof entry, "Images_png/%.12s/%s", k_names[i], k_names[i] + 13);
        if (!rc) rc = arc_writer_add(w, entry, png, len);
        free(png);
    }
    if (rc) {
        arc_writer_abort(w);
        return rc;
    }
    return arc_writer_close(w);
}

static void build_cohort(froc_set *s) {
    froc_image im[3];
    memset(im, 0, sizeof im);
    for (int i = 0; i < 3; i++) {
        snprintf(im[i].name, FROC_NAME, "%s", k_names[i]);
        im[i].patient = i + 1;
    }
    froc_gt g[3];
    memset(g, 0, sizeof g);
    const double gb[3][4] = {{10, 10, 20, 20}, {30, 30, 45, 45}, {5, 5, 15, 15}};
    const int types[3] = {5, 4, 1};
    for (int j = 0; j < 3; j++) {
        memcpy(g[j].box, gb[j], sizeof gb[j]);
        g[j].image = j;
        g[j].type = types[j];
        g[j].long_mm = 8 + 10 * j;
        g[j].slice_mm = j ? 5 : 1.25;
        g[j].line = j + 2;
    }
    froc_det d[4];
    memset(d, 0, sizeof d);
    const double db[4][5] = {{30, 30, 45, 45, .9}, {40, 40, 55, 55, .8}, {5, 5, 15, 15, .4}, {40, 40, 50, 50, .3}};
    const int di[4] = {1, 2, 2, 0};
    for (int k = 0; k < 4; k++) {
        snprintf(d[k].file, FROC_NAME, "%s", k_names[di[k]]);
        memcpy(d[k].box, db[k], 4 * sizeof(double));
        d[k].score = db[k][4];
        d[k].line = k + 2;
    }
    CHECK(froc_set_build(s, im, 3, g, 3, d, 4) == 0);
}

static void check_px(const uint8_t *rgb, int w, int x, int y, int r, int g, int b) {
    const uint8_t *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
    if (p[0] != r || p[1] != g || p[2] != b) {
        fprintf(stderr, "FAIL pixel (%d,%d) = (%d,%d,%d), expected (%d,%d,%d)\n", x, y, p[0], p[1], p[2], r, g, b);
        g_fail++;
    }
}

static void test_helpers(void) {
    uint16_t px[5] = {32768 + 40, 32768 - 160, 32768 + 240, 32768 + 1000, 32768 - 600};
    uint8_t out[5];
    froc_window_gray(out, px, 5, 400, 40);
    CHECK(out[0] == 128 && out[1] == 0 && out[2] == 255 && out[3] == 255 && out[4] == 0);
    froc_window_gray(out, px, 5, 1500, -600);
    CHECK(out[4] == 128 && out[1] == (uint8_t)((-160 + 1350) / 1500.0 * 255 + 0.5));
    uint8_t rgb[12 * 10 * 3];
    memset(rgb, 0, sizeof rgb);
    const uint8_t white[3] = {255, 255, 255};
    froc_draw_text(rgb, 12, 10, 1, 1, "1", white, 1);
    // glyph '1' row 0 is "..#..": ink at column 2, background elsewhere
    check_px(rgb, 12, 3, 1, 255, 255, 255);
    check_px(rgb, 12, 1, 1, 0, 0, 0);
    // row 6 is ".###.": ink at columns 1..3
    check_px(rgb, 12, 2, 7, 255, 255, 255);
    check_px(rgb, 12, 4, 7, 255, 255, 255);
    check_px(rgb, 12, 5, 7, 0, 0, 0);
    memset(rgb, 0, sizeof rgb);
    double box[4] = {2, 3, 6, 8};   // 1-based: columns 1..5, rows 2..7 of the buffer
    froc_draw_rect(rgb, 12, 10, box, white, 1);
    check_px(rgb, 12, 1, 2, 255, 255, 255);
    check_px(rgb, 12, 5, 7, 255, 255, 255);
    check_px(rgb, 12, 3, 5, 0, 0, 0);
    check_px(rgb, 12, 0, 2, 0, 0, 0);
    printf("helpers: ok\n");
}

static void test_report(void) {
    const char *dir = "froc_test_report";
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    CHECK(pl_mkdir_p(dir) == 0);
    CHECK(write_zip(dir) == 0);
    char qpath[256];
    snprintf(qpath, sizeof qpath, "%s/quarantine.csv", dir);
    const char *q = "sample,reason\n000009_01_01_001.png,missing_neighbour\n000009_01_01_002.png,corrupt_png\n"
                    "000009_01_01_003.png,missing_neighbour\n";
    CHECK(pl_write_file_atomic(qpath, q, strlen(q)) == 0);

    froc_set s;
    build_cohort(&s);
    froc_opts o;
    froc_opts_default(&o);
    froc_eval ev;
    CHECK(froc_evaluate(&ev, &s, &o, 200, 5) == 0);
    // ranks: .9 TP, .8 FP, .4 TP, .3 FP on 3 images, 3 lesions -> 2/3 at every level
    for (int k = 0; k < FROC_NLEVELS; k++) CHECK(fabs(ev.all.sens[k] - 2.0 / 3.0) < 1e-12);
    froc_report_info info;
    memset(&info, 0, sizeof info);
    info.truth_path = "DL_info.csv";
    info.dets_path = "dets.csv";
    info.config_text = "eval = { iou = 0.5; };\n";
    info.version = "test";
    info.images_root = dir;
    info.quarantine_csv = qpath;
    info.n_overlays = 4;
    char rdir[256];
    snprintf(rdir, sizeof rdir, "%s/report", dir);
    CHECK(froc_report_write(rdir, &s, &ev, &info) == 0);

    char *md = slurp(rdir, "report.md", NULL), *html = slurp(rdir, "report.html", NULL);
    CHECK(md && html);
    if (md && html) {
        CHECK(strstr(md, "| Sens@0.5 | Sens@1 | Sens@2 | Sens@4 | mFROC | AP@0.5 |"));
        CHECK(strstr(md, "| 66.7 ["));
        CHECK(strstr(md, "3 sample(s) quarantined"));
        CHECK(strstr(md, "| missing_neighbour | 2 |") && strstr(md, "| corrupt_png | 1 |"));
        CHECK(strstr(md, "| lung | type | 1 |"));
        CHECK(strstr(md, "(overlays/missed_01_000001_01_01_010.png)"));
        CHECK(strstr(md, "(overlays/fp_01_000003_01_01_030.png)"));
        CHECK(strstr(md, "before_next"));
        CHECK(strstr(md, "eval = { iou = 0.5; };"));
        CHECK(strstr(html, "<svg") && strstr(html, "</html>"));
        // self-contained: no external resources, overlays inline
        CHECK(!strstr(html, "<link") && !strstr(html, "src=\"http") && !strstr(html, "href=") && !strstr(html, "<script"));
        CHECK(count_str(html, "data:image/png;base64,") == 3);
        CHECK(strstr(html, "<td>66.7 ["));
    }
    free(md);
    free(html);
    char *pl = slurp(rdir, "per_lesion.csv", NULL), *pd = slurp(rdir, "per_detection.csv", NULL);
    CHECK(count_lines(pl) == 4 && count_lines(pd) == 5);
    if (pl && pd) {
        CHECK(strstr(pl, "000001_01_01_010.png,2,10,10,20,20,5,lung,8.00,1.25,0,0,-1,,,missed,0.0000"));
        CHECK(strstr(pl, "000002_01_01_020.png,3,30,30,45,45,4,liver,18.00,5.00,0,1,1,0.9,0.0000,0.5,1.0000"));
        CHECK(strstr(pd, "2,000003_01_01_030.png,40,40,55,55,0.8,FP,0,0.0000,0.333333,0.333333,3"));
    }
    free(pl);
    free(pd);
    // froc.svg is valid XML; froc.json carries the figures
    snprintf(cmd, sizeof cmd, "python3 -c 'import sys, xml.dom.minidom; d = xml.dom.minidom.parse(sys.argv[1]); "
                              "assert d.documentElement.tagName == \"svg\"' %s/froc.svg", rdir);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "python3 -c 'import sys, json; d = json.load(open(sys.argv[1])); "
                              "assert d[\"n_images\"] == 3 and d[\"n_lesions\"] == 3; "
                              "assert abs(d[\"sens\"][\"0.5\"] - 2/3) < 1e-5 and abs(d[\"mfroc\"] - 2/3) < 1e-5; "
                              "assert d[\"conventions\"][\"fp_rule\"] == \"before_next\"; "
                              "assert d[\"ci\"][\"reps\"] == 200 and len(d[\"groups\"]) == 13' %s/froc.json", rdir);
    CHECK(system(cmd) == 0);

    // overlays: the missed lung lesion gets a second panel in the lung window
    char *ov = NULL;
    size_t len = 0;
    ov = slurp(rdir, "overlays/missed_01_000001_01_01_010.png", &len);
    CHECK(ov != NULL);
    if (ov) {
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        CHECK(img_decode_rgb8(&rgb, &w, &h, (const uint8_t *)ov, len, "overlay") == 0);
        CHECK(w == 2 * IMG && h == IMG);
        if (rgb && w == 2 * IMG) {
            check_px(rgb, w, 9, 14, 40, 230, 40);          // GT left edge, soft panel (thick 2: x 8..9)
            check_px(rgb, w, IMG + 9, 14, 40, 230, 40);    // and in the lung panel
            check_px(rgb, w, 39, 45, 255, 40, 40);         // the FP on this slice, red
            check_px(rgb, w, 30, 60, 38, 38, 38);          // HU -100 in W400 L40
            check_px(rgb, w, IMG + 30, 60, 213, 213, 213); // HU -100 in W1500 L-600
        }
        free(rgb);
    }
    free(ov);
    ov = slurp(rdir, "overlays/fp_01_000003_01_01_030.png", &len);
    CHECK(ov != NULL);
    if (ov) {
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        CHECK(img_decode_rgb8(&rgb, &w, &h, (const uint8_t *)ov, len, "overlay") == 0);
        CHECK(w == IMG && h == IMG);
        if (rgb && w == IMG) {
            check_px(rgb, w, 39, 47, 0, 230, 255);   // the FP shown, cyan
            check_px(rgb, w, 4, 13, 40, 230, 40);    // GT of this slice, green (below the title)
        }
        free(rgb);
    }
    free(ov);
    snprintf(cmd, sizeof cmd, "test $(ls %s/overlays | wc -l) -eq 3", rdir);
    CHECK(system(cmd) == 0);

    // without an images folder or a quarantine list the report says so
    info.images_root = NULL;
    info.quarantine_csv = NULL;
    snprintf(rdir, sizeof rdir, "%s/report2", dir);
    CHECK(froc_report_write(rdir, &s, &ev, &info) == 0);
    md = slurp(rdir, "report.md", NULL);
    CHECK(md && strstr(md, "Overlays skipped: no images folder") && strstr(md, "quarantine summary is not available"));
    free(md);
    snprintf(cmd, sizeof cmd, "test ! -e %s/overlays", rdir);
    CHECK(system(cmd) == 0);
    froc_eval_free(&ev);
    froc_set_free(&s);
    if (!g_fail && !getenv("MP3D_FROC_KEEP")) {   // MP3D_FROC_KEEP=1 keeps the report to look at
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        CHECK(system(cmd) == 0);
    }
    printf("report: ok\n");
}

// --check-png FILE: exit 0 when FILE decodes and is not blank (used by test_froc_html.sh on the
// headless-Chromium screenshot): >= 1% of pixels not near-white and >= 16 distinct colours.
static int check_png(const char *path) {
    uint8_t *buf = NULL, *px = NULL;
    size_t len = 0;
    int w = 0, h = 0;
    if (pl_read_file(path, &buf, &len) || img_decode_rgb8(&px, &w, &h, buf, len, path)) return 1;
    int64_t n = (int64_t)w * h, ink = 0, ncol = 0;
    uint32_t seen[16];
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = px + i * 3;
        ink += p[0] < 200 || p[1] < 200 || p[2] < 200;
        uint32_t c = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
        int known = 0;
        for (int64_t k = 0; k < ncol; k++) known |= seen[k] == c;
        if (!known && ncol < 16) seen[ncol++] = c;
    }
    printf("screenshot %dx%d ink_fraction:%.4f colours:%lld%s\n", w, h, (double)ink / (double)n, (long long)ncol,
           ncol >= 16 ? "+" : "");
    free(buf);
    free(px);
    return ink * 100 >= n && ncol >= 16 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--check-png") == 0) return check_png(argv[2]);
    test_helpers();
    test_report();
    if (g_fail) {
        fprintf(stderr, "test_froc_report: %d check(s) failed\n", g_fail);
        return 1;
    }
    printf("test_froc_report: all passed\n");
    return 0;
}
