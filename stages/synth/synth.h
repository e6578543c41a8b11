#pragma once
// synth (private to stages/synth/*.c and tests): the demo-cohort generator behind `mp3d synth`.
// Writes DeepLesion, ImageNet and COCO look-alikes in the publishers' layouts under one folder,
// byte-identical for a seed (every random choice comes from pl_rng streams derived from the
// seed, the dataset and the item index). Not MPI-aware: stage_synth_run calls it on rank 0.
// Images are (H, W) or (H, W, C) row-major; DeepLesion coordinates are 1-based pixels.

#include <stdint.h>

#include "nn/pl.h"

enum synth_scale { SYNTH_TINY = 0, SYNTH_SMALL = 1, SYNTH_MEDIUM = 2 };
enum { SYNTH_DEEPLESION = 1, SYNTH_IMAGENET = 2, SYNTH_COCO = 4, SYNTH_ALL = 7 };

typedef struct {
    const char *out;          // output folder (created if missing)
    enum synth_scale scale;
    uint64_t seed;
    int datasets;             // SYNTH_* bit set
    int rank, size;           // this process's share of the work (size 0 or 1: all of it)
    int progress;             // 1: progress lines/bar on stderr (rank 0 of the stage)
    double progress_interval; // seconds between progress lines in batch logs
    int in_side_lo, in_side_hi; // ImageNet image sides in px; 0 = the scale's
} synth_opts;

// What was written (for logs and tests).
typedef struct {
    int64_t dl_patients, dl_series, dl_slices, dl_key_slices, dl_lesions, dl_zips;
    int64_t in_classes, in_train, in_val;
    int64_t coco_train, coco_val, coco_annotations;
    double seconds_dl, seconds_in, seconds_coco;
    double seconds_dl_png;    // of seconds_dl: PNG encoding alone (the floor for writing the slices)
} synth_stats;

// "tiny" / "small" / "medium" -> scale; PL_EINVAL naming the value otherwise.
int synth_parse_scale(enum synth_scale *out, const char *s);
// "deeplesion,imagenet,coco" (any non-empty subset, any order) -> SYNTH_* bits.
int synth_parse_datasets(int *out, const char *s);

// Writes the selected datasets under o->out/{deeplesion,imagenet,coco}/. Each dataset's
// index file (DL_info.csv, LOC_val_solution.csv, annotations zip) is written last, so an
// interrupted run never leaves a folder that looks complete. Returns 0 or a negative pl_err.
// Single process: synth_generate. Several ranks (the files do not depend on the rank count):
//   rank 0: synth_prepare (clears a previous run's index files and zips) -> barrier ->
//   every rank: synth_generate_share (DeepLesion zip z on rank z % size, ImageNet whole on
//   rank 1 % size, COCO whole on rank 2 % size) -> barrier -> rank 0: synth_finish (DL_info.csv).
int synth_generate(synth_stats *st, const synth_opts *o);
int synth_prepare(const synth_opts *o);
int synth_generate_share(synth_stats *st, const synth_opts *o);
int synth_finish(synth_stats *st, const synth_opts *o);

enum { SYNTH_PART_PREPARE = 1, SYNTH_PART_DATA = 2, SYNTH_PART_INDEX = 4 };
int synth_write_deeplesion(synth_stats *st, const synth_opts *o, const char *dir, int parts);
int synth_write_imagenet(synth_stats *st, const synth_opts *o, const char *dir);
int synth_write_coco(synth_stats *st, const synth_opts *o, const char *dir);

// ---- leaf helpers (synth_common.c) ----
// Shapes drawn by the ImageNet and COCO generators (pixel units, y down).
enum synth_shape_kind { SHAPE_DISC, SHAPE_SQUARE, SHAPE_TRIANGLE, SHAPE_RING, SHAPE_CROSS, SHAPE_NKINDS };
typedef struct {
    int kind;
    double cx, cy, size, ang;   // centre, outer radius / half side (px), rotation (rad)
} synth_shape;
// Coverage in [0, 1] of pixel (x, y) (its centre), anti-aliased over about one pixel.
double synth_shape_cover(const synth_shape *s, double x, double y);
// Outline polygon (x0, y0, x1, y1, ...), at most 32 points; returns the point count.
int synth_shape_polygon(double *xy, const synth_shape *s);

// A pl_rng stream for (seed, dataset tag, item index): independent of generation order.
void synth_rng_init(pl_rng *r, uint64_t seed, uint64_t tag, uint64_t index);
