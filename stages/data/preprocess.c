// mp3d preprocess: DeepLesion (DL_info.csv + Images_png_NN.zip, or an unpacked Images_png/
// folder) -> one HDF5 shard per split: OUT/{train,val,test}.h5 holding `images` (N, D, H, W)
// int16 HU, per-sample metadata and a lesion table (see DESIGN.md, data path step 3).
// Work is split by whole series (balanced by PNG bytes); each series' entries are streamed once.
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/archive.h"
#include "io/dlinfo.h"
#include "io/fileio.h"
#include "io/h5shard.h"
#include "io/image.h"
#include "io/strbuf.h"
#include "io/worksplit.h"
#include "nn/pl.h"
#include "stages/data/quarantine.h"
#include "stages/stages.h"

#ifndef MP3D_VERSION
#define MP3D_VERSION "0.1.0"
#endif

static const double HU_OFFSET = 32768.0;   // DeepLesion PNG: HU = value - 32768 (dataset README)
static const char *SPLIT_NAMES[4] = {"", "train", "val", "test"};
enum { FNAME_W = 64, MAX_D = 63 };

// ---------------------------------------------------------------------------- plan

typedef struct {
    int64_t row0, nrow;     // rows[row0 .. row0+nrow) of the sorted table are its lesions
    int split;              // 1..3
    int key;                // Key_slice_index
    int64_t slot;           // place in its split file, -1 when it cannot be kept (see step 3b)
    int series;             // index into the series list
} pp_sample;

typedef struct {
    char dir[32];           // "000001_01_01"
    int64_t s0, ns;         // samples [s0, s0+ns)
    int lo, hi;             // slices needed (union of the samples' windows)
    int64_t bytes;          // PNG bytes of the needed slices (work balance)
} pp_series;

typedef struct {            // one PNG in the sources
    int src;                // zip index, or -1 for the unpacked folder
    int slice;
    int64_t size;
    char dir[32];
} pp_entry;

typedef struct {
    int D, size;
    int out_h[4], out_w[4];      // stored H, W per split file
    double interval, hu_min, hu_max, spacing_mm;
} pp_params;

static int cmp_rows(const void *a, const void *b) {
    const dl_lesion *x = a, *y = b;
    if (x->patient != y->patient) return x->patient < y->patient ? -1 : 1;
    if (x->study != y->study) return x->study < y->study ? -1 : 1;
    if (x->series != y->series) return x->series < y->series ? -1 : 1;
    if (x->key_slice != y->key_slice) return x->key_slice < y->key_slice ? -1 : 1;
    int c = strcmp(x->file_name, y->file_name);
    if (c) return c;
    return (x->line > y->line) - (x->line < y->line);
}

static int cmp_entry(const void *a, const void *b) {
    const pp_entry *x = a, *y = b;
    int c = strcmp(x->dir, y->dir);
    if (c) return c;
    if (x->slice != y->slice) return x->slice < y->slice ? -1 : 1;
    return (x->src > y->src) - (x->src < y->src);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// "Images_png/000001_01_01/109.png" or "000001_01_01/109.png" -> dir, slice. 0 if not a slice.
static int parse_entry(const char *name, char dir[32], int *slice) {
    const char *base = strrchr(name, '/');
    if (!base || base == name) return 0;
    const char *d0 = base - 1;
    while (d0 > name && d0[-1] != '/') d0--;
    size_t dl = (size_t)(base - d0);
    if (dl == 0 || dl >= 32) return 0;
    char *end = NULL;
    long s = strtol(base + 1, &end, 10);
    if (end == base + 1 || strcmp(end, ".png") != 0 || s < 0 || s > 100000) return 0;
    memcpy(dir, d0, dl);
    dir[dl] = 0;
    *slice = (int)s;
    return 1;
}

// Source slice position of stored slice j: p = key + (j - D/2) * interval / dz, rounded to 1e-6
// so that exact ratios (2.5 / 1.25) do not land a hair below an integer.
static double src_pos(int key, int j, int D, double interval, double dz) {
    double p = key + (double)(j - D / 2) * interval / dz;
    return nearbyint(p * 1e6) / 1e6;
}

// ---------------------------------------------------------------------------- sources

typedef struct {
    char **zips; int nzips;       // full paths, sorted
    char folder[4096];            // unpacked Images_png/ when there are no zips
    pp_entry *ent; int64_t nent;  // sorted by (dir, slice, src)
} pp_sources;

static void sources_free(pp_sources *s) {
    for (int i = 0; i < s->nzips; i++) free(s->zips[i]);
    free(s->zips);
    free(s->ent);
}

static int list_zips(pp_sources *s, const char *root) {
    DIR *d = opendir(root);
    if (!d) return pl_fail(PL_ENOTFOUND, "%s: cannot list input.root", root);
    struct dirent *e;
    int cap = 0;
    int rc = 0;
    while ((e = readdir(d)) && !rc) {
        const char *n = e->d_name;
        size_t l = strlen(n);
        if (strncmp(n, "Images_png", 10) != 0 || l < 5 || strcmp(n + l - 4, ".zip") != 0) continue;
        if (s->nzips == cap) {
            cap = cap ? 2 * cap : 64;
            char **nz = pl_realloc(s->zips, sizeof(char *) * (size_t)cap, "zip list");
            if (!nz) { rc = PL_ENOMEM; break; }
            s->zips = nz;
        }
        char p[4096];
        rc = pl_path_join(p, sizeof p, root, n);
        if (!rc) s->zips[s->nzips++] = pl_strdup(p);
    }
    closedir(d);
    if (!rc && s->nzips > 1) qsort(s->zips, (size_t)s->nzips, sizeof(char *), cmp_str);
    return rc;
}

// Lists zip `zi` into lines "zi slice size dir\n". A truncated/corrupt archive ends the listing
// and is quarantined; the entries before the damage stay usable.
static int index_zip(strbuf *out, quarantine *q, const char *path, int zi) {
    arc_reader *r = NULL;
    pl_quiet_begin();
    int rc = arc_open_file(&r, path);
    pl_quiet_end();
    if (rc) {
        LOG_WARN("preprocess: archive:%s unreadable (quarantined): %s", path, pl_last_error());
        quarantine_add(q, path, "", pl_last_error(), 0);
        return 0;
    }
    const char *name;
    int64_t size;
    char last[256] = "";
    for (;;) {
        pl_quiet_begin();
        rc = arc_next(r, &name, &size);
        pl_quiet_end();
        if (rc == 0) break;
        if (rc < 0) {
            LOG_WARN("preprocess: archive:%s damaged after entry:%s (quarantined; entries before it are used)", path, last);
            quarantine_add(q, path, last, pl_last_error(), 0);
            break;
        }
        char dir[32];
        int slice;
        if (!parse_entry(name, dir, &slice)) continue;
        snprintf(last, sizeof last, "%s", name);
        if (sb_printf(out, "%d %d %lld %s\n", zi, slice, (long long)(size < 0 ? 0 : size), dir)) { arc_close(r); return PL_ENOMEM; }
    }
    arc_close(r);
    return 0;
}

static int index_folder(strbuf *out, const char *folder) {
    DIR *d = opendir(folder);
    if (!d) return pl_fail(PL_ENOTFOUND, "%s: cannot list the Images_png folder", folder);
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && !rc) {
        if (e->d_name[0] == '.' || strlen(e->d_name) >= 32) continue;
        char sub[4096];
        if (pl_path_join(sub, sizeof sub, folder, e->d_name) || !pl_path_is_dir(sub)) continue;
        DIR *d2 = opendir(sub);
        if (!d2) continue;
        struct dirent *f;
        while ((f = readdir(d2)) && !rc) {
            char nm[320], dir[32], fp[4400];
            int slice;
            snprintf(nm, sizeof nm, "%s/%s", e->d_name, f->d_name);
            if (!parse_entry(nm, dir, &slice)) continue;
            snprintf(fp, sizeof fp, "%s/%s", sub, f->d_name);
            struct stat st;
            if (stat(fp, &st) != 0) continue;
            rc = sb_printf(out, "-1 %d %lld %s\n", slice, (long long)st.st_size, dir);
        }
        closedir(d2);
    }
    closedir(d);
    return rc;
}

