// test_shard_pp: `mp3d preprocess` on a tiny synth cohort, run through stage_preprocess_run.
// Checks against the source PNGs and DL_info.csv: sample counts per split, the key-slice plane
// equals the clipped HU of its PNG, every interpolated slice equals the hand-computed blend,
// boxes mapped back through the stored affine equal DL_info's boxes (also with xy resampling),
// the output is byte-identical when written by 1, 2 and all ranks, a re-run skips a complete
// output, and every fault kind (corrupt PNG, 8-bit PNG, missing key slice, missing neighbour,
// truncated zip, malformed CSV row) lands in quarantine.csv with the right effect.
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/archive.h"
#include "io/config.h"
#include "io/dlinfo.h"
#include "io/fileio.h"
#include "io/h5shard.h"
#include "io/image.h"
#include "nn/pl.h"
#include "stages/stages.h"
#include "stages/synth/synth.h"
#include "test_util.h"


static const char *SPLITS[4] = {"", "train", "val", "test"};

// ---- the source PNGs, all in memory
typedef struct { char *name; uint8_t *buf; size_t len; } entry;
typedef struct { entry *e; int n, cap; } entries;

static void load_zips(entries *es, const char *dir) {
    for (int z = 1; z < 100; z++) {
        char p[600];
        snprintf(p, sizeof p, "%s/Images_png_%02d.zip", dir, z);
        if (access(p, R_OK) != 0) break;
        arc_reader *r = NULL;
        if (arc_open_file(&r, p)) continue;
        const char *name;
        int64_t sz;
        while (arc_next(r, &name, &sz) == 1) {
            if (es->n == es->cap) {
                es->cap = es->cap ? 2 * es->cap : 256;
                es->e = realloc(es->e, sizeof(entry) * (size_t)es->cap);
            }
            entry *e = &es->e[es->n];
            e->name = strdup(name);
            if (arc_read_entry(r, &e->buf, &e->len) == 0) es->n++;
            else free(e->name);
        }
        arc_close(r);
    }
}

static const entry *find_entry(const entries *es, const char *name) {
    for (int i = 0; i < es->n; i++)
        if (!strcmp(es->e[i].name, name)) return &es->e[i];
    return NULL;
}

static void free_entries(entries *es) {
    for (int i = 0; i < es->n; i++) { free(es->e[i].name); free(es->e[i].buf); }
    free(es->e);
    es->e = NULL;
    es->n = es->cap = 0;
}

// HU plane of a slice, or NULL if absent
static double *slice_hu(const entries *es, const dl_lesion *l, int slice, int *w, int *h) {
    char nm[128];
    dlinfo_slice_entry(l, slice, nm, sizeof nm);
    const entry *e = find_entry(es, nm);
    if (!e) return NULL;
    uint16_t *px = NULL;
    if (img_decode_gray16(&px, w, h, e->buf, e->len, nm)) return NULL;
    double *hu = malloc(sizeof(double) * (size_t)(*w) * (size_t)(*h));
    for (int i = 0; i < (*w) * (*h); i++) hu[i] = (double)px[i] - 32768.0;
    free(px);
    return hu;
}

static int run_stage(MPI_Comm comm, const char *root, const char *out, const char *extra1, const char *extra2) {
    char s1[700], s2[700];
    snprintf(s1, sizeof s1, "input.root=%s", root);
    snprintf(s2, sizeof s2, "output.dir=%s", out);
    const char *sets[4] = {s1, s2, extra1, extra2};
    int nsets = 2 + (extra1 != NULL) + (extra2 != NULL);
    pl_cfg *cfg = NULL;
    if (cfg_load(&cfg, NULL, sets, nsets)) return -100;
    int rc = stage_preprocess_run(cfg, comm);
    cfg_destroy(cfg);
    return rc;
}

// Distinct File_names of a split in the table.
static int64_t count_keys(const dl_table *t, int split) {
    int64_t n = 0;
    for (int64_t i = 0; i < t->n; i++) {
        if (t->rows[i].split != split) continue;
        int dup = 0;
        for (int64_t j = 0; j < i; j++)
            if (t->rows[j].split == split && !strcmp(t->rows[j].file_name, t->rows[i].file_name)) dup = 1;
        n += !dup;
    }
    return n;
}

