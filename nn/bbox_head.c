// bbox_head: RoIAlign + two shared FCs + cls/reg FCs; RoI sampling, losses and test decoding.
#include "nn/bbox_head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/loss.h"
#include "nn/ops.h"

// mmdet ConvFCBBoxHead / BBoxHead.init_weights
static const double BBOX_CLS_STD = 0.01, BBOX_REG_STD = 0.001;

struct bbox_head {
    bbox_head_config cfg;
    int64_t in_dim, ncls, nreg;     // C * OH * OW, num_classes + 1, 4 * classes (or 4)
    linear fc[4];                   // shared_fcs.0, shared_fcs.1, fc_cls, fc_reg
    int pidx[8];
    // RoI set
    int64_t k, kcap, n_img, img_cap;
    float *rois;                    // (K, 5)
    int64_t *labels;                // (K) or unused at test
    float *tgt;                     // (K, 4)
    int *lvl;                       // (K)
    int64_t *img_off;               // (N + 1) RoI ranges per image
    int has_targets;
    // activations for kcap RoIs
    int64_t acap;
    float *arena;                   // x0, h1, h2, cls, reg and their gradients
    float *x0, *h1, *h2, *cls, *reg, *dx0, *dh1, *dh2, *dcls, *dreg;
    nn_dims fd[BBOX_MAX_LEVELS];
    const float *feats[BBOX_MAX_LEVELS];
    double scales[BBOX_MAX_LEVELS];
    // sampling / detection scratch
    int64_t scap;
    float *sbox, *sscore, *skscore; // (S, 4), (S), (S)
    int64_t *sidx, *sord, *skeep, *sasg;
    uint8_t *sflag, *sdead;
};

bbox_head_config bbox_head_defaults(int64_t channels, int num_classes) {
    bbox_head_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = channels;
    c.nlevels = 4;
    for (int i = 0; i < 4; i++) c.strides[i] = (int64_t)4 << i;
    c.finest_scale = 56;
    c.roi.out_h = c.roi.out_w = 7;
    c.roi.sampling_ratio = 0;
    c.roi.aligned = 1;
    c.fc_dim = 1024;
    c.num_classes = num_classes;
    c.class_agnostic = 0;
    const float m[4] = {0, 0, 0, 0}, s[4] = {0.1f, 0.1f, 0.2f, 0.2f};
    c.coder = box_coder_make(m, s);
    c.assign = anchors_assign_rcnn_defaults();
    c.num_samples = 512;
    c.pos_fraction = 0.25;
    c.add_gt_as_proposals = 1;
    c.smooth_l1_beta = 1.0;
    c.score_thr = 0.0;
    c.nms_iou = 0.5;
    c.max_per_img = 100;
    return c;
}

static int bbox_add_fc(nn_params *p, int *idx, const char *name, int64_t out, int64_t in) {
    char nm[NN_NAME_MAX];
    int64_t ws[2] = {out, in};
    snprintf(nm, sizeof nm, "roi_head.bbox_head.%s.weight", name);
    int rc = nn_params_add(p, &idx[0], nm, NN_PARAM, 2, ws, NN_INIT_FAN_IN_UNIFORM, in);
    if (rc) return rc;
    snprintf(nm, sizeof nm, "roi_head.bbox_head.%s.bias", name);
    return nn_params_add(p, &idx[1], nm, NN_PARAM, 1, &out, NN_INIT_FAN_IN_UNIFORM, in);
}

