// rpn_head: shared 3x3 conv + ReLU, 1x1 cls / reg convs over FPN levels; targets, loss, proposals.
#include "nn/rpn_head.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv3d.h"
#include "nn/loss.h"

static const size_t RPN_DEFAULT_WS_FLOATS = 16u << 20;
static const float RPN_INIT_STD = 0.01f;   // mmdet RPNHead.init_weights: normal_init(std=0.01)

struct rpn_head {
    rpn_head_config cfg;
    int na;                                   // anchors per location
    conv3d conv, cls, reg;
    int pidx[6];                              // conv w, b, cls w, b, reg w, b
    // plan (per level)
    nn_dims fd[ANCHOR_MAX_LEVELS];
    const float *feats[ANCHOR_MAX_LEVELS];
    float *t[ANCHOR_MAX_LEVELS], *dt[ANCHOR_MAX_LEVELS];      // (N, F, 1, H, W) ReLU(conv)
    float *co[ANCHOR_MAX_LEVELS], *dco[ANCHOR_MAX_LEVELS];    // (N, A, 1, H, W)
    float *ro[ANCHOR_MAX_LEVELS], *dro[ANCHOR_MAX_LEVELS];    // (N, 4A, 1, H, W)
    float *anchors[ANCHOR_MAX_LEVELS];                        // (H*W*A, 4)
    int64_t lvl_off[ANCHOR_MAX_LEVELS + 1];                   // anchor offsets, total M
    float *arena;
    size_t arena_cap;
    float *ws;
    size_t ws_floats;
    // targets: (N, M) label 1 pos / 0 neg / -1 unused, (N, M, 4) regression targets
    int8_t *label;
    float *tgt;
    int64_t *assigned, *sws;
    uint8_t *valid, *picked;
    size_t tcap;      // anchors (N * M) the target buffers hold
    size_t mcap;      // anchors (M) the per-image scratch holds
    // proposal scratch
    float *cand;      // (L * nms_pre, 4) boxes, then scores
    float *cscore;    // (L * nms_pre)
    float *lscore;    // (max(M, L * nms_pre)) scores of a level / of the kept boxes
    int64_t *order, *keep;
    uint8_t *dead;
    size_t pcap;
    int has_targets;
    int64_t nsampled;
};

rpn_head_config rpn_head_defaults(int64_t channels, const anchor_config *anchors) {
    rpn_head_config c;
    memset(&c, 0, sizeof c);
    c.in_channels = channels;
    c.feat_channels = channels;
    c.anchors = *anchors;
    c.assign = anchors_assign_rpn_defaults();
    c.num_samples = 256;
    c.pos_fraction = 0.5;
    c.allowed_border = -1;
    c.smooth_l1_beta = 1.0 / 9.0;
    const float m[4] = {0, 0, 0, 0}, s[4] = {1, 1, 1, 1};
    c.coder = box_coder_make(m, s);
    c.nms_pre = 2000;
    c.nms_iou = 0.7;
    c.max_per_img = 1000;
    c.min_bbox_size = 0;
    return c;
}

static int rpn_add(nn_params *p, int *idx, const char *name, int64_t oc, int64_t ic, int64_t k) {
    char nm[NN_NAME_MAX];
    int64_t ws[4] = {oc, ic, k, k};
    snprintf(nm, sizeof nm, "rpn_head.%s.weight", name);
    int rc = nn_params_add(p, &idx[0], nm, NN_PARAM, 4, ws, NN_INIT_FAN_IN_UNIFORM, ic * k * k);
    if (rc) return rc;
    snprintf(nm, sizeof nm, "rpn_head.%s.bias", name);
    return nn_params_add(p, &idx[1], nm, NN_PARAM, 1, &oc, NN_INIT_FAN_IN_UNIFORM, ic * k * k);
}