static const dl_lesion *row_of_line(const dl_table *t, int line) {
    for (int64_t i = 0; i < t->n; i++)
        if (t->rows[i].line == line) return &t->rows[i];
    return NULL;
}

// Content checks of OUT/<split>.h5 against the sources (no resampling configured).
static void check_plain(const char *out, const dl_table *t, const entries *es) {
    int64_t planes = 0, blends = 0, boxes = 0;
    double max_box_err = 0;
    for (int s = 1; s <= 3; s++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s.h5", out, SPLITS[s]);
        h5shard_reader *r = NULL;
        if (h5shard_open(&r, p)) { CHECK(0, "open %s", p); continue; }
        int64_t dims[4] = {0};
        CHECK(h5shard_shape(r, "images", dims, 4) == 4, "%s: images not 4-D", p);
        int64_t n = dims[0], D = dims[1], H = dims[2], W = dims[3];
        CHECK(n == count_keys(t, s), "%s: %lld samples, DL_info has %lld distinct key slices", p, (long long)n, (long long)count_keys(t, s));
        CHECK(D == 9, "%s: D = %lld", p, (long long)D);
        int16_t *img = malloc(sizeof(int16_t) * (size_t)(D * H * W));
        int32_t *ids = malloc(sizeof(int32_t) * 4 * (size_t)n + 4), *src = malloc(sizeof(int32_t) * 18 * (size_t)n + 4);
        int32_t *rep = malloc(sizeof(int32_t) * 9 * (size_t)n + 4);
        double *aff = malloc(sizeof(double) * 4 * (size_t)n + 4);
        int64_t *off = malloc(sizeof(int64_t) * (size_t)(n + 1));
        h5shard_read(r, "ids", SHARD_I32, ids, 0, n);
        h5shard_read(r, "src_slices", SHARD_I32, src, 0, n);
        h5shard_read(r, "replaced", SHARD_I32, rep, 0, n);
        h5shard_read(r, "affine", SHARD_F64, aff, 0, n);
        h5shard_read(r, "lesion_offsets", SHARD_I64, off, 0, n + 1);
        int64_t m = off[n];
        double *bx = malloc(sizeof(double) * 4 * (size_t)m + 4);
        int32_t *line = malloc(sizeof(int32_t) * (size_t)m + 4);
        h5shard_read(r, "boxes", SHARD_F64, bx, 0, m);
        h5shard_read(r, "csv_line", SHARD_I32, line, 0, m);
        int prev_key[4] = {-1, -1, -1, -1};
        for (int64_t i = 0; i < n; i++) {
            // sorted order
            int later = 0;
            for (int k = 0; k < 4; k++) {
                if (ids[4 * i + k] != prev_key[k]) { later = ids[4 * i + k] > prev_key[k]; break; }
            }
            CHECK(later, "%s: sample %lld not after the previous one in key order", p, (long long)i);
            memcpy(prev_key, &ids[4 * i], sizeof prev_key);
            const dl_lesion *l0 = row_of_line(t, line[off[i]]);
            if (!l0) { CHECK(0, "%s: sample %lld: csv line %d unknown", p, (long long)i, line[off[i]]); continue; }
            h5shard_read(r, "images", SHARD_I16, img, i, 1);
            int key = l0->key_slice, w = 0, h = 0;
            double *kp = slice_hu(es, l0, key, &w, &h);
            CHECK(kp && w == W && h == H, "%s: key slice of %s", p, l0->file_name);
            if (!kp) continue;
            int64_t bad = 0;
            for (int64_t q = 0; q < H * W; q++) bad += img[4 * H * W + q] != (int16_t)PL_CLAMP(kp[q], -1024.0, 1050.0);
            CHECK(bad == 0, "%s: %s key plane: %lld pixels differ from the clipped PNG", p, l0->file_name, (long long)bad);
            planes++;
            // every stored slice against the hand-computed blend of the two source slices
            for (int j = 0; j < 9; j++) {
                double pos = key + (j - 4) * 2.5 / l0->spacing[2];
                int lo = (int)floor(pos + 1e-9);
                double f = pos - lo;
                if (f < 1e-9) f = 0;
                if (rep[9 * i + j]) continue;   // replaced neighbours: checked in the fault run
                CHECK(src[18 * i + 2 * j] == lo && src[18 * i + 2 * j + 1] == (f > 0 ? lo + 1 : lo), "%s: %s slice %d sources %d,%d want %d,%d", p,
                      l0->file_name, j, src[18 * i + 2 * j], src[18 * i + 2 * j + 1], lo, f > 0 ? lo + 1 : lo);
                double *a = slice_hu(es, l0, lo, &w, &h), *b = f > 0 ? slice_hu(es, l0, lo + 1, &w, &h) : NULL;
                if (!a || (f > 0 && !b)) { CHECK(0, "%s: %s slice %d: a source is missing but not marked replaced", p, l0->file_name, j); free(a); free(b); continue; }
                int64_t wrong = 0;
                for (int64_t q = 0; q < H * W; q++) {
                    double v = (1 - f) * a[q] + (f > 0 ? f * b[q] : 0);
                    v = PL_CLAMP(v, -1024.0, 1050.0);
                    double want = nearbyint(v), got = img[j * H * W + q];
                    int tie = fabs(v - floor(v) - 0.5) < 1e-3;
                    if (got != want && !(tie && fabs(got - v) <= 0.5 + 1e-3)) wrong++;
                }
                CHECK(wrong == 0, "%s: %s slice %d (f = %.3f): %lld pixels differ from the blend", p, l0->file_name, j, f, (long long)wrong);
                blends += f > 0;
                free(a);
                free(b);
            }
            free(kp);
            // boxes back through the affine
            for (int64_t k = off[i]; k < off[i + 1]; k++) {
                const dl_lesion *l = row_of_line(t, line[k]);
                if (!l) { CHECK(0, "csv line %d", line[k]); continue; }
                for (int c = 0; c < 4; c++) {
                    double back = c % 2 == 0 ? aff[4 * i] * bx[4 * k + c] + aff[4 * i + 1] : aff[4 * i + 2] * bx[4 * k + c] + aff[4 * i + 3];
                    max_box_err = PL_MAX(max_box_err, fabs(back - l->bbox[c]));
                }
                boxes++;
            }
        }
        CHECK(max_box_err <= 0.5, "%s: boxes mapped back differ by %.4f px", p, max_box_err);
        free(img); free(ids); free(src); free(rep); free(aff); free(off); free(bx); free(line);
        h5shard_close(r);
    }
    printf("plain: key_planes:%lld blended_slices:%lld boxes:%lld max_box_err_px:%.2e\n", (long long)planes, (long long)blends,
           (long long)boxes, max_box_err);
    CHECK(planes >= 10 && blends >= 10 && boxes >= 10, "too little checked");
}

