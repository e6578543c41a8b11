#pragma once
// lesion_shard: reads a split written by `mp3d preprocess` (root/<split>.h5): the sample shape,
// per-sample metadata (File_name, ids, spacing, the affine back to the DL_info frame) and the
// lesion table (boxes in the stored and the original frame, diameters, type, noisy flag). The
// samples themselves stay in the file (h5shard_read on `r`, dataset "images"). No MPI: each
// process reads for itself. Knows nothing of networks.

#include <stdint.h>

typedef struct h5shard_reader h5shard_reader;

typedef struct {
    h5shard_reader *r;
    char path[4096];
    int64_t n;               // key slices
    int D, H, W;             // stored sample (D, H, W) int16 HU
    int64_t nrows;           // lesion rows
    int64_t *off;            // (n + 1) lesion rows of sample i: [off[i], off[i+1])
    double *boxes;           // (nrows, 4) stored frame, 0-based pixel centres
    double *boxes_orig;      // (nrows, 4) DL_info frame (1-based)
    double *diam_mm;         // (nrows, 2)
    int32_t *type, *noisy;   // (nrows)
    double *affine;          // (n, 4) ax, bx, ay, by: orig = a * stored + b
    double *spacing;         // (n, 3) mm: x, y, slice interval
    int32_t *ids;            // (n, 4) patient, study, series, key slice
    char (*names)[64];       // (n) File_name
    double hu[2];            // the shard's HU clip (the window is det.window)
} lesion_shard;

// Opens root/<split>.h5 written by mp3d preprocess and reads its metadata (File_name strings are
// the preprocess width, 64 bytes).
int lesion_shard_open(lesion_shard *s, const char *root, const char *split);
void lesion_shard_close(lesion_shard *s);   // accepts a zeroed split
