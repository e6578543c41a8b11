// mp3d train: builds the task the config names (train.task) and runs the data-parallel trainer.
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"
#include "stages/stages.h"
#include "stages/train/trainer.h"

int stage_train_run(const pl_cfg *cfg, MPI_Comm comm) {
    if (cfg_require(cfg, "input.root") || cfg_require(cfg, "output.dir")) return MP3D_EXIT_USAGE;
    int threads = (int)cfg_int(cfg, "train.threads");
    if (threads <= 0) {
        const char *env = getenv("OPENBLAS_NUM_THREADS");
        threads = env ? atoi(env) : 1;
        if (threads <= 0) threads = 1;
    }
    openblas_set_num_threads(threads);
    const char *task = cfg_str(cfg, "train.task");
    if (cfg_bool(cfg, "train.sync_bn") && strcmp(task, "classify")) {
        // Only the classification task synchronises BatchNorm statistics (task_classify.c); the
        // detectors are built with GroupNorm in MP3D and would silently keep per-rank statistics.
        pl_fail(PL_EINVAL, "%s: train.sync_bn = true is supported for train.task = \"classify\" only (here \"%s\"); "
                "use model.norm = \"gn\" for detection, or set train.sync_bn = false", cfg_path(cfg), task);
        return MP3D_EXIT_USAGE;
    }
    if (cfg_bool(cfg, "train.sync_bn")) {
        int size = 1;
        MPI_Comm_size(comm, &size);
        if (cfg_int(cfg, "train.batch") < size) {
            pl_fail(PL_EINVAL, "%s: train.sync_bn = true needs train.batch >= ranks (%lld < %d): every rank must see samples",
                    cfg_path(cfg), (long long)cfg_int(cfg, "train.batch"), size);
            return MP3D_EXIT_USAGE;
        }
    }
    train_task *t = NULL;
    int rc;
    if (!strcmp(task, "classify")) rc = task_classify_create(&t, cfg, comm);
    else if (!strcmp(task, "detect")) rc = task_detect_create(&t, cfg, comm);
    else if (!strcmp(task, "detect_coco")) rc = task_detect_coco_create(&t, cfg, comm);
    else rc = pl_fail(PL_EUNSUPPORTED, "train.task = \"%s\" is not built yet in this version", task);
    // Every rank opened the same files; agree on the verdict before any collective work.
    int bad = rc != 0;
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
    if (bad) {
        if (t) t->destroy(t);
        return MP3D_EXIT_FAIL;
    }
    LOG0("train: blas_threads:%d", threads);
    int code = trainer_run(t, cfg, comm);
    t->destroy(t);
    return code;
}
