// trainer: the data-parallel loop (see trainer.h).
#include "stages/train/trainer.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"
#include "nn/sgd.h"
#include "stages/stages.h"
#include "stages/train/train_ckpt.h"

// --- preemption: SIGTERM / SIGUSR1 set a flag; ranks agree on it at the end of each step ---
static volatile sig_atomic_t g_stop_signal = 0;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

void trainer_install_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

void trainer_bn_allreduce(void *ctx, double *buf, int n) {
    MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, *(MPI_Comm *)ctx);
}

// The epoch's permutation of the training samples: identical on every rank for a seed.
static void epoch_permutation(int64_t *perm, int64_t n, uint64_t seed, int64_t epoch) {
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    pl_rng r;
    pl_rng_seed(&r, seed * 0x9E3779B97F4A7C15ULL + (uint64_t)epoch + 1);
    pl_rng_shuffle_i64(&r, perm, n);
}

// Trainable parameters and momentum only: with per-rank BatchNorm the running statistics
// legitimately differ between ranks until they are averaged (sync_buffers).
static uint64_t params_hash(const nn_params *p) {
    uint64_t h = pl_fnv1a(p->params, p->nparams * sizeof(float), PL_FNV_INIT);
    return pl_fnv1a(p->momentum, p->nparams * sizeof(float), h);
}

static int check_identical(const nn_params *p, MPI_Comm comm, int64_t step) {
    uint64_t h = params_hash(p), lo = h, hi = h;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, comm);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, comm);
    if (lo != hi) return pl_fail(PL_ECORRUPT, "step %lld: ranks hold different parameters (hash %016llx vs %016llx)",
                                 (long long)step, (unsigned long long)lo, (unsigned long long)hi);
    LOG0("check:identical step:%lld params_hash:%016llx", (long long)step, (unsigned long long)h);
    return 0;
}

// BatchNorm running statistics are per rank (each rank normalises its own part of the batch,
// as CSPR's DistributedDataParallel does); before validation and checkpoints they are averaged
// over the ranks so that every replica, and the checkpoint, holds the same buffers.
static void sync_buffers(nn_params *p, MPI_Comm comm, int size) {
    if (size == 1 || p->nbuffers == 0) return;
    MPI_Allreduce(MPI_IN_PLACE, p->buffers, (int)p->nbuffers, MPI_FLOAT, MPI_SUM, comm);
    const float inv = 1.0f / (float)size;
    for (size_t i = 0; i < p->nbuffers; i++) p->buffers[i] *= inv;
}

// One failure policy for a training step (issue 16): a rank whose step failed still completes
// the step's gradient all-reduce (with zeros), then every rank learns whether any rank failed
// and all stop together; a rank that leaves alone would strand the others in MPI_Waitall.
// The failing rank names its samples (indices into the training shard).
static int step_failed(int rc, gradsync *gs, MPI_Comm comm, int64_t step, int64_t epoch, const int64_t *idx, int n) {
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    if (rc) {
        gradsync_fail(gs);
        if (!gs->peer_failed) {
            char list[256] = "";
            size_t len = 0;
            for (int i = 0; i < n && len + 24 < sizeof list; i++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%lld", i ? "," : "", (long long)idx[i]);
            LOG_ERROR("train: step:%lld epoch:%lld failed on this rank; its samples:%s (see the error above)",
                      (long long)step, (long long)epoch, list);
        }
    }
    int who = rc && !gs->peer_failed ? rank + 1 : 0, first = who ? who : INT32_MAX, any = who;
    MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_MAX, comm);
    if (!any) return 0;
    MPI_Allreduce(MPI_IN_PLACE, &first, 1, MPI_INT, MPI_MIN, comm);
    LOG0("train: step:%lld failed on rank %d; every rank stops (exit %d)", (long long)step,
         first == INT32_MAX ? -1 : first - 1, MP3D_EXIT_FAIL);
    return 1;
}