int rpn_head_create(rpn_head **out, const rpn_head_config *cfg, nn_params *p) {
    *out = NULL;
    const anchor_config *a = &cfg->anchors;
    if (a->nlevels < 1 || a->nlevels > ANCHOR_MAX_LEVELS || anchors_per_location(a) < 1 ||
        cfg->in_channels < 1 || cfg->feat_channels < 1 || cfg->num_samples < 1 || cfg->nms_pre < 1 ||
        cfg->max_per_img < 1)
        return pl_fail(PL_EINVAL, "rpn_head: levels = %d, anchors/location = %d, channels = %lld/%lld, num_samples = %lld, nms_pre = %lld, max_per_img = %lld (all must be >= 1)",
                       a->nlevels, anchors_per_location(a), (long long)cfg->in_channels,
                       (long long)cfg->feat_channels, (long long)cfg->num_samples,
                       (long long)cfg->nms_pre, (long long)cfg->max_per_img);
    rpn_head *h = pl_calloc(1, sizeof *h, "rpn_head");
    if (!h) return PL_ENOMEM;
    h->cfg = *cfg;
    if (!h->cfg.ws_floats) h->cfg.ws_floats = RPN_DEFAULT_WS_FLOATS;
    h->na = anchors_per_location(a);
    const int64_t k1[3] = {1, 1, 1}, k3[3] = {1, 3, 3}, s1[3] = {1, 1, 1}, p0[3] = {0, 0, 0},
                  p1[3] = {0, 1, 1};
    const int64_t c = cfg->in_channels, f = cfg->feat_channels, na = h->na;
    h->conv.sh = conv3d_shape_make(c, f, k3, s1, p1, 1, 1);
    h->cls.sh = conv3d_shape_make(f, na, k1, s1, p0, 1, 1);
    h->reg.sh = conv3d_shape_make(f, 4 * na, k1, s1, p0, 1, 1);
    int rc = rpn_add(p, &h->pidx[0], "rpn_conv", f, c, 3);
    if (!rc) rc = rpn_add(p, &h->pidx[2], "rpn_cls", na, f, 1);
    if (!rc) rc = rpn_add(p, &h->pidx[4], "rpn_reg", 4 * na, f, 1);
    if (rc) {
        rpn_head_destroy(h);
        return rc;
    }
    *out = h;
    return 0;
}

void rpn_head_bind(rpn_head *h, const nn_params *p) {
    conv3d *l[3] = {&h->conv, &h->cls, &h->reg};
    for (int i = 0; i < 3; i++) {
        l[i]->w = nn_params_data(p, h->pidx[2 * i]);
        l[i]->dw = nn_params_grad(p, h->pidx[2 * i]);
        l[i]->b = nn_params_data(p, h->pidx[2 * i + 1]);
        l[i]->db = nn_params_grad(p, h->pidx[2 * i + 1]);
    }
}

void rpn_head_init_weights(rpn_head *h, pl_rng *rng) {
    conv3d *l[3] = {&h->conv, &h->cls, &h->reg};
    for (int i = 0; i < 3; i++) {
        int64_t n = conv3d_weight_count(&l[i]->sh);
        for (int64_t j = 0; j < n; j++) l[i]->w[j] = (float)(RPN_INIT_STD * pl_rng_normal(rng));
        memset(l[i]->b, 0, (size_t)l[i]->sh.oc * sizeof(float));
    }
}

void rpn_head_destroy(rpn_head *h) {
    if (!h) return;
    free(h->arena);
    free(h->ws);
    free(h->label);
    free(h->tgt);
    free(h->assigned);
    free(h->sws);
    free(h->valid);
    free(h->picked);
    free(h->cand);
    free(h->cscore);
    free(h->lscore);
    free(h->order);
    free(h->keep);
    free(h->dead);
    free(h);
}

float *rpn_head_cls(const rpn_head *h, int level) { return h->co[level]; }
float *rpn_head_reg(const rpn_head *h, int level) { return h->ro[level]; }

const float *rpn_head_anchors(const rpn_head *h, int level, int64_t *count) {
    if (count) *count = h->lvl_off[level + 1] - h->lvl_off[level];
    return h->anchors[level];
}

// replaces *buf by a fresh block of n elements of size sz (contents not kept)
static int rpn_grow(void **buf, size_t n, size_t sz, const char *what) {
    free(*buf);
    *buf = pl_malloc(PL_MAX(n, (size_t)1) * sz, what);
    return *buf ? 0 : PL_ENOMEM;
}

