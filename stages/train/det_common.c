// det_common: what the detect task and `mp3d evaluate` share around the detector model
// (stages/train/det_common.h): model.* / det.* keys -> det_config, network inputs from a lesion
// shard, sharded inference and the gather of detections, eval.* keys -> FROC options.
#include "stages/train/det_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileio.h"
#include "io/h5shard.h"
#include "nn/pl.h"
#include "stages/train/augment.h"

// MP3D / mmdetection input normalisation after the [lo, hi] -> [0, 255] window (DESIGN.md "Recipes").
static const float k_norm_mean = 123.675f, k_norm_std = 58.395f;
static const char *const k_data = "images";

int det_config_from_cfg(det_config *c, const pl_cfg *cfg, int depth) {
    memset(c, 0, sizeof *c);
    int rc = nn_arch_parse(&c->backbone.arch, cfg_str(cfg, "model.arch"));
    if (rc) return rc;
    c->backbone.width = cfg_float(cfg, "model.width");
    c->backbone.norm = !strcmp(cfg_str(cfg, "model.norm"), "gn") ? NN_NORM_GN : NN_NORM_BN;
    c->backbone.gn_groups = (int)cfg_int(cfg, "model.gn_groups");
    c->backbone.num_classes = 1;
    c->depth = depth;
    c->fpn_channels = cfg_int(cfg, "det.fpn_channels");
    c->fc_dim = cfg_int(cfg, "det.fc_dim");
    int nr = cfg_list_len(cfg, "det.anchor_ratios");
    double ratios[ANCHOR_MAX_RATIOS];
    if (nr < 1 || nr > ANCHOR_MAX_RATIOS)
        return pl_fail(PL_EINVAL, "%s: det.anchor_ratios has %d values (allowed 1..%d)", cfg_path(cfg), nr, ANCHOR_MAX_RATIOS);
    for (int i = 0; i < nr; i++) ratios[i] = cfg_list_float(cfg, "det.anchor_ratios", i);
    if ((rc = anchors_config_make(&c->anchors, cfg_float(cfg, "det.anchor_scale"), ratios, nr))) return rc;
    c->rpn_samples = cfg_int(cfg, "det.rpn_samples");
    c->rpn_pre_nms = cfg_int(cfg, "det.rpn_pre_nms");
    c->rpn_post_nms = cfg_int(cfg, "det.rpn_post_nms");
    c->rpn_nms_iou = cfg_float(cfg, "det.rpn_nms_iou");
    c->roi_samples = cfg_int(cfg, "det.roi_samples");
    c->roi_pos_fraction = cfg_float(cfg, "det.roi_pos_fraction");
    c->nms_iou = cfg_float(cfg, "det.nms_iou");
    c->score_thr = cfg_float(cfg, "det.score_thr");
    c->max_dets = cfg_int(cfg, "det.max_dets");
    c->num_classes = 1;
    c->ignore_iof = cfg_float(cfg, "det.ignore_iof");
    return 0;
}

int det_load_input(float *x, int ph, int pw, const lesion_shard *s, int64_t i, det_geom g, int16_t *raw, float *tmp,
                   const double window[2]) {
    PL_ASSERT(g.oh <= ph && g.ow <= pw && g.H == s->H && g.W == s->W);
    int rc = h5shard_read(s->r, k_data, SHARD_I16, raw, i, 1);
    if (rc) return rc;
    int order[64];
    for (int z = 0; z < s->D && z < 64; z++) order[z] = g.zflip ? s->D - 1 - z : z;
    aug_box b = {0, 0, s->H, s->W};
    const int direct = g.oh == ph && g.ow == pw;
    float *dst = direct ? x : tmp;
    aug_crop_resize_i16(dst, g.oh, g.ow, raw, s->D, s->H, s->W, b, g.flip, order, (float)window[0], (float)window[1],
                        k_norm_mean, k_norm_std);
    if (direct) return 0;
    memset(x, 0, sizeof(float) * (size_t)s->D * (size_t)ph * (size_t)pw);
    for (int z = 0; z < s->D; z++)
        for (int y = 0; y < g.oh; y++)
            memcpy(x + ((size_t)z * ph + y) * pw, tmp + ((size_t)z * g.oh + y) * g.ow, sizeof(float) * (size_t)g.ow);
    return 0;
}