// Every rank ends with the same sorted entry list: zips are listed round-robin over ranks and
// the lines are all-gathered (text, so no struct layout crosses ranks).
static int build_index(pp_sources *s, const char *root, quarantine *q, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int rc = list_zips(s, root);
    strbuf mine = {0};
    if (!rc && s->nzips == 0) {
        rc = pl_path_join(s->folder, sizeof s->folder, root, "Images_png");
        if (!rc && !pl_path_is_dir(s->folder))
            rc = pl_fail(PL_ENOTFOUND, "%s: no Images_png_*.zip and no Images_png/ folder (input.root should hold DeepLesion as downloaded)", root);
        if (!rc && rank == 0) rc = index_folder(&mine, s->folder);
    } else if (!rc) {
        for (int z = rank; z < s->nzips && !rc; z += size) rc = index_zip(&mine, q, s->zips[z], z);
    }
    int lrc = rc, grc = 0;
    MPI_Allreduce(&lrc, &grc, 1, MPI_INT, MPI_MIN, comm);
    if (grc) { free(mine.p); return grc; }
    int len = (int)mine.n;
    int *lens = pl_malloc(sizeof(int) * (size_t)size, "index lengths"), *displs = pl_malloc(sizeof(int) * (size_t)size, "index offsets");
    MPI_Allgather(&len, 1, MPI_INT, lens, 1, MPI_INT, comm);
    int64_t tot = 0;
    for (int r = 0; r < size; r++) { displs[r] = (int)tot; tot += lens[r]; }
    if (tot > INT32_MAX) { free(lens); free(displs); free(mine.p); return pl_fail(PL_ERANGE, "%s: archive index over 2 GB of text", root); }
    char *all = pl_malloc((size_t)tot + 1, "archive index");
    MPI_Allgatherv(mine.p ? mine.p : "", len, MPI_CHAR, all, lens, displs, MPI_CHAR, comm);
    all[tot] = 0;
    free(mine.p);
    free(lens);
    free(displs);
    int64_t n = 0;
    for (int64_t i = 0; i < tot; i++) n += all[i] == '\n';
    s->ent = pl_calloc((size_t)PL_MAX(n, (int64_t)1), sizeof(pp_entry), "archive entries");
    char *p = all;
    for (int64_t i = 0; i < n; i++) {
        long long sz;
        int src, slice, used = 0;
        pp_entry *e = &s->ent[s->nent];
        if (sscanf(p, "%d %d %lld %31s%n", &src, &slice, &sz, e->dir, &used) == 4) {
            e->src = src;
            e->slice = slice;
            e->size = sz;
            s->nent++;
        }
        p = strchr(p, '\n') + 1;
    }
    free(all);
    if (s->nent > 1) qsort(s->ent, (size_t)s->nent, sizeof(pp_entry), cmp_entry);
    return 0;
}

// First entry of `dir` in the sorted list, or -1.
static int64_t find_dir(const pp_sources *s, const char *dir) {
    int64_t lo = 0, hi = s->nent;
    while (lo < hi) {
        int64_t m = (lo + hi) / 2;
        if (strcmp(s->ent[m].dir, dir) < 0) lo = m + 1;
        else hi = m;
    }
    return lo < s->nent && !strcmp(s->ent[lo].dir, dir) ? lo : -1;
}

static int has_entry(const pp_sources *s, const char *dir, int slice) {
    for (int64_t e = find_dir(s, dir); e >= 0 && e < s->nent && !strcmp(s->ent[e].dir, dir); e++)
        if (s->ent[e].slice == slice) return 1;
    return 0;
}

// ---------------------------------------------------------------------------- per series work

typedef struct {
    uint8_t *png; size_t len;     // encoded, until decoded
    uint16_t *px; int w, h;       // decoded
    int state;                    // 0 absent, 1 encoded, 2 decoded ok, -1 unreadable
    char why[200];
} pp_slice;

typedef struct {
    const pp_params *pp;
    const dl_lesion *rows;
    h5shard_writer *w[4];         // by split
    quarantine *q;
    int64_t kept, skipped;
    double t_decode, t_proc;
    float *stack, *tmp;           // (D, H, W) work buffers
    size_t stack_cap, tmp_cap;
    int16_t *out;                 // (D, out_h, out_w)
} pp_ctx;

static int decode_slice(pp_ctx *cx, pp_slice *s, const char *dir, int slice) {
    if (s->state != 1) return s->state;
    char label[96];
    snprintf(label, sizeof label, "%s/%03d.png", dir, slice);
    double t0 = pl_time();
    pl_quiet_begin();
    int rc = img_decode_gray16(&s->px, &s->w, &s->h, s->png, s->len, label);
    pl_quiet_end();
    cx->t_decode += pl_time() - t0;
    free(s->png);
    s->png = NULL;
    if (rc) {
        snprintf(s->why, sizeof s->why, "%s", pl_last_error());
        s->state = -1;
    } else {
        s->state = 2;
    }
    return s->state;
}