// With resampling: boxes that stayed inside the image map back within 0.5 px.
static void check_resampled(const char *out, const dl_table *t, int size) {
    double max_err = 0;
    int64_t nb = 0;
    for (int s = 1; s <= 3; s++) {
        char p[700];
        snprintf(p, sizeof p, "%s/%s.h5", out, SPLITS[s]);
        h5shard_reader *r = NULL;
        if (h5shard_open(&r, p)) { CHECK(0, "open %s", p); continue; }
        int64_t dims[4] = {0};
        h5shard_shape(r, "images", dims, 4);
        CHECK(dims[2] == size && dims[3] == size, "%s: %lldx%lld, want %d", p, (long long)dims[2], (long long)dims[3], size);
        int64_t n = dims[0];
        double *aff = malloc(sizeof(double) * 4 * (size_t)n + 4);
        int64_t *off = malloc(sizeof(int64_t) * (size_t)(n + 1));
        h5shard_read(r, "affine", SHARD_F64, aff, 0, n);
        h5shard_read(r, "lesion_offsets", SHARD_I64, off, 0, n + 1);
        double *bx = malloc(sizeof(double) * 4 * (size_t)off[n] + 4);
        int32_t *line = malloc(sizeof(int32_t) * (size_t)off[n] + 4);
        h5shard_read(r, "boxes", SHARD_F64, bx, 0, off[n]);
        h5shard_read(r, "csv_line", SHARD_I32, line, 0, off[n]);
        for (int64_t i = 0; i < n; i++) {
            CHECK(fabs(aff[4 * i] - 1.0) > 1e-4, "%s: sample %lld not rescaled (affine scale %g)", p, (long long)i, aff[4 * i]);
            for (int64_t k = off[i]; k < off[i + 1]; k++) {
                const dl_lesion *l = row_of_line(t, line[k]);
                int inside = 1;
                for (int c = 0; c < 4; c++) inside &= bx[4 * k + c] > 0 && bx[4 * k + c] < size - 1;
                if (!l || !inside) continue;
                for (int c = 0; c < 4; c++) {
                    double back = c % 2 == 0 ? aff[4 * i] * bx[4 * k + c] + aff[4 * i + 1] : aff[4 * i + 2] * bx[4 * k + c] + aff[4 * i + 3];
                    max_err = PL_MAX(max_err, fabs(back - l->bbox[c]));
                }
                nb++;
            }
        }
        free(aff); free(off); free(bx); free(line);
        h5shard_close(r);
    }
    printf("resampled: boxes:%lld max_box_err_px:%.2e\n", (long long)nb, max_err);
    CHECK(nb >= 5 && max_err <= 0.5, "resampled boxes: %lld checked, max error %.4f px", (long long)nb, max_err);
}

