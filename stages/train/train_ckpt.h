#pragma once
// train_ckpt: the trainer's checkpoints — nn_params (parameters, momentum, buffers) plus the
// training state, written collectively through io/h5ckpt into output.dir, and resumed from
// the newest valid one. With no checkpoint, model.init_from (if set) is loaded by name.
// Collective over comm.

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "io/config.h"
#include "io/h5ckpt.h"
#include "nn/params.h"

typedef struct {
    int64_t step;          // optimizer steps done (the data position is derived from it)
    int world_size;        // ranks of the run that wrote the checkpoint
    char from[1024];       // file resumed from ("" = fresh start)
} train_state;

// 1 = resumed, 0 = fresh start (init_from applied if set), negative = error (message logged).
// Named views of p's tensors of one kind (NN_PARAM: parameters, or their momentum buffers when
// momentum != 0; NN_BUFFER: buffers) for io/h5ckpt; *n gets the count. malloc'ed; NULL on no memory.
ckpt_tensor *train_ckpt_views(const nn_params *p, enum nn_param_kind kind, int momentum, int *n);
int train_ckpt_resume(train_state *st, nn_params *p, const pl_cfg *cfg, MPI_Comm comm);
int train_ckpt_save(const train_state *st, const nn_params *p, const pl_cfg *cfg, MPI_Comm comm);
// Collective. The stored config text of a checkpoint (*text malloc'ed, caller frees).
int train_ckpt_read_config(const char *path, MPI_Comm comm, char **text);
// Collective. Loads /params and /buffers of a checkpoint into p (every name and shape must match).
int train_ckpt_load_weights(nn_params *p, const char *path, MPI_Comm comm);
// Collective. A checkpoint file as given, or for a folder the newest valid ckpt_*.h5 in it.
int train_ckpt_resolve(char *out, size_t cap, const char *path, MPI_Comm comm);