static int rpn_plan(rpn_head *h, const nn_dims *fd) {
    const int nl = h->cfg.anchors.nlevels, na = h->na;
    const int64_t f = h->cfg.feat_channels;
    size_t total = 0, ws = 0;
    h->lvl_off[0] = 0;
    for (int l = 0; l < nl; l++) {
        nn_dims d = fd[l];
        if (memcmp(&d, &h->fd[l], sizeof d) != 0) h->has_targets = 0;  // targets follow the anchors
        if (d.d != 1 || d.c != h->cfg.in_channels || d.n != fd[0].n || d.h < 1 || d.w < 1)
            return pl_fail(PL_EINVAL, "rpn_head: level %d map is (%lld, %lld, %lld, %lld, %lld), expected (N=%lld, %lld, 1, H, W)",
                           l, (long long)d.n, (long long)d.c, (long long)d.d, (long long)d.h,
                           (long long)d.w, (long long)fd[0].n, (long long)h->cfg.in_channels);
        h->fd[l] = d;
        int64_t hw = d.h * d.w;
        total += (size_t)(2 * d.n * f * hw + 2 * d.n * na * hw + 2 * d.n * 4 * na * hw + hw * na * 4);
        // (the anchors of all levels form one (M, 4) block at the end of the arena)
        ws = PL_MAX(ws, conv3d_workspace_floats(&h->conv.sh, d, h->cfg.ws_floats));
        h->lvl_off[l + 1] = h->lvl_off[l] + hw * na;
    }
    if (total > h->arena_cap) {
        int rc = rpn_grow((void **)&h->arena, total, sizeof(float), "rpn_head activations");
        if (rc) return rc;
        h->arena_cap = total;
    }
    if (ws > h->ws_floats) {
        int rc = rpn_grow((void **)&h->ws, ws, sizeof(float), "rpn_head workspace");
        if (rc) return rc;
        h->ws_floats = ws;
    }
    float *a = h->arena;
    for (int l = 0; l < nl; l++) {
        nn_dims d = fd[l];
        int64_t hw = d.h * d.w;
        h->t[l] = a, a += d.n * f * hw;
        h->dt[l] = a, a += d.n * f * hw;
        h->co[l] = a, a += d.n * na * hw;
        h->dco[l] = a, a += d.n * na * hw;
        h->ro[l] = a, a += d.n * 4 * na * hw;
        h->dro[l] = a, a += d.n * 4 * na * hw;
    }
    for (int l = 0; l < nl; l++) {
        h->anchors[l] = a + 4 * h->lvl_off[l];
        anchors_grid(h->anchors[l], &h->cfg.anchors, l, fd[l].h, fd[l].w);
    }
    // per-image target scratch and batch targets
    const int64_t m = h->lvl_off[nl], n = fd[0].n;
    if ((size_t)(n * m) > h->tcap) {
        int rc = rpn_grow((void **)&h->label, (size_t)(n * m), 1, "rpn labels");
        if (!rc) rc = rpn_grow((void **)&h->tgt, (size_t)(n * m * 4), sizeof(float), "rpn targets");
        if (rc) {
            h->tcap = 0;
            return rc;
        }
        h->tcap = (size_t)(n * m);
    }
    if ((size_t)m > h->mcap) {
        int rc = rpn_grow((void **)&h->assigned, (size_t)m, sizeof(int64_t), "rpn assignment");
        if (!rc) rc = rpn_grow((void **)&h->sws, (size_t)m, sizeof(int64_t), "rpn sampling");
        if (!rc) rc = rpn_grow((void **)&h->valid, (size_t)m, 1, "rpn valid flags");
        if (!rc) rc = rpn_grow((void **)&h->picked, (size_t)m, 1, "rpn picked flags");
        if (rc) {
            h->mcap = 0;
            return rc;
        }
        h->mcap = (size_t)m;
    }
    // proposal scratch: nms_pre candidates per level; a whole level (or all kept) is sorted
    size_t pc = (size_t)(nl * h->cfg.nms_pre);
    size_t oc = PL_MAX((size_t)m, pc);
    if (oc > h->pcap) {
        int rc = rpn_grow((void **)&h->cand, pc * 4, sizeof(float), "rpn candidates");
        if (!rc) rc = rpn_grow((void **)&h->cscore, pc, sizeof(float), "rpn candidate scores");
        if (!rc) rc = rpn_grow((void **)&h->lscore, oc, sizeof(float), "rpn level scores");
        if (!rc) rc = rpn_grow((void **)&h->order, oc, sizeof(int64_t), "rpn order");
        if (!rc) rc = rpn_grow((void **)&h->keep, pc, sizeof(int64_t), "rpn keep");
        if (!rc) rc = rpn_grow((void **)&h->dead, pc, 1, "rpn nms flags");
        if (rc) {
            h->pcap = 0;
            return rc;
        }
        h->pcap = oc;
    }
    return 0;
}

