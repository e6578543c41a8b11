// froc_score: the DeepLesion FROC reference walk (3DCE/MULAN/MP3D evaluation code, re-derived):
// one global ranking, a detection marks every unfound lesion it overlaps with IoU >= thr,
// duplicates are neither TP nor FP, unmatched detections are FPs, FP/image over all evaluated
// images. Also COCO AP@0.5, sub-groups, patient bootstrap, and the detections CSV.
#include "stages/score/froc.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "nn/pl.h"

const double froc_levels[FROC_NLEVELS] = {0.5, 1, 2, 4, 8, 16};

// Relative tolerance deciding that level x n_images is an integer FP count.
static const double k_int_eps = 1e-9;

void froc_opts_default(froc_opts *o) {
    o->iou = 0.5;
    o->iou_plus1 = 1;
    o->fp_rule = FROC_FP_BEFORE_NEXT;
    o->keep_noisy = 0;
    o->split = 3;
}

// ---------------------------------------------------------------------------------------
// detections CSV

int froc_dets_push(froc_dets *ds, const froc_det *d) {
    if (ds->n == ds->cap) {
        int64_t nc = ds->cap ? ds->cap * 2 : 1024;
        froc_det *nd = pl_realloc(ds->d, (size_t)nc * sizeof *nd, "detections");
        if (!nd) return PL_ENOMEM;
        ds->d = nd;
        ds->cap = nc;
    }
    ds->d[ds->n++] = *d;
    return 0;
}

static int dets_add_bad(froc_dets *ds, const char *label, int64_t line, const char *fmt, const char *a,
                        const char *b) {
    if ((ds->nbad & (ds->nbad + 1)) == 0) {   // grow at 0, 1, 3, 7, ... (powers of two)
        void *nb = pl_realloc(ds->bad, (size_t)(ds->nbad + 1) * 2 * sizeof *ds->bad, "bad-line list");
        if (!nb) return PL_ENOMEM;
        ds->bad = nb;
    }
    char msg[120];
    snprintf(msg, sizeof msg, fmt, a, b);
    snprintf(ds->bad[ds->nbad], sizeof ds->bad[0], "%s:%lld: %s", label, (long long)line, msg);
    ds->nbad++;
    return 0;
}

// Trims blanks and one pair of surrounding double quotes in place.
static char *trim_field(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) s[--n] = 0;
    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s[n - 1] = 0;
        s++;
    }
    return s;
}

int froc_dets_parse(froc_dets *ds, const char *text, size_t len, const char *label) {
    static const char *const cols[6] = {"File_name", "x1", "y1", "x2", "y2", "score"};
    char line[1024];
    int64_t lineno = 0;
    size_t pos = 0;
    int seen_content = 0;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) pos = 3;   // a UTF-8 byte-order mark (spreadsheet exports)
    while (pos < len) {
        size_t e = pos;
        while (e < len && text[e] != '\n') e++;
        lineno++;
        size_t ll = e - pos;
        const char *src = text + pos;
        pos = e + 1;
        if (ll >= sizeof line) {
            int rc = dets_add_bad(ds, label, lineno, "line longer than %s bytes%s", "1023", "");
            if (rc) return rc;
            continue;
        }
        memcpy(line, src, ll);
        line[ll] = 0;
        char *t = trim_field(line);
        if (*t == 0) continue;   // blank line
        char *f[7];
        int nf = 0;
        char *p = line;
        for (;;) {
            if (nf < 7) f[nf] = p;
            nf++;
            char *c = strchr(p, ',');
            if (!c) break;
            *c = 0;
            p = c + 1;
        }
        if (nf != 6) {
            char got[16];
            snprintf(got, sizeof got, "%d", nf);
            int rc = dets_add_bad(ds, label, lineno, "%s fields, expected 6 (File_name,x1,y1,x2,y2,score)%s",
                                  got, "");
            if (rc) return rc;
            continue;
        }
        for (int k = 0; k < 6; k++) f[k] = trim_field(f[k]);
        if (!seen_content && strcmp(f[0], "File_name") == 0) {   // header
            seen_content = 1;
            ds->header = 1;
            continue;
        }
        seen_content = 1;
        froc_det d;
        memset(&d, 0, sizeof d);
        d.line = lineno;
        size_t nl = strlen(f[0]);
        if (nl == 0 || nl >= FROC_NAME) {
            int rc = dets_add_bad(ds, label, lineno, "File_name '%s' is empty or longer than 63 chars%s", f[0], "");
            if (rc) return rc;
            continue;
        }
        memcpy(d.file, f[0], nl + 1);
        int ok = 1;
        for (int k = 1; k < 6 && ok; k++) {
            char *end = NULL;
            errno = 0;
            double v = strtod(f[k], &end);
            if (end == f[k] || *end != 0 || !isfinite(v)) {
                int rc = dets_add_bad(ds, label, lineno, "column %s: '%s' is not a finite number", cols[k], f[k]);
                if (rc) return rc;
                ok = 0;
            } else if (k <= 4) {
                d.box[k - 1] = v;
            } else {
                d.score = v;
            }
        }
        if (!ok) continue;
        if (d.box[2] < d.box[0] || d.box[3] < d.box[1]) {
            int rc = dets_add_bad(ds, label, lineno, "box has x2 < x1 or y2 < y1 (%s)%s", "x1,y1,x2,y2 expected", "");
            if (rc) return rc;
            continue;
        }
        int rc = froc_dets_push(ds, &d);
        if (rc) return rc;
    }
    return 0;
}