// Bilinear sample of plane (h, w) at continuous pixel-centre coordinates (x, y), edges clamped.
static float bilinear(const float *pl, int w, int h, double x, double y) {
    x = PL_CLAMP(x, 0.0, (double)(w - 1));
    y = PL_CLAMP(y, 0.0, (double)(h - 1));
    int x0 = (int)x, y0 = (int)y;
    int x1 = PL_MIN(x0 + 1, w - 1), y1 = PL_MIN(y0 + 1, h - 1);
    float fx = (float)(x - x0), fy = (float)(y - y0);
    const float *r0 = pl + (size_t)y0 * (size_t)w, *r1 = pl + (size_t)y1 * (size_t)w;
    float a = r0[x0] + fx * (r0[x1] - r0[x0]);
    float b = r1[x0] + fx * (r1[x1] - r1[x0]);
    return a + fy * (b - a);
}

static int grow_f(float **p, size_t *cap, size_t n) {
    if (n <= *cap) return 0;
    float *q = pl_realloc(*p, n * sizeof(float), "preprocess stack");
    if (!q) return PL_ENOMEM;
    *p = q;
    *cap = n;
    return 0;
}

static int16_t clip_round(float v, double lo, double hi) {
    double d = PL_CLAMP((double)v, lo, hi);
    return (int16_t)lrint(d);
}

// One stored slice straight from its source slices when no xy resampling is needed: HU =
// value - 32768, z blend, round, clip, in one pass without the float stack. The same numbers as
// the general path (the same float expression; rint(clamp(v, lo, hi)) = clamp(rint(v), rint(lo),
// rint(hi)) as rint is monotone). Rounding adds and subtracts 1.5 * 2^23, which rounds |v| <
// 2^22 to nearest-even exactly like lrint() and vectorizes; v lies in [-32768, 32767] here.
static void blend_clip(int16_t *restrict o, const uint16_t *restrict a, const uint16_t *restrict b, float fw, size_t n, int32_t lo,
                       int32_t hi) {
    if (fw == 0.0f || a == b) {
        for (size_t i = 0; i < n; i++) {
            int32_t v = (int32_t)a[i] - 32768;
            o[i] = (int16_t)(v < lo ? lo : v > hi ? hi : v);
        }
        return;
    }
    const float aw = 1.0f - fw, off = (float)HU_OFFSET, magic = 12582912.0f, flo = (float)lo, fhi = (float)hi;
    for (size_t i = 0; i < n; i++) {
        float v = aw * ((float)a[i] - off) + fw * ((float)b[i] - off);
        float r = (v + magic) - magic;
        r = r < flo ? flo : r > fhi ? fhi : r;
        o[i] = (int16_t)(int32_t)r;
    }
}

// The stored size of a split without preprocess.size: the Image_size most of its key slices
// have (not the first row's: one wrong cell must cost one sample, not the split). Key slices of
// another size are quarantined one by one when processed.
enum { SIZE_VOTES_MAX = 64 };
typedef struct {
    int n;
    int h[SIZE_VOTES_MAX], w[SIZE_VOTES_MAX];
    int64_t count[SIZE_VOTES_MAX];
} size_votes;

static void size_vote(size_votes *v, int h, int w) {
    for (int i = 0; i < v->n; i++)
        if (v->h[i] == h && v->w[i] == w) {
            v->count[i]++;
            return;
        }
    if (v->n == SIZE_VOTES_MAX) return;   // so many distinct sizes: the rest cannot win anyway
    v->h[v->n] = h;
    v->w[v->n] = w;
    v->count[v->n++] = 1;
}

static void size_mode(const size_votes *v, int *h, int *w) {
    int best = -1;
    for (int i = 0; i < v->n; i++)
        if (best < 0 || v->count[i] > v->count[best]) best = i;   // ties: the first seen
    if (best >= 0) {
        *h = v->h[best];
        *w = v->w[best];
    }
}

