#pragma once
// stages: one entry point per `mp3d` subcommand. Each is collective over `comm` (every rank
// calls it with the same config) and returns the process exit code: 0 success, 1 failure
// (input untrustworthy, too many bad samples, I/O failure), 2 usage/config error,
// MP3D_EXIT_PREEMPTED when stopped by SIGTERM/SIGUSR1 after writing a checkpoint.
// Stages log with the rank tag and never call exit(); pipeline/ turns the code into the exit.
//
// MPI error policy: MPI errors are fatal. pipeline/main.c sets MPI_ERRORS_ARE_FATAL on
// MPI_COMM_WORLD explicitly (communicators split from it inherit it), so a failed MPI call ends
// the whole job with MPI's message — a rank cannot recover from a collective its peers may still
// be inside. Code therefore does not test MPI return codes; what ranks must agree on (a file that
// did not open, a bad sample count) is agreed with an explicit reduction of the local verdicts.
// MPI-IO errors inside parallel HDF5 are HDF5's and come back as HDF5 errors (io/).
// The facts about each subcommand (keys it reads, usage) are one table: pipeline/commands.c.

#include <mpi.h>
#include "io/config.h"

enum { MP3D_EXIT_OK = 0, MP3D_EXIT_FAIL = 1, MP3D_EXIT_USAGE = 2, MP3D_EXIT_PREEMPTED = 75 };

int stage_synth_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_preprocess_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_vdt_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_train_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_anchors_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_evaluate_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_infer_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_froc_run(const pl_cfg *cfg, MPI_Comm comm);
int stage_inspect_run(const pl_cfg *cfg, MPI_Comm comm);

// nn.conv_engine -> nn/conv3d's engine for this process (train, evaluate, infer); logs it once.
int stage_conv_engine_set(const pl_cfg *cfg);
// With nn.conv_engine = "auto": when any rank decided an engine for a new layer shape since the
// last call, every rank adopts rank 0's decisions (collective over comm; a cheap all-reduce of
// one int otherwise), so ranks run a given layer on the same engine. 0 or a negative pl_err.
int stage_conv_engine_agree(MPI_Comm comm);

// The config keys (prefixes) that decide what preprocess and vdt write: their shards carry the
// hash of these (attribute config_hash) and are skipped when it matches. `mp3d run` signs these
// stages with them plus the keys that only steer the run (pipeline/commands.c).
#define STAGE_CONTENT_KEYS_PREPROCESS "input.,preprocess."
#define STAGE_CONTENT_KEYS_VDT "input.,vdt."
