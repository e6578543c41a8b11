// cocoeval: pycocotools COCOeval (iouType 'bbox') in C. Source: cocodataset/cocoapi,
// PythonAPI/pycocotools/cocoeval.py (evaluateImg, accumulate, summarize) and common/maskApi.c
// (bbIou). Each step below names the pycocotools lines it reproduces; floating-point operations
// are done in the same order so results agree to the last bits, not just approximately.
#include "stages/score/cocoeval.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "nn/pl.h"

// Params.setDetParams: iouThrs = np.linspace(.5, .95, 10), recThrs = np.linspace(0, 1, 101),
// areaRng all/small/medium/large = [0, 1e5^2], [0, 32^2], [32^2, 96^2], [96^2, 1e5^2],
// maxDets = [1, 10, 100] (the last one from opts here).
enum { NT = 10, NR = 101, NA = 4, NM = 3 };
static const double k_area_rng[NA][2] = {{0, 1e10}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e10}};

// np.linspace(start, stop, num): step = (stop - start) / (num - 1); y[i] = i * step + start;
// y[num - 1] = stop (numpy/core/function_base.py).
static void linspace(double *y, double start, double stop, int num) {
    double step = (stop - start) / (double)(num - 1);
    for (int i = 0; i < num; i++) y[i] = (double)i * step + start;
    y[num - 1] = stop;
}

void coco_eval_opts_default(coco_eval_opts *o) {
    o->max_dets = 100;
    o->plus1 = 0;
}

void coco_eval_result_free(coco_eval_result *r) {
    if (!r) return;
    free(r->cat_ids);
    free(r->ap_per_cat);
    free(r->ap50_per_cat);
    r->cat_ids = NULL;
    r->ap_per_cat = NULL;
    r->ap50_per_cat = NULL;
    r->ncat = 0;
}

// ---------------------------------------------------------------------------------------
// input preparation

typedef struct {
    double x, y, w, h;      // pycocotools bbox (x, y, w, h)
    double area;            // gt: the area field (or box area); det: w * h (COCO.loadRes)
    double score;           // dets only
    int crowd;              // gts only
    int cat;                // index into the category list
    int64_t img;            // index into the sorted unique image list
    int64_t src;            // input index (keeps input order on ties)
} ebox;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}
static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}
// gts: (category, image, input order) = the order of COCO._gts[img, cat] lists.
static int cmp_gt(const void *a, const void *b) {
    const ebox *x = a, *y = b;
    if (x->cat != y->cat) return x->cat < y->cat ? -1 : 1;
    if (x->img != y->img) return x->img < y->img ? -1 : 1;
    return (x->src > y->src) - (x->src < y->src);
}
// dets: (category, image, score descending, input order) = evaluateImg's
// np.argsort(-score, kind='mergesort') of each COCO._dts[img, cat] list.
static int cmp_det(const void *a, const void *b) {
    const ebox *x = a, *y = b;
    if (x->cat != y->cat) return x->cat < y->cat ? -1 : 1;
    if (x->img != y->img) return x->img < y->img ? -1 : 1;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->src > y->src) - (x->src < y->src);
}

static int64_t find_i64(const int64_t *a, int64_t n, int64_t v) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == v ? lo : -1;
}
static int find_i32(const int32_t *a, int n, int32_t v) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (a[mid] < v) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && a[lo] == v ? lo : -1;
}

static int check_box(const double *b, const char *what, int64_t i) {
    for (int j = 0; j < 4; j++)
        if (!isfinite(b[j]))
            return pl_fail(PL_EINVAL, "coco_eval: %s %lld: box[%d] = %g is not finite", what, (long long)i, j,
                           b[j]);
    if (b[2] < b[0] || b[3] < b[1])
        return pl_fail(PL_EINVAL, "coco_eval: %s %lld: box (%g, %g, %g, %g) has x2 < x1 or y2 < y1 "
                       "(boxes are x1, y1, x2, y2)", what, (long long)i, b[0], b[1], b[2], b[3]);
    return 0;
}

static void to_xywh(ebox *e, const double *b, int plus1) {
    e->x = b[0];
    e->y = b[1];
    e->w = b[2] - b[0] + plus1;
    e->h = b[3] - b[1] + plus1;
}