static void check_same(const char *a, const char *b) {
    for (int s = 1; s <= 3; s++) {
        char pa[700], pb[700];
        snprintf(pa, sizeof pa, "%s/%s.h5", a, SPLITS[s]);
        snprintf(pb, sizeof pb, "%s/%s.h5", b, SPLITS[s]);
        h5shard_reader *ra = NULL, *rb = NULL;
        if (h5shard_open(&ra, pa) || h5shard_open(&rb, pb)) { CHECK(0, "open %s / %s", pa, pb); h5shard_close(ra); h5shard_close(rb); continue; }
        char *na = NULL, *nb = NULL;
        int ca = 0, cb = 0;
        h5shard_list(ra, &na, &ca);
        h5shard_list(rb, &nb, &cb);
        CHECK(ca == cb && ca >= 20, "%s: %d datasets vs %d", pa, ca, cb);
        const char *p = na;
        for (int i = 0; i < ca && i < cb; i++, p += strlen(p) + 1) {
            void *x = NULL, *y = NULL;
            size_t lx = 0, ly = 0;
            h5shard_read_raw(ra, p, &x, &lx);
            h5shard_read_raw(rb, p, &y, &ly);
            CHECK(lx == ly && memcmp(x, y, lx) == 0, "dataset %s differs: %s vs %s", p, pa, pb);
            free(x);
            free(y);
        }
        char *qa = NULL, *qb = NULL;
        h5shard_get_attr_str(ra, "config_hash", &qa);
        h5shard_get_attr_str(rb, "config_hash", &qb);
        CHECK(qa && qb && !strcmp(qa, qb), "config_hash differs");
        free(qa); free(qb); free(na); free(nb);
        h5shard_close(ra);
        h5shard_close(rb);
    }
}

static char *read_text(const char *path) {
    uint8_t *b = NULL;
    size_t n = 0;
    if (pl_read_file(path, &b, &n)) return NULL;
    char *s = realloc(b, n + 1);
    s[n] = 0;
    return s;
}

// ---- fault injection (rank 0): rewrites the cohort in `dir` in place.
typedef struct { char corrupt[64], eight[64], nokey[64], noneigh[64], nb_entry[128], badline_name[64], trunc_zip[600]; int badline; } faults;

