// sgd: update rule, global-norm clipping, learning-rate schedules.
#include "nn/sgd.h"

#include <math.h>

// The update of one group (torch.optim.sgd._single_tensor_sgd, dampening 0).
static void sgd_update(float *params, float *momentum_buf, const float *grads, size_t count, double lr,
                       double momentum, double weight_decay, int nesterov, int first) {
    const float wd = (float)weight_decay, mom = (float)momentum, flr = (float)lr;
    if (momentum == 0) {
        for (size_t i = 0; i < count; i++) params[i] -= flr * (grads[i] + wd * params[i]);
        return;
    }
    for (size_t i = 0; i < count; i++) {
        float d = grads[i] + wd * params[i];
        float b = first ? d : mom * momentum_buf[i] + d;
        momentum_buf[i] = b;
        params[i] -= flr * (nesterov ? d + mom * b : b);
    }
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

double sgd_clip_grad_norm(float *grads, size_t count, double max_norm) {
    double s = 0;
    for (size_t i = 0; i < count; i++) s += (double)grads[i] * grads[i];
    double norm = sqrt(s);
    if (max_norm > 0 && norm > max_norm) {
        float k = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < count; i++) grads[i] *= k;
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