int froc_dets_read(froc_dets *ds, const char *path) {
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = pl_read_file(path, &buf, &len);
    if (rc) return rc;
    rc = froc_dets_parse(ds, (const char *)buf, len, path);
    free(buf);
    return rc;
}

void froc_dets_free(froc_dets *ds) {
    if (!ds) return;
    free(ds->d);
    free(ds->bad);
    memset(ds, 0, sizeof *ds);
}

int froc_dets_write(const char *path, const froc_det *d, int64_t n) {
    size_t cap = 64 + (size_t)n * 160, len = 0;
    char *buf = pl_malloc(cap, "detections CSV text");
    if (!buf) return PL_ENOMEM;
    len += (size_t)snprintf(buf, cap, "File_name,x1,y1,x2,y2,score\n");
    for (int64_t i = 0; i < n; i++) {
        int w = snprintf(buf + len, cap - len, "%s,%.10g,%.10g,%.10g,%.10g,%.10g\n", d[i].file, d[i].box[0],
                         d[i].box[1], d[i].box[2], d[i].box[3], d[i].score);
        PL_ASSERT(w > 0 && (size_t)w < cap - len);
        len += (size_t)w;
    }
    int rc = pl_write_file_atomic(path, buf, len);
    free(buf);
    return rc;
}

// ---------------------------------------------------------------------------------------
// the set

static const froc_image *g_sort_images;   // qsort has no context argument; set just before use
static int cmp_image_idx(const void *a, const void *b) {
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    int c = strcmp(g_sort_images[i].name, g_sort_images[j].name);
    return c ? c : (i > j) - (i < j);
}

// Order-preserving map of a score to an unsigned key, reversed so ascending key = descending score.
static uint64_t score_key(double v) {
    if (v == 0) v = 0;   // -0.0 ranks as 0.0
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    u = (u >> 63) ? ~u : (u | 0x8000000000000000ULL);
    return ~u;
}

