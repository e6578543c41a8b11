// task_classify: VDT classification pre-training (CSPR recipe) on an `mp3d vdt` ImageNet shard:
// samples (1, 3, S, S) uint8 (the colour axis is z) with a label each. Training: random resized
// crop to train.crop (or a plain random / centre crop: train.crop_mode), horizontal flip
// (train.flip), random order of the three slices (train.slice_shuffle), (x - mean) / std,
// label-smoothed cross-entropy. Validation: centre crop, top-1 / top-5, sharded over ranks.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "io/h5shard.h"
#include "nn/loss.h"
#include "nn/net.h"
#include "nn/pl.h"
#include "stages/train/augment.h"
#include "stages/train/trainer.h"

static const char *const DATA_NAME = "images";   // (N, 1, 3, S, S) uint8, written by mp3d vdt
static const char *const LABEL_NAME = "label";   // (N) int64

enum { CROP_RRC, CROP_RANDOM, CROP_CENTER };   // train.crop_mode

typedef struct {
    nn_net *net;
    h5shard_reader *tr, *va;
    int64_t ntr, nva;
    int D, S;                 // stored sample (1, D, S, S)
    int64_t *ltr, *lva;       // labels
    int crop, crop_mode, flip, shuffle, classes, bmax;
    double smin, eps;
    float mean, std;
    uint64_t seed;
    MPI_Comm comm;            // for synchronised BatchNorm
    uint8_t *raw;             // (D, S, S) one stored sample
    float *x;                 // (bmax, 1, D, crop, crop)
    int64_t *lab;             // (bmax)
} cls_ctx;

static int open_split(h5shard_reader **r, int64_t **labels, int64_t *n, int *D, int *S, const char *root,
                      const char *split) {
    // `mp3d vdt` names its outputs imagenet_<split>.h5; a plain <split>.h5 works too.
    char path[4096];
    snprintf(path, sizeof path, "%s/imagenet_%s.h5", root, split);
    if (!pl_path_exists(path)) snprintf(path, sizeof path, "%s/%s.h5", root, split);
    int rc = h5shard_open(r, path);
    if (rc) return rc;
    int64_t dims[6];
    int nd = h5shard_shape(*r, DATA_NAME, dims, 6);
    if (nd != 5 || dims[1] != 1)
        return pl_fail(PL_EFORMAT, "%s: dataset '%s' must be (N, 1, D, S, S) (an mp3d vdt shard), has %d dims", path,
                       DATA_NAME, nd);
    *n = dims[0];
    *D = (int)dims[2];
    *S = (int)dims[3];
    if (dims[3] != dims[4]) return pl_fail(PL_EFORMAT, "%s: samples are %lldx%lld, expected square", path, (long long)dims[3], (long long)dims[4]);
    *labels = pl_malloc(sizeof(int64_t) * (size_t)(*n ? *n : 1), "labels");
    if (!*labels) return PL_ENOMEM;
    return *n ? h5shard_read_rows(*r, LABEL_NAME, SHARD_I64, *labels, 0, *n, 1) : 0;   // one label per sample, checked
}