static int in_zip3(const entries *es3, const char *series_dir) {
    for (int i = 0; i < es3->n; i++)
        if (strstr(es3->e[i].name, series_dir)) return 1;
    return 0;
}

static void inject_faults(const char *dir, faults *f) {
    char p[700];
    snprintf(p, sizeof p, "%s/DL_info.csv", dir);
    dl_table t = {0};
    dlinfo_read(&t, p);
    // the last zip will be truncated; pick the other faults in series outside it
    entries z3 = {0};
    int nz = 0;
    for (int z = 1; z < 100; z++) {
        snprintf(p, sizeof p, "%s/Images_png_%02d.zip", dir, z);
        if (access(p, R_OK) != 0) break;
        nz = z;
    }
    snprintf(f->trunc_zip, sizeof f->trunc_zip, "%s/Images_png_%02d.zip", dir, nz);
    arc_reader *r = NULL;
    arc_open_file(&r, f->trunc_zip);
    const char *name;
    int64_t sz;
    while (arc_next(r, &name, &sz) == 1) {
        if (z3.n == z3.cap) { z3.cap = z3.cap ? 2 * z3.cap : 64; z3.e = realloc(z3.e, sizeof(entry) * (size_t)z3.cap); }
        z3.e[z3.n++] = (entry){.name = strdup(name)};
    }
    arc_close(r);
    char used[4][32] = {{0}};
    int nused = 0;
    char *targets[4] = {f->corrupt, f->eight, f->nokey, f->noneigh};
    int neigh_slice = -1;
    const dl_lesion *nl = NULL;
    for (int64_t i = 0; i < t.n && nused < 4; i++) {
        char sd[32];
        dlinfo_series_dir(&t.rows[i], sd, sizeof sd);
        int taken = in_zip3(&z3, sd);
        for (int k = 0; k < nused; k++) taken |= !strcmp(used[k], sd);
        if (taken) continue;
        snprintf(used[nused], sizeof used[nused], "%s", sd);
        snprintf(targets[nused], 64, "%s", t.rows[i].file_name);
        if (nused == 3) {
            nl = &t.rows[i];
            neigh_slice = t.rows[i].key_slice + 1;
            for (int64_t j = 0; j < t.n; j++)   // do not drop another sample's key slice
                if ((t.rows[j].patient == nl->patient && t.rows[j].study == nl->study &&
                                                         t.rows[j].series == nl->series && t.rows[j].key_slice == neigh_slice))
                    neigh_slice = nl->key_slice - 1;
            dlinfo_slice_entry(nl, neigh_slice, f->nb_entry, sizeof f->nb_entry);
        }
        nused++;
    }
    CHECK(nused == 4, "could not place 4 faults in distinct series (%d)", nused);
    // rewrite zips 1..nz-1
    for (int z = 1; z < nz; z++) {
        char zp[700];
        snprintf(zp, sizeof zp, "%s/Images_png_%02d.zip", dir, z);
        entries es = {0};
        arc_open_file(&r, zp);
        while (arc_next(r, &name, &sz) == 1) {
            if (es.n == es.cap) { es.cap = es.cap ? 2 * es.cap : 64; es.e = realloc(es.e, sizeof(entry) * (size_t)es.cap); }
            entry *e = &es.e[es.n];
            e->name = strdup(name);
            arc_read_entry(r, &e->buf, &e->len);
            es.n++;
        }
        arc_close(r);
        arc_writer *w = NULL;
        arc_writer_open(&w, zp, ARC_ZIP);
        for (int i = 0; i < es.n; i++) {
            entry *e = &es.e[i];
            const char *base = strrchr(e->name, '/') + 1;
            char sd[32];
            snprintf(sd, sizeof sd, "%.*s", (int)(base - 1 - (strchr(e->name, '/') + 1)), strchr(e->name, '/') + 1);
            char fn[64];
            snprintf(fn, sizeof fn, "%s_%s", sd, base);
            if (!strcmp(fn, f->nokey) || !strcmp(e->name, f->nb_entry)) continue;   // dropped entries
            if (!strcmp(fn, f->corrupt)) {
                for (size_t k = e->len / 3; k < e->len / 3 + 64 && k < e->len; k++) e->buf[k] ^= 0x5a;
            }
            if (!strcmp(fn, f->eight)) {
                int W = 0, H = 0;
                uint16_t *px = NULL;
                img_decode_gray16(&px, &W, &H, e->buf, e->len, fn);
                uint8_t *p8 = malloc((size_t)W * (size_t)H);
                for (int k = 0; k < W * H; k++) p8[k] = (uint8_t)(px[k] >> 8);
                free(e->buf);
                img_encode_png_gray8(&e->buf, &e->len, p8, W, H);
                free(px);
                free(p8);
            }
            arc_writer_add(w, e->name, e->buf, e->len);
        }
        arc_writer_close(w);
        free_entries(&es);
    }
    // truncate the last zip
    struct stat st;
    stat(f->trunc_zip, &st);
    CHECK(truncate(f->trunc_zip, st.st_size * 55 / 100) == 0, "truncate");
    // malformed CSV row: the Bounding_boxes field of the last row gets a non-number
    snprintf(p, sizeof p, "%s/DL_info.csv", dir);
    char *csv = read_text(p);
    char *last = csv + strlen(csv) - 2;
    while (last > csv && *last != '\n') last--;
    last++;
    int nlines = 0;
    for (char *c = csv; c < last; c++) nlines += *c == '\n';
    f->badline = nlines + 1;
    snprintf(f->badline_name, sizeof f->badline_name, "%.*s", (int)(strchr(last, ',') - last), last);
    char *q1 = strchr(last, '"');           // Measurement_coordinates opens
    char *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
    char *q3 = q2 ? strchr(q2 + 1, '"') : NULL;  // Bounding_boxes opens
    if (q3) q3[1] = 'x';
    FILE *fp = fopen(p, "w");
    fputs(csv, fp);
    fclose(fp);
    free(csv);
    free_entries(&z3);
    dlinfo_free(&t);
}

