// test_synth: `mp3d synth` at tiny scale, re-read through the project's own readers (arc_*,
// img_decode_*, dlinfo_read, coco_load, inet_*) and checked against the public formats' rules:
// 16-bit PNGs with HU = value - 32768 (air ~ -1000), 18 DL_info columns, boxes = RECIST extent
// + 5 px inside the image, the lesion visible inside its box, Slice_range slices present in the
// zips, whole series per zip, split by patient; the ImageNet quirks (one CMYK JPEG, one gray
// JPEG, one PNG named .JPEG) decode; COCO ids non-contiguous, crowd and empty images present.
// Determinism: same seed -> byte-identical files; another seed -> different files.
// Usage: test_synth [seed N]   all checks, one process (MPI singleton); seed 7 by default
//        test_synth stage      stage_synth_run at any rank count: exit codes agree on all ranks
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <glob.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/archive.h"
#include "io/coco.h"
#include "io/config.h"
#include "io/dlinfo.h"
#include "io/fileio.h"
#include "io/image.h"
#include "io/imagenet.h"
#include "nn/pl.h"
#include "stages/stages.h"
#include "stages/synth/synth.h"
#include "test_util.h"


static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}
static void rm_rf(const char *path) { nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static char *read_text(const char *path, size_t *len) {
    uint8_t *b = NULL;
    if (pl_read_file(path, &b, len)) return NULL;
    char *t = realloc(b, *len + 1);
    t[*len] = 0;
    return t;
}

// ---- DeepLesion --------------------------------------------------------------------------
typedef struct {
    char name[64];          // "000001_01_01/105.png"
    int zip;                // which Images_png_NN.zip
    uint16_t *px;           // decoded (W, W)
} slice_rec;

typedef struct {
    slice_rec *s;
    int n, cap;
} slice_set;

static slice_rec *find_slice(const slice_set *ss, const char *series_dir, int slice) {
    char nm[64];
    snprintf(nm, sizeof nm, "%s/%03d.png", series_dir, slice);
    for (int i = 0; i < ss->n; i++)
        if (!strcmp(ss->s[i].name, nm)) return &ss->s[i];
    return NULL;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Counts CSV fields of one line, honouring quotes.
static int csv_fields(const char *line) {
    int n = 1, q = 0;
    for (const char *p = line; *p && *p != '\n'; p++) {
        if (*p == '"') q = !q;
        else if (*p == ',' && !q) n++;
    }
    return n;
}

typedef struct {
    char file[64];
    int type;
    double cx, cy, ra, rb, hu, core_hu, bg;
    int edge;
} truth_row;

static int read_truth(truth_row **out, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/synth_truth.csv", dir);
    size_t len;
    char *t = read_text(path, &len);
    if (!t) return -1;
    int cap = 64, n = 0;
    truth_row *rows = malloc(sizeof *rows * (size_t)cap);
    char *save = NULL;
    char *line = strtok_r(t, "\n", &save);   // header
    while ((line = strtok_r(NULL, "\n", &save))) {
        if (n == cap) rows = realloc(rows, sizeof *rows * (size_t)(cap *= 2));
        truth_row *r = &rows[n];
        long row;
        double cz, rz, ang;
        int k = sscanf(line, "%63[^,],%ld,%d,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%lf,%d", r->file, &row, &r->type,
                       &r->cx, &r->cy, &cz, &r->ra, &r->rb, &rz, &ang, &r->hu, &r->core_hu, &r->bg, &r->edge);
        if (k == 14) n++;
    }
    free(t);
    *out = rows;
    return n;
}

static void check_deeplesion(const char *root) {
    char dir[1024], path[4096];
    snprintf(dir, sizeof dir, "%s/deeplesion", root);
    const int W = 128;

    // raw CSV: 18 columns on every line
    snprintf(path, sizeof path, "%s/DL_info.csv", dir);
    size_t len;
    char *text = read_text(path, &len);
    CHECK(text != NULL, "%s unreadable", path);
    if (!text) return;
    int lines = 0, bad_cols = 0;
    for (char *p = text; *p;) {
        if (csv_fields(p) != DL_NCOLS) bad_cols++;
        lines++;
        char *nl = strchr(p, '\n');
        if (!nl) break;
        p = nl + 1;
    }
    CHECK(bad_cols == 0, "%d of %d lines do not have 18 columns", bad_cols, lines);
    CHECK(!strncmp(text, "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,", 86),
          "header: %.80s", text);
    free(text);

    dl_table t = {0};
    CHECK(dlinfo_read(&t, path) == 0, "dlinfo_read: %s", pl_last_error());
    CHECK(t.nbad == 0, "%lld malformed rows, first: %s", (long long)t.nbad, t.nbad ? t.bad[0].msg : "");
    CHECK(t.n >= 10 && t.n <= 40, "rows %lld", (long long)t.n);
    int nkeys = 0;
    for (int64_t i = 0; i < t.n; i++) {
        int dup = 0;
        for (int64_t j = 0; j < i; j++) dup |= !strcmp(t.rows[i].file_name, t.rows[j].file_name);
        nkeys += !dup;
    }
    CHECK(nkeys >= 10 && nkeys <= 16, "key slices %d (tiny: 10-16)", nkeys);
    CHECK(nkeys < t.n, "no key slice holds several lesions (keys %d, rows %lld)", nkeys, (long long)t.n);

    // every zip: entry names, 16-bit gray PNGs of W x W, whole series folders per zip
    slice_set ss = {0};
    glob_t g;
    snprintf(path, sizeof path, "%s/Images_png_*.zip", dir);
    CHECK(glob(path, 0, NULL, &g) == 0 && g.gl_pathc >= 2, "zips: %zu (want several)", g.gl_pathc);
    int nonpng16 = 0, badname = 0, split_series = 0;
    double air_sum = 0;
    int64_t air_n = 0;
    for (size_t z = 0; z < g.gl_pathc; z++) {
        char want[64];
        snprintf(want, sizeof want, "Images_png_%02zu.zip", z + 1);
        CHECK(strstr(g.gl_pathv[z], want) != NULL, "zip %zu is %s", z, g.gl_pathv[z]);
        arc_reader *r = NULL;
        CHECK(arc_open_file(&r, g.gl_pathv[z]) == 0, "%s", pl_last_error());
        if (!r) continue;
        const char *nm;
        int64_t sz;
        int rc;
        while ((rc = arc_next(r, &nm, &sz)) == 1) {
            int pa, st, se, sl;
            char tail[8] = "";
            if (sscanf(nm, "Images_png/%6d_%2d_%2d/%3d.png%7s", &pa, &st, &se, &sl, tail) != 4 || strlen(nm) != 31) {
                badname++;
                continue;
            }
            uint8_t *buf;
            size_t n;
            if (arc_read_entry(r, &buf, &n)) {
                nonpng16++;
                continue;
            }
            // IHDR: bit depth at byte 24, colour type at byte 25
            if (n < 26 || !img_is_png(buf, n) || buf[24] != 16 || buf[25] != 0) nonpng16++;
            uint16_t *px = NULL;
            int w = 0, h = 0;
            if (img_decode_gray16(&px, &w, &h, buf, n, nm) || w != W || h != W) nonpng16++;
            free(buf);
            if (ss.n == ss.cap) ss.s = realloc(ss.s, sizeof *ss.s * (size_t)(ss.cap = ss.cap ? 2 * ss.cap : 256));
            slice_rec *s = &ss.s[ss.n++];
            snprintf(s->name, sizeof s->name, "%s", nm + 11);
            s->zip = (int)z;
            s->px = px;
            // air: the 6x6 top-left corner is outside the body in every phantom
            if (px)
                for (int y = 0; y < 6; y++)
                    for (int x = 0; x < 6; x++) {
                        air_sum += px[y * W + x] - 32768.0;
                        air_n++;
                    }
        }
        CHECK(rc == 0, "arc_next: %s", pl_last_error());
        arc_close(r);
    }
    globfree(&g);
    CHECK(badname == 0, "%d entries not named Images_png/PPPPPP_SS_SS/NNN.png", badname);
    CHECK(nonpng16 == 0, "%d entries are not 16-bit gray %dx%d PNGs", nonpng16, W, W);
    double air = air_n ? air_sum / (double)air_n : 0;
    printf("deeplesion: rows:%lld key_slices:%d slices:%d air_mean_hu:%.1f (stored %.0f)\n", (long long)t.n, nkeys,
           ss.n, air, air + 32768);
    CHECK(air > -1010 && air < -985, "air mean HU %.1f (stored value should be ~31768)", air);
    for (int i = 0; i < ss.n; i++)
        for (int j = 0; j < i; j++)
            if (!strncmp(ss.s[i].name, ss.s[j].name, 12) && ss.s[i].zip != ss.s[j].zip) split_series++;
    CHECK(split_series == 0, "%d slice pairs of one series folder sit in different zips", split_series);

    truth_row *tr = NULL;
    int ntr = read_truth(&tr, dir);
    CHECK(ntr == t.n, "synth_truth.csv rows %d vs DL_info rows %lld", ntr, (long long)t.n);

    int splits[4] = {0}, with_context = 0, at_edge = 0, visible = 0, truth_ok = 0;
    for (int64_t i = 0; i < t.n; i++) {
        const dl_lesion *l = &t.rows[i];
        char sdir[32];
        dlinfo_series_dir(l, sdir, sizeof sdir);
        char want[64];
        snprintf(want, sizeof want, "%s_%03d.png", sdir, l->key_slice);
        CHECK(!strcmp(want, l->file_name), "row %d: File_name %s vs %s", l->line, l->file_name, want);
        // boxes: inside the image, = RECIST extent padded by 5 px (clipped)
        double x0 = 1e30, y0 = 1e30, x1 = -1e30, y1 = -1e30;
        for (int k = 0; k < 4; k++) {
            x0 = fmin(x0, l->recist[2 * k]);
            x1 = fmax(x1, l->recist[2 * k]);
            y0 = fmin(y0, l->recist[2 * k + 1]);
            y1 = fmax(y1, l->recist[2 * k + 1]);
        }
        CHECK(l->bbox[0] >= 1 && l->bbox[1] >= 1 && l->bbox[2] <= W && l->bbox[3] <= W &&
                  l->bbox[0] < l->bbox[2] && l->bbox[1] < l->bbox[3],
              "row %d: box %g %g %g %g outside 1..%d", l->line, l->bbox[0], l->bbox[1], l->bbox[2], l->bbox[3], W);
        CHECK(fabs(l->bbox[0] - fmax(1, x0 - 5)) < 0.002 && fabs(l->bbox[1] - fmax(1, y0 - 5)) < 0.002 &&
                  fabs(l->bbox[2] - fmin(W, x1 + 5)) < 0.002 && fabs(l->bbox[3] - fmin(W, y1 + 5)) < 0.002,
              "row %d: box %g %g %g %g is not the RECIST extent %g %g %g %g + 5", l->line, l->bbox[0], l->bbox[1],
              l->bbox[2], l->bbox[3], x0, y0, x1, y1);
        double dlong = hypot(l->recist[2] - l->recist[0], l->recist[3] - l->recist[1]);
        double dshort = hypot(l->recist[6] - l->recist[4], l->recist[7] - l->recist[5]);
        CHECK(fabs(dlong - l->diam_px[0]) < 0.01 && fabs(dshort - l->diam_px[1]) < 0.01 && dshort <= dlong + 1e-6,
              "row %d: diameters %g %g vs RECIST lengths %g %g", l->line, l->diam_px[0], l->diam_px[1], dlong, dshort);
        // perpendicular axes
        double dot = (l->recist[2] - l->recist[0]) * (l->recist[6] - l->recist[4]) +
                     (l->recist[3] - l->recist[1]) * (l->recist[7] - l->recist[5]);
        CHECK(dshort == 0 || fabs(dot) / (dlong * dshort) < 0.02, "row %d: RECIST axes not perpendicular (cos %g)",
              l->line, dot / (dlong * dshort));
        CHECK(l->split >= 1 && l->split <= 3, "row %d: split %d", l->line, l->split);
        splits[PL_CLAMP(l->split, 0, 3)]++;
        if (l->split == 1) CHECK(l->type == -1, "row %d: train row with type %d", l->line, l->type);
        else CHECK(l->type >= 1 && l->type <= 8, "row %d: type %d", l->line, l->type);
        CHECK(l->noisy == 0 || l->noisy == 1, "row %d: noisy %d", l->line, l->noisy);
        CHECK(l->spacing[0] >= 0.6 && l->spacing[0] <= 0.98 && l->spacing[0] == l->spacing[1] &&
                  l->spacing[2] >= 1 && l->spacing[2] <= 5,
              "row %d: spacing %g %g %g", l->line, l->spacing[0], l->spacing[1], l->spacing[2]);
        CHECK(l->image_size[0] == W && l->image_size[1] == W, "row %d: image size %d %d", l->line, l->image_size[0],
              l->image_size[1]);
        CHECK(l->window[0] < l->window[1], "row %d: window %g %g", l->line, l->window[0], l->window[1]);
        CHECK((l->gender == 'M' || l->gender == 'F') && l->age >= 18 && l->age <= 95, "row %d: %c %g", l->line,
              l->gender, l->age);
        for (int k = 0; k < 3; k++)
            CHECK(l->norm_loc[k] >= 0 && l->norm_loc[k] <= 1, "row %d: location %g", l->line, l->norm_loc[k]);
        // split by patient
        for (int64_t j = 0; j < i; j++)
            if (t.rows[j].patient == l->patient)
                CHECK(t.rows[j].split == l->split, "patient %d in splits %d and %d", l->patient, t.rows[j].split, l->split);
        // Slice_range: contains the key, every slice in it exists, it reaches 20 mm (the tiny
        // scale's context) on each side, and where it reaches less, the volume ends there: the
        // next slice outside it exists nowhere
        CHECK(l->slice_range[0] <= l->key_slice && l->key_slice <= l->slice_range[1], "row %d: key %d not in %d..%d",
              l->line, l->key_slice, l->slice_range[0], l->slice_range[1]);
        int missing = 0;
        for (int s = l->slice_range[0]; s <= l->slice_range[1]; s++) missing += find_slice(&ss, sdir, s) == NULL;
        CHECK(missing == 0, "row %d: %d slices of Slice_range %d..%d absent from the zips", l->line, missing,
              l->slice_range[0], l->slice_range[1]);
        double dz = l->spacing[2];
        int m = (int)lround(20.0 / dz);
        CHECK(l->key_slice - l->slice_range[0] <= m && l->slice_range[1] - l->key_slice <= m,
              "row %d: Slice_range %d..%d wider than +-%d slices around %d", l->line, l->slice_range[0],
              l->slice_range[1], m, l->key_slice);
        if (l->key_slice - l->slice_range[0] < m)
            CHECK(l->slice_range[0] == 1 || !find_slice(&ss, sdir, l->slice_range[0] - 1),
                  "row %d: Slice_range starts at %d (clipped) but slice %d exists", l->line, l->slice_range[0],
                  l->slice_range[0] - 1);
        if (l->slice_range[1] - l->key_slice < m)
            CHECK(!find_slice(&ss, sdir, l->slice_range[1] + 1), "row %d: Slice_range ends at %d (clipped) but slice %d exists",
                  l->line, l->slice_range[1], l->slice_range[1] + 1);
        if ((l->key_slice - l->slice_range[0]) * dz >= 10 - 1e-9 && (l->slice_range[1] - l->key_slice) * dz >= 10 - 1e-9)
            with_context++;
        if (l->key_slice - l->slice_range[0] <= 1 || l->slice_range[1] - l->key_slice <= 1) at_edge++;
        // the lesion is visible in its box: core mean vs a ring around the box
        const slice_rec *key = find_slice(&ss, sdir, l->key_slice);
        CHECK(key && key->px, "row %d: key slice %s absent", l->line, l->file_name);
        if (!key || !key->px) continue;
        double bx0 = l->bbox[0] - 1, by0 = l->bbox[1] - 1, bx1 = l->bbox[2] - 1, by1 = l->bbox[3] - 1;
        double cx = 0.5 * (bx0 + bx1), cy = 0.5 * (by0 + by1);
        double hw = fmax(1, 0.25 * (bx1 - bx0 - 10)), hh = fmax(1, 0.25 * (by1 - by0 - 10));
        double cs = 0;
        int cn = 0, rn = 0;
        double *ring_v = malloc(sizeof *ring_v * (size_t)W * W);
        for (int y = 0; y < W; y++)
            for (int x = 0; x < W; x++) {
                double hu = key->px[y * W + x] - 32768.0;
                if (fabs(x - cx) <= hw && fabs(y - cy) <= hh) {
                    cs += hu;
                    cn++;
                }
                // the ring: the box's 5 px padding band around the lesion, and 2 px beyond
                int in_box = x >= bx0 + 3 && x <= bx1 - 3 && y >= by0 + 3 && y <= by1 - 3;
                int in_ring = x >= bx0 - 2 && x <= bx1 + 2 && y >= by0 - 2 && y <= by1 + 2;
                if (in_ring && !in_box) ring_v[rn++] = hu;
            }
        // the ring's median: robust to a rib or a vessel crossing it
        qsort(ring_v, (size_t)rn, sizeof *ring_v, cmp_double);
        double core = cn ? cs / cn : 0, ring = rn ? ring_v[rn / 2] : 0;
        free(ring_v);
        if (cn && rn && fabs(core - ring) > 25) visible++;
        else
            printf("  low contrast: row %d %s type %d core %.1f ring %.1f (n %d/%d)\n", l->line, l->file_name,
                   i < ntr ? tr[i].type : 0, core, ring, cn, rn);
        // and the truth: the lesion's centre has the lesion's HU
        if (i < ntr && !strcmp(tr[i].file, l->file_name)) {
            double r = fmax(0.8, 0.5 * tr[i].rb);
            double s = 0;
            int n = 0;
            for (int y = 0; y < W; y++)
                for (int x = 0; x < W; x++)
                    if (hypot(x + 1 - tr[i].cx, y + 1 - tr[i].cy) <= r) {
                        s += key->px[y * W + x] - 32768.0;
                        n++;
                    }
            double tol = 12 + 4 * 20 / sqrt(fmax(1, n));
            double want_hu = tr[i].core_hu;   // the centre is the core when the lesion has one
            if (n && fabs(s / n - want_hu) < tol && fabs(tr[i].hu - tr[i].bg) > 25) truth_ok++;
            else printf("  truth mismatch: row %d type %d centre mean %.1f (n %d) lesion %.1f background %.1f\n", l->line,
                        tr[i].type, n ? s / n : 0, n, want_hu, tr[i].bg);
            // the truth centre lies in the box
            CHECK(tr[i].cx >= l->bbox[0] && tr[i].cx <= l->bbox[2] && tr[i].cy >= l->bbox[1] && tr[i].cy <= l->bbox[3],
                  "row %d: lesion centre %g %g outside its box", l->line, tr[i].cx, tr[i].cy);
        }
    }
    printf("deeplesion: splits train:%d val:%d test:%d context_10mm:%d/%lld at_edge:%d visible:%d/%lld truth_ok:%d/%lld\n",
           splits[1], splits[2], splits[3], with_context, (long long)t.n, at_edge, visible, (long long)t.n, truth_ok,
           (long long)t.n);
    CHECK(splits[1] > 0 && splits[2] > 0 && splits[3] > 0, "splits %d %d %d", splits[1], splits[2], splits[3]);
    CHECK(with_context >= 0.6 * t.n, "only %d of %lld key slices have +-10 mm of neighbours", with_context, (long long)t.n);
    CHECK(at_edge >= 1, "no lesion at a volume edge");
    CHECK(visible >= 0.9 * t.n, "lesion visible in only %d of %lld boxes", visible, (long long)t.n);
    CHECK(truth_ok == t.n, "lesion HU at the truth centre matches in %d of %lld rows", truth_ok, (long long)t.n);
    free(tr);
    for (int i = 0; i < ss.n; i++) free(ss.s[i].px);
    free(ss.s);
    dlinfo_free(&t);
}

// ---- ImageNet ----------------------------------------------------------------------------
// Number of colour components in a JPEG's SOF marker (0 if not found).
static int jpeg_components(const uint8_t *b, size_t n) {
    for (size_t i = 2; i + 9 < n;) {
        if (b[i] != 0xFF) return 0;
        int m = b[i + 1];
        size_t seglen = ((size_t)b[i + 2] << 8) | b[i + 3];
        if (m == 0xC0 || m == 0xC1 || m == 0xC2) return b[i + 9];
        i += 2 + seglen;
    }
    return 0;
}

static void check_imagenet(const char *root) {
    char dir[1024], path[4096];
    snprintf(dir, sizeof dir, "%s/imagenet", root);
    inet_synsets syn = {0};
    snprintf(path, sizeof path, "%s/LOC_synset_mapping.txt", dir);
    CHECK(inet_synsets_read(&syn, path) == 0, "%s", pl_last_error());
    CHECK(syn.n == 4, "classes %d", syn.n);
    inet_val val = {0};
    snprintf(path, sizeof path, "%s/LOC_val_solution.csv", dir);
    CHECK(inet_val_read(&val, &syn, path) == 0, "%s", pl_last_error());
    CHECK(val.n == 8 && val.nbad == 0, "val rows %lld bad %lld", (long long)val.n, (long long)val.nbad);

    int ncmyk = 0, ngray = 0, npng = 0, nrgb = 0, ntrain = 0, badname = 0, undecodable = 0, square = 0;
    int per_class[4] = {0};
    arc_reader *outer = NULL;
    snprintf(path, sizeof path, "%s/ILSVRC2012_img_train.tar", dir);
    CHECK(arc_open_file(&outer, path) == 0, "%s", pl_last_error());
    const char *nm;
    int64_t sz;
    while (outer && arc_next(outer, &nm, &sz) == 1) {
        char wnid[16], wnid2[16];
        CHECK(inet_synset_from_tar_name(wnid, nm) == 0, "outer entry %s", nm);
        int label = inet_label_of(&syn, wnid);
        CHECK(label >= 0, "synset %s not in the mapping", wnid);
        uint8_t *tb;
        size_t tn;
        if (arc_read_entry(outer, &tb, &tn)) continue;
        arc_reader *inner = NULL;
        CHECK(arc_open_memory(&inner, tb, tn, nm) == 0, "%s", pl_last_error());
        const char *in;
        while (inner && arc_next(inner, &in, &sz) == 1) {
            if (inet_synset_from_image_name(wnid2, in) || strcmp(wnid, wnid2)) badname++;
            uint8_t *b;
            size_t n;
            if (arc_read_entry(inner, &b, &n)) continue;
            if (img_is_png(b, n)) npng++;
            else if (img_is_jpeg(b, n)) {
                int c = jpeg_components(b, n);
                ncmyk += c == 4;
                ngray += c == 1;
                nrgb += c == 3;
            }
            uint8_t *px = NULL;
            int w, h;
            if (img_decode_rgb8(&px, &w, &h, b, n, in)) undecodable++;
            else {
                square += w == h;
                // every image carries its pattern: the luminance varies (stripes, shapes)
                double s = 0, s2 = 0;
                for (int64_t i = 0; i < (int64_t)w * h; i++) {
                    double v = 0.299 * px[3 * i] + 0.587 * px[3 * i + 1] + 0.114 * px[3 * i + 2];
                    s += v;
                    s2 += v * v;
                }
                double sd = sqrt(fmax(0, s2 / ((double)w * h) - pow(s / ((double)w * h), 2)));
                CHECK(sd > 12, "%s: luminance sd %.1f, no visible pattern", in, sd);
            }
            free(px);
            free(b);
            ntrain++;
            if (label >= 0 && label < 4) per_class[label]++;
        }
        arc_close(inner);
        free(tb);
    }
    arc_close(outer);
    printf("imagenet: train:%d (cmyk:%d gray:%d png:%d rgb:%d) val:%lld\n", ntrain, ncmyk, ngray, npng, nrgb,
           (long long)val.n);
    CHECK(ntrain == 24 && per_class[0] == 6 && per_class[3] == 6, "train %d", ntrain);
    CHECK(ncmyk == 1 && ngray == 1 && npng == 1, "quirks: cmyk %d gray %d png %d (want one each)", ncmyk, ngray, npng);
    CHECK(badname == 0 && undecodable == 0 && square == 0, "bad names %d, undecodable %d, square %d", badname,
          undecodable, square);

    // val tar: names in order, labels from the CSV, boxes inside the image
    snprintf(path, sizeof path, "%s/ILSVRC2012_img_val.tar", dir);
    arc_reader *r = NULL;
    CHECK(arc_open_file(&r, path) == 0, "%s", pl_last_error());
    int k = 0;
    while (r && arc_next(r, &nm, &sz) == 1) {
        char want[64], id[48];
        snprintf(want, sizeof want, "ILSVRC2012_val_%08d.JPEG", ++k);
        CHECK(!strcmp(nm, want), "val entry %s, want %s", nm, want);
        CHECK(inet_image_id(id, sizeof id, nm) == 0 && inet_val_label(&val, id) >= 0, "%s has no label", nm);
        uint8_t *b, *px = NULL;
        size_t n;
        int w, h;
        if (arc_read_entry(r, &b, &n)) continue;
        CHECK(img_decode_rgb8(&px, &w, &h, b, n, nm) == 0, "%s: %s", nm, pl_last_error());
        free(px);
        free(b);
    }
    arc_close(r);
    CHECK(k == 8, "val images %d", k);
    inet_val_free(&val);
    inet_synsets_free(&syn);
}

// ---- COCO --------------------------------------------------------------------------------
static void check_coco(const char *root) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/coco", root);
    const char *splits[2] = {"train", "val"};
    const int want[2] = {12, 6};
    int crowd = 0, empty = 0, objects = 0;
    for (int si = 0; si < 2; si++) {
        coco_set s = {0};
        CHECK(coco_load(&s, dir, splits[si]) == 0, "%s", pl_last_error());
        CHECK(s.nimages == want[si] && s.nbad == 0, "%s: images %lld bad %lld", splits[si], (long long)s.nimages,
              (long long)s.nbad);
        CHECK(s.ncats == 5 && s.cats[0].id == 1 && s.cats[1].id == 3 && s.cats[2].id == 7 && s.cats[3].id == 12,
              "categories %d (ids 1, 3, 7, 12, 18 expected)", s.ncats);
        for (int64_t i = 0; i < s.nimages; i++) {
            if (s.ann_off[i + 1] == s.ann_off[i]) empty++;
            for (int64_t a = s.ann_off[i]; a < s.ann_off[i + 1]; a++) {
                const coco_ann *an = &s.anns[a];
                crowd += an->iscrowd;
                objects += !an->iscrowd;
                CHECK(an->bbox[0] >= 0 && an->bbox[1] >= 0 && an->bbox[2] > 0 && an->bbox[3] > 0 &&
                          an->bbox[0] + an->bbox[2] <= s.images[i].width + 1e-6 &&
                          an->bbox[1] + an->bbox[3] <= s.images[i].height + 1e-6,
                      "%s ann %lld: bbox %g %g %g %g outside %dx%d", splits[si], (long long)an->id, an->bbox[0],
                      an->bbox[1], an->bbox[2], an->bbox[3], s.images[i].width, s.images[i].height);
                CHECK(an->area > 0 && an->area <= an->bbox[2] * an->bbox[3] + 1e-6, "ann %lld: area %g",
                      (long long)an->id, an->area);
            }
        }
        // every image is in the zip with its size
        char path[4096], folder[16];
        snprintf(folder, sizeof folder, "%s2017", splits[si]);
        snprintf(path, sizeof path, "%s/%s.zip", dir, folder);
        arc_reader *r = NULL;
        CHECK(arc_open_file(&r, path) == 0, "%s", pl_last_error());
        const char *nm;
        int64_t sz;
        int found = 0;
        while (r && arc_next(r, &nm, &sz) == 1) {
            long long id;
            CHECK(sscanf(nm, "%*[a-z0-9]/%12lld.jpg", &id) == 1 && !strncmp(nm, folder, strlen(folder)), "entry %s", nm);
            int64_t ii = coco_image_index(&s, id);
            CHECK(ii >= 0, "%s not in the annotations", nm);
            uint8_t *b, *px = NULL;
            size_t n;
            int w = 0, h = 0;
            if (ii < 0 || arc_read_entry(r, &b, &n)) continue;
            CHECK(img_decode_rgb8(&px, &w, &h, b, n, nm) == 0 && w == s.images[ii].width && h == s.images[ii].height,
                  "%s: %dx%d vs json %dx%d", nm, w, h, s.images[ii].width, s.images[ii].height);
            found++;
            free(px);
            free(b);
        }
        arc_close(r);
        CHECK(found == want[si], "%s: %d images in the zip", splits[si], found);
        coco_free(&s);
    }
    printf("coco: objects:%d crowd:%d empty_images:%d\n", objects, crowd, empty);
    CHECK(crowd >= 2 && empty >= 2 && objects >= 10, "crowd %d empty %d objects %d", crowd, empty, objects);
}

// ---- determinism -------------------------------------------------------------------------
static const char *const OUT_FILES[] = {
    "deeplesion/DL_info.csv", "deeplesion/synth_truth.csv", "deeplesion/Images_png_01.zip",
    "deeplesion/Images_png_02.zip", "imagenet/ILSVRC2012_img_train.tar", "imagenet/ILSVRC2012_img_val.tar",
    "imagenet/LOC_val_solution.csv", "imagenet/LOC_synset_mapping.txt", "coco/train2017.zip", "coco/val2017.zip",
    "coco/annotations_trainval2017.zip",
};

static int same_file(const char *a, const char *b) {
    uint8_t *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    int ra = pl_read_file(a, &x, &nx), rb = pl_read_file(b, &y, &ny);
    int same = !ra && !rb && nx == ny && !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

// Files of `datasets` identical in two output folders; returns how many differ.
static int compare_outputs(const char *a, const char *b, int datasets) {
    int n = (int)(sizeof OUT_FILES / sizeof OUT_FILES[0]), differ = 0;
    for (int i = 0; i < n; i++) {
        if (!strncmp(OUT_FILES[i], "deeplesion", 10) && !(datasets & SYNTH_DEEPLESION)) continue;
        if (!strncmp(OUT_FILES[i], "imagenet", 8) && !(datasets & SYNTH_IMAGENET)) continue;
        if (!strncmp(OUT_FILES[i], "coco", 4) && !(datasets & SYNTH_COCO)) continue;
        char pa[4096], pb[4096];
        snprintf(pa, sizeof pa, "%s/%s", a, OUT_FILES[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, OUT_FILES[i]);
        if (!same_file(pa, pb)) {
            differ++;
            printf("  differs: %s\n", OUT_FILES[i]);
        }
    }
    // and the same set of zips
    char pat[4096];
    glob_t ga, gb;
    snprintf(pat, sizeof pat, "%s/deeplesion/Images_png_*.zip", a);
    int na = glob(pat, 0, NULL, &ga) == 0 ? (int)ga.gl_pathc : 0;
    snprintf(pat, sizeof pat, "%s/deeplesion/Images_png_*.zip", b);
    int nb = glob(pat, 0, NULL, &gb) == 0 ? (int)gb.gl_pathc : 0;
    for (int i = 0; i < na && i < nb; i++) differ += !same_file(ga.gl_pathv[i], gb.gl_pathv[i]);
    differ += na != nb;
    if (na) globfree(&ga);
    if (nb) globfree(&gb);
    return differ;
}

// The work split of several ranks, played in one process (rank 1's share first, then rank 0's,
// then rank 0's finish), gives the same files as one process.
static void check_rank_split(const char *serial, const char *dir, uint64_t seed) {
    for (int size = 2; size <= 3; size++) {
        rm_rf(dir);
        synth_opts o = {.out = dir, .scale = SYNTH_TINY, .seed = seed, .datasets = SYNTH_ALL, .size = size};
        synth_stats st;
        int64_t slices = 0, train = 0;
        CHECK(synth_prepare(&o) == 0, "%s", pl_last_error());
        for (int r = size - 1; r >= 0; r--) {
            o.rank = r;
            CHECK(synth_generate_share(&st, &o) == 0, "%s", pl_last_error());
            slices += st.dl_slices;
            train += st.in_train;
        }
        o.rank = 0;
        CHECK(synth_finish(&st, &o) == 0, "%s", pl_last_error());
        int d = compare_outputs(serial, dir, SYNTH_ALL);
        printf("rank split: size:%d slices:%lld imagenet_train:%lld files_differing_from_1_rank:%d\n", size,
               (long long)slices, (long long)train, d);
        CHECK(d == 0, "%d files differ between 1 and %d ranks", d, size);
        CHECK(train == 24, "imagenet written %lld times 24 images", (long long)train);
    }
    rm_rf(dir);
}

static void check_determinism(const char *a, const char *b, const char *c) {
    int n = (int)(sizeof OUT_FILES / sizeof OUT_FILES[0]), same_ab = 0, same_ac = 0;
    for (int i = 0; i < n; i++) {
        char pa[4096], pb[4096], pc[4096];
        snprintf(pa, sizeof pa, "%s/%s", a, OUT_FILES[i]);
        snprintf(pb, sizeof pb, "%s/%s", b, OUT_FILES[i]);
        snprintf(pc, sizeof pc, "%s/%s", c, OUT_FILES[i]);
        int ab = same_file(pa, pb), ac = same_file(pa, pc);
        CHECK(ab, "%s differs between two runs with the same seed", OUT_FILES[i]);
        // the synset list is fixed; everything else depends on the seed
        if (strstr(OUT_FILES[i], "synset_mapping")) CHECK(ac, "synset mapping changed with the seed");
        else CHECK(!ac, "%s is identical for two seeds", OUT_FILES[i]);
        same_ab += ab;
        same_ac += ac;
    }
    printf("determinism: identical_same_seed:%d/%d identical_other_seed:%d/%d\n", same_ab, n, same_ac, n);
}

static int gen(const char *out, uint64_t seed, synth_stats *st) {
    synth_opts o = {.out = out, .scale = SYNTH_TINY, .seed = seed, .datasets = SYNTH_ALL};
    double t0 = pl_time();
    int rc = synth_generate(st, &o);
    printf("synth tiny seed:%llu seconds:%.2f dl:%.2f imagenet:%.2f coco:%.2f rc:%d\n", (unsigned long long)seed,
           pl_time() - t0, st->seconds_dl, st->seconds_in, st->seconds_coco, rc);
    return rc;
}

// A re-run into a used folder leaves no stale zip of the earlier cohort behind.
static void check_rerun(const char *dir) {
    char stale[1024], p[1100];
    snprintf(stale, sizeof stale, "%s/deeplesion/Images_png_42.zip", dir);
    CHECK(pl_write_file_atomic(stale, "x", 1) == 0, "%s", pl_last_error());
    synth_opts o = {.out = dir, .scale = SYNTH_TINY, .seed = 9, .datasets = SYNTH_DEEPLESION};
    synth_stats st;
    CHECK(synth_generate(&st, &o) == 0, "%s", pl_last_error());
    CHECK(!pl_path_exists(stale), "stale %s survived a re-run", stale);
    snprintf(p, sizeof p, "%s/deeplesion/Images_png_%02lld.zip", dir, (long long)st.dl_zips);
    CHECK(st.dl_zips >= 2 && pl_path_exists(p), "%s missing after the re-run", p);
}

// ---- options and the stage entry ----------------------------------------------------------
static void check_options(void) {
    pl_quiet_begin();
    enum synth_scale sc;
    int ds;
    CHECK(synth_parse_scale(&sc, "small") == 0 && sc == SYNTH_SMALL, "small");
    CHECK(synth_parse_scale(&sc, "huge") == PL_EINVAL && strstr(pl_last_error(), "huge"), "%s", pl_last_error());
    CHECK(synth_parse_datasets(&ds, "coco, deeplesion") == 0 && ds == (SYNTH_COCO | SYNTH_DEEPLESION), "ds %d", ds);
    CHECK(synth_parse_datasets(&ds, "imagenet") == 0 && ds == SYNTH_IMAGENET, "ds %d", ds);
    CHECK(synth_parse_datasets(&ds, "coco,mnist") == PL_EINVAL && strstr(pl_last_error(), "mnist"), "%s",
          pl_last_error());
    CHECK(synth_parse_datasets(&ds, "") == PL_EINVAL, "empty list accepted");
    pl_quiet_end();
}

static int run_stage(const char *out, const char *scale, const char *datasets) {
    char s1[4200], s2[64], s3[128];
    snprintf(s1, sizeof s1, "output.dir=%s", out);
    snprintf(s2, sizeof s2, "synth.scale=%s", scale);
    snprintf(s3, sizeof s3, "synth.datasets=%s", datasets);
    const char *sets[4] = {s1, s2, s3, "run.seed=5"};
    pl_cfg *cfg = NULL;
    if (cfg_load(&cfg, NULL, sets, 4)) return -100;   // a bad value is refused by the schema
    int code = stage_synth_run(cfg, MPI_COMM_WORLD);
    cfg_destroy(cfg);
    return code;
}

// Exit codes of the stage are the same on every rank: 0 done, 2 bad option, 1 unwritable.
static void check_stage(int rank) {
    char out[256], blocker[256];
    int size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    snprintf(out, sizeof out, "synth_stage_out_np%d", size);   // tests at several rank counts may run at once
    snprintf(blocker, sizeof blocker, "synth_stage_blocker_np%d", size);
    if (rank == 0) {
        rm_rf(out);
        FILE *f = fopen(blocker, "w");
        if (f) fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    int code = run_stage(out, "tiny", "deeplesion,coco");
    int codes[3] = {code, 0, 0};
    if (rank == 0) pl_quiet_begin();
    codes[1] = run_stage(out, "tiny", "coco,mnist");
    char bad[300];
    snprintf(bad, sizeof bad, "%s/sub", blocker);   // a folder under a regular file
    codes[2] = run_stage(bad, "tiny", "coco");
    if (rank == 0) pl_quiet_end();
    int mx[3], mn[3];
    MPI_Allreduce(codes, mx, 3, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(codes, mn, 3, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    CHECK(mx[0] == 0 && mn[0] == 0, "stage exit codes %d..%d, want 0", mn[0], mx[0]);
    CHECK(mx[1] == MP3D_EXIT_USAGE && mn[1] == MP3D_EXIT_USAGE, "bad dataset: codes %d..%d, want 2", mn[1], mx[1]);
    CHECK(mx[2] == MP3D_EXIT_FAIL && mn[2] == MP3D_EXIT_FAIL, "unwritable: codes %d..%d, want 1", mn[2], mx[2]);
    if (rank == 0) {
        char p[512];
        snprintf(p, sizeof p, "%s/coco/annotations_trainval2017.zip", out);
        CHECK(pl_path_exists(p), "%s missing after the stage", p);
        snprintf(p, sizeof p, "%s/imagenet", out);
        CHECK(!pl_path_exists(p), "datasets=deeplesion,coco wrote %s", p);
        // the same files as one process writes
        char ref[256];
        snprintf(ref, sizeof ref, "synth_stage_ref_np%d", size);
        rm_rf(ref);
        synth_opts o = {.out = ref, .scale = SYNTH_TINY, .seed = 5, .datasets = SYNTH_DEEPLESION | SYNTH_COCO};
        synth_stats st;
        CHECK(synth_generate(&st, &o) == 0, "%s", pl_last_error());
        int d = compare_outputs(out, ref, o.datasets);
        printf("stage: ranks:%d files_differing_from_1_process:%d\n", size, d);
        CHECK(d == 0, "%d files differ between the %d-rank stage and one process", d, size);
        rm_rf(ref);
        rm_rf(out);
        remove(blocker);
    }
}

// synth.imagenet_side_min/max: every ImageNet image has both sides in [333, 500] (real ImageNet
// sizes, for the vdt throughput benchmark); a half-set or inverted range is a usage error.
static void check_sides(int rank) {
    if (rank == 0) {
        const char *dir = "synth_test_sides";
        rm_rf(dir);
        synth_opts o = {.out = dir, .scale = SYNTH_TINY, .seed = 3, .datasets = SYNTH_IMAGENET, .in_side_lo = 333, .in_side_hi = 500};
        synth_stats st;
        CHECK(synth_generate(&st, &o) == 0, "%s", pl_last_error());
        char path[300];
        snprintf(path, sizeof path, "%s/imagenet/ILSVRC2012_img_val.tar", dir);
        arc_reader *r = NULL;
        int n = 0, out_of_range = 0, lo = 1 << 30, hi = 0;
        CHECK(arc_open_file(&r, path) == 0, "%s", pl_last_error());
        const char *nm;
        int64_t sz;
        while (r && arc_next(r, &nm, &sz) == 1) {
            uint8_t *b = NULL, *px = NULL;
            size_t len = 0;
            int w = 0, h = 0;
            if (arc_read_entry(r, &b, &len) == 0 && img_decode_rgb8(&px, &w, &h, b, len, nm) == 0) {
                n++;
                out_of_range += w < 333 || w > 500 || h < 333 || h > 500;
                lo = PL_MIN(lo, PL_MIN(w, h));
                hi = PL_MAX(hi, PL_MAX(w, h));
            }
            free(b);
            free(px);
        }
        arc_close(r);
        printf("imagenet sides 333..500: val images:%d sides %d..%d\n", n, lo, hi);
        CHECK(n == 8 && out_of_range == 0, "%d val images, %d with a side outside 333..500", n, out_of_range);
        if (!g_fail) rm_rf(dir);
    }
    const char *bad[2][4] = {{"output.dir=synth_test_sides_bad", "synth.datasets=imagenet", "synth.imagenet_side_min=400", "synth.imagenet_side_max=0"},
                             {"output.dir=synth_test_sides_bad", "synth.datasets=imagenet", "synth.imagenet_side_min=500", "synth.imagenet_side_max=400"}};
    for (int k = 0; k < 2; k++) {
        pl_cfg *cfg = NULL;
        CHECK(cfg_load(&cfg, NULL, bad[k], 4) == 0, "cfg %d", k);
        pl_quiet_begin();
        int code = cfg ? stage_synth_run(cfg, MPI_COMM_WORLD) : -1;
        pl_quiet_end();
        CHECK(code == MP3D_EXIT_USAGE, "imagenet sides %s / %s: exit %d, want 2", bad[k][2], bad[k][3], code);
        cfg_destroy(cfg);
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    if (argc > 1 && !strcmp(argv[1], "stage")) {
        check_stage(rank);
    } else {
        check_options();
        char a[64], b[64], c[64];
        snprintf(a, sizeof a, "synth_test_a");
        snprintf(b, sizeof b, "synth_test_b");
        snprintf(c, sizeof c, "synth_test_c");
        rm_rf(a);
        rm_rf(b);
        rm_rf(c);
        // `test_synth seed N` sweeps the format checks over another seed (manual robustness runs)
        uint64_t seed = argc > 2 && !strcmp(argv[1], "seed") ? strtoull(argv[2], NULL, 10) : 7;
        synth_stats st;
        CHECK(gen(a, seed, &st) == 0, "%s", pl_last_error());
        CHECK(st.dl_key_slices >= 10 && st.dl_key_slices <= 16, "key slices %lld", (long long)st.dl_key_slices);
        check_deeplesion(a);
        check_imagenet(a);
        check_coco(a);
        CHECK(gen(b, seed, &st) == 0, "%s", pl_last_error());
        CHECK(gen(c, seed + 1, &st) == 0, "%s", pl_last_error());
        check_determinism(a, b, c);
        check_rank_split(a, "synth_test_d", seed);
        check_rerun(c);
        check_stage(rank);
        check_sides(rank);
        if (!g_fail) {
            rm_rf(a);
            rm_rf(b);
            rm_rf(c);
        }
    }
    int fails = 0;
    MPI_Allreduce(&g_fail, &fails, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%s: %d checks, %d failed\n", fails ? "FAIL" : "PASS", g_checks, fails);
    MPI_Finalize();
    return fails ? 1 : 0;
}