// ---- inference ---------------------------------------------------------------------------------

int det_infer_range(froc_dets *out, detector *d, const lesion_shard *s, int64_t lo, int64_t hi, int test_size,
                    const double window[2], double *seconds) {
    double t0 = pl_time();
    if (lo >= hi) {
        if (seconds) *seconds = 0;
        return 0;
    }
    const det_geom g = det_geom_make(s->H, s->W, test_size, 0, 0);
    const int ph = det_pad_up(g.oh), pw = det_pad_up(g.ow);
    const int64_t M = detector_config(d)->max_dets;
    float *x = pl_malloc(sizeof(float) * (size_t)s->D * ph * pw, "input");
    float *tmp = pl_malloc(sizeof(float) * (size_t)s->D * g.oh * g.ow, "resize scratch");
    int16_t *raw = pl_malloc(sizeof(int16_t) * (size_t)s->D * s->H * s->W, "stored sample");
    float *dets = pl_malloc(sizeof(float) * (size_t)M * 5, "detections");
    double ob[4];
    int rc = (!x || !tmp || !raw || !dets) ? PL_ENOMEM : 0;
    const int64_t hw[2] = {g.oh, g.ow};
    for (int64_t i = lo; i < hi && !rc; i++) {
        if ((rc = det_load_input(x, ph, pw, s, i, g, raw, tmp, window))) break;
        int64_t nd = 0;
        if ((rc = detector_detect(d, dets, &nd, x, nn_dims_make(1, 1, s->D, ph, pw), hw))) break;
        for (int64_t j = 0; j < nd && !rc; j++) {
            det_boxes_to_orig(ob, dets + 5 * j, 1, g, s->affine + 4 * i);   // rows of 5: box, score
            froc_det fd;
            memset(&fd, 0, sizeof fd);
            snprintf(fd.file, sizeof fd.file, "%s", s->names[i]);
            memcpy(fd.box, ob, sizeof fd.box);
            fd.score = dets[5 * j + 4];
            rc = froc_dets_push(out, &fd);
        }
    }
    free(x);
    free(tmp);
    free(raw);
    free(dets);
    if (seconds) *seconds = pl_time() - t0;
    return rc;
}

int det_gather(froc_det **all, int64_t *n_all, const froc_det *mine, int64_t n_mine, MPI_Comm comm, int root) {
    void *buf = NULL;
    int rc = det_gather_records(&buf, n_all, mine, n_mine, sizeof(froc_det), comm, root);
    *all = buf;
    return rc;
}

int det_gather_records(void **all, int64_t *n_all, const void *mine, int64_t n_mine, size_t rec_size, MPI_Comm comm,
                       int root) {
    int rank = 0, size = 1;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    *all = NULL;
    *n_all = 0;
    const int64_t rec = (int64_t)rec_size;
    // A rank that cannot take part says so before the first collective, so no peer is left in it.
    int *counts = pl_malloc(sizeof(int) * (size_t)size * 2, "gather counts");
    int mine_bad = n_mine * rec > INT32_MAX ? 1 : !counts ? 2 : 0, any_bad = 0;
    MPI_Allreduce(&mine_bad, &any_bad, 1, MPI_INT, MPI_MAX, comm);
    if (any_bad) {
        free(counts);
        if (mine_bad == 1)
            return pl_fail(PL_ERANGE, "det_gather: %lld detections on rank %d exceed one message", (long long)n_mine, rank);
        return mine_bad ? PL_ENOMEM : pl_fail(PL_EMPI, "det_gather: another rank cannot take part (above)");
    }
    int cnt = (int)(n_mine * rec);
    int *displs = counts + size;
    MPI_Allgather(&cnt, 1, MPI_INT, counts, 1, MPI_INT, comm);
    int64_t total = 0;
    for (int r = 0; r < size; r++) total += counts[r];
    if (total > INT32_MAX) {   // every rank sees the same total: all return together
        free(counts);
        return pl_fail(PL_ERANGE, "det_gather: %lld bytes of detections exceed one message", (long long)total);
    }
    int off = 0;
    for (int r = 0; r < size; r++) {
        displs[r] = off;
        off += counts[r];
    }
    const int recv = root < 0 || rank == root;
    void *buf = NULL;
    if (recv) buf = pl_malloc((size_t)(total > 0 ? total : rec), "gathered detections");
    int nomem = recv && !buf;   // every rank learns of a failed receive buffer before the gather
    MPI_Allreduce(MPI_IN_PLACE, &nomem, 1, MPI_INT, MPI_MAX, comm);
    if (nomem) {
        free(buf);
        free(counts);
        return pl_fail(PL_ENOMEM, "det_gather: no memory for %lld bytes of detections on a receiving rank", (long long)total);
    }
    if (root < 0)
        MPI_Allgatherv(mine, cnt, MPI_BYTE, buf, counts, displs, MPI_BYTE, comm);
    else
        MPI_Gatherv(mine, cnt, MPI_BYTE, buf, counts, displs, MPI_BYTE, root, comm);
    free(counts);
    if (recv) {
        *all = buf;
        *n_all = total / rec;
    }
    return 0;
}