// Builds and adds one sample. Returns 0 (added or quarantined) or a fatal pl_err.
static int process_sample(pp_ctx *cx, const pp_sample *sm, const pp_series *se, pp_slice *sl) {
    const pp_params *pp = cx->pp;
    const dl_lesion *l0 = &cx->rows[sm->row0];
    char fname[FNAME_W] = {0};   // zero-filled: stored as a fixed-width string
    snprintf(fname, sizeof fname, "%s", l0->file_name);
    char key_ent[64];
    snprintf(key_ent, sizeof key_ent, "Images_png/%s/%03d.png", se->dir, sm->key);
    const int D = pp->D;
    double dz = l0->spacing[2];
    // key slice
    pp_slice *ks = (sm->key >= se->lo && sm->key <= se->hi) ? &sl[sm->key - se->lo] : NULL;
    if (!ks || ks->state == 0) {
        quarantine_add(cx->q, fname, key_ent, "missing key slice (no such entry in the archives)", 1);
        cx->skipped++;
        return 0;
    }
    if (decode_slice(cx, ks, se->dir, sm->key) < 0) {
        quarantine_add(cx->q, fname, key_ent, ks->why, 1);
        cx->skipped++;
        return 0;
    }
    if (!(dz > 0)) {
        quarantine_add(cx->q, fname, key_ent, "Spacing_mm_px_ slice interval is not > 0", 1);
        cx->skipped++;
        return 0;
    }
    double t0 = pl_time();
    const int W = ks->w, H = ks->h;
    int32_t src[2 * MAX_D];
    float wgt[MAX_D];
    int32_t replaced[MAX_D];
    int reported[2 * MAX_D], nreported = 0;   // each replaced slice is listed once per sample
    size_t plane = (size_t)W * (size_t)H;
    // xy: optional resampling to spacing_mm, or a resize of the longer side to `size`, then a
    // centred pad/crop to size x size. stored = s * (orig0 + 0.5) - 0.5 + pad  (0-based centres)
    double sx = 1, sy = 1;
    int rw = W, rh = H;
    if (pp->spacing_mm > 0) {
        rw = (int)lrint(W * l0->spacing[0] / pp->spacing_mm);
        rh = (int)lrint(H * l0->spacing[1] / pp->spacing_mm);
    } else if (pp->size > 0 && (W != pp->size || H != pp->size)) {
        double s = (double)pp->size / PL_MAX(W, H);
        rw = (int)lrint(W * s);
        rh = (int)lrint(H * s);
    }
    rw = PL_MAX(rw, 1);
    rh = PL_MAX(rh, 1);
    sx = (double)rw / W;
    sy = (double)rh / H;
    int ow = pp->size > 0 ? pp->size : rw, oh = pp->size > 0 ? pp->size : rh;
    int padx = (ow - rw) / 2, pady = (oh - rh) / 2;   // negative = crop
    // the common case (no resampling, no pad): each stored slice is built in place in one pass
    int direct = rw == W && rh == H && padx == 0 && pady == 0 && ow == pp->out_w[sm->split] && oh == pp->out_h[sm->split];
    int32_t ilo = (int32_t)lrint(pp->hu_min), ihi = (int32_t)lrint(pp->hu_max);
    if (!direct && grow_f(&cx->stack, &cx->stack_cap, plane * (size_t)D)) return PL_ENOMEM;
    // z: linear interpolation between neighbouring slices, unreadable ones replaced by the
    // nearest readable slice towards the key slice
    for (int j = 0; j < D; j++) {
        double p = src_pos(sm->key, j, D, pp->interval, dz);
        int lo = (int)floor(p);
        double f = p - lo;
        int want[2] = {lo, f > 0 ? lo + 1 : lo};
        int got[2];
        replaced[j] = 0;
        for (int t = 0; t < 2; t++) {
            int s = want[t], step = s > sm->key ? -1 : 1;
            for (;;) {
                if (s == sm->key) break;
                pp_slice *c = (s >= se->lo && s <= se->hi) ? &sl[s - se->lo] : NULL;
                if (c && c->state != 0 && decode_slice(cx, c, se->dir, s) == 2 && c->w == W && c->h == H) break;
                s += step;
            }
            got[t] = s;
            int seen = 0;
            for (int u = 0; u < nreported; u++) seen |= reported[u] == want[t];
            if (s != want[t]) replaced[j] = 1;
            if (s != want[t] && !seen) {
                reported[nreported++] = want[t];
                pp_slice *c = (want[t] >= se->lo && want[t] <= se->hi) ? &sl[want[t] - se->lo] : NULL;
                char why[400], ent[64];
                snprintf(ent, sizeof ent, "Images_png/%s/%03d.png", se->dir, want[t]);
                if (!c || c->state == 0) snprintf(why, sizeof why, "missing neighbour slice %d, replaced by slice %d", want[t], s);
                else if (c->state < 0) snprintf(why, sizeof why, "unreadable neighbour slice %d (%s), replaced by slice %d", want[t], c->why, s);
                else snprintf(why, sizeof why, "neighbour slice %d is %dx%d, not %dx%d like the key slice; replaced by slice %d", want[t], c->w, c->h, W, H, s);
                quarantine_add(cx->q, fname, ent, why, 0);
            }
        }
        src[2 * j] = got[0];
        src[2 * j + 1] = got[1];
        wgt[j] = (float)f;
        const uint16_t *a = sl[got[0] - se->lo].px, *b = sl[got[1] - se->lo].px;
        if (direct) {
            blend_clip(cx->out + (size_t)j * plane, a, got[0] == got[1] ? a : b, (float)f, plane, ilo, ihi);
            continue;
        }
        float *o = cx->stack + (size_t)j * plane;
        float fw = (float)f, aw = 1.0f - fw, off = (float)HU_OFFSET;
        if (got[0] == got[1] || fw == 0.0f)
            for (size_t i = 0; i < plane; i++) o[i] = (float)a[i] - off;
        else
            for (size_t i = 0; i < plane; i++) o[i] = aw * ((float)a[i] - off) + fw * ((float)b[i] - off);
    }
    if (ow != pp->out_w[sm->split] || oh != pp->out_h[sm->split]) {
        char why[200];
        snprintf(why, sizeof why, "image is %dx%d, the %s file holds %dx%d (set preprocess.size to resize)", ow, oh, SPLIT_NAMES[sm->split],
                 pp->out_w[sm->split], pp->out_h[sm->split]);
        quarantine_add(cx->q, fname, key_ent, why, 1);
        cx->skipped++;
        return 0;
    }
    for (int j = 0; j < D && !direct; j++) {
        const float *in = cx->stack + (size_t)j * plane;
        int16_t *o = cx->out + (size_t)j * (size_t)ow * (size_t)oh;
        if (rw == W && rh == H && padx == 0 && pady == 0) {
            for (size_t i = 0; i < plane; i++) o[i] = clip_round(in[i], pp->hu_min, pp->hu_max);
            continue;
        }
        for (int y = 0; y < oh; y++) {
            int ry = y - pady;
            for (int x = 0; x < ow; x++) {
                int rx = x - padx;
                float v;
                if (rx < 0 || ry < 0 || rx >= rw || ry >= rh) v = (float)pp->hu_min;
                else if (rw == W && rh == H) v = in[(size_t)ry * (size_t)W + (size_t)rx];
                else v = bilinear(in, W, H, (rx + 0.5) / sx - 0.5, (ry + 0.5) / sy - 0.5);
                o[(size_t)y * (size_t)ow + (size_t)x] = clip_round(v, pp->hu_min, pp->hu_max);
            }
        }
    }
    // affine stored -> DL_info frame (1-based): orig = a * stored + b
    // forward: stored = s * (orig - 1 + 0.5) - 0.5 + pad = s * orig + (pad - 0.5 s - 0.5)
    double bx_f = padx - 0.5 * sx - 0.5, by_f = pady - 0.5 * sy - 0.5;
    double affine[4] = {1.0 / sx, -bx_f / sx, 1.0 / sy, -by_f / sy};
    // lesion rows
    int64_t m = sm->nrow;
    double *bx = pl_malloc(sizeof(double) * (size_t)m * 34 + 8, "lesion rows");
    if (!bx) return PL_ENOMEM;
    double *bxo = bx + 4 * m, *rc_ = bx + 8 * m, *rco = bx + 16 * m, *dmm = bx + 24 * m;
    int32_t *ity = (int32_t *)(bx + 26 * m), *noisy = ity + m, *line = noisy + m;
    for (int64_t i = 0; i < m; i++) {
        const dl_lesion *l = &cx->rows[sm->row0 + i];
        for (int k = 0; k < 4; k++) {
            bxo[4 * i + k] = l->bbox[k];
            double v = (k % 2 == 0) ? sx * l->bbox[k] + bx_f : sy * l->bbox[k] + by_f;
            double hi = (k % 2 == 0) ? ow - 1 : oh - 1;
            bx[4 * i + k] = PL_CLAMP(v, 0.0, hi);
        }
        for (int k = 0; k < 8; k++) {
            rco[8 * i + k] = l->recist[k];
            rc_[8 * i + k] = (k % 2 == 0) ? sx * l->recist[k] + bx_f : sy * l->recist[k] + by_f;
        }
        dmm[2 * i] = l->diam_px[0] * l->spacing[0];
        dmm[2 * i + 1] = l->diam_px[1] * l->spacing[0];
        ity[i] = l->type;
        noisy[i] = l->noisy;
        line[i] = l->line;
    }
    int32_t ids[4] = {l0->patient, l0->study, l0->series, l0->key_slice};
    int32_t split = sm->split, isz[2] = {H, W}, nrep = 0;
    for (int j = 0; j < D; j++) nrep += replaced[j];
    double spacing[3] = {l0->spacing[0], l0->spacing[1], dz};
    double stored_sp[3] = {l0->spacing[0] / sx, l0->spacing[1] / sy, pp->interval};
    const void *cv[] = {fname, &split, ids, spacing, stored_sp, affine, isz, l0->window, src, wgt, replaced, &nrep};
    const void *rv[] = {bx, bxo, rc_, rco, dmm, ity, noisy, line};
    int rc = 0;
    if (sm->slot < 0)   // listed after the index was built (cannot happen with the same archives)
        quarantine_add(cx->q, fname, key_ent, "key slice not in the archive index built at the start (archive changed while read?)", 1);
    else
        rc = h5shard_add_at(cx->w[sm->split], sm->slot, cx->out, cv, m, rv);
    free(bx);
    cx->t_proc += pl_time() - t0;
    if (rc) return rc;
    if (sm->slot < 0) cx->skipped++;
    else cx->kept++;
    return 0;
}