int bbox_head_create(bbox_head **out, const bbox_head_config *cfg, nn_params *p) {
    *out = NULL;
    if (cfg->nlevels < 1 || cfg->nlevels > BBOX_MAX_LEVELS || cfg->in_channels < 1 || cfg->fc_dim < 1 ||
        cfg->num_classes < 1 || cfg->roi.out_h < 1 || cfg->roi.out_w < 1 || cfg->num_samples < 1 ||
        cfg->max_per_img < 1 || !(cfg->finest_scale > 0))
        return pl_fail(PL_EINVAL, "bbox_head: levels = %d, channels = %lld, fc = %lld, classes = %d, roi %lldx%lld, samples = %lld, max_per_img = %lld, finest_scale = %g (levels 1..%d, the rest >= 1)",
                       cfg->nlevels, (long long)cfg->in_channels, (long long)cfg->fc_dim, cfg->num_classes,
                       (long long)cfg->roi.out_h, (long long)cfg->roi.out_w, (long long)cfg->num_samples,
                       (long long)cfg->max_per_img, cfg->finest_scale, BBOX_MAX_LEVELS);
    bbox_head *h = pl_calloc(1, sizeof *h, "bbox_head");
    if (!h) return PL_ENOMEM;
    h->cfg = *cfg;
    h->in_dim = cfg->in_channels * cfg->roi.out_h * cfg->roi.out_w;
    h->ncls = cfg->num_classes + 1;
    h->nreg = cfg->class_agnostic ? 4 : 4 * (int64_t)cfg->num_classes;
    const int64_t ins[4] = {h->in_dim, cfg->fc_dim, cfg->fc_dim, cfg->fc_dim};
    const int64_t outs[4] = {cfg->fc_dim, cfg->fc_dim, h->ncls, h->nreg};
    const char *names[4] = {"shared_fcs.0", "shared_fcs.1", "fc_cls", "fc_reg"};
    int rc = 0;
    for (int i = 0; i < 4 && !rc; i++) {
        h->fc[i].in = ins[i];
        h->fc[i].out = outs[i];
        rc = bbox_add_fc(p, &h->pidx[2 * i], names[i], outs[i], ins[i]);
    }
    for (int l = 0; l < cfg->nlevels; l++) h->scales[l] = 1.0 / (double)cfg->strides[l];
    if (rc) {
        bbox_head_destroy(h);
        return rc;
    }
    *out = h;
    return 0;
}

void bbox_head_bind(bbox_head *h, const nn_params *p) {
    for (int i = 0; i < 4; i++) {
        h->fc[i].w = nn_params_data(p, h->pidx[2 * i]);
        h->fc[i].dw = nn_params_grad(p, h->pidx[2 * i]);
        h->fc[i].b = nn_params_data(p, h->pidx[2 * i + 1]);
        h->fc[i].db = nn_params_grad(p, h->pidx[2 * i + 1]);
    }
}

void bbox_head_init_weights(bbox_head *h, pl_rng *rng) {
    for (int i = 0; i < 4; i++) {
        linear *l = &h->fc[i];
        int64_t n = l->in * l->out;
        if (i < 2) {
            double a = sqrt(6.0 / (double)(l->in + l->out));
            for (int64_t j = 0; j < n; j++) l->w[j] = (float)pl_rng_range(rng, -a, a);
        } else {
            double sd = i == 2 ? BBOX_CLS_STD : BBOX_REG_STD;
            for (int64_t j = 0; j < n; j++) l->w[j] = (float)(sd * pl_rng_normal(rng));
        }
        memset(l->b, 0, (size_t)l->out * sizeof(float));
    }
}

void bbox_head_destroy(bbox_head *h) {
    if (!h) return;
    free(h->rois);
    free(h->labels);
    free(h->tgt);
    free(h->lvl);
    free(h->img_off);
    free(h->arena);
    free(h->sbox);
    free(h->sscore);
    free(h->skscore);
    free(h->sidx);
    free(h->sord);
    free(h->skeep);
    free(h->sasg);
    free(h->sflag);
    free(h->sdead);
    free(h);
}

// replaces *buf by a fresh block of n elements of size sz (contents not kept)
static int bbox_grow(void **buf, size_t n, size_t sz, const char *what) {
    free(*buf);
    *buf = pl_malloc(PL_MAX(n, (size_t)1) * sz, what);
    return *buf ? 0 : PL_ENOMEM;
}

static int bbox_reserve_rois(bbox_head *h, int64_t k, int64_t n_img) {
    if (k > h->kcap) {
        int rc = bbox_grow((void **)&h->rois, (size_t)k * 5, sizeof(float), "bbox_head rois");
        if (!rc) rc = bbox_grow((void **)&h->labels, (size_t)k, sizeof(int64_t), "bbox_head labels");
        if (!rc) rc = bbox_grow((void **)&h->tgt, (size_t)k * 4, sizeof(float), "bbox_head targets");
        if (!rc) rc = bbox_grow((void **)&h->lvl, (size_t)k, sizeof(int), "bbox_head levels");
        if (rc) {
            h->kcap = 0;
            return rc;
        }
        h->kcap = k;
    }
    if (n_img + 1 > h->img_cap) {
        int rc = bbox_grow((void **)&h->img_off, (size_t)(n_img + 1), sizeof(int64_t), "bbox_head image offsets");
        if (rc) {
            h->img_cap = 0;
            return rc;
        }
        h->img_cap = n_img + 1;
    }
    return 0;
}

