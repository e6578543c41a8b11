#pragma once
// trainer: synchronous data-parallel training, task-agnostic. A task supplies the network's
// parameters, one training step on a rank's share of a global batch (forward, loss, backward
// with the gradient all-reduce hooked in), and validation; the trainer owns the loop: the
// epoch permutation (identical on every rank, seeded), batch cutting, lr schedule, clipping,
// SGD, logging and metrics, checkpoints (parallel HDF5), resume, preemption signals.
// Collective over comm: every rank calls everything.

#include <mpi.h>
#include <stdint.h>

#include "io/config.h"
#include "io/runlog.h"
#include "nn/params.h"
#include "stages/train/gradsync.h"

#define TRAIN_MAX_PARTS 4
typedef struct train_task train_task;
struct train_task {
    const char *name;                  // "classify", "detect"
    void *ctx;
    nn_params *params;                 // the model's parameters, grads, momentum, buffers
    int64_t n_train;                   // training samples
    // Runs forward + loss + backward for samples idx[0..n) of `epoch` (n may be 0: then the
    // grads are zeroed). The local loss is scaled by loss_scale (= n / global batch) so the
    // all-reduced SUM is the global mean. Must call gradsync_begin/ready (through the nn
    // callback)/finish. Writes the summed (unscaled) per-sample loss and the seconds spent
    // reading/augmenting data.
    int (*step)(train_task *t, const int64_t *idx, int n, int64_t epoch, double loss_scale,
                gradsync *gs, double *loss_sum, double *data_s);
    // Validation sharded over comm; writes a JSON fragment of metrics ("\"top1\":0.93,...")
    // and a one-line summary for the log, identical on every rank.
    int (*validate)(train_task *t, MPI_Comm comm, char *json, size_t json_cap, char *line, size_t line_cap);
    void (*destroy)(train_task *t);
    // Optional loss terms (the detector's rpn_cls, rpn_reg, roi_cls, roi_reg): step writes their
    // summed (unscaled) per-sample values to parts[0..nparts) as it does loss_sum; the trainer
    // all-reduces them and logs "loss_<name>" beside "loss" (same averaging).
    int nparts;
    const char *part_names[TRAIN_MAX_PARTS];
    double parts[TRAIN_MAX_PARTS];
};

int task_classify_create(train_task **out, const pl_cfg *cfg, MPI_Comm comm);

// The nn BatchNorm sync hook (batchnorm3d.sync) over MPI: ctx points to an MPI_Comm that
// outlives the network. Used when train.sync_bn = true.
void trainer_bn_allreduce(void *ctx, double *buf, int n);
int task_detect_create(train_task **out, const pl_cfg *cfg, MPI_Comm comm);
// Multi-class detection pre-training on mp3d vdt COCO shards (stages/task_detect_coco.c).
int task_detect_coco_create(train_task **out, const pl_cfg *cfg, MPI_Comm comm);

// SIGTERM / SIGUSR1 set the trainer's stop flag (checkpoint at the end of the step, exit 75).
// trainer_run installs it; mp3d's main installs it first thing, so a signal during start-up
// (before MPI_Init, config, data) is not lost (issue 16). Idempotent.
void trainer_install_signals(void);

// The loop. Returns an exit code (stages/stages.h), identical on every rank.
int trainer_run(train_task *t, const pl_cfg *cfg, MPI_Comm comm);