static void check_faults(const char *out, const faults *f, const char *root) {
    char p[700];
    snprintf(p, sizeof p, "%s/quarantine.csv", out);
    char *q = read_text(p);
    CHECK(q != NULL, "no %s", p);
    if (!q) return;
    char pat[800];
    snprintf(pat, sizeof pat, "preprocess,%s,", f->corrupt);
    CHECK(strstr(q, pat), "corrupt PNG key slice %s not quarantined", f->corrupt);
    snprintf(pat, sizeof pat, "preprocess,%s,", f->eight);
    CHECK(strstr(q, pat), "8-bit PNG key slice %s not quarantined", f->eight);
    snprintf(pat, sizeof pat, "preprocess,%s,", f->nokey);
    CHECK(strstr(q, pat) && strstr(strstr(q, pat), "missing key slice"), "missing key slice %s not quarantined", f->nokey);
    snprintf(pat, sizeof pat, "preprocess,%s,%s,", f->noneigh, f->nb_entry);
    const char *hit = strstr(q, pat);
    CHECK(hit && !strncmp(hit + strlen(pat), "\"missing neighbour", 18), "missing neighbour %s of %s not quarantined", f->nb_entry, f->noneigh);
    snprintf(pat, sizeof pat, "preprocess,DL_info.csv,line %d,", f->badline);
    CHECK(strstr(q, pat), "malformed CSV line %d not quarantined", f->badline);
    snprintf(pat, sizeof pat, "preprocess,%s,", f->trunc_zip);
    CHECK(strstr(q, pat), "truncated zip %s not quarantined", f->trunc_zip);
    // the skipped samples are absent, the patched one is present with a replaced slice
    int64_t stored = 0;
    int found_neigh = 0, found_bad = 0;
    for (int s = 1; s <= 3; s++) {
        snprintf(p, sizeof p, "%s/%s.h5", out, SPLITS[s]);
        h5shard_reader *r = NULL;
        if (h5shard_open(&r, p)) { CHECK(0, "open %s", p); continue; }
        int64_t dims[2];
        h5shard_shape(r, "file_name", dims, 2);
        int64_t n = dims[0];
        stored += n;
        char *names = malloc((size_t)n * 64 + 1);
        int32_t *nrep = malloc(sizeof(int32_t) * (size_t)n + 4);
        h5shard_read(r, "file_name", SHARD_STR, names, 0, n);
        h5shard_read(r, "num_replaced", SHARD_I32, nrep, 0, n);
        for (int64_t i = 0; i < n; i++) {
            const char *nm = names + 64 * i;
            if (!strncmp(nm, f->corrupt, 64) || !strncmp(nm, f->eight, 64) || !strncmp(nm, f->nokey, 64)) found_bad++;
            if (!strncmp(nm, f->noneigh, 64)) found_neigh = nrep[i] > 0 ? 1 : -1;
        }
        free(names);
        free(nrep);
        h5shard_close(r);
    }
    CHECK(found_bad == 0, "%d quarantined samples are still in the shards", found_bad);
    CHECK(found_neigh == 1, "sample with a missing neighbour: %s", found_neigh == 0 ? "absent" : "no replaced slice recorded");
    // every distinct key slice is either stored or quarantined as skipped
    char csvp[700];
    snprintf(csvp, sizeof csvp, "%s/DL_info.csv", root);
    dl_table t = {0};
    pl_quiet_begin();
    dlinfo_read(&t, csvp);
    pl_quiet_end();
    int64_t distinct = count_keys(&t, 1) + count_keys(&t, 2) + count_keys(&t, 3), skipped = 0;
    for (int64_t i = 0; i < t.n; i++) {
        int first = 1;
        for (int64_t j = 0; j < i; j++) first &= strcmp(t.rows[j].file_name, t.rows[i].file_name) != 0;
        if (!first) continue;
        char ke[128];
        dlinfo_slice_entry(&t.rows[i], t.rows[i].key_slice, ke, sizeof ke);
        snprintf(pat, sizeof pat, "\npreprocess,%s,%s,", t.rows[i].file_name, ke);
        skipped += strstr(q, pat) != NULL;
    }
    CHECK(stored + skipped == distinct, "stored %lld + skipped %lld != %lld distinct key slices", (long long)stored, (long long)skipped,
          (long long)distinct);
    CHECK(skipped >= 3, "only %lld samples skipped", (long long)skipped);
    printf("faults: stored:%lld skipped:%lld distinct:%lld\n", (long long)stored, (long long)skipped, (long long)distinct);
    dlinfo_free(&t);
    free(q);
}