int rpn_head_forward(rpn_head *h, const float *const *feats, const nn_dims *fd) {
    int rc = rpn_plan(h, fd);
    if (rc) return rc;
    const int nl = h->cfg.anchors.nlevels;
    for (int l = 0; l < nl; l++) {
        nn_dims d = fd[l];
        nn_dims td = nn_dims_make(d.n, h->cfg.feat_channels, 1, d.h, d.w);
        h->feats[l] = feats[l];
        conv3d_forward(h->t[l], feats[l], &h->conv, d, h->ws, h->ws_floats);
        int64_t cnt = nn_dims_count(td);
        for (int64_t i = 0; i < cnt; i++) h->t[l][i] = h->t[l][i] > 0 ? h->t[l][i] : 0.0f;
        conv3d_forward(h->co[l], h->t[l], &h->cls, td, h->ws, h->ws_floats);
        conv3d_forward(h->ro[l], h->t[l], &h->reg, td, h->ws, h->ws_floats);
    }
    return 0;
}

int rpn_head_targets(rpn_head *h, int64_t *npos, int64_t *nneg, const det_gt *gt, pl_rng *rng) {
    const int nl = h->cfg.anchors.nlevels;
    const int64_t m = h->lvl_off[nl], n = h->fd[0].n;
    const float *all = h->anchors[0];
    int64_t tp = 0, tn = 0;
    for (int64_t i = 0; i < n; i++) {
        const det_gt *g = &gt[i];
        for (int64_t j = 0; j < g->n; j++) {
            const float *b = g->boxes + 4 * j;
            if (!(b[2] > b[0] && b[3] > b[1]))
                return pl_fail(PL_EINVAL, "rpn_head: image %lld box %lld is (%g, %g, %g, %g): need x2 > x1, y2 > y1",
                               (long long)i, (long long)j, b[0], b[1], b[2], b[3]);
        }
        anchors_inside(h->valid, all, m, g->img_h, g->img_w, h->cfg.allowed_border);
        anchors_assign(h->assigned, NULL, all, h->valid, m, g, &h->cfg.assign);
        int64_t np = 0;
        int64_t ns = anchors_sample(h->picked, &np, h->assigned, m, h->cfg.num_samples,
                                    h->cfg.pos_fraction, rng, h->sws);
        tp += np;
        tn += ns - np;
        int8_t *lab = h->label + i * m;
        float *tg = h->tgt + i * m * 4;
        for (int64_t j = 0; j < m; j++) {
            lab[j] = h->picked[j] ? (h->assigned[j] >= 0 ? 1 : 0) : -1;
            if (lab[j] == 1) box_encode(tg + 4 * j, all + 4 * j, g->boxes + 4 * h->assigned[j], 1, &h->cfg.coder);
            else memset(tg + 4 * j, 0, 4 * sizeof(float));
        }
    }
    h->nsampled = tp + tn;
    h->has_targets = 1;
    if (npos) *npos = tp;
    if (nneg) *nneg = tn;
    return 0;
}

int rpn_head_loss(rpn_head *h, double *loss_cls, double *loss_reg) {
    if (!h->has_targets) return pl_fail(PL_EINVAL, "rpn_head: loss called before rpn_head_targets for this forward");
    const int nl = h->cfg.anchors.nlevels, na = h->na;
    const int64_t m = h->lvl_off[nl];
    const double norm = (double)PL_MAX(h->nsampled, (int64_t)1);
    const double beta = h->cfg.smooth_l1_beta;
    double lc = 0, lr = 0;
    for (int l = 0; l < nl; l++) {
        const nn_dims d = h->fd[l];
        const int64_t hw = d.h * d.w;
        for (int64_t i = 0; i < d.n; i++)
            for (int64_t a = 0; a < na; a++)
                for (int64_t p = 0; p < hw; p++) {
                    const int64_t j = h->lvl_off[l] + p * na + a;  // anchor index
                    const int8_t lab = h->label[i * m + j];
                    const int64_t ci = (i * na + a) * hw + p;
                    if (lab < 0) {
                        h->dco[l][ci] = 0.0f;
                    } else {
                        float t = (float)lab;
                        lc += loss_sigmoid_bce(&h->dco[l][ci], &h->co[l][ci], &t, NULL, 1, norm);
                    }
                    for (int k = 0; k < 4; k++) {
                        const int64_t ri = (i * 4 * na + a * 4 + k) * hw + p;
                        if (lab == 1)
                            lr += loss_smooth_l1(&h->dro[l][ri], &h->ro[l][ri], &h->tgt[(i * m + j) * 4 + k],
                                                 NULL, 1, beta, norm);
                        else
                            h->dro[l][ri] = 0.0f;
                    }
                }
    }
    *loss_cls = lc;
    *loss_reg = lr;
    return 0;
}