static int cls_step(train_task *t, const int64_t *idx, int n, int64_t epoch, double loss_scale, gradsync *gs,
                    double *loss_sum, double *data_s) {
    cls_ctx *c = t->ctx;
    *loss_sum = 0;
    *data_s = 0;
    gradsync_begin(gs);
    if (n == 0) {  // nothing for this rank in this batch: contribute zeros to the all-reduce
        memset(t->params->grads, 0, t->params->nparams * sizeof(float));
        return gradsync_finish(gs);
    }
    double t0 = pl_time();
    const int64_t per = (int64_t)c->D * c->crop * c->crop;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if ((rc = h5shard_read(c->tr, DATA_NAME, SHARD_U8, c->raw, idx[i], 1))) break;
        c->lab[i] = c->ltr[idx[i]];
        pl_rng r;
        pl_rng_seed(&r, aug_sample_seed(c->seed, epoch, idx[i]));
        aug_box b = aug_center_box(c->S, c->S, c->crop);
        if (c->crop_mode == CROP_RRC) {
            b = aug_rrc_params(&r, c->S, c->S, c->smin, 1.0, 3.0 / 4.0, 4.0 / 3.0);
        } else if (c->crop_mode == CROP_RANDOM) {   // torchvision RandomCrop: top, left uniform
            b = aug_random_box(&r, c->S, c->S, c->crop);
        }
        int flip = pl_rng_uniform(&r) < 0.5 && c->flip;
        int order[8] = {0, 1, 2, 3, 4, 5, 6, 7};
        if (c->shuffle) {
            int64_t o[8];
            for (int k = 0; k < c->D; k++) o[k] = k;
            pl_rng_shuffle_i64(&r, o, c->D);
            for (int k = 0; k < c->D; k++) order[k] = (int)o[k];
        }
        aug_crop_resize(c->x + i * per, c->crop, c->crop, c->raw, c->D, c->S, c->S, b, flip, order, c->mean, c->std);
    }
    // A sample one rank cannot read stops every rank before the forward pass (issue 16).
    if ((rc = gradsync_agree(gs, rc))) return rc;
    *data_s = pl_time() - t0;
    rc = nn_net_forward(c->net, c->x, nn_dims_make(n, 1, c->D, c->crop, c->crop), 1);
    if (rc) return rc;
    nn_dims od;
    float *logits = nn_net_output(c->net, 0, &od);
    float *dl = nn_net_output_grad(c->net, 0);
    double loss = 0;
    rc = loss_softmax_ce(&loss, dl, logits, c->lab, n, c->classes, c->eps);
    if (rc) return rc;
    for (int64_t i = 0; i < (int64_t)n * c->classes; i++) dl[i] = (float)(dl[i] * loss_scale);
    *loss_sum = loss * n;
    rc = nn_net_backward(c->net, gradsync_ready, gs);
    if (rc) return rc;
    return gradsync_finish(gs);
}

static int cls_validate(train_task *t, MPI_Comm comm, char *json, size_t json_cap, char *line, size_t line_cap) {
    cls_ctx *c = t->ctx;
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    const int64_t lo = c->nva * rank / size, hi = c->nva * (rank + 1) / size;
    const int64_t per = (int64_t)c->D * c->crop * c->crop;
    double acc[4] = {0, 0, 0, 0};  // top1, top5, loss sum, count
    int rc = 0;
    for (int64_t i0 = lo; i0 < hi && !rc; i0 += c->bmax) {
        int n = (int)PL_MIN((int64_t)c->bmax, hi - i0);
        for (int i = 0; i < n && !rc; i++) {
            rc = h5shard_read(c->va, DATA_NAME, SHARD_U8, c->raw, i0 + i, 1);
            aug_crop_resize(c->x + i * per, c->crop, c->crop, c->raw, c->D, c->S, c->S,
                            aug_center_box(c->S, c->S, c->crop), 0, NULL, c->mean, c->std);
            c->lab[i] = c->lva[i0 + i];
        }
        if (rc || (rc = nn_net_forward(c->net, c->x, nn_dims_make(n, 1, c->D, c->crop, c->crop), 0))) break;
        nn_dims od;
        const float *lg = nn_net_output(c->net, 0, &od);
        double l = 0;
        loss_softmax_ce(&l, NULL, lg, c->lab, n, c->classes, 0.0);
        acc[2] += l * n;
        for (int i = 0; i < n; i++) {
            const float *z = lg + (int64_t)i * c->classes;
            float zt = z[c->lab[i]];
            int above = 0;  // classes scoring strictly higher than the true one (ties favour it)
            for (int k = 0; k < c->classes; k++) above += z[k] > zt;
            acc[0] += above < 1;
            acc[1] += above < 5;
        }
        acc[3] += n;
    }
    int bad = rc != 0;
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, comm);
    if (bad) return rc ? rc : PL_EIO;
    MPI_Allreduce(MPI_IN_PLACE, acc, 4, MPI_DOUBLE, MPI_SUM, comm);
    double nv = PL_MAX(acc[3], 1);
    snprintf(json, json_cap, "\"top1\":%.6f,\"top5\":%.6f,\"val_loss\":%.6f,\"val_images\":%.0f", acc[0] / nv, acc[1] / nv,
             acc[2] / nv, acc[3]);
    snprintf(line, line_cap, "top1:%.4f top5:%.4f val_loss:%.4f images:%.0f", acc[0] / nv, acc[1] / nv, acc[2] / nv, acc[3]);
    return 0;
}

static void cls_destroy(train_task *t) {
    if (!t) return;
    cls_ctx *c = t->ctx;
    if (c) {
        nn_net_destroy(c->net);
        h5shard_close(c->tr);
        h5shard_close(c->va);
        free(c->ltr);
        free(c->lva);
        free(c->raw);
        free(c->x);
        free(c->lab);
        free(c);
    }
    free(t);
}