static double mtime_of(const char *p) {
    struct stat st;
    if (stat(p, &st)) return -1;
    return (double)st.st_mtim.tv_sec + 1e-9 * (double)st.st_mtim.tv_nsec;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    pl_log_set_level(PL_WARN);
    char dir[256], data[300], faulty[300];
    snprintf(dir, sizeof dir, "shard_pp_np%d", size);
    snprintf(data, sizeof data, "%s/synth/deeplesion", dir);
    snprintf(faulty, sizeof faulty, "%s/faulty/deeplesion", dir);
    faults f = {0};
    if (rank == 0) {
        char cmd[700];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        CHECK(system(cmd) == 0, "rm");
        synth_stats st = {0};
        char o1[300], o2[300];
        snprintf(o1, sizeof o1, "%s/synth", dir);
        snprintf(o2, sizeof o2, "%s/faulty", dir);
        synth_opts so = {.out = o1, .scale = SYNTH_TINY, .seed = 3, .datasets = SYNTH_DEEPLESION};
        CHECK(synth_generate(&st, &so) == 0, "synth");
        so.out = o2;
        CHECK(synth_generate(&st, &so) == 0, "synth 2");
        inject_faults(faulty, &f);
    }
    MPI_Barrier(MPI_COMM_WORLD);

    // clean data, all ranks; and the same with 1 rank and 2 ranks
    char o_all[300], o_one[300], o_two[300], o_rs[300], o_bad[300], o_bad2[300];
    snprintf(o_all, sizeof o_all, "%s/out_all", dir);
    snprintf(o_one, sizeof o_one, "%s/out_one", dir);
    snprintf(o_two, sizeof o_two, "%s/out_two", dir);
    snprintf(o_rs, sizeof o_rs, "%s/out_resampled", dir);
    snprintf(o_bad, sizeof o_bad, "%s/out_faulty", dir);
    snprintf(o_bad2, sizeof o_bad2, "%s/out_faulty_strict", dir);
    int rc = run_stage(MPI_COMM_WORLD, data, o_all, NULL, NULL);
    CHECK(rc == 0, "preprocess on clean data: exit %d", rc);
    MPI_Comm c1, c2;
    MPI_Comm_split(MPI_COMM_WORLD, rank == 0 ? 0 : MPI_UNDEFINED, rank, &c1);
    MPI_Comm_split(MPI_COMM_WORLD, rank < 2 ? 0 : MPI_UNDEFINED, rank, &c2);
    if (c1 != MPI_COMM_NULL) CHECK(run_stage(c1, data, o_one, NULL, NULL) == 0, "1-rank run");
    if (size >= 2 && c2 != MPI_COMM_NULL) CHECK(run_stage(c2, data, o_two, NULL, NULL) == 0, "2-rank run");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        char csv[400];
        snprintf(csv, sizeof csv, "%s/DL_info.csv", data);
        dl_table t = {0};
        dlinfo_read(&t, csv);
        entries es = {0};
        load_zips(&es, data);
        check_plain(o_all, &t, &es);
        check_same(o_one, o_all);
        if (size >= 2) check_same(o_two, o_all);
        free_entries(&es);
        dlinfo_free(&t);
    }
    // a re-run skips the complete output; --force rewrites it
    char tp[400];
    snprintf(tp, sizeof tp, "%s/train.h5", o_all);
    double m0 = mtime_of(tp);
    CHECK(run_stage(MPI_COMM_WORLD, data, o_all, NULL, NULL) == 0, "re-run");
    CHECK(mtime_of(tp) == m0, "re-run rewrote a complete output");
    CHECK(run_stage(MPI_COMM_WORLD, data, o_all, "run.force=true", NULL) == 0, "forced re-run");
    CHECK(mtime_of(tp) != m0, "forced re-run did not rewrite");

    // resampling to 0.7 mm and 160 x 160
    CHECK(run_stage(MPI_COMM_WORLD, data, o_rs, "preprocess.spacing_mm=0.7", "preprocess.size=160") == 0, "resampled run");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        char csv[400];
        snprintf(csv, sizeof csv, "%s/DL_info.csv", data);
        dl_table t = {0};
        dlinfo_read(&t, csv);
        check_resampled(o_rs, &t, 160);
        dlinfo_free(&t);
    }

    // faults: with the default max_bad_fraction the stage fails and writes no shard
    pl_quiet_begin();
    rc = run_stage(MPI_COMM_WORLD, faulty, o_bad2, NULL, NULL);
    CHECK(rc == MP3D_EXIT_FAIL, "faulty data, max_bad_fraction 0.05: exit %d, want 1", rc);
    snprintf(tp, sizeof tp, "%s/train.h5", o_bad2);
    CHECK(access(tp, F_OK) != 0, "a shard was written although too many samples were bad");
    rc = run_stage(MPI_COMM_WORLD, faulty, o_bad, "run.max_bad_fraction=0.9", NULL);
    pl_quiet_end();
    CHECK(rc == 0, "faulty data, max_bad_fraction 0.9: exit %d", rc);
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) check_faults(o_bad, &f, faulty);

    if (c1 != MPI_COMM_NULL) MPI_Comm_free(&c1);
    if (c2 != MPI_COMM_NULL) MPI_Comm_free(&c2);
    int fails = 0;
    MPI_Allreduce(&g_fail, &fails, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%s: %d failed checks\n", fails ? "FAIL" : "PASS", fails);
    MPI_Finalize();
    return fails ? 1 : 0;
}