// maskApi.c bbIou: one det against one gt; crowd: intersection over the det's area.
static double bb_iou(const ebox *d, const ebox *g) {
    double w = fmin(d->w + d->x, g->w + g->x) - fmax(d->x, g->x);
    if (w <= 0) return 0;
    double h = fmin(d->h + d->y, g->h + g->y) - fmax(d->y, g->y);
    if (h <= 0) return 0;
    double i = w * h, da = d->w * d->h, ga = g->w * g->h;
    double u = g->crowd ? da : da + ga - i;
    return i / u;
}

// ---------------------------------------------------------------------------------------
// the evaluation

typedef struct {
    double score;
    int64_t pos;            // position in the category's det list (image order, then rank)
} sel_item;

static int cmp_sel(const void *a, const void *b) {
    const sel_item *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

// Mean of the values > -1 (summarize: np.mean(s[s > -1]), -1 when there are none).
typedef struct { double sum; int64_t n; } mean_acc;
static void acc_add(mean_acc *m, double v) {
    if (v > -1) m->sum += v, m->n++;
}
static double acc_mean(const mean_acc *m) { return m->n ? m->sum / (double)m->n : -1; }

int coco_eval_run(coco_eval_result *r, const coco_eval_gt *gt, int64_t ngt, const coco_eval_det *dets,
                  int64_t ndet, const int64_t *image_ids, int64_t nimages, const coco_eval_opts *o) {
    if (!r) return pl_fail(PL_EINVAL, "coco_eval_run: result is NULL");
    memset(r, 0, sizeof *r);
    if (!o) return pl_fail(PL_EINVAL, "coco_eval_run: opts is NULL");
    if (o->max_dets < 1) return pl_fail(PL_EINVAL, "coco_eval_run: max_dets = %d (must be >= 1)", o->max_dets);
    if (o->plus1 != 0 && o->plus1 != 1)
        return pl_fail(PL_EINVAL, "coco_eval_run: plus1 = %d (must be 0 or 1)", o->plus1);
    if (ngt < 0 || ndet < 0 || nimages < 0)
        return pl_fail(PL_EINVAL, "coco_eval_run: negative count (ngt %lld, ndet %lld, nimages %lld)",
                       (long long)ngt, (long long)ndet, (long long)nimages);
    if ((ngt && !gt) || (ndet && !dets) || (nimages && !image_ids))
        return pl_fail(PL_EINVAL, "coco_eval_run: NULL array with a non-zero count");
    for (int64_t i = 0; i < ngt; i++) {
        int rc = check_box(gt[i].box, "gt", i);
        if (rc) return rc;
        if (!isfinite(gt[i].area))
            return pl_fail(PL_EINVAL, "coco_eval: gt %lld: area = %g is not finite", (long long)i, gt[i].area);
    }
    for (int64_t i = 0; i < ndet; i++) {
        int rc = check_box(dets[i].box, "det", i);
        if (rc) return rc;
        if (!isfinite(dets[i].score))
            return pl_fail(PL_EINVAL, "coco_eval: det %lld: score = %g is not finite", (long long)i,
                           dets[i].score);
    }

    const int maxdets[NM] = {1, 10, o->max_dets};
    double iou_thrs[NT], rec_thrs[NR];
    linspace(iou_thrs, 0.5, 0.95, NT);
    linspace(rec_thrs, 0.0, 1.0, NR);

    int rc = 0;
    int64_t *imgs = NULL, nimg = 0;
    int32_t *cats = NULL;
    int ncat = 0;
    ebox *g = NULL, *d = NULL;
    int64_t ng = 0, nd = 0;
    double *prec = NULL, *rec = NULL, *ious = NULL, *rcv = NULL, *prv = NULL;
    uint8_t *match = NULL, *ign = NULL, *gig = NULL, *gtm = NULL;
    int64_t *gorder = NULL;
    sel_item *sel = NULL;
    int *rank = NULL;
    int64_t nious = 0;

    // Params.imgIds = np.unique(imgIds)
    if (nimages) {
        imgs = pl_malloc((size_t)nimages * sizeof *imgs, "coco_eval image ids");
        if (!imgs) { rc = PL_ENOMEM; goto done; }
        memcpy(imgs, image_ids, (size_t)nimages * sizeof *imgs);
        qsort(imgs, (size_t)nimages, sizeof *imgs, cmp_i64);
        for (int64_t i = 0; i < nimages; i++)
            if (i == 0 || imgs[i] != imgs[nimg - 1]) imgs[nimg++] = imgs[i];
    }

    // the categories of the gts and dets on evaluated images
    cats = pl_malloc((size_t)(ngt + ndet + 1) * sizeof *cats, "coco_eval categories");
    g = pl_malloc((size_t)(ngt + 1) * sizeof *g, "coco_eval gts");
    d = pl_malloc((size_t)(ndet + 1) * sizeof *d, "coco_eval dets");
    if (!cats || !g || !d) { rc = PL_ENOMEM; goto done; }
    {
        int64_t nc = 0;
        for (int64_t i = 0; i < ngt; i++)
            if (find_i64(imgs, nimg, gt[i].image) >= 0) cats[nc++] = gt[i].category;
        for (int64_t i = 0; i < ndet; i++)
            if (find_i64(imgs, nimg, dets[i].image) >= 0) cats[nc++] = dets[i].category;
        qsort(cats, (size_t)nc, sizeof *cats, cmp_i32);
        for (int64_t i = 0; i < nc; i++)
            if (i == 0 || cats[i] != cats[ncat - 1]) cats[ncat++] = cats[i];
    }
    for (int64_t i = 0; i < ngt; i++) {
        int64_t im = find_i64(imgs, nimg, gt[i].image);
        if (im < 0) continue;
        ebox *e = &g[ng++];
        memset(e, 0, sizeof *e);
        to_xywh(e, gt[i].box, o->plus1);
        e->area = gt[i].area > 0 ? gt[i].area : e->w * e->h;
        e->crowd = gt[i].iscrowd != 0;   // COCOeval._prepare: gt['ignore'] = iscrowd
        e->cat = find_i32(cats, ncat, gt[i].category);
        e->img = im;
        e->src = i;
    }
    for (int64_t i = 0; i < ndet; i++) {
        int64_t im = find_i64(imgs, nimg, dets[i].image);
        if (im < 0) continue;
        ebox *e = &d[nd++];
        memset(e, 0, sizeof *e);
        to_xywh(e, dets[i].box, o->plus1);
        e->area = e->w * e->h;   // COCO.loadRes: ann['area'] = bb[2] * bb[3]
        e->score = dets[i].score;
        e->cat = find_i32(cats, ncat, dets[i].category);
        e->img = im;
        e->src = i;
    }
    qsort(g, (size_t)ng, sizeof *g, cmp_gt);
    qsort(d, (size_t)nd, sizeof *d, cmp_det);

    // rank of each det within its (image, category) list; computeIoU/evaluateImg keep the first
    // maxDets[-1]. Compact d to the kept ones and find the largest per-category count.
    rank = pl_malloc((size_t)(nd + 1) * sizeof *rank, "coco_eval det ranks");
    if (!rank) { rc = PL_ENOMEM; goto done; }
    int64_t nkept = 0, max_cat_dets = 0, max_cell_g = 0;
    {
        int64_t run = 0;
        for (int64_t i = 0; i < nd; i++) {
            if (i > 0 && d[i].cat == d[i - 1].cat && d[i].img == d[i - 1].img) run++;
            else run = 0;
            if (run < o->max_dets) {
                d[nkept] = d[i];
                rank[nkept] = (int)run;
                nkept++;
            }
        }
        int64_t c = 0;
        for (int64_t i = 0; i < nkept; i++) {
            c = (i > 0 && d[i].cat == d[i - 1].cat) ? c + 1 : 1;
            if (c > max_cat_dets) max_cat_dets = c;
        }
        c = 0;
        for (int64_t i = 0; i < ng; i++) {
            c = (i > 0 && g[i].cat == g[i - 1].cat && g[i].img == g[i - 1].img) ? c + 1 : 1;
            if (c > max_cell_g) max_cell_g = c;
        }
    }

    // eval['precision'] (T, R, K, A, M) and eval['recall'] (T, K, A, M), stored here as
    // prec[(((k * NA + a) * NM + m) * NT + t) * NR + ri] and rec[((k * NA + a) * NM + m) * NT + t].
    size_t nprec = (size_t)ncat * NA * NM * NT;
    prec = pl_malloc((nprec * NR + 1) * sizeof *prec, "coco_eval precision");
    rec = pl_malloc((nprec + 1) * sizeof *rec, "coco_eval recall");
    size_t ncd = (size_t)max_cat_dets + 1;
    match = pl_malloc(ncd * NA * NT, "coco_eval det matches");    // (A, dets of the category, T)
    ign = pl_malloc(ncd * NA * NT, "coco_eval det ignore flags");  // (A, dets of the category, T)
    sel = pl_malloc(ncd * sizeof *sel, "coco_eval selection");
    rcv = pl_malloc(ncd * sizeof *rcv, "coco_eval recall curve");
    prv = pl_malloc(ncd * sizeof *prv, "coco_eval precision curve");
    gig = pl_malloc((size_t)max_cell_g + 1, "coco_eval gt ignore flags");
    gtm = pl_malloc((size_t)max_cell_g + 1, "coco_eval gt matches");
    gorder = pl_malloc(((size_t)max_cell_g + 1) * sizeof *gorder, "coco_eval gt order");
    if (!prec || !rec || !match || !ign || !sel || !rcv || !prv || !gig || !gtm || !gorder) {
        rc = PL_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < nprec * NR; i++) prec[i] = -1;
    for (size_t i = 0; i < nprec; i++) rec[i] = -1;

    int64_t gi = 0, di = 0;
    for (int k = 0; k < ncat; k++) {
        int64_t g0 = gi, d0 = di;
        while (gi < ng && g[gi].cat == k) gi++;
        while (di < nkept && d[di].cat == k) di++;
        int64_t kd = di - d0;   // dets of this category (after the per-image cut)
        int64_t npig[NA] = {0};

        // evaluateImg for every image with gts or dets of category k
        int64_t ga = g0, da = d0;
        while (ga < gi || da < di) {
            int64_t im = ga < gi ? g[ga].img : INT64_MAX;
            if (da < di && d[da].img < im) im = d[da].img;
            int64_t gb = ga, db = da;
            while (gb < gi && g[gb].img == im) gb++;
            while (db < di && d[db].img == im) db++;
            int64_t G = gb - ga, D = db - da;
            const ebox *cg = g + ga, *cd = d + da;

            // computeIoU: ious (D, G) in det rank order
            if (D * G > nious) {
                double *ni = pl_realloc(ious, (size_t)(D * G) * sizeof *ni, "coco_eval ious");
                if (!ni) { rc = PL_ENOMEM; goto done; }
                ious = ni;
                nious = D * G;
            }
            for (int64_t x = 0; x < D; x++)
                for (int64_t y = 0; y < G; y++) ious[x * G + y] = bb_iou(&cd[x], &cg[y]);

            for (int a = 0; a < NA; a++) {
                double lo = k_area_rng[a][0], hi = k_area_rng[a][1];
                // gt['_ignore'] = ignore or area outside aRng; gts sorted ignore-last (mergesort)
                int64_t no = 0;
                for (int64_t y = 0; y < G; y++) {
                    gig[y] = cg[y].crowd || cg[y].area < lo || cg[y].area > hi;
                    if (!gig[y]) gorder[no++] = y, npig[a]++;
                }
                for (int64_t y = 0; y < G; y++)
                    if (gig[y]) gorder[no++] = y;

                uint8_t *mt = match + ((size_t)a * ncd + (size_t)(da - d0)) * NT;
                uint8_t *it = ign + ((size_t)a * ncd + (size_t)(da - d0)) * NT;
                for (int t = 0; t < NT; t++) {
                    memset(gtm, 0, (size_t)G);
                    for (int64_t x = 0; x < D; x++) {
                        double iou = PL_MIN(iou_thrs[t], 1 - 1e-10);
                        int64_t m = -1;
                        for (int64_t j = 0; j < G; j++) {
                            int64_t y = gorder[j];
                            // already matched and not a crowd: next gt
                            if (gtm[y] && !cg[y].crowd) continue;
                            // matched to a regular gt and reached the ignored ones: stop
                            if (m > -1 && !gig[m] && gig[y]) break;
                            // not better than the best so far (equal IoU: the later gt wins)
                            if (ious[x * G + y] < iou) continue;
                            iou = ious[x * G + y];
                            m = y;
                        }
                        int area_out = cd[x].area < lo || cd[x].area > hi;
                        if (m == -1) {
                            mt[x * NT + t] = 0;
                            it[x * NT + t] = (uint8_t)area_out;   // unmatched and outside aRng
                        } else {
                            mt[x * NT + t] = 1;
                            it[x * NT + t] = gig[m];
                            gtm[m] = 1;
                        }
                    }
                }
            }
            ga = gb;
            da = db;
        }

        // accumulate: per area range and maxDet, the first maxDet dets of every image, in
        // image order, then np.argsort(-dtScores, kind='mergesort')
        for (int a = 0; a < NA; a++) {
            if (npig[a] == 0) continue;   // precision and recall stay -1
            for (int mi = 0; mi < NM; mi++) {
                int64_t n = 0;
                for (int64_t x = 0; x < kd; x++)
                    if (rank[d0 + x] < maxdets[mi]) sel[n].score = d[d0 + x].score, sel[n].pos = x, n++;
                qsort(sel, (size_t)n, sizeof *sel, cmp_sel);
                for (int t = 0; t < NT; t++) {
                    double tp = 0, fp = 0;
                    for (int64_t x = 0; x < n; x++) {
                        size_t off = ((size_t)a * ncd + (size_t)sel[x].pos) * NT + (size_t)t;
                        if (!ign[off]) {
                            if (match[off]) tp += 1;
                            else fp += 1;
                        }
                        rcv[x] = tp / (double)npig[a];
                        prv[x] = tp / (fp + tp + DBL_EPSILON);   // np.spacing(1)
                    }
                    size_t cell = (((size_t)k * NA + (size_t)a) * NM + (size_t)mi) * NT + (size_t)t;
                    rec[cell] = n ? rcv[n - 1] : 0;
                    for (int64_t x = n - 1; x > 0; x--)
                        if (prv[x] > prv[x - 1]) prv[x - 1] = prv[x];
                    // np.searchsorted(rc, recThrs, side='left'); past the end: 0
                    int64_t j = 0;
                    for (int ri = 0; ri < NR; ri++) {
                        while (j < n && rcv[j] < rec_thrs[ri]) j++;
                        prec[cell * NR + (size_t)ri] = j < n ? prv[j] : 0;
                    }
                }
            }
        }
    }

    // summarize
    {
        int t50 = -1, t75 = -1;   // np.where(iouThr == p.iouThrs)
        for (int t = 0; t < NT; t++) {
            if (iou_thrs[t] == 0.5) t50 = t;
            if (iou_thrs[t] == 0.75) t75 = t;
        }
        double *ap_out[] = {&r->ap, &r->ap50, &r->ap75, &r->ap_small, &r->ap_medium, &r->ap_large};
        const int ap_t[] = {-1, t50, t75, -1, -1, -1}, ap_a[] = {0, 0, 0, 1, 2, 3};
        for (int s = 0; s < 6; s++) {
            mean_acc acc = {0, 0};
            for (int k = 0; k < ncat; k++)
                for (int t = 0; t < NT; t++) {
                    if (ap_t[s] >= 0 && t != ap_t[s]) continue;
                    size_t cell = (((size_t)k * NA + (size_t)ap_a[s]) * NM + (NM - 1)) * NT + (size_t)t;
                    for (int ri = 0; ri < NR; ri++) acc_add(&acc, prec[cell * NR + (size_t)ri]);
                }
            *ap_out[s] = acc_mean(&acc);
        }
        if (t50 < 0) r->ap50 = -1;
        if (t75 < 0) r->ap75 = -1;
        double *ar_out[] = {&r->ar1, &r->ar10, &r->ar100, &r->ar_small, &r->ar_medium, &r->ar_large};
        const int ar_a[] = {0, 0, 0, 1, 2, 3}, ar_m[] = {0, 1, 2, 2, 2, 2};
        for (int s = 0; s < 6; s++) {
            mean_acc acc = {0, 0};
            for (int k = 0; k < ncat; k++)
                for (int t = 0; t < NT; t++)
                    acc_add(&acc, rec[(((size_t)k * NA + (size_t)ar_a[s]) * NM + (size_t)ar_m[s]) * NT + (size_t)t]);
            *ar_out[s] = acc_mean(&acc);
        }
        r->cat_ids = pl_malloc((size_t)(ncat + 1) * sizeof *r->cat_ids, "coco_eval category ids");
        r->ap_per_cat = pl_malloc((size_t)(ncat + 1) * sizeof *r->ap_per_cat, "coco_eval AP per category");
        r->ap50_per_cat = pl_malloc((size_t)(ncat + 1) * sizeof *r->ap50_per_cat, "coco_eval AP50 per category");
        if (!r->cat_ids || !r->ap_per_cat || !r->ap50_per_cat) { rc = PL_ENOMEM; goto done; }
        r->ncat = ncat;
        for (int k = 0; k < ncat; k++) {
            mean_acc all = {0, 0}, a50 = {0, 0};
            for (int t = 0; t < NT; t++) {
                size_t cell = (((size_t)k * NA) * NM + (NM - 1)) * NT + (size_t)t;
                for (int ri = 0; ri < NR; ri++) {
                    acc_add(&all, prec[cell * NR + (size_t)ri]);
                    if (t == t50) acc_add(&a50, prec[cell * NR + (size_t)ri]);
                }
            }
            r->cat_ids[k] = cats[k];
            r->ap_per_cat[k] = acc_mean(&all);
            r->ap50_per_cat[k] = acc_mean(&a50);
        }
        r->max_dets = o->max_dets;
        r->nimages = nimg;
        r->ngt = ng;
        r->ndet = nd;
    }

done:
    if (rc) {
        coco_eval_result_free(r);
        memset(r, 0, sizeof *r);
    }
    free(imgs);
    free(cats);
    free(g);
    free(d);
    free(rank);
    free(prec);
    free(rec);
    free(ious);
    free(rcv);
    free(prv);
    free(match);
    free(ign);
    free(gig);
    free(gtm);
    free(gorder);
    free(sel);
    return rc;
}

// ---------------------------------------------------------------------------------------
// JSON

int coco_eval_write_json(const char *path, const coco_eval_result *r) {
    if (!path || !r) return pl_fail(PL_EINVAL, "coco_eval_write_json: NULL path or result");
    size_t cap = 1024 + (size_t)r->ncat * 96;
    char *buf = pl_malloc(cap, "coco_eval json");
    if (!buf) return PL_ENOMEM;
    size_t n = 0;
#define PUT(...) n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, __VA_ARGS__)
    PUT("{\n");
    const char *names[] = {"ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
                           "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"};
    const double vals[] = {r->ap, r->ap50, r->ap75, r->ap_small, r->ap_medium, r->ap_large,
                           r->ar1, r->ar10, r->ar100, r->ar_small, r->ar_medium, r->ar_large};
    for (int i = 0; i < 12; i++) PUT("  \"%s\": %.17g,\n", names[i], vals[i]);
    PUT("  \"max_dets\": %d,\n  \"images\": %lld,\n  \"gts\": %lld,\n  \"dets\": %lld,\n", r->max_dets,
        (long long)r->nimages, (long long)r->ngt, (long long)r->ndet);
    PUT("  \"per_category\": [");
    for (int k = 0; k < r->ncat; k++)
        PUT("%s\n    {\"id\": %d, \"ap\": %.17g, \"ap50\": %.17g}", k ? "," : "", (int)r->cat_ids[k],
            r->ap_per_cat[k], r->ap50_per_cat[k]);
    PUT("%s]\n}\n", r->ncat ? "\n  " : "");
#undef PUT
    int rc;
    if (n >= cap) rc = pl_fail(PL_ERANGE, "coco_eval_write_json: %s: %zu bytes past the %zu buffer", path, n, cap);
    else rc = pl_write_file_atomic(path, buf, n);
    free(buf);
    return rc;
}