int rpn_head_backward(rpn_head *h, float *const *dfeats) {
    const int nl = h->cfg.anchors.nlevels;
    for (int l = 0; l < nl; l++) {
        const nn_dims d = h->fd[l];
        const nn_dims td = nn_dims_make(d.n, h->cfg.feat_channels, 1, d.h, d.w);
        const int64_t cnt = nn_dims_count(td);
        memset(h->dt[l], 0, (size_t)cnt * sizeof(float));
        conv3d_backward(h->dt[l], h->dco[l], h->t[l], &h->cls, td, h->ws, h->ws_floats);
        conv3d_backward(h->dt[l], h->dro[l], h->t[l], &h->reg, td, h->ws, h->ws_floats);
        for (int64_t i = 0; i < cnt; i++)
            if (!(h->t[l][i] > 0)) h->dt[l][i] = 0.0f;
        conv3d_backward(dfeats ? dfeats[l] : NULL, h->dt[l], h->feats[l], &h->conv, d, h->ws, h->ws_floats);
    }
    return 0;
}

int rpn_head_proposals(rpn_head *h, float *props, int64_t *nprops, const int64_t *img_hw) {
    const int nl = h->cfg.anchors.nlevels, na = h->na;
    const int64_t n = h->fd[0].n, maxp = h->cfg.max_per_img;
    for (int64_t i = 0; i < n; i++) {
        const int64_t ih = img_hw[2 * i], iw = img_hw[2 * i + 1];
        int64_t nc = 0, nk = 0;
        for (int l = 0; l < nl; l++) {
            const nn_dims d = h->fd[l];
            const int64_t hw = d.h * d.w, cnt = hw * na;
            // scores in anchor order (p * A + a)
            for (int64_t p = 0; p < hw; p++)
                for (int64_t a = 0; a < na; a++) {
                    float z = h->co[l][(i * na + a) * hw + p];
                    h->lscore[p * na + a] = (float)(1.0 / (1.0 + exp(-(double)z)));
                }
            box_argsort_desc(h->order, h->lscore, cnt);
            const int64_t top = PL_MIN(cnt, h->cfg.nms_pre), ls = nc;
            for (int64_t r = 0; r < top; r++) {
                const int64_t j = h->order[r], p = j / na, a = j % na;
                float delta[4], *b = h->cand + 4 * nc;
                for (int k = 0; k < 4; k++) delta[k] = h->ro[l][(i * 4 * na + a * 4 + k) * hw + p];
                box_decode(b, h->anchors[l] + 4 * j, delta, 1, &h->cfg.coder, ih, iw);
                if (b[2] - b[0] > h->cfg.min_bbox_size && b[3] - b[1] > h->cfg.min_bbox_size)
                    h->cscore[nc++] = h->lscore[j];
            }
            // NMS inside the level (mmdet 2 batched_nms with the level as class)
            int64_t k = box_nms(h->keep + nk, h->order, h->dead, h->cand + 4 * ls, h->cscore + ls,
                                nc - ls, h->cfg.nms_iou, h->cfg.assign.plus1, 0);
            for (int64_t t = 0; t < k; t++) h->keep[nk + t] += ls;
            nk += k;
        }
        for (int64_t t = 0; t < nk; t++) h->lscore[t] = h->cscore[h->keep[t]];
        box_argsort_desc(h->order, h->lscore, nk);
        const int64_t out = PL_MIN(nk, maxp);
        float *pr = props + i * maxp * 5;
        for (int64_t r = 0; r < out; r++) {
            const int64_t c = h->keep[h->order[r]];
            for (int k = 0; k < 4; k++) pr[5 * r + k] = h->cand[4 * c + k];
            pr[5 * r + 4] = h->cscore[c];
        }
        nprops[i] = out;
    }
    return 0;
}
