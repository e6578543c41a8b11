// Placeholder until this stage is built: says so and exits 2 (see stages/stages.h).
#include "nn/pl.h"
#include "stages/stages.h"

int stage_train_run(const pl_cfg *cfg, MPI_Comm comm) {
    (void)cfg;
    (void)comm;
    LOG0("mp3d: stage 'train' is not built yet in this version");
    return MP3D_EXIT_USAGE;
}
