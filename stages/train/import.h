#pragma once
// import: PyTorch .pth checkpoints <-> mp3d. `mp3d import` maps a released state dict (mmdet,
// mmcls or plain names) onto an mp3d network built from model.* (and det.* when train.task is a
// detection task) and writes an mp3d HDF5 checkpoint; `mp3d export` writes an mp3d checkpoint's
// parameters and buffers as a zip-format state dict. model.init_from = "x.pth" uses the same
// loader (import_pth_into). No Python at run time; every rank reads the file itself.

#include <mpi.h>

#include "io/config.h"
#include "nn/params.h"

// Collective (reads the file on every rank, logs on rank 0). Loads by mapped name and shape into
// p; entries absent or shape-mismatched keep their current values. map: auto|plain|mmdet|mmcls.
// Logs a per-part report (loaded / new / shape-mismatched / unused in the file). Fails when the
// file cannot be read safely or when no tensor of it matches.
int import_pth_into(nn_params *p, const char *path, const char *map, MPI_Comm comm);

int stage_import_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_export_run(const pl_cfg *cfg, MPI_Comm comm);