static void slices_free(pp_slice *sl, int n) {
    for (int i = 0; i < n; i++) {
        free(sl[i].png);
        free(sl[i].px);
        sl[i] = (pp_slice){0};
    }
}

// ---------------------------------------------------------------------------- the stage

static int parse_splits(int want[4], const char *s) {
    want[0] = want[1] = want[2] = want[3] = 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ", "); tok; tok = strtok(NULL, ", ")) {
        int k = 0;
        for (int i = 1; i <= 3; i++)
            if (!strcmp(tok, SPLIT_NAMES[i])) k = i;
        if (!k) return pl_fail(PL_EINVAL, "preprocess.splits: '%s' is not train, val or test", tok);
        want[k] = 1;
    }
    return 0;
}


int stage_preprocess_run(const pl_cfg *cfg, MPI_Comm comm) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    if (cfg_require(cfg, "input.root") || cfg_require(cfg, "output.dir")) return MP3D_EXIT_USAGE;
    // entries and decoded slices (0.1-0.5 MB each, a series' worth alive at once) come and go per
    // sample: reuse freed memory instead of page-faulting fresh mappings in (827k -> 54k minor
    // faults and 49 -> 60-68 key slices/s at 2 ranks on the medium cohort, results/bench/preprocess.md)
    pl_malloc_reuse(64u << 20);
    const char *root = cfg_str(cfg, "input.root"), *outdir = cfg_str(cfg, "output.dir");
    pp_params pp = {.D = (int)cfg_int(cfg, "preprocess.num_slices"), .interval = cfg_float(cfg, "preprocess.slice_interval_mm"),
                    .hu_min = cfg_float(cfg, "preprocess.hu_min"), .hu_max = cfg_float(cfg, "preprocess.hu_max"),
                    .spacing_mm = cfg_float(cfg, "preprocess.spacing_mm"), .size = (int)cfg_int(cfg, "preprocess.size")};
    if (pp.D % 2 == 0 || pp.D > MAX_D) {
        LOG0_ERROR("%s: preprocess.num_slices = %d (must be odd, 1..%d)", cfg_path(cfg), pp.D, MAX_D);
        return MP3D_EXIT_USAGE;
    }
    if (pp.hu_min >= pp.hu_max) {
        LOG0_ERROR("%s: preprocess.hu_min = %g must be < preprocess.hu_max = %g", cfg_path(cfg), pp.hu_min, pp.hu_max);
        return MP3D_EXIT_USAGE;
    }
    if (pp.spacing_mm > 0 && pp.size == 0) {
        LOG0_ERROR("%s: preprocess.spacing_mm = %g needs preprocess.size > 0 (resampled images differ in size)", cfg_path(cfg),
                   pp.spacing_mm);
        return MP3D_EXIT_USAGE;
    }
    int want[4];
    if (parse_splits(want, cfg_str(cfg, "preprocess.splits"))) return MP3D_EXIT_USAGE;
    double t_start = pl_time();

    // outputs already complete for this config are skipped
    int rc = 0;
    if (rank == 0) rc = pl_mkdir_p(outdir);
    MPI_Bcast(&rc, 1, MPI_INT, 0, comm);
    if (rc) return MP3D_EXIT_FAIL;
    char hash_s[32];
    snprintf(hash_s, sizeof hash_s, "%016llx", (unsigned long long)cfg_hash(cfg, STAGE_CONTENT_KEYS_PREPROCESS));
    char paths[4][4096];
    int todo[4] = {0}, ntodo = 0;
    for (int s = 1; s <= 3; s++) {
        if (!want[s]) continue;
        char nm[16];
        snprintf(nm, sizeof nm, "%s.h5", SPLIT_NAMES[s]);
        if (pl_path_join(paths[s], sizeof paths[s], outdir, nm)) return MP3D_EXIT_USAGE;
        int cur = rank == 0 && !cfg_bool(cfg, "run.force") && h5shard_hash_matches(paths[s], hash_s);
        MPI_Bcast(&cur, 1, MPI_INT, 0, comm);
        if (cur) LOG0("preprocess: split:%s output:%s status:complete (skipped; --force re-runs)", SPLIT_NAMES[s], paths[s]);
        else { todo[s] = 1; ntodo++; }
    }
    if (ntodo == 0) return MP3D_EXIT_OK;

    quarantine *q = quarantine_create("preprocess");
    dl_table t = {0};
    pp_sources src = {0};
    pp_sample *sm = NULL;
    pp_series *se = NULL;
    pp_slice *sl = NULL;
    pp_ctx cx = {.pp = &pp, .q = q};
    int64_t nsm = 0, nse = 0, *bytes = NULL;
    int exit_code = MP3D_EXIT_FAIL;
    if (!q) goto done;

    // 1. DL_info.csv, read by every rank (malformed rows listed by rank 0 only)
    char csv[4096];
    if ((rc = pl_path_join(csv, sizeof csv, root, "DL_info.csv"))) goto done;
    if ((rc = dlinfo_read(&t, csv))) goto done;
    if (rank == 0)
        for (int64_t i = 0; i < t.nbad; i++) {
            char ent[32];
            snprintf(ent, sizeof ent, "line %d", t.bad[i].line);
            quarantine_add(q, "DL_info.csv", ent, t.bad[i].msg, 1);
        }
    if (t.n > 1) qsort(t.rows, (size_t)t.n, sizeof(dl_lesion), cmp_rows);   // qsort(NULL, 0) is UB
    cx.rows = t.rows;

    // 2. samples = distinct key slices of the wanted splits, in (patient, study, series, key) order
    sm = pl_calloc((size_t)PL_MAX(t.n, (int64_t)1), sizeof *sm, "samples");
    se = pl_calloc((size_t)PL_MAX(t.n, (int64_t)1), sizeof *se, "series");
    if (!sm || !se) { rc = PL_ENOMEM; goto done; }
    size_votes votes[4] = {{0}};
    for (int64_t i = 0; i < t.n;) {
        int64_t j = i + 1;
        while (j < t.n && !strcmp(t.rows[j].file_name, t.rows[i].file_name)) j++;
        const dl_lesion *l = &t.rows[i];
        if (l->split >= 1 && l->split <= 3 && todo[l->split]) {
            pp_sample *s = &sm[nsm];
            *s = (pp_sample){.row0 = i, .nrow = j - i, .split = l->split, .key = l->key_slice, .slot = -1};
            char dir[32];
            dlinfo_series_dir(l, dir, sizeof dir);
            if (nse == 0 || strcmp(se[nse - 1].dir, dir)) {
                se[nse] = (pp_series){.s0 = nsm, .ns = 0, .lo = INT32_MAX, .hi = INT32_MIN};
                snprintf(se[nse].dir, sizeof se[nse].dir, "%s", dir);
                nse++;
            }
            pp_series *ss = &se[nse - 1];
            s->series = (int)(nse - 1);
            ss->ns++;
            double dz = l->spacing[2] > 0 ? l->spacing[2] : 1;
            int lo = (int)floor(src_pos(l->key_slice, 0, pp.D, pp.interval, dz));
            int hi = (int)ceil(src_pos(l->key_slice, pp.D - 1, pp.D, pp.interval, dz));
            ss->lo = PL_MIN(ss->lo, PL_MIN(lo, l->key_slice));
            ss->hi = PL_MAX(ss->hi, PL_MAX(hi, l->key_slice));
            size_vote(&votes[l->split], l->image_size[0], l->image_size[1]);
            nsm++;
        }
        i = j;
    }

    // 3. the archive index and the work split by series bytes
    if ((rc = build_index(&src, root, q, comm))) goto done;
    bytes = pl_calloc((size_t)PL_MAX(nse, (int64_t)1), sizeof(int64_t), "series bytes");
    if (!bytes) { rc = PL_ENOMEM; goto done; }
    for (int64_t k = 0; k < nse; k++) {
        int64_t e = find_dir(&src, se[k].dir);
        for (; e >= 0 && e < src.nent && !strcmp(src.ent[e].dir, se[k].dir); e++)
            if (src.ent[e].slice >= se[k].lo && src.ent[e].slice <= se[k].hi) bytes[k] += src.ent[e].size;
        se[k].bytes = bytes[k];
    }
    int64_t b0 = 0, b1 = 0;
    if ((rc = worksplit_range(&b0, &b1, bytes, nse, rank, size))) goto done;
    // 3b. places: a sample whose key slice is listed and whose slice interval is > 0 takes the
    // next place of its split file (the same on every rank, as the index is), and its data is
    // written there as soon as it is built. One that fails later (a key slice that does not
    // decode or has another size) leaves its place empty; the writer closes the gap at the end.
    int64_t reserve[4] = {0};
    for (int64_t i = 0; i < nsm; i++) {
        pp_sample *s = &sm[i];
        if (t.rows[s->row0].spacing[2] > 0 && has_entry(&src, se[s->series].dir, s->key)) s->slot = reserve[s->split]++;
    }

    // 4. writers, one per split (output size fixed per file)
    static const shard_col cols_tmpl[] = {
        {"file_name", SHARD_STR, FNAME_W}, {"split", SHARD_I32, 1}, {"ids", SHARD_I32, 4}, {"spacing", SHARD_F64, 3},
        {"stored_spacing", SHARD_F64, 3}, {"affine", SHARD_F64, 4}, {"image_size", SHARD_I32, 2}, {"window", SHARD_F64, 2},
        {"src_slices", SHARD_I32, 0}, {"src_weight", SHARD_F32, 0}, {"replaced", SHARD_I32, 0}, {"num_replaced", SHARD_I32, 1}};
    shard_col cols[12];
    memcpy(cols, cols_tmpl, sizeof cols);
    cols[8].width = 2 * pp.D;
    cols[9].width = pp.D;
    cols[10].width = pp.D;
    static const shard_col rows[] = {{"boxes", SHARD_F64, 4}, {"boxes_orig", SHARD_F64, 4}, {"recist", SHARD_F64, 8},
                                     {"recist_orig", SHARD_F64, 8}, {"diameters_mm", SHARD_F64, 2}, {"lesion_type", SHARD_I32, 1},
                                     {"noisy", SHARD_I32, 1}, {"csv_line", SHARD_I32, 1}};
    int out_h = 0, out_w = 0;
    for (int s = 1; s <= 3 && !rc; s++) {
        if (!todo[s]) continue;
        int mh = 512, mw = 512;
        size_mode(&votes[s], &mh, &mw);
        int oh = pp.size > 0 ? pp.size : mh;
        int ow = pp.size > 0 ? pp.size : mw;
        shard_layout lay = {.data_name = "images", .data_type = SHARD_I16, .ndims = 3, .dims = {pp.D, oh, ow}, .cols = cols, .ncols = 12,
                            .rows = rows, .nrows = 8, .rows_offsets = "lesion_offsets"};
        pp.out_h[s] = oh;
        pp.out_w[s] = ow;
        rc = h5shard_writer_create_direct(&cx.w[s], paths[s], &lay, reserve[s], comm);   // collective
        out_h = PL_MAX(out_h, oh);
        out_w = PL_MAX(out_w, ow);
    }
    if (rc) goto fail_collective;
    // page-aligned: the shard writer hands it to an O_DIRECT write without copying it
    size_t out_bytes = sizeof(int16_t) * (size_t)pp.D * (size_t)out_h * (size_t)out_w;
    if (posix_memalign((void **)&cx.out, 4096, out_bytes)) {
        cx.out = NULL;
        rc = pl_fail(PL_ENOMEM, "preprocess: out of memory for a %zu-byte sample", out_bytes);
        goto fail_collective;
    }
    LOG0("preprocess: key_slices:%lld series:%lld pngs_indexed:%lld zips:%d ranks:%d", (long long)nsm, (long long)nse, (long long)src.nent,
         src.nzips, size);

    // 5. read my series: stream each zip once, keeping the needed slices of my series; a series
    // is processed as soon as all of its indexed slices have arrived.
    {
        int64_t nmine = b1 - b0;
        int64_t *expect = pl_calloc((size_t)PL_MAX(nmine, (int64_t)1), sizeof(int64_t), "expected slices");
        int64_t *have = pl_calloc((size_t)PL_MAX(nmine, (int64_t)1), sizeof(int64_t), "received slices");
        pp_slice **bufs = pl_calloc((size_t)PL_MAX(nmine, (int64_t)1), sizeof(pp_slice *), "series slices");
        uint8_t *zip_used = pl_calloc((size_t)PL_MAX(src.nzips, 1), 1, "zips used");
        uint8_t *done_series = pl_calloc((size_t)PL_MAX(nmine, (int64_t)1), 1, "series done");
        if (!expect || !have || !bufs || !zip_used || !done_series) rc = PL_ENOMEM;
        for (int64_t k = 0; k < nmine && !rc; k++) {
            const pp_series *ss = &se[b0 + k];
            bufs[k] = pl_calloc((size_t)(ss->hi - ss->lo + 1), sizeof(pp_slice), "series slices");
            if (!bufs[k]) { rc = PL_ENOMEM; break; }
            int64_t e = find_dir(&src, ss->dir);
            int last_slice = INT32_MIN;
            for (; e >= 0 && e < src.nent && !strcmp(src.ent[e].dir, ss->dir); e++) {
                if (src.ent[e].slice < ss->lo || src.ent[e].slice > ss->hi || src.ent[e].slice == last_slice) continue;
                last_slice = src.ent[e].slice;   // a slice present twice is read from its first archive only
                expect[k]++;
                if (src.ent[e].src >= 0) zip_used[src.ent[e].src] = 1;
            }
        }
        // process series whose slices have all arrived (in sorted order, for a steady log)
#define PP_FLUSH(k)                                                                                   \
    do {                                                                                              \
        const pp_series *ss_ = &se[b0 + (k)];                                                         \
        for (int64_t i_ = ss_->s0; i_ < ss_->s0 + ss_->ns && !rc; i_++)                               \
            rc = process_sample(&cx, &sm[i_], ss_, bufs[(k)]);                                        \
        slices_free(bufs[(k)], ss_->hi - ss_->lo + 1);                                                \
        done_series[(k)] = 1;                                                                         \
    } while (0)
        for (int64_t k = 0; k < nmine && !rc; k++)
            if (expect[k] == 0) PP_FLUSH(k);
        if (src.nzips == 0) {
            // unpacked folder: read the files of each of my series directly
            for (int64_t k = 0; k < nmine && !rc; k++) {
                if (done_series[k]) continue;
                const pp_series *ss = &se[b0 + k];
                for (int s = ss->lo; s <= ss->hi && !rc; s++) {
                    char fp[4500];
                    snprintf(fp, sizeof fp, "%s/%s/%03d.png", src.folder, ss->dir, s);
                    pp_slice *c = &bufs[k][s - ss->lo];
                    if (!pl_path_exists(fp)) continue;
                    pl_quiet_begin();
                    int r2 = pl_read_file(fp, &c->png, &c->len);
                    pl_quiet_end();
                    if (r2) { c->state = -1; snprintf(c->why, sizeof c->why, "%s", pl_last_error()); }
                    else c->state = 1;
                }
                PP_FLUSH(k);
            }
        }
        for (int z = 0; z < src.nzips && !rc; z++) {
            if (!zip_used[z]) continue;
            arc_reader *ar = NULL;
            pl_quiet_begin();
            int orc = arc_open_file(&ar, src.zips[z]);
            pl_quiet_end();
            if (orc) continue;   // quarantined while indexing
            const char *name;
            int64_t esz;
            for (;;) {
                pl_quiet_begin();
                int nrc = arc_next(ar, &name, &esz);
                pl_quiet_end();
                if (nrc <= 0) break;   // end, or damage already quarantined while indexing
                char dir[32];
                int slice;
                if (!parse_entry(name, dir, &slice)) continue;
                // my series are se[b0..b1), sorted by dir: binary search
                int64_t lo = b0, hi = b1;
                while (lo < hi) {
                    int64_t mid = (lo + hi) / 2;
                    if (strcmp(se[mid].dir, dir) < 0) lo = mid + 1;
                    else hi = mid;
                }
                if (lo >= b1 || strcmp(se[lo].dir, dir)) continue;
                int64_t k = lo - b0;
                const pp_series *ss = &se[lo];
                if (done_series[k] || slice < ss->lo || slice > ss->hi) continue;
                pp_slice *c = &bufs[k][slice - ss->lo];
                if (c->state != 0) continue;
                pl_quiet_begin();
                int r2 = arc_read_entry(ar, &c->png, &c->len);
                pl_quiet_end();
                if (r2) {
                    c->state = -1;
                    snprintf(c->why, sizeof c->why, "%s", pl_last_error());
                    free(c->png);
                    c->png = NULL;
                } else {
                    c->state = 1;
                }
                if (++have[k] == expect[k]) PP_FLUSH(k);
                if (rc) break;
            }
            arc_close(ar);
        }
        // series with slices that never arrived (damaged archives): process what there is
        for (int64_t k = 0; k < nmine && !rc; k++)
            if (!done_series[k]) PP_FLUSH(k);
#undef PP_FLUSH
        for (int64_t k = 0; k < nmine; k++) free(bufs ? bufs[k] : NULL);
        free(bufs);
        free(expect);
        free(have);
        free(zip_used);
        free(done_series);
    }
    if (rc) LOG_ERROR("preprocess: rank %d failed: %s", rank, pl_last_error());

