// mp3d anchors: anchor ratios and scale from the training boxes ("anchor ratios from lesion size
// priors", MP3D). The boxes of input.root/train.h5 are taken to the network input frame at
// det.test_size, clustered by k-means on their (w, h) with 1 - IoU as distance (anchors_kmeans);
// the derived ratios are the clusters' h / w (near-equal ones merged) and the derived scale the
// one (on a 0.25 grid) that maximises the mean best-anchor IoU over all FPN levels. Reports that
// IoU for the configured and the derived sets and prints a config snippet (also written to
// output.dir/anchors.cfg when set). Rank 0 computes; the exit code is broadcast.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "nn/anchors.h"
#include "nn/pl.h"
#include "io/lesion_shard.h"
#include "nn/detector.h"
#include "stages/stages.h"

static const int k_kmeans_iters = 300;
static const double k_scale_lo = 1.0, k_scale_hi = 16.0, k_scale_step = 0.25;
static const double k_ratio_merge = 1.15;   // h/w ratios closer than this factor are one anchor shape

// Mean best IoU of the shapes against every anchor of (scale, ratios) on strides 4..64.
static double mean_iou_for(const float *wh, int64_t n, double scale, const double *ratios, int nr) {
    anchor_config ac;
    if (anchors_config_make(&ac, scale, ratios, nr)) return -1;
    float aw[ANCHOR_MAX_LEVELS * ANCHOR_MAX_RATIOS * ANCHOR_MAX_SCALES * 2];
    anchors_shapes(aw, &ac);
    return anchors_mean_best_iou(wh, n, aw, (int64_t)ac.nlevels * anchors_per_location(&ac));
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int anchors_rank0(const pl_cfg *cfg) {
    lesion_shard s;
    int rc = lesion_shard_open(&s, cfg_str(cfg, "input.root"), "train");
    if (rc) return MP3D_EXIT_FAIL;
    int code = MP3D_EXIT_FAIL;
    float *wh = pl_malloc(sizeof(float) * 2 * (size_t)(s.nrows + 1), "box shapes");
    int32_t *assign = pl_malloc(sizeof(int32_t) * (size_t)(s.nrows + 1), "k-means assignment");
    float *bx = pl_malloc(sizeof(float) * 4 * (size_t)(s.nrows + 1), "input-frame boxes");
    if (!wh || !assign || !bx) goto done;
    const int size = (int)cfg_int(cfg, "det.test_size");
    const det_geom g = det_geom_make(s.H, s.W, size, 0, 0);
    det_boxes_to_input(bx, s.boxes, s.nrows, g);
    int64_t n = 0;
    for (int64_t i = 0; i < s.nrows; i++) {
        float w = bx[4 * i + 2] - bx[4 * i], h = bx[4 * i + 3] - bx[4 * i + 1];
        if (w > 0 && h > 0) {
            wh[2 * n] = w;
            wh[2 * n + 1] = h;
            n++;
        }
    }
    const int nr = cfg_list_len(cfg, "det.anchor_ratios");
    int k = (int)cfg_int(cfg, "det.kmeans_k");
    if (k <= 0) k = nr;
    if (n < k) {
        pl_fail(PL_EINVAL, "%s: %lld usable training boxes, fewer than the %d k-means clusters", s.path, (long long)n, k);
        goto done;
    }
    double cratios[ANCHOR_MAX_RATIOS];
    for (int i = 0; i < nr && i < ANCHOR_MAX_RATIOS; i++) cratios[i] = cfg_list_float(cfg, "det.anchor_ratios", i);
    const double cscale = cfg_float(cfg, "det.anchor_scale");
    const double iou_conf = mean_iou_for(wh, n, cscale, cratios, nr);

    float cent[2 * ANCHOR_MAX_RATIOS];
    pl_rng rng;
    pl_rng_seed(&rng, (uint64_t)cfg_int(cfg, "run.seed"));
    int iters = anchors_kmeans(cent, assign, wh, n, k, k_kmeans_iters, &rng);
    if (iters < 0) goto done;
    const double iou_centroids = anchors_mean_best_iou(wh, n, cent, k);
    double dr[ANCHOR_MAX_RATIOS];
    for (int i = 0; i < k; i++) dr[i] = round(1000.0 * cent[2 * i + 1] / cent[2 * i]) / 1000.0;   // h / w, as printed
    qsort(dr, (size_t)k, sizeof dr[0], cmp_double);
    // Clusters of nearly the same aspect (within k_ratio_merge) differ only in size, which the
    // FPN levels already cover: merge them (geometric mean) so each location keeps distinct shapes.
    int nd = 0;
    for (int i = 0; i < k;) {
        int j = i;
        double lg = 0;
        while (j < k && dr[j] / dr[i] < k_ratio_merge) lg += log(dr[j++]);
        dr[nd++] = round(1000.0 * exp(lg / (j - i))) / 1000.0;
        i = j;
    }
    double best_scale = cscale, iou_derived = -1;
    for (double sc = k_scale_lo; sc <= k_scale_hi + 1e-9; sc += k_scale_step) {
        double v = mean_iou_for(wh, n, sc, dr, nd);
        if (v > iou_derived + 1e-12) {
            iou_derived = v;
            best_scale = sc;
        }
    }
    double area_lo = 1e30, area_hi = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = sqrt((double)wh[2 * i] * wh[2 * i + 1]);
        area_lo = PL_MIN(area_lo, a);
        area_hi = PL_MAX(area_hi, a);
    }
    LOG_INFO("anchors: boxes:%lld file:%s input_size:%d sqrt_area_px:[%.1f,%.1f] kmeans_k:%d iterations:%d", (long long)n, s.path,
             size, area_lo, area_hi, k, iters);
    for (int i = 0; i < k; i++)
        LOG_INFO("anchors: cluster:%d w:%.2f h:%.2f ratio_h_w:%.3f", i, cent[2 * i], cent[2 * i + 1], cent[2 * i + 1] / cent[2 * i]);
    char snippet[1024];
    int len = snprintf(snippet, sizeof snippet, "det = { anchor_scale = %.2f; anchor_ratios = [", best_scale);
    for (int i = 0; i < nd; i++) len += snprintf(snippet + len, sizeof snippet - (size_t)len, "%s%.3f", i ? ", " : "", dr[i]);
    snprintf(snippet + len, sizeof snippet - (size_t)len, "]; };");
    LOG_INFO("anchors: mean_best_iou configured:%.4f (scale %.2f, %d ratios) derived:%.4f (scale %.2f, %d ratios) kmeans_centroids:%.4f",
             iou_conf, cscale, nr, iou_derived, best_scale, nd, iou_centroids);
    printf("# mp3d anchors: %lld training boxes of %s at input size %d; mean best-anchor IoU configured %.4f, derived %.4f\n%s\n",
           (long long)n, s.path, size, iou_conf, iou_derived, snippet);
    fflush(stdout);
    if (cfg_has(cfg, "output.dir") && *cfg_str(cfg, "output.dir")) {
        char path[4096], text[2048];
        const char *od = cfg_str(cfg, "output.dir");
        int tl = snprintf(text, sizeof text, "# mp3d anchors on %s (input size %d): mean best-anchor IoU %.4f (configured: %.4f)\n%s\n",
                          s.path, size, iou_derived, iou_conf, snippet);
        if (pl_mkdir_p(od) || pl_path_join(path, sizeof path, od, "anchors.cfg") || pl_write_file_atomic(path, text, (size_t)tl)) goto done;
        LOG_INFO("anchors: snippet:%s", path);
    }
    code = MP3D_EXIT_OK;
done:
    if (code) LOG_ERROR("anchors: %s", pl_last_error());
    free(wh);
    free(assign);
    free(bx);
    lesion_shard_close(&s);
    return code;
}

int stage_anchors_run(const pl_cfg *cfg, MPI_Comm comm) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    if (cfg_require(cfg, "input.root")) return MP3D_EXIT_USAGE;
    int code = rank == 0 ? anchors_rank0(cfg) : 0;
    MPI_Bcast(&code, 1, MPI_INT, 0, comm);
    return code;
}
