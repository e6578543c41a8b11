// mp3d train: builds the task the config names (train.task) and runs the data-parallel trainer.
#define _GNU_SOURCE  // sched_getaffinity, CPU_COUNT
#include <cblas.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv3d.h"
#include "nn/conv3d_dnnl.h"
#include "nn/pl.h"
#include "stages/stages.h"
#include "stages/train/trainer.h"

int stage_conv_engine_set(const pl_cfg *cfg) {
    conv3d_engine e;
    if (conv3d_engine_parse(cfg_str(cfg, "nn.conv_engine"), &e))
        return pl_fail(PL_EINVAL, "%s: nn.conv_engine = \"%s\" (must be \"auto\", \"gemm\" or \"dnnl\")", cfg_path(cfg),
                       cfg_str(cfg, "nn.conv_engine"));
    conv3d_set_engine(e);
    const char *wait = getenv("OMP_WAIT_POLICY");
    LOG0("conv: engine:%s onednn:%s omp_wait_policy:%s", conv3d_engine_name(e),
         conv3d_dnnl_available() ? "built" : "not built", wait ? wait : "(default)");
    return 0;
}

int stage_conv_engine_agree(MPI_Comm comm) {
    static int seen = 0;  // records this rank had at the last agreement
    if (conv3d_get_engine() != CONV3D_ENGINE_AUTO) return 0;
    int n = conv3d_engine_table_export(NULL, 0), grew = n != seen, rank = 0;
    MPI_Allreduce(MPI_IN_PLACE, &grew, 1, MPI_INT, MPI_MAX, comm);
    if (!grew) return 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Bcast(&n, 1, MPI_INT, 0, comm);
    conv3d_engine_record *rec = pl_calloc((size_t)PL_MAX(n, 1), sizeof(*rec), "conv engine table");
    int ok = rec != NULL;
    MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm);
    if (!ok) {
        free(rec);
        return PL_ENOMEM;
    }
    if (rank == 0) conv3d_engine_table_export(rec, n);
    MPI_Bcast(rec, (int)((size_t)n * sizeof(*rec)), MPI_BYTE, 0, comm);
    int rc = rank == 0 ? 0 : conv3d_engine_table_import(rec, n);
    free(rec);
    // a rank that could not adopt the table fails the step on every rank (no rank is left
    // waiting in the next collective)
    MPI_Allreduce(MPI_IN_PLACE, &rc, 1, MPI_INT, MPI_MIN, comm);
    LOG0("conv: ranks adopt rank 0's engine choices (%d layer shapes)", n);
    seen = conv3d_engine_table_export(NULL, 0);
    return rc;
}

int stage_train_run(const pl_cfg *cfg, MPI_Comm comm) {
    if (cfg_require(cfg, "input.root") || cfg_require(cfg, "output.dir")) return MP3D_EXIT_USAGE;
    int threads = (int)cfg_int(cfg, "train.threads");
    if (threads <= 0) {
        const char *env = getenv("OPENBLAS_NUM_THREADS");
        threads = env ? atoi(env) : 1;
        if (threads <= 0) threads = 1;
    }
    openblas_set_num_threads(threads);
    if (stage_conv_engine_set(cfg)) return MP3D_EXIT_USAGE;
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
    // mpirun binds a rank to one core by default (np <= 2): threads beyond the CPUs this rank may
    // run on only take turns. Said once per rank that has too few.
    cpu_set_t cpus;
    int ncpu = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : threads;
    if (ncpu < threads)
        LOG_WARN("train: %d threads but this rank may run on %d CPU(s) (its affinity): start it with "
                 "`mpirun --bind-to none` or `--map-by slot:PE=%d`, or set train.threads = %d", threads, ncpu, threads, ncpu);
    LOG0("train: blas_threads:%d cpus:%d", threads, ncpu);
    int code = trainer_run(t, cfg, comm);
    t->destroy(t);
    return code;
}
