// lesion_shard: the reader of an mp3d preprocess shard split with its lesion table (io/lesion_shard.h).
#include "io/lesion_shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/h5shard.h"
#include "nn/pl.h"

static const char *const k_data = "images";
// Bounds on what a shard may declare (far above DeepLesion: 32,735 key slices, 32,735 lesions,
// 512 x 512 slices) so that a damaged or crafted file fails with a message, not a huge allocation.
static const int64_t k_max_samples = (int64_t)1 << 24;
static const int64_t k_max_rows = (int64_t)1 << 24;
static const int64_t k_max_side = 8192;

void lesion_shard_close(lesion_shard *s) {
    if (!s) return;
    h5shard_close(s->r);
    free(s->off);
    free(s->boxes);
    free(s->boxes_orig);
    free(s->diam_mm);
    free(s->type);
    free(s->noisy);
    free(s->affine);
    free(s->spacing);
    free(s->ids);
    free(s->names);
    memset(s, 0, sizeof *s);
}

int lesion_shard_open(lesion_shard *s, const char *root, const char *split) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s/%s.h5", root, split);
    int rc = h5shard_open(&s->r, s->path);
    if (rc) return rc;
    int64_t dims[6];
    int nd = h5shard_shape(s->r, k_data, dims, 6);
    if (nd < 0) {   // h5shard_shape named the file and the dataset
        rc = nd;
        goto fail;
    }
    if (nd != 4) {
        rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' has %d dims, expected 4 (N, D, H, W) (an mp3d preprocess shard)", s->path,
                     k_data, nd);
        goto fail;
    }
    // The sizes come from the file: bound them before they size allocations (a crafted or
    // damaged file can declare any extent; DeepLesion has 32,735 key slices).
    if (dims[0] < 0 || dims[0] > k_max_samples || dims[1] < 1 || dims[1] > k_max_side || dims[2] < 1 ||
        dims[2] > k_max_side || dims[3] < 1 || dims[3] > k_max_side) {
        rc = pl_fail(PL_EFORMAT, "%s: dataset '%s' has shape (%lld, %lld, %lld, %lld), expected N <= %lld samples of "
                     "(D, H, W) each in [1, %lld]", s->path, k_data, (long long)dims[0], (long long)dims[1],
                     (long long)dims[2], (long long)dims[3], (long long)k_max_samples, (long long)k_max_side);
        goto fail;
    }
    s->n = dims[0];
    s->D = (int)dims[1];
    s->H = (int)dims[2];
    s->W = (int)dims[3];
    int64_t rd[2];
    if ((nd = h5shard_shape(s->r, "boxes", rd, 2)) < 1) {
        rc = pl_fail(PL_EFORMAT, "%s: no 'boxes' table", s->path);
        goto fail;
    }
    if (rd[0] < 0 || rd[0] > k_max_rows) {
        rc = pl_fail(PL_EFORMAT, "%s: the boxes table has %lld rows (at most %lld)", s->path, (long long)rd[0],
                     (long long)k_max_rows);
        goto fail;
    }
    s->nrows = rd[0];
    const size_t n1 = (size_t)(s->n + 1), m1 = (size_t)(s->nrows + 1);
    s->off = pl_malloc(sizeof(int64_t) * n1, "lesion offsets");
    s->boxes = pl_malloc(sizeof(double) * 4 * m1, "boxes");
    s->boxes_orig = pl_malloc(sizeof(double) * 4 * m1, "boxes_orig");
    s->diam_mm = pl_malloc(sizeof(double) * 2 * m1, "diameters");
    s->type = pl_malloc(sizeof(int32_t) * m1, "lesion types");
    s->noisy = pl_malloc(sizeof(int32_t) * m1, "noisy flags");
    s->affine = pl_malloc(sizeof(double) * 4 * n1, "affine");
    s->spacing = pl_malloc(sizeof(double) * 3 * n1, "spacing");
    s->ids = pl_malloc(sizeof(int32_t) * 4 * n1, "ids");
    s->names = pl_calloc(n1, 64, "file names");
    if (!s->off || !s->boxes || !s->boxes_orig || !s->diam_mm || !s->type || !s->noisy || !s->affine || !s->spacing ||
        !s->ids || !s->names) {
        rc = PL_ENOMEM;
        goto fail;
    }
    // h5shard_read_rows: each table must have exactly the row width the buffers above hold
    if ((rc = h5shard_read_rows(s->r, "lesion_offsets", SHARD_I64, s->off, 0, s->n + 1, 1))) goto fail;
    if (s->n > 0) {
        if ((rc = h5shard_read_rows(s->r, "affine", SHARD_F64, s->affine, 0, s->n, 4))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "spacing", SHARD_F64, s->spacing, 0, s->n, 3))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "ids", SHARD_I32, s->ids, 0, s->n, 4))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "file_name", SHARD_STR, s->names, 0, s->n, 64))) goto fail;
    }
    if (s->nrows > 0) {
        if ((rc = h5shard_read_rows(s->r, "boxes", SHARD_F64, s->boxes, 0, s->nrows, 4))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "boxes_orig", SHARD_F64, s->boxes_orig, 0, s->nrows, 4))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "diameters_mm", SHARD_F64, s->diam_mm, 0, s->nrows, 2))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "lesion_type", SHARD_I32, s->type, 0, s->nrows, 1))) goto fail;
        if ((rc = h5shard_read_rows(s->r, "noisy", SHARD_I32, s->noisy, 0, s->nrows, 1))) goto fail;
    }
    if (s->off[0] != 0 || s->off[s->n] != s->nrows) {
        rc = pl_fail(PL_EFORMAT, "%s: lesion_offsets run 0..%lld, the boxes table has %lld rows", s->path,
                     (long long)s->off[s->n], (long long)s->nrows);
        goto fail;
    }
    for (int64_t i = 0; i < s->n; i++)   // users index boxes[off[i] .. off[i+1])
        if (s->off[i + 1] < s->off[i]) {
            rc = pl_fail(PL_EFORMAT, "%s: lesion_offsets[%lld] = %lld < lesion_offsets[%lld] = %lld (must not decrease)",
                         s->path, (long long)(i + 1), (long long)s->off[i + 1], (long long)i, (long long)s->off[i]);
            goto fail;
        }
    for (int64_t i = 0; i < s->n; i++) s->names[i][63] = 0;
    double hu[2] = {-1024, 1050};
    int nh = 0;
    if (h5shard_get_attr_f64(s->r, "hu_clip", hu, 2, &nh) == 0 && nh == 2) memcpy(s->hu, hu, sizeof hu);
    else memcpy(s->hu, hu, sizeof hu);
    return 0;
fail:
    lesion_shard_close(s);
    return rc;
}