fail_collective:;
    // 6. counts, quarantine, bad fraction, then the collective writes
    int64_t total_q = 0, skipped_q = 0, kept = 0, lk = cx.kept;
    int qrc = quarantine_write(q, outdir, comm, &total_q, &skipped_q);
    MPI_Allreduce(&lk, &kept, 1, MPI_INT64_T, MPI_SUM, comm);
    int64_t cand = nsm + t.nbad;
    double bad_frac = cand > 0 ? (double)skipped_q / (double)cand : 0.0;
    double max_bad = cfg_float(cfg, "run.max_bad_fraction");
    int lrc = rc, anyrc = 0;
    MPI_Allreduce(&lrc, &anyrc, 1, MPI_INT, MPI_MIN, comm);
    int write_ok = anyrc == 0 && qrc == 0 && bad_frac <= max_bad;
    if (anyrc == 0 && bad_frac > max_bad)
        LOG0("preprocess: skipped:%lld of %lld (%.4f) exceeds run.max_bad_fraction = %g: no shard written; see %s/quarantine.csv",
             (long long)skipped_q, (long long)cand, bad_frac, max_bad, outdir);
    // provenance: inputs with sizes
    strbuf inputs = {0};
    {
        struct stat st;
        sb_printf(&inputs, "%s %lld\n", csv, stat(csv, &st) == 0 ? (long long)st.st_size : -1LL);
        for (int z = 0; z < src.nzips; z++) sb_printf(&inputs, "%s %lld\n", src.zips[z], stat(src.zips[z], &st) == 0 ? (long long)st.st_size : -1LL);
        if (src.nzips == 0 && src.folder[0]) sb_printf(&inputs, "%s (folder, %lld PNGs)\n", src.folder, (long long)src.nent);
    }
    int wrc = 0;
    double t_write = 0;
    for (int s = 1; s <= 3; s++) {
        if (!todo[s]) continue;
        if (!cx.w[s]) {   // creation failed on this rank: still take part in the collective finish
            shard_layout dummy = {.data_name = "images", .data_type = SHARD_I16, .ndims = 1, .dims = {1}};
            h5shard_writer_create(&cx.w[s], paths[s], &dummy, rank);
            write_ok = 0;
        }
        h5shard_writer *w = cx.w[s];
        cx.w[s] = NULL;
        if (w) {
            double hu[2] = {pp.hu_min, pp.hu_max}, iv = pp.interval, spm = pp.spacing_mm;
            int64_t d = pp.D, sz = pp.size, qn = total_q;
            h5shard_set_attr_str(w, "stage", "preprocess");
            h5shard_set_attr_str(w, "split", SPLIT_NAMES[s]);
            h5shard_set_attr_str(w, "config", cfg_text(cfg));
            h5shard_set_attr_str(w, "config_hash", hash_s);
            h5shard_set_attr_str(w, "inputs", inputs.p ? inputs.p : "");
            h5shard_set_attr_str(w, "mp3d_version", MP3D_VERSION);
            h5shard_set_attr_str(w, "layout",
                                 "images (N, D, H, W) int16 HU clipped to hu_clip; lesion rows of sample i are "
                                 "[lesion_offsets[i], lesion_offsets[i+1]); boxes/recist: stored frame, 0-based pixel centres; "
                                 "*_orig: DL_info frame (1-based); affine (ax, bx, ay, by): orig_x = ax * stored_x + bx, "
                                 "orig_y = ay * stored_y + by; src_slices (N, D, 2) and src_weight (N, D): stored slice j = "
                                 "(1 - w) * slice[src0] + w * slice[src1] after replacement; replaced (N, D) 1 where a "
                                 "missing/unreadable neighbour was replaced by the nearest readable slice towards the key slice");
            h5shard_set_attr_f64(w, "hu_clip", hu, 2);
            h5shard_set_attr_f64(w, "slice_interval_mm", &iv, 1);
            h5shard_set_attr_f64(w, "spacing_mm", &spm, 1);
            h5shard_set_attr_i64(w, "num_slices", &d, 1);
            h5shard_set_attr_i64(w, "size", &sz, 1);
            h5shard_set_attr_i64(w, "quarantined", &qn, 1);
        }
        h5shard_stats st = {0};
        int frc = w ? h5shard_finish(w, comm, write_ok, &st) : PL_ENOMEM;
        if (frc && write_ok) wrc = frc;
        if (frc == 0) {
            t_write += st.write_seconds;
            LOG0("preprocess: split:%s samples:%lld lesions:%lld output:%s collective:%d write_s:%.2f writes_odirect:%lld writes_buffered:%lld",
                 SPLIT_NAMES[s], (long long)st.n_total, (long long)st.rows_total, paths[s], st.all_collective, st.write_seconds,
                 (long long)st.odirect_writes, (long long)(st.buffered_writes + st.hdf5_writes));
        }
    }
    free(inputs.p);
    double secs = pl_time() - t_start, dec = 0, proc = 0;
    MPI_Allreduce(&cx.t_decode, &dec, 1, MPI_DOUBLE, MPI_SUM, comm);
    MPI_Allreduce(&cx.t_proc, &proc, 1, MPI_DOUBLE, MPI_SUM, comm);
    LOG0("preprocess: key_slices:%lld kept:%lld skipped:%lld quarantined:%lld bad_fraction:%.4f seconds:%.2f key_slices_per_s:%.1f "
         "decode_cpu_s:%.2f process_cpu_s:%.2f write_s:%.2f",
         (long long)cand, (long long)kept, (long long)skipped_q, (long long)total_q, bad_frac, secs, secs > 0 ? kept / secs : 0.0, dec, proc,
         t_write);
    if (anyrc == 0 && qrc == 0 && wrc == 0) exit_code = bad_frac <= max_bad ? MP3D_EXIT_OK : MP3D_EXIT_FAIL;
    rc = 0;
done:
    if (rc) LOG_ERROR("preprocess: %s", pl_last_error());
    for (int s = 0; s < 4; s++) h5shard_writer_abort(cx.w[s]);
    free(cx.stack);
    free(cx.tmp);
    free(cx.out);
    free(sl);
    free(bytes);
    free(sm);
    free(se);
    sources_free(&src);
    dlinfo_free(&t);
    quarantine_destroy(q);
    // a failure before the collective part happened on every rank alike (same files, same config)
    return exit_code;
}