int trainer_run(train_task *t, const pl_cfg *cfg, MPI_Comm comm) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    nn_params *P = t->params;
    const char *out = cfg_str(cfg, "output.dir");
    int64_t B = cfg_int(cfg, "train.batch");
    if (t->n_train < B && cfg_bool(cfg, "train.batch_fit") && t->n_train >= size) {
        // A recipe written for a larger cohort, run on a tiny one (the demo at synth.scale=tiny).
        if (rank == 0)
            LOG_WARN("train: train.batch = %lld is larger than the %lld training samples; train.batch_fit = true: "
                     "batch %lld (lr scaled with it)", (long long)B, (long long)t->n_train, (long long)t->n_train);
        B = t->n_train;
    }
    if (t->n_train < B) {
        pl_fail(PL_EINVAL, "train.batch = %lld is larger than the %lld training samples%s", (long long)B,
                (long long)t->n_train, cfg_bool(cfg, "train.batch_fit") ? " (fewer than the ranks)" : " (train.batch_fit = true uses them all)");
        return MP3D_EXIT_USAGE;
    }
    const int64_t spe = t->n_train / B;   // steps per epoch (the last partial batch is dropped)
    int64_t total = cfg_int(cfg, "train.max_steps");
    if (total <= 0) total = (int64_t)ceil(cfg_float(cfg, "train.epochs") * (double)spe);
    if (total < 1) total = 1;
    const uint64_t seed = (uint64_t)cfg_int(cfg, "run.seed");

    // Learning rate: base lr for train.lr_batch, scaled linearly to the configured batch.
    sgd_lr_schedule sch = {0};
    sch.base_lr = cfg_float(cfg, "train.lr") * (double)B / (double)cfg_int(cfg, "train.lr_batch");
    const char *sk = cfg_str(cfg, "train.schedule");
    sch.kind = !strcmp(sk, "cosine") ? SGD_SCHED_COSINE : !strcmp(sk, "step") ? SGD_SCHED_STEP : SGD_SCHED_CONSTANT;
    sch.total_iters = total;
    sch.gamma = cfg_float(cfg, "train.gamma");
    int nm = cfg_list_len(cfg, "train.steps");
    int64_t milestones[32];
    if (nm > 32) nm = 32;
    for (int i = 0; i < nm; i++) milestones[i] = (int64_t)llround(cfg_list_float(cfg, "train.steps", i) * (double)total);
    sch.milestones = milestones;
    sch.nmilestones = nm;
    sch.warmup_iters = cfg_int(cfg, "train.warmup_iters");
    sch.warmup_factor = cfg_float(cfg, "train.warmup_factor");
    sgd_opts opt = {.momentum = cfg_float(cfg, "train.momentum"), .weight_decay = cfg_float(cfg, "train.weight_decay"),
                    .nesterov = cfg_bool(cfg, "train.nesterov"), .decay_norm_bias = cfg_bool(cfg, "train.wd_norm_bias")};
    const int64_t log_every = cfg_int(cfg, "train.log_every");
    const double clip = cfg_float(cfg, "train.clip_grad");
    const int64_t ckpt_every = cfg_int(cfg, "train.ckpt_every");
    const int64_t check_every = cfg_int(cfg, "train.check_every");
    const double val_every = cfg_float(cfg, "train.val_every");
    const double max_minutes = cfg_float(cfg, "train.max_minutes");

    train_state st = {0};
    int code = MP3D_EXIT_OK;
    int rc = train_ckpt_resume(&st, P, cfg, comm);
    if (rc < 0) return MP3D_EXIT_FAIL;
    if (st.step > 0)
        LOG0("resume: step:%lld epoch:%lld from:%s (written by %d ranks, now %d)", (long long)st.step,
             (long long)(st.step / spe), st.from, st.world_size, size);
    if (st.step >= total) {
        LOG0("train: already complete at step %lld of %lld", (long long)st.step, (long long)total);
        return MP3D_EXIT_OK;
    }

    pl_metrics *metrics = NULL;
    metrics_open(&metrics, out, rank == 0);
    gradsync gs;
    size_t bucket = (size_t)(cfg_float(cfg, "train.bucket_mb") * 1e6 / sizeof(float));
    if (gradsync_init(&gs, comm, P->grads, P->nparams, bucket)) { metrics_close(metrics); return MP3D_EXIT_FAIL; }
    int64_t *perm = pl_malloc(sizeof(int64_t) * (size_t)t->n_train, "epoch permutation");
    if (!perm) { gradsync_free(&gs); metrics_close(metrics); return MP3D_EXIT_FAIL; }
    trainer_install_signals();

    LOG0("train: task:%s samples:%lld batch:%lld ranks:%d steps_per_epoch:%lld total_steps:%lld lr:%g params:%zu "
         "nesterov:%d weight_decayed:%zu",
         t->name, (long long)t->n_train, (long long)B, size, (long long)spe, (long long)total, sch.base_lr, P->nparams,
         opt.nesterov, sgd_decayed_count(P, &opt));
    pl_progress prog;
    progress_init(&prog, "train", total, rank == 0, cfg_float(cfg, "log.progress_interval"));
    int64_t perm_epoch = -1;
    double t_start = pl_time(), acc_compute = 0, acc_comm = 0, acc_data = 0, acc_loss = 0;
    double acc_parts[TRAIN_MAX_PARTS] = {0};
    int64_t acc_n = 0;
    const int64_t lo = B * rank / size, hi = B * (rank + 1) / size;  // this rank's part of a batch
    int stop = 0;
    const int64_t start_step = st.step;
    int64_t step = st.step;
    for (; step < total; step++) {
        const int64_t epoch = step / spe, pos = step % spe;
        if (epoch != perm_epoch) {
            epoch_permutation(perm, t->n_train, seed, epoch);
            perm_epoch = epoch;
        }
        double t0 = pl_time(), loss_sum = 0, data_s = 0;
        const int n = (int)(hi - lo);
        gs.state = GRADSYNC_IDLE;
        gs.peer_failed = 0;
        rc = t->step(t, perm + pos * B + lo, n, epoch, (double)n / (double)B, &gs, &loss_sum, &data_s);
        if (step_failed(rc, &gs, comm, step, epoch, perm + pos * B + lo, n)) { code = MP3D_EXIT_FAIL; break; }
        // nn.conv_engine = "auto": ranks adopt rank 0's choice for layers first seen this step
        if (stage_conv_engine_agree(comm)) { code = MP3D_EXIT_FAIL; break; }
        if (clip > 0) sgd_clip_grad_norm(P->grads, P->nparams, clip);
        const double lr = sgd_lr_at(&sch, step);
        opt.lr = lr;
        sgd_step_params(P, &opt, step == 0);
        double t1 = pl_time();
        acc_comm += gs.wait_s;
        acc_data += data_s;
        acc_compute += (t1 - t0) - gs.wait_s - data_s;
        double ls[2 + TRAIN_MAX_PARTS] = {loss_sum, (double)n};
        for (int k = 0; k < t->nparts; k++) ls[2 + k] = t->parts[k];
        MPI_Allreduce(MPI_IN_PLACE, ls, 2 + t->nparts, MPI_DOUBLE, MPI_SUM, comm);
        acc_loss += ls[0];
        acc_n += (int64_t)ls[1];
        for (int k = 0; k < t->nparts; k++) acc_parts[k] += ls[2 + k];
        if (!isfinite(ls[0])) {
            pl_fail(PL_ERANGE, "step %lld: loss is not finite (%g); lower train.lr or check the data", (long long)step, ls[0]);
            code = MP3D_EXIT_FAIL;
            break;
        }
        const int64_t done = step + 1;
        if (done % log_every == 0 || done == total || done == start_step + 1) {
            double steps_in = acc_n > 0 ? (double)acc_n / (double)B : 1;
            LOG0("step:%lld epoch:%lld loss:%.5f lr:%.6g compute_ms:%.1f comm_wait_ms:%.1f data_ms:%.1f img_per_s:%.1f",
                 (long long)done, (long long)epoch, acc_loss / (double)PL_MAX(acc_n, 1), lr,
                 1e3 * acc_compute / steps_in, 1e3 * acc_comm / steps_in, 1e3 * acc_data / steps_in,
                 (double)acc_n / PL_MAX(acc_compute + acc_comm + acc_data, 1e-9));
            char parts[64 * TRAIN_MAX_PARTS] = "";
            for (int k = 0, len = 0; k < t->nparts; k++) {
                len += snprintf(parts + len, sizeof parts - (size_t)len, ",\"loss_%s\":%.8g", t->part_names[k],
                                acc_parts[k] / (double)PL_MAX(acc_n, 1));
                acc_parts[k] = 0;
            }
            metrics_write(metrics, "train",
                          "\"step\":%lld,\"epoch\":%lld,\"loss\":%.6f%s,\"lr\":%.8g,\"compute_s\":%.5f,\"comm_wait_s\":%.5f,\"data_s\":%.5f,\"images\":%lld,\"ranks\":%d",
                          (long long)done, (long long)epoch, acc_loss / (double)PL_MAX(acc_n, 1), parts, lr,
                          acc_compute / steps_in, acc_comm / steps_in, acc_data / steps_in, (long long)acc_n, size);
            acc_compute = acc_comm = acc_data = acc_loss = 0;
            acc_n = 0;
        }
        progress_update(&prog, done);
        if (check_every > 0 && done % check_every == 0 && check_identical(P, comm, done)) { code = MP3D_EXIT_FAIL; break; }

        // Stop requests: a signal on any rank, or the wall-time budget; all ranks agree.
        int want = g_stop_signal ? 1 : 0;
        if (max_minutes > 0 && pl_time() - t_start > 60 * max_minutes) want = 2;
        MPI_Allreduce(MPI_IN_PLACE, &want, 1, MPI_INT, MPI_MAX, comm);
        // every val_every epochs (fractions allowed: every round(val_every x steps per epoch)
        // steps), and after the last step
        const int64_t val_steps = PL_MAX((int64_t)1, (int64_t)llround(val_every * (double)spe));
        const int do_val = val_every > 0 && t->validate && (done % val_steps == 0 || done == total);
        if (do_val || want || done % ckpt_every == 0 || done == total) sync_buffers(P, comm, size);
        if (do_val) {
            char json[512] = "", line[512] = "";
            if (t->validate(t, comm, json, sizeof json, line, sizeof line)) { code = MP3D_EXIT_FAIL; break; }
            LOG0("val: step:%lld epoch:%lld %s", (long long)done, (long long)(done / spe), line);
            metrics_write(metrics, "val", "\"step\":%lld,\"epoch\":%lld,%s", (long long)done, (long long)(done / spe), json);
        }
        if (want || done % ckpt_every == 0 || done == total) {
            st.step = done;
            if (train_ckpt_save(&st, P, cfg, comm)) { code = MP3D_EXIT_FAIL; break; }
        }
        if (want) {
            stop = want;
            step++;
            break;
        }
    }
    progress_finish(&prog);
    if (stop == 1 && code == 0) {
        LOG0("train: stopped by signal at step %lld; checkpoint written; exit %d (requeue to resume)", (long long)step,
             MP3D_EXIT_PREEMPTED);
        code = MP3D_EXIT_PREEMPTED;
    } else if (stop == 2 && code == 0) {
        LOG0("train: wall-time budget train.max_minutes = %g reached at step %lld; checkpoint written", max_minutes,
             (long long)step);
    }
    metrics_write(metrics, "train", "\"event\":\"end\",\"step\":%lld,\"exit\":%d,\"elapsed_s\":%.2f", (long long)step,
                  code, pl_time() - t_start);
    free(perm);
    gradsync_free(&gs);
    metrics_close(metrics);
    return code;
}