int task_classify_create(train_task **out, const pl_cfg *cfg, MPI_Comm comm) {
    *out = NULL;
    int size = 1;
    MPI_Comm_size(comm, &size);
    train_task *t = pl_calloc(1, sizeof *t, "task");
    cls_ctx *c = pl_calloc(1, sizeof *c, "classify task");
    if (!t || !c) { free(t); free(c); return PL_ENOMEM; }
    t->ctx = c;
    t->name = "classify";
    t->step = cls_step;
    t->validate = cls_validate;
    t->destroy = cls_destroy;
    int rc = 0;
    const char *root = cfg_str(cfg, "input.root");
    int Dv = 0, Sv = 0;
    if ((rc = open_split(&c->tr, &c->ltr, &c->ntr, &c->D, &c->S, root, "train"))) goto fail;
    if ((rc = open_split(&c->va, &c->lva, &c->nva, &Dv, &Sv, root, "val"))) goto fail;
    if (Dv != c->D || Sv != c->S) {
        rc = pl_fail(PL_EFORMAT, "%s: val samples (1, %d, %d, %d) differ from train (1, %d, %d, %d)", root, Dv, Sv, Sv,
                     c->D, c->S, c->S);
        goto fail;
    }
    c->classes = (int)cfg_int(cfg, "model.num_classes");
    for (int s = 0; s < 2; s++) {
        const int64_t *l = s ? c->lva : c->ltr;
        int64_t n = s ? c->nva : c->ntr;
        for (int64_t i = 0; i < n; i++)
            if (l[i] < 0 || l[i] >= c->classes) {
                rc = pl_fail(PL_ERANGE, "%s/%s.h5: sample %lld has label %lld, outside model.num_classes = %d", root,
                             s ? "val" : "train", (long long)i, (long long)l[i], c->classes);
                goto fail;
            }
    }
    c->crop = (int)cfg_int(cfg, "train.crop");
    if (c->crop > c->S) {
        rc = pl_fail(PL_ERANGE, "train.crop = %d is larger than the stored samples (%d)", c->crop, c->S);
        goto fail;
    }
    c->smin = cfg_float(cfg, "train.min_scale");
    const char *cm = cfg_str(cfg, "train.crop_mode");
    c->crop_mode = !strcmp(cm, "random") ? CROP_RANDOM : !strcmp(cm, "center") ? CROP_CENTER : CROP_RRC;
    c->flip = cfg_bool(cfg, "train.flip");
    c->shuffle = cfg_bool(cfg, "train.slice_shuffle");
    c->eps = cfg_float(cfg, "train.label_smoothing");
    c->mean = (float)cfg_float(cfg, "train.mean");
    c->std = (float)cfg_float(cfg, "train.std");
    c->seed = (uint64_t)cfg_int(cfg, "run.seed");
    int64_t B = cfg_int(cfg, "train.batch");
    c->bmax = (int)((B + size - 1) / size);
    nn_net_config nc = {0};
    if ((rc = nn_arch_parse(&nc.arch, cfg_str(cfg, "model.arch")))) goto fail;
    nc.width = cfg_float(cfg, "model.width");
    nc.norm = !strcmp(cfg_str(cfg, "model.norm"), "gn") ? NN_NORM_GN : NN_NORM_BN;
    nc.gn_groups = (int)cfg_int(cfg, "model.gn_groups");
    nc.num_classes = c->classes;
    if ((rc = nn_net_create(&c->net, &nc, c->seed))) goto fail;
    c->comm = comm;
    if (cfg_bool(cfg, "train.sync_bn") && size > 1) nn_net_set_bn_sync(c->net, trainer_bn_allreduce, &c->comm);
    c->raw = pl_malloc((size_t)c->D * c->S * c->S, "sample");
    c->x = pl_malloc(sizeof(float) * (size_t)c->bmax * c->D * c->crop * c->crop, "batch");
    c->lab = pl_malloc(sizeof(int64_t) * (size_t)c->bmax, "batch labels");
    if (!c->raw || !c->x || !c->lab) { rc = PL_ENOMEM; goto fail; }
    t->params = nn_net_params(c->net);
    t->n_train = c->ntr;
    *out = t;
    return 0;
fail:
    cls_destroy(t);
    return rc;
}