static int bbox_reserve_scratch(bbox_head *h, int64_t s) {
    if (s <= h->scap) return 0;
    int rc = bbox_grow((void **)&h->sbox, (size_t)s * 4, sizeof(float), "bbox_head candidate boxes");
    if (!rc) rc = bbox_grow((void **)&h->sscore, (size_t)s, sizeof(float), "bbox_head candidate scores");
    if (!rc) rc = bbox_grow((void **)&h->skscore, (size_t)s, sizeof(float), "bbox_head kept scores");
    if (!rc) rc = bbox_grow((void **)&h->sidx, (size_t)s, sizeof(int64_t), "bbox_head candidate index");
    if (!rc) rc = bbox_grow((void **)&h->sord, (size_t)s, sizeof(int64_t), "bbox_head order");
    if (!rc) rc = bbox_grow((void **)&h->skeep, (size_t)s, sizeof(int64_t), "bbox_head keep");
    if (!rc) rc = bbox_grow((void **)&h->sasg, (size_t)s, sizeof(int64_t), "bbox_head assignment");
    if (!rc) rc = bbox_grow((void **)&h->sflag, (size_t)s, 1, "bbox_head flags");
    if (!rc) rc = bbox_grow((void **)&h->sdead, (size_t)s, 1, "bbox_head nms flags");
    h->scap = rc ? 0 : s;
    return rc;
}

int bbox_head_sample(bbox_head *h, int64_t *npos, const float *props, const int64_t *nprops,
                     int64_t max_props, const det_gt *gt, int64_t n_img, pl_rng *rng) {
    const bbox_head_config *c = &h->cfg;
    int64_t kmax = 0, smax = 0;
    for (int64_t i = 0; i < n_img; i++) {
        int64_t nc = (c->add_gt_as_proposals ? gt[i].n : 0) + nprops[i];
        kmax += PL_MIN(nc, c->num_samples);
        smax = PL_MAX(smax, nc);
        for (int64_t j = 0; j < gt[i].n; j++) {
            int32_t lab = gt[i].labels ? gt[i].labels[j] : 0;
            if (lab < 0 || lab >= c->num_classes)
                return pl_fail(PL_ERANGE, "bbox_head: image %lld box %lld has label %d (allowed 0..%d)",
                               (long long)i, (long long)j, lab, c->num_classes - 1);
        }
    }
    int rc = bbox_reserve_rois(h, kmax, n_img);
    if (!rc) rc = bbox_reserve_scratch(h, smax);
    if (rc) return rc;
    int64_t k = 0, tp = 0;
    for (int64_t i = 0; i < n_img; i++) {
        const det_gt *g = &gt[i];
        h->img_off[i] = k;
        int64_t ng = c->add_gt_as_proposals ? g->n : 0, nc = ng + nprops[i];
        memcpy(h->sbox, g->boxes, (size_t)ng * 4 * sizeof(float));
        for (int64_t j = 0; j < nprops[i]; j++)
            memcpy(h->sbox + 4 * (ng + j), props + (i * max_props + j) * 5, 4 * sizeof(float));
        // a box without positive width and height cannot be encoded: never sampled
        for (int64_t j = 0; j < nc; j++) {
            const float *b = h->sbox + 4 * j;
            h->sflag[j] = b[2] > b[0] && b[3] > b[1];
        }
        anchors_assign(h->sasg, NULL, h->sbox, h->sflag, nc, g, &c->assign);
        int64_t np = 0;
        anchors_sample(h->sflag, &np, h->sasg, nc, c->num_samples, c->pos_fraction, rng, h->sidx);
        tp += np;
        for (int pass = 0; pass < 2; pass++)  // positives first, as mmdet's SamplingResult
            for (int64_t j = 0; j < nc; j++) {
                if (!h->sflag[j] || (h->sasg[j] >= 0) != (pass == 0)) continue;
                float *r = h->rois + 5 * k;
                r[0] = (float)i;
                memcpy(r + 1, h->sbox + 4 * j, 4 * sizeof(float));
                if (h->sasg[j] >= 0) {
                    int64_t gi = h->sasg[j];
                    h->labels[k] = g->labels ? g->labels[gi] : 0;
                    box_encode(h->tgt + 4 * k, h->sbox + 4 * j, g->boxes + 4 * gi, 1, &c->coder);
                } else {
                    h->labels[k] = c->num_classes;
                    memset(h->tgt + 4 * k, 0, 4 * sizeof(float));
                }
                k++;
            }
    }
    h->img_off[n_img] = k;
    h->k = k;
    h->n_img = n_img;
    h->has_targets = 1;
    if (npos) *npos = tp;
    return 0;
}

