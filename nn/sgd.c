// sgd: update rule, global-norm clipping, learning-rate schedules.
#include "nn/sgd.h"

#include <math.h>
#include <stdlib.h>

#include "nn/parallel.h"
#include "nn/pl.h"

// The update of one group (torch.optim.sgd._single_tensor_sgd, dampening 0). Element-wise, so
// splitting it over threads changes no bit of the result.
typedef struct {
    float *params, *momentum_buf;
    const float *grads;
    float wd, mom, lr;
    int nesterov, first;
} sgd_ctx;

static void sgd_update_range(void *vc, int64_t lo, int64_t hi) {
    const sgd_ctx *k = vc;
    float *params = k->params, *buf = k->momentum_buf;
    const float *grads = k->grads;
    const float wd = k->wd, mom = k->mom, flr = k->lr;
    if (mom == 0) {
        for (int64_t i = lo; i < hi; i++) params[i] -= flr * (grads[i] + wd * params[i]);
        return;
    }
    for (int64_t i = lo; i < hi; i++) {
        float d = grads[i] + wd * params[i];
        float b = k->first ? d : mom * buf[i] + d;
        buf[i] = b;
        params[i] -= flr * (k->nesterov ? d + mom * b : b);
    }
}

static void sgd_update(float *params, float *momentum_buf, const float *grads, size_t count, double lr,
                       double momentum, double weight_decay, int nesterov, int first) {
    sgd_ctx k = {params, momentum_buf, grads, (float)weight_decay, (float)momentum, (float)lr, nesterov, first};
    nn_parallel_for((int64_t)count, 1 << 16, sgd_update_range, &k);
}

void sgd_step(float *params, float *momentum_buf, const float *grads, size_t count, double lr,
              double momentum, double weight_decay, int first) {
    sgd_update(params, momentum_buf, grads, count, lr, momentum, weight_decay, 0, first);
}

static int decays(const nn_param_info *e, const sgd_opts *o) {
    return o->decay_norm_bias || e->role == NN_ROLE_WEIGHT;
}

void sgd_step_params(nn_params *p, const sgd_opts *o, int first) {
    // Runs of adjacent entries of the same group are updated in one loop.
    int i = 0;
    while (i < p->n) {
        const nn_param_info *e = &p->info[i];
        if (e->kind != NN_PARAM) { i++; continue; }
        const int dec = decays(e, o);
        size_t off = e->offset, end = e->offset + e->count;
        int j = i + 1;
        for (; j < p->n; j++) {
            const nn_param_info *f = &p->info[j];
            if (f->kind != NN_PARAM) continue;
            if (decays(f, o) != dec || f->offset != end) break;
            end += f->count;
        }
        sgd_update(p->params + off, p->momentum + off, p->grads + off, end - off, o->lr, o->momentum,
                   dec ? o->weight_decay : 0.0, o->nesterov, first);
        i = j;
    }
}

size_t sgd_decayed_count(const nn_params *p, const sgd_opts *o) {
    size_t n = 0;
    for (int i = 0; i < p->n; i++)
        if (p->info[i].kind == NN_PARAM && decays(&p->info[i], o)) n += p->info[i].count;
    return n;
}

// The sum of squares is taken in fixed blocks of SGD_NORM_BLOCK floats (a partial sum each, in
// parallel), then the partials in order: the norm is the same bits at any thread count.
enum { SGD_NORM_BLOCK = 1 << 16 };
typedef struct {
    float *grads;
    size_t count;
    double *partial;
    float scale;
} norm_ctx;

static void norm_blocks(void *vc, int64_t lo, int64_t hi) {
    const norm_ctx *k = vc;
    for (int64_t b = lo; b < hi; b++) {
        size_t i0 = (size_t)b * SGD_NORM_BLOCK, i1 = PL_MIN(k->count, i0 + SGD_NORM_BLOCK);
        double s = 0;
        for (size_t i = i0; i < i1; i++) s += (double)k->grads[i] * k->grads[i];
        k->partial[b] = s;
    }
}

static void scale_blocks(void *vc, int64_t lo, int64_t hi) {
    const norm_ctx *k = vc;
    size_t i1 = PL_MIN(k->count, (size_t)hi * SGD_NORM_BLOCK);
    for (size_t i = (size_t)lo * SGD_NORM_BLOCK; i < i1; i++) k->grads[i] *= k->scale;
}

double sgd_clip_grad_norm(float *grads, size_t count, double max_norm) {
    int64_t nb = (int64_t)((count + SGD_NORM_BLOCK - 1) / SGD_NORM_BLOCK);
    double one = 0, *partial = nb > 1 ? malloc((size_t)nb * sizeof(double)) : &one;
    norm_ctx k = {grads, count, partial ? partial : &one, 1.0f};
    if (!partial) nb = 0;  // no memory for the partials: one serial pass below (same sum order)
    double s = 0;
    if (nb > 0) {
        nn_parallel_for(nb, 1, norm_blocks, &k);
        for (int64_t b = 0; b < nb; b++) s += partial[b];
    } else {
        for (size_t i = 0; i < count; i++) s += (double)grads[i] * grads[i];
    }
    if (partial != &one) free(partial);
    double norm = sqrt(s);
    if (max_norm > 0 && norm > max_norm) {
        k.scale = (float)(max_norm / (norm + 1e-6));
        nn_parallel_for((int64_t)((count + SGD_NORM_BLOCK - 1) / SGD_NORM_BLOCK), 1, scale_blocks, &k);
    }
    return norm;
}

double sgd_lr_at(const sgd_lr_schedule *s, int64_t it) {
    double lr = s->base_lr;
    if (s->kind == SGD_SCHED_STEP) {
        for (int i = 0; i < s->nmilestones; i++)
            if (it >= s->milestones[i]) lr *= s->gamma;
    } else if (s->kind == SGD_SCHED_COSINE && s->total_iters > 0) {
        double t = it >= s->total_iters ? 1.0 : (double)it / (double)s->total_iters;
        lr = s->min_lr + (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * t));
    }
    if (it < s->warmup_iters)
        lr *= 1.0 - (1.0 - (double)it / (double)s->warmup_iters) * (1.0 - s->warmup_factor);
    return lr;
}