// Rank order of items: score descending, then image name rank ascending, then input order.
// A stable counting sort by name rank (items arrive in input order), then a stable LSD radix
// sort on the score key: O(n), no comparator calls (qsort took ~1 s on 500k detections).
static int rank_order(int64_t *order, const double *score, const int64_t *nrank, int64_t n, int64_t n_names) {
    size_t nn = (size_t)(n ? n : 1);
    int64_t *cnt = pl_calloc((size_t)n_names + 1, sizeof *cnt, "name counts");
    int64_t *tmp = pl_malloc(nn * sizeof *tmp, "rank scratch");
    uint64_t *k0 = pl_malloc(nn * sizeof *k0, "rank keys"), *k1 = pl_malloc(nn * sizeof *k1, "rank keys");
    if (!cnt || !tmp || !k0 || !k1) {
        free(cnt);
        free(tmp);
        free(k0);
        free(k1);
        return PL_ENOMEM;
    }
    for (int64_t i = 0; i < n; i++) cnt[nrank[i] + 1]++;
    for (int64_t r = 0; r < n_names; r++) cnt[r + 1] += cnt[r];
    for (int64_t i = 0; i < n; i++) order[cnt[nrank[i]]++] = i;
    for (int64_t i = 0; i < n; i++) k0[i] = score_key(score[order[i]]);
    int64_t *src_i = order, *dst_i = tmp;
    uint64_t *src_k = k0, *dst_k = k1;
    for (int shift = 0; shift < 64; shift += 8) {
        int64_t h[257] = {0};
        for (int64_t i = 0; i < n; i++) h[((src_k[i] >> shift) & 255) + 1]++;
        int skip = 0;
        for (int b = 0; b < 256; b++) skip |= h[b + 1] == n;   // every key has this byte: nothing to do
        if (skip) continue;
        for (int b = 0; b < 256; b++) h[b + 1] += h[b];
        for (int64_t i = 0; i < n; i++) {
            int64_t pos = h[(src_k[i] >> shift) & 255]++;
            dst_k[pos] = src_k[i];
            dst_i[pos] = src_i[i];
        }
        int64_t *ti = src_i;
        src_i = dst_i, dst_i = ti;
        uint64_t *tk = src_k;
        src_k = dst_k, dst_k = tk;
    }
    if (src_i != order) memcpy(order, src_i, (size_t)n * sizeof *order);
    free(cnt);
    free(tmp);
    free(k0);
    free(k1);
    return 0;
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

void froc_set_free(froc_set *s) {
    if (!s) return;
    free(s->images);
    free(s->gt);
    free(s->det);
    free(s->unit);
    memset(s, 0, sizeof *s);
}

int froc_set_build(froc_set *s, const froc_image *images, int64_t n_images, const froc_gt *gt,
                   int64_t n_gt, const froc_det *dets, int64_t n_dets) {
    memset(s, 0, sizeof *s);
    int rc = 0;
    int64_t *by_name = NULL, *name_rank = NULL, *cnt = NULL, *item_rank = NULL, *order = NULL;
    int64_t *item_src = NULL, *item_img = NULL;   // in-set detections: input index, image
    double *item_score = NULL;
    int *pats = NULL;
    s->n_images = n_images;
    s->images = pl_calloc((size_t)(n_images ? n_images : 1), sizeof *s->images, "froc images");
    s->gt = pl_calloc((size_t)(n_gt ? n_gt : 1), sizeof *s->gt, "froc lesions");
    s->unit = pl_calloc((size_t)(n_images ? n_images : 1), sizeof *s->unit, "froc units");
    by_name = pl_malloc((size_t)(n_images ? n_images : 1) * sizeof *by_name, "image name index");
    name_rank = pl_malloc((size_t)(n_images ? n_images : 1) * sizeof *name_rank, "image name rank");
    cnt = pl_calloc((size_t)n_images + 1, sizeof *cnt, "lesions per image");
    item_src = pl_malloc((size_t)(n_dets ? n_dets : 1) * sizeof *item_src, "detection indices");
    item_img = pl_malloc((size_t)(n_dets ? n_dets : 1) * sizeof *item_img, "detection images");
    item_score = pl_malloc((size_t)(n_dets ? n_dets : 1) * sizeof *item_score, "detection scores");
    item_rank = pl_malloc((size_t)(n_dets ? n_dets : 1) * sizeof *item_rank, "detection name ranks");
    order = pl_malloc((size_t)(n_dets ? n_dets : 1) * sizeof *order, "detection order");
    pats = pl_malloc((size_t)(n_images ? n_images : 1) * sizeof *pats, "patients");
    if (!s->images || !s->gt || !s->unit || !by_name || !name_rank || !cnt || !item_src || !item_img || !item_score || !item_rank || !order || !pats) {
        rc = PL_ENOMEM;
        goto done;
    }
    memcpy(s->images, images, (size_t)n_images * sizeof *images);
    for (int64_t i = 0; i < n_images; i++) by_name[i] = i;
    g_sort_images = s->images;
    qsort(by_name, (size_t)n_images, sizeof *by_name, cmp_image_idx);
    for (int64_t r = 0; r < n_images; r++) {
        name_rank[by_name[r]] = r;
        if (r > 0 && strcmp(s->images[by_name[r]].name, s->images[by_name[r - 1]].name) == 0) {
            rc = pl_fail(PL_EINVAL, "froc: image name '%s' given twice (images %lld and %lld)",
                         s->images[by_name[r]].name, (long long)by_name[r - 1], (long long)by_name[r]);
            goto done;
        }
    }
    // lesions: counting sort by image, stable
    for (int64_t j = 0; j < n_gt; j++) {
        if (gt[j].image < 0 || gt[j].image >= n_images) {
            rc = pl_fail(PL_EINVAL, "froc: lesion %lld (line %d) has image index %lld, expected 0..%lld",
                         (long long)j, gt[j].line, (long long)gt[j].image, (long long)n_images - 1);
            goto done;
        }
        cnt[gt[j].image + 1]++;
    }
    for (int64_t i = 0; i < n_images; i++) {
        s->images[i].ngt = cnt[i + 1];
        cnt[i + 1] += cnt[i];
        s->images[i].gt0 = cnt[i];
    }
    for (int64_t j = 0; j < n_gt; j++) s->gt[cnt[gt[j].image]++] = gt[j];
    s->n_gt = n_gt;
    // detections: map names, rank
    int64_t nd = 0;
    for (int64_t i = 0; i < n_dets; i++) {
        if (!isfinite(dets[i].score)) {
            rc = pl_fail(PL_EINVAL, "froc: detection %lld (line %lld) has score %g", (long long)i,
                         (long long)dets[i].line, dets[i].score);
            goto done;
        }
        int64_t lo = 0, hi = n_images - 1, found = -1;
        while (lo <= hi) {
            int64_t mid = (lo + hi) / 2;
            int c = strcmp(dets[i].file, s->images[by_name[mid]].name);
            if (c == 0) {
                found = by_name[mid];
                break;
            }
            if (c < 0) hi = mid - 1;
            else lo = mid + 1;
        }
        if (found < 0) {
            s->n_det_outside++;
            continue;
        }
        item_src[nd] = i;
        item_img[nd] = found;
        item_score[nd] = dets[i].score;
        item_rank[nd++] = name_rank[found];
    }
    if ((rc = rank_order(order, item_score, item_rank, nd, n_images))) goto done;
    s->det = pl_malloc((size_t)(nd ? nd : 1) * sizeof *s->det, "ranked detections");
    if (!s->det) {
        rc = PL_ENOMEM;
        goto done;
    }
    for (int64_t i = 0; i < nd; i++) {
        const froc_det *src = &dets[item_src[order[i]]];
        froc_sdet *t = &s->det[i];
        memcpy(t->box, src->box, sizeof t->box);
        t->score = src->score;
        t->image = item_img[order[i]];
        t->src = item_src[order[i]];
        t->line = src->line;
    }
    s->n_det = nd;
    // bootstrap units: distinct patients, then one unit per image without a patient
    int64_t np = 0;
    for (int64_t i = 0; i < n_images; i++)
        if (s->images[i].patient >= 0) pats[np++] = s->images[i].patient;
    qsort(pats, (size_t)np, sizeof *pats, cmp_int);
    int64_t nu = 0;
    for (int64_t i = 0; i < np; i++)
        if (i == 0 || pats[i] != pats[i - 1]) pats[nu++] = pats[i];
    int64_t extra = nu;
    for (int64_t i = 0; i < n_images; i++) {
        int p = s->images[i].patient;
        if (p < 0) {
            s->unit[i] = (int)extra++;
            continue;
        }
        int *hit = bsearch(&p, pats, (size_t)nu, sizeof *pats, cmp_int);
        PL_ASSERT(hit != NULL);
        s->unit[i] = (int)(hit - pats);
    }
    s->n_units = extra;
done:
    free(by_name);
    free(name_rank);
    free(cnt);
    free(item_src);
    free(item_img);
    free(item_score);
    free(item_rank);
    free(order);
    free(pats);
    if (rc) froc_set_free(s);
    return rc;
}

static const dl_lesion *g_sort_rows;
static int cmp_row_idx(const void *a, const void *b) {
    int64_t i = *(const int64_t *)a, j = *(const int64_t *)b;
    int c = strcmp(g_sort_rows[i].file_name, g_sort_rows[j].file_name);
    return c ? c : (i > j) - (i < j);
}

int froc_set_from_dlinfo(froc_set *s, const dl_lesion *rows, int64_t n_rows, const froc_opts *o,
                         const froc_det *dets, int64_t n_dets) {
    memset(s, 0, sizeof *s);
    int64_t *sel = pl_malloc((size_t)(n_rows ? n_rows : 1) * sizeof *sel, "selected rows");
    froc_image *im = pl_calloc((size_t)(n_rows ? n_rows : 1), sizeof *im, "images");
    froc_gt *g = pl_calloc((size_t)(n_rows ? n_rows : 1), sizeof *g, "lesions");
    if (!sel || !im || !g) {
        free(sel);
        free(im);
        free(g);
        return PL_ENOMEM;
    }
    int64_t ns = 0;
    for (int64_t i = 0; i < n_rows; i++) {
        if (o->split != 0 && rows[i].split != o->split) continue;
        if (!o->keep_noisy && rows[i].noisy) continue;
        sel[ns++] = i;
    }
    g_sort_rows = rows;
    qsort(sel, (size_t)ns, sizeof *sel, cmp_row_idx);
    int64_t ni = 0;
    for (int64_t k = 0; k < ns; k++) {
        const dl_lesion *r = &rows[sel[k]];
        if (k == 0 || strcmp(r->file_name, rows[sel[k - 1]].file_name) != 0) {
            snprintf(im[ni].name, FROC_NAME, "%s", r->file_name);
            im[ni].patient = r->patient;
            ni++;
        }
        froc_gt *x = &g[k];
        memcpy(x->box, r->bbox, sizeof x->box);
        x->image = ni - 1;
        x->type = r->type;
        x->long_mm = (r->diam_px[0] > 0 && r->spacing[0] > 0) ? r->diam_px[0] * r->spacing[0] : NAN;
        x->slice_mm = r->spacing[2] > 0 ? r->spacing[2] : NAN;
        x->noisy = r->noisy;
        x->line = r->line;
    }
    int rc = froc_set_build(s, im, ni, g, ns, dets, n_dets);
    free(sel);
    free(im);
    free(g);
    return rc;
}

int froc_set_from_shard(froc_set *set, int *labelled, const lesion_shard *s, const froc_opts *o, const froc_det *dets,
                        int64_t n_dets) {
    memset(set, 0, sizeof *set);
    *labelled = s->nrows > 0;
    if (!*labelled) return 0;
    froc_image *im = pl_calloc((size_t)s->n + 1, sizeof *im, "images");
    froc_gt *g = pl_calloc((size_t)s->nrows + 1, sizeof *g, "lesions");
    if (!im || !g) {
        free(im);
        free(g);
        return PL_ENOMEM;
    }
    int64_t ni = 0, ng = 0;
    for (int64_t i = 0; i < s->n; i++) {
        int64_t g0 = ng;
        for (int64_t j = s->off[i]; j < s->off[i + 1]; j++) {
            if (!o->keep_noisy && s->noisy[j]) continue;
            froc_gt *x = &g[ng++];
            memcpy(x->box, s->boxes_orig + 4 * j, sizeof x->box);
            x->image = ni;
            x->type = s->type[j];
            x->long_mm = s->diam_mm[2 * j] > 0 ? s->diam_mm[2 * j] : NAN;
            x->slice_mm = s->spacing[3 * i + 2] > 0 ? s->spacing[3 * i + 2] : NAN;
            x->noisy = s->noisy[j];
            x->line = 0;
        }
        if (ng == g0) continue;   // no scored lesion: not an evaluated image (as from DL_info.csv)
        snprintf(im[ni].name, FROC_NAME, "%s", s->names[i]);
        im[ni].patient = s->ids[4 * i];
        ni++;
    }
    int rc = froc_set_build(set, im, ni, g, ng, dets, n_dets);
    free(im);
    free(g);
    return rc;
}

// ---------------------------------------------------------------------------------------
// the walk

double froc_iou(const double *a, const double *b, int plus1) {
    double one = plus1 ? 1.0 : 0.0;
    double iw = PL_MIN(a[2], b[2]) - PL_MAX(a[0], b[0]) + one;
    double ih = PL_MIN(a[3], b[3]) - PL_MAX(a[1], b[1]) + one;
    if (iw <= 0 || ih <= 0) return 0.0;
    double inter = iw * ih;
    double ua = (a[2] - a[0] + one) * (a[3] - a[1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one) - inter;
    return ua > 0 ? inter / ua : 0.0;
}

void froc_curve_free(froc_curve *c) {
    if (!c) return;
    free(c->tp);
    free(c->fp);
    free(c->new_hits);
    free(c->is_fp);
    free(c->best_iou);
    free(c->found_by);
    free(c->gt_best_iou);
    memset(c, 0, sizeof *c);
}

// The FP count whose arrival ends the value reported at `level` (see enum froc_fp_rule).
static int64_t fp_cut(double level, int64_t n_images, enum froc_fp_rule rule) {
    double K = level * (double)n_images;
    double eps = k_int_eps * PL_MAX(1.0, K);
    double k = floor(K + 0.5);
    int integer = fabs(K - k) <= eps;
    if (rule == FROC_FP_FIRST_AT && integer && k >= 1) return (int64_t)k;
    return (int64_t)floor(K + eps) + 1;
}

int64_t froc_level_rank(const int64_t *fp, int64_t n, int64_t n_images, double fp_per_image,
                        enum froc_fp_rule rule) {
    int64_t c = fp_cut(fp_per_image, n_images, rule);
    int64_t lo = 0, hi = n;   // first rank whose cumulative FP count reaches c (fp is non-decreasing)
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (fp[mid] >= c) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

double froc_sens_at(const int64_t *tp, const int64_t *fp, int64_t n, int64_t n_images, int64_t n_lesions,
                    double fp_per_image, enum froc_fp_rule rule) {
    if (n_lesions <= 0) return NAN;
    if (n <= 0) return 0.0;
    int64_t r = froc_level_rank(fp, n, n_images, fp_per_image, rule);
    // the detection at rank r is the FP that ends the count: it found nothing, so tp[r] = tp[r-1]
    return (double)(r < n ? tp[r] : tp[n - 1]) / (double)n_lesions;
}

int froc_walk(froc_curve *c, const froc_set *s, const uint8_t *mask, const froc_opts *o) {
    memset(c, 0, sizeof *c);
    int64_t n = s->n_det, m = s->n_gt;
    size_t nn = (size_t)(n ? n : 1), mm = (size_t)(m ? m : 1);
    c->tp = pl_malloc(nn * sizeof *c->tp, "froc tp");
    c->fp = pl_malloc(nn * sizeof *c->fp, "froc fp");
    c->new_hits = pl_malloc(nn * sizeof *c->new_hits, "froc hits");
    c->is_fp = pl_malloc(nn * sizeof *c->is_fp, "froc fp flags");
    c->best_iou = pl_malloc(nn * sizeof *c->best_iou, "froc det iou");
    c->found_by = pl_malloc(mm * sizeof *c->found_by, "froc found_by");
    c->gt_best_iou = pl_calloc(mm, sizeof *c->gt_best_iou, "froc lesion iou");
    if (!c->tp || !c->fp || !c->new_hits || !c->is_fp || !c->best_iou || !c->found_by || !c->gt_best_iou) {
        froc_curve_free(c);
        return PL_ENOMEM;
    }
    c->n_images = s->n_images;
    c->n_dets = n;
    for (int64_t j = 0; j < m; j++) {
        c->found_by[j] = -1;
        if (!mask || mask[j]) c->n_lesions++;
    }
    int64_t tp = 0, fp = 0;
    for (int64_t i = 0; i < n; i++) {
        const froc_sdet *d = &s->det[i];
        const froc_image *im = &s->images[d->image];
        double best = 0;
        int any = 0;
        int32_t nh = 0;
        for (int64_t j = im->gt0; j < im->gt0 + im->ngt; j++) {
            if (mask && !mask[j]) continue;
            double v = froc_iou(d->box, s->gt[j].box, o->iou_plus1);
            if (v > best) best = v;
            if (v > c->gt_best_iou[j]) c->gt_best_iou[j] = v;
            if (v >= o->iou) {
                any = 1;
                if (c->found_by[j] < 0) {
                    c->found_by[j] = i;
                    nh++;
                }
            }
        }
        tp += nh;
        fp += !any;
        c->tp[i] = tp;
        c->fp[i] = fp;
        c->new_hits[i] = nh;
        c->is_fp[i] = (uint8_t)!any;
        c->best_iou[i] = best;
    }
    double sum = 0;
    for (int k = 0; k < FROC_NLEVELS; k++) {
        c->sens[k] = froc_sens_at(c->tp, c->fp, n, s->n_images, c->n_lesions, froc_levels[k], o->fp_rule);
        if (k < FROC_NMFROC) sum += c->sens[k];
    }
    c->mfroc = sum / FROC_NMFROC;
    return 0;
}

// ---------------------------------------------------------------------------------------
// AP

int froc_ap(double *ap, const froc_set *s, const uint8_t *mask, const froc_opts *o) {
    int64_t n = s->n_det, L = 0;
    for (int64_t j = 0; j < s->n_gt; j++) L += !mask || mask[j];
    if (L == 0) {
        *ap = NAN;
        return 0;
    }
    if (n == 0) {
        *ap = 0;
        return 0;
    }
    uint8_t *matched = pl_calloc((size_t)(s->n_gt ? s->n_gt : 1), 1, "ap matched");
    double *prec = pl_malloc((size_t)n * sizeof *prec, "ap precision");
    double *rec = pl_malloc((size_t)n * sizeof *rec, "ap recall");
    if (!matched || !prec || !rec) {
        free(matched);
        free(prec);
        free(rec);
        return PL_ENOMEM;
    }
    int64_t tp = 0, fp = 0;
    for (int64_t i = 0; i < n; i++) {
        const froc_sdet *d = &s->det[i];
        const froc_image *im = &s->images[d->image];
        double best = -1;
        int64_t bj = -1;
        for (int64_t j = im->gt0; j < im->gt0 + im->ngt; j++) {
            if ((mask && !mask[j]) || matched[j]) continue;
            double v = froc_iou(d->box, s->gt[j].box, o->iou_plus1);
            if (v >= o->iou && v > best) {
                best = v;
                bj = j;
            }
        }
        if (bj >= 0) {
            matched[bj] = 1;
            tp++;
        } else {
            fp++;
        }
        prec[i] = (double)tp / (double)(tp + fp);
        rec[i] = (double)tp / (double)L;
    }
    for (int64_t i = n - 2; i >= 0; i--)
        if (prec[i + 1] > prec[i]) prec[i] = prec[i + 1];
    double sum = 0;
    for (int r = 0; r <= 100; r++) {
        double rr = r / 100.0;
        int64_t lo = 0, hi = n;
        while (lo < hi) {
            int64_t mid = lo + (hi - lo) / 2;
            if (rec[mid] >= rr) hi = mid;
            else lo = mid + 1;
        }
        if (lo < n) sum += prec[lo];
    }
    *ap = sum / 101.0;
    free(matched);
    free(prec);
    free(rec);
    return 0;
}

// ---------------------------------------------------------------------------------------
// bootstrap over patients

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Linear-interpolated percentile of sorted v[0..n) (numpy's default), q in [0, 1].
static double percentile_sorted(const double *v, int64_t n, double q) {
    if (n <= 0) return NAN;
    double pos = q * (double)(n - 1);
    int64_t i = (int64_t)floor(pos);
    if (i >= n - 1) return v[n - 1];
    double f = pos - (double)i;
    return v[i] + f * (v[i + 1] - v[i]);
}

int froc_bootstrap(froc_ci *ci, const froc_set *s, const froc_curve *c, const uint8_t *mask,
                   const froc_opts *o, int reps, uint64_t seed) {
    enum { NV = FROC_NLEVELS + 1 };
    ci->reps = reps;
    for (int k = 0; k < NV; k++) ci->lo[k] = ci->hi[k] = NAN;
    if (reps <= 0 || s->n_units == 0) return 0;
    int64_t U = s->n_units, n = s->n_det;
    int32_t *w = pl_malloc((size_t)U * sizeof *w, "bootstrap weights");
    int64_t *les_unit = pl_calloc((size_t)U, sizeof *les_unit, "lesions per unit");
    int64_t *img_unit = pl_calloc((size_t)U, sizeof *img_unit, "images per unit");
    // One compact step per detection that changes the curve: duplicates (neither TP nor FP)
    // never do. v = -1 for an FP, else the lesions it found first.
    typedef struct { int32_t unit, v; } step;
    step *st = pl_malloc((size_t)(n ? n : 1) * sizeof *st, "bootstrap steps");
    double *vals = pl_malloc((size_t)reps * NV * sizeof *vals, "bootstrap values");
    double *tmp = pl_malloc((size_t)reps * sizeof *tmp, "bootstrap column");
    int rc = 0;
    if (!w || !les_unit || !img_unit || !st || !vals || !tmp) {
        rc = PL_ENOMEM;
        goto done;
    }
    for (int64_t i = 0; i < s->n_images; i++) {
        img_unit[s->unit[i]]++;
        const froc_image *im = &s->images[i];
        for (int64_t j = im->gt0; j < im->gt0 + im->ngt; j++) les_unit[s->unit[i]] += !mask || mask[j];
    }
    int64_t nk = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!c->is_fp[i] && !c->new_hits[i]) continue;
        st[nk].unit = s->unit[s->det[i].image];
        st[nk++].v = c->is_fp[i] ? -1 : c->new_hits[i];
    }
    pl_rng rng;
    pl_rng_seed(&rng, seed);
    for (int r = 0; r < reps; r++) {
        memset(w, 0, (size_t)U * sizeof *w);
        for (int64_t u = 0; u < U; u++) w[pl_rng_int(&rng, 0, U - 1)]++;
        int64_t N = 0, L = 0;
        for (int64_t u = 0; u < U; u++) {
            N += w[u] * img_unit[u];
            L += w[u] * les_unit[u];
        }
        int64_t cut[FROC_NLEVELS];
        for (int k = 0; k < FROC_NLEVELS; k++) cut[k] = fp_cut(froc_levels[k], N, o->fp_rule);
        int64_t T = 0, F = 0, next = cut[0];
        double v[NV];
        int k = 0;
        // Each copy of a patient repeats the same outcomes: a detection counts w times.
        for (int64_t q = 0; q < nk; q++) {
            int32_t ww = w[st[q].unit];
            if (st[q].v < 0) {
                F += ww;
                if (F >= next) {
                    while (k < FROC_NLEVELS && F >= cut[k]) v[k++] = (double)T;
                    if (k == FROC_NLEVELS) break;
                    next = cut[k];
                }
            } else {
                T += (int64_t)ww * st[q].v;
            }
        }
        while (k < FROC_NLEVELS) v[k++] = (double)T;
        double sum = 0;
        for (k = 0; k < FROC_NLEVELS; k++) {
            v[k] = L > 0 ? v[k] / (double)L : NAN;
            if (k < FROC_NMFROC) sum += v[k];
        }
        v[FROC_NLEVELS] = sum / FROC_NMFROC;
        memcpy(vals + (size_t)r * NV, v, sizeof v);
    }
    for (int k = 0; k < NV; k++) {
        int64_t m = 0;
        for (int r = 0; r < reps; r++) {
            double x = vals[(size_t)r * NV + k];
            if (isfinite(x)) tmp[m++] = x;
        }
        qsort(tmp, (size_t)m, sizeof *tmp, cmp_double);
        ci->lo[k] = percentile_sorted(tmp, m, 0.025);
        ci->hi[k] = percentile_sorted(tmp, m, 0.975);
    }
done:
    free(w);
    free(les_unit);
    free(img_unit);
    free(st);
    free(vals);
    free(tmp);
    return rc;
}

// ---------------------------------------------------------------------------------------
// sub-groups and the whole evaluation

static const char *const k_type_names[8] = {"bone", "abdomen", "mediastinum", "liver",
                                            "lung", "kidney", "soft tissue", "pelvis"};

const char *froc_type_name(int type) { return type >= 1 && type <= 8 ? k_type_names[type - 1] : "unknown"; }

int froc_group_has(int k, const froc_gt *g) {
    if (k < 8) return g->type == k + 1;
    switch (k) {
    case 8: return g->long_mm < 10;
    case 9: return g->long_mm >= 10 && g->long_mm <= 30;
    case 10: return g->long_mm > 30;
    case 11: return g->slice_mm <= 2;
    case 12: return g->slice_mm > 2;
    default: return 0;
    }
}

static void group_label(froc_group *g, int k) {
    static const char *const names[5] = {"< 10 mm", "10-30 mm", "> 30 mm", "<= 2 mm", "> 2 mm"};
    if (k < 8) {
        snprintf(g->name, sizeof g->name, "%s", k_type_names[k]);
        snprintf(g->kind, sizeof g->kind, "type");
    } else {
        snprintf(g->name, sizeof g->name, "%s", names[k - 8]);
        snprintf(g->kind, sizeof g->kind, "%s", k < 11 ? "size" : "thickness");
    }
}

void froc_eval_free(froc_eval *ev) {
    if (!ev) return;
    froc_curve_free(&ev->all);
}

int froc_evaluate(froc_eval *ev, const froc_set *s, const froc_opts *o, int boot_reps, uint64_t seed) {
    memset(ev, 0, sizeof *ev);
    double t0 = pl_time();
    ev->opts = *o;
    int rc = froc_walk(&ev->all, s, NULL, o);
    if (!rc) rc = froc_ap(&ev->ap50, s, NULL, o);
    if (!rc) rc = froc_bootstrap(&ev->ci, s, &ev->all, NULL, o, boot_reps, seed);
    uint8_t *mask = rc ? NULL : pl_malloc((size_t)(s->n_gt ? s->n_gt : 1), "group mask");
    if (!rc && !mask) rc = PL_ENOMEM;
    for (int k = 0; k < FROC_NGROUPS && !rc; k++) {
        froc_group *g = &ev->groups[k];
        group_label(g, k);
        g->n_lesions = 0;
        for (int64_t j = 0; j < s->n_gt; j++) {
            mask[j] = (uint8_t)froc_group_has(k, &s->gt[j]);
            g->n_lesions += mask[j];
        }
        froc_curve gc;
        rc = froc_walk(&gc, s, mask, o);
        if (rc) break;
        memcpy(g->sens, gc.sens, sizeof g->sens);
        g->mfroc = g->n_lesions ? gc.mfroc : NAN;
        if (g->n_lesions) rc = froc_bootstrap(&g->ci, s, &gc, mask, o, boot_reps, seed);
        else froc_bootstrap(&g->ci, s, &gc, mask, o, 0, seed);
        froc_curve_free(&gc);
    }
    free(mask);
    ev->seconds = pl_time() - t0;
    if (rc) froc_eval_free(ev);
    return rc;
}