int bbox_head_set_proposals(bbox_head *h, const float *props, const int64_t *nprops,
                            int64_t max_props, int64_t n_img) {
    int64_t k = 0;
    for (int64_t i = 0; i < n_img; i++) k += nprops[i];
    int rc = bbox_reserve_rois(h, k, n_img);
    if (rc) return rc;
    k = 0;
    for (int64_t i = 0; i < n_img; i++) {
        h->img_off[i] = k;
        for (int64_t j = 0; j < nprops[i]; j++, k++) {
            h->rois[5 * k] = (float)i;
            memcpy(h->rois + 5 * k + 1, props + (i * max_props + j) * 5, 4 * sizeof(float));
        }
    }
    h->img_off[n_img] = k;
    h->k = k;
    h->n_img = n_img;
    h->has_targets = 0;
    return 0;
}

const float *bbox_head_rois(const bbox_head *h, int64_t *k) {
    if (k) *k = h->k;
    return h->rois;
}

const int64_t *bbox_head_labels(const bbox_head *h) { return h->has_targets ? h->labels : NULL; }
float *bbox_head_cls(const bbox_head *h) { return h->cls; }
float *bbox_head_reg(const bbox_head *h) { return h->reg; }

static int bbox_plan(bbox_head *h, int64_t k) {
    if (k <= h->acap && h->arena) return 0;
    const int64_t f = h->cfg.fc_dim;
    const int64_t per = 2 * (h->in_dim + 2 * f + h->ncls + h->nreg);
    int rc = bbox_grow((void **)&h->arena, (size_t)(k * per), sizeof(float), "bbox_head activations");
    if (rc) {
        h->acap = 0;
        return rc;
    }
    h->acap = k;
    float *a = h->arena;
    h->x0 = a, a += k * h->in_dim;
    h->dx0 = a, a += k * h->in_dim;
    h->h1 = a, a += k * f;
    h->dh1 = a, a += k * f;
    h->h2 = a, a += k * f;
    h->dh2 = a, a += k * f;
    h->cls = a, a += k * h->ncls;
    h->dcls = a, a += k * h->ncls;
    h->reg = a, a += k * h->nreg;
    h->dreg = a;
    return 0;
}

int bbox_head_forward(bbox_head *h, const float *const *feats, const nn_dims *fd) {
    const bbox_head_config *c = &h->cfg;
    for (int l = 0; l < c->nlevels; l++) {
        if (fd[l].d != 1 || fd[l].c != c->in_channels || fd[l].n < h->n_img)
            return pl_fail(PL_EINVAL, "bbox_head: level %d map is (%lld, %lld, %lld, %lld, %lld), expected (N>=%lld, %lld, 1, H, W)",
                           l, (long long)fd[l].n, (long long)fd[l].c, (long long)fd[l].d, (long long)fd[l].h,
                           (long long)fd[l].w, (long long)h->n_img, (long long)c->in_channels);
        h->fd[l] = fd[l];
        h->feats[l] = feats[l];
    }
    const int64_t k = h->k;
    int rc = bbox_plan(h, PL_MAX(k, (int64_t)1));
    if (rc) return rc;
    if (k == 0) return 0;
    roialign_map_levels(h->lvl, h->rois, k, c->nlevels, c->finest_scale);
    roialign_forward_levels(h->x0, h->feats, h->fd, h->scales, h->lvl, h->rois, k, &c->roi);
    linear_forward(h->h1, h->x0, &h->fc[0], k);
    relu_forward(h->h1, h->h1, k * c->fc_dim);
    linear_forward(h->h2, h->h1, &h->fc[1], k);
    relu_forward(h->h2, h->h2, k * c->fc_dim);
    linear_forward(h->cls, h->h2, &h->fc[2], k);
    linear_forward(h->reg, h->h2, &h->fc[3], k);
    return 0;
}

int bbox_head_loss(bbox_head *h, double *loss_cls, double *loss_reg) {
    if (!h->has_targets) return pl_fail(PL_EINVAL, "bbox_head: loss without sampled targets (call bbox_head_sample)");
    const int64_t k = h->k;
    *loss_cls = *loss_reg = 0;
    if (k == 0) return 0;
    int rc = loss_softmax_ce(loss_cls, h->dcls, h->cls, h->labels, k, h->ncls, 0.0);
    if (rc) return rc;
    memset(h->dreg, 0, (size_t)(k * h->nreg) * sizeof(float));
    double lr = 0;
    for (int64_t i = 0; i < k; i++) {
        if (h->labels[i] >= h->cfg.num_classes) continue;
        int64_t col = h->cfg.class_agnostic ? 0 : 4 * h->labels[i];
        lr += loss_smooth_l1(h->dreg + i * h->nreg + col, h->reg + i * h->nreg + col, h->tgt + 4 * i,
                             NULL, 4, h->cfg.smooth_l1_beta, (double)k);
    }
    *loss_reg = lr;
    return 0;
}