void det_froc_opts(froc_opts *o, const pl_cfg *cfg) {
    froc_opts_default(o);
    o->iou = cfg_float(cfg, "eval.iou");
    o->iou_plus1 = cfg_bool(cfg, "eval.iou_plus1");
    o->keep_noisy = !strcmp(cfg_str(cfg, "eval.noisy"), "keep");
    o->fp_rule = !strcmp(cfg_str(cfg, "eval.fp_rule"), "first_at") ? FROC_FP_FIRST_AT : FROC_FP_BEFORE_NEXT;
    o->split = 0;
}

int det_train_opts_from_cfg(det_train_opts *o, const pl_cfg *cfg, int ranks) {
    memset(o, 0, sizeof *o);
    o->nsizes = cfg_list_len(cfg, "det.train_sizes");
    if (o->nsizes < 1 || o->nsizes > DET_MAX_TRAIN_SIZES)
        return pl_fail(PL_EINVAL, "%s: det.train_sizes has %d values (allowed 1..%d)", cfg_path(cfg), o->nsizes,
                       DET_MAX_TRAIN_SIZES);
    for (int i = 0; i < o->nsizes; i++) {
        o->sizes[i] = (int)cfg_list_float(cfg, "det.train_sizes", i);
        o->max_size = PL_MAX(o->max_size, o->sizes[i]);
    }
    o->test_size = (int)cfg_int(cfg, "det.test_size");
    o->flip = cfg_bool(cfg, "det.flip");
    o->seed = (uint64_t)cfg_int(cfg, "run.seed");
    const int64_t B = cfg_int(cfg, "train.batch");
    o->bmax = (int)((B + ranks - 1) / ranks);
    return 0;
}

int det_val_wanted(const pl_cfg *cfg, const char *root, const char *file, const char *tag) {
    if (!(cfg_float(cfg, "train.val_every") > 0)) return 0;
    char vp[4200];
    snprintf(vp, sizeof vp, "%s/%s", root, file);
    if (pl_path_exists(vp)) return 1;
    LOG0("%s: %s does not exist: training without validation", tag, vp);
    return 0;
}

void det_task_free(train_task *t, detector *det, void *const *bufs, int n) {
    detector_destroy(det);
    for (int i = 0; i < n; i++) free(bufs[i]);
    if (t) free(t->ctx);
    free(t);
}

int det_task_new(train_task **out, size_t ctx_bytes, const char *name, const train_task *fns) {
    *out = NULL;
    train_task *t = pl_calloc(1, sizeof *t, "task");
    void *c = pl_calloc(1, ctx_bytes, name);
    if (!t || !c) {
        free(t);
        free(c);
        return PL_ENOMEM;
    }
    t->ctx = c;
    t->name = name;
    t->step = fns->step;
    t->destroy = fns->destroy;
    *out = t;
    return 0;
}
