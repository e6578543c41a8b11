#pragma once
// det_common: what the detect task and `mp3d evaluate` share around the detector model
// (nn/detector.h): model.* and det.* keys -> det_config, one network input from a lesion shard
// sample, sharded inference mapped back to the DL_info frame, the gather of detections over
// ranks (collective), eval.* keys -> FROC options.

#include <mpi.h>
#include <stdint.h>

#include "io/config.h"
#include "io/lesion_shard.h"
#include "nn/detector.h"
#include "stages/score/froc.h"
#include "stages/train/trainer.h"

// model.* and det.* keys of a config; depth = slices of the shards it will read.
int det_config_from_cfg(det_config *c, const pl_cfg *cfg, int depth);

// x (D, ph, pw) of sample i: windowed ([lo, hi] -> [0, 255]), (v - 123.675) / 58.395, resized,
// flipped, zero padding. raw (D, H, W) and tmp (D, oh, ow) are scratch.
int det_load_input(float *x, int ph, int pw, const lesion_shard *s, int64_t i, det_geom g, int16_t *raw,
                   float *tmp, const double window[2]);

// ---- inference and gathering -------------------------------------------------------------------
// Detects on samples [lo, hi) of s at det.test_size (one image per forward, so results do not
// depend on how samples are split over ranks) and appends them, mapped to the original frame,
// to out. *seconds (may be NULL) gets the time spent.
int det_infer_range(froc_dets *out, detector *d, const lesion_shard *s, int64_t lo, int64_t hi, int test_size,
                    const double window[2], double *seconds);
// Collective: concatenates every rank's detections in rank order (MPI_Gatherv of variable
// counts) on root, or on every rank when root < 0. *all malloc'ed (NULL on non-receivers).
int det_gather(froc_det **all, int64_t *n_all, const froc_det *mine, int64_t n_mine, MPI_Comm comm, int root);
// The same for records of any fixed size (rec_size bytes each).
int det_gather_records(void **all, int64_t *n_all, const void *mine, int64_t n_mine, size_t rec_size, MPI_Comm comm,
                       int root);
// eval.* keys -> FROC options (split unused here).
void det_froc_opts(froc_opts *o, const pl_cfg *cfg);

// ---- what the two detection tasks (task_detect.c, task_detect_coco.c) read alike ----------------
enum { DET_MAX_TRAIN_SIZES = 16 };
typedef struct {
    int sizes[DET_MAX_TRAIN_SIZES], nsizes, max_size;   // det.train_sizes (one drawn per batch), their max
    int test_size;                                      // det.test_size
    int flip;                                           // det.flip
    uint64_t seed;                                      // run.seed
    int bmax;                                           // images per rank: ceil(train.batch / ranks)
} det_train_opts;
// Reads det.train_sizes (1..16 values), det.test_size, det.flip, run.seed, train.batch.
int det_train_opts_from_cfg(det_train_opts *o, const pl_cfg *cfg, int ranks);
// 1 when the task validates: train.val_every > 0 and root/<file> exists (a missing file is logged
// with `tag` and means training without validation).
int det_val_wanted(const pl_cfg *cfg, const char *root, const char *file, const char *tag);
// A zeroed task named `name` owning a zeroed context of ctx_bytes (t->ctx), with its step and
// destroy functions; PL_ENOMEM frees both. The caller wires validate.
int det_task_new(train_task **t, size_t ctx_bytes, const char *name, const train_task *fns);
// The other half: destroys det, frees the n buffers of bufs, the context and t (each may be NULL).
void det_task_free(train_task *t, detector *det, void *const *bufs, int n);