int bbox_head_backward(bbox_head *h, float *const *dfeats) {
    const int64_t k = h->k, f = h->cfg.fc_dim;
    if (k == 0) return 0;
    memset(h->dh2, 0, (size_t)(k * f) * sizeof(float));
    linear_backward(h->dh2, h->dcls, h->h2, &h->fc[2], k);
    linear_backward(h->dh2, h->dreg, h->h2, &h->fc[3], k);
    for (int64_t i = 0; i < k * f; i++)
        if (!(h->h2[i] > 0)) h->dh2[i] = 0.0f;
    memset(h->dh1, 0, (size_t)(k * f) * sizeof(float));
    linear_backward(h->dh1, h->dh2, h->h1, &h->fc[1], k);
    for (int64_t i = 0; i < k * f; i++)
        if (!(h->h1[i] > 0)) h->dh1[i] = 0.0f;
    int need_dx = 0;
    for (int l = 0; dfeats && l < h->cfg.nlevels; l++) need_dx |= dfeats[l] != NULL;
    if (need_dx) memset(h->dx0, 0, (size_t)(k * h->in_dim) * sizeof(float));
    linear_backward(need_dx ? h->dx0 : NULL, h->dh1, h->x0, &h->fc[0], k);
    if (need_dx)
        roialign_backward_levels(dfeats, h->dx0, h->fd, h->scales, h->lvl, h->rois, k, &h->cfg.roi);
    return 0;
}

int bbox_head_detect(bbox_head *h, float *dets, int64_t *ndets, const int64_t *img_hw) {
    const bbox_head_config *c = &h->cfg;
    const int nc = c->num_classes;
    int64_t smax = 0;
    for (int64_t i = 0; i < h->n_img; i++) smax = PL_MAX(smax, (h->img_off[i + 1] - h->img_off[i]) * nc);
    int rc = bbox_reserve_scratch(h, smax);
    if (rc) return rc;
    for (int64_t i = 0; i < h->n_img; i++) {
        const int64_t r0 = h->img_off[i], r1 = h->img_off[i + 1];
        const int64_t ih = img_hw[2 * i], iw = img_hw[2 * i + 1];
        // candidates grouped by class: (class, RoI) with softmax score > score_thr
        int64_t ncand = 0, nkept = 0;
        for (int cl = 0; cl < nc; cl++) {
            const int64_t cs = ncand;
            for (int64_t r = r0; r < r1; r++) {
                const float *z = h->cls + r * h->ncls;
                double mx = z[0], se = 0;
                for (int64_t j = 1; j < h->ncls; j++) mx = fmax(mx, z[j]);
                for (int64_t j = 0; j < h->ncls; j++) se += exp((double)z[j] - mx);
                float score = (float)(exp((double)z[cl] - mx) / se);
                if (!(score > c->score_thr)) continue;
                const float *d = h->reg + r * h->nreg + (c->class_agnostic ? 0 : 4 * cl);
                box_decode(h->sbox + 4 * ncand, h->rois + 5 * r + 1, d, 1, &c->coder, ih, iw);
                h->sscore[ncand] = score;
                h->sidx[ncand] = cl;
                ncand++;
            }
            int64_t kk = box_nms(h->skeep + nkept, h->sord, h->sdead, h->sbox + 4 * cs, h->sscore + cs,
                                 ncand - cs, c->nms_iou, c->assign.plus1, 0);
            for (int64_t t = 0; t < kk; t++) h->skeep[nkept + t] += cs;
            nkept += kk;
        }
        // all classes together by score (ties: lower class, then earlier RoI), top max_per_img
        for (int64_t t = 0; t < nkept; t++) h->skscore[t] = h->sscore[h->skeep[t]];
        box_argsort_desc(h->sord, h->skscore, nkept);
        const int64_t out = PL_MIN(nkept, c->max_per_img);
        float *dd = dets + i * c->max_per_img * 6;
        for (int64_t t = 0; t < out; t++) {
            const int64_t j = h->skeep[h->sord[t]];
            memcpy(dd + 6 * t, h->sbox + 4 * j, 4 * sizeof(float));
            dd[6 * t + 4] = h->sscore[j];
            dd[6 * t + 5] = (float)h->sidx[j];
        }
        ndets[i] = out;
    }
    return 0;
}
